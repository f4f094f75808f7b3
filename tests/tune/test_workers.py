"""Several ``graphmed tune`` processes on one storage share one study.

The PostgreSQL test starts a throw-away server on loopback from the Debian
package's binaries (``apt-get install postgresql``, as ``.ci/run`` does); it
is skipped, with the reason, only where those binaries or the driver
(``pip install graphmed[postgres]``) are missing. ``GRAPHMED_TEST_POSTGRES_URL``
points it at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from graphmed.tune import open_storage, run_study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _check_shared_study(storage, name: str, n_workers: int, per_worker: int) -> None:
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(n_workers * per_worker))
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    by_worker = Counter(t.user_attrs["worker"] for t in trials)
    assert len(by_worker) == n_workers and set(by_worker.values()) == {per_worker}
    assert study.user_attrs["graphmed"]["metric"] == "c_index"


def _run_workers(cohort_dir, space_file, cli_args, workers, tmp_path, storage, name, per_worker):
    start, wait_all = workers
    procs = []
    for i in range(2):
        args = cli_args(cohort_dir, space_file, tmp_path / f"w{i}", "--storage", storage)
        more = ["--study", name, "--n-trials", str(per_worker)]
        procs.append(start([*args, *more], tmp_path / f"w{i}.txt"))
    for text in wait_all(procs, timeout=240):
        assert text.count("[trial ") == per_worker, text


def test_two_workers_share_a_journal_file_study(
    cohort_dir, space_file, cli_args, workers, tmp_path
):
    storage = f"journal:{tmp_path / 'journal.log'}"
    _run_workers(cohort_dir, space_file, cli_args, workers, tmp_path, storage, "shared", 1)
    _check_shared_study(open_storage(storage, None), "shared", 2, 1)


# ------------------------------------------------------------------ PostgreSQL
def _postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    versions.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *cmd]
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(f"'{c}'" for c in cmd)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 (trust auth) for this module; stopped afterwards."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed: pip install 'graphmed[postgres]'"
    )
    if os.environ.get("GRAPHMED_TEST_POSTGRES_URL"):
        yield os.environ["GRAPHMED_TEST_POSTGRES_URL"]
        return
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: apt-get install -y postgresql (.ci/run does)"
        )
    user = None
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's account
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="graphmed-pg-"))  # not under pytest's 0700 tmp dirs
    data, port = root / "data", _free_port()
    if user is not None:
        shutil.chown(root, user=user)
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        subprocess.run(
            _as_user(user, [str(bindir / "initdb"), "-D", str(data), "-U", "graphmed",
                            "--auth=trust", "--no-sync", "--locale=C", "-E", "UTF8"]),
            **run,
        )  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                            "-o", options, "-w", "-t", "60", "start"]),
            **run,
        )  # fmt: skip
    except subprocess.CalledProcessError as err:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {err.stderr}\n{log}")
    try:
        yield f"postgresql://graphmed@127.0.0.1:{port}/postgres"
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(_as_user(user, stop), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(
    postgres_url, cohort_dir, space_file, cli_args, workers, tmp_path, tune_cohort, base, space
):
    name = f"pg-{os.getpid()}"
    _run_workers(cohort_dir, space_file, cli_args, workers, tmp_path, postgres_url, name, 2)
    storage = open_storage(postgres_url, None)  # picks the installed driver (psycopg2)
    _check_shared_study(storage, name, 2, 2)
    assert not list((tmp_path / "w0").glob("*.db"))  # the study is in the server, not a file
    # Another process (here: this one) resumes the same study from the server.
    run_study(
        tune_cohort,
        base,
        space,
        study_name=name,
        storage=storage,
        n_trials=1,
        inner_folds=2,
        log=None,
    )
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 5
