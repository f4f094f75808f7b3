"""The edge: turn an :class:`ExperimentConfig` into the typed objects of the core.

This is the one module of :mod:`graphmed.train` that reads the config. It
makes the option groups (:class:`~graphmed.train.options.ModelRecipe`,
:class:`~graphmed.train.options.CVOptions`), builds the model of a recipe,
and holds the config-taking entry points (:func:`cross_validate`,
:func:`fit_final`, :func:`rebuild_model`) that hand typed objects to
:mod:`~graphmed.train.cv`, :mod:`~graphmed.train.fit` and
:mod:`graphmed.inference`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor
from ..errors import ConfigError
from ..graph.build import PatientGraphs
from ..graph.relations import RelationGraph
from ..inference.fitted import FittedData
from ..nn.ensemble import EnsembleModel
from ..nn.graphmed_net import GraphMedNet
from ..nn.heads import ClassificationHead, CoxHead, DiscreteTimeBins, DiscreteTimeHead
from ..nn.model import GraphMedModel
from ..typing import MetaPath
from .config import ExperimentConfig, experiment_to_dict
from .options import CVOptions, ModelRecipe

if TYPE_CHECKING:
    from ..inference.model import TrainedModel
    from .cv import CVResult
    from .options import FitHistory


def recipe_from_config(config: ExperimentConfig) -> ModelRecipe:
    """The option groups that build and train one model (a copy: the config may change)."""
    c = copy.deepcopy(config)
    return ModelRecipe(graph=c.graph, model=c.model, task=c.task, train=c.train)


def cv_options(config: ExperimentConfig) -> CVOptions:
    """How :func:`~graphmed.train.cv.run_cv` splits, compares and summarises."""
    ev = copy.deepcopy(config.eval)
    return CVOptions(
        folds=ev.folds,
        repeats=ev.repeats,
        seed=ev.seed,
        label=config.task.label,
        horizons=ev.horizons,
        test_missing=dict(ev.test_missing),
        baselines=list(ev.baselines),
        bootstrap=ev.bootstrap,
        risk_groups=ev.risk_groups,
        baseline_seed=config.train.seed,
        max_features=config.graph.max_features,
        monitor=config.train.monitor,
    )


def as_recipe(config: ExperimentConfig | ModelRecipe) -> ModelRecipe:
    """``config`` as a :class:`ModelRecipe` (a recipe is returned as it is)."""
    return config if isinstance(config, ModelRecipe) else recipe_from_config(config)


def fit_data(train: Cohort, config: ExperimentConfig | ModelRecipe) -> FittedData:
    """Fit preprocessing on the training cohort (every statistic comes from it)."""
    recipe = as_recipe(config)
    g = recipe.graph
    pre = CohortPreprocessor(
        g.standardize_bags, g.max_features, g.screen_features, g.token_order
    ).fit(train)
    labels = {}
    for col in train.labels:
        labels[col] = sorted(train.patients[col].dropna().unique().tolist())
    task = recipe.task
    if task.label is not None and task.label not in train.labels:
        from ..errors import did_you_mean

        raise ConfigError(
            f"task.label is '{task.label}' but the cohort's labels are {train.labels}."
            f"{did_you_mean(task.label, train.labels)}"
        )
    return FittedData(pre, RelationGraph.from_cohort(train), labels, recipe)


def resolve_metapaths(
    relations: RelationGraph, config: ExperimentConfig | ModelRecipe
) -> list[MetaPath]:
    """Meta-paths named by ``model.metapaths``: ``auto``, ``random`` or a list."""
    config = as_recipe(config)
    spec, max_len = config.model.metapaths, config.model.metapath_max_length
    if spec in ("auto", "random"):
        auto = relations.enumerate_metapaths(max_length=max_len, min_length=1)
        if spec == "auto" or not auto:
            return auto
        length = min(max_len, len(relations.modalities) - 1)
        n = min(len(auto), _n_walks(len(relations.modalities), length))
        return relations.random_metapaths(n, length, config.train.seed)
    if not isinstance(spec, list):
        raise ConfigError(
            f"model.metapaths must be 'auto', 'random' or a list of meta-paths, got {spec!r}"
        )
    return [relations.parse_metapath(p) for p in spec]


def _n_walks(n: int, length: int) -> int:
    out = 1
    for k in range(length + 1):
        out *= n - k
    return out


def build_model(
    fitted: FittedData,
    train_graphs: PatientGraphs,
    train_cohort: Cohort | None,
    *,
    fit_priors: bool = True,
    bins: DiscreteTimeBins | None = None,
) -> GraphMedModel:
    """The model of ``fitted.recipe``, with priors and time bins fitted on training data.

    Args:
        fitted: Training-fitted preprocessing and relations, with the recipe.
        train_graphs: Graphs of the training patients (their layouts set the model).
        train_cohort: The training cohort (event times for discrete-time bins).
        fit_priors: Fit the prompt priors on ``train_graphs`` (False when the
            weights are loaded afterwards).
        bins: Already fitted discrete-time bins (when loading a model).
    """
    config = fitted.recipe
    m, task = config.model, config.task
    torch.manual_seed(config.train.seed)
    net = GraphMedNet(
        train_graphs.layouts,
        fitted.relations.edge_types,
        resolve_metapaths(fitted.relations, config),
        d=m.hidden,
        heads=m.heads,
        layers=m.layers,
        dropout=m.dropout,
        completion=m.completion,
        n_prompts=m.n_prompts,
        n_bank=m.n_bank,
        prompt_bank=m.prompt_bank,
        modality_dropout=m.modality_dropout,
        steering=m.steering,
        heterogeneous=m.heterogeneous,
        metapath_level=m.metapath_level,
        bag_tokens=m.bag_tokens,
        graph_conv=m.graph_conv,
    )
    if fit_priors:
        net.fit_priors(train_graphs, seed=config.train.seed)
    heads: dict[str, torch.nn.Module] = {}
    weights = {}
    if task.survival == "cox":
        heads["survival"] = CoxHead(m.hidden)
    elif task.survival == "discrete":
        if bins is None:
            bins = DiscreteTimeBins(task.n_bins).fit(train_cohort.time, train_cohort.event)
        heads["survival"] = DiscreteTimeHead(m.hidden, bins, alpha=task.alpha)
    weights["survival"] = task.survival_weight
    if task.label is not None:
        n_classes = len(fitted.label_classes[task.label])
        heads[task.label] = ClassificationHead(m.hidden, n_classes)
        weights[task.label] = task.label_weight
    if task.survival == "none":
        heads.pop("survival", None)
    linear = None
    if m.linear_path and "survival" in heads:
        from ..nn.linear_path import LinearCoxPath

        layouts = train_graphs.layouts
        reads = None
        if m.linear_inputs == "tabular":  # no tabular modality: no linear path
            reads = [name for name, lay in layouts.items() if lay.kind == "tabular"] or None
        summaries = None
        if m.linear_summaries:
            read = set(reads or layouts)
            summaries = [n for n, lay in layouts.items() if lay.kind == "vector" and n not in read]
        if reads or m.linear_inputs == "all":
            linear = LinearCoxPath(layouts, reads, summaries)
        # a loaded model gets its coefficients from its state_dict
        if linear is not None and fit_priors:
            from .linear import fit_linear_path

            fit_linear_path(linear, train_graphs, seed=config.train.seed)
    steering = m.steering_weight if m.steering != "none" else 0.0
    return GraphMedModel(net, heads, weights, steering, linear=linear)


def stratify_key(cohort: Cohort, label: str | None = None) -> np.ndarray:
    """Strata for splitting: the event indicator, crossed with the label if any."""
    key = cohort.event.astype(str)
    if label is not None:
        key = np.char.add(np.char.add(key, "_"), cohort.patients[label].astype(str).to_numpy())
    return key


# ---------------------------------------------------------------- entry points
def cross_validate(
    cohort: Cohort,
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    include_graphmed: bool = True,
    log=print,
) -> CVResult:
    """Cross-validate graphmed and the configured baselines on ``cohort``.

    Writes to ``out_dir`` (when given): ``metrics.json``, ``oof_predictions.csv``,
    ``config.yaml``, ``log.txt``, per-fold checkpoints and results under
    ``folds/``, and the reports (Kaplan-Meier plot and others). ``out_dir`` is
    locked while the run writes (a second run into it is refused). See
    :func:`graphmed.train.cv.run_cv`, which this calls with the config's
    option groups.
    """
    from .cv import run_cv

    return run_cv(
        cohort,
        recipe_from_config(config),
        cv_options(config),
        out_dir,
        config_data=experiment_to_dict(config),
        resume=resume,
        include_graphmed=include_graphmed,
        log=log,
    )


def fit_final(
    cohort: Cohort,
    config: ExperimentConfig,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log=None,
) -> tuple[TrainedModel, FitHistory]:
    """Fit a model on a whole cohort (a validation part is carved for early stopping).

    See :func:`graphmed.train.fit.fit_trained_model`, which this calls with the
    config's option groups.
    """
    from .fit import fit_trained_model

    return fit_trained_model(
        cohort,
        recipe_from_config(config),
        experiment_to_dict(config),
        checkpoint=checkpoint,
        resume=resume,
        log=log,
    )


ADDED_OPTIONS = {
    "graph": {"max_tokens": None, "screen_features": None, "token_order": "columns"},
    "model": {"linear_path": False, "linear_inputs": "all", "linear_summaries": False},
    "train": {"ensemble": 1},
}
"""Options added since models were first saved, with the value that reads an older
model as it was made (a config saved without the option behaved so)."""


def rebuild_model(
    config_data: dict[str, Any],
    fitted_data: dict[str, Any],
    layouts: dict[str, Any],
    metapaths: list,
    bins: DiscreteTimeBins | None,
) -> tuple[GraphMedModel | EnsembleModel, FittedData, dict[str, Any]]:
    """The untrained model a saved ``model.json`` describes (its weights are loaded after).

    Returns:
        The model, its fitted data, and the resolved config as plain data
        (options added since the model was saved filled in as it was made).
    """
    from ..data.preprocess import CohortPreprocessor
    from .config import experiment_from_dict

    data = {k: {**ADDED_OPTIONS.get(k, {}), **v} for k, v in config_data.items()}
    config = experiment_from_dict(data)
    config.model.metapaths = metapaths
    fitted = FittedData(
        CohortPreprocessor.from_dict(fitted_data["preprocessor"]),
        RelationGraph.from_dict(fitted_data["relations"]),
        fitted_data["label_classes"],
        recipe_from_config(config),
    )
    shell = _shell_graphs(layouts)
    members = [
        build_model(fitted, shell, None, fit_priors=False, bins=bins)
        for _ in range(config.train.ensemble)
    ]
    model = members[0] if len(members) == 1 else EnsembleModel(members)
    return model, fitted, experiment_to_dict(config)


def _shell_graphs(layouts: dict[str, Any]) -> PatientGraphs:
    """Empty graphs carrying only the layouts (to rebuild a model before loading weights)."""
    empty = torch.zeros(0)
    return PatientGraphs(
        [],
        layouts,
        {m: empty for m in layouts},
        {m: empty for m in layouts},
        torch.zeros(0, len(layouts), dtype=torch.bool),
        empty,
        empty,
    )
