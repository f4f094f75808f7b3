"""graphmed.inference.survival: Breslow curves for a Cox head, step functions for bins."""

import numpy as np

from graphmed.inference import cox_survival, fit_breslow, step_functions


def test_cox_curves_fall_faster_for_higher_risk_and_agree_as_arrays():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=40)
    time = rng.exponential(np.exp(-risk))
    event = (rng.random(40) < 0.7).astype(int)
    baseline = fit_breslow(risk, time, event)
    times = baseline.unique_times_
    values = cox_survival(baseline, np.array([-1.0, 0.0, 1.0]), times)
    assert values.shape == (3, len(times))
    assert np.all(np.diff(values, axis=1) <= 1e-12) and np.all(values[0] >= values[2])
    fns = cox_survival(baseline, np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(np.vstack([fn(times) for fn in fns]), values)


def test_step_functions_start_at_one_before_the_first_edge():
    fns = step_functions(np.array([2.0, 5.0]), np.array([[0.9, 0.5], [0.8, 0.1]]))
    assert len(fns) == 2
    np.testing.assert_allclose(fns[1](np.array([0.0, 2.0, 5.0])), [1.0, 0.8, 0.1])
