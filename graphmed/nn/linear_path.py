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

With ``summaries`` the path also reads three per-patient summaries of each
named vector modality (an omics group the graph reads): the mean of its
standardised columns, the mean of their absolute values and the share of
columns above the training mean. For a mutation table the last is the
mutation burden over its columns, for copy number the middle one is a
measure of genomic instability: whole-profile signals that a sparse linear
model over single genes rarely finds. They are centred at their training
means (:meth:`fit_summary_centres`), so a missing group enters at zero.
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
        summaries: Vector modalities whose three whole-profile summaries the
            path also reads (:data:`SUMMARY_NAMES`).

    The coefficients are buffers (saved with the model, never trained);
    :meth:`set_coefficients` fills them, :func:`graphmed.train.linear.fit_linear_path`
    fits them.
    """

    def __init__(
        self,
        layouts: dict[str, ModalityLayout],
        modalities: list[str] | None = None,
        summaries: list[str] | None = None,
    ):
        super().__init__()
        order = list(layouts)
        self.modalities = order if modalities is None else [m for m in order if m in modalities]
        unknown = sorted(set(modalities or []) - set(order))
        if unknown or not self.modalities:
            raise ValueError(f"linear path modalities {unknown or modalities} not in {order}")
        not_vector = sorted(
            m for m in summaries or [] if m not in layouts or layouts[m].kind != "vector"
        )
        if not_vector:
            raise ValueError(f"linear path summaries of {not_vector}: only vector modalities")
        self._index = [order.index(m) for m in self.modalities]  # columns of ``available``
        self.layouts = {m: layouts[m] for m in self.modalities}
        self.summaries = [m for m in order if m in (summaries or [])]
        self._summary_index = [order.index(m) for m in self.summaries]
        self._summary_layouts = {m: layouts[m] for m in self.summaries}
        self.width = sum(self.widths().values())
        self.register_buffer("weight", torch.zeros(self.width))
        self.register_buffer("bias", torch.zeros(()))
        # saved only where there are summaries: a model saved before them loads unchanged
        self.register_buffer(
            "summary_centre",
            torch.zeros(len(SUMMARY_NAMES) * len(self.summaries)),
            persistent=bool(self.summaries),
        )

    def widths(self) -> dict[str, int]:
        """Block -> its number of columns in :meth:`features`: each read modality,
        then ``"<m>:summary"`` for each summarised one."""
        widths = {m: _width(lay) for m, lay in self.layouts.items()}
        widths.update({f"{m}:summary": len(SUMMARY_NAMES) for m in self.summaries})
        return widths

    def fit_summary_centres(
        self,
        x: dict[str, torch.Tensor],
        node_mask: dict[str, torch.Tensor],
        available: torch.Tensor,
    ) -> None:
        """Centre the summaries at their means over the (training) patients that have them."""
        centres = []
        for j, m in zip(self._summary_index, self.summaries):
            raw = _summaries(x[m].float(), self._summary_layouts[m])
            has = available[:, j]
            centres.append(raw[has].mean(0) if bool(has.any()) else raw.new_zeros(raw.shape[1]))
        if centres:
            self.summary_centre.copy_(torch.cat(centres).to(self.summary_centre))

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
        k = len(SUMMARY_NAMES)
        for i, (j, m) in enumerate(zip(self._summary_index, self.summaries)):
            xm = x[m].float()
            keep = available[:, j, None].to(xm.dtype)
            raw = (
                _summaries(xm, self._summary_layouts[m]) - self.summary_centre[i * k : (i + 1) * k]
            )
            parts.append(raw * keep)
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


SUMMARY_NAMES = ("mean", "mean_abs", "share_above")
"""The whole-profile summaries of a vector modality (``summaries``), in column order."""


def _summaries(xm: torch.Tensor, lay: ModalityLayout) -> torch.Tensor:
    """``(B, 3)``: mean, mean absolute value and share above zero of the real columns.

    Vector nodes are chunks of standardised columns, zero-padded past
    ``group_sizes``; the padding adds nothing to the sums and the means divide
    by the number of real columns.
    """
    flat = torch.nan_to_num(xm.reshape(len(xm), -1))
    n = float(sum(lay.group_sizes)) if lay.group_sizes else float(flat.shape[1])
    n = max(n, 1.0)
    return torch.stack(
        [flat.sum(1) / n, flat.abs().sum(1) / n, (flat > 0).to(flat.dtype).sum(1) / n], 1
    )


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
