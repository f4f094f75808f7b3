"""Tiny cohorts, configs and spaces shared by the tuning tests (each trial well under 1 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import graphmed
from graphmed.train.config import load_experiment
from graphmed.tune import SearchSpace

FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=2",
    "train.patience=2",
    "train.batch_size=32",
    "train.progress=false",
    "eval.folds=2",
    "eval.bootstrap=20",
    "eval.baselines=[]",
]
SPACE = {
    "params": {
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.4, "step": 0.1},
        "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "model.completion": ["prompt", "zero"],
        "model.n_prompts": {
            "type": "int",
            "low": 2,
            "high": 4,
            "when": {"model.completion": "prompt"},
        },
    }
}


def tiny_cohort(n: int = 48, seed: int = 1):
    return graphmed.make_synthetic_cohort(
        n,
        modalities={"clinical": ("tabular", 4), "expr": ("vector", 12)},
        missing={"expr": 0.25},
        seed=seed,
    )


@pytest.fixture(scope="session")
def tune_cohort():
    return tiny_cohort()


@pytest.fixture()
def base():
    return load_experiment(None, FAST)


@pytest.fixture()
def space():
    return SearchSpace.from_dict(SPACE, source="test-space")


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory, tune_cohort):
    path = tmp_path_factory.mktemp("tune") / "cohort"
    graphmed.write_cohort(tune_cohort, path)
    return path


@pytest.fixture(scope="session")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune-space") / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def _cli_args(cohort_dir: Path, space_file: Path, out: Path, *extra: str) -> list[str]:
    """Arguments of a small ``graphmed tune`` run."""
    sets = [a for s in FAST for a in ("--set", s)]
    return [
        "tune",
        "--cohort",
        str(cohort_dir),
        "--space",
        str(space_file),
        "--out",
        str(out),
        "--inner-folds",
        "2",
        "--no-plots",
        *sets,
        *extra,
    ]


def _start_worker(args: list[str], log: Path) -> subprocess.Popen:
    """``graphmed tune ARGS`` in a new process (one torch thread), output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    code = "import sys; from graphmed.cli import main; sys.exit(main(sys.argv[1:]))"
    fh = open(log, "w")  # noqa: SIM115 - closed by the caller through wait_all
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=fh, stderr=subprocess.STDOUT, env=env
    )
    proc.log_file = fh  # type: ignore[attr-defined]
    return proc


def _wait_all(procs: list[subprocess.Popen], timeout: float = 120) -> list[str]:
    """Wait for every worker; return their outputs; fail with the output of one that failed."""
    outputs = []
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.log_file.close()
        text = Path(proc.log_file.name).read_text()
        assert proc.returncode == 0, f"worker exited with {proc.returncode}:\n{text}"
        outputs.append(text)
    return outputs


@pytest.fixture(scope="session")
def cli_args():
    """``cli_args(cohort_dir, space_file, out, *extra)``: arguments of a small ``graphmed tune``."""
    return _cli_args


@pytest.fixture(scope="session")
def workers():
    """``(start, wait_all)``: run ``graphmed tune`` in separate processes and collect them."""
    return _start_worker, _wait_all
