"""Loading a model directory written by :meth:`TrainedModel.save`.

The directory holds ``weights.pt`` (tensors only), ``model.json`` (graphmed
version, the resolved config and its hash, the fitted preprocessing with the
feature names of every modality, relations, meta-paths, node layouts, label
classes, training cohort name, modality specs and the missingness patterns
seen in training, and the SHA-256 checksums of the weights and of its own
content) and ``config.yaml``. It loads on the CPU whatever device it was
trained on (``map_location``), and reads new cohorts through
:func:`~graphmed.inference.compat.check_compatibility`. :func:`load_model`
refuses a folder whose weights or ``model.json`` changed after save (the
checksums catch damage and edits, not a forger who rewrites them too), or
that a newer graphmed wrote.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._safeload import load_tensors
from ..errors import GraphMedError
from ..graph.build import ModalityLayout
from ..nn.heads import DiscreteTimeBins
from .model import TrainedModel, meta_digest, resolve_device, weights_digest


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
    layouts = {
        m: ModalityLayout(**{**v, "categorical": {int(k): c for k, c in v["categorical"].items()}})
        for m, v in meta["layouts"].items()
    }
    bins = DiscreteTimeBins.from_dict(meta["time_bins"]) if meta.get("time_bins") else None
    from ..train.builder import rebuild_model  # the saved config is read by the builder

    model, fitted, config = rebuild_model(
        meta["config"], meta["fitted"], layouts, meta["metapaths"], bins
    )
    model.load_state_dict(state)
    model.to(device).eval()
    skip = ("config", "fitted", "layouts", "metapaths", "time_bins", "checksums")
    info = {k: v for k, v in meta.items() if k not in skip}
    precision = fitted.recipe.train.precision
    return TrainedModel(model, fitted, layouts, info, config, precision=precision)


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


__all__ = ["load_model"]
