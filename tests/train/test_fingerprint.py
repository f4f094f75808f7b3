"""``resume`` continues only the run a folder holds: same config, folds and cohort."""

import json
import shutil

import pytest

import graphmed
from graphmed.errors import GraphMedError
from graphmed.train.config import experiment_to_dict, load_experiment
from graphmed.train.fingerprint import FINGERPRINT, run_fingerprint

FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "train.progress=false",
    "eval.folds=2",
    "eval.bootstrap=10",
    "eval.baselines=[]",
]


@pytest.fixture(scope="module")
def cohort():
    return graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0)


@pytest.fixture(scope="module")
def finished(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp") / "run"
    graphmed.cross_validate(cohort, load_experiment(None, FAST), out, log=None)
    return out


@pytest.fixture
def run(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def _resume(cohort, run, *extra):
    return graphmed.cross_validate(
        cohort, load_experiment(None, [*FAST, *extra]), run, resume=True, log=None
    )


def test_resume_with_the_same_run_reads_every_fold(cohort, run):
    before = json.loads((run / "metrics.json").read_text())
    # progress and device do not change results: a resume may change them
    result = _resume(cohort, run, "train.progress=true", "train.device=cpu")
    assert result.metrics["c_index"]["per_fold"] == before["c_index"]["per_fold"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.lr=0.01"], r"different config \(train\.lr: 0\.001 there, 0\.01 now\)"),
        (["eval.folds=3"], r"different config \(eval\.folds: 2 there, 3 now\)"),
        (
            ["model.hidden=16", "eval.seed=4"],
            r"config \(model\.hidden: 8 there, 16 now, eval\.seed: 0 there, 4 now\)",
        ),
    ],
)
def test_resume_with_another_config_is_refused(cohort, run, extra, message):
    fingerprint = (run / FINGERPRINT).read_text()
    with pytest.raises(GraphMedError, match=rf"cannot resume in '.*run': .*{message}"):
        _resume(cohort, run, *extra)
    assert (run / FINGERPRINT).read_text() == fingerprint  # the folder is left as it was


def test_resume_with_another_cohort_is_refused(cohort, run):
    other = cohort.subset(cohort.patient_ids[:30])
    with pytest.raises(
        GraphMedError, match=r"different cohort \('synthetic' with 40 patients .* with 30 and"
    ):
        _resume(other, run)
    moved = cohort.subset(cohort.patient_ids)
    moved.patients = moved.patients.assign(time=moved.patients["time"] + 1.0)
    with pytest.raises(GraphMedError, match=r"same count with other ids, times or events"):
        _resume(moved, run)


def test_a_fresh_run_replaces_the_fingerprint(cohort, run):
    graphmed.cross_validate(cohort, load_experiment(None, [*FAST, "train.lr=0.01"]), run, log=None)
    assert json.loads((run / FINGERPRINT).read_text())["config"]["train"]["lr"] == 0.01


def test_fingerprint_ignores_progress_and_device_only(cohort):
    base = run_fingerprint(cohort, _data(FAST))
    same = run_fingerprint(cohort, _data([*FAST, "train.device=cuda"]))
    assert same["config_hash"] == base["config_hash"]
    assert (
        run_fingerprint(cohort, _data([*FAST, "train.seed=1"]))["config_hash"]
        != base["config_hash"]
    )
    flipped = cohort.subset(cohort.patient_ids)
    flipped.patients = flipped.patients.assign(event=1 - flipped.patients["event"].to_numpy())
    assert run_fingerprint(flipped, _data(FAST))["cohort_hash"] != base["cohort_hash"]
    assert base["n_events"] == int(cohort.event.sum())


def _data(overrides):
    return experiment_to_dict(load_experiment(None, overrides))
