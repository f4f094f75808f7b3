"""Modality-prompted completion of missing modalities.

For every modality, ``n_prompts`` prompt nodes start from the modality's
distribution in training patients who have it: medoid profiles (k-means on
the training fold, then the nearest real patient or instance) at evaluation,
random draws from a pool of training profiles during training. They pass
through the modality's own encoder, so they stay in step with it, are refined
by a learnable prompt bank (``w = softmax(Linear(v))``, ``v <- v + w @ bank``),
and are conditioned on what the patient does have by cross-attention from its
present nodes. The result replaces the modality's nodes where it is missing.
One set of prompts per modality serves every missingness pattern.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PromptCompletion(nn.Module):
    """Patient-specific prompt nodes for missing modalities.

    Args:
        modalities: Modality names, in the model's order.
        profile_shapes: Modality -> shape ``(n_nodes, node_dim)`` of one raw
            profile (a whole patient for tabular/vector, ``(1, f)`` for an
            instance of a bag).
        d: Node width.
        n_prompts: Prompt nodes per missing modality (N_P, default 5).
        n_bank: Prompt-bank size (N_B, default 5).
        use_bank: Refine prompts with the bank (the "no prompt bank" ablation
            turns it off).
        heads: Cross-attention heads.
        pool_size: Training profiles kept per modality to sample prompts from.
        dropout: Dropout rate.
    """

    def __init__(
        self,
        modalities: list[str],
        profile_shapes: dict[str, tuple[int, int]],
        d: int,
        n_prompts: int = 5,
        n_bank: int = 5,
        use_bank: bool = True,
        heads: int = 4,
        pool_size: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.modalities = list(modalities)
        self.n_prompts = n_prompts
        self.use_bank = use_bank
        self.pool_size = pool_size
        self.bank = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(n_bank, d) * 0.02) for m in modalities}
        )
        self.bank_score = nn.ModuleDict({m: nn.Linear(d, n_bank) for m in modalities})
        self.type_embedding = nn.Parameter(torch.randn(len(modalities), d) * 0.02)
        self.null_context = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d),
            nn.Linear(d, 2 * d),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * d, d),
        )
        for m in modalities:
            shape = tuple(profile_shapes[m])
            self.register_buffer(f"medoids_{m}", torch.zeros(n_prompts, *shape))
            self.register_buffer(f"pool_{m}", torch.zeros(pool_size, *shape))
        self.register_buffer("fitted", torch.tensor(False))

    # ---------------------------------------------------------------- priors
    @torch.no_grad()
    def fit_priors(self, profiles: dict[str, torch.Tensor], seed: int = 0) -> None:
        """Fit the prompt priors on training profiles only.

        Args:
            profiles: Modality -> ``(K_m, n_nodes, node_dim)`` raw profiles of
                training patients who have the modality (bag: instances as
                ``(K, 1, f)``).
        """
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(seed)
        for m in self.modalities:
            prof = profiles[m].float().cpu()
            if len(prof) == 0:
                continue
            flat = prof.reshape(len(prof), -1).numpy()
            k = min(self.n_prompts, len(np.unique(flat, axis=0)))
            centres = KMeans(k, n_init=1, random_state=seed).fit(flat).cluster_centers_
            nearest = ((flat[None] - centres[:, None]) ** 2).sum(-1).argmin(1)
            medoids = prof[np.resize(nearest, self.n_prompts)]
            pool = prof[rng.choice(len(prof), self.pool_size, replace=len(prof) < self.pool_size)]
            getattr(self, f"medoids_{m}").copy_(medoids)
            getattr(self, f"pool_{m}").copy_(pool)
        self.fitted.fill_(True)

    def _raw_prompts(self, m: str) -> torch.Tensor:
        if self.training:
            pool = getattr(self, f"pool_{m}")
            pick = torch.randint(len(pool), (self.n_prompts,), device=pool.device)
            return pool[pick]
        return getattr(self, f"medoids_{m}")

    # --------------------------------------------------------------- forward
    def forward(
        self,
        encoders: nn.ModuleDict,
        h: dict[str, torch.Tensor],
        mask: dict[str, torch.Tensor],
        available: torch.Tensor,
    ) -> torch.Tensor:
        """Prompt nodes for every modality of every patient.

        Args:
            encoders: Modality -> encoder with ``embed_profiles``.
            h: Modality -> encoded nodes ``(B, N_m, d)``.
            mask: Modality -> node mask ``(B, N_m)``.
            available: ``(B, M)`` modalities the patient has (after hiding).

        Returns:
            ``(B, M, n_prompts, d)``; the caller keeps the rows it completes.
            They are computed for every modality so that no step depends on
            which patients miss what (no host synchronisation).
        """
        batch = available.shape[0]
        prompts = []
        for j, m in enumerate(self.modalities):
            v = encoders[m].embed_profiles(self._raw_prompts(m))  # (N_P, d)
            if self.use_bank:
                w = torch.softmax(self.bank_score[m](v), dim=-1)
                v = v + w @ self.bank[m]
            prompts.append(v + self.type_embedding[j])
        queries = torch.stack(prompts).reshape(1, -1, prompts[0].shape[-1]).expand(batch, -1, -1)
        context = torch.cat(
            [self.null_context.expand(batch, -1, -1)] + [h[m] for m in self.modalities], 1
        )
        ctx_mask = torch.cat(
            [torch.ones(batch, 1, dtype=torch.bool, device=available.device)]
            + [mask[m] & available[:, j : j + 1] for j, m in enumerate(self.modalities)],
            1,
        )
        kv = self.norm_kv(context)
        attended, _ = self.cross(
            self.norm_q(queries), kv, kv, key_padding_mask=~ctx_mask, need_weights=False
        )
        out = queries + attended
        out = out + self.ffn(out)
        return out.reshape(batch, len(self.modalities), self.n_prompts, -1)
