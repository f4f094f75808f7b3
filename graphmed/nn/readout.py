"""Readout: attention pooling per modality, then attention fusion across modalities."""

from __future__ import annotations

import torch
from torch import nn

from .gated_attention import GatedAttentionPool, masked_softmax


class ModalityReadout(nn.Module):
    """Pool each modality's nodes, then fuse the modality embeddings.

    Args:
        modalities: Modality names, in the model's order.
        d: Node width.

    Returns from ``forward``: the fused ``(B, d)``, the per-modality embeddings
    ``(B, M, d)`` and the modality weights ``(B, M)``.
    """

    def __init__(self, modalities: list[str], d: int):
        super().__init__()
        self.modalities = list(modalities)
        self.pool = nn.ModuleDict({m: GatedAttentionPool(d, 1) for m in modalities})
        self.score = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

    def forward(
        self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor], available: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = torch.cat([self.pool[m](h[m], mask[m])[0] for m in self.modalities], 1)
        alpha = masked_softmax(self.score(emb).squeeze(-1), available, dim=1)
        return (alpha[..., None] * emb).sum(1), emb, alpha
