"""The cohort folder format: reading a hand-written folder, exact round trips, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from graphmed.data.cohort import Cohort, ModalitySpec
from graphmed.data.io import read_cohort, write_cohort
from graphmed.data.synthetic import make_synthetic_cohort
from graphmed.errors import CohortError, ConfigError

COHORT_YAML = """\
name: tiny
modalities:
  clinical: {kind: tabular, path: clinical.csv, options: {categorical: [grade]}}
  expression: {kind: vector, path: expression.csv}
  wsi: {kind: bag, path: wsi}
relations:
  - [clinical, informs, expression]
  - [wsi, expresses, expression]
endpoints: {time: months, event: status, labels: [subtype]}
"""

PATIENTS_CSV = """\
patient_id,months,status,subtype
001,12.5,1,luminal
002,30.0,0,basal
003,7.25,1,luminal
004,44.0,0,her2
005,0.0,True,basal
006,18.5,False,luminal
"""

CLINICAL_CSV = """\
patient_id,age,grade
001,61.5,high
002,47.0,low
003,55.0,
004,,
005,70.25,NA
"""  # 006 has no row and 004's row is all empty: both miss the modality

EXPRESSION_CSV = """\
patient_id,g1,g2,g3
001,0.1,-1.5,2.0
002,0.30000000000000004,0.0,1e-300
003,-2.5,3.75,1.0
006,1.0,NA,3.0
"""

BAG_SIZES = {"001": 3, "002": 2, "005": 1}  # 003, 004 and 006 have no bag
BAG_WIDTH = 4


def write_folder(root: Path) -> Path:
    """Write a valid hand-written cohort folder (tabular, vector and bag) at ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cohort.yaml").write_text(COHORT_YAML)
    (root / "patients.csv").write_text(PATIENTS_CSV)
    (root / "clinical.csv").write_text(CLINICAL_CSV)
    (root / "expression.csv").write_text(EXPRESSION_CSV)
    (root / "wsi").mkdir()
    rng = np.random.default_rng(0)
    for pid, n in BAG_SIZES.items():
        np.save(root / "wsi" / f"{pid}.npy", rng.normal(size=(n, BAG_WIDTH)))
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "tiny")


# ------------------------------------------------------------------ reading
def test_read_hand_written_folder(folder):
    c = read_cohort(folder)
    assert c.name == "tiny" and c.patient_ids == ["001", "002", "003", "004", "005", "006"]
    assert list(c.patients.columns) == ["time", "event", "subtype"]
    assert c.patients["time"].dtype == np.float64 and c.patients["event"].dtype == np.int64
    assert c.event.tolist() == [1, 0, 1, 0, 1, 0]  # True/False accepted as 1/0
    assert c.labels == ["subtype"]
    assert c.relations == [
        ("clinical", "informs", "expression"),
        ("wsi", "expresses", "expression"),
    ]
    assert [(s.kind, s.path) for s in c.modalities.values()] == [
        ("tabular", "clinical.csv"),
        ("vector", "expression.csv"),
        ("bag", "wsi"),
    ]
    assert c.modalities["clinical"].options == {"categorical": ["grade"]}
    assert c.data["expression"].loc["002", "g1"] == 0.30000000000000004
    assert c.data["expression"].loc["002", "g3"] == 1e-300
    # Without a recorded dtype, "NA" in a numeric column is missing, as in pandas.
    assert c.data["expression"]["g2"].dtype == np.float64
    assert np.isnan(c.data["expression"].loc["006", "g2"])
    grade = c.data["clinical"]["grade"]
    assert grade.dtype == object and grade.isna().tolist() == [False, False, True, True, True]
    assert c.data["wsi"]["001"].dtype == np.float32 and c.data["wsi"]["001"].shape == (3, 4)
    present = c.present_mask()
    assert present["clinical"].tolist() == [True, True, True, False, True, False]
    assert present["expression"].tolist() == [True, True, True, False, False, True]
    assert present["wsi"].tolist() == [True, True, False, False, True, False]


def test_bag_float64_files_are_read_as_float32_values(folder):
    raw = np.load(folder / "wsi" / "002.npy")
    np.testing.assert_array_equal(read_cohort(folder).data["wsi"]["002"], raw.astype(np.float32))


def test_pt_bags_and_default_paths(folder):
    (folder / "wsi" / "001.npy").unlink()
    torch.save(torch.arange(8, dtype=torch.float64).reshape(2, 4), folder / "wsi" / "001.pt")
    conf = yaml.safe_load((folder / "cohort.yaml").read_text())
    for entry in conf["modalities"].values():
        del entry["path"]  # defaults: <name>.csv (or .parquet) and the <name>/ folder
    pd.read_csv(folder / "expression.csv", dtype={"patient_id": str}).to_parquet(
        folder / "expression.parquet", index=False
    )
    (folder / "expression.csv").unlink()
    (folder / "cohort.yaml").write_text(yaml.safe_dump(conf))
    c = read_cohort(folder)
    assert c.data["wsi"]["001"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert c.modalities["expression"].path == "expression.parquet"
    assert c.data["expression"].index.tolist() == ["001", "002", "003", "006"]


def test_no_endpoints_means_time_and_event(folder):
    conf = yaml.safe_load((folder / "cohort.yaml").read_text())
    del conf["endpoints"]
    (folder / "cohort.yaml").write_text(yaml.safe_dump(conf))
    text = PATIENTS_CSV.replace("months,status", "time,event")
    (folder / "patients.csv").write_text(text)
    c = read_cohort(folder)
    assert c.labels == [] and c.time.tolist()[:2] == [12.5, 30.0]


# -------------------------------------------------------------- round trips
def _odd_cohort() -> Cohort:
    """Dtypes a CSV cannot carry on its own, values at float64's edges, "007"-style ids."""
    ids = ["007", "010", "NA", "x.y"]
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            # The largest time is the largest double under the 1e30 a time may reach.
            "time": [0.1 + 0.2, 1e-310, np.nextafter(1e30, 0), 0.0],
            "event": [1, 0, 1, 0],
            "grade": pd.Categorical(["b", "a", None, "b"], categories=["b", "a", "c"]),
            "stage": [3, 1, 2, 2],
        }
    )
    clinical = pd.DataFrame(
        {
            "patient_id": ids[:3],
            "cat": pd.Categorical(["NA", "lo", None], categories=["lo", "NA"], ordered=True),
            "num_cat": pd.Categorical([2, 10, 2]),
            "text": ["None", None, "012"],
            "count": np.array([1, 2, 3], dtype=np.int32),
            "flag": [True, False, True],
            "f32": np.array([0.1, 1 / 3, -2.5e-8], dtype=np.float32),
            "f64": [np.pi, -0.0, np.nan],
        }
    )
    rng = np.random.default_rng(1)
    genes = pd.DataFrame(rng.normal(size=(4, 40)) * 1e5, columns=[f"g{i}" for i in range(40)])
    genes.insert(0, "patient_id", ids)
    bags = {pid: rng.normal(size=(k, 3)).astype(np.float32) for pid, k in zip(ids, [2, 1, 5])}
    bags["x.y"] = np.zeros((0, 3), np.float32)
    return Cohort.from_frames(
        patients,
        {"clinical": clinical, "genes": genes, "wsi": bags},
        options={"clinical": {"categorical": ["cat", "num_cat"]}, "wsi": {"max_instances": 4}},
        relations=[("wsi", "expresses", "genes")],
        labels=["grade", "stage"],
        name="odd",
    )


COHORTS = {
    "odd": _odd_cohort,
    "synthetic": lambda: make_synthetic_cohort(
        40, missing={"expr": 0.3, "wsi": 0.2}, n_classes=3, bag_size=(2, 6)
    ),
    "conftest": None,  # the shared fixture cohort (object-dtype categorical, NaN cell)
}


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
@pytest.mark.parametrize("bag_format", ["npy", "pt"])
@pytest.mark.parametrize("which", list(COHORTS))
def test_round_trip_is_exact(tmp_path, make_cohort, which, table_format, bag_format):
    cohort = make_cohort() if which == "conftest" else COHORTS[which]()
    out = write_cohort(cohort, tmp_path / "c", table_format, bag_format)
    back = read_cohort(out)
    assert back.equals(cohort)
    suffix = ".csv" if table_format == "csv" else ".parquet"
    assert all(s.path.endswith(suffix) for s in back.modalities.values() if s.kind != "bag")
    bag = next(m for m, s in back.modalities.items() if s.kind == "bag")
    assert {p.suffix for p in (out / bag).iterdir()} == {f".{bag_format}"}


def test_round_trip_of_a_recipe_cohort(tmp_path):
    recipes = pytest.importorskip("graphmed.data.recipes")
    cohort = recipes.load_recipe("breast_cancer")
    assert read_cohort(write_cohort(cohort, tmp_path / "bc")).equals(cohort)


def test_equals_notices_what_a_broken_reader_would_lose(tmp_path):
    cohort = _odd_cohort()
    back = read_cohort(write_cohort(cohort, tmp_path / "c"))
    back.data["clinical"]["cat"] = back.data["clinical"]["cat"].astype(object)
    assert not back.equals(cohort)


def test_written_yaml_records_dtypes(tmp_path):
    out = write_cohort(_odd_cohort(), tmp_path / "c")
    conf = yaml.safe_load((out / "cohort.yaml").read_text())
    assert list(conf) == ["name", "modalities", "relations", "endpoints", "dtypes"]
    assert conf["endpoints"] == {"time": "time", "event": "event", "labels": ["grade", "stage"]}
    assert conf["modalities"]["wsi"] == {
        "kind": "bag",
        "path": "wsi",
        "options": {"max_instances": 4},
    }
    clinical = conf["dtypes"]["clinical"]
    assert clinical["cat"] == {"categories": ["lo", "NA"], "ordered": True}
    assert clinical["num_cat"] == {"categories": [2, 10], "ordered": False}
    assert clinical["count"] == "int32" and clinical["text"] == "object"
    assert "f64" not in clinical and "genes" not in conf["dtypes"]
    assert (out / "patients.csv").read_text().splitlines()[1].startswith("007,")
    # Parquet keeps most dtypes itself but turns integer categories into ints.
    parquet = write_cohort(_odd_cohort(), tmp_path / "p", "parquet")
    assert yaml.safe_load((parquet / "cohort.yaml").read_text())["dtypes"] == conf["dtypes"]


# ------------------------------------------------------------------ writing
def test_write_refuses_a_non_empty_folder(tmp_path):
    cohort = _odd_cohort()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(
        CohortError, match="is not empty and is not a cohort folder; pass overwrite"
    ):
        write_cohort(cohort, tmp_path / "notes")
    out = write_cohort(cohort, tmp_path / "c")
    with pytest.raises(CohortError, match="holds a cohort; pass overwrite=True"):
        write_cohort(cohort, out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CohortError, match="is a file"):
        write_cohort(cohort, tmp_path / "file")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_overwrite_removes_the_old_cohort_files(tmp_path):
    out = write_cohort(_odd_cohort(), tmp_path / "c", "csv", "npy")
    smaller = _odd_cohort().subset(["007", "010"])
    write_cohort(smaller, out, "parquet", "pt", overwrite=True)
    assert sorted(p.name for p in (out / "wsi").iterdir()) == ["007.pt", "010.pt"]
    assert not (out / "clinical.csv").exists() and (out / "clinical.parquet").exists()
    assert read_cohort(out).equals(smaller)


def test_paths_outside_the_folder_are_written_inside(tmp_path):
    cohort = _odd_cohort()
    cohort.modalities["genes"] = ModalitySpec("genes", "vector", "../elsewhere/genes.csv.gz")
    cohort.modalities["wsi"] = ModalitySpec("wsi", "bag", "/abs/wsi", {"max_instances": 4})
    out = write_cohort(cohort, tmp_path / "c", "parquet")
    back = read_cohort(out)
    assert (back.modalities["genes"].path, back.modalities["wsi"].path) == ("genes.parquet", "wsi")
    assert back.equals(cohort) and not (tmp_path / "elsewhere").exists()


def test_write_is_atomic(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        write_cohort(_odd_cohort(), tmp_path / "c")
    # No half-written array and no temporary file is left behind, and no cohort.yaml.
    assert list((tmp_path / "c" / "wsi").iterdir()) == []
    assert not (tmp_path / "c" / "cohort.yaml").exists()


def test_write_rejects_what_cannot_round_trip(tmp_path):
    cohort = _odd_cohort()
    with pytest.raises(ConfigError, match="table_format must be one of .*Did you mean 'parquet'"):
        write_cohort(cohort, tmp_path / "a", table_format="parquett")
    mixed = _odd_cohort()
    mixed.data["clinical"]["text"] = ["a", 3, None]
    with pytest.raises(CohortError, match=r"column 'text' holds 3 \(int\) among strings"):
        write_cohort(mixed, tmp_path / "b")
    odd_options = _odd_cohort()
    odd_options.modalities["wsi"] = ModalitySpec("wsi", "bag", options={"pool": object()})
    with pytest.raises(
        CohortError, match=r"modality 'wsi': options cannot be written to cohort\.yaml"
    ):
        write_cohort(odd_options, tmp_path / "b")
    clash = _odd_cohort()
    clash.modalities["genes"] = ModalitySpec("genes", "vector", "clinical.csv")
    with pytest.raises(CohortError, match=r"modality 'genes' would be written to 'clinical\.csv'"):
        write_cohort(clash, tmp_path / "b")
    pats = pd.DataFrame({"patient_id": ["a/b"], "time": [1.0], "event": [1]})
    bad_id = Cohort.from_frames(pats, {"wsi": {"a/b": np.ones((1, 2))}})
    with pytest.raises(CohortError, match="cannot be the file name of a bag array"):
        write_cohort(bad_id, tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
