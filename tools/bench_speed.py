"""Training and inference speed of graphmed's dense hot path, against PyG and a loop.

For the same patient graphs (synthetic cohort: a tabular, a vector and a bag
modality), one training step (forward + backward + optimiser step) of:

* ``graphmed``: :class:`GraphMedNet` on a padded batch (``PatientGraphs.batch``);
* ``hgt``: a stack of PyG ``HGTConv`` layers (same width, heads, layers) on
  the batched ``HeteroData`` of the same patients, with typed input
  projections and mean readout per type;
* ``loop``: :class:`GraphMedNet` called once per patient in a Python loop.

All three use the same objective (a linear risk head with the Cox loss) and
the same optimiser (AdamW, fused where torch has the kernel), so the
comparison is of the graph computation. Graph collation for PyG is timed
separately (``collate_ms``) and not counted in the step.

Usage::

    python tools/bench_speed.py                         # the issue's reference step
    python tools/bench_speed.py --sweep batch,patients,bag,modalities --json out.json
    python tools/bench_speed.py --device cuda --sweep batch,bag

Peak memory: CUDA ``max_memory_allocated`` on a GPU; on the CPU the growth of
the process's peak resident set during the measurement (``ru_maxrss``), which
is an upper bound that includes allocator caching.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphmed.data.preprocess import CohortPreprocessor  # noqa: E402
from graphmed.data.synthetic import make_synthetic_cohort  # noqa: E402
from graphmed.graph.build import build_graphs  # noqa: E402
from graphmed.graph.relations import RelationGraph  # noqa: E402
from graphmed.losses import cox_ph_loss  # noqa: E402
from graphmed.nn.graphmed_net import GraphMedNet  # noqa: E402
from graphmed.train.trainer import make_adamw  # noqa: E402


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_graphs(n_patients, n_modalities=3, bag=64, seed=0, expr_width=128):
    kinds = [("clinical", ("tabular", 8)), ("expr", ("vector", expr_width)), ("wsi", ("bag", 32))]
    extra = [(f"m{j}", ("vector", 32) if j % 2 else ("bag", 16)) for j in range(3, n_modalities)]
    mods = dict((kinds + extra)[:n_modalities])
    cohort = make_synthetic_cohort(n_patients, mods, seed=seed, bag_size=(bag, bag))
    pre = CohortPreprocessor().fit(cohort)
    graphs = build_graphs(cohort, pre, max_instances=bag)
    return cohort, graphs, RelationGraph.from_cohort(cohort)


class HGTStack(torch.nn.Module):
    """Typed input projections, ``layers`` x HGTConv, mean readout per type."""

    def __init__(self, layouts, metadata, d, heads, layers):
        super().__init__()
        from torch_geometric.nn import HGTConv

        self.inp = torch.nn.ModuleDict(
            {m: torch.nn.Linear(lay.node_dim, d) for m, lay in layouts.items()}
        )
        self.convs = torch.nn.ModuleList(HGTConv(d, d, metadata, heads) for _ in range(layers))
        self.head = torch.nn.Linear(d, 1)

    def forward(self, data):
        from torch_geometric.utils import scatter

        x = {m: self.inp[m](data[m].x) for m in self.inp}
        edges = {k: data[k].edge_index for k in data.edge_types}
        for conv in self.convs:
            out = conv(x, edges)
            x = {m: out[m] if out.get(m) is not None else x[m] for m in x}
        b = data.num_graphs
        pooled = [scatter(x[m], data[m].batch, 0, dim_size=b, reduce="mean") for m in x]
        return self.head(torch.stack(pooled).mean(0)).squeeze(-1)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_steps(step, steps, device):
    """Fastest of ``steps`` timed calls after two warm-up calls, in seconds.

    The fastest call is the figure least disturbed by other work on the
    machine (the project's CPU is shared); on a GPU each call is synchronised.
    Also returns the process CPU time of that call (all threads), which other
    processes on the machine barely change.
    """
    step()  # warm-up
    step()
    times = []
    for _ in range(steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(times)


HGT_MAX_EDGES = 4_000_000
"""Above this many edges per batch PyG's HGTConv is not run (memory: about 5 KB per edge)."""


def bench(
    n_patients=256,
    batch=256,
    bag=64,
    n_modalities=3,
    d=128,
    heads=4,
    layers=2,
    steps=5,
    device="cpu",
    methods=("graphmed", "hgt"),
    seed=0,
    compile_mode=None,
    bag_tokens=None,
    net_options=None,
):
    """One row: step time, throughput and peak memory of each method on one batch."""
    device = torch.device(device)
    torch.manual_seed(seed)
    cohort, graphs, rel = make_graphs(max(n_patients, batch), n_modalities, bag, seed)
    gdev = graphs.to(device)
    idx = torch.arange(batch, device=device)
    row = {
        "patients": len(graphs),
        "batch": batch,
        "bag": bag,
        "bag_tokens": bag_tokens,
        "modalities": n_modalities,
        "nodes": sum(lay.n_nodes for lay in graphs.layouts.values()),
        "d": d,
        "layers": layers,
        "device": str(device),
    }
    net, head, opt = _graphmed(graphs, rel, d, heads, layers, bag_tokens, device, net_options)
    if net_options:
        row["net_options"] = dict(net_options)
    b = gdev.batch(idx)
    forward = net
    if compile_mode:
        row["compile"] = compile_mode
        forward = torch.compile(net, mode=compile_mode)

    def step_dense():
        _train_step(forward, head, opt, b)

    def measure(fn, key):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        rss0 = _maxrss_mb()
        sec, cpu = _time_steps(fn, steps, device)
        row[f"{key}_ms"] = round(sec * 1000, 2)
        row[f"{key}_cpu_ms"] = round(cpu * 1000, 2)
        row[f"{key}_patients_per_s"] = round(batch / sec, 1)
        if device.type == "cuda":
            row[f"{key}_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        else:
            row[f"{key}_peak_rss_growth_mb"] = round(_maxrss_mb() - rss0, 1)

    if "graphmed" in methods:
        measure(step_dense, "graphmed")
        net.eval()
        with torch.no_grad():
            sec, _ = _time_steps(lambda: forward(b), steps, device)
        row["graphmed_infer_patients_per_s"] = round(batch / sec, 1)
    if "hgt" in methods:
        edges = _hgt_edges(graphs, rel, batch)
        row["hgt_edges"] = edges
        if edges > HGT_MAX_EDGES:
            row["hgt_ms"] = f"not run ({edges:,} edges)"
        else:
            _bench_hgt(graphs, rel, batch, d, heads, layers, device, measure, row)
            row["speedup_vs_hgt"] = round(row["hgt_ms"] / row["graphmed_ms"], 1)
            row["cpu_time_ratio_vs_hgt"] = round(row["hgt_cpu_ms"] / row["graphmed_cpu_ms"], 1)
    if "loop" in methods:
        singles = [gdev.batch(idx[i : i + 1]) for i in range(batch)]

        def step_loop():
            net.train()
            risks = torch.cat([head(net(s).embedding).squeeze(-1) for s in singles])
            loss = cox_ph_loss(risks, b.time, b.event)
            opt.zero_grad()
            loss.backward()
            opt.step()

        measure(step_loop, "loop")
        row["speedup_vs_loop"] = round(row["loop_ms"] / row["graphmed_ms"], 1)
    return row


def _graphmed(graphs, rel, d, heads, layers, bag_tokens, device, net_options=None):
    net = GraphMedNet(
        graphs.layouts,
        rel.edge_types,
        rel.enumerate_metapaths(2, 1),
        d=d,
        heads=heads,
        layers=layers,
        bag_tokens=bag_tokens,
        **(net_options or {}),
    ).to(device)
    net.fit_priors(graphs)
    head = torch.nn.Linear(d, 1).to(device)
    opt = make_adamw(list(net.parameters()) + list(head.parameters()), lr=1e-4)
    return net, head, opt


def _train_step(forward, head, opt, b):
    forward.train()
    risk = head(forward(b).embedding).squeeze(-1)
    loss = cox_ph_loss(risk, b.time, b.event)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _hgt_edges(graphs, rel, batch):
    """Edges of the batched HeteroData, counted from the node counts (no collation)."""
    pairs = [(m, m) for m in graphs.layouts] + [(s, t) for s, _, t in rel.edge_types]
    counts = {m: graphs.node_mask[m][:batch].sum(1) for m in graphs.layouts}
    # Intra-modal edges join every pair of distinct nodes (no self-loops).
    return int(sum((counts[s] * (counts[t] - int(s == t))).sum() for s, t in pairs))


def _bench_hgt(graphs, rel, batch, d, heads, layers, device, measure, row):
    from torch_geometric.data import Batch

    data_list = [graphs.to_heterodata(i, rel) for i in range(batch)]
    t0 = time.perf_counter()
    hb = Batch.from_data_list(data_list)
    row["collate_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    row["hgt_edges"] = int(sum(hb[k].edge_index.shape[1] for k in hb.edge_types))
    hb = hb.to(device)
    hgt = HGTStack(graphs.layouts, hb.metadata(), d, heads, layers).to(device)
    opt_h = make_adamw(list(hgt.parameters()), lr=1e-4)

    def step_hgt():
        loss = cox_ph_loss(hgt(hb), hb.time, hb.event)
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()

    measure(step_hgt, "hgt")


def bench_epoch(
    n_patients,
    batch=256,
    bag=64,
    d=128,
    heads=4,
    layers=2,
    device="cpu",
    bag_tokens=None,
    max_batches=20,
    seed=0,
    net_options=None,
    **_,
):
    """Throughput over a cohort of ``n_patients``: graph building, training, inference.

    Training and inference run on random batches drawn from the whole cohort
    (at most ``max_batches`` of each, so 100k patients fit in a benchmark run);
    the patients/s figure is the batch size over the mean time of one batch.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    cohort, graphs, rel = make_graphs(n_patients, 3, bag, seed)
    build_s = time.perf_counter() - t0
    gdev = graphs.to(device)
    net, head, opt = _graphmed(graphs, rel, d, heads, layers, bag_tokens, device, net_options)
    order = torch.randperm(n_patients, device=device)
    batches = [order[i : i + batch] for i in range(0, n_patients, batch)][:max_batches]
    _train_step(net, head, opt, gdev.batch(batches[0]))  # warm-up
    rss0 = _maxrss_mb()
    _sync(device)
    t0 = time.perf_counter()
    for idx in batches:
        _train_step(net, head, opt, gdev.batch(idx))
    _sync(device)
    train_s = (time.perf_counter() - t0) / len(batches)
    net.eval()
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for idx in batches:
            net(gdev.batch(idx))
    _sync(device)
    infer_s = (time.perf_counter() - t0) / len(batches)
    return {
        "patients": n_patients,
        "batch": batch,
        "bag": bag,
        "bag_tokens": bag_tokens,
        "device": str(device),
        "build_s": round(build_s, 2),
        "build_patients_per_s": round(n_patients / build_s),
        "batches_timed": len(batches),
        "train_patients_per_s": round(batch / train_s, 1),
        "infer_patients_per_s": round(batch / infer_s, 1),
        "peak_rss_mb": round(_maxrss_mb()),
        "rss_growth_in_steps_mb": round(_maxrss_mb() - rss0, 1),
    }


SWEEPS = {
    "batch": ("batch", [32, 64, 128, 256, 512]),
    "patients": ("n_patients", [1000, 10000, 100000]),
    "bag": ("bag", [16, 64, 256, 1024, 4096]),
    "modalities": ("n_modalities", [2, 3, 4, 6, 8]),
}


def to_markdown(rows):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _sweep_kwargs(name, value, base):
    kw = dict(base)
    if name in ("bag", "modalities"):
        kw["methods"] = tuple(m for m in kw["methods"] if m != "loop")
    if name == "bag" and value > 64 and not kw.get("bag_tokens"):
        # Without pooling the bag's dense attention is quadratic in its size.
        kw["bag_tokens"] = 16
    key = SWEEPS[name][0]
    kw[key] = value
    if key == "batch":
        kw["n_patients"] = value
    return kw


def _net_options(pairs, parser) -> dict:
    """``["completion=zero", "dropout=0"]`` -> GraphMedNet keyword arguments (YAML values)."""
    import inspect

    import yaml

    known = set(inspect.signature(GraphMedNet).parameters) - {
        "layouts",
        "edge_types",
        "metapaths",
        "d",
        "heads",
        "layers",
        "bag_tokens",
    }
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            parser.error(f"--net {pair!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--bag", type=int, default=64)
    p.add_argument("--bag-tokens", type=int, default=None, help="pool each bag to this many nodes")
    p.add_argument("--modalities", type=int, default=3, help="modalities of the reference row")
    p.add_argument(
        "--net",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GraphMedNet option for graphmed, e.g. completion=zero, metapath_level=false",
    )
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--methods", default="graphmed,hgt,loop")
    p.add_argument("--sweep", default="", help="comma list of: " + ", ".join(SWEEPS))
    p.add_argument("--max-batches", type=int, default=20, help="batches timed per patients row")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--json", default=None, help="write all rows to this JSON file")
    p.add_argument(
        "--compile", default=None, help="torch.compile mode for graphmed, e.g. reduce-overhead"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {
        "device": args.device,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    print(json.dumps(env))
    base = dict(
        batch=args.batch,
        bag=args.bag,
        d=args.d,
        layers=args.layers,
        steps=args.steps,
        device=args.device,
        methods=tuple(args.methods.split(",")),
        compile_mode=args.compile,
        bag_tokens=args.bag_tokens,
        net_options=_net_options(args.net, p),
    )
    reference = bench(n_patients=args.batch, n_modalities=args.modalities, **base)
    rows = [{"sweep": "reference", **reference}]
    print(to_markdown(rows), flush=True)
    for name in filter(None, args.sweep.split(",")):
        if name not in SWEEPS:
            p.error(f"unknown sweep '{name}'; choose from {', '.join(SWEEPS)}")
        for v in SWEEPS[name][1]:
            kw = _sweep_kwargs(name, v, base)
            if name == "patients":
                row = bench_epoch(max_batches=args.max_batches, **kw)
            else:
                row = bench(**kw)
            rows.append({"sweep": name, **row})
            print(to_markdown([rows[-1]]), flush=True)
    if args.json:
        from graphmed._atomic import write_json

        write_json(args.json, {"env": env, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
