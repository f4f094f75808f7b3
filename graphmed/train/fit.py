"""One fitting path, for a training fold and for the final model alike.

:func:`fit_model` fits the preprocessing on the training cohort, builds the
graphs and the model of a :class:`~graphmed.train.options.ModelRecipe`, and
trains it with early stopping on a seeded validation part.
:func:`fit_fold_model` is that for one fold of a cross-validation;
:func:`fit_trained_model` is that for the whole cohort (the validation split
of repeat 0, fold 0), wrapped as a :class:`~graphmed.inference.TrainedModel`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from .. import __version__
from ..data.cohort import Cohort
from ..graph.build import ModalityLayout
from ..inference.compat import pattern_counts
from ..inference.fitted import FittedData
from ..inference.model import TrainedModel, config_hash
from ..inference.predict import Predictions, predict
from ..nn.ensemble import EnsembleModel
from ..nn.model import GraphMedModel
from .builder import build_model, fit_data, stratify_key
from .options import FitHistory, ModelRecipe
from .trainer import Trainer


@dataclass
class FoldModel:
    """A graphmed model trained on one training fold; it predicts any cohort.

    Attributes:
        fitted: Preprocessing and relations fitted on the training fold.
        model: The trained model (best validation weights).
        history: What :meth:`Trainer.fit` returned.
        fit_ids, val_ids: The training fold's fitting and validation patients.
        layouts: Node layouts of the training graphs (they set the model's shapes).
        device: Where the model sits (predictions run there).
        precision: ``train.precision`` (autocast on a GPU).
        trainer: The :class:`Trainer` that fitted it (predictions do not use it).
        member_histories: Each ensemble member's history (``[history]`` for one model).
    """

    fitted: FittedData
    model: GraphMedModel | EnsembleModel
    history: FitHistory
    fit_ids: np.ndarray
    val_ids: np.ndarray
    layouts: dict[str, ModalityLayout]
    device: Any = "cpu"
    precision: str = "fp32"
    trainer: Trainer | None = None
    member_histories: list[FitHistory] = field(default_factory=list)

    def predict(self, cohort: Cohort) -> Predictions:
        """Predictions for ``cohort`` (e.g. a test fold, or several masked copies of it)."""
        return predict(
            self.model, self.fitted.graphs(cohort), device=self.device, precision=self.precision
        )


MEMBER_SEED = 104729
"""Seed offset between ensemble members (their torch seed and validation split)."""


def validation_split(
    train_c: Cohort,
    val_fraction: float,
    seed: int,
    label: str | None = None,
    repeat: int = 0,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Patient ids ``(fit, val)``: the seeded early-stopping split of a training fold.

    Stratified by event (and ``label``); the seed is ``seed + 7919 * repeat + fold``.
    """
    return train_test_split(
        np.asarray(train_c.patient_ids),
        test_size=val_fraction,
        stratify=stratify_key(train_c, label),
        random_state=seed + 7919 * repeat + fold,
    )


def member_recipe(recipe: ModelRecipe, member: int) -> ModelRecipe:
    """The recipe of ensemble member ``member``: its own seed (member 0: the recipe's)."""
    if member == 0:
        return recipe
    return replace(
        recipe, train=replace(recipe.train, seed=recipe.train.seed + MEMBER_SEED * member)
    )


def member_checkpoint(checkpoint: str | Path | None, member: int) -> Path | None:
    """Where member ``member`` of an ensemble saves its training state (member 0: ``checkpoint``)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    return path if member == 0 else path.with_name(f"{path.stem}.member{member}{path.suffix}")


def fit_model(
    train_c: Cohort,
    recipe: ModelRecipe,
    *,
    repeat: int = 0,
    fold: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log=None,
) -> FoldModel:
    """Train graphmed on ``train_c``; early stopping watches its validation part.

    Everything is fitted on ``train_c`` only. The returned model can then be
    evaluated on any number of test cohorts (e.g. one test fold with
    modalities hidden at several rates) without retraining.

    With ``train.ensemble = K > 1`` the preprocessing is fitted once and K
    members are trained, member ``k`` with seed ``train.seed + 104729 k`` for
    its weights and its validation split (member 0 is the single model); the
    model returned is their :class:`~graphmed.nn.ensemble.EnsembleModel`, and
    ``history``/``fit_ids``/``val_ids`` are member 0's (``member_histories``
    has every member's). Member ``k``'s training state goes to
    ``<checkpoint stem>.member<k><suffix>``.
    """
    t = recipe.train
    fitted = fit_data(train_c, recipe)  # the whole training fold; never the test fold
    members, histories, splits = [], [], []
    layouts = None
    for k in range(t.ensemble):
        r = member_recipe(recipe, k)
        fit_ids, val_ids = validation_split(
            train_c, t.val_fraction, r.train.seed, recipe.task.label, repeat, fold
        )
        member_fitted = replace(fitted, recipe=r)
        train_g = member_fitted.graphs(train_c.subset(fit_ids))
        val_g = member_fitted.graphs(train_c.subset(val_ids))
        model = build_model(member_fitted, train_g, train_c)
        if t.ensemble > 1 and log is not None:
            log(f"ensemble member {k + 1} of {t.ensemble}")
        trainer = Trainer(r.train, log=log)
        history = trainer.fit(
            model, train_g, val_g, checkpoint=member_checkpoint(checkpoint, k), resume=resume
        )
        if recipe.model.linear_refit and model.linear is not None:
            # The graph part and the blend weight were chosen beside the linear path of the
            # fitting part; the path's coefficients now use every training patient.
            from .linear import fit_linear_path

            fit_linear_path(model.linear, fitted.graphs(train_c), seed=r.train.seed)
        members.append(model)
        histories.append(history)
        splits.append((fit_ids, val_ids))
        layouts = layouts or train_g.layouts
    model = members[0] if len(members) == 1 else EnsembleModel(members)
    return FoldModel(
        fitted,
        model,
        histories[0],
        splits[0][0],
        splits[0][1],
        layouts,
        trainer.device,
        t.precision,
        trainer,
        member_histories=histories,
    )


def fit_fold_model(
    train_c: Cohort,
    recipe: ModelRecipe,
    repeat: int = 0,
    fold: int = 0,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log=None,
) -> FoldModel:
    """:func:`fit_model` on one training fold, as :func:`~graphmed.train.cv.run_cv` does.

    ``recipe`` may also be an experiment config (read by the builder).
    """
    from .builder import as_recipe

    return fit_model(
        train_c,
        as_recipe(recipe),
        repeat=repeat,
        fold=fold,
        checkpoint=checkpoint,
        resume=resume,
        log=log,
    )


def fit_trained_model(
    cohort: Cohort,
    recipe: ModelRecipe,
    config_data: dict[str, Any],
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log=None,
) -> tuple[TrainedModel, FitHistory]:
    """Fit a model on a whole cohort, ready to save and to read new cohorts.

    Args:
        cohort: Every training patient (a validation part is carved for
            early stopping, as for fold 0 of repeat 0).
        recipe: The option groups of the model.
        config_data: The resolved config as plain data (saved with the model).
        checkpoint, resume, log: As for :func:`fit_model`.
    """
    fm = fit_model(cohort, recipe, checkpoint=checkpoint, resume=resume, log=log)
    model = fm.model.cpu().eval()
    present = cohort.present_mask()
    info = {
        "graphmed_version": __version__,
        "training_cohort": cohort.name,
        "n_training_patients": cohort.n_patients,
        "config_hash": config_hash(config_data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "best_epoch": fm.history.best_epoch,
        "modality_specs": {
            m: {"kind": s.kind, "width": cohort.width(m), "present": int(present[m].sum())}
            for m, s in cohort.modalities.items()
        },
        "training_patterns": pattern_counts(present),
    }
    trained = TrainedModel(
        model, fm.fitted, fm.layouts, info, config_data, precision=recipe.train.precision
    )
    return trained, fm.history


__all__ = [
    "FoldModel",
    "fit_fold_model",
    "fit_model",
    "fit_trained_model",
    "member_checkpoint",
    "member_recipe",
    "validation_split",
]
