"""``graphmed cohort validate``: read a cohort folder and report what is wrong."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_cohort_path_args, read_cohort_arg


def register(sub) -> None:
    p = sub.add_parser("cohort", help="cohort folder utilities")
    inner = p.add_subparsers(dest="cohort_command", metavar="ACTION")
    inner.required = True
    v = inner.add_parser("validate", help="validate a cohort folder and print its summary")
    v.add_argument("path", type=Path, help="cohort folder")
    v.add_argument(
        "--graphs",
        action="store_true",
        help="also build the patient graphs and count nodes and edges",
    )
    add_cohort_path_args(v)
    v.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    cohort = read_cohort_arg(args.path, args)
    summary = cohort.summary()
    if args.graphs:
        summary["graphs"] = graph_summary(cohort)
    print(json.dumps(summary, indent=2))
    print(f"OK: {args.path} is a valid cohort")
    return 0


def graph_summary(cohort) -> dict:
    """Node and edge counts of the patient graphs (preprocessing fitted on all patients)."""
    from ..data.preprocess import CohortPreprocessor
    from ..graph.build import build_graphs
    from ..graph.relations import RelationGraph

    graphs = build_graphs(cohort, CohortPreprocessor().fit(cohort))
    rel = RelationGraph.from_cohort(cohort)
    nodes = {m: graphs.node_mask[m].sum(1) for m in graphs.modalities}
    edges = 0
    for s, _, t in rel.edge_types_with_intra:
        if s == t and s in graphs.edge_mask:  # a graph modality: its own edges
            edges += int(graphs.edge_mask[s].sum())
            continue
        pair = nodes[s] * nodes[t] - (nodes[s] if s == t else 0)
        edges += int(pair.sum())
    n = len(graphs)
    return {
        "patients": n,
        "node_types": graphs.modalities,
        "edge_types": [list(e) for e in rel.edge_types_with_intra],
        "nodes_per_patient": {m: round(float(v.float().mean()), 2) for m, v in nodes.items()},
        "edges_per_patient": round(edges / max(n, 1), 1),
        "metapaths": [rel.metapath_name(p) for p in rel.enumerate_metapaths(2, 1)],
    }
