"""Gated attention pooling (Ilse et al., 2018) with several heads and masks."""

from __future__ import annotations

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` that ignores ``mask == False``; an all-masked slice gives zeros."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask.any(dim=dim, keepdim=True)


class GatedAttentionPool(nn.Module):
    """Pool ``(B, N, d)`` nodes to ``(B, K, d)`` tokens, one per attention head.

    Args:
        d: Node width.
        tokens: Number of pooled tokens K (heads).
        hidden: Width of the attention network (default ``d``).
    """

    def __init__(self, d: int, tokens: int = 1, hidden: int | None = None):
        super().__init__()
        hidden = hidden or d
        self.value = nn.Linear(d, hidden)
        self.gate = nn.Linear(d, hidden)
        self.score = nn.Linear(hidden, tokens)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return pooled tokens ``(B, K, d)`` and attention weights ``(B, N, K)``."""
        a = self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h)))
        weights = masked_softmax(a, mask[..., None].expand_as(a), dim=1)
        return torch.einsum("bnk,bnd->bkd", weights, h), weights
