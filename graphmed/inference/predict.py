"""A model's outputs for patient graphs, in evaluation mode (no trainer involved)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..graph.build import PatientGraphs
from ..nn.model import GraphMedModel, ModelOutput


@dataclass
class Predictions:
    """Per-patient outputs of a model, as numpy arrays in the graphs' patient order."""

    patient_ids: list[str]
    embedding: np.ndarray
    modality_embeddings: np.ndarray
    modality_attention: np.ndarray
    metapath_attention: np.ndarray
    completed: np.ndarray
    risk: np.ndarray | None = None
    survival: np.ndarray | None = None
    survival_times: np.ndarray | None = None
    proba: dict[str, np.ndarray] = field(default_factory=dict)


def autocast(device: torch.device, precision: str = "fp32"):
    """Mixed precision on a GPU (``bf16``, ``fp16``); full precision elsewhere."""
    if device.type != "cuda" or precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def forward_chunks(
    model: GraphMedModel,
    graphs: PatientGraphs,
    batch_size: int = 1024,
    precision: str = "fp32",
) -> Iterator[ModelOutput]:
    """Model outputs for ``graphs`` (already on the model's device), ``batch_size`` at a time."""
    device = graphs.time.device
    for start in range(0, len(graphs), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(graphs)), device=device)
        with autocast(device, precision):
            yield model(graphs.batch(idx))


@torch.no_grad()
def predict(
    model: GraphMedModel,
    graphs: PatientGraphs,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1024,
    precision: str = "fp32",
) -> Predictions:
    """Outputs for every patient of ``graphs`` (evaluation mode, no completion noise).

    Args:
        model: The model (moved to ``device``).
        graphs: Patient graphs built with the model's training preprocessing.
        device: Where to run.
        batch_size: Patients per forward pass.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast on a GPU only).
    """
    device = torch.device(device)
    model.eval()
    model.to(device)
    graphs = graphs.to(device)
    parts: dict[str, list[torch.Tensor]] = {}
    for out in forward_chunks(model, graphs, batch_size, precision):
        net = out.net
        row = {
            "embedding": net.embedding,
            "modality_embeddings": net.modality_embeddings,
            "modality_attention": net.modality_attention,
            "metapath_attention": net.metapath_attention,
            "completed": net.completed,
        }
        for name, head in model.heads.items():
            row.update(head.outputs(out.heads[name].float(), name))
        for k, v in row.items():
            parts.setdefault(k, []).append(v.float().cpu() if v.is_floating_point() else v.cpu())
    cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
    times = model.heads["survival"].survival_times() if "survival" in model.heads else None
    return Predictions(
        patient_ids=list(graphs.patient_ids),
        embedding=cat["embedding"],
        modality_embeddings=cat["modality_embeddings"],
        modality_attention=cat["modality_attention"],
        metapath_attention=cat["metapath_attention"],
        completed=cat["completed"],
        risk=cat.get("risk"),
        survival=cat.get("survival"),
        survival_times=times,
        proba={k.split(":", 1)[1]: v for k, v in cat.items() if k.startswith("proba:")},
    )


__all__ = ["Predictions", "autocast", "forward_chunks", "predict"]
