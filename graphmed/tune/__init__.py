"""Hyperparameter sweeps with Optuna: ``graphmed tune``.

The only package of graphmed that imports Optuna (with :mod:`graphmed.cli.tune`);
the model and training code know nothing of it. A search space in YAML
(:mod:`~graphmed.tune.search_space`) is drawn in one place, each trial is a
cross-validation inside the training patients (:mod:`~graphmed.tune.objective`),
studies live in Optuna's own storages so that they resume and are shared by
many workers (:mod:`~graphmed.tune.study`), and ``--nested`` gives an unbiased
estimate of the tuned model (:mod:`~graphmed.tune.nested`).
"""

from .nested import nested_tune
from .objective import InnerCVObjective, TrialFailed, known_metrics, metric_direction
from .outputs import best_config, write_outputs
from .search_space import Param, SearchSpace, config_keys, load_space
from .study import PRUNERS, TuneResult, make_pruner, open_storage, open_study, run_study

__all__ = [
    "PRUNERS",
    "InnerCVObjective",
    "Param",
    "SearchSpace",
    "TrialFailed",
    "TuneResult",
    "best_config",
    "config_keys",
    "known_metrics",
    "load_space",
    "make_pruner",
    "metric_direction",
    "nested_tune",
    "open_storage",
    "open_study",
    "run_study",
    "write_outputs",
]
