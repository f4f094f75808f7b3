"""Multi-process training with ``torch.distributed`` under ``torchrun``.

graphmed does not launch processes: ``torchrun --nproc-per-node N -m graphmed
train ... --distributed`` starts N copies, and each finds its rank in the
environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Every rank builds the same folds, graphs
and model from the same seeds; in each step the global batch (the same
indices on every rank) is split across ranks, each rank runs the model on its
share, and the loss is computed on the whole batch: the outputs are gathered
with a differentiable all-gather, so a Cox risk set spans the global batch as
in one process. ``DistributedDataParallel`` then averages the gradients, which
makes the step equal to one process's step on the whole batch (up to
floating-point summation order and per-rank dropout draws). Validation,
early stopping and prediction read the same weights on every rank and agree;
only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import GraphMedError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a ``torchrun`` job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes outputs, logs and checkpoints."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch: every ``world_size``-th index from ``rank``."""
        return index[self.rank :: self.world_size]

    def sizes(self, n: int) -> list[int]:
        """How many of ``n`` batch indices each rank holds (as :meth:`shard` splits them)."""
        return [len(range(r, n, self.world_size)) for r in range(self.world_size)]

    def gathered(self, index: torch.Tensor) -> torch.Tensor:
        """The batch indices in the order :func:`gather_rows` returns their rows."""
        return torch.cat([index[r :: self.world_size] for r in range(self.world_size)])

    def device(self, requested: str) -> torch.device:
        """The device of this rank: its local GPU under NCCL, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu" if requested in ("auto", "cuda") else requested)


_CONTEXT: DistContext | None = None


def current() -> DistContext | None:
    """The context set up by :func:`init_distributed`, or None in a single process."""
    return _CONTEXT


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """Join the ``torchrun`` job of this process (NCCL on GPUs, gloo on CPU).

    Raises:
        GraphMedError: the process was not started by ``torchrun`` (the
            message gives the command), or the rendezvous failed.
    """
    global _CONTEXT
    if _CONTEXT is not None:
        return _CONTEXT
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise GraphMedError(
            f"--distributed needs the environment torchrun sets ({', '.join(missing)} missing); "
            "start the job with torchrun, e.g. `torchrun --nproc-per-node 2 -m graphmed train "
            "--cohort C --out RUN --distributed` (see docs/distributed.md)."
        )
    use_cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except Exception as err:  # noqa: BLE001 - every rendezvous failure gets one message
        raise GraphMedError(
            f"could not join the torchrun job at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} ({type(err).__name__}: {err}); check that every "
            "rank can reach the rendezvous endpoint."
        ) from err
    _CONTEXT = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _CONTEXT


def shutdown(wait: bool = True) -> None:
    """Leave the job (after the last collective).

    Args:
        wait: meet every rank at a barrier first, so that no rank tears down its
            connections while a peer still uses them. Pass False on an error
            path, where a peer may be gone and the barrier would wait for it.
    """
    global _CONTEXT
    if _CONTEXT is not None and dist.is_initialized():
        if wait:
            try:
                dist.barrier()
            except RuntimeError:  # a peer is gone: nothing left to wait for
                pass
        dist.destroy_process_group()
    _CONTEXT = None


class _GatherCat(torch.autograd.Function):
    """Concatenate every rank's rows in rank order; gradients flow back to their rank."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        width = max(sizes)
        padded = x.new_zeros((width, *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss is the same global loss: sum their grads
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_rows(x: torch.Tensor, ctx: DistContext, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows of ``x`` (``sizes[r]`` from rank ``r``), differentiable."""
    return _GatherCat.apply(x, sizes, ctx.rank)


def check_alive(err: BaseException, ctx: DistContext) -> GraphMedError:
    """The message for a collective that failed because another rank is gone."""
    return GraphMedError(
        f"rank {ctx.rank} of {ctx.world_size}: another rank of the job stopped (killed, out "
        f"of memory or crashed: {type(err).__name__}: {str(err).splitlines()[0][:160]}); the "
        "job cannot go on with a rank missing. See that rank's log for why, then start the "
        "same torchrun command again with --resume to continue from the last checkpoint."
    )


@dataclass
class _Endpoints:
    """What a model's loss reads of a batch: the survival endpoint and the labels."""

    time: torch.Tensor
    event: torch.Tensor
    labels: dict[str, torch.Tensor]


def sharded_step(model, forward, graphs, index: torch.Tensor, ctx: DistContext, prepare=None):
    """This rank's forward pass on its share of the global batch ``index``, and the loss of
    the whole batch (the same value on every rank, differentiable in this rank's share).

    Args:
        model: The :class:`~graphmed.nn.model.GraphMedModel` (its ``loss``).
        forward: What runs the forward pass: the ``DistributedDataParallel``
            wrapper of ``model``, so that backward averages the gradients.
        graphs: The training :class:`~graphmed.graph.build.PatientGraphs`.
        index: The global batch, the same on every rank.
        prepare: Optional function applied to this rank's batch before the
            forward pass (e.g. feature noise).

    Returns:
        ``(loss, parts)`` as :meth:`GraphMedModel.loss` returns them.
    """
    from ..nn.model import ModelOutput

    batch = graphs.batch(ctx.shard(index))
    if prepare is not None:
        batch = prepare(batch)
    out = forward(batch)
    sizes = ctx.sizes(len(index))
    heads = {name: gather_rows(h, ctx, sizes) for name, h in out.heads.items()}
    order = ctx.gathered(index).to(graphs.time.device)
    ends = _Endpoints(
        graphs.time[order], graphs.event[order], {k: v[order] for k, v in graphs.labels.items()}
    )
    return model.loss(ends, ModelOutput(out.net, heads))
