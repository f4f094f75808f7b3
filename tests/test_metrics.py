import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from graphmed.errors import GraphMedError
from graphmed.metrics import (
    classification_metrics,
    concordance_index_torch,
    harrell_c,
    integrated_brier,
    summarise,
    summarise_folds,
    survival_metrics,
    time_dependent_auc,
    uno_c,
    uno_tau,
)


def cohort(n, seed, scale=10.0):
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(scale, n), 1)  # rounding makes tied times
    event = rng.random(n) < 0.7
    risk = -time + rng.normal(0, 5, n)
    return time, event, risk


@pytest.fixture
def split():
    tt, te, _ = cohort(300, 0)
    t, e, r = cohort(120, 1)
    keep = t < tt.max()  # inside the training follow-up: sksurv itself accepts it
    return tt, te, t[keep], e[keep], r[keep]


# ---------------------------------------------------------------- Harrell
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5), st.booleans(), st.sampled_from([0.0, 0.5, 1.0, 1.0 + 1e-9, 2.0])
        ),
        min_size=2,
        max_size=30,
    ),
    st.integers(1, 7),
)
def test_torch_c_index_equals_sksurv_with_tied_times_and_risks(rows, block_size):
    time, event, risk = (np.array(col) for col in zip(*rows))
    ours = concordance_index_torch(
        torch.tensor(time), torch.tensor(event), torch.tensor(risk), block_size
    )
    if not event.any():
        assert math.isnan(ours.item())
        return
    try:
        with np.errstate(invalid="ignore"):
            ref = concordance_index_censored(event, time.astype(float), risk)[0]
    except NoComparablePairException:
        ref = float("nan")
    if math.isnan(ref):  # events but no comparable pair
        assert math.isnan(ours.item())
    else:
        assert 0.0 <= ours.item() <= 1.0
        assert ours.item() == pytest.approx(ref, abs=1e-9)


def test_torch_c_index_is_a_detached_tensor_on_the_input_device():
    time, event, risk = cohort(50, 3)
    r = torch.tensor(risk, dtype=torch.float32, requires_grad=True)
    c = concordance_index_torch(torch.tensor(time), torch.tensor(event), r)
    assert c.dtype == torch.float64 and c.device == r.device and not c.requires_grad
    assert c.item() == pytest.approx(harrell_c(time, event, r.detach().numpy()), abs=1e-9)


def test_harrell_c_is_sksurv_and_nan_without_events():
    time, event, risk = cohort(80, 2)
    assert (
        harrell_c(time, event.astype(int), risk) == concordance_index_censored(event, time, risk)[0]
    )
    assert harrell_c(time, event, -risk) == pytest.approx(
        1 - harrell_c(time, event, risk), abs=0.02
    )
    with pytest.warns(UserWarning, match="without events"):
        assert math.isnan(harrell_c(time, np.zeros(80), risk))
    with pytest.warns(UserWarning, match="no comparable pair"):
        assert math.isnan(harrell_c([1.0, 1.0], [1, 1], [0.2, 0.3]))
    with pytest.raises(GraphMedError, match="expected risk with 80 values"):
        harrell_c(time, event, risk[:5])


def test_harrell_c_nan_policy_for_early_stopping_and_inner_cv():
    """NaN, never an exception, where C is undefined; ``warn=False`` keeps it quiet."""
    time, event, risk = cohort(80, 2)
    bad = risk.copy()
    bad[3] = np.nan
    with pytest.warns(UserWarning, match="not finite"):
        assert math.isnan(harrell_c(time, event, bad))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(harrell_c(time, event, bad, warn=False))
        assert math.isnan(harrell_c([1.0, 1.0], [1, 1], [0.2, 0.3], warn=False))
        assert math.isnan(harrell_c(time, np.zeros(80), risk, warn=False))
        assert math.isnan(harrell_c([1.0], [1], [0.5], warn=False))
        assert harrell_c(time, event, risk.astype(np.float32), warn=False) == pytest.approx(
            concordance_index_censored(event, time, risk.astype(np.float32))[0], abs=0
        )


# ---------------------------------------------------------------- Uno
def test_uno_c_equals_sksurv_inside_the_training_follow_up(split):
    tt, te, t, e, r = split
    ref = concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r)[0]
    assert uno_c(tt, te, t, e, r) == pytest.approx(ref, abs=1e-12)
    ref_tau = concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=8.0)[
        0
    ]
    assert uno_c(tt, te, t, e, r, tau=8.0) == pytest.approx(ref_tau, abs=1e-12)


def test_uno_c_truncates_at_the_training_follow_up():
    tt, te, _ = cohort(100, 5, scale=5.0)
    t, e, r = cohort(100, 6, scale=10.0)
    assert (t[e] > tt.max()).any()  # sksurv alone raises here
    ref = concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=tt.max())[
        0
    ]
    assert uno_c(tt, te, t, e, r) == pytest.approx(ref, abs=1e-12)
    with pytest.warns(UserWarning, match="clipped to the largest training time"):
        assert uno_c(tt, te, t, e, r, tau=1e6) == pytest.approx(ref, abs=1e-12)


def late_event_dominates():
    """A training fold whose censoring survival falls below 0.1 (at 9.5, after 3.775, the
    75 % quantile of its event times) and a test fold where risk tracks time, except one
    late event (9.85, censoring weight 1/0.036^2) with the lowest risk of all."""
    tt = np.linspace(0.1, 10.0, 100)
    te = tt < 5.0
    te[::7] = False
    rng = np.random.default_rng(0)
    t = np.r_[np.linspace(0.2, 6.0, 40), 9.85, 9.9, 9.95]
    e = np.r_[rng.random(40) < 0.7, True, False, False]
    r = np.r_[-t[:40] + rng.normal(0, 0.5, 40), -20.0, -10.0, -10.0]
    return tt, te, t, e, r


def test_untruncated_uno_c_is_dominated_by_one_late_event_and_tau_fixes_it():
    tt, te, t, e, r = late_event_dominates()
    flipped = r.copy()
    flipped[41:] = -30.0  # now the late event outranks the two patients after it
    harrell = harrell_c(t, e, r)
    assert harrell == pytest.approx(0.907, abs=1e-3)
    assert abs(harrell_c(t, e, flipped) - harrell) < 0.01
    # two pairs of some 600 flip Harrell's C by 0.003, and the untruncated Uno's C by 0.7
    assert uno_c(tt, te, t, e, r) < 0.3 and uno_c(tt, te, t, e, flipped) > 0.95
    out = survival_metrics(tt, te, t, e, r)
    assert out["uno_tau"] == pytest.approx(np.quantile(tt[te], 0.75)) == pytest.approx(3.775)
    assert abs(out["uno_c"] - harrell) < 0.05
    assert survival_metrics(tt, te, t, e, flipped)["uno_c"] == out["uno_c"]
    ref = concordance_index_ipcw(
        Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=out["uno_tau"]
    )[0]
    assert out["uno_c"] == pytest.approx(ref, abs=1e-12)
    assert out["uno_c"] == pytest.approx(0.935581, abs=1e-6)  # sksurv 0.28 reference value


def test_uno_tau_stops_where_the_censoring_survival_falls_to_a_tenth():
    tt, te, t, e, r = late_event_dominates()
    by_hand, g = None, 1.0  # reverse Kaplan-Meier; no tied times here
    for c in np.sort(tt[~te]):
        g *= 1 - 1 / (tt >= c).sum()
        if g <= 0.1:
            by_hand = c
            break
    assert by_hand == pytest.approx(9.5)
    assert uno_tau(tt, te, horizons=[9.9]) == pytest.approx(by_hand)
    assert uno_tau(tt, te, horizons=[2.0, 6.0]) == 6.0
    assert uno_tau(tt, te) == pytest.approx(np.quantile(tt[te], 0.75))
    out = survival_metrics(tt, te, t, e, r, horizons=[9.9])
    assert out["uno_tau"] == pytest.approx(9.5)
    ref = concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=9.5)[0]
    assert out["uno_c"] == pytest.approx(ref, abs=1e-12)
    assert uno_tau(tt, np.ones_like(te)) == pytest.approx(np.quantile(tt, 0.75))  # no censoring


def test_survival_metrics_honour_an_explicit_tau():
    tt, te, t, e, r = late_event_dominates()
    out = survival_metrics(tt, te, t, e, r, tau=5.0)
    ref = concordance_index_ipcw(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, tau=5.0)[0]
    assert out["uno_tau"] == 5.0 and out["uno_c"] == pytest.approx(ref, abs=1e-12)
    with pytest.warns(UserWarning, match="clipped to the largest training time"):
        out = survival_metrics(tt, te, t, e, r, tau=1e6)
    assert out["uno_tau"] == tt.max() and out["uno_c"] == uno_c(tt, te, t, e, r)


def test_uno_c_is_nan_without_training_events():
    tt, _, t, e, r = late_event_dominates()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = survival_metrics(tt, np.zeros_like(tt), t, e, r)
    assert any("Uno's C needs training events" in str(w.message) for w in record)
    assert math.isnan(out["uno_c"]) and out["uno_tau"] == tt.max()
    assert out["c_index"] == harrell_c(t, e, r)


# ---------------------------------------------------------------- td-AUC
def test_time_dependent_auc_equals_sksurv(split):
    tt, te, t, e, r = split
    times = np.array([2.0, 5.0, 9.0])
    ref_auc, ref_mean = cumulative_dynamic_auc(
        Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, times
    )
    auc, mean = time_dependent_auc(tt, te, t, e, r, times[::-1])  # order of request is kept
    assert np.allclose(auc, ref_auc[::-1], atol=1e-12) and mean == pytest.approx(
        ref_mean, abs=1e-12
    )


def test_time_dependent_auc_clips_horizons_and_flags_impossible_ones(split):
    tt, te, t, e, r = split
    assert not e[t == t.min()].any()  # so the clipped first horizon has no case
    with pytest.warns(UserWarning) as record:
        auc, mean = time_dependent_auc(tt, te, t, e, r, [t.min() - 5.0, 5.0, 1e6])
    messages = " ".join(str(w.message) for w in record)
    assert "clipped into the valid range" in messages and "no test event by" in messages
    top = np.nextafter(t.max(), -np.inf)
    ref, ref_mean = cumulative_dynamic_auc(
        Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, [5.0, top]
    )
    assert math.isnan(auc[0]) and np.allclose(auc[1:], ref, atol=1e-12)
    assert mean == pytest.approx(ref_mean, abs=1e-12)


def test_time_dependent_auc_survives_test_patients_beyond_training():
    tt, te, _ = cohort(200, 7, scale=5.0)
    t, e, r = cohort(100, 8, scale=5.0)
    t = np.minimum(t, tt.max() - 0.1)
    times = [1.0, 3.0, 5.0]
    ref_auc, ref_mean = cumulative_dynamic_auc(
        Surv.from_arrays(te, tt), Surv.from_arrays(e, t), r, times
    )
    # patients followed past the last horizon move past every training time
    t_far = np.where(t > 5.0, tt.max() + 50.0, t)
    with pytest.raises(ValueError):
        cumulative_dynamic_auc(Surv.from_arrays(te, tt), Surv.from_arrays(e, t_far), r, times)
    auc, mean = time_dependent_auc(tt, te, t_far, e, r, times)
    assert np.allclose(auc, ref_auc, atol=1e-12) and mean == pytest.approx(ref_mean, abs=1e-12)


# ---------------------------------------------------------------- Brier
def exponential_curves(risk, times):
    return np.exp(-np.outer(np.exp(risk / 10.0), times) / 10.0)


def test_integrated_brier_equals_sksurv_and_sorts_columns(split):
    tt, te, t, e, r = split
    times = np.array([1.0, 3.0, 6.0, 9.0])
    surv = exponential_curves(r, times)
    ref = integrated_brier_score(Surv.from_arrays(te, tt), Surv.from_arrays(e, t), surv, times)
    assert integrated_brier(tt, te, t, e, surv, times) == pytest.approx(ref, abs=1e-12)
    perm = [2, 0, 3, 1]
    assert integrated_brier(tt, te, t, e, surv[:, perm], times[perm]) == pytest.approx(
        ref, abs=1e-12
    )


def test_integrated_brier_drops_times_outside_the_follow_up(split):
    tt, te, t, e, r = split
    times = np.array([1.0, 3.0, 6.0, 1e6])
    surv = exponential_curves(r, times)
    ref = integrated_brier_score(
        Surv.from_arrays(te, tt), Surv.from_arrays(e, t), surv[:, :3], times[:3]
    )
    with pytest.warns(UserWarning, match="dropped"):
        assert integrated_brier(tt, te, t, e, surv, times) == pytest.approx(ref, abs=1e-12)
    with pytest.warns(UserWarning) as record:
        assert math.isnan(integrated_brier(tt, te, t, e, surv[:, [0, 3]], times[[0, 3]]))
    assert "at least two times" in str(record[-1].message)
    with pytest.raises(GraphMedError, match="expected surv_fn_values of shape"):
        integrated_brier(tt, te, t, e, surv[:, :2], times)


# ---------------------------------------------------------------- survival_metrics
def test_survival_metrics_collects_every_number(split):
    tt, te, t, e, r = split
    times = np.array([1.0, 3.0, 6.0, 9.0])
    surv = exponential_curves(r, times)
    out = survival_metrics(tt, te, t, e, r, surv=surv, times=times)
    assert list(out) == [
        "c_index",
        "uno_c",
        "uno_tau",
        "td_auc_q25",
        "td_auc_q50",
        "td_auc_q75",
        "mean_auc",
        "ibs",
    ]
    assert out["c_index"] == harrell_c(t, e, r)
    assert out["uno_tau"] == uno_tau(tt, te)
    assert out["uno_c"] == uno_c(tt, te, t, e, r, tau=out["uno_tau"])
    auc, mean = time_dependent_auc(tt, te, t, e, r, np.quantile(tt[te], [0.25, 0.5, 0.75]))
    assert [out["td_auc_q25"], out["td_auc_q50"], out["td_auc_q75"]] == auc.tolist()
    assert out["mean_auc"] == mean and out["ibs"] == integrated_brier(tt, te, t, e, surv, times)
    assert all(isinstance(v, float) for v in out.values())
    given = survival_metrics(tt, te, t, e, r, horizons=[2, 5.5])
    assert "td_auc@2" in given and "td_auc@5.5" in given and "ibs" not in given


def test_survival_metrics_do_not_crash_without_test_events(split):
    tt, te, t, _, r = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = survival_metrics(tt, te, t, np.zeros_like(t), r)
    assert out.pop("uno_tau") == uno_tau(tt, te)  # a property of the training fold
    assert all(math.isnan(v) for v in out.values())


# ---------------------------------------------------------------- classification
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_metrics_binary_and_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(y * 0.3 + rng.random(50) * 0.7, 0, 1)
    out = classification_metrics(y, np.stack([1 - p1, p1], 1))
    assert out["auroc"] == roc_auc_score(y, p1)
    assert out["accuracy"] == np.mean((p1 > 0.5) == y)
    assert classification_metrics(y, p1) == out  # 1-D: probability of class 1
    y3 = rng.integers(0, 3, 60)
    p3 = rng.dirichlet(np.ones(3), 60)
    out3 = classification_metrics(np.r_[y3, -1], np.r_[p3, p3[:1]])  # -1: unknown, skipped
    assert out3["auroc"] == roc_auc_score(y3, p3, multi_class="ovr", average="macro")
    assert 0 <= out3["balanced_accuracy"] <= 1
    with pytest.warns(UserWarning, match="every one of the 3 classes"):
        assert math.isnan(classification_metrics(np.zeros(5, int), p3[:5])["auroc"])


# ---------------------------------------------------------------- summaries
def test_summarise_mean_sd_and_seeded_bootstrap():
    values = [0.6, 0.7, 0.65, 0.72, float("nan"), 0.58]
    out = summarise(values, n_boot=500, seed=1)
    finite = np.array([0.6, 0.7, 0.65, 0.72, 0.58])
    assert out["n"] == 5 and out["mean"] == pytest.approx(finite.mean())
    assert out["sd"] == pytest.approx(finite.std(ddof=1))
    assert finite.min() <= out["ci_low"] < out["mean"] < out["ci_high"] <= finite.max()
    assert summarise(values, n_boot=500, seed=1) == out
    assert summarise(values, n_boot=500, seed=2) != out
    one = summarise([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["ci_low"])
    assert summarise([])["n"] == 0


def test_summarise_folds_aligns_keys_across_folds():
    folds = [{"c_index": 0.7, "note": "x"}, {"c_index": 0.8, "ibs": 0.2}]
    out = summarise_folds(folds, n_boot=100)
    assert set(out) == {"c_index", "ibs"}
    assert out["c_index"]["mean"] == pytest.approx(0.75) and out["ibs"]["n"] == 1
