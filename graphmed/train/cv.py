"""Cross-validation that does not fool itself.

Splits are stratified by event (and label); inside each training fold a
validation part is carved out for early stopping; every statistic
(preprocessing, prompt priors, time bins) is fitted on the training fold
only; test-time missingness is simulated on the test fold only. Baselines run
on the same folds. Each finished fold is written to disk at once, so a run
killed midway resumes where it stopped and loses nothing already written.

This core takes typed arguments only (:class:`~graphmed.train.options.ModelRecipe`,
:class:`~graphmed.train.options.CVOptions`, :class:`~graphmed.train.options.Fold`);
``cross_validate(cohort, config)``, re-exported here, is the builder's entry
point that makes them from an experiment config.
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from .._atomic import _writes_reach_disk, atomic_path, write_json
from .._lock import run_lock
from ..data.cohort import Cohort
from ..errors import ConfigError, did_you_mean
from ..graph.relations import RelationGraph
from ..inference.predict import Predictions
from .builder import cross_validate, stratify_key
from .fingerprint import check_resume, run_fingerprint
from .fit import FoldModel, fit_fold_model, fit_model, validation_split
from .options import CVOptions, Fold, FoldResult, ModelRecipe


@dataclass
class CVResult:
    """Aggregate metrics (as in ``metrics.json``) and the out-of-fold predictions."""

    metrics: dict[str, Any]
    oof: pd.DataFrame
    out_dir: Path | None


def make_folds(
    cohort: Cohort, folds: int = 5, repeats: int = 1, seed: int = 0, label: str | None = None
) -> list[Fold]:
    """The :class:`Fold` s of stratified k-fold with repeats, in (repeat, fold) order."""
    key = stratify_key(cohort, label)
    counts = pd.Series(key).value_counts()
    smallest = int(counts.min())
    if smallest < folds:
        event, _, value = str(counts.idxmin()).partition("_")
        who = "with an event" if event == "1" else "censored"
        if label is not None:
            who += f" and {label}={value}"
        fix = f"use eval.folds={smallest} or fewer" if smallest >= 2 else "add patients"
        raise ConfigError(
            f"eval.folds={folds} but the smallest stratum (event/label) has {smallest} "
            f"patients ({who}), and every fold needs one; {fix}"
        )
    out = []
    for r in range(repeats):
        skf = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        for f, (tr, te) in enumerate(skf.split(np.zeros(len(key)), key)):
            out.append(Fold(repeat=r, fold=f, train=tr, test=te))
    return out


def hide_modalities(cohort: Cohort, rates: dict[str, float], seed: int) -> Cohort:
    """Hide ``rate`` of the patients who have each modality (seeded): test folds only."""
    present = cohort.present_mask()
    rng = np.random.default_rng(seed)
    for mod, rate in sorted(rates.items()):
        if mod not in cohort.modalities:
            raise ConfigError(
                f"test missingness names unknown modality '{mod}'; the cohort has "
                f"{cohort.modality_names}.{did_you_mean(mod, cohort.modality_names)}"
            )
        if not 0 <= rate <= 1:
            raise ConfigError(f"test missing rate of '{mod}' must be in [0, 1], got {rate}")
        have = present.index[present[mod]].to_numpy()
        n_hide = int(round(rate * len(have)))
        cohort = cohort.drop_modality_for(mod, rng.choice(have, n_hide, replace=False))
    return cohort


def run_cv(
    cohort: Cohort,
    recipe: ModelRecipe,
    cv: CVOptions,
    out_dir: str | Path | None = None,
    *,
    config_data: dict[str, Any] | None = None,
    resume: bool = False,
    include_graphmed: bool = True,
    log=print,
) -> CVResult:
    """Cross-validate graphmed (``recipe``) and ``cv.baselines`` on ``cohort``.

    Writes to ``out_dir`` (when given): ``metrics.json``, ``oof_predictions.csv``,
    ``config.yaml`` (``config_data``, the resolved config as plain data),
    ``log.txt``, per-fold checkpoints and results under ``folds/``, and the
    reports (Kaplan-Meier plot and others). ``out_dir`` is locked while the
    run writes (a second run into it is refused); ``resume`` continues a run
    of the same ``config_data`` and cohort.
    """
    if out_dir is None:
        return _run_cv(cohort, recipe, cv, None, config_data, resume, include_graphmed, log)
    with run_lock(out_dir, "graphmed run"):
        return _run_cv(cohort, recipe, cv, out_dir, config_data, resume, include_graphmed, log)


def _run_cv(cohort, recipe, cv, out_dir, config_data, resume, include_graphmed, log) -> CVResult:
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        data = config_data or {}
        out.mkdir(parents=True, exist_ok=True)
        check_resume(out, run_fingerprint(cohort, data), resume)  # before anything is written
        (out / "folds").mkdir(exist_ok=True)
        from ..configuration import dump_yaml

        dump_yaml(data, out / "config.yaml")
    logger = _Logger(out, log)
    fold_results, frames = [], []
    for split in make_folds(cohort, cv.folds, cv.repeats, cv.seed, cv.label):
        tag = split.tag
        fold_dir = out / "folds" / tag if out is not None else None
        done = fold_dir / "result.json" if fold_dir is not None else None
        if resume and done is not None and done.exists():
            fold_results.append(json.loads(done.read_text()))
            frames.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"patient_id": str}))
            logger(f"[{tag}] already done, read from {done}")
            continue
        t0 = _time.time()
        result, frame = run_fold(
            cohort,
            recipe,
            split,
            cv=cv,
            fold_dir=fold_dir,
            resume=resume,
            include_graphmed=include_graphmed,
        )
        result.seconds = round(_time.time() - t0, 2)
        record = result.to_dict()
        if fold_dir is not None:
            with atomic_path(fold_dir / "predictions.csv") as tmp:
                frame.to_csv(tmp, index=False)
            write_json(done, record)
        logger(
            f"[{tag}] "
            + "  ".join(
                f"{k} {v.get('c_index', float('nan')):.3f}" for k, v in result.methods.items()
            )
        )
        fold_results.append(record)
        frames.append(frame)
    oof = pd.concat(frames, ignore_index=True)
    metrics = aggregate(fold_results, cohort, cv)
    if out is not None:
        with atomic_path(out / "oof_predictions.csv") as tmp:
            oof.to_csv(tmp, index=False)
        write_json(out / "metrics.json", metrics)
        try:
            from .report import write_reports

            metrics["reports"] = write_reports(oof, out, method=cv.risk_groups)
            write_json(out / "metrics.json", metrics)
        except ValueError as err:  # a report that cannot be drawn must not lose the run
            logger(f"reports skipped: {err}")
    return CVResult(metrics, oof, out)


def run_fold(
    cohort: Cohort,
    recipe: ModelRecipe,
    fold: Fold,
    *,
    cv: CVOptions,
    fold_dir: Path | None = None,
    resume: bool = False,
    include_graphmed: bool = True,
) -> tuple[FoldResult, pd.DataFrame]:
    """Train and test one fold; return its result and prediction frame.

    Args:
        cohort: All patients; ``fold`` says which train and which test.
        recipe: The graphmed model to fit on the training fold.
        fold: The split.
        cv: Baselines, metric horizons and test-time missingness.
        fold_dir: Where the checkpoint goes (``None``: no checkpoint).
        resume: Continue from the checkpoint in ``fold_dir``.
        include_graphmed: Fit graphmed (False: the baselines only).
    """
    from ..metrics import survival_metrics

    repeat, k, label = fold.repeat, fold.fold, cv.label
    ids = np.asarray(cohort.patient_ids)
    train_c = cohort.subset(ids[fold.train])
    test_c = cohort.subset(ids[fold.test])
    if cv.test_missing:
        test_c = hide_modalities(test_c, cv.test_missing, seed=cv.seed * 1009 + repeat * 101 + k)
    t = recipe.train
    fit_ids, val_ids = validation_split(train_c, t.val_fraction, t.seed, label, repeat, k)
    methods: dict[str, dict[str, float]] = {}
    history = None
    if include_graphmed:
        ckpt = fold_dir / "checkpoint.pt" if fold_dir is not None else None
        fm = fit_model(train_c, recipe, repeat=repeat, fold=k, checkpoint=ckpt, resume=resume)
        history = fm.history
        preds = fm.predict(test_c)
        methods["graphmed"] = _metrics(train_c, test_c, preds, label, cv.horizons)
        frame = predictions_frame(test_c, preds, fm.fitted.relations, fm.model, repeat, k, label)
    else:
        frame = pd.DataFrame(
            {
                "patient_id": test_c.patient_ids,
                "repeat": repeat,
                "fold": k,
                "time": test_c.time,
                "event": test_c.event,
            }
        )
    for name in cv.baselines:
        from .baselines import make_baseline

        # the baselines see the same columns as graphmed (its variance filter's cap)
        baseline = make_baseline(
            name, seed=cv.baseline_seed, max_vector_features=cv.max_features
        ).fit(train_c)
        risk = baseline.predict_risk(test_c)
        methods[name] = survival_metrics(
            train_c.time, train_c.event, test_c.time, test_c.event, risk, horizons=cv.horizons
        )
        frame[f"risk_{name}"] = risk
    result = FoldResult(
        repeat=repeat,
        fold=k,
        n_train=len(fit_ids),
        n_val=len(val_ids),
        n_test=test_c.n_patients,
        test_present=test_c.present_mask().mean().round(4).to_dict(),
        best_epoch=history.best_epoch if history else None,
        epochs_run=history.epochs_run if history else 0,
        monitor=cv.monitor,
        monitor_used=history.monitor_used if history else None,  # differs after a fallback
        best_val_score=history.best_score if history else None,  # C-index, or minus the loss
        methods=methods,
    )
    return result, frame


def _metrics(
    train_c: Cohort,
    test_c: Cohort,
    preds: Predictions,
    label: str | None,
    horizons: list[float] | None,
) -> dict[str, float]:
    # scikit-survival is imported when metrics are computed, not when graphmed is.
    from ..metrics import classification_metrics, survival_metrics

    out: dict[str, float] = {}
    if preds.risk is not None:
        out.update(
            survival_metrics(
                train_c.time,
                train_c.event,
                test_c.time,
                test_c.event,
                preds.risk,
                surv=preds.survival,
                times=preds.survival_times,
                horizons=horizons,
            )
        )
    if label is not None and label in preds.proba:
        classes = {v: k for k, v in enumerate(sorted(train_c.patients[label].dropna().unique()))}
        y = test_c.patients[label].map(classes)
        known = y.notna().to_numpy()
        cls = classification_metrics(y[known].astype(int).to_numpy(), preds.proba[label][known])
        out.update({f"{label}_{k}": v for k, v in cls.items()})
    return out


def predictions_frame(cohort, preds, relations: RelationGraph, model, repeat, fold, label):
    """One row per test patient: risk, survival, probabilities, attention, completion."""
    frame = pd.DataFrame(
        {
            "patient_id": preds.patient_ids,
            "repeat": repeat,
            "fold": fold,
            "time": cohort.time,
            "event": cohort.event,
        }
    )
    if preds.risk is not None:
        frame["risk"] = preds.risk
    if preds.survival is not None:
        for j, t in enumerate(preds.survival_times):
            frame[f"surv_{float(t):.1f}"] = preds.survival[:, j]
    if label is not None and label in preds.proba:
        frame["label"] = cohort.patients[label].to_numpy()
        for j in range(preds.proba[label].shape[1]):
            frame[f"proba_{j}"] = preds.proba[label][:, j]
    for j, m in enumerate(model.net.modalities):
        frame[f"att_mod_{m}"] = preds.modality_attention[:, j]
        frame[f"completed_{m}"] = preds.completed[:, j].astype(int)
    for j, path in enumerate(model.net.metapaths[: preds.metapath_attention.shape[1]]):
        frame[f"att_path_{relations.metapath_name(path)}"] = preds.metapath_attention[:, j]
    return frame


def aggregate(fold_results: list[dict], cohort: Cohort, cv: CVOptions) -> dict[str, Any]:
    """Mean, sd and bootstrap CI of every metric of every method over folds."""
    from ..metrics import summarise

    methods: dict[str, dict[str, Any]] = {}
    names = list(dict.fromkeys(k for r in fold_results for k in r["methods"]))
    for name in names:
        keys = list(dict.fromkeys(k for r in fold_results for k in r["methods"].get(name, {})))
        methods[name] = {}
        for key in keys:
            values = [r["methods"].get(name, {}).get(key, float("nan")) for r in fold_results]
            if not all(isinstance(v, (int, float)) for v in values):
                continue
            stats = summarise(values, n_boot=cv.bootstrap, seed=cv.seed)
            methods[name][key] = {"per_fold": values, **stats}
    top = methods.get("graphmed", {}).get("c_index", {})
    return {
        "cohort": cohort.name,
        "n_patients": cohort.n_patients,
        "folds": cv.folds,
        "repeats": cv.repeats,
        "test_missing": dict(cv.test_missing),
        # what every method saw (graphmed and the baselines get the same columns)
        "inputs": {"max_vector_features": cv.max_features},
        "c_index": top,
        "methods": methods,
        "per_fold": fold_results,
    }


class _Logger:
    """Print a line and append it to ``log.txt`` (kept across resumes)."""

    def __init__(self, out: Path | None, echo):
        self.path = out / "log.txt" if out is not None else None
        self.echo = echo or (lambda line: None)

    def __call__(self, line: str) -> None:
        self.echo(line)
        if self.path is not None and _writes_reach_disk():  # rank 0 only in a torchrun job
            with open(self.path, "a") as fh:
                fh.write(line + "\n")


__all__ = [
    "CVResult",
    "FoldModel",
    "cross_validate",
    "fit_fold_model",
    "hide_modalities",
    "make_folds",
    "run_cv",
    "run_fold",
    "validation_split",
]
