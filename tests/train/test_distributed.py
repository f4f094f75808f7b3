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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(tmp_path, *args):
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        str(WORKER),
        *map(str, args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_two_ranks_take_the_same_steps_as_one_process(tmp_path):
    out = tmp_path / "ddp.json"
    run = _torchrun(tmp_path, out)
    assert run.returncode == 0, run.stderr[-2000:]
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


def test_a_killed_rank_ends_the_job_with_a_message(tmp_path):
    run = _torchrun(tmp_path, tmp_path / "never.json", 1)
    assert run.returncode != 0
    assert not (tmp_path / "never.json").exists()
    assert "another rank of the job stopped" in run.stderr and "--resume" in run.stderr, run.stderr[
        -3000:
    ]


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
