import functools

import numpy as np
import pytest
import yaml

from graphmed.data import recipes
from graphmed.data.recipes import list_recipes, load_recipe, materialize
from graphmed.errors import CohortError, ConfigError

SURVSET = {  # name -> (patients, clinical width, expression width, max_features)
    "nki70": (144, 5, 70, None),
    "gse1992": (124, 5, 15528, 2000),
    "gse4335": (115, 7, 12793, 2000),
    "gse3143": (158, 1, 8659, 2000),
}

# Tests only read the cohorts, so each recipe is loaded once.
_cached = functools.lru_cache(maxsize=None)(load_recipe)


def _write_recipe(tmp_path, **changes):
    recipe = {
        "name": "mini",
        "source": {"package": "sksurv", "loader": "load_breast_cancer"},
        "endpoint": {"time": "t.tdm", "event": "e.tdm"},
        "modalities": {
            "clinical": {"kind": "tabular", "columns": ["age", "er", "grade", "size"]},
            "expression": {"kind": "vector", "columns": {"glob": "X*"}},
        },
    }
    recipe.update(changes)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_list_recipes_names_sources_and_counts():
    rows = {r["name"]: r for r in list_recipes()}
    assert {"breast_cancer", *SURVSET} <= set(rows)
    assert rows["breast_cancer"]["source"] == "sksurv:load_breast_cancer"
    assert rows["breast_cancer"]["patients"] == 198 and rows["breast_cancer"]["available"]
    assert rows["nki70"]["source"] == "survset:nki70" and rows["nki70"]["patients"] == 144
    assert all(r["description"] for r in rows.values())


def test_breast_cancer_recipe():
    c = load_recipe("breast_cancer")
    assert c.n_patients == 198 and c.name == "breast_cancer"
    assert c.patient_ids[:2] == ["GSE7390_000", "GSE7390_001"]
    assert {m: s.kind for m, s in c.modalities.items()} == {
        "clinical": "tabular",
        "expression": "vector",
    }
    assert (c.width("clinical"), c.width("expression")) == (4, 76)
    assert c.present_mask().all().all()
    assert c.patients["event"].dtype == np.int64 and set(c.event) == {0, 1}
    assert int(c.event.sum()) == 51
    assert c.relations == [("clinical", "informs", "expression")]
    assert c.modalities["clinical"].options == {"categorical": ["er", "grade"]}
    grade = c.data["clinical"]["grade"]
    assert "unkown" not in grade.cat.categories and grade.isna().sum() == 2


@pytest.mark.parametrize("name", list(SURVSET))
def test_survset_recipes(name):
    pytest.importorskip("SurvSet")
    patients, clin, expr, cap = SURVSET[name]
    c = _cached(name)
    assert c.n_patients == patients
    assert (c.width("clinical"), c.width("expression")) == (clin, expr)
    assert c.present_mask().all().all()
    assert c.modalities["expression"].options.get("max_features") == cap
    assert c.data["expression"].notna().all().all()
    assert not any(col.startswith(("fac_", "num_")) for col in c.data["clinical"].columns)
    assert set(c.modalities["clinical"].options["categorical"]) <= set(c.data["clinical"].columns)
    assert c.event.sum() > 0


def test_nki70_columns_and_ids():
    pytest.importorskip("SurvSet")
    c = _cached("nki70")
    assert list(c.data["clinical"].columns) == ["Diam", "N", "ER", "Grade", "Age"]
    assert c.modalities["clinical"].options["categorical"] == ["Diam", "N", "ER", "Grade"]
    assert c.patient_ids[0] == "nki70_000" and "TSPYL5" in c.data["expression"].columns


def test_missing_markers_become_missing_cells():
    pytest.importorskip("SurvSet")
    clin = _cached("gse4335").data["clinical"]
    for col in ("er_status", "node_status", "grade"):
        assert not {"na", "x"} & {str(v) for v in clin[col].cat.categories}
    assert clin["grade"].isna().sum() == 2 and clin["node_status"].isna().sum() == 2
    assert clin["metastasis"].cat.categories.dtype == np.int64  # SurvSet's Int32, normalised


def test_unknown_recipe_suggests_a_name():
    with pytest.raises(CohortError, match=r"unknown dataset recipe 'nki7'.*Did you mean 'nki70'"):
        load_recipe("nki7")


def test_missing_survset_gives_install_hint(monkeypatch):
    monkeypatch.setattr(recipes, "_importable", lambda module: module != "SurvSet")
    with pytest.raises(CohortError, match=r"pip install graphmed\[survset\]"):
        load_recipe("nki70")
    rows = {r["name"]: r for r in list_recipes()}
    assert not rows["nki70"]["available"] and "graphmed[survset]" in rows["nki70"]["note"]
    assert rows["breast_cancer"]["available"] and rows["breast_cancer"]["note"] == ""


def test_recipe_from_a_yaml_path(tmp_path):
    c = load_recipe(_write_recipe(tmp_path, patient_id="bc-{i}", missing_values=["unkown"]))
    assert c.name == "mini" and c.patient_ids[0] == "bc-0" and c.width("expression") == 76


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (
            {"modalities": {"clinical": {"kind": "tabular", "columns": ["age", "er"]}}},
            CohortError,
            r"columns \[.*\] \.\.\. \(78\) go to no modality",
        ),
        (
            {"modalities": {"clinical": {"kind": "tabular", "columns": ["agee", "er"]}}},
            CohortError,
            r"columns \['agee'\] are not in the source table.*Did you mean 'age'",
        ),
        (
            {"modalities": {"g": {"kind": "vector", "columns": {"glob": "gene_*"}}}},
            CohortError,
            "matches no column",
        ),
        (
            {"modalities": {"g": {"kind": "vector", "columns": {"globs": "X*"}}}},
            ConfigError,
            "unknown column rule 'globs'. Did you mean 'glob'",
        ),
        ({"endpoints": {}}, ConfigError, "unknown key 'endpoints'. Did you mean 'endpoint'"),
        ({"source": {"package": "survsett"}}, ConfigError, "Did you mean 'survset'"),
        ({"endpoint": {"time": "t", "event": "e.tdm"}}, CohortError, "endpoint column 't'"),
        ({"patient_id": "same"}, CohortError, "duplicate ids"),
        ({"drop": ["nope"]}, CohortError, "'drop' names unknown columns"),
    ],
)
def test_bad_recipes_raise_with_message(tmp_path, changes, error, match):
    with pytest.raises(error, match=match):
        load_recipe(_write_recipe(tmp_path, **changes))


def test_materialize_round_trip(tmp_path):
    from graphmed.data.io import read_cohort

    out = materialize("breast_cancer", tmp_path / "bc")
    back = read_cohort(out)
    assert back.n_patients == 198 and back.modality_names == ["clinical", "expression"]
    assert (back.width("clinical"), back.width("expression")) == (4, 76)
    assert back.equals(load_recipe("breast_cancer"))
    with pytest.raises(CohortError, match="overwrite=True"):
        materialize("breast_cancer", out)
    assert materialize("breast_cancer", out, overwrite=True) == out


def test_materialize_survset_round_trips_exactly(tmp_path):
    pytest.importorskip("SurvSet")
    from graphmed.data.io import read_cohort

    out = materialize("nki70", tmp_path / "nki70", table_format="parquet")
    assert (out / "expression.parquet").is_file()
    assert read_cohort(out).equals(load_recipe("nki70"))


# ---------------------------------------------------------------- tcga (mcat)
def _tcga_csv(tmp_path, change=None):
    from .test_mcat import omics_frame, write_omics_csv

    frame = omics_frame()
    return write_omics_csv(tmp_path, frame if change is None else change(frame))


def test_tcga_recipe_is_listed():
    row = {r["name"]: r for r in list_recipes()}["tcga"]
    assert row["source"] == "mcat:CSV" and row["patients"] is None
    assert row["available"] and row["note"] == "needs --from-mcat CSV"


def test_materialize_tcga_from_mcat(tmp_path):
    from graphmed.data.io import read_cohort

    csv = _tcga_csv(tmp_path)
    out = materialize("tcga", tmp_path / "blca", from_mcat=csv)
    assert sorted(p.name for p in out.iterdir()) == [
        "clinical.csv",
        "cnv.parquet",
        "cohort.yaml",
        "mut.parquet",
        "patients.csv",
        "rnaseq.parquet",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    conf = yaml.safe_load((out / "cohort.yaml").read_text())
    assert conf["name"] == "tcga_blca" and conf["endpoints"]["labels"] == []
    assert conf["modalities"]["clinical"] == {
        "kind": "tabular",
        "path": "clinical.csv",
        "options": {"categorical": ["stage"]},
    }
    back = read_cohort(out)
    assert back.equals(load_recipe("tcga", from_mcat=csv))
    assert back.n_patients == 12 and back.modality_names == ["clinical", "rnaseq", "cnv", "mut"]
    assert [back.width(m) for m in back.modality_names] == [3, 3, 2, 2]
    assert back.event.tolist() == [int(i % 3 != 0) for i in range(12)]
    assert back.time.tolist() == [2.5 * i for i in range(12)]
    assert back.relations == [
        ("clinical", "informs", "rnaseq"),
        ("clinical", "informs", "cnv"),
        ("clinical", "informs", "mut"),
        ("cnv", "regulates", "rnaseq"),
        ("mut", "affects", "rnaseq"),
    ]
    assert back.data["clinical"]["stage"].tolist()[:2] == ["Stage II", "Stage III"]
    # --format overrides the recipe's per-kind formats.
    materialize("tcga", out, overwrite=True, table_format="csv", from_mcat=csv)
    assert sorted(p.suffix for p in out.iterdir()).count(".csv") == 5
    assert read_cohort(out).equals(back)


def test_tcga_needs_its_csv_and_only_tcga_takes_one(tmp_path):
    with pytest.raises(CohortError, match=r"recipe 'tcga' builds .*pass it with --from-mcat CSV"):
        load_recipe("tcga")
    with pytest.raises(ConfigError, match=r"from_mcat \(--from-mcat\) applies only to an 'mcat'"):
        load_recipe("breast_cancer", from_mcat=_tcga_csv(tmp_path))


def test_bad_tcga_input_writes_nothing(tmp_path):
    csv = _tcga_csv(tmp_path, lambda f: f.assign(survival_months=-f["survival_months"] - 1))
    with pytest.raises(CohortError, match=r"'survival_months' is negative for patient 'TCGA-P00'"):
        materialize("tcga", tmp_path / "blca", from_mcat=csv)
    with pytest.raises(CohortError, match=r"nope\.csv: does not exist"):
        materialize("tcga", tmp_path / "blca", from_mcat=tmp_path / "nope.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcga_blca_all_clean.csv"]


def test_failed_write_leaves_no_half_made_folder(tmp_path, monkeypatch):
    from graphmed.data import io
    from graphmed.data.io import read_cohort

    csv = _tcga_csv(tmp_path)
    written = []

    def failing(frame, file, fmt):  # fails on the third table, after two were written
        if len(written) == 2:
            raise OSError("disk full")
        written.append(file.name)
        real(frame, file, fmt)

    real = io._write_table
    monkeypatch.setattr(io, "_write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        materialize("tcga", tmp_path / "blca", from_mcat=csv)
    assert len(written) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tcga_blca_all_clean.csv"]
    # An existing cohort survives a failed overwrite untouched.
    monkeypatch.setattr(io, "_write_table", real)
    out = materialize("tcga", tmp_path / "blca", from_mcat=csv, table_format="csv")
    before = read_cohort(out)
    written.clear()
    monkeypatch.setattr(io, "_write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        materialize("tcga", out, overwrite=True, from_mcat=csv)
    assert read_cohort(out).equals(before) and (out / "rnaseq.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blca", "tcga_blca_all_clean.csv"]


def test_overwrite_keeps_files_that_are_no_part_of_the_cohort(tmp_path):
    from graphmed.data.io import read_cohort

    target, csv = tmp_path / "blca", _tcga_csv(tmp_path)
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "clinical.csv").write_text("patient_id\n")  # a half-written earlier cohort
    materialize("tcga", target, overwrite=True, from_mcat=csv, table_format="csv")
    materialize("tcga", target, overwrite=True, from_mcat=csv)  # csv -> parquet omics
    assert sorted(p.name for p in target.iterdir()) == [
        "clinical.csv",
        "cnv.parquet",
        "cohort.yaml",
        "mut.parquet",
        "notes.txt",
        "patients.csv",
        "rnaseq.parquet",
    ]
    assert read_cohort(target).equals(load_recipe("tcga", from_mcat=csv))
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blca", "tcga_blca_all_clean.csv"]


@pytest.mark.parametrize(
    "recipe, match",
    [
        ({"endpoint": {"time": "t", "event": "e"}}, r"an 'mcat' recipe takes 'endpoint' from"),
        ({"source": {"package": "mcat", "group": ["mut"]}}, r"unknown key 'group'.*'groups'"),
        ({"table_format": {"tabular": "xlsx"}}, r"table_format must be csv, parquet or"),
    ],
)
def test_bad_mcat_recipes(tmp_path, recipe, match):
    base = {"name": "mini_tcga", "source": {"package": "mcat"}}
    path = tmp_path / "mini_tcga.yaml"
    path.write_text(yaml.safe_dump({**base, **recipe}))
    with pytest.raises(ConfigError, match=match):
        load_recipe(str(path), from_mcat=_tcga_csv(tmp_path))


def test_mcat_recipe_from_a_yaml_path(tmp_path):
    path = tmp_path / "mut_only.yaml"
    recipe = {"name": "mut_only", "source": {"package": "mcat", "groups": ["mut"], "drop": ["*"]}}
    path.write_text(yaml.safe_dump(recipe))
    c = load_recipe(str(path), from_mcat=_tcga_csv(tmp_path))
    assert c.modality_names == ["mut"] and c.relations == []
