"""Early stopping: which score to watch, the best epoch so far, and when patience runs out.

:class:`EarlyStopping` knows nothing of models or tensors. The trainer tells
it what the validation part holds (:meth:`EarlyStopping.choose_monitor`), hands
it one score per epoch (:meth:`EarlyStopping.step`) and keeps the weights of
the epochs it reports as improved.
"""

from __future__ import annotations

import math
import warnings
from typing import Any


class EarlyStopping:
    """The best score so far, the epochs without improvement, and the fallback rules.

    A score is better than the best one when it beats it by more than
    ``min_delta``; higher is better (a loss enters as minus the loss). Early
    stopping falls back to the training loss -- keeping the epoch with the
    lowest training loss, with ``patience`` counted on it -- where the
    validation part cannot rank epochs, and says so with a :class:`UserWarning`:

    - there is no validation part;
    - the validation part has no events and the model has a survival head
      (no C-index, and a Cox validation loss that is 0 whatever the weights);
    - the validation score is NaN (or infinite) before any epoch has had a
      finite one. A non-finite score after a finite one counts as no
      improvement.

    Args:
        patience: Epochs without improvement before :attr:`should_stop`.
        monitor: The configured monitor, ``"c_index"`` or ``"loss"``.
        val_fraction: The configured ``train.val_fraction``, named in the warnings.
        min_delta: Least gain that counts as an improvement (default 1e-4).

    Attributes:
        epoch: The next epoch to run (epochs run so far, counting a resume).
        best_score: Best monitored score (``-inf`` before the first).
        best_epoch: Its epoch (``-1``: the starting weights, see :meth:`start_from`).
        bad: Epochs since the last improvement.
        history: Per epoch: ``epoch``, ``train_loss`` and ``val_score``.
        monitor_used: ``"c_index"``, ``"loss"`` or ``"train_loss"`` once chosen.
    """

    def __init__(
        self,
        patience: int,
        monitor: str = "c_index",
        val_fraction: float | None = None,
        min_delta: float = 1e-4,
    ):
        self.patience = patience
        self.monitor = monitor
        self.val_fraction = val_fraction
        self.min_delta = min_delta
        self.epoch = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.bad = 0
        self.history: list[dict[str, Any]] = []
        self.monitor_used: str | None = None
        self._n_val = 0
        self._n_val_events = 0

    @property
    def watches_train_loss(self) -> bool:
        """Whether the score is minus the training loss (no validation score needed)."""
        return self.monitor_used == "train_loss"

    @property
    def should_stop(self) -> bool:
        """Patience has run out."""
        return self.bad >= self.patience

    def choose_monitor(self, survival: bool, n_val: int | None, n_val_events: int = 0) -> str:
        """Pick what to watch, once (a resumed state keeps its choice).

        Args:
            survival: The model has a survival head.
            n_val: Validation patients (``None``: no validation part).
            n_val_events: Events among them.

        Returns:
            :attr:`monitor_used`.
        """
        self._n_val, self._n_val_events = n_val or 0, n_val_events
        if self.monitor_used is not None:
            return self.monitor_used
        if n_val is None:
            self.monitor_used = "train_loss"
        elif survival and n_val_events == 0:
            warnings.warn(
                f"early stopping: the validation part ({n_val} patients) has no events, "
                "so it cannot rank epochs by survival (no C-index, and a Cox loss of 0 "
                "whatever the weights); monitoring the training loss instead and keeping the "
                "epoch with the lowest training loss. Raise train.val_fraction (now "
                f"{self.val_fraction}), or pass validation patients with events.",
                UserWarning,
                stacklevel=3,
            )
            self.monitor_used = "train_loss"
        else:
            self.monitor_used = "c_index" if self.monitor == "c_index" and survival else "loss"
        return self.monitor_used

    def start_from(self, score: float) -> None:
        """Score the starting weights (epoch ``-1``); a non-finite score is ignored."""
        if math.isfinite(score):
            self.best_score, self.best_epoch = score, -1

    def step(self, epoch: int, train_loss: float, score: float | None) -> bool:
        """Record one epoch; ``True`` where it improved on the best score.

        Args:
            epoch: The epoch just run.
            train_loss: Its mean training loss.
            score: The validation score (higher is better); ignored, and may
                be ``None``, while the training loss is watched.
        """
        if self.watches_train_loss:
            score = -train_loss
        elif not math.isfinite(score) and not math.isfinite(self.best_score):
            self._warn_non_finite(score, epoch)
            self.monitor_used = "train_loss"
            score = -train_loss
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_score": score})
        improved = score > self.best_score + self.min_delta
        if improved:
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
        else:
            self.bad += 1
        self.epoch = epoch + 1
        return improved

    def _warn_non_finite(self, score: float, epoch: int) -> None:
        c_index = self.monitor_used == "c_index"
        what = "C-index" if c_index else "loss"
        value = score if c_index else -score
        warnings.warn(
            f"early stopping: the validation {what} is {value} at epoch {epoch} "
            f"({self._n_val} validation patients, {self._n_val_events} events), so it cannot "
            "tell epochs apart; monitoring the training loss instead and keeping the epoch "
            f"with the lowest training loss. Raise train.val_fraction (now "
            f"{self.val_fraction}), or check the validation patients' inputs"
            + (" (or use train.monitor=loss)." if c_index else "."),
            UserWarning,
            stacklevel=4,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint (see :meth:`load_state_dict`)."""
        return {
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad": self.bad,
            "history": [dict(h) for h in self.history],
            "monitor_used": self.monitor_used,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.epoch = int(state["epoch"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.bad = int(state["bad"])
        self.history = [dict(h) for h in state["history"]]
        self.monitor_used = state["monitor_used"]


__all__ = ["EarlyStopping"]
