"""The MCAT / PORPOISE / SurvPath readers on tiny layouts written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphmed.data.mcat import read_mcat, read_mcat_omics
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


# TCGA-like multi-omics layout for read_mcat_omics: 12 patients, TCGA-P00 with two
# slides (identical patient-level values), 3 rnaseq, 2 cnv and 2 mut genes.
OMICS_GENES = {"rnaseq": ["TP53", "EGFR", "KRAS"], "cnv": ["MYC", "ERBB2"], "mut": ["TP53", "PTEN"]}


def omics_frame(n: int = 12) -> pd.DataFrame:
    """One row per slide, in the MCAT column order; patient i has censorship i % 3 == 0."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {
            "Unnamed: 0": i,
            "case_id": f"TCGA-P{i:02d}",
            "slide_id": f"TCGA-P{i:02d}-01Z.svs",
            "site": f"S{i % 2}",
            "is_female": i % 2,
            "oncotree_code": "BLCA",
            "age": 50 + i,
            "stage": ["Stage II", "Stage III"][i % 2],
            "survival_months": 2.5 * i,
            "censorship": int(i % 3 == 0),
            "train": 1,
        }
        for suffix, genes in OMICS_GENES.items():
            for g in genes:
                value = rng.integers(0, 2) if suffix == "mut" else round(rng.normal(), 3)
                row[f"{g}_{suffix}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    second = frame.iloc[[0]].assign(**{"Unnamed: 0": n, "slide_id": "TCGA-P00-02Z.svs"})
    return pd.concat([frame.iloc[:1], second, frame.iloc[1:]], ignore_index=True)


def write_omics_csv(folder: Path, frame: pd.DataFrame | None = None) -> Path:
    csv = folder / "tcga_blca_all_clean.csv"
    (omics_frame() if frame is None else frame).to_csv(csv, index=False)
    return csv


def _rewrite(csv: Path, change) -> Path:
    change(pd.read_csv(csv)).to_csv(csv, index=False)
    return csv


def test_read_mcat_omics_splits_the_genes_by_suffix(tmp_path):
    c = read_mcat_omics(write_omics_csv(tmp_path))
    assert c.name == "tcga_blca" and c.n_patients == 12  # TCGA-P00's two slides: one patient
    assert c.patient_ids == [f"TCGA-P{i:02d}" for i in range(12)]
    assert c.time.tolist() == [2.5 * i for i in range(12)]
    assert c.event.tolist() == [int(i % 3 != 0) for i in range(12)]  # 1 - censorship
    assert {m: s.kind for m, s in c.modalities.items()} == {
        "clinical": "tabular",
        "rnaseq": "vector",
        "cnv": "vector",
        "mut": "vector",
    }
    assert [c.width(m) for m in c.modality_names] == [3, 3, 2, 2]
    # Unnamed: 0, site, oncotree_code and train are not features.
    assert list(c.data["clinical"].columns) == ["is_female", "age", "stage"]
    assert c.modalities["clinical"].options == {"categorical": ["stage"]}
    assert list(c.data["cnv"].columns) == ["MYC_cnv", "ERBB2_cnv"]
    assert all(c.data[m].dtypes.eq(np.float64).all() for m in ("rnaseq", "cnv", "mut"))
    source = omics_frame().set_index("case_id")
    assert (
        c.data["rnaseq"].loc["TCGA-P05"].tolist()
        == source.loc["TCGA-P05", ["TP53_rnaseq", "EGFR_rnaseq", "KRAS_rnaseq"]].tolist()
    )
    assert c.relations == [
        ("clinical", "informs", "rnaseq"),
        ("clinical", "informs", "cnv"),
        ("clinical", "informs", "mut"),
        ("cnv", "regulates", "rnaseq"),
        ("mut", "affects", "rnaseq"),
    ]
    assert c.labels == [] and list(c.patients.columns) == ["time", "event"]


def test_read_mcat_omics_absent_suffix_gives_no_modality(tmp_path):
    frame = omics_frame().drop(columns=["MYC_cnv", "ERBB2_cnv"])
    c = read_mcat_omics(write_omics_csv(tmp_path, frame))
    assert c.modality_names == ["clinical", "rnaseq", "mut"]
    assert c.relations == [
        ("clinical", "informs", "rnaseq"),
        ("clinical", "informs", "mut"),
        ("mut", "affects", "rnaseq"),
    ]


def test_read_mcat_omics_options(tmp_path):
    csv = write_omics_csv(tmp_path)
    c = read_mcat_omics(
        csv, groups=["mut"], clinical_columns=["age", "site"], relations=[], name="blca"
    )
    assert c.name == "blca" and c.modality_names == ["clinical", "mut"] and c.relations == []
    assert c.modalities["clinical"].options == {"categorical": ["site"]}
    bare = read_mcat_omics(csv, drop=["*"])  # every optional column left out
    assert bare.modality_names == ["rnaseq", "cnv", "mut"]
    assert bare.relations == [("cnv", "regulates", "rnaseq"), ("mut", "affects", "rnaseq")]
    with pytest.raises(
        CohortError, match=r"clinical column 'aeg' is not in the CSV\. Did you mean 'age'"
    ):
        read_mcat_omics(csv, clinical_columns=["aeg"])
    with pytest.raises(CohortError, match=r"unknown modality 'mutt'.*Did you mean 'mut'"):
        read_mcat_omics(csv, relations=[("cnv", "regulates", "mutt")])


def test_read_mcat_omics_keeps_a_patients_first_row(tmp_path):
    frame = omics_frame()
    frame.loc[1, ["age", "TP53_rnaseq"]] = [99, 42.0]  # TCGA-P00's second slide
    with pytest.warns(
        UserWarning, match=r"1 patient\(s\) have slides whose rows disagree .*'TCGA-P00' on 'age'"
    ):
        c = read_mcat_omics(write_omics_csv(tmp_path, frame))
    assert c.data["clinical"].loc["TCGA-P00", "age"] == 50
    assert c.data["rnaseq"].loc["TCGA-P00", "TP53_rnaseq"] == frame.loc[0, "TP53_rnaseq"]


def test_read_mcat_omics_all_missing_group_row_is_a_missing_modality(tmp_path):
    frame = omics_frame()
    frame.loc[frame["case_id"] == "TCGA-P03", ["TP53_mut", "PTEN_mut"]] = np.nan
    c = read_mcat_omics(write_omics_csv(tmp_path, frame))
    mask = c.present_mask()
    assert not mask.loc["TCGA-P03", "mut"] and mask.drop(index="TCGA-P03").all().all()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda f: f.drop(columns="survival_months"),
            r"tcga_blca_all_clean\.csv: missing required column 'survival_months'; an MCAT CSV "
            r"has columns \['case_id', 'slide_id', 'survival_months', 'censorship'\]",
        ),
        (
            lambda f: f.drop(columns=[c for c in f if c.endswith(("_rnaseq", "_cnv", "_mut"))]),
            r"found no gene column ending in _rnaseq, _cnv, _mut; .* pass groups=",
        ),
        (
            lambda f: f.assign(survival_months=f["survival_months"].mask(f.index == 3, -1.0)),
            r"column 'survival_months' is negative for patient 'TCGA-P02' \(got -1\.0\); "
            r"expected a finite follow-up time >= 0",
        ),
        (
            lambda f: f.assign(survival_months=f["survival_months"].mask(f.index == 3)),
            r"column 'survival_months' is empty \(NaN\) for patient 'TCGA-P02'",
        ),
        (
            lambda f: f.assign(survival_months=f["survival_months"].mask(f.index == 1, 7.0)),
            r"patient 'TCGA-P00' has rows that disagree on 'survival_months' \(\[0\.0, 7\.0\]\)"
            r".* Fix the rows",
        ),
        (
            lambda f: f.assign(censorship=f["censorship"].mask(f.index == 1, 0)),
            r"patient 'TCGA-P00' has rows that disagree on 'censorship'",
        ),
        (
            lambda f: f.assign(censorship=f["censorship"].mask(f.index == 3, 2)),
            r"column 'censorship' must be 0 \(event observed\) or 1 \(censored\), got 2",
        ),
        (
            lambda f: f.assign(MYC_cnv=f["MYC_cnv"].astype(str).mask(f.index == 3, "amp")),
            r"tcga_blca_all_clean\.csv: column 'MYC_cnv' is not numeric",
        ),
    ],
    ids=[
        "missing column",
        "no gene columns",
        "negative time",
        "NaN time",
        "disagreeing time",
        "disagreeing censorship",
        "bad censorship",
        "non-numeric gene",
    ],
)
def test_malformed_omics_csv(tmp_path, change, message):
    csv = _rewrite(write_omics_csv(tmp_path), change)
    with pytest.raises(CohortError, match=message):
        read_mcat_omics(csv)


def test_omics_csv_file_errors(tmp_path):
    with pytest.raises(CohortError, match=r"nope\.csv: does not exist; expected an MCAT CSV file"):
        read_mcat_omics(tmp_path / "nope.csv")
    with pytest.raises(CohortError, match=r"is a folder; expected an MCAT CSV file"):
        read_mcat_omics(tmp_path)
    csv = tmp_path / "tcga_blca_all_clean.csv"
    csv.write_text("case_id,slide_id,survival_months,censorship,A_rnaseq\n,s1,1.0,0,0.5\n")
    with pytest.raises(CohortError, match=r"empty case_id at line 2"):
        read_mcat_omics(csv)
