import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter

from graphmed.errors import GraphMedError
from graphmed.losses import (
    binary_cross_entropy,
    cox_ph_loss,
    cross_entropy,
    discrete_time_nll,
    multitask_loss,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tied_data(n=40, seed=0):
    """Integer times (many ties, events tied with events and with censorings)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    time = rng.integers(1, 9, size=n).astype(float)
    event = rng.random(n) < 0.7
    return x, time, event


def reference_nll(log_risk, time, event, ties):
    """Textbook loop over distinct event times (float64 numpy)."""
    total = 0.0
    for t in np.unique(time[event]):
        at_risk = time >= t
        tied = (time == t) & event
        d = tied.sum()
        risk_sum = np.exp(log_risk[at_risk]).sum()
        tied_sum = np.exp(log_risk[tied]).sum()
        total += log_risk[tied].sum()
        for rank in range(d):
            frac = rank / d if ties == "efron" else 0.0
            total -= np.log(risk_sum - frac * tied_sum)
    return -total


def test_efron_sum_equals_lifelines_negative_log_likelihood():
    x, time, event = tied_data(n=60)
    assert len(np.unique(time[event])) < event.sum()  # the check needs tied event times
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event.astype(int))
    cph = CoxPHFitter(penalizer=0.0).fit(frame, "T", "E")
    # lifelines fits on centred covariates: X @ params differs from its linear
    # predictor by a constant, to which the partial likelihood is invariant
    log_risk = torch.tensor(x @ cph.params_.to_numpy())
    ours = cox_ph_loss(log_risk, torch.tensor(time), torch.tensor(event), reduction="sum")
    assert float(ours) == pytest.approx(-cph.log_likelihood_, abs=1e-6)
    shifted = cox_ph_loss(log_risk + 3.7, torch.tensor(time), torch.tensor(event), reduction="sum")
    assert float(shifted) == pytest.approx(float(ours), abs=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_matches_loop_reference_with_ties(ties):
    for seed in range(5):
        _, time, event = tied_data(n=50, seed=seed)
        log_risk = np.random.default_rng(seed + 10).normal(scale=2.0, size=50)
        ours = cox_ph_loss(
            torch.tensor(log_risk), torch.tensor(time), torch.tensor(event), ties, "sum"
        )
        assert float(ours) == pytest.approx(reference_nll(log_risk, time, event, ties), rel=1e-10)


def test_efron_and_breslow_differ_only_with_tied_events():
    r, time, event = (
        torch.randn(30, dtype=torch.float64),
        torch.randperm(30).double(),
        torch.rand(30) < 0.6,
    )
    assert torch.allclose(
        cox_ph_loss(r, time, event, "efron"), cox_ph_loss(r, time, event, "breslow")
    )
    tied = torch.floor(time / 5)
    assert not torch.allclose(
        cox_ph_loss(r, tied, event, "efron"), cox_ph_loss(r, tied, event, "breslow")
    )


def test_mean_divides_by_number_of_events_and_order_does_not_matter():
    _, time, event = tied_data()
    r, t, e = torch.randn(40, dtype=torch.float64), torch.tensor(time), torch.tensor(event)
    total = cox_ph_loss(r, t, e, reduction="sum")
    assert torch.allclose(cox_ph_loss(r, t, e), total / e.sum())
    perm = torch.randperm(40)
    assert torch.allclose(cox_ph_loss(r[perm], t[perm], e[perm].float(), reduction="sum"), total)
    assert torch.allclose(cox_ph_loss(r[:, None], t, e), total / e.sum())  # (B, 1) input


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_gradcheck(ties):
    _, time, event = tied_data(n=25, seed=3)
    r = torch.randn(25, dtype=torch.float64, requires_grad=True)
    t, e = torch.tensor(time), torch.tensor(event)
    assert torch.autograd.gradcheck(lambda x: cox_ph_loss(x, t, e, ties), (r,))


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_no_event_batch_gives_zero_with_gradient(ties):
    r = torch.randn(8, requires_grad=True)
    loss = cox_ph_loss(r, torch.arange(8.0), torch.zeros(8), ties)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(r.grad, torch.zeros(8))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([-1e4, -50.0, 0.0, 3.0, 1e4]), min_size=1, max_size=12),
    st.sampled_from(["efron", "breslow"]),
    st.sampled_from([torch.float32, torch.float64]),
    st.integers(0, 2**16),
)
def test_extreme_log_risk_stays_finite(values, ties, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(values)
    r = torch.tensor(values, dtype=dtype, requires_grad=True)
    time = torch.randint(0, 3, (n,), generator=g).to(dtype)
    event = torch.rand(n, generator=g) < 0.6
    loss = cox_ph_loss(r, time, event, ties)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert torch.isfinite(r.grad).all()


def test_float32_agrees_with_float64():
    _, time, event = tied_data(n=200, seed=4)
    r = torch.randn(200, dtype=torch.float64) * 3
    full = cox_ph_loss(r, torch.tensor(time), torch.tensor(event))
    half = cox_ph_loss(r.float(), torch.tensor(time).float(), torch.tensor(event))
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(full), rel=1e-5)


def test_bad_arguments_are_named():
    r, t, e = torch.zeros(3), torch.zeros(3), torch.ones(3)
    with pytest.raises(GraphMedError, match="ties must be one of.*Did you mean 'efron'"):
        cox_ph_loss(r, t, e, ties="efrom")
    with pytest.raises(GraphMedError, match="reduction"):
        cox_ph_loss(r, t, e, reduction="none")
    with pytest.raises(GraphMedError, match="expected time with 3 values"):
        cox_ph_loss(r, torch.zeros(4), e)


@CUDA
def test_cuda_matches_cpu_without_synchronising():
    _, time, event = tied_data(n=64)
    r = torch.randn(64, dtype=torch.float64)
    args = (torch.tensor(time), torch.tensor(event))
    cpu = cox_ph_loss(r, *args)
    x = r.cuda().requires_grad_()
    t, e = (a.cuda() for a in args)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = cox_ph_loss(x, t, e)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.allclose(loss.cpu(), cpu)


# ---------------------------------------------------------------- discrete time
def loop_discrete_nll(logits, bins, events, alpha, eps=1e-7):
    """MCAT's formula written out patient by patient."""
    total = 0.0
    for row, y, event in zip(logits.tolist(), bins.tolist(), events.tolist()):
        h = [1 / (1 + math.exp(-v)) for v in row]
        s_pad = [1.0]
        for hk in h:
            s_pad.append(s_pad[-1] * (1 - hk))
        unc = -event * (math.log(max(s_pad[y], eps)) + math.log(max(h[y], eps)))
        cen = -(1 - event) * math.log(max(s_pad[y + 1], eps))
        total += (1 - alpha) * (cen + unc) + alpha * unc
    return total / len(bins)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_discrete_time_nll_matches_loop(alpha):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 4, generator=g, dtype=torch.float64) * 2
    bins = torch.randint(0, 4, (32,), generator=g)
    events = (torch.rand(32, generator=g) < 0.5).double()
    ours = discrete_time_nll(logits, bins, events, alpha=alpha)
    assert float(ours) == pytest.approx(loop_discrete_nll(logits, bins, events, alpha), rel=1e-10)
    total = discrete_time_nll(logits, bins, events.bool(), alpha=alpha, reduction="sum")
    assert float(total) == pytest.approx(32 * float(ours), rel=1e-10)


def test_discrete_time_nll_clamps_extreme_logits():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    loss = discrete_time_nll(logits, torch.tensor([1, 1]), torch.tensor([1.0, 0.0]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logits.grad).all()
    ref = loop_discrete_nll(
        logits.detach().double(), torch.tensor([1, 1]), torch.tensor([1.0, 0.0]), 0.4
    )
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert loss.item() > 10  # a confident wrong prediction is expensive


def test_discrete_time_nll_rejects_flat_logits():
    with pytest.raises(GraphMedError, match=r"shape \(B, K\)"):
        discrete_time_nll(torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.ones(4))


# ---------------------------------------------------------------- classification
def test_binary_cross_entropy_ignores_missing_labels():
    logits = torch.randn(6, requires_grad=True)
    labels = torch.tensor([1.0, 0.0, float("nan"), -1.0, 1.0, 0.0])
    loss = binary_cross_entropy(logits, labels)
    known = torch.tensor([0, 1, 4, 5])
    ref = F.binary_cross_entropy_with_logits(logits[known], labels[known])
    assert torch.allclose(loss, ref)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[2] == 0 and logits.grad[3] == 0


def test_cross_entropy_ignores_missing_labels():
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([2, -1, 0, 1, -1])
    ref = F.cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]])
    assert torch.allclose(cross_entropy(logits, labels), ref)
    float_labels = torch.tensor([2.0, float("nan"), 0.0, 1.0, -1.0])
    assert torch.allclose(cross_entropy(logits, float_labels), ref)
    assert torch.allclose(cross_entropy(logits, labels, "sum"), ref * 3)


@pytest.mark.parametrize("fn,shape", [(binary_cross_entropy, (4,)), (cross_entropy, (4, 3))])
def test_all_labels_missing_gives_zero_with_gradient(fn, shape):
    logits = torch.randn(*shape, requires_grad=True)
    loss = fn(logits, torch.tensor([-1.0, float("nan"), -1.0, -2.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(shape))


def test_multitask_loss_weights_and_checks_names():
    a, b = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0)
    total = multitask_loss({"survival": a, "grade": b}, {"grade": 0.5})
    assert total.item() == pytest.approx(3.5)
    total.backward()
    assert a.grad.item() == 1.0
    with pytest.raises(GraphMedError, match="Did you mean 'grade'"):
        multitask_loss({"survival": a, "grade": b}, {"grad": 1.0})
    with pytest.raises(GraphMedError, match="at least one loss"):
        multitask_loss({})
