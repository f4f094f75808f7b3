"""The tuning objective: a metric of inner cross-validation on training patients only.

One trial draws a config from the search space and runs a stratified k-fold
cross-validation *inside the cohort it is given* (for ``--nested``, the outer
training fold: the outer test fold never reaches this module). Each inner fold
trains with early stopping on a validation part of the inner training fold
and scores the held-out inner fold; the trial's value is the mean over inner
folds. After every fold the running mean is reported to Optuna, so a pruner
can stop a poor trial after its first folds.

The trial runs on typed objects only: :func:`graphmed.tune.builder.trial_plan`
turns the base config and the space into them (``known_metrics`` and
``metric_direction``, re-exported here, live there too).

A trial that cannot be scored (loss became NaN, out of memory, a parameter
combination the model refuses such as ``hidden`` not divisible by ``heads``)
raises :class:`TrialFailed`; the study records it as failed and goes on.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import warnings
from collections.abc import Callable

import numpy as np
import optuna

from ..data.cohort import Cohort
from ..errors import ConfigError, did_you_mean
from ..train.cv import make_folds, run_fold
from ..train.options import FoldResult
from .builder import MINIMIZE, known_metrics, metric_direction, trial_plan
from .search_space import SearchSpace


class TrialFailed(Exception):
    """The trial runs on typed objects only: :func:`graphmed.tune.builder.trial_plan`
    turns the base config and the space into them (``known_metrics`` and
    ``metric_direction``, re-exported here, live there too).

    A trial that cannot be scored; Optuna records it as failed and the study goes on."""


def worker_id() -> str:
    """``host:pid`` of this process, stored with each trial to show who ran it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class InnerCVObjective:
    """``objective(trial) -> float``: mean inner-fold ``metric`` of a drawn config.

    Args:
        cohort: The patients to tune on (the training patients only).
        base: The config the space's values are applied to; it is read only
            by :func:`graphmed.tune.builder.trial_plan`, which makes the typed
            :class:`~graphmed.tune.builder.TrialPlan` this objective runs.
        space: The search space.
        metric: Metric name (default Harrell's C-index, ``"c_index"``).
        inner_folds: Folds of the inner cross-validation (at least 2).
        seed: Seed of the inner split, the same for every trial so that trials
            are compared on the same folds (default ``base.eval.seed``).
        log: Callable receiving one line per inner fold (default: nothing).
    """

    def __init__(
        self,
        cohort: Cohort,
        base,
        space: SearchSpace,
        *,
        metric: str = "c_index",
        inner_folds: int = 3,
        seed: int | None = None,
        log: Callable[[str], None] | None = None,
    ):
        plan = trial_plan(base, space, metric=metric, inner_folds=inner_folds, seed=seed)
        self.cohort, self.plan, self.metric = cohort, plan, plan.options.metric
        self.direction = plan.direction
        self.inner_folds = plan.options.inner_folds
        opts = plan.options
        self.folds = make_folds(cohort, opts.inner_folds, 1, opts.seed, opts.label)
        self.log = log or (lambda line: None)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        params = self.plan.suggest(trial)
        t0 = time.time()
        try:
            recipe = self.plan.recipe(params)
        except ConfigError as err:
            raise self._failed(trial, err) from err
        values: list[float] = []
        epochs: list[int] = []
        for fold in self.folds:
            k = fold.fold
            try:
                with (
                    warnings.catch_warnings()
                ):  # e.g. "no test event by t": one line per trial is enough
                    warnings.filterwarnings(
                        "ignore", category=UserWarning, module=r"graphmed\.metrics"
                    )
                    result, _ = run_fold(self.cohort, recipe, fold, cv=self.plan.cv)
            except Exception as err:  # noqa: BLE001 - any failure of one config ends the trial only
                raise self._failed(trial, err) from err
            value = self._value(result)
            if not np.isfinite(value):
                raise self._failed(
                    trial, TrialFailed(f"{self.metric} is {value} on inner fold {k}")
                )
            values.append(value)
            epochs.append(int(result.epochs_run))
            self.log(f"  trial {trial.number} fold {k}: {self.metric} {value:.4f}")
            running = float(np.mean(values))
            trial.report(running, step=k)
            if k + 1 < len(self.folds) and trial.should_prune():
                self._record(trial, values, epochs, t0)
                raise optuna.TrialPruned(
                    f"pruned after inner fold {k + 1}/{len(self.folds)}: "
                    f"running {self.metric} {running:.4f}"
                )
        self._record(trial, values, epochs, t0)
        return float(np.mean(values))

    def _value(self, result: FoldResult) -> float:
        scores = result.methods["graphmed"]
        if self.metric not in scores:  # a bug or a config the checks above missed: stop loudly
            raise ConfigError(
                f"metric '{self.metric}' is not among the fold's metrics {sorted(scores)}."
                f"{did_you_mean(self.metric, scores)}"
            )
        return float(scores[self.metric])

    def _record(self, trial, values: list[float], epochs: list[int], t0: float) -> None:
        trial.set_user_attr("fold_values", [round(v, 6) for v in values])
        trial.set_user_attr("epochs_run", epochs)
        trial.set_user_attr("seconds", round(time.time() - t0, 2))

    def _failed(self, trial, err: BaseException) -> TrialFailed:
        reason = f"{type(err).__name__}: {err}"
        if _is_oom(err):
            reason = f"out of memory: {err}"
            _free_accelerator_memory()
        trial.set_user_attr("fail_reason", reason[:1000])
        return TrialFailed(reason)


def _is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _free_accelerator_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "MINIMIZE",
    "InnerCVObjective",
    "TrialFailed",
    "known_metrics",
    "metric_direction",
    "worker_id",
]
