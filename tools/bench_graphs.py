"""Graph building throughput: patients per second from a synthetic cohort.

    python tools/bench_graphs.py --patients 10000 --bag 64

Times preprocessing (fit + transform) and tokenisation into cached padded
tensors (``build_graphs``), then materialising PyG ``HeteroData`` objects for
a sample of patients (the data interface; the training path never does this).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphmed.data.preprocess import CohortPreprocessor  # noqa: E402
from graphmed.data.synthetic import make_synthetic_cohort  # noqa: E402
from graphmed.graph.build import build_graphs  # noqa: E402
from graphmed.graph.relations import RelationGraph  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=10000)
    p.add_argument("--bag", type=int, default=64)
    p.add_argument("--sample", type=int, default=1000, help="patients materialised as HeteroData")
    args = p.parse_args(argv)
    cohort = make_synthetic_cohort(
        args.patients, bag_size=(args.bag // 2, args.bag * 3 // 2), seed=0
    )
    t0 = time.perf_counter()
    pre = CohortPreprocessor().fit(cohort)
    t1 = time.perf_counter()
    graphs = build_graphs(cohort, pre, max_instances=args.bag)
    t2 = time.perf_counter()
    rel = RelationGraph.from_cohort(cohort)
    n = min(args.sample, len(graphs))
    data = [graphs.to_heterodata(i, rel) for i in range(n)]
    t3 = time.perf_counter()
    edges = sum(d[k].edge_index.shape[1] for d in data for k in d.edge_types) / n
    print(
        f"patients {len(graphs)}, nodes/patient "
        + ", ".join(
            f"{m} {float(graphs.node_mask[m].sum(1).float().mean()):.1f}" for m in graphs.modalities
        )
    )
    print(f"preprocessing fit: {t1 - t0:.2f} s")
    print(
        f"build_graphs (transform + tokenise + pad): {t2 - t1:.2f} s = {len(graphs) / (t2 - t1):,.0f} patients/s"
    )
    print(
        f"HeteroData materialisation: {n / (t3 - t2):,.0f} patients/s ({edges:,.0f} edges/patient)"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
