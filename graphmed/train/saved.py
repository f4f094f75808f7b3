"""Moved to :mod:`graphmed.inference` (a trained model, loading it) and
:mod:`graphmed.train.fit` (fitting it); this name keeps old imports working.

``fit_final(cohort, config)`` is the config-taking entry point of
:mod:`graphmed.train.builder`.
"""

from ..inference.io import load_model
from ..inference.model import (
    DEFAULT_CHUNK_SIZE,
    TrainedModel,
    config_hash,
    meta_digest,
    weights_digest,
)
from ..inference.predict import Predictions
from .builder import ADDED_OPTIONS, fit_final

__all__ = [
    "ADDED_OPTIONS",
    "DEFAULT_CHUNK_SIZE",
    "Predictions",
    "TrainedModel",
    "config_hash",
    "fit_final",
    "load_model",
    "meta_digest",
    "weights_digest",
]
