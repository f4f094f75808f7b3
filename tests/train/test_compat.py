"""check_compatibility: a new cohort against a model's fitted preprocessing (no model needed)."""

import numpy as np
import pandas as pd
import pytest

from graphmed.data.cohort import Cohort
from graphmed.errors import GraphMedError
from graphmed.train.compat import (
    NO_MODALITY,
    CompatibilityWarning,
    check_compatibility,
    pattern_counts,
)

# Warnings a test does not assert on are expected here; pytest.warns still sees them.
pytestmark = pytest.mark.filterwarnings("ignore::graphmed.train.compat.CompatibilityWarning")
KINDS = {"clinical": "tabular", "expr": "vector", "wsi": "bag"}


def _cohort(frames, kinds=None, name="downstream"):
    mods = {m: frames[m] for m in ("clinical", "expr", "wsi", "notes") if m in frames}
    return Cohort.from_frames(
        frames["patients"], mods, kinds={**KINDS, "notes": "vector", **(kinds or {})}, name=name
    )


def test_training_patients_are_clean(cohort, preprocessor, train_ids):
    train = cohort.subset(train_ids)
    checked, report = check_compatibility(train, preprocessor)
    assert checked is train and report.clean and report.lines() == []
    assert sum(report.patterns.values()) == len(train_ids)
    assert report.patterns["clinical"] == 1  # p07 has clinical only (conftest)


def test_missing_features_are_reported_and_warned(make_frames, preprocessor):
    frames = make_frames()
    frames["expr"] = frames["expr"].drop(columns=["g03", "g11"])
    frames["clinical"] = frames["clinical"].drop(columns=["marker"])
    with pytest.warns(CompatibilityWarning, match="2 of the model's features are missing"):
        _, report = check_compatibility(_cohort(frames), preprocessor)
    assert report.missing_features == {"clinical": ["marker"], "expr": ["g03", "g11"]}
    assert not report.clean


def test_too_many_missing_features_is_an_error_unless_allowed(make_frames, preprocessor):
    frames = make_frames()
    frames["expr"] = frames["expr"][["patient_id", "g00", "g01", "g02"]]
    with pytest.raises(GraphMedError, match=r"'expr' \(vector\) has 3 of the 20 features") as err:
        check_compatibility(_cohort(frames), preprocessor)
    assert "max_missing_features=0.5" in str(err.value) and "'g03'" in str(err.value)
    with pytest.warns(CompatibilityWarning, match="17 of the model's features"):
        _, report = check_compatibility(_cohort(frames), preprocessor, max_missing_features=1.0)
    assert len(report.missing_features["expr"]) == 17


def test_table_sharing_no_feature_is_an_error_even_when_allowed(make_frames, preprocessor):
    frames = make_frames()
    frames["expr"].columns = ["patient_id"] + [f"gene{j}" for j in range(20)]
    with pytest.raises(GraphMedError, match="has 0 of the 20 features.*no name in common.*'gene0'"):
        check_compatibility(_cohort(frames), preprocessor, max_missing_features=1.0)


def test_bag_width_mismatch_names_modality_widths_and_fix(make_frames, preprocessor):
    frames = make_frames()
    frames["wsi"] = {p: np.zeros((3, 9), np.float32) for p in frames["wsi"]}
    with pytest.raises(GraphMedError) as err:
        check_compatibility(_cohort(frames), preprocessor)
    msg = str(err.value)
    assert "modality 'wsi'" in msg and "width 9" in msg and "trained on width 6" in msg
    assert "encoder used for the training cohort" in msg  # and says how to fix it


def test_kind_mismatch_is_an_error(make_frames, preprocessor):
    with pytest.raises(GraphMedError, match="'expr' is tabular .* as vector.*kind: vector"):
        check_compatibility(_cohort(make_frames(), kinds={"expr": "tabular"}), preprocessor)
    frames = make_frames()
    frames["clinical"] = {p: np.ones((2, 4), np.float32) for p in frames["clinical"].patient_id}
    with pytest.raises(GraphMedError, match="'clinical' is bag .* as tabular"):
        check_compatibility(_cohort(frames, kinds={"clinical": "bag"}), preprocessor)


def test_extra_modality_is_dropped_with_a_warning(make_frames, preprocessor, cohort):
    frames = make_frames()
    ids = frames["patients"]["patient_id"]
    notes = pd.DataFrame(np.ones((len(ids), 40)), columns=[f"n{j}" for j in range(40)])
    frames["notes"] = notes.assign(patient_id=ids.to_numpy())
    with pytest.warns(CompatibilityWarning, match=r"\['notes'\] are unknown to the model"):
        checked, report = check_compatibility(_cohort(frames), preprocessor)
    assert report.extra_modalities == ["notes"]
    assert checked.modality_names == cohort.modality_names and "notes" not in checked.data


def test_missing_modality_and_unseen_patterns(make_frames, preprocessor, cohort):
    frames = make_frames()
    del frames["wsi"]
    training = pattern_counts(cohort.present_mask())
    with pytest.warns(CompatibilityWarning, match=r"\['wsi'\] are not in cohort"):
        _, report = check_compatibility(_cohort(frames), preprocessor, training_patterns=training)
    assert report.missing_modalities == ["wsi"]
    # Nobody has wsi now, so every pattern lacks it; "clinical+expr" was also seen in training.
    assert all("wsi" not in p for p in report.patterns)
    assert report.unseen_patterns == {p: n for p, n in report.patterns.items() if p not in training}
    assert NO_MODALITY in report.unseen_patterns  # p08 had only wsi: now it has nothing
    assert report.no_modality == 1


def test_no_shared_modality_is_an_error(make_frames, preprocessor):
    frames = make_frames()
    ids = frames["patients"]["patient_id"]
    frames = {"patients": frames["patients"], "notes": pd.DataFrame({"patient_id": ids, "x": 1.0})}
    with pytest.raises(GraphMedError, match="shares no modality with the model"):
        check_compatibility(_cohort(frames, kinds={"notes": "tabular"}), preprocessor)


def test_unknown_categories_are_reported(cohort, preprocessor):
    # p17 and p20 (not training patients) have grade "mid", which training never saw.
    _, report = check_compatibility(cohort, preprocessor, warn=False)
    assert report.unknown_categories == {"clinical": {"grade": ["mid"]}}


def test_values_far_off_the_training_scale_are_reported_and_warned(make_frames, preprocessor):
    frames = make_frames()
    frames["expr"][["g05", "g06"]] *= 100  # another unit: 100x the training scale
    frames["wsi"] = {p: a * 100 for p, a in frames["wsi"].items()}
    with pytest.warns(
        CompatibilityWarning,
        match=r"modality 'expr': 2 features hold values more than 100 training SDs from the "
        r"training mean \(e\.g\. 'g0[56]', .* SDs\); is the cohort on another scale",
    ):
        _, report = check_compatibility(_cohort(frames), preprocessor)
    assert set(report.drift["expr"]) == {"g05", "g06"} and min(report.drift["expr"].values()) > 100
    assert len(report.drift["wsi"]) == 6  # every bag feature
    assert "clinical" not in report.drift and not report.clean


def test_values_on_the_training_scale_are_not_drift(make_frames, preprocessor):
    frames = make_frames()
    _, report = check_compatibility(_cohort(frames), preprocessor)
    assert report.drift == {}
