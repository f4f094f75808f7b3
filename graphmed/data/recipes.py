"""Dataset recipes: YAML rules that turn installed public cohorts into a :class:`Cohort`.

A recipe (``datasets/<name>.yaml``, shipped as the package ``graphmed.recipes``)
names a *source* (a loader of an installed package that gives one flat table),
the endpoint columns, how patient ids are made, and which columns form each
modality. Nothing is downloaded: sources are ``sksurv`` (scikit-survival's
bundled datasets) and ``survset`` (the optional SurvSet package). See
``datasets/README.md`` for the schema.

Column rules are applied in modality order, each to the columns not yet taken
by an earlier modality, so "expression = every remaining ``num_*`` column" is
one glob. A column that no modality takes and ``drop`` does not list is an
error, so that a changed upstream table cannot silently lose features.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.resources
import importlib.util
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import CohortError, ConfigError, did_you_mean
from ..typing import KINDS
from .cohort import Cohort

_SOURCES = {"sksurv": "sksurv", "survset": "SurvSet"}  # source -> module to import
_INSTALL = {"sksurv": "pip install scikit-survival", "survset": "pip install graphmed[survset]"}
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
        One dict per recipe: ``name``, ``source`` (e.g. ``"survset:nki70"``),
        ``description``, ``patients`` (int or None), ``available`` (whether the
        source package is installed) and ``note`` (how to install it, or ``""``).
    """
    out = []
    for path in _recipe_files().values():
        recipe = _read_yaml(path)
        package = recipe["source"]["package"]
        available = _importable(_SOURCES[package])
        ident = recipe["source"].get("dataset") or recipe["source"].get("loader", "")
        out.append(
            {
                "name": recipe["name"],
                "source": f"{package}:{ident}",
                "description": recipe.get("description", ""),
                "patients": recipe.get("patients"),
                "available": available,
                "note": "" if available else f"needs {_INSTALL[package]}",
            }
        )
    return out


def load_recipe(name: str) -> Cohort:
    """Build the cohort of a recipe, by name (``"nki70"``) or path to a YAML file."""
    recipe = _read_yaml(_resolve(name))
    frame = _load_source(recipe)
    return _build(recipe, frame)


def materialize(
    name: str, out_dir: str | Path, overwrite: bool = False, *, table_format: str | None = None
) -> Path:
    """Write a recipe's cohort as a cohort folder at ``out_dir`` and return its path.

    Args:
        name: Recipe name or YAML path.
        out_dir: The cohort folder to write (created).
        overwrite: Replace an existing non-empty folder.
        table_format: ``"csv"`` or ``"parquet"``; default: the recipe's
            ``table_format`` or ``"csv"``.
    """
    recipe = _read_yaml(_resolve(name))
    cohort = _build(recipe, _load_source(recipe))
    from .io import write_cohort

    fmt = table_format or recipe.get("table_format", "csv")
    write_cohort(cohort, Path(out_dir), table_format=fmt, overwrite=overwrite)
    return Path(out_dir)


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
    for key in ("name", "source", "endpoint", "modalities"):
        if key not in recipe:
            raise ConfigError(f"{where}: missing required key '{key}'")
    package = recipe["source"].get("package")
    if package not in _SOURCES:
        raise ConfigError(
            f"{where}: unknown source package '{package}'; expected one of {list(_SOURCES)}."
            f"{did_you_mean(package, _SOURCES)}"
        )
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


# ----------------------------------------------------------------- sources
def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


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
