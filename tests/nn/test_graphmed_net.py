import itertools
from dataclasses import replace

import pytest
import torch

from graphmed.graph.batch import GraphBatch
from graphmed.nn.graphmed_net import GraphMedNet

D = 16


@pytest.fixture(scope="module")
def train_graphs(graphs, train_ids):
    return graphs.subset([graphs.patient_ids.index(p) for p in train_ids])


@pytest.fixture(scope="module")
def make_net(graphs, relations, train_graphs):
    """Factory of small nets, seeded, with priors fitted on the training patients."""

    def make(seed: int = 0, metapaths=None, **kwargs) -> GraphMedNet:
        torch.manual_seed(seed)
        if metapaths is None:
            metapaths = relations.enumerate_metapaths(max_length=2)
        kwargs = {"d": D, "heads": 2, "layers": 2, **kwargs}
        net = GraphMedNet(graphs.layouts, relations.edge_types, metapaths, **kwargs)
        net.fit_priors(train_graphs, seed=seed)
        return net

    return make


def _complete_rows(graphs) -> list[int]:
    return torch.nonzero(graphs.present.all(1)).flatten().tolist()


def _drop(batch: GraphBatch, missing: torch.Tensor) -> GraphBatch:
    """``batch`` with modality ``j`` of row ``i`` removed where ``missing[i, j]``."""
    keep = batch.present & ~missing
    mods = list(batch.x)
    x = {m: batch.x[m] * keep[:, j, None, None] for j, m in enumerate(mods)}
    mask = {m: batch.node_mask[m] & keep[:, j, None] for j, m in enumerate(mods)}
    return replace(batch, x=x, node_mask=mask, present=keep)


def _pattern_batch(graphs) -> GraphBatch:
    """One patient per subset of missing modalities (none missing ... all missing)."""
    patterns = torch.tensor(list(itertools.product([False, True], repeat=3)))
    rows = _complete_rows(graphs)[: len(patterns)]
    return _drop(graphs.batch(rows), patterns)


def _score(out) -> torch.Tensor:
    w = torch.linspace(-1, 1, out.embedding.shape[1])
    return (out.embedding * w).sum() + out.steering_loss


def _assert_finite(out):
    for name in ("embedding", "modality_embeddings", "modality_attention", "metapath_attention"):
        assert torch.isfinite(getattr(out, name)).all(), name
    assert torch.isfinite(out.steering_loss)


def test_forward_every_missingness_pattern(make_net, graphs):
    net = make_net().eval()
    batch = _pattern_batch(graphs)
    assert batch.present.sum(1).tolist() == [3, 2, 2, 1, 2, 1, 1, 0]
    out = net(batch)
    _assert_finite(out)
    assert out.embedding.shape == (8, D)
    assert out.modality_embeddings.shape == (8, 3, D)
    assert torch.equal(out.completed, ~batch.present)
    torch.testing.assert_close(out.modality_attention.sum(1), torch.ones(8))
    assert out.metapath_attention.shape == (8, len(net.metapaths))
    torch.testing.assert_close(out.metapath_attention.sum(1), torch.ones(8))
    assert out.steering_loss == 0
    # The real cohort's own patterns: p07 (clinical only) and p08 (wsi only) included.
    out = net(graphs.batch(list(range(len(graphs)))))
    _assert_finite(out)
    assert torch.equal(out.completed, ~graphs.present)


@pytest.mark.parametrize("modality", ["clinical", "expr", "wsi"])
def test_modality_missing_for_every_patient(make_net, graphs, modality):
    net = make_net()
    j = net.modalities.index(modality)
    batch = graphs.batch(list(range(len(graphs))))
    missing = torch.zeros_like(batch.present)
    missing[:, j] = True
    batch = _drop(batch, missing)
    net.eval()
    out = net(batch)
    _assert_finite(out)
    assert torch.equal(out.completed, ~batch.present) and out.completed[:, j].all()
    net.train()
    out = net(batch)
    _assert_finite(out)
    _score(out).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_modality_absent_from_the_cohort(make_net, make_frames, make_cohort, preprocessor):
    from graphmed.graph.build import build_graphs

    frames = make_frames()
    del frames["wsi"]
    graphs = build_graphs(make_cohort(frames), preprocessor, max_instances=8)
    assert not graphs.present[:, 2].any()
    out = make_net().eval()(graphs.batch(list(range(len(graphs)))))
    _assert_finite(out)
    assert out.completed[:, 2].all()


def test_gradients_reach_prompt_bank_and_cross_attention(make_net, graphs):
    net = make_net().eval()
    batch = _pattern_batch(graphs)
    _score(net(batch)).backward()
    for m in net.modalities:
        assert net.completion.bank[m].grad.abs().sum() > 0, m
        assert net.completion.bank_score[m].weight.grad.abs().sum() > 0, m
    for name, p in net.completion.cross.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Nobody misses anything: the prompts are not used.
    net.zero_grad(set_to_none=True)
    full = graphs.batch(_complete_rows(graphs))
    _score(net(full)).backward()
    assert all(p.grad is None or not p.grad.any() for p in net.completion.parameters())


def test_fit_priors_uses_training_patients_who_have_the_modality(make_net, train_graphs):
    net = make_net()
    for j, m in enumerate(net.modalities):
        has = train_graphs.present[:, j]
        if net.layouts[m].kind == "bag":
            rows = train_graphs.x[m][has][train_graphs.node_mask[m][has]][:, None]
        else:
            rows = train_graphs.x[m][has]
        flat = rows.reshape(len(rows), -1)
        for prior in (
            getattr(net.completion, f"medoids_{m}"),
            getattr(net.completion, f"pool_{m}"),
        ):
            for r in prior.reshape(len(prior), -1):
                assert (flat == r).all(1).any(), m


def test_seeded_determinism(make_net, graphs):
    nets = [make_net(seed=3, modality_dropout=0.5), make_net(seed=3, modality_dropout=0.5)]
    sd = [n.state_dict() for n in nets]
    assert sd[0].keys() == sd[1].keys() and all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    batch = graphs.batch(list(range(len(graphs))))
    outs = []
    for net in nets:
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        torch.manual_seed(7)
        out = net(batch)
        _score(out).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        opt.step()
        torch.manual_seed(8)
        outs.append((out, grads, net(batch).embedding))
    (a, ga, a2), (b, gb, b2) = outs
    assert torch.equal(a.embedding, b.embedding)
    assert torch.equal(a.steering_loss, b.steering_loss)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)
    assert torch.equal(a2, b2)
    other = make_net(seed=4).eval()
    assert not torch.equal(other(batch).embedding, nets[0].eval()(batch).embedding)


def test_modality_dropout_never_hides_every_modality(make_net):
    net = make_net(modality_dropout=0.6).train()
    patterns = torch.tensor(list(itertools.product([False, True], repeat=3)))
    present = patterns.repeat(40, 1)
    torch.manual_seed(0)
    hidden_any = torch.zeros_like(present)
    for _ in range(200):
        hide = net._hide(present)
        assert not (hide & ~present).any()
        kept = present & ~hide
        assert torch.equal(kept.any(1), present.any(1))
        hidden_any |= hide
    # Every present modality of a patient with two or more is hidden sometimes.
    several = present.sum(1) >= 2
    assert torch.equal(hidden_any[several], present[several])
    assert not hidden_any[present.sum(1) == 1].any()
    net.eval()
    assert not net._hide(present).any()
    assert not make_net(modality_dropout=0.0).train()._hide(present).any()


@pytest.mark.parametrize("steering", ["cosine", "mse"])
def test_steering_loss(make_net, graphs, steering):
    batch = graphs.batch(list(range(len(graphs))))
    net = make_net(modality_dropout=0.5, steering=steering)
    assert net.eval()(batch).steering_loss == 0
    torch.manual_seed(0)
    out = net.train()(batch)
    assert out.steering_loss > 0
    assert (out.completed & batch.present).any()  # some present modality was hidden
    out.steering_loss.backward()
    assert net.completion.cross.in_proj_weight.grad.abs().sum() > 0
    # The intact embedding is a stop-gradient target: only the completion side learns.
    h = {m: torch.randn(2, 3, D, requires_grad=True) for m in net.modalities}
    mask = {m: torch.ones(2, 3, dtype=torch.bool) for m in net.modalities}
    prompts = torch.randn(2, 3, 5, D, requires_grad=True)
    hidden = torch.tensor([[True, False, False], [False, False, True]])
    net._steering_loss(prompts, h, mask, hidden).backward()
    assert all(v.grad is None for v in h.values())
    assert prompts.grad[hidden].abs().sum() > 0 and not prompts.grad[~hidden].any()
    assert make_net(modality_dropout=0.5, steering="none").train()(batch).steering_loss == 0
    assert make_net(modality_dropout=0.0, steering=steering).train()(batch).steering_loss == 0


def test_zero_completion_uses_zero_filled_inputs(make_net, graphs):
    net = make_net(completion="zero").eval()
    assert net.completion is None
    assert not any(k.startswith("completion") for k in net.state_dict())
    row = _complete_rows(graphs)[:1]
    full = graphs.batch(row)
    for j, m in enumerate(net.modalities):
        missing = torch.zeros_like(full.present)
        missing[:, j] = True
        dropped = _drop(full, missing)
        out = net(dropped)
        _assert_finite(out)
        assert out.completed[0, j]
        # The same as the modality present with zeros (one zero instance for a bag).
        zeros = dict(full.x, **{m: torch.zeros_like(full.x[m])})
        nodes = torch.ones_like(full.node_mask[m])
        if net.layouts[m].kind == "bag":
            nodes[:, 1:] = False
        as_zeros = replace(full, x=zeros, node_mask=dict(full.node_mask, **{m: nodes}))
        torch.testing.assert_close(net(as_zeros).embedding, out.embedding)
        # What the missing modality holds does not matter.
        garbage = replace(dropped, x=dict(dropped.x, **{m: torch.randn_like(full.x[m])}))
        torch.testing.assert_close(net(garbage).embedding, out.embedding)


ABLATIONS = {
    "full": {},
    "zero": {"completion": "zero"},
    "no_bank": {"prompt_bank": False},
    "no_steering": {"steering": "none"},
    "mse_steering": {"steering": "mse"},
    "homogeneous": {"heterogeneous": False},
    "no_metapath_level": {"metapath_level": False},
    "no_metapaths": {"metapaths": []},
    "bag_tokens": {"bag_tokens": 2},
    "one_layer_one_prompt": {"layers": 1, "n_prompts": 1, "n_bank": 1},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablations_forward_backward(make_net, graphs, name):
    kwargs = ABLATIONS[name]
    net = make_net(modality_dropout=0.5, **kwargs).train()
    batch = graphs.batch(list(range(len(graphs))))
    torch.manual_seed(0)
    out = net(batch)
    _assert_finite(out)
    _score(out).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.encoders["clinical"].weight.grad.abs().sum() > 0
    n_paths = 0 if name in ("no_metapath_level", "no_metapaths") else len(net.metapaths)
    assert out.metapath_attention.shape == (len(batch), n_paths)
    assert (net.metapath is None) == (n_paths == 0)
    if name == "no_bank":
        assert all(p.grad is None for p in net.completion.bank.parameters())
    if name == "no_steering":
        assert out.steering_loss == 0
    if name == "homogeneous":
        assert set(net.layers[0].q) == {"node"}
    net.eval()
    _assert_finite(net(batch))


def test_invalid_options_raise(graphs, relations):
    with pytest.raises(ValueError, match="completion must be one of"):
        GraphMedNet(graphs.layouts, relations.edge_types, [], completion="mean")
    with pytest.raises(ValueError, match="steering must be one of"):
        GraphMedNet(graphs.layouts, relations.edge_types, [], steering="l1")


def test_no_loop_over_patients(make_net, graphs):
    net = make_net().eval()
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in net.modules()]
    counts = []
    for index in ([0], torch.arange(64) % len(graphs)):
        calls.clear()
        net(graphs.batch(index))
        counts.append(len(calls))
    for h in hooks:
        h.remove()
    assert counts[0] == counts[1] > 0
