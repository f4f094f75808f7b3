"""Masked-modality pretraining: encoders and completion learn to rebuild hidden modalities.

Before the survival loss, :func:`pretrain_network` trains the network of a
:class:`~graphmed.nn.model.GraphMedModel` on the training patients alone, with
no label: each batch hides a share ``mask_rate`` of every patient's present
modalities (the network's own modality dropout, at least one always kept), and
a small decoder per modality rebuilds the raw input of each hidden modality
from that modality's embedding, which the network computes from the prompt
completion and the modalities it still sees. The loss is the mean squared
error of the rebuilt input: numeric columns of a tabular modality (categorical
codes are not rebuilt), every real column of a vector or text modality, the
mean instance of a bag or graph modality.

The decoders are thrown away afterwards; what stays is an encoder and a
completion that have learnt how the modalities predict each other, which is
what the completion of a modality missing at test time needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..errors import GraphMedError
from ..graph.batch import GraphBatch
from ..graph.build import ModalityLayout, PatientGraphs
from ..nn.graphmed_net import SET_KINDS, GraphMedNet

FIX = "set train.pretrain_epochs=0 to train without pretraining"


def _target_shape(layout: ModalityLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Column weights of a modality's rebuilt input (1 = rebuilt, 0 = left out)."""
    if layout.kind == "tabular":
        weight = torch.ones(layout.n_nodes)
        for j in layout.categorical:
            weight[int(j)] = 0.0
        return weight, None
    if layout.kind in SET_KINDS:
        return torch.ones(layout.node_dim), None
    cols = torch.ones(layout.n_nodes, layout.node_dim)
    for g, size in enumerate(layout.group_sizes[: layout.n_nodes]):
        cols[g, int(size) :] = 0.0
    return cols.flatten(), cols


class ModalityDecoders(nn.Module):
    """One decoder per modality, ``LayerNorm -> Linear``, from its ``d``-wide embedding
    to its raw input (see the module docstring for what is rebuilt).

    Args:
        layouts: Modality -> node layout, in the network's modality order.
        d: Embedding width of the network.
    """

    def __init__(self, layouts: dict[str, ModalityLayout], d: int):
        super().__init__()
        self.modalities = list(layouts)
        self.kinds = {m: lay.kind for m, lay in layouts.items()}
        decoders = {}
        for m, lay in layouts.items():
            weight, _ = _target_shape(lay)
            self.register_buffer(f"_w_{m}", weight, persistent=False)
            decoders[m] = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, weight.numel()))
        self.decoders = nn.ModuleDict(decoders)

    def column_weight(self, m: str) -> torch.Tensor:
        return getattr(self, f"_w_{m}")

    def target(self, m: str, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C)`` raw input of modality ``m`` and ``(B, C)`` weights of its columns."""
        x, mask = batch.x[m].float(), batch.node_mask[m]
        weight = self.column_weight(m)
        if self.kinds[m] == "tabular":
            return x[..., 0], weight * mask.float()
        if self.kinds[m] in SET_KINDS:
            w = mask.float()[..., None]
            mean = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
            return mean, weight.expand_as(mean)
        node = mask.float()[..., None].expand_as(x).flatten(1)
        return x.flatten(1), weight * node

    def loss_terms(self, out_embeddings: torch.Tensor, batch: GraphBatch, hidden: torch.Tensor):
        """Per modality: summed squared error over hidden patients and the number of them.

        Args:
            out_embeddings: ``(B, M, d)`` modality embeddings of the network.
            batch: The batch (its raw inputs are the targets).
            hidden: ``(B, M)`` True where a present modality was hidden.
        """
        terms = {}
        for j, m in enumerate(self.modalities):
            rows = hidden[:, j]
            target, weight = self.target(m, batch)
            pred = self.decoders[m](out_embeddings[:, j].float())
            per_col = (pred - target) ** 2 * weight
            per_row = per_col.sum(1) / weight.sum(1).clamp(min=1.0)
            terms[m] = ((per_row * rows).sum(), rows.sum())
        return terms

    def loss(self, out_embeddings: torch.Tensor, batch: GraphBatch, hidden: torch.Tensor):
        """Mean over hidden (patient, modality) pairs of the per-column squared error."""
        terms = self.loss_terms(out_embeddings, batch, hidden)
        total = sum(t[0] for t in terms.values())
        count = sum(t[1] for t in terms.values())
        return total / count.clamp(min=1)


def _hidden(net: GraphMedNet, batch: GraphBatch):
    """Forward ``batch`` with modality dropout on; embeddings and the hidden-present mask."""
    out = net(batch)
    return out.modality_embeddings, out.completed & batch.present


def pretrain_network(
    net: GraphMedNet,
    train: PatientGraphs,
    *,
    epochs: int,
    mask_rate: float = 0.5,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    val: PatientGraphs | None = None,
    make_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
    autocast: Callable[[], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Masked-modality pretraining of ``net`` in place (see the module docstring).

    Reads the patients' inputs only, never ``time``, ``event`` or labels. The
    network's ``modality_dropout`` is set to ``mask_rate`` meanwhile and restored.

    Args:
        net: The network (priors already fitted on ``train``), on ``train``'s device.
        train: Training graphs (the training fold's training part).
        epochs: Passes over ``train``.
        mask_rate: Share of every patient's present modalities hidden per batch.
        lr, weight_decay: AdamW settings of the network and the decoders.
        batch_size: Patients per batch.
        seed: Seed of the batch order and the decoders' initial weights.
        val: Graphs whose reconstruction loss is logged after every epoch
            (the validation part; never the test fold).
        make_optimizer: ``f(params, lr=, weight_decay=)`` making the optimiser
            (default: ``torch.optim.AdamW``).
        autocast: Context factory of the forward pass (mixed precision).
        log: Callable receiving one line of text per epoch.

    Returns:
        Per epoch: ``epoch``, ``train_loss`` and ``val_loss`` (NaN without ``val``).

    Raises:
        GraphMedError: Fewer than two modalities (nothing to rebuild a hidden
            one from), or a loss that is not finite.
    """
    if len(net.modalities) < 2:
        raise GraphMedError(
            "masked-modality pretraining needs at least two modalities (one is hidden and "
            f"rebuilt from the others); this model has {net.modalities}; {FIX}"
        )
    device = train.device
    autocast = autocast or nullcontext
    log = log or (lambda line: None)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        decoders = ModalityDecoders(net.layouts, net.d).to(device)
    make_optimizer = make_optimizer or torch.optim.AdamW
    params = list(net.parameters()) + list(decoders.parameters())
    optimizer = make_optimizer(params, lr=lr, weight_decay=weight_decay)
    saved_rate, was_training = net.modality_dropout, net.training
    net.modality_dropout = mask_rate
    history = []
    try:
        n = len(train)
        n_batches = max(1, round(n / batch_size))
        for epoch in range(epochs):
            net.train()
            decoders.train()
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(seed * 100003 + 7919 + epoch)
            )
            total = torch.zeros((), device=device)
            for idx in order.chunk(n_batches):
                batch = train.batch(idx.to(device))
                with autocast():
                    emb, hidden = _hidden(net, batch)
                loss = decoders.loss(emb, batch, hidden)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            train_loss = float(total) / n_batches
            if not math.isfinite(train_loss):
                raise GraphMedError(
                    f"masked-modality pretraining loss became {train_loss} at epoch {epoch}; "
                    f"lower train.lr, or {FIX}"
                )
            val_loss = _val_loss(net, decoders, val, seed, autocast)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            log(f"pretrain {epoch:4d}  recon {train_loss:.4f}  val recon {val_loss:.4f}")
    finally:
        net.modality_dropout = saved_rate
        net.train(was_training)
    return history


@torch.no_grad()
def _val_loss(net, decoders, val, seed, autocast, chunk: int = 512) -> float:
    """Reconstruction loss on ``val`` with a fixed draw of hidden modalities (NaN: none)."""
    if val is None or not len(val):
        return float("nan")
    # Dropout layers off, modality hiding on: eval() everywhere, then the net's flag back.
    net.eval()
    decoders.eval()
    net.training = True
    total, count = 0.0, 0
    device = val.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 1)
        for idx in torch.arange(len(val)).split(chunk):
            batch = val.batch(idx.to(device))
            with autocast():
                emb, hidden = _hidden(net, batch)
            for err, k in decoders.loss_terms(emb, batch, hidden).values():
                total, count = total + float(err), count + int(k)
    net.training = False
    return total / count if count else float("nan")


__all__ = ["ModalityDecoders", "pretrain_network"]
