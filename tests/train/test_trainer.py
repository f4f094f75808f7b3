"""Early stopping in :class:`Trainer.fit` when the validation part cannot rank epochs."""

import copy

import numpy as np
import pytest
import torch

import graphmed
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment
from graphmed.train.trainer import Trainer

FAST = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=4",
    "train.patience=10",
    "train.progress=false",
    # these tests are about the validation fallback; the linear start state and its
    # scoring (best_epoch -1) are covered in tests/nn/test_linear_path.py
    "model.linear_path=false",
]


@pytest.fixture(scope="module")
def setup():
    """A 40-patient synthetic cohort, its graphs and the ``(train, val)`` indices: the
    validation part is 10 censored patients."""
    cohort = graphmed.make_synthetic_cohort(40, bag_size=(2, 6), censoring=0.5, seed=1)
    config = load_experiment(None, FAST)
    fitted = fit_data(cohort, config)
    graphs = fitted.graphs(cohort)
    event = graphs.event.numpy().astype(bool)
    val = np.flatnonzero(~event)[:10]
    train = np.setdiff1d(np.arange(len(graphs)), val)
    assert event[train].any() and len(val) == 10
    return cohort, fitted, graphs, train, val


def _fit(setup, *overrides, val=None):
    cohort, fitted, graphs, train, val_idx = setup
    config = load_experiment(None, FAST + list(overrides))
    model = build_model(fitted, graphs, cohort)
    initial = copy.deepcopy(model.state_dict())
    val_graphs = graphs.subset(val_idx if val is None else val)
    history = Trainer(config.train).fit(model, graphs.subset(train), val_graphs)
    return model, initial, history


def _changed(model, initial) -> bool:
    return any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())


def _kept_best_training_loss(history) -> bool:
    losses = [h["train_loss"] for h in history["history"]]
    return history["best_epoch"] == int(np.argmin(losses)) > 0


@pytest.mark.parametrize("monitor", ["loss", "c_index"])
def test_validation_part_without_events_falls_back_to_the_training_loss(setup, monitor):
    with pytest.warns(UserWarning, match=r"has no events.*Raise train\.val_fraction"):
        model, initial, history = _fit(setup, f"train.monitor={monitor}")
    assert history["monitor_used"] == "train_loss"
    assert _changed(model, initial) and _kept_best_training_loss(history)
    assert [h["val_score"] for h in history["history"]] == [
        -h["train_loss"] for h in history["history"]
    ]


def test_nan_validation_score_falls_back_to_the_training_loss(setup, monkeypatch):
    monkeypatch.setattr(Trainer, "validation_score", lambda self, model, val: float("nan"))
    everyone = np.arange(len(setup[2]))  # a validation part with events
    with pytest.warns(UserWarning, match=r"validation loss is nan at epoch 0.*val_fraction"):
        model, initial, history = _fit(setup, val=everyone)
    assert history["monitor_used"] == "train_loss"
    assert _changed(model, initial) and _kept_best_training_loss(history)
    assert np.isfinite(history["best_score"])


def test_c_index_without_a_comparable_pair_falls_back_to_the_training_loss(setup):
    # one event, at the latest time: no pair is comparable (and its Cox loss is 0)
    _, _, graphs, train, censored = setup
    event = graphs.event.numpy().astype(bool)
    times = graphs.time.numpy()
    last = int(np.flatnonzero(event)[np.argmax(times[event])])
    val = np.r_[censored[times[censored] < times[last]], last]
    with pytest.warns(UserWarning, match=r"validation C-index is nan.*train\.monitor=loss"):
        model, initial, history = _fit(setup, "train.monitor=c_index", val=val)
    assert history["monitor_used"] == "train_loss"
    assert _changed(model, initial) and _kept_best_training_loss(history)


@pytest.mark.parametrize("monitor", ["loss", "c_index"])
def test_monitor_used_names_the_configured_monitor(setup, monitor, recwarn):
    val = np.arange(len(setup[2]))  # with events; scored on every patient
    _, _, history = _fit(setup, f"train.monitor={monitor}", val=val)
    assert history["monitor_used"] == monitor
    assert not [w for w in recwarn if "early stopping" in str(w.message)]
    scores = [h["val_score"] for h in history["history"]]
    assert history["best_epoch"] == int(np.argmax(scores))
    assert set(history.to_dict()) >= {
        "history",
        "best_epoch",
        "best_score",
        "stopped_early",
        "epochs_run",
    }
