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
from dataclasses import dataclass
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
    """

    fitted: FittedData
    model: GraphMedModel
    history: FitHistory
    fit_ids: np.ndarray
    val_ids: np.ndarray
    layouts: dict[str, ModalityLayout]
    device: Any = "cpu"
    precision: str = "fp32"
    trainer: Trainer | None = None

    def predict(self, cohort: Cohort) -> Predictions:
        """Predictions for ``cohort`` (e.g. a test fold, or several masked copies of it)."""
        return predict(
            self.model, self.fitted.graphs(cohort), device=self.device, precision=self.precision
        )


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
    """
    t = recipe.train
    fit_ids, val_ids = validation_split(
        train_c, t.val_fraction, t.seed, recipe.task.label, repeat, fold
    )
    fitted = fit_data(train_c, recipe)  # the whole training fold; never the test fold
    train_g = fitted.graphs(train_c.subset(fit_ids))
    val_g = fitted.graphs(train_c.subset(val_ids))
    model = build_model(fitted, train_g, train_c)
    trainer = Trainer(t, log=log)
    history = trainer.fit(model, train_g, val_g, checkpoint=checkpoint, resume=resume)
    if recipe.model.linear_refit and model.linear is not None:
        # The graph part and the blend weight were chosen beside the linear path of the
        # fitting part; the path's coefficients now use every training patient.
        from .linear import fit_linear_path

        fit_linear_path(model.linear, fitted.graphs(train_c), seed=t.seed)
    return FoldModel(
        fitted,
        model,
        history,
        fit_ids,
        val_ids,
        train_g.layouts,
        trainer.device,
        t.precision,
        trainer,
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


__all__ = ["FoldModel", "fit_fold_model", "fit_model", "fit_trained_model", "validation_split"]
