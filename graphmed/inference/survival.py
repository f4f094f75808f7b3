"""Survival curves from a model's outputs: a Breslow baseline for a Cox head, step
functions for a discrete-time head.

A Cox head predicts a log-risk only; its curves need a baseline hazard fitted on
the training patients (:func:`fit_breslow`), and :func:`cox_survival` raises it
to ``exp(risk)``. A discrete-time head predicts its curve at the bin edges
(:attr:`~graphmed.inference.predict.Predictions.survival`);
:func:`step_functions` turns those rows into scikit-survival step functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_breslow(risk: Any, time: Any, event: Any):
    """The Breslow estimator of the baseline hazard, fitted on training ``risk``.

    Args:
        risk: ``(n,)`` log-risk of the training patients.
        time: ``(n,)`` their follow-up times.
        event: ``(n,)`` 1 = event, 0 = censored.

    Returns:
        A fitted ``sksurv.linear_model.coxph.BreslowEstimator`` (its
        ``unique_times_`` are the curves' time points).
    """
    from sksurv.linear_model.coxph import BreslowEstimator

    return BreslowEstimator().fit(risk, np.asarray(event) == 1, time)


def cox_survival(baseline, risk: Any, times: np.ndarray | None = None) -> np.ndarray:
    """Survival curves ``S_0(t) ** exp(risk)`` of a Cox model.

    Args:
        baseline: A fitted :func:`fit_breslow` estimator.
        risk: ``(n,)`` log-risk.
        times: Evaluate the curves there: ``(n, len(times))`` values. By
            default the curves themselves, ``(n,)`` ``StepFunction`` objects.
    """
    fns = baseline.get_survival_function(risk)
    if times is None:
        return fns
    return np.vstack([fn(times) for fn in fns])


def step_functions(times: np.ndarray, survival: np.ndarray) -> np.ndarray:
    """``(n,)`` ``sksurv.functions.StepFunction`` objects from curves at ``times``.

    Args:
        times: ``(K,)`` increasing time points (a discrete-time head's bin edges).
        survival: ``(n, K)`` survival probability at each time.

    Returns:
        One step function per row, 1 at time 0 where ``times`` starts later
        (nobody has had the event at time 0).
    """
    from sksurv.functions import StepFunction

    times, surv = np.asarray(times, dtype=float), np.asarray(survival, dtype=float)
    if times[0] > 0:
        times, surv = np.r_[0.0, times], np.c_[np.ones(len(surv)), surv]
    out = np.empty(len(surv), dtype=object)
    out[:] = [StepFunction(times, row) for row in surv]
    return out


__all__ = ["cox_survival", "fit_breslow", "step_functions"]
