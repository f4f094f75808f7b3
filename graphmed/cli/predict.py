"""``graphmed predict`` and ``graphmed evaluate``: apply a saved model to a cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .._atomic import atomic_path, write_json
from ._common import add_cohort_path_args, read_cohort_arg


def register(sub) -> None:
    p = sub.add_parser("predict", help="risk scores (and class probabilities) of a saved model")
    _model_args(p, cohort_help="cohort folder")
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the cohort chunk by chunk (its tables in Parquet) and write the CSV as it "
        "goes, so memory follows --chunk-size and not the cohort",
    )
    p.add_argument(
        "--chunk-size", type=int, default=8192, metavar="N", help="patients per chunk (--stream)"
    )
    p.set_defaults(func=run_predict)
    e = sub.add_parser("evaluate", help="metrics of a saved model on a (new) cohort")
    _model_args(e, cohort_help="cohort folder with endpoints")
    e.add_argument("--out", type=Path, default=None, help="JSON file to write")
    e.set_defaults(func=run_evaluate)


def _model_args(parser: argparse.ArgumentParser, cohort_help: str) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model folder (RUN/model)")
    parser.add_argument("--cohort", type=Path, required=True, help=cohort_help)
    parser.add_argument("--device", default="cpu")
    add_cohort_path_args(parser)


def _predict(args):
    from ..train.saved import load_model

    model = load_model(args.model, device=args.device)
    cohort = read_cohort_arg(args.cohort, args)
    return model, cohort, model.predict(cohort, device=args.device)


def _frame(model, preds) -> pd.DataFrame:
    frame = pd.DataFrame({"patient_id": preds.patient_ids})
    if preds.risk is not None:
        frame["risk"] = preds.risk
    for label, proba in preds.proba.items():
        for j, cls in enumerate(model.fitted.label_classes[label]):
            frame[f"proba_{label}_{cls}"] = proba[:, j]
    for j, m in enumerate(model.model.net.modalities):
        frame[f"completed_{m}"] = preds.completed[:, j].astype(int)
    return frame


def run_predict(args: argparse.Namespace) -> int:
    if getattr(args, "stream", False):
        return _predict_stream(args)
    model, cohort, preds = _predict(args)
    frame = _frame(model, preds)
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False)
    print(f"{len(frame)} patients -> {args.out}")
    return 0


def _predict_stream(args: argparse.Namespace) -> int:
    import warnings

    from ..data.stream import CohortStream
    from ..errors import GraphMedError
    from ..train.saved import load_model

    if args.chunk_size < 1:
        raise GraphMedError(f"--chunk-size must be a positive number, got {args.chunk_size}")
    model = load_model(args.model, device=args.device)
    stream = CohortStream(
        args.cohort, chunk_size=args.chunk_size, allow_outside=bool(args.allow_outside_paths)
    )
    n = 0
    with atomic_path(args.out) as tmp:
        for k, chunk in enumerate(stream):
            with warnings.catch_warnings():
                if k:  # the first chunk's compatibility notes stand for all
                    warnings.simplefilter("ignore")
                preds = model.predict(chunk, device=args.device)
            _frame(model, preds).to_csv(tmp, index=False, mode="a", header=k == 0)
            n += len(preds.patient_ids)
    print(f"{n} patients -> {args.out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..metrics import survival_metrics

    model, cohort, preds = _predict(args)
    info = model.info
    # Horizons and IPCW weights need a training distribution: the model's own
    # training endpoint is not stored, so the evaluated cohort's is used.
    metrics = survival_metrics(cohort.time, cohort.event, cohort.time, cohort.event, preds.risk)
    out = {
        "model": str(args.model),
        "cohort": cohort.name,
        "n_patients": cohort.n_patients,
        "trained_on": info.get("training_cohort"),
        "metrics": metrics,
    }
    for k, v in metrics.items():
        if isinstance(v, float):
            print(f"{k:>12s}  {v:.4f}")
    if args.out is not None:
        write_json(args.out, out)
    return 0
