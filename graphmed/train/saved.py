"""A trained model as one directory, and fitting one on a whole cohort.

The directory holds ``weights.pt`` (tensors only), ``model.json`` (graphmed
version, the resolved config, the fitted preprocessing, relations, meta-paths,
node layouts, label classes, training cohort name) and ``config.yaml``. It
loads on the CPU whatever device it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .. import __version__
from .._atomic import atomic_path, write_json
from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor
from ..errors import GraphMedError
from ..graph.build import ModalityLayout, PatientGraphs
from ..graph.relations import RelationGraph
from ..nn.heads import DiscreteTimeBins
from ..nn.model import GraphMedModel
from .builder import FittedData, build_model, fit_data, stratify_key
from .config import ExperimentConfig, experiment_from_dict, experiment_to_dict
from .trainer import Predictions, Trainer


@dataclass
class TrainedModel:
    """A fitted model with everything needed to read a new cohort."""

    model: GraphMedModel
    fitted: FittedData
    layouts: dict[str, ModalityLayout]
    info: dict[str, Any]

    @property
    def config(self) -> ExperimentConfig:
        return self.fitted.config

    def graphs(self, cohort: Cohort) -> PatientGraphs:
        """Graphs of ``cohort`` with the training preprocessing (never refitted)."""
        graphs = self.fitted.graphs(cohort)
        for m, lay in self.layouts.items():
            got = graphs.layouts[m]
            if (got.n_nodes, got.node_dim) != (lay.n_nodes, lay.node_dim) and lay.kind != "bag":
                raise GraphMedError(
                    f"modality '{m}' gives {got.n_nodes} nodes of width {got.node_dim}, but the "
                    f"model was trained on {lay.n_nodes} of width {lay.node_dim}"
                )
        return graphs

    def predict(self, cohort: Cohort, device: str = "cpu", batch_size: int = 1024) -> Predictions:
        trainer = Trainer(_with_device(self.config, device).train)
        return trainer.predict(self.model, self.graphs(cohort), batch_size)

    def save(self, path: str | Path) -> Path:
        """Write the model directory (each file atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with atomic_path(path / "weights.pt") as tmp:
            torch.save(state, tmp)
        write_json(path / "model.json", self.to_dict())
        from ..configuration import dump_yaml

        dump_yaml(experiment_to_dict(self.config), path / "config.yaml")
        return path

    def to_dict(self) -> dict[str, Any]:
        heads = self.model.heads
        bins = (
            heads["survival"].bins.to_dict()
            if "survival" in heads and heads["survival"].kind == "discrete"
            else None
        )
        return {
            **self.info,
            "time_bins": bins,
            "config": experiment_to_dict(self.config),
            "fitted": self.fitted.to_dict(),
            "layouts": {m: vars(lay) for m, lay in self.layouts.items()},
            "metapaths": [list(map(list, p)) for p in self.model.net.metapaths],
        }


def load_model(path: str | Path, device: str = "cpu") -> TrainedModel:
    """Load a model directory written by :meth:`TrainedModel.save` (on the CPU by default)."""
    path = Path(path)
    meta_file, weights = path / "model.json", path / "weights.pt"
    for f in (meta_file, weights):
        if not f.exists():
            raise GraphMedError(f"'{path}' is not a graphmed model directory: {f.name} is missing")
    try:
        meta = json.loads(meta_file.read_text())
        state = torch.load(weights, map_location=device, weights_only=True)
    except (json.JSONDecodeError, RuntimeError, OSError) as err:
        raise GraphMedError(f"cannot read the model in '{path}': {err}") from err
    config = experiment_from_dict(meta["config"])
    fitted = FittedData(
        CohortPreprocessor.from_dict(meta["fitted"]["preprocessor"]),
        RelationGraph.from_dict(meta["fitted"]["relations"]),
        meta["fitted"]["label_classes"],
        config,
    )
    layouts = {
        m: ModalityLayout(**{**v, "categorical": {int(k): c for k, c in v["categorical"].items()}})
        for m, v in meta["layouts"].items()
    }
    config.model.metapaths = meta["metapaths"]
    shell = _shell_graphs(layouts)
    bins = DiscreteTimeBins.from_dict(meta["time_bins"]) if meta.get("time_bins") else None
    model = build_model(fitted, shell, None, fit_priors=False, bins=bins)
    model.load_state_dict(state)
    model.to(device).eval()
    skip = ("config", "fitted", "layouts", "metapaths", "time_bins")
    info = {k: v for k, v in meta.items() if k not in skip}
    return TrainedModel(model, fitted, layouts, info)


def fit_final(
    cohort: Cohort,
    config: ExperimentConfig,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log=None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """Fit a model on a whole cohort (a validation part is carved for early stopping)."""
    label = config.task.label
    fit_ids, val_ids = train_test_split(
        np.asarray(cohort.patient_ids),
        test_size=config.train.val_fraction,
        stratify=stratify_key(cohort, label),
        random_state=config.train.seed,
    )
    fitted = fit_data(cohort, config)
    train_g = fitted.graphs(cohort.subset(fit_ids))
    val_g = fitted.graphs(cohort.subset(val_ids))
    model = build_model(fitted, train_g, cohort)
    history = Trainer(config.train, log=log).fit(model, train_g, val_g, checkpoint, resume)
    model.cpu().eval()
    cfg_text = json.dumps(experiment_to_dict(config), sort_keys=True)
    info = {
        "graphmed_version": __version__,
        "training_cohort": cohort.name,
        "n_training_patients": cohort.n_patients,
        "config_hash": hashlib.sha256(cfg_text.encode()).hexdigest()[:16],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "best_epoch": history["best_epoch"],
        "modality_specs": {
            m: {"kind": s.kind, "width": cohort.width(m)} for m, s in cohort.modalities.items()
        },
    }
    return TrainedModel(model, fitted, train_g.layouts, info), history


def _shell_graphs(layouts: dict[str, ModalityLayout]) -> PatientGraphs:
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


def _with_device(config: ExperimentConfig, device: str) -> ExperimentConfig:
    from copy import deepcopy

    cfg = deepcopy(config)
    cfg.train.device = device
    return cfg
