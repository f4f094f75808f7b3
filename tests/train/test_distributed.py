"""Distributed training on the CPU (gloo) under torchrun equals one process on the same batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphmed.errors import GraphMedError
from graphmed.losses import cox_ph_loss
from graphmed.train import distributed

WORKER = Path(__file__).with_name("ddp_worker.py")
sys.path.insert(0, str(WORKER.parent))
import ddp_worker  # noqa: E402


@pytest.fixture(scope="module")
def one_process():
    """``(model, history)`` of the worker's Trainer fit in this single process."""
    return ddp_worker.fit_trainer()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(tmp_path, *args, worker=WORKER, monitor_s=0.1):
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        # how soon torchrun stops the other ranks once one has died: a killed-rank test
        # waits, so that the survivor reports the dead peer itself
        "--monitor-interval",
        str(monitor_s),
        *([str(worker)] if worker else []),
        *map(str, args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_two_ranks_take_the_same_steps_as_one_process(tmp_path):
    out = tmp_path / "ddp.json"
    run = _torchrun(tmp_path, out)
    for _ in range(2):
        if run.returncode == 0 or "exitcode: -6" not in run.stderr:
            break
        # In full CI runs on a loaded 2-core machine a gloo rank has aborted (SIGABRT,
        # "terminate called without an active exception") before this plain two-rank job
        # finished, twice in a row once; alone it passes, and beside two busy loops it
        # failed once in 10 runs. Retried on a fresh port, up to three tries in all;
        # the comparisons below are made on the run that finished all the same.
        run = _torchrun(tmp_path, out)
    assert run.returncode == 0, run.stderr[:3000] + "\n...\n" + run.stderr[-2000:]
    got = json.loads(out.read_text())
    # One process, the whole batch of 12 in every step.
    net = ddp_worker.model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, time, event = ddp_worker.data()
    losses = []
    for _ in range(3):
        loss = cox_ph_loss(net(x).squeeze(-1), time, event)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert got["world"] == 2
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(losses))
    for mine, theirs in zip(got["weights"], net.parameters()):
        torch.testing.assert_close(
            torch.tensor(mine), theirs.detach().flatten(), atol=1e-6, rtol=1e-5
        )


def test_two_ranks_train_through_the_trainer_as_one_process(tmp_path, one_process):
    """The real Trainer (fit_fold_model) under torchrun: global batches of 16 split over two
    gloo ranks give the weights and history of one process on the same batches."""
    out = tmp_path / "trainer.json"
    run = _torchrun(tmp_path, "--trainer", out)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world"] == 2
    model, history = one_process
    assert len(got["history"]) == len(history.history) == 3
    for mine, theirs in zip(got["history"], history.history):
        assert mine["epoch"] == theirs["epoch"]
        for key in ("train_loss", "val_score"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
    _assert_same_weights(got, model)


def _assert_same_weights(got: dict, model) -> None:
    """Rank 0's weights equal the single process's (shift-invariant biases to a few lr).

    The other weights to 1e-4, a tenth of one AdamW step (lr 1e-3): the two ranks sum the
    gradient in another order than one process, and AdamW scales that rounding up where a
    gradient is near zero. On one AMD EPYC machine this left one element of 256 off by
    1.5e-5 after three epochs; a missing or wrong all-reduce moves weights by whole steps."""
    for name, value in model.state_dict().items():
        torch.testing.assert_close(
            torch.tensor(got["weights"][name], dtype=value.dtype),
            value.flatten(),
            atol=2e-3 if _shift_invariant(name) else 1e-4,
            rtol=1e-4,
            msg=lambda message, name=name: f"{name}: {message}",
        )


def _shift_invariant(name: str) -> bool:
    """Parameters whose exact gradient is zero: a bias that shifts every score of a softmax
    alike (pooling scores, attention keys) or every risk alike (the Cox loss ignores a
    constant). Their gradient is rounding noise, which AdamW scales up to steps of lr size,
    so two processes agree on them only to a few lr."""
    return name.endswith("bias") and (
        ".pool." in name
        or ".k." in name
        or name in ("net.out_norm.bias", "heads.survival.linear.bias")
    )


def test_a_killed_rank_ends_the_job_with_a_message_and_resume_finishes_it(tmp_path, one_process):
    """Rank 1 dies after the first epoch of a Trainer fit; rank 0 stops with the message.
    The same job with resume continues from rank 0's checkpoint to the result of a fit
    that was never interrupted."""
    ckpt = tmp_path / "state.pt"
    run = _torchrun(tmp_path, "--trainer", tmp_path / "never.json", 1, ckpt, monitor_s=5)
    assert run.returncode != 0
    assert not (tmp_path / "never.json").exists()
    assert "another rank of the job stopped" in run.stderr and "--resume" in run.stderr, run.stderr[
        -3000:
    ]
    assert ckpt.exists()  # epoch 0, written by rank 0 alone
    out = tmp_path / "resumed.json"
    run = _torchrun(tmp_path, "--trainer", out, -1, ckpt, "resume")
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    model, history = one_process
    assert [h["epoch"] for h in got["history"]] == [0, 1, 2]
    for mine, theirs in zip(got["history"], history.history):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5, abs=1e-6)
    _assert_same_weights(got, model)


def test_graphmed_train_distributed_writes_one_run(tmp_path):
    """``torchrun -m graphmed train --distributed``: rank 0 alone holds the lock, prints and
    writes; the run folder is what a single process writes."""
    from _settings import TINY_CV

    import graphmed

    graphmed.write_cohort(
        graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0), tmp_path / "c"
    )
    sets = [a for kv in TINY_CV for a in ("--set", kv)]
    run = _torchrun(
        tmp_path,
        "-m",
        "graphmed",
        "train",
        "--cohort",
        tmp_path / "c",
        "--out",
        tmp_path / "run",
        "--distributed",
        "--no-progress",
        *sets,
        worker=None,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("results in") == 1  # rank 1 prints nothing
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"metrics.json", "oof_predictions.csv", "model", "log.txt"} <= names
    assert not any(".tmp" in n or n.startswith(".graphmed.lock") for n in names), names
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["c_index"]


def test_an_estimator_fits_under_torchrun_as_in_one_process(tmp_path):
    """GraphMedSurvival.fit inside a job joined with init_distributed: the Trainer splits
    every global batch over the ranks; the fitted risks equal one process's."""
    import numpy as np

    out = tmp_path / "est.json"
    run = _torchrun(tmp_path, "--estimator", out)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world"] == 2
    np.testing.assert_allclose(got["risk"], ddp_worker.fit_estimator(), rtol=1e-3, atol=1e-3)


def test_without_torchrun_the_message_gives_the_command(monkeypatch):
    for key in distributed.ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(GraphMedError, match=r"torchrun --nproc-per-node 2 -m graphmed train"):
        distributed.init_distributed("cpu")


def test_shards_cover_the_batch_once():
    ctx = [distributed.DistContext(r, 3, r, "gloo") for r in range(3)]
    index = torch.arange(10)
    parts = [c.shard(index) for c in ctx]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == ctx[0].sizes(10) == [4, 3, 3]
    assert torch.equal(ctx[0].gathered(index), torch.cat(parts))


def test_only_rank_0_writes_files(tmp_path, monkeypatch):
    from graphmed._atomic import write_json

    monkeypatch.setattr(distributed, "_CONTEXT", distributed.DistContext(1, 2, 1, "gloo"))
    write_json(tmp_path / "metrics.json", {"c": 0.7})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary
    monkeypatch.setattr(distributed, "_CONTEXT", distributed.DistContext(0, 2, 0, "gloo"))
    write_json(tmp_path / "metrics.json", {"c": 0.7})
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
