from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graphmed.data.preprocess import CohortPreprocessor
from graphmed.errors import CohortError
from graphmed.graph.build import PatientGraphs, build_graphs
from graphmed.graph.relations import RelationGraph


def _row(graphs, pid):
    return graphs.patient_ids.index(pid)


def test_layouts_node_counts(graphs, preprocessor, cohort):
    clinical, expr, wsi = (graphs.layouts[m] for m in ("clinical", "expr", "wsi"))
    assert graphs.modalities == ["clinical", "expr", "wsi"]
    # tabular: a node per feature; grade has 2 training categories + unknown.
    assert (clinical.n_nodes, clinical.node_dim) == (4, 1)
    assert clinical.node_names == ["age", "size", "grade", "marker"]
    assert clinical.categorical == {2: 3}
    # vector: 20 genes in chunks of 8, the last one zero-padded.
    assert (expr.n_nodes, expr.node_dim, expr.group_sizes) == (3, 8, [8, 8, 4])
    # bag: capped at max_instances=8 (the biggest bag has 11 instances).
    assert max(len(b) for b in cohort.data["wsi"].values()) == 11
    assert (wsi.n_nodes, wsi.node_dim) == (8, 6)
    n = len(graphs)
    assert graphs.x["clinical"].shape == (n, 4, 1)
    assert graphs.x["expr"].shape == (n, 3, 8)
    assert graphs.x["wsi"].shape == (n, 8, 6)
    arrays = preprocessor.transform(cohort)
    np.testing.assert_array_equal(graphs.x["clinical"][:, :, 0].numpy(), arrays["clinical"].values)
    genes = arrays["expr"].values
    np.testing.assert_array_equal(graphs.x["expr"][:, 2, :4].numpy(), genes[:, 16:])
    assert not graphs.x["expr"][:, 2, 4:].any()


def test_node_mask_matches_presence(graphs, cohort):
    present = cohort.present_mask()[graphs.modalities].to_numpy()
    np.testing.assert_array_equal(graphs.present.numpy(), present)
    for j, m in enumerate(graphs.modalities):
        mask = graphs.node_mask[m]
        assert torch.equal(mask.any(1), graphs.present[:, j])
        assert not graphs.x[m][~mask].any()  # absent nodes hold zeros
    for m in ("clinical", "expr"):
        assert torch.equal(
            graphs.node_mask[m].all(1), graphs.present[:, graphs.modalities.index(m)]
        )
    sizes = [len(cohort.data["wsi"].get(p, ())) for p in graphs.patient_ids]
    assert graphs.node_mask["wsi"].sum(1).tolist() == [min(s, 8) for s in sizes]


def test_patients_missing_none_to_all_but_one_modality(graphs):
    rows = {pid: graphs.present[_row(graphs, pid)].tolist() for pid in ("p00", "p01", "p07", "p08")}
    assert rows == {
        "p00": [True, True, True],
        "p01": [False, True, True],
        "p07": [True, False, False],  # clinical only
        "p08": [False, False, True],  # wsi only
    }
    i = _row(graphs, "p07")
    assert graphs.node_mask["clinical"][i].sum() == 4
    assert graphs.node_mask["expr"][i].sum() == 0 and graphs.node_mask["wsi"][i].sum() == 0


def test_bag_subsample_is_seeded_rows_in_order(cohort, preprocessor, graphs):
    arrays = preprocessor.transform(cohort)
    picks = []
    for i, bag in enumerate(arrays["wsi"].values):
        nodes = graphs.x["wsi"][i][graphs.node_mask["wsi"][i]].numpy()
        if len(bag) <= 8:
            np.testing.assert_array_equal(nodes, bag)
        else:
            picked = [int(np.flatnonzero((bag == row).all(1))[0]) for row in nodes]
            assert len(nodes) == 8 and picked == sorted(set(picked))
            picks.append(picked)
    assert len(picks) >= 3 and any(p != list(range(8)) for p in picks)  # not just the head
    again = build_graphs(cohort, preprocessor, max_instances=8)
    assert torch.equal(again.x["wsi"], graphs.x["wsi"])
    other_seed = build_graphs(cohort, preprocessor, max_instances=8, seed=1)
    assert not torch.equal(other_seed.x["wsi"], graphs.x["wsi"])


def test_bag_prototypes(cohort, preprocessor):
    graphs = build_graphs(cohort, preprocessor, max_instances=4, bag_pooling="prototypes")
    arrays = preprocessor.transform(cohort)
    assert graphs.layouts["wsi"].n_nodes == 4
    for i, bag in enumerate(arrays["wsi"].values):
        mask = graphs.node_mask["wsi"][i]
        assert mask.sum() == min(len(bag), 4)
        if len(bag) > 4:  # centroids lie in the bag's bounding box
            nodes = graphs.x["wsi"][i].numpy()
            assert (nodes >= bag.min(0) - 1e-5).all() and (nodes <= bag.max(0) + 1e-5).all()
            assert len(np.unique(nodes.round(5), axis=0)) == 4


def test_bag_option_wins_and_bad_pooling_raises(make_cohort, train_ids):
    cohort = make_cohort(options={"wsi": {"max_instances": 2}})
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    assert build_graphs(cohort, pre, max_instances=8).layouts["wsi"].n_nodes == 2
    with pytest.raises(CohortError, match="bag_pooling must be 'subsample' or 'prototypes'"):
        build_graphs(cohort, pre, bag_pooling="mean")
    with pytest.raises(CohortError, match="needs a fitted CohortPreprocessor"):
        build_graphs(cohort, CohortPreprocessor())


def test_vector_groups(make_cohort, train_ids):
    groups = {"a": ["g00", "g05"], "b": ["g01", "not_a_gene"], "empty": ["nope"]}
    cohort = make_cohort(options={"expr": {"groups": groups, "chunk_size": 4}})
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    graphs = build_graphs(cohort, pre)
    layout = graphs.layouts["expr"]
    assert layout.node_names == ["a", "b"] + [f"other_{k}" for k in range(5)]
    assert layout.group_sizes == [2, 1, 4, 4, 4, 4, 1]
    assert layout.n_nodes == 7 and layout.node_dim == 4
    genes = pre.transform(cohort)["expr"].values
    np.testing.assert_array_equal(graphs.x["expr"][:, 0, :2].numpy(), genes[:, [0, 5]])
    np.testing.assert_array_equal(graphs.x["expr"][:, 1, 0].numpy(), genes[:, 1])
    assert not graphs.x["expr"][:, 1, 1:].any()


def test_batch_is_pure_indexing(graphs):
    index = [5, 0, 7, 7, 23]
    batch = graphs.batch(index)
    idx = torch.tensor(index)
    assert len(batch) == 5 and torch.equal(batch.index, idx)
    for m in graphs.modalities:
        assert torch.equal(batch.x[m], graphs.x[m][idx])
        assert torch.equal(batch.node_mask[m], graphs.node_mask[m][idx])
    assert torch.equal(batch.present, graphs.present[idx])
    assert torch.equal(batch.time, graphs.time[idx])
    assert torch.equal(batch.event, graphs.event[idx])
    assert torch.equal(graphs.batch(np.array(index)).x["wsi"], batch.x["wsi"])


def test_half_precision_storage_batches_as_float32(cohort, preprocessor, graphs):
    half = build_graphs(cohort, preprocessor, max_instances=8, store_dtype=torch.float16)
    assert half.x["expr"].dtype == torch.float16
    batch = half.batch([0, 1])
    assert batch.x["expr"].dtype == torch.float32
    torch.testing.assert_close(batch.x["expr"], graphs.x["expr"][:2], atol=1e-2, rtol=1e-2)


def test_subset(graphs):
    sub = graphs.subset([3, 1])
    assert sub.patient_ids == [graphs.patient_ids[3], graphs.patient_ids[1]]
    assert torch.equal(sub.x["wsi"], graphs.x["wsi"][[3, 1]])
    assert torch.equal(sub.present, graphs.present[[3, 1]])


def test_to_heterodata_has_every_type(graphs, relations):
    types = relations.edge_types_with_intra
    for i in range(len(graphs)):
        data = graphs.to_heterodata(i, relations)
        assert sorted(data.node_types) == sorted(graphs.modalities)
        assert sorted(data.edge_types) == types
        for m in graphs.modalities:
            assert data[m].num_nodes == int(graphs.node_mask[m][i].sum())
        for e in types:
            ei = data[e].edge_index
            assert ei.dtype == torch.long and ei.shape[0] == 2
            assert data[e].edge_weight.shape == (ei.shape[1],)
        assert data.present.shape == (1, 3)
    data = graphs.to_heterodata(_row(graphs, "p07"), relations)  # clinical only
    assert data["expr"].x.shape == (0, 8) and data["wsi"].x.shape == (0, 6)
    assert data["wsi", "intra", "wsi"].edge_index.shape == (2, 0)
    assert data["clinical", "informs", "expr"].edge_index.shape == (2, 0)
    assert data["expr", "rev_informs", "clinical"].edge_index.shape == (2, 0)


def test_intra_edges_weighted_by_cosine_without_self_loops(graphs, relations):
    data = graphs.to_heterodata(_row(graphs, "p00"), relations)
    for m in graphs.modalities:
        store = data[m, "intra", m]
        n = data[m].num_nodes
        src, dst = store.edge_index
        assert not (src == dst).any()
        assert store.edge_index.shape[1] == n * (n - 1)
        assert len(set(zip(src.tolist(), dst.tolist()))) == n * (n - 1)
        x = data[m].x
        expected = F.cosine_similarity(x[src], x[dst], dim=-1)
        torch.testing.assert_close(store.edge_weight, expected, atol=1e-5, rtol=1e-5)
    assert data["wsi", "intra", "wsi"].edge_weight.abs().max() < 1  # not a constant


def test_cross_edges_are_complete_bipartite_both_ways(graphs, relations):
    data = graphs.to_heterodata(_row(graphs, "p00"), relations)
    for s, r, t in relations.edge_types:
        pairs = set(zip(*data[s, r, t].edge_index.tolist()))
        assert pairs == {(a, b) for a in range(data[s].num_nodes) for b in range(data[t].num_nodes)}
        rev = [e for e in relations.edge_types if e[0] == t and e[2] == s]
        assert len(rev) == 1
        back = set(zip(*data[rev[0]].edge_index.tolist()))
        assert back == {(b, a) for a, b in pairs}


def test_pyg_loader_batches_mixed_missingness(graphs, relations):
    from torch_geometric.loader import DataLoader

    # The first patients miss different modalities, so no type exists in all of them.
    order = [_row(graphs, p) for p in ("p08", "p07", "p03", "p05", "p00")]
    data_list = graphs.to_data_list(relations)
    loader = DataLoader([data_list[i] for i in order], batch_size=5, shuffle=False)
    batch = next(iter(loader))
    assert sorted(batch.node_types) == sorted(graphs.modalities)
    assert sorted(batch.edge_types) == relations.edge_types_with_intra
    assert torch.equal(batch.present, graphs.present[order])
    assert torch.equal(batch.patient_index, torch.tensor(order))
    assert torch.equal(batch.time, graphs.time[order])
    for m in graphs.modalities:
        counts = graphs.node_mask[m][order].sum(1)
        assert batch[m].num_nodes == int(counts.sum())
        assert torch.equal(torch.bincount(batch[m].batch, minlength=5), counts)
    for s, r, t in batch.edge_types:
        src, dst = batch[s, r, t].edge_index
        assert batch[s, r, t].edge_index.shape[1] == sum(
            data_list[i][s, r, t].num_edges for i in order
        )
        if len(src):  # edges never cross patients
            assert torch.equal(batch[s].batch[src], batch[t].batch[dst])


def test_save_load_round_trip(graphs, tmp_path):
    path = tmp_path / "cache" / "graphs.pt"
    graphs.save(path)
    loaded = PatientGraphs.load(path)
    assert loaded.patient_ids == graphs.patient_ids
    assert loaded.layouts == graphs.layouts
    assert loaded.label_classes == graphs.label_classes
    for name in ("x", "node_mask", "labels"):
        a, b = getattr(loaded, name), getattr(graphs, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("present", "time", "event"):
        assert torch.equal(getattr(loaded, name), getattr(graphs, name))
    assert [p.name for p in path.parent.iterdir()] == ["graphs.pt"]  # no temporary left


def test_a_memory_mapped_cache_reads_the_same_graphs_from_disk(graphs, tmp_path):
    path = tmp_path / "graphs.pt"
    graphs.save(path)
    maps = Path("/proc/self/maps")
    read = PatientGraphs.load(path)
    if maps.exists():  # a plain load reads the file into memory and maps nothing
        assert str(path) not in maps.read_text()
    mapped = PatientGraphs.load(path, mmap=True)
    if maps.exists():  # the tensors are pages of the file, read as they are touched
        assert str(path) in maps.read_text()
    for m in graphs.modalities:
        assert torch.equal(mapped.x[m], graphs.x[m]) and torch.equal(read.x[m], graphs.x[m])
    idx = torch.tensor([3, 0, 5])
    a, b = mapped.batch(idx), graphs.batch(idx)
    assert all(torch.equal(a.x[m], b.x[m]) for m in graphs.modalities)
    assert torch.equal(a.present, b.present) and torch.equal(a.time, b.time)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04" + b"\0" * 64])
def test_corrupt_cache_raises_cohort_error(tmp_path, content):
    path = tmp_path / "graphs.pt"
    path.write_bytes(content)
    with pytest.raises(CohortError, match="delete it to rebuild"):
        PatientGraphs.load(path)


def test_truncated_or_foreign_cache_raises_cohort_error(graphs, tmp_path):
    path = tmp_path / "graphs.pt"
    graphs.save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CohortError, match="cannot read cached graphs"):
        PatientGraphs.load(path)
    torch.save({"something": "else"}, path)
    with pytest.raises(CohortError, match="cannot read cached graphs"):
        PatientGraphs.load(path)
    with pytest.raises(CohortError, match="cannot read cached graphs"):
        PatientGraphs.load(tmp_path / "missing.pt")


def test_labels_coded_with_given_classes(make_frames, train_ids):
    from graphmed.data.cohort import Cohort

    frames = make_frames()
    frames["patients"]["grade_label"] = ["a", "b", "c"] * 8
    cohort = Cohort.from_frames(
        frames["patients"],
        {"clinical": frames["clinical"]},
        kinds={"clinical": "tabular"},
        labels=["grade_label"],
    )
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    graphs = build_graphs(cohort, pre, label_classes={"grade_label": ["c", "a"]})
    assert graphs.labels["grade_label"][:3].tolist() == [1, -1, 0]
    assert graphs.label_classes == {"grade_label": ["c", "a"]}
    assert RelationGraph.from_cohort(cohort).edge_types == []


def test_layout_of_absent_modality_matches_training(make_frames, make_cohort, train_ids):
    cohort = make_cohort(options={"expr": {"chunk_size": 4}})
    pre = CohortPreprocessor().fit(cohort.subset(train_ids))
    frames = make_frames()
    del frames["expr"]
    without = build_graphs(make_cohort(frames), pre)
    assert without.layouts["expr"].n_nodes == build_graphs(cohort, pre).layouts["expr"].n_nodes


def test_bag_nodes_do_not_depend_on_other_patients(cohort, preprocessor, graphs, test_ids):
    alone = build_graphs(cohort.subset(test_ids), preprocessor, max_instances=8)
    rows = [graphs.patient_ids.index(p) for p in test_ids]
    assert torch.equal(alone.x["wsi"], graphs.x["wsi"][rows])


def test_max_tokens_widens_chunks_of_wide_vectors(cohort, preprocessor):
    capped = build_graphs(cohort, preprocessor, chunk_size=2, max_tokens=4)
    lay = capped.layouts["expr"]
    assert lay.n_nodes == 4 and lay.node_dim == 5  # 20 genes in 4 chunks of 5
    free = build_graphs(cohort, preprocessor, chunk_size=2, max_tokens=None)
    assert free.layouts["expr"].n_nodes == 10
    # the same values, only regrouped
    assert torch.allclose(
        capped.x["expr"].reshape(len(capped), -1), free.x["expr"].reshape(len(free), -1)
    )


def test_cache_with_a_pickled_callable_is_refused(graphs, tmp_path, crafted_torch_file):
    path, marker = tmp_path / "graphs.pt", tmp_path / "marker.txt"

    def wrap(payload):
        state = {k: getattr(graphs, k) for k in graphs.__dataclass_fields__}
        state["layouts"] = {m: vars(v) for m, v in graphs.layouts.items()}
        return {**state, "label_classes": {"grade": [payload]}}

    crafted_torch_file(path, marker, wrap)
    with pytest.raises(CohortError, match=r"refused to read cached graphs .*could run code"):
        PatientGraphs.load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.read_text() == "code ran"


def test_cache_keeps_numpy_label_classes_as_plain_values(graphs, tmp_path):
    path = tmp_path / "graphs.pt"
    classes = {"subtype": [np.int64(0), np.int64(2)], "stage": [np.str_("I"), np.str_("II")]}
    graphs_with_labels = PatientGraphs(
        **{**{k: getattr(graphs, k) for k in graphs.__dataclass_fields__}, "label_classes": classes}
    )
    graphs_with_labels.save(path)
    assert PatientGraphs.load(path).label_classes == {"subtype": [0, 2], "stage": ["I", "II"]}
