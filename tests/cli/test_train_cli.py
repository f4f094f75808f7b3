"""``graphmed train``: what a user's run folder may hold, and what it must refuse."""

import pytest

import graphmed
from graphmed.cli import main

FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "eval.folds=2",
    "eval.bootstrap=10",
    "eval.baselines=[]",
]


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_cli") / "cohort"
    graphmed.write_cohort(graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0), folder)
    return folder


def _train(cohort_dir, out, *extra):
    sets = [arg for item in FAST for arg in ("--set", item)]
    return main(
        ["train", "--cohort", str(cohort_dir), "--out", str(out), *sets, "--no-progress", *extra]
    )


def test_resume_with_a_crafted_checkpoint_runs_no_code(
    cohort_dir, tmp_path, capsys, crafted_torch_file
):
    out, marker = tmp_path / "run", tmp_path / "marker.txt"
    crafted_torch_file(out / "folds" / "r0f0" / "checkpoint.pt", marker)
    assert _train(cohort_dir, out, "--resume", "--no-final") == 2
    assert "refused to read checkpoint" in capsys.readouterr().err
    assert not marker.exists()
