"""Fit the linear Cox path of a model (:class:`~graphmed.nn.linear_path.LinearCoxPath`)."""

from __future__ import annotations

import numpy as np
import torch

from ..graph.build import PatientGraphs
from ..nn.linear_path import LinearCoxPath
from .baselines import CoxNetBaseline, tabular_penalty


def fit_linear_path(
    path: LinearCoxPath,
    graphs: PatientGraphs,
    *,
    l1_ratio: float = 0.5,
    alpha_rule: str = "1se",
    seed: int = 0,
) -> CoxNetBaseline:
    """Fit ``path`` as an elastic-net Cox model on ``graphs`` (training patients only).

    The model is :class:`~graphmed.train.baselines.CoxNetBaseline`'s: features
    scaled to unit variance, alpha chosen by the Harrell C-index of a 3-fold
    inner CV on these patients (by default the largest alpha within one
    standard error of the best, ``alpha_rule="1se"``: the sparser model where
    the inner CV cannot tell them apart); a clinical table of at most one column per 10
    events is left unpenalised (:func:`~graphmed.train.baselines.tabular_penalty`).
    The summaries of ``path.summaries`` are centred at their means on these
    patients first, and penalised like any omics column.
    Its (linear) predictor is written into the path's buffers. Returns the fitted CoxNet (``alpha_``, ``cv_scores_``, ``fallback_``).
    """
    with torch.no_grad():
        path.fit_summary_centres(graphs.x, graphs.node_mask, graphs.present)
        x = path.features(graphs.x, graphs.node_mask, graphs.present).double().cpu().numpy()
    event = graphs.event.cpu().numpy()
    tabular = np.concatenate(
        [
            np.full(w, m in path.layouts and path.layouts[m].kind == "tabular")
            for m, w in path.widths().items()
        ]
    )
    cox = CoxNetBaseline(l1_ratio=l1_ratio, alpha_rule=alpha_rule, seed=seed)
    factor = tabular_penalty(tabular, int(event.sum()))
    cox.fit_arrays(x, graphs.time.cpu().numpy(), event, penalty_factor=factor)
    w, b = cox.linear_map()
    path.set_coefficients(np.nan_to_num(w), b if np.isfinite(b) else 0.0)
    return cox


__all__ = ["fit_linear_path"]
