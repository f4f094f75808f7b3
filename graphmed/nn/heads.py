"""Task heads: a linear map on the patient embedding plus the loss it is trained with.

A head does not care which encoder sits in front of it: ``forward`` takes a
``(B, d)`` embedding and ``loss`` wraps a function of :mod:`graphmed.losses`.
Every head follows the :class:`Head` protocol, so that the model, the trainer
and the inference layer ask the head (its targets, risk, survival curve and
export columns) instead of testing its ``kind``; ``kind`` (``"cox"``,
``"discrete"`` or ``"classification"``) stays as its name in saved models. The
time-binning transform of the discrete-time head, :class:`DiscreteTimeBins`,
belongs to that head and is fitted on the training fold only.

A new head implements :class:`Head` (see :class:`CoxHead` for the smallest
one) and is built in :func:`graphmed.train.builder.build_model`.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..errors import GraphMedError
from ..losses import TIES, _check_choice, cox_ph_loss, cross_entropy, discrete_time_nll


class DiscreteTimeBins:
    """Time bins at quantiles of the training event times (MCAT's binning).

    ``fit`` places the ``n_bins - 1`` inner edges at the ``k / n_bins``
    quantiles of the *event* times (censored times do not move them) and the
    outer edges at the smallest and largest training time. ``transform`` maps a
    time to the bin ``k`` with ``edges[k] <= t < edges[k + 1]``; times outside
    the training range fall into the first or last bin.

    Args:
        n_bins: Number of bins ``K`` (MCAT: 4).

    Attributes:
        edges_: ``(K + 1,)`` bin edges after ``fit``.
    """

    def __init__(self, n_bins: int = 4):
        if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise GraphMedError(f"n_bins must be a positive integer, but got {n_bins!r}")
        self.n_bins = int(n_bins)
        self.edges_: np.ndarray | None = None

    def fit(self, times: Any, events: Any) -> DiscreteTimeBins:
        """Place the edges from training ``times`` and ``events`` (1 = event)."""
        t = np.asarray(times, dtype=float).reshape(-1)
        e = np.asarray(events, dtype=float).reshape(-1)
        if t.shape != e.shape:
            raise GraphMedError(f"expected as many events as times ({t.size}), but got {e.size}")
        if not np.isfinite(t).all():
            raise GraphMedError(
                "times contain NaN or infinite values; drop or fix those patients first"
            )
        if not (e > 0).any():
            raise GraphMedError(
                "cannot place discrete-time bins: the training times have no events "
                "(the edges are quantiles of event times)"
            )
        inner = np.quantile(t[e > 0], np.arange(1, self.n_bins) / self.n_bins)
        if np.unique(inner).size < inner.size:
            warnings.warn(
                f"{self.n_bins} bins but tied event-time quantiles {inner.tolist()}: some bins "
                "will stay empty; use fewer bins",
                stacklevel=2,
            )
        self.edges_ = np.concatenate([[t.min()], inner, [t.max()]])
        return self

    def _check_fitted(self) -> np.ndarray:
        if self.edges_ is None:
            raise GraphMedError(
                "DiscreteTimeBins is not fitted; call fit(times, events) on the training fold first"
            )
        return self.edges_

    @property
    def edges(self) -> np.ndarray:
        """``(K + 1,)`` bin edges (the survival curve of bin ``k`` ends at ``edges[k + 1]``)."""
        return self._check_fitted()

    @property
    def inner_edges(self) -> np.ndarray:
        """``(K - 1,)`` boundaries between bins."""
        return self._check_fitted()[1:-1]

    def transform(self, times: Any) -> np.ndarray:
        """Bin index (``0 .. K-1``, int64) of each time."""
        t = np.asarray(times, dtype=float)
        return np.searchsorted(self.inner_edges, t, side="right").astype(np.int64)

    def bucketize(
        self, times: torch.Tensor, boundaries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tensor-side :meth:`transform`: bin indices on ``times``' device.

        Args:
            times: Tensor of times, any shape.
            boundaries: The inner edges already on the device (as a head keeps
                them); by default they are copied from :attr:`inner_edges`.
        """
        if boundaries is None:
            boundaries = torch.as_tensor(self.inner_edges, device=times.device)
        # compare in the times' dtype so float32 times equal to an edge land as transform() puts them
        return torch.bucketize(times, boundaries.to(times.dtype), right=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{"n_bins", "edges"}`` for JSON or a checkpoint."""
        return {"n_bins": self.n_bins, "edges": self.edges.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DiscreteTimeBins:
        """Rebuild bins saved by :meth:`to_dict`."""
        bins = cls(int(state["n_bins"]))
        edges = np.asarray(state["edges"], dtype=float)
        if edges.shape != (bins.n_bins + 1,) or np.any(np.diff(edges) < 0):
            raise GraphMedError(
                f"expected {bins.n_bins + 1} non-decreasing edges for {bins.n_bins} bins, "
                f"but got {edges.tolist()}"
            )
        bins.edges_ = edges
        return bins

    def __repr__(self) -> str:
        edges = "unfitted" if self.edges_ is None else f"edges={np.round(self.edges_, 4).tolist()}"
        return f"DiscreteTimeBins(n_bins={self.n_bins}, {edges})"


class Targets(Protocol):
    """What a head's :meth:`Head.objective` reads: a :class:`~graphmed.graph.batch.GraphBatch`
    or all of a :class:`~graphmed.graph.build.PatientGraphs`."""

    time: torch.Tensor
    event: torch.Tensor
    labels: dict[str, torch.Tensor]


@runtime_checkable
class Head(Protocol):
    """The contract every task head keeps.

    Attributes:
        kind: The head's name in saved models and export metadata.
        is_survival: Whether it models survival (a risk, and maybe a curve).
        bins: The fitted :class:`DiscreteTimeBins` of a discrete-time head, else ``None``.
    """

    kind: str
    is_survival: bool
    bins: DiscreteTimeBins | None

    def objective(self, raw: torch.Tensor, targets: Targets, name: str) -> torch.Tensor:
        """The loss of the raw output on ``targets`` (``name``: the head's key, for labels)."""

    def outputs(self, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
        """Per-patient predictions: ``"risk"``, ``"survival"`` or ``"proba:<name>"``."""

    def survival_times(self) -> np.ndarray | None:
        """Times of the survival curve's columns, or ``None`` where the head has none."""

    def export_columns(self, name: str, classes: list | None) -> list[str]:
        """The export's column names for this head, in order (all float32)."""

    def export_values(self, name: str, classes: list | None, preds: Any) -> dict[str, Any]:
        """Column name -> values from :class:`~graphmed.inference.predict.Predictions`."""

    def describe(self, classes: list | None) -> dict[str, Any]:
        """The head's entry in export metadata."""


def surv_column(t: float) -> str:
    """Export column of the survival probability at time ``t``."""
    return f"surv_{float(t):.4g}"


class CoxHead(nn.Module):
    """Log-risk of a Cox proportional-hazards model.

    Args:
        d: Embedding width.
        ties: Tie handling of :func:`graphmed.losses.cox_ph_loss`.
    """

    kind = "cox"
    is_survival = True
    bins = None

    def __init__(self, d: int, ties: str = "efron"):
        super().__init__()
        _check_choice("ties", ties, TIES)
        self.ties = ties
        self.linear = nn.Linear(d, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` -> ``(B,)`` log-risk."""
        return self.linear(z).squeeze(-1)

    def loss(self, out: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """Mean negative partial log-likelihood per event."""
        return cox_ph_loss(out, time, event, ties=self.ties)

    def risk(self, out: torch.Tensor) -> torch.Tensor:
        """Higher is worse: the log-risk itself."""
        return out

    def objective(self, raw: torch.Tensor, targets: Targets, name: str) -> torch.Tensor:
        return self.loss(raw, targets.time, targets.event)

    def outputs(self, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
        return {"risk": self.risk(raw)}

    def survival_times(self) -> None:
        """None: a Cox curve needs a baseline hazard fitted outside the network."""
        return None

    def export_columns(self, name: str, classes: list | None) -> list[str]:
        return ["risk"]

    def export_values(self, name: str, classes: list | None, preds: Any) -> dict[str, Any]:
        return {"risk": preds.risk}

    def describe(self, classes: list | None) -> dict[str, Any]:
        return {"kind": self.kind}


class DiscreteTimeHead(nn.Module):
    """Hazard logits over the bins of a fitted :class:`DiscreteTimeBins`.

    Args:
        d: Embedding width.
        bins: Fitted bins; their inner edges are kept as a (non-persistent)
            buffer so that ``loss`` bins the batch times on their device.
        alpha: Weight of the uncensored term of :func:`discrete_time_nll`.
        eps: Probability floor inside the logs.
    """

    kind = "discrete"
    is_survival = True

    def __init__(self, d: int, bins: DiscreteTimeBins, alpha: float = 0.4, eps: float = 1e-7):
        super().__init__()
        if not isinstance(bins, DiscreteTimeBins):
            raise GraphMedError(f"bins must be a DiscreteTimeBins, but got {type(bins).__name__}")
        self.bins = bins
        self.alpha, self.eps = float(alpha), float(eps)
        self.linear = nn.Linear(d, bins.n_bins)
        self.register_buffer(
            "boundaries", torch.as_tensor(bins.inner_edges, dtype=torch.float64), persistent=False
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` -> ``(B, K)`` hazard logits."""
        return self.linear(z)

    def bin_index(self, time: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bin of each time, computed on the times' device."""
        return self.bins.bucketize(time, self.boundaries)

    def loss(
        self,
        out: torch.Tensor,
        time: torch.Tensor,
        event: torch.Tensor,
        bin_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Discrete-time NLL; pass ``bin_index`` when it is precomputed."""
        idx = self.bin_index(time) if bin_index is None else bin_index
        return discrete_time_nll(out, idx, event, alpha=self.alpha, eps=self.eps)

    def hazards(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` probability of the event in each bin, given survival to it."""
        return torch.sigmoid(out)

    def survival(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` probability of surviving past each bin (at ``bins.edges[1:]``)."""
        return torch.cumprod(1.0 - self.hazards(out), dim=-1)

    def risk(self, out: torch.Tensor) -> torch.Tensor:
        """Higher is worse: minus the summed survival curve (MCAT)."""
        return -self.survival(out).sum(-1)

    def survival_curve(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` survival at :meth:`survival_times` (the same as :meth:`survival`)."""
        return self.survival(out)

    def objective(self, raw: torch.Tensor, targets: Targets, name: str) -> torch.Tensor:
        return self.loss(raw, targets.time, targets.event)

    def outputs(self, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
        return {"risk": self.risk(raw), "survival": self.survival_curve(raw)}

    def survival_times(self) -> np.ndarray:
        """``(K,)`` the upper edge of each bin."""
        return np.asarray(self.bins.edges[1:], dtype=float)

    def export_columns(self, name: str, classes: list | None) -> list[str]:
        return ["risk"] + [surv_column(t) for t in self.bins.edges[1:]]

    def export_values(self, name: str, classes: list | None, preds: Any) -> dict[str, Any]:
        cols = {"risk": preds.risk}
        for j, t in enumerate(self.bins.edges[1:]):
            cols[surv_column(t)] = preds.survival[:, j]
        return cols

    def describe(self, classes: list | None) -> dict[str, Any]:
        return {"kind": self.kind, "times": [float(t) for t in self.bins.edges[1:]]}


class ClassificationHead(nn.Module):
    """Class logits, trained with cross-entropy that skips missing labels.

    Args:
        d: Embedding width.
        n_classes: Number of classes (2 or more; binary tasks use two logits).
    """

    kind = "classification"
    is_survival = False
    bins = None

    def __init__(self, d: int, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise GraphMedError(f"n_classes must be at least 2, but got {n_classes}")
        self.n_classes = int(n_classes)
        self.linear = nn.Linear(d, self.n_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` -> ``(B, C)`` logits."""
        return self.linear(z)

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over known labels (negative or NaN = missing)."""
        return cross_entropy(out, labels)

    def proba(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` class probabilities."""
        return torch.softmax(out, dim=-1)

    def objective(self, raw: torch.Tensor, targets: Targets, name: str) -> torch.Tensor:
        """Cross-entropy on ``targets.labels[name]``."""
        return self.loss(raw, targets.labels[name])

    def outputs(self, raw: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
        return {f"proba:{name}": self.proba(raw)}

    def survival_times(self) -> None:
        return None

    def export_columns(self, name: str, classes: list | None) -> list[str]:
        return [f"proba_{name}_{c}" for c in classes]

    def export_values(self, name: str, classes: list | None, preds: Any) -> dict[str, Any]:
        return {f"proba_{name}_{c}": preds.proba[name][:, j] for j, c in enumerate(classes)}

    def describe(self, classes: list | None) -> dict[str, Any]:
        return {"kind": self.kind, "classes": classes}


__all__ = [
    "ClassificationHead",
    "CoxHead",
    "DiscreteTimeBins",
    "DiscreteTimeHead",
    "Head",
    "Targets",
    "surv_column",
]
