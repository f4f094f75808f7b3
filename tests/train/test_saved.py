"""Model folders: a missing, damaged or edited file, or a newer graphmed, is refused."""

import json
import shutil

import pytest
import torch

import graphmed
from graphmed.errors import GraphMedError
from graphmed.train.config import load_experiment

FAST = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "train.ensemble=1",  # one model, whose parameters are tampered with
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cohort = graphmed.make_synthetic_cohort(40, bag_size=(2, 4), seed=0)
    config = load_experiment(None, [*FAST, "train.progress=false"])
    model, _ = graphmed.fit_final(cohort, config)
    return model.save(tmp_path_factory.mktemp("saved") / "model"), cohort


@pytest.fixture
def folder(saved, tmp_path):
    """A fresh copy of the saved model folder, safe to damage."""
    return shutil.copytree(saved[0], tmp_path / "model")


def _edit_json(folder, edit):
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_model_json_records_checksums_and_loads(folder, saved):
    meta = json.loads((folder / "model.json").read_text())
    assert set(meta["checksums"]) == {"weights", "model.json"}
    assert all(len(v) == 64 for v in meta["checksums"].values())
    graphmed.load_model(folder).predict(saved[1])
    # Loading and saving again gives a folder that loads too.
    graphmed.load_model(graphmed.load_model(folder).save(folder.parent / "again"))


def _tamper_weights(folder):
    state = torch.load(folder / "weights.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
    state[name].view(-1)[0] += 0.5
    torch.save(state, folder / "weights.pt")


def _tamper_statistics(meta):
    for tr in meta["fitted"]["preprocessor"]["transforms"].values():
        if tr.get("center"):
            tr["center"][0] += 1.0
            return
    raise AssertionError("no fitted centre to change")


def _truncate(folder):
    data = (folder / "weights.pt").read_bytes()
    (folder / "weights.pt").write_bytes(data[: len(data) // 2])


# (case, damage of the folder, expected message)
DAMAGE = [
    (
        "weights.pt missing",
        lambda f: (f / "weights.pt").unlink(),
        r"weights\.pt is missing from '.*model'; a graphmed model directory holds model\.json "
        r"and weights\.pt\. Copy the whole model folder again",
    ),
    (
        "model.json missing",
        lambda f: (f / "model.json").unlink(),
        r"model\.json is missing from '.*model'",
    ),
    (
        "model.json not JSON",
        lambda f: (f / "model.json").write_text("{not json"),
        r"cannot read '.*model\.json' \(Expecting property name",
    ),
    (
        "weights changed",
        _tamper_weights,
        r"'.*weights\.pt' does not match the checksum recorded in model\.json at save: the "
        r"weights were changed or damaged",
    ),
    (
        "weights truncated",
        _truncate,
        r"cannot read model weights '.*weights\.pt' \(.*\); copy the model folder again",
    ),
    (
        "preprocessing statistics changed",
        lambda f: _edit_json(f, _tamper_statistics),
        r"'.*model\.json' was changed after graphmed saved it .*preprocessing statistics",
    ),
    (
        "saved by a newer graphmed",
        lambda f: _edit_json(f, lambda m: m.update(graphmed_version="99.1.0")),
        r"'.*model\.json' was saved by graphmed 99\.1\.0, newer than this graphmed "
        rf"{graphmed.__version__}; .*Upgrade graphmed",
    ),
]


@pytest.mark.parametrize("damage, message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_model_folder_is_refused(folder, damage, message):
    damage(folder)
    with pytest.raises(GraphMedError, match=message):
        graphmed.load_model(folder)


def test_weights_with_a_pickled_callable_are_refused(folder, tmp_path, crafted_torch_file):
    marker = tmp_path / "marker.txt"
    crafted_torch_file(folder / "weights.pt", marker)
    with pytest.raises(GraphMedError, match=r"refused to read model weights .*could run code"):
        graphmed.load_model(folder)
    assert not marker.exists()


def test_models_saved_before_checksums_still_load(folder, saved):
    _edit_json(folder, lambda m: m.pop("checksums"))
    graphmed.load_model(folder).predict(saved[1])


def test_older_and_equal_versions_load(folder):
    _edit_json(folder, lambda m: m.update(graphmed_version="0.0.9", checksums=None))
    graphmed.load_model(folder)
    _edit_json(folder, lambda m: m.update(graphmed_version=graphmed.__version__ + ".0"))
    graphmed.load_model(folder)


def test_weights_with_nan_are_refused(saved, tmp_path):
    model = graphmed.load_model(saved[0])
    name = next(k for k, v in model.model.state_dict().items() if v.is_floating_point())
    model.model.state_dict()[name].view(-1)[0] = float("nan")
    folder = model.save(tmp_path / "broken")  # checksums of the broken weights: they match
    with pytest.raises(
        GraphMedError, match=rf"weights\.pt' holds 1 NaN or infinite values in '{name}'"
    ):
        graphmed.load_model(folder)


def test_a_non_finite_risk_is_refused_not_written(saved, tmp_path):
    model = graphmed.load_model(saved[0])
    head = next(p for n, p in model.model.named_parameters() if n.startswith("heads.survival"))
    with torch.no_grad():
        head.fill_(float("nan"))
    with pytest.raises(GraphMedError, match=r"non-finite risk for 40 of 40 patients \(e\.g\. \["):
        model.predict(saved[1])
    out = tmp_path / "emb.parquet"
    with pytest.raises(GraphMedError, match="non-finite risk"):
        graphmed.export_embeddings(model, saved[1], out)
    assert not out.exists()
