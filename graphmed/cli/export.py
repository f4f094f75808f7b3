"""``graphmed export``: a saved model turns a cohort into a Parquet table of embeddings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import GraphMedError
from ._common import add_cohort_path_args, read_cohort_arg


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="patient embeddings of a cohort (Parquet), from a saved model",
        description=(
            "Apply a saved model to a cohort, with any pattern of missing modalities, and "
            "write one row per patient: embeddings, present/completed flags, risk or class "
            "probabilities, attention weights. See docs/export.md."
        ),
    )
    p.add_argument(
        "--model", type=Path, required=True, help="model folder (RUN/model) or the run folder RUN"
    )
    p.add_argument("--cohort", type=Path, required=True, help="cohort folder")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument(
        "--per-modality", action="store_true", help="add each modality's embedding columns"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="N",
        help="patients per chunk; memory grows with it (default 4096)",
    )
    p.add_argument("--batch-size", type=int, default=1024, help="patients per forward pass")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    p.add_argument(
        "--max-missing-features",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="largest share of a table's features that may be missing and filled (default 0.5)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="read the cohort chunk by chunk (its tables in Parquet), so memory follows "
        "--chunk-size and not the cohort; for cohorts larger than memory",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cohort_path_args(p)
    p.set_defaults(func=run_export)


def model_dir(path: Path) -> Path:
    """The model folder: ``path`` itself, or ``path/model`` for a run folder."""
    if not path.exists():
        raise GraphMedError(f"--model '{path}' does not exist; give RUN/model (graphmed train)")
    if not (path / "model.json").exists() and (path / "model" / "model.json").exists():
        return path / "model"
    return path


def run_export(args: argparse.Namespace) -> int:
    import warnings

    from ..export import export_embeddings
    from ..train.compat import CompatibilityWarning
    from ..train.saved import DEFAULT_CHUNK_SIZE, load_model

    if args.chunk_size is not None and args.chunk_size < 1:
        raise GraphMedError(f"--chunk-size must be a positive number, got {args.chunk_size}")
    if args.out.is_dir():
        raise GraphMedError(
            f"--out '{args.out}' is a folder; give a file such as embeddings.parquet"
        )
    model = load_model(model_dir(args.model), device=args.device)
    if args.stream:
        from ..data.stream import CohortStream

        cohort = CohortStream(
            args.cohort,
            chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
            allow_outside=bool(args.allow_outside_paths),
        )
    else:
        cohort = read_cohort_arg(args.cohort, args)
    with warnings.catch_warnings():
        # The report is printed below, once, as notes rather than Python warnings.
        warnings.simplefilter("ignore", CompatibilityWarning)
        summary = export_embeddings(
            model,
            cohort,
            args.out,
            per_modality=args.per_modality,
            chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
            batch_size=args.batch_size,
            device=args.device,
            max_missing_features=args.max_missing_features,
            progress=not args.no_progress,
        )
    for line in summary.report.lines():
        print(f"note: {line}", file=sys.stderr)
    print(
        f"{summary.n_patients} patients x {summary.n_columns} columns "
        f"(embedding dim {summary.embedding_dim}) -> {summary.path} "
        f"({summary.n_bytes / 2**20:.1f} MiB, {summary.seconds:.1f} s)"
    )
    return 0
