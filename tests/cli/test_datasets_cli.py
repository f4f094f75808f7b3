import pytest

from graphmed.cli import main


def test_datasets_list_prints_a_table(capsys):
    assert main(["datasets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "source", "patients", "description"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["breast_cancer"][1:3] == ["sksurv:load_breast_cancer", "198"]
    assert rows["nki70"][1:3] == ["survset:nki70", "144"]


def test_datasets_list_notes_missing_survset(capsys, monkeypatch):
    from graphmed.data import recipes

    monkeypatch.setattr(recipes, "_importable", lambda module: module != "SurvSet")
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    nki = next(line for line in out.splitlines() if line.startswith("nki70"))
    assert "[needs pip install graphmed[survset]]" in nki
    bc = next(line for line in out.splitlines() if line.startswith("breast_cancer"))
    assert "needs" not in bc


def test_datasets_materialize_writes_a_readable_cohort(tmp_path, capsys):
    from graphmed.data.io import read_cohort

    out = tmp_path / "bc"
    assert main(["datasets", "materialize", "breast_cancer", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(
        f"wrote breast_cancer to {out}: 198 patients"
    )
    cohort = read_cohort(out)
    assert cohort.n_patients == 198 and len(cohort.modalities) == 2
    assert cohort.present_mask().all().all()
    # A second write refuses to clobber the folder unless asked.
    assert main(["datasets", "materialize", "breast_cancer", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["datasets", "materialize", "breast_cancer", "--out", str(out), "--overwrite"]) == 0


def test_datasets_materialize_unknown_name(tmp_path, capsys):
    assert main(["datasets", "materialize", "brest_cancer", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset recipe 'brest_cancer'" in err and "Did you mean 'breast_cancer'" in err


def test_datasets_requires_an_action(capsys):
    with pytest.raises(SystemExit):
        main(["datasets"])


def _mcat_csv(folder):
    """A dozen TCGA-like patients in the MCAT layout; TCGA-00 has two slides."""
    import pandas as pd

    rows = [
        {
            "case_id": f"TCGA-{i:02d}",
            "slide_id": f"TCGA-{i:02d}-01Z.svs",
            "site": "AA",
            "age": 40 + i,
            "survival_months": 1.5 * i,
            "censorship": i % 2,
            "TP53_rnaseq": 0.25 * i,
            "EGFR_rnaseq": -0.5 * i,
            "MYC_cnv": float(i % 3 - 1),
            "KRAS_mut": float(i % 2),
        }
        for i in range(12)
    ]
    rows.insert(1, {**rows[0], "slide_id": "TCGA-00-02Z.svs"})
    csv = folder / "tcga_luad_all_clean.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_datasets_materialize_tcga_from_mcat(tmp_path, capsys):
    from graphmed.data.io import read_cohort

    csv, out = _mcat_csv(tmp_path), tmp_path / "luad"
    argv = ["datasets", "materialize", "tcga", "--from-mcat", str(csv), "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote tcga_luad to {out}: 12 patients, 6 events; clinical (tabular, 1), "
        "rnaseq (vector, 2), cnv (vector, 1), mut (vector, 1)"
    )
    cohort = read_cohort(out)
    assert cohort.event.tolist() == [1 - i % 2 for i in range(12)]
    assert cohort.time.tolist() == [1.5 * i for i in range(12)]
    assert list(cohort.data["clinical"].columns) == ["age"]  # site is not a feature
    assert ("cnv", "regulates", "rnaseq") in cohort.relations
    assert ("mut", "affects", "rnaseq") in cohort.relations


def test_datasets_materialize_tcga_bad_input(tmp_path, capsys):
    out = tmp_path / "luad"
    base = ["datasets", "materialize", "tcga", "--out", str(out)]
    assert main(base) == 2
    assert "pass it with --from-mcat CSV" in capsys.readouterr().err
    assert main([*base, "--from-mcat", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: does not exist; expected an MCAT CSV file" in capsys.readouterr().err
    csv = _mcat_csv(tmp_path)
    csv.write_text(
        csv.read_text().replace("_rnaseq", "_rna").replace("_cnv", "").replace("_mut", "")
    )
    assert main([*base, "--from-mcat", str(csv)]) == 2
    assert "found no gene column ending in _rnaseq, _cnv, _mut" in capsys.readouterr().err
    assert not out.exists()
