"""Inference: a trained model reads cohorts it has never seen.

Predictions, embeddings, survival curves and the Parquet export of a
:class:`TrainedModel`, and loading a saved model directory. Nothing here
imports the trainer: a model predicts with :func:`predict` in evaluation mode.
"""

from .compat import CompatibilityReport, CompatibilityWarning, check_compatibility
from .export import ExportSummary, embed_frame, export_embeddings, read_export_metadata
from .fitted import FittedData
from .io import load_model
from .model import DEFAULT_CHUNK_SIZE, TrainedModel, config_hash
from .predict import Predictions, predict
from .survival import cox_survival, fit_breslow, step_functions

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CompatibilityReport",
    "CompatibilityWarning",
    "ExportSummary",
    "FittedData",
    "Predictions",
    "TrainedModel",
    "check_compatibility",
    "config_hash",
    "cox_survival",
    "embed_frame",
    "export_embeddings",
    "fit_breslow",
    "load_model",
    "predict",
    "read_export_metadata",
    "step_functions",
]
