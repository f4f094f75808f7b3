"""Masked-modality pretraining (``train.pretrain_epochs``): what it rebuilds, what it reads."""

import copy

import numpy as np
import pytest
import torch

from graphmed.errors import GraphMedError
from graphmed.graph.batch import GraphBatch
from graphmed.nn.graphmed_net import GraphMedNet
from graphmed.train.builder import build_model
from graphmed.train.config import TrainConfig, load_experiment
from graphmed.train.pretrain import ModalityDecoders, pretrain_network
from graphmed.train.trainer import Trainer

FAST = [
    "model.hidden=16",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=3",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def setup(synthetic_fit):
    return synthetic_fit(48, seed=3, censoring=0.4, overrides=FAST)


def _model(setup, seed=0):
    cohort, fitted, graphs = setup
    torch.manual_seed(seed)
    return build_model(fitted, graphs, cohort)


def test_pretraining_lowers_the_reconstruction_loss_and_restores_dropout(setup):
    graphs = setup[2]
    model = _model(setup)
    rate = model.net.modality_dropout
    train, val = graphs.subset(np.arange(36)), graphs.subset(np.arange(36, 48))
    history = pretrain_network(model.net, train, epochs=15, mask_rate=0.5, lr=3e-3, val=val)
    assert [h["epoch"] for h in history] == list(range(15))
    first, last = history[0], history[-1]
    assert last["train_loss"] < 0.8 * first["train_loss"]
    assert np.isfinite(last["val_loss"]) and last["val_loss"] < first["val_loss"]
    assert model.net.modality_dropout == rate


def test_pretraining_reads_no_survival_label(setup):
    graphs = setup[2]
    shuffled = copy.copy(graphs)
    gen = torch.Generator().manual_seed(0)
    shuffled.time = graphs.time[torch.randperm(len(graphs), generator=gen)] * 3 + 1
    shuffled.event = 1 - graphs.event
    weights = []
    for g in (graphs, shuffled):
        model = _model(setup)
        pretrain_network(model.net, g, epochs=2, seed=5)
        weights.append(model.net.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_only_hidden_present_modalities_are_rebuilt(setup):
    graphs = setup[2]
    net = _model(setup).net
    decoders = ModalityDecoders(net.layouts, net.d)
    batch = graphs.batch(torch.arange(8))
    emb = torch.randn(8, len(net.modalities), net.d)
    hidden = torch.zeros(8, len(net.modalities), dtype=torch.bool)
    hidden[2, 0] = True
    with torch.no_grad():
        terms = decoders.loss_terms(emb, batch, hidden)
    first = net.modalities[0]
    assert int(terms[first][1]) == 1 and float(terms[first][0]) > 0
    assert all(int(terms[m][1]) == 0 and float(terms[m][0]) == 0 for m in net.modalities[1:])
    # rows that are not hidden do not move the loss, whatever their embedding
    emb2 = emb.clone()
    emb2[3:] = 100.0
    assert torch.equal(decoders.loss(emb, batch, hidden), decoders.loss(emb2, batch, hidden))


def test_categorical_columns_are_not_rebuilt(graphs):
    lay = graphs.layouts["clinical"]
    assert lay.categorical, "the fixture cohort has a categorical clinical column"
    decoders = ModalityDecoders(graphs.layouts, 8)
    weight = decoders.column_weight("clinical")
    for j in lay.categorical:
        assert weight[int(j)] == 0
    assert weight.sum() == lay.n_nodes - len(lay.categorical)
    # a vector modality rebuilds each real column of its chunks, not the padding
    expr = graphs.layouts["expr"]
    assert decoders.column_weight("expr").sum() == sum(expr.group_sizes)
    # changing a categorical code leaves the reconstruction loss as it was
    batch = graphs.batch(torch.arange(len(graphs)))
    emb = torch.randn(len(graphs), len(graphs.layouts), 8)
    hidden = batch.present.clone()
    before = decoders.loss(emb, batch, hidden)
    x = {m: v.clone() for m, v in batch.x.items()}
    j = int(next(iter(lay.categorical)))
    x["clinical"][:, j, 0] = 7.0
    after = decoders.loss(
        emb, GraphBatch(x, batch.node_mask, batch.present, batch.time, batch.event), hidden
    )
    assert torch.equal(before, after)


def test_fit_pretrains_first_and_a_resume_does_not_pretrain_again(setup, tmp_path):
    graphs = setup[2]
    train, val = graphs.subset(np.arange(36)), graphs.subset(np.arange(36, 48))
    config = load_experiment(None, FAST + ["train.pretrain_epochs=3"]).train
    model = _model(setup)
    history = Trainer(config).fit(model, train, val)
    assert len(history.pretrain) == 3 and history.epochs_run == 3
    plain = Trainer(load_experiment(None, FAST).train).fit(_model(setup), train, val)
    assert plain.pretrain == []
    assert plain.history[0]["train_loss"] != history.history[0]["train_loss"]

    ckpt = tmp_path / "ckpt.pt"
    interrupted = load_experiment(None, FAST + ["train.pretrain_epochs=3", "train.epochs=2"])
    first = Trainer(interrupted.train).fit(_model(setup), train, val, checkpoint=ckpt)
    assert len(first.pretrain) == 3
    resumed_model = _model(setup)
    resumed = Trainer(config).fit(resumed_model, train, val, checkpoint=ckpt, resume=True)
    assert resumed.pretrain == [] and resumed.epochs_run == 3
    whole_model = _model(setup)
    Trainer(config).fit(whole_model, train, val)
    a = Trainer(config).predict(resumed_model, val).risk
    b = Trainer(config).predict(whole_model, val).risk
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_one_modality_is_refused_with_the_fix(setup):
    graphs = setup[2]
    lay = {m: graphs.layouts[m] for m in list(graphs.layouts)[:1]}
    net = GraphMedNet(lay, [], [], d=8, heads=2, layers=1)
    one = copy.copy(graphs)
    one.layouts = lay
    with pytest.raises(GraphMedError, match=r"at least two modalities.*pretrain_epochs=0"):
        pretrain_network(net, one, epochs=1)


@pytest.mark.parametrize(
    "key, value", [("pretrain_epochs", -1), ("pretrain_mask", 0.0), ("pretrain_mask", 1.0)]
)
def test_bad_pretraining_settings_are_refused(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig(**{key: value})
