"""The tuning edge: a base config and a search space become the typed objects of the core.

:mod:`graphmed.tune.objective` and :mod:`graphmed.tune.nested` run trials
and outer folds on :class:`~graphmed.train.options.ModelRecipe`,
:class:`~graphmed.train.options.CVOptions` and
:class:`~graphmed.train.options.StudyOptions`; this module, with
:mod:`graphmed.train.builder`, is where those are made from an
:class:`~graphmed.train.config.ExperimentConfig` and a search space (which
names dotted config keys, so applying it is config work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..train.builder import cv_options, recipe_from_config
from ..train.config import ExperimentConfig
from ..train.options import CVOptions, ModelRecipe, StudyOptions
from .search_space import SearchSpace

#: Metrics where lower is better; every other metric is maximised.
MINIMIZE: tuple[str, ...] = ("ibs",)
_SURVIVAL_METRICS = ("c_index", "uno_c", "mean_auc", "td_auc_q25", "td_auc_q50", "td_auc_q75")
_LABEL_METRICS = ("auroc", "accuracy", "balanced_accuracy")


def known_metrics(config: ExperimentConfig) -> list[str]:
    """The metric names a trial of ``config`` produces (see :func:`graphmed.metrics`)."""
    names: list[str] = []
    if config.task.survival != "none":
        names += list(_SURVIVAL_METRICS)
        if config.eval.horizons:
            names += [f"td_auc@{h:g}" for h in config.eval.horizons]
        if config.task.survival == "discrete":
            names.append("ibs")
    if config.task.label is not None:
        names += [f"{config.task.label}_{m}" for m in _LABEL_METRICS]
    return names


def metric_direction(metric: str, config: ExperimentConfig) -> str:
    """``"maximize"`` or ``"minimize"`` for ``metric``; raise for a metric no trial reports.

    Raises:
        ConfigError: ``metric`` is not produced by ``config``'s heads, with the
            close match and the list of valid names.
    """
    names = known_metrics(config)
    if metric not in names:
        why = (
            " (ibs needs task.survival=discrete)"
            if metric == "ibs" and config.task.survival != "discrete"
            else ""
        )
        raise ConfigError(
            f"unknown metric '{metric}'{why}; this config reports {', '.join(names)}."
            f"{did_you_mean(metric, names)}"
        )
    return "minimize" if metric in MINIMIZE else "maximize"


@dataclass(frozen=True)
class TrialPlan:
    """What one tuning trial needs, made from a base config and a space.

    Attributes:
        options: Metric and inner folds.
        cv: The inner folds' options (no baselines: a trial scores graphmed only).
        direction: ``"maximize"`` or ``"minimize"``.
        suggest: ``trial -> params`` (draws from the space).
        recipe: ``params -> ModelRecipe``; raises :class:`ConfigError` for a
            combination the config refuses (the trial then fails).
    """

    options: StudyOptions
    cv: CVOptions
    direction: str
    suggest: Callable[[Any], dict[str, Any]]
    recipe: Callable[[dict[str, Any]], ModelRecipe]


def trial_plan(
    base: ExperimentConfig,
    space: SearchSpace,
    *,
    metric: str = "c_index",
    inner_folds: int = 3,
    seed: int | None = None,
) -> TrialPlan:
    """The :class:`TrialPlan` of ``space`` applied to ``base`` (checked at once)."""
    if inner_folds < 2:
        raise ConfigError(f"inner_folds must be at least 2, got {inner_folds}")
    direction = metric_direction(metric, base)
    base = replace(
        base,
        train=replace(base.train, progress=False),
        eval=replace(base.eval, baselines=[]),
    )
    space.validate(base)
    seed = base.eval.seed if seed is None else seed
    options = StudyOptions(metric, inner_folds, seed, base.task.label)
    return TrialPlan(
        options,
        cv_options(base),
        direction,
        suggest=lambda trial: space.suggest(trial, base),
        recipe=lambda params: recipe_from_config(space.apply(base, params)),
    )


@dataclass(frozen=True)
class NestedPlan:
    """What a nested cross-validation needs, made from a base config and a space.

    Attributes:
        outer: The outer folds' options (``eval.*`` of the base config).
        direction: ``"maximize"`` or ``"minimize"`` for the metric.
        study_base: The base config the per-fold studies tune (progress off);
            handed to :func:`~graphmed.tune.study.run_study` as it is.
        tuned: ``params -> (recipe, cv options)`` of the refit of a best trial.
        untuned: The base recipe and options (no baselines), for ``graphmed_base``.
    """

    outer: CVOptions
    direction: str
    study_base: ExperimentConfig
    tuned: Callable[[dict[str, Any]], tuple[ModelRecipe, CVOptions]]
    untuned: tuple[ModelRecipe, CVOptions]


def nested_plan(base: ExperimentConfig, space: SearchSpace, *, metric: str) -> NestedPlan:
    """The :class:`NestedPlan` of ``space`` applied to ``base``."""
    quiet = replace(base, train=replace(base.train, progress=False))

    def tuned(params: dict[str, Any]) -> tuple[ModelRecipe, CVOptions]:
        config = space.apply(base, params)
        config = replace(config, train=replace(config.train, progress=False))
        return recipe_from_config(config), cv_options(config)

    plain = replace(quiet, eval=replace(base.eval, baselines=[]))
    return NestedPlan(
        cv_options(base),
        metric_direction(metric, base),
        quiet,
        tuned,
        (recipe_from_config(plain), cv_options(plain)),
    )


__all__ = [
    "MINIMIZE",
    "NestedPlan",
    "TrialPlan",
    "known_metrics",
    "metric_direction",
    "nested_plan",
    "trial_plan",
]
