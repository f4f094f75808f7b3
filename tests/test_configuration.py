from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from graphmed.configuration import (
    apply_overrides,
    deep_merge,
    dump_yaml,
    from_dict,
    load_config,
    load_yaml,
    to_dict,
    to_yaml,
)
from graphmed.errors import ConfigError


class Pooling(enum.Enum):
    MEAN = "mean"
    MAX = "max"


@dataclass
class Model:
    hidden: int = 128
    dropout: float = 0.1
    heads: int = 4
    act: Literal["relu", "gelu"] = "relu"
    pooling: Pooling = Pooling.MEAN
    metapaths: list[list[str]] = field(default_factory=list)


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Optional[str] = None  # noqa: UP045 (typing.Union, not types.UnionType)


@dataclass
class Config:
    name: str
    model: Model = field(default_factory=Model)
    optim: Optim = field(default_factory=Optim)
    seeds: tuple[int, ...] = (0,)
    folds: int | None = None
    amp: bool = True
    cache: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    per_modality: dict[str, Model] = field(default_factory=dict)


@dataclass
class Positive:
    n: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass
class Holder:
    inner: Positive = field(default_factory=Positive)


def test_from_dict_nested_and_defaults():
    cfg = from_dict(
        Config, {"name": "run", "model": {"hidden": 256}, "optim": {"betas": [0.8, 0.9]}}
    )
    assert cfg == Config(name="run", model=Model(hidden=256), optim=Optim(betas=(0.8, 0.9)))
    assert isinstance(cfg.optim.betas, tuple)


def test_from_dict_containers_and_enums():
    cfg = from_dict(
        Config,
        {
            "name": "x",
            "seeds": [1, 2, 3],
            "cache": "/tmp/c",
            "model": {"pooling": "max", "metapaths": [["a", "b"]]},
            "per_modality": {"wsi": {"hidden": 8}},
            "extra": {"anything": [1, {"x": None}]},
        },
    )
    assert cfg.seeds == (1, 2, 3)
    assert cfg.cache == Path("/tmp/c")
    assert cfg.model.pooling is Pooling.MAX
    assert cfg.per_modality == {"wsi": Model(hidden=8)}
    assert cfg.extra == {"anything": [1, {"x": None}]}


def test_light_coercion():
    cfg = from_dict(Config, {"name": "x", "optim": {"lr": "1e-3"}, "model": {"dropout": 0}})
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert from_dict(Model, {"hidden": 256.0}).hidden == 256
    assert from_dict(Config, {"name": "x", "folds": None}).folds is None
    assert from_dict(Config, {"name": "x", "folds": "5"}).folds == 5


def test_unknown_key_full_path_and_suggestion():
    with pytest.raises(
        ConfigError, match=r"^unknown key 'model\.hiden'\. Did you mean 'model\.hidden'\?$"
    ):
        from_dict(Config, {"name": "x", "model": {"hiden": 3}})
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'per_modality\.wsi\.hiden'\. Did you mean 'per_modality\.wsi\.hidden'",
    ):
        from_dict(Config, {"name": "x", "per_modality": {"wsi": {"hiden": 3}}})
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'\. Valid keys: name, model, optim"):
        from_dict(Config, {"name": "x", "zzz": 1})


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"missing required key 'name' \(str\)"):
        from_dict(Config, {})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"hidden": "big"}}, r"'model\.hidden': expected int, got 'big' \(str\)"),
        ({"model": {"hidden": 2.5}}, r"'model\.hidden': expected int, got 2\.5 \(float\)"),
        ({"amp": 1}, r"'amp': expected bool, got 1 \(int\)"),
        ({"amp": "yes"}, r"'amp': expected bool, got 'yes' \(str\)"),
        ({"model": {"hidden": True}}, r"'model\.hidden': expected int, got True \(bool\)"),
        ({"optim": {"lr": "fast"}}, r"'optim\.lr': expected float, got 'fast' \(str\)"),
        ({"seeds": [1, "a"]}, r"'seeds\[1\]': expected int, got 'a'"),
        ({"seeds": 3}, r"'seeds': expected tuple\[int, \.\.\.\], got 3 \(int\)"),
        ({"optim": {"betas": [0.9]}}, r"'optim\.betas': expected 2 items"),
        ({"folds": "many"}, r"'folds': expected int \| None, got 'many'"),
        ({"optim": {"schedule": 3}}, r"'optim\.schedule': expected Optional\[str\], got 3"),
        ({"model": 5}, r"'model': expected Model, got 5 \(int\)"),
        ({"name": 7}, r"'name': expected str, got 7 \(int\)"),
        ({"per_modality": {"wsi": 3}}, r"'per_modality\.wsi': expected Model, got 3"),
    ],
)
def test_wrong_types_name_path_type_and_value(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Config, {"name": "x", **data})


def test_literal_and_enum_membership_with_suggestion():
    with pytest.raises(
        ConfigError,
        match=r"'model\.act': expected one of 'relu', 'gelu', got 'gelus'\. Did you mean 'gelu'\?",
    ):
        from_dict(Config, {"name": "x", "model": {"act": "gelus"}})
    with pytest.raises(
        ConfigError,
        match=r"'model\.pooling': expected one of 'mean', 'max', got 'maxx'\. Did you mean 'max'\?",
    ):
        from_dict(Config, {"name": "x", "model": {"pooling": "maxx"}})
    assert from_dict(Model, {"act": "gelu"}).act == "gelu"


def test_post_init_errors_get_the_path():
    with pytest.raises(ConfigError, match=r"'inner': n must be >= 1, got 0"):
        from_dict(Holder, {"inner": {"n": 0}})


@dataclass
class Maybe:
    model: Model | None = None


def test_nested_error_inside_optional_keeps_its_message():
    assert from_dict(Maybe, {"model": {"hidden": 2}}) == Maybe(Model(hidden=2))
    assert from_dict(Maybe, {"model": None}) == Maybe()
    with pytest.raises(ConfigError, match=r"^unknown key 'model\.hiden'\. Did you mean"):
        from_dict(Maybe, {"model": {"hiden": 1}})
    with pytest.raises(ConfigError, match=r"'model\.act': expected one of 'relu', 'gelu'"):
        from_dict(Maybe, {"model": {"act": "tanh"}})


def test_round_trip():
    cfg = Config(
        name="r",
        model=Model(hidden=64, act="gelu", pooling=Pooling.MAX, metapaths=[["a", "b"]]),
        optim=Optim(lr=2e-4, betas=(0.5, 0.6), schedule="cosine"),
        seeds=(3, 4),
        folds=5,
        cache=Path("c"),
        extra={"k": [1, 2]},
        per_modality={"wsi": Model(hidden=8)},
    )
    plain = to_dict(cfg)
    assert plain["optim"]["betas"] == [0.5, 0.6]
    assert plain["model"]["pooling"] == "max" and plain["cache"] == "c"
    assert from_dict(Config, plain) == cfg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.hidden=256", 256),
        ("model.hidden=[1,2]", [1, 2]),
        ("model.hidden=true", True),
        ("model.hidden=1e-3", 0.001),
        ("model.hidden=-2.5E+2", -250.0),
        ("model.hidden=[1e-3, 2]", [0.001, 2]),
        ("model.hidden=gelu", "gelu"),
        ("model.hidden='1e-3'", "1e-3"),
        ("model.hidden=null", None),
        ("model.hidden=", None),
        ("model.hidden={a: 1}", {"a": 1}),
        ("model.hidden=a=b", "a=b"),
    ],
)
def test_override_values(override, expected):
    out = apply_overrides({"model": {"hidden": 1}}, [override])
    assert out == {"model": {"hidden": expected}}


def test_overrides_create_nested_keys_and_do_not_mutate_input():
    data = {"model": {"hidden": 1}, "name": "x"}
    out = apply_overrides(data, ["optim.lr=0.01", " model.heads = 2 "])
    assert out == {"model": {"hidden": 1, "heads": 2}, "name": "x", "optim": {"lr": 0.01}}
    assert data == {"model": {"hidden": 1}, "name": "x"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hidden", r"malformed override 'model\.hidden'; expected KEY=VALUE"),
        ("=3", "malformed override"),
        ("model..hidden=3", "malformed override"),
        ("name.first=3", r"'name' is 'x', not a mapping"),
        ("model.hidden=[1,2", "value is not valid YAML"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"name": "x"}, [override])


def test_override_unknown_key_caught_by_from_dict():
    data = apply_overrides({"name": "x"}, ["model.hiden=3"])
    with pytest.raises(ConfigError, match="Did you mean 'model.hidden'"):
        from_dict(Config, data)


def test_deep_merge():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert deep_merge(base, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_load_yaml_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_yaml(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  hidden: 1\n   heads: [2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in '.*bad\.yaml' at line 4"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(
        ConfigError, match=r"'.*list\.yaml': the top level must be a mapping .* got a list"
    ):
        load_yaml(listy)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_load_config_layers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: file\nmodel:\n  hidden: 64\n  heads: 2\n")
    base = {"name": "base", "model": {"hidden": 8, "dropout": 0.5}}
    cfg = load_config(Config, path, overrides=["model.heads=16", "optim.lr=1e-2"], base=base)
    assert cfg.name == "file"
    assert cfg.model == Model(hidden=64, dropout=0.5, heads=16)
    assert cfg.optim.lr == 0.01
    assert load_config(Config, overrides=["name=o"]) == Config(name="o")
    with pytest.raises(ConfigError, match="unknown key 'model.hiden'. Did you mean 'model.hidden'"):
        load_config(Config, path, overrides=["model.hiden=1"])


def test_dump_yaml_round_trip(tmp_path):
    cfg = Config(name="d", optim=Optim(betas=(0.1, 0.2)), seeds=(1, 2), cache=Path("x"))
    path = tmp_path / "sub" / "out.yaml"
    dump_yaml(cfg, path)
    assert load_config(Config, path) == cfg
    assert path.read_text() == to_yaml(cfg)
    assert to_yaml(cfg).startswith("name: d\nmodel:\n")  # field order kept
    assert [p.name for p in path.parent.iterdir()] == ["out.yaml"]  # no temp file left


def test_configs_default_yaml_writes_out_the_defaults():
    from graphmed.train.config import ExperimentConfig, load_experiment

    root = Path(__file__).resolve().parents[1]
    assert load_experiment(root / "configs" / "default.yaml") == ExperimentConfig()
