"""Estimators with scikit-learn conventions: options in the constructor, data in ``fit``.

``X`` is a :class:`Cohort`, or a dict of modality frames (and bag dicts) with
``y`` a patients frame (``patient_id``, ``time``, ``event`` [, labels]).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .data.cohort import Cohort
from .errors import GraphMedError
from .train.config import ExperimentConfig, load_experiment


def as_cohort(X: Cohort | Mapping[str, Any], y: pd.DataFrame | None = None, labels=()) -> Cohort:
    """A :class:`Cohort` from ``X`` (a cohort, or modality frames with ``y`` = patients)."""
    if isinstance(X, Cohort):
        return X
    if y is None:
        raise GraphMedError(
            "X is not a Cohort, so y must be the patients frame (patient_id, time, event); "
            "or pass graphmed.read_cohort(path)"
        )
    return Cohort.from_frames(y, X, labels=[c for c in labels if c in y.columns])


class _Base:
    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        epochs: int = 150,
        lr: float = 1e-3,
        completion: str = "prompt",
        config: ExperimentConfig | str | None = None,
        overrides: tuple[str, ...] = (),
        seed: int = 0,
        device: str = "auto",
        progress: bool = False,
    ):
        self.hidden, self.layers, self.heads = hidden, layers, heads
        self.epochs, self.lr, self.completion = epochs, lr, completion
        self.config, self.overrides = config, overrides
        self.seed, self.device, self.progress = seed, device, progress

    def _config(self) -> ExperimentConfig:
        if isinstance(self.config, ExperimentConfig):
            cfg = copy.deepcopy(self.config)
        else:
            cfg = load_experiment(self.config, list(self.overrides))
        cfg.model.hidden, cfg.model.layers, cfg.model.heads = self.hidden, self.layers, self.heads
        cfg.model.completion = self.completion
        cfg.train.epochs, cfg.train.lr, cfg.train.seed = self.epochs, self.lr, self.seed
        cfg.train.device, cfg.train.progress = self.device, self.progress
        return cfg

    def _fit(self, cohort: Cohort, cfg: ExperimentConfig):
        from .train.saved import fit_final

        self.model_, self.history_ = fit_final(cohort, cfg)
        self.modalities_ = cohort.modality_names
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise GraphMedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _predict(self, X, y=None):
        self._check_fitted()
        return self.model_.predict(as_cohort(X, y), device="cpu")

    def embed(self, X, y=None, per_modality: bool = False) -> pd.DataFrame:
        """Patient embeddings (``emb_0..``, and ``<mod>_emb_<i>`` with ``per_modality``)
        indexed by patient id. The full export table (flags, risk, attention) is
        ``self.model_.embed(cohort)``; both come from :func:`graphmed.export.embed_frame`."""
        self._check_fitted()
        frame = self.model_.embed(as_cohort(X, y), per_modality=per_modality)
        mods = tuple(f"{m}_emb_" for m in self.model_.modalities) if per_modality else ()
        cols = [c for c in frame.columns if c.startswith(("emb_", *mods))]
        return frame.set_index("patient_id")[cols]

    def save(self, path) -> None:
        self._check_fitted()
        self.model_.save(path)


class GraphMedSurvival(_Base):
    """Survival model: ``fit``, ``predict`` (risk), ``predict_survival_function``, ``score``.

    Args:
        survival: ``"cox"`` (Breslow baseline for survival curves) or ``"discrete"``.
        Other arguments: see :class:`graphmed.train.config.ExperimentConfig`;
        ``config`` (a YAML path or object) sets everything else.
    """

    def __init__(self, survival: str = "cox", **kwargs):
        super().__init__(**kwargs)
        self.survival = survival

    def fit(self, X, y=None) -> GraphMedSurvival:
        cohort = as_cohort(X, y)
        cfg = self._config()
        cfg.task.survival = self.survival
        self._fit(cohort, cfg)
        if self.survival == "cox":
            from sksurv.linear_model.coxph import BreslowEstimator

            risk = self.model_.predict(cohort, device="cpu").risk
            self.baseline_ = BreslowEstimator().fit(risk, cohort.event.astype(bool), cohort.time)
        return self

    def predict(self, X, y=None) -> np.ndarray:
        """Risk scores (higher = shorter expected survival)."""
        return self._predict(X, y).risk

    def predict_survival_function(self, X, y=None) -> np.ndarray:
        """Survival functions: an array of ``sksurv`` ``StepFunction`` objects (Cox),
        or ``(n, n_bins)`` survival probabilities at the bin edges (discrete)."""
        preds = self._predict(X, y)
        if self.survival == "cox":
            return self.baseline_.get_survival_function(preds.risk)
        return preds.survival

    def score(self, X, y=None) -> float:
        """Harrell's C-index on ``X``."""
        from sksurv.metrics import concordance_index_censored

        cohort = as_cohort(X, y)
        risk = self.model_.predict(cohort, device="cpu").risk
        return float(concordance_index_censored(cohort.event.astype(bool), cohort.time, risk)[0])


class GraphMedClassifier(_Base):
    """Classifier of a label column: ``fit``, ``predict``, ``predict_proba``, ``score``.

    Args:
        label: The label column of the patients frame.
        survival_weight: Weight of an auxiliary Cox loss (0 = classification only).
    """

    def __init__(self, label: str = "label", survival_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.label, self.survival_weight = label, survival_weight

    def fit(self, X, y=None) -> GraphMedClassifier:
        cohort = as_cohort(X, y, labels=[self.label])
        cfg = self._config()
        cfg.task.label = self.label
        cfg.task.survival = "cox" if self.survival_weight > 0 else "none"
        cfg.task.survival_weight = self.survival_weight
        self._fit(cohort, cfg)
        self.classes_ = np.asarray(self.model_.fitted.label_classes[self.label])
        return self

    def predict_proba(self, X, y=None) -> np.ndarray:
        return self._predict(X, y).proba[self.label]

    def predict(self, X, y=None) -> np.ndarray:
        return self.classes_[self.predict_proba(X, y).argmax(1)]

    def score(self, X, y=None) -> float:
        """Accuracy on ``X``."""
        cohort = as_cohort(X, y, labels=[self.label])
        truth = cohort.patients[self.label].to_numpy()
        return float(np.mean(self.predict(cohort) == truth))
