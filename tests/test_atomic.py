"""Atomic writes: a failed write (a full disk) names the file and leaves nothing under it."""

import errno
import os
import subprocess
import sys

import pytest
import torch

import graphmed
from graphmed._atomic import atomic_path, write_json
from graphmed.errors import GraphMedError, WriteError
from graphmed.train.config import load_experiment


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_full_disk(*args, **kwargs):
    # what torch.save's zip writer raises when the disk fills under it
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4160 vs 4054")


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text('{"old": 1}')
    monkeypatch.setattr("pathlib.Path.write_text", _full_disk)
    with pytest.raises(
        WriteError,
        match=r"cannot write '.*metrics\.json' \(OSError: no space left on the device\); nothing was written under that name\. Free some disk space",
    ):
        write_json(tmp_path / "metrics.json", {"new": 2})
    assert (tmp_path / "metrics.json").read_text() == '{"old": 1}'  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_write_error_is_a_graphmed_error_and_an_os_error(tmp_path):
    with pytest.raises(WriteError) as info:
        with atomic_path(tmp_path / "x.pt") as tmp:
            _torch_full_disk(tmp)
    assert isinstance(info.value, GraphMedError) and isinstance(info.value, OSError)
    assert "cannot write" in str(info.value) and "unexpected pos" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_in_the_block_pass_through(tmp_path):
    with pytest.raises(RuntimeError, match="^a bug$"):
        with atomic_path(tmp_path / "x.pt"):
            raise RuntimeError("a bug")
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.pt"):
            raise KeyError("k")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_checkpoint_stops_training_with_the_path(tmp_path, monkeypatch):
    cohort = graphmed.make_synthetic_cohort(30, bag_size=(2, 3), seed=0)
    config = load_experiment(
        None, ["model.hidden=8", "model.heads=2", "model.layers=1", "train.epochs=2"]
    )
    from graphmed.train.builder import build_model, fit_data
    from graphmed.train.trainer import Trainer

    fitted = fit_data(cohort, config)
    graphs = fitted.graphs(cohort)
    model = build_model(fitted, graphs, cohort)
    monkeypatch.setattr(torch, "save", _torch_full_disk)
    ckpt = tmp_path / "folds" / "r0f0" / "checkpoint.pt"
    with pytest.raises(
        WriteError, match=r"cannot write '.*r0f0/checkpoint\.pt' \(RuntimeError: .*unexpected pos"
    ):
        Trainer(config.train).fit(model, graphs, graphs, checkpoint=ckpt)
    assert list(ckpt.parent.iterdir()) == []


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    stale = tmp_path / f".emb.parquet.{dead.pid}.abc123.tmp"
    live = tmp_path / f".emb.parquet.{os.getppid()}.def456.tmp"  # a writer still running
    other = tmp_path / f".other.parquet.{dead.pid}.x.tmp"  # another file's: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    with atomic_path(tmp_path / "emb.parquet") as tmp:
        assert f".emb.parquet.{os.getpid()}." in tmp.name
        tmp.write_bytes(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["emb.parquet", live.name, other.name]
    )
