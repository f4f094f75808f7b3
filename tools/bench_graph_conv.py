"""Which message passing for graph modalities: GIN or GATv2 (and a bag of the same nodes).

Usage: python tools/bench_graph_conv.py [--patients N] [--seeds 0 1 2] [--epochs E]

On synthetic cohorts with one graph modality whose signal lies in its edges
(:func:`graphmed.make_synthetic_cohort`, kind ``graph``), trains graphmed with
the graph encoder's convolution set to ``gin`` and ``gatv2``, and with the same
nodes read as a bag (no edges), on the same split; prints the test C-index and
the seconds per training epoch of each, one JSON line per seed and a summary.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.model_selection import train_test_split


def graph_as_bag(cohort, mod: str):
    """The cohort with graph modality ``mod`` read as a bag of its nodes (edges dropped)."""
    from graphmed.data.cohort import Cohort

    data = {m: cohort.data[m] for m in cohort.modality_names}
    data[mod] = {p: g.x for p, g in cohort.data[mod].items()}
    kinds = {m: s.kind for m, s in cohort.modalities.items()}
    kinds[mod] = "bag"
    return Cohort.from_frames(
        cohort.patients.reset_index(), data, kinds=kinds, relations=cohort.relations
    )


def run(cohort, conv: str | None, overrides: list[str], seed: int) -> dict[str, float]:
    """Test C-index and seconds per epoch of one variant (``conv=None``: as a bag)."""
    from graphmed.metrics import harrell_c
    from graphmed.nn.graph_encoder import GraphEncoder
    from graphmed.train.builder import build_model, fit_data, stratify_key
    from graphmed.train.config import load_experiment
    from graphmed.train.trainer import Trainer

    config = load_experiment(None, [*overrides, f"train.seed={seed}"])
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
    for m, lay in train_g.layouts.items():
        if lay.kind == "graph" and conv is not None:
            old = model.net.encoders[m]
            model.net.encoders[m] = GraphEncoder(
                lay.node_dim, config.model.hidden, old.tokens, lay.edge_dim, conv
            )
    trainer = Trainer(config.train)
    start = time.perf_counter()
    history = trainer.fit(model, train_g, val_g)
    seconds = (time.perf_counter() - start) / max(1, history["epochs_run"])
    test_c = cohort.subset(test)
    preds = trainer.predict(model, fitted.graphs(test_c))
    return {"c_index": harrell_c(test_c.time, test_c.event, preds.risk), "s_per_epoch": seconds}


def main(argv: list[str] | None = None) -> None:
    import graphmed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    overrides = [
        "model.hidden=32",
        "model.heads=2",
        "model.layers=1",
        f"train.epochs={args.epochs}",
        "train.patience=10",
        "train.progress=false",
        "train.device=cpu",
        "train.ensemble=1",  # one model per seed, as recorded in the docs
    ]
    rows = []
    for seed in args.seeds:
        cohort = graphmed.make_synthetic_cohort(
            args.patients, {"cells": ("graph", 4)}, bag_size=(20, 40), seed=seed, noise=2.0
        )
        row = {"seed": seed}
        for name, conv, data in (
            ("gin", "gin", cohort),
            ("gatv2", "gatv2", cohort),
            ("bag", None, graph_as_bag(cohort, "cells")),
        ):
            result = run(data, conv, overrides, seed)
            row.update({f"{name}_c": round(result["c_index"], 3)})
            row.update({f"{name}_s_per_epoch": round(result["s_per_epoch"], 3)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k != "seed"]
    print(json.dumps({"mean": {k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}}))


if __name__ == "__main__":
    main()
