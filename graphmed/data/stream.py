"""A cohort folder read in chunks of patients, with memory bounded by the chunk.

:func:`~graphmed.data.io.read_cohort` holds a whole cohort in memory (4.9 GB
at 100k patients with bags). :class:`CohortStream` reads the same folder one
chunk of patients at a time, in the order of ``patients.csv``:

* ``patients.csv`` is read ``chunk_size`` rows at a time;
* a table modality (tabular, vector, text) must be Parquet: each chunk reads
  only its patients' rows, through a ``pyarrow.dataset`` filter on
  ``patient_id``. Row groups whose ``patient_id`` range misses the chunk are
  skipped from their statistics, so a file written in the order of
  ``patients.csv`` (as :func:`graphmed.make_large_cohort` and most pipelines
  write) costs one pass over the file in all; any other order is still read
  correctly, at the price of scanning the ``patient_id`` column per chunk;
* bag and graph files are opened per patient of the chunk.

Each chunk is a :class:`~graphmed.data.cohort.Cohort` checked as
:func:`read_cohort` checks a whole one, less the checks that only hold for a
whole cohort (an event somewhere, a modality held by someone); the checks that
need all patients at once (a patient id in two chunks, a modality row of a
patient absent from ``patients.csv``) are not made. Use it for prediction and
export of cohorts that do not fit in memory; training reads the whole cohort.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CohortError
from .cohort import Cohort
from .io import (
    BAG_SUFFIXES,
    CONFIG,
    PATIENTS,
    FolderPlan,
    _existing,
    _existing_patients,
    finish_table,
    load_array,
    read_csv_chunks,
)
from .validate import PATIENT, check_no_endpoints, coerce_endpoints

DEFAULT_CHUNK_SIZE = 4096
TABLE_KINDS = ("tabular", "vector", "text")


class CohortStream:
    """Iterate over a cohort folder in chunks of ``chunk_size`` patients.

    Args:
        path: The cohort folder (the format of ``docs/cohort-format.md``; its
            table modalities in Parquet).
        chunk_size: Patients per chunk; memory follows it, not the cohort.
        allow_outside: As for :func:`~graphmed.data.io.read_cohort`.

    Attributes:
        name, modalities, relations, labels: As a :class:`Cohort`'s.
        n_patients: Rows of ``patients.csv`` (counted once, without parsing).

    Raises:
        CohortError: ``cohort.yaml`` is malformed, a file is missing, or a
            table modality is not Parquet (the message says how to convert it).

    Example:
        >>> stream = CohortStream("biobank/", chunk_size=8192)  # doctest: +SKIP
        >>> for chunk in stream:  # doctest: +SKIP
        ...     risk = model.predict(chunk).risk
    """

    def __init__(
        self,
        path: str | os.PathLike,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        allow_outside: bool = False,
    ):
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise CohortError(f"chunk_size must be a positive number of patients, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.plan = FolderPlan.read(path, allow_outside)
        root = self.plan.root
        self._patients = _existing_patients(root)
        self._tables: dict[str, Any] = {}
        for mod, spec in self.plan.specs.items():
            if spec.kind in TABLE_KINDS:
                file = _existing(root, spec.path, mod)
                if not file.name.lower().endswith((".parquet", ".pq")):
                    raise CohortError(
                        f"{spec.path}: a streamed cohort reads its tables from Parquet, one row "
                        "group at a time; a CSV has no row groups to skip, so every chunk would "
                        f"read the whole file. Convert it once: pd.read_csv('{spec.path}')"
                        f".to_parquet('{Path(spec.path).stem}.parquet'), and set its path in "
                        f"{CONFIG}."
                    )
                self._tables[mod] = file
            elif not (root / spec.path).is_dir():
                _existing(root, spec.path, mod)
                raise CohortError(f"{spec.path}: is a file; a {spec.kind} modality is a folder.")
        self.n_patients = _count_rows(self._patients)

    # ------------------------------------------------------------ attributes
    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def modalities(self) -> dict:
        return dict(self.plan.specs)

    @property
    def modality_names(self) -> list[str]:
        return list(self.plan.specs)

    @property
    def relations(self) -> list[tuple[str, str, str]]:
        return list(self.plan.relations)

    @property
    def labels(self) -> list[str]:
        return list(self.plan.labels)

    def __len__(self) -> int:
        return self.n_patients

    def __repr__(self) -> str:
        return (
            f"CohortStream('{self.name}', {self.n_patients} patients in chunks of "
            f"{self.chunk_size}, modalities={self.modality_names})"
        )

    # ---------------------------------------------------------------- chunks
    def __iter__(self) -> Iterator[Cohort]:
        plan = self.plan
        sources = {"config": CONFIG, "patients": PATIENTS}
        rows = read_csv_chunks(
            self._patients, PATIENTS, plan.dtypes.get("patients") or {}, self.chunk_size
        )
        for frame in rows:
            patients = frame.set_index("patient_id")
            t, e = coerce_endpoints(patients, PATIENTS, plan.time, plan.event)
            patients[plan.time], patients[plan.event] = t, e
            patients = patients.rename(columns={plan.time: "time", plan.event: "event"})
            ids = patients.index
            data: dict[str, Any] = {}
            for mod, spec in plan.specs.items():
                if spec.kind in TABLE_KINDS:
                    data[mod] = self._table_rows(mod, ids)
                    sources[mod] = spec.path
                elif spec.kind == "bag":
                    data[mod] = self._per_patient(spec.path, ids, BAG_SUFFIXES, load_array)
                    sources[mod] = f"{spec.path}/{PATIENT}.npy"
                else:
                    from .graph_kind import GRAPH_SUFFIXES, load_graph

                    data[mod] = self._per_patient(spec.path, ids, GRAPH_SUFFIXES, load_graph)
                    sources[mod] = f"{spec.path}/{PATIENT}.npz"
            yield plan.assemble(patients, data, sources, part=True)

    def _table_rows(self, mod: str, ids: pd.Index) -> pd.DataFrame:
        """The rows of table modality ``mod`` for patients ``ids``, read by a filtered scan."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        spec = self.plan.specs[mod]
        field = pc.field("patient_id")
        wanted = [str(i) for i in ids]
        # The range lets Parquet statistics skip row groups; isin keeps exactly the chunk.
        keep = (field >= min(wanted)) & (field <= max(wanted)) & field.isin(wanted)
        try:
            table = ds.dataset(self._tables[mod], format="parquet").to_table(filter=keep)
        except Exception as err:
            raise CohortError(
                f"{spec.path}: cannot read the Parquet file ({type(err).__name__}: {err}); "
                "re-export it (with a string patient_id column)."
            ) from err
        frame = table.to_pandas()
        if frame.index.name == "patient_id":
            frame = frame.reset_index()
        recorded = dict(self.plan.dtypes.get(mod) or {})
        if spec.kind == "text":
            recorded.setdefault("text", "object")
        frame = finish_table(frame, spec.path, recorded).set_index("patient_id")
        if spec.kind != "text":
            check_no_endpoints(frame, spec.path, self.plan.endpoints)
        return frame

    def _per_patient(self, rel: str, ids: pd.Index, suffixes, load) -> dict[str, Any]:
        folder = self.plan.root / rel
        out: dict[str, Any] = {}
        for pid in ids:
            found = [folder / f"{pid}{s}" for s in suffixes if (folder / f"{pid}{s}").is_file()]
            if len(found) > 1:
                raise CohortError(
                    f"{rel}/: patient id '{pid}' has two files, {found[0].name} and "
                    f"{found[1].name}; expected one per patient. Remove one of them."
                )
            if found:
                out[str(pid)] = load(found[0], f"{rel}/{found[0].name}")
        return out


def _count_rows(file: Path, size: int = 1 << 20) -> int:
    """Data rows of a CSV (lines after the header; no quoted line breaks), read in blocks."""
    lines, last = 0, b"\n"
    with open(file, "rb") as fh:
        while block := fh.read(size):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(0, lines + (last != b"\n") - 1)
