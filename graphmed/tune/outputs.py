"""What a study leaves in its output folder (every file written atomically).

* ``best_config.yaml``: the base config with the best trial's parameters,
  ready for ``graphmed train --config best_config.yaml``;
* ``trials.csv``: one row per trial of the study (all workers): number,
  state, value, parameters, inner-fold values, worker, failure reason;
* ``history.png`` and ``importance.png``: Optuna's optimisation history and
  parameter importances (``optuna.visualization.matplotlib``);
* ``summary.json``: study name, metric, direction, trial counts by state and
  the best trial.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .._atomic import atomic_path, write_json, write_text
from ..configuration import to_yaml
from ..train.config import ExperimentConfig, experiment_from_dict
from .search_space import SearchSpace
from .study import fail_reason


def study_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ...)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def best_config(
    study: optuna.Study, base: ExperimentConfig | None = None, space: SearchSpace | None = None
) -> ExperimentConfig | None:
    """The base config with the best trial's parameters (None without a complete trial).

    ``base`` and ``space`` default to the ones stored with the study.
    """
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    meta = study.user_attrs.get("graphmed", {})
    if base is None:
        base = experiment_from_dict(meta["base_config"])
    if space is None:
        space = SearchSpace.from_dict(meta["space"], source=f"study {study.study_name}")
    return space.apply(base, study.best_trial.params)


def write_outputs(
    study: optuna.Study,
    out_dir: str | Path,
    base: ExperimentConfig | None = None,
    space: SearchSpace | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the study's outputs to ``out_dir``; return the summary (also ``summary.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = study.user_attrs.get("graphmed", {})
    metric = meta.get("metric", "value")
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "inner_folds": meta.get("inner_folds"),
        "cohort": meta.get("cohort"),
        "n_trials": len(study.get_trials(deepcopy=False)),
        "states": study_counts(study),
        "best": None,
        "files": {},
    }
    frame = study.trials_dataframe()
    trials = study.get_trials(deepcopy=False)
    failed = {t.number: fail_reason(t, trials) for t in trials if t.state == TrialState.FAIL}
    if failed:  # a killed worker's trial recorded no reason: say what that means
        reasons = frame["number"].map(failed)
        column = "user_attrs_fail_reason"
        frame[column] = reasons.where(reasons.notna(), frame.get(column))
    with atomic_path(out / "trials.csv") as tmp:
        frame.to_csv(tmp, index=False)
    summary["files"]["trials"] = str(out / "trials.csv")
    config = best_config(study, base, space)
    if config is not None:
        best = study.best_trial
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "fold_values": best.user_attrs.get("fold_values"),
        }
        header = (
            f"# Best trial {best.number} of study '{study.study_name}': mean inner-CV "
            f"{metric} {best.value:.4f} over {meta.get('inner_folds', '?')} folds.\n"
            "# Tuned values: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
            + "\n# Run it: graphmed train --cohort DIR --config best_config.yaml --out DIR\n"
        )
        write_text(out / "best_config.yaml", header + to_yaml(config))
        summary["files"]["best_config"] = str(out / "best_config.yaml")
    if plots:
        summary["files"].update(write_plots(study, out, metric))
    write_json(out / "summary.json", summary)
    return summary


def write_plots(study: optuna.Study, out: Path, metric: str) -> dict[str, str]:
    """``history.png`` and ``importance.png``; a plot that cannot be drawn yet is skipped."""
    from optuna.visualization import matplotlib as ovm

    written = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    jobs = [
        ("history", "history.png", lambda: ovm.plot_optimization_history(study, target_name=metric))
    ]
    varied = {
        k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1
    }
    if len(complete) >= 2 and varied:  # importances need two finished trials that differ
        jobs.append(
            (
                "importance",
                "importance.png",
                lambda: ovm.plot_param_importances(study, target_name=metric),
            )
        )
    for key, name, draw in jobs:
        if not complete:
            break
        with _pyplot() as plt:
            try:
                ax = draw()
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances of constant parameters: nothing worth drawing
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
        written[key] = str(out / name)
    return written


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def _pyplot():
    """pyplot with Agg when no backend was chosen; Optuna's style change is undone after."""
    import matplotlib

    get = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if get is not None and get() is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Some regimes", UserWarning)  # few trials: expected
        yield plt


__all__ = ["best_config", "study_counts", "write_outputs", "write_plots"]
