"""Evaluation metrics as pure functions over arrays.

Survival metrics wrap scikit-survival and classification metrics wrap
scikit-learn; this module only turns plain arrays into what they expect and
keeps an evaluation running when one number cannot be computed: such a
number is NaN, with a :class:`UserWarning` that says why, never an exception.

Horizons and the valid range. The censoring distribution is a Kaplan-Meier
estimate on the *training* fold and the test curves end at the last *test*
time, so a horizon ``t`` is usable only in
``[min(test time), min(max(test time), max(train time)))``. Requested horizons
are clipped into that range (with a warning). Test patients followed beyond
the last horizon are, for the IPCW weights only, censored at
``min(time, max(train time))``; this changes no case, control or weight that
the metrics at those horizons use, and avoids sksurv's error when a test
patient outlives every training patient.

Uno's C and its truncation time. Untruncated, Uno's C weighs each event by
``1 / G(t)^2``, ``G`` the training fold's censoring survival, so one late
event where ``G`` is small can carry nearly all the weight (on fold 1 of
``graphmed quickstart`` that gave CoxNet an Uno's C of 0.04 against a
Harrell's C of 0.75). :func:`survival_metrics` therefore truncates at
:func:`uno_tau`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv

from .errors import GraphMedError

TIED_TOL = 1e-8  # sksurv's tolerance for tied risks


def _nan(why: str, warn: bool = True) -> float:
    if warn:
        warnings.warn(why, stacklevel=3)
    return float("nan")


def _guarded(name: str, fn, *args, warn: bool = True) -> float:
    # sksurv raises without a comparable pair, or warns and divides 0 by 0
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(fn(*args)[0])
    except NoComparablePairException:
        value = float("nan")
    if np.isnan(value):
        return _nan(f"{name} has no comparable pair; returning NaN", warn)
    return value


def _survival(time: Any, event: Any, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=float).reshape(-1)
    e = np.asarray(event, dtype=float).reshape(-1)
    if t.shape != e.shape:
        raise GraphMedError(
            f"expected {name}event with {t.size} values like {name}time, but got {e.size}"
        )
    if not np.isfinite(t).all() or not np.isin(e, (0, 1)).all():
        raise GraphMedError(
            f"{name}time must be finite and {name}event 0 / 1; drop unknown endpoints first"
        )
    return t, e.astype(bool)


def _risk(risk: Any, n: int) -> np.ndarray:
    r = np.asarray(risk, dtype=float).reshape(-1)
    if r.size != n:
        raise GraphMedError(
            f"expected risk with {n} values (one per test patient), but got {r.size}"
        )
    return r


def harrell_c(time: Any, event: Any, risk: Any, *, warn: bool = True) -> float:
    """Harrell's C-index: the one graphmed computes everywhere (reports, early
    stopping, the baselines' inner CV, ``score``), as
    ``sksurv.metrics.concordance_index_censored``.

    Higher ``risk`` means an earlier event. Where the index is undefined the
    result is NaN, never an exception: fewer than two patients, no events, no
    comparable pair (e.g. the only event is the last time), or a ``risk`` that
    is not finite everywhere (a diverged model). Each case warns unless ``warn=False``, for
    callers that handle NaN themselves (early stopping, inner CV).

    Args:
        time: ``(n,)`` follow-up times.
        event: ``(n,)`` 1 = event, 0 = censored.
        risk: ``(n,)`` predicted risk.
        warn: Warn when returning NaN (default ``True``).

    Raises:
        GraphMedError: ``time``, ``event`` and ``risk`` differ in length, or a
            time is not finite, or an event is not 0 / 1.
    """
    t, e = _survival(time, event)
    r = _risk(risk, t.size)
    if t.size < 2:
        return _nan(f"Harrell's C needs two patients, but got {t.size}; returning NaN", warn)
    if not e.any():
        return _nan("Harrell's C is undefined without events; returning NaN", warn)
    if not np.isfinite(r).all():
        return _nan("Harrell's C is undefined for a risk that is not finite; returning NaN", warn)
    return _guarded("Harrell's C", concordance_index_censored, e, t, r, warn=warn)


@torch.no_grad()
def concordance_index_torch(
    time: torch.Tensor, event: torch.Tensor, risk: torch.Tensor, block_size: int = 2048
) -> torch.Tensor:
    """Harrell's C-index on the tensors' device, for monitoring during training.

    Same rule as sksurv: a pair ``(i, j)`` is comparable when ``i`` has an
    event and ``t_i < t_j``, or ``t_i == t_j`` and ``j`` is censored (two
    events at the same time are not compared); a risk tie (within 1e-8)
    counts one half. ``O(n^2)`` work in row blocks of ``block_size``;
    accumulated in float64; no host synchronisation.

    Returns:
        A 0-d float64 tensor; NaN when no pair is comparable.
    """
    t = time.reshape(-1)
    e = event.reshape(-1).bool()
    r = risk.reshape(-1).to(torch.float64)
    num = torch.zeros((), dtype=torch.float64, device=r.device)
    den = torch.zeros((), dtype=torch.float64, device=r.device)
    for lo in range(0, t.shape[0], block_size):
        ti, ei, ri = (
            t[lo : lo + block_size, None],
            e[lo : lo + block_size, None],
            r[lo : lo + block_size, None],
        )
        comparable = ei & ((ti < t) | ((ti == t) & ~e))
        diff = ri - r  # > 0: the earlier event has the higher risk
        score = torch.where(diff.abs() <= TIED_TOL, 0.5, (diff > 0).to(torch.float64))
        num += torch.where(comparable, score, 0.0).sum()
        den += comparable.sum()
    return num / den


def uno_c(
    train_time: Any, train_event: Any, time: Any, event: Any, risk: Any, tau: float | None = None
) -> float:
    """Uno's IPCW C-index (``sksurv.metrics.concordance_index_ipcw``).

    ``tau`` truncates: only events before ``tau`` weigh. It is clipped to the
    largest training time (beyond it the censoring weights do not exist), and
    set there when a test event reaches that far. ``tau=None`` does not
    truncate otherwise (sksurv's default), which lets a late event dominate;
    :func:`survival_metrics` passes :func:`uno_tau` instead.
    """
    return _uno(train_time, train_event, time, event, risk, tau)[0]


def _uno(train_time, train_event, time, event, risk, tau):
    # (Uno's C, the tau it was truncated at: None when it was not)
    tt, te = _survival(train_time, train_event, "train_")
    t, e = _survival(time, event)
    r = _risk(risk, t.size)
    limit = tt.max()
    if tau is not None and tau > limit:
        warnings.warn(
            f"Uno's C: tau={tau:g} clipped to the largest training time {limit:g}", stacklevel=3
        )
        tau = limit
    if tau is None and (t[e] >= limit).any():
        tau = limit
    tau = None if tau is None else float(tau)
    if not te.any():
        return _nan("Uno's C needs training events for its censoring weights; returning NaN"), tau
    if not (e & (t < (np.inf if tau is None else tau))).any():
        return _nan("Uno's C is undefined without test events before tau; returning NaN"), tau
    value = _guarded(
        "Uno's C", concordance_index_ipcw, Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau
    )
    return value, tau


def uno_tau(
    train_time: Any,
    train_event: Any,
    horizons: Sequence[float] | None = None,
    censoring_floor: float = 0.1,
) -> float:
    """The truncation time :func:`survival_metrics` gives Uno's C by default.

    The earlier of the last time-dependent-AUC horizon (``max(horizons)``; by
    default the 75 % quantile of the training event times) and the first
    training time at which the training fold's censoring survival (reverse
    Kaplan-Meier, as sksurv estimates it for the weights) is at or below
    ``censoring_floor``. Before it every event weighs at most
    ``1 / censoring_floor^2`` (100) times the lightest.

    Returns:
        A training time, so never beyond the training follow-up; the largest
        training time where neither rule applies (no horizon, and a censoring
        survival that stays above the floor, or no training event).
    """
    tt, te = _survival(train_time, train_event, "train_")
    if horizons is None:
        hs = np.quantile(tt[te], [0.75]) if te.any() else np.array([np.inf])
    else:
        hs = np.asarray(horizons, dtype=float).reshape(-1)
    last = float(np.max(hs)) if hs.size and np.isfinite(hs).all() else np.inf
    floor_time = np.inf
    if te.any():  # sksurv estimates no censoring distribution without events
        cens = CensoringDistributionEstimator().fit(Surv.from_arrays(te, tt))
        low = cens.unique_time_[cens.prob_ <= censoring_floor]
        floor_time = float(low[0]) if low.size else np.inf
    return float(min(last, floor_time, tt.max()))


def _valid_range(train_t: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    return float(t.min()), float(min(t.max(), train_t.max()))


def _clip(times: Any, lo: float, hi: float, what: str) -> np.ndarray:
    req = np.asarray(times, dtype=float).reshape(-1)
    top = np.nextafter(hi, -np.inf)
    clipped = np.clip(req, lo, top)
    if not np.array_equal(clipped, req):
        warnings.warn(
            f"{what}: horizons {req.tolist()} clipped into the valid range [{lo:g}, {hi:g}) "
            f"of the test follow-up: {clipped.tolist()}",
            stacklevel=3,
        )
    return clipped


def _capped_test(train_t, t, e, last):
    # patients followed past the last horizon only ever count as controls
    beyond = t > last
    return Surv.from_arrays(e & ~beyond, np.where(beyond, np.minimum(t, train_t.max()), t))


def time_dependent_auc(
    train_time: Any, train_event: Any, time: Any, event: Any, risk: Any, times: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` (``sksurv.metrics.cumulative_dynamic_auc``).

    Returns:
        ``(auc_per_time, mean_auc)``: one AUC per requested time (after
        clipping into the valid range; NaN where no test event occurs by that
        time) and sksurv's survival-weighted mean over the usable ones.
    """
    tt, te = _survival(train_time, train_event, "train_")
    t, e = _survival(time, event)
    r = _risk(risk, t.size)
    lo, hi = _valid_range(tt, t)
    out = np.full(np.size(times), np.nan)
    if lo >= hi:
        return out, _nan(
            f"time-dependent AUC: no valid horizon (test times start at {lo:g}, after the training follow-up)"
        )
    clipped = _clip(times, lo, hi, "time-dependent AUC")
    usable = np.array([(e & (t <= h)).any() for h in clipped])
    if not usable.all():
        warnings.warn(
            f"time-dependent AUC: no test event by {clipped[~usable].tolist()}; NaN there",
            stacklevel=2,
        )
    if not usable.any():
        return out, float("nan")
    grid = np.unique(clipped[usable])
    scores, mean_auc = cumulative_dynamic_auc(
        Surv.from_arrays(te, tt), _capped_test(tt, t, e, grid[-1]), r, grid
    )
    out[usable] = scores[np.searchsorted(grid, clipped[usable])]
    return out, float(mean_auc)


def integrated_brier(
    train_time: Any,
    train_event: Any,
    time: Any,
    event: Any,
    surv_fn_values: Any,
    times: Sequence[float],
) -> float:
    """Integrated Brier score (``sksurv.metrics.integrated_brier_score``).

    Args:
        surv_fn_values: ``(n, T)`` survival probabilities at ``times``.
        times: ``(T,)`` the times of the columns, in any order. Columns at
            times outside the valid range are dropped (with a warning), not
            clipped, since their values belong to their own times.

    Returns:
        The IBS (lower is better); NaN when fewer than two times remain.
    """
    tt, te = _survival(train_time, train_event, "train_")
    t, e = _survival(time, event)
    s = np.asarray(surv_fn_values, dtype=float)
    grid = np.asarray(times, dtype=float).reshape(-1)
    if s.ndim != 2 or s.shape != (t.size, grid.size):
        raise GraphMedError(
            f"expected surv_fn_values of shape ({t.size}, {grid.size}), but got {s.shape}"
        )
    lo, hi = _valid_range(tt, t)
    keep = (grid >= lo) & (grid < hi)
    if not keep.all():
        warnings.warn(
            f"integrated Brier: times {grid[~keep].tolist()} outside the valid range [{lo:g}, {hi:g}) dropped",
            stacklevel=2,
        )
    grid, first = np.unique(grid[keep], return_index=True)
    if grid.size < 2:
        return _nan("integrated Brier needs at least two times in the valid range; returning NaN")
    cols = s[:, keep][:, first]
    return float(
        integrated_brier_score(
            Surv.from_arrays(te, tt), _capped_test(tt, t, e, grid[-1]), cols, grid
        )
    )


def survival_metrics(
    train_time: Any,
    train_event: Any,
    time: Any,
    event: Any,
    risk: Any,
    surv: Any = None,
    times: Sequence[float] | None = None,
    horizons: Sequence[float] | None = None,
    tau: float | None = None,
) -> dict[str, float]:
    """Harrell's and Uno's C, time-dependent AUC and, given curves, the IBS.

    Args:
        train_time, train_event: The training fold (for censoring weights and
            default horizons).
        time, event, risk: The test fold and its risk scores.
        surv, times: Optional ``(n, T)`` survival curves at ``times``.
        horizons: AUC horizons; by default the 25/50/75 % quantiles of the
            training event times.
        tau: Truncation time of Uno's C. By default (``None``)
            :func:`uno_tau` of the training fold and the AUC horizons: the
            last horizon, or where the training fold's censoring survival
            falls to 0.1, whichever is earlier. A given ``tau`` is used as
            it is (clipped to the largest training time, with a warning).

    Returns:
        A flat dict of floats: ``c_index``, ``uno_c``, ``uno_tau`` (the tau
        Uno's C was truncated at), ``td_auc_q25`` / ``_q50`` / ``_q75`` (or
        ``td_auc@<h>`` for given horizons), ``mean_auc`` and, with curves,
        ``ibs``. Keys are the same in every fold so that folds can be
        summarised.
    """
    tt, te = _survival(train_time, train_event, "train_")
    if horizons is None:
        if te.any():
            hs = np.quantile(tt[te], [0.25, 0.5, 0.75])
        else:
            hs = np.full(3, np.nan)
        names = ["td_auc_q25", "td_auc_q50", "td_auc_q75"]
    else:
        hs = np.asarray(horizons, dtype=float).reshape(-1)
        names = [f"td_auc@{h:g}" for h in hs]
    if tau is None:
        tau = uno_tau(tt, te, hs)
    uno, tau_used = _uno(tt, te, time, event, risk, tau)
    out = {"c_index": harrell_c(time, event, risk), "uno_c": uno, "uno_tau": tau_used}
    if np.isfinite(hs).all():
        auc, mean_auc = time_dependent_auc(tt, te, time, event, risk, hs)
    else:
        auc, mean_auc = np.full(hs.size, np.nan), _nan("no training events to place AUC horizons")
    out.update({k: float(v) for k, v in zip(names, auc)})
    out["mean_auc"] = mean_auc
    if surv is not None and times is not None:
        out["ibs"] = integrated_brier(tt, te, time, event, surv, times)
    return out


def classification_metrics(y_true: Any, proba: Any) -> dict[str, float]:
    """AUROC, accuracy and balanced accuracy (scikit-learn).

    Args:
        y_true: ``(n,)`` class codes ``0 .. C-1``; negative or NaN = unknown,
            skipped.
        proba: ``(n, C)`` class probabilities (``(n,)``: of class 1).

    Returns:
        ``auroc`` (binary, or one-vs-rest macro over the ``C`` classes; NaN
        when a class is absent), ``accuracy``, ``balanced_accuracy``.
    """
    y = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], 1)
    if p.shape[0] != y.size:
        raise GraphMedError(
            f"expected proba with {y.size} rows (one per label), but got {p.shape[0]}"
        )
    known = np.isfinite(y) & (y >= 0)
    y, p = y[known].astype(int), p[known]
    if y.size == 0:
        return {
            "auroc": _nan("no known labels; returning NaN"),
            "accuracy": np.nan,
            "balanced_accuracy": np.nan,
        }
    n_classes = p.shape[1]
    if np.unique(y).size < n_classes:
        auroc = _nan(
            f"AUROC needs every one of the {n_classes} classes in y_true, got {np.unique(y).tolist()}"
        )
    elif n_classes == 2:
        auroc = float(roc_auc_score(y, p[:, 1]))
    else:
        auroc = float(
            roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(n_classes))
        )
    pred = p.argmax(1)
    return {
        "auroc": auroc,
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }


def summarise(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean, sample sd, count and a seeded percentile-bootstrap CI of the mean.

    NaN values are dropped (``n`` counts the rest); with one value the sd and
    CI are NaN, with none everything but ``n`` is.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "sd": nan, "n": 0, "ci_low": nan, "ci_high": nan}
    if n == 1:
        return {"mean": float(v[0]), "sd": nan, "n": 1, "ci_low": nan, "ci_high": nan}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, n, size=(n_boot, n))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)),
        "n": n,
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def summarise_folds(
    folds: Sequence[Mapping[str, Any]], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`summarise` every numeric metric over a list of per-fold dicts.

    A metric missing from a fold counts as NaN there; non-numeric entries are
    skipped.
    """
    keys = list(dict.fromkeys(k for fold in folds for k in fold))
    out = {}
    for key in keys:
        values = [fold.get(key, np.nan) for fold in folds]
        if all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in values):
            out[key] = summarise(values, n_boot=n_boot, seed=seed)
    return out


__all__ = [
    "classification_metrics",
    "concordance_index_torch",
    "harrell_c",
    "integrated_brier",
    "summarise",
    "summarise_folds",
    "survival_metrics",
    "time_dependent_auc",
    "uno_c",
    "uno_tau",
]
