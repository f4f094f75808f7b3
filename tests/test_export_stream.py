"""Exporting a cohort folder chunk by chunk writes the same table as exporting it whole."""

import numpy as np
import pandas as pd
import pytest

import graphmed
from graphmed.data.large import LARGE_MODALITIES, write_large_cohort
from graphmed.data.stream import CohortStream
from graphmed.train.config import load_experiment

pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
FAST = ["model.hidden=8", "model.heads=2", "model.layers=1", "train.epochs=1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_stream")
    folder = write_large_cohort(root / "large", 450, chunk_size=200, seed=3)
    train = graphmed.make_synthetic_cohort(
        80, LARGE_MODALITIES, missing={"expr": 0.3, "wsi": 0.5}, bag_size=(4, 8), seed=0
    )
    model, _ = graphmed.fit_final(train, load_experiment(None, [*FAST, "train.progress=false"]))
    return root, folder, model


def test_streamed_export_equals_the_whole_export(setup):
    root, folder, model = setup
    whole = graphmed.export_embeddings(model, folder, root / "whole.parquet", progress=False)
    stream = CohortStream(folder, chunk_size=128)
    summary = graphmed.export_embeddings(
        model, stream, root / "stream.parquet", chunk_size=50, progress=False
    )
    assert summary.n_patients == whole.n_patients == 450
    a = pd.read_parquet(root / "whole.parquet")
    b = pd.read_parquet(root / "stream.parquet")
    assert list(a.columns) == list(b.columns) and list(a["patient_id"]) == list(b["patient_id"])
    numeric = [c for c in a.columns if c != "patient_id"]
    np.testing.assert_allclose(
        b[numeric].to_numpy(float), a[numeric].to_numpy(float), rtol=1e-5, atol=1e-6
    )
    meta = graphmed.read_export_metadata(root / "stream.parquet")
    assert meta["n_patients"] == 450 and meta["cohort"] == "large"
    # Some patients miss expr or the bag; the flags say so in both.
    assert 0 < b["present_wsi"].mean() < 1 and (b["completed_wsi"] == ~b["present_wsi"]).all()


def test_cli_export_stream(setup, capsys):
    from graphmed.cli import main

    root, folder, model = setup
    model.save(root / "model")
    out = root / "cli.parquet"
    argv = ["export", "--model", str(root / "model"), "--cohort", str(folder), "--out", str(out)]
    assert main([*argv, "--stream", "--chunk-size", "100", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("450 patients x ")
    frame = pd.read_parquet(out)
    expected = graphmed.export_embeddings(model, folder, root / "ref.parquet", progress=False)
    assert expected.n_patients == len(frame) == 450
    np.testing.assert_allclose(
        frame["risk"], pd.read_parquet(root / "ref.parquet")["risk"], rtol=1e-5, atol=1e-6
    )


def test_cli_predict_stream_writes_every_chunk(setup, capsys):
    from graphmed.cli import main

    root, folder, model = setup
    model.save(root / "model_p")
    argv = ["predict", "--model", str(root / "model_p"), "--cohort", str(folder)]
    assert main([*argv, "--out", str(root / "s.csv"), "--stream", "--chunk-size", "64"]) == 0
    assert main([*argv, "--out", str(root / "w.csv")]) == 0
    streamed, whole = pd.read_csv(root / "s.csv"), pd.read_csv(root / "w.csv")
    assert list(streamed.columns) == list(whole.columns) and len(streamed) == 450
    assert list(streamed["patient_id"]) == list(whole["patient_id"])
    np.testing.assert_allclose(streamed["risk"], whole["risk"], rtol=1e-5, atol=1e-6)
