"""Baselines: the shared contract, honest preprocessing, imputation, restriction, registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from graphmed.data.cohort import Cohort
from graphmed.errors import ConfigError
from graphmed.train import baselines as bl
from graphmed.train.baselines import (
    Baseline,
    CoxNetBaseline,
    MLPBaseline,
    make_baseline,
    single_modality_baselines,
)
from graphmed.train.features import FeatureMatrix, restrict_modalities

N, N_GENES, BAG_WIDTH, N_TRAIN = 300, 30, 8, 210
FAST = {  # small enough for a quick test, large enough to learn the signal
    "coxnet": {},
    "rsf": {"n_estimators": 30, "min_samples_leaf": 5},
    "mlp_zero": {"epochs": 80, "lr": 1e-2, "patience": 15},
    "mlp_mean": {"epochs": 80, "lr": 1e-2, "patience": 15},
}


def _frames(seed: int = 0) -> dict:
    """Hazard from clinical (age, stage), expr (g00, g01) and wsi (instance feature 0)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(N)]
    age = rng.normal(60, 10, N)
    stage = rng.choice(["I", "II", "III"], N)
    scales = np.where(np.arange(N_GENES) < 5, 3.0, 1.0)  # g00..g04 vary the most
    expr = rng.normal(size=(N, N_GENES)) * scales
    wsi_level = rng.normal(size=N)
    log_h = (
        0.08 * (age - 60)
        + 0.8 * (stage == "III")
        - 0.5 * (stage == "I")
        + 0.3 * expr[:, 0]
        - 0.3 * expr[:, 1]
        + 0.8 * wsi_level
    )
    event_time = rng.exponential(np.exp(-1.5 * log_h))
    censor = rng.exponential(2.0, N)
    patients = pd.DataFrame(
        {"patient_id": ids, "time": np.minimum(event_time, censor), "event": event_time <= censor}
    ).astype({"event": int})
    clinical = pd.DataFrame(
        {"patient_id": ids, "age": age, "stage": stage, "marker": rng.normal(size=N)}
    )
    expr_df = pd.DataFrame(expr, columns=[f"g{j:02d}" for j in range(N_GENES)])
    expr_df.insert(0, "patient_id", ids)
    wsi = {}
    for pid, level in zip(ids, wsi_level):
        bag = rng.normal(size=(rng.integers(3, 10), BAG_WIDTH))
        bag[:, 0] += level
        wsi[pid] = bag.astype(np.float32)
    missing = {m: set(rng.choice(ids, N // 7, replace=False)) for m in ("clinical", "expr", "wsi")}
    return {
        "patients": patients,
        "clinical": clinical[~clinical.patient_id.isin(missing["clinical"])],
        "expr": expr_df[~expr_df.patient_id.isin(missing["expr"])],
        "wsi": {p: a for p, a in wsi.items() if p not in missing["wsi"]},
    }


def _cohort(frames: dict) -> Cohort:
    return Cohort.from_frames(
        frames["patients"],
        {m: frames[m] for m in ("clinical", "expr", "wsi")},
        kinds={"clinical": "tabular", "expr": "vector", "wsi": "bag"},
    )


def _perturbed(frames: dict, ids: list[str], modalities=("clinical", "expr", "wsi")) -> Cohort:
    """The cohort with wild values for ``ids`` in ``modalities``."""
    frames = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in frames.items()}
    for mod in modalities:
        if mod == "wsi":
            frames["wsi"] = {p: a * 10 + 5 if p in ids else a for p, a in frames["wsi"].items()}
            continue
        frame = frames[mod]
        rows = frame.patient_id.isin(ids)
        nums = [c for c in frame.columns if c not in ("patient_id", "stage")]
        frame.loc[rows, nums] = frame.loc[rows, nums] * 10 + 5
        if "stage" in frame:
            frame.loc[rows, "stage"] = "IV"
    return _cohort(frames)


@pytest.fixture(scope="module")
def frames() -> dict:
    return _frames()


@pytest.fixture(scope="module")
def split(frames):
    cohort = _cohort(frames)
    ids = cohort.patient_ids
    return cohort.subset(ids[:N_TRAIN]), cohort.subset(ids[N_TRAIN:])


@pytest.fixture(scope="module")
def fitted(split) -> dict[str, Baseline]:
    train, _ = split
    return {name: make_baseline(name, **opts).fit(train) for name, opts in FAST.items()}


def _c_index(cohort: Cohort, risk: np.ndarray) -> float:
    return concordance_index_censored(cohort.event.astype(bool), cohort.time, risk)[0]


@pytest.mark.parametrize("name", list(FAST))
def test_baseline_contract_and_out_of_sample_c_index(name, split, fitted):
    train, test = split
    model = fitted[name]
    assert isinstance(model, Baseline) and model.name == name
    risk = model.predict_risk(test)
    assert risk.shape == (test.n_patients,) and risk.dtype == np.float64
    assert np.isfinite(risk).all()
    assert _c_index(test, risk) > 0.6


def test_predictions_are_finite_for_every_missingness_pattern(split, fitted):
    _, test = split
    present = test.present_mask()
    assert (~present).any().all(), "every modality should be missing for some test patient"
    alone = test.drop_modality_for("clinical", test.patient_ids).drop_modality_for(
        "wsi", test.patient_ids
    )  # expr only, or nothing at all
    without = restrict_modalities(test, ["expr"])  # clinical and wsi unknown to this cohort
    for model in fitted.values():
        assert np.isfinite(model.predict_risk(alone)).all()
        np.testing.assert_allclose(model.predict_risk(without), model.predict_risk(alone))


def test_feature_matrix_blocks_and_imputation(split):
    train, test = split
    zero = FeatureMatrix(impute="zero").fit(train)
    mean = FeatureMatrix(impute="mean").fit(train)
    x_zero, x_mean = zero.transform(test), mean.transform(test)
    # clinical: age, marker + stage one-hot (I, II, III); expr 30; wsi mean-pooled 8
    assert x_zero.shape == (test.n_patients, 2 + 3 + N_GENES + BAG_WIDTH)
    assert x_mean.shape[1] == x_zero.shape[1] + 3  # one indicator per modality
    names = mean.feature_names_
    assert len(names) == x_mean.shape[1]
    assert [n for n in names if n.endswith(":missing")] == [
        "clinical:missing",
        "expr:missing",
        "wsi:missing",
    ]
    present = test.present_mask()
    for mod in ("clinical", "expr", "wsi"):
        cols = [i for i, n in enumerate(names) if n.startswith(f"{mod}:") and n != f"{mod}:missing"]
        miss = ~present[mod].to_numpy()
        np.testing.assert_array_equal(x_mean[:, names.index(f"{mod}:missing")], miss)
        np.testing.assert_allclose(
            x_mean[np.ix_(miss, cols)], np.tile(mean.fill_[mod], (miss.sum(), 1))
        )
    assert (x_zero[~present["clinical"].to_numpy(), :5] == 0).all()
    # the one-hot fill is the training share of each stage, not zero
    clinical = [n for n in names if n.startswith("clinical:")]
    stage_fill = mean.fill_["clinical"][
        [clinical.index(f"clinical:stage={s}") for s in "I II III".split()]
    ]
    assert np.isclose(stage_fill.sum(), 1.0) and (stage_fill > 0).all()


def test_bag_pooling_and_vector_cap(split, frames):
    train, test = split
    fm = FeatureMatrix(impute="zero", max_vector_features=5, bag_pooling="mean+max").fit(train)
    expr_names = [n for n in fm.feature_names_ if n.startswith("expr:")]
    assert expr_names == [f"expr:g{j:02d}" for j in range(5)]  # the most variable genes
    x = fm.transform(test)
    pid = next(p for p in test.patient_ids if p in frames["wsi"])
    row = x[test.patient_ids.index(pid)]
    t = fm.preprocessor_.transforms_["wsi"]
    bag = (frames["wsi"][pid] - np.float32(t.center)) / np.float32(t.scale)
    wsi = [i for i, n in enumerate(fm.feature_names_) if n.startswith("wsi:")]
    np.testing.assert_allclose(row[wsi], np.r_[bag.mean(0), bag.max(0)], rtol=1e-5, atol=1e-6)


def test_preprocessing_is_fitted_on_training_patients_only(split, frames):
    train, test = split
    wild = _perturbed(frames, test.patient_ids).subset(test.patient_ids)
    for model in (CoxNetBaseline().fit(train), make_baseline("mlp_mean", epochs=3).fit(train)):
        before = model.features_.state()
        first = model.predict_risk(test)
        assert not np.allclose(model.predict_risk(wild), first)
        after = model.features_.state()
        np.testing.assert_equal(after, before)
        np.testing.assert_array_equal(model.predict_risk(test), first)


def test_mlp_is_deterministic_given_a_seed(split):
    train, test = split
    rng_state = torch.get_rng_state()
    a = MLPBaseline(epochs=10, seed=3).fit(train).predict_risk(test)
    b = MLPBaseline(epochs=10, seed=3).fit(train).predict_risk(test)
    c = MLPBaseline(epochs=10, seed=4).fit(train).predict_risk(test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is left alone


def test_single_modality_baseline_uses_only_its_modality(split, frames):
    train, test = split
    models = single_modality_baselines(train, "coxnet")
    assert list(models) == ["coxnet:clinical", "coxnet:expr", "coxnet:wsi"]
    model = models["coxnet:expr"].fit(train)
    assert model.name == "coxnet:expr"
    assert all(n.startswith("expr:") for n in model.features_.feature_names_)
    risk = model.predict_risk(test)
    others = _perturbed(frames, test.patient_ids, ("clinical", "wsi")).subset(test.patient_ids)
    np.testing.assert_array_equal(model.predict_risk(others), risk)
    own = _perturbed(frames, test.patient_ids, ("expr",)).subset(test.patient_ids)
    assert not np.allclose(model.predict_risk(own), risk)


def test_coxnet_chooses_alpha_by_inner_cv(fitted):
    model = fitted["coxnet"]
    assert model.cv_scores_.shape == (3, 50)
    assert model.alpha_ in model.alphas_ and model.fallback_ is None
    assert np.all(np.diff(model.alphas_) < 0)


def test_coxnet_falls_back_to_a_larger_alpha_then_to_lifelines(split, monkeypatch):
    train, test = split
    real_fit = bl.CoxnetSurvivalAnalysis.fit

    def fails_below_the_top(self, x, y):
        if self.fit_baseline_model and self.alphas is not None and len(self.alphas) > 1:
            raise ArithmeticError("Numerical error, because weights are too large.")
        return real_fit(self, x, y)

    monkeypatch.setattr(bl.CoxnetSurvivalAnalysis, "fit", fails_below_the_top)
    model = CoxNetBaseline(alpha_min_ratio=0.05, n_alphas=10).fit(train)
    assert model.alpha_ == model.alphas_[0]
    assert np.isfinite(model.predict_risk(test)).all()

    def always_fails(self, x, y):
        raise ArithmeticError("Numerical error, because weights are too large.")

    monkeypatch.setattr(bl.CoxnetSurvivalAnalysis, "fit", always_fails)
    model = CoxNetBaseline().fit(train)
    assert "lifelines" in model.fallback_
    assert _c_index(test, model.predict_risk(test)) > 0.6


def test_coxnet_on_columns_that_cannot_separate_the_events_predicts_one_risk():
    rng = np.random.default_rng(0)
    time = rng.exponential(1.0, 30)
    event = np.r_[np.ones(5), np.zeros(25)]
    constant = np.ones((30, 3))  # sksurv's alpha_max is 0 here
    model = CoxNetBaseline(n_alphas=10).fit_arrays(constant, time, event)
    assert model.fallback_ is not None
    risk = model._predict(constant)
    assert np.isfinite(risk).all() and np.ptp(risk) == 0
    w, b = model.linear_map()
    assert np.isfinite(w).all() and np.isfinite(b)


def test_bad_names_and_options_say_what_to_do(split):
    train, _ = split
    with pytest.raises(ConfigError, match=r"unknown baseline 'coxnett'.*Did you mean 'coxnet'"):
        make_baseline("coxnett")
    with pytest.raises(ConfigError, match="names no modality"):
        make_baseline("rsf:")
    with pytest.raises(ConfigError, match=r"'exprs' is not in the cohort.*Did you mean 'expr'"):
        make_baseline("coxnet:exprs").fit(train)
    with pytest.raises(ConfigError, match="impute must be one of 'zero', 'mean'"):
        make_baseline("rsf", impute="median")
    with pytest.raises(ValueError, match="not fitted"):
        CoxNetBaseline().predict_risk(train)
