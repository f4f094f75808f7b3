"""Write a synthetic cohort folder of any size, chunk by chunk, with bounded memory.

For benchmarks and tests of :class:`~graphmed.data.stream.CohortStream`: the
patients are drawn ``chunk_size`` at a time by
:func:`~graphmed.data.synthetic.make_synthetic_cohort` (seed ``seed + k`` for
chunk ``k``) and appended to ``patients.csv``, to one Parquet file per table
modality (one row group per chunk, in patient order) and to one ``.npy`` file
per bag, so memory follows ``chunk_size`` whatever ``n_patients`` is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

from .._atomic import atomic_path, write_text
from ..errors import ConfigError
from .io import CONFIG, PATIENTS

LARGE_MODALITIES = {"clinical": ("tabular", 8), "expr": ("vector", 64), "wsi": ("bag", 16)}


def write_large_cohort(
    path: str | os.PathLike,
    n_patients: int,
    *,
    chunk_size: int = 50_000,
    modalities: dict[str, tuple[str, int]] | None = None,
    missing: dict[str, float] | None = None,
    bag_size: tuple[int, int] = (4, 16),
    seed: int = 0,
    name: str = "large",
) -> Path:
    """Write a synthetic cohort of ``n_patients`` patients as a cohort folder at ``path``.

    Args:
        path: The folder to create (must not exist, or be empty).
        n_patients: Patients in all (ids ``P0000000`` ... in file order).
        chunk_size: Patients drawn and written at once.
        modalities: Name -> ``(kind, width)`` of tabular, vector and bag
            modalities (default :data:`LARGE_MODALITIES`).
        missing: Modality -> missing rate (default: ``expr`` 0.3, bag 0.9, so
            that one patient in ten has a bag file).
        bag_size, seed, name: As for ``make_synthetic_cohort``.

    Returns:
        The folder, readable by ``read_cohort`` and ``CohortStream``; tables are
        Parquet, categorical columns stored as strings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .synthetic import make_synthetic_cohort

    mods = dict(modalities or LARGE_MODALITIES)
    kinds = {m: k for m, (k, _) in mods.items()}
    if any(k not in ("tabular", "vector", "bag") for k in kinds.values()):
        raise ConfigError(
            f"modalities: write_large_cohort writes tabular, vector and bag, got {kinds}"
        )
    if n_patients < 1 or chunk_size < 1:
        raise ConfigError(
            f"n_patients and chunk_size must be positive, got {n_patients}, {chunk_size}"
        )
    if missing is None:
        missing = {m: (0.9 if k == "bag" else 0.3) for m, k in kinds.items() if m != "clinical"}
    root = Path(path)
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root}: exists and is not empty; give a new folder")
    root.mkdir(parents=True, exist_ok=True)
    writers: dict[str, pq.ParquetWriter] = {}
    relations = None
    width = len(str(n_patients - 1))
    try:
        with atomic_path(root / PATIENTS) as patients_tmp:
            for k, start in enumerate(range(0, n_patients, chunk_size)):
                n = min(chunk_size, n_patients - start)
                chunk = make_synthetic_cohort(
                    max(n, 2), mods, missing=missing, seed=seed + k, bag_size=bag_size
                )
                ids = [f"P{start + i:0{width}d}" for i in range(n)]
                rename = dict(zip(chunk.patient_ids[:n], ids))
                relations = relations or [list(r) for r in chunk.relations]
                patients = chunk.patients.iloc[:n].rename(index=rename)
                patients.index.name = "patient_id"
                patients[["time", "event"]].to_csv(patients_tmp, mode="a", header=k == 0)
                # cohort.yaml, written last, marks the folder complete.
                for mod, kind in kinds.items():
                    values = chunk.data[mod]
                    if kind == "bag":
                        folder = root / mod
                        folder.mkdir(exist_ok=True)
                        for old, arr in values.items():
                            if old in rename and len(arr):
                                np.save(folder / f"{rename[old]}.npy", arr)
                        continue
                    frame = values.loc[values.index.isin(list(rename))].rename(index=rename)
                    for c in frame.columns[frame.dtypes == "category"]:  # as strings, NaN kept
                        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
                    frame.index.name = "patient_id"
                    table = pa.Table.from_pandas(frame.reset_index(), preserve_index=False)
                    if mod not in writers:
                        writers[mod] = pq.ParquetWriter(root / f"{mod}.parquet", table.schema)
                    writers[mod].write_table(table.cast(writers[mod].schema))
    finally:
        for w in writers.values():
            w.close()
    conf = {
        "name": name,
        "modalities": {
            m: {"kind": k, "path": m if k == "bag" else f"{m}.parquet"} for m, k in kinds.items()
        },
        "relations": relations or [],
    }
    write_text(root / CONFIG, yaml.safe_dump(conf, sort_keys=False))
    return root
