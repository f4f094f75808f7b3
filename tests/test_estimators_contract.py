"""The scikit-learn contract of every graphmed estimator, and GSE7390 as sksurv users have it.

Every fit is tiny (2 epochs of a 16-wide, 1-layer network, one batch per
epoch) so the file stays fast; the tests check the plumbing, not quality.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sksurv.datasets import load_breast_cancer
from sksurv.functions import StepFunction
from sksurv.util import Surv

import graphmed
from graphmed.estimator_inputs import as_cohort, group_columns

TINY = dict(
    hidden=16,
    layers=1,
    heads=2,
    epochs=2,
    device="cpu",
    progress=False,
    overrides=("train.batch_size=256", "train.ensemble=1"),  # embeddings `hidden` wide
)
CLINICAL = ["age", "er", "grade", "size"]


@pytest.fixture(scope="module")
def gse7390():
    """GSE7390 as ``load_breast_cancer`` gives it; y with field names of our own."""
    X, y = load_breast_cancer()
    return X, Surv.from_arrays(y["e.tdm"], y["t.tdm"], name_event="died", name_time="days")


def _survival(**kw):
    return graphmed.GraphMedSurvival(modalities={"expression": "X"}, **TINY, **kw)


def _classifier(**kw):
    return graphmed.GraphMedClassifier(label="er", modalities={"expression": "X"}, **TINY, **kw)


ESTIMATORS = {
    "survival-cox": lambda: _survival(),
    "survival-discrete": lambda: _survival(survival="discrete"),
    "classifier": lambda: _classifier(),
}


def _data(name, gse7390, n=80):
    X, y = gse7390
    X, y = X.iloc[:n], y[:n]
    if name == "classifier":  # predict the ER status from the genes, age, grade and size
        return X.drop(columns="er"), X["er"].astype(str).to_numpy()
    return X, y


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def fitted(request, gse7390):
    X, y = _data(request.param, gse7390)
    return request.param, ESTIMATORS[request.param]().fit(X, y), X, y


# ----------------------------------------------------------------- contract
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_params_and_clone(name):
    est = ESTIMATORS[name]()
    params = est.get_params()
    assert params["hidden"] == 16 and params["modalities"] == {"expression": "X"}
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    assert twin.set_params(hidden=8).hidden == 8 and est.hidden == 16
    # The constructor stores its arguments unchanged (sklearn convention) ...
    groups = {"expression": "X"}
    assert type(est)(modalities=groups).modalities is groups
    # ... and does not validate them: errors come at fit.
    type(est)(heads=3, hidden=16)
    assert is_classifier(est) == (name == "classifier")


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_not_fitted(name, gse7390):
    X, _ = _data(name, gse7390)
    est = ESTIMATORS[name]()
    calls = [est.predict, est.embed]
    calls.append(est.predict_proba if name == "classifier" else est.predict_survival_function)
    for call in calls:
        with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
            call(X)
    # also a GraphMedError, as before the sklearn contract
    with pytest.raises(graphmed.GraphMedError):
        est.predict(X)


def test_fit_predict_shapes(fitted):
    name, est, X, y = fitted
    n = len(X)
    assert est.n_features_in_ == X.shape[1]
    assert list(est.feature_names_in_) == list(X.columns)
    assert set(est.modality_columns_) == {"expression", "clinical"}
    assert len(est.modality_columns_["expression"]) == 76
    assert est.modality_kinds_ == {"expression": "vector", "clinical": "tabular"}
    # fitting again clears the fitted state: clone(fitted) is unfitted
    with pytest.raises(NotFittedError):
        clone(est).predict(X)
    emb = est.embed(X)
    assert emb.shape == (n, 16) and emb.index.equals(X.index)
    if name == "classifier":
        proba = est.predict_proba(X)
        assert proba.shape == (n, 2)
        np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
        assert list(est.classes_) == ["negative", "positive"]
        pred = est.predict(X)
        assert pred.shape == (n,) and set(pred) <= set(est.classes_)
        assert est.score(X, y) == pytest.approx(np.mean(pred == y))
        return
    risk = est.predict(X)
    assert risk.shape == (n,) and np.isfinite(risk).all()
    fns = est.predict_survival_function(X.iloc[:5])
    assert len(fns) == 5 and all(isinstance(f, StepFunction) for f in fns)
    arr = est.predict_survival_function(X.iloc[:5], return_array=True)
    assert arr.shape == (5, len(est.unique_times_))
    assert ((0 <= arr) & (arr <= 1)).all() and (np.diff(arr, axis=1) <= 1e-12).all()
    np.testing.assert_allclose(arr[2], fns[2](est.unique_times_))
    if name == "survival-cox":  # a higher risk means a lower survival curve
        hi, lo = int(np.argmax(risk[:5])), int(np.argmin(risk[:5]))
        assert (arr[hi] <= arr[lo] + 1e-9).all()
    from graphmed.metrics import harrell_c

    assert est.score(X, y) == pytest.approx(harrell_c(y["days"], y["died"], risk))
    if name == "survival-discrete":
        assert fns[0].x[0] == 0 and fns[0](0.0) == 1.0  # nobody has died at time 0
        assert len(est.unique_times_) == 4  # task.n_bins


def test_rows_are_patients(fitted):
    """Predictions follow X's rows, whatever their order or index."""
    name, est, X, _ = fitted
    predict = est.predict_proba if name == "classifier" else est.predict
    base = predict(X)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(predict(X.iloc[perm]), base[perm], rtol=1e-5, atol=1e-6)
    dup = X.set_axis(["same"] * len(X))  # not usable as ids: rows are numbered instead
    np.testing.assert_allclose(predict(dup), base, rtol=1e-5, atol=1e-6)
    named = X.set_axis([f"pt{i}" for i in range(len(X))])
    assert list(est.embed(named).index) == list(named.index)


def test_pickle_round_trip(fitted):
    name, est, X, _ = fitted
    again = pickle.loads(pickle.dumps(est))
    predict = "predict_proba" if name == "classifier" else "predict"
    np.testing.assert_allclose(
        getattr(again, predict)(X), getattr(est, predict)(X), rtol=1e-6, atol=1e-7
    )
    if name == "survival-cox":
        np.testing.assert_allclose(
            again.predict_survival_function(X, return_array=True),
            est.predict_survival_function(X, return_array=True),
            rtol=1e-6,
        )


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_grid_search_two_values(name, gse7390):
    X, y = _data(name, gse7390, n=60)
    search = GridSearchCV(ESTIMATORS[name](), {"epochs": [1, 2]}, cv=2, refit=False)
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 2 and np.isfinite(scores).all() and (0 <= scores).all()
    assert search.best_params_["epochs"] in (1, 2)


# ---------------------------------------------------------------- GSE7390
def test_gse7390_grid_search_and_cross_val_score(gse7390):
    X, y = gse7390
    # clinical (age, er, grade, size) vs the 76 genes, named explicitly this time
    genes = [c for c in X.columns if c not in CLINICAL]
    est = graphmed.GraphMedSurvival(modalities={"clinical": CLINICAL, "genes": genes}, **TINY)
    cv = KFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(est, {"hidden": [8, 16]}, cv=cv).fit(X, y)
    assert set(search.cv_results_["param_hidden"]) == {8, 16}
    best = search.best_estimator_
    assert best.hidden == search.best_params_["hidden"] and len(best.predict(X)) == len(X)
    assert 0.5 < best.score(X, y) <= 1  # training C of a Cox model with the linear path
    scores = cross_val_score(est, X, y, cv=cv)
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()


def test_y_as_frame_fits_like_surv_array(gse7390):
    X, y = gse7390
    X, y = X.iloc[:60], y[:60]
    frame = pd.DataFrame({"time": y["days"], "event": y["died"].astype(int)})
    a = _survival().fit(X, y)
    b = _survival().fit(X, frame)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-5, atol=1e-6)
    assert b.score(X, frame) == pytest.approx(a.score(X, y))


def _log_size(X: pd.DataFrame) -> pd.DataFrame:
    return X.assign(size=np.log1p(X["size"]))


def test_pipeline(gse7390):
    X, y = gse7390
    genes = [c for c in X.columns if c.startswith("X")]
    scale = ColumnTransformer(
        [("genes", StandardScaler(), genes)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    pipe = make_pipeline(FunctionTransformer(_log_size), scale, _survival())
    pipe.fit(X.iloc[:120], y[:120])
    est = pipe[-1]
    assert len(est.modality_columns_["expression"]) == 76
    assert est.modality_columns_["clinical"] == CLINICAL
    assert pipe.predict(X.iloc[120:]).shape == (78,)
    assert 0 <= pipe.score(X.iloc[120:], y[120:]) <= 1
    assert clone(pipe).get_params()["graphmedsurvival__modalities"] == {"expression": "X"}


# ------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_fix(gse7390):
    X, y = gse7390
    cases = [
        (dict(), X, y[:-1], "X has 198 rows but y has 197; pass one y entry per row"),
        (dict(modalities={"m": ["age", "nope"]}), X, y, r"modalities\['m'\]: X has no column"),
        (dict(modalities={"m": "Z"}), X, y, "no column of X starts with 'Z'"),
        (dict(modalities={"a": ["age"], "b": ["age", "er"]}), X, y, "'age' of X is in modal"),
        (dict(modalities={"clinical": ["age"]}), X, y, "in no modality"),
        (dict(modalities=["age"]), X, y, "modalities must be a dict"),
        (dict(heads=3), X, y, "heads must divide hidden: hidden=16"),
        (dict(survival="weibull"), X, y, "survival must be 'cox' or 'discrete'"),
        (dict(), X, Surv.from_arrays(np.zeros(198, bool), y["days"]), "y has no events"),
        (dict(), X, y["days"], "expected a structured array"),
        (dict(), X, np.zeros(198, [("a", float), ("b", float)]), "one bool field"),
        (dict(), X, pd.DataFrame({"t": y["days"]}), "expected the survival time and event"),
    ]
    for kw, bad_X, bad_y, match in cases:
        est = graphmed.GraphMedSurvival(**{**TINY, **kw})
        with pytest.raises(graphmed.GraphMedError, match=match):
            est.fit(bad_X, bad_y)
    with pytest.raises(graphmed.GraphMedError, match="expected the survival time and event"):
        graphmed.GraphMedClassifier(label="er", survival_weight=0.5, **TINY).fit(
            X.drop(columns="er"), X["er"].to_numpy()
        )


def test_predict_needs_the_fitted_columns(fitted):
    name, est, X, _ = fitted
    with pytest.raises(graphmed.GraphMedError, match="X lacks columns .* fitted on"):
        est.predict(X.drop(columns=["age", X.columns[0]]))


def test_cohort_inputs():
    cohort = graphmed.make_synthetic_cohort(40, seed=0)
    with pytest.raises(graphmed.GraphMedError, match="X is a Cohort.*pass y=None"):
        graphmed.GraphMedSurvival(**TINY).fit(cohort, np.ones(40))
    with pytest.raises(graphmed.GraphMedError, match="modalities groups the columns"):
        graphmed.GraphMedSurvival(modalities={"a": "x"}, **TINY).fit(cohort)


# ------------------------------------------------------ the input layer alone
def test_group_columns():
    cols = pd.Index(["age", "x1", "x2", "grade"])
    assert group_columns(cols, None) == {"clinical": list(cols)}
    # a prefix takes every column whose name starts with it; the rest is 'clinical'
    assert group_columns(cols, {"expr": "x"}) == {
        "expr": ["x1", "x2"],
        "clinical": ["age", "grade"],
    }
    assert group_columns(cols, {"g": "g"}) == {"g": ["grade"], "clinical": ["age", "x1", "x2"]}
    # groups keep X's column order
    assert group_columns(cols, {"a": ["grade", "age"], "b": "x"}) == {
        "a": ["age", "grade"],
        "b": ["x1", "x2"],
    }
    with pytest.raises(graphmed.GraphMedError, match="Did you mean 'grade'"):
        group_columns(cols, {"a": ["grde"]})
    with pytest.raises(graphmed.GraphMedError, match="duplicate column names"):
        group_columns(pd.Index(["a", "a"]), None)


def test_as_cohort_aligns_y_by_patient_id():
    X = pd.DataFrame({"age": [50.0, 60, 70, 80], "size": [1.0, 2, 3, 4]}, index=list("abcd"))
    y = pd.DataFrame({"patient_id": list("dcba"), "time": [4.0, 3, 2, 1], "event": [1, 0, 1, 0]})
    cohort = as_cohort(X, y)
    assert cohort.patient_ids == list("abcd")
    np.testing.assert_array_equal(cohort.time, [1, 2, 3, 4])
    np.testing.assert_array_equal(cohort.event, [0, 1, 0, 1])
    # the patients frame as an index works too; rows by position without patient_id
    assert as_cohort(X, y.set_index("patient_id")).time.tolist() == [1, 2, 3, 4]
    assert as_cohort(X, y.drop(columns="patient_id")).time.tolist() == [4, 3, 2, 1]
    # a row whose cells of a modality are all empty: the patient lacks it
    X.loc["b"] = np.nan
    assert not as_cohort(X, y).present_mask().loc["b", "clinical"]
    with pytest.raises(graphmed.GraphMedError, match="does not match X's index"):
        as_cohort(X, y.assign(patient_id=list("abcz")))
    # sksurv's field names vary: the bool field is the event, the float field the time
    surv = Surv.from_arrays([True, False, True, True], [5.0, 6, 7, 8], "e", "t")
    assert as_cohort(X, surv).event.tolist() == [1, 0, 1, 1]
