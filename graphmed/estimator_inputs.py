"""What scikit-learn users hand the estimators, turned into a :class:`Cohort`.

``X`` is one of:

* a :class:`Cohort` (``y`` must be ``None``: the cohort holds the endpoints);
* a dict of modality frames (and bag / graph dicts) indexed by ``patient_id``,
  with ``y`` the patients frame (``patient_id``, ``time``, ``event`` [, labels]);
* one wide DataFrame (or 2-d array), one row per patient, whose columns are
  grouped into modalities by ``modalities={name: [columns] | "prefix"}``.
  Columns in no group form one more modality, ``clinical``
  (:data:`DEFAULT_MODALITY`); a row whose cells of a modality are all empty
  means the patient lacks that modality.

``y`` is a structured array from ``sksurv.util.Surv.from_arrays`` (its bool
field is the event, its numeric field the time), a frame with ``time`` and
``event`` columns (rows in the order of ``X``, or with a ``patient_id`` column
that matches ``X``'s ids), or for the classifier 1-d labels.

Patient ids of a wide frame are ``X``'s index (as strings) when it is unique,
else ``row0``, ``row1``, .. by position; fit and predict use the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .data.cohort import Cohort
from .errors import GraphMedError, did_you_mean

DEFAULT_MODALITY = "clinical"
Groups = Mapping[str, Sequence[Any] | str]


def group_columns(columns: pd.Index, modalities: Groups | None) -> dict[str, list[Any]]:
    """Modality name -> columns of ``X``, in ``X``'s order; uncovered columns go to
    :data:`DEFAULT_MODALITY`.

    Raises:
        GraphMedError: an unknown column, a prefix that matches nothing, a column
            in two groups, or uncovered columns while ``clinical`` is already a group.
    """
    cols = list(columns)
    if len(set(map(str, cols))) != len(cols):
        dup = pd.Index(map(str, cols))
        raise GraphMedError(
            f"X has duplicate column names {sorted(set(dup[dup.duplicated()]))[:5]}; "
            "give every column of X its own name"
        )
    if modalities is None:
        modalities = {}
    if not isinstance(modalities, Mapping):
        raise GraphMedError(
            "modalities must be a dict of modality name -> list of columns or a column-name "
            f"prefix, e.g. {{'expression': 'X'}}; got {type(modalities).__name__}"
        )
    owner: dict[Any, str] = {}
    groups: dict[str, list[Any]] = {}
    for name, spec in modalities.items():
        if isinstance(spec, str):
            chosen = [c for c in cols if str(c).startswith(spec)]
            if not chosen:
                raise GraphMedError(
                    f"modalities['{name}']: no column of X starts with '{spec}'; X has "
                    f"columns {cols[:8]}. Fix the prefix or list the columns."
                )
        else:
            chosen = list(np.atleast_1d(np.asarray(spec, dtype=object)))
            unknown = [c for c in chosen if c not in set(cols)]
            if unknown:
                raise GraphMedError(
                    f"modalities['{name}']: X has no column {unknown[:5]}; X has columns "
                    f"{cols[:8]}.{did_you_mean(unknown[0], cols)}"
                )
            if not chosen:
                raise GraphMedError(f"modalities['{name}'] lists no columns; give it at least one")
        for c in chosen:
            if c in owner:
                raise GraphMedError(
                    f"column '{c}' of X is in modalities '{owner[c]}' and '{name}'; "
                    "put every column in one modality only"
                )
            owner[c] = str(name)
        groups[str(name)] = chosen
    rest = [c for c in cols if c not in owner]
    if rest and DEFAULT_MODALITY in groups:
        raise GraphMedError(
            f"columns {rest[:5]} of X are in no modality, and '{DEFAULT_MODALITY}' (where "
            "such columns go) is already a group; add them to a modality or drop them from X"
        )
    if rest:
        groups[DEFAULT_MODALITY] = rest
    return {m: [c for c in cols if c in set(g)] for m, g in groups.items()}


def frame_ids(index: pd.Index) -> list[str]:
    """Patient ids of a wide frame: its index as strings when unique, else ``row<i>``."""
    ids = index.astype(str)
    if index.hasnans or not ids.is_unique or (ids.str.strip() == "").any():
        return [f"row{i}" for i in range(len(index))]
    return list(ids)


def y_frame(y: Any, label: str | None = None) -> pd.DataFrame | None:
    """``y`` as a frame with ``time``/``event`` (and ``label``, ``patient_id``) columns."""
    if y is None:
        return None
    if isinstance(y, pd.DataFrame):
        frame = y.reset_index() if y.index.name == "patient_id" else y.copy()
        if "time" not in frame.columns and "event" not in frame.columns:
            found = _endpoint_fields({c: frame[c].dtype for c in frame.columns if c != label})
            if found is not None:
                frame = frame.rename(columns={found[0]: "event", found[1]: "time"})
        return frame
    arr = np.asarray(y)
    if arr.dtype.names:
        found = _endpoint_fields({n: arr.dtype[n] for n in arr.dtype.names})
        if found is None:
            raise GraphMedError(
                "y: expected a structured array with one bool field (the event) and one "
                "numeric field (the time), as sksurv.util.Surv.from_arrays(event, time) makes; "
                f"got fields {[(n, str(arr.dtype[n])) for n in arr.dtype.names]}"
            )
        return pd.DataFrame({"time": arr[found[1]], "event": arr[found[0]].astype(np.int64)})
    if label is not None and arr.ndim == 1:
        return pd.DataFrame({label: arr})
    want = f"1-d labels for '{label}'" if label else "a structured array (Surv.from_arrays)"
    raise GraphMedError(
        f"y: expected {want} or a DataFrame with time and event columns; got "
        f"{type(y).__name__} of shape {getattr(arr, 'shape', '?')}"
    )


def _endpoint_fields(dtypes: Mapping[str, Any]) -> tuple[str, str] | None:
    """(event field, time field): the one bool and the one other numeric field."""
    flags = [n for n, t in dtypes.items() if pd.api.types.is_bool_dtype(t)]
    times = [
        n
        for n, t in dtypes.items()
        if pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)
    ]
    if len(flags) == 1 and len(times) == 1:
        return flags[0], times[0]
    return None


def as_cohort(
    X: Any,
    y: Any = None,
    *,
    groups: Mapping[str, list[Any]] | None = None,
    kinds: Mapping[str, str] | None = None,
    label: str | None = None,
    endpoints: bool = True,
) -> Cohort:
    """The :class:`Cohort` of ``X`` and ``y`` (see the module docstring).

    Args:
        groups: Modality -> columns of a wide ``X`` (:func:`group_columns`).
        kinds: Modality -> kind, to read new data as the fitted model did.
        label: Label column that ``y`` carries (classifier).
        endpoints: Whether ``y`` must hold time and event (with at least one
            event). Where not (predict, a classifier without a survival loss),
            missing endpoints get placeholders that nothing reads.
    """
    if isinstance(X, Cohort):
        if y is not None:
            raise GraphMedError(
                "X is a Cohort, which holds the endpoints and labels already; pass y=None"
            )
        return X
    patients = y_frame(y, label)
    labels = [label] if label is not None and patients is not None else []
    if isinstance(X, Mapping):
        if patients is None:
            if endpoints:
                raise GraphMedError(
                    "X is a dict of modality frames, so y must be the patients frame "
                    "(patient_id, time, event); or pass graphmed.read_cohort(path)"
                )
            patients = pd.DataFrame({"patient_id": _union_ids(X)})
        elif "patient_id" not in patients.columns:
            raise GraphMedError(
                "X is a dict of modality frames, so y needs a patient_id column (or index) "
                "to match its rows; or pass one wide DataFrame X with y in its row order"
            )
        return Cohort.from_frames(_fill(patients, endpoints), X, kinds=kinds, labels=labels)
    if not isinstance(X, pd.DataFrame):
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise GraphMedError(
                f"X: expected a Cohort, a dict of modality frames or a 2-d table; got "
                f"{type(X).__name__} of shape {arr.shape}"
            )
        X = pd.DataFrame(arr)
    ids = frame_ids(X.index)
    patients = _align(patients, ids, label)
    if groups is None:
        groups = group_columns(X.columns, None)
    missing = [c for cols in groups.values() for c in cols if c not in set(X.columns)]
    if missing:
        raise GraphMedError(
            f"X lacks columns {missing[:5]} that the model was fitted on; pass X with the "
            f"same columns as in fit.{did_you_mean(missing[0], X.columns)}"
        )
    frames = {}
    for mod, cols in groups.items():
        frame = X[list(cols)].copy()
        frame.columns = [str(c) for c in cols]
        frame.index = pd.Index(ids, name="patient_id")
        frames[mod] = frame
    return Cohort.from_frames(_fill(patients, endpoints), frames, kinds=kinds, labels=labels)


def _align(patients: pd.DataFrame | None, ids: list[str], label: str | None) -> pd.DataFrame:
    """Patients in the order of ``ids``: by ``patient_id`` where ``y`` has one, else by row."""
    if patients is None:
        return pd.DataFrame({"patient_id": ids})
    if "patient_id" in patients.columns:
        theirs = patients["patient_id"].astype(str)
        if set(theirs) != set(ids) or len(theirs) != len(ids):
            odd = sorted(set(ids) ^ set(theirs))[:5]
            raise GraphMedError(
                f"y's patient_id column does not match X's index (e.g. {odd}); index X by "
                "the same patient ids, or drop patient_id from y to match rows by position"
            )
        return patients.assign(patient_id=theirs).set_index("patient_id").loc[ids].reset_index()
    if len(patients) != len(ids):
        raise GraphMedError(
            f"X has {len(ids)} rows but y has {len(patients)}; pass one y entry per row of X"
        )
    return patients.reset_index(drop=True).assign(patient_id=ids)


def _fill(patients: pd.DataFrame, endpoints: bool) -> pd.DataFrame:
    if {"time", "event"} <= set(patients.columns):
        if endpoints and not pd.to_numeric(patients["event"], errors="coerce").any():
            raise GraphMedError(
                f"y has no events: all {len(patients)} patients are censored; a survival model "
                "needs at least one observed event (check the event field of y: True or 1 = "
                "event observed)"
            )
        return patients
    if endpoints:
        raise GraphMedError(
            "y: expected the survival time and event (a Surv.from_arrays array, or time and "
            f"event columns); found columns {list(patients.columns)}"
        )
    # Placeholders where no endpoint is needed: a Cohort wants events and more than one
    # time; two alternating values are unlikely to equal a feature column (a leakage check).
    return patients.assign(time=1.0 + 0.5 * (np.arange(len(patients)) % 2), event=1)


def _union_ids(frames: Mapping[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for values in frames.values():
        if isinstance(values, pd.DataFrame):
            keys = values["patient_id"] if "patient_id" in values.columns else values.index
        else:
            keys = values.keys()
        seen.update((str(k), None) for k in keys)
    return list(seen)
