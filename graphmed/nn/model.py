"""GraphMedModel: the network with its task heads and the training objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..graph.batch import GraphBatch
from .graphmed_net import GraphMedNet, NetOutput


@dataclass
class ModelOutput:
    """The network's output plus each head's raw output (named by head)."""

    net: NetOutput
    heads: dict[str, torch.Tensor]


class GraphMedModel(nn.Module):
    """A :class:`GraphMedNet` with one or more heads.

    Args:
        net: The patient-graph encoder.
        heads: Head name -> head module. The name ``"survival"`` is a Cox or
            discrete-time head; any other name is a classification head whose
            labels are ``batch.labels[name]``.
        weights: Head name -> loss weight (default 1).
        steering_weight: Weight of the completion steering loss.
    """

    def __init__(
        self,
        net: GraphMedNet,
        heads: dict[str, nn.Module],
        weights: dict[str, float] | None = None,
        steering_weight: float = 0.1,
    ):
        super().__init__()
        if not heads:
            raise ValueError("GraphMedModel needs at least one head")
        self.net = net
        self.heads = nn.ModuleDict(heads)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in heads}
        self.steering_weight = steering_weight

    def forward(self, batch: GraphBatch) -> ModelOutput:
        out = self.net(batch)
        return ModelOutput(out, {name: head(out.embedding) for name, head in self.heads.items()})

    def loss(
        self, batch: GraphBatch, output: ModelOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of the head losses and the steering loss, and each part."""
        parts = {}
        for name, head in self.heads.items():
            raw = output.heads[name].float()
            if head.kind == "classification":
                parts[name] = head.loss(raw, batch.labels[name])
            else:
                parts[name] = head.loss(raw, batch.time, batch.event)
        total = sum(self.weights[n] * parts[n] for n in parts)
        if self.steering_weight:
            parts["steering"] = output.net.steering_loss
            total = total + self.steering_weight * output.net.steering_loss
        return total, parts
