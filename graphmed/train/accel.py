"""Launch-efficient training steps: ``torch.compile`` and CUDA graphs.

A training step of graphmed's default model runs a few thousand small
kernels; on a GPU it is bound by their launches, not by arithmetic. Two ways
to cut that, both off by default (``train.compile``, ``train.cuda_graphs``):

- :func:`compile_forward` passes the forward pass through ``torch.compile``
  (``train.compile_backend``; ``inductor`` fuses elementwise kernels). The
  forward has no graph break (``fullgraph=True`` outside
  ``DistributedDataParallel``) and no host sync, and the batch shapes are
  static (``dynamic=False``): the trainer's batches take at most two sizes
  (:func:`batch_sizes`), so at most two compilations.
- :class:`GraphedLoss` captures the forward pass and the loss, and their
  backward, in one CUDA graph per batch signature and replays it
  (``torch.cuda.make_graphed_callables``); the optimiser step stays eager
  (fused AdamW is a handful of kernels). CUDA only: on the CPU it is refused
  with a message (:func:`check_accel`), as it is with fp16 (the loss scaler
  reads the gradients on the host) and under ``--distributed`` (the gradient
  all-reduce of ``DistributedDataParallel`` would have to be captured too).

Neither pads nor drops patients: the batches of an epoch are
``randperm(n).chunk(round(n / batch_size))``, which gives one size for every
batch but possibly the last, the same in every epoch, and every node tensor
of a batch is padded to the cohort's layout. A graph is captured the first
time a signature (the shapes and dtypes of the batch's tensors) is seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch
from torch import nn

from ..errors import GraphMedError
from ..graph.batch import GraphBatch

_DICT_FIELDS = ("x", "node_mask", "labels", "edge_index", "edge_mask", "edge_attr")


def check_accel(compile: bool, cuda_graphs: bool, device: torch.device, distributed: bool) -> None:
    """Refuse the combinations the step cannot run (CUDA graphs off CUDA, or distributed).

    Raises:
        GraphMedError: ``cuda_graphs`` on a device that is not CUDA, or with
            ``distributed``.
    """
    if not cuda_graphs:
        return
    if device.type != "cuda":
        raise GraphMedError(
            f"train.cuda_graphs needs a CUDA device, but this run trains on {device} "
            f"({'no GPU found' if not torch.cuda.is_available() else 'train.device says so'}); "
            "set train.cuda_graphs=false (train.compile=true works on any device)"
        )
    if distributed:
        raise GraphMedError(
            "train.cuda_graphs does not work with --distributed (the gradient all-reduce "
            "would have to be captured in the graph); set train.cuda_graphs=false"
        )


def compile_forward(module: nn.Module, backend: str = "inductor") -> Callable:
    """``module`` (a model, or its ``DistributedDataParallel`` wrapper) through ``torch.compile``.

    The returned callable shares ``module``'s parameters; ``module`` itself and
    its ``state_dict`` keys stay as they are, so checkpoints and saved models do
    not change. Under ``DistributedDataParallel`` the graph is split at the
    gradient buckets, so ``fullgraph`` is only asked for outside it.
    """
    ddp = isinstance(module, nn.parallel.DistributedDataParallel)
    return torch.compile(module, backend=backend, fullgraph=not ddp, dynamic=False)


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The distinct batch sizes of an epoch of ``n`` patients (the trainer's chunking)."""
    n_batches = max(1, round(n / batch_size))
    return sorted({len(c) for c in torch.arange(n).chunk(n_batches)}, reverse=True)


# ------------------------------------------------------------- flat batches
def flatten_batch(batch: GraphBatch) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """The batch's tensors in a fixed order, and the spec that rebuilds it.

    The spec names each tensor's field (and key) and holds the shape and
    dtype, so two batches with the same spec can share a captured graph.
    """
    tensors, names = [], []
    for f in fields(batch):
        value = getattr(batch, f.name)
        if value is None:
            continue
        if f.name in _DICT_FIELDS:
            for key in sorted(value):
                names.append((f.name, key))
                tensors.append(value[key])
        else:
            names.append((f.name, None))
            tensors.append(value)
    spec = tuple((n, tuple(t.shape), t.dtype) for n, t in zip(names, tensors))
    return tuple(tensors), spec


def unflatten_batch(tensors: tuple[torch.Tensor, ...], spec: tuple) -> GraphBatch:
    """The :class:`GraphBatch` of :func:`flatten_batch`'s tensors."""
    parts: dict = {name: {} for name in _DICT_FIELDS}
    for ((name, key), _, _), t in zip(spec, tensors):
        if key is None:
            parts[name] = t
        else:
            parts[name][key] = t
    return GraphBatch(**parts)


class FlatLoss(nn.Module):
    """The training loss of ``model`` as a function of a flat batch (what a CUDA graph captures).

    Args:
        model: The :class:`~graphmed.nn.model.GraphMedModel`.
        spec: :func:`flatten_batch`'s spec of the batches it will see.
        autocast: A callable returning the autocast context of the step (the
            trainer's precision); its cache must be off for a capture.
    """

    def __init__(self, model: nn.Module, spec: tuple, autocast: Callable | None = None):
        super().__init__()
        self.model = model
        self.spec = spec
        self.autocast = autocast

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = unflatten_batch(tensors, self.spec)
        if self.autocast is None:
            out = self.model(batch)
        else:
            with self.autocast():
                out = self.model(batch)
        return self.model.loss(batch, out)[0]


class GraphedLoss:
    """The training loss of ``model`` through CUDA graphs captured per batch signature.

    ``loss = graphed(batch)`` replays the captured forward (the batch's
    tensors are copied into the graph's static inputs); ``loss.backward()``
    replays the captured backward and leaves the gradients in ``.grad`` as
    the eager step does. A batch with a new signature (the short last batch
    of an epoch) is captured once, after three warm-up passes that touch no
    weight.

    Args:
        model: The model, in training mode, on a CUDA device.
        dtype: ``torch.bfloat16`` to capture under autocast, else None.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None):
        self.model = model
        self.dtype = dtype
        self.graphs: dict[tuple, Callable] = {}

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.dtype, cache_enabled=False)

    def __call__(self, batch: GraphBatch) -> torch.Tensor:
        tensors, spec = flatten_batch(batch)
        graphed = self.graphs.get(spec)
        if graphed is None:
            step = FlatLoss(self.model, spec, self._autocast if self.dtype else None)
            sample = tuple(t.clone() for t in tensors)
            graphed = torch.cuda.make_graphed_callables(step, sample, allow_unused_input=True)
            self.graphs[spec] = graphed
        return graphed(*tensors)
