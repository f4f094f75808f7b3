"""A penalised linear Cox path on the model's own inputs, beside the graph.

Small cohorts with wide omics punish variance more than bias: an elastic-net
Cox model on the concatenated inputs (CoxNet) is hard to beat on main effects.
:class:`LinearCoxPath` holds such a model's coefficients, fitted on the
training patients before the network is trained, and adds its linear
predictor to the survival head's output. The graph part then starts from the
linear model and only has to learn what it misses (interactions, completion
of missing modalities), and early stopping decides how far it moves away.

The path reads exactly what the network reads (the cached node tensors of
:class:`~graphmed.graph.build.PatientGraphs`, already standardised with
training statistics), so a saved model needs nothing beside its
``state_dict``. A modality that is missing, or hidden by modality dropout,
enters as zeros, i.e. at its training mean (mean imputation), as in CoxNet.
Bags enter as the mean of their instances; categorical tabular features are
one-hot coded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..graph.build import ModalityLayout


class LinearCoxPath(nn.Module):
    """Frozen linear predictor ``x . w + b`` over the flattened modality inputs.

    Args:
        layouts: Modality -> node layout (from :class:`PatientGraphs`), every
            modality of the model in its order.
        modalities: The modalities the path reads (default: all); the others
            are left to the graph.

    The coefficients are buffers (saved with the model, never trained);
    :meth:`set_coefficients` fills them, :func:`graphmed.train.linear.fit_linear_path`
    fits them.
    """

    def __init__(self, layouts: dict[str, ModalityLayout], modalities: list[str] | None = None):
        super().__init__()
        order = list(layouts)
        self.modalities = order if modalities is None else [m for m in order if m in modalities]
        unknown = sorted(set(modalities or []) - set(order))
        if unknown or not self.modalities:
            raise ValueError(f"linear path modalities {unknown or modalities} not in {order}")
        self._index = [order.index(m) for m in self.modalities]  # columns of ``available``
        self.layouts = {m: layouts[m] for m in self.modalities}
        self.width = sum(self.widths().values())
        self.register_buffer("weight", torch.zeros(self.width))
        self.register_buffer("bias", torch.zeros(()))

    def widths(self) -> dict[str, int]:
        """Modality -> its number of columns in :meth:`features`."""
        return {m: _width(lay) for m, lay in self.layouts.items()}

    def features(
        self,
        x: dict[str, torch.Tensor],
        node_mask: dict[str, torch.Tensor],
        available: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, F)`` design matrix: zeros where a modality is not available.

        Args:
            x: Modality -> ``(B, N, f)`` node features.
            node_mask: Modality -> ``(B, N)`` real nodes.
            available: ``(B, M)`` modalities the model may use (present, not hidden).
        """
        parts = []
        for j, m in zip(self._index, self.modalities):
            lay, xm = self.layouts[m], x[m].float()
            keep = available[:, j, None].to(xm.dtype)
            if lay.kind == "bag":
                w = node_mask[m].to(xm.dtype)[..., None]
                flat = (xm * w).sum(1) / w.sum(1).clamp(min=1.0)
            elif lay.kind == "tabular" and lay.categorical:
                flat = _one_hot_tabular(xm[..., 0], lay)
            else:
                flat = xm.reshape(len(xm), -1)
            parts.append(torch.nan_to_num(flat) * keep)
        return torch.cat(parts, 1)

    def forward(
        self,
        x: dict[str, torch.Tensor],
        node_mask: dict[str, torch.Tensor],
        available: torch.Tensor,
    ) -> torch.Tensor:
        """``(B,)`` linear predictor."""
        return self.features(x, node_mask, available) @ self.weight + self.bias

    def set_coefficients(self, weight: np.ndarray, bias: float) -> None:
        weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        if weight.shape[0] != self.width:
            raise ValueError(f"expected {self.width} coefficients, got {weight.shape[0]}")
        self.weight.copy_(torch.from_numpy(weight))
        self.bias.fill_(float(bias))


def _width(lay: ModalityLayout) -> int:
    if lay.kind == "bag":
        return lay.node_dim
    if lay.kind == "tabular" and lay.categorical:
        return sum(lay.categorical.get(j, 1) for j in range(lay.n_nodes))
    return lay.n_nodes * lay.node_dim


def _one_hot_tabular(values: torch.Tensor, lay: ModalityLayout) -> torch.Tensor:
    """``(B, n)`` tabular values -> numeric columns as they are, codes one-hot."""
    cols = []
    for j in range(lay.n_nodes):
        v = values[:, j]
        if j in lay.categorical:
            codes = torch.nan_to_num(v).long().clamp(0, lay.categorical[j] - 1)
            cols.append(torch.nn.functional.one_hot(codes, lay.categorical[j]).to(values.dtype))
        else:
            cols.append(v[:, None])
    return torch.cat(cols, 1)


__all__ = ["LinearCoxPath"]
