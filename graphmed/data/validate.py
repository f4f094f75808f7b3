"""Validation of a cohort, with messages that name the file, column and patient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CohortError

if TYPE_CHECKING:
    from .cohort import Cohort


def validate_cohort(cohort: Cohort, sources: Mapping[str, str] | None = None) -> None:
    """Raise :class:`CohortError` naming the first problem found in ``cohort``."""
    pats = cohort.patients
    time = pats["time"].to_numpy(dtype=float)
    if not np.isfinite(time).all() or (time < 0).any():
        raise CohortError("patients: 'time' must be finite and non-negative")
    if int(pats["event"].sum()) == 0:
        raise CohortError("patients: the survival endpoint has no events")
