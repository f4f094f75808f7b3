"""The graph encoder reads a signal that lies in the edges; a bag of the same nodes cannot."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np

import graphmed

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_graph_conv.py"

FAST = [
    "model.hidden=32",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=30",
    "train.patience=10",
    "train.progress=false",
    "train.device=cpu",
]


def test_graph_encoder_reads_edge_signal_a_bag_of_the_same_nodes_misses():
    spec = importlib.util.spec_from_file_location("bench_graph_conv", TOOL)
    bench = importlib.util.module_from_spec(spec)  # the same split and fit as the benchmark
    spec.loader.exec_module(bench)
    cohort, truth = graphmed.make_synthetic_cohort(
        300, {"cells": ("graph", 4)}, bag_size=(20, 40), seed=0, noise=2.0, return_truth=True
    )
    # The signal is in the edges: the share of same-type neighbours follows u ...
    same = [
        np.mean(g.x[g.edge_index[0], 0] == g.x[g.edge_index[1], 0])
        for g in cohort.data["cells"].values()
    ]
    assert np.corrcoef(same, truth["topology"]["cells"])[0, 1] > 0.9
    # ... while the node features' distribution does not.
    means = [g.x[:, 0].mean() for g in cohort.data["cells"].values()]
    assert np.ptp(means) < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph_c = bench.run(cohort, "gatv2", FAST, seed=0)["c_index"]
        bag_c = bench.run(bench.graph_as_bag(cohort, "cells"), None, FAST, seed=0)["c_index"]
    assert graph_c > 0.62, graph_c
    assert graph_c > bag_c + 0.06, (graph_c, bag_c)
