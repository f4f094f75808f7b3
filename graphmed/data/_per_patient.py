"""Folders of one file per patient (bag arrays, graphs): pairing files to patients."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import CohortError

T = TypeVar("T")


def load_per_patient(
    files: list[Path], rel: str, what: str, load: Callable[[Path, str], T]
) -> dict[str, T]:
    """``patient_id -> load(file, name)`` for files named ``<patient_id>.<suffix>``.

    Files are read in parallel threads (the reads release the GIL).

    Raises:
        CohortError: two files name the same patient (``what`` says what each
            file holds, e.g. "array").
    """
    seen: dict[str, str] = {}
    for p in files:
        if p.stem in seen:
            raise CohortError(
                f"{rel}/: patient id '{p.stem}' has two files, {seen[p.stem]} and {p.name}; "
                f"expected one {what} per patient. Remove one of them."
            )
        seen[p.stem] = p.name
    with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        loaded = list(pool.map(lambda p: load(p, f"{rel}/{p.name}"), files))
    return {p.stem: value for p, value in zip(files, loaded)}
