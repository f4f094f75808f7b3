"""The MCAT / PORPOISE / SurvPath reader on a tiny layout written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphmed.data.mcat import read_mcat
from graphmed.errors import CohortError

# TCGA-A has two slides (instances concatenated in CSV order), TCGA-B one whose
# features are absent (bag missing), TCGA-C one slide with a dotted id and no omics.
ROWS = [
    # Unnamed: 0, case_id, slide_id, site, is_female, oncotree_code, age, survival_months,
    # censorship, train, TP53_mut, EGFR_cnv, ERBB2_rnaseq
    (0, "TCGA-A", "TCGA-A-01.svs", "AA", 1, "LUAD", 61, 12.5, 0, 1, 1, 0.5, 2.25),
    (1, "TCGA-A", "TCGA-A-02.svs", "AA", 1, "LUAD", 61, 12.5, 0, 1, 1, 0.5, 2.25),
    (2, "TCGA-B", "TCGA-B-01.svs", "BB", 0, "LUSC", 70, 30.0, 1, 1, 0, -0.5, 1.0),
    (3, "TCGA-C", "TCGA-C-01.5F2B.svs", "CC", 0, "LUAD", 55, 3.75, 0, 0, None, None, None),
]
COLUMNS = [
    "Unnamed: 0", "case_id", "slide_id", "site", "is_female", "oncotree_code", "age",
    "survival_months", "censorship", "train", "TP53_mut", "EGFR_cnv", "ERBB2_rnaseq",
]  # fmt: skip
FEATURES = {"TCGA-A-01": 2, "TCGA-A-02": 3, "TCGA-C-01.5F2B": 1}  # slide stem -> instances


def _layout(root: Path, rows=ROWS) -> tuple[Path, Path]:
    csv = root / "tcga_luad_all_clean.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
    features = root / "features"
    features.mkdir()
    for i, (stem, n) in enumerate(FEATURES.items()):
        torch.save(torch.full((n, 4), float(i)), features / f"{stem}.pt")
    return csv, features


def test_read_mcat_layout(tmp_path):
    csv, features = _layout(tmp_path)
    with pytest.warns(
        UserWarning, match=r"1 slide\(s\) listed in the CSV have no features .*TCGA-B-01\.pt"
    ):
        c = read_mcat(csv, features)
    assert c.name == "tcga_luad_all_clean" and c.patient_ids == ["TCGA-A", "TCGA-B", "TCGA-C"]
    assert c.time.tolist() == [12.5, 30.0, 3.75]
    assert c.event.tolist() == [1, 0, 1]  # event = 1 - censorship
    assert c.labels == ["oncotree_code"] and c.patients["oncotree_code"].tolist() == [
        "LUAD",
        "LUSC",
        "LUAD",
    ]
    assert {m: s.kind for m, s in c.modalities.items()} == {"omics": "vector", "wsi": "bag"}
    assert list(c.data["omics"].columns) == ["TP53_mut", "EGFR_cnv", "ERBB2_rnaseq"]
    assert c.data["omics"].loc["TCGA-B"].tolist() == [0, -0.5, 1.0]
    assert c.relations == [("wsi", "expresses", "omics")]
    bag = c.data["wsi"]["TCGA-A"]
    assert bag.dtype == np.float32 and bag[:, 0].tolist() == [0, 0, 1, 1, 1]  # slide order
    assert c.data["wsi"]["TCGA-C"].tolist() == [[2.0] * 4]
    mask = c.present_mask()
    assert mask["wsi"].tolist() == [True, False, True]
    assert mask["omics"].tolist() == [True, True, False]


def test_explicit_columns_and_clinical_modality(tmp_path):
    csv, features = _layout(tmp_path)
    with pytest.warns(UserWarning):
        c = read_mcat(
            csv,
            features,
            omics_columns=["EGFR_cnv"],
            clinical_columns=["age", "site"],
            label_columns=[],
            name="luad",
        )
    assert c.name == "luad" and c.labels == [] and list(c.patients.columns) == ["time", "event"]
    assert list(c.data["omics"].columns) == ["EGFR_cnv"]
    assert c.modalities["clinical"].kind == "tabular"
    assert c.data["clinical"].loc["TCGA-B"].tolist() == [70, "BB"]
    assert c.relations == [("wsi", "expresses", "omics"), ("clinical", "informs", "omics")]


def test_clam_pt_files_subfolder_and_pathology_only(tmp_path):
    csv, features = _layout(tmp_path)
    (features / "pt_files").mkdir()
    for p in features.glob("*.pt"):
        p.rename(features / "pt_files" / p.name)
    with pytest.warns(UserWarning):
        c = read_mcat(csv, features, omics_columns=[])
    assert list(c.modalities) == ["wsi"] and c.relations == []
    assert c.data["wsi"]["TCGA-A"].shape == (5, 4)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.drop(columns="censorship"),
            r"tcga_luad_all_clean\.csv: missing required column 'censorship'",
        ),
        (
            lambda f: f.assign(survival_months=[12.5, 13.0, 30.0, 3.75]),
            r"patient 'TCGA-A' has rows that disagree on 'survival_months' \(\[12\.5, 13\.0\]\)",
        ),
        (
            lambda f: f.assign(censorship=[0, 0, 2, 0]),
            r"column 'censorship' must be 0 \(event observed\) or 1 \(censored\), got 2 for "
            r"patient 'TCGA-B'",
        ),
        (
            lambda f: f.assign(survival_months=[12.5, 12.5, -1.0, 3.75]),
            r"column 'survival_months' is negative for patient 'TCGA-B'",
        ),
        (
            lambda f: f.assign(censorship=1),
            r"the survival endpoint has no events",
        ),
        (
            lambda f: f.drop(columns=["TP53_mut", "EGFR_cnv", "ERBB2_rnaseq"]),
            r"found no numeric omics column .* pass omics_columns=",
        ),
    ],
    ids=[
        "missing column",
        "disagreeing survival",
        "bad censorship",
        "negative time",
        "no events",
        "no omics",
    ],
)
@pytest.mark.filterwarnings("ignore:.*have no features")
def test_malformed_mcat_csv(tmp_path, change, message):
    csv, features = _layout(tmp_path)
    change(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(CohortError, match=message):
        read_mcat(csv, features)


def test_mcat_argument_errors(tmp_path):
    csv, features = _layout(tmp_path)
    with pytest.raises(
        CohortError, match=r"omics column 'EGFR_cvn' is not in the CSV\. Did you mean 'EGFR_cnv'\?"
    ):
        read_mcat(csv, features, omics_columns=["EGFR_cvn"])
    with pytest.raises(CohortError, match=r"no such features folder"):
        read_mcat(csv, tmp_path / "nowhere")
    with pytest.raises(CohortError, match=r"found no feature file for any of the 4 slides"):
        read_mcat(csv, tmp_path)
    torch.save(torch.ones(2, 5), features / "TCGA-A-02.pt")
    with pytest.raises(CohortError, match=r"TCGA-A-02\.pt: width 5 differs"):
        read_mcat(csv, features)
