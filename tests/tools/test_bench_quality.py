"""Smoke test of tools/bench_quality.py: a tiny run, its outputs, and resume."""

from __future__ import annotations

import json

import pytest

from ._load import load_tool


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench_quality")


def _c_indices(summary: dict) -> list[float]:
    return [
        stat["mean"]
        for methods in summary["cohorts"].values()
        for per in methods.values()
        for stat in per.values()
    ]


@pytest.mark.slow
def test_quick_run_writes_table_figure_and_resumes(bench, tmp_path):
    argv = ["--quick", "--methods", "graphmed,coxnet", "--out", str(tmp_path)]
    first = bench.main(argv, log=lambda line: None)
    assert first["ran"] == 4  # 2 folds x 2 methods
    table = (tmp_path / "results.md").read_text()
    assert "graphmed@default" in table and "expression 60% hidden" in table
    assert "torch" in table and "tools/bench_quality.py --quick" in table
    assert (tmp_path / "bench_quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    values = _c_indices(saved)
    assert len(values) == 2 * 5  # graphmed and coxnet, 5 settings each
    assert all(0.0 <= v <= 1.0 for v in values)
    results = sorted(tmp_path.glob("breast_cancer/r0f*/*.json"))
    assert len(results) == 4
    stamps = [p.stat().st_mtime_ns for p in results]
    second = bench.main(argv, log=lambda line: None)
    assert second["ran"] == 0  # every fold x method was read back, none retrained
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert _c_indices(second["summary"]) == pytest.approx(_c_indices(saved))
    only = tmp_path / "only_coxnet.png"
    third = bench.main([*argv, "--report-only", "--plot-methods", "coxnet", "--png", str(only)],
                       log=lambda line: None)  # fmt: skip
    assert third["ran"] == 0 and only.read_bytes()[:4] == b"\x89PNG"
    assert third["plotted"] == ["coxnet"] and second["plotted"] == ["graphmed@default", "coxnet"]
    with pytest.raises(SystemExit, match="other settings"):
        bench.main([*argv, "--set", "model.hidden=4"], log=lambda line: None)
    _report_rebuilds_from_the_stored_folds(bench, tmp_path, saved)


def _report_rebuilds_from_the_stored_folds(bench, tmp_path, saved):
    """results.json keeps every fold, so a report rebuilds without the results folder."""
    quiet = {"log": lambda line: None}
    stored = tmp_path / "results.json"
    assert set(saved["folds"]["c_index"]["breast_cancer"]) == {"graphmed@default", "coxnet"}
    assert all(
        "val_curve" not in e for e in saved["folds"]["extras"]["breast_cancer"]["graphmed@default"]
    )
    empty = tmp_path / "elsewhere"
    again = bench.main(
        ["--quick", "--out", str(empty), "--report-only", "--merge", str(stored)], **quiet
    )
    assert again["ran"] == 0
    assert again["summary"] == {k: saved[k] for k in again["summary"]}
    rebuilt = json.loads((empty / "results.json").read_text())
    assert rebuilt["paired"] == saved["paired"] and rebuilt["commands"] == saved["commands"]
    assert rebuilt["diagnostics"] == saved["diagnostics"]
    # a fold in the results folder wins over the stored one of the same method
    part = tmp_path / "part"
    for path in tmp_path.glob("breast_cancer/r0f*/coxnet.json"):
        r = json.loads(path.read_text())
        r["results"]["coxnet"]["none"]["c_index"] = 0.5
        (part / path.parent.relative_to(tmp_path)).mkdir(parents=True, exist_ok=True)
        (part / path.relative_to(tmp_path)).write_text(json.dumps(r))
    mixed = bench.main(
        ["--quick", "--out", str(part), "--report-only", "--merge", str(stored)], **quiet
    )
    cells = mixed["summary"]["cohorts"]["breast_cancer"]
    assert cells["coxnet"]["none"]["mean"] == 0.5
    assert cells["graphmed@default"] == saved["cohorts"]["breast_cancer"]["graphmed@default"]
    _merge_goes_fold_by_fold(bench, tmp_path, saved)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in saved.items() if k != "folds"}))
    with pytest.raises(SystemExit, match="no per-fold results"):
        bench.main(["--quick", "--out", str(empty), "--report-only", "--merge", str(old)], **quiet)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read it as JSON"):
        bench.main(
            [
                "--quick",
                "--out",
                str(empty),
                "--report-only",
                "--merge",
                str(tmp_path / "bad.json"),
            ],
            **quiet,
        )


def _merge_goes_fold_by_fold(bench, tmp_path, saved):
    """One fold in the folder, the other from the stored file; a run skips stored folds."""
    quiet = {"log": lambda line: None}
    stored = tmp_path / "results.json"
    assert sorted(map(tuple, saved["folds"]["done"])) == [
        ("breast_cancer", f"r0f{f}", m) for f in (0, 1) for m in ("coxnet", "graphmed@default")
    ]
    src = tmp_path / "breast_cancer" / "r0f0" / "coxnet.json"
    r = json.loads(src.read_text())
    r["results"]["coxnet"]["none"]["c_index"] = 0.5
    one = tmp_path / "one"
    (one / "breast_cancer" / "r0f0").mkdir(parents=True)
    (one / "breast_cancer" / "r0f0" / "coxnet.json").write_text(json.dumps(r))
    halves = bench.main(
        ["--quick", "--out", str(one), "--report-only", "--merge", str(stored)], **quiet
    )
    other = saved["folds"]["c_index"]["breast_cancer"]["coxnet"]["none"]["r0f1"]
    got = halves["summary"]["cohorts"]["breast_cancer"]["coxnet"]["none"]["mean"]
    assert got == pytest.approx((0.5 + other) / 2)
    rebuilt = json.loads((one / "results.json").read_text())
    extras = rebuilt["folds"]["extras"]["breast_cancer"]["graphmed@default"]
    assert sorted(e["split"] for e in extras) == ["r0f0", "r0f1"]
    fresh = tmp_path / "fresh"
    rerun = bench.main(
        ["--quick", "--methods", "graphmed,coxnet", "--out", str(fresh), "--merge", str(stored)],
        **quiet,
    )
    assert rerun["ran"] == 0 and not list(fresh.glob("breast_cancer/*/*.json"))
    assert rerun["summary"]["cohorts"] == saved["cohorts"]


def test_masked_tests_hide_the_same_patients_for_every_call(bench):
    cohort = bench.load_cohort("breast_cancer", 200).subset(
        bench.load_cohort("breast_cancer", 200).patient_ids[:50]
    )
    a = bench.masked_tests(cohort, ["expression", "clinical"], [0.0, 0.3, 0.6], seed=5)
    b = bench.masked_tests(cohort, ["expression", "clinical"], [0.0, 0.3, 0.6], seed=5)
    assert list(a) == ["none", "expression 30%", "expression 60%", "clinical 30%", "clinical 60%"]
    for name in a:
        assert a[name].present_mask().equals(b[name].present_mask())
    assert (~a["expression 60%"].present_mask()["expression"]).sum() == 30
    assert a["expression 60%"].present_mask()["clinical"].all()


def test_results_made_before_an_option_existed_match_its_old_behaviour(bench, tmp_path):
    base = ["--quick", "--methods", "graphmed", "--out", str(tmp_path)]
    old_way = bench.make_tasks(
        bench.parse_args([*base, "--set", "train.monitor=c_index"]), tmp_path
    )
    new_way = bench.make_tasks(bench.parse_args([*base, "--set", "train.monitor=loss"]), tmp_path)
    older = json.loads(json.dumps(old_way[0]["spec"]))
    del older["config"]["train"]["monitor"]  # as saved before train.monitor existed
    # such a result was made with early stopping on the C-index, never on the loss
    assert bench._comparable(older, old_way[0]) == bench._comparable(old_way[0]["spec"], old_way[0])
    assert bench._comparable(older, new_way[0]) != bench._comparable(new_way[0]["spec"], new_way[0])
    older["config"]["train"]["lr"] = 0.5  # any other difference still shows
    assert bench._comparable(older, old_way[0]) != bench._comparable(old_way[0]["spec"], old_way[0])


def _fake_cohort(widths: dict[str, tuple[str, int]]):
    from types import SimpleNamespace

    import numpy as np

    return SimpleNamespace(
        modalities={m: SimpleNamespace(kind=k) for m, (k, _) in widths.items()},
        modality_names=list(widths),
        data={m: np.zeros((3, w)) for m, (_, w) in widths.items()},
    )


def test_widest_is_rnaseq_when_present_else_the_widest_vector(bench):
    mods = {"clinical": ("tabular", 900), "cnv": ("vector", 50), "mut": ("vector", 80)}
    assert bench.widest(_fake_cohort(mods)) == "mut"
    assert bench.widest(_fake_cohort({**mods, "rnaseq": ("vector", 10)})) == "rnaseq"


def test_widest_setting_keeps_its_name_and_hides_the_widest_modality(bench):
    cohort = bench.load_cohort("breast_cancer", 200)
    cohort = cohort.subset(cohort.patient_ids[:40])
    tests = bench.masked_tests(cohort, ["widest"], [0.0, 0.5], seed=1)
    assert list(tests) == ["none", "widest 50%"]
    present = tests["widest 50%"].present_mask()
    assert present["expression"].sum() == 20 and present["clinical"].all()


def test_versus_best_pairs_folds_against_the_best_baseline_and_the_mlp(bench):
    folds = ["r0f0", "r0f1", "r0f2"]
    scores = {
        "c1": {
            "graphmed@default": {"none": dict(zip(folds, [0.70, 0.60, 0.65]))},
            "coxnet": {"none": dict(zip(folds, [0.66, 0.62, 0.64]))},
            "rsf:clinical": {"none": dict(zip(folds, [0.50, 0.50, 0.50]))},
            "mlp_zero": {"none": dict(zip(folds, [0.60, 0.55, 0.60]))},
        }
    }
    vs = bench.versus_best({"scores": scores, "extras": {}}, "graphmed@default")["c1"]
    assert vs["best"]["name"] == "coxnet"
    assert vs["best"]["diff"] == pytest.approx((0.04 - 0.02 + 0.01) / 3)
    assert (vs["best"]["better"], vs["best"]["worse"]) == (2, 1)
    assert vs["mlp"]["diff"] == pytest.approx(0.2 / 3) and vs["mlp"]["worse"] == 0
    lines = "\n".join(bench._versus_lines({"c1": vs}, "graphmed@default"))
    assert "best baseline 0.640" in lines and "ahead of mlp_zero in 1 of 1" in lines
