"""Exceptions raised for bad user input.

Every error subclasses :class:`ValueError` so that callers who catch the
standard exception keep working, and every message says what was expected,
what came, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GraphMedError(ValueError):
    """Base class of graphmed's input errors."""


class CohortError(GraphMedError):
    """A cohort (folder, file or in-memory frames) is malformed."""


class ConfigError(GraphMedError):
    """A configuration value or key is invalid."""


class MetaPathError(GraphMedError):
    """A meta-path does not follow the relation graph."""


class CohortWarning(UserWarning):
    """A cohort reads, but something in it looks wrong (e.g. rows with most cells empty)."""


class WriteError(GraphMedError, OSError):
    """Writing a file failed (a full disk, no permission); the message names the file.

    It is an :class:`OSError` too, so callers that catch write failures keep working.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""
