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
    python tools/bench_speed.py --sweep batch,patients,bag,modalities --save out.json
    python tools/bench_speed.py --device cuda --sweep batch,bag
    python tools/bench_speed.py --bag-tokens 16 --hgt-input pooled   # HGTConv on the pooled graph
    python tools/bench_speed.py --flops      # FLOPs of forward + backward, no timing
    python tools/bench_speed.py --profile    # torch.profiler's top ops of a training step
    python tools/bench_speed.py --adamw      # the optimiser step alone, per AdamW implementation
    python tools/bench_speed.py --equal-input   # graphmed vs HGTConv on equal input, batch 32-1024

Node counts in a row: ``nodes`` is the node slots per patient before pooling
(what ``HGTConv`` sees by default), ``graph_nodes`` the slots graphmed's
attention runs over (bags pooled to ``bag_tokens``, every modality at least
as many slots as there are prompt nodes), ``hgt_nodes`` the slots of the
graphs ``HGTConv`` ran on.

Peak memory: CUDA ``max_memory_allocated`` on a GPU; on the CPU the growth of
the process's peak resident set during the measurement (``ru_maxrss``), which
is an upper bound that includes allocator caching.

``GRAPHMED_SRC=DIR`` imports graphmed from another checkout (``git archive
COMMIT | tar -x -C DIR``), to run the same measurement on older code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.environ.get("GRAPHMED_SRC") or str(Path(__file__).resolve().parents[1]))

from graphmed.data.preprocess import CohortPreprocessor  # noqa: E402
from graphmed.data.synthetic import make_synthetic_cohort  # noqa: E402
from graphmed.graph.build import build_graphs  # noqa: E402
from graphmed.graph.relations import RelationGraph  # noqa: E402
from graphmed.losses import cox_ph_loss  # noqa: E402
from graphmed.nn.graphmed_net import GraphMedNet  # noqa: E402

try:
    from graphmed.train.trainer import make_adamw  # noqa: E402
except ImportError:  # code from before the fused AdamW (GRAPHMED_SRC)

    def make_adamw(params, **kwargs):
        return torch.optim.AdamW(params, **kwargs)


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
    """Typed input projections, ``layers`` x HGTConv, mean readout per type.

    With ``bag_tokens`` set, each bag's instances go through graphmed's own
    ``BagEncoder`` (projection, then gated-attention pooling to ``bag_tokens``
    nodes) instead of a linear projection, so ``HGTConv`` runs on the graph
    graphmed runs on. ``forward`` then takes the padded instances (``bags``:
    modality -> ``(x (B, N, f), mask (B, N))``) and a ``data`` collated from
    :func:`pooled_topology`.
    """

    def __init__(self, layouts, metadata, d, heads, layers, bag_tokens=None):
        super().__init__()
        from torch_geometric.nn import HGTConv

        from graphmed.nn.bag_encoder import BagEncoder

        self.inp = torch.nn.ModuleDict(
            {
                m: BagEncoder(lay.node_dim, d, bag_tokens)
                if bag_tokens and lay.kind == "bag"
                else torch.nn.Linear(lay.node_dim, d)
                for m, lay in layouts.items()
            }
        )
        self.convs = torch.nn.ModuleList(HGTConv(d, d, metadata, heads) for _ in range(layers))
        self.head = torch.nn.Linear(d, 1)

    def forward(self, data, bags=None):
        from torch_geometric.utils import scatter

        x = {}
        for m, inp in self.inp.items():
            if bags and m in bags:
                h, mask = inp(*bags[m])
                x[m] = h[mask]  # patient-major: the node order of the batched HeteroData
            else:
                x[m] = inp(data[m].x)
        edges = {k: data[k].edge_index for k in data.edge_types}
        for conv in self.convs:
            out = conv(x, edges)
            x = {m: out[m] if out.get(m) is not None else x[m] for m in x}
        b = data.num_graphs
        pooled = [scatter(x[m], data[m].batch, 0, dim_size=b, reduce="mean") for m in x]
        return self.head(torch.stack(pooled).mean(0)).squeeze(-1)


def pooled_topology(graphs, tokens):
    """``graphs`` with every bag cut to ``tokens`` node slots, all real where the bag is present.

    The shape of graphmed's graph after ``BagEncoder`` pools a bag (its mask
    is ``mask.any(1)`` over the tokens). The first ``tokens`` instances stay
    in ``x`` only as placeholders: :class:`HGTStack` replaces the bag nodes'
    features by the pooled embeddings of all the instances.
    """
    x, mask, layouts = dict(graphs.x), dict(graphs.node_mask), dict(graphs.layouts)
    for m, lay in graphs.layouts.items():
        if lay.kind != "bag":
            continue
        pad = max(0, tokens - lay.n_nodes)
        x[m] = torch.nn.functional.pad(graphs.x[m][:, :tokens], (0, 0, 0, pad))
        mask[m] = graphs.node_mask[m].any(1, keepdim=True).expand(-1, tokens).contiguous()
        names = [f"token_{j}" for j in range(tokens)]
        layouts[m] = dataclasses.replace(lay, n_nodes=tokens, node_names=names)
    return dataclasses.replace(graphs, layouts=layouts, x=x, node_mask=mask)


def graph_nodes(layouts, bag_tokens=None, n_prompts=0) -> int:
    """Node slots per patient in graphmed's padded graph.

    Bags count ``bag_tokens`` slots when pooled; every modality counts at
    least ``n_prompts`` (prompt completion pads a modality to its prompts).
    """
    return sum(
        max(bag_tokens if bag_tokens and lay.kind == "bag" else lay.n_nodes, n_prompts)
        for lay in layouts.values()
    )


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

METHODS = ("graphmed", "hgt", "loop")
MEASURES = ("time", "flops", "profile", "adamw")
HGT_INPUTS = ("instances", "pooled")
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


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
    measure="time",
    hgt_input="instances",
    top=15,
    hgt_max_edges=None,
):
    """One row: what ``measure`` asks for, for each method on one batch.

    Args:
        measure: ``"time"`` (step time, throughput, peak memory), ``"flops"``
            (forward + backward FLOPs, ``FlopCounterMode``), ``"profile"``
            (``torch.profiler``'s ``top`` ops over ``steps`` steps) or
            ``"adamw"`` (graphmed's optimiser step alone, per implementation).
        hgt_input: ``"instances"``: ``HGTConv`` sees a node per bag instance;
            ``"pooled"``: the bag pooled to ``bag_tokens`` nodes, as in graphmed.
        hgt_max_edges: ``HGTConv`` is not run on a batch with more edges
            (default ``HGT_MAX_EDGES``).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got '{measure}'")
    if hgt_input not in HGT_INPUTS:
        raise ValueError(f"hgt_input must be one of {HGT_INPUTS}, got '{hgt_input}'")
    if hgt_input == "pooled" and not bag_tokens:
        raise ValueError("hgt_input='pooled' needs bag_tokens, the size the bags are pooled to")
    device = torch.device(device)
    torch.manual_seed(seed)
    cohort, graphs, rel = make_graphs(max(n_patients, batch), n_modalities, bag, seed)
    gdev = graphs.to(device)
    idx = torch.arange(batch, device=device)
    net, head, opt = _graphmed(graphs, rel, d, heads, layers, bag_tokens, device, net_options)
    prompts = net.n_prompts if getattr(net, "completion", None) is not None else 0
    row = {
        "patients": len(graphs),
        "batch": batch,
        "bag": bag,
        "bag_tokens": bag_tokens,
        "modalities": n_modalities,
        "nodes": sum(lay.n_nodes for lay in graphs.layouts.values()),
        "graph_nodes": graph_nodes(graphs.layouts, bag_tokens, prompts),
        "d": d,
        "layers": layers,
        "device": str(device),
    }
    if measure != "time":
        row["measure"] = measure
    if net_options:
        row["net_options"] = dict(net_options)
    b = gdev.batch(idx)
    forward = net
    if compile_mode:
        row["compile"] = compile_mode
        forward = torch.compile(net, mode=compile_mode)
    if measure == "adamw":
        _train_step(forward, head, opt, b, optimise=False)  # gradients for the optimiser
        params = [p for p in (*net.parameters(), *head.parameters()) if p.grad is not None]
        row.update(_bench_adamw(params, steps, device))
        return row

    def step_dense(optimise=True):
        _train_step(forward, head, opt, b, optimise)

    def loop_step():
        singles = [gdev.batch(idx[i : i + 1]) for i in range(batch)]

        def step_loop(optimise=True):
            net.train()
            risks = torch.cat([head(net(s).embedding).squeeze(-1) for s in singles])
            loss = cox_ph_loss(risks, b.time, b.event)
            opt.zero_grad()
            loss.backward()
            if optimise:
                opt.step()

        return step_loop

    makers = {
        "graphmed": lambda: step_dense,
        "hgt": lambda: _hgt_step(
            graphs, rel, b, d, heads, layers, device, row, hgt_input, bag_tokens, hgt_max_edges
        ),
        "loop": loop_step,
    }
    for key in (m for m in METHODS if m in methods):
        step = makers[key]()  # built just before it runs, so peak memory is its own
        if step is None:  # HGTConv above HGT_MAX_EDGES
            continue
        if measure == "time":
            _measure_time(step, key, row, steps, device)
            if key == "graphmed":
                net.eval()
                with torch.no_grad():
                    sec, _ = _time_steps(lambda: forward(b), steps, device)
                row["graphmed_infer_patients_per_s"] = round(batch / sec, 1)
        elif measure == "flops":
            row.update(_count_flops(step, key))
        else:
            row.update(_profile(step, key, steps, device, top))
    if "hgt_ms" in row and "graphmed_ms" in row:
        row["speedup_vs_hgt"] = round(row["hgt_ms"] / row["graphmed_ms"], 1)
        row["cpu_time_ratio_vs_hgt"] = round(row["hgt_cpu_ms"] / row["graphmed_cpu_ms"], 1)
    if "loop_ms" in row and "graphmed_ms" in row:
        row["speedup_vs_loop"] = round(row["loop_ms"] / row["graphmed_ms"], 1)
    return row


def _measure_time(step, key, row, steps, device):
    """Step time (wall and process CPU), throughput and peak memory of one method."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _maxrss_mb()
    sec, cpu = _time_steps(step, steps, device)
    row[f"{key}_ms"] = round(sec * 1000, 2)
    row[f"{key}_cpu_ms"] = round(cpu * 1000, 2)
    row[f"{key}_patients_per_s"] = round(row["batch"] / sec, 1)
    if device.type == "cuda":
        row[f"{key}_peak_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    else:
        row[f"{key}_peak_rss_growth_mb"] = round(_maxrss_mb() - rss0, 1)


def _count_flops(step, key):
    """FLOPs of one forward + backward (no optimiser step), counted by ``FlopCounterMode``.

    It counts the ops torch has FLOP formulas for (matrix products,
    attention, convolutions); elementwise ops add none, and neither do PyG's
    scatter and gather, so an ``hgt`` count is a lower bound.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(optimise=False)
    by_op = counter.get_flop_counts().get("Global", {})
    return {
        f"{key}_flops": counter.get_total_flops(),
        f"{key}_gflop": round(counter.get_total_flops() / 1e9, 2),
        f"{key}_flops_by_op": {str(op): int(n) for op, n in by_op.items()},
    }


def _profile(step, key, steps, device, top):
    """``torch.profiler`` over ``steps`` training steps after two warm-ups: the ``top`` ops.

    Ops are ranked by self CPU time; the shares are of the total self CPU
    time of all ops, and the times are per step.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    step()
    step()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = []
    for e in events[:top]:
        op = {
            "op": e.key,
            "calls": e.count // steps,
            "self_cpu_ms": round(e.self_cpu_time_total / 1000 / steps, 2),
            "self_cpu_share": round(e.self_cpu_time_total / total, 3),
        }
        if device.type == "cuda":
            dev = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
            op["self_device_ms"] = round(dev / 1000 / steps, 2)
        ops.append(op)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    counts = _op_counts(prof, device)
    return {
        **{f"{key}_{name}": round(n / steps, 1) for name, n in counts.items()},
        f"{key}_profile_steps": steps,
        f"{key}_profile_self_cpu_ms": round(total / 1000 / steps, 1),
        f"{key}_profile_matmul_share": round(matmul / total, 3),
        f"{key}_profile_top": ops,
    }


NO_KERNEL = {
    f"aten::{op}"
    for op in (
        "view _unsafe_view as_strided transpose t permute expand expand_as select slice "
        "unsqueeze squeeze detach alias split chunk unbind narrow empty empty_like "
        "empty_strided resolve_conj resolve_neg lift_fresh reshape view_as set_ "
        "is_nonzero item _local_scalar_dense"
    ).split()
}
"""aten ops that only make views or allocate: no kernel on a GPU."""


def _op_counts(prof, device) -> dict[str, int]:
    """Operator counts over the profiled steps.

    ``leaf_ops``: aten ops that call no other aten op and do compute (views and
    allocations left out): on a GPU each launches at least one kernel, so it
    is the CPU's stand-in for a launch count. ``kernels`` (CUDA only): the
    device kernels and copies the profiler saw.
    """
    from torch.autograd import DeviceType

    leaf = 0
    kernels = 0
    for e in prof.events():
        if getattr(e, "device_type", DeviceType.CPU) == DeviceType.CUDA:
            kernels += 1
            continue
        if not e.name.startswith("aten::") or e.name in NO_KERNEL:
            continue
        if not any(c.name.startswith("aten::") for c in e.cpu_children):
            leaf += 1
    out = {"leaf_ops_per_step": leaf}
    if device.type == "cuda":
        out["kernels_per_step"] = kernels
    return out


ADAMW = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
"""AdamW implementations: torch's per-tensor loop (its CPU default), multi-tensor, fused."""


def _bench_adamw(params, steps, device):
    """Fastest of ``steps`` optimiser steps alone, for each AdamW implementation."""
    out = {
        "adamw_param_tensors": len(params),
        "adamw_parameters": sum(p.numel() for p in params),
    }
    for name, options in ADAMW.items():
        try:
            opt = torch.optim.AdamW(params, lr=1e-4, **options)
            sec, cpu = _time_steps(opt.step, steps, device)
        except (RuntimeError, TypeError, ValueError) as err:  # no such kernel here
            out[f"adamw_{name}_ms"] = f"not available ({err})"
            continue
        out[f"adamw_{name}_ms"] = round(sec * 1000, 2)
        out[f"adamw_{name}_cpu_ms"] = round(cpu * 1000, 2)
    return out


def _graphmed(graphs, rel, d, heads, layers, bag_tokens, device, net_options=None):
    # bag_tokens only when set: code from before it (GRAPHMED_SRC) has no such argument.
    pooling = {"bag_tokens": bag_tokens} if bag_tokens else {}
    net = GraphMedNet(
        graphs.layouts,
        rel.edge_types,
        rel.enumerate_metapaths(2, 1),
        d=d,
        heads=heads,
        layers=layers,
        **pooling,
        **(net_options or {}),
    ).to(device)
    net.fit_priors(graphs)
    head = torch.nn.Linear(d, 1).to(device)
    opt = make_adamw(list(net.parameters()) + list(head.parameters()), lr=1e-4)
    return net, head, opt


def _train_step(forward, head, opt, b, optimise=True):
    forward.train()
    risk = head(forward(b).embedding).squeeze(-1)
    loss = cox_ph_loss(risk, b.time, b.event)
    opt.zero_grad()
    loss.backward()
    if optimise:
        opt.step()


def _hgt_edges(graphs, rel, batch):
    """Edges of the batched HeteroData, counted from the node counts (no collation)."""
    pairs = [(m, m) for m in graphs.layouts] + [(s, t) for s, _, t in rel.edge_types]
    counts = {m: graphs.node_mask[m][:batch].sum(1) for m in graphs.layouts}
    # Intra-modal edges join every pair of distinct nodes (no self-loops).
    return int(sum((counts[s] * (counts[t] - int(s == t))).sum() for s, t in pairs))


def _hgt_step(graphs, rel, b, d, heads, layers, device, row, hgt_input, bag_tokens, max_edges=None):
    """HGTConv's training step on the batch's patients; None above ``max_edges`` edges."""
    max_edges = max_edges or HGT_MAX_EDGES
    from torch_geometric.data import Batch

    pooled = hgt_input == "pooled"
    topo = pooled_topology(graphs, bag_tokens) if pooled else graphs
    batch = len(b.time)
    row["hgt_input"] = hgt_input
    row["hgt_nodes"] = sum(lay.n_nodes for lay in topo.layouts.values())
    row["hgt_edges"] = _hgt_edges(topo, rel, batch)
    if row["hgt_edges"] > max_edges:
        row["hgt_not_run"] = f"{row['hgt_edges']:,} edges > {max_edges:,}"
        return None
    data_list = [topo.to_heterodata(i, rel) for i in range(batch)]
    t0 = time.perf_counter()
    hb = Batch.from_data_list(data_list)
    row["collate_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    row["hgt_edges"] = int(sum(hb[k].edge_index.shape[1] for k in hb.edge_types))
    hb = hb.to(device)
    hgt = HGTStack(topo.layouts, hb.metadata(), d, heads, layers, bag_tokens if pooled else None)
    hgt = hgt.to(device)
    opt_h = make_adamw(list(hgt.parameters()), lr=1e-4)
    bags = None
    if pooled:
        bags = {
            m: (b.x[m], b.node_mask[m]) for m, lay in graphs.layouts.items() if lay.kind == "bag"
        }

    def step_hgt(optimise=True):
        loss = cox_ph_loss(hgt(hb, bags), hb.time, hb.event)
        opt_h.zero_grad()
        loss.backward()
        if optimise:
            opt_h.step()

    return step_hgt


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
    """Rows as a markdown table; lists and dicts (FLOPs by op, profiles) stay in the JSON."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r)]
    keys = [k for k in keys if not any(isinstance(r.get(k), (list, dict)) for r in rows)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _print_profiles(row):
    for key in METHODS:
        for op in row.get(f"{key}_profile_top", []):
            share = f"{op['self_cpu_share']:.1%}"
            print(f"{key:>8}  {op['op']:<40} {op['self_cpu_ms']:>10.2f} ms {share:>6}")


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


EQUAL_BATCHES = (32, 64, 128, 256, 512, 1024)
BAGS = {"instances": "not pooled", "pooled": "pooled"}


def equal_input_rows(base, tokens=16, batches=EQUAL_BATCHES, log=print):
    """graphmed and ``HGTConv`` on the same graphs, for each batch size: first with the
    bags not pooled for either (a node per instance), then pooled to ``tokens`` nodes for
    both (``HGTConv``'s bags through graphmed's own ``BagEncoder``)."""
    rows = []
    for hgt_input in HGT_INPUTS:
        for batch in batches:
            kw = {
                **base,
                "methods": ("graphmed", "hgt"),
                "measure": "time",
                "batch": batch,
                "hgt_input": hgt_input,
                "bag_tokens": tokens if hgt_input == "pooled" else None,
            }
            rows.append({"sweep": "equal_input", **bench(n_patients=batch, **kw)})
            log(equal_input_table(rows[-1:], header=not rows[:-1]))
    return rows


def equal_input_table(rows, header=True) -> str:
    """The equal-input rows as a markdown table: training and inference patients/s."""
    cols = [
        "bags",
        "batch",
        "graphmed nodes",
        "HGTConv nodes",
        "HGTConv edges",
        "graphmed train patients/s",
        "HGTConv train patients/s",
        "speed-up (wall)",
        "CPU-time ratio",
        "graphmed inference patients/s",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] if header else []
    for r in rows:
        hgt = r.get("hgt_patients_per_s", f"not run ({r.get('hgt_not_run', '')})")
        cells = [
            BAGS[r.get("hgt_input", "instances")],
            r["batch"],
            r["graph_nodes"],
            r.get("hgt_nodes", ""),
            r.get("hgt_edges", ""),
            r.get("graphmed_patients_per_s", ""),
            hgt,
            r.get("speedup_vs_hgt", ""),
            r.get("cpu_time_ratio_vs_hgt", ""),
            r.get("graphmed_infer_patients_per_s", ""),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


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
    p.add_argument(
        "--hgt-input",
        choices=HGT_INPUTS,
        default="instances",
        help="HGTConv's bag nodes: every instance, or the bag pooled to --bag-tokens nodes",
    )
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
    p.add_argument("--steps", type=int, default=5, help="timed (or profiled) steps")
    p.add_argument(
        "--methods", default="graphmed,hgt,loop", help="comma list of: graphmed, hgt, loop"
    )
    p.add_argument("--sweep", default="", help="comma list of: " + ", ".join(SWEEPS))
    p.add_argument("--max-batches", type=int, default=20, help="batches timed per patients row")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument(
        "--save", "--json", dest="save", default=None, help="write env and all rows to this JSON"
    )
    p.add_argument(
        "--compile", default=None, help="torch.compile mode for graphmed, e.g. reduce-overhead"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--flops", action="store_true", help="count forward + backward FLOPs instead of timing"
    )
    what.add_argument(
        "--profile", action="store_true", help="torch.profiler's top ops over --steps steps"
    )
    what.add_argument(
        "--adamw", action="store_true", help="time graphmed's optimiser step alone, per AdamW"
    )
    p.add_argument("--top", type=int, default=15, help="ops listed by --profile")
    p.add_argument(
        "--equal-input",
        action="store_true",
        help="graphmed vs HGTConv training (and graphmed inference) patients/s on equal input "
        "for each of --batches: bags not pooled for either, then pooled to --bag-tokens "
        "(default 16) for both",
    )
    p.add_argument(
        "--batches",
        default=",".join(map(str, EQUAL_BATCHES)),
        help="batch sizes of --equal-input (comma list)",
    )
    p.add_argument(
        "--hgt-max-edges",
        type=int,
        default=HGT_MAX_EDGES,
        help=f"do not run HGTConv on a batch with more edges (default {HGT_MAX_EDGES:,})",
    )
    args = p.parse_args(argv)
    measure = next((m for m in MEASURES[1:] if getattr(args, m)), "time")
    methods = tuple(filter(None, args.methods.split(",")))
    sweeps = list(filter(None, args.sweep.split(",")))
    if unknown := [m for m in methods if m not in METHODS]:
        p.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if unknown := [s for s in sweeps if s not in SWEEPS]:
        p.error(f"unknown sweep '{unknown[0]}'; choose from {', '.join(SWEEPS)}")
    if "patients" in sweeps and measure != "time":
        p.error(f"--sweep patients only times; drop it or --{measure}")
    if args.equal_input and (measure != "time" or sweeps):
        p.error("--equal-input times; drop --sweep and --flops / --profile / --adamw")
    if args.hgt_input == "pooled" and not args.bag_tokens and not args.equal_input:
        p.error("--hgt-input pooled needs --bag-tokens N (the size both methods pool bags to)")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(sys.argv[1:] if argv is None else argv)
    env = {
        "command": f"python tools/bench_speed.py {command}",
        "device": args.device,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }
    if os.environ.get("GRAPHMED_SRC"):
        env["graphmed_src"] = os.environ["GRAPHMED_SRC"]
    print(json.dumps(env))
    base = dict(
        batch=args.batch,
        bag=args.bag,
        d=args.d,
        layers=args.layers,
        steps=args.steps,
        device=args.device,
        methods=methods,
        compile_mode=args.compile,
        bag_tokens=args.bag_tokens,
        net_options=_net_options(args.net, p),
        measure=measure,
        hgt_input=args.hgt_input,
        top=args.top,
        hgt_max_edges=args.hgt_max_edges,
    )
    if args.equal_input:
        batches = [int(b) for b in args.batches.split(",") if b]
        rows = equal_input_rows(base, args.bag_tokens or 16, batches)
        if args.save:
            from graphmed._atomic import write_json

            write_json(args.save, {"env": env, "rows": rows})
        return rows
    reference = bench(n_patients=args.batch, n_modalities=args.modalities, **base)
    rows = [{"sweep": "reference", **reference}]
    print(to_markdown(rows), flush=True)
    _print_profiles(reference)
    for name in sweeps:
        for v in SWEEPS[name][1]:
            kw = _sweep_kwargs(name, v, base)
            if name == "patients":
                row = bench_epoch(max_batches=args.max_batches, **kw)
            else:
                row = bench(**kw)
            rows.append({"sweep": name, **row})
            print(to_markdown([rows[-1]]), flush=True)
            _print_profiles(row)
    if args.save:
        from graphmed._atomic import write_json

        write_json(args.save, {"env": env, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
