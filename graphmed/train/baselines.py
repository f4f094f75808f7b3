"""Baselines that sit beside every graphmed result, on the same folds.

Each baseline is an early-fusion model on the :class:`~graphmed.train.features.FeatureMatrix`
of a cohort: it fits its own preprocessing on the training cohort passed to
``fit`` (never on the cohort it predicts) and does its model selection on
that training cohort only. ``predict_risk`` returns one score per patient,
higher meaning a worse prognosis.

Build them by name with :func:`make_baseline`: ``"coxnet"``, ``"rsf"``,
``"mlp_zero"``, ``"mlp_mean"``, and ``"coxnet:<modality>"`` /
``"rsf:<modality>"`` (any base with ``:m1+m2`` restricts it to those
modalities). Every baseline also takes ``impute``, ``modalities``,
``max_vector_features`` and ``bag_pooling``, which go to its
:class:`~graphmed.train.features.FeatureMatrix` (see there for exactly how
``impute="zero"`` and ``impute="mean"`` fill a missing modality), and
``seed``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.util import Surv

from ..data.cohort import Cohort
from ..errors import ConfigError, GraphMedError, did_you_mean
from ..losses import cox_ph_loss
from ..metrics import harrell_c
from .features import FeatureMatrix

_FIT_ERRORS = (ArithmeticError, AssertionError, ValueError, np.linalg.LinAlgError)


@runtime_checkable
class Baseline(Protocol):
    """What every baseline offers: ``fit(train)``, ``predict_risk(cohort)``, ``name``."""

    name: str

    def fit(self, train: Cohort) -> Baseline: ...

    def predict_risk(self, cohort: Cohort) -> np.ndarray: ...


class _FusionBaseline:
    """Shared part: options of the :class:`FeatureMatrix`, naming, prediction."""

    base_name = ""

    def __init__(self, impute, modalities, max_vector_features, bag_pooling, seed):
        self.impute = impute
        self.modalities = None if modalities is None else list(modalities)
        self.max_vector_features = max_vector_features
        self.bag_pooling = bag_pooling
        self.seed = seed
        # validate the options now, not at the first fold
        FeatureMatrix(impute, self.modalities, max_vector_features, bag_pooling)

    @property
    def name(self) -> str:
        return self.base_name + (f":{'+'.join(self.modalities)}" if self.modalities else "")

    def _train_features(self, train: Cohort) -> np.ndarray:
        self.features_ = FeatureMatrix(
            self.impute, self.modalities, self.max_vector_features, self.bag_pooling
        )
        return self.features_.fit_transform(train)

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """``(P,)`` risk scores of ``cohort``'s patients; higher = worse prognosis."""
        if not hasattr(self, "features_"):
            raise GraphMedError(f"{type(self).__name__} is not fitted; call fit(train) first")
        return np.asarray(self._predict(self.features_.transform(cohort)), dtype=np.float64)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class CoxNetBaseline(_FusionBaseline):
    """Elastic-net Cox model (scikit-survival ``CoxnetSurvivalAnalysis``).

    Features are scaled to unit variance (training statistics) so that the
    penalty treats them alike. The alpha grid runs from the training data's
    ``alpha_max`` down to ``alpha_min_ratio * alpha_max`` (``n_alphas``
    values, log-spaced); alpha is chosen by the mean Harrell C-index of an
    inner ``inner_folds``-fold CV (stratified by event, seeded) on the
    training cohort. If the final fit fails at that alpha, the next larger
    one is tried, and a ridge ``lifelines.CoxPHFitter(penalizer=0.1)`` is the
    last resort (``fallback_`` says which was used).

    Attributes:
        alphas_: The alpha grid, decreasing. ``cv_scores_``: ``(inner_folds,
        n_alphas)`` C-indices (NaN where the path fit failed). ``alpha_``: the
        alpha used. ``model_``: the fitted model.
    """

    base_name = "coxnet"

    def __init__(
        self,
        l1_ratio: float = 0.5,
        alpha_min_ratio: float = 0.01,
        n_alphas: int = 50,
        impute: str = "mean",
        modalities: list[str] | None = None,
        seed: int = 0,
        inner_folds: int = 3,
        max_vector_features: int | None = 200,
        bag_pooling: str = "mean",
        free_tabular: bool = False,
        alpha_rule: str = "best",
    ):
        super().__init__(impute, modalities, max_vector_features, bag_pooling, seed)
        if alpha_rule not in ("best", "1se"):
            raise ConfigError(f"alpha_rule must be 'best' or '1se', got {alpha_rule!r}")
        self.l1_ratio, self.alpha_min_ratio = l1_ratio, alpha_min_ratio
        self.n_alphas, self.inner_folds = n_alphas, inner_folds
        self.free_tabular, self.alpha_rule = free_tabular, alpha_rule

    @property
    def name(self) -> str:
        return ("coxnet_free" if self.free_tabular else "coxnet") + super().name[len("coxnet") :]

    def fit(self, train: Cohort) -> CoxNetBaseline:
        x = self._train_features(train)
        factor = None
        if self.free_tabular:
            kinds = {m: t.kind for m, t in self.features_.preprocessor_.transforms_.items()}
            tabular = np.array(
                [kinds[n.split(":", 1)[0]] == "tabular" for n in self.features_.feature_names_]
            )
            factor = tabular_penalty(tabular, int(train.event.sum()))
        return self.fit_arrays(x, train.time, train.event, penalty_factor=factor)

    def fit_arrays(
        self,
        x: np.ndarray,
        time: np.ndarray,
        event: np.ndarray,
        penalty_factor: np.ndarray | None = None,
    ) -> CoxNetBaseline:
        """Fit on a ready design matrix ``x (P, F)`` (what :meth:`fit` does after its features).

        ``penalty_factor`` (``(F,)``, sksurv's): 0 leaves a column unpenalised.
        """
        time, event = np.asarray(time, dtype=float), np.asarray(event)
        self.penalty_factor_ = penalty_factor
        self.scaler_ = StandardScaler().fit(x)
        x = self.scaler_.transform(x)
        y = Surv.from_arrays(event.astype(bool), time)
        self.fallback_: str | None = None
        first = self._fit_path(x, y, None)  # only to learn alpha_max from sksurv
        if first is None:
            self.alphas_, self.cv_scores_ = np.zeros(0), np.zeros((0, 0))
            return self._fit_lifelines(x, time, event)
        top = float(first.alphas_[0])
        if not np.isfinite(top) or top <= 0:  # no column moves the partial likelihood
            self.alphas_, self.cv_scores_ = np.zeros(0), np.zeros((0, 0))
            return self._fit_lifelines(x, time, event)
        self.alphas_ = np.geomspace(top, top * self.alpha_min_ratio, self.n_alphas)
        self.cv_scores_ = self._inner_cv(x, y, event)
        best = _choose_alpha(self.cv_scores_, self.alpha_rule)
        for i in range(best, -1, -1):  # fall back to larger alphas
            model = self._fit_path(x, y, self.alphas_[: i + 1], baseline=True)
            if model is not None and np.isfinite(model.predict(x, alpha=self.alphas_[i])).all():
                self.model_, self.alpha_ = model, float(self.alphas_[i])
                if i != best:
                    self.fallback_ = (
                        f"alpha {self.alphas_[best]:.4g} failed; used {self.alpha_:.4g}"
                    )
                return self
        return self._fit_lifelines(x, time, event)

    def _fit_path(self, x, y, alphas, baseline: bool = False) -> CoxnetSurvivalAnalysis | None:
        """A fitted path, or None when it fails or does not converge."""
        opts: dict[str, Any] = (
            {"n_alphas": 2, "alpha_min_ratio": 0.999} if alphas is None else {"alphas": alphas}
        )
        if getattr(self, "penalty_factor_", None) is not None:
            opts["penalty_factor"] = self.penalty_factor_
        model = CoxnetSurvivalAnalysis(l1_ratio=self.l1_ratio, fit_baseline_model=baseline, **opts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "all coefficients are zero"
            warnings.simplefilter("error", ConvergenceWarning)
            try:
                return model.fit(x, y)
            except (*_FIT_ERRORS, ConvergenceWarning):
                return None

    def _inner_cv(self, x: np.ndarray, y: np.ndarray, event: np.ndarray) -> np.ndarray:
        scores = np.full((self.inner_folds, len(self.alphas_)), np.nan)
        for f, (tr, va) in enumerate(_splits(event, self.inner_folds, self.seed)):
            n, model = len(self.alphas_), None
            while n > 0:  # drop the smallest alphas until the path fits
                model = self._fit_path(x[tr], y[tr], self.alphas_[:n])
                if model is not None:
                    break
                n -= max(1, n // 4)
            for i in range(n):
                risk = model.predict(x[va], alpha=self.alphas_[i])
                scores[f, i] = _c_index(y[va], risk)
        return scores

    def _fit_lifelines(self, x: np.ndarray, time: np.ndarray, event: np.ndarray) -> CoxNetBaseline:
        from lifelines import CoxPHFitter
        from lifelines.exceptions import ConvergenceError

        frame = _frame(x).assign(time=time, event=event)
        self.model_, self.alpha_ = CoxPHFitter(penalizer=0.1), float("nan")
        self.fallback_ = "lifelines CoxPHFitter(penalizer=0.1)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lifelines' convergence advice
                self.model_.fit(frame, duration_col="time", event_col="event")
        except (ConvergenceError, *_FIT_ERRORS):
            # nothing in x separates the events: every coefficient 0, one risk for all
            self.model_, self.fallback_ = None, "no Cox fit converged; all coefficients 0"
        return self

    def linear_map(self) -> tuple[np.ndarray, float]:
        """``(w, b)`` with ``predict(x) == x @ w + b`` on unscaled features (the model is linear)."""
        width = self.scaler_.n_features_in_
        origin = self._predict(np.zeros((1, width)))[0]
        w = np.concatenate(
            [
                self._predict(np.eye(min(512, width - k), width, k)) - origin  # unit vectors
                for k in range(0, width, 512)
            ]
        )
        return np.asarray(w, dtype=np.float64), float(origin)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        x = self.scaler_.transform(x)
        if self.model_ is None:  # the all-zero fallback of _fit_lifelines
            return np.zeros(len(x))
        if isinstance(self.model_, CoxnetSurvivalAnalysis):
            return self.model_.predict(x, alpha=self.alpha_)
        return self.model_.predict_log_partial_hazard(_frame(x)).to_numpy()


class RSFBaseline(_FusionBaseline):
    """Random survival forest (scikit-survival); the risk is ``predict()``."""

    base_name = "rsf"

    def __init__(
        self,
        n_estimators: int = 200,
        min_samples_leaf: int = 10,
        max_features: str | int | float | None = "sqrt",
        n_jobs: int = 1,
        impute: str = "mean",
        modalities: list[str] | None = None,
        seed: int = 0,
        max_vector_features: int | None = 200,
        bag_pooling: str = "mean",
    ):
        super().__init__(impute, modalities, max_vector_features, bag_pooling, seed)
        self.n_estimators, self.min_samples_leaf = n_estimators, min_samples_leaf
        self.max_features, self.n_jobs = max_features, n_jobs

    def fit(self, train: Cohort) -> RSFBaseline:
        x = self._train_features(train)
        self.model_ = RandomSurvivalForest(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            n_jobs=self.n_jobs,
            random_state=self.seed,
        ).fit(x, Surv.from_arrays(train.event.astype(bool), train.time))
        return self

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.model_.predict(x)


class MLPBaseline(_FusionBaseline):
    """Early-fusion MLP trained with the Cox partial likelihood (Efron ties).

    ``Linear(F, hidden) - ReLU - Dropout - Linear(hidden, 1)`` on features
    scaled to unit variance (training statistics), trained full-batch with
    Adam. ``validation`` of the training cohort (stratified by event, seeded)
    is held out for early stopping on its Cox loss (``patience`` epochs); the
    weights of the best epoch are kept. The seed fixes the split, the
    initialisation and dropout, without touching torch's global RNG, so two
    fits with the same seed on CPU give the same predictions.

    Attributes:
        best_epoch_: Epoch (0-based) of the kept weights.
        history_: Per epoch, ``{"train": loss, "val": loss}``.
    """

    def __init__(
        self,
        hidden: int = 64,
        dropout: float = 0.3,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        impute: str = "zero",
        modalities: list[str] | None = None,
        seed: int = 0,
        patience: int = 20,
        validation: float = 0.2,
        max_vector_features: int | None = 200,
        bag_pooling: str = "mean",
    ):
        super().__init__(impute, modalities, max_vector_features, bag_pooling, seed)
        self.hidden, self.dropout, self.epochs = hidden, dropout, epochs
        self.lr, self.weight_decay = lr, weight_decay
        self.patience, self.validation = patience, validation

    @property
    def base_name(self) -> str:  # type: ignore[override]
        return f"mlp_{self.impute}"

    def fit(self, train: Cohort) -> MLPBaseline:
        x = self._train_features(train)
        self.scaler_ = StandardScaler().fit(x)
        x = torch.as_tensor(self.scaler_.transform(x), dtype=torch.float32)
        time = torch.as_tensor(train.time, dtype=torch.float32)
        event = torch.as_tensor(train.event, dtype=torch.float32)
        fit_idx, val_idx = _validation_split(train.event, self.validation, self.seed)
        # without a validation event the validation loss is constant: watch the training loss
        watch = "val" if train.event[val_idx].sum() > 0 else "train"
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        threads = torch.get_num_threads()
        try:
            # a tiny full-batch problem: extra threads only add synchronisation, and
            # one thread gives the same sums (so the same model) on every machine
            torch.set_num_threads(1)
            self._train(x, time, event, fit_idx, val_idx, watch)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, x, time, event, fit_idx, val_idx, watch: str) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model_ = torch.nn.Sequential(
                torch.nn.Linear(x.shape[1], self.hidden),
                torch.nn.ReLU(),
                torch.nn.Dropout(self.dropout),
                torch.nn.Linear(self.hidden, 1),
            )
            opt = torch.optim.Adam(
                self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
            best, best_state, wait, self.history_ = np.inf, None, 0, []
            for epoch in range(self.epochs):
                self.model_.train()
                opt.zero_grad()
                loss = cox_ph_loss(self.model_(x[fit_idx]), time[fit_idx], event[fit_idx])
                loss.backward()
                opt.step()
                self.model_.eval()
                with torch.no_grad():
                    val = cox_ph_loss(self.model_(x[val_idx]), time[val_idx], event[val_idx])
                self.history_.append({"train": loss.item(), "val": val.item()})
                score = self.history_[-1][watch]
                if score < best - 1e-6:
                    best, best_state, wait = score, copy.deepcopy(self.model_.state_dict()), 0
                    self.best_epoch_ = epoch
                elif (wait := wait + 1) >= self.patience:
                    break
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        self.model_.eval()

    def _predict(self, x: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(self.scaler_.transform(x), dtype=torch.float32)
        with torch.no_grad():
            return self.model_(x).reshape(-1).double().numpy()


def tabular_penalty(tabular: np.ndarray, n_events: int) -> np.ndarray | None:
    """Penalty factors leaving narrow clinical tables unpenalised, or None.

    Clinical covariates (age, stage, ...) are few and strong; under one
    elastic-net penalty with thousands of genes they are shrunk with them. They
    are left unpenalised when there are at most ``n_events / 10`` of them (the
    rule of ten events per variable of an unpenalised Cox model); otherwise
    every column is penalised alike (None).
    """
    tabular = np.asarray(tabular, dtype=bool)
    if not tabular.any() or tabular.all() or tabular.sum() > n_events / 10:
        return None
    return np.where(tabular, 0.0, 1.0)


_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {
    "coxnet": (CoxNetBaseline, {}),
    "coxnet_free": (CoxNetBaseline, {"free_tabular": True}),
    "rsf": (RSFBaseline, {}),
    "mlp_zero": (MLPBaseline, {"impute": "zero"}),
    "mlp_mean": (MLPBaseline, {"impute": "mean"}),
}


def make_baseline(name: str, **kwargs: Any) -> Baseline:
    """Build a baseline by name; ``kwargs`` go to its constructor (e.g. ``seed``).

    Names: ``coxnet``, ``rsf``, ``mlp_zero``, ``mlp_mean``; ``<base>:<modality>``
    (or ``<base>:<m1>+<m2>``) restricts a base to those modalities.
    """
    base, sep, mods = name.partition(":")
    if base not in _REGISTRY:
        raise ConfigError(
            f"unknown baseline '{name}'; expected one of {', '.join(_REGISTRY)} or "
            f"'coxnet:<modality>' / 'rsf:<modality>'.{did_you_mean(base, _REGISTRY)}"
        )
    if sep and not mods:
        raise ConfigError(f"baseline '{name}' names no modality after ':'; e.g. '{base}:clinical'")
    cls, defaults = _REGISTRY[base]
    options = {**defaults, **kwargs}
    if sep:
        options["modalities"] = mods.split("+")
    return cls(**options)


def single_modality_baselines(
    cohort: Cohort, base: str = "coxnet", **kwargs: Any
) -> dict[str, Baseline]:
    """One unfitted ``base`` baseline per modality of ``cohort``, keyed ``base:modality``."""
    return {f"{base}:{m}": make_baseline(f"{base}:{m}", **kwargs) for m in cohort.modality_names}


def _choose_alpha(scores: np.ndarray, rule: str) -> int:
    """Index into the (decreasing) alpha grid chosen from ``(folds, n_alphas)`` inner C-indices.

    ``"best"``: the highest mean. ``"1se"``: the first (largest) alpha whose mean
    is at least the best mean minus one standard error of that best alpha's
    fold scores. An alpha whose path failed in any fold is never chosen by it.
    """
    mean = scores.mean(0)
    if not np.isfinite(mean).any():
        return 0
    best = int(np.nanargmax(mean))
    if rule == "best" or scores.shape[0] < 2:
        return best
    se = float(np.std(scores[:, best], ddof=1) / np.sqrt(scores.shape[0]))
    ok = np.flatnonzero(np.isfinite(mean) & (mean >= mean[best] - se))
    return int(ok[0])


def _splits(event: np.ndarray, k: int, seed: int):
    """``k`` folds stratified by event where each class has ``k`` patients."""
    x = np.zeros(len(event))
    if np.bincount(event.astype(int), minlength=2).min() >= k:
        return StratifiedKFold(k, shuffle=True, random_state=seed).split(x, event)
    return KFold(k, shuffle=True, random_state=seed).split(x)


def _frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=[f"x{j}" for j in range(x.shape[1])])


def _c_index(y: np.ndarray, risk: np.ndarray) -> float:
    # NaN for a fold without a comparable pair (or a diverged path): skipped in the mean
    return harrell_c(y["time"], y["event"], risk, warn=False)


def _validation_split(event: np.ndarray, fraction: float, seed: int):
    """Indices ``(fit, val)`` of a seeded split, stratified by event when possible."""
    idx = np.arange(len(event))
    stratify = event if np.bincount(event.astype(int), minlength=2).min() >= 2 else None
    return train_test_split(idx, test_size=fraction, stratify=stratify, random_state=seed)


__all__ = [
    "Baseline",
    "CoxNetBaseline",
    "MLPBaseline",
    "RSFBaseline",
    "make_baseline",
    "single_modality_baselines",
]
