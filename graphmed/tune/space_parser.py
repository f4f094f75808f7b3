"""Reading and checking a search-space file: config keys, ranges and conditions.

:mod:`graphmed.tune.search_space` builds the space from what these functions
return; nothing here touches Optuna.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..train.config import ExperimentConfig

KINDS: tuple[str, ...] = ("float", "int", "categorical")
TOP_KEYS: tuple[str, ...] = ("description", "fixed", "params")
SPEC_KEYS: tuple[str, ...] = ("type", "low", "high", "step", "log", "choices", "when")
_UNTUNABLE = ("eval.",)  # the tuner owns evaluation: folds, seeds and baselines


def config_keys(cls: type = ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf key of the config schema, dotted (``"model.hidden"``), with its type."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.update(config_keys(tp, key + "."))
        else:
            out[key] = tp
    return out


def suggest_key(name: str, keys: list[str]) -> str:
    """``" Did you mean 'model.hidden'?"`` for a mistyped or unqualified key, or ``""``."""
    hint = did_you_mean(name, keys)
    if hint:
        return hint
    leaf = name.rsplit(".", 1)[-1]
    for key in keys:  # "hidden" -> "model.hidden"
        if key.rsplit(".", 1)[-1] == leaf:
            return f" Did you mean '{key}'?"
    return did_you_mean(leaf, keys)


def _numeric_kind(tp: Any) -> str | None:
    """``"int"``, ``"float"`` or None: which numeric draws a field of type ``tp`` accepts."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if tp is float or tp is Any:
        return "float"
    if tp is int:
        return "int"
    return None


def same(a: Any, b: Any) -> bool:
    """Equality that keeps ``True`` apart from ``1`` (YAML conditions on booleans)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def check_key(name: str, keys: Mapping[str, Any], where: str) -> None:
    """Raise a :class:`ConfigError` unless ``name`` is a config key that may be tuned."""
    if name not in keys:
        raise ConfigError(
            f"{where}: '{name}' is not a config key.{suggest_key(name, list(keys))} "
            "Keys are dotted paths of configs/default.yaml, e.g. 'model.hidden'."
        )
    if name.startswith(_UNTUNABLE):
        raise ConfigError(
            f"{where}: '{name}' cannot be tuned: the tuner sets the evaluation (use "
            "--inner-folds and the config's eval.folds instead)"
        )


def parse_param(name: str, spec: Any, keys: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The fields of one parameter (``kind``, ``low``, ...) from its YAML spec, checked."""
    at = f"{where}: params.{name}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{at}: expected a list of choices or a mapping such as "
            f"{{type: float, low: 0.0, high: 0.5}}, got {spec!r}"
        )
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(
                f"{at}: unknown option '{key}'; expected {', '.join(SPEC_KEYS)}."
                f"{did_you_mean(key, SPEC_KEYS)}"
            )
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind is None:
        raise ConfigError(f"{at}: say 'type: float', 'type: int' or give 'choices: [...]'")
    if kind not in KINDS:
        raise ConfigError(
            f"{at}: unknown type '{kind}'; expected one of {', '.join(KINDS)}."
            f"{did_you_mean(kind, KINDS)}"
        )
    when = _parse_when(spec.get("when"), at)
    if kind == "categorical":
        return _parse_categorical(name, spec, when, at)
    return _parse_numeric(name, kind, spec, keys[name], when, at)


def _parse_categorical(name: str, spec: Mapping[str, Any], when, at: str) -> dict[str, Any]:
    extra = [k for k in ("low", "high", "step", "log") if k in spec]
    if extra:
        raise ConfigError(f"{at}: a categorical parameter takes 'choices', not {extra}")
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{at}: 'choices' must be a non-empty list, got {choices!r}")
    for c in choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            raise ConfigError(
                f"{at}: choice {c!r} is a {type(c).__name__}; choices must be numbers, "
                "strings, booleans or null (Optuna stores them)"
            )
    return {"kind": "categorical", "choices": tuple(choices), "when": when}


def _parse_numeric(name, kind, spec, field_type, when, at: str) -> dict[str, Any]:
    if "choices" in spec:
        raise ConfigError(f"{at}: 'choices' belongs to type: categorical, not type: {kind}")
    accepts = _numeric_kind(field_type)
    if accepts is None:
        raise ConfigError(
            f"{at}: this key is not numeric; search it with 'choices: [...]' instead of type: {kind}"
        )
    if kind == "float" and accepts == "int":
        raise ConfigError(f"{at}: this key takes integers; use 'type: int'")
    low, high, step, log = (
        spec.get("low"),
        spec.get("high"),
        spec.get("step"),
        spec.get("log", False),
    )
    for label, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at}: '{label}' must be a number, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: 'log' must be true or false, got {log!r}")
    if not low < high:
        raise ConfigError(
            f"{at}: expected low < high, got low={low}, high={high} "
            "(a single value belongs in 'fixed')"
        )
    if log and low <= 0:
        raise ConfigError(f"{at}: a log scale needs low > 0, got low={low}")
    if step is not None:
        if log:
            raise ConfigError(f"{at}: 'step' and 'log: true' cannot be used together; pick one")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{at}: 'step' must be a positive number, got {step!r}")
    if kind == "int":
        for label, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                raise ConfigError(f"{at}: type: int needs an integer '{label}', got {value}")
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    return {"kind": kind, "low": low, "high": high, "step": step, "log": log, "when": when}


def _parse_when(raw: Any, at: str) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(
            f"{at}: 'when' must map config keys to values, e.g. when: {{model.completion: prompt}}"
        )
    return {str(k): tuple(v) if isinstance(v, list) else (v,) for k, v in raw.items()}


__all__ = [
    "KINDS",
    "SPEC_KEYS",
    "TOP_KEYS",
    "check_key",
    "config_keys",
    "parse_param",
    "same",
    "suggest_key",
]
