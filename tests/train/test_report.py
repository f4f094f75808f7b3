"""Tests of the cross-validation reports on a synthetic out-of-fold table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from graphmed.errors import GraphMedError
from graphmed.train.report import (
    assign_risk_groups,
    attention_plot,
    attention_summary,
    calibration_plot,
    km_by_risk_group,
    risk_groups,
    write_reports,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HORIZONS = (0.5, 1.0, 2.0)


def make_oof(
    n: int = 300,
    repeats: int = 2,
    folds: int = 5,
    informative: bool = True,
    shift: float = 100.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Exponential times with hazard exp(x); risk = x + noise, shifted by ``shift`` in fold 0.

    ``surv_<t>`` holds the true model's survival exp(-exp(x) t), so it is
    well calibrated; attention columns have means 0.5 > 0.3 > 0.2.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(1.0 / np.exp(x))
    t_cens = rng.exponential(3.0, size=n)
    time, event = np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)
    frames = []
    for r in range(repeats):
        fold = np.empty(n, dtype=int)
        fold[rng.permutation(n)] = np.arange(n) % folds
        risk = x + 0.3 * rng.normal(size=n) if informative else rng.normal(size=n)
        # Each fold's model has its own scale; fold 0 is far above the others.
        risk = risk * (1.0 + 0.2 * fold) + np.where(fold == 0, shift, 0.1 * fold)
        frame = pd.DataFrame(
            {
                "patient_id": [f"p{i:03d}" for i in range(n)],
                "repeat": r,
                "fold": fold,
                "time": time,
                "event": event,
                "risk": risk,
            }
        )
        for h in HORIZONS:
            frame[f"surv_{h:.1f}"] = np.exp(-np.exp(x) * h)
        att = rng.dirichlet([50, 30, 20], size=n)
        for j, m in enumerate(["expr", "clinical", "wsi"]):
            frame[f"att_mod_{m}"] = att[:, j]
        frame["att_path_clinical-expr"] = rng.uniform(0.1, 0.3, size=n)
        frame["att_path_expr-wsi"] = rng.uniform(0.6, 0.9, size=n)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def oof() -> pd.DataFrame:
    return make_oof()


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE


def test_risk_groups_median_tertiles_and_cutpoints():
    risk = np.arange(9.0)
    assert list(risk_groups(risk)).count("low") == 5  # the median itself goes low
    assert list(risk_groups(risk, "tertiles")) == ["low"] * 3 + ["mid"] * 3 + ["high"] * 3
    assert list(risk_groups([1.0, 2.0, 3.0], cutpoints=[2.0])) == ["low", "low", "high"]
    with pytest.raises(GraphMedError, match="expects 2 cutpoint"):
        risk_groups(risk, "tertiles", cutpoints=[1.0])
    with pytest.raises(GraphMedError, match="'median' or 'tertiles'"):
        risk_groups(risk, "quartiles")
    with pytest.raises(GraphMedError, match="NaN"):
        risk_groups([1.0, np.nan])


@pytest.mark.parametrize("method", ["median", "tertiles"])
def test_groups_are_balanced_within_each_fold_despite_shifted_fold(oof, method):
    groups = assign_risk_groups(oof, method)
    for _, part in groups.groupby([oof["repeat"], oof["fold"]]):
        counts = part.value_counts()
        assert len(counts) == (2 if method == "median" else 3)
        assert counts.max() - counts.min() <= 1
    # One pooled cut would put the whole shifted fold into the high group.
    pooled = assign_risk_groups(oof, method, by_fold=False)
    assert (pooled[oof["fold"] == 0] == "high").all()


def test_km_log_rank_small_when_informative_large_when_noise(oof, tmp_path):
    res = km_by_risk_group(oof, tmp_path / "km.png")
    assert res["p_value"] < 1e-3
    assert res["groups"] == {"low": 150, "high": 150}
    assert set(res["median_survival"]) == {"low", "high"}
    low, high = res["median_survival"]["low"], res["median_survival"]["high"]
    assert low is None or low > high
    assert_png(tmp_path / "km.png")
    noise = km_by_risk_group(make_oof(informative=False, seed=1), tmp_path / "noise.png")
    assert noise["p_value"] > 0.01
    tert = km_by_risk_group(oof, tmp_path / "tert.png", method="tertiles")
    assert tert["groups"] == {"low": 100, "mid": 100, "high": 100}


def test_km_uses_one_repeat_and_names_missing_repeat(oof, tmp_path):
    assert km_by_risk_group(oof, tmp_path / "a.png", repeat=1)["n"] == 300
    assert km_by_risk_group(oof, tmp_path / "b.png", repeat=None)["n"] == 600
    with pytest.raises(GraphMedError, match=r"repeat == 7; the table has repeats \[0, 1\]"):
        km_by_risk_group(oof, tmp_path / "c.png", repeat=7)
    with pytest.raises(GraphMedError, match=r"needs a 'fold' column"):
        km_by_risk_group(oof.drop(columns="fold"), tmp_path / "d.png")
    with pytest.raises(GraphMedError, match=r"\['risk'\] are missing"):
        km_by_risk_group(oof.drop(columns="risk"), tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_calibration_small_when_calibrated_large_when_not(oof, tmp_path):
    good = calibration_plot(oof, tmp_path / "good.png")
    assert good["horizon"] in HORIZONS and good["column"] == f"surv_{good['horizon']:.1f}"
    assert len(good["bins"]) == 5 and sum(b["n"] for b in good["bins"]) == 300
    assert good["calibration_error"] < 0.08
    bad_oof = oof.copy()
    for h in HORIZONS:
        bad_oof[f"surv_{h:.1f}"] **= 0.25  # far too optimistic
    bad = calibration_plot(bad_oof, tmp_path / "bad.png", horizon=1.0)
    assert bad["calibration_error"] > 0.15
    assert bad["calibration_error"] > 2 * good["calibration_error"]
    assert_png(tmp_path / "good.png")


def test_calibration_errors(oof, tmp_path):
    no_surv = oof.drop(columns=[c for c in oof.columns if c.startswith("surv_")])
    with pytest.raises(GraphMedError, match=r"surv_<t>"):
        calibration_plot(no_surv, tmp_path / "c.png")
    with pytest.raises(GraphMedError, match=r"available horizons: \[0.5, 1.0, 2.0\]"):
        calibration_plot(oof, tmp_path / "c.png", horizon=3.0)
    with pytest.raises(GraphMedError, match="n_bins"):
        calibration_plot(oof, tmp_path / "c.png", n_bins=0)


def test_attention_summary_ranks_by_mean_and_plot(oof, tmp_path):
    summary = attention_summary(oof)
    assert list(summary["column"]) == [
        "att_mod_expr",
        "att_mod_clinical",
        "att_mod_wsi",
        "att_path_expr-wsi",
        "att_path_clinical-expr",
    ]
    assert (summary["n"] == 300).all() and (summary["sd"] > 0).all()
    attention_plot(oof, tmp_path / "att.png")
    assert_png(tmp_path / "att.png")
    bare = oof[["patient_id", "repeat", "fold", "time", "event", "risk"]]
    assert attention_summary(bare).empty
    with pytest.raises(GraphMedError, match="att_mod_<modality>"):
        attention_plot(bare, tmp_path / "none.png")


def test_write_reports_writes_pngs_and_strict_json(oof, tmp_path):
    import matplotlib.pyplot as plt

    csv = tmp_path / "oof_predictions.csv"
    oof.to_csv(csv, index=False)
    paths = write_reports(csv, tmp_path / "run")
    assert set(paths) == {"km", "calibration", "attention", "report"}
    for name in ("km", "calibration", "attention"):
        assert_png(tmp_path / "run" / f"{name}.png")
    report = json.loads(
        (tmp_path / "run" / "report.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"),
    )
    assert report["km"]["p_value"] < 1e-3
    assert report["attention"][0]["column"] == "att_mod_expr"
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert plt.get_fignums() == []  # figures are not left open in pyplot

    bare = oof[["patient_id", "repeat", "fold", "time", "event", "risk"]]
    assert set(write_reports(bare, tmp_path / "bare", method="tertiles")) == {"km", "report"}


def test_degenerate_tables_are_reported_not_crashed(tmp_path):
    small = make_oof(n=40, repeats=1)
    flat = small.assign(risk=1.0)
    res = km_by_risk_group(flat, tmp_path / "flat.png")
    assert res["p_value"] is None and res["groups"] == {"low": 40}
    holes = small.copy()
    holes.loc[:5, "risk"] = np.nan
    with pytest.warns(UserWarning, match="6 of 40 rows have a missing value"):
        assert km_by_risk_group(holes, tmp_path / "holes.png")["n"] == 34
    # Past everyone's follow-up the KM curve estimates nothing: no observed value, no error.
    late = small.assign(**{"surv_50.0": 0.2})
    res = calibration_plot(late, tmp_path / "late.png", horizon=50.0)
    assert res["bins"][0]["observed"] is None and res["calibration_error"] is None
