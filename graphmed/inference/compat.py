"""Checks a new cohort against a trained model before the model reads it.

A model is applied to cohorts it was not trained on: other sites, other gene
panels, other patterns of missing modalities. :func:`check_compatibility`
compares the cohort's modalities with the model's fitted preprocessing and
decides, modality by modality:

* a modality the model knows but the cohort lacks: missing for every
  patient (prompt completion fills it in); reported and warned;
* a modality the cohort has but the model does not know: dropped; warned;
* tabular / vector features the model uses but the cohort lacks: filled with
  the training fill (the median of training patients, standardised; the
  "unknown" code for a categorical), exactly as a missing cell is; reported
  and warned. Too many of them (``max_missing_features``) is an error, since
  the modality would then be mostly made up;
* categorical values never seen in training: the "unknown" code; reported;
* numeric values more than :data:`DRIFT_SD` training standard deviations from
  the training mean (a cohort on another scale: other units, raw counts
  against log values): used as they are; reported and warned;
* a kind mismatch (bag against table, tabular against vector), a bag of
  another instance width, or a table sharing no feature with the model: a
  :class:`~graphmed.errors.GraphMedError` naming the modality, both widths
  and the fix.

Nothing is refitted: the training statistics are used as saved.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor, ModalityTransform
from ..errors import GraphMedError

NO_MODALITY = "(none)"
"""Pattern name of a patient with none of the model's modalities."""

DRIFT_SD = 100.0
"""Distance from the training mean, in training standard deviations, beyond which a
value is reported as drift (a whole cohort 100x off the training scale shows up here)."""


class CompatibilityWarning(UserWarning):
    """A cohort differs from the model's training cohort in a way graphmed works around."""


@dataclass
class CompatibilityReport:
    """What differs between a cohort and the model, and what was done about it.

    Attributes:
        cohort: Name of the checked cohort.
        n_patients: Its number of patients.
        missing_modalities: Model modalities the cohort lacks (missing for all).
        extra_modalities: Cohort modalities the model does not know (ignored).
        missing_features: Modality -> model features the cohort lacks (filled).
        extra_features: Modality -> number of cohort columns the model does not use.
        unknown_categories: Modality -> column -> values unseen in training
            (first 10), read as the "unknown" category.
        unseen_patterns: Missingness pattern (``"clinical+expr"``) -> patients,
            for patterns no training patient had (empty when the model does
            not record its training patterns).
        drift: Modality -> feature -> largest distance of a value from the training
            mean, in training SDs, for features beyond :data:`DRIFT_SD`.
        patterns: Every missingness pattern of the cohort -> patients.
        no_modality: Patients with none of the model's modalities (their
            embedding comes from completion alone).
    """

    cohort: str
    n_patients: int
    missing_modalities: list[str] = field(default_factory=list)
    extra_modalities: list[str] = field(default_factory=list)
    missing_features: dict[str, list[str]] = field(default_factory=dict)
    extra_features: dict[str, int] = field(default_factory=dict)
    unknown_categories: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    unseen_patterns: dict[str, int] = field(default_factory=dict)
    drift: dict[str, dict[str, float]] = field(default_factory=dict)
    patterns: dict[str, int] = field(default_factory=dict)
    no_modality: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing had to be filled, dropped or completed for a whole modality."""
        return not (
            self.missing_modalities
            or self.extra_modalities
            or self.missing_features
            or self.unknown_categories
            or self.drift
            or self.no_modality
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """One readable line per finding (empty when :attr:`clean` and no unseen pattern)."""
        out = []
        if self.missing_modalities:
            out.append(
                f"modalities {self.missing_modalities} are not in cohort '{self.cohort}': "
                "missing for every patient, completed by the model's prompts"
            )
        if self.extra_modalities:
            out.append(f"modalities {self.extra_modalities} are unknown to the model and ignored")
        for mod, cols in self.missing_features.items():
            out.append(
                f"modality '{mod}': {len(cols)} of the model's features are missing and filled "
                f"with training values ({_preview(cols)})"
            )
        for mod, cols in self.unknown_categories.items():
            for col, values in cols.items():
                out.append(
                    f"modality '{mod}', column '{col}': values {values} were never seen in "
                    "training and are read as 'unknown'"
                )
        for mod, feats in self.drift.items():
            worst = max(feats, key=feats.get)
            out.append(
                f"modality '{mod}': {len(feats)} features hold values more than {DRIFT_SD:g} "
                f"training SDs from the training mean (e.g. '{worst}', {feats[worst]:.3g} SDs); "
                "is the cohort on another scale (units, raw against log values)? The model "
                "reads them as they are"
            )
        if self.no_modality:
            out.append(
                f"{self.no_modality} patients have none of the model's modalities: their "
                "embedding comes from completion alone"
            )
        if self.unseen_patterns:
            pats = ", ".join(f"{p} ({n})" for p, n in self.unseen_patterns.items())
            out.append(f"missingness patterns not seen in training: {pats}")
        return out


def check_compatibility(
    cohort: Cohort,
    preprocessor: CohortPreprocessor,
    *,
    training_patterns: dict[str, int] | None = None,
    max_missing_features: float = 0.5,
    warn: bool = True,
) -> tuple[Cohort, CompatibilityReport]:
    """Check ``cohort`` against a model's fitted preprocessing.

    Args:
        cohort: The cohort to read with the model.
        preprocessor: The model's :class:`CohortPreprocessor`, fitted on its
            training patients (never refitted here).
        training_patterns: Missingness pattern -> training patients, as saved
            with the model, to report patterns new to it.
        max_missing_features: Largest share (0 to 1) of a tabular / vector
            modality's features that may be missing from the cohort and
            filled; above it the check fails. ``1.0`` fills any number.
        warn: Emit a :class:`CompatibilityWarning` per finding.

    Returns:
        The cohort restricted to the model's modalities, and the report.

    Raises:
        GraphMedError: kinds or widths do not match, a table shares no feature
            (or too few, see ``max_missing_features``) with the model, or the
            cohort shares no modality with the model.
    """
    if not 0.0 <= max_missing_features <= 1.0:
        raise GraphMedError(
            f"max_missing_features must be between 0 and 1, got {max_missing_features}"
        )
    transforms = preprocessor.transforms_
    if transforms is None:
        raise GraphMedError("the model's preprocessing is not fitted; was the model trained?")
    report = CompatibilityReport(cohort.name, cohort.n_patients)
    report.missing_modalities = [m for m in transforms if m not in cohort.modalities]
    report.extra_modalities = [m for m in cohort.modalities if m not in transforms]
    shared = [m for m in transforms if m in cohort.modalities]
    if not shared:
        raise GraphMedError(
            f"cohort '{cohort.name}' shares no modality with the model: the model reads "
            f"{list(transforms)}, the cohort has {cohort.modality_names}. Rename the cohort's "
            "modalities to the model's names (cohort.yaml) or use a model trained on them."
        )
    for mod in shared:
        tr, kind = transforms[mod], cohort.modalities[mod].kind
        if kind != tr.kind:
            raise GraphMedError(
                f"modality '{mod}' is {kind} in cohort '{cohort.name}' but the model was trained "
                f"on it as {tr.kind}. Declare 'kind: {tr.kind}' for '{mod}' in cohort.yaml (or "
                f"kinds={{'{mod}': '{tr.kind}'}} in Cohort.from_frames) if it is the same data."
            )
        if tr.kind == "bag":
            _check_bag(mod, cohort, tr)
            _bag_drift(mod, cohort.data[mod], tr, report)
        elif tr.kind == "graph":
            _check_graph(mod, cohort, tr)
            _bag_drift(mod, {p: g.x for p, g in cohort.data[mod].items()}, tr, report)
        elif tr.kind == "text":
            pass  # one column of reports; terms outside the fitted vocabulary are ignored
        else:
            _check_table(mod, cohort.data[mod], tr, report, max_missing_features)
            _table_drift(mod, cohort.data[mod], tr, report)
    _patterns(cohort, list(transforms), training_patterns, report)
    if warn:
        for line in report.lines():
            if not line.startswith("missingness patterns"):  # a new pattern is fine: report only
                warnings.warn(line, CompatibilityWarning, stacklevel=2)
    if report.extra_modalities:
        keep = set(shared)
        cohort = replace(
            cohort,
            modalities={m: s for m, s in cohort.modalities.items() if m in keep},
            data={m: v for m, v in cohort.data.items() if m in keep},
            relations=[r for r in cohort.relations if r[0] in keep and r[2] in keep],
        )
    return cohort, report


def pattern_counts(present: pd.DataFrame) -> dict[str, int]:
    """Missingness pattern -> patients, from a patients x modalities boolean frame."""
    if present.empty:
        return {}
    names = np.asarray(present.columns, dtype=object)
    keys = ["+".join(names[row]) or NO_MODALITY for row in present.to_numpy(bool)]
    counts = pd.Series(keys).value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _check_bag(mod: str, cohort: Cohort, tr: ModalityTransform) -> None:
    widths = {int(a.shape[1]) for a in cohort.data[mod].values() if len(a)}
    bad = sorted(w for w in widths if w != tr.width)
    if bad:
        raise GraphMedError(
            f"modality '{mod}': instances of cohort '{cohort.name}' have width "
            f"{', '.join(map(str, bad))}, but the model was trained on width {tr.width}. "
            f"Extract '{mod}' features with the encoder used for the training cohort (width "
            f"{tr.width}), or drop '{mod}' from the cohort to treat it as missing."
        )


def _check_graph(mod: str, cohort: Cohort, tr: ModalityTransform) -> None:
    graphs = cohort.data[mod].values()
    widths = sorted({int(g.x.shape[1]) for g in graphs if len(g)} - {tr.width})
    e_width = int(tr.state.get("edge_width", 0))
    e_widths = {0 if g.edge_attr is None else int(g.edge_attr.shape[1]) for g in graphs}
    if widths:
        got, what, want = widths[0], "node features", tr.width
    elif e_widths - {e_width}:
        got, what, want = sorted(e_widths - {e_width})[0], "edge features", e_width
    else:
        return
    raise GraphMedError(
        f"modality '{mod}': graphs of cohort '{cohort.name}' have {what} of width {got}, but "
        f"the model was trained on width {want}. Build '{mod}' graphs as for the training "
        f"cohort, or drop '{mod}' from the cohort to treat it as missing."
    )


def _table_drift(mod: str, frame: pd.DataFrame, tr: ModalityTransform, report) -> None:
    numeric = [c for c in tr.columns if c not in tr.categorical]  # the order of center/scale
    far = {}
    for i, col in enumerate(numeric):
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        with np.errstate(all="ignore"):
            z = np.abs(values - tr.center[i]) / tr.scale[i]
        top = float(np.nanmax(z)) if np.isfinite(z).any() else 0.0
        if top > DRIFT_SD:
            far[str(col)] = round(top, 1)
    if far:
        report.drift[mod] = far


def _bag_drift(mod: str, bags: dict, tr: ModalityTransform, report) -> None:
    if not tr.center:
        return
    center, scale = np.asarray(tr.center), np.asarray(tr.scale)
    top = np.zeros(len(center))
    for arr in bags.values():
        if len(arr):
            with np.errstate(all="ignore"):
                top = np.fmax(top, (np.abs(arr - center) / scale).max(axis=0))
    far = {f"feature_{j}": round(float(v), 1) for j, v in enumerate(top) if v > DRIFT_SD}
    if far:
        report.drift[mod] = far


def _check_table(
    mod: str,
    frame: pd.DataFrame,
    tr: ModalityTransform,
    report: CompatibilityReport,
    max_missing: float,
) -> None:
    # Names are compared exactly as the preprocessor looks them up (1 is not "1").
    have, used = set(frame.columns), set(tr.columns)
    missing = [c for c in tr.columns if c not in have]
    n_model, n_here = len(tr.columns), len(tr.columns) - len(missing)
    if missing and (n_here == 0 or len(missing) / n_model > max_missing):
        head = (
            f"modality '{mod}' ({tr.kind}) has {n_here} of the {n_model} features the model "
            f"uses (width {frame.shape[1]} here, {n_model} in the model"
        )
        names = f"Missing: {_preview(missing)}; the cohort has: {_preview(list(frame.columns))}."
        if n_here == 0:
            raise GraphMedError(
                f"{head}; no name in common). {names} Is this the same kind of data? Rename the "
                "columns to the training cohort's names, or drop the modality to treat it as "
                "missing."
            )
        raise GraphMedError(
            f"{head}; {len(missing) / n_model:.0%} missing, more than max_missing_features="
            f"{max_missing:g}). {names} Check that the feature names match the training "
            "cohort's; to fill the missing ones with training values anyway, raise "
            "max_missing_features (CLI: --max-missing-features 1)."
        )
    if missing:
        report.missing_features[mod] = [str(c) for c in missing]
    extra = len(have - used)
    if extra:
        report.extra_features[mod] = extra
    unknown = {}
    for col, cats in tr.categorical.items():
        if col not in frame.columns:
            continue
        values = pd.Series(frame[col]).dropna()
        new = values[~values.isin(cats)].unique().tolist()
        if new:
            unknown[str(col)] = [_plain(v) for v in new[:10]]
    if unknown:
        report.unknown_categories[mod] = unknown


def _patterns(
    cohort: Cohort,
    modalities: list[str],
    training: dict[str, int] | None,
    report: CompatibilityReport,
) -> None:
    mask = cohort.present_mask()
    present = pd.DataFrame(
        {m: mask[m] if m in mask.columns else False for m in modalities}, index=mask.index
    )
    report.patterns = pattern_counts(present)
    report.no_modality = report.patterns.get(NO_MODALITY, 0)
    if training:
        report.unseen_patterns = {p: n for p, n in report.patterns.items() if p not in training}


def _preview(items: list, n: int = 5) -> str:
    shown = ", ".join(repr(str(c)) for c in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
