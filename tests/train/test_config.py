"""Out-of-range experiment config values are refused at load, named by their key."""

import pytest

from graphmed.errors import ConfigError
from graphmed.train.config import ExperimentConfig, TrainConfig, load_experiment

BAD_VALUES = [
    # (override, expected message)
    ("train.batch_size=0", r"'train.batch_size' must be at least 1, got 0"),
    ("train.epochs=0", r"'train.epochs' must be at least 1, got 0"),
    ("train.epochs=-1", r"'train.epochs' must be at least 1, got -1"),
    ("train.patience=0", r"'train.patience' must be at least 1, got 0"),
    ("train.lr=-0.001", r"'train.lr' must be greater than 0, got -0.001"),
    ("train.lr=0", r"'train.lr' must be greater than 0, got 0.0"),
    ("train.prompt_lr=-1e-4", r"'train.prompt_lr' must be at least 0, got -0.0001"),
    ("train.weight_decay=-1", r"'train.weight_decay' must be at least 0"),
    ("train.feature_noise=-0.1", r"'train.feature_noise' must be at least 0"),
    ("train.val_fraction=0", r"'train.val_fraction' must be in \(0, 1\), got 0.0"),
    ("train.val_fraction=1", r"'train.val_fraction' must be in \(0, 1\), got 1.0"),
    ("train.val_fraction=1.5", r"'train.val_fraction' must be in \(0, 1\), got 1.5"),
    ("task.survival_weight=-1", r"'task.survival_weight' must be at least 0, got -1.0"),
    ("task.label_weight=-0.5", r"'task.label_weight' must be at least 0, got -0.5"),
    ("task.n_bins=0", r"'task.n_bins' must be at least 1"),
    ("task.alpha=1.5", r"'task.alpha' must be in \[0, 1\], got 1.5"),
    ("model.steering_weight=-0.1", r"'model.steering_weight' must be at least 0, got -0.1"),
    ("model.dropout=1", r"'model.dropout' must be in \[0, 1\), got 1.0"),
    ("model.dropout=-0.1", r"'model.dropout' must be in \[0, 1\), got -0.1"),
    ("model.modality_dropout=1.2", r"'model.modality_dropout' must be in \[0, 1\)"),
    ("model.hidden=0", r"'model.hidden' must be at least 1, got 0"),
    ("model.heads=0", r"'model.heads' must be at least 1, got 0"),
    ("model.layers=-1", r"'model.layers' must be at least 0, got -1"),
    ("model.heads=3", r"'model.heads' must divide 'model.hidden': hidden=128 is not divisible"),
    ("model.bag_tokens=0", r"'model.bag_tokens' must be at least 1 \(or null\), got 0"),
    ("graph.max_features=0", r"'graph.max_features' must be at least 1 \(or null\), got 0"),
    ("graph.max_features=-1", r"'graph.max_features' must be at least 1 \(or null\), got -1"),
    ("graph.max_tokens=0", r"'graph.max_tokens' must be at least 1 \(or null\), got 0"),
    ("graph.chunk_size=0", r"'graph.chunk_size' must be at least 1, got 0"),
    ("graph.max_instances=0", r"'graph.max_instances' must be at least 1, got 0"),
    ("eval.folds=1", r"'eval.folds' must be at least 2, got 1; cross-validation needs two"),
    ("eval.repeats=0", r"'eval.repeats' must be at least 1, got 0"),
    ("eval.bootstrap=-1", r"'eval.bootstrap' must be at least 0, got -1"),
    ("eval.horizons=[12, -3]", r"'eval.horizons' must be positive times, got -3.0 at \[1\]"),
    ("eval.test_missing.expr=1.5", r"'eval.test_missing' rate of 'expr' must be in \[0, 1\]"),
    ("train.lr=.nan", r"'train.lr' must be greater than 0, got nan"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_out_of_range_value_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(None, [override])


def test_out_of_range_value_in_a_yaml_file_names_its_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"'train.batch_size' must be at least 1, got 0"):
        load_experiment(path)


def test_a_section_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match=r"^'batch_size' must be at least 1, got 0$"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize(
    "override",
    [
        "train.prompt_lr=0",
        "task.survival_weight=0",
        "model.steering_weight=0",
        "model.dropout=0",
        "model.heads=8",
        "graph.max_features=null",
        "graph.max_tokens=null",
        "model.layers=0",
    ],
)
def test_edge_values_in_range_are_accepted(override):
    assert isinstance(load_experiment(None, [override]), ExperimentConfig)
