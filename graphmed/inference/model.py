"""A trained model with everything it needs to read a new cohort.

:class:`TrainedModel` checks a cohort against the training data
(:func:`~graphmed.inference.compat.check_compatibility`), builds its graphs
with the training preprocessing, predicts, embeds and saves itself as one
directory (see :mod:`graphmed.inference.io`). Nothing here trains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._atomic import _jsonable, atomic_path, write_json
from ..data.cohort import Cohort
from ..errors import ConfigError, GraphMedError
from ..graph.build import ModalityLayout, PatientGraphs
from ..nn.model import GraphMedModel
from .compat import CompatibilityReport, check_compatibility
from .fitted import FittedData
from .predict import Predictions, predict

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNK_SIZE = 4096
"""Patients per chunk when embedding a cohort (bounds the memory of an export)."""


def resolve_device(name: str | torch.device) -> torch.device:
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
class TrainedModel:
    """A fitted model with everything needed to read a new cohort."""

    model: GraphMedModel
    fitted: FittedData
    layouts: dict[str, ModalityLayout]
    info: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved experiment config the model was made from, as plain data."""
    precision: str = "fp32"
    """``train.precision``: autocast of a prediction on a GPU."""

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
        preds = predict(
            self.model,
            graphs,
            device=resolve_device(device),
            batch_size=batch_size,
            precision=self.precision,
        )
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
        from .export import embed_frame  # export reads this class: imported when used

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

        dump_yaml(self.config, path / "config.yaml")
        return path

    def to_dict(self) -> dict[str, Any]:
        heads = self.model.heads
        survival = heads["survival"] if "survival" in heads else None
        bins = survival.bins.to_dict() if survival is not None and survival.bins else None
        return {
            **self.info,
            "time_bins": bins,
            "config": self.config,
            "fitted": self.fitted.to_dict(),
            "layouts": {m: vars(lay) for m, lay in self.layouts.items()},
            "metapaths": [list(map(list, p)) for p in self.model.net.metapaths],
        }


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the resolved config (plain data, sorted-key JSON)."""
    text = json.dumps(config, sort_keys=True)
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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "TrainedModel",
    "config_hash",
    "meta_digest",
    "resolve_device",
    "weights_digest",
]
