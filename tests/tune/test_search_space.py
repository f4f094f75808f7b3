from pathlib import Path

import optuna
import pytest

from graphmed.errors import ConfigError
from graphmed.train.config import load_experiment
from graphmed.tune import SearchSpace, config_keys, load_space

SWEEPS = sorted((Path(__file__).resolve().parents[2] / "configs" / "sweeps").glob("*.yaml"))

SPACE = {
    "fixed": {"train.epochs": 7},
    "params": {
        "model.hidden": [16, 32],
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "model.layers": {"type": "int", "low": 1, "high": 3},
        "model.completion": {"type": "categorical", "choices": ["prompt", "zero"]},
        "model.n_prompts": {
            "type": "int",
            "low": 2,
            "high": 8,
            "when": {"model.completion": "prompt"},
        },
    },
}


def _space(**params):
    return SearchSpace.from_dict({"params": params}, source="test.yaml")


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_validate_against_the_config(path):
    space = load_space(path)
    base = load_experiment(None)
    space.validate(base)
    assert space.params and all(p.name in config_keys() for p in space.params)
    drawn = space.suggest(optuna.create_study().ask(), base)  # one real draw of every kind
    config = space.apply(base, drawn)
    for key, value in drawn.items():
        section, leaf = key.split(".")
        assert getattr(getattr(config, section), leaf) == pytest.approx(value)


def test_suggest_draws_each_kind_and_applies_it():
    space = SearchSpace.from_dict(SPACE)
    base = load_experiment(None)
    trial = optuna.trial.FixedTrial(
        {
            "model.hidden": 32,
            "model.dropout": 0.3,
            "train.lr": 0.002,
            "model.layers": 3,
            "model.completion": "prompt",
            "model.n_prompts": 4,
        }
    )
    drawn = space.suggest(trial, base)
    assert drawn["model.n_prompts"] == 4
    config = space.apply(base, drawn)
    assert (config.model.hidden, config.model.layers, config.model.n_prompts) == (32, 3, 4)
    assert config.train.lr == pytest.approx(0.002) and config.train.epochs == 7  # fixed applied
    assert base.train.epochs != 7  # the base config is not modified


def test_conditional_parameter_is_skipped_when_its_condition_fails():
    space = SearchSpace.from_dict(SPACE)
    base = load_experiment(None)
    values = {"model.hidden": 16, "model.dropout": 0.0, "train.lr": 1e-3, "model.layers": 1}
    drawn = space.suggest(optuna.trial.FixedTrial({**values, "model.completion": "zero"}), base)
    assert "model.n_prompts" not in drawn
    assert space.apply(base, drawn).model.n_prompts == base.model.n_prompts
    # the condition may also read the base config when the key is not searched
    only = _space(
        **{
            "model.n_bank": {
                "type": "int",
                "low": 2,
                "high": 4,
                "when": {"model.completion": "zero"},
            }
        }
    )
    assert only.suggest(optuna.trial.FixedTrial({"model.n_bank": 3}), base) == {}


def test_optuna_study_records_the_distributions():
    space = SearchSpace.from_dict(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: float(len(space.suggest(t, load_experiment(None)))), n_trials=8)
    dists = {k: type(v).__name__ for t in study.trials for k, v in t.distributions.items()}
    assert dists["model.hidden"] == "CategoricalDistribution"
    assert dists["model.layers"] == "IntDistribution"
    lr = study.trials[0].distributions["train.lr"]
    assert lr.log and (lr.low, lr.high) == (1e-4, 1e-2)
    for t in study.trials:  # conditional: n_prompts exactly in the prompt trials
        assert ("model.n_prompts" in t.params) == (t.params["model.completion"] == "prompt")


def test_round_trip_through_plain_data():
    space = SearchSpace.from_dict(SPACE)
    again = SearchSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()
    assert again.fingerprint() == space.fingerprint()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.hiden": [8, 16]},
            "'model.hiden' is not a config key. Did you mean 'model.hidden'",
        ),
        ({"hidden": [8, 16]}, "Did you mean 'model.hidden'"),
        ({"eval.folds": [3, 5]}, "'eval.folds' cannot be tuned"),
        (
            {"train.lr": {"type": "flaot", "low": 0.1, "high": 1}},
            "unknown type 'flaot'.*Did you mean 'float'",
        ),
        (
            {"train.lr": {"type": "float", "lo": 0.1, "high": 1}},
            "unknown option 'lo'.*Did you mean 'low'",
        ),
        ({"train.lr": {"low": 0.1, "high": 1}}, "say 'type: float', 'type: int'"),
        ({"train.lr": {"type": "float", "low": 1, "high": 0.1}}, "expected low < high"),
        (
            {"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}},
            "log scale needs low > 0",
        ),
        (
            {"train.lr": {"type": "float", "low": 0.1, "high": 1, "log": True, "step": 0.1}},
            "'step' and 'log: true' cannot be used together",
        ),
        (
            {"model.layers": {"type": "int", "low": 1, "high": 2.5}},
            "type: int needs an integer 'high'",
        ),
        (
            {"model.hidden": {"type": "float", "low": 8, "high": 64}},
            "this key takes integers; use 'type: int'",
        ),
        (
            {"model.completion": {"type": "int", "low": 0, "high": 1}},
            "not numeric; search it with 'choices",
        ),
        ({"model.metapaths": [["clinical"]]}, "choices must be numbers, strings"),
        ({"model.hidden": {"type": "categorical", "choices": []}}, "non-empty list"),
        (
            {
                "model.n_prompts": {
                    "type": "int",
                    "low": 2,
                    "high": 4,
                    "when": {"model.completion": "prompt"},
                },
                "model.completion": ["prompt", "zero"],
            },
            "declared after it; move 'model.completion' above 'model.n_prompts'",
        ),
        (
            {
                "model.completion": ["prompt", "zero"],
                "model.n_prompts": {
                    "type": "int",
                    "low": 2,
                    "high": 4,
                    "when": {"model.completion": "promt"},
                },
            },
            "takes only \\['prompt', 'zero'\\]. Did you mean 'prompt'",
        ),
        (
            {
                "model.n_prompts": {
                    "type": "int",
                    "low": 2,
                    "high": 4,
                    "when": {"model.complete": "prompt"},
                }
            },
            "names 'model.complete', which is not a config key. Did you mean 'model.completion'",
        ),
    ],
)
def test_bad_spaces_say_what_to_fix(params, message):
    with pytest.raises(ConfigError, match=message):
        _space(**params)


def test_bad_sections_and_values_are_refused():
    with pytest.raises(ConfigError, match="unknown section 'param'.*Did you mean 'params'"):
        SearchSpace.from_dict({"param": {"model.hidden": [8]}})
    with pytest.raises(ConfigError, match="'params' must map config keys"):
        SearchSpace.from_dict({"params": {}})
    with pytest.raises(ConfigError, match="both in 'params' and in 'fixed'"):
        SearchSpace.from_dict({"params": {"model.hidden": [8]}, "fixed": {"model.hidden": 8}})
    # values are checked against the config schema, with the schema's own suggestion
    space = _space(**{"model.completion": ["prompt", "zeros"]})
    with pytest.raises(ConfigError, match="params.model.completion = 'zeros'.*Did you mean 'zero'"):
        space.validate(load_experiment(None))
    fixed = SearchSpace.from_dict(
        {"params": {"model.hidden": [8]}, "fixed": {"train.epochs": "many"}}
    )
    with pytest.raises(ConfigError, match="'fixed'.*train.epochs"):
        fixed.validate(load_experiment(None))


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("params:\n  model.hiden: [8, 16]\n")
    with pytest.raises(ConfigError, match=f"search space '{path}'.*model.hidden"):
        load_space(path)
