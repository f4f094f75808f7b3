"""The in-memory cohort: patients, their endpoints and their modalities.

A :class:`Cohort` is what :func:`graphmed.read_cohort` returns and what every
later step (preprocessing, graph building, training, export) consumes. On disk
it is the folder format of ``docs/cohort-format.md``.

Conventions, held by every constructor:

* patient ids are strings, the index of ``patients`` is named ``patient_id``;
* ``patients`` has a float ``time`` column and an integer ``event`` column
  (1 = event observed, 0 = censored), plus any label columns;
* a tabular or vector modality is a DataFrame indexed by ``patient_id`` that
  holds rows only for the patients who have it;
* a bag modality is a dict ``patient_id -> float32 array of shape (N, d)``;
* a graph modality is a dict ``patient_id -> ModalityGraph`` (node features
  ``x`` (N, d) float32, ``edge_index`` (2, E) int64, optional ``edge_attr``);
* a text modality is a DataFrame indexed by ``patient_id`` with one column
  ``text`` (a string per patient; empty or NaN: missing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CohortError
from ..typing import FOLDER_KINDS, KINDS, EdgeType
from .graph_kind import ModalityGraph, as_modality_graph
from .text_kind import TEXT, text_present

ModalityData = pd.DataFrame | dict[str, np.ndarray] | dict[str, ModalityGraph]


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality is stored and tokenised.

    Args:
        name: Modality name, used as the node type of patient graphs.
        kind: ``"tabular"``, ``"vector"``, ``"bag"``, ``"graph"`` or ``"text"``.
        path: File (tabular, vector, text) or folder (bag, graph) relative to the
            cohort folder.
        options: Kind-specific options. tabular: ``categorical`` (list of column
            names; default: the non-numeric columns). vector: ``groups`` (dict
            group name -> list of columns) or ``chunk_size`` (default 8), and
            ``max_features`` (variance filter fitted on training patients). bag:
            ``max_instances`` (default 64) and ``pooling`` (``"subsample"`` or
            ``"prototypes"``). graph: ``max_nodes`` (default 256). text:
            ``n_components`` (32), ``max_terms`` (2000), ``min_df`` (2),
            ``ngram_max`` (2).
    """

    name: str
    kind: str
    path: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            from ..errors import did_you_mean

            raise CohortError(
                f"modality '{self.name}' has unknown kind '{self.kind}'; expected one of "
                f"{', '.join(KINDS)}.{did_you_mean(self.kind, KINDS)}"
            )
        if not self.path:
            default = self.name if self.kind in FOLDER_KINDS else f"{self.name}.csv"
            object.__setattr__(self, "path", default)


@dataclass
class Cohort:
    """A cohort of patients with survival endpoints and several modalities.

    Build one with :func:`graphmed.read_cohort`, :meth:`Cohort.from_frames`, a
    dataset recipe or :func:`graphmed.make_synthetic_cohort`.
    """

    name: str
    patients: pd.DataFrame
    modalities: dict[str, ModalitySpec]
    data: dict[str, ModalityData]
    relations: list[EdgeType] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_frames(
        cls,
        patients: pd.DataFrame,
        modalities: Mapping[str, ModalityData],
        *,
        kinds: Mapping[str, str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        relations: Iterable[Sequence[str]] = (),
        labels: Sequence[str] = (),
        name: str = "cohort",
        time: str = "time",
        event: str = "event",
    ) -> Cohort:
        """Build a cohort from pandas frames and arrays, validating it.

        Args:
            patients: One row per patient with a ``patient_id`` column (or
                index), the survival ``time`` and ``event`` columns (names set
                by ``time`` / ``event``) and optional label columns.
            modalities: Modality name -> DataFrame (``patient_id`` column or
                index plus features), dict ``patient_id -> (N, d) array`` (a bag)
                or dict ``patient_id -> graph`` (a :class:`ModalityGraph`, a PyG
                ``Data`` or a dict with ``x``, ``edge_index``[, ``edge_attr``]).
            kinds: Modality name -> kind. Default: ``graph`` for dicts of graphs,
                ``bag`` for other dicts, ``text`` for a frame whose one column is
                ``text``, ``tabular`` for frames with non-numeric columns or at
                most 32 columns, ``vector`` otherwise.
            options: Modality name -> :class:`ModalitySpec` options.
            relations: ``(source, relation, target)`` triples between modalities.
            labels: Columns of ``patients`` that are classification labels.
            name: Cohort name.
            time, event: Column names of the survival endpoint in ``patients``.
        """
        kinds = dict(kinds or {})
        options = dict(options or {})
        pats = _index_by_patient(patients, "patients")
        for col in (time, event):
            if col not in pats.columns:
                raise CohortError(
                    f"patients: missing required column '{col}'; found {list(pats.columns)}. "
                    "Pass time=/event= to name the survival columns."
                )
        from .validate import check_patient_ids, coerce_endpoints

        check_patient_ids(pats.index, "patients")
        pats[time], pats[event] = coerce_endpoints(pats, "patients", time, event)
        pats = pats.rename(columns={time: "time", event: "event"})
        specs: dict[str, ModalitySpec] = {}
        data: dict[str, ModalityData] = {}
        for mod, values in modalities.items():
            if isinstance(values, Mapping):
                kind = kinds.get(mod, "graph" if _holds_graphs(values) else "bag")
                if kind == "graph":
                    data[mod] = {
                        str(k): as_modality_graph(v, f"modality '{mod}', patient '{k}'")
                        for k, v in values.items()
                    }
                else:
                    data[mod] = {str(k): _as_bag_array(v) for k, v in values.items()}
            elif isinstance(values, pd.DataFrame):
                frame = _index_by_patient(values, f"modality '{mod}'")
                numeric = all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes)
                guess = "vector" if numeric and frame.shape[1] > 32 else "tabular"
                if list(frame.columns) == [TEXT] and not numeric:
                    guess = "text"
                kind = kinds.get(mod, guess)
                if kind == "text" and TEXT in frame.columns:
                    # An empty report is a missing one (as an empty CSV cell reads).
                    blank = frame[TEXT].map(lambda v: isinstance(v, str) and not v.strip())
                    frame[TEXT] = frame[TEXT].mask(blank.to_numpy(bool))
                data[mod] = frame
            else:
                raise CohortError(
                    f"modality '{mod}': expected a DataFrame or a dict of arrays, "
                    f"got {type(values).__name__}"
                )
            specs[mod] = ModalitySpec(mod, kind, options=dict(options.get(mod, {})))
        cohort = cls(
            name=name,
            patients=pats,
            modalities=specs,
            data=data,
            relations=[tuple(r) for r in relations],
            labels=list(labels),
        )
        cohort.validate()
        return cohort

    def validate(self, sources: Mapping[str, str] | None = None, *, part: bool = False) -> None:
        """Raise :class:`CohortError` naming the first problem found.

        Args:
            sources: Optional modality name (or ``"patients"``) -> file name,
                used in messages so they point at the file to fix.
            part: The cohort is a chunk of a larger one (see
                :func:`graphmed.data.validate.validate_cohort`).
        """
        from .validate import validate_cohort

        validate_cohort(self, sources, part=part)

    # --------------------------------------------------------------- queries
    @property
    def patient_ids(self) -> list[str]:
        return self.patients.index.tolist()

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    @property
    def time(self) -> np.ndarray:
        return self.patients["time"].to_numpy(dtype=np.float64)

    @property
    def event(self) -> np.ndarray:
        return self.patients["event"].to_numpy(dtype=np.int64)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    def width(self, modality: str) -> int:
        """Number of raw features (tabular, vector), instance width (bag) or node
        feature width (graph); 1 for text (its one column)."""
        values = self.data[modality]
        if isinstance(values, pd.DataFrame):
            return values.shape[1]
        for arr in values.values():
            return int((arr.x if isinstance(arr, ModalityGraph) else arr).shape[1])
        return int(self.modalities[modality].options.get("width", 0))

    def present_mask(self) -> pd.DataFrame:
        """Boolean frame, patients x modalities: True where the modality is present.

        A patient is missing a modality when it has no row (or an all-empty
        row) in a table, no (or an empty) text, or no (or an empty) array or graph.
        """
        out = pd.DataFrame(False, index=self.patients.index, columns=self.modality_names)
        for mod, values in self.data.items():
            if self.modalities[mod].kind == "text" and isinstance(values, pd.DataFrame):
                has = text_present(values)
            elif isinstance(values, pd.DataFrame):
                has = values.index[values.notna().any(axis=1)]
            else:
                has = [pid for pid, arr in values.items() if len(arr) > 0]
            out.loc[out.index.intersection(has), mod] = True
        return out

    # ------------------------------------------------------------- transforms
    def subset(self, patient_ids: Iterable[str]) -> Cohort:
        """The cohort restricted to ``patient_ids`` (in that order)."""
        ids = [str(p) for p in patient_ids]
        unknown = set(ids) - set(self.patients.index)
        if unknown:
            raise CohortError(f"subset: unknown patient ids {sorted(unknown)[:5]}")
        keep = set(ids)
        data: dict[str, ModalityData] = {}
        for mod, values in self.data.items():
            if isinstance(values, pd.DataFrame):
                order = pd.Index(ids, name=values.index.name)  # rows follow ``ids`` too
                data[mod] = values.loc[order.intersection(values.index, sort=False)]
            else:
                data[mod] = {pid: arr for pid, arr in values.items() if pid in keep}
        return replace(self, patients=self.patients.loc[ids], data=data)

    def drop_modality_for(self, modality: str, patient_ids: Iterable[str]) -> Cohort:
        """A copy in which ``modality`` is missing for ``patient_ids``."""
        if modality not in self.modalities:
            from ..errors import did_you_mean

            raise CohortError(
                f"unknown modality '{modality}'; the cohort has {self.modality_names}."
                f"{did_you_mean(modality, self.modality_names)}"
            )
        drop = {str(p) for p in patient_ids}
        values = self.data[modality]
        data = dict(self.data)
        if isinstance(values, pd.DataFrame):
            data[modality] = values.loc[~values.index.isin(drop)]
        else:
            data[modality] = {pid: arr for pid, arr in values.items() if pid not in drop}
        return replace(self, data=data)

    def summary(self) -> dict[str, Any]:
        """Counts a person wants to see first: patients, events, modalities present."""
        present = self.present_mask()
        return {
            "name": self.name,
            "patients": self.n_patients,
            "events": int(self.event.sum()),
            "modalities": {
                m: {
                    "kind": self.modalities[m].kind,
                    "width": self.width(m),
                    "present": int(present[m].sum()),
                }
                for m in self.modality_names
            },
            "relations": [list(r) for r in self.relations],
            "labels": list(self.labels),
        }

    def equals(self, other: Cohort) -> bool:
        """Exact equality of everything a cohort holds (used for round trips).

        A modality's ``path`` says where it was stored, not what it holds, so
        it is not compared (a cohort written as Parquet equals its CSV twin).
        """

        def specs(c: Cohort) -> dict[str, tuple]:
            return {m: (s.name, s.kind, s.options) for m, s in c.modalities.items()}

        if (self.name, specs(self), self.relations, self.labels) != (
            other.name,
            specs(other),
            other.relations,
            other.labels,
        ):
            return False
        if not self.patients.equals(other.patients):
            return False
        for mod, values in self.data.items():
            theirs = other.data.get(mod)
            if isinstance(values, pd.DataFrame):
                if not isinstance(theirs, pd.DataFrame) or not values.equals(theirs):
                    return False
            else:
                if not isinstance(theirs, dict) or values.keys() != theirs.keys():
                    return False
                for pid, arr in values.items():
                    if isinstance(arr, ModalityGraph):
                        if not arr.equals(theirs[pid]):
                            return False
                    elif not isinstance(theirs[pid], np.ndarray) or (
                        arr.dtype != theirs[pid].dtype or not np.array_equal(arr, theirs[pid])
                    ):
                        return False
        return set(self.data) == set(other.data)


def _index_by_patient(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if "patient_id" in frame.columns:
        frame = frame.set_index("patient_id")
    elif frame.index.name != "patient_id":
        raise CohortError(
            f"{what}: missing required column 'patient_id'; found {list(frame.columns)[:8]}. "
            "Add a patient_id column or name the index 'patient_id'."
        )
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    frame.index.name = "patient_id"
    return frame


def _holds_graphs(values: Mapping) -> bool:
    """Whether a dict modality's values are graphs (x and edge_index), not arrays."""
    for v in values.values():
        return isinstance(v, (ModalityGraph, Mapping)) or hasattr(v, "edge_index")
    return False


def _as_bag_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    arr = np.asarray(value)
    # The in-memory convention is float32; non-numeric arrays are left for validation.
    return arr.astype(np.float32, copy=False) if arr.dtype.kind in "biuf" else arr
