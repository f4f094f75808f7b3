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
    "embed_frame",
    "export_embeddings",
    "load_model",
    "predict",
    "read_export_metadata",
]
