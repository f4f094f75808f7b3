"""Embedding export: same numbers as predict, any missingness, atomic chunked writes."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import graphmed
from graphmed import export as export_module
from graphmed.data.cohort import Cohort
from graphmed.train.compat import CompatibilityWarning
from graphmed.train.config import load_experiment

# Warnings a test does not assert on are expected here; pytest.warns still sees them.
pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
FAST = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=2",
    "train.patience=5",
    "train.progress=false",
    "train.ensemble=1",  # one model: the embedding is `hidden` wide
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort():
    return graphmed.make_synthetic_cohort(
        90, missing={"expr": 0.3, "wsi": 0.3}, bag_size=(4, 12), seed=3, name="train_cohort"
    )


@pytest.fixture(scope="module")
def model(cohort):
    trained, _ = graphmed.fit_final(cohort, load_experiment(None, FAST))
    return trained


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("run") / "model")


@pytest.fixture(scope="module")
def downstream():
    """Another cohort from the same generator (other seed, other missingness)."""
    return graphmed.make_synthetic_cohort(
        60, missing={"expr": 0.5, "wsi": 0.5}, bag_size=(4, 12), seed=11, name="downstream"
    )


def _emb(frame, prefix="emb_"):
    return frame[[c for c in frame.columns if c.startswith(prefix)]].to_numpy()


def test_export_then_read_gives_predict_numbers(model, downstream, tmp_path):
    preds = model.predict(downstream)  # the whole cohort in one piece
    out = tmp_path / "emb.parquet"
    summary = graphmed.export_embeddings(
        model, downstream, out, per_modality=True, chunk_size=16, progress=False
    )
    frame = pd.read_parquet(out)
    assert summary.n_patients == len(frame) == downstream.n_patients
    assert pq.ParquetFile(out).metadata.num_row_groups == 4  # 60 patients in chunks of 16
    assert frame["patient_id"].tolist() == downstream.patient_ids
    np.testing.assert_array_equal(frame["time"], downstream.time)
    np.testing.assert_array_equal(frame["event"], downstream.event)
    close = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(frame["risk"], preds.risk, **close)
    assert _emb(frame).shape == (60, 16)
    np.testing.assert_allclose(_emb(frame), preds.embedding, **close)
    for j, m in enumerate(model.modalities):
        np.testing.assert_allclose(
            _emb(frame, f"{m}_emb_"), preds.modality_embeddings[:, j], **close
        )
        np.testing.assert_allclose(frame[f"att_mod_{m}"], preds.modality_attention[:, j], **close)
        present = downstream.present_mask()[m].to_numpy()
        np.testing.assert_array_equal(frame[f"present_{m}"], present)
        np.testing.assert_array_equal(frame[f"completed_{m}"], ~present)
    paths = [c for c in frame.columns if c.startswith("att_path_")]
    assert "att_path_clinical-informs->expr" in paths
    np.testing.assert_allclose(frame[paths].to_numpy(), preds.metapath_attention, **close)
    np.testing.assert_allclose(frame[paths].sum(1), 1, rtol=1e-5)
    # In memory, the same table: model.embed and embed_frame share one implementation.
    mem = model.embed(downstream, per_modality=True, chunk_size=16)
    pd.testing.assert_frame_equal(mem, frame)
    assert mem.attrs["graphmed"]["cohort"] == "downstream"


def test_parquet_metadata_is_present_and_parseable(model, downstream, tmp_path):
    out = tmp_path / "emb.parquet"
    graphmed.export_embeddings(model, downstream, out, progress=False)
    raw = pq.read_schema(out).metadata
    assert {f"graphmed.{k}".encode() for k in export_module.METADATA_KEYS} <= set(raw)
    meta = graphmed.read_export_metadata(out)
    assert set(meta) == set(export_module.METADATA_KEYS)
    assert meta["version"] == graphmed.__version__ == meta["model_version"]
    assert meta["config_hash"] == model.info["config_hash"] and len(meta["config_hash"]) == 16
    assert meta["training_cohort"] == "train_cohort" and meta["cohort"] == "downstream"
    datetime.strptime(meta["created"], "%Y-%m-%dT%H:%M:%S%z")
    specs = meta["modality_specs"]
    assert specs["expr"]["kind"] == "vector" and specs["wsi"]["width"] == 32
    assert specs["expr"]["features"] == model.fitted.preprocessor.transforms_["expr"].columns
    assert specs["clinical"]["categorical"]["cat_0"] == ["high", "low", "mid"]
    edges = model.model.heads["survival"].bins.edges[1:]  # the default discrete-time head
    assert meta["embedding_dim"] == 16
    assert meta["heads"] == {"survival": {"kind": "discrete", "times": [float(t) for t in edges]}}
    assert meta["metapaths"][0]["column"].startswith("att_path_")
    compat = meta["compatibility"]
    assert compat["cohort"] == "downstream" and sum(compat["patterns"].values()) == 60
    with pytest.raises(graphmed.GraphMedError, match="no graphmed metadata"):
        pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
        graphmed.read_export_metadata(tmp_path / "plain.parquet")


def test_unseen_missingness_patterns_export(model, downstream, tmp_path):
    # wsi absent from the cohort altogether, and expr-only patients: no training patient
    # lacked clinical, so "expr" alone and the no-modality pattern are both new.
    ids = downstream.patient_ids
    no_wsi = Cohort(
        downstream.name,
        downstream.patients,
        {m: s for m, s in downstream.modalities.items() if m != "wsi"},
        {m: v for m, v in downstream.data.items() if m != "wsi"},
        [r for r in downstream.relations if "wsi" not in (r[0], r[2])],
    ).drop_modality_for("clinical", ids[:10])
    with pytest.warns(CompatibilityWarning, match=r"\['wsi'\] are not in cohort"):
        summary = graphmed.export_embeddings(
            model, no_wsi, tmp_path / "e.parquet", chunk_size=7, progress=False
        )
    report = summary.report
    assert report.missing_modalities == ["wsi"]
    assert "expr" in report.unseen_patterns and "expr" not in model.info["training_patterns"]
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert np.isfinite(_emb(frame)).all() and np.isfinite(frame["risk"]).all()
    assert frame["completed_wsi"].all() and not frame["present_wsi"].any()
    assert frame["completed_clinical"].iloc[:10].all()
    assert not frame["completed_clinical"].iloc[10:].any()
    # Completion depends on what the patient has: completed wsi is not one constant row.
    assert np.unique(_emb(frame).round(4), axis=0).shape[0] > 1


def test_missing_features_are_filled_like_missing_cells(model, downstream, tmp_path):
    gone = ["expr_03", "expr_40", "num_1"]
    data = dict(downstream.data)
    data["expr"] = data["expr"].drop(columns=gone[:2])
    data["clinical"] = data["clinical"].drop(columns=gone[2:])
    dropped = Cohort(**{**vars(downstream), "data": data})
    nan = dict(downstream.data)
    nan["expr"] = nan["expr"].assign(**{c: np.nan for c in gone[:2]})
    nan["clinical"] = nan["clinical"].assign(num_1=np.nan)
    with_nan = Cohort(**{**vars(downstream), "data": nan})
    with pytest.warns(CompatibilityWarning, match="2 of the model's features are missing"):
        filled = model.embed(dropped)
    assert filled.attrs["graphmed"]["compatibility"]["missing_features"] == {
        "clinical": ["num_1"],
        "expr": gone[:2],
    }
    # A dropped column reads exactly as a column of missing cells (training fill), and
    # changes the output relative to the intact cohort.
    np.testing.assert_allclose(_emb(filled), _emb(model.embed(with_nan)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_emb(filled), _emb(model.embed(downstream)))


def test_width_mismatch_is_a_clear_error_and_writes_nothing(model, downstream, tmp_path):
    wide = {p: np.zeros((5, 48), np.float32) for p in downstream.data["wsi"]}
    bad = Cohort(**{**vars(downstream), "data": {**downstream.data, "wsi": wide}})
    out = tmp_path / "e.parquet"
    with pytest.raises(graphmed.GraphMedError) as err:
        graphmed.export_embeddings(model, bad, out, progress=False)
    msg = str(err.value)
    assert "modality 'wsi'" in msg and "width 48" in msg and "trained on width 32" in msg
    assert list(tmp_path.iterdir()) == []


def test_extra_modality_is_ignored_with_a_warning(model, downstream):
    notes = pd.DataFrame(
        np.random.default_rng(0).normal(size=(60, 40)),
        index=downstream.patients.index,
        columns=[f"w{j}" for j in range(40)],
    )
    extra = Cohort(
        **{
            **vars(downstream),
            "modalities": {
                **downstream.modalities,
                "notes": graphmed.ModalitySpec("notes", "vector"),
            },
            "data": {**downstream.data, "notes": notes},
        }
    )
    with pytest.warns(CompatibilityWarning, match=r"\['notes'\] are unknown to the model"):
        frame = model.embed(extra)
    assert not any("notes" in c for c in frame.columns)
    np.testing.assert_allclose(_emb(frame), _emb(model.embed(downstream)), rtol=1e-6)


def test_failure_midway_leaves_no_file_and_no_temp(model, downstream, tmp_path, monkeypatch):
    calls = []
    real = export_module.pq.ParquetWriter.write_table

    def fail_after_first(self, table, *args, **kwargs):
        calls.append(len(table))
        if len(calls) > 1:
            raise KeyboardInterrupt  # as from Ctrl-C, between two chunks
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(export_module.pq.ParquetWriter, "write_table", fail_after_first)
    out = tmp_path / "emb.parquet"
    with pytest.raises(KeyboardInterrupt):
        graphmed.export_embeddings(model, downstream, out, chunk_size=20, progress=False)
    assert calls == [20, 20]
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary file
    # An existing export is kept intact until a new one is complete.
    out.write_bytes(b"previous export")
    with pytest.raises(KeyboardInterrupt):
        graphmed.export_embeddings(model, downstream, out, chunk_size=20, progress=False)
    assert out.read_bytes() == b"previous export" and list(tmp_path.iterdir()) == [out]


_KILLED_EXPORT = """
import sys, time, pathlib, graphmed
from graphmed import export
real = export.pq.ParquetWriter.write_table
def slow(self, table, *a, **k):
    real(self, table, *a, **k)
    pathlib.Path(sys.argv[3]).touch()  # one chunk is written: kill me now
    time.sleep(60)
export.pq.ParquetWriter.write_table = slow
cohort = graphmed.make_synthetic_cohort(60, bag_size=(4, 12), seed=11)
graphmed.export_embeddings(sys.argv[1], cohort, sys.argv[2], chunk_size=20, progress=False)
"""


@pytest.mark.slow
def test_sigkill_midway_leaves_nothing_under_the_final_name(model_dir, tmp_path):
    out, flag = tmp_path / "out" / "emb.parquet", tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(model_dir), str(out), str(flag)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), "the export never wrote its first chunk"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    # A kill -9 cannot run clean-up: the partial file stays under a hidden temporary name.
    left = list(out.parent.iterdir())
    assert [p.name.startswith(".emb.parquet.") and p.suffix == ".tmp" for p in left] == [True]
    # The next export of the same file removes it (its writer's pid is gone) and succeeds.
    cohort = graphmed.make_synthetic_cohort(60, bag_size=(4, 12), seed=11)
    graphmed.export_embeddings(str(model_dir), cohort, out, chunk_size=20, progress=False)
    assert [p.name for p in out.parent.iterdir()] == ["emb.parquet"]


def test_model_saved_with_cuda_tensors_loads_on_cpu(model, downstream, tmp_path):
    """Re-save the weights with every storage tagged ``cuda:0``, byte for byte what
    ``torch.save`` writes for a model on a GPU, then load on this machine."""
    import torch.serialization as ser

    path = model.save(tmp_path / "model")
    state = torch.load(path / "weights.pt", weights_only=True)
    as_cuda = (-1, lambda storage: "cuda:0", lambda storage, location: None)
    ser._package_registry.append(as_cuda)
    ser._package_registry.sort(key=lambda entry: entry[0])
    try:
        torch.save(state, path / "weights.pt")
    finally:
        ser._package_registry.remove(as_cuda)
    if not torch.cuda.is_available():
        # The file really asks for a GPU: a plain load fails here ...
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path / "weights.pt", weights_only=True)
        with pytest.raises(graphmed.GraphMedError, match="CUDA is not available"):
            graphmed.load_model(path, device="cuda")
    # ... and load_model maps it onto the CPU.
    loaded = graphmed.load_model(path)
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    np.testing.assert_allclose(
        loaded.predict(downstream).risk, model.predict(downstream).risk, rtol=1e-5, atol=1e-6
    )


def test_classifier_exports_class_probabilities(tmp_path):
    train = graphmed.make_synthetic_cohort(60, n_classes=3, bag_size=(4, 8), seed=1)
    est = graphmed.GraphMedClassifier(
        label="label", hidden=8, layers=1, heads=2, epochs=1, overrides=("train.ensemble=1",)
    )
    est.fit(train)
    frame = graphmed.embed_frame(est, train)
    proba = frame[[f"proba_label_{c}" for c in est.classes_]].to_numpy()
    np.testing.assert_allclose(proba, est.predict_proba(train), rtol=1e-5, atol=1e-6)
    assert "risk" not in frame.columns
    np.testing.assert_array_equal(frame["label_label"], train.patients["label"])
    emb = est.embed(train, per_modality=True)
    assert emb.index.name == "patient_id" and emb.shape == (60, 8 * 4)


def test_bad_arguments(model, downstream, tmp_path):
    with pytest.raises(graphmed.GraphMedError, match="is a folder"):
        graphmed.export_embeddings(model, downstream, tmp_path, progress=False)
    with pytest.raises(graphmed.GraphMedError, match="chunk_size must be a positive"):
        graphmed.embed_frame(model, downstream, chunk_size=0)
    with pytest.raises(graphmed.GraphMedError, match="batch_size must be a positive"):
        graphmed.embed_frame(model, downstream, batch_size=0)
    with pytest.raises(graphmed.GraphMedError, match="does not exist"):
        graphmed.embed_frame(tmp_path / "nowhere", downstream)
    with pytest.raises(graphmed.GraphMedError, match="expected a TrainedModel"):
        graphmed.embed_frame(object(), downstream)
    json.dumps(model.modality_specs())  # plain JSON, for the file's metadata
