"""Time :func:`graphmed.data.synthetic.make_synthetic_cohort` and report peak memory.

Usage: python tools/bench_synthetic.py [N ...]   (default: 10000 100000)

Each size runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is
its own and not the largest size's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def _run_one(n_patients: int) -> dict:
    from graphmed.data.synthetic import make_synthetic_cohort

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cohort = make_synthetic_cohort(
        n_patients, missing={"expr": 0.3, "wsi": 0.3}, missing_mechanism="mar", seed=0
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    instances = sum(len(a) for a in cohort.data["wsi"].values())
    return {
        "patients": n_patients,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kb / 1024, 1),
        "rss_before_mib": round(base / 1024, 1),
        "bag_instances": instances,
    }


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--one":
        print(json.dumps(_run_one(int(argv[1]))))
        return
    sizes = [int(a) for a in argv] or [10_000, 100_000]
    print(
        f"{'patients':>9} {'seconds':>8} {'peak RSS MiB':>13} {'(import) MiB':>13} {'instances':>10}"
    )
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], check=True, capture_output=True, text=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['patients']:>9} {r['seconds']:>8.2f} {r['peak_rss_mib']:>13.1f} "
            f"{r['rss_before_mib']:>13.1f} {r['bag_instances']:>10}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
