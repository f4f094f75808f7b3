import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored

from graphmed.data.cohort import Cohort
from graphmed.data.synthetic import make_synthetic_cohort
from graphmed.errors import ConfigError


@pytest.fixture(scope="module")
def big():
    """A larger complete cohort with its truth, shared by the signal tests."""
    return make_synthetic_cohort(2000, seed=1, return_truth=True)


def _features(cohort: Cohort) -> dict[str, np.ndarray]:
    bags = cohort.data["wsi"]
    return {
        "clinical": pd.get_dummies(cohort.data["clinical"], dtype=float).to_numpy(),
        "expr": cohort.data["expr"].to_numpy(),
        "wsi": np.stack([bags[p].mean(axis=0) for p in cohort.patient_ids]),
    }


def _holdout_cindex(cohort: Cohort, feats: np.ndarray) -> float:
    n = cohort.n_patients
    train, test = np.arange(n) < n // 2, np.arange(n) >= n // 2
    feats = (feats - feats[train].mean(0)) / (feats[train].std(0) + 1e-9)
    y = np.array(list(zip(cohort.event.astype(bool), cohort.time)), dtype=[("e", "?"), ("t", "f8")])
    model = CoxPHSurvivalAnalysis(alpha=1.0).fit(feats[train], y[train])
    ev, t = cohort.event[test].astype(bool), cohort.time[test]
    return concordance_index_censored(ev, t, model.predict(feats[test]))[0]


def test_default_shapes_kinds_and_relations():
    c = make_synthetic_cohort(60, bag_size=(3, 7))
    assert c.n_patients == 60 and c.patient_ids[0] == "P000000"
    assert {m: s.kind for m, s in c.modalities.items()} == {
        "clinical": "tabular",
        "expr": "vector",
        "wsi": "bag",
    }
    assert (c.width("clinical"), c.width("expr"), c.width("wsi")) == (8, 64, 32)
    assert list(c.patients.columns) == ["time", "event"] and c.labels == []
    assert c.present_mask().all().all()
    sizes = [len(a) for a in c.data["wsi"].values()]
    assert min(sizes) >= 3 and max(sizes) <= 7 and len(set(sizes)) > 1
    assert all(a.dtype == np.float32 and a.shape[1] == 32 for a in c.data["wsi"].values())
    clin = c.data["clinical"]
    assert [str(t) for t in clin.dtypes[:2]] == ["category", "category"]
    assert list(clin["cat_0"].cat.categories) == ["low", "mid", "high"]
    assert c.modalities["clinical"].options["categorical"] == ["cat_0", "cat_1"]
    assert all(pd.api.types.is_float_dtype(t) for t in clin.dtypes[2:])
    assert c.relations == [
        ("clinical", "informs", "expr"),
        ("expr", "expressed_in", "wsi"),
        ("clinical", "describes", "wsi"),
    ]


def test_any_modalities_and_generic_relations():
    mods = {"a": ("vector", 5), "b": ("bag", 4), "c": ("bag", 3), "d": ("tabular", 1)}
    c = make_synthetic_cohort(30, modalities=mods, bag_size=(1, 2), seed=3)
    assert [c.width(m) for m in mods] == [5, 4, 3, 1]
    assert c.relations == [
        ("a", "relates_to", "b"),
        ("b", "relates_to", "c"),
        ("c", "relates_to", "d"),
    ]
    many = make_synthetic_cohort(20, modalities={f"m{i}": ("vector", 2) for i in range(10)})
    assert all(np.isfinite(many.data[m].to_numpy()).all() for m in many.modality_names)
    partial = make_synthetic_cohort(
        20, modalities={"clinical": ("tabular", 3), "ct": ("vector", 4)}
    )
    assert partial.relations == [("clinical", "relates_to", "ct")]


def test_same_seed_identical_and_other_seed_differs():
    kw = dict(n_patients=80, missing={"wsi": 0.3}, n_classes=3, bag_size=(2, 5))
    first, second = make_synthetic_cohort(**kw, seed=7), make_synthetic_cohort(**kw, seed=7)
    assert first.equals(second)
    other = make_synthetic_cohort(**kw, seed=8)
    assert not first.equals(other)
    assert not np.allclose(first.time, other.time)


def test_missingness_does_not_change_features():
    full = make_synthetic_cohort(100, seed=2, bag_size=(2, 4))
    holed = make_synthetic_cohort(100, seed=2, bag_size=(2, 4), missing={"expr": 0.5})
    kept = holed.data["expr"].index
    pd.testing.assert_frame_equal(holed.data["expr"], full.data["expr"].loc[kept])
    assert holed.patients.equals(full.patients)


@pytest.mark.parametrize("mechanism", ["mcar", "mar"])
def test_missing_rates_and_at_least_one_modality(mechanism):
    rates = {"clinical": 0.4, "expr": 0.5, "wsi": 0.6}
    c = make_synthetic_cohort(3000, missing=rates, missing_mechanism=mechanism, bag_size=(1, 2))
    present = c.present_mask()
    assert present.any(axis=1).all()
    for mod, rate in rates.items():
        assert abs((1 - present[mod].mean()) - rate) < 0.03, (mod, present[mod].mean())
    assert len(c.data["expr"]) == present["expr"].sum()
    assert len(c.data["wsi"]) == present["wsi"].sum()


def test_mar_missingness_depends_on_another_modality():
    c, truth = make_synthetic_cohort(
        3000, missing={"clinical": 0.5}, missing_mechanism="mar", bag_size=(1, 2), return_truth=True
    )
    gone = ~c.present_mask()["clinical"].to_numpy()
    driver = truth["latents"][:, 1]  # homed in expr, the modality after clinical
    assert np.corrcoef(gone, driver)[0, 1] > 0.4
    mcar = make_synthetic_cohort(3000, missing={"clinical": 0.5}, bag_size=(1, 2))
    assert abs(np.corrcoef(~mcar.present_mask()["clinical"].to_numpy(), driver)[0, 1]) < 0.1


@pytest.mark.parametrize("censoring", [0.0, 0.3, 0.7])
def test_censoring_fraction(censoring):
    c = make_synthetic_cohort(3000, censoring=censoring, bag_size=(1, 1))
    assert abs((1 - c.event.mean()) - censoring) < 0.03
    assert (c.time > 0).all() and np.isfinite(c.time).all()


def test_tiny_cohort_always_has_an_event():
    for seed in range(20):
        assert make_synthetic_cohort(2, censoring=0.95, seed=seed, bag_size=(1, 1)).event.sum() >= 1


def test_labels_are_balanced_classes():
    c = make_synthetic_cohort(300, n_classes=3, bag_size=(1, 1))
    assert c.labels == ["label"] and c.patients["label"].dtype == np.int64
    assert c.patients["label"].value_counts().sort_index().tolist() == [100, 100, 100]


def test_true_risk_is_learnable_but_not_from_one_modality(big):
    c, truth = big
    ev = c.event.astype(bool)
    assert concordance_index_censored(ev, c.time, truth["log_hazard"])[0] > 0.75
    feats = _features(c)
    single = {m: _holdout_cindex(c, f) for m, f in feats.items()}
    assert max(single.values()) < 0.62, single
    # Probing z1 from expr and z2 from the bag and fitting their product recovers the risk.
    z, half = truth["latents"], np.arange(c.n_patients) < c.n_patients // 2
    s1 = LinearRegression().fit(feats["expr"][half], z[half, 1]).predict(feats["expr"])
    s2 = LinearRegression().fit(feats["wsi"][half], z[half, 2]).predict(feats["wsi"])
    s0 = LinearRegression().fit(feats["clinical"][half], z[half, 0]).predict(feats["clinical"])
    interaction = _holdout_cindex(c, np.c_[s1 * s2, s0])
    assert interaction > max(single.values()) + 0.08, (interaction, single)


def test_modalities_are_partly_predictable_from_each_other(big):
    c, _ = big
    feats = _features(c)
    half = np.arange(c.n_patients) < c.n_patients // 2
    for target in feats:
        others = np.hstack([f for m, f in feats.items() if m != target])
        r2 = Ridge(alpha=1.0).fit(others[half], feats[target][half])
        score = r2.score(others[~half], feats[target][~half])
        assert 0.1 < score < 0.9, (target, score)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"missing": {"exprs": 0.2}}, "unknown modality 'exprs'.*Did you mean 'expr'"),
        ({"missing": {"expr": 1.0}}, r"missing\['expr'\] must be in \[0, 1\)"),
        ({"missing_mechanism": "mnar"}, "missing_mechanism must be 'mcar' or 'mar'"),
        ({"modalities": {"x": ("image", 3)}}, "unknown kind 'image'"),
        ({"modalities": {"x": ("vector", 0)}}, "width must be a positive integer"),
        ({"modalities": {"x": "vector"}}, r"expected a \(kind, width\) pair"),
        ({"modalities": {"x": ("vector", 3)}, "missing": {"x": 0.1}}, "single modality"),
        ({"n_classes": 1}, "n_classes must be 0"),
        ({"censoring": 1.0}, r"censoring must be in \[0, 1\)"),
        ({"n_latent": 3}, "n_latent must be at least 6"),
        ({"bag_size": (5, 2)}, "bag_size must be"),
        ({"n_patients": 1}, "n_patients must be an integer >= 2"),
        ({"noise": -1.0}, "noise must be a non-negative"),
    ],
)
def test_bad_arguments_raise_with_message(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_synthetic_cohort(**{"n_patients": 10, **kwargs})
