"""An ensemble of trained :class:`GraphMedModel` members that predicts as one model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..graph.batch import GraphBatch
from .graphmed_net import NetOutput
from .model import GraphMedModel, ModelOutput


class _NetView:
    """The first member's network as the ensemble's ``net`` (modalities, meta-paths,
    completion), with the width ``d`` of the ensemble's embedding."""

    def __init__(self, first: nn.Module, d: int):
        self._first, self.d = first, d

    def __getattr__(self, name: str):
        return getattr(self._first, name)


class EnsembleModel(nn.Module):
    """Members of the same architecture, trained apart, averaged at prediction.

    Every head's raw output (Cox log-risk, discrete-time hazard logits,
    class logits) is the mean of the members' outputs, and so are the
    modality and meta-path attention weights. The patient embedding is the
    members' embeddings side by side, ``(B, n_members * d)``: the members'
    embedding spaces are not aligned, so their mean would mix unrelated axes.

    Args:
        members: Trained models built from one recipe (same modalities, heads
            and meta-paths), e.g. with different seeds and validation parts.
    """

    def __init__(self, members: Sequence[GraphMedModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        names = [list(m.heads) for m in members]
        if any(n != names[0] for n in names):
            raise ValueError(f"ensemble members have different heads: {names}")
        self.members = nn.ModuleList(members)

    @property
    def net(self) -> _NetView:
        first = self.members[0].net
        return _NetView(first, first.d * len(self.members))

    @property
    def heads(self) -> nn.ModuleDict:
        """The first member's heads (they turn the averaged raw outputs into risks)."""
        return self.members[0].heads

    @property
    def linear(self):
        return None  # each member adds its own linear path inside its forward

    def forward(self, batch: GraphBatch) -> ModelOutput:
        outs = [member(batch) for member in self.members]
        nets = [o.net for o in outs]

        def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(tensors).mean(0)

        net = NetOutput(
            embedding=torch.cat([n.embedding for n in nets], dim=-1),
            modality_embeddings=torch.cat([n.modality_embeddings for n in nets], dim=-1),
            modality_attention=mean([n.modality_attention for n in nets]),
            metapath_attention=mean([n.metapath_attention for n in nets]),
            completed=nets[0].completed,
            steering_loss=mean([n.steering_loss for n in nets]),
        )
        heads = {name: mean([o.heads[name] for o in outs]) for name in outs[0].heads}
        return ModelOutput(net, heads)

    def loss(
        self, batch: GraphBatch, output: ModelOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The head losses of the averaged outputs (the members are trained apart)."""
        return self.members[0].loss(batch, output)


__all__ = ["EnsembleModel"]
