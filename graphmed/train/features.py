"""One flat feature matrix from a multi-modal cohort, for the baselines.

:class:`FeatureMatrix` is the early fusion every baseline shares: it fits a
:class:`~graphmed.data.preprocess.CohortPreprocessor` on the training cohort,
turns each modality into a block of columns and concatenates the blocks.
Every statistic (standardisation, categories, the vector cap, the imputation
means) comes from the cohort passed to :meth:`FeatureMatrix.fit`;
:meth:`FeatureMatrix.transform` never changes one.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor, ModalityTransform, TransformedModality
from ..errors import ConfigError, did_you_mean

IMPUTE = ("zero", "mean")
POOLING = ("mean", "mean+max")


def restrict_modalities(cohort: Cohort, modalities: list[str] | None) -> Cohort:
    """``cohort`` with only ``modalities`` (all when ``None``); unknown names raise."""
    if modalities is None:
        return cohort
    for mod in modalities:
        if mod not in cohort.modalities:
            raise ConfigError(
                f"baseline modality '{mod}' is not in the cohort, which has "
                f"{cohort.modality_names}.{did_you_mean(mod, cohort.modality_names)}"
            )
    return replace(
        cohort,
        modalities={m: cohort.modalities[m] for m in modalities},
        data={m: cohort.data[m] for m in modalities},
        relations=[r for r in cohort.relations if r[0] in modalities and r[2] in modalities],
    )


class FeatureMatrix:
    """Early fusion: every modality as a block of columns of one ``(P, F)`` matrix.

    Blocks, per modality, in the cohort's order:

    * tabular / vector: numeric columns standardised with training statistics
      (missing cells of a present row hold the training median); each
      categorical column one-hot over its training categories, an unknown or
      missing category being all zeros. A vector modality wider than
      ``max_vector_features`` numeric columns keeps the ones with the largest
      raw variance over training patients who have it (after the modality's
      own ``max_features`` option, if set).
    * bag: the mean over instances of the standardised instance features
      (``bag_pooling="mean+max"`` appends the per-feature maximum).

    A patient missing a modality gets, for that block:

    * ``impute="zero"``: zeros, no indicator. For standardised numeric columns
      this is the training mean; for one-hot columns it means "no category";
      for bag means it is the mean of training *instances* (not of patients).
    * ``impute="mean"``: the training mean of each column of the block over the
      training patients who have the modality, plus one indicator column
      ``<modality>:missing`` (1 = missing), always present for every modality,
      so the width is the same for every cohort.

    Args:
        impute: ``"zero"`` or ``"mean"`` (default), as above.
        modalities: Modalities to use (default: all of the training cohort).
        max_vector_features: Cap on the numeric columns of a vector modality
            (default 200; ``None`` for no cap).
        bag_pooling: ``"mean"`` (default) or ``"mean+max"``.

    Attributes:
        preprocessor_: The fitted :class:`CohortPreprocessor`.
        feature_names_: ``F`` column names (``mod:col``, ``mod:col=category``,
            ``mod:mean3``, ``mod:max3``, ``mod:missing``).
        keep_: Modality -> indices of the preprocessor's columns kept.
        fill_: Modality -> ``(F_mod,)`` training means used by ``impute="mean"``.
    """

    def __init__(
        self,
        impute: str = "mean",
        modalities: list[str] | None = None,
        max_vector_features: int | None = 200,
        bag_pooling: str = "mean",
    ):
        _check_choice("impute", impute, IMPUTE)
        _check_choice("bag_pooling", bag_pooling, POOLING)
        if max_vector_features is not None and max_vector_features < 1:
            raise ConfigError(
                f"max_vector_features must be >= 1 or None, got {max_vector_features}"
            )
        self.impute = impute
        self.modalities = None if modalities is None else list(modalities)
        self.max_vector_features = max_vector_features
        self.bag_pooling = bag_pooling
        self.preprocessor_: CohortPreprocessor | None = None

    # ------------------------------------------------------------------- fit
    def fit(self, train: Cohort) -> FeatureMatrix:
        """Fit every statistic on the patients of ``train`` (the training fold)."""
        train = restrict_modalities(train, self.modalities)
        self.preprocessor_ = CohortPreprocessor().fit(train)
        transformed = self.preprocessor_.transform(train)
        self.keep_ = {}
        for mod, tr in self.preprocessor_.transforms_.items():
            self.keep_[mod] = self._fit_keep(train, mod, tr, transformed[mod].present)
        self.fill_, self.feature_names_ = {}, []
        for mod, tr in self.preprocessor_.transforms_.items():
            block = self._block(mod, tr, transformed[mod])
            present = transformed[mod].present
            self.fill_[mod] = block[present].mean(0) if present.any() else np.zeros(block.shape[1])
            self.feature_names_ += self._names(mod, tr)
        return self

    def _fit_keep(
        self, train: Cohort, mod: str, tr: ModalityTransform, present: np.ndarray
    ) -> np.ndarray:
        keep = np.arange(len(tr.columns))
        numeric = [j for j, c in enumerate(tr.columns) if c not in tr.categorical]
        cap = self.max_vector_features
        if tr.kind != "vector" or cap is None or len(numeric) <= cap:
            return keep
        cols = [tr.columns[j] for j in numeric]
        rows = train.data[mod].reindex(train.patients.index[present])[cols]
        var = rows.apply(pd.to_numeric, errors="coerce").var(ddof=0).fillna(0.0).to_numpy()
        top = {numeric[j] for j in np.argsort(-var, kind="stable")[:cap]}
        return np.array([j for j in keep if j in top or j not in numeric], dtype=np.int64)

    # ------------------------------------------------------------- transform
    def transform(self, cohort: Cohort) -> np.ndarray:
        """The ``(P, F)`` float64 feature matrix of ``cohort``'s patients."""
        if self.preprocessor_ is None:
            raise ConfigError("FeatureMatrix is not fitted; call fit(train_cohort) first")
        transformed = self.preprocessor_.transform(cohort)
        blocks = []
        for mod, tr in self.preprocessor_.transforms_.items():
            block = self._block(mod, tr, transformed[mod])
            missing = ~transformed[mod].present
            if self.impute == "zero":
                block[missing] = 0.0
            else:
                block[missing] = self.fill_[mod]
                block = np.column_stack([block, missing.astype(np.float64)])
            blocks.append(block)
        return np.column_stack(blocks) if blocks else np.zeros((cohort.n_patients, 0))

    def fit_transform(self, train: Cohort) -> np.ndarray:
        return self.fit(train).transform(train)

    def state(self) -> dict[str, Any]:
        """A deep copy of every fitted statistic (to check that nothing is refitted)."""
        if self.preprocessor_ is None:
            raise ConfigError("FeatureMatrix is not fitted; nothing to report")
        return copy.deepcopy(
            {
                "preprocessor": self.preprocessor_.to_dict(),
                "keep": self.keep_,
                "fill": self.fill_,
                "feature_names": self.feature_names_,
            }
        )

    # --------------------------------------------------------------- blocks
    def _block(self, mod: str, tr: ModalityTransform, tm: TransformedModality) -> np.ndarray:
        if tr.kind in ("bag", "graph"):  # graphs: their nodes, as a bag
            return _pool_bags(tm.values, tr.width, self.bag_pooling == "mean+max")
        values = np.asarray(tm.values, dtype=np.float64)
        parts = []
        for j in self.keep_[mod]:
            col = tr.columns[j]
            if col in tr.categorical:
                codes = values[:, j].astype(np.int64)
                n_cats = len(tr.categorical[col])
                parts.append((codes[:, None] == np.arange(1, n_cats + 1)[None, :]).astype(float))
            else:
                parts.append(values[:, j : j + 1])
        return np.column_stack(parts) if parts else np.zeros((len(values), 0))

    def _names(self, mod: str, tr: ModalityTransform) -> list[str]:
        if tr.kind in ("bag", "graph"):  # graphs: their nodes, as a bag
            pools = ["mean", "max"] if self.bag_pooling == "mean+max" else ["mean"]
            names = [f"{mod}:{p}{k}" for p in pools for k in range(tr.width)]
        else:
            names = []
            for j in self.keep_[mod]:
                col = tr.columns[j]
                if col in tr.categorical:
                    names += [f"{mod}:{col}={c}" for c in tr.categorical[col]]
                else:
                    names.append(f"{mod}:{col}")
        return names + ([f"{mod}:missing"] if self.impute == "mean" else [])


def _pool_bags(bags: list[np.ndarray], width: int, with_max: bool) -> np.ndarray:
    """``(P, width)`` instance means (and ``(P, width)`` maxima); empty bags give zeros."""
    out = np.zeros((len(bags), width * (2 if with_max else 1)))
    sizes = np.array([len(b) for b in bags])
    rows = np.flatnonzero(sizes > 0)
    if len(rows) == 0:
        return out
    stacked = np.concatenate([bags[i] for i in rows]).astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(sizes[rows])[:-1]])
    out[rows, :width] = np.add.reduceat(stacked, starts, axis=0) / sizes[rows, None]
    if with_max:
        out[rows, width:] = np.maximum.reduceat(stacked, starts, axis=0)
    return out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(repr, choices))}, but got {value!r}."
            + did_you_mean(value, choices)
        )
