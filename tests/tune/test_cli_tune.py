import json

import pytest

from graphmed.cli import main
from graphmed.train.config import load_experiment


def test_cli_tune_prints_each_trial_and_the_best_config_trains(
    cohort_dir, space_file, cli_args, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(cli_args(cohort_dir, space_file, out, "--n-trials", "2", "--seed", "1")) == 0
    printed = capsys.readouterr().out
    assert "[trial 0] COMPLETE c_index" in printed and "[trial 1] " in printed
    assert "best: trial" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 2 and summary["study"] == "graphmed"
    best = load_experiment(out / "best_config.yaml")
    for key, value in summary["best"]["params"].items():
        section, leaf = key.split(".")
        assert getattr(getattr(best, section), leaf) == pytest.approx(value)
    # The best config is ready for `graphmed train`.
    run = tmp_path / "train"
    args = ["train", "--cohort", str(cohort_dir), "--config", str(out / "best_config.yaml")]
    assert main([*args, "--out", str(run), "--no-final", "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["c_index"]["mean"] > 0
    # --n-trials 0 rewrites the outputs from the storage alone, without a cohort.
    (out / "trials.csv").unlink()
    assert main(["tune", "--out", str(out), "--space", str(space_file), "--n-trials", "0"]) == 0
    assert len((out / "trials.csv").read_text().splitlines()) == 3


def test_cli_tune_reports_bad_input(cohort_dir, space_file, cli_args, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  model.dropuot: {type: float, low: 0.0, high: 0.5}\n")
    assert main(cli_args(cohort_dir, bad, tmp_path / "a", "--n-trials", "1")) == 2
    assert "Did you mean 'model.dropout'" in capsys.readouterr().err
    assert main(cli_args(cohort_dir, space_file, tmp_path / "b", "--metric", "c-index")) == 2
    assert "Did you mean 'c_index'" in capsys.readouterr().err
    assert main(cli_args(cohort_dir, space_file, tmp_path / "c", "--storage", "nowhere")) == 2
    assert "neither a database URL" in capsys.readouterr().err
    assert main(["tune", "--space", str(space_file), "--out", str(tmp_path / "d")]) == 2
    assert "--cohort is required" in capsys.readouterr().err
