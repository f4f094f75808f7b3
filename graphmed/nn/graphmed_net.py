"""GraphMedNet: encoders, prompt completion, local and meta-path aggregation, readout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.batch import GraphBatch
from ..graph.build import ModalityLayout, PatientGraphs
from ..typing import INTRA, EdgeType, MetaPath
from .bag_encoder import BagEncoder
from .completion import PromptCompletion
from .graph_encoder import GraphEncoder
from .metapath import MetaPathAggregation
from .readout import ModalityReadout
from .relation_attention import RelationAttention
from .tabular_encoder import TabularEncoder
from .vector_encoder import VectorEncoder

COMPLETIONS = ("prompt", "zero")
SET_KINDS = ("bag", "graph")
"""Kinds whose nodes are a set of instances of one width (prompts start from single nodes)."""
STEERING = ("cosine", "mse", "none")


@dataclass
class NetOutput:
    """What :class:`GraphMedNet` returns for a batch.

    Attributes:
        embedding: ``(B, d)`` fused patient embedding.
        modality_embeddings: ``(B, M, d)`` per-modality embeddings.
        modality_attention: ``(B, M)`` fusion weights of the modalities.
        metapath_attention: ``(B, P)`` semantic weights of the meta-paths
            (``(B, 0)`` without the meta-path level).
        completed: ``(B, M)`` True where a modality was completed.
        steering_loss: Scalar pulling completions toward hidden intact
            modalities (zero outside training).
    """

    embedding: torch.Tensor
    modality_embeddings: torch.Tensor
    modality_attention: torch.Tensor
    metapath_attention: torch.Tensor
    completed: torch.Tensor
    steering_loss: torch.Tensor


class GraphMedNet(nn.Module):
    """The patient-graph encoder of graphmed.

    Args:
        layouts: Modality -> node layout (from :class:`PatientGraphs`).
        edge_types: Cross-modal ``(src, relation, dst)`` types, both directions.
            Intra-modal types are added.
        metapaths: Meta-paths for the global level (empty: none).
        d: Node and embedding width.
        heads: Attention heads.
        layers: Local attention layers.
        dropout: Dropout rate.
        completion: ``"prompt"`` (prompt nodes) or ``"zero"`` (zero-filled
            input, the "no completion" ablation).
        n_prompts, n_bank, prompt_bank: Prompt nodes, bank size, bank on/off.
        modality_dropout: Share of present modalities hidden per patient in
            training (at least one is always kept).
        steering: Loss pulling a hidden modality's completion toward its
            intact embedding: ``"cosine"``, ``"mse"`` or ``"none"``.
        heterogeneous: False shares all type and relation parameters.
        metapath_level: False drops the global meta-path level.
        bag_tokens: Pool each bag, and each graph modality's nodes after message
            passing, to this many nodes before the patient graph.
        graph_conv: Message passing of graph modalities: ``"gatv2"`` or ``"gin"``.
    """

    def __init__(
        self,
        layouts: dict[str, ModalityLayout],
        edge_types: list[EdgeType],
        metapaths: list[MetaPath],
        *,
        d: int = 128,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
        completion: str = "prompt",
        n_prompts: int = 5,
        n_bank: int = 5,
        prompt_bank: bool = True,
        modality_dropout: float = 0.25,
        steering: str = "cosine",
        heterogeneous: bool = True,
        metapath_level: bool = True,
        bag_tokens: int | None = None,
        graph_conv: str = "gatv2",
    ):
        super().__init__()
        if completion not in COMPLETIONS:
            raise ValueError(f"completion must be one of {COMPLETIONS}, got '{completion}'")
        if steering not in STEERING:
            raise ValueError(f"steering must be one of {STEERING}, got '{steering}'")
        self.modalities = list(layouts)
        self.layouts = layouts
        self.completion_mode = completion
        self.modality_dropout = modality_dropout
        self.steering = steering
        self.n_prompts = n_prompts
        self.d = d
        encoders = {}
        for m, lay in layouts.items():
            if lay.kind == "tabular":
                encoders[m] = TabularEncoder(lay.n_nodes, d, lay.categorical)
            elif lay.kind in ("vector", "text"):
                encoders[m] = VectorEncoder(lay.n_nodes, lay.node_dim, d, dropout)
            elif lay.kind == "graph":
                encoders[m] = GraphEncoder(
                    lay.node_dim, d, bag_tokens, lay.edge_dim, graph_conv, dropout=dropout
                )
            else:
                encoders[m] = BagEncoder(lay.node_dim, d, bag_tokens, dropout)
        self.encoders = nn.ModuleDict(encoders)
        self.type_embedding = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d)) for m in self.modalities}
        )
        shapes = {
            m: (1, lay.node_dim) if lay.kind in SET_KINDS else (lay.n_nodes, lay.node_dim)
            for m, lay in layouts.items()
        }
        self.completion = (
            PromptCompletion(
                self.modalities, shapes, d, n_prompts, n_bank, prompt_bank, heads, dropout=dropout
            )
            if completion == "prompt"
            else None
        )
        all_edges = [(m, INTRA, m) for m in self.modalities] + [tuple(e) for e in edge_types]
        self.edge_types = all_edges
        self.layers = nn.ModuleList(
            RelationAttention(self.modalities, all_edges, d, heads, dropout, heterogeneous)
            for _ in range(layers)
        )
        self.metapaths = [list(map(tuple, p)) for p in metapaths]
        self.metapath = (
            MetaPathAggregation(self.metapaths, self.modalities, d, dropout, heterogeneous)
            if metapath_level and self.metapaths
            else None
        )
        self.readout = ModalityReadout(self.modalities, d)
        self.out_norm = nn.LayerNorm(d)

    # ---------------------------------------------------------------- priors
    def fit_priors(self, graphs: PatientGraphs, seed: int = 0) -> None:
        """Fit the prompt priors on training graphs (the training fold only)."""
        if self.completion is None:
            return
        profiles = {}
        for j, m in enumerate(self.modalities):
            has = graphs.present[:, j].cpu()
            x, mask = graphs.x[m].cpu()[has].float(), graphs.node_mask[m].cpu()[has]
            if self.layouts[m].kind in SET_KINDS:  # instances or graph nodes
                inst = x[mask]
                cap = torch.randperm(len(inst), generator=torch.Generator().manual_seed(seed))[
                    :20000
                ]
                profiles[m] = inst[cap][:, None, :]
            else:
                profiles[m] = x
        self.completion.fit_priors(profiles, seed)

    # --------------------------------------------------------------- forward
    def _hide(self, present: torch.Tensor) -> torch.Tensor:
        """Random (B, M) mask of present modalities to hide, keeping at least one."""
        if not self.training or self.modality_dropout <= 0:
            return torch.zeros_like(present)
        draw = torch.rand(present.shape, device=present.device)
        hide = present & (draw < self.modality_dropout)
        # Keep the present modality with the highest draw whenever all would go.
        keep = F.one_hot(torch.where(present, draw, -1.0).argmax(1), present.shape[1]).bool()
        all_hidden = (present & ~hide).sum(1, keepdim=True) == 0
        return hide & ~(keep & all_hidden)

    def forward(self, batch: GraphBatch) -> NetOutput:
        present = batch.present
        hidden = self._hide(present)
        available = present & ~hidden
        h, mask = {}, {}
        for j, m in enumerate(self.modalities):
            x, node_mask = batch.x[m], batch.node_mask[m]
            if self.completion is None:
                # Zero-fill: the missing modality enters as encoded zeros.
                x = x * available[:, j, None, None]
                node_mask = _zero_fill_mask(node_mask, self.layouts[m].kind, available[:, j])
            enc = self.encoders[m]
            if isinstance(enc, GraphEncoder):
                edge_mask = batch.edge_mask[m]
                if self.completion is None:  # a zero-filled graph keeps no edge (no degree)
                    edge_mask = edge_mask & available[:, j, None]
                h[m], mask[m] = enc(
                    x, node_mask, batch.edge_index[m], edge_mask, batch.edge_attr.get(m)
                )
            elif isinstance(enc, BagEncoder):
                h[m], mask[m] = enc(x, node_mask)
            else:
                h[m] = enc(x)
                mask[m] = node_mask
            h[m] = (h[m] + self.type_embedding[m]) * mask[m][..., None]
        complete = ~available
        prompt_mask = {m: torch.zeros_like(mask[m]) for m in self.modalities}
        steer = present.new_zeros((), dtype=h[self.modalities[0]].dtype)
        if self.completion is not None:
            prompts = self.completion(self.encoders, h, mask, available)  # (B, M, P, d)
            steer = self._steering_loss(prompts, h, mask, hidden)
            for j, m in enumerate(self.modalities):
                h[m], mask[m], prompt_mask[m] = _insert_prompts(
                    h[m], mask[m], prompts[:, j], complete[:, j]
                )
        for layer in self.layers:
            h = layer(h, mask, prompt_mask)
        fused, emb, alpha = self.readout(h, mask, mask_any(mask, self.modalities))
        if self.metapath is not None:
            z_meta, beta = self.metapath(h, mask)
            fused = fused + z_meta
        else:
            beta = fused.new_zeros(len(fused), 0)
        return NetOutput(self.out_norm(fused), emb, alpha, beta, complete, steer)

    def _steering_loss(self, prompts, h, mask, hidden) -> torch.Tensor:
        if self.steering == "none" or not self.training:
            return prompts.new_zeros(())
        losses = []
        for j, m in enumerate(self.modalities):
            w = mask[m].float()[..., None]
            target = ((h[m] * w).sum(1) / w.sum(1).clamp(min=1.0)).detach()
            pred = prompts[:, j].mean(1)
            if self.steering == "cosine":
                losses.append(1 - F.cosine_similarity(pred, target, dim=-1))
            else:
                losses.append(((pred - target) ** 2).mean(-1))
        per = torch.stack(losses, 1) * hidden
        return per.sum() / hidden.sum().clamp(min=1)


def mask_any(mask: dict[str, torch.Tensor], modalities: list[str]) -> torch.Tensor:
    """``(B, M)``: which modalities have at least one node."""
    return torch.stack([mask[m].any(1) for m in modalities], 1)


def _zero_fill_mask(node_mask: torch.Tensor, kind: str, available: torch.Tensor) -> torch.Tensor:
    """Node mask of zero-filled modalities: all slots (one for a bag) where unavailable."""
    filled = torch.ones_like(node_mask)
    if kind in SET_KINDS:
        filled[:, 1:] = False
    return torch.where(available[:, None], node_mask, filled)


def _insert_prompts(h, mask, prompts, complete):
    """Replace the nodes of rows ``complete`` by ``prompts``, padding as needed."""
    n_prompts = prompts.shape[1]
    if h.shape[1] < n_prompts:
        pad = n_prompts - h.shape[1]
        h = F.pad(h, (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad))
    slot = torch.arange(h.shape[1], device=h.device) < n_prompts
    prompt_nodes = F.pad(prompts, (0, 0, 0, h.shape[1] - n_prompts))
    c = complete[:, None]
    h = torch.where(c[..., None], prompt_nodes, h)
    mask = torch.where(c, slot[None].expand_as(mask), mask)
    return h, mask, c & slot[None]
