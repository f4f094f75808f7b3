"""Every malformed cohort is refused with a message naming the file, column and patient."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from graphmed.data.cohort import Cohort
from graphmed.data.io import read_cohort
from graphmed.data.validate import coerce_endpoints, validate_cohort
from graphmed.errors import CohortError, CohortWarning

from .test_io import write_folder


def _yaml(edit):
    def mutate(d: Path) -> None:
        conf = yaml.safe_load((d / "cohort.yaml").read_text())
        edit(conf)
        (d / "cohort.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))

    return mutate


def _csv(name, edit):
    def mutate(d: Path) -> None:
        frame = pd.read_csv(d / name, dtype=str, keep_default_na=False)
        frame = edit(frame)
        frame.to_csv(d / name, index=False)

    return mutate


def _cell(name, row, col, value):
    def edit(frame):
        frame.loc[row, col] = value
        return frame

    return _csv(name, edit)


def _npy(pid, array):
    return lambda d: np.save(d / "wsi" / f"{pid}.npy", array)


def _write(rel, data: bytes):
    return lambda d: (d / rel).write_bytes(data)


def _truncate(d: Path) -> None:
    data = (d / "wsi" / "001.npy").read_bytes()
    (d / "wsi" / "001.npy").write_bytes(data[: len(data) - 20])


def _pt(obj):
    def mutate(d: Path) -> None:
        (d / "wsi" / "001.npy").unlink()
        torch.save(obj, d / "wsi" / "001.pt")

    return mutate


def _corrupt_pt(d: Path) -> None:
    (d / "wsi" / "005.npy").unlink()
    (d / "wsi" / "005.pt").write_bytes(b"\x80\x02garbage")


def _relations(conf):
    conf["relations"][0] = ["clinical", "informs", "expresion"]


def _dup_row(frame):
    return pd.concat([frame, frame.iloc[[1]]], ignore_index=True)


def _no_bags(d: Path) -> None:
    for p in (d / "wsi").iterdir():
        p.unlink()


# (case id, mutation of the valid folder, expected message regex)
CASES = [
    ("no cohort.yaml", lambda d: (d / "cohort.yaml").unlink(), r"no cohort\.yaml; a cohort folder"),
    ("unparsable yaml", _write("cohort.yaml", b"name: [tiny\n"), r"cohort\.yaml: cannot parse"),
    (
        "unknown top-level key",
        _yaml(lambda c: c.update(relation=c.pop("relations"))),
        r"cohort\.yaml: unknown key 'relation'\. Did you mean 'relations'\?",
    ),
    (
        "unknown modality key",
        _yaml(lambda c: c["modalities"]["clinical"].update(paths="x.csv")),
        r"cohort\.yaml modality 'clinical': unknown key 'paths'\. Did you mean 'path'\?",
    ),
    (
        "unknown endpoints key",
        _yaml(lambda c: c["endpoints"].update(label=["subtype"])),
        r"cohort\.yaml endpoints: unknown key 'label'\. Did you mean 'labels'\?",
    ),
    (
        "unknown kind",
        _yaml(lambda c: c["modalities"]["clinical"].update(kind="tabuler")),
        r"cohort\.yaml: modality 'clinical' has unknown kind 'tabuler'; expected one of "
        r"tabular, vector, bag, graph, text\. Did you mean 'tabular'\?",
    ),
    (
        "relation to an unknown modality",
        _yaml(_relations),
        r"cohort\.yaml: relation \['clinical', 'informs', 'expresion'\]: unknown modality "
        r"'expresion'\. Did you mean 'expression'\?",
    ),
    (
        "missing label column",
        _yaml(lambda c: c["endpoints"].update(labels=["subtipe"])),
        r"patients\.csv: label column 'subtipe' \(named in cohort\.yaml endpoints\.labels\) is "
        r"missing; .* Did you mean 'subtype'\?",
    ),
    (
        "missing table file",
        lambda d: (d / "expression.csv").unlink(),
        r"cohort\.yaml: modality 'expression' names 'expression\.csv', which does not exist",
    ),
    (
        "missing bag folder",
        lambda d: shutil.rmtree(d / "wsi"),
        r"cohort\.yaml: modality 'wsi' names 'wsi', which does not exist",
    ),
    ("missing patients.csv", lambda d: (d / "patients.csv").unlink(), r"no patients\.csv"),
    (
        "patients without patient_id",
        _csv("patients.csv", lambda f: f.rename(columns={"patient_id": "patient"})),
        r"patients\.csv: missing required column 'patient_id'.*Did you mean 'patient'\?",
    ),
    (
        "patients without time",
        _csv("patients.csv", lambda f: f.drop(columns="months")),
        r"patients\.csv: missing required column 'months'",
    ),
    (
        "patients without event",
        _csv("patients.csv", lambda f: f.drop(columns="status")),
        r"patients\.csv: missing required column 'status'",
    ),
    (
        "modality without patient_id",
        _csv("clinical.csv", lambda f: f.rename(columns={"patient_id": "pid"})),
        r"clinical\.csv: missing required column 'patient_id'; found \['pid', 'age', 'grade'\]",
    ),
    (
        "empty patient id",
        _cell("patients.csv", 2, "patient_id", ""),
        r"patients\.csv: empty patient_id at lines 4; every row needs a patient id",
    ),
    (
        "duplicate patient",
        _csv("patients.csv", _dup_row),
        r"patients\.csv: patient id '002' appears 2 times \(lines 3, 8\); expected one row",
    ),
    (
        "duplicate patient in a modality",
        _csv("expression.csv", _dup_row),
        r"expression\.csv: patient id '002' appears 2 times \(lines 3, 6\)",
    ),
    (
        "duplicate patient in a bag",
        lambda d: torch.save(torch.ones(2, 4), d / "wsi" / "002.pt"),
        r"wsi/: patient id '002' has two files, 002\.npy and 002\.pt",
    ),
    (
        "NaN time",
        _cell("patients.csv", 2, "months", ""),
        r"patients\.csv: column 'months' is empty \(NaN\) for patient '003' \(got nan\); "
        r"expected a finite follow-up time >= 0",
    ),
    (
        "infinite time",
        _cell("patients.csv", 2, "months", "inf"),
        r"column 'months' is infinite for patient '003' \(got inf\)",
    ),
    (
        "absurd time",
        _cell("patients.csv", 2, "months", "1e300"),
        r"column 'months' is beyond 1e\+30 \(a corrupted cell: no follow-up is that long\) for "
        r"patient '003' \(got 1e\+300\)",
    ),
    (
        "negative time",
        _cell("patients.csv", 2, "months", "-1.5"),
        r"column 'months' is negative for patient '003' \(got -1\.5\)",
    ),
    (
        "non-numeric time",
        _cell("patients.csv", 2, "months", "soon"),
        r"column 'months' is not a number for patient '003' \(got 'soon'\)",
    ),
    (
        "event not 0/1",
        _cell("patients.csv", 3, "status", "2"),
        r"patients\.csv: column 'status' must be 0 \(censored\) or 1 \(event observed\), got "
        r"'2' for patient '004'",
    ),
    (
        "no events",
        _csv("patients.csv", lambda f: f.assign(status="0")),
        r"patients\.csv: the survival endpoint has no events \(event is 0 for all 6 patients\)",
    ),
    (
        "modality patient not in patients.csv",
        _csv("expression.csv", lambda f: pd.concat([f, f.iloc[[0]].assign(patient_id="01")])),
        r"expression\.csv: 1 patient id\(s\) are not in patients\.csv, e\.g\. \['01'\]\. "
        r"Did you mean '001'\?",
    ),
    (
        "bag patient not in patients.csv",
        _npy("099", np.ones((2, 4))),
        r"wsi/: 1 patient id\(s\) are not in patients\.csv, e\.g\. \['099'\]",
    ),
    (
        "bag of the wrong width",
        _npy("002", np.ones((2, 5))),
        r"wsi/002\.npy: expected arrays of width 4 like the other patients' \(e\.g\. '001'\), "
        r"got shape \(2, 5\)",
    ),
    (
        "bag not 2-D",
        _npy("002", np.ones(4)),
        r"wsi/002\.npy: expected a 2-D array \(instances x features\), got shape \(4,\)",
    ),
    (
        "bag not numeric",
        _npy("002", np.array([["a", "b"]])),
        r"wsi/002\.npy: expected a numeric array, got dtype <U1",
    ),
    ("truncated .npy", _truncate, r"wsi/001\.npy: cannot read the array \(ValueError"),
    ("garbage .pt", _pt(b"garbage"), r"wsi/001\.pt: expected a 2-D tensor, got bytes"),
    ("corrupt .pt", _corrupt_pt, r"wsi/005\.pt: cannot read the array"),
    (
        "vector column not numeric",
        _cell("expression.csv", 1, "g2", "high"),
        r"expression\.csv: column 'g2' is not numeric \(dtype object\): 'high' for patient '002'; "
        r"a vector modality holds numbers only",
    ),
    (
        "categorical option names an unknown column",
        _yaml(lambda c: c["modalities"]["clinical"]["options"].update(categorical=["grad"])),
        r"clinical\.csv: options\.categorical names column 'grad'.* Did you mean 'grade'\?",
    ),
    (
        "modality with no patients (table)",
        _csv("clinical.csv", lambda f: f.iloc[:0]),
        r"clinical\.csv: modality 'clinical' has no patients at all",
    ),
    (
        "modality with no patients (bag)",
        _no_bags,
        r"wsi/: modality 'wsi' has no patients at all",
    ),
    ("empty table file", _write("clinical.csv", b""), r"clinical\.csv: the file is empty"),
    (
        "unknown table format",
        _yaml(lambda c: c["modalities"]["clinical"].update(path="patients.xlsx")),
        r"patients\.xlsx: unknown table format; expected a \.csv, \.tsv or \.parquet file",
    ),
    (
        "value outside recorded categories",
        _yaml(lambda c: c.update(dtypes={"clinical": {"grade": {"categories": ["low"]}}})),
        r"clinical\.csv: column 'grade' holds 'high', which is not one of its categories",
    ),
    (
        "dtypes of an unknown table",
        _yaml(lambda c: c.update(dtypes={"clinicl": {"age": "float32"}})),
        r"cohort\.yaml: dtypes names 'clinicl'.*Did you mean 'clinical'\?",
    ),
]


def _bag_with(pid, row, col, value):
    array = np.ones((3, 4))
    array[row, col] = value
    return _npy(pid, array)


def _npy_named(name, array):
    def mutate(d: Path) -> None:
        with open(d / "wsi" / name, "wb") as fh:  # np.save would append ".npy"
            np.save(fh, array)

    return mutate


def _add_column(name, col, values):
    return _csv(name, lambda f: f.assign(**{col: values}))


def _duplicate_wsi_key(d: Path) -> None:
    text = (d / "cohort.yaml").read_text()
    (d / "cohort.yaml").write_text(
        text.replace(
            "  wsi: {kind: bag, path: wsi}\n",
            "  wsi: {kind: bag, path: wsi}\n  wsi: {kind: bag, path: wsi2}\n",
        )
    )


def _without_options(c):
    del c["modalities"]["clinical"]["options"]


# Values and layouts that used to be read silently (issue 14): each is refused at the reader.
SILENT_CASES = [
    (
        "inf in a tabular column",
        _cell("clinical.csv", 1, "age", "inf"),
        r"clinical\.csv: column 'age' is infinite for patient '002' \(got inf\); expected a "
        r"finite number of at most 1e30",
    ),
    (
        "-inf in a vector column",
        _cell("expression.csv", 0, "g1", "-inf"),
        r"expression\.csv: column 'g1' is infinite for patient '001' \(got -inf\)",
    ),
    (
        "absurd magnitude in a vector column",
        _cell("expression.csv", 2, "g3", "6.5e303"),
        r"expression\.csv: column 'g3' is 6\.5e\+303, beyond 1e30 in magnitude, for patient '003'",
    ),
    (
        "NaN inside a bag",
        _bag_with("002", 1, 2, np.nan),
        r"wsi/002\.npy: holds NaN at instance 1, feature 2 \(patient '002'\); expected finite "
        r"features",
    ),
    (
        "inf inside a bag",
        _bag_with("005", 2, 0, -np.inf),
        r"wsi/005\.npy: holds inf at instance 2, feature 0 \(patient '005'\)",
    ),
    (
        "absurd magnitude inside a bag",
        _bag_with("001", 0, 3, 1e35),
        r"wsi/001\.npy: holds 1e\+35 at instance 0, feature 3 \(patient '001'\)",
    ),
    (
        "text cell in a numeric tabular column",
        _cell("clinical.csv", 2, "age", "abc"),
        r"clinical\.csv: column 'age' holds 'abc' for patient '003', which is not a number, but "
        r"it is not in options\.categorical, so it is read as numbers; fix the cell",
    ),
    (
        "decimal comma in a numeric tabular column",
        _cell("clinical.csv", 0, "age", "61,5"),
        r"clinical\.csv: column 'age' holds '61,5' for patient '001', which is not a number.*"
        r"it has a decimal comma: write 61\.5",
    ),
    (
        "text cell in a mostly numeric column, categorical not given",
        lambda d: (_yaml(_without_options)(d), _cell("clinical.csv", 2, "age", "abc")(d)),
        r"clinical\.csv: column 'age' holds 'abc' for patient '003', which is not a number, but "
        r"75% of its cells are numbers, so it is read as numbers",
    ),
    (
        "decimal comma in a vector column",
        _cell("expression.csv", 1, "g2", "0,5"),
        r"expression\.csv: column 'g2' is not numeric \(dtype object\): '0,5' for patient "
        r"'002'; .*decimal comma: write 0\.5",
    ),
    (
        "time column in a modality",
        _add_column("clinical.csv", "months", ["12.5", "30.0", "7.25", "44.0", "0.0"]),
        r"clinical\.csv: column 'months' is an endpoint \(survival time, event or label\).*"
        r"\(label leakage\)",
    ),
    (
        "event column in a modality",
        _add_column("expression.csv", "status", ["1", "0", "1", "0"]),
        r"expression\.csv: column 'status' is an endpoint",
    ),
    (
        "label column in a modality",
        _add_column("clinical.csv", "subtype", ["a", "b", "a", "b", "a"]),
        r"clinical\.csv: column 'subtype' is an endpoint",
    ),
    (
        "time copied into a modality under another name",
        _add_column("clinical.csv", "follow_up", ["12.5", "30.0", "7.25", "44.0", "0.0"]),
        r"clinical\.csv: column 'follow_up' equals the survival time of every patient who has "
        r"it.*label leakage",
    ),
    (
        "path climbing out of the folder",
        _yaml(lambda c: c["modalities"]["clinical"].update(path="../clinical.csv")),
        r"cohort\.yaml: modality 'clinical' has path '\.\./clinical\.csv', which leads outside "
        r"the cohort folder .*allow_outside=True",
    ),
    (
        "absolute path",
        _yaml(lambda c: c["modalities"]["wsi"].update(path="/tmp")),
        r"cohort\.yaml: modality 'wsi' has path '/tmp', which leads outside the cohort folder",
    ),
    (
        "path climbing out and back in",
        _yaml(lambda c: c["modalities"]["clinical"].update(path="wsi/../../c/clinical.csv")),
        r"modality 'clinical' has path 'wsi/\.\./\.\./c/clinical\.csv', which leads outside",
    ),
    (
        "duplicate modality key",
        _duplicate_wsi_key,
        r"cohort\.yaml: key 'wsi' appears twice in one mapping \(lines 5 and 6\); YAML would "
        r"keep only the last",
    ),
    (
        "two modalities reading one file",
        _yaml(
            lambda c: c["modalities"].update(again={"kind": "tabular", "path": "./clinical.csv"})
        ),
        r"cohort\.yaml: modalities 'clinical' and 'again' both read '\./clinical\.csv'",
    ),
    (
        "unknown option key",
        _yaml(lambda c: c["modalities"]["expression"].update(options={"chunksize": 4})),
        r"cohort\.yaml modality 'expression': unknown option 'chunksize'\. Did you mean "
        r"'chunk_size'\? A vector modality takes: groups, chunk_size, max_features\.",
    ),
    (
        "option of another kind",
        _yaml(lambda c: c["modalities"]["clinical"]["options"].update(max_instances=4)),
        r"cohort\.yaml modality 'clinical': unknown option 'max_instances'\. 'max_instances' is "
        r"an option of bag modalities\. A tabular modality takes: categorical\.",
    ),
    (
        "bag file in a format graphmed does not read",
        lambda d: np.savez(d / "wsi" / "003.npz", x=np.ones((2, 4))),
        r"wsi/003\.npz: a bag folder holds \.npy or \.pt arrays, one per patient; graphmed does "
        r"not read \.npz files",
    ),
    (
        "two files of one patient differing in case",
        _npy_named("002.NPY", np.ones((2, 4))),
        r"wsi/: patient id '002' has two files, 002\.NPY and 002\.npy",
    ),
]
CASES += SILENT_CASES


def _write_parquet_garbage(d: Path) -> None:
    _yaml(lambda c: c["modalities"]["expression"].update(path="expression.parquet"))(d)
    (d / "expression.parquet").write_bytes(b"PAR1 not really")


# The other checks of docs/cohort-format.md, so that every row there has its test here.
LAYOUT_CASES = [
    ("top level not a mapping", _write("cohort.yaml", b"[1, 2]\n"), r"expected a mapping of \["),
    (
        "modalities missing",
        _yaml(lambda c: c.pop("modalities")),
        r"cohort\.yaml: 'modalities' must map each modality name to",
    ),
    (
        "endpoints not a mapping",
        _yaml(lambda c: c.update(endpoints="months")),
        r"cohort\.yaml: 'endpoints' must be a mapping, got 'months'",
    ),
    (
        "labels not a list",
        _yaml(lambda c: c["endpoints"].update(labels="subtype")),
        r"cohort\.yaml: endpoints\.labels must be a list of columns",
    ),
    (
        "relations not a list of lists",
        _yaml(lambda c: c.update(relations="wsi")),
        r"cohort\.yaml: relations must be a list of \[source, relation, target\], got 'wsi'",
    ),
    (
        "relation without three names",
        _yaml(lambda c: c.update(relations=[["wsi", "expression"]])),
        r"cohort\.yaml: relation \('wsi', 'expression'\): expected \[source, relation, target\]",
    ),
    (
        "dtypes not a mapping of mappings",
        _yaml(lambda c: c.update(dtypes={"clinical": "float32"})),
        r"cohort\.yaml: 'dtypes' must map a table to \{column: dtype\}",
    ),
    (
        "dtypes names a column the file lacks",
        _yaml(lambda c: c.update(dtypes={"clinical": {"agee": "float64"}})),
        r"cohort\.yaml: dtypes of clinical\.csv name column 'agee', which the file does not "
        r"have\. Did you mean 'age'\?",
    ),
    (
        "cell not of its recorded dtype",
        _yaml(lambda c: c.update(dtypes={"clinical": {"grade": "int64"}})),
        r"clinical\.csv: cannot read the CSV file \(ValueError: invalid literal for int\(\)",
    ),
    (
        "modality entry not a mapping",
        _yaml(lambda c: c["modalities"].update(wsi="bag")),
        r"cohort\.yaml modality 'wsi': expected \{kind: \.\.\., path: \.\.\.\}, got 'bag'",
    ),
    (
        "kind missing",
        _yaml(lambda c: c["modalities"]["wsi"].pop("kind")),
        r"cohort\.yaml modality 'wsi': missing 'kind'; expected one of tabular, vector, bag",
    ),
    (
        "options not a mapping",
        _yaml(lambda c: c["modalities"]["wsi"].update(options=4)),
        r"cohort\.yaml modality 'wsi': 'options' must be a mapping, got 4",
    ),
    (
        "bag path is a file",
        _yaml(lambda c: c["modalities"]["wsi"].update(path="patients.xlsx")),
        r"patients\.xlsx: is a file; a bag modality is a folder of \.npy/\.pt arrays",
    ),
    (
        "column twice in a CSV header",
        _write("clinical.csv", b"patient_id,age,age\n001,1,2\n"),
        r"clinical\.csv: column 'age' appears twice in the header; rename one",
    ),
    (
        "unreadable CSV",
        _write("clinical.csv", b"patient_id,age\n001,1,2,3\n\xff\xfe\n"),
        r"clinical\.csv: cannot read the CSV file \(",
    ),
    (
        "unreadable Parquet",
        _write_parquet_garbage,
        r"expression\.parquet: cannot read the Parquet file \(.*\); re-export it",
    ),
]
LAYOUT_CASES.append(
    (
        "unhashable key in cohort.yaml",
        lambda d: (d / "cohort.yaml").write_text(
            (d / "cohort.yaml").read_text() + "? [a, b]\n: 1\n"
        ),
        r"(?s)cohort\.yaml: cannot parse the YAML: while constructing a mapping.*unhashable key",
    )
)
CASES += LAYOUT_CASES
CASES += [
    (
        "every time 0",
        _csv("patients.csv", lambda f: f.assign(months="0")),
        r"patients\.csv: every patient has the same time \(0\.0 for all 6 patients\), so no two "
        r"can be ordered",
    ),
    (
        "every time the same",
        _csv("patients.csv", lambda f: f.assign(months="12", status="1")),
        r"every patient has the same time \(12\.0 for all 6 patients\)",
    ),
]


def test_bag_files_with_upper_case_suffixes_are_read(tmp_path):
    folder = write_folder(tmp_path / "c")
    (folder / "wsi" / "001.npy").rename(folder / "wsi" / "001.NPY")
    torch.save(torch.ones(2, 4), folder / "wsi" / "003.PT")
    cohort = read_cohort(folder)
    assert cohort.data["wsi"]["001"].shape == (3, 4)
    assert cohort.data["wsi"]["003"].tolist() == [[1.0] * 4] * 2


def test_paths_outside_the_folder_need_allow_outside(tmp_path):
    folder = write_folder(tmp_path / "c")
    shared = tmp_path / "shared"
    (folder / "wsi").rename(shared)
    conf = yaml.safe_load((folder / "cohort.yaml").read_text())
    conf["modalities"]["wsi"]["path"] = "../shared"
    (folder / "cohort.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(CohortError, match="leads outside the cohort folder"):
        read_cohort(folder)
    assert sorted(read_cohort(folder, allow_outside=True).data["wsi"]) == ["001", "002", "005"]
    (folder / "wsi").symlink_to(shared)  # a symlink inside the folder is the user's own choice
    conf["modalities"]["wsi"]["path"] = "wsi"
    (folder / "cohort.yaml").write_text(yaml.safe_dump(conf))
    assert sorted(read_cohort(folder).data["wsi"]) == ["001", "002", "005"]


def test_in_memory_cohorts_get_the_value_checks_too():
    patients, table, bag = _frames()
    with pytest.raises(
        CohortError, match=r"modality 'tab': column 'x' is infinite for patient 'b'"
    ):
        Cohort.from_frames(patients, {"tab": table.assign(x=[1.0, np.inf])})
    with pytest.raises(CohortError, match=r"modality 'wsi', patient 'a': holds NaN at instance 1"):
        Cohort.from_frames(patients, {"wsi": {**bag, "a": np.array([[0, 0, 0], [0, np.nan, 0]])}})
    with pytest.raises(CohortError, match=r"modality 'tab': column 'time' is an endpoint"):
        Cohort.from_frames(patients, {"tab": table.assign(time=[1.0, 2.0])})


def test_truncated_rows_are_reported_with_file_patient_and_line(tmp_path):
    folder = write_folder(tmp_path / "c")
    text = (folder / "expression.csv").read_text().splitlines()
    text[-1] = text[-1].split(",")[0] + ",1.0"  # patient 006's line cut after one value
    (folder / "expression.csv").write_text("\n".join(text) + "\n")
    with pytest.warns(
        CohortWarning,
        match=r"expression\.csv: 1 patient row\(s\) have more than half of their cells empty, "
        r"e\.g\. '006' \(2 of 3 empty, line 5\); a truncated or misaligned row",
    ):
        cohort = read_cohort(folder)
    assert np.isnan(cohort.data["expression"].loc["006", "g3"])  # read, and reported


def test_the_unmutated_folder_reads_without_warnings(tmp_path, recwarn):
    read_cohort(write_folder(tmp_path / "c"))
    assert not [w for w in recwarn if issubclass(w.category, CohortWarning)]


def test_the_unmutated_folder_is_valid(tmp_path):
    folder = write_folder(tmp_path / "c")
    (folder / "patients.xlsx").write_bytes(b"PK")  # used by the "unknown table format" case
    assert read_cohort(folder).n_patients == 6


@pytest.mark.parametrize("mutate, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_folder_is_refused(tmp_path, mutate, message):
    folder = write_folder(tmp_path / "c")
    (folder / "patients.xlsx").write_bytes(b"PK")
    mutate(folder)
    with pytest.raises(CohortError, match=message):
        read_cohort(folder)


def test_cohort_error_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist; expected a cohort folder"):
        read_cohort(tmp_path / "nowhere")


# --------------------------------------------------------- in-memory cohorts
def _frames():
    patients = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "time": [1.0, 2.0, 3.0], "event": [1, 0, 1]}
    )
    table = pd.DataFrame({"patient_id": ["a", "b"], "x": [1.0, 2.0], "s": ["u", "v"]})
    bag = {"a": np.ones((2, 3), np.float32), "c": np.zeros((1, 3), np.float32)}
    return patients, table, bag


def test_in_memory_messages_name_the_modality():
    patients, table, bag = _frames()
    with pytest.raises(
        CohortError, match=r"modality 'wsi', patient 'c': expected arrays of width 3"
    ):
        Cohort.from_frames(patients, {"wsi": {**bag, "c": np.ones((1, 2))}})
    with pytest.raises(
        CohortError, match=r"modality 'tab': patient id 'a' appears 2 times \(positions 0, 2\)"
    ):
        Cohort.from_frames(patients, {"tab": pd.concat([table, table.iloc[[0]]])})
    with pytest.raises(CohortError, match=r"modality 'tab': 1 patient id\(s\) are not in patients"):
        Cohort.from_frames(patients, {"tab": table.assign(patient_id=["a", "z"])})
    with pytest.raises(CohortError, match=r"modality 'tab': column 's' is not numeric"):
        Cohort.from_frames(patients, {"tab": table}, kinds={"tab": "vector"})
    with pytest.raises(
        CohortError, match=r"patients: label column 'y' \(named in labels\) is missing"
    ):
        Cohort.from_frames(patients, {"tab": table}, labels=["y"])
    with pytest.raises(
        CohortError,
        match=r"^relation \['tab', 'r', 'wsj'\]: unknown modality 'wsj'\. Did you mean 'wsi'\?",
    ):
        Cohort.from_frames(patients, {"tab": table, "wsi": bag}, relations=[("tab", "r", "wsj")])
    with pytest.raises(
        CohortError, match=r"modality 'tab': column names must be non-empty strings, got 0"
    ):
        Cohort.from_frames(
            patients, {"tab": pd.DataFrame({0: [1.0]}, index=pd.Index(["a"], name="patient_id"))}
        )


def test_validate_checks_direct_constructions():
    patients, table, bag = _frames()
    cohort = Cohort.from_frames(patients, {"tab": table, "wsi": bag})
    validate_cohort(cohort)  # valid
    cohort.data["wsi"]["a"] = np.ones((2, 3))  # float64 slipped in
    with pytest.raises(
        CohortError,
        match=r"modality 'wsi', patient 'a': expected a float32 array, got dtype float64; convert",
    ):
        validate_cohort(cohort)
    cohort.data["wsi"]["a"] = np.ones((2, 3), np.float32)
    cohort.data["tab"] = bag
    with pytest.raises(CohortError, match=r"modality 'tab': a tabular modality holds a DataFrame"):
        validate_cohort(cohort)
    cohort.data["tab"] = table.set_index("patient_id")
    with pytest.raises(CohortError, match=r"wsi/a\.pt: expected a 2-D array"):
        cohort.data["wsi"]["a"] = np.ones(3, np.float32)
        validate_cohort(cohort, {"wsi": "wsi/{patient_id}.pt"})


def test_coerce_endpoints_accepts_booleans_and_strings():
    frame = pd.DataFrame(
        {"t": [1, 2.5, 0], "e": [True, False, True], "s": ["1", "0", "true"]}, index=list("abc")
    )
    t, e = coerce_endpoints(frame, "x", "t", "e")
    assert t.dtype == np.float64 and t.tolist() == [1.0, 2.5, 0.0]
    assert e.dtype == np.int64 and e.tolist() == [1, 0, 1]
    assert coerce_endpoints(frame, "x", "t", "s")[1].tolist() == [1, 0, 1]
    with pytest.raises(
        CohortError, match=r"x: column 'e' must be 0 \(censored\) or 1 .*got 2 for patient 'b'"
    ):
        coerce_endpoints(frame.assign(e=[1, 2, 0]), "x", "t", "e")
