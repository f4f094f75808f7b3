"""graphmed: omni-modal patient heterographs for survival and classification.

The public API, flat::

    import graphmed
    cohort = graphmed.read_cohort("runs/quickstart/cohort")
    model = graphmed.GraphMedSurvival(hidden=32, epochs=100).fit(cohort)
"""

__version__ = "0.1.0"  # before the imports: submodules record it in saved models

from .data.cohort import Cohort, ModalitySpec
from .data.io import read_cohort, write_cohort
from .data.mcat import read_mcat
from .data.preprocess import CohortPreprocessor
from .data.recipes import list_recipes, load_recipe, materialize
from .data.synthetic import make_synthetic_cohort
from .errors import (
    CohortError,
    CohortWarning,
    ConfigError,
    GraphMedError,
    MetaPathError,
    WriteError,
)
from .estimators import GraphMedClassifier, GraphMedSurvival
from .export import embed_frame, export_embeddings, read_export_metadata
from .graph.batch import GraphBatch
from .graph.build import PatientGraphs, build_graphs
from .graph.relations import RelationGraph
from .nn.graphmed_net import GraphMedNet
from .nn.model import GraphMedModel
from .train.compat import CompatibilityReport, CompatibilityWarning, check_compatibility
from .train.config import ExperimentConfig, load_experiment
from .train.cv import cross_validate
from .train.saved import TrainedModel, fit_final, load_model

__all__ = [
    "Cohort",
    "CohortError",
    "CohortWarning",
    "CompatibilityReport",
    "CompatibilityWarning",
    "CohortPreprocessor",
    "ConfigError",
    "ExperimentConfig",
    "GraphBatch",
    "GraphMedClassifier",
    "GraphMedError",
    "GraphMedModel",
    "GraphMedNet",
    "GraphMedSurvival",
    "MetaPathError",
    "ModalitySpec",
    "PatientGraphs",
    "RelationGraph",
    "TrainedModel",
    "WriteError",
    "__version__",
    "build_graphs",
    "check_compatibility",
    "cross_validate",
    "embed_frame",
    "export_embeddings",
    "fit_final",
    "list_recipes",
    "load_experiment",
    "load_model",
    "load_recipe",
    "make_synthetic_cohort",
    "materialize",
    "read_cohort",
    "read_export_metadata",
    "read_mcat",
    "write_cohort",
]
