"""Readers of the MCAT / PORPOISE / SurvPath layout: one CSV plus per-slide feature bags.

The CSV has one row per slide: ``case_id`` (the patient), ``slide_id``,
``survival_months``, ``censorship`` (1 = censored), optional label and
clinical columns, and the genomic values (``<gene>_rnaseq``, ``<gene>_cnv``,
``<gene>_mut``). The features folder holds ``<slide_id>.pt`` (a 2-D tensor of
patch features) for each slide, with the slide file extension (``.svs`` ...)
stripped.

:func:`read_mcat` reads the CSV with the slides (one ``omics`` modality);
:func:`read_mcat_omics` reads the CSV alone, one modality per gene-column
suffix, for the ``tcga`` dataset recipe.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CohortError, did_you_mean
from .cohort import Cohort, ModalitySpec
from .io import load_array
from .validate import coerce_endpoints, show

REQUIRED = ("case_id", "slide_id", "survival_months", "censorship")
EXTRAS = ("oncotree_code", "disc_label", "label", "train", "age", "is_female", "site")
"""Columns of the MCAT CSVs that are not genomic values."""
NON_FEATURES = ("Unnamed: *", "train", "site", "oncotree_code", "disc_label", "label")
"""Columns :func:`read_mcat_omics` leaves out of ``clinical``: the row index, the
split flag, the tissue source site (a collection-centre code, already in the
barcode: batch, not biology), the cancer-type code (MCAT's classification
label) and the survival bins MCAT derives from the endpoint (they would leak it)."""
GROUPS = ("rnaseq", "cnv", "mut")
OMICS_RELATIONS = (("cnv", "regulates", "rnaseq"), ("mut", "affects", "rnaseq"))
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".bif", ".czi")


def read_mcat(
    csv_path: str | os.PathLike,
    features_dir: str | os.PathLike,
    omics_columns: Sequence[str] | None = None,
    *,
    clinical_columns: Sequence[str] = (),
    label_columns: Sequence[str] | None = None,
    relations: Sequence[Sequence[str]] | None = None,
    name: str | None = None,
) -> Cohort:
    """Read an MCAT/PORPOISE/SurvPath CSV and its slide feature bags as a cohort.

    Args:
        csv_path: The CSV (``.csv`` or ``.csv.zip``), one row per slide.
        features_dir: Folder of ``<slide_id>.pt`` bags (``.npy`` also read); a
            ``pt_files/`` subfolder (CLAM's layout) is used when the folder has none.
        omics_columns: Genomic columns -> the ``omics`` vector modality. Default:
            every numeric column except the required ones, ``Unnamed: *``,
            ``EXTRAS``, labels and clinical columns. ``[]``: no omics modality.
        clinical_columns: Columns of a ``clinical`` tabular modality (default none).
        label_columns: Classification label columns of ``patients``. Default:
            ``["oncotree_code"]`` when the CSV has it.
        relations: Modality relations. Default: ``[wsi, expresses, omics]`` and,
            with clinical columns, ``[clinical, informs, omics]``.
        name: Cohort name; default: the CSV's name.

    A patient with several slides gets their instances concatenated in CSV
    order; their rows must agree on survival, labels, omics and clinical
    values. A slide whose feature file is absent is skipped with a warning; a
    patient with no slide left has the ``wsi`` bag missing.
    """
    csv, fdir = Path(csv_path), Path(features_dir)
    frame = _read_csv(csv)
    src = csv.name
    labels = [c for c in ("oncotree_code",) if c in frame] if label_columns is None else []
    labels += list(label_columns or [])
    clinical = list(clinical_columns)
    taken = set(REQUIRED) | set(EXTRAS) | set(labels) | set(clinical)
    if omics_columns is None:
        omics = [
            c
            for c in frame.columns
            if c not in taken
            and not str(c).startswith("Unnamed:")
            and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if not omics:
            raise CohortError(
                f"{src}: found no numeric omics column besides {sorted(taken & set(frame))}; "
                "pass omics_columns=[...] (or [] for a pathology-only cohort)."
            )
    else:
        omics = list(omics_columns)
    for what, cols in (("label", labels), ("clinical", clinical), ("omics", omics)):
        absent = [c for c in cols if c not in frame.columns]
        if absent:
            raise CohortError(
                f"{src}: {what} column '{absent[0]}' is not in the CSV."
                f"{did_you_mean(absent[0], frame.columns)}"
            )
    groups = frame.groupby("case_id", sort=False)
    for cols in (["survival_months", "censorship", *labels], clinical, omics):
        _check_agree(frame, groups, cols, src)
    first = _first_rows(frame)
    patients = _patients(first, src).join(first[labels])
    specs, data, sources = {}, {}, {"patients": src}
    for mod, kind, cols in (("omics", "vector", omics), ("clinical", "tabular", clinical)):
        if cols:
            table = first[cols].dropna(how="all")
            specs[mod], data[mod], sources[mod] = ModalitySpec(mod, kind), table, src
    specs["wsi"], data["wsi"] = ModalitySpec("wsi", "bag"), _read_bags(frame, fdir)
    sources["wsi"] = f"{fdir.name}/"
    if relations is None:
        relations = [("wsi", "expresses", "omics")] if omics else []
        relations += [("clinical", "informs", "omics")] if clinical and omics else []
    cohort = Cohort(
        name=name or csv.name.split(".")[0],
        patients=patients,
        modalities=specs,
        data=data,
        relations=[tuple(r) for r in relations],
        labels=labels,
    )
    cohort.validate(sources)
    return cohort


def read_mcat_omics(
    csv_path: str | os.PathLike,
    *,
    groups: Sequence[str] = GROUPS,
    clinical_columns: Sequence[str] | None = None,
    drop: Sequence[str] = NON_FEATURES,
    relations: Sequence[Sequence[str]] | None = None,
    name: str | None = None,
) -> Cohort:
    """Read the clinical and genomic columns of an MCAT/PORPOISE CSV as a cohort, no slides.

    Args:
        csv_path: The CSV (``.csv`` or ``.csv.zip``), one row per slide.
        groups: Gene-column suffixes; the columns ``<gene>_<suffix>`` form the
            vector modality ``<suffix>`` (names kept whole). A suffix with no
            column gives no modality. Default: ``("rnaseq", "cnv", "mut")``.
        clinical_columns: Columns of the tabular ``clinical`` modality. Default:
            every column that is not required, not a gene column and matches no
            ``drop`` pattern. Its non-numeric columns are listed in the
            ``categorical`` option.
        drop: ``fnmatch`` patterns of non-feature columns (default
            :data:`NON_FEATURES`); they may be absent from the CSV.
        relations: Relations to keep where both modalities exist. Default:
            ``[clinical, informs, g]`` for each group ``g``, then those of
            :data:`OMICS_RELATIONS` (``cnv regulates rnaseq``, ``mut affects
            rnaseq``) between groups.
        name: Cohort name; default: the CSV's name without ``_all_clean``
            (``tcga_blca_all_clean.csv.zip`` -> ``tcga_blca``).

    One row per patient: the first of their slides. Their rows must agree on
    survival; rows that differ on a feature warn and the first row is kept. A
    patient whose values of a modality are all missing has it missing.
    """
    csv = Path(csv_path)
    frame, src = _read_csv(csv), csv.name
    cols = {g: [c for c in frame.columns if str(c).endswith(f"_{g}")] for g in groups}
    cols = {g: c for g, c in cols.items() if c}
    if not cols:
        raise CohortError(
            f"{src}: found no gene column ending in {', '.join(f'_{g}' for g in groups)}; an "
            "MCAT CSV holds <gene>_rnaseq / <gene>_cnv / <gene>_mut columns. Check that this "
            "is an *_all_clean.csv, or pass groups=[...] naming its suffixes."
        )
    genes = {c for group in cols.values() for c in group}
    if clinical_columns is None:
        clinical = [
            c
            for c in frame.columns
            if c not in REQUIRED
            and c not in genes
            and not any(fnmatch.fnmatchcase(str(c), p) for p in drop)
        ]
    else:
        clinical = list(clinical_columns)
        absent = [c for c in clinical if c not in frame.columns]
        if absent:
            raise CohortError(
                f"{src}: clinical column '{absent[0]}' is not in the CSV."
                f"{did_you_mean(absent[0], frame.columns)}"
            )
    shared = frame[frame["case_id"].duplicated(keep=False)]
    groups_of = shared.groupby("case_id", sort=False)
    _check_agree(shared, groups_of, ["survival_months", "censorship"], src)
    _warn_disagree(shared, groups_of, [*clinical, *genes], src)
    first = _first_rows(frame)
    tables = {"clinical": clinical} if clinical else {}
    tables.update(cols)
    specs, data = {}, {}
    for mod, columns in tables.items():
        kind = "tabular" if mod == "clinical" else "vector"
        table = first[columns].dropna(how="all")
        options = {}
        if kind == "vector":  # float64, as in a Parquet table read back (0/1 mut too)
            numeric = [c for c in columns if pd.api.types.is_numeric_dtype(table[c])]
            table = table.astype(dict.fromkeys(numeric, np.float64))
        else:
            cats = [c for c in columns if not pd.api.types.is_numeric_dtype(table[c])]
            options["categorical"] = cats
        specs[mod], data[mod] = ModalitySpec(mod, kind, options=options), table
    if relations is None:
        relations = [("clinical", "informs", g) for g in groups]
        relations += [r for r in OMICS_RELATIONS if {r[0], r[2]} <= set(groups)]
    # A relation to a modality this CSV lacks is left out; an unknown name is kept, so
    # that validate() reports it.
    absent = {"clinical", *groups} - set(specs)
    relations = [tuple(r) for r in relations if not absent & {r[0], r[-1]}]
    stem = csv.name.split(".")[0]
    cohort = Cohort(
        name=name or stem.removesuffix("_all_clean"),
        patients=_patients(first, src),
        modalities=specs,
        data=data,
        relations=relations,
    )
    cohort.validate({"patients": src, **dict.fromkeys(specs, src)})
    return cohort


def _read_csv(csv: Path) -> pd.DataFrame:
    """The CSV, checked for the required columns and a case_id on every row."""
    if not csv.is_file():
        what = "is a folder" if csv.is_dir() else "does not exist"
        raise CohortError(
            f"{csv}: {what}; expected an MCAT CSV file (.csv or .csv.zip, one row per slide). "
            "Check the path."
        )
    try:
        frame = pd.read_csv(
            csv, dtype={"case_id": str, "slide_id": str}, float_precision="round_trip"
        )
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise CohortError(
            f"{csv.name}: cannot read the CSV ({type(err).__name__}: {err})."
        ) from err
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{csv.name}: missing required column '{missing[0]}'; an MCAT CSV has columns "
            f"{list(REQUIRED)}.{did_you_mean(missing[0], frame.columns)}"
        )
    if frame["case_id"].isna().any():
        line = int(np.flatnonzero(frame["case_id"].isna())[0]) + 2
        raise CohortError(f"{csv.name}: empty case_id at line {line}; every slide needs a patient.")
    return frame


def _first_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Each patient's first row, indexed by ``patient_id``."""
    return frame.drop_duplicates("case_id").set_index("case_id").rename_axis("patient_id")


def _patients(first: pd.DataFrame, src: str) -> pd.DataFrame:
    """``time`` (= survival_months) and ``event`` (= 1 - censorship), checked."""
    cens = first["censorship"]
    bad = ~cens.isin([0, 1])
    if bad.any():
        raise CohortError(
            f"{src}: column 'censorship' must be 0 (event observed) or 1 (censored), got "
            f"{show(cens[bad].iloc[0])} for patient '{cens[bad].index[0]}'."
        )
    patients = first[["survival_months"]].assign(event=1 - cens)
    time, event = coerce_endpoints(patients, src, "survival_months", "event")
    return pd.DataFrame({"time": time, "event": event})


def _disagreement(groups, cols: list[str]) -> tuple[int, str, str] | None:
    """``(patients whose rows differ in cols, the first such patient, its column)``, or None."""
    if not cols:
        return None
    counts = groups[cols].nunique(dropna=False)
    bad = counts[(counts > 1).any(axis=1)]
    if not len(bad):
        return None
    pid = bad.index[0]
    return len(bad), pid, next(c for c in cols if bad.loc[pid, c] > 1)


def _check_agree(frame: pd.DataFrame, groups, cols: list[str], src: str) -> None:
    """Raise if a patient's rows (slides) hold different values in ``cols``."""
    found = _disagreement(groups, cols)
    if found:
        _, pid, col = found
        values = frame.loc[frame["case_id"] == pid, col].unique().tolist()
        raise CohortError(
            f"{src}: patient '{pid}' has rows that disagree on '{col}' ({values}); all of a "
            "patient's slides must share their survival, labels and patient-level values. "
            "Fix the rows."
        )


def _warn_disagree(frame: pd.DataFrame, groups, cols: list[str], src: str) -> None:
    """Warn if a patient's rows hold different values in ``cols`` (the first row is kept)."""
    found = _disagreement(groups, cols) if not frame.empty else None
    if found:
        n_bad, pid, col = found
        warnings.warn(
            f"{src}: {n_bad} patient(s) have slides whose rows disagree on feature columns "
            f"(e.g. '{pid}' on '{col}'); each patient's first row is kept.",
            stacklevel=3,
        )


def _read_bags(frame: pd.DataFrame, fdir: Path) -> dict[str, np.ndarray]:
    if not fdir.is_dir():
        raise CohortError(f"{fdir}: no such features folder; expected <slide_id>.pt files.")
    if not any(fdir.glob("*.pt")) and (fdir / "pt_files").is_dir():
        fdir = fdir / "pt_files"
    parts: dict[str, list[np.ndarray]] = {}
    absent: list[str] = []
    for pid, slide in zip(frame["case_id"], frame["slide_id"]):
        if pd.isna(slide):
            continue
        file = _slide_file(fdir, slide)
        if file is None:
            absent.append(f"{_strip(slide)}.pt")
            continue
        arr = load_array(file, f"{fdir.name}/{file.name}")
        if parts.get(pid) and parts[pid][0].shape[1] != arr.shape[1]:
            raise CohortError(
                f"{fdir.name}/{file.name}: width {arr.shape[1]} differs from the width "
                f"{parts[pid][0].shape[1]} of patient '{pid}''s other slides; every slide's "
                "features must come from the same extractor."
            )
        parts.setdefault(pid, []).append(arr)
    if not parts:
        raise CohortError(
            f"{fdir}: found no feature file for any of the {len(frame)} slides (looked for "
            f"e.g. {absent[:1]}); check features_dir."
        )
    if absent:
        warnings.warn(
            f"{len(absent)} slide(s) listed in the CSV have no features in {fdir} and are "
            f"skipped: {absent[:3]}{' ...' if len(absent) > 3 else ''}",
            stacklevel=3,
        )
    return {pid: np.concatenate(arrs) if len(arrs) > 1 else arrs[0] for pid, arrs in parts.items()}


def _strip(slide: str) -> str:
    low = slide.lower()
    return next((slide[: -len(s)] for s in SLIDE_SUFFIXES if low.endswith(s)), slide)


def _slide_file(fdir: Path, slide: str) -> Path | None:
    for stem in dict.fromkeys((_strip(slide), slide)):
        for suffix in (".pt", ".npy"):
            if (fdir / f"{stem}{suffix}").is_file():
                return fdir / f"{stem}{suffix}"
    return None
