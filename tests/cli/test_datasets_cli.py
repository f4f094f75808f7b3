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
