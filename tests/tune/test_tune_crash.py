"""``graphmed tune`` killed with SIGKILL mid-trial, then run again: nothing is lost.

The first run is the real CLI in its own process; a patch there only holds
trial 1 (after its parameters are drawn) until the test kills the process, so
the kill lands mid-trial every time. The reruns are the plain CLI.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from graphmed.cli import main
from graphmed.tune import open_storage

# The CLI, with trial 1 held in its objective until the process is killed.
_HELD_AT_TRIAL_1 = """
import pathlib, sys, time
from graphmed.tune import search_space
real = search_space.SearchSpace.suggest
def suggest(self, trial, base):
    params = real(self, trial, base)
    if trial.number == 1:
        pathlib.Path(sys.argv[1]).touch()  # trial 1 is running: kill me now
        time.sleep(120)
    return params
search_space.SearchSpace.suggest = suggest
from graphmed.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _trials(out):
    study = optuna.load_study(study_name="graphmed", storage=open_storage(None, out))
    return study.get_trials(deepcopy=False)


def _kill_mid_trial(args, out, tmp_path):
    marker = tmp_path / "trial1-running"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_AT_TRIAL_1, str(marker), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.time() + 90
        while not marker.exists():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.time() < deadline, "trial 1 never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_sigkill_mid_trial_then_rerun_resumes(cohort_dir, space_file, cli_args, tmp_path, capsys):
    out = tmp_path / "run"
    args = cli_args(cohort_dir, space_file, out, "--pruner", "none", "--seed", "3")
    pid = _kill_mid_trial([*args, "--n-trials", "3"], out, tmp_path)

    # What the kill left: trial 0 finished, trial 1 RUNNING forever, no outputs yet.
    before = _trials(out)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert before[1].user_attrs["worker_process"].endswith(f":{pid}")
    killed_params, first_value = before[1].params, before[0].value
    assert killed_params and not (out / "summary.json").exists()

    # Rerun, --n-trials 2: two more trials in this run, the first being the retry.
    assert main([*args, "--n-trials", "2"]) == 0
    printed = capsys.readouterr().out
    assert "note: trial 1 was running in a process that is gone (killed or crashed)" in printed
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    assert trials[0].value == first_value  # the finished trial is kept as it was
    assert trials[2].params == killed_params  # retried with the same parameters
    assert trials[2].system_attrs["retry_history"] == [1]
    assert "worker_process" in trials[2].user_attrs
    assert not trials[2].user_attrs["worker_process"].endswith(f":{pid}")
    assert "failed_by" not in trials[2].user_attrs

    # The results files are complete and say what happened to the killed trial.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["states"] == {"COMPLETE": 3, "FAIL": 1}
    assert summary["best"]["number"] in (0, 2, 3)
    table = pd.read_csv(out / "trials.csv")
    assert table["number"].tolist() == [0, 1, 2, 3]
    assert table["state"].tolist() == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    reason = table.loc[1, "user_attrs_fail_reason"]
    assert reason.startswith(f"no reason recorded: worker {before[1].user_attrs['worker']} ")
    assert "found its process gone when it opened the study and marked it failed" in reason
    assert reason.endswith("; retried as trial 2")
    assert (out / "best_config.yaml").exists()

    # --max-trials tops the study up to a total of complete trials: 3 there, 2 more run.
    assert main([*args, "--max-trials", "5"]) == 0
    assert [t.state.name for t in _trials(out)].count("COMPLETE") == 5
    assert len(_trials(out)) == 6
    # Again: the study holds 5 already, so no trial runs (Optuna alone would run one).
    assert main([*args, "--max-trials", "5"]) == 0
    assert "holds 5 complete or pruned trials already" in capsys.readouterr().out
    assert len(_trials(out)) == 6
    # --n-trials adds trials on every run, whatever the study holds.
    assert main([*args, "--n-trials", "1"]) == 0
    assert len(_trials(out)) == 7
    assert json.loads((out / "summary.json").read_text())["n_trials"] == 7


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_trials_of_live_or_foreign_processes_are_left_running(tmp_path):
    """Only a trial whose process is gone from this machine is failed at resume."""
    from graphmed.tune.study import fail_trials_of_dead_workers, process_id

    here = process_id().rpartition(":")[0]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    study = optuna.create_study(storage=open_storage(None, tmp_path))
    owners = {
        "dead here": f"{here}:{dead}",
        "alive here": process_id(),
        "other machine": f"elsewhere:pid:[1]:{dead}",
        "other container": f"{socket.gethostname()}:pid:[0]:{dead}",  # same name, own pids
    }
    for owner in owners.values():
        trial = study.ask()
        trial.set_user_attr("worker_process", owner)
    assert fail_trials_of_dead_workers(study) == [0]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, *[TrialState.RUNNING] * 3, TrialState.WAITING]
    assert fail_trials_of_dead_workers(study) == []  # the failed one is not failed twice


def test_max_trials_is_refused_with_nested(cohort_dir, space_file, cli_args, tmp_path, capsys):
    flags = ["--max-trials", "3", "--nested"]
    assert main(cli_args(cohort_dir, space_file, tmp_path / "n", *flags)) == 2
    assert "--max-trials is not used with --nested" in capsys.readouterr().err
