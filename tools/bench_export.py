"""Time and memory of exporting the embeddings of a large synthetic cohort.

    python tools/bench_export.py --patients 100000
    python tools/bench_export.py --patients 10000
    python tools/bench_export.py --patients 100000 --chunk-size 100000   # one chunk

Trains a tiny model on a small synthetic cohort (not timed), draws a cohort of
``--patients`` patients with every modality kind and missingness, then runs
:func:`graphmed.export_embeddings` on it and reports wall time, patients per
second, the file size, and memory:

* ``rss_start``: resident memory when the export starts (the process with the
  cohort in memory: the cohort is an input, held whole by ``read_cohort``);
* ``rss_peak_export``: the highest resident memory seen while exporting
  (sampled every 10 ms from ``/proc/self/statm``), and ``export_extra`` =
  peak minus start, the export's own working set, which chunking bounds;
* ``ru_maxrss``: the peak of the whole process (``resource.getrusage``),
  cohort generation included.

Run each size in its own process, so that one run's peak does not hide
another's. ``--json FILE`` appends the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphmed  # noqa: E402
from graphmed.train.config import load_experiment  # noqa: E402

MODEL = [
    "model.hidden=32",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=2",
    "train.progress=false",
    "train.ensemble=1",  # one model: a 32-wide embedding, as recorded in docs/export.md
]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Highest resident set size seen by a sampling thread while the block runs."""

    def __init__(self, every: float = 0.01):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--train-patients", type=int, default=200)
    p.add_argument("--per-modality", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="Parquet file (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="append the figures as a JSON line")
    args = p.parse_args(argv)
    mib = 2**20

    t0 = time.perf_counter()
    train = graphmed.make_synthetic_cohort(
        args.train_patients, missing={"expr": 0.3, "wsi": 0.3}, seed=0
    )
    model, _ = graphmed.fit_final(train, load_experiment(None, MODEL))
    t1 = time.perf_counter()
    cohort = graphmed.make_synthetic_cohort(
        args.patients, missing={"expr": 0.3, "wsi": 0.4}, seed=1, name="bench"
    )
    t2 = time.perf_counter()
    instances = sum(len(a) for a in cohort.data["wsi"].values())
    print(
        f"trained a d=32 model on {args.train_patients} patients in {t1 - t0:.1f} s; drew "
        f"{args.patients:,} patients in {t2 - t1:.1f} s ({instances:,} wsi instances of "
        f"width 32 = {instances * 32 * 4 / mib:,.0f} MiB of bags)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "embeddings.parquet"
        start_rss = rss_bytes()
        with PeakRSS() as peak:
            summary = graphmed.export_embeddings(
                model,
                cohort,
                out,
                per_modality=args.per_modality,
                chunk_size=args.chunk_size,
                batch_size=args.batch_size,
                progress=False,
            )
    figures = {
        "patients": args.patients,
        "chunk_size": args.chunk_size,
        "batch_size": args.batch_size,
        "per_modality": args.per_modality,
        "columns": summary.n_columns,
        "wall_s": round(summary.seconds, 2),
        "patients_per_s": round(args.patients / summary.seconds),
        "file_mib": round(summary.n_bytes / mib, 1),
        "rss_start_mib": round(start_rss / mib),
        "rss_peak_export_mib": round(peak.peak / mib),
        "export_extra_mib": round((peak.peak - start_rss) / mib),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch_threads": __import__("torch").get_num_threads(),
    }
    print(
        f"export of {args.patients:,} patients, chunks of {args.chunk_size}: "
        f"{figures['wall_s']} s = {figures['patients_per_s']:,} patients/s, "
        f"{summary.n_columns} columns, {figures['file_mib']} MiB file"
    )
    print(
        f"RSS at start {figures['rss_start_mib']:,} MiB, peak during export "
        f"{figures['rss_peak_export_mib']:,} MiB (+{figures['export_extra_mib']:,} MiB), "
        f"process peak (ru_maxrss) {figures['ru_maxrss_mib']:,} MiB"
    )
    if args.json is not None:
        with open(args.json, "a") as f:
            f.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
