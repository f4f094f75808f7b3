"""``graphmed train``: what a user's run folder may hold, and what it must refuse."""

import json
import os
import subprocess
import sys
import time

import pytest
from _settings import TINY_CV

import graphmed
from graphmed._lock import LOCK_NAME, run_lock
from graphmed.cli import main
from graphmed.errors import GraphMedError
from graphmed.train.config import load_experiment

FAST = TINY_CV


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


HOLD_LOCK = """
import sys, time
from graphmed._lock import run_lock
with run_lock(sys.argv[1], "graphmed train"):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def other_run(tmp_path):
    """Factory: a separate process that holds the lock of ``out`` until it is killed."""
    procs = []

    def start(out):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_train_into_the_same_out_is_refused(cohort_dir, tmp_path, capsys, other_run):
    out = tmp_path / "run"
    proc = other_run(out)
    assert _train(cohort_dir, out, "--no-final") == 2
    err = capsys.readouterr().err
    assert f"is in use by another graphmed train (process {proc.pid}; lock file" in err
    assert "Wait for it to finish or write to another output folder" in err
    assert not (out / "metrics.json").exists() and not (out / "folds").exists()
    with pytest.raises(
        GraphMedError, match=rf"in use by another graphmed run \(process {proc.pid}"
    ):
        graphmed.cross_validate(graphmed.read_cohort(cohort_dir), load_experiment(None, FAST), out)


def test_lock_of_a_killed_run_is_taken_over_and_released(cohort_dir, tmp_path, other_run):
    out = tmp_path / "run"
    proc = other_run(out)
    proc.kill()  # SIGKILL: no clean-up, the lock file stays with a dead pid
    proc.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(proc.pid)
    assert _train(cohort_dir, out, "--resume", "--no-final") == 0
    assert (out / "metrics.json").exists()
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_lock_is_reentrant_in_one_process_and_refuses_a_live_pid(tmp_path):
    with run_lock(tmp_path, "graphmed train") as path:
        with run_lock(tmp_path, "graphmed train"):
            assert path.read_text().strip() == str(os.getpid())
        assert path.exists()  # still held by the outer block
    assert not path.exists()
    path.write_text(f"{os.getppid()}\n")  # a live process that is not this one
    with pytest.raises(GraphMedError, match=rf"\(process {os.getppid()}; lock file"):
        with run_lock(tmp_path, "graphmed train"):
            pass
    assert path.read_text().strip() == str(os.getppid())  # someone else's lock is left alone


def test_resume_with_another_config_is_refused(cohort_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(cohort_dir, out, "--no-final") == 0
    assert _train(cohort_dir, out, "--resume", "--no-final", "--set", "train.lr=0.01") == 2
    assert "different config (train.lr: 0.001 there, 0.01 now)" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_keeps_finished_folds(cohort_dir, tmp_path):
    """A real kill -9 between folds: the resume keeps the finished fold byte for byte, takes
    over the dead run's lock, passes the fingerprint check and completes every fold."""
    out = tmp_path / "run"
    sets = [*FAST, "train.epochs=20", "train.patience=100", "eval.folds=4"]
    # one torch thread, as in conftest: tiny tensors on a busy machine run far faster so
    cli = "import sys, torch; torch.set_num_threads(1); from graphmed.cli import main; "
    cli += "sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", cli, "train", "--cohort", str(cohort_dir)]
    argv += ["--out", str(out), "--no-final", "--no-progress"]
    argv += [arg for item in sets for arg in ("--set", item)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "folds" / "r0f0" / "result.json"
    try:
        deadline = time.time() + 120
        while not done.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    assert done.exists(), "the run ended before its first fold was written"
    if (out / "metrics.json").exists():
        pytest.skip("the run finished before it could be killed")
    assert (out / LOCK_NAME).read_text().strip() == str(proc.pid)  # left behind by the kill
    first = done.read_text()
    result = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert done.read_text() == first
    assert "[r0f0] already done" in (out / "log.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["c_index"]["per_fold"]) == 4
    assert not (out / LOCK_NAME).exists()
