"""The graph kind: reading .npz / .pt (PyG Data) graphs, round trips, validation messages."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch_geometric.data import Data

from graphmed.data.cohort import Cohort
from graphmed.data.graph_kind import ModalityGraph
from graphmed.data.io import read_cohort, write_cohort
from graphmed.errors import CohortError


def _graph(rng, n=5, width=3, attr=True):
    ei = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])[:, : min(4, n - 1)]
    out = {"x": rng.normal(size=(n, width)), "edge_index": ei}
    if attr:
        out["edge_attr"] = rng.normal(size=(ei.shape[1], 2))
    return out


def _cohort(graphs=None, n=8):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(n)]
    patients = pd.DataFrame(
        {"patient_id": ids, "time": np.arange(1.0, n + 1), "event": [1, 0] * (n // 2)}
    )
    if graphs is None:
        graphs = {p: _graph(rng, n=4 + i % 3) for i, p in enumerate(ids[:-2])}
    clinical = pd.DataFrame({"patient_id": ids, "age": rng.normal(size=n)})
    return Cohort.from_frames(
        patients, {"cells": graphs, "clinical": clinical}, relations=[("cells", "in", "clinical")]
    )


def test_dicts_of_graphs_become_a_graph_modality():
    cohort = _cohort()
    assert cohort.modalities["cells"].kind == "graph"
    g = cohort.data["cells"]["p0"]
    assert isinstance(g, ModalityGraph)
    assert (g.x.dtype, g.edge_index.dtype, g.edge_attr.dtype) == (np.float32, np.int64, np.float32)
    assert cohort.present_mask()["cells"].tolist() == [True] * 6 + [False] * 2
    assert cohort.width("cells") == 3


def test_pyg_data_in_memory():
    rng = np.random.default_rng(1)
    graphs = {
        f"p{i}": Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1], [1, 2]]))
        for i in range(6)
    }
    cohort = _cohort(graphs)
    assert cohort.data["cells"]["p3"].edge_attr is None
    del rng


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_round_trip(tmp_path, fmt):
    cohort = _cohort()
    write_cohort(cohort, tmp_path / "c", graph_format=fmt)
    assert sorted(os.listdir(tmp_path / "c" / "cells")) == [f"p{i}.{fmt}" for i in range(6)]
    back = read_cohort(tmp_path / "c")
    assert back.equals(cohort)
    assert not back.equals(cohort.drop_modality_for("cells", ["p0"]))


def test_pyg_data_file_is_read_with_weights_only(tmp_path):
    cohort = _cohort()
    root = write_cohort(cohort, tmp_path / "c")
    g = cohort.data["cells"]["p0"]
    (root / "cells" / "p0.npz").unlink()
    torch.save(g.to_data(), root / "cells" / "p0.pt")
    assert read_cohort(root).equals(cohort)


def test_a_pickled_callable_is_refused(tmp_path):
    root = write_cohort(_cohort(), tmp_path / "c")
    (root / "cells" / "p0.npz").unlink()
    torch.save(
        {"x": torch.zeros(2, 3), "edge_index": torch.zeros(2, 0), "f": os.system},
        root / "cells" / "p0.pt",
    )
    with pytest.raises(CohortError, match=r"refused to read graph .*p0\.pt.*could run code"):
        read_cohort(root)


def _bad_file(tmp_path, **arrays):
    root = write_cohort(_cohort(), tmp_path / "c")
    (root / "cells" / "p1.npz").unlink()
    np.savez(root / "cells" / "p1.npz", **arrays)
    return root


GOOD = {"x": np.zeros((3, 3), np.float32), "edge_attr": np.zeros((2, 2), np.float32)}


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {**GOOD, "edge_index": np.array([[0, 1], [1, 7]])},
            r"cells/p1\.npz: edge 1 has target node 7, out of range for a graph of 3 nodes "
            r"\(patient 'p1'\); node indices run from 0 to 2",
        ),
        (
            {**GOOD, "edge_index": np.array([[0.0, 1.0], [1.0, 2.0]])},
            r"cells/p1\.npz: edge_index must hold integers .*got dtype float64",
        ),
        (
            {**GOOD, "edge_index": np.array([[0, 1], [1, 2], [2, 0]])},
            r"cells/p1\.npz: edge_index must have shape \(2, E\).*got \(3, 2\)",
        ),
        (
            {**GOOD, "x": np.zeros((3, 5)), "edge_index": np.array([[0, 1], [1, 2]])},
            r"cells/p1\.npz: node features x have width 5, but the other patients' graphs "
            r"\(e\.g\. 'p0'\) have 3",
        ),
        (
            {"x": np.zeros((0, 3)), "edge_index": np.zeros((2, 0), np.int64)},
            r"cells/p1\.npz: the graph of patient 'p1' has no nodes",
        ),
        (
            {**GOOD, "x": np.array([[0, 0, np.nan]] * 3), "edge_index": np.array([[0, 1], [1, 2]])},
            r"cells/p1\.npz: x holds NaN at node 0, feature 2 \(patient 'p1'\)",
        ),
        (
            {"x": GOOD["x"], "edge_index": np.array([[0, 1], [1, 2]])},
            r"cells/p1\.npz: has no edge_attr, but other patients' graphs .* have edge features",
        ),
        (
            {**GOOD, "edge_index": np.array([[0], [1]])},
            r"cells/p1\.npz: edge_attr has 2 rows but edge_index has 1 edges",
        ),
        (
            {**GOOD, "edge_index": np.array([[0, 1], [1, 2]]), "pos": np.zeros((3, 2))},
            r"cells/p1\.npz: the graph holds 'pos', which graphmed does not read",
        ),
        ({"x": GOOD["x"]}, r"cells/p1\.npz: the graph has no 'edge_index'"),
    ],
    ids=[
        "out of range",
        "float edges",
        "edge shape",
        "width mismatch",
        "empty graph",
        "nan",
        "edge_attr on some",
        "edge_attr rows",
        "unknown array",
        "no edges",
    ],
)
def test_bad_graph_files_are_named(tmp_path, arrays, message):
    with pytest.raises(CohortError, match=message):
        read_cohort(_bad_file(tmp_path, **arrays))


def test_a_bag_array_in_a_graph_folder_is_refused(tmp_path):
    root = write_cohort(_cohort(), tmp_path / "c")
    np.save(root / "cells" / "p7.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CohortError, match=r"cells/p7\.npy: a graph folder holds .*Use kind 'bag'"):
        read_cohort(root)


def test_a_corrupt_npz_is_named(tmp_path):
    root = write_cohort(_cohort(), tmp_path / "c")
    (root / "cells" / "p1.npz").write_bytes(b"not a zip")
    with pytest.raises(CohortError, match=r"cells/p1\.npz: cannot read the \.npz graph"):
        read_cohort(root)


def test_unknown_option_of_a_graph(tmp_path):
    root = write_cohort(_cohort(), tmp_path / "c")
    conf = yaml.safe_load((root / "cohort.yaml").read_text())
    conf["modalities"]["cells"]["options"] = {"max_instances": 4}
    (root / "cohort.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(
        CohortError, match=r"unknown option 'max_instances'.*graph modality takes: max_nodes"
    ):
        read_cohort(root)
