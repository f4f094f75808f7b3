import pytest
import torch

from graphmed.nn.relation_attention import RelationAttention

D = 16
TYPES = ["a", "b", "c"]
EDGES = [
    ("a", "intra", "a"),
    ("b", "intra", "b"),
    ("c", "intra", "c"),
    ("a", "r", "b"),
    ("b", "rev_r", "a"),
    ("b", "s", "c"),
    ("c", "rev_s", "b"),
]
SIZES = {"a": 4, "b": 3, "c": 5}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _graph(b: int = 3):
    h = {t: torch.randn(b, n, D) for t, n in SIZES.items()}
    mask = {t: torch.ones(b, n, dtype=torch.bool) for t, n in SIZES.items()}
    mask["c"][0, 2:] = False  # padded nodes
    mask["a"][1] = False  # a modality missing for one patient
    prompt = {t: torch.zeros(b, n, dtype=torch.bool) for t, n in SIZES.items()}
    return h, mask, prompt


def _layer(**kwargs) -> RelationAttention:
    return RelationAttention(TYPES, EDGES, D, heads=2, **kwargs).eval()


def test_shapes_and_masked_outputs_are_zero():
    layer = _layer()
    h, mask, prompt = _graph()
    out = layer(h, mask, prompt)
    assert {t: v.shape for t, v in out.items()} == {t: h[t].shape for t in TYPES}
    for t in TYPES:
        assert not out[t][~mask[t]].any()
        assert torch.isfinite(out[t]).all()


def test_masked_nodes_do_not_influence_real_nodes():
    layer = _layer()
    h, mask, prompt = _graph()
    out = layer(h, mask, prompt)
    h2 = {t: v.clone() for t, v in h.items()}
    h2["c"][0, 2:] = 30 * torch.randn(3, D)
    h2["a"][1] = 30 * torch.randn(4, D)
    out2 = layer(h2, mask, prompt)
    for t in TYPES:
        torch.testing.assert_close(out2[t], out[t], rtol=0, atol=1e-6)
    # A real node does influence its neighbours in other types.
    h2["c"][0, 0] = torch.randn(D)
    assert not torch.allclose(layer(h2, mask, prompt)["b"][0], out["b"][0])


def test_prompt_flag_changes_scores_through_prompt_bias():
    layer = _layer()
    with torch.no_grad():
        for p in layer.prompt_bias.values():
            p.fill_(2.0)
    h, mask, prompt = _graph()
    out = layer(h, mask, prompt)
    prompt["a"][0, :2] = True
    out2 = layer(h, mask, prompt)
    assert not torch.allclose(out2["b"][0], out["b"][0])
    torch.testing.assert_close(out2["b"][1:], out["b"][1:])  # other patients untouched


def test_homogeneous_shares_parameters():
    het, hom = _layer(), _layer(heterogeneous=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(hom) < count(het)
    assert set(hom.q.keys()) == {"node"}
    assert set(hom.w_att.keys()) == {"edge"}
    assert set(het.q.keys()) == set(TYPES) and len(het.w_att) == len(EDGES)
    # The same parameter names (the same module structure), fewer entries.
    strip = lambda m: {k.split(".")[0] for k in m.state_dict()}  # noqa: E731
    assert strip(hom) == strip(het)
    h, mask, prompt = _graph()
    out = hom(h, mask, prompt)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_modality_with_no_real_nodes_in_batch_gives_finite_outputs():
    layer = _layer()
    h, mask, prompt = _graph()
    mask["b"][:] = False  # b is missing for every patient
    h["b"] = torch.zeros_like(h["b"])
    out = layer(h, mask, prompt)
    for t in TYPES:
        assert torch.isfinite(out[t]).all()
    assert not out["b"].any()
    # Every type missing for a patient.
    for t in TYPES:
        mask[t][2] = False
    out = layer(h, mask, prompt)
    assert all(torch.isfinite(v).all() for v in out.values())
    out["a"].sum().backward()


def test_gradients_are_finite_with_empty_types():
    layer = _layer().train()
    h, mask, prompt = _graph()
    mask["b"][:] = False
    h = {t: v.requires_grad_() for t, v in h.items()}
    sum(v.sum() for v in layer(h, mask, prompt).values()).backward()
    assert all(torch.isfinite(v.grad).all() for v in h.values())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in layer.parameters())


def test_d_not_divisible_by_heads_raises():
    with pytest.raises(ValueError, match="d=10 must be divisible by heads=4"):
        RelationAttention(TYPES, EDGES, 10, heads=4)


def _reference_layer(layer: RelationAttention, h, mask, prompt):
    """The layer written relation by relation, as the design states it (slow, plain)."""
    import math

    import torch.nn.functional as F

    normed = {t: layer.norm[t](h[t]) for t in TYPES}
    out = {}
    for t in TYPES:
        q = layer._split(layer.q[t](normed[t]))
        scores, values, masks = [], [], []
        for s, r, dst in EDGES:
            if dst != t:
                continue
            rk = layer._rkey((s, r, dst))
            k = torch.einsum("bhnd,hde->bhne", layer._split(layer.k[s](normed[s])), layer.w_att[rk])
            score = (q * layer.rel_emb[rk][:, None]) @ k.transpose(-1, -2)
            score = score * layer.prior[rk][:, None, None] / math.sqrt(layer.dh)
            cos = F.normalize(normed[t], dim=-1) @ F.normalize(normed[s], dim=-1).transpose(1, 2)
            touches = prompt[t][:, :, None] | prompt[s][:, None, :]
            scores.append(
                score + (layer.cos_scale[rk] * cos + layer.prompt_bias[rk] * touches)[:, None]
            )
            v = layer._split(layer.v[s](normed[s]))
            values.append(torch.einsum("bhnd,hde->bhne", v, layer.w_msg[rk]))
            masks.append(mask[s])
        score = torch.cat(scores, -1).masked_fill(~torch.cat(masks, -1)[:, None, None], -1e30)
        msg = (torch.softmax(score, -1) @ torch.cat(values, 2)).transpose(1, 2).reshape(h[t].shape)
        x = h[t] + layer.o[t](msg)
        out[t] = (x + layer.ffn[t](x)) * mask[t][..., None]
    return out


def test_fused_attention_equals_relation_by_relation_reference():
    layer = _layer()
    with torch.no_grad():  # move every relation parameter off its initial value
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    h, mask, prompt = _graph()
    prompt["b"][2, :2] = True
    got, want = layer(h, mask, prompt), _reference_layer(layer, h, mask, prompt)
    for t in TYPES:
        torch.testing.assert_close(got[t], want[t], rtol=1e-4, atol=1e-5)
