"""A torchrun worker for tests/train/test_distributed.py (not a test module).

    torchrun --nproc-per-node 2 tests/train/ddp_worker.py OUT.json [kill-rank]
    torchrun --nproc-per-node 2 tests/train/ddp_worker.py --trainer OUT.json [kill-rank]
    torchrun --nproc-per-node 2 tests/train/ddp_worker.py --estimator OUT.json

Takes three SGD steps of a small Cox model on a fixed batch of 12 patients
split across the ranks (differentiable gather, DistributedDataParallel) and
writes rank 0's final weights and losses to OUT.json. With ``--trainer`` it
instead fits graphmed on a small synthetic cohort through the real
``Trainer`` (:func:`fit_trainer`) and writes the weights and the history.
With ``--estimator`` it fits :class:`graphmed.GraphMedSurvival` on the same
cohort (:func:`fit_estimator`; the job is joined by ``init_distributed``
before ``fit``) and writes rank 0's predicted risks.
With ``kill-rank`` that rank exits abruptly before the second step (after the
first epoch with ``--trainer``, whose further arguments are a checkpoint file
and ``resume``).
"""

import json
import os
import sys
import time

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


TRAINER = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "model.dropout=0",
    "model.modality_dropout=0",
    "model.linear_path=false",
    "train.epochs=3",
    "train.patience=10",
    "train.batch_size=16",
    "train.progress=false",
    "train.device=cpu",
]


def fit_trainer(log=None, checkpoint=None, resume=False):
    """graphmed fitted on 40 synthetic patients through ``fit_fold_model`` and ``Trainer``:
    ``(model, history)``; in a distributed job each global batch of 16 is split."""
    import graphmed
    from graphmed.train.config import load_experiment
    from graphmed.train.fit import fit_fold_model

    cohort = graphmed.make_synthetic_cohort(40, bag_size=(2, 6), censoring=0.3, seed=3)
    config = load_experiment(None, TRAINER)
    fold = fit_fold_model(cohort, config, log=log, checkpoint=checkpoint, resume=resume)
    return fold.model, fold.history


def fit_estimator():
    """:class:`graphmed.GraphMedSurvival` fitted on the cohort of :func:`fit_trainer` with the
    same options: the risks it predicts for that cohort."""
    import graphmed

    cohort = graphmed.make_synthetic_cohort(40, bag_size=(2, 6), censoring=0.3, seed=3)
    est = graphmed.GraphMedSurvival(
        hidden=16, layers=1, heads=2, epochs=3, device="cpu", overrides=tuple(TRAINER)
    )
    return est.fit(cohort).predict(cohort)


def estimator_main(out: str) -> int:
    ctx = distributed.init_distributed("cpu")
    risk = fit_estimator()
    if ctx.is_main:
        with open(out, "w") as fh:
            json.dump({"risk": [float(r) for r in risk], "world": ctx.world_size}, fh)
    distributed.shutdown()
    return 0


def trainer_main(out: str, kill: int, checkpoint: str | None = None, resume: bool = False) -> int:
    ctx = distributed.init_distributed("cpu")

    def log(line):
        if ctx.rank == kill and line.startswith("epoch    0"):
            time.sleep(1.0)  # rank 0 saves the checkpoint and waits in its next collective
            os._exit(3)

    model, history = fit_trainer(log, checkpoint, resume)
    if ctx.is_main:
        weights = {k: v.flatten().tolist() for k, v in model.state_dict().items()}
        with open(out, "w") as fh:
            json.dump({"weights": weights, "history": history.history, "world": ctx.world_size}, fh)
    distributed.shutdown()
    return 0


def main() -> int:
    if sys.argv[1] == "--estimator":
        return estimator_main(sys.argv[2])
    if sys.argv[1] == "--trainer":  # OUT [KILL [CHECKPOINT [resume]]]
        args = sys.argv[2:]
        kill = int(args[1]) if len(args) > 1 else -1
        checkpoint = args[2] if len(args) > 2 else None
        return trainer_main(args[0], kill, checkpoint, len(args) > 3 and args[3] == "resume")
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
