"""Streamed export of a cohort folder larger than memory: time, patients/s and peak RSS.

    python tools/bench_stream.py --patients 100000 --folder /tmp/large100k
    python tools/bench_stream.py --patients 1000000 --folder /tmp/large1m

Writes (once; reused when ``--folder`` already holds it) a synthetic cohort
folder of ``--patients`` patients chunk by chunk with
:func:`graphmed.data.large.write_large_cohort` (clinical table and a 64-gene
vector in Parquet, one patient in ten with a bag of 4-16 patches), trains a
small model on 300 other patients (not timed), then exports the folder with
``graphmed.export_embeddings(model, CohortStream(folder), out)`` and reports
the wall time, patients per second and the process's peak resident memory
while exporting (sampled every 10 ms from ``/proc/self/statm``). Run each size
in its own process. ``--json FILE`` appends the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import PeakRSS, rss_bytes  # noqa: E402

import graphmed  # noqa: E402
from graphmed.data.large import LARGE_MODALITIES, write_large_cohort  # noqa: E402
from graphmed.data.stream import CohortStream  # noqa: E402
from graphmed.train.config import load_experiment  # noqa: E402

MODEL = [
    "model.hidden=32",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=2",
    "train.progress=false",
    "train.device=cpu",
    "train.ensemble=1",  # one model, as recorded in the docs
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument("--folder", type=Path, required=True, help="the large cohort (made if absent)")
    p.add_argument("--chunk-size", type=int, default=8192, help="patients per streamed chunk")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--json", type=Path, default=None, help="append the figures as a JSON line")
    args = p.parse_args(argv)
    mib = 2**20
    if not (args.folder / "cohort.yaml").exists():
        t0 = time.perf_counter()
        write_large_cohort(args.folder, args.patients, chunk_size=50_000, seed=1)
        print(
            f"wrote {args.patients:,} patients to {args.folder} in {time.perf_counter() - t0:.0f} s"
        )
    train = graphmed.make_synthetic_cohort(
        300, LARGE_MODALITIES, missing={"expr": 0.3, "wsi": 0.5}, bag_size=(4, 16), seed=0
    )
    model, _ = graphmed.fit_final(train, load_experiment(None, MODEL))
    stream = CohortStream(args.folder, chunk_size=args.chunk_size)
    if len(stream) != args.patients:
        print(f"note: {args.folder} holds {len(stream):,} patients, not {args.patients:,}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "embeddings.parquet"
        start_rss = rss_bytes()
        with PeakRSS() as peak:
            summary = graphmed.export_embeddings(
                model,
                stream,
                out,
                chunk_size=args.chunk_size,
                batch_size=args.batch_size,
                progress=False,
            )
        n_bytes = out.stat().st_size
    figures = {
        "patients": summary.n_patients,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "wall_s": round(summary.seconds, 1),
        "patients_per_s": round(summary.n_patients / summary.seconds),
        "file_mib": round(n_bytes / mib, 1),
        "rss_start_mib": round(start_rss / mib),
        "rss_peak_export_mib": round(peak.peak / mib),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch_threads": __import__("torch").get_num_threads(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))
    if args.json is not None:
        with open(args.json, "a") as f:
            f.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
