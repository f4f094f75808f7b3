"""Batched kernels equal the per-path / per-relation loops they replaced (to 1e-5).

Each test keeps the old loop here, written from the module's own per-item
methods, and compares outputs and gradients with the batched forward.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from graphmed.nn.metapath import MetaPathAggregation, _masked_mean
from graphmed.nn.relation_attention import RelationAttention

D = 16
TYPES = ["a", "b", "c"]
PATHS = [
    [("a", "r", "b"), ("b", "s", "c")],
    [("c", "rev_s", "b"), ("b", "rev_r", "a")],
    [("a", "r", "b")],
    [("b", "s", "c")],
    [("c", "rev_s", "b")],
]


def _graph(b=5):
    gen = torch.Generator().manual_seed(0)
    h = {t: torch.randn(b, n, D, generator=gen) for t, n in zip(TYPES, (4, 3, 6))}
    mask = {t: torch.ones(b, v.shape[1], dtype=torch.bool) for t, v in h.items()}
    mask["c"][0, 3:] = False
    mask["a"][1] = False  # a has no node for patient 1
    mask["b"][2, 1:] = False
    return h, mask


def _loop_forward(agg, h, mask):
    """The forward pass before the last hops were batched: one path at a time."""
    pooled = {t: _masked_mean(h[t], mask[t]) for t in {p[-1][2] for p in agg.metapaths}}
    queries, hops, per_path = {}, {}, []
    for path in agg.metapaths:
        cur, cur_mask = h[path[0][0]], mask[path[0][0]]
        for i, step in enumerate(path[:-1]):
            key = tuple(path[: i + 1])
            if key not in hops:
                dst = step[2]
                if dst not in queries:
                    queries[dst] = agg.q[agg._tkey(dst)](h[dst])
                msg = agg._attend(queries[dst], step, cur, cur_mask)
                hops[key] = (agg.norm[agg._tkey(dst)](h[dst] + msg), mask[dst])
            cur, cur_mask = hops[key]
        last = path[-1]
        dst = last[2]
        q = agg.q[agg._tkey(dst)](pooled[dst])
        msg = agg._attend_pooled(q, last, cur, cur_mask)
        per_path.append(agg.norm[agg._tkey(dst)](pooled[dst] + msg))
    z = torch.stack(per_path, 1)
    beta = torch.softmax(agg.semantic(z).squeeze(-1), dim=1)
    return agg.dropout((beta[..., None] * z).sum(1)), beta


@pytest.mark.parametrize("heterogeneous", [True, False])
def test_batched_last_hops_equal_the_path_loop(heterogeneous):
    torch.manual_seed(0)
    agg = MetaPathAggregation(PATHS, TYPES, D, dropout=0.0, heterogeneous=heterogeneous)
    with torch.no_grad():  # non-trivial norms, so that a mixed-up type would show
        for norm in agg.norm.values():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    h, mask = _graph()
    proj = torch.randn(D)
    results = []
    for forward in (_loop_forward, lambda a, x, m: a(x, m)):
        agg.zero_grad(set_to_none=True)
        z, beta = forward(agg, h, mask)
        ((z * proj).sum() + beta[:, 0].sum()).backward()
        grads = {n: p.grad.clone() for n, p in agg.named_parameters() if p.grad is not None}
        results.append((z.detach(), beta.detach(), grads))
    (z0, b0, g0), (z1, b1, g1) = results
    torch.testing.assert_close(z1, z0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b1, b0, atol=1e-5, rtol=1e-5)
    assert g1.keys() == g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-5, msg=name)


def test_the_batched_module_keeps_its_state_dict():
    """Saved models still load: the index buffers are not saved."""
    agg = MetaPathAggregation(PATHS, TYPES, D)
    keys = set(agg.state_dict())
    assert not any(k.startswith("last_at") for k in keys)
    assert {"k.a__r__b.weight", "v.b__s__c.bias", "norm.a.weight", "q.c.weight"} <= keys


EDGES = [(t, "intra", t) for t in TYPES] + [
    ("a", "r", "b"),
    ("b", "rev_r", "a"),
    ("b", "s", "c"),
    ("c", "rev_s", "b"),
]


def _relation_loop(layer, h, mask, prompt):
    """RelationAttention.forward before the relation terms were batched per source type."""
    nk, rkey = layer._nkey, layer._rkey
    normed = {t: layer.norm[nk(t)](h[t]) for t in layer.node_types}
    unit = {t: F.normalize(normed[t], dim=-1) for t in layer.node_types}
    keys = {t: layer._split(layer.k[nk(t)](normed[t])) for t in layer.node_types}
    vals = {t: layer._split(layer.v[nk(t)](normed[t])) for t in layer.node_types}
    out = {}
    for t in layer.node_types:
        q = layer._split(layer.q[nk(t)](normed[t]))
        ks, vs, units, masks, prompts, pbias = [], [], [], [], [], []
        for s, r, dst in layer.edge_types:
            if dst != t:
                continue
            rk = rkey((s, r, dst))
            scale = layer.rel_emb[rk] * (layer.prior[rk][:, None] / math.sqrt(layer.dh))
            ks.append(torch.einsum("bhnd,hde->bhne", keys[s], layer.w_att[rk] * scale[:, None]))
            vs.append(torch.einsum("bhnd,hde->bhne", vals[s], layer.w_msg[rk]))
            units.append(unit[s] * layer.cos_scale[rk])
            masks.append(mask[s])
            prompts.append(prompt[s])
            pbias.append(layer.prompt_bias[rk].expand(mask[s].shape[1]))
        bias = unit[t] @ torch.cat(units, 1).transpose(1, 2)
        touches = prompt[t][:, :, None] | torch.cat(prompts, 1)[:, None, :]
        bias = bias + touches * torch.cat(pbias)
        bias = bias.masked_fill(~torch.cat(masks, 1)[:, None, :], torch.finfo(bias.dtype).min)
        msg = F.scaled_dot_product_attention(
            q, torch.cat(ks, 2), torch.cat(vs, 2), attn_mask=bias[:, None], scale=1.0
        )
        msg = msg.transpose(1, 2).reshape(h[t].shape)
        x = h[t] + layer.dropout(layer.o[nk(t)](msg))
        x = x + layer.ffn[nk(t)](x)
        out[t] = x * mask[t][..., None]
    return out


@pytest.mark.parametrize("heterogeneous", [True, False])
def test_batched_relation_terms_equal_the_relation_loop(heterogeneous):
    torch.manual_seed(0)
    layer = RelationAttention(TYPES, EDGES, D, heads=4, dropout=0.0, heterogeneous=heterogeneous)
    with torch.no_grad():  # relation parameters away from their identity / ones start
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    h, mask = _graph()
    prompt = {
        t: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) > 0.7
        for t, m in mask.items()
    }
    proj = {t: torch.randn(D) for t in TYPES}
    results = []
    for forward in (_relation_loop, lambda a, x, m, p: a(x, m, p)):
        layer.zero_grad(set_to_none=True)
        out = forward(layer, h, mask, prompt)
        sum((out[t] * proj[t]).sum() for t in TYPES).backward()
        grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
        results.append(({t: v.detach() for t, v in out.items()}, grads))
    (o0, g0), (o1, g1) = results
    for t in TYPES:
        torch.testing.assert_close(o1[t], o0[t], atol=1e-5, rtol=1e-5)
    assert g1.keys() == g0.keys()
    for name in g0:
        # to 1e-5 of the gradient's scale (a key bias has an all-but-zero gradient: it
        # shifts every score of a query alike and cancels in the softmax)
        scale = max(1.0, float(g0[name].abs().max()))
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5 * scale, rtol=1e-5, msg=name)
