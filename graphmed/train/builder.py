"""Turn an :class:`ExperimentConfig` and a training cohort into fitted objects.

This is the one place that reads the config; the modules it builds take
plain constructor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor
from ..errors import ConfigError
from ..graph.build import PatientGraphs, build_graphs
from ..graph.relations import RelationGraph
from ..nn.graphmed_net import GraphMedNet
from ..nn.heads import ClassificationHead, CoxHead, DiscreteTimeBins, DiscreteTimeHead
from ..nn.model import GraphMedModel
from ..typing import MetaPath
from .config import ExperimentConfig


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is '{name}' but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


@dataclass
class FittedData:
    """Everything fitted on a training cohort that a model needs to read a cohort."""

    preprocessor: CohortPreprocessor
    relations: RelationGraph
    label_classes: dict[str, list[Any]]
    config: ExperimentConfig

    def graphs(self, cohort: Cohort) -> PatientGraphs:
        """Patient graphs of ``cohort`` with the training-fitted preprocessing."""
        g = self.config.graph
        return build_graphs(
            cohort,
            self.preprocessor,
            max_instances=g.max_instances,
            bag_pooling=g.bag_pooling,
            chunk_size=g.chunk_size,
            max_tokens=g.max_tokens,
            seed=self.config.train.seed,
            label_classes=self.label_classes,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "preprocessor": self.preprocessor.to_dict(),
            "relations": self.relations.to_dict(),
            "label_classes": self.label_classes,
        }


def fit_data(train: Cohort, config: ExperimentConfig) -> FittedData:
    """Fit preprocessing on the training cohort (every statistic comes from it)."""
    g = config.graph
    pre = CohortPreprocessor(g.standardize_bags, g.max_features).fit(train)
    labels = {}
    for col in train.labels:
        labels[col] = sorted(train.patients[col].dropna().unique().tolist())
    task = config.task
    if task.label is not None and task.label not in train.labels:
        from ..errors import did_you_mean

        raise ConfigError(
            f"task.label is '{task.label}' but the cohort's labels are {train.labels}."
            f"{did_you_mean(task.label, train.labels)}"
        )
    return FittedData(pre, RelationGraph.from_cohort(train), labels, config)


def resolve_metapaths(relations: RelationGraph, config: ExperimentConfig) -> list[MetaPath]:
    """Meta-paths named by ``model.metapaths``: ``auto``, ``random`` or a list."""
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
    """The model of ``fitted.config``, with priors and time bins fitted on training data.

    Args:
        fitted: Training-fitted preprocessing and relations, with the config.
        train_graphs: Graphs of the training patients (their layouts set the model).
        train_cohort: The training cohort (event times for discrete-time bins).
        fit_priors: Fit the prompt priors on ``train_graphs`` (False when the
            weights are loaded afterwards).
        bins: Already fitted discrete-time bins (when loading a model).
    """
    config = fitted.config
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
        linear = LinearCoxPath(layouts, reads) if reads or m.linear_inputs == "all" else None
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
