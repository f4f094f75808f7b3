"""A batch of patient graphs as named, padded tensors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class GraphBatch:
    """Padded node tensors of a batch of patients.

    Attributes:
        x: Modality -> ``(B, N_m, f_m)`` float node features.
        node_mask: Modality -> ``(B, N_m)`` bool, True for real nodes.
        present: ``(B, M)`` bool, modality order of the model's layouts.
        time, event: ``(B,)`` float survival endpoint.
        labels: Label column -> ``(B,)`` int64 class codes (-1 = unknown).
        index: ``(B,)`` positions of the patients in their :class:`PatientGraphs`.
        edge_index: Graph modality -> ``(B, 2, E_m)`` edges between node slots.
        edge_mask: Graph modality -> ``(B, E_m)`` bool, True for real edges.
        edge_attr: Graph modality with edge features -> ``(B, E_m, f)`` float.
    """

    x: dict[str, torch.Tensor]
    node_mask: dict[str, torch.Tensor]
    present: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None
    edge_index: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_attr: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.present.shape[0]

    def to(self, device: str | torch.device, non_blocking: bool = False) -> GraphBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self,
            x={k: move(v) for k, v in self.x.items()},
            node_mask={k: move(v) for k, v in self.node_mask.items()},
            present=move(self.present),
            time=move(self.time),
            event=move(self.event),
            labels={k: move(v) for k, v in self.labels.items()},
            index=None if self.index is None else move(self.index),
            edge_index={k: move(v) for k, v in self.edge_index.items()},
            edge_mask={k: move(v) for k, v in self.edge_mask.items()},
            edge_attr={k: move(v) for k, v in self.edge_attr.items()},
        )
