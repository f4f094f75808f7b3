"""Search spaces: a YAML file of config keys and ranges, turned into ``trial.suggest_*``.

A space names dotted keys of :class:`~graphmed.train.config.ExperimentConfig`
(``model.hidden``, ``train.lr``) and how to draw each one::

    description: a small space for GSE7390
    fixed:                        # applied to every trial (optional)
      train.epochs: 60
    params:
      model.hidden: [16, 32, 64]                           # categorical, short form
      model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.05}
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.layers: {type: int, low: 1, high: 3}
      model.completion: {type: categorical, choices: [prompt, zero]}
      model.n_prompts: {type: int, low: 2, high: 8, when: {model.completion: prompt}}

``when`` makes a parameter conditional: it is drawn only when every named key
has one of the given values (a parameter it names must come earlier in
``params``); otherwise the config keeps its value. :meth:`SearchSpace.suggest`
is the one place in graphmed that calls ``trial.suggest_*``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..configuration import from_dict, load_yaml, to_dict
from ..errors import ConfigError, did_you_mean
from ..train.config import ExperimentConfig
from .space_parser import KINDS, TOP_KEYS, check_key, config_keys, parse_param, same, suggest_key

Kind = Literal["float", "int", "categorical"]


@dataclass(frozen=True)
class Param:
    """One searched config key.

    Attributes:
        name: Dotted config key, also the Optuna parameter name.
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: Inclusive bounds of a numeric parameter.
        step: Grid step of a numeric parameter (None: continuous, or 1 for int).
        log: Draw on a log scale (numeric only; not with ``step``).
        choices: The values of a categorical parameter.
        when: Conditions, config key -> allowed values; all must hold.
    """

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def candidates(self) -> list[Any]:
        """Values that stand for the whole range when the space is validated."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


class SearchSpace:
    """A validated search space over :class:`ExperimentConfig` keys.

    Args:
        params: The searched parameters, in drawing order.
        fixed: Config values applied to every trial (dotted key -> value).
        description: Free text.
        source: Where the space came from, for messages.
    """

    def __init__(
        self,
        params: list[Param],
        fixed: Mapping[str, Any] | None = None,
        description: str = "",
        source: str = "<space>",
    ):
        self.params = list(params)
        self.fixed = dict(fixed or {})
        self.description = description
        self.source = source

    # ------------------------------------------------------------- reading
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read and check a space file (see the module docstring for the format)."""
        return cls.from_dict(load_yaml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<space>") -> SearchSpace:
        """Build a space from plain data (a parsed YAML file).

        Raises:
            ConfigError: An unknown section, key or type, a malformed range, a
                key that is not in the config schema, or a bad condition; the
                message names the file and the parameter.
        """
        where = f"search space '{source}'"
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'params', got {data!r}")
        for key in data:
            if key not in TOP_KEYS:
                raise ConfigError(
                    f"{where}: unknown section '{key}'; expected {', '.join(TOP_KEYS)}."
                    f"{did_you_mean(key, TOP_KEYS)}"
                )
        raw = data.get("params")
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(
                f"{where}: 'params' must map config keys to ranges, e.g. "
                "'params: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}'"
            )
        fixed = data.get("fixed") or {}
        if not isinstance(fixed, Mapping):
            raise ConfigError(f"{where}: 'fixed' must map config keys to values, got {fixed!r}")
        keys = config_keys()
        for name in list(raw) + list(fixed):
            check_key(str(name), keys, where)
        for name in raw:
            if name in fixed:
                raise ConfigError(f"{where}: '{name}' is both in 'params' and in 'fixed'; keep one")
        params = [
            Param(str(name), **parse_param(str(name), spec, keys, where))
            for name, spec in raw.items()
        ]
        space = cls(params, fixed, str(data.get("description") or ""), source)
        space._check_conditions(where)
        return space

    def _check_conditions(self, where: str) -> None:
        order = {p.name: i for i, p in enumerate(self.params)}
        keys = list(config_keys())
        for i, p in enumerate(self.params):
            for key, allowed in p.when.items():
                if key not in keys:
                    raise ConfigError(
                        f"{where}: params.{p.name}.when names '{key}', which is not a config "
                        f"key.{suggest_key(key, keys)}"
                    )
                if key == p.name:
                    raise ConfigError(f"{where}: params.{p.name}.when cannot name itself")
                if key in order and order[key] > i:
                    raise ConfigError(
                        f"{where}: params.{p.name} depends on '{key}', which is declared after "
                        f"it; move '{key}' above '{p.name}'"
                    )
                other = self.params[order[key]] if key in order else None
                if other is not None and other.kind == "categorical":
                    for value in allowed:
                        if not any(same(value, c) for c in other.choices):
                            raise ConfigError(
                                f"{where}: params.{p.name}.when expects {key}={value!r}, but "
                                f"'{key}' takes only {list(other.choices)}."
                                f"{did_you_mean(value, other.choices)}"
                            )

    # -------------------------------------------------------------- using
    def validate(self, base: ExperimentConfig) -> None:
        """Check that ``fixed`` and every bound and choice make a valid config from ``base``.

        Raises:
            ConfigError: The first value the config schema refuses, with its parameter.
        """
        where = f"search space '{self.source}'"
        try:
            self.apply(base, {})
        except ConfigError as err:
            raise ConfigError(f"{where}: 'fixed': {err}") from None
        for p in self.params:
            for value in p.candidates():
                try:
                    self.apply(base, {p.name: value})
                except ConfigError as err:
                    raise ConfigError(f"{where}: params.{p.name} = {value!r}: {err}") from None

    def suggest(self, trial: Any, base: ExperimentConfig) -> dict[str, Any]:
        """Draw the active parameters of one trial, in order (the only ``suggest_*`` calls).

        Args:
            trial: An ``optuna.Trial`` (or ``optuna.trial.FixedTrial``).
            base: The config that inactive parameters and conditions read from.

        Returns:
            Dotted key -> drawn value, for the parameters whose conditions held.
        """
        drawn: dict[str, Any] = {}
        for p in self.params:
            if all(
                any(same(self._current(key, drawn, base), v) for v in allowed)
                for key, allowed in p.when.items()
            ):
                drawn[p.name] = p.suggest(trial)
        return drawn

    def _current(self, key: str, drawn: Mapping[str, Any], base: ExperimentConfig) -> Any:
        if key in drawn:
            return drawn[key]
        if key in self.fixed:
            return self.fixed[key]
        value: Any = base
        for part in key.split("."):
            value = getattr(value, part)
        return value

    def apply(self, base: ExperimentConfig, params: Mapping[str, Any]) -> ExperimentConfig:
        """``base`` with ``fixed`` and then ``params`` set; checked by the config schema."""
        data = to_dict(base)
        for key, value in [*self.fixed.items(), *params.items()]:
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            # 12 significant digits: a stepped draw's 0.30000000000000004 is written as 0.3
            node[leaf] = float(f"{value:.12g}") if isinstance(value, float) else value
        return from_dict(ExperimentConfig, data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back (stored with each study)."""
        params = {}
        for p in self.params:
            spec: dict[str, Any] = {"type": p.kind}
            if p.kind == "categorical":
                spec["choices"] = list(p.choices)
            else:
                spec.update(low=p.low, high=p.high)
                if p.step is not None:
                    spec["step"] = p.step
                if p.log:
                    spec["log"] = True
            if p.when:
                spec["when"] = {k: list(v) for k, v in p.when.items()}
            params[p.name] = spec
        return {"description": self.description, "fixed": dict(self.fixed), "params": params}

    def fingerprint(self) -> str:
        """A short hash of the space, to notice a study resumed with a changed space."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.params)
        return f"SearchSpace({names})"


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space YAML file (see :class:`SearchSpace`)."""
    return SearchSpace.from_yaml(path)


__all__ = ["KINDS", "Param", "SearchSpace", "config_keys", "load_space"]
