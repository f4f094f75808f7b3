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
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a torchrun job: each global batch is split across the ranks, "
        "rank 0 writes (docs/distributed.md)",
    )
    add_cohort_path_args(p)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._lock import run_lock

    config = load_config_from_args(args)
    ctx = None
    if args.distributed:
        from ..train import distributed

        ctx = distributed.init_distributed(config.train.device)
    finished = False
    try:
        cohort = read_cohort_arg(args.cohort, args)
        # One run per --out: a second one would interleave its folds and metrics with ours
        # (in a torchrun job rank 0 holds it for all the ranks, which write nothing).
        with run_lock(args.out, "graphmed train"):
            quiet = ctx is not None and not ctx.is_main
            code = _train(args, config, cohort, echo=(lambda *a: None) if quiet else print)
        finished = True
        return code
    finally:
        if ctx is not None:
            distributed.shutdown(wait=finished)


def _train(args: argparse.Namespace, config, cohort, echo=print) -> int:
    from ..train.cv import cross_validate
    from ..train.saved import fit_final

    result = cross_validate(cohort, config, args.out, resume=args.resume, log=echo)
    echo(methods_table(result.metrics))
    if not args.no_final:
        model, _ = fit_final(
            cohort, config, checkpoint=args.out / "final_checkpoint.pt", resume=args.resume
        )
        model.save(args.out / "model")
        echo(f"model saved to {args.out / 'model'}")
    echo(f"results in {args.out}")
    return 0
