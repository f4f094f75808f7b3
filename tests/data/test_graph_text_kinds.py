"""Graph and text modalities end to end: folder round trip, the CLI, completion, vocabulary."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import graphmed
from graphmed.cli import main
from graphmed.data.preprocess import CohortPreprocessor
from graphmed.data.text_kind import fit_text, transform_text
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment

pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
MODS = {"clinical": ("tabular", 5), "cells": ("graph", 3), "report": ("text", 1)}
FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "eval.folds=2",
    "eval.bootstrap=10",
    "eval.baselines=[]",
    "train.progress=false",
]


def _cohort(n=40, seed=0, **kwargs):
    missing = {"cells": 0.3, "report": 0.3}
    return graphmed.make_synthetic_cohort(
        n, MODS, missing=missing, bag_size=(4, 8), seed=seed, **kwargs
    )


@pytest.mark.parametrize("graph_format", ["npz", "pt"])
@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_folder_round_trip_keeps_graphs_and_reports(tmp_path, graph_format, table_format):
    cohort = _cohort()
    present = cohort.present_mask()
    assert 0 < present["cells"].sum() < len(cohort.patient_ids) and 0 < present[
        "report"
    ].sum() < len(cohort.patient_ids)
    folder = graphmed.write_cohort(
        cohort, tmp_path / "c", table_format=table_format, graph_format=graph_format
    )
    files = sorted(p.suffix for p in (folder / "cells").iterdir())
    assert set(files) == {f".{graph_format}"} and len(files) == present["cells"].sum()
    back = graphmed.read_cohort(folder)
    assert back.equals(cohort)
    assert back.modalities["cells"].kind == "graph" and back.modalities["report"].kind == "text"
    pd.testing.assert_frame_equal(back.present_mask(), present)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A cohort folder with a graph and a text modality, trained through the CLI."""
    root = tmp_path_factory.mktemp("graph_text")
    graphmed.write_cohort(_cohort(), root / "cohort")
    graphmed.write_cohort(_cohort(30, seed=3, name="other"), root / "other")
    sets = [arg for item in FAST for arg in ("--set", item)]
    code = main(["train", "--cohort", str(root / "cohort"), "--out", str(root / "run"), *sets])
    assert code == 0
    return root


def test_cohort_validate_lists_graph_and_text(run, capsys):
    assert main(["cohort", "validate", str(run / "cohort")]) == 0
    out = capsys.readouterr().out
    for word in ("cells", "graph", "report", "text"):
        assert word in out, out


def test_train_predict_export_with_graph_and_text(run, capsys):
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["graphmed"] and len(metrics["per_fold"]) == 2
    for fold in metrics["per_fold"]:
        assert 0 < fold["test_present"]["cells"] < 1 and 0 < fold["test_present"]["report"] < 1
        assert 0 <= fold["methods"]["graphmed"]["c_index"] <= 1
    pred = run / "pred.csv"
    args = ["--model", str(run / "run" / "model"), "--cohort", str(run / "other")]
    assert main(["predict", *args, "--out", str(pred)]) == 0
    risk = pd.read_csv(pred)
    assert len(risk) == 30 and np.isfinite(risk["risk"]).all() and risk["risk"].std() > 0
    out = run / "emb.parquet"
    assert main(["export", *args, "--out", str(out), "--per-modality", "--no-progress"]) == 0
    frame = pd.read_parquet(out).set_index("patient_id")
    other = graphmed.read_cohort(run / "other")
    present = other.present_mask()
    for mod in ("cells", "report"):
        # present_ is what the cohort holds; completed_ marks the others, filled by prompts.
        assert (frame[f"present_{mod}"] == present[mod].reindex(frame.index)).all()
        assert (frame[f"completed_{mod}"] == ~frame[f"present_{mod}"]).all()
        assert f"{mod}_emb_0" in frame.columns
    np.testing.assert_allclose(
        frame["risk"].to_numpy(),
        risk.set_index("patient_id")["risk"].reindex(frame.index).to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_missing_cell_graph_prompts_start_from_training_node_profiles():
    cohort = _cohort(60)
    config = load_experiment(None, FAST)
    train_ids = cohort.patient_ids[:40]
    train = cohort.subset(train_ids)
    fitted = fit_data(train, config)
    graphs = fitted.graphs(train)
    net = build_model(fitted, graphs, train).net  # fits the priors on these graphs
    j = net.modalities.index("cells")
    has = graphs.present[:, j]
    nodes = graphs.x["cells"][has][graphs.node_mask["cells"][has]].float()
    comp = net.completion
    for name in ("medoids_cells", "pool_cells"):
        rows = getattr(comp, name).reshape(-1, nodes.shape[1])
        # Every prompt start is one real node of a training patient's graph.
        assert all((nodes == r).all(1).any() for r in rows), name
    # Nodes of patients outside the training part never enter the priors.
    rest = cohort.subset(cohort.patient_ids[40:])
    other = fitted.graphs(rest)
    has_o = other.present[:, j]
    outside = other.x["cells"][has_o][other.node_mask["cells"][has_o]].float()
    rows = comp.medoids_cells.reshape(-1, nodes.shape[1])
    assert not any((outside == r).all(1).any() for r in rows)


def test_a_term_only_in_test_reports_does_not_change_the_vocabulary():
    cohort = _cohort(60)
    train_ids, test_ids = cohort.patient_ids[:40], cohort.patient_ids[40:]
    reports = cohort.data["report"]
    test_with = [
        p for p in test_ids if p in reports.index and isinstance(reports.at[p, "text"], str)
    ]
    reports.loc[test_with, "text"] = reports.loc[test_with, "text"] + " zebrafishterm zebrafishterm"
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    state = pre.transforms_["report"].state
    assert not any("zebrafishterm" in term for term in state["vocabulary"])
    # The fitted state is the same as from the training reports with no test patient at all.
    train_texts = [t for t in reports.reindex(train_ids)["text"] if isinstance(t, str)]
    again, _ = fit_text(train_texts, pre.transforms_["report"].options)
    assert again["vocabulary"] == state["vocabulary"]
    np.testing.assert_allclose(again["components"], state["components"])
    # An unseen term is ignored when projecting: the report reads as without it.
    text = reports.at[test_with[0], "text"]
    plain = text.replace(" zebrafishterm zebrafishterm", "")
    np.testing.assert_allclose(transform_text(state, [text]), transform_text(state, [plain]))
    # Reports are projected on the fitted components: one standardised column each.
    out = pre.transform(cohort.subset(train_ids))["report"]
    assert out.values.shape[1] == len(pre.transforms_["report"].columns) > 1
    assert torch.isfinite(torch.as_tensor(out.values)).all()
