import json
import threading
import time

import numpy as np
import optuna
import pytest

from graphmed.train.cv import make_folds
from graphmed.tune import nested as nested_module
from graphmed.tune import nested_tune, open_storage


def _same(a, b) -> bool:
    """Equal as JSON (so that NaN metrics, e.g. an AUC without events, compare equal)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_nested_tunes_on_outer_training_folds_only(tune_cohort, base, space, tmp_path, monkeypatch):
    seen: list[set[str]] = []
    real = nested_module.run_study

    def spy(cohort, *args, **kwargs):
        seen.append(set(cohort.patient_ids))
        return real(cohort, *args, **kwargs)

    monkeypatch.setattr(nested_module, "run_study", spy)
    storage = open_storage(f"journal:{tmp_path / 'nested.log'}", None)
    kwargs = dict(
        study_name="n",
        storage=storage,
        n_trials=2,
        out_dir=tmp_path,
        inner_folds=2,
        seed=0,
        log=None,
    )
    summary = nested_tune(tune_cohort, base, space, **kwargs)

    ids = np.asarray(tune_cohort.patient_ids)
    outer = make_folds(tune_cohort, base.eval.folds, 1, base.eval.seed)
    assert len(seen) == len(outer) == 2
    for tuned_on, (_, _, tr, te) in zip(seen, outer):
        assert tuned_on == set(ids[tr])  # every trial saw the outer training fold only
        assert tuned_on.isdisjoint(ids[te])
    saved = json.loads((tmp_path / "nested.json").read_text())
    assert _same(saved["per_fold"], summary["per_fold"])
    tuned = [r["methods"]["graphmed_tuned"]["c_index"] for r in summary["per_fold"]]
    assert summary["estimate"]["mean"] == pytest.approx(np.mean(tuned))
    assert summary["estimate"]["sd"] == pytest.approx(np.std(tuned, ddof=1))
    assert set(summary["methods"]) == {"graphmed_tuned", "graphmed_base"}
    for record in summary["per_fold"]:
        study = optuna.load_study(study_name=record["study"], storage=storage)
        assert len(study.trials) == 2
        assert record["best_inner_value"] == pytest.approx(study.best_value, abs=1e-6)
        assert record["best_params"] == study.best_params
        assert (tmp_path / "folds" / f"r0f{record['fold']}" / "trials.csv").exists()

    # Run again: every study already holds its trials and the refits are read back.
    again = nested_tune(tune_cohort, base, space, **kwargs)
    assert _same(again["per_fold"], summary["per_fold"])
    for record in again["per_fold"]:
        assert len(optuna.load_study(study_name=record["study"], storage=storage).trials) == 2


def test_refit_waits_for_trials_other_workers_are_running(monkeypatch):
    monkeypatch.setattr(nested_module, "_POLL_SECONDS", 0.05)
    study = optuna.create_study(direction="maximize")
    lines: list[str] = []
    nested_module._wait_for_other_workers(study, 1.0, lines.append)
    assert lines == []  # nothing running: no wait
    other = study.ask()  # a trial "another worker" is running
    timer = threading.Timer(0.3, lambda: study.tell(other, 0.9))
    timer.start()
    t0 = time.time()
    nested_module._wait_for_other_workers(study, 30.0, lines.append)
    timer.join()
    assert 0.25 < time.time() - t0 < 10
    assert len(lines) == 1 and lines[0].startswith(
        "waiting for 1 running trial(s) of other workers"
    )
    assert study.best_trial.number == other.number  # the refit sees the other worker's trial
    stuck = study.ask()
    nested_module._wait_for_other_workers(study, 0.2, lines.append)
    assert lines[-1].startswith("stopped waiting after 0 s") and stuck.number == 1
