"""Arguments and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..train.config import ExperimentConfig, load_experiment


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="experiment YAML (default: built-in defaults)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.hidden=256 (repeatable)",
    )
    parser.add_argument(
        "--test-missing",
        action="append",
        default=[],
        metavar="MODALITY=RATE",
        help="hide RATE of MODALITY on test folds only, e.g. expr=0.6 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    overrides = list(args.overrides)
    for item in args.test_missing:
        mod, sep, rate = item.partition("=")
        if not sep:
            raise ConfigError(f"--test-missing expects MODALITY=RATE (e.g. expr=0.6), got '{item}'")
        overrides.append(f"eval.test_missing.{mod.strip()}={rate.strip()}")
    config = load_experiment(args.config, overrides)
    if args.no_progress:
        config.train.progress = False
    return config


def add_cohort_path_args(parser: argparse.ArgumentParser) -> None:
    """``--allow-outside-paths``, for every command that reads a cohort folder."""
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read modality paths of cohort.yaml that lead outside the cohort folder "
        "(absolute, or '..' out of it); refused by default: use it only for a cohort.yaml "
        "you trust (read_cohort(..., allow_outside=True) in Python)",
    )


def read_cohort_arg(path: Path, args: argparse.Namespace | None = None):
    """Read the cohort folder ``path``, with ``--allow-outside-paths`` if ``args`` has it."""
    from ..data.io import read_cohort

    allow = bool(getattr(args, "allow_outside_paths", False))
    return read_cohort(path, allow_outside=allow)


def methods_table(metrics: dict, keys=("c_index", "uno_c", "mean_auc", "ibs")) -> str:
    """Markdown table: one row per method, mean ± sd of each metric over folds."""
    methods = metrics["methods"]
    present = [k for k in keys if any(k in m for m in methods.values())]
    lines = ["| method | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for name, vals in methods.items():
        cells = []
        for k in present:
            v = vals.get(k)
            cells.append(f"{v['mean']:.3f} ± {v['sd']:.3f}" if v else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cap = metrics.get("inputs", {}).get("max_vector_features", "absent")
    if cap != "absent":
        seen = "every column" if cap is None else f"the {cap} highest-variance training columns"
        lines.append(
            f"\nInputs: every method saw the same columns ({seen} of each vector modality)."
        )
    return "\n".join(lines)
