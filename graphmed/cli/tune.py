"""``graphmed tune``: an Optuna study over a YAML search space, or a nested one.

Run the same command again to resume a study; run it in N processes (on one
machine with the default SQLite or a journal file, on many with a PostgreSQL
URL) to share one study's trials.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._common import (
    add_cohort_path_args,
    add_config_args,
    load_config_from_args,
    methods_table,
    read_cohort_arg,
)


def register(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="Optuna sweep over a YAML search space (inner CV; --nested for an unbiased estimate)",
        description="Each trial draws a config from --space and scores it by the mean "
        "inner-CV metric on the training patients. Studies resume (same command) and are "
        "shared by every process that names the same --storage and --study. See docs/tuning.md.",
    )
    p.add_argument(
        "--cohort", type=Path, metavar="DIR", help="cohort folder (not needed with --n-trials 0)"
    )
    p.add_argument(
        "--space",
        type=Path,
        default=None,
        help="search-space YAML (default: configs/sweeps/default.yaml)",
    )
    p.add_argument("--study", default="graphmed", help="study name (default: graphmed)")
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: an SQLAlchemy URL (sqlite:///x.db, postgresql://user@host/db) "
        "or journal:PATH (default: sqlite file study.db in --out)",
    )
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        metavar="N",
        help="run N more trials in this process, on top of those the study holds (a rerun "
        "adds N again; failed trials and retries of killed ones count); default 20, or no "
        "limit with --max-trials. With --nested: finished trials per outer fold, a total "
        "(a rerun tops each fold up to N). 0: only write the outputs",
    )
    p.add_argument(
        "--max-trials",
        type=int,
        default=None,
        metavar="TOTAL",
        help="top the study up to TOTAL complete or pruned trials (all workers and earlier "
        "runs together; failed ones do not count): a rerun runs only what is missing, and "
        "none if the study holds TOTAL already. With --n-trials too, the first limit reached "
        "stops this process. Not used with --nested",
    )
    p.add_argument(
        "--metric",
        default="c_index",
        help="objective metric (default c_index; e.g. uno_c, mean_auc)",
    )
    p.add_argument("--inner-folds", type=int, default=3, help="inner CV folds (default 3)")
    p.add_argument(
        "--pruner", choices=("median", "hyperband", "none"), default="median", help="default median"
    )
    p.add_argument(
        "--nested",
        action="store_true",
        help="tune inside each outer training fold (eval.folds) and report the outer test metric",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/tune/STUDY)")
    p.add_argument("--timeout", type=float, default=None, help="seconds before no new trial starts")
    p.add_argument(
        "--seed", type=int, default=None, help="sampler seed (reproducible with one worker)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per worker (default 1: run more workers rather than more "
        "threads; 0 = torch's default)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--verbose", action="store_true", help="Optuna's own log, with tracebacks")
    add_cohort_path_args(p)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from ..tune import load_space, nested_tune, open_storage, run_study, write_outputs

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.ERROR)
    for flag in ("n_trials", "inner_folds", "max_trials", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    if args.threads:
        import torch

        # Small graphs, many trials: on a shared CPU, intra-op threads cost far more than
        # they give (a GSE7390 fold took 5 s on one thread, 150 s on two under load).
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / "tune" / args.study
    config = load_config_from_args(args)
    space = load_space(args.space or _find_default_space())
    space.validate(config)
    storage = open_storage(args.storage, out)
    if args.max_trials is not None and args.nested:
        raise ConfigError(
            "--max-trials is not used with --nested: --n-trials N is already the total of "
            "finished trials per outer fold"
        )
    if args.n_trials is None:  # 20 per run, unless --max-trials sets the total
        args.n_trials = 20 if args.max_trials is None else None
    if args.n_trials == 0 and not args.nested:
        try:
            study = optuna.load_study(study_name=args.study, storage=storage)
        except KeyError:
            raise ConfigError(
                f"no study '{args.study}' in {args.storage or out / 'study.db'}; "
                "run some trials first (--n-trials N)"
            ) from None
        return _finish(write_outputs(study, out, plots=not args.no_plots), out)
    if args.cohort is None:
        raise ConfigError("--cohort is required to run trials (only --n-trials 0 works without it)")
    cohort = read_cohort_arg(args.cohort, args)
    print(
        f"study '{args.study}': {cohort.name}, {cohort.n_patients} patients; space "
        f"{args.space or 'configs/sweeps/default.yaml'} ({len(space.params)} parameters); "
        f"{args.inner_folds}-fold inner CV on {args.metric}; pruner {args.pruner}"
    )
    common = dict(
        study_name=args.study,
        storage=storage,
        n_trials=args.n_trials,
        metric=args.metric,
        inner_folds=args.inner_folds,
        pruner=args.pruner,
        timeout=args.timeout,
        seed=args.seed,
    )
    try:
        if args.nested:
            summary = nested_tune(cohort, config, space, out_dir=out, **common)
            keys = tuple(dict.fromkeys((args.metric, "c_index", "uno_c", "mean_auc")))
            print(methods_table(summary, keys=keys))
            est = summary["estimate"]
            print(
                f"nested estimate ({summary['outer_folds']} outer folds x {args.n_trials} trials): "
                f"{args.metric} {est.get('mean', float('nan')):.4f} ± {est.get('sd', float('nan')):.4f}"
            )
            print(f"results in {out / 'nested.json'}")
            return 0
        result = run_study(cohort, config, space, max_trials=args.max_trials, **common)
    except KeyboardInterrupt:
        print("interrupted: finished trials are stored; run the same command to resume")
        if not args.nested:
            study = optuna.load_study(study_name=args.study, storage=storage)
            write_outputs(study, out, config, space, plots=not args.no_plots)
        return 130
    summary = write_outputs(result.study, out, config, space, plots=not args.no_plots)
    code = _finish(summary, out)
    return 1 if result.stopped_by_failures else code


def _finish(summary: dict, out: Path) -> int:
    states = ", ".join(f"{n} {k.lower()}" for k, n in summary["states"].items())
    print(f"study '{summary['study']}': {summary['n_trials']} trials ({states})")
    best = summary["best"]
    if best is None:
        print("no trial completed yet: no best config")
        return 1
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()
    )
    print(f"best: trial {best['number']}, {summary['metric']} {best['value']:.4f} | {params}")
    print(f"best config: {out / 'best_config.yaml'}; trials: {out / 'trials.csv'}")
    return 0


def _find_default_space() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "configs" / "sweeps" / "default.yaml"
        if candidate.exists():
            return candidate
    raise ConfigError("no --space given and configs/sweeps/default.yaml not found; pass --space")
