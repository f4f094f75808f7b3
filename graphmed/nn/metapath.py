"""Global meta-path neighbouring with semantic attention (HAN-like).

For each meta-path ``m0 -r1-> m1 -r2-> ... mk`` the nodes of ``m1`` attend to
those of ``m0`` through relation ``r1``, the result is added to ``m1``'s nodes,
and so on along the path: the relations compose. The last hop attends from
the patient's pooled ``mk`` (the masked mean of its nodes), since only that
vector leaves the path; with a single query the key and value projections
move onto the query side (``q . (W_k s + b_k) = (q W_k) . s + const`` and
``sum_n a_n (W_v s_n + b_v) = W_v (sum_n a_n s_n) + b_v``), so the last hop
costs O(N d) instead of O(N d^2).
A semantic attention weighs the paths per patient; those weights are kept
for export.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..typing import MetaPath
from .gated_attention import masked_softmax


class MetaPathAggregation(nn.Module):
    """Aggregate along meta-paths, then combine them by semantic attention.

    Args:
        metapaths: Meta-paths as lists of ``(src, relation, dst)`` steps.
        node_types: Modality names.
        d: Node width.
        dropout: Dropout rate.
        heterogeneous: If False, steps share one set of parameters.
    """

    def __init__(
        self,
        metapaths: list[MetaPath],
        node_types: list[str],
        d: int,
        dropout: float = 0.1,
        heterogeneous: bool = True,
    ):
        super().__init__()
        if not metapaths:
            raise ValueError("MetaPathAggregation needs at least one meta-path")
        self.metapaths = [[tuple(step) for step in p] for p in metapaths]
        self.heterogeneous = heterogeneous
        steps = sorted({self._key(s) for p in self.metapaths for s in p})
        types = sorted({self._tkey(t) for t in node_types})
        self.q = nn.ModuleDict({t: nn.Linear(d, d) for t in types})
        self.k = nn.ModuleDict({s: nn.Linear(d, d) for s in steps})
        self.v = nn.ModuleDict({s: nn.Linear(d, d) for s in steps})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(d) for t in types})
        self.semantic = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.dropout = nn.Dropout(dropout)
        self.scale = 1 / math.sqrt(d)
        # Where each path's last hop finds its target, step and target type in the stacks
        # of _last_hops (buffers: no host-to-device copy in a step, none in the state_dict).
        lasts = [p[-1] for p in self.metapaths]
        self._last_dsts = list(dict.fromkeys(step[2] for step in lasts))
        self._last_steps = list(dict.fromkeys(self._key(step) for step in lasts))
        self._last_types = list(dict.fromkeys(self._tkey(t) for t in self._last_dsts))
        index = {
            "last_at_dst": [self._last_dsts.index(step[2]) for step in lasts],
            "last_at_step": [self._last_steps.index(self._key(step)) for step in lasts],
            "last_at_type": [self._last_types.index(self._tkey(t)) for t in self._last_dsts],
        }
        for name, values in index.items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)

    def _key(self, step) -> str:
        return "__".join(step) if self.heterogeneous else "step"

    def _tkey(self, t: str) -> str:
        return t if self.heterogeneous else "node"

    def forward(
        self, h: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the meta-path embedding ``(B, d)`` and path weights ``(B, P)``."""
        # Hops inside a path are node-level; the last hop only feeds the path's
        # patient vector, so it attends from the pooled target (O(N) not O(N^2)).
        # Paths sharing a prefix share its hops, and a type's query is computed once.
        queries: dict[str, torch.Tensor] = {}
        hops: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        sources = []
        for path in self.metapaths:
            cur, cur_mask = h[path[0][0]], mask[path[0][0]]
            for i, step in enumerate(path[:-1]):
                key = tuple(path[: i + 1])
                if key not in hops:
                    dst = step[2]
                    if dst not in queries:
                        queries[dst] = self.q[self._tkey(dst)](h[dst])
                    msg = self._attend(queries[dst], step, cur, cur_mask)
                    hops[key] = (self.norm[self._tkey(dst)](h[dst] + msg), mask[dst])
                cur, cur_mask = hops[key]
            sources.append((cur, cur_mask))
        z = self._last_hops(h, mask, sources)  # (B, P, d)
        beta = torch.softmax(self.semantic(z).squeeze(-1), dim=1)
        return self.dropout((beta[..., None] * z).sum(1)), beta

    def _last_hops(self, h, mask, sources) -> torch.Tensor:
        """Every path's last hop at once, ``(B, P, d)``, one batched product per term
        (sources padded to the widest, the padding masked) instead of some fifteen small
        kernels per path.

        A single query per patient (the pooled target's) lets the key and value
        projections move onto the query side: ``q . (W_k s_n + b_k) = (q W_k) . s_n
        + const`` and ``sum_n a_n (W_v s_n + b_v) = W_v (sum_n a_n s_n) + b_v sum_n a_n``
        (the weights sum to one, or to zero where every source is masked, as in
        :meth:`_attend`).
        """
        dsts, steps, types = self._last_dsts, self._last_steps, self._last_types
        at_dst, at_step, at_type = self.last_at_dst, self.last_at_step, self.last_at_type
        pooled = torch.stack([_masked_mean(h[t], mask[t]) for t in dsts], 1)  # (B, T, d)
        q = torch.stack([self.q[self._tkey(t)](pooled[:, j]) for j, t in enumerate(dsts)], 1)
        width = max(src.shape[1] for src, _ in sources)
        src = torch.stack([_pad_nodes(s, width) for s, _ in sources], 1)  # (B, P, N, d)
        src_mask = torch.stack([_pad_nodes(m, width) for _, m in sources], 1)  # (B, P, N)
        w_k = torch.stack([self.k[k].weight for k in steps])[at_step]  # (P, d, d)
        w_v = torch.stack([self.v[k].weight for k in steps])[at_step]
        b_v = torch.stack([self.v[k].bias for k in steps])[at_step]  # (P, d)
        # q . k_n = (q W_k) . s_n + q . b_k; the last term cancels in the softmax.
        qk = torch.einsum("bpe,ped->bpd", q[:, at_dst], w_k)
        scores = torch.einsum("bpd,bpnd->bpn", qk, src) * self.scale
        att = masked_softmax(scores, src_mask, -1)
        mixed = torch.einsum("bpn,bpnd->bpd", att, src)
        msg = torch.einsum("bpd,ped->bpe", mixed, w_v) + b_v * att.sum(-1, keepdim=True)
        x = pooled[:, at_dst] + msg
        norms = [self.norm[t] for t in types]
        weight = torch.stack([n.weight for n in norms])[at_type][at_dst]
        bias = torch.stack([n.bias for n in norms])[at_type][at_dst]
        return F.layer_norm(x, x.shape[-1:], eps=norms[0].eps) * weight + bias

    def _attend(self, q, step, src, src_mask):
        k, v = self.k[self._key(step)](src), self.v[self._key(step)](src)
        att = masked_softmax(q @ k.transpose(1, 2) * self.scale, src_mask[:, None, :], -1)
        return att @ v

    def _attend_pooled(self, q, step, src, src_mask):
        """:meth:`_attend` for one query per patient ``(B, d)``, projections moved onto it
        (one path at a time: the reference :meth:`_last_hops` is tested against)."""
        lin_k, lin_v = self.k[self._key(step)], self.v[self._key(step)]
        # q . k_n = q . (W_k s_n + b_k) = (q W_k) . s_n + q . b_k; the last term is the
        # same for every n and cancels in the softmax.
        scores = torch.einsum("bd,bnd->bn", q @ lin_k.weight, src) * self.scale
        att = masked_softmax(scores, src_mask, -1)
        # The weights sum to one (zero when every source is masked, like _attend).
        mixed = torch.einsum("bn,bnd->bd", att, src)
        return nn.functional.linear(mixed, lin_v.weight) + lin_v.bias * att.sum(-1, keepdim=True)


def _pad_nodes(x: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, N, ...)`` padded with zeros (False) to ``width`` nodes."""
    if x.shape[1] == width:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]
    return F.pad(x, pad)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.float()[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)
