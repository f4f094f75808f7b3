import torch

from graphmed.graph.batch import GraphBatch


def _batch(index: bool = True) -> GraphBatch:
    return GraphBatch(
        x={"a": torch.randn(3, 4, 1), "b": torch.randn(3, 2, 5)},
        node_mask={"a": torch.ones(3, 4, dtype=torch.bool), "b": torch.tensor([[1, 0]] * 3).bool()},
        present=torch.tensor([[True, True], [True, False], [False, True]]),
        time=torch.rand(3),
        event=torch.tensor([1.0, 0.0, 1.0]),
        labels={"grade": torch.tensor([0, -1, 2])},
        index=torch.tensor([4, 0, 2]) if index else None,
    )


def test_len_is_batch_size():
    assert len(_batch()) == 3


def test_to_moves_every_field_and_keeps_values():
    batch = _batch()
    moved = batch.to("cpu")
    assert moved is not batch
    for name in ("x", "node_mask", "labels"):
        a, b = getattr(moved, name), getattr(batch, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("present", "time", "event", "index"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    assert moved.to(torch.device("cpu"), non_blocking=True).present.device.type == "cpu"


def test_to_without_index():
    assert _batch(index=False).to("cpu").index is None


def test_from_patient_graphs_carries_named_fields(graphs):
    batch = graphs.batch([2, 0])
    assert isinstance(batch, GraphBatch)
    assert set(batch.x) == set(batch.node_mask) == set(graphs.modalities)
    assert batch.present.shape == (2, 3) and batch.present.dtype == torch.bool
    assert batch.time.dtype == batch.event.dtype == torch.float32
    assert batch.labels == {}
