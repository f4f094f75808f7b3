"""The CLI under faults: paths outside the cohort, a full disk, a failed materialize, a lock.

A full disk cannot be made here (no tmpfs), so ``OSError(ENOSPC)`` is raised
from inside the writers, after part of the file is written, as the kernel
would raise it.
"""

import errno
import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from _settings import TINY_CV

import graphmed
from graphmed._lock import LOCK_NAME
from graphmed.cli import main
from graphmed.train.config import load_experiment

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FAST = TINY_CV
SETS = [arg for item in FAST for arg in ("--set", item)]
OUTSIDE = (
    "cohort.yaml: modality 'expr' has path '../shared/expr.csv', which leads outside the "
    "cohort folder {root}; a cohort reads only its own files. Move (or symlink) the data "
    "into the folder, or, if you trust this cohort.yaml, pass --allow-outside-paths to the "
    "graphmed command (read_cohort(..., allow_outside=True) in Python)."
)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability") / "cohort"
    graphmed.write_cohort(graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0), folder)
    return folder


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory):
    """A cohort whose ``expr`` table lies beside the folder: ``path: ../shared/expr.csv``."""
    root = tmp_path_factory.mktemp("outside")
    folder = root / "cohort"
    graphmed.write_cohort(graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0), folder)
    (root / "shared").mkdir()
    os.replace(folder / "expr.csv", root / "shared" / "expr.csv")
    conf = yaml.safe_load((folder / "cohort.yaml").read_text())
    conf["modalities"]["expr"]["path"] = "../shared/expr.csv"
    (folder / "cohort.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability_model")
    train = graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0)
    model, _ = graphmed.fit_final(train, load_experiment(None, [*FAST, "train.progress=false"]))
    model.save(root / "model")
    return root / "model"


def _full_disk_after(n_bytes=10):
    """A writer stand-in: writes ``n_bytes`` to the file it is given, then the disk is full."""

    def write(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"x" * n_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


# ------------------------------------------------------- --allow-outside-paths
def test_train_refuses_an_outside_path_and_names_the_flag(outside_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--cohort", str(outside_dir), "--out", str(out), *SETS, "--no-progress"]
    assert main([*argv, "--no-final"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "graphmed train: error: " + OUTSIDE.format(root=outside_dir)
    assert not out.exists()
    assert main([*argv, "--no-final", "--allow-outside-paths"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["c_index"]["mean"] > 0
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert oof["patient_id"].nunique() == 40


def test_cohort_validate_refuses_an_outside_path_unless_allowed(outside_dir, capsys):
    assert main(["cohort", "validate", str(outside_dir)]) == 2
    assert capsys.readouterr().err.strip() == "graphmed cohort: error: " + OUTSIDE.format(
        root=outside_dir
    )
    assert main(["cohort", "validate", str(outside_dir), "--allow-outside-paths"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[: printed.rindex("}") + 1])
    assert summary["patients"] == 40 and summary["modalities"]["expr"]["kind"] == "vector"
    assert f"OK: {outside_dir} is a valid cohort" in printed


def test_every_command_that_reads_a_cohort_has_the_flag(outside_dir, model_dir, tmp_path, capsys):
    """predict, evaluate, export, benchmark and tune refuse the same path, and read it with
    the flag (benchmark and tune only to the refusal: their runs are tested elsewhere)."""
    cohort = ["--cohort", str(outside_dir)]
    runs = {
        "predict": [
            "predict",
            "--model",
            str(model_dir),
            *cohort,
            "--out",
            str(tmp_path / "p.csv"),
        ],
        "evaluate": ["evaluate", "--model", str(model_dir), *cohort],
        "export": [
            "export",
            "--model",
            str(model_dir),
            *cohort,
            "--out",
            str(tmp_path / "e.parquet"),
            "--no-progress",
        ],  # fmt: skip
        "benchmark": ["benchmark", *cohort, "--out", str(tmp_path / "b"), *SETS],
        "tune": ["tune", *cohort, "--out", str(tmp_path / "t"), "--n-trials", "1", *SETS],
    }
    for name, argv in runs.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "--allow-outside-paths" in err and "allow_outside=True" in err, (name, err)
    for name in ("predict", "evaluate", "export"):
        assert main([*runs[name], "--allow-outside-paths"]) == 0, name
    assert len(pd.read_csv(tmp_path / "p.csv")) == 40
    assert len(pd.read_parquet(tmp_path / "e.parquet")) == 40
    for name in ("benchmark", "tune"):
        with pytest.raises(SystemExit):  # the flag exists (argparse knows it)
            main([name, "--allow-outside-paths", "--help"])
    capsys.readouterr()


# ------------------------------------------------------------------ full disk
def test_export_on_a_full_disk_names_the_file_and_leaves_no_partial_file(
    model_dir, cohort_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "emb.parquet"
    real, calls = pq.ParquetWriter.write_table, []

    def full_after_first_chunk(self, table, *args, **kwargs):
        calls.append(len(table))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_after_first_chunk)
    argv = ["export", "--model", str(model_dir), "--cohort", str(cohort_dir), "--out", str(out)]
    argv += ["--chunk-size", "15", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert calls == [15, 15]  # the first chunk was on disk when the disk filled up
    assert err.startswith(
        f"graphmed export: error: cannot write '{out}' (OSError: no space left on the "
        "device); nothing was written under that name. Free some disk space"
    ), err
    assert list(tmp_path.iterdir()) == []  # no file under the final name, no temporary
    # A previous export stays whole.
    out.write_bytes(b"previous export")
    calls.clear()
    assert main(argv) == 2
    assert out.read_bytes() == b"previous export" and list(tmp_path.iterdir()) == [out]
    monkeypatch.undo()
    assert main(argv) == 0  # the disk has room again: the export lands under the name
    assert len(pd.read_parquet(out)) == 40 and list(tmp_path.iterdir()) == [out]


def test_predict_on_a_full_disk_names_the_file_and_leaves_no_partial_file(
    model_dir, cohort_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "risk.csv"
    monkeypatch.setattr(pd.DataFrame, "to_csv", _full_disk_after(100))
    argv = ["predict", "--model", str(model_dir), "--cohort", str(cohort_dir), "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(
        f"graphmed predict: error: cannot write '{out}' (OSError: no space left on the device)"
        "; nothing was written under that name."
    )
    assert list(tmp_path.iterdir()) == []
    out.write_text("patient_id,risk\nold,1.0\n")
    assert main(argv) == 2
    assert out.read_text() == "patient_id,risk\nold,1.0\n" and list(tmp_path.iterdir()) == [out]


def test_an_os_error_outside_the_atomic_writers_is_a_message_not_a_traceback(
    cohort_dir, tmp_path, capsys
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # its parent is a file: mkdir fails with NotADirectoryError
    argv = ["train", "--cohort", str(cohort_dir), "--out", str(out), *SETS, "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"graphmed train: error: cannot read or write '{out}': Not a directory")


# ------------------------------------------------------- datasets materialize
def _mcat_csv(folder, n=12):
    rows = [
        {
            "case_id": f"TCGA-{i:02d}",
            "slide_id": f"TCGA-{i:02d}-01Z.svs",
            "site": "AA",
            "age": 40 + i,
            "survival_months": 1.5 * i + 1,
            "censorship": i % 2,
            "TP53_rnaseq": 0.25 * i,
            "EGFR_rnaseq": -0.5 * i,
            "MYC_cnv": float(i % 3 - 1),
            "KRAS_mut": float(i % 2),
        }
        for i in range(n)
    ]
    csv = folder / "tcga_luad_all_clean.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_materialize_with_a_bad_csv_leaves_no_folder(tmp_path, capsys):
    csv = _mcat_csv(tmp_path)
    csv.write_text(csv.read_text().replace("survival_months", "months"))
    out = tmp_path / "new" / "deeper" / "luad"
    argv = ["datasets", "materialize", "tcga", "--from-mcat", str(csv), "--out", str(out)]
    assert main(argv) == 2
    assert "survival_months" in capsys.readouterr().err
    assert _listing(tmp_path) == [csv.name]


@pytest.mark.parametrize("overwrite", [False, True])
def test_materialize_on_a_full_disk_midway_leaves_no_partial_folder(
    tmp_path, monkeypatch, capsys, overwrite
):
    csv = _mcat_csv(tmp_path)
    out = tmp_path / "new" / "deeper" / "luad"
    argv = ["datasets", "materialize", "tcga", "--from-mcat", str(csv), "--out", str(out)]
    if overwrite:  # an earlier cohort, from fewer patients, is there
        (tmp_path / "old").mkdir()
        old_csv = _mcat_csv(tmp_path / "old", n=8)
        assert main([*argv[:4], str(old_csv), *argv[5:]]) == 0
        before = {p: p.read_bytes() for p in out.iterdir()}
        argv.append("--overwrite")
    capsys.readouterr()
    calls = []

    def full_at_the_third_table(real):
        def write(self, path=None, *args, **kwargs):
            calls.append(path)
            if len(calls) == 3:  # two tables are written: the disk fills up
                return _full_disk_after(20)(self, path)
            return real(self, path, *args, **kwargs)

        return write

    for name in ("to_csv", "to_parquet"):
        monkeypatch.setattr(
            pd.DataFrame, name, full_at_the_third_table(getattr(pd.DataFrame, name))
        )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"graphmed datasets: error: cannot write the cohort folder '{out}' (it is left as it "
        "was): cannot write '"
    ), err
    assert "(OSError: no space left on the device)" in err and len(calls) == 3
    monkeypatch.undo()
    if overwrite:
        assert {p: p.read_bytes() for p in out.iterdir()} == before  # the old cohort, whole
        assert graphmed.read_cohort(out).n_patients == 8
        assert os.listdir(out.parent) == ["luad"]  # no hidden stage beside it
    else:  # no cohort folder, no empty parents, no hidden stage
        assert _listing(tmp_path) == [csv.name]
    assert main(argv) == 0  # room on the disk again: the cohort is written
    assert graphmed.read_cohort(out).n_patients == 12


def test_materialize_removes_the_stage_of_a_killed_run(tmp_path, capsys):
    csv = _mcat_csv(tmp_path)
    out = tmp_path / "luad"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".luad.{dead}.0badf00d.tmp"  # what a kill -9 midway leaves
    (stale / "half").mkdir(parents=True)
    live = tmp_path / f".luad.{os.getpid()}.0badf00d.tmp"  # a materialize still running
    live.mkdir()
    argv = ["datasets", "materialize", "tcga", "--from-mcat", str(csv), "--out", str(out)]
    assert main(argv) == 0
    assert not stale.exists() and live.exists()
    assert graphmed.read_cohort(out).n_patients == 12


# ----------------------------------------------------------------------- lock
HOLD_LOCK = """
import sys, time
from graphmed._lock import run_lock
with run_lock(sys.argv[1], "graphmed train"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_train_process_into_a_locked_out_writes_nothing(cohort_dir, tmp_path):
    """Two ``graphmed train`` processes into one --out: the second (a real process of its
    own) exits non-zero with the message and leaves --out byte for byte as it was."""
    out = tmp_path / "run"
    # What the first run has written so far: a finished fold and its metrics.
    (out / "folds" / "r0f0").mkdir(parents=True)
    (out / "folds" / "r0f0" / "fold.json").write_text('{"c_index": 0.61}')
    (out / "metrics.json").write_text('{"partial": true}')
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
        code = "import sys; from graphmed.cli import main; sys.exit(main(sys.argv[1:]))"
        argv = ["train", "--cohort", str(cohort_dir), "--out", str(out), *SETS, "--no-progress"]
        second = subprocess.run(
            [sys.executable, "-c", code, *argv, "--resume"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"graphmed train: error: '{out}' is in use by another graphmed train (process "
        f"{holder.pid}; lock file {out / LOCK_NAME}). Wait for it to finish or write to another "
        f"output folder; if no such run is going on, delete {out / LOCK_NAME}."
    )
    assert after == before  # not one file written, touched or removed
    assert (out / LOCK_NAME) in before and not (out / "model").exists()
