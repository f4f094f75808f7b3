import json

import numpy as np
import pandas as pd
import pytest

from graphmed.data.preprocess import CohortPreprocessor
from graphmed.errors import CohortError


def _rows(cohort, mod, ids):
    frame = cohort.data[mod]
    return frame.loc[frame.index.intersection(ids, sort=False)]


def _assert_same_output(a, b):
    assert a.keys() == b.keys()
    for mod in a:
        np.testing.assert_array_equal(a[mod].present, b[mod].present)
        if isinstance(a[mod].values, list):
            assert len(a[mod].values) == len(b[mod].values)
            for x, y in zip(a[mod].values, b[mod].values):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a[mod].values, b[mod].values)


def _perturbed(make_frames, make_cohort, test_ids):
    """The fixture cohort with every test patient's values changed, some extremely."""
    frames = make_frames()
    test = lambda f: f.patient_id.isin(test_ids)  # noqa: E731
    clinical, expr = frames["clinical"], frames["expr"]
    clinical.loc[test(clinical), "age"] = 1e6
    clinical.loc[test(clinical), "marker"] = -1e9
    clinical.loc[test(clinical), "grade"] = "unheard-of"
    genes = [c for c in expr.columns if c != "patient_id"]
    expr.loc[test(expr), genes] = np.random.default_rng(5).normal(0, 1e4, (test(expr).sum(), 20))
    for pid in test_ids:
        if pid in frames["wsi"]:
            frames["wsi"][pid] = np.full((50, 6), 1e5, np.float32)
    return make_cohort(frames)


def test_statistics_come_from_training_patients_only(
    cohort, make_frames, make_cohort, train_ids, test_ids
):
    pre = CohortPreprocessor(max_features=12).fit(cohort.subset(train_ids))
    state = json.dumps(pre.to_dict(), sort_keys=True)
    train_out = pre.transform(cohort.subset(train_ids))
    pre.transform(cohort.subset(test_ids))
    pre.transform(cohort)
    perturbed = _perturbed(make_frames, make_cohort, test_ids)
    pre.transform(perturbed)
    pre.transform(perturbed.subset(test_ids))
    assert json.dumps(pre.to_dict(), sort_keys=True) == state
    _assert_same_output(pre.transform(perturbed.subset(train_ids)), train_out)
    # Refitting on the training part of the perturbed cohort gives the same state too.
    refit = CohortPreprocessor(max_features=12).fit(perturbed.subset(train_ids))
    assert json.dumps(refit.to_dict(), sort_keys=True) == state
    # ...while fitting on everyone would not (the perturbation is visible).
    leaky = CohortPreprocessor(max_features=12).fit(perturbed)
    assert json.dumps(leaky.to_dict(), sort_keys=True) != state


def test_training_columns_are_standardised(cohort, preprocessor, train_ids):
    train = cohort.subset(train_ids)
    out = preprocessor.transform(train)
    tr = preprocessor.transforms_["clinical"]
    present = out["clinical"].present
    for col in ("age", "marker"):  # no missing cells
        v = out["clinical"].values[present, tr.columns.index(col)]
        assert abs(v.mean()) < 1e-5 and v.std() == pytest.approx(1.0, abs=1e-5)
    expr = out["expr"].values[out["expr"].present]
    np.testing.assert_allclose(expr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(expr.std(0), 1, atol=1e-5)
    instances = np.concatenate([b for b in out["wsi"].values if len(b)])
    np.testing.assert_allclose(instances.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(instances.std(0), 1, atol=1e-4)
    # Missing patients hold zeros.
    assert not out["clinical"].values[~present].any()
    assert all(len(b) == 0 for b, p in zip(out["wsi"].values, out["wsi"].present) if not p)


def test_missing_cell_of_present_row_is_imputed_with_training_median(
    cohort, preprocessor, train_ids
):
    tr = preprocessor.transforms_["clinical"]
    sizes = _rows(cohort, "clinical", train_ids)["size"]
    assert sizes.isna().sum() == 1  # p09
    k = tr.numeric_columns.index("size")
    assert tr.fill[k] == pytest.approx(sizes.median())
    out = preprocessor.transform(cohort)
    row = cohort.patient_ids.index("p09")
    assert out["clinical"].present[row]
    value = out["clinical"].values[row, tr.columns.index("size")]
    assert value == pytest.approx((sizes.median() - tr.center[k]) / tr.scale[k], abs=1e-5)
    assert np.isfinite(out["clinical"].values).all()


def test_categorical_codes_and_unknown_category(cohort, preprocessor):
    tr = preprocessor.transforms_["clinical"]
    assert tr.categorical == {"grade": ["high", "low"]}  # "mid" is in test patients only
    out = preprocessor.transform(cohort)
    codes = out["clinical"].values[:, tr.columns.index("grade")]
    grade = cohort.data["clinical"]["grade"].reindex(cohort.patient_ids)
    expected = grade.map({"high": 1, "low": 2, "mid": 0}).fillna(0).to_numpy()
    np.testing.assert_array_equal(codes, expected)
    assert codes[cohort.patient_ids.index("p17")] == 0
    assert codes[cohort.patient_ids.index("p20")] == 0


def test_variance_filter_keeps_top_training_variance_columns(cohort, make_cohort, train_ids):
    pre = CohortPreprocessor(max_features=5).fit(cohort.subset(train_ids))
    var = _rows(cohort, "expr", train_ids).var()
    top = set(var.sort_values(ascending=False).index[:5])
    kept = pre.transforms_["expr"].columns
    assert set(kept) == top
    assert kept == sorted(kept)  # original column order
    assert pre.transform(cohort)["expr"].values.shape == (cohort.n_patients, 5)
    # Tabular modalities are not filtered; the modality option wins over the default.
    assert len(pre.transforms_["clinical"].columns) == 4
    opt = make_cohort(options={"expr": {"max_features": 3}})
    assert len(CohortPreprocessor(max_features=5).fit(opt).transforms_["expr"].columns) == 3


def test_to_dict_from_dict_round_trip(cohort, preprocessor):
    state = json.loads(json.dumps(preprocessor.to_dict()))  # saved with a model as JSON
    again = CohortPreprocessor.from_dict(state)
    assert again.to_dict() == preprocessor.to_dict()
    _assert_same_output(again.transform(cohort), preprocessor.transform(cohort))


def test_saved_state_is_a_copy(cohort, train_ids):
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    before = pre.to_dict()
    state = pre.to_dict()
    state["transforms"]["clinical"]["center"][0] = 1e9
    loaded = CohortPreprocessor.from_dict(state)
    state["transforms"]["clinical"]["scale"][0] = -1.0
    assert pre.to_dict() == before
    assert loaded.transforms_["clinical"].scale[0] == before["transforms"]["clinical"]["scale"][0]


def test_modality_absent_from_cohort_is_missing_for_everyone(
    preprocessor, make_frames, make_cohort
):
    frames = make_frames()
    cohort = make_cohort({k: v for k, v in frames.items() if k not in ("expr", "wsi")})
    out = preprocessor.transform(cohort)
    assert set(out) == {"clinical", "expr", "wsi"}
    assert out["clinical"].present.any()
    assert not out["expr"].present.any()
    assert out["expr"].values.shape == (cohort.n_patients, 20)
    assert not out["expr"].values.any()
    assert not out["wsi"].present.any()
    assert [b.shape for b in out["wsi"].values] == [(0, 6)] * cohort.n_patients


def test_transform_before_fit_raises(cohort):
    pre = CohortPreprocessor()
    with pytest.raises(CohortError, match="not fitted"):
        pre.transform(cohort)
    with pytest.raises(CohortError, match="not fitted"):
        pre.to_dict()


def test_modality_no_training_patient_has_raises(cohort):
    nobody = cohort.drop_modality_for("expr", cohort.patient_ids)
    with pytest.raises(CohortError, match="modality 'expr': no training patient has it"):
        CohortPreprocessor().fit(nobody)


def test_bag_width_mismatch_raises(preprocessor, make_frames, make_cohort):
    frames = make_frames()
    frames["wsi"] = {p: np.zeros((2, 4), np.float32) for p in frames["wsi"]}
    with pytest.raises(CohortError, match="width 4, but the model was fitted on width 6"):
        preprocessor.transform(make_cohort(frames))


def test_standardize_bags_off_keeps_instances(cohort):
    out = CohortPreprocessor(standardize_bags=False).fit_transform(cohort)
    np.testing.assert_array_equal(out["wsi"].values[0], cohort.data["wsi"]["p00"])
    assert isinstance(out["clinical"].values, np.ndarray)
    assert isinstance(cohort.data["clinical"], pd.DataFrame)
