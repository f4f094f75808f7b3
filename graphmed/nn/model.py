"""GraphMedModel: the network with its task heads and the training objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..graph.batch import GraphBatch
from .graphmed_net import GraphMedNet, NetOutput
from .heads import Targets
from .linear_path import LinearCoxPath


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
        linear: A fitted :class:`LinearCoxPath` whose linear predictor is added to
            the survival head's output (log-risk, or every bin's hazard logit). The
            head's weights then start at zero, so training starts from the linear model.
    """

    def __init__(
        self,
        net: GraphMedNet,
        heads: dict[str, nn.Module],
        weights: dict[str, float] | None = None,
        steering_weight: float = 0.1,
        linear: LinearCoxPath | None = None,
    ):
        super().__init__()
        if not heads:
            raise ValueError("GraphMedModel needs at least one head")
        self.net = net
        self.heads = nn.ModuleDict(heads)
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in heads}
        self.steering_weight = steering_weight
        self.linear = linear
        if linear is not None:
            if "survival" not in heads:
                raise ValueError("a linear path needs a survival head")
            with torch.no_grad():
                head = heads["survival"].linear
                head.weight.zero_()
                if head.bias.numel() == 1:  # a Cox head: its bias is meaningless anyway
                    head.bias.zero_()

    def forward(self, batch: GraphBatch) -> ModelOutput:
        out = self.net(batch)
        raw = {name: head(out.embedding) for name, head in self.heads.items()}
        if self.linear is not None:
            # the modalities the network used: missing and hidden ones enter at their mean
            lp = self.linear(batch.x, batch.node_mask, ~out.completed).to(raw["survival"].dtype)
            s = raw["survival"]
            raw["survival"] = s + (lp if s.dim() == 1 else lp[:, None])
        return ModelOutput(out, raw)

    def loss(
        self, batch: GraphBatch, output: ModelOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of the head losses and the steering loss, and each part."""
        parts = self.head_losses({n: raw.float() for n, raw in output.heads.items()}, batch)
        total = sum(self.weights[n] * parts[n] for n in parts)
        if self.steering_weight:
            parts["steering"] = output.net.steering_loss
            total = total + self.steering_weight * output.net.steering_loss
        return total, parts

    def head_losses(
        self, raw: dict[str, torch.Tensor], targets: Targets
    ) -> dict[str, torch.Tensor]:
        """Each head's loss (unweighted) of its raw output on ``targets`` (a batch, or all of
        a :class:`~graphmed.graph.build.PatientGraphs` for a full-set validation loss)."""
        return {name: head.objective(raw[name], targets, name) for name, head in self.heads.items()}
