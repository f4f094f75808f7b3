"""Read and write the cohort folder format (see ``docs/cohort-format.md``).

A cohort folder holds ``cohort.yaml``, ``patients.csv``, one ``.csv`` or
``.parquet`` table per tabular/vector/text modality, one folder of
``<patient_id>.npy`` / ``.pt`` arrays per bag modality and one folder of
``<patient_id>.npz`` / ``.pt`` graphs per graph modality. :func:`read_cohort`
is strict: anything malformed raises :class:`~graphmed.errors.CohortError`
naming the file, the column and the patient. :func:`write_cohort` writes a
folder that reads back exactly (``read_cohort(p).equals(cohort)``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .._atomic import atomic_path, write_text
from ..errors import CohortError, ConfigError, did_you_mean
from ..typing import FOLDER_KINDS, KINDS
from ._per_patient import load_per_patient
from .cohort import Cohort, ModalitySpec
from .graph_kind import GRAPH_SUFFIXES, max_nodes, read_graph_folder, write_graph_folder
from .text_kind import TEXT, TEXT_DEFAULTS, text_options
from .validate import (
    PATIENT,
    check_no_endpoints,
    check_numeric_cells,
    check_patient_ids,
    coerce_endpoints,
    warn_sparse_rows,
)

CONFIG = "cohort.yaml"
PATIENTS = "patients.csv"
TOP_KEYS = ("name", "modalities", "relations", "endpoints", "dtypes")
MODALITY_KEYS = ("kind", "path", "options")
ENDPOINT_KEYS = ("time", "event", "labels")
OPTION_KEYS = {
    "tabular": ("categorical",),
    "vector": ("groups", "chunk_size", "max_features"),
    "bag": ("max_instances", "pooling"),
    "graph": ("max_nodes",),
    "text": tuple(TEXT_DEFAULTS),
}
"""The ``options`` each kind reads (``docs/cohort-format.md``); any other key is an error."""
BAG_SUFFIXES = (".npy", ".pt")
# Array formats a bag folder may seem to hold but that graphmed does not read (or that
# would need a pickle): refused, so that they are not skipped without a word.
UNREAD_SUFFIXES = (".npz", ".h5", ".hdf5", ".pkl", ".pickle", ".safetensors", ".joblib")
# pandas' default missing-value strings, read as missing in columns with no recorded dtype
# (recorded string and category columns, and patient_id, take only "" as missing).
_NA = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"]
_NA += ["<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def read_cohort(path: str | os.PathLike, *, allow_outside: bool = False) -> Cohort:
    """Read and validate the cohort folder at ``path``.

    Args:
        path: The cohort folder.
        allow_outside: Read modality paths of ``cohort.yaml`` that lead
            outside the folder (absolute, or climbing with ``..``). Off by
            default, so that a folder received from someone else reads only
            its own files.

    Raises:
        CohortError: the folder, ``cohort.yaml`` or a data file is missing or
            malformed; the message names the file, column and patient.
    """
    plan = FolderPlan.read(path, allow_outside)
    root, dtypes, endpoints = plan.root, plan.dtypes, plan.endpoints
    patients = _read_patients(root, plan.time, plan.event, dtypes)
    sources = {"config": CONFIG, "patients": PATIENTS}
    data: dict[str, Any] = {}
    for mod, spec in plan.specs.items():
        if spec.kind == "bag":
            data[mod], sources[mod] = _read_bag(root, spec.path, mod)
        elif spec.kind == "graph":
            data[mod], sources[mod] = _read_graphs(root, spec.path, mod)
        elif spec.kind == "text":
            file = _existing(root, spec.path, mod)
            data[mod], sources[mod] = _read_text(file, spec.path, dtypes.get(mod)), spec.path
        else:
            file = _existing(root, spec.path, mod)
            recorded = dtypes.get(mod) or {}
            table = read_table(file, spec.path, recorded).set_index("patient_id")
            check_no_endpoints(table, spec.path, endpoints)
            warn_sparse_rows(table, spec.path, in_file=file.suffix.lower() != ".parquet")
            data[mod], sources[mod] = table, spec.path
    return plan.assemble(patients, data, sources)


@dataclass
class FolderPlan:
    """What ``cohort.yaml`` says, checked: the specs, endpoints and dtypes of a folder.

    :func:`read_cohort` reads the whole folder with it;
    :class:`graphmed.data.stream.CohortStream` reads it in chunks of patients.
    """

    root: Path
    name: str
    specs: dict[str, ModalitySpec]
    relations: list[tuple[str, str, str]]
    labels: list[str]
    time: str
    event: str
    dtypes: dict[str, Any]

    @property
    def endpoints(self) -> list[str]:
        """The columns no modality may hold: time, event and labels."""
        return [self.time, self.event, *self.labels]

    @classmethod
    def read(cls, path: str | os.PathLike, allow_outside: bool = False) -> FolderPlan:
        root = Path(path)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise CohortError(f"{root}: {what}; expected a cohort folder holding {CONFIG}.")
        conf = _read_config(root)
        ends = conf.get("endpoints") or {}
        specs: dict[str, ModalitySpec] = {}
        read_by: dict[str, str] = {}
        for mod, entry in conf["modalities"].items():
            spec = _spec(root, mod, entry)
            _check_path(root, spec.path, mod, allow_outside)
            key = os.path.normcase(os.path.normpath(root / spec.path))
            if key in read_by:
                raise CohortError(
                    f"{CONFIG}: modalities '{read_by[key]}' and '{mod}' both read "
                    f"'{spec.path}'; each modality needs its own file or folder. Fix one of "
                    "the paths."
                )
            read_by[key] = mod
            specs[mod] = spec
        return cls(
            root=root,
            name=str(conf.get("name") or root.name),
            specs=specs,
            relations=[tuple(r) for r in conf.get("relations") or []],
            labels=list(ends.get("labels") or []),
            time=str(ends.get("time", "time")),
            event=str(ends.get("event", "event")),
            dtypes=conf.get("dtypes") or {},
        )

    def assemble(
        self,
        patients: pd.DataFrame,
        data: dict[str, Any],
        sources: dict[str, str],
        part: bool = False,
    ) -> Cohort:
        """The validated :class:`Cohort` of ``patients`` (a chunk of them with ``part``)."""
        cohort = Cohort(
            name=self.name,
            patients=patients,
            modalities=dict(self.specs),
            data=data,
            relations=list(self.relations),
            labels=list(self.labels),
        )
        cohort.validate(sources, part=part)
        for mod, spec in self.specs.items():  # after validate: categorical names real columns
            if spec.kind == "tabular":
                categorical = spec.options.get("categorical")
                skip = set(self.dtypes.get(mod) or {})
                check_numeric_cells(data[mod], spec.path, categorical, skip)
        return cohort


def write_cohort(
    cohort: Cohort,
    path: str | os.PathLike,
    table_format: str = "csv",
    bag_format: str = "npy",
    *,
    overwrite: bool = False,
    graph_format: str = "npz",
) -> Path:
    """Write ``cohort`` as a cohort folder at ``path`` and return the path.

    Every file is written atomically; ``cohort.yaml`` is written last. Tables
    go to ``<modality>.csv`` or ``.parquet`` (the spec's path with that
    suffix), bags to ``<modality>/<patient_id>.npy`` or ``.pt``, graphs to
    ``<modality>/<patient_id>.npz`` or ``.pt`` (a dict of tensors). The dtypes
    that a CSV cannot carry (int, bool, category with its categories, strings;
    Parquet loses some too) are recorded under ``dtypes`` in ``cohort.yaml``.

    Args:
        cohort: A valid cohort (it is validated first).
        path: The folder to write (created).
        table_format: ``"csv"`` or ``"parquet"``.
        bag_format: ``"npy"`` or ``"pt"``.
        overwrite: Write into a non-empty folder. Files of an earlier cohort
            there that the new one does not use are removed.
        graph_format: ``"npz"`` or ``"pt"``.

    Raises:
        CohortError: the folder is not empty and ``overwrite`` is False, or a
            patient id cannot be a file name.
    """
    for arg, value, choices in (
        ("table_format", table_format, ("csv", "parquet")),
        ("bag_format", bag_format, ("npy", "pt")),
        ("graph_format", graph_format, ("npz", "pt")),
    ):
        if value not in choices:
            raise ConfigError(
                f"{arg} must be one of {list(choices)}, got {value!r}.{did_you_mean(value, choices)}"
            )
    cohort.validate()
    _check_writable(cohort)
    paths = _plan_paths(cohort, table_format)
    root = Path(path)
    old = _check_target(root, overwrite)
    conf: dict[str, Any] = {"name": cohort.name, "modalities": {}}
    dtypes: dict[str, Any] = {}
    for mod, spec in cohort.modalities.items():
        values, rel = cohort.data[mod], paths[mod]
        if spec.kind == "bag":
            _write_bag(root / rel, values, bag_format)
        elif spec.kind == "graph":
            write_graph_folder(root / rel, values, graph_format)
        else:
            _write_table(values, root / rel, table_format)
            if table_dtypes(values):
                dtypes[mod] = table_dtypes(values)
        conf["modalities"][mod] = {"kind": spec.kind, "path": rel}
        if spec.options:
            conf["modalities"][mod]["options"] = _plain(spec.options)
    _write_table(cohort.patients, root / PATIENTS, "csv")
    if table_dtypes(cohort.patients):
        dtypes["patients"] = table_dtypes(cohort.patients)
    if cohort.relations:
        conf["relations"] = [list(r) for r in cohort.relations]
    conf["endpoints"] = {"time": "time", "event": "event", "labels": list(cohort.labels)}
    if dtypes:
        conf["dtypes"] = dtypes
    for rel in old - {CONFIG, PATIENTS, *paths.values()}:
        _remove_stale(root, rel)
    text = yaml.safe_dump(conf, sort_keys=False, allow_unicode=True, default_flow_style=None)
    write_text(root / CONFIG, text)
    return root


# ------------------------------------------------------------------ reading
def _read_config(root: Path) -> dict[str, Any]:
    file = root / CONFIG
    if not file.is_file():
        raise CohortError(
            f"{root}: no {CONFIG}; a cohort folder holds {CONFIG}, {PATIENTS} and one file or "
            "folder per modality (see docs/cohort-format.md)."
        )
    try:
        conf = yaml.load(file.read_text(), Loader=_UniqueKeyLoader)
    except CohortError:
        raise
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CohortError(f"{CONFIG}: cannot parse the YAML: {err}") from err
    if not isinstance(conf, dict):
        raise CohortError(f"{CONFIG}: expected a mapping of {list(TOP_KEYS)}, got {conf!r}.")
    _check_keys(conf, TOP_KEYS, CONFIG)
    mods = conf.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise CohortError(
            f"{CONFIG}: 'modalities' must map each modality name to "
            "{kind: " + "|".join(KINDS) + ", path: ...}; got " + repr(mods)
        )
    ends = conf.get("endpoints") or {}
    if not isinstance(ends, dict):
        raise CohortError(f"{CONFIG}: 'endpoints' must be a mapping, got {ends!r}.")
    _check_keys(ends, ENDPOINT_KEYS, f"{CONFIG} endpoints")
    if not isinstance(ends.get("labels") or [], list):
        raise CohortError(f"{CONFIG}: endpoints.labels must be a list of columns.")
    rels = conf.get("relations") or []
    bad = [r for r in rels if not isinstance(r, list)] if isinstance(rels, list) else [rels]
    if bad:
        raise CohortError(
            f"{CONFIG}: relations must be a list of [source, relation, target], got {bad[0]!r}."
        )
    dtypes = conf.get("dtypes") or {}
    if not isinstance(dtypes, dict) or any(not isinstance(v, dict) for v in dtypes.values()):
        raise CohortError(f"{CONFIG}: 'dtypes' must map a table to {{column: dtype}}.")
    unknown = [t for t in dtypes if t != "patients" and t not in mods]
    if unknown:
        raise CohortError(
            f"{CONFIG}: dtypes names '{unknown[0]}', which is neither 'patients' nor a "
            f"modality.{did_you_mean(unknown[0], ['patients', *mods])}"
        )
    return conf


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it below, with its own message
            if key in seen:
                raise CohortError(
                    f"{CONFIG}: key '{key}' appears twice in one mapping (lines {seen[key]} and "
                    f"{line}); YAML would keep only the last. Remove or rename one of them."
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_path(root: Path, rel: str, mod: str, allow_outside: bool) -> None:
    """Refuse a modality path that leads outside the cohort folder, unless allowed."""
    p = PurePosixPath(str(rel).replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".")]
    depth, escapes = 0, p.is_absolute() or Path(rel).is_absolute()
    for part in parts:
        depth += -1 if part == ".." else 1
        escapes = escapes or depth < 0
    if escapes and not allow_outside:
        raise CohortError(
            f"{CONFIG}: modality '{mod}' has path '{rel}', which leads outside the cohort "
            f"folder {root}; a cohort reads only its own files. Move (or symlink) the data "
            f"into the folder, or, if you trust this {CONFIG}, pass --allow-outside-paths to "
            "the graphmed command (read_cohort(..., allow_outside=True) in Python)."
        )


def _check_keys(mapping: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise CohortError(
                f"{where}: unknown key '{key}'.{did_you_mean(key, allowed)} Expected keys: "
                f"{', '.join(allowed)}."
            )


def _spec(root: Path, mod: str, entry: Any) -> ModalitySpec:
    where = f"{CONFIG} modality '{mod}'"
    if not isinstance(entry, dict):
        raise CohortError(f"{where}: expected {{kind: ..., path: ...}}, got {entry!r}.")
    _check_keys(entry, MODALITY_KEYS, where)
    if "kind" not in entry:
        raise CohortError(f"{where}: missing 'kind'; expected one of {', '.join(KINDS)}.")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise CohortError(f"{where}: 'options' must be a mapping, got {options!r}.")
    path = entry.get("path")
    if not path and entry["kind"] not in FOLDER_KINDS and (root / f"{mod}.parquet").exists():
        path = f"{mod}.parquet"
    try:
        spec = ModalitySpec(str(mod), str(entry["kind"]), str(path or ""), dict(options))
    except CohortError as err:
        raise CohortError(f"{CONFIG}: {err}") from err
    allowed = OPTION_KEYS[spec.kind]
    for key in options:
        if key not in allowed:
            other = [k for k, keys in OPTION_KEYS.items() if key in keys]
            why = f" '{key}' is an option of {other[0]} modalities." if other else ""
            hint = did_you_mean(key, allowed) if not other else ""
            raise CohortError(
                f"{where}: unknown option '{key}'.{hint}{why} A {spec.kind} modality takes: "
                f"{', '.join(allowed)}."
            )
    check_values = {"graph": max_nodes, "text": text_options}.get(spec.kind)
    if check_values is not None:
        try:
            check_values(options)
        except CohortError as err:
            raise CohortError(f"{where}: {err}") from err
    return spec


def _existing(root: Path, rel: str, mod: str) -> Path:
    file = root / rel
    if not file.exists():
        near = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
        near = [n for n in near if n not in (CONFIG, PATIENTS)]
        raise CohortError(
            f"{CONFIG}: modality '{mod}' names '{rel}', which does not exist in {root}."
            f"{did_you_mean(PurePosixPath(rel).name, near)} Fix its path or add the file."
        )
    return file


def _read_patients(root: Path, time: str, event: str, dtypes: Mapping) -> pd.DataFrame:
    frame = read_table(_existing_patients(root), PATIENTS, dtypes.get("patients"))
    frame = frame.set_index("patient_id")
    t, e = coerce_endpoints(frame, PATIENTS, time, event)
    frame[time], frame[event] = t, e
    return frame.rename(columns={time: "time", event: "event"})


def _existing_patients(root: Path) -> Path:
    if not (root / PATIENTS).is_file():
        raise CohortError(
            f"{root}: no {PATIENTS}; expected one row per patient with columns patient_id, "
            "time, event (names set by endpoints in cohort.yaml)."
        )
    return root / PATIENTS


def _read_bag(root: Path, rel: str, mod: str) -> tuple[dict[str, np.ndarray], str]:
    folder = root / rel
    if not folder.is_dir():
        _existing(root, rel, mod)
        raise CohortError(f"{rel}: is a file; a bag modality is a folder of .npy/.pt arrays.")
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    unread = [p.name for p in visible if p.suffix.lower() in UNREAD_SUFFIXES]
    if unread:
        raise CohortError(
            f"{rel}/{unread[0]}: a bag folder holds .npy or .pt arrays, one per patient; "
            f"graphmed does not read {PurePosixPath(unread[0]).suffix} files. Convert it "
            "with np.save(path, array) or torch.save(tensor, path)."
        )
    files = sorted(p for p in visible if p.suffix.lower() in BAG_SUFFIXES)
    arrays = load_per_patient(files, rel, "array", load_array)
    suffixes = {p.suffix for p in files}  # as written: '.NPY' stays '.NPY' in messages
    suffix = suffixes.pop() if len(suffixes) == 1 else ".(npy|pt)"
    return arrays, f"{rel}/{PATIENT}{suffix}"


def _read_graphs(root: Path, rel: str, mod: str) -> tuple[dict[str, Any], str]:
    folder = root / rel
    if not folder.is_dir():
        _existing(root, rel, mod)
        raise CohortError(
            f"{rel}: is a file; a graph modality is a folder of .npz/.pt graphs, one per patient."
        )
    graphs = read_graph_folder(folder, rel)
    suffixes = {p.suffix for p in folder.iterdir() if p.suffix.lower() in GRAPH_SUFFIXES}
    suffix = suffixes.pop() if len(suffixes) == 1 else ".(npz|pt)"
    return graphs, f"{rel}/{PATIENT}{suffix}"


def _read_text(file: Path, name: str, recorded: Mapping | None) -> pd.DataFrame:
    """A text table ``patient_id, text``; the text is read as written ("NA" stays "NA")."""
    try:
        if file.name.lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(file).names)
        else:
            sep = "\t" if file.name.lower().endswith(".tsv") else ","
            columns = list(pd.read_csv(file, sep=sep, nrows=0).columns)
    except Exception:
        columns = None  # read_table reports the unreadable file
    if columns is not None and TEXT not in columns:
        raise CohortError(
            f"{name}: a text modality has the columns patient_id and text, found "
            f"{columns[:8]}.{did_you_mean(TEXT, columns)} Name the column of reports 'text'."
        )
    frame = read_table(file, name, {TEXT: "object", **dict(recorded or {})})
    return frame.set_index("patient_id")


def load_array(file: Path, name: str) -> np.ndarray:
    """Load a ``.npy`` or ``.pt`` array of shape (N, d) as float32, or raise CohortError."""
    try:
        if file.suffix.lower() == ".npy":
            arr = np.load(file, allow_pickle=False)
        else:
            import torch

            obj = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise CohortError(
                    f"{name}: expected a 2-D tensor, got {type(obj).__name__}. Save the "
                    "features with torch.save(tensor, path)."
                )
            arr = (obj.float() if obj.is_floating_point() else obj).detach().numpy()
    except CohortError:
        raise
    except Exception as err:
        raise CohortError(
            f"{name}: cannot read the array ({type(err).__name__}: {_first_line(err)}). The file is "
            "truncated or not a .npy/.pt array; re-export it."
        ) from err
    if arr.dtype.kind not in "biuf":
        raise CohortError(f"{name}: expected a numeric array, got dtype {arr.dtype}.")
    if arr.ndim != 2:
        raise CohortError(
            f"{name}: expected a 2-D array (instances x features), got shape {arr.shape}. "
            "Reshape a single vector to (1, d)."
        )
    return arr.astype(np.float32, copy=False)


def read_table(file: Path, name: str, dtypes: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a ``.csv``/``.tsv``/``.parquet`` table with a ``patient_id`` column (as str).

    Args:
        file: The file.
        name: Its name in messages (relative to the cohort folder).
        dtypes: Column -> dtype name or ``{categories: [...], ordered: bool}``,
            as :func:`table_dtypes` records them; other columns are inferred.
    """
    dtypes = dict(dtypes or {})
    low = file.name.lower()
    if low.endswith((".parquet", ".pq")):
        try:
            frame = pd.read_parquet(file)
        except Exception as err:
            raise CohortError(
                f"{name}: cannot read the Parquet file ({type(err).__name__}: {err}); re-export it."
            ) from err
        if frame.index.name == "patient_id":
            frame = frame.reset_index()
    elif low.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        frame = _read_csv(file, name, dtypes)
    else:
        raise CohortError(f"{name}: unknown table format; expected a .csv, .tsv or .parquet file.")
    return finish_table(frame, name, dtypes)


def finish_table(frame: pd.DataFrame, name: str, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """Check the ``patient_id`` column of a table just read, and apply the recorded dtypes."""
    if "patient_id" not in frame.columns:
        raise CohortError(
            f"{name}: missing required column 'patient_id'; found {list(frame.columns)[:8]}."
            f"{did_you_mean('patient_id', frame.columns)} The first column names the patient."
        )
    ids = frame["patient_id"]
    frame["patient_id"] = ids.where(ids.isna(), ids.astype(str))
    check_patient_ids(pd.Index(frame["patient_id"]), name, in_file=True)
    for col, dtype in dtypes.items():
        if col not in frame.columns:
            raise CohortError(
                f"{CONFIG}: dtypes of {name} name column '{col}', which the file does not have."
                f"{did_you_mean(col, frame.columns)}"
            )
        frame[col] = _as_dtype(frame[col], dtype, f"{name}: column '{col}'")
    return frame


def table_dtypes(frame: pd.DataFrame) -> dict[str, Any]:
    """The column dtypes a CSV cannot carry: every non-float64 column's, for ``cohort.yaml``."""
    out: dict[str, Any] = {}
    for col, dt in frame.dtypes.items():
        if isinstance(dt, pd.CategoricalDtype):
            cats = _plain(dt.categories.tolist())
            out[str(col)] = {"categories": cats, "ordered": bool(dt.ordered)}
        elif dt != np.float64:
            out[str(col)] = str(dt)
    return out


def _parsed(dtype: Any) -> bool:
    """Whether read_csv parses ``dtype`` itself (numbers, booleans)."""
    if not isinstance(dtype, str):
        return False
    try:
        dt = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(dt) and dt.kind != "m"


def read_csv_chunks(
    file: Path, name: str, dtypes: Mapping[str, Any], chunk_size: int
) -> Iterator[pd.DataFrame]:
    """The CSV table ``file`` in chunks of ``chunk_size`` rows, each read as :func:`read_table`
    reads the whole file (a column's type is inferred per chunk where no dtype is recorded)."""
    dtypes = dict(dtypes)
    reader = _read_csv(file, name, dtypes, chunk_size)
    while True:
        try:
            frame = next(reader)
        except StopIteration:
            return
        except CohortError:
            raise
        except (ValueError, TypeError, OSError, UnicodeDecodeError) as err:
            raise CohortError(
                f"{name}: cannot read the CSV file ({type(err).__name__}: {_first_line(err)})."
            ) from err
        yield finish_table(frame, name, dtypes)


def _read_csv(file: Path, name: str, dtypes: Mapping[str, Any], chunk_size: int | None = None):
    """The CSV as one frame, or (``chunk_size``) an iterator of frames of that many rows."""
    sep = "\t" if file.name.lower().endswith(".tsv") else ","
    try:
        head = pd.read_csv(file, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
        header = head.iloc[0].tolist()
        seen: set[str] = set()
        dup = next((c for c in header if c in seen or seen.add(c)), None)
        if dup is not None:
            raise CohortError(f"{name}: column '{dup}' appears twice in the header; rename one.")
        exact = {"patient_id"} | {c for c, d in dtypes.items() if not _parsed(d)}
        frame = pd.read_csv(
            file,
            sep=sep,
            dtype={**{c: d for c, d in dtypes.items() if _parsed(d)}, **dict.fromkeys(exact, str)},
            na_values=[""],
            keep_default_na=False,
            float_precision="round_trip",  # the default parser is off by an ulp at times
            chunksize=chunk_size,
        )
        if chunk_size is not None:
            return (_na_cells(chunk, exact) for chunk in frame)
    except CohortError:
        raise
    except pd.errors.EmptyDataError as err:
        raise CohortError(
            f"{name}: the file is empty; expected a header line (patient_id, ...) and one row "
            "per patient."
        ) from err
    except (ValueError, TypeError, OSError, UnicodeDecodeError) as err:
        raise CohortError(
            f"{name}: cannot read the CSV file ({type(err).__name__}: {_first_line(err)}). "
            f"Check that it is a comma-separated table whose columns hold the types that "
            f"{CONFIG} dtypes gives them."
        ) from err
    return _na_cells(frame, exact)


def _na_cells(frame: pd.DataFrame, exact: set[str]) -> pd.DataFrame:
    """Columns without a recorded dtype read "NA", "null", ... as missing, as pandas does."""
    for col in frame.columns[frame.dtypes.map(pd.api.types.is_object_dtype)]:
        if col not in exact:
            values = frame[col].mask(frame[col].isin(_NA))
            numbers = pd.to_numeric(values, errors="coerce")
            frame[col] = numbers if numbers.count() == values.count() else values
    return frame


def _as_dtype(values: pd.Series, dtype: Any, where: str) -> pd.Series:
    if isinstance(dtype, dict):
        cats = list(dtype.get("categories") or [])
        target = pd.CategoricalDtype(cats, ordered=bool(dtype.get("ordered", False)))
        if values.dtype == target:
            return values
        lookup = {str(c): c for c in cats}
        text = values.astype(str).where(values.notna())
        bad = values.notna() & ~text.isin(lookup)
        if bad.any():
            raise CohortError(
                f"{where} holds {values[bad].iloc[0]!r}, which is not one of its categories "
                f"{cats} in {CONFIG} dtypes. Add the category there or fix the value."
            )
        return pd.Series(
            pd.Categorical(text.map(lookup, na_action="ignore"), dtype=target),
            index=values.index,
        )
    try:
        return values if str(values.dtype) == str(dtype) else values.astype(dtype)
    except (TypeError, ValueError) as err:
        raise CohortError(f"{where}: cannot read it as {dtype} ({err}).") from err


def _first_line(err: Exception) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return text if len(text) <= 120 else text[:117] + "..."


# ------------------------------------------------------------------ writing
def _check_writable(cohort: Cohort) -> None:
    """Refuse, before writing anything, what would not read back exactly."""
    for mod, spec in cohort.modalities.items():
        if spec.kind in FOLDER_KINDS:
            for pid in cohort.data[mod]:
                if pid.startswith(".") or any(c in pid for c in "/\\\0"):
                    raise CohortError(
                        f"modality '{mod}': patient id {pid!r} cannot be the file name of a "
                        f"{'bag array' if spec.kind == 'bag' else 'graph file'}; rename the "
                        "patient (no '/', '\\' or leading '.')."
                    )
    for mod, spec in cohort.modalities.items():
        try:
            yaml.safe_dump(_plain(spec.options))
        except yaml.YAMLError as err:
            raise CohortError(
                f"modality '{mod}': options cannot be written to {CONFIG} ({_first_line(err)}); "
                "they must hold only strings, numbers, booleans, lists and dicts."
            ) from err
    tables = {"patients": cohort.patients}
    tables.update({m: v for m, v in cohort.data.items() if isinstance(v, pd.DataFrame)})
    for mod, frame in tables.items():
        for col in frame.columns[frame.dtypes.map(pd.api.types.is_object_dtype)]:
            values = frame[col].dropna()
            odd = ~values.map(lambda v: isinstance(v, str))
            if odd.any():
                value = values[odd].iloc[0]
                raise CohortError(
                    f"{'patients' if mod == 'patients' else f'modality {mod!r}'}: column "
                    f"'{col}' holds {value!r} ({type(value).__name__}) among strings; a "
                    "column of objects must hold only strings to be written. Convert it with "
                    ".astype(str), or to a numeric or category dtype."
                )


def _plan_paths(cohort: Cohort, table_format: str) -> dict[str, str]:
    """Modality -> path to write it to: its spec's, kept inside the folder, with the suffix."""
    paths: dict[str, str] = {}
    for mod, spec in cohort.modalities.items():
        if spec.kind in FOLDER_KINDS:
            rel = _inside(spec.path, mod)
        else:
            rel = f"{_inside(_with_suffix(spec.path), mod)}.{table_format}"
        if rel in (CONFIG, PATIENTS, *paths.values()):
            raise CohortError(
                f"modality '{mod}' would be written to '{rel}', which another file of the "
                "cohort uses; give the modalities distinct paths."
            )
        paths[mod] = rel
    return paths


def _check_target(root: Path, overwrite: bool) -> set[str]:
    """Refuse a non-empty folder unless ``overwrite``; return the old cohort's paths."""
    if root.exists() and not root.is_dir():
        raise CohortError(f"{root} is a file; write_cohort needs a folder path.")
    if not root.is_dir() or not any(root.iterdir()):
        return set()
    is_cohort = (root / CONFIG).is_file()
    if not overwrite:
        what = "holds a cohort" if is_cohort else "is not empty and is not a cohort folder"
        raise CohortError(f"{root} {what}; pass overwrite=True to write into it anyway.")
    try:
        old = yaml.safe_load((root / CONFIG).read_text()) if is_cohort else {}
        return {str(m["path"]) for m in old["modalities"].values()}
    except Exception:  # an unreadable old cohort leaves its files in place
        return set()


def _inside(rel: str, default: str) -> str:
    """``rel`` if it stays inside the cohort folder, else ``default``."""
    p = PurePosixPath(str(rel).replace("\\", "/"))
    return default if p.is_absolute() or ".." in p.parts or not p.parts else str(p)


def _with_suffix(rel: str) -> str:
    for suffix in (".csv.gz", ".csv", ".tsv", ".parquet", ".pq"):
        if rel.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def _write_table(frame: pd.DataFrame, file: Path, fmt: str) -> None:
    out = frame.rename_axis("patient_id").reset_index()
    with atomic_path(file) as tmp:
        if fmt == "csv":
            out.to_csv(tmp, index=False)
        else:
            out.to_parquet(tmp, index=False)


def _write_bag(folder: Path, bag: Mapping[str, np.ndarray], fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"{pid}.{fmt}" for pid in bag}
    for p in folder.iterdir():
        if p.suffix in BAG_SUFFIXES and p.name not in names:
            p.unlink()
    for pid, arr in bag.items():
        with atomic_path(folder / f"{pid}.{fmt}") as tmp:
            if fmt == "npy":
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
            else:
                import torch

                torch.save(torch.from_numpy(np.ascontiguousarray(arr)), tmp)


def _remove_stale(root: Path, rel: str) -> None:
    target = root / _inside(rel, "")
    if target == root or not target.exists():
        return
    if target.is_file():
        target.unlink()
        return
    for p in target.iterdir():
        if p.suffix in BAG_SUFFIXES + GRAPH_SUFFIXES:
            p.unlink()
    if not any(target.iterdir()):
        target.rmdir()


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars, arrays and tuples turned into YAML-safe types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
