"""Typed configuration: YAML files and ``key=value`` overrides into dataclasses.

The machinery here knows no schema. A schema is a tree of dataclasses; a
config is built in three layers, each deep-merged over the previous one::

    defaults (a dict)  <-  YAML file  <-  overrides ("model.hidden=256")

and then checked and converted by :func:`from_dict`, which names the dotted
path of any unknown key (with a suggestion) or wrongly typed value.
:func:`to_dict` is its inverse, so ``from_dict(C, to_dict(c)) == c``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from ._atomic import write_text
from .errors import ConfigError, GraphMedError, did_you_mean

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` (no dot, as YAML 1.1 wants) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class FieldValueError(ConfigError):
    """A field's value is out of range: raised by a schema's ``__post_init__``.

    The message names the field as ``'key'``; :func:`from_dict` names it by
    its dotted path in the whole config (``'train.batch_size'``) instead.

    Args:
        key: The field's name.
        text: What is wrong, after the key (``"must be at least 1, got 0"``).
            ``{0}``, ``{1}``... stand for the names of ``siblings``, which get
            their dotted paths too.
        siblings: Other fields of the same dataclass that ``text`` names.
    """

    def __init__(self, key: str, text: str, siblings: Sequence[str] = ()):
        self.key, self.text, self.siblings = key, text, tuple(siblings)
        super().__init__(self.at(""))

    def at(self, path: str) -> str:
        """The message with every field named by its path under ``path``."""
        names = [f"'{_join(path, s)}'" for s in self.siblings]
        return f"'{_join(path, self.key)}' {self.text.format(*names)}"


def check_range(
    obj: Any,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> None:
    """Raise :class:`FieldValueError` unless ``getattr(obj, key)`` lies in the range.

    ``low`` / ``high`` are inclusive bounds unless ``low_open`` / ``high_open``;
    ``None`` means no bound. ``allow_none``: a ``None`` value passes.
    """
    value = getattr(obj, key)
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and value == value  # NaN fails every bound
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    if low is not None and high is not None:
        expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        expected = f"{'greater than' if low_open else 'at least'} {low:g}"
    else:
        expected = f"{'less than' if high_open else 'at most'} {high:g}"
    extra = " (or null)" if allow_none else ""
    text = f"must be {expected}{extra}, got {value!r}" + (f"; {hint}" if hint else "")
    raise FieldValueError(key, text.replace("{", "{{").replace("}", "}}"))


class _Mismatch(Exception):
    """A value does not fit a type (turned into a ConfigError by the caller)."""


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build the dataclass ``cls`` (recursively) from a mapping.

    Supported field types: nested dataclasses, ``X | None`` and other unions,
    ``list[X]``, ``tuple[X, ...]`` and ``tuple[X, Y]``, ``dict[K, V]``,
    ``Literal[...]``, enums, ``Path``, ``Any``, and ``int``, ``float``,
    ``str``, ``bool``. Coercion is light: an int or a numeric string (such
    as ``"1e-3"``) is accepted for a float, an integral float or string for an
    int; a bool must be a bool.

    Args:
        cls: The dataclass to build.
        data: Its fields by name; missing fields take their defaults.
        path: Dotted path of ``data`` in the whole config, for messages.

    Raises:
        ConfigError: An unknown or missing key, or a value of the wrong type,
            named by its dotted path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"'{path or '<root>'}': expected a mapping for {cls.__name__}, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = (
                f" Did you mean '{_join(path, close[0])}'?"
                if close
                else f" Valid keys: {', '.join(fields)}."
            )
            raise ConfigError(f"unknown key '{_join(path, key)}'.{hint}")
    kwargs = {}
    for name, f in fields.items():
        where = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{where}' ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except FieldValueError as exc:
        raise ConfigError(exc.at(path)) from None
    except GraphMedError:
        raise
    except ValueError as exc:  # a __post_init__ check: say where it happened
        raise ConfigError(f"'{path or '<root>'}': {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Plain data from ``obj``: dataclasses -> dicts, tuples -> lists, enums -> values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        return obj.item()
    return obj


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _convert(tp: Any, value: Any, path: str) -> Any:
    try:
        return _fit(tp, value, path, coerce=False)
    except _Mismatch:
        pass
    try:
        return _fit(tp, value, path, coerce=True)
    except _Mismatch:
        raise ConfigError(
            f"'{path}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        ) from None


def _fit(tp: Any, value: Any, path: str, coerce: bool) -> Any:
    """``value`` as type ``tp``; strictly first, then (``coerce``) with light coercion."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Union or origin is types.UnionType:
        # Every member strictly before any coercion; if none fits, the most
        # specific message (e.g. a nested unknown key) wins over a bare mismatch.
        first_error: ConfigError | None = None
        for strict, arg in [(True, a) for a in args] + [(False, a) for a in args if coerce]:
            try:
                return _fit(arg, value, path, coerce=not strict)
            except _Mismatch:
                pass
            except ConfigError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        raise _Mismatch
    if origin is Literal:
        for choice in args:
            if type(choice) is type(value) and choice == value:
                return value
        if not coerce:
            raise _Mismatch
        shown = ", ".join(repr(c) for c in args)
        raise ConfigError(
            f"'{path}': expected one of {shown}, got {value!r}.{did_you_mean(value, args)}"
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, path)
        raise _Mismatch
    if origin in (list, tuple, Sequence, Iterable) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"'{path}': expected {len(args)} items ({_type_name(tp)}), got {value!r}"
                )
            return tuple(
                _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if tuple in (origin, tp) else items
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        kt, vt = args if args else (Any, Any)
        return {
            _convert(kt, k, _join(path, k)): _convert(vt, v, _join(path, k))
            for k, v in value.items()
        }
    return _fit_scalar(tp, value, path, coerce)


def _fit_scalar(tp: Any, value: Any, path: str, coerce: bool) -> Any:
    if tp in (bool, int, float):
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
        if not coerce or tp is bool or isinstance(value, bool):
            raise _Mismatch
        if tp is float and isinstance(value, int):
            return float(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        if not coerce:
            raise _Mismatch
        values = [e.value for e in tp]
        if value in values:
            return tp(value)
        raise ConfigError(
            f"'{path}': expected one of {', '.join(map(repr, values))}, got {value!r}."
            f"{did_you_mean(value, values)}"
        )
    if tp is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    if not isinstance(tp, type):  # an annotation we do not check (TypeVar, Callable, ...)
        return value
    raise _Mismatch


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set nested keys from ``"a.b.c=VALUE"`` strings; return a new dict.

    ``VALUE`` is read as YAML: ``256`` -> 256, ``[1,2]`` -> a list, ``true`` ->
    True, ``null`` or nothing -> None, and (unlike YAML 1.1) ``1e-3`` -> 0.001
    (``'1e-3'``, quoted, stays a string). Missing intermediate keys are
    created; unknown keys are left for :func:`from_dict` to report.

    Raises:
        ConfigError: An override without ``=``, with an empty key, with a value
            that is not YAML, or that descends into a non-mapping value.
    """
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        keys = [k.strip() for k in key.split(".")]
        if not sep or not all(keys):
            raise ConfigError(
                f"malformed override {item!r}; expected KEY=VALUE with a dotted key, "
                "e.g. 'model.hidden=256'"
            )
        try:
            value = yaml.load(raw.strip(), Loader=_Loader) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.setdefault(k, {})
            if isinstance(child, Mapping) and not isinstance(child, dict):
                child = node[k] = dict(child)
            if not isinstance(child, dict):
                where = ".".join(keys[: i + 1])
                raise ConfigError(
                    f"override {item!r}: '{where}' is {child!r}, not a mapping of keys"
                )
            node = child
        node[keys[-1]] = value
    return out


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``; mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file gives ``{}``).

    Plain scalars such as ``1e-3`` are read as floats, as in YAML 1.2.

    Raises:
        ConfigError: The file is missing, is not valid YAML (file and line are
            named), or its top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist or is not a file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"invalid YAML in '{path}'{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"'{path}': the top level must be a mapping of keys to values, "
            f"got a {type(data).__name__}"
        )
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, a YAML file and overrides, in that order.

    Args:
        cls: The schema dataclass.
        path: A YAML file, or None for defaults and overrides only.
        overrides: ``"a.b.c=VALUE"`` strings (see :func:`apply_overrides`).
        base: Defaults under the file, deep-merged (default: none).
    """
    data = deep_merge(base or {}, load_yaml(path) if path is not None else {})
    return from_dict(cls, apply_overrides(data, overrides))


def to_yaml(obj: Any) -> str:
    """``obj`` (a dataclass or plain data) as YAML text, keys in field order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as YAML to ``path`` atomically (readable by :func:`load_config`)."""
    write_text(path, to_yaml(obj))
