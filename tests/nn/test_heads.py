import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from graphmed.errors import GraphMedError
from graphmed.losses import cox_ph_loss, cross_entropy, discrete_time_nll
from graphmed.nn.heads import (
    ClassificationHead,
    CoxHead,
    DiscreteTimeBins,
    DiscreteTimeHead,
    Head,
    surv_column,
)

TIMES = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0, 200.0])
EVENTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])


@pytest.fixture
def bins() -> DiscreteTimeBins:
    return DiscreteTimeBins(4).fit(TIMES, EVENTS)


def test_bins_sit_at_event_time_quantiles(bins):
    # censored times (100, 200) move only the outer edge, not the quantiles
    assert np.allclose(bins.edges, [1.0, 3.0, 5.0, 7.0, 200.0])
    assert np.array_equal(
        bins.transform([0.5, 1.0, 2.9, 3.0, 6.99, 7.0, 500.0]), [0, 0, 0, 1, 2, 3, 3]
    )


def test_bins_fit_on_training_times_only():
    a = DiscreteTimeBins(2).fit([1.0, 2.0, 3.0], [1, 1, 1])
    b = DiscreteTimeBins(2).fit([1.0, 2.0, 3.0, 50.0], [1, 1, 1, 0])
    assert a.inner_edges.tolist() == b.inner_edges.tolist() == [2.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bucketize_matches_transform_at_and_between_edges(bins, dtype):
    times = np.array([0.1, 1.0, 3.0, 3.3, 5.0, 6.9999, 7.0, 7.1, 250.0])
    tensor = bins.bucketize(torch.tensor(times, dtype=dtype))
    assert tensor.dtype == torch.int64
    assert tensor.tolist() == bins.transform(times).tolist()


def test_bins_round_trip_through_json(bins):
    again = DiscreteTimeBins.from_dict(json.loads(json.dumps(bins.to_dict())))
    assert again.n_bins == 4 and np.array_equal(again.edges, bins.edges)
    with pytest.raises(GraphMedError, match="expected 5 non-decreasing edges"):
        DiscreteTimeBins.from_dict({"n_bins": 4, "edges": [1.0, 2.0]})


def test_bins_errors_say_what_to_do():
    with pytest.raises(GraphMedError, match="not fitted; call fit"):
        DiscreteTimeBins().transform([1.0])
    with pytest.raises(GraphMedError, match="no events"):
        DiscreteTimeBins().fit([1.0, 2.0], [0, 0])
    with pytest.raises(GraphMedError, match="n_bins must be a positive integer"):
        DiscreteTimeBins(0)
    with pytest.raises(GraphMedError, match="NaN"):
        DiscreteTimeBins().fit([1.0, np.nan], [1, 1])
    with pytest.warns(UserWarning, match="empty"):
        DiscreteTimeBins(4).fit([5.0] * 8 + [6.0], [1] * 9)


def test_cox_head_wraps_cox_loss():
    head = CoxHead(8)
    z = torch.randn(16, 8)
    time, event = torch.rand(16), torch.rand(16) < 0.5
    out = head(z)
    assert out.shape == (16,) and head.kind == "cox"
    assert torch.equal(head.risk(out), out)
    assert torch.allclose(head.loss(out, time, event), cox_ph_loss(out, time, event))
    breslow = CoxHead(8, ties="breslow")
    assert torch.allclose(
        breslow.loss(out, time.round(), event), cox_ph_loss(out, time.round(), event, "breslow")
    )
    with pytest.raises(GraphMedError, match="ties"):
        CoxHead(8, ties="exact")


def test_discrete_head_survival_risk_and_loss(bins):
    head = DiscreteTimeHead(8, bins, alpha=0.2)
    z = torch.randn(10, 8)
    time = torch.tensor(TIMES[:10], dtype=torch.float32)
    event = torch.tensor(EVENTS[:10])
    out = head(z)
    assert out.shape == (10, 4) and head.kind == "discrete"
    surv = head.survival(out)
    assert torch.allclose(surv, torch.cumprod(1 - torch.sigmoid(out), 1))
    assert (surv[:, 1:] <= surv[:, :-1]).all() and (surv > 0).all() and (surv < 1).all()
    assert torch.allclose(head.risk(out), -surv.sum(1))
    idx = torch.as_tensor(bins.transform(TIMES[:10]))
    expected = discrete_time_nll(out, idx, event, alpha=0.2)
    assert torch.allclose(head.loss(out, time, event), expected)
    assert torch.allclose(head.loss(out, time, event, bin_index=idx), expected)


def test_discrete_head_keeps_edges_out_of_the_state_dict(bins):
    head = DiscreteTimeHead(8, bins)
    assert "boundaries" not in head.state_dict()
    assert head.bin_index(torch.tensor([2.0, 3.0])).tolist() == [0, 1]
    head.float()  # a dtype cast of the model must not shift the bins
    assert head.bin_index(torch.tensor([2.0, 3.0], dtype=torch.float64)).tolist() == [0, 1]
    with pytest.raises(GraphMedError, match="not fitted"):
        DiscreteTimeHead(8, DiscreteTimeBins(4))


def test_classification_head_wraps_cross_entropy():
    head = ClassificationHead(8, 3)
    out = head(torch.randn(6, 8))
    labels = torch.tensor([0, 2, -1, 1, 1, -1])
    assert out.shape == (6, 3) and head.kind == "classification"
    assert torch.allclose(head.proba(out).sum(1), torch.ones(6))
    assert torch.allclose(head.loss(out, labels), cross_entropy(out, labels))
    with pytest.raises(GraphMedError, match="at least 2"):
        ClassificationHead(8, 1)


def test_every_head_trains_on_any_encoder_output(bins):
    """The shared contract: forward on (B, d), a kind, and a loss that reaches the head's weights."""
    z = torch.randn(12, 5, requires_grad=True)
    time, event = torch.rand(12) * 10, torch.ones(12)
    for head in (CoxHead(5), DiscreteTimeHead(5, bins), ClassificationHead(5, 2)):
        out = head(z)
        assert out.shape[0] == 12 and head.kind in {"cox", "discrete", "classification"}
        if head.kind == "classification":
            loss = head.loss(out, torch.randint(0, 2, (12,)))
        else:
            loss = head.loss(out, time, event)
        head.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and head.linear.weight.grad.abs().sum() > 0


def test_every_head_keeps_the_head_protocol(bins):
    """Loss on named targets, predictions, survival times and export columns that agree."""
    z = torch.randn(12, 5)
    targets = SimpleNamespace(
        time=torch.rand(12) * 10, event=torch.ones(12), labels={"grade": torch.randint(0, 2, (12,))}
    )
    for head, name, classes in (
        (CoxHead(5), "survival", None),
        (DiscreteTimeHead(5, bins), "survival", None),
        (ClassificationHead(5, 2), "grade", ["low", "high"]),
    ):
        assert isinstance(head, Head)
        raw = head(z)
        assert torch.isfinite(head.objective(raw, targets, name))
        outputs = head.outputs(raw, name)
        assert ("risk" in outputs) == head.is_survival
        times = head.survival_times()
        assert (times is None) == ("survival" not in outputs)
        preds = SimpleNamespace(
            risk=outputs.get("risk"),
            survival=outputs.get("survival"),
            proba={name: outputs.get(f"proba:{name}")},
        )
        columns = head.export_columns(name, classes)
        assert list(head.export_values(name, classes, preds)) == columns
        assert head.describe(classes)["kind"] == head.kind
    assert DiscreteTimeHead(5, bins).export_columns("survival", None)[1:] == [
        surv_column(t) for t in bins.edges[1:]
    ]
