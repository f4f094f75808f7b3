"""tools/bench_completion_ceiling.py: the ceiling is high when the rest predict the
hidden modality and near zero when they do not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from graphmed.data.cohort import Cohort
from graphmed.train.cv import hide_modalities

from ._load import load_tool

NOISE = 0.8


@pytest.fixture(scope="module")
def tool():
    return load_tool("bench_completion_ceiling")


def _cohort(n: int, linked: bool, seed: int) -> Cohort:
    """clinical + cnv + expr; survival depends on expr genes 0-3 only.

    ``linked``: expr genes are cnv genes plus noise (``NOISE``: cnv predicts
    about 60 % of expr's variance, so CoxNet still credits expr); otherwise
    expr is independent of everything else.
    """
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    cnv = rng.normal(size=(n, 12))
    expr = cnv + NOISE * rng.normal(size=(n, 12)) if linked else rng.normal(size=(n, 12))
    age = rng.normal(size=n)
    hazard = np.exp(0.3 * age + expr[:, :4].sum(1) * 0.6)
    t = rng.exponential(1 / hazard)
    c = rng.exponential(np.median(t) * 2, n)
    patients = pd.DataFrame({"patient_id": ids, "time": np.minimum(t, c), "event": t <= c})

    def frame(x, prefix):
        df = pd.DataFrame(x, columns=[f"{prefix}{j}" for j in range(x.shape[1])])
        df.insert(0, "patient_id", ids)
        return df

    return Cohort.from_frames(
        patients,
        {
            "clinical": pd.DataFrame({"patient_id": ids, "age": age}),
            "cnv": frame(cnv, "c"),
            "expr": frame(expr, "g"),
        },
        kinds={"clinical": "tabular", "cnv": "vector", "expr": "vector"},
        name="ceiling",
    )


def _run(tool, linked: bool) -> dict:
    cohort = _cohort(500, linked, seed=2)
    ids = np.asarray(cohort.patient_ids)
    train_c, test_c = cohort.subset(ids[:300]), cohort.subset(ids[300:])
    tests = {"none": test_c, "expr 60%": hide_modalities(test_c, {"expr": 0.6}, seed=3)}
    return tool.ceiling(train_c, tests, "expr", max_genes=None)


def test_ceiling_follows_how_much_the_rest_say(tool):
    linked, alone = _run(tool, True), _run(tool, False)
    assert linked["n_coef"] > 0 and alone["n_coef"] > 0
    # expr = cnv + noise: much of expr's share of the risk comes back from cnv
    assert linked["r2_ridge"] > 0.4 and linked["r2_boosted"] > 0.3
    assert alone["r2_ridge"] < 0.1 and alone["r2_boosted"] < 0.1
    c_linked, c_alone = linked["c"]["expr 60%"], alone["c"]["expr 60%"]
    # completion from cnv wins back a good part of what hiding cost ...
    lost = linked["c"]["none"]["mean"] - c_linked["mean"]
    assert lost > 0.05
    for imputation in ("ridge", "boosted"):
        assert c_linked[imputation] - c_linked["mean"] > max(0.03, 0.3 * lost)
    # ... and, where the rest say nothing about expr, nothing
    assert alone["c"]["none"]["mean"] - c_alone["mean"] > 0.05
    assert abs(c_alone["ridge"] - c_alone["mean"]) < 0.01
    assert c_alone["boosted"] - c_alone["mean"] < 0.01
    # nothing hidden: every imputation gives the same risk
    assert len(set(round(v, 12) for v in linked["c"]["none"].values())) == 1
    # graphmed's linear path reads expr through its three summaries
    for result in (linked, alone):
        path = result["linear_path"]
        assert set(path["c"]) == {"none", "expr 60%"}
        assert path["c"]["none"]["mean"] == path["c"]["none"]["ridge"]
        assert all(0.0 <= c <= 1.0 for per in path["c"].values() for c in per.values())
    assert linked["linear_path"]["r2_ridge"] > alone["linear_path"]["r2_ridge"]


def test_unknown_modality_is_named(tool):
    cohort = _cohort(120, True, seed=2)
    with pytest.raises(ValueError, match="'rnaseq' is not in the cohort"):
        tool.ceiling(cohort, {"none": cohort}, "rnaseq", max_genes=None)


def test_summary_and_markdown(tool):
    split = {
        "cohort": "a",
        "n_coef": 3,
        "r2_ridge": 0.5,
        "r2_boosted": 0.4,
        "c": {
            "none": dict.fromkeys(tool.IMPUTATIONS, 0.7),
            "x 60%": {"mean": 0.6, "ridge": 0.65, "boosted": 0.55},
        },
    }
    split["linear_path"] = {
        "n_coef": 2,
        "r2_ridge": 0.3,
        "c": {"none": {"mean": 0.7, "ridge": 0.7}, "x 60%": {"mean": 0.6, "ridge": 0.62}},
    }
    unused = json.loads(json.dumps(split)) | {"n_coef": 0, "r2_ridge": float("nan")}
    unused["linear_path"] = None  # a cohort without a clinical table
    summary = tool.summarise([split, unused])
    row = summary["a"]
    assert row["splits"] == 2 and row["modality_used"] == 1
    assert row["r2_ridge"] == pytest.approx(0.5)  # splits where the modality is unused are left out
    vs = row["c"]["x 60%"]["vs_mean"]
    assert vs["ridge"]["diff"] == pytest.approx(0.05) and vs["ridge"]["better"] == 2
    assert vs["boosted"]["worse"] == 2
    text = tool.markdown(summary, "python tools/bench_completion_ceiling.py")
    assert "| a | 2 (1) | 0.500 | 0.400 | 0.700 | 0.600 | +0.0500 (2:0) | -0.0500 (0:2) |" in text
    assert row["linear_path"]["splits"] == 1
    assert row["linear_path"]["c"]["x 60%"]["vs_mean"]["ridge"]["diff"] == pytest.approx(0.02)
    assert "| a | 1 (1) | 0.300 | 0.700 | 0.600 | +0.0200 (1:0) |" in text
