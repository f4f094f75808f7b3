"""Training loop: AdamW, early stopping on a validation part, checkpoints, resume."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from .._safeload import load_tensors, plain
from ..errors import GraphMedError
from ..graph.batch import GraphBatch
from ..graph.build import PatientGraphs
from ..inference.model import resolve_device
from ..inference.predict import Predictions, autocast, forward_chunks, predict
from ..metrics import harrell_c
from ..nn.model import GraphMedModel
from . import accel, distributed
from .config import TrainConfig
from .early_stopping import EarlyStopping
from .options import FitHistory
from .pretrain import pretrain_network


def make_adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch has one for the device.

    The fused step updates every tensor in one pass; the default on the CPU
    loops over the model's ~300 parameter tensors in Python, which took 10 to
    30 times longer than the fused step for graphmed's default model
    (``tools/bench_speed.py`` profile, ``docs/benchmarks.md``).
    """
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # torch < 2.4 on the CPU, or odd dtypes
        return torch.optim.AdamW(params, **kwargs)


class Trainer:
    """Fit a :class:`GraphMedModel` with early stopping on validation patients.

    Inside a ``--distributed`` job (:func:`graphmed.train.distributed.init_distributed`
    called before) the model is wrapped in ``DistributedDataParallel`` and every
    global batch is split across the ranks (:func:`~graphmed.train.distributed.sharded_step`).

    Args:
        config: Optimisation settings (:class:`TrainConfig`).
        log: Callable receiving one line of text per epoch (default: nothing).

    Raises:
        GraphMedError: ``train.cuda_graphs`` off CUDA or under ``--distributed``.
    """

    def __init__(self, config: TrainConfig, log=None):
        self.config = config
        self.dist = distributed.current()
        self.device = (
            self.dist.device(config.device) if self.dist else resolve_device(config.device)
        )
        accel.check_accel(config.compile, config.cuda_graphs, self.device, self.dist is not None)
        self.log = log or (lambda line: None)
        self._step_model = self._step_forward = self._graphed = None

    # ---------------------------------------------------------------- helpers
    def _optimizer(self, model: GraphMedModel) -> torch.optim.Optimizer:
        prompt_ids = set()
        if model.net.completion is not None:
            prompt_ids = {id(p) for p in model.net.completion.parameters()}
        main = [p for p in model.parameters() if id(p) not in prompt_ids]
        prompts = [p for p in model.parameters() if id(p) in prompt_ids]
        groups = [{"params": main, "lr": self.config.lr}]
        if prompts:
            groups.append({"params": prompts, "lr": self.config.prompt_lr})
        return make_adamw(groups, weight_decay=self.config.weight_decay)

    def _autocast(self):
        return autocast(self.device, self.config.precision)

    def _prepare_step(self, model: GraphMedModel) -> None:
        """What :meth:`train_step` runs the forward pass through: ``model``, or its
        ``DistributedDataParallel`` wrapper, compiled under ``train.compile``; or the
        CUDA graphs of the forward and loss under ``train.cuda_graphs``."""
        cfg = self.config
        forward = model
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # find_unused_parameters: a batch without a modality leaves parts unused
            forward = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if cfg.compile:
            forward = accel.compile_forward(forward, cfg.compile_backend)
        self._graphed = None
        if cfg.cuda_graphs:
            dtype = {"bf16": torch.bfloat16}.get(cfg.precision)
            self._graphed = accel.GraphedLoss(model, dtype)
        self._step_model, self._step_forward = model, forward

    def _add_noise(self, batch: GraphBatch) -> GraphBatch:
        """Gaussian noise on the real nodes' features (``train.feature_noise``)."""
        for m, x in batch.x.items():
            noise = torch.randn_like(x) * self.config.feature_noise
            batch.x[m] = x + noise * batch.node_mask[m][..., None]
        return batch

    def _progress(self, total: int, desc: str):
        from tqdm.auto import tqdm

        enabled = self.config.progress and sys.stderr.isatty()
        return tqdm(total=total, desc=desc, disable=not enabled, leave=False)

    # -------------------------------------------------------------------- fit
    def fit(
        self,
        model: GraphMedModel,
        train: PatientGraphs,
        val: PatientGraphs | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> FitHistory:
        """Train ``model`` in place; on return it holds the best validation weights.

        Each epoch is :meth:`run_epoch`; an :class:`EarlyStopping` watches
        ``train.monitor`` on ``val`` (see :meth:`validation_score`), keeps the
        best epoch's weights, and falls back to the training loss -- with a
        :class:`UserWarning` -- where the validation part cannot rank epochs (no
        events for a survival head, or a non-finite score before any finite one).

        Args:
            model: The model (priors already fitted on ``train``).
            train: Training graphs.
            val: Validation graphs carved from the training fold (never the
                test fold); without them the training loss is monitored too.
            checkpoint: File to save the state to after every epoch.
            resume: Continue from ``checkpoint`` if it exists.

        Returns:
            The history: ``history`` (per epoch: ``train_loss`` and
            ``val_score``, the monitored score, higher is better: minus the
            training loss where that is monitored), ``best_epoch`` (``-1``:
            the starting weights were kept; only a model with a linear Cox
            path, whose starting point is that linear model, is scored before
            its first epoch),
            ``best_score``, ``stopped_early``, ``epochs_run`` and
            ``monitor_used``: ``"c_index"`` or ``"loss"`` (of the validation
            part), or ``"train_loss"``; ``pretrain``: the per-epoch losses of
            masked-modality pretraining (:meth:`pretrain`; empty without it, or
            on a resume, whose checkpoint already holds the pretrained weights).
        """
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model.to(self.device)
        train_d = train.to(self.device)
        val_d = val.to(self.device) if val is not None and len(val) else None
        path = Path(checkpoint) if checkpoint else None
        resuming = resume and path is not None and path.exists()
        pretrained = []
        if cfg.pretrain_epochs > 0 and not resuming:  # a checkpoint holds pretrained weights
            pretrained = self.pretrain(model, train_d, val_d)
        optimizer = self._optimizer(model)
        self._prepare_step(model)
        scaler = torch.amp.GradScaler(
            "cuda", enabled=self.device.type == "cuda" and cfg.precision == "fp16"
        )
        stopper = EarlyStopping(cfg.patience, cfg.monitor, cfg.val_fraction)
        best_weights = copy.deepcopy(model.state_dict())
        if resuming:
            best_weights = self._load(path, model, optimizer, scaler, stopper)
        resumed = stopper.monitor_used is not None
        stopper.choose_monitor(
            any(head.is_survival for head in model.heads.values()),
            None if val_d is None else len(val_d),
            0 if val_d is None else int(val_d.event.sum()),
        )
        if not resumed and getattr(model, "linear", None) is not None:
            if not stopper.watches_train_loss:
                # the starting point is the linear Cox path alone (the graph head is zero):
                # the graph part is kept only where it beats it on the validation part
                stopper.start_from(self.validation_score(model, val_d))
        bar = self._progress(cfg.epochs, "train")
        bar.update(stopper.epoch)
        stopped = False
        for epoch in range(stopper.epoch, cfg.epochs):
            if stopper.should_stop:
                stopped = True
                break
            train_loss = self.run_epoch(model, train_d, optimizer, scaler, epoch)
            score = None if stopper.watches_train_loss else self.validation_score(model, val_d)
            if stopper.step(epoch, train_loss, score):
                best_weights = copy.deepcopy(model.state_dict())
            score = stopper.history[-1]["val_score"]
            self.log(f"epoch {epoch:4d}  train_loss {train_loss:.4f}  val {score:.4f}")
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{score:.3f}")
            if path is not None:
                self._save(path, model, optimizer, scaler, stopper, best_weights)
        bar.close()
        model.load_state_dict(best_weights)
        blend = None
        if cfg.linear_blend and stopper.best_epoch >= 0 and not stopper.watches_train_loss:
            blend = self._blend(model, val_d, stopper.best_score)
        return FitHistory(
            history=stopper.history,
            best_epoch=stopper.best_epoch,
            best_score=stopper.best_score,
            stopped_early=stopped or stopper.should_stop,
            epochs_run=stopper.epoch,
            monitor_used=stopper.monitor_used,
            linear_blend=blend,
            pretrain=pretrained,
        )

    def pretrain(
        self, model: GraphMedModel, train: PatientGraphs, val: PatientGraphs | None = None
    ) -> list[dict[str, float]]:
        """Masked-modality pretraining of ``model.net`` on ``train`` (no label is read):
        ``train.pretrain_epochs`` passes hiding a share ``train.pretrain_mask`` of each
        patient's modalities and rebuilding them (:func:`~graphmed.train.pretrain.pretrain_network`).
        :meth:`fit` runs it first where ``train.pretrain_epochs > 0``.

        Returns:
            Per epoch: ``epoch``, ``train_loss`` and ``val_loss`` (reconstruction).
        """
        cfg = self.config
        model.to(self.device)
        return pretrain_network(
            model.net,
            train.to(self.device),
            epochs=cfg.pretrain_epochs,
            mask_rate=cfg.pretrain_mask,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            val=None if val is None else val.to(self.device),
            make_optimizer=make_adamw,
            autocast=self._autocast,
            log=self.log,
        )

    def run_epoch(
        self,
        model: GraphMedModel,
        train: PatientGraphs,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        epoch: int,
    ) -> float:
        """One pass over ``train`` (already on the device) in shuffled batches.

        The order is drawn from ``train.seed`` and ``epoch`` alone, so that a
        resumed fit sees the batches an uninterrupted one would have seen.

        Returns:
            The mean training loss over the ``round(n / train.batch_size)`` batches.

        Raises:
            GraphMedError: The loss is not finite.
        """
        cfg = self.config
        model.train()
        n = len(train)
        n_batches = max(1, round(n / cfg.batch_size))
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        )
        running = torch.zeros((), device=self.device)
        for idx in order.chunk(n_batches):
            if self.dist is not None:
                running += self.sharded_step(model, train, idx, optimizer, scaler).detach()
                continue
            batch = train.batch(idx.to(self.device))
            if cfg.feature_noise > 0:
                batch = self._add_noise(batch)
            running += self.train_step(model, batch, optimizer, scaler).detach()
        train_loss = float(running) / n_batches
        if not np.isfinite(train_loss):
            raise GraphMedError(
                f"training loss became {train_loss} at epoch {epoch}; lower train.lr "
                "or use train.precision=fp32"
            )
        return train_loss

    def train_step(
        self,
        model: GraphMedModel,
        batch: GraphBatch,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> torch.Tensor:
        """Forward, loss, backward and one optimiser step on ``batch``; the loss (with grad).

        The forward pass runs compiled under ``train.compile``, and forward and loss
        replay CUDA graphs under ``train.cuda_graphs`` (:mod:`graphmed.train.accel`).
        """
        if self._step_model is not model:
            self._prepare_step(model)
        if self._graphed is not None:
            loss = self._graphed(batch)
        else:
            with self._autocast():
                out = self._step_forward(batch)
            loss, _ = model.loss(batch, out)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    def sharded_step(
        self,
        model: GraphMedModel,
        train: PatientGraphs,
        index: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> torch.Tensor:
        """:meth:`train_step` of a distributed job on the global batch ``index`` (the same on
        every rank): this rank runs its share, the loss spans the whole batch
        (:func:`~graphmed.train.distributed.sharded_step`), DDP averages the gradients.

        Raises:
            GraphMedError: Another rank stopped (its collective failed); the message
                says to rerun with ``--resume``.
        """
        if self._step_model is not model:
            self._prepare_step(model)
        noise = self._add_noise if self.config.feature_noise > 0 else None
        try:
            with self._autocast():
                loss, _ = distributed.sharded_step(
                    model, self._step_forward, train, index.to(self.device), self.dist, noise
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
        except RuntimeError as err:  # gloo / NCCL: a peer is gone
            raise distributed.check_alive(err, self.dist) from err
        scaler.step(optimizer)
        scaler.update()
        return loss

    def _blend(self, model: GraphMedModel, val: PatientGraphs, full: float) -> float | None:
        """Scale the survival head to the weight ``w`` of the graph part, ``risk = linear +
        w * graph``, that scores best on ``val`` (``w = 1``, the trained model, unless another
        beats it); ``None`` where the model has no linear path or no Cox head."""
        head = (
            getattr(model.heads["survival"], "linear", None) if "survival" in model.heads else None
        )
        if getattr(model, "linear", None) is None or head is None or head.bias.numel() != 1:
            return None
        weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
        best, best_w = full, 1.0
        for w in (0.0, 0.25, 0.5, 0.75):
            with torch.no_grad():
                head.weight.copy_(weight * w)
                head.bias.copy_(bias * w)
            score = self.validation_score(model, val)
            if np.isfinite(score) and score > best + 1e-4:
                best, best_w = score, w
        with torch.no_grad():
            head.weight.copy_(weight * best_w)
            head.bias.copy_(bias * best_w)
        self.log(f"linear blend: graph part kept at weight {best_w} (validation {best:.4f})")
        return best_w

    @torch.no_grad()
    def validation_score(self, model: GraphMedModel, val: PatientGraphs) -> float:
        """The early-stopping score on the validation graphs (higher is better).

        ``monitor: c_index``: Harrell's C-index of the survival head (NaN
        without a comparable pair, or where a risk is not finite), or minus
        the validation loss where there is no survival head or no validation
        event. ``monitor: loss``: minus the validation loss, the weighted sum of
        the head losses over the whole validation set at once (the Cox partial
        likelihood compares each event with its whole risk set), computed in
        evaluation mode.
        """
        model.eval()
        if self.config.monitor == "c_index" and val.event.sum() > 0:
            preds = self.predict(model, val)
            if preds.risk is not None:
                # NaN is early stopping's to handle (it falls back, and warns): no warning here
                time, event = val.time.cpu().numpy(), val.event.cpu().numpy()
                return harrell_c(time, event, preds.risk, warn=False)
        return -self.validation_loss(model, val)

    @torch.no_grad()
    def validation_loss(
        self, model: GraphMedModel, val: PatientGraphs, batch_size: int = 1024
    ) -> float:
        """Weighted head losses (:meth:`GraphMedModel.head_losses`) over all of ``val`` at
        once, without the steering loss; the forward runs in chunks."""
        model.eval()
        val = val.to(self.device)
        raw: dict[str, list[torch.Tensor]] = {name: [] for name in model.heads}
        for out in forward_chunks(model, val, batch_size, self.config.precision):
            for name in model.heads:
                raw[name].append(out.heads[name].float())
        parts = model.head_losses({name: torch.cat(raw[name]) for name in model.heads}, val)
        total = 0.0
        for name, part in parts.items():
            total += model.weights[name] * float(part)
        return total

    def predict(
        self, model: GraphMedModel, graphs: PatientGraphs, batch_size: int = 1024
    ) -> Predictions:
        """:func:`graphmed.inference.predict` on this trainer's device and precision."""
        return predict(
            model,
            graphs,
            device=self.device,
            batch_size=batch_size,
            precision=self.config.precision,
        )

    # ------------------------------------------------------------ checkpoints
    def _save(self, path, model, optimizer, scaler, stopper, best_weights) -> None:
        # Tensors and plain values only, so that _load() reads it with weights_only=True.
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": plain(stopper.state_dict()),
            "best_weights": best_weights,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def _load(self, path, model, optimizer, scaler, stopper) -> dict[str, torch.Tensor]:
        # weights_only: a crafted checkpoint (a pickled callable) is refused, never run.
        fix = "delete it to train from the start"
        payload = load_tensors(path, what="checkpoint", fix=fix, map_location=self.device)
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scaler.load_state_dict(payload["scaler"])
            stopper.load_state_dict(payload["state"])
            torch.set_rng_state(payload["rng"].cpu())
            if payload.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
            return payload["best_weights"]
        except Exception as err:  # a foreign or mismatched checkpoint must say which file
            raise GraphMedError(f"cannot resume from '{path}': {err}; {fix}") from err
