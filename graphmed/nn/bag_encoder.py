"""Instance encoder for a bag modality (pathology patches, report sentences)."""

from __future__ import annotations

import torch
from torch import nn

from .gated_attention import GatedAttentionPool


class BagEncoder(nn.Module):
    """Project every instance to width ``d``; optionally pool to ``tokens`` nodes.

    Pooling with gated attention costs O(N) per bag, so a bag of thousands of
    instances enters the dense graph as ``tokens`` nodes.

    Args:
        in_dim: Instance width f.
        d: Output width.
        tokens: If set, pool the instances to this many nodes.
        dropout: Unused; kept so every encoder takes the same arguments.

    Shapes: ``x (B, N, f), mask (B, N)`` -> ``(B, N or tokens, d), mask``.
    """

    def __init__(self, in_dim: int, d: int, tokens: int | None = None, dropout: float = 0.1):
        super().__init__()
        # Dropout acts on the whole bag downstream; a mask per instance feature
        # here would cost more than the projection on the CPU.
        self.project = nn.Sequential(nn.Linear(in_dim, d), nn.GELU(), nn.Linear(d, d))
        self.tokens = tokens
        self.pool = GatedAttentionPool(d, tokens) if tokens else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.project(x)
        if self.pool is None:
            return h, mask
        pooled, _ = self.pool(h, mask)
        return pooled, mask.any(1, keepdim=True).expand(-1, self.tokens)

    def embed_profiles(self, x: torch.Tensor) -> torch.Tensor:
        """Instances ``(K, 1, f)`` -> one embedding each ``(K, d)``."""
        return self.project(x).mean(1)

    def out_nodes(self, n_nodes: int) -> int:
        return self.tokens or n_nodes
