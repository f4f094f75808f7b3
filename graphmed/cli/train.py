"""``graphmed train``: cross-validate on a cohort, then fit and save a final model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_cohort_path_args,
    add_config_args,
    load_config_from_args,
    methods_table,
    read_cohort_arg,
)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="cross-validate graphmed (and baselines) on a cohort and save a final model",
        description="Stratified k-fold CV with early stopping inside each training fold; "
        "writes metrics.json, oof_predictions.csv, the Kaplan-Meier plot, a log and a model.",
    )
    p.add_argument(
        "--cohort", type=Path, required=True, help="cohort folder (see docs/cohort-format.md)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--no-final", action="store_true", help="skip fitting the final model on all patients"
    )
    add_cohort_path_args(p)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._lock import run_lock

    config = load_config_from_args(args)
    cohort = read_cohort_arg(args.cohort, args)
    # One run per --out: a second one would interleave its folds and metrics with ours.
    with run_lock(args.out, "graphmed train"):
        return _train(args, config, cohort)


def _train(args: argparse.Namespace, config, cohort) -> int:
    from ..train.cv import cross_validate
    from ..train.saved import fit_final

    result = cross_validate(cohort, config, args.out, resume=args.resume)
    print(methods_table(result.metrics))
    if not args.no_final:
        model, _ = fit_final(
            cohort, config, checkpoint=args.out / "final_checkpoint.pt", resume=args.resume
        )
        model.save(args.out / "model")
        print(f"model saved to {args.out / 'model'}")
    print(f"results in {args.out}")
    return 0
