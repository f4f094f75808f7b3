"""Self-normalising group encoder for a wide vector modality (as SNN)."""

from __future__ import annotations

import math

import torch
from torch import nn


class VectorEncoder(nn.Module):
    """A self-normalising MLP per gene group, sharing its second layer.

    Args:
        n_groups: Number of group nodes G.
        group_dim: Padded width of a group's features c.
        d: Output width.
        dropout: Alpha-dropout rate.

    Shapes: ``x (B, G, c)`` -> ``(B, G, d)``.
    """

    def __init__(self, n_groups: int, group_dim: int, d: int, dropout: float = 0.1):
        super().__init__()
        # LeCun-normal initialisation keeps SELU activations self-normalising.
        self.weight = nn.Parameter(torch.randn(n_groups, group_dim, d) / math.sqrt(group_dim))
        self.bias = nn.Parameter(torch.zeros(n_groups, d))
        self.group = nn.Parameter(torch.zeros(n_groups, d))
        self.out = nn.Linear(d, d)
        nn.init.normal_(self.out.weight, std=1 / math.sqrt(d))
        nn.init.zeros_(self.out.bias)
        self.dropout = nn.AlphaDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.selu(torch.einsum("bgc,gcd->bgd", x, self.weight) + self.bias)
        h = self.dropout(h)
        return self.dropout(torch.selu(self.out(h))) + self.group

    def embed_profiles(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-modality profiles ``(K, G, c)`` -> one embedding each ``(K, d)``."""
        return self.forward(x).mean(1)
