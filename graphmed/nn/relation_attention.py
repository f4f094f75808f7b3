"""Local multi-relation attention over padded patient graphs (HGT-like).

Each target node attends to every node joined to it by any relation, in one
softmax across relations. Per relation and head the key and message get their
own transform (HGT's ``W_att`` / ``W_msg``), the score is scaled by a relation
prior and modulated by a relation (edge) embedding, and gets a bias from the
cosine similarity of the end nodes (the initial edge weight) and a learned
bias on edges that touch prompt nodes (the hallucinated topology).

The formulation is dense: nodes of a type are a padded ``(B, N, d)`` tensor
with a mask, and every score is one batched matmul, so a batch of patients
runs with no loop over patients or nodes (see ``tools/bench_speed.py`` for
the comparison with PyG ``HGTConv`` on the same graphs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..typing import EdgeType


class RelationAttention(nn.Module):
    """One layer of typed, relation-aware attention with a feed-forward block.

    Args:
        node_types: Modality names.
        edge_types: Every ``(src, relation, dst)`` including intra-modal ones.
        d: Node width (divisible by ``heads``).
        heads: Attention heads.
        dropout: Dropout rate.
        heterogeneous: If False, every node type and relation shares one set of
            parameters (the "homogeneous graph" ablation).
    """

    def __init__(
        self,
        node_types: list[str],
        edge_types: list[EdgeType],
        d: int,
        heads: int = 4,
        dropout: float = 0.1,
        heterogeneous: bool = True,
    ):
        super().__init__()
        if d % heads:
            raise ValueError(f"d={d} must be divisible by heads={heads}")
        self.node_types, self.edge_types = list(node_types), [tuple(e) for e in edge_types]
        self.heads, self.dh = heads, d // heads
        self.heterogeneous = heterogeneous
        ntypes = sorted({self._nkey(t) for t in node_types})
        rtypes = sorted({self._rkey(e) for e in self.edge_types})

        def per_type(make):
            return nn.ModuleDict({k: make() for k in ntypes})

        self.norm = per_type(lambda: nn.LayerNorm(d))
        self.q = per_type(lambda: nn.Linear(d, d))
        self.k = per_type(lambda: nn.Linear(d, d))
        self.v = per_type(lambda: nn.Linear(d, d))
        self.o = per_type(lambda: nn.Linear(d, d))
        self.ffn = per_type(
            lambda: nn.Sequential(
                nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)
            )
        )
        eye = torch.eye(self.dh).repeat(heads, 1, 1)
        self.w_att = nn.ParameterDict({r: nn.Parameter(eye.clone()) for r in rtypes})
        self.w_msg = nn.ParameterDict({r: nn.Parameter(eye.clone()) for r in rtypes})
        self.prior = nn.ParameterDict({r: nn.Parameter(torch.ones(heads)) for r in rtypes})
        self.rel_emb = nn.ParameterDict(
            {r: nn.Parameter(torch.ones(heads, self.dh)) for r in rtypes}
        )
        self.cos_scale = nn.ParameterDict({r: nn.Parameter(torch.ones(1)) for r in rtypes})
        self.prompt_bias = nn.ParameterDict({r: nn.Parameter(torch.zeros(1)) for r in rtypes})
        self.dropout = nn.Dropout(dropout)
        # Relations grouped by source type (stable), so that the relations out of one type
        # are a contiguous slice of the stacked relation parameters.
        order = sorted(
            range(len(self.edge_types)), key=lambda i: node_types.index(self.edge_types[i][0])
        )
        self._by_source = [self.edge_types[i] for i in order]
        self._slices, start = {}, 0
        for t in self.node_types:
            n = sum(1 for e in self._by_source if e[0] == t)
            self._slices[t] = (start, start + n)
            start += n

    def _nkey(self, t: str) -> str:
        return t if self.heterogeneous else "node"

    def _rkey(self, e: EdgeType) -> str:
        return "__".join(e) if self.heterogeneous else "edge"

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dh).transpose(1, 2)  # (B, H, N, dh)

    def forward(
        self,
        h: dict[str, torch.Tensor],
        mask: dict[str, torch.Tensor],
        prompt: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Update every node type.

        Args:
            h: Type -> ``(B, N_t, d)`` nodes.
            mask: Type -> ``(B, N_t)`` real (or prompt) nodes.
            prompt: Type -> ``(B, N_t)`` True for prompt nodes.
        """
        normed = {t: self.norm[self._nkey(t)](h[t]) for t in self.node_types}
        unit = {t: F.normalize(normed[t], dim=-1) for t in self.node_types}
        keys = {t: self._split(self.k[self._nkey(t)](normed[t])) for t in self.node_types}
        vals = {t: self._split(self.v[self._nkey(t)](normed[t])) for t in self.node_types}
        blocks = self._relation_blocks(keys, vals, unit)
        out = {}
        for t in self.node_types:
            q = self._split(self.q[self._nkey(t)](normed[t]))
            # Every relation into t becomes one block of a single attention: its
            # keys carry W_att, the relation embedding and the prior (and 1/sqrt(dh)),
            # its values W_msg; the cosine edge weight, the prompt-edge bias and the
            # mask form an additive score bias. One softmax runs across all blocks.
            ks, vs, units, masks, prompts, pbias = [], [], [], [], [], []
            for s, r, dst in self.edge_types:
                if dst != t:
                    continue
                rk = self._rkey((s, r, dst))
                k_r, v_r, u_r = blocks[(s, r, dst)]
                ks.append(k_r)
                vs.append(v_r)
                units.append(u_r)
                masks.append(mask[s])
                prompts.append(prompt[s])
                pbias.append(self.prompt_bias[rk].expand(mask[s].shape[1]))
            bias = unit[t] @ torch.cat(units, 1).transpose(1, 2)  # (B, N_t, sum N_s)
            touches = prompt[t][:, :, None] | torch.cat(prompts, 1)[:, None, :]
            bias = bias + touches * torch.cat(pbias)
            bias = bias.masked_fill(~torch.cat(masks, 1)[:, None, :], torch.finfo(bias.dtype).min)
            # No dropout on the attention weights: masks as large as the score tensor
            # cost more than the attention itself on the CPU; dropout acts on outputs.
            msg = F.scaled_dot_product_attention(
                q, torch.cat(ks, 2), torch.cat(vs, 2), attn_mask=bias[:, None], scale=1.0
            )
            msg = msg.transpose(1, 2).reshape(h[t].shape)
            x = h[t] + self.dropout(self.o[self._nkey(t)](msg))
            x = x + self.ffn[self._nkey(t)](x)  # one dropout per layer: CPU masks are costly
            out[t] = x * mask[t][..., None]
        return out

    def _relation_blocks(self, keys, vals, unit):
        """Relation -> its ``(keys, values, unit nodes)`` block: one batched product per
        source type for all the relations out of it, instead of one per relation."""
        rks = [self._rkey(e) for e in self._by_source]
        rel_emb = torch.stack([self.rel_emb[k] for k in rks])  # (R, H, dh)
        prior = torch.stack([self.prior[k] for k in rks])  # (R, H)
        scale = rel_emb * (prior[..., None] / math.sqrt(self.dh))
        w_att = torch.stack([self.w_att[k] for k in rks]) * scale[:, :, None]  # (R, H, dh, dh)
        w_msg = torch.stack([self.w_msg[k] for k in rks])
        cos = torch.stack([self.cos_scale[k] for k in rks])  # (R, 1)
        blocks = {}
        for s in self.node_types:
            lo, hi = self._slices[s]
            if lo == hi:
                continue
            k_s = torch.einsum("bhnd,rhde->rbhne", keys[s], w_att[lo:hi])
            v_s = torch.einsum("bhnd,rhde->rbhne", vals[s], w_msg[lo:hi])
            u_s = unit[s] * cos[lo:hi, :, None, None]  # (R_s, B, N, d)
            for j, e in enumerate(self._by_source[lo:hi]):
                blocks[e] = (k_s[j], v_s[j], u_s[j])
        return blocks
