"""Training and inference speed of graphmed's dense hot path, against PyG and a loop.

For the same patient graphs (synthetic cohort: a tabular, a vector and a bag
modality), one training step (forward + backward + optimiser step) of:

* ``graphmed``: :class:`GraphMedNet` on a padded batch (``PatientGraphs.batch``);
* ``hgt``: a stack of PyG ``HGTConv`` layers (same width, heads, layers) on
  the batched ``HeteroData`` of the same patients, with typed input
  projections and mean readout per type;
* ``loop``: :class:`GraphMedNet` called once per patient in a Python loop.

All three use the same objective (a linear risk head with the Cox loss), so
the comparison is of the graph computation. Graph collation for PyG is timed
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
    step()  # warm-up
    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


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
):
    device = torch.device(device)
    torch.manual_seed(seed)
    cohort, graphs, rel = make_graphs(max(n_patients, batch), n_modalities, bag, seed)
    gdev = graphs.to(device)
    idx = torch.arange(batch, device=device)
    row = {
        "patients": len(graphs),
        "batch": batch,
        "bag": bag,
        "modalities": n_modalities,
        "d": d,
        "layers": layers,
        "device": str(device),
    }
    metapaths = rel.enumerate_metapaths(2, 1)
    net = GraphMedNet(
        graphs.layouts, rel.edge_types, metapaths, d=d, heads=heads, layers=layers
    ).to(device)
    net.fit_priors(graphs)
    head = torch.nn.Linear(d, 1).to(device)
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=1e-4)
    b = gdev.batch(idx)
    forward = net
    if compile_mode:
        row["compile"] = compile_mode
        forward = torch.compile(net, mode=compile_mode)

    def step_dense():
        net.train()
        risk = head(forward(b).embedding).squeeze(-1)
        loss = cox_ph_loss(risk, b.time, b.event)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def measure(fn, key):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        rss0 = _maxrss_mb()
        sec = _time_steps(fn, steps, device)
        row[f"{key}_ms"] = round(sec * 1000, 2)
        row[f"{key}_patients_per_s"] = round(batch / sec, 1)
        if device.type == "cuda":
            row[f"{key}_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        else:
            row[f"{key}_peak_rss_growth_mb"] = round(_maxrss_mb() - rss0, 1)

    if "graphmed" in methods:
        measure(step_dense, "graphmed")
        net.eval()
        with torch.no_grad():
            sec = _time_steps(lambda: forward(b), steps, device)
        row["graphmed_infer_patients_per_s"] = round(batch / sec, 1)
    if "hgt" in methods:
        from torch_geometric.data import Batch

        data_list = [graphs.to_heterodata(i, rel) for i in range(batch)]
        t0 = time.perf_counter()
        hb = Batch.from_data_list(data_list)
        row["collate_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        row["hgt_edges"] = int(sum(hb[k].edge_index.shape[1] for k in hb.edge_types))
        hb = hb.to(device)
        hgt = HGTStack(graphs.layouts, hb.metadata(), d, heads, layers).to(device)
        opt_h = torch.optim.AdamW(hgt.parameters(), lr=1e-4)

        def step_hgt():
            loss = cox_ph_loss(hgt(hb), hb.time, hb.event)
            opt_h.zero_grad()
            loss.backward()
            opt_h.step()

        measure(step_hgt, "hgt")
        row["speedup_vs_hgt"] = round(row["hgt_ms"] / row["graphmed_ms"], 1)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--bag", type=int, default=64)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--methods", default="graphmed,hgt,loop")
    p.add_argument("--sweep", default="", help="comma list of: " + ", ".join(SWEEPS))
    p.add_argument("--json", default=None, help="write all rows to this JSON file")
    p.add_argument(
        "--compile", default=None, help="torch.compile mode for graphmed, e.g. reduce-overhead"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
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
    )
    rows = [{"sweep": "reference", **bench(n_patients=args.batch, **base)}]
    print(to_markdown(rows), flush=True)
    for name in filter(None, args.sweep.split(",")):
        key, values = SWEEPS[name]
        for v in values:
            kw = dict(base, methods=("graphmed",) if name in ("patients",) else base["methods"])
            if name in ("bag", "modalities") and "loop" in kw["methods"]:
                kw["methods"] = tuple(m for m in kw["methods"] if m != "loop")
            kw[key] = v
            if key == "batch":
                kw["n_patients"] = v
            if key == "n_patients":
                kw.setdefault("n_patients", v)
            row = {"sweep": name, **bench(**kw)}
            rows.append(row)
            print(to_markdown([row]).split("\n")[-1], flush=True)
    if args.json:
        from graphmed._atomic import write_json

        write_json(args.json, {"env": env, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
