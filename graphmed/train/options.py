"""The typed objects the training core takes and returns.

:mod:`graphmed.train.builder` makes them from an experiment config; the
core (:mod:`~graphmed.train.cv`, :mod:`~graphmed.train.fit`, the tuning
objective and nested CV) takes only these, so a reader sees at the call what
a function uses, and a test builds one without a YAML file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .config import GraphConfig, ModelConfig, TaskConfig, TrainConfig


class Fold(NamedTuple):
    """One split of a cohort, by position in its patient order.

    A named tuple, so ``repeat, fold, train, test = fold`` still reads it,
    but code names the fields instead of remembering their order.

    Attributes:
        repeat: Repeat number (``eval.repeats``).
        fold: Fold number inside the repeat.
        train: Positions of the training patients (the validation part for
            early stopping is carved from them by :func:`~graphmed.train.fit.validation_split`).
        test: Positions of the held-out patients.
    """

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray

    @property
    def tag(self) -> str:
        """``"r<repeat>f<fold>"``, the fold's folder name under ``folds/``."""
        return f"r{self.repeat}f{self.fold}"


@dataclass(frozen=True)
class ModelRecipe:
    """Everything that builds and trains one graphmed model: the typed option groups.

    ``graph`` says how cohorts become patient graphs, ``model`` the network,
    ``task`` the heads, ``train`` the optimisation and early stopping.
    """

    graph: GraphConfig = field(default_factory=GraphConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class CVOptions:
    """How a cross-validation splits, what it compares, and how it summarises.

    Attributes:
        folds, repeats, seed: Stratified k-fold with repeats.
        label: Classification label the folds are also stratified by.
        horizons: Times of the time-dependent AUC (``None``: quartiles).
        test_missing: Modality -> rate hidden on the test fold only.
        baselines: Baseline names run on the same folds.
        bootstrap: Bootstrap resamples of the fold means' CI.
        risk_groups: Kaplan-Meier split of the report (``median``, ``tertiles``).
        baseline_seed: Seed of the baselines.
        max_features: Columns of a vector modality every method sees.
        monitor: What early stopping was asked to watch (recorded per fold).
    """

    folds: int = 5
    repeats: int = 1
    seed: int = 0
    label: str | None = None
    horizons: list[float] | None = None
    test_missing: dict[str, float] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    bootstrap: int = 1000
    risk_groups: str = "median"
    baseline_seed: int = 0
    max_features: int | None = 2000
    monitor: str = "loss"


@dataclass(frozen=True)
class StudyOptions:
    """The inner cross-validation of one tuning trial.

    Attributes:
        metric: Metric the trial's value is the mean of.
        inner_folds: Folds of the inner cross-validation (at least 2).
        seed: Seed of the inner split (the same for every trial).
        label: Classification label the inner folds are also stratified by.
    """

    metric: str = "c_index"
    inner_folds: int = 3
    seed: int = 0
    label: str | None = None


@dataclass
class FitHistory:
    """What :meth:`~graphmed.train.trainer.Trainer.fit` returns.

    Attributes:
        history: Per epoch: ``epoch``, ``train_loss`` and ``val_score`` (the
            monitored score, higher is better).
        best_epoch: Epoch whose weights were kept (``-1``: the starting weights).
        best_score: Its monitored score.
        stopped_early: Patience ran out before ``train.epochs``.
        epochs_run: Epochs trained (counting those before a resume).
        monitor_used: ``"c_index"``, ``"loss"`` or ``"train_loss"``.
        linear_blend: Weight kept of the graph part beside a linear Cox path.
        pretrain: Per epoch of masked-modality pretraining (``train.pretrain_epochs``):
            ``epoch``, ``train_loss``, ``val_loss`` (reconstruction); empty without it.

    It also reads as the mapping it replaces (``history["best_epoch"]``).
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    stopped_early: bool
    epochs_run: int
    monitor_used: str | None
    linear_blend: float | None = None
    pretrain: list[dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FoldResult:
    """One fold of a cross-validation: sizes, early stopping, and every method's metrics."""

    repeat: int
    fold: int
    n_train: int
    n_val: int
    n_test: int
    test_present: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    monitor: str
    monitor_used: str | None
    best_val_score: float | None
    methods: dict[str, dict[str, float]]
    seconds: float | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """As written to ``folds/<tag>/result.json`` (``seconds`` once timed)."""
        out = asdict(self)
        if out["seconds"] is None:
            out.pop("seconds")
        return out


__all__ = ["CVOptions", "FitHistory", "Fold", "FoldResult", "ModelRecipe", "StudyOptions"]
