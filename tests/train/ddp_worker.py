"""A torchrun worker for tests/train/test_distributed.py (not a test module).

    torchrun --nproc-per-node 2 tests/train/ddp_worker.py OUT.json [kill-rank]

Takes three SGD steps of a small Cox model on a fixed batch of 12 patients
split across the ranks (differentiable gather, DistributedDataParallel) and
writes rank 0's final weights and losses to OUT.json. With ``kill-rank`` that
rank exits abruptly before the second step.
"""

import json
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from graphmed.errors import GraphMedError
from graphmed.losses import cox_ph_loss
from graphmed.train import distributed


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=gen)
    time = torch.rand(12, generator=gen) * 10
    event = (torch.rand(12, generator=gen) < 0.7).float()
    return x, time, event


def model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def main() -> int:
    out, kill = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else -1
    ctx = distributed.init_distributed("cpu")
    net = DistributedDataParallel(model())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, time, event = data()
    index = torch.arange(12)
    losses = []
    try:
        for step in range(3):
            if step == 1 and ctx.rank == kill:
                os._exit(3)
            mine = ctx.shard(index)
            sizes = ctx.sizes(len(index))
            risk = distributed.gather_rows(net(x[mine]).squeeze(-1), ctx, sizes)
            order = ctx.gathered(index)
            loss = cox_ph_loss(risk, time[order], event[order])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    except RuntimeError as err:
        print(distributed.check_alive(err, ctx), file=sys.stderr, flush=True)
        return 2
    if ctx.is_main:
        weights = [p.detach().flatten().tolist() for p in net.module.parameters()]
        with open(out, "w") as fh:
            json.dump({"weights": weights, "losses": losses, "world": ctx.world_size}, fh)
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GraphMedError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
