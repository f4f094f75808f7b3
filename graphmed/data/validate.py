"""Validation of a cohort, with messages that name the file, column and patient.

:func:`validate_cohort` checks an in-memory :class:`~graphmed.data.cohort.Cohort`;
the folder reader (:mod:`graphmed.data.io`) calls it with ``sources`` so that
messages point at the file to fix. :func:`coerce_endpoints` checks and converts
the survival columns of a patients table (time -> float64, event -> int64).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import CohortError, CohortWarning, did_you_mean

if TYPE_CHECKING:
    from .cohort import Cohort

PATIENT = "{patient_id}"
"""Placeholder of a bag source template, e.g. ``"wsi/{patient_id}.npy"``."""

_EVENT_CODES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}

LIMIT = 1e30
"""Largest magnitude a feature may have: beyond it a value is a corrupted cell (a garbled
Parquet page gave 6.5e303), and standardising it overflows float32."""

_DECIMAL_COMMA = r"^\s*[+-]?\d+,\d+\s*$"


class _Where:
    """Names of the things a message is about: a file when known, else a description.

    ``sources`` maps ``"patients"``, a modality name or ``"config"`` to a file
    name; a bag's source may be a template holding ``{patient_id}``.
    """

    def __init__(self, sources: Mapping[str, str] | None, part: bool = False) -> None:
        self.sources = dict(sources or {})
        self.is_file = bool(self.sources)
        self.part = part  # a chunk of a cohort: checks of the whole cohort do not apply

    def table(self, name: str) -> str:
        src = self.sources.get(name)
        if src is None:
            return "patients" if name == "patients" else f"modality '{name}'"
        return src.split(PATIENT)[0] if PATIENT in src else src

    def item(self, name: str, pid: str) -> str:
        src = self.sources.get(name)
        if src and PATIENT in src:
            return src.replace(PATIENT, pid)
        return f"{self.table(name)}, patient '{pid}'"

    def config(self, what: str) -> str:
        src = self.sources.get("config")
        return f"{src}: {what}" if src else what


def validate_cohort(
    cohort: Cohort, sources: Mapping[str, str] | None = None, *, part: bool = False
) -> None:
    """Raise :class:`CohortError` naming the first problem found in ``cohort``.

    Args:
        cohort: The cohort to check.
        sources: Optional ``"patients"`` / modality name / ``"config"`` -> file
            name, used in messages (a bag's may be ``"wsi/{patient_id}.npy"``).
            Without it messages say ``patients`` and ``modality 'x'``.
        part: ``cohort`` is a chunk of a larger cohort (a streamed read): the
            checks that only hold for a whole cohort (some event, more than
            one time, every modality held by someone) are skipped.
    """
    where = _Where(sources, part)
    pats = cohort.patients
    check_patient_ids(pats.index, where.table("patients"), where.is_file)
    time, event = coerce_endpoints(pats, where.table("patients"))
    if int(event.sum()) == 0 and not part:
        raise CohortError(
            f"{where.table('patients')}: the survival endpoint has no events (event is 0 for "
            f"all {len(pats)} patients); a survival model needs at least one observed event. "
            "Check the event coding: 1 = event observed, 0 = censored."
        )
    if len(time) > 1 and time.nunique() == 1 and not part:
        raise CohortError(
            f"{where.table('patients')}: every patient has the same time ({show(time.iloc[0])} for "
            f"all {len(time)} patients), so no two can be ordered: a survival model cannot "
            "learn from them and a C-index cannot be computed. Check the time column (an "
            "export that wrote 0 or one constant for every patient?)."
        )
    for label in cohort.labels:
        if label not in pats.columns or label in ("time", "event"):
            config = where.sources.get("config")
            named = f"{config} endpoints.labels" if config else "labels"
            raise CohortError(
                f"{where.table('patients')}: label column '{label}' (named in {named}) is "
                f"missing; found columns {list(pats.columns)}.{did_you_mean(label, pats.columns)}"
            )
    if set(cohort.data) != set(cohort.modalities):
        raise CohortError(
            f"the cohort's data {sorted(cohort.data)} and modalities {sorted(cohort.modalities)} "
            "name different modalities; give every modality both a spec and data."
        )
    for mod, spec in cohort.modalities.items():
        if spec.kind == "bag":
            _check_bag(mod, cohort.data[mod], pats.index, where)
        elif spec.kind == "graph":
            from .graph_kind import check_graph_modality

            check_graph_modality(mod, cohort.data[mod], pats.index, where)
        elif spec.kind == "text":
            from .text_kind import check_text_modality

            check_text_modality(mod, cohort.data[mod], pats.index, where)
        else:
            _check_table(mod, spec.kind, spec.options, cohort.data[mod], pats.index, where)
            frame = cohort.data[mod]
            check_no_endpoints(frame, where.table(mod), ["time", "event", *cohort.labels])
            _check_time_copy(frame, time, where.table(mod))
            _check_magnitudes(frame, where.table(mod))
    _check_relations(cohort.relations, list(cohort.modalities), where)


def check_no_endpoints(frame: pd.DataFrame, name: str, endpoints: list[str]) -> None:
    """Refuse a modality column named like an endpoint or label (label leakage).

    Args:
        frame: The modality table.
        name: The table's name in messages (its file).
        endpoints: Column names of the time, the event and the labels.
    """
    for col in frame.columns:
        if col in endpoints:
            raise CohortError(
                f"{name}: column '{col}' is an endpoint (survival time, event or label) of the "
                "patients; a modality that holds it feeds the answer to the model (label "
                "leakage). Remove the column from the modality; endpoints belong in patients.csv."
            )


def _check_time_copy(frame: pd.DataFrame, time: pd.Series, name: str) -> None:
    """Refuse a numeric column that repeats the survival time (label leakage)."""
    rows = time.reindex(frame.index)
    for col in frame.columns:
        values = frame[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        both = values.notna() & rows.notna()
        if both.sum() >= 5 and values[both].nunique() > 1:
            if np.allclose(values[both].to_numpy(np.float64), rows[both].to_numpy(np.float64)):
                raise CohortError(
                    f"{name}: column '{col}' equals the survival time of every patient who has "
                    "it; a modality that holds the endpoint feeds the answer to the model "
                    "(label leakage). Remove the column from the modality."
                )


def _check_magnitudes(frame: pd.DataFrame, name: str) -> None:
    """Refuse inf and values beyond :data:`LIMIT` in the numeric columns of a table."""
    num = frame.select_dtypes(include="number")
    if num.empty:
        return
    values = num.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isnan(values) & ~(np.abs(values) <= LIMIT)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        value = float(values[r, c])
        what = "is infinite" if np.isinf(value) else f"is {value:g}, beyond 1e30 in magnitude,"
        raise CohortError(
            f"{name}: column '{num.columns[c]}' {what} for patient '{num.index[r]}' (got "
            f"{value!r}); expected a finite number of at most 1e30 in magnitude (one inf turns "
            "the column's statistics into inf/NaN for every patient). Fix the cell, or leave "
            "it empty for a missing value."
        )


def warn_sparse_rows(frame: pd.DataFrame, name: str, in_file: bool = False) -> None:
    """Warn about present rows with more than half of their cells empty (3 columns or more).

    A truncated CSV line, or a row shifted by a stray separator, reads as a
    row whose last cells are empty; preprocessing would impute them silently.
    """
    if frame.shape[1] < 3:
        return
    empty = frame.isna().to_numpy()
    counts = empty.sum(axis=1)
    sparse = np.flatnonzero((counts < frame.shape[1]) & (counts > frame.shape[1] / 2))
    if not len(sparse):
        return
    i = int(sparse[0])
    line = f", line {i + 2}" if in_file else ""
    warnings.warn(
        f"{name}: {len(sparse)} patient row(s) have more than half of their cells empty, e.g. "
        f"'{frame.index[i]}' ({int(counts[i])} of {frame.shape[1]} empty{line}); a truncated or "
        "misaligned row looks like this, and its empty cells would be imputed. Check the file "
        "(or ignore this if the values are really missing).",
        CohortWarning,
        stacklevel=3,
    )


def check_numeric_cells(
    frame: pd.DataFrame, name: str, categorical: list[str] | None, skip: set[str]
) -> None:
    """Refuse text cells in the numeric columns of a tabular modality read from a file.

    A column is read as numbers when ``options.categorical`` is given and
    leaves it out, or when most of its cells are numbers: there a cell such as
    ``'abc'`` or ``'57,0'`` (a decimal comma) would be imputed as missing, or
    turn the whole column into categories. (A vector modality's columns are
    checked by :func:`validate_cohort`.)

    Args:
        frame: The table, indexed by patient.
        name: Its file name, for messages.
        categorical: ``options.categorical`` (None: not given).
        skip: Columns whose dtype ``cohort.yaml`` records (read as they say).
    """
    for col in frame.columns:
        values = frame[col]
        if (
            col in skip
            or (categorical is not None and col in categorical)
            or pd.api.types.is_numeric_dtype(values)
            or isinstance(values.dtype, pd.CategoricalDtype)
        ):
            continue
        present = values[values.notna()]
        if present.empty:
            continue
        odd = pd.to_numeric(present, errors="coerce").isna()
        comma = present.astype(str).str.match(_DECIMAL_COMMA)
        numeric_like = float((~odd | comma).mean())
        if categorical is None and numeric_like < 0.5:
            continue  # a text column: categories
        if not odd.any():
            continue
        pid = odd.index[odd.to_numpy().argmax()]
        cell = present[pid]
        why = (
            "it is not in options.categorical, so it is read as numbers"
            if categorical is not None
            else f"{numeric_like:.0%} of its cells are numbers, so it is read as numbers"
        )
        point = _with_point(cell)
        fix = (
            f"it has a decimal comma: write {point}"
            if point
            else "fix the cell (leave it empty for a missing value)"
        )
        raise CohortError(
            f"{name}: column '{col}' holds {show(cell)} for patient '{pid}', which is not a "
            f"number, but {why}; {fix}, or list the column in "
            "options.categorical if it holds categories."
        )


def _with_point(cell: object) -> str | None:
    """``'57,0'`` -> ``'57.0'``: a number written with a decimal comma; else None."""
    text = str(cell).strip()
    return text.replace(",", ".") if re.match(_DECIMAL_COMMA, text) else None


def coerce_endpoints(
    patients: pd.DataFrame, where: str = "patients", time: str = "time", event: str = "event"
) -> tuple[pd.Series, pd.Series]:
    """Check the survival columns of ``patients`` and return them as float64 / int64.

    ``time`` must be a finite number >= 0 and at most 1e30 for every patient (larger
    values are corrupted cells, and overflow the survival fits); ``event`` must be
    0 (censored) or 1 (event observed); True/False and "0"/"1" are accepted.

    Raises:
        CohortError: naming ``where``, the column and the first bad patient.
    """
    for col in (time, event):
        if col not in patients.columns:
            raise CohortError(
                f"{where}: missing required column '{col}'; found {list(patients.columns)[:8]}."
                f"{did_you_mean(col, patients.columns)}"
            )
    raw = patients[time]
    if raw.dtype == bool:
        t = pd.Series(np.nan, index=raw.index)
    else:
        t = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    checks = [
        (raw.notna() & t.isna(), "is not a number"),
        (raw.isna(), "is empty (NaN)"),
        (np.isinf(t), "is infinite"),
        (t < 0, "is negative"),
        (t > LIMIT, f"is beyond {LIMIT:g} (a corrupted cell: no follow-up is that long)"),
    ]
    for bad, what in checks:
        if bad.any():
            pid = bad.index[bad.to_numpy().argmax()]
            raise CohortError(
                f"{where}: column '{time}' {what} for patient '{pid}' (got {show(raw[pid])}); "
                "expected a finite follow-up time >= 0. Fix the value or drop the patient."
            )
    e = patients[event]
    if e.dtype == bool:
        codes = e.astype(np.int64)
    else:
        if pd.api.types.is_numeric_dtype(e):
            codes = e.where(e.isin([0, 1]))
        else:
            codes = e.map(lambda v: _EVENT_CODES.get(str(v).strip().lower()))
        bad = codes.isna()
        if bad.any():
            pid = bad.index[bad.to_numpy().argmax()]
            raise CohortError(
                f"{where}: column '{event}' must be 0 (censored) or 1 (event observed), got "
                f"{show(e[pid])} for patient '{pid}'. Recode it to 0/1 (True/False are accepted)."
            )
        codes = codes.astype(np.int64)
    return t, codes


def show(value: object) -> str:
    """``repr`` of a value, with numpy scalars shown as Python ones (``2``, not ``np.int64(2)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def check_patient_ids(index: pd.Index, name: str, in_file: bool = False) -> None:
    """Raise :class:`CohortError` if ``index`` has an empty or a duplicate patient id.

    ``in_file``: report line numbers of a file with a header line, not positions.
    """
    missing = index.isna() | (index.astype(str).str.strip() == "")
    if missing.any():
        raise CohortError(
            f"{name}: empty patient_id at {_rows(np.flatnonzero(missing), in_file)}; "
            "every row needs a patient id."
        )
    dup = index.duplicated(keep=False)
    if dup.any():
        pid = index[dup][0]
        at = np.flatnonzero(index == pid)
        raise CohortError(
            f"{name}: patient id '{pid}' appears {len(at)} times ({_rows(at, in_file)}); "
            "expected one row per patient. Remove or merge the duplicate rows."
        )


def _rows(positions: np.ndarray, in_file: bool) -> str:
    if in_file:
        return "lines " + ", ".join(str(p + 2) for p in positions[:5])
    return "positions " + ", ".join(str(p) for p in positions[:5])


def _check_unknown(ids: pd.Index, known: pd.Index, name: str, where: _Where) -> None:
    unknown = ids[~ids.isin(known)]
    if len(unknown):
        patients = where.table("patients")
        raise CohortError(
            f"{name}: {len(unknown)} patient id(s) are not in {patients}, e.g. "
            f"{[str(p) for p in unknown[:3]]}.{did_you_mean(unknown[0], known[:5000])} "
            f"Add them to {patients} or remove their data."
        )


def _check_table(mod, kind, options, frame, known: pd.Index, where: _Where) -> None:
    name = where.table(mod)
    if not isinstance(frame, pd.DataFrame):
        raise CohortError(
            f"{name}: a {kind} modality holds a DataFrame indexed by patient_id, got "
            f"{type(frame).__name__}. Use kind 'bag' for a dict of arrays."
        )
    check_patient_ids(frame.index, name, where.is_file)
    bad_names = [c for c in frame.columns if not isinstance(c, str) or not c]
    if bad_names:
        raise CohortError(
            f"{name}: column names must be non-empty strings, got {bad_names[0]!r}. "
            "Rename the columns, e.g. frame.columns = [f'f{i}' for i in range(n)]."
        )
    dup = frame.columns[frame.columns.duplicated()]
    if len(dup):
        raise CohortError(f"{name}: column '{dup[0]}' appears more than once; rename one of them.")
    _check_unknown(frame.index, known, name, where)
    if kind == "vector":
        for col in frame.columns:
            values = frame[col]
            if not pd.api.types.is_numeric_dtype(values):
                odd = values.notna() & pd.to_numeric(values, errors="coerce").isna()
                came = ""
                if odd.any():
                    pid = values.index[odd.to_numpy().argmax()]
                    came = f": {show(values[pid])} for patient '{pid}'"
                fix = "Make it a tabular modality or encode it."
                point = _with_point(values[pid]) if odd.any() else None
                if point:
                    fix = f"It has a decimal comma: write {point}."
                raise CohortError(
                    f"{name}: column '{col}' is not numeric (dtype {values.dtype}){came}; a "
                    f"vector modality holds numbers only. {fix}"
                )
    categorical = options.get("categorical") or []
    missing = [c for c in categorical if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{name}: options.categorical names column '{missing[0]}', which the table does "
            f"not have.{did_you_mean(missing[0], frame.columns)}"
        )
    if not where.part and not frame.notna().any(axis=1).any():
        raise CohortError(
            f"{name}: modality '{mod}' has no patients at all (no row with a value); expected "
            "at least one. Add its data or remove the modality."
        )


def check_patient_dict(mod, value, known: pd.Index, where: _Where, kind: str, holds: str) -> str:
    """Check that a bag or graph modality is a dict of known patients; return its name.

    Args:
        kind: The modality's kind, and ``holds`` what the dict maps each
            patient to, for the message.
    """
    name = where.table(mod)
    if not isinstance(value, Mapping):
        raise CohortError(
            f"{name}: a {kind} modality holds a dict patient_id -> {holds}, got "
            f"{type(value).__name__}. Use kind 'tabular' or 'vector' for a DataFrame."
        )
    _check_unknown(pd.Index(list(value), dtype=object), known, name, where)
    return name


def _check_bag(mod, bag, known: pd.Index, where: _Where) -> None:
    name = check_patient_dict(mod, bag, known, where, "bag", "(N, d) array")
    for pid, arr in bag.items():
        if not isinstance(arr, np.ndarray) or arr.ndim != 2:
            came = f"shape {arr.shape}" if hasattr(arr, "shape") else type(arr).__name__
            raise CohortError(
                f"{where.item(mod, pid)}: expected a 2-D array (instances x features), got "
                f"{came}. Reshape a single vector to (1, d)."
            )
        if arr.dtype != np.float32:
            hint = (
                "convert it with arr.astype(np.float32)"
                if arr.dtype.kind in "biuf"
                else "a bag holds numeric features"
            )
            raise CohortError(
                f"{where.item(mod, pid)}: expected a float32 array, got dtype {arr.dtype}; {hint}."
            )
        bad = ~(np.abs(arr) <= LIMIT)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            value = float(arr[i, j])
            what = "NaN" if np.isnan(value) else "inf" if np.isinf(value) else f"{value:g}"
            raise CohortError(
                f"{where.item(mod, pid)}: holds {what} at instance {i}, feature {j} (patient "
                f"'{pid}'); expected finite features of at most 1e30 in magnitude (one NaN or "
                "inf poisons the bag statistics of every patient). Re-extract this patient's "
                "features or drop the bad instances."
            )
    widths = Counter(int(a.shape[1]) for a in bag.values())
    if len(widths) > 1:
        width = widths.most_common(1)[0][0]
        pid, arr = next((p, a) for p, a in bag.items() if a.shape[1] != width)
        other = next(p for p, a in bag.items() if a.shape[1] == width)
        raise CohortError(
            f"{where.item(mod, pid)}: expected arrays of width {width} like the other patients' "
            f"(e.g. '{other}'), got shape {arr.shape}. Every array of a bag modality must have "
            "the same number of features; re-extract this patient's features."
        )
    if not where.part and not any(len(a) for a in bag.values()):
        raise CohortError(
            f"{name}: modality '{mod}' has no patients at all (no non-empty array); expected "
            "at least one. Add its data or remove the modality."
        )


def _check_relations(relations, modalities: list[str], where: _Where) -> None:
    for rel in relations:
        if (
            not isinstance(rel, (tuple, list))
            or len(rel) != 3
            or not all(isinstance(x, str) and x for x in rel)
        ):
            raise CohortError(
                where.config(
                    f"relation {rel!r}: expected [source, relation, target], three names, "
                    "e.g. ['wsi', 'expresses', 'omics']."
                )
            )
        for mod in (rel[0], rel[2]):
            if mod not in modalities:
                raise CohortError(
                    where.config(
                        f"relation {list(rel)}: unknown modality '{mod}'."
                        f"{did_you_mean(mod, modalities)} The cohort's modalities are "
                        f"{modalities}."
                    )
                )
