import pytest
import torch

from graphmed.nn.metapath import MetaPathAggregation

D = 16
TYPES = ["a", "b", "c"]
PATHS = [
    [("a", "r", "b"), ("b", "s", "c")],
    [("c", "rev_s", "b"), ("b", "rev_r", "a")],
    [("a", "r", "b")],
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _graph(b: int = 4):
    h = {"a": torch.randn(b, 4, D), "b": torch.randn(b, 3, D), "c": torch.randn(b, 5, D)}
    mask = {t: torch.ones(b, v.shape[1], dtype=torch.bool) for t, v in h.items()}
    mask["c"][0, 3:] = False
    mask["a"][1] = False  # a has no node for patient 1
    return h, mask


def test_path_weights_sum_to_one():
    agg = MetaPathAggregation(PATHS, TYPES, D).eval()
    h, mask = _graph()
    z, beta = agg(h, mask)
    assert z.shape == (4, D) and beta.shape == (4, 3)
    torch.testing.assert_close(beta.sum(1), torch.ones(4))
    assert (beta > 0).all()
    assert torch.isfinite(z).all()


def test_single_path():
    agg = MetaPathAggregation(PATHS[:1], TYPES, D).eval()
    h, mask = _graph()
    z, beta = agg(h, mask)
    assert z.shape == (4, D)
    torch.testing.assert_close(beta, torch.ones(4, 1))
    # A random projection: the plain sum of a LayerNorm output has zero gradient.
    (z * torch.randn_like(z)).sum().backward()
    assert agg.k["a__r__b"].weight.grad.abs().sum() > 0
    assert agg.k["b__s__c"].weight.grad.abs().sum() > 0


def test_masked_nodes_do_not_influence():
    agg = MetaPathAggregation(PATHS, TYPES, D).eval()
    h, mask = _graph()
    z, beta = agg(h, mask)
    h2 = {t: v.clone() for t, v in h.items()}
    h2["c"][0, 3:] = 30 * torch.randn(2, D)
    h2["a"][1] = 30 * torch.randn(4, D)
    z2, beta2 = agg(h2, mask)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-6)
    torch.testing.assert_close(beta2, beta, rtol=0, atol=1e-6)


def test_empty_types_give_finite_outputs():
    agg = MetaPathAggregation(PATHS, TYPES, D).train()
    h, mask = _graph()
    mask["b"][:] = False
    z, beta = agg(h, mask)
    assert torch.isfinite(z).all() and torch.isfinite(beta).all()
    z.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in agg.parameters())


def test_homogeneous_shares_step_parameters():
    het = MetaPathAggregation(PATHS, TYPES, D)
    hom = MetaPathAggregation(PATHS, TYPES, D, heterogeneous=False)
    assert set(hom.k) == {"step"} and set(hom.q) == {"node"}
    assert len(het.k) == 4 and set(het.q) == set(TYPES)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(hom) < count(het)
    h, mask = _graph()
    z, beta = hom(h, mask)
    assert z.shape == (4, D) and beta.shape == (4, 3)


def test_no_paths_raises():
    with pytest.raises(ValueError, match="at least one meta-path"):
        MetaPathAggregation([], TYPES, D)


def test_pooled_last_hop_equals_projecting_every_source_node():
    # The last hop moves the key/value projections onto the single pooled query;
    # it must give what projecting every source node (``_attend``) gives,
    # including a patient whose source type has no node (patient 1, type a).
    agg = MetaPathAggregation(PATHS, TYPES, D).eval()
    h, mask = _graph()
    q = torch.randn(4, D)
    for step, src in ((("b", "rev_r", "a"), "b"), (("a", "r", "b"), "a")):
        fast = agg._attend_pooled(q, step, h[src], mask[src])
        slow = agg._attend(q[:, None], step, h[src], mask[src])[:, 0]
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert torch.equal(agg._attend_pooled(q, ("a", "r", "b"), h["a"], mask["a"])[1], torch.zeros(D))
