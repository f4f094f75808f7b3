"""The in-memory Cohort: from_frames, subset, present_mask, drop_modality_for, equals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from graphmed.data.cohort import Cohort, ModalitySpec
from graphmed.errors import CohortError


def _frames():
    patients = pd.DataFrame(
        {"pid": [1, 2, 3, 4], "os": [5, 3.5, 1, 8], "dead": [True, False, True, False]}
    ).rename(columns={"pid": "patient_id"})
    narrow = pd.DataFrame(
        {"patient_id": [1, 2, 3], "a": [1.0, 2.0, np.nan], "b": [0.5, 0.1, np.nan]}
    )
    wide = pd.DataFrame(
        np.arange(4 * 40, dtype=float).reshape(4, 40), columns=[f"g{i}" for i in range(40)]
    )
    wide.index = pd.Index(["1", "2", "3", "4"], name="patient_id")
    text = pd.DataFrame({"patient_id": ["1", "4"], "grade": ["hi", "lo"]})
    bags = {
        1: torch.ones(2, 3, dtype=torch.float64),
        "2": np.zeros((0, 3)),
        "4": np.ones((5, 3), int),
    }
    return patients, {"narrow": narrow, "wide": wide, "text": text, "wsi": bags}


@pytest.fixture
def cohort() -> Cohort:
    patients, mods = _frames()
    return Cohort.from_frames(
        patients, mods, time="os", event="dead", relations=[["wsi", "shows", "wide"]], labels=()
    )


def test_from_frames_normalises_to_the_conventions(cohort):
    assert cohort.patient_ids == ["1", "2", "3", "4"] and cohort.patients.index.name == "patient_id"
    assert list(cohort.patients.columns) == ["time", "event"]
    assert cohort.patients["time"].dtype == np.float64 and cohort.time.tolist() == [5, 3.5, 1, 8]
    assert cohort.patients["event"].dtype == np.int64 and cohort.event.tolist() == [1, 0, 1, 0]
    kinds = {m: s.kind for m, s in cohort.modalities.items()}
    assert kinds == {"narrow": "tabular", "wide": "vector", "text": "tabular", "wsi": "bag"}
    assert cohort.modalities["wsi"] == ModalitySpec("wsi", "bag", "wsi")
    assert cohort.modalities["narrow"].path == "narrow.csv"
    assert set(cohort.data["wsi"]) == {"1", "2", "4"}
    assert all(a.dtype == np.float32 for a in cohort.data["wsi"].values())
    assert cohort.relations == [("wsi", "shows", "wide")]
    assert cohort.width("wide") == 40 and cohort.width("wsi") == 3


def test_from_frames_kinds_and_options_override():
    patients, mods = _frames()
    c = Cohort.from_frames(
        patients,
        {"narrow": mods["narrow"]},
        kinds={"narrow": "vector"},
        options={"narrow": {"chunk_size": 1}},
        time="os",
        event="dead",
        name="x",
    )
    assert c.name == "x" and c.modalities["narrow"] == ModalitySpec(
        "narrow", "vector", options={"chunk_size": 1}
    )


def test_from_frames_errors():
    patients, mods = _frames()
    with pytest.raises(
        CohortError, match=r"patients: missing required column 'time'.*Pass time=/event="
    ):
        Cohort.from_frames(patients, mods)
    with pytest.raises(CohortError, match=r"modality 'text': missing required column 'patient_id'"):
        Cohort.from_frames(
            patients, {"text": mods["text"].drop(columns="patient_id")}, time="os", event="dead"
        )
    with pytest.raises(
        CohortError, match=r"modality 'x': expected a DataFrame or a dict of arrays, got list"
    ):
        Cohort.from_frames(patients, {"x": [1, 2]}, time="os", event="dead")
    with pytest.raises(CohortError, match=r"patients: patient id '1' appears 2 times"):
        Cohort.from_frames(pd.concat([patients, patients]), {}, time="os", event="dead")
    with pytest.raises(CohortError, match=r"column 'dead' must be 0 \(censored\) or 1"):
        Cohort.from_frames(patients.assign(dead=[0, 1, 2, 0]), {}, time="os", event="dead")


def test_present_mask(cohort):
    mask = cohort.present_mask()
    assert list(mask.columns) == ["narrow", "wide", "text", "wsi"]
    assert mask["narrow"].tolist() == [True, True, False, False]  # '3' has an all-NaN row
    assert mask["text"].tolist() == [True, False, False, True]
    assert mask["wsi"].tolist() == [True, False, False, True]  # '2' has an empty bag
    assert mask["wide"].all()


def test_subset_keeps_order_and_restricts_data(cohort):
    sub = cohort.subset(["4", 1])
    assert sub.patient_ids == ["4", "1"]
    assert sub.data["narrow"].index.tolist() == ["1"]
    assert sub.data["wide"].index.tolist() == ["4", "1"]
    assert sub.data["wide"].index.name == "patient_id"
    assert set(sub.data["wsi"]) == {"1", "4"}
    assert cohort.n_patients == 4 and set(cohort.data["wsi"]) == {"1", "2", "4"}  # untouched
    with pytest.raises(CohortError, match=r"subset: unknown patient ids \['9'\]"):
        cohort.subset(["1", "9"])


def test_drop_modality_for(cohort):
    dropped = cohort.drop_modality_for("wsi", ["1"]).drop_modality_for("wide", [2, "3"])
    assert dropped.present_mask()["wsi"].tolist() == [False, False, False, True]
    assert dropped.present_mask()["wide"].tolist() == [True, False, False, True]
    assert cohort.present_mask()["wsi"].tolist() == [True, False, False, True]  # untouched
    with pytest.raises(CohortError, match=r"unknown modality 'wso'.*Did you mean 'wsi'\?"):
        cohort.drop_modality_for("wso", ["1"])


def test_equals_compares_everything_but_the_storage_path(cohort):
    patients, mods = _frames()
    twin = Cohort.from_frames(
        patients, mods, time="os", event="dead", relations=[["wsi", "shows", "wide"]]
    )
    assert twin.equals(cohort) and cohort.equals(twin)
    moved = replace(
        twin,
        modalities={**twin.modalities, "narrow": ModalitySpec("narrow", "tabular", "n.parquet")},
    )
    assert moved.equals(cohort)
    changes = [
        replace(twin, name="other"),
        replace(twin, relations=[]),
        replace(twin, labels=["event"]),
        replace(twin, modalities={**twin.modalities, "wide": ModalitySpec("wide", "tabular")}),
        replace(
            twin,
            modalities={
                **twin.modalities,
                "wsi": ModalitySpec("wsi", "bag", options={"max_instances": 2}),
            },
        ),
        replace(twin, patients=twin.patients.assign(time=twin.patients["time"] + 1e-12)),
        replace(twin, data={**twin.data, "narrow": twin.data["narrow"].astype(np.float32)}),
        replace(
            twin, data={**twin.data, "wsi": {k: v for k, v in twin.data["wsi"].items() if k != "2"}}
        ),
        replace(
            twin,
            data={
                **twin.data,
                "wsi": {k: v.astype(np.float64) for k, v in twin.data["wsi"].items()},
            },
        ),
        replace(twin, data={**twin.data, "wsi": {k: v + 1 for k, v in twin.data["wsi"].items()}}),
        replace(twin, data={m: v for m, v in twin.data.items() if m != "text"}),
    ]
    for i, other in enumerate(changes):
        assert not cohort.equals(other), i


def test_summary(cohort):
    s = cohort.summary()
    assert s["patients"] == 4 and s["events"] == 2
    assert s["modalities"]["wsi"] == {"kind": "bag", "width": 3, "present": 2}
    assert s["relations"] == [["wsi", "shows", "wide"]]
