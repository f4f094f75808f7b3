"""Patient embeddings of a cohort, as a table or a Parquet file.

A trained model turns any cohort, with its own pattern of missing modalities,
into one row per patient (see ``docs/export.md``):

==========================  ==================================================
``patient_id``              string
``time``, ``event``         the cohort's survival endpoint (float64, int64)
``label_<name>``            the cohort's label columns, as they are
``emb_0`` .. ``emb_{d-1}``  the fused patient embedding (float32)
``<mod>_emb_<i>``           per-modality embeddings (``per_modality=True``)
``present_<mod>``           the patient has the modality (bool)
``completed_<mod>``         the modality was completed by prompts (bool)
``risk``                    survival risk score (higher = worse), if a survival head
``surv_<t>``                survival probability at bin edge ``t`` (discrete head)
``proba_<label>_<class>``   class probabilities (classification head)
``att_mod_<mod>``           modality attention (sums to 1 over modalities)
``att_path_<meta-path>``    meta-path attention, e.g. ``att_path_clinical-informs->expr``
==========================  ==================================================

The Parquet schema metadata holds JSON values under ``graphmed.*`` keys
(:data:`METADATA_KEYS`); :func:`read_export_metadata` decodes them.

Exports run in chunks of patients: graphs are built and the model applied one
chunk at a time, each written as a row group through
:class:`pyarrow.parquet.ParquetWriter`, so memory follows ``chunk_size``, not
the cohort. The file is written under a temporary name beside ``out`` and
renamed onto it only when complete: an interrupted export leaves nothing
under the final name.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from .._atomic import _jsonable, atomic_path
from ..data.cohort import Cohort
from ..errors import GraphMedError
from ..graph.relations import RelationGraph
from .compat import CompatibilityReport
from .io import load_model
from .model import DEFAULT_CHUNK_SIZE, TrainedModel, config_hash
from .predict import Predictions

if TYPE_CHECKING:
    from ..graph.build import PatientGraphs

PREFIX = "graphmed."
METADATA_KEYS = (
    "version",
    "model_version",
    "config_hash",
    "training_cohort",
    "model_created",
    "modality_specs",
    "created",
    "cohort",
    "n_patients",
    "embedding_dim",
    "per_modality",
    "modalities",
    "metapaths",
    "heads",
    "compatibility",
)
"""Keys of the schema metadata (each prefixed ``graphmed.``, each value JSON)."""


@dataclass
class ExportSummary:
    """What :func:`export_embeddings` wrote."""

    path: Path
    n_patients: int
    n_columns: int
    embedding_dim: int
    n_bytes: int
    seconds: float
    report: CompatibilityReport


def embed_frame(
    model: TrainedModel | str | os.PathLike,
    cohort: Cohort | str | os.PathLike,
    *,
    per_modality: bool = False,
    device: str = "cpu",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 1024,
    max_missing_features: float = 0.5,
    progress: bool = False,
) -> pd.DataFrame:
    """The export table of ``cohort`` in memory (columns: see the module docstring).

    Args:
        model: A :class:`TrainedModel`, a fitted estimator, or a model folder.
        cohort: A :class:`Cohort`, a cohort folder, or a
            :class:`~graphmed.data.stream.CohortStream` (read chunk by chunk,
            so that memory follows the chunk, not the cohort).
        per_modality: Add each modality's embedding (``<mod>_emb_<i>``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        chunk_size: Patients whose graphs are built and read at once.
        batch_size: Patients per forward pass inside a chunk.
        max_missing_features: See :func:`~graphmed.inference.compat.check_compatibility`.
        progress: Show a progress bar (only on a terminal).

    Returns:
        One row per patient, in the cohort's order. ``frame.attrs["graphmed"]``
        holds the metadata a Parquet export stores (decoded).
    """
    job = _Job(model, cohort, per_modality, device, batch_size, max_missing_features)
    tables = list(job.tables(chunk_size, progress))
    frame = pa.concat_tables(tables).to_pandas() if tables else job.schema.empty_table().to_pandas()
    frame.attrs["graphmed"] = job.metadata()
    return frame


def export_embeddings(
    model: TrainedModel | str | os.PathLike,
    cohort: Cohort | str | os.PathLike,
    out: str | os.PathLike,
    *,
    per_modality: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: int = 1024,
    device: str = "cpu",
    max_missing_features: float = 0.5,
    progress: bool = True,
    compression: str = "zstd",
) -> ExportSummary:
    """Write the patient embeddings of ``cohort`` to the Parquet file ``out``.

    Args:
        model, cohort, per_modality, device, max_missing_features: As for
            :func:`embed_frame`.
        out: The Parquet file to write (replaced atomically if it exists).
        chunk_size: Patients per chunk (and per row group); memory grows with
            it, not with the cohort. Default 4096.
        batch_size: Patients per forward pass inside a chunk.
        progress: Progress bar on stderr (off when stderr is not a terminal).
        compression: Parquet codec (``"zstd"``, ``"snappy"``, ``"none"``).

    Returns:
        An :class:`ExportSummary` (path, sizes, time, compatibility report).
    """
    out = Path(out)
    if out.is_dir():
        raise GraphMedError(
            f"'{out}' is a folder; give the file to write, e.g. {out / 'embeddings.parquet'}"
        )
    start = time.perf_counter()
    job = _Job(model, cohort, per_modality, device, batch_size, max_missing_features)
    schema = job.schema.with_metadata(job.encoded_metadata())
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema, compression=compression) as writer:
            for table in job.tables(chunk_size, progress):
                writer.write_table(table.replace_schema_metadata(schema.metadata))
    return ExportSummary(
        out,
        job.n_patients,
        len(schema),
        job.dim,
        out.stat().st_size,
        time.perf_counter() - start,
        job.report,
    )


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``graphmed.*`` schema metadata of an export, decoded (keys without the prefix)."""
    meta = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in meta.items():
        name = key.decode()
        if name.startswith(PREFIX):
            out[name[len(PREFIX) :]] = json.loads(value)
    if not out:
        raise GraphMedError(f"'{path}' has no graphmed metadata; was it written by export?")
    return out


class _Job:
    """One export: the checked cohort, the column schema, and the chunks."""

    def __init__(self, model, cohort, per_modality, device, batch_size, max_missing_features):
        if batch_size < 1:
            raise GraphMedError(
                f"batch_size must be a positive number of patients, got {batch_size}"
            )
        from ..data.stream import CohortStream

        self.model = _as_trained(model)
        self.stream = cohort if isinstance(cohort, CohortStream) else None
        self.max_missing_features = max_missing_features
        if self.stream is not None:
            # The schema, the labels and the compatibility report come from the first chunk.
            self._chunks = iter(self.stream)  # read once: the first chunk is kept below
            cohort = next(self._chunks, None)
            if cohort is None:
                raise GraphMedError(f"{self.stream}: patients.csv has no patient to export")
        elif not isinstance(cohort, Cohort):
            from ..data.io import read_cohort

            cohort = read_cohort(cohort)
        self.cohort, self.report = self.model.check(
            cohort, max_missing_features=max_missing_features
        )
        self.n_patients = len(self.stream) if self.stream is not None else cohort.n_patients
        self.per_modality, self.device, self.batch_size = per_modality, device, batch_size
        net = self.model.model.net
        self.modalities = list(net.modalities)
        self.dim = int(net.d)
        self.prompted = net.completion is not None
        self.labels = [c for c in self.cohort.labels if c in self.cohort.patients.columns]
        self.path_columns = [
            "att_path_" + RelationGraph.metapath_name(p)
            for p in (net.metapaths if net.metapath is not None else [])
        ]
        self.schema = self._schema()

    # ------------------------------------------------------------- columns
    def _schema(self) -> pa.Schema:
        f32 = pa.float32()
        fields = [
            pa.field("patient_id", pa.string()),
            pa.field("time", pa.float64()),
            pa.field("event", pa.int64()),
        ]
        label_schema = pa.Schema.from_pandas(
            self.cohort.patients[self.labels], preserve_index=False
        )
        fields += [pa.field(f"label_{f.name}", f.type) for f in label_schema]
        fields += [pa.field(f"emb_{j}", f32) for j in range(self.dim)]
        if self.per_modality:
            fields += [
                pa.field(f"{m}_emb_{j}", f32) for m in self.modalities for j in range(self.dim)
            ]
        fields += [pa.field(f"present_{m}", pa.bool_()) for m in self.modalities]
        fields += [pa.field(f"completed_{m}", pa.bool_()) for m in self.modalities]
        for name, head in self.model.model.heads.items():
            columns = head.export_columns(name, self._classes(name))
            fields += [pa.field(c, f32) for c in columns]
        fields += [pa.field(f"att_mod_{m}", f32) for m in self.modalities]
        fields += [pa.field(c, f32) for c in self.path_columns]
        names = [f.name for f in fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise GraphMedError(
                f"export columns {dup} would appear twice; rename the label or modality "
                "that produces them"
            )
        return pa.schema(fields)

    def _classes(self, name: str) -> list | None:
        """The classes of a classification head named ``name`` (``None`` for the others)."""
        return self.model.fitted.label_classes.get(name)

    def _columns(self, sub: Cohort, graphs: PatientGraphs, preds: Predictions) -> dict:
        cols: dict[str, Any] = {
            "patient_id": pa.array(preds.patient_ids, pa.string()),
            "time": sub.time,
            "event": sub.event,
        }
        for c in self.labels:
            cols[f"label_{c}"] = sub.patients[c].to_numpy()
        cols.update(_split("emb_", preds.embedding))
        if self.per_modality:
            for j, m in enumerate(self.modalities):
                cols.update(_split(f"{m}_emb_", preds.modality_embeddings[:, j]))
        present = graphs.present.cpu().numpy()
        completed = preds.completed.astype(bool) & self.prompted
        for j, m in enumerate(self.modalities):
            cols[f"present_{m}"] = present[:, j]
        for j, m in enumerate(self.modalities):
            cols[f"completed_{m}"] = completed[:, j]
        for name, head in self.model.model.heads.items():
            cols.update(head.export_values(name, self._classes(name), preds))
        for j, m in enumerate(self.modalities):
            cols[f"att_mod_{m}"] = preds.modality_attention[:, j]
        for j, c in enumerate(self.path_columns):
            cols[c] = preds.metapath_attention[:, j]
        return cols

    # -------------------------------------------------------------- chunks
    def tables(self, chunk_size: int, progress: bool) -> Iterator[pa.Table]:
        """One Arrow table per chunk of ``chunk_size`` patients, in cohort order."""
        from tqdm.auto import tqdm

        if chunk_size < 1:
            raise GraphMedError(
                f"chunk_size must be a positive number of patients, got {chunk_size}"
            )
        bar = tqdm(
            total=self.n_patients,
            desc="export",
            unit="patient",
            disable=not (progress and sys.stderr.isatty()),
            leave=False,
        )
        with bar:
            for cohort in self._cohorts():
                ids = cohort.patient_ids
                for start in range(0, len(ids), chunk_size):
                    part = ids[start : start + chunk_size]
                    sub = cohort if len(part) == len(ids) else cohort.subset(part)
                    graphs = self.model.graphs(sub, check=False)
                    preds = self.model.predict_graphs(graphs, self.device, self.batch_size)
                    cols = self._columns(sub, graphs, preds)
                    yield pa.Table.from_pydict(cols, schema=self.schema)
                    bar.update(len(part))

    def _cohorts(self) -> Iterator[Cohort]:
        """The checked cohort, or each checked chunk of a :class:`CohortStream`."""
        if self.stream is None:
            yield self.cohort
            return
        yield self.cohort  # the first chunk, read and checked in __init__
        for chunk in self._chunks:
            with warnings.catch_warnings():  # the first chunk's check has said it
                warnings.simplefilter("ignore")
                checked, _ = self.model.check(chunk, max_missing_features=self.max_missing_features)
            yield checked

    # ------------------------------------------------------------ metadata
    def metadata(self) -> dict[str, Any]:
        info, net = self.model.info, self.model.model.net
        heads = {}
        for name, head in self.model.model.heads.items():
            heads[name] = head.describe(self._classes(name))
        paths = [
            {"column": c, "path": [list(step) for step in p]}
            for c, p in zip(self.path_columns, net.metapaths)
        ]
        return {
            "version": __version__,
            "model_version": info.get("graphmed_version"),
            "config_hash": info.get("config_hash") or config_hash(self.model.config),
            "training_cohort": info.get("training_cohort"),
            "model_created": info.get("created"),
            "modality_specs": self.model.modality_specs(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cohort": self.cohort.name,
            "n_patients": self.n_patients,
            "embedding_dim": self.dim,
            "per_modality": self.per_modality,
            "modalities": self.modalities,
            "metapaths": paths,
            "heads": heads,
            "compatibility": self.report.to_dict(),
        }

    def encoded_metadata(self) -> dict[bytes, bytes]:
        return {
            (PREFIX + k).encode(): json.dumps(v, default=_jsonable).encode()
            for k, v in self.metadata().items()
        }


def _as_trained(model) -> TrainedModel:
    if isinstance(model, TrainedModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    fitted = getattr(model, "model_", None)  # a fitted GraphMedSurvival / GraphMedClassifier
    if isinstance(fitted, TrainedModel):
        return fitted
    raise GraphMedError(
        f"expected a TrainedModel, a fitted estimator or a model folder, got {type(model).__name__}"
    )


def _split(prefix: str, matrix: np.ndarray) -> dict[str, np.ndarray]:
    cols = np.ascontiguousarray(np.asarray(matrix, np.float32).T)  # one contiguous row per column
    return {f"{prefix}{j}": cols[j] for j in range(len(cols))}
