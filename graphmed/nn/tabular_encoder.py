"""Feature-tokenizer encoder for a tabular modality."""

from __future__ import annotations

import math

import torch
from torch import nn


class TabularEncoder(nn.Module):
    """One token per feature: ``x_j * W_j + b_j`` (numeric) or an embedding (categorical).

    Args:
        n_features: Number of feature nodes F.
        d: Token width.
        categorical: Feature index -> number of codes (code 0 = unknown).

    Shapes: ``x (B, F, 1)`` -> ``(B, F, d)``.
    """

    def __init__(self, n_features: int, d: int, categorical: dict[int, int] | None = None):
        super().__init__()
        bound = 1 / math.sqrt(d)
        self.weight = nn.Parameter(torch.empty(n_features, d).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d).uniform_(-bound, bound))
        categorical = {int(k): int(v) for k, v in (categorical or {}).items()}
        index = sorted(categorical)
        cards = [categorical[j] for j in index]
        offsets = [sum(cards[:i]) for i in range(len(cards))]
        self.register_buffer("cat_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer(
            "cat_offset", torch.tensor(offsets, dtype=torch.long), persistent=False
        )
        self.register_buffer("cat_max", torch.tensor(cards, dtype=torch.long) - 1, persistent=False)
        self.cat_embedding = nn.Embedding(max(sum(cards), 1), d)
        nn.init.uniform_(self.cat_embedding.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * self.weight + self.bias
        if len(self.cat_index):
            codes = x[:, self.cat_index, 0].round().long()
            codes = torch.minimum(codes.clamp(min=0), self.cat_max)
            cat = self.cat_embedding(codes + self.cat_offset) + self.bias[self.cat_index]
            h = h.index_copy(1, self.cat_index, cat)
        return h

    def embed_profiles(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-modality profiles ``(K, F, 1)`` -> one embedding each ``(K, d)``."""
        return self.forward(x).mean(1)
