"""The graph encoder reads a signal that lies in the edges; a bag of the same nodes cannot."""

import warnings

import numpy as np
from sklearn.model_selection import train_test_split

import graphmed
from graphmed.data.cohort import Cohort
from graphmed.metrics import harrell_c
from graphmed.train.builder import build_model, fit_data, stratify_key
from graphmed.train.config import load_experiment
from graphmed.train.trainer import Trainer

FAST = [
    "model.hidden=32",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=30",
    "train.patience=10",
    "train.progress=false",
    "train.device=cpu",
]


def _as_bag(cohort: Cohort) -> Cohort:
    nodes = {p: g.x for p, g in cohort.data["cells"].items()}
    return Cohort.from_frames(
        cohort.patients.reset_index(), {"cells": nodes}, kinds={"cells": "bag"}
    )


def _test_c(cohort: Cohort, seed: int = 0) -> float:
    config = load_experiment(None, FAST)
    ids = np.asarray(cohort.patient_ids)
    train, test = train_test_split(
        ids, test_size=0.3, stratify=stratify_key(cohort), random_state=seed
    )
    fit, val = train_test_split(
        train, test_size=0.2, stratify=stratify_key(cohort.subset(train)), random_state=seed
    )
    fitted = fit_data(cohort.subset(train), config)
    train_g, val_g = fitted.graphs(cohort.subset(fit)), fitted.graphs(cohort.subset(val))
    model = build_model(fitted, train_g, cohort.subset(train))
    trainer = Trainer(config.train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, train_g, val_g)
    test_c = cohort.subset(test)
    preds = trainer.predict(model, fitted.graphs(test_c))
    return harrell_c(test_c.time, test_c.event, preds.risk)


def test_graph_encoder_reads_edge_signal_a_bag_of_the_same_nodes_misses():
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
    graph_c = _test_c(cohort)
    bag_c = _test_c(_as_bag(cohort))
    assert graph_c > 0.62, graph_c
    assert graph_c > bag_c + 0.06, (graph_c, bag_c)
