"""Nested cross-validation: tune inside each outer training fold, score on its test fold.

The best inner-CV value of a study is optimistic: it is the maximum of many
noisy estimates on the same patients. :func:`nested_tune` gives an estimate
that is not: for each outer fold (``eval.folds`` x ``eval.repeats``, the same
stratified folds as ``graphmed train``), a study of its own tunes on the
outer *training* patients only, the best config is refitted on them, and the
outer test fold, which no trial has seen, scores it. Beside it, on the same
outer folds, the untuned base config (``graphmed_base``) and the config's
baselines (CoxNet, RSF, ...) are scored, so the gain of tuning is visible.

Each outer fold's study lives in the same storage as ``<study>-r<R>f<F>``,
so a nested run resumes and can be shared by many workers like any study:
every study is brought up to ``n_trials`` finished trials.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from .._atomic import write_json
from ..data.cohort import Cohort
from ..metrics import summarise
from ..train.cv import make_folds, run_fold
from ..train.options import CVOptions, Fold
from .builder import NestedPlan, nested_plan
from .outputs import study_counts, write_outputs
from .search_space import SearchSpace
from .study import run_study

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_POLL_SECONDS = 5.0


def nested_tune(
    cohort: Cohort,
    base,
    space: SearchSpace,
    *,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    n_trials: int,
    out_dir: str | Path,
    metric: str = "c_index",
    inner_folds: int = 3,
    pruner: str = "median",
    timeout: float | None = None,
    seed: int | None = None,
    compare_base: bool = True,
    wait_for_others: float = 3600.0,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Tune in every outer training fold and report the outer test metrics.

    Args:
        cohort: All patients; outer folds come from ``base.eval``.
        base: The config the space is applied to (also the untuned comparison);
            read only by :func:`graphmed.tune.builder.nested_plan`, which makes
            the typed objects the folds run on.
        space: The search space.
        study_name: Prefix of the per-fold study names.
        storage: From :func:`~graphmed.tune.study.open_storage`.
        n_trials: Finished (complete or pruned) trials per outer fold.
        out_dir: Where ``nested.json`` and ``folds/<tag>/`` go.
        metric, inner_folds, pruner, seed: As for :func:`~graphmed.tune.study.run_study`.
        timeout: Seconds each outer fold's study may spend starting trials.
        compare_base: Also score the untuned base config on each outer fold.
        wait_for_others: Seconds to wait, before a refit, for trials that other
            workers are still running in that fold's study (so that every worker
            refits the same best trial).
        log: Callable receiving progress lines (None: silent).

    Returns:
        The content of ``nested.json``: per outer fold, the best inner value and
        parameters and the test metrics of every method; per method and metric,
        the mean, sd and bootstrap CI over outer folds.
    """
    log = log or (lambda line: None)
    out = Path(out_dir)
    plan = nested_plan(base, space, metric=metric)
    outer = plan.outer
    ids = np.asarray(cohort.patient_ids)
    t_start = time.time()
    per_fold = []
    for split in make_folds(cohort, outer.folds, outer.repeats, outer.seed, outer.label):
        tag = split.tag
        train_c = cohort.subset(ids[split.train])
        name = f"{study_name}-{tag}"
        log(
            f"outer fold {tag}: tuning on {train_c.n_patients} training patients "
            f"({len(split.test)} test patients held out), study '{name}'"
        )
        remaining = n_trials - _finished(storage, name)
        result = run_study(
            train_c,
            plan.study_base,
            space,
            study_name=name,
            storage=storage,
            n_trials=max(remaining, 0),
            metric=metric,
            inner_folds=inner_folds,
            pruner=pruner,
            timeout=timeout,
            seed=None if seed is None else seed + 1000 * split.repeat + split.fold,
            max_trials=n_trials,
            log=log,
        )
        study = result.study
        _wait_for_other_workers(study, wait_for_others, log)
        fold_dir = out / "folds" / tag
        write_outputs(study, fold_dir, base, space, plots=False)
        record = _outer_fold(cohort, plan, study, split, compare_base, fold_dir, result.seconds)
        per_fold.append(record)
        scores = ", ".join(
            f"{m} {v.get(metric, float('nan')):.4f}" for m, v in record["methods"].items()
        )
        log(
            f"outer fold {tag}: best inner {metric} {record['best_inner_value']} "
            f"(trial {record['best_trial']}); outer test {metric}: {scores}"
        )
    summary = {
        "cohort": cohort.name,
        "n_patients": cohort.n_patients,
        "outer_folds": outer.folds,
        "repeats": outer.repeats,
        "inner_folds": inner_folds,
        "n_trials_per_fold": n_trials,
        "metric": metric,
        "direction": plan.direction,
        "study_prefix": study_name,
        "estimate": {},
        "methods": _aggregate(per_fold, outer),
        "per_fold": per_fold,
        "seconds_this_run": round(time.time() - t_start, 1),  # a resumed run counts only itself
    }
    summary["estimate"] = {
        "method": "graphmed_tuned",
        "metric": metric,
        **summary["methods"].get("graphmed_tuned", {}).get(metric, {}),
    }
    write_json(out / "nested.json", summary)
    return summary


def _wait_for_other_workers(study: optuna.Study, limit: float, log) -> None:
    """Wait until no trial of ``study`` is running, so every worker refits the same best.

    A trial of a crashed worker is failed by the storage's heartbeat (RDB storages);
    without one, waiting stops after ``limit`` seconds.
    """
    t0, said = time.time(), False
    while time.time() - t0 < limit:
        with warnings.catch_warnings():  # a no-op for storages without heartbeats
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if not said:
            log(
                f"waiting for {len(running)} running trial(s) of other workers in '{study.study_name}'"
            )
            said = True
        time.sleep(_POLL_SECONDS)
    log(f"stopped waiting after {limit:.0f} s; refitting the best trial so far")


def _finished(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=_FINISHED))


def _outer_fold(
    cohort: Cohort,
    plan: NestedPlan,
    study: optuna.Study,
    split: Fold,
    compare_base: bool,
    fold_dir: Path,
    seconds_tuning: float,
) -> dict[str, Any]:
    """Refit the best config on the outer training fold and score it on the test fold."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    params = dict(best.params) if best is not None else {}
    done = fold_dir / "outer_result.json"
    if done.exists():  # resumed: reuse the refit if the best trial has not changed since
        previous = json.loads(done.read_text())
        if previous.get("best_trial") == (best.number if best else None) and (
            previous.get("compare_base") == compare_base
        ):
            if previous.get("states") != study_counts(study):  # more trials, same best
                previous["states"] = study_counts(study)
                write_json(done, previous)
            return previous
    recipe, cv = plan.tuned(params)
    t0 = time.time()
    result, _ = run_fold(cohort, recipe, split, cv=cv)
    methods = {"graphmed_tuned": result.methods.pop("graphmed"), **result.methods}
    if compare_base:
        recipe, cv = plan.untuned
        base_result, _ = run_fold(cohort, recipe, split, cv=cv)
        methods["graphmed_base"] = base_result.methods["graphmed"]
    record = {
        "repeat": split.repeat,
        "fold": split.fold,
        "n_train": int(len(split.train)),
        "n_test": int(len(split.test)),
        "study": study.study_name,
        "states": study_counts(study),
        "best_trial": best.number if best is not None else None,
        "best_inner_value": round(best.value, 6) if best is not None else None,
        "best_params": params,
        "compare_base": compare_base,
        "epochs_run": result.epochs_run,
        "methods": methods,
        "seconds_tuning": seconds_tuning,
        "seconds_refit": round(time.time() - t0, 2),
    }
    write_json(done, record)
    return record


def _aggregate(per_fold: list[dict[str, Any]], outer: CVOptions) -> dict[str, Any]:
    names = list(dict.fromkeys(m for r in per_fold for m in r["methods"]))
    out: dict[str, Any] = {}
    for name in names:
        keys = list(dict.fromkeys(k for r in per_fold for k in r["methods"].get(name, {})))
        out[name] = {}
        for key in keys:
            values = [r["methods"].get(name, {}).get(key, float("nan")) for r in per_fold]
            stats = summarise(values, n_boot=outer.bootstrap, seed=outer.seed)
            out[name][key] = {"per_fold": values, **stats}
    return out


__all__ = ["nested_tune"]
