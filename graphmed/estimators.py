"""scikit-learn estimators: options in the constructor, data in ``fit``.

:class:`GraphMedSurvival` and :class:`GraphMedClassifier` work with
``sklearn.base.clone``, ``cross_val_score``, ``GridSearchCV`` and ``Pipeline``.
``X`` and ``y`` take what scikit-survival users have (a wide DataFrame and a
``Surv.from_arrays`` array) or a :class:`Cohort`; see
:mod:`graphmed.estimator_inputs` for every form::

    from sksurv.datasets import load_breast_cancer
    X, y = load_breast_cancer()
    est = GraphMedSurvival(modalities={"expression": "X"}).fit(X, y)  # rest: clinical
    est.score(X, y)                                                    # Harrell's C

scikit-survival is imported on first use only (``import graphmed`` stays
fast), so :class:`GraphMedSurvival` carries the ``SurvivalAnalysisMixin``
contract itself (``score`` is Harrell's C, ``y`` is required) rather than
subclassing it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .data.cohort import Cohort
from .errors import GraphMedError
from .estimator_inputs import as_cohort, group_columns
from .inference.survival import cox_survival, fit_breslow, step_functions
from .train.config import ExperimentConfig, load_experiment


class EstimatorNotFittedError(NotFittedError, GraphMedError):
    """``predict`` (or ``score``, ``embed``, ..) before ``fit``; both sklearn's
    :class:`~sklearn.exceptions.NotFittedError` and a :class:`GraphMedError`."""


class _GraphMedEstimator(BaseEstimator):
    """Shared fitting and prediction; subclasses hold the constructor arguments.

    Constructor arguments win over ``config`` and ``overrides``, which set
    everything else (see :class:`graphmed.train.config.ExperimentConfig`).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = True  # an all-empty modality row: the modality is missing
        tags.input_tags.categorical = tags.input_tags.string = True
        return tags

    # ------------------------------------------------------------------ fit
    def _config(self) -> ExperimentConfig:
        for name in ("hidden", "layers", "heads", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise GraphMedError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden % self.heads:
            raise GraphMedError(
                f"heads must divide hidden: hidden={self.hidden} is not divisible by "
                f"heads={self.heads}"
            )
        if not self.lr > 0:
            raise GraphMedError(f"lr must be positive, got {self.lr!r}")
        if isinstance(self.config, ExperimentConfig):
            if self.overrides:
                raise GraphMedError(
                    "overrides apply to a YAML config (or the defaults); with an ExperimentConfig "
                    "object set its fields directly and pass overrides=()"
                )
            cfg = copy.deepcopy(self.config)
        else:
            cfg = load_experiment(self.config, list(self.overrides))
        cfg.model.hidden, cfg.model.layers, cfg.model.heads = self.hidden, self.layers, self.heads
        cfg.model.completion = self.completion
        cfg.train.epochs, cfg.train.lr, cfg.train.seed = self.epochs, self.lr, self.seed
        cfg.train.device, cfg.train.progress = self.device, self.progress
        return cfg

    def _fit_cohort(self, X, y, label: str | None = None, endpoints: bool = True) -> Cohort:
        """The training cohort; records how a wide ``X`` was split (``modality_columns_``)."""
        self._reset()
        groups = None
        if not isinstance(X, Cohort | Mapping):
            frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
            groups = group_columns(frame.columns, self.modalities)
            X = frame
        elif self.modalities is not None:
            raise GraphMedError(
                "modalities groups the columns of one wide DataFrame X; X is a "
                f"{type(X).__name__}, whose modalities are already named. Pass modalities=None"
            )
        cohort = as_cohort(X, y, groups=groups, label=label, endpoints=endpoints)
        if groups is not None:
            self.modality_columns_ = groups
            self.n_features_in_ = X.shape[1]
            if all(isinstance(c, str) for c in X.columns):
                self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return cohort

    def _reset(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)

    def _fit(self, cohort: Cohort, cfg: ExperimentConfig) -> None:
        from .train.saved import fit_final

        self.model_, self.history_ = fit_final(cohort, cfg)
        self.modalities_ = cohort.modality_names
        self.modality_kinds_ = {m: s.kind for m, s in cohort.modalities.items()}

    # -------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "model_")
        except NotFittedError:
            raise EstimatorNotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) first"
            ) from None

    def _cohort(self, X, y=None, label: str | None = None, endpoints: bool = False) -> Cohort:
        """``X`` (and ``y``) read as at fit time: the same column groups and kinds."""
        self._check_fitted()
        groups = getattr(self, "modality_columns_", None)
        if groups is None and not isinstance(X, Cohort | Mapping):
            raise GraphMedError(
                f"this {type(self).__name__} was fitted on a Cohort or a dict of frames; "
                "pass the same kind of X (a wide table has no modality names)"
            )
        return as_cohort(
            X, y, groups=groups, kinds=self.modality_kinds_, label=label, endpoints=endpoints
        )

    def _predictions(self, cohort: Cohort):
        """Model outputs in the cohort's patient order."""
        preds = self.model_.predict(cohort, device="cpu")
        order = pd.Index(preds.patient_ids).get_indexer(cohort.patient_ids)
        if (order != np.arange(len(order))).any():
            for name in ("embedding", "risk", "survival"):
                if getattr(preds, name) is not None:
                    setattr(preds, name, getattr(preds, name)[order])
            preds.proba = {k: v[order] for k, v in preds.proba.items()}
            preds.patient_ids = cohort.patient_ids
        return preds

    def embed(self, X, per_modality: bool = False) -> pd.DataFrame:
        """Patient embeddings ``emb_0..`` (and ``<mod>_emb_<i>`` with ``per_modality``).

        Indexed by patient id, or by ``X``'s own index for a wide DataFrame. The full
        export table (flags, risk, attention) is ``self.model_.embed(cohort)``.
        """
        cohort = self._cohort(X)
        frame = self.model_.embed(cohort, per_modality=per_modality)
        mods = tuple(f"{m}_emb_" for m in self.model_.modalities) if per_modality else ()
        cols = [c for c in frame.columns if c.startswith(("emb_", *mods))]
        out = frame.set_index("patient_id").loc[cohort.patient_ids, cols]
        if isinstance(X, pd.DataFrame) and getattr(self, "modality_columns_", None):
            out.index = X.index
        return out

    def save(self, path) -> None:
        """Write the fitted model to a folder (read it back with :func:`graphmed.load_model`)."""
        self._check_fitted()
        self.model_.save(path)


class GraphMedSurvival(_GraphMedEstimator):
    """Survival model: ``fit``, ``predict`` (risk), ``predict_survival_function``, ``score``.

    Args:
        hidden, layers, heads: Width, depth and attention heads of the graph network
            (``heads`` must divide ``hidden``).
        epochs, lr: Training epochs (early stopping on a validation part) and learning rate.
        completion: Missing modalities: ``"prompt"`` (learned completion) or ``"zero"``.
        config: A YAML path or an :class:`ExperimentConfig` for everything else.
        overrides: ``"a.b=value"`` strings applied to a YAML ``config`` (or the defaults).
        seed, device, progress: Training seed, device (``"auto"``, ``"cpu"``, ``"cuda"``)
            and progress bar.
        survival: ``"discrete"`` (the default: discrete-time hazards, survival curves
            stepping at the bin edges) or ``"cox"`` (Breslow baseline for the curves).
        modalities: For a wide DataFrame ``X``: modality name -> list of columns or a
            column-name prefix; other columns form the ``clinical`` modality.

    Fitted attributes: ``model_`` (a :class:`graphmed.TrainedModel`), ``history_``,
    ``modalities_``, ``modality_kinds_``, ``unique_times_`` (the times of the survival
    curves' steps), ``baseline_`` (Cox: the Breslow estimator) and, for a wide ``X``,
    ``modality_columns_``, ``n_features_in_``, ``feature_names_in_``.
    """

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
        survival: str = "discrete",
        modalities: dict[str, list[str] | str] | None = None,
    ):
        self.hidden = hidden
        self.layers = layers
        self.heads = heads
        self.epochs = epochs
        self.lr = lr
        self.completion = completion
        self.config = config
        self.overrides = overrides
        self.seed = seed
        self.device = device
        self.progress = progress
        self.survival = survival
        self.modalities = modalities

    def fit(self, X, y=None) -> GraphMedSurvival:
        """Fit on ``X`` (wide DataFrame, dict of frames or Cohort) and ``y`` (endpoints)."""
        if self.survival not in ("cox", "discrete"):
            raise GraphMedError(f"survival must be 'cox' or 'discrete', got {self.survival!r}")
        cfg = self._config()
        cohort = self._fit_cohort(X, y)
        cfg.task.survival = self.survival
        self._fit(cohort, cfg)
        preds = self._predictions(cohort)
        if self.survival == "cox":
            self.baseline_ = fit_breslow(preds.risk, cohort.event, cohort.time)
            self.unique_times_ = np.asarray(self.baseline_.unique_times_, dtype=float)
        else:
            self.unique_times_ = np.asarray(preds.survival_times, dtype=float)
        return self

    def predict(self, X) -> np.ndarray:
        """Risk scores, shape ``(n_patients,)`` (higher = shorter expected survival)."""
        return self._predictions(self._cohort(X)).risk

    def predict_survival_function(self, X, return_array: bool = False) -> np.ndarray:
        """Survival functions, as scikit-survival's estimators return them.

        Returns:
            An array of ``sksurv.functions.StepFunction`` (one per patient; Cox: the
            Breslow baseline raised to ``exp(risk)``; discrete: steps at the bin
            edges, 1 before the first), or with ``return_array`` their values at
            ``unique_times_``, shape ``(n_patients, len(unique_times_))``.
        """
        preds = self._predictions(self._cohort(X))
        if self.survival == "cox":
            return cox_survival(
                self.baseline_, preds.risk, self.unique_times_ if return_array else None
            )
        if return_array:
            return np.asarray(preds.survival, dtype=float)
        return step_functions(self.unique_times_, preds.survival)

    def score(self, X, y=None) -> float:
        """Harrell's C-index of ``predict(X)`` against ``y`` (NaN without events)."""
        from .metrics import harrell_c

        cohort = self._cohort(X, y, endpoints=True)
        return harrell_c(cohort.time, cohort.event, self._predictions(cohort).risk)


class GraphMedClassifier(ClassifierMixin, _GraphMedEstimator):
    """Classifier of a label: ``fit``, ``predict``, ``predict_proba``, ``score`` (accuracy).

    Args:
        label: Name of the label (the column of ``y`` or of the patients frame; for
            1-d ``y`` just the name it gets).
        survival_weight: Weight of an auxiliary Cox loss (0 = classification only;
            above 0 ``y`` must carry time and event columns too).
        Other arguments: as :class:`GraphMedSurvival`.

    Fitted attributes: ``classes_`` and those of :class:`GraphMedSurvival` but
    ``baseline_`` and ``unique_times_``.
    """

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
        label: str = "label",
        survival_weight: float = 0.0,
        modalities: dict[str, list[str] | str] | None = None,
    ):
        self.hidden = hidden
        self.layers = layers
        self.heads = heads
        self.epochs = epochs
        self.lr = lr
        self.completion = completion
        self.config = config
        self.overrides = overrides
        self.seed = seed
        self.device = device
        self.progress = progress
        self.label = label
        self.survival_weight = survival_weight
        self.modalities = modalities

    def fit(self, X, y=None) -> GraphMedClassifier:
        """Fit on ``X`` and ``y`` (1-d labels, or a frame with the ``label`` column)."""
        if not self.survival_weight >= 0:
            raise GraphMedError(f"survival_weight must be >= 0, got {self.survival_weight!r}")
        cfg = self._config()
        cohort = self._fit_cohort(X, y, label=self.label, endpoints=self.survival_weight > 0)
        if self.label not in cohort.patients.columns:
            raise GraphMedError(
                f"label '{self.label}' is not a column of the patients; pass y with it or set "
                f"label= to one of {[c for c in cohort.patients.columns if c not in ('time', 'event')]}"
            )
        cfg.task.label = self.label
        cfg.task.survival = "cox" if self.survival_weight > 0 else "none"
        cfg.task.survival_weight = self.survival_weight
        self._fit(cohort, cfg)
        self.classes_ = np.asarray(self.model_.fitted.label_classes[self.label])
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape ``(n_patients, len(classes_))``."""
        return self._predictions(self._cohort(X)).proba[self.label]

    def predict(self, X) -> np.ndarray:
        """The most probable class of each patient, shape ``(n_patients,)``."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(1)]

    def score(self, X, y=None) -> float:
        """Accuracy of ``predict(X)`` against the labels of ``y`` (or of the Cohort ``X``)."""
        cohort = self._cohort(X, y, label=self.label)
        truth = cohort.patients[self.label].to_numpy()
        pred = self.classes_[self._predictions(cohort).proba[self.label].argmax(1)]
        return float(np.mean(pred == truth))
