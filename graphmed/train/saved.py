"""A trained model as one directory, and fitting one on a whole cohort.

The directory holds ``weights.pt`` (tensors only), ``model.json`` (graphmed
version, the resolved config and its hash, the fitted preprocessing with the
feature names of every modality, relations, meta-paths, node layouts, label
classes, training cohort name, modality specs and the missingness patterns
seen in training, and the SHA-256 checksums of the weights and of its own
content) and ``config.yaml``. It loads on the CPU whatever device it was
trained on (``map_location``), and reads new cohorts through
:func:`~graphmed.train.compat.check_compatibility`. :func:`load_model` refuses
a folder whose weights or ``model.json`` changed after save (the checksums
catch damage and edits, not a forger who rewrites them too), or that a newer
graphmed wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .. import __version__
from .._atomic import _jsonable, atomic_path, write_json
from .._safeload import load_tensors
from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor
from ..errors import GraphMedError
from ..graph.build import ModalityLayout, PatientGraphs
from ..graph.relations import RelationGraph
from ..nn.heads import DiscreteTimeBins
from ..nn.model import GraphMedModel
from .builder import FittedData, build_model, fit_data, resolve_device, stratify_key
from .compat import CompatibilityReport, check_compatibility, pattern_counts
from .config import ExperimentConfig, experiment_from_dict, experiment_to_dict
from .trainer import Predictions, Trainer

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNK_SIZE = 4096
"""Patients per chunk when embedding a cohort (bounds the memory of an export)."""


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

    @property
    def modalities(self) -> list[str]:
        """The model's modalities, in the order of its outputs."""
        return list(self.model.net.modalities)

    def check(
        self, cohort: Cohort, *, max_missing_features: float = 0.5, warn: bool = True
    ) -> tuple[Cohort, CompatibilityReport]:
        """Check ``cohort`` against the model (see :func:`check_compatibility`).

        Returns the cohort restricted to the model's modalities and the report;
        raises :class:`GraphMedError` for an incompatible kind or width.
        """
        return check_compatibility(
            cohort,
            self.fitted.preprocessor,
            training_patterns=self.info.get("training_patterns"),
            max_missing_features=max_missing_features,
            warn=warn,
        )

    def graphs(self, cohort: Cohort, *, check: bool = True) -> PatientGraphs:
        """Graphs of ``cohort`` with the training preprocessing (never refitted).

        Args:
            cohort: Any cohort; checked with :meth:`check` first unless
                ``check`` is False (when the caller already did).
        """
        if check:
            cohort, _ = self.check(cohort)
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
        """Outputs for every patient of ``cohort`` (checked, then read in one piece)."""
        return self.predict_graphs(self.graphs(cohort), device, batch_size)

    def predict_graphs(
        self, graphs: PatientGraphs, device: str = "cpu", batch_size: int = 1024
    ) -> Predictions:
        """Outputs for already built graphs (evaluation mode).

        Raises:
            GraphMedError: A risk is NaN or infinite (rather than writing it).
        """
        trainer = Trainer(_with_device(self.config, device).train)
        preds = trainer.predict(self.model, graphs, batch_size)
        if preds.risk is not None and not np.isfinite(preds.risk).all():
            bad = np.flatnonzero(~np.isfinite(preds.risk))
            ids = [preds.patient_ids[i] for i in bad[:5]]
            raise GraphMedError(
                f"the model gives a non-finite risk for {len(bad)} of {len(preds.risk)} "
                f"patients (e.g. {ids}); nothing is written. Check those patients' inputs "
                "against the training data (graphmed cohort validate), or retrain the model."
            )
        return preds

    def embed(
        self,
        cohort: Cohort,
        *,
        per_modality: bool = False,
        device: str = "cpu",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        batch_size: int = 1024,
        max_missing_features: float = 0.5,
    ) -> pd.DataFrame:
        """One row per patient: ids, embeddings, flags, risk, attention.

        The table :func:`graphmed.export_embeddings` writes, in memory; see
        :func:`graphmed.export.embed_frame` for the arguments and columns.
        """
        from ..export import embed_frame

        return embed_frame(
            self,
            cohort,
            per_modality=per_modality,
            device=device,
            chunk_size=chunk_size,
            batch_size=batch_size,
            max_missing_features=max_missing_features,
        )

    def modality_specs(self) -> dict[str, dict[str, Any]]:
        """What the model reads of each modality: kind, widths, feature names, nodes.

        Taken from the fitted preprocessing and node layouts, so it exists for
        every saved model. ``features`` are the columns the model uses, in
        order (after any variance filter); ``width`` is their number, or the
        instance width of a bag; ``training_width`` the raw width in the
        training cohort when recorded.
        """
        recorded = self.info.get("modality_specs", {})
        out = {}
        for m, tr in self.fitted.preprocessor.transforms_.items():
            lay = self.layouts[m]
            spec: dict[str, Any] = {"kind": tr.kind}
            if tr.kind == "bag":
                spec["width"] = tr.width
            else:
                spec["width"] = len(tr.columns)
                spec["features"] = [_plain(c) for c in tr.columns]
                if tr.categorical:
                    spec["categorical"] = {
                        str(c): [_plain(v) for v in cats] for c, cats in tr.categorical.items()
                    }
            if m in recorded:
                spec["training_width"] = recorded[m].get("width")
                spec["training_present"] = recorded[m].get("present")
            spec.update(nodes=lay.n_nodes, node_dim=lay.node_dim, options=tr.options)
            out[m] = spec
        return out

    def save(self, path: str | Path) -> Path:
        """Write the model directory (each file atomically).

        ``model.json`` records the SHA-256 of the weights (their names, dtypes,
        shapes and values) and of its own content, which :func:`load_model`
        checks: a damaged or edited file is refused instead of used.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with atomic_path(path / "weights.pt") as tmp:
            torch.save(state, tmp)
        meta = json.loads(json.dumps(self.to_dict(), default=_jsonable))  # as read back
        meta["checksums"] = {"weights": weights_digest(state), "model.json": meta_digest(meta)}
        write_json(path / "model.json", meta)
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
    """Load a model directory written by :meth:`TrainedModel.save`.

    Args:
        path: The model folder.
        device: Where to put the weights: ``"cpu"`` (default; works for a model
            trained on a GPU, since every tensor is mapped on load), ``"cuda"``,
            ``"cuda:1"`` or ``"auto"``.
    """
    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise GraphMedError(
            f"'{path}' {what}; expected a model folder holding model.json and weights.pt "
            "(graphmed train writes it to RUN/model)"
        )
    device = _load_device(device)
    meta_file, weights = path / "model.json", path / "weights.pt"
    for f in (meta_file, weights):
        if not f.exists():
            raise GraphMedError(
                f"{f.name} is missing from '{path}'; a graphmed model directory holds "
                "model.json and weights.pt. Copy the whole model folder again from where it "
                "was trained, or retrain it (graphmed train)."
            )
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise GraphMedError(
            f"cannot read '{meta_file}' ({err}); copy the model folder again, or retrain it"
        ) from err
    _check_version(meta, meta_file)
    fix = "copy the model folder again from where it was trained, or retrain it"
    state = load_tensors(weights, what="model weights", fix=fix, map_location=device)
    _check_checksums(meta, state, meta_file, weights)
    _check_finite(state, weights)
    config = experiment_from_dict(_with_added_options(meta["config"]))
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
    skip = ("config", "fitted", "layouts", "metapaths", "time_bins", "checksums")
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
    present = cohort.present_mask()
    info = {
        "graphmed_version": __version__,
        "training_cohort": cohort.name,
        "n_training_patients": cohort.n_patients,
        "config_hash": config_hash(config),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "best_epoch": history["best_epoch"],
        "modality_specs": {
            m: {"kind": s.kind, "width": cohort.width(m), "present": int(present[m].sum())}
            for m, s in cohort.modalities.items()
        },
        "training_patterns": pattern_counts(present),
    }
    return TrainedModel(model, fitted, train_g.layouts, info), history


def config_hash(config: ExperimentConfig) -> str:
    """First 16 hex digits of the SHA-256 of the resolved config (sorted-key JSON)."""
    text = json.dumps(experiment_to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in name order.

    It depends on the values only, not on how ``torch.save`` laid out the file
    (a model saved from a GPU and one saved from the CPU agree).
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of ``model.json``'s content (sorted-key JSON), its ``checksums`` left out."""
    body = {k: v for k, v in meta.items() if k != "checksums"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _check_checksums(meta: dict[str, Any], state: dict, meta_file: Path, weights: Path) -> None:
    """Refuse weights or a model.json changed since save (models saved before checksums pass)."""
    sums = meta.get("checksums")
    if not isinstance(sums, dict):
        return
    fix = (
        "copy the model folder again from where it was trained, or retrain it (graphmed "
        "train); a model is never used with weights or preprocessing that differ from "
        "those it was saved with"
    )
    if sums.get("model.json") != meta_digest(meta):
        raise GraphMedError(
            f"'{meta_file}' was changed after graphmed saved it (its content does not match "
            f"the checksum recorded in it): the preprocessing statistics, config or layouts "
            f"may not be those the weights were trained with; {fix}."
        )
    if sums.get("weights") != weights_digest(state):
        raise GraphMedError(
            f"'{weights}' does not match the checksum recorded in {meta_file.name} at save: "
            f"the weights were changed or damaged after graphmed wrote them; {fix}."
        )


def _check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights holding NaN or inf: every risk of the model would be NaN."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            raise GraphMedError(
                f"'{weights}' holds {n} NaN or infinite values in '{name}', so every risk the "
                "model gives would be NaN; the training diverged or the model was saved "
                "broken. Retrain it (a lower train.lr, or train.precision=fp32)."
            )


def _check_version(meta: dict[str, Any], meta_file: Path) -> None:
    """Refuse a model saved by a newer graphmed (it may hold what this one cannot read)."""
    saved = meta.get("graphmed_version")
    if saved is None:
        return
    if _release(str(saved)) > _release(__version__):
        raise GraphMedError(
            f"'{meta_file}' was saved by graphmed {saved}, newer than this graphmed "
            f"{__version__}; it may use options this version cannot read. Upgrade graphmed "
            f"(pip install -U graphmed) to load it, or retrain the model with this version."
        )


def _release(version: str) -> tuple[int, ...]:
    """``"0.12.1rc1"`` -> ``(0, 12, 1)``: the numeric release part of a version string."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    parts = [int(x) for x in match.group(0).split(".")] if match else []
    while parts and parts[-1] == 0:  # "0.2" == "0.2.0"
        parts.pop()
    return tuple(parts)


def _load_device(device: str) -> torch.device:
    try:
        return resolve_device(device)
    except GraphMedError:
        raise GraphMedError(
            f"device '{device}' was asked for, but CUDA is not available here; load with "
            "device='cpu' (the default): a model trained on a GPU loads on the CPU"
        ) from None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


ADDED_OPTIONS = {
    "graph": {"max_tokens": None},
    "model": {"linear_path": False, "linear_inputs": "all"},
}
"""Options added since models were first saved, with the value that reads an older
model as it was made (a config saved without the option behaved so)."""


def _with_added_options(config: dict[str, Any]) -> dict[str, Any]:
    return {k: {**ADDED_OPTIONS.get(k, {}), **v} for k, v in config.items()}


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
