import ast
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from graphmed.errors import ConfigError, GraphMedError
from graphmed.train.config import load_experiment
from graphmed.tune import (
    InnerCVObjective,
    SearchSpace,
    make_pruner,
    metric_direction,
    open_storage,
    open_study,
    run_study,
    write_outputs,
)
from graphmed.tune import objective as objective_module
from graphmed.tune import study as study_module

PNG = b"\x89PNG\r\n\x1a\n"


def _run(cohort, base, space, storage, name="s", n_trials=2, **kw):
    lines: list[str] = []
    kw.setdefault("seed", 0)
    result = run_study(
        cohort,
        base,
        space,
        study_name=name,
        storage=storage,
        n_trials=n_trials,
        inner_folds=2,
        log=lines.append,
        **kw,
    )
    return result, lines


def test_short_study_writes_a_runnable_best_config(tune_cohort, base, space, tmp_path):
    result, lines = _run(tune_cohort, base, space, open_storage(None, tmp_path))
    study = result.study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:  # the value is the mean of the inner folds, each one reported
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.value == pytest.approx(np.mean(t.user_attrs["fold_values"]), abs=1e-5)
        assert 0 <= t.value <= 1
    assert [line.split("]")[0] for line in lines] == ["[trial 0", "[trial 1"]
    assert "COMPLETE c_index" in lines[0]

    summary = write_outputs(study, tmp_path, base, space)
    best = study.best_trial
    assert summary["best"]["number"] == best.number
    assert json.loads((tmp_path / "summary.json").read_text())["states"] == {"COMPLETE": 2}
    config = load_experiment(tmp_path / "best_config.yaml")
    assert config == space.apply(base, best.params)
    assert config.model.dropout == pytest.approx(best.params["model.dropout"])
    trials = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(trials) == 3 and "params_train.lr" in trials[0]
    for png in ("history.png", "importance.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
    assert (tmp_path / "study.db").exists()  # the default storage: an SQLite file in the out dir


def test_resumed_study_adds_trials_to_the_same_study(tune_cohort, base, space, tmp_path):
    storage_url = f"sqlite:///{tmp_path / 'resume.db'}"
    first, _ = _run(tune_cohort, base, space, open_storage(storage_url, None), n_trials=1)
    again, lines = _run(tune_cohort, base, space, open_storage(storage_url, None), n_trials=2)
    study = optuna.load_study(study_name="s", storage=storage_url)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert study.trials[0].params == first.study.trials[0].params
    # the same --seed on resume draws new points (the seed is offset by the trials so far)
    assert study.trials[1].params != study.trials[0].params
    assert lines[0].startswith("[trial 1]")
    with pytest.raises(ConfigError, match="created with metric='c_index', not 'uno_c'"):
        _run(tune_cohort, base, space, open_storage(storage_url, None), metric="uno_c")


def test_failing_trials_are_recorded_and_the_study_goes_on(
    tune_cohort, base, tmp_path, monkeypatch
):
    space = SearchSpace.from_dict(
        {
            "params": {
                "model.heads": [2, 3],  # hidden is 8: heads=3 is a combination the model refuses
                "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            }
        }
    )
    real = objective_module.run_fold

    def flaky(cohort, config, *args, **kwargs):
        if config.train.lr == pytest.approx(0.00123):
            raise GraphMedError("training loss became nan at epoch 0; lower train.lr")
        if config.train.lr == pytest.approx(0.00456):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cohort, config, *args, **kwargs)

    monkeypatch.setattr(objective_module, "run_fold", flaky)
    storage = open_storage(f"sqlite:///{tmp_path / 'f.db'}", None)
    study = open_study("s", storage, direction="maximize", pruner=make_pruner("none", 2))
    for params in (
        {"model.heads": 3, "train.lr": 0.002},
        {"model.heads": 2, "train.lr": 0.00123},
        {"model.heads": 2, "train.lr": 0.00456},
        {"model.heads": 2, "train.lr": 0.002},
    ):
        study.enqueue_trial(params)
    result, lines = _run(tune_cohort, base, space, storage, n_trials=4, pruner="none")
    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    reasons = [t.user_attrs["fail_reason"] for t in trials[:3]]
    assert "divisible" in reasons[0]  # the model refuses hidden=8 with 3 heads
    assert "loss became nan" in reasons[1]
    assert reasons[2].startswith("out of memory")
    assert "[trial 0] FAIL: " in lines[0] and not result.stopped_by_failures
    assert result.study.best_trial.number == 3


def test_a_broken_setup_stops_after_repeated_failures(
    tune_cohort, base, space, tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("no such device")

    monkeypatch.setattr(objective_module, "run_fold", broken)
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}", None)
    result, lines = _run(tune_cohort, base, space, storage, n_trials=20)
    assert result.stopped_by_failures
    assert len(result.study.trials) == study_module.MAX_CONSECUTIVE_FAILURES
    assert lines[-1].startswith("stopping: 5 trials in a row failed")


def test_pruned_trial_stops_after_its_first_inner_fold(tune_cohort, base, space):
    objective = InnerCVObjective(tune_cohort, base, space, inner_folds=3)
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]
    assert len(trial.user_attrs["fold_values"]) == 1


def test_inner_folds_cover_only_the_given_patients(tune_cohort, base, space):
    objective = InnerCVObjective(tune_cohort, base, space, inner_folds=3)
    tested = np.concatenate([te for *_, te in objective.folds])
    assert sorted(tested) == list(range(tune_cohort.n_patients))
    assert objective.plan.cv.baselines == [] and not objective.plan.recipe({}).train.progress


def test_pruners_metrics_and_storages_by_name(tmp_path, base):
    assert isinstance(make_pruner("median", 3), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 3), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none", 3), optuna.pruners.NopPruner)
    with pytest.raises(ConfigError, match="unknown pruner 'medain'.*Did you mean 'median'"):
        make_pruner("medain", 3)
    assert metric_direction("c_index", base) == "maximize"
    assert metric_direction("ibs", load_experiment(None)) == "minimize"  # discrete by default
    cox = load_experiment(None, ["task.survival=cox"])
    with pytest.raises(ConfigError, match="ibs needs task.survival=discrete"):
        metric_direction("ibs", cox)
    with pytest.raises(ConfigError, match="unknown metric 'cindex'.*Did you mean 'c_index'"):
        metric_direction("cindex", base)
    journal = open_storage(f"journal:{tmp_path / 'j.log'}", None)
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert isinstance(open_storage(str(tmp_path / "k.log"), None), optuna.storages.JournalStorage)
    with pytest.raises(ConfigError, match="neither a database URL"):
        open_storage("mystudy", None)


def test_unreachable_database_is_reported_without_its_password():
    pytest.importorskip("psycopg2", reason="the postgres extra (psycopg2-binary) is not installed")
    with pytest.raises(
        ConfigError, match=r"cannot open storage 'postgresql://u:\*\*\*@127.0.0.1:1/db'"
    ) as err:
        open_storage("postgresql://u:secret@127.0.0.1:1/db", None)
    assert "secret" not in str(err.value)


def test_model_code_never_imports_optuna():
    root = Path(__file__).resolve().parents[2] / "graphmed"
    allowed = {root / "cli" / "tune.py"}
    offenders = []
    for path in root.rglob("*.py"):
        if root / "tune" in path.parents or path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "optuna" or n.startswith("optuna.") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
    assert len(list(root.rglob("*.py"))) > 20  # the scan did look at the package


def test_a_killed_workers_trial_says_so_in_trials_csv(tmp_path):
    """A trial whose worker was SIGKILLed records no reason; the heartbeat marks it FAIL
    and queues a retry. trials.csv says what happened instead of an empty reason."""
    import pandas as pd

    from graphmed.tune.outputs import write_outputs
    from graphmed.tune.study import fail_reason

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    killed = optuna.create_trial(
        state=TrialState.FAIL, params={"x": 0.5}, distributions=dist, user_attrs={"worker": "h:42"}
    )
    bad = optuna.create_trial(
        state=TrialState.FAIL,
        params={"x": 0.1},
        distributions=dist,
        user_attrs={"fail_reason": "training loss became nan at epoch 0"},
    )
    retry = optuna.create_trial(  # as RetryFailedTrialCallback queues it
        state=TrialState.WAITING,
        params={"x": 0.5},
        distributions=dist,
        system_attrs={"failed_trial": 0, "retry_history": [0]},
    )
    for t in (killed, bad, retry):
        study.add_trial(t)
    trials = study.get_trials()
    assert fail_reason(trials[0], trials) == (
        "no reason recorded: worker h:42 stopped (killed or crashed) while running it, and the "
        "storage's heartbeat marked it failed; retried as trial 2"
    )
    assert fail_reason(trials[1], trials) == "training loss became nan at epoch 0"
    write_outputs(study, tmp_path, plots=False)
    reasons = pd.read_csv(tmp_path / "trials.csv")["user_attrs_fail_reason"].tolist()
    assert reasons[0].startswith("no reason recorded: worker h:42 stopped")
    assert reasons[1] == "training loss became nan at epoch 0" and pd.isna(reasons[2])
