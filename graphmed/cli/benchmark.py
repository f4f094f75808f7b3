"""``graphmed benchmark`` and ``graphmed quickstart``: graphmed beside the baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .._atomic import atomic_path
from ._common import (
    add_cohort_path_args,
    add_config_args,
    load_config_from_args,
    methods_table,
    read_cohort_arg,
)

ALIASES = {"mlp": ["mlp_zero", "mlp_mean"]}


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="graphmed and baselines on the same folds: a markdown table and a CSV",
    )
    p.add_argument("--cohort", type=Path, required=True)
    p.add_argument(
        "--methods",
        default="graphmed,coxnet,rsf,mlp",
        help="comma list: graphmed, coxnet, rsf, mlp (= mlp_zero + mlp_mean), "
        "mlp_zero, mlp_mean, coxnet:<modality>, rsf:<modality>",
    )
    p.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    p.add_argument("--resume", action="store_true")
    add_cohort_path_args(p)
    add_config_args(p)
    p.set_defaults(func=run)
    q = sub.add_parser(
        "quickstart",
        help="the README's main job: GSE7390 breast cancer, 5-fold CV beside CoxNet and RSF",
    )
    q.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    q.add_argument("--config", type=Path, default=None, help="default: configs/quickstart.yaml")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--resume", action="store_true")
    q.set_defaults(func=run_quickstart, test_missing=[], no_progress=False)


def run(args: argparse.Namespace) -> int:
    from ..train.cv import cross_validate

    config = load_config_from_args(args)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    baselines = [b for n in names if n != "graphmed" for b in ALIASES.get(n, [n])]
    config.eval.baselines = baselines
    cohort = read_cohort_arg(args.cohort, args)
    result = cross_validate(
        cohort, config, args.out, resume=args.resume, include_graphmed="graphmed" in names
    )
    print(methods_table(result.metrics))
    write_table(result.metrics, args.out / "benchmark.csv")
    print(f"table: {args.out / 'benchmark.csv'}")
    return 0


def write_table(metrics: dict, path: Path) -> pd.DataFrame:
    rows = []
    for method, vals in metrics["methods"].items():
        for key, v in vals.items():
            rows.append(
                {
                    "method": method,
                    "metric": key,
                    "mean": v["mean"],
                    "sd": v["sd"],
                    "ci_low": v.get("ci_low"),
                    "ci_high": v.get("ci_high"),
                    "n_folds": v.get("n"),
                }
            )
    frame = pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def run_quickstart(args: argparse.Namespace) -> int:
    from ..data.recipes import materialize
    from ..train.config import load_experiment
    from ..train.cv import cross_validate

    config_path = args.config or _find_quickstart_config()
    config = load_experiment(config_path, args.overrides)
    cohort_dir = args.out / "cohort"
    if not (cohort_dir / "cohort.yaml").exists():
        materialize("breast_cancer", cohort_dir, overwrite=True)
    cohort = read_cohort_arg(cohort_dir)
    print(
        f"cohort: {cohort.name}, {cohort.n_patients} patients, {int(cohort.event.sum())} events, "
        f"modalities {cohort.modality_names}; config: {config_path}"
    )
    result = cross_validate(cohort, config, args.out, resume=args.resume)
    table = methods_table(result.metrics)
    print(table)
    write_table(result.metrics, args.out / "benchmark.csv")
    km = result.metrics.get("reports", {}).get("km")
    print(f"Kaplan-Meier plot: {km}" if km else "Kaplan-Meier plot: not written")
    print(f"results in {args.out}")
    return 0


def _find_quickstart_config() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "configs" / "quickstart.yaml"
        if candidate.exists():
            return candidate
    return None
