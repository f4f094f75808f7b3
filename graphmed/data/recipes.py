"""Dataset recipes: YAML rules that turn installed public cohorts into a :class:`Cohort`.

A recipe (``datasets/<name>.yaml``, shipped as the package ``graphmed.recipes``)
names a *source* (a loader of an installed package that gives one flat table),
the endpoint columns, how patient ids are made, and which columns form each
modality. Nothing is downloaded: sources are ``sksurv`` (scikit-survival's
bundled datasets), ``survset`` (the optional SurvSet package) and ``mcat`` (a
CSV the user already has, passed as ``from_mcat``; the layout fixes endpoint
and modalities, see :func:`graphmed.data.mcat.read_mcat_omics`). See
``datasets/README.md`` for the schema.

Column rules are applied in modality order, each to the columns not yet taken
by an earlier modality, so "expression = every remaining ``num_*`` column" is
one glob. A column that no modality takes and ``drop`` does not list is an
error, so that a changed upstream table cannot silently lose features.

:func:`materialize` builds and checks the cohort, writes it to a hidden folder
beside the target and moves it into place: an error while building or writing
leaves no half-written folder behind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import importlib
import importlib.resources
import importlib.util
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import CohortError, ConfigError, WriteError, did_you_mean
from ..typing import KINDS
from .cohort import Cohort

_SOURCES = {"sksurv": "sksurv", "survset": "SurvSet", "mcat": "pandas"}  # -> module to import
_INSTALL = {"sksurv": "pip install scikit-survival", "survset": "pip install graphmed[survset]"}
_MCAT_SOURCE_KEYS = {"package", "groups", "clinical", "drop"}  # -> read_mcat_omics arguments
_KEYS = {
    "name", "description", "source", "patients", "time_unit", "patient_id", "endpoint",
    "missing_values", "drop", "modalities", "relations", "table_format",
}  # fmt: skip
_MODALITY_KEYS = {"kind", "columns", "strip_prefix", "options"}
_SELECTOR_KEYS = {"glob", "regex", "include", "exclude"}


# ---------------------------------------------------------------- public API
def list_recipes() -> list[dict[str, Any]]:
    """The shipped recipes, sorted by name.

    Returns:
        One dict per recipe: ``name``, ``source`` (e.g. ``"survset:nki70"``, or
        ``"mcat:CSV"`` for a recipe that reads the user's file),
        ``description``, ``patients`` (int or None), ``available`` (whether the
        source package is installed) and ``note`` (how to install it, or ``""``).
    """
    out = []
    for path in _recipe_files().values():
        recipe = _read_yaml(path)
        package = recipe["source"]["package"]
        available = _importable(_SOURCES[package])
        ident = recipe["source"].get("dataset") or recipe["source"].get("loader", "")
        note = "" if available else f"needs {_INSTALL[package]}"
        if package == "mcat":  # the data is the user's file
            ident, note = "CSV", "needs --from-mcat CSV"
        out.append(
            {
                "name": recipe["name"],
                "source": f"{package}:{ident}",
                "description": recipe.get("description", ""),
                "patients": recipe.get("patients"),
                "available": available,
                "note": note,
            }
        )
    return out


def load_recipe(name: str, *, from_mcat: str | os.PathLike | None = None) -> Cohort:
    """Build the cohort of a recipe, by name (``"nki70"``) or path to a YAML file.

    Args:
        name: Recipe name or YAML path.
        from_mcat: The MCAT/PORPOISE ``*_all_clean.csv`` (or ``.csv.zip``) that an
            ``mcat`` recipe (``"tcga"``) reads; no other recipe takes it.
    """
    return _cohort(_read_yaml(_resolve(name)), from_mcat)


def materialize(
    name: str,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    *,
    table_format: str | None = None,
    from_mcat: str | os.PathLike | None = None,
) -> Path:
    """Write a recipe's cohort as a cohort folder at ``out_dir`` and return its path.

    The cohort is built and checked first, then written to a hidden folder
    beside ``out_dir`` and moved onto it: an error while building or writing
    leaves ``out_dir`` as it was (absent, or the old cohort).

    Args:
        name: Recipe name or YAML path.
        out_dir: The cohort folder to write (created).
        overwrite: Write into a non-empty folder, replacing the cohort there.
        table_format: ``"csv"`` or ``"parquet"`` for every table; default: the
            recipe's ``table_format`` (one format, or one per kind) or ``"csv"``.
        from_mcat: The CSV of an ``mcat`` recipe (see :func:`load_recipe`).
    """
    recipe = _read_yaml(_resolve(name))
    cohort = _cohort(recipe, from_mcat)
    formats = table_format or recipe.get("table_format", "csv")
    formats = {"tabular": formats, "vector": formats} if isinstance(formats, str) else formats
    formats = {"tabular": "csv", "vector": "csv", **formats}
    out = Path(out_dir)
    _write_folder(cohort, out, formats, overwrite)
    return out


# ----------------------------------------------------------------- recipes
def _recipe_files() -> dict[str, Path]:
    root = importlib.resources.files("graphmed.recipes")
    files = {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml")}
    return dict(sorted(files.items()))


def _resolve(name: str) -> Path:
    files = _recipe_files()
    if name in files:
        return files[name]
    if str(name).endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    raise CohortError(
        f"unknown dataset recipe '{name}'; available: {', '.join(files)}."
        f"{did_you_mean(name, files)} Run `graphmed datasets list` to see them."
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    recipe = yaml.safe_load(Path(path).read_text())
    where = f"recipe {Path(path).name}"
    if not isinstance(recipe, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key in recipe:
        if key not in _KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'.{did_you_mean(key, _KEYS)}")
    for key in ("name", "source"):
        if key not in recipe:
            raise ConfigError(f"{where}: missing required key '{key}'")
    package = recipe["source"].get("package")
    if package not in _SOURCES:
        raise ConfigError(
            f"{where}: unknown source package '{package}'; expected one of {list(_SOURCES)}."
            f"{did_you_mean(package, _SOURCES)}"
        )
    _check_table_format(recipe.get("table_format", "csv"), where)
    if package == "mcat":
        _check_mcat_recipe(recipe, where)
        return recipe
    for key in ("endpoint", "modalities"):
        if key not in recipe:
            raise ConfigError(f"{where}: missing required key '{key}'")
    for mod, spec in recipe["modalities"].items():
        bad = set(spec) - _MODALITY_KEYS
        if bad:
            key = sorted(bad)[0]
            raise ConfigError(
                f"{where}: modality '{mod}': unknown key '{key}'.{did_you_mean(key, _MODALITY_KEYS)}"
            )
        if spec.get("kind") not in KINDS[:2]:
            raise ConfigError(
                f"{where}: modality '{mod}': kind must be 'tabular' or 'vector', got {spec.get('kind')!r}"
            )
    return recipe


def _check_table_format(value: Any, where: str) -> None:
    formats = value.values() if isinstance(value, dict) else [value]
    keys = set(value) if isinstance(value, dict) else set()
    if keys - {"tabular", "vector"} or any(f not in ("csv", "parquet") for f in formats):
        raise ConfigError(
            f"{where}: table_format must be csv, parquet or {{tabular: csv, vector: parquet}}, "
            f"got {value!r}"
        )


def _check_mcat_recipe(recipe: Mapping[str, Any], where: str) -> None:
    """An ``mcat`` recipe takes its endpoint and modalities from the CSV layout."""
    for key in ("endpoint", "modalities", "patient_id", "missing_values", "drop"):
        if key in recipe:
            raise ConfigError(
                f"{where}: an 'mcat' recipe takes '{key}' from the MCAT layout; remove it "
                "(non-feature columns go under source: drop)."
            )
    bad = set(recipe["source"]) - _MCAT_SOURCE_KEYS
    if bad:
        key = sorted(bad)[0]
        raise ConfigError(
            f"{where}: source: unknown key '{key}'.{did_you_mean(key, _MCAT_SOURCE_KEYS)}"
        )


# ----------------------------------------------------------------- sources
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cohort(recipe: Mapping[str, Any], from_mcat: str | os.PathLike | None) -> Cohort:
    source, name = recipe["source"], recipe["name"]
    if source["package"] != "mcat":
        if from_mcat is not None:
            raise ConfigError(
                f"recipe '{name}' reads the '{source['package']}' package, not a CSV; "
                "from_mcat (--from-mcat) applies only to an 'mcat' recipe such as 'tcga'."
            )
        return _build(recipe, _load_source(recipe))
    if from_mcat is None:
        raise CohortError(
            f"recipe '{name}' builds the cohort from an MCAT/PORPOISE *_all_clean.csv that you "
            "already have; pass it with --from-mcat CSV (from_mcat= in Python)."
        )
    from .mcat import GROUPS, NON_FEATURES, read_mcat_omics

    relations = recipe.get("relations")
    return read_mcat_omics(
        from_mcat,
        groups=source.get("groups", GROUPS),
        clinical_columns=source.get("clinical"),
        drop=source.get("drop", NON_FEATURES),
        relations=None if relations is None else [tuple(r) for r in relations],
    )


def _load_source(recipe: Mapping[str, Any]) -> pd.DataFrame:
    """The source's flat table: endpoint, optional id column, and features."""
    source, name = recipe["source"], recipe["name"]
    package = source["package"]
    if not _importable(_SOURCES[package]):
        raise CohortError(
            f"recipe '{name}' reads its data from the '{_SOURCES[package]}' package, which is "
            f"not installed. Install it with `{_INSTALL[package]}`."
        )
    if package == "sksurv":
        import sksurv.datasets

        loader = str(source.get("loader", ""))
        if not loader.startswith("load_") or not hasattr(sksurv.datasets, loader):
            raise ConfigError(f"recipe '{name}': sksurv.datasets has no loader '{loader}'")
        features, target = getattr(sksurv.datasets, loader)()
        frame = features.reset_index(drop=True).copy()
        for field in target.dtype.names:
            frame[field] = target[field]
        return frame
    from SurvSet.data import SurvLoader

    with warnings.catch_warnings():  # SurvSet's pickles reference numpy.core
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = SurvLoader().load_dataset(ds_name=source["dataset"])
    return loaded["df"].reset_index(drop=True)


# -------------------------------------------------------------------- build
def _build(recipe: Mapping[str, Any], frame: pd.DataFrame) -> Cohort:
    name = recipe["name"]
    time_col, event_col = recipe["endpoint"]["time"], recipe["endpoint"]["event"]
    for col in (time_col, event_col):
        if col not in frame.columns:
            raise CohortError(
                f"recipe '{name}': endpoint column '{col}' is not in the source table"
            )
    ids = _patient_ids(recipe, frame)
    patients = pd.DataFrame(
        {
            "time": frame[time_col].to_numpy(dtype=np.float64),
            "event": frame[event_col].to_numpy().astype(np.int64),
        },
        index=pd.Index(ids, name="patient_id"),
    )
    features = frame.drop(columns=[time_col, event_col])
    features = features.drop(columns=[c for c in ("pid",) if c in features.columns])
    features = _mark_missing(features, recipe.get("missing_values", []))
    dropped = set(_as_list(recipe.get("drop")))
    unknown = sorted(dropped - set(features.columns))
    if unknown:
        raise CohortError(f"recipe '{name}': 'drop' names unknown columns {unknown[:5]}")
    available = [c for c in features.columns if c not in dropped]
    data, kinds, options = {}, {}, {}
    for mod, spec in recipe["modalities"].items():
        cols = _select(spec.get("columns"), available, f"recipe '{name}', modality '{mod}'")
        taken = set(cols)
        available = [c for c in available if c not in taken]
        table = features[cols].set_axis(ids, axis=0).rename_axis("patient_id")
        table.columns = _strip(cols, spec.get("strip_prefix", []), f"recipe '{name}', '{mod}'")
        opts = dict(spec.get("options", {}))
        if spec["kind"] == "tabular":
            cats = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
            opts.setdefault("categorical", cats)
        data[mod], kinds[mod], options[mod] = table, spec["kind"], opts
    if available:
        raise CohortError(
            f"recipe '{name}': columns {available[:8]}{' ...' if len(available) > 8 else ''} "
            f"({len(available)}) go to no modality; add them to a modality or to 'drop'"
        )
    return Cohort.from_frames(
        patients,
        data,
        kinds=kinds,
        options=options,
        relations=recipe.get("relations", []),
        name=name,
    )


def _patient_ids(recipe: Mapping[str, Any], frame: pd.DataFrame) -> list[str]:
    pattern = recipe.get("patient_id", "{i}")
    pids = frame["pid"].tolist() if "pid" in frame.columns else [None] * len(frame)
    ids = [pattern.format(i=i, pid=pid) for i, pid in enumerate(pids)]
    if len(set(ids)) != len(ids):
        raise CohortError(f"recipe '{recipe['name']}': patient_id '{pattern}' gives duplicate ids")
    return ids


def _mark_missing(features: pd.DataFrame, tokens: list[Any]) -> pd.DataFrame:
    """Categories such as ``"missing"``, ``"na"`` or ``"unkown"`` become missing cells.

    Integer categories are made int64 (SurvSet has Int32), the dtype a cohort
    folder reads back, so that a materialised recipe round-trips exactly.
    """
    tokens = {str(t) for t in tokens}
    features = features.copy()
    for col in features.columns[~features.dtypes.map(pd.api.types.is_numeric_dtype)]:
        values = features[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            drop = [c for c in values.cat.categories if str(c) in tokens]
            if drop:
                values = values.cat.remove_categories(drop)
            cats = values.cat.categories
            if pd.api.types.is_integer_dtype(cats.dtype) and cats.dtype != np.int64:
                values = values.cat.rename_categories(cats.astype(np.int64))
            features[col] = values
        elif values.dtype == object:
            features[col] = values.where(~values.astype(str).isin(tokens))
    return features


def _select(rule: Any, available: list[str], where: str) -> list[str]:
    """Columns of ``available`` chosen by a list or a glob/regex/include/exclude mapping."""
    if isinstance(rule, list):
        have = set(available)
        missing = [c for c in rule if c not in have]
        if missing:
            raise CohortError(
                f"{where}: columns {missing} are not in the source table (or are taken by an "
                f"earlier modality).{did_you_mean(missing[0], available)}"
            )
        return list(rule)
    if not isinstance(rule, dict) or not rule:
        raise ConfigError(f"{where}: 'columns' must be a list or a mapping of glob/regex/include")
    bad = set(rule) - _SELECTOR_KEYS
    if bad:
        key = sorted(bad)[0]
        raise ConfigError(
            f"{where}: unknown column rule '{key}'.{did_you_mean(key, _SELECTOR_KEYS)}"
        )
    globs, regexes = _as_list(rule.get("glob")), _as_list(rule.get("regex"))
    include, exclude = set(_as_list(rule.get("include"))), set(_as_list(rule.get("exclude")))
    unknown = sorted((include | exclude) - set(available))
    if unknown:
        raise CohortError(f"{where}: include/exclude name unknown columns {unknown[:5]}")
    chosen = [
        c
        for c in available
        if c not in exclude
        and (
            c in include
            or any(fnmatch.fnmatchcase(c, g) for g in globs)
            or any(re.search(r, c) for r in regexes)
        )
    ]
    if not chosen:
        raise CohortError(f"{where}: the column rule {dict(rule)} matches no column")
    return chosen


def _strip(cols: list[str], prefixes: Any, where: str) -> list[str]:
    prefixes = _as_list(prefixes)
    out = []
    for col in cols:
        hit = next((p for p in prefixes if col.startswith(p)), "")
        out.append(col[len(hit) :])
    if len(set(out)) != len(out):
        raise CohortError(f"{where}: strip_prefix {prefixes} makes column names collide")
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -------------------------------------------------------------------- write
def _write_folder(cohort: Cohort, out: Path, formats: Mapping[str, str], overwrite: bool) -> None:
    """Write ``cohort`` in a hidden sibling folder of ``out``, then move it onto ``out``.

    Every file is written before ``out`` is touched, so an error while writing
    leaves ``out`` as it was. A new or empty ``out`` is replaced by one rename.
    Into a non-empty one (``overwrite``) the files are renamed one by one after
    its ``cohort.yaml`` is removed, the new ``cohort.yaml`` last, as
    ``write_cohort`` does: files that are no part of the old cohort stay.
    """
    from .io import CONFIG, _check_target, _remove_stale

    old = _check_target(out, overwrite)  # refuses a non-empty folder unless overwrite
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_stages(out)
    # The pid tells a later materialize that a stage left by a kill -9 is stale.
    stage = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    done = False
    try:
        try:
            _write_tables(cohort, stage, formats)
        except OSError as err:  # a full disk: say which cohort folder was not written
            raise WriteError(
                f"cannot write the cohort folder '{out}' (it is left as it was): {err}"
            ) from err
        if not out.is_dir() or not any(out.iterdir()):
            os.replace(stage, out)
            done = True
            return
        (out / CONFIG).unlink(missing_ok=True)  # until the new one lands, out is no cohort
        new = {p.name for p in stage.iterdir()}  # files only: recipes have no bag modality
        for name in sorted(new - {CONFIG}):
            os.replace(stage / name, out / name)
        for rel in old - new:
            _remove_stale(out, rel)
        os.replace(stage / CONFIG, out / CONFIG)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not done:  # folders made for `out` go too: a failure leaves no empty folder
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty


def _remove_stale_stages(out: Path) -> None:
    """Remove hidden stages of ``out`` left by a materialize that was killed (pid gone)."""
    from .._lock import _alive

    prefix = f".{out.name}."
    for stage in out.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = stage.name[len(prefix) :].split(".", 1)[0]
        if stage.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def _write_tables(cohort: Cohort, folder: Path, formats: Mapping[str, str]) -> None:
    """``write_cohort`` in the vector format, then the tabular modalities in theirs.

    ``write_cohort`` takes one table format, and the TCGA cohorts keep the small
    clinical table as CSV beside Parquet omics. The dtypes it records hold for both.
    """
    from .._atomic import write_text
    from .io import CONFIG, _write_table, write_cohort

    base, tabular = formats["vector"], formats["tabular"]
    write_cohort(cohort, folder, table_format=base)
    if tabular == base:
        return
    conf = yaml.safe_load((folder / CONFIG).read_text())
    for mod, spec in cohort.modalities.items():
        if spec.kind == "tabular":
            old = conf["modalities"][mod]["path"]
            new = f"{old.removesuffix(f'.{base}')}.{tabular}"
            _write_table(cohort.data[mod], folder / new, tabular)
            (folder / old).unlink()
            conf["modalities"][mod]["path"] = new
    text = yaml.safe_dump(conf, sort_keys=False, allow_unicode=True, default_flow_style=None)
    write_text(folder / CONFIG, text)
