"""Training loop: AdamW, early stopping on a validation part, checkpoints, resume."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_path
from .._safeload import load_tensors, plain
from ..errors import GraphMedError
from ..graph.build import PatientGraphs
from ..inference.model import resolve_device
from ..inference.predict import Predictions, autocast, forward_chunks, predict
from ..nn.model import GraphMedModel
from .config import TrainConfig
from .options import FitHistory


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

    Args:
        config: Optimisation settings (:class:`TrainConfig`).
        log: Callable receiving one line of text per epoch (default: nothing).
    """

    def __init__(self, config: TrainConfig, log=None):
        self.config = config
        self.device = resolve_device(config.device)
        self.log = log or (lambda line: None)

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

        Early stopping watches ``train.monitor`` on ``val`` (see
        :meth:`validation_score`) and keeps the best epoch's weights. It falls
        back to the training loss -- keeping the weights of the epoch with the
        lowest training loss, with ``train.patience`` counted on it -- where
        the validation part cannot rank epochs, and says so with a
        :class:`UserWarning`:

        - ``val`` has no events and the model has a survival head (no
          C-index, and a Cox validation loss that is 0 whatever the weights);
        - the validation score is NaN (or infinite) before any epoch has had
          a finite one, e.g. a C-index without a comparable pair. A
          non-finite score after a finite one counts as no improvement.

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
            part), or ``"train_loss"``.
        """
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model.to(self.device)
        train_d = train.to(self.device)
        val_d = val.to(self.device) if val is not None and len(val) else None
        optimizer = self._optimizer(model)
        scaler = torch.amp.GradScaler(
            "cuda", enabled=self.device.type == "cuda" and cfg.precision == "fp16"
        )
        state = {
            "epoch": 0,
            "best_score": -np.inf,
            "best_epoch": 0,
            "bad": 0,
            "history": [],
            "monitor_used": None,
        }
        best_weights = copy.deepcopy(model.state_dict())
        path = Path(checkpoint) if checkpoint else None
        if resume and path is not None and path.exists():
            best_weights = self._load(path, model, optimizer, scaler, state)
        if state["monitor_used"] is None:
            state["monitor_used"] = self._monitor(model, val_d)
            if getattr(model, "linear", None) is not None and state["monitor_used"] != "train_loss":
                # the starting point is the linear Cox path alone (the graph head is zero):
                # the graph part is kept only where it beats it on the validation part
                start = self.validation_score(model, val_d)
                if np.isfinite(start):
                    state.update(best_score=start, best_epoch=-1)
        n = len(train_d)
        n_batches = max(1, round(n / cfg.batch_size))
        bar = self._progress(cfg.epochs, "train")
        bar.update(state["epoch"])
        stopped = False
        for epoch in range(state["epoch"], cfg.epochs):
            if state["bad"] >= cfg.patience:
                stopped = True
                break
            model.train()
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            )
            running = torch.zeros((), device=self.device)
            for idx in order.chunk(n_batches):
                batch = train_d.batch(idx.to(self.device))
                if cfg.feature_noise > 0:
                    for m, x in batch.x.items():
                        noise = torch.randn_like(x) * cfg.feature_noise
                        batch.x[m] = x + noise * batch.node_mask[m][..., None]
                with self._autocast():
                    out = model(batch)
                loss, _ = model.loss(batch, out)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                running += loss.detach()
            train_loss = float(running) / n_batches
            if not np.isfinite(train_loss):
                raise GraphMedError(
                    f"training loss became {train_loss} at epoch {epoch}; lower train.lr "
                    "or use train.precision=fp32"
                )
            if state["monitor_used"] == "train_loss":
                score = -train_loss
            else:
                score = self.validation_score(model, val_d)
                if not np.isfinite(score) and not np.isfinite(state["best_score"]):
                    self._warn_non_finite(state["monitor_used"], score, epoch, val_d)
                    state["monitor_used"] = "train_loss"
                    score = -train_loss
            state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_score": score})
            if score > state["best_score"] + 1e-4:
                state.update(best_score=score, best_epoch=epoch, bad=0)
                best_weights = copy.deepcopy(model.state_dict())
            else:
                state["bad"] += 1
            state["epoch"] = epoch + 1
            self.log(f"epoch {epoch:4d}  train_loss {train_loss:.4f}  val {score:.4f}")
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{score:.3f}")
            if path is not None:
                self._save(path, model, optimizer, scaler, state, best_weights)
        bar.close()
        model.load_state_dict(best_weights)
        blend = None
        if cfg.linear_blend and state["best_epoch"] >= 0 and state["monitor_used"] != "train_loss":
            blend = self._blend(model, val_d, state["best_score"])
        return FitHistory(
            history=state["history"],
            best_epoch=state["best_epoch"],
            best_score=state["best_score"],
            stopped_early=stopped or state["bad"] >= cfg.patience,
            epochs_run=state["epoch"],
            monitor_used=state["monitor_used"],
            linear_blend=blend,
        )

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

    def _monitor(self, model: GraphMedModel, val: PatientGraphs | None) -> str:
        """What early stopping can watch: ``"c_index"``, ``"loss"`` or ``"train_loss"``."""
        if val is None:
            return "train_loss"
        survival = any(head.kind != "classification" for head in model.heads.values())
        if survival and not bool(val.event.any()):
            warnings.warn(
                f"early stopping: the validation part ({len(val)} patients) has no events, "
                "so it cannot rank epochs by survival (no C-index, and a Cox loss of 0 "
                "whatever the weights); monitoring the training loss instead and keeping the "
                "epoch with the lowest training loss. Raise train.val_fraction (now "
                f"{self.config.val_fraction}), or pass validation patients with events.",
                UserWarning,
                stacklevel=3,
            )
            return "train_loss"
        return "c_index" if self.config.monitor == "c_index" and survival else "loss"

    def _warn_non_finite(self, monitor: str, score: float, epoch: int, val: PatientGraphs) -> None:
        what = "C-index" if monitor == "c_index" else "loss"
        value = score if monitor == "c_index" else -score
        warnings.warn(
            f"early stopping: the validation {what} is {value} at epoch {epoch} "
            f"({len(val)} validation patients, {int(val.event.sum())} events), so it cannot "
            "tell epochs apart; monitoring the training loss instead and keeping the epoch "
            f"with the lowest training loss. Raise train.val_fraction (now "
            f"{self.config.val_fraction}), or check the validation patients' inputs"
            + (" (or use train.monitor=loss)." if monitor == "c_index" else "."),
            UserWarning,
            stacklevel=3,
        )

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
        from sksurv.exceptions import NoComparablePairException
        from sksurv.metrics import concordance_index_censored

        model.eval()
        if self.config.monitor == "c_index" and val.event.sum() > 0:
            preds = self.predict(model, val)
            if preds.risk is not None:
                if not np.isfinite(preds.risk).all():
                    return float("nan")
                event = val.event.cpu().numpy().astype(bool)
                try:
                    return float(
                        concordance_index_censored(event, val.time.cpu().numpy(), preds.risk)[0]
                    )
                except NoComparablePairException:
                    return float("nan")
        return -self.validation_loss(model, val)

    @torch.no_grad()
    def validation_loss(
        self, model: GraphMedModel, val: PatientGraphs, batch_size: int = 1024
    ) -> float:
        """Weighted head losses over all of ``val``; the forward runs in chunks."""
        model.eval()
        val = val.to(self.device)
        raw: dict[str, list[torch.Tensor]] = {name: [] for name in model.heads}
        for out in forward_chunks(model, val, batch_size, self.config.precision):
            for name in model.heads:
                raw[name].append(out.heads[name].float())
        total = 0.0
        for name, head in model.heads.items():
            outputs = torch.cat(raw[name])
            if head.kind == "classification":
                part = head.loss(outputs, val.labels[name])
            else:
                part = head.loss(outputs, val.time, val.event)
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
    def _save(self, path, model, optimizer, scaler, state, best_weights) -> None:
        # Tensors and plain values only, so that _load() reads it with weights_only=True.
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": plain(state),
            "best_weights": best_weights,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def _load(self, path, model, optimizer, scaler, state) -> dict[str, torch.Tensor]:
        # weights_only: a crafted checkpoint (a pickled callable) is refused, never run.
        fix = "delete it to train from the start"
        payload = load_tensors(path, what="checkpoint", fix=fix, map_location=self.device)
        try:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scaler.load_state_dict(payload["scaler"])
            state.update(payload["state"])
            torch.set_rng_state(payload["rng"].cpu())
            if payload.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
            return payload["best_weights"]
        except Exception as err:  # a foreign or mismatched checkpoint must say which file
            raise GraphMedError(f"cannot resume from '{path}': {err}; {fix}") from err
