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
