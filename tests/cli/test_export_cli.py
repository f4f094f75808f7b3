import re

import numpy as np
import pandas as pd
import pytest
import torch

import graphmed
from graphmed.cli import main
from graphmed.train.config import load_experiment

# Warnings a test does not assert on are expected here; pytest.warns still sees them.
pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
FAST = ["model.hidden=8", "model.heads=2", "model.layers=1", "train.epochs=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding model/, and two cohort folders: training and downstream."""
    root = tmp_path_factory.mktemp("export_cli")
    train = graphmed.make_synthetic_cohort(60, bag_size=(4, 8), seed=0)
    model, _ = graphmed.fit_final(train, load_experiment(None, [*FAST, "train.progress=false"]))
    model.save(root / "run" / "model")
    other = graphmed.make_synthetic_cohort(
        40, missing={"wsi": 0.5}, bag_size=(4, 8), seed=5, name="other"
    )
    del other.data["expr"], other.modalities["expr"]  # a modality absent altogether
    other.relations = [r for r in other.relations if "expr" not in (r[0], r[2])]
    graphmed.write_cohort(other, root / "other")
    return root, model


def test_cli_export_writes_the_table(run, capsys):
    root, model = run
    out = root / "emb.parquet"
    args = ["export", "--model", str(root / "run"), "--cohort", str(root / "other")]
    code = main([*args, "--out", str(out), "--per-modality", "--chunk-size", "15", "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("40 patients x ") and str(out) in captured.out
    assert "note: modalities ['expr'] are not in cohort 'other'" in captured.err
    frame = pd.read_parquet(out)
    assert len(frame) == 40 and frame["completed_expr"].all()
    assert {"expr_emb_0", "wsi_emb_7", "risk", "att_mod_wsi"} <= set(frame.columns)
    expected = model.embed(graphmed.read_cohort(root / "other"), chunk_size=15)
    np.testing.assert_allclose(frame["risk"], expected["risk"], rtol=1e-6)
    assert graphmed.read_export_metadata(out)["cohort"] == "other"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "nowhere"}, "--model '.*nowhere' does not exist"),
        ({"--cohort": "nowhere"}, "nowhere: does not exist; expected a cohort folder"),
        ({"--out": "."}, "is a folder; give a file"),
        ({"--chunk-size": "0"}, "--chunk-size must be a positive number"),
        ({"--device": "cuda"}, "device 'cuda' was asked for, but CUDA is not available"),
    ],
)
def test_cli_export_bad_arguments(run, capsys, change, message):
    root, _ = run
    if "--device" in change and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    opts = {
        "--model": str(root / "run" / "model"),
        "--cohort": str(root / "other"),
        "--out": str(root / "bad.parquet"),
    }
    for key, value in change.items():
        opts[key] = str(root / value) if key in ("--model", "--cohort", "--out") else value
    argv = ["export", *[a for kv in opts.items() for a in kv], "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphmed export: error: ")
    assert re.search(message, err), err
    assert not (root / "bad.parquet").exists()
