"""graphmed: omni-modal patient heterographs for survival and classification."""

from .data.cohort import Cohort, ModalitySpec
from .errors import CohortError, ConfigError, GraphMedError, MetaPathError

__version__ = "0.1.0"

__all__ = [
    "Cohort",
    "CohortError",
    "ConfigError",
    "GraphMedError",
    "MetaPathError",
    "ModalitySpec",
    "__version__",
]
