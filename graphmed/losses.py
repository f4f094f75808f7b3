"""Training objectives as pure functions over tensors.

The survival losses follow pycox / torchsurv: a function takes the network's
raw output and the batch's endpoint and returns a scalar; modules in
:mod:`graphmed.nn.heads` only wrap them. None of them reads a tensor value on
the host (no ``.item()``, no branching on data), so a training step never
waits for the GPU, and every batch -- including one without events or with
every label missing -- yields a finite scalar that is connected to the input's
graph, so ``backward()`` always works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import GraphMedError, did_you_mean

TIES = ("efron", "breslow")
REDUCTIONS = ("mean", "sum")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise GraphMedError(
            f"{name} must be one of {', '.join(map(repr, choices))}, but got {value!r}."
            + did_you_mean(value, choices)
        )


def _flat(name: str, x: torch.Tensor, n: int) -> torch.Tensor:
    x = x.reshape(-1)
    if x.shape[0] != n:
        raise GraphMedError(
            f"expected {name} with {n} values (one per patient), but got {x.shape[0]}"
        )
    return x


def cox_ph_loss(
    log_risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    ties: str = "efron",
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood.

    Patients are sorted by time once; every risk set is a reverse cumulative
    log-sum-exp over that order, so the cost is ``O(B log B)`` and large
    log-risks (``|log_risk|`` of 1e4) neither overflow nor underflow. Tied
    times are found by comparing sorted neighbours (no ``torch.unique``); a
    tied group's risk set starts at the group's first member.

    Ties (several events at the same time ``t_j``, ``d_j`` of them, with
    ``D_j`` the sum of their ``exp(log_risk)`` and ``R_j`` that of the risk
    set): ``"breslow"`` gives every tied event the denominator ``R_j``;
    ``"efron"`` gives the event of rank ``l = 0 .. d_j - 1`` within its group
    ``R_j - l / d_j * D_j`` (lifelines' and R's default).

    Args:
        log_risk: ``(B,)`` or ``(B, 1)`` predicted log-hazard ratio.
        time: ``(B,)`` follow-up time.
        event: ``(B,)`` 1 / True for an event, 0 / False for censoring.
        ties: ``"efron"`` (default) or ``"breslow"``.
        reduction: ``"mean"`` divides by the number of events (at least 1);
            ``"sum"`` is the negative log-likelihood itself.

    Returns:
        A scalar. A batch without events gives 0 (with a zero gradient).
    """
    _check_choice("ties", ties, TIES)
    _check_choice("reduction", reduction, REDUCTIONS)
    r = log_risk.reshape(-1)
    n = r.shape[0]
    time = _flat("time", time, n)
    event = _flat("event", event, n)

    order = torch.argsort(time, stable=True)
    t, r, is_event = time[order], r[order], event[order].bool()
    e = is_event.to(r.dtype)
    pos = torch.arange(n, device=r.device)
    first = torch.ones(n, dtype=torch.bool, device=r.device)
    first[1:] = t[1:] != t[:-1]
    # index of each patient's tie-group start: a running max of group starts
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), 0).values
    log_risk_set = torch.logcumsumexp(r.flip(0), 0).flip(0)[start]

    if ties == "breslow":
        log_denominator = log_risk_set
    else:
        group = torch.cumsum(first.long(), 0) - 1
        before = torch.cumsum(e, 0) - e  # events strictly before each position
        rank = before - before[start]  # events of the same group before it
        n_tied = torch.zeros_like(e).scatter_add(0, group, e)[group]
        # log D_j, shifted by the group's largest event log-risk; every
        # masked branch is made finite first so that no 0 * inf reaches backward
        masked = torch.where(is_event, r.detach(), torch.full_like(r, -math.inf))
        gmax = torch.full_like(r, -math.inf).scatter_reduce(0, group, masked, "amax")
        gmax = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))[group]
        expd = torch.where(is_event, torch.exp(torch.where(is_event, r - gmax, 0.0)), 0.0)
        summed = torch.zeros_like(r).scatter_add(0, group, expd)[group]
        log_d = torch.log(torch.where(is_event, summed, torch.ones_like(summed))) + gmax
        ratio = torch.exp(torch.where(is_event, log_d - log_risk_set, -math.inf)).clamp(max=1.0)
        frac = torch.where(is_event, rank / n_tied.clamp(min=1.0), 0.0)
        log_denominator = log_risk_set + torch.log1p(-frac * ratio)

    nll = torch.where(is_event, log_denominator - r, 0.0).sum()
    if reduction == "mean":
        nll = nll / e.sum().clamp(min=1.0)
    return nll


def discrete_time_nll(
    logits: torch.Tensor,
    bin_index: torch.Tensor,
    event: torch.Tensor,
    alpha: float = 0.4,
    reduction: str = "mean",
    eps: float = 1e-7,
) -> torch.Tensor:
    """Negative log-likelihood of a discrete-time hazard model (MCAT's form).

    With hazards ``h = sigmoid(logits)``, survival ``S_k = prod_{i<=k}(1 - h_i)``
    and ``S_pad = [1, S_0, .., S_{K-1}]``, a patient in bin ``y``
    contributes ``u = -event * (log S_pad[y] + log h[y])`` and
    ``c = -(1 - event) * log S_pad[y + 1]``; the loss is
    ``(1 - alpha) * (u + c) + alpha * u``, which up-weights uncensored
    patients. The logs are taken in log space (``logsigmoid``) and clamped at
    ``log(eps)``, which equals clamping the probabilities at ``eps``.

    Args:
        logits: ``(B, K)`` hazard logits, one per time bin.
        bin_index: ``(B,)`` integer bin of each patient's time, in ``0 .. K-1``.
        event: ``(B,)`` 1 / True for an event, 0 / False for censoring.
        alpha: Weight of the extra uncensored term (MCAT: 0.4).
        reduction: ``"mean"`` over patients or ``"sum"``.
        eps: Floor of the probabilities inside the logs.

    Returns:
        A scalar.
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    if logits.dim() != 2:
        raise GraphMedError(f"expected logits of shape (B, K), but got {tuple(logits.shape)}")
    n = logits.shape[0]
    y = _flat("bin_index", bin_index, n).long().unsqueeze(1)
    e = _flat("event", event, n).to(logits.dtype)
    floor = math.log(eps)
    log_h = F.logsigmoid(logits)
    log_s = torch.cumsum(F.logsigmoid(-logits), 1)  # log prod (1 - h)
    log_s_pad = F.pad(log_s, (1, 0))  # log S_pad, with log 1 = 0 in front
    log_h_y = log_h.gather(1, y).squeeze(1).clamp(min=floor)
    log_s_y = log_s_pad.gather(1, y).squeeze(1).clamp(min=floor)
    log_s_next = log_s_pad.gather(1, y + 1).squeeze(1).clamp(min=floor)
    uncensored = -e * (log_s_y + log_h_y)
    censored = -(1.0 - e) * log_s_next
    loss = (1.0 - alpha) * (censored + uncensored) + alpha * uncensored
    return loss.mean() if reduction == "mean" else loss.sum()


def _known(labels: torch.Tensor) -> torch.Tensor:
    if labels.is_floating_point():
        return torch.isfinite(labels) & (labels >= 0)
    return labels >= 0


def _masked_reduce(per: torch.Tensor, known: torch.Tensor, reduction: str) -> torch.Tensor:
    total = torch.where(known, per, 0.0).sum()
    if reduction == "mean":
        return total / known.sum().clamp(min=1)
    return total


def binary_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy on logits, ignoring missing labels.

    Args:
        logits: ``(B,)`` or ``(B, 1)`` logits.
        labels: ``(B,)`` 0 / 1; a negative or NaN label is missing and ignored.
        reduction: ``"mean"`` over known labels or ``"sum"``.

    Returns:
        A scalar; 0 (with a zero gradient) when every label is missing.
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    x = logits.reshape(-1)
    labels = _flat("labels", labels, x.shape[0])
    known = _known(labels)
    # a NaN target would poison the gradient even where it is masked out
    target = torch.where(known, labels, torch.zeros_like(labels)).to(x.dtype)
    per = F.binary_cross_entropy_with_logits(x, target, reduction="none")
    return _masked_reduce(per, known, reduction)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Multi-class cross-entropy on logits, ignoring missing labels.

    Args:
        logits: ``(B, C)`` logits.
        labels: ``(B,)`` class codes in ``0 .. C-1``; a negative or NaN code is
            missing and ignored. Codes ``>= C`` are not checked (that would
            need a host read) and fail inside ``F.cross_entropy``.
        reduction: ``"mean"`` over known labels or ``"sum"``.

    Returns:
        A scalar; 0 (with a zero gradient) when every label is missing.
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    if logits.dim() != 2:
        raise GraphMedError(f"expected logits of shape (B, C), but got {tuple(logits.shape)}")
    labels = _flat("labels", labels, logits.shape[0])
    known = _known(labels)
    target = torch.where(known, labels, torch.zeros_like(labels)).long()
    per = F.cross_entropy(logits, target, reduction="none")
    return _masked_reduce(per, known, reduction)


def multitask_loss(
    losses: dict[str, torch.Tensor], weights: dict[str, float] | None = None
) -> torch.Tensor:
    """Weighted sum of named losses.

    Args:
        losses: Task name -> scalar loss.
        weights: Task name -> weight; a task without a weight counts 1.

    Returns:
        ``sum(weights[name] * losses[name])``.
    """
    if not losses:
        raise GraphMedError("multitask_loss needs at least one loss, but got an empty dict")
    weights = dict(weights or {})
    for name in weights:
        if name not in losses:
            raise GraphMedError(
                f"weight given for {name!r}, which is not a loss (losses: {sorted(losses)})."
                + did_you_mean(name, losses)
            )
    return sum(float(weights.get(name, 1.0)) * loss for name, loss in losses.items())


__all__ = [
    "binary_cross_entropy",
    "cox_ph_loss",
    "cross_entropy",
    "discrete_time_nll",
    "multitask_loss",
]
