"""``graph.screen_features``: univariate Cox screening of wide vectors, training fold only."""

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test

from graphmed.data.cohort import Cohort
from graphmed.data.preprocess import CohortPreprocessor, cox_score_z
from graphmed.errors import ConfigError
from graphmed.train.config import load_experiment


def test_score_statistic_equals_the_logrank_test_for_a_binary_covariate():
    rng = np.random.default_rng(0)
    n = 120
    group = (rng.random(n) < 0.5).astype(float)
    time = rng.exponential(size=n) * np.exp(-0.7 * group)  # distinct times: no ties
    event = rng.random(n) < 0.7
    z = cox_score_z((group - group.mean())[:, None], time, event)
    test = logrank_test(time[group == 1], time[group == 0], event[group == 1], event[group == 0])
    np.testing.assert_allclose(z[0] ** 2, test.test_statistic, rtol=1e-8)
    assert z[0] > 0  # the group with the shorter times has the higher hazard


def test_ties_share_their_risk_set_and_constant_columns_score_zero():
    time = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1, 1, 0], bool)
    x = np.array([[1.0, 5.0], [0.0, 5.0], [1.0, 5.0], [0.0, 5.0], [1.0, 5.0], [0.0, 5.0]])
    z = cox_score_z(x, time, event)
    # by hand (Breslow): risk sets {all 6} at t=1 twice, {rows 3..5} at t=3 twice
    u = (1 - 0.5) + (0 - 0.5) + (0 - 1 / 3) + (1 - 1 / 3)
    info = 2 * (0.5 - 0.25) + 2 * (1 / 3 - 1 / 9)
    np.testing.assert_allclose(z, [u / np.sqrt(info), 0.0])


def _cohort(n=150, p=60, signal=(3, 17, 41), seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    x = rng.normal(size=(n, p))
    hazard = x[:, list(signal)].sum(axis=1)
    time = rng.exponential(size=n) * np.exp(-hazard)
    event = (rng.random(n) < 0.8).astype(int)
    genes = pd.DataFrame(x, index=pd.Index(ids, name="patient_id"))
    genes.columns = [f"g{j:02d}" for j in range(p)]
    patients = pd.DataFrame({"time": time, "event": event}, index=genes.index)
    clinical = pd.DataFrame({"age": rng.normal(60, 10, n)}, index=genes.index)
    return Cohort.from_frames(
        patients, {"clinical": clinical, "genes": genes}, kinds={"genes": "vector"}
    )


def test_screening_keeps_the_prognostic_columns_in_their_order():
    cohort = _cohort()
    pre = CohortPreprocessor(screen_features=5).fit(cohort)
    kept = pre.transforms_["genes"].columns
    assert len(kept) == 5 and kept == sorted(kept)
    assert {"g03", "g17", "g41"} <= set(kept)
    assert pre.transforms_["clinical"].columns == ["age"]  # tabular tables are not screened
    out = pre.transform(cohort)["genes"].values
    assert out.shape == (cohort.n_patients, 5)
    again = CohortPreprocessor.from_dict(pre.to_dict())
    assert again.screen_features == 5
    np.testing.assert_array_equal(again.transform(cohort)["genes"].values, out)


def test_screening_uses_training_patients_only():
    cohort = _cohort()
    train, test = cohort.patient_ids[:100], cohort.patient_ids[100:]
    kept = CohortPreprocessor(screen_features=8).fit(cohort.subset(train)).transforms_["genes"]
    # the test patients' outcomes rewritten to follow other genes: nothing changes
    patients = cohort.patients.copy()
    genes = cohort.data["genes"]
    patients.loc[test, "time"] = np.exp(-3 * genes.loc[test, ["g00", "g01"]].sum(axis=1))
    patients.loc[test, "event"] = 1
    changed = Cohort.from_frames(
        patients, {"clinical": cohort.data["clinical"], "genes": genes}, kinds={"genes": "vector"}
    )
    refit = CohortPreprocessor(screen_features=8).fit(changed.subset(train)).transforms_["genes"]
    assert refit.columns == kept.columns
    screened_all = CohortPreprocessor(screen_features=8).fit(changed).transforms_["genes"]
    assert screened_all.columns != kept.columns  # the check above can fail


def test_screening_runs_after_the_variance_cap():
    cohort = _cohort(p=60)
    pre = CohortPreprocessor(max_features=30, screen_features=4).fit(cohort)
    variance_kept = CohortPreprocessor(max_features=30).fit(cohort).transforms_["genes"].columns
    assert set(pre.transforms_["genes"].columns) <= set(variance_kept)


def test_screen_features_is_checked_at_load():
    with pytest.raises(ConfigError, match="screen_features"):
        load_experiment(None, ["graph.screen_features=0"])
    assert load_experiment(None, ["graph.screen_features=200"]).graph.screen_features == 200
