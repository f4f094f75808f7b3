"""Moved to :mod:`graphmed.inference.compat`; this name keeps old imports working."""

from ..inference.compat import (
    NO_MODALITY,
    CompatibilityReport,
    CompatibilityWarning,
    check_compatibility,
    pattern_counts,
)

__all__ = [
    "NO_MODALITY",
    "CompatibilityReport",
    "CompatibilityWarning",
    "check_compatibility",
    "pattern_counts",
]
