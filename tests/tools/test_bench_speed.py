"""Smoke run of tools/bench_speed.py on a tiny problem (the figures live in docs/)."""

import pytest

from ._load import load_tool


@pytest.fixture(scope="module")
def bench_speed():
    return load_tool("bench_speed")


def test_reference_row_times_all_three_methods(bench_speed):
    row = bench_speed.bench(
        n_patients=12, batch=6, bag=6, d=16, heads=2, layers=1, steps=1,
        methods=("graphmed", "hgt", "loop"),
    )  # fmt: skip
    for key in ("graphmed_ms", "hgt_ms", "loop_ms", "graphmed_infer_patients_per_s"):
        assert row[key] > 0, key
    assert row["speedup_vs_hgt"] > 0 and row["speedup_vs_loop"] > 0
    # The edge count predicted from node counts is the one PyG collated.
    assert row["hgt_edges"] > 0


def test_edge_count_matches_collated_heterodata(bench_speed):
    from torch_geometric.data import Batch

    _, graphs, rel = bench_speed.make_graphs(5, 3, 4, seed=1)
    hb = Batch.from_data_list([graphs.to_heterodata(i, rel) for i in range(5)])
    collated = sum(hb[k].edge_index.shape[1] for k in hb.edge_types)
    assert bench_speed._hgt_edges(graphs, rel, 5) == collated


def test_patients_row_and_bag_pooling(bench_speed):
    row = bench_speed.bench_epoch(40, batch=16, bag=8, d=16, heads=2, layers=1, bag_tokens=2)
    assert row["batches_timed"] == 3
    assert row["train_patients_per_s"] > 0 and row["infer_patients_per_s"] > 0
    kw = bench_speed._sweep_kwargs("bag", 1024, {"methods": ("graphmed", "loop")})
    assert kw["bag"] == 1024 and kw["bag_tokens"] == 16 and kw["methods"] == ("graphmed",)


def test_cli_writes_json(bench_speed, tmp_path):
    out = tmp_path / "speed.json"
    rows = bench_speed.main(
        ["--batch", "4", "--bag", "4", "--d", "8", "--layers", "1", "--steps", "1",
         "--methods", "graphmed", "--modalities", "4", "--net", "completion=zero",
         "--net", "metapath_level=false", "--json", str(out)]
    )  # fmt: skip
    assert out.exists() and rows[0]["sweep"] == "reference"
    assert rows[0]["modalities"] == 4
    assert rows[0]["net_options"] == {"completion": "zero", "metapath_level": False}
    with pytest.raises(SystemExit):
        bench_speed.main(["--batch", "4", "--methods", "graphmed", "--net", "hidden=4"])
    with pytest.raises(SystemExit):
        bench_speed.main(["--batch", "4", "--methods", "graphmed", "--sweep", "nonsense"])


TINY = dict(n_patients=8, batch=6, bag=6, d=16, heads=2, layers=1, steps=1)  # fmt: skip


@pytest.mark.parametrize("bag_tokens", [None, 2, 6])
def test_graph_nodes_are_the_slots_graphmed_attends_over(bench_speed, bag_tokens):
    _, graphs, rel = bench_speed.make_graphs(6, 3, 12, seed=0)
    net, _, _ = bench_speed._graphmed(graphs, rel, 16, 2, 1, bag_tokens, "cpu")
    seen = {}
    net.layers[0].register_forward_pre_hook(
        lambda mod, args: seen.update(n=sum(h.shape[1] for h in args[0].values()))
    )
    net(graphs.batch(range(6)))
    # Bags pooled to bag_tokens; a pooled bag of 2 is padded to the 5 prompt nodes.
    assert bench_speed.graph_nodes(graphs.layouts, bag_tokens, net.n_prompts) == seen["n"]
    assert seen["n"] == 8 + 16 + {None: 12, 2: 5, 6: 6}[bag_tokens]


def test_hgt_on_pooled_bags_sees_graphmeds_node_count(bench_speed):
    from torch_geometric.data import Batch

    kw = {**TINY, "bag": 12, "methods": ("graphmed", "hgt"), "bag_tokens": 6}
    row = bench_speed.bench(**kw, hgt_input="pooled")
    assert row["hgt_input"] == "pooled" and row["hgt_ms"] > 0 and row["cpu_time_ratio_vs_hgt"] > 0
    # Both see the bag as 6 pooled nodes; by default HGTConv sees its 12 instances.
    assert row["hgt_nodes"] == row["graph_nodes"] == 8 + 16 + 6 and row["nodes"] == 8 + 16 + 12
    assert bench_speed.bench(**kw, measure="flops")["hgt_nodes"] == row["nodes"]
    _, graphs, rel = bench_speed.make_graphs(5, 3, 12, seed=1)
    topo = bench_speed.pooled_topology(graphs, 3)
    hb = Batch.from_data_list([topo.to_heterodata(i, rel) for i in range(5)])
    assert hb["wsi"].num_nodes == 3 * int(graphs.present[:5, 2].sum())
    assert bench_speed._hgt_edges(topo, rel, 5) == sum(
        hb[k].edge_index.shape[1] for k in hb.edge_types
    )
    with pytest.raises(ValueError, match="needs bag_tokens"):
        bench_speed.bench(**TINY, hgt_input="pooled")


def test_flops_count_forward_and_backward_without_timing(bench_speed):
    row = bench_speed.bench(**TINY, methods=("graphmed", "hgt"), measure="flops")
    assert row["measure"] == "flops" and "graphmed_ms" not in row
    assert row["graphmed_flops"] > 0 and row["hgt_flops"] > 0
    assert row["graphmed_flops"] == sum(row["graphmed_flops_by_op"].values())
    assert "aten.mm" in row["graphmed_flops_by_op"]


def test_profile_lists_the_top_ops(bench_speed):
    row = bench_speed.bench(**TINY, methods=("graphmed",), measure="profile", top=3)
    top = row["graphmed_profile_top"]
    assert len(top) == 3 and set(top[0]) == {"op", "calls", "self_cpu_ms", "self_cpu_share"}
    assert top[0]["self_cpu_ms"] >= top[-1]["self_cpu_ms"]
    assert (
        0 <= row["graphmed_profile_matmul_share"] <= 1 and row["graphmed_profile_self_cpu_ms"] > 0
    )


def test_adamw_times_each_implementation_of_the_step(bench_speed):
    row = bench_speed.bench(**TINY, measure="adamw")
    assert row["adamw_param_tensors"] > 0 and row["adamw_parameters"] > 0
    assert row["adamw_for_loop_ms"] > 0 and row["adamw_foreach_ms"] > 0
    assert "adamw_fused_ms" in row  # a number, or "not available (...)" without the kernel


def test_cli_modes_save_their_command(bench_speed, tmp_path):
    import json

    out = tmp_path / "flops.json"
    args = ["--batch", "4", "--bag", "4", "--d", "8", "--layers", "1", "--steps", "1"]
    bench_speed.main([*args, "--methods", "graphmed", "--flops", "--save", str(out)])
    saved = json.loads(out.read_text())
    assert saved["env"]["command"].endswith(f"--flops --save {out}")
    assert saved["rows"][0]["graphmed_flops"] > 0
    for bad in (
        ["--flops", "--sweep", "patients"],
        ["--hgt-input", "pooled"],
        ["--flops", "--adamw"],
        ["--methods", "graphmed,pyg"],
    ):
        with pytest.raises(SystemExit):
            bench_speed.main([*args, *bad])
