import pytest
import torch
from torch import nn

from graphmed.nn.bag_encoder import BagEncoder
from graphmed.nn.completion import PromptCompletion
from graphmed.nn.tabular_encoder import TabularEncoder
from graphmed.nn.vector_encoder import VectorEncoder

D = 16
MODS = ["tab", "vec", "bag"]
SHAPES = {"tab": (4, 1), "vec": (3, 8), "bag": (1, 6)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _encoders() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "tab": TabularEncoder(4, D, {2: 3}),
            "vec": VectorEncoder(3, 8, D),
            "bag": BagEncoder(6, D),
        }
    )


def _profiles(k: int = 30) -> dict[str, torch.Tensor]:
    tab = torch.randn(k, 4, 1)
    tab[:, 2, 0] = torch.randint(0, 3, (k,)).float()
    return {"tab": tab, "vec": torch.randn(k, 3, 8), "bag": torch.randn(k, 1, 6)}


def _inputs(b: int = 4):
    h = {"tab": torch.randn(b, 4, D), "vec": torch.randn(b, 3, D), "bag": torch.randn(b, 5, D)}
    mask = {m: torch.ones(b, v.shape[1], dtype=torch.bool) for m, v in h.items()}
    mask["bag"][:, 3:] = False
    available = torch.ones(b, 3, dtype=torch.bool)
    available[:, 2] = False  # every patient misses the bag
    return h, mask, available


def _module(**kwargs) -> PromptCompletion:
    return PromptCompletion(MODS, SHAPES, D, n_prompts=5, n_bank=4, heads=2, pool_size=8, **kwargs)


def _is_row_of(rows: torch.Tensor, profiles: torch.Tensor) -> bool:
    flat = profiles.reshape(len(profiles), -1)
    return all((flat == r.reshape(1, -1)).all(1).any() for r in rows)


def test_fit_priors_uses_only_given_profiles():
    comp = _module()
    assert not comp.fitted
    profiles = _profiles()
    comp.fit_priors(profiles, seed=0)
    assert comp.fitted
    for m in MODS:
        medoids, pool = getattr(comp, f"medoids_{m}"), getattr(comp, f"pool_{m}")
        assert medoids.shape == (5, *SHAPES[m]) and pool.shape == (8, *SHAPES[m])
        assert _is_row_of(medoids, profiles[m]) and _is_row_of(pool, profiles[m])
        assert len(torch.unique(medoids.reshape(5, -1), dim=0)) == 5
    # Seeded: the same profiles and seed give the same priors.
    again = _module()
    again.fit_priors(profiles, seed=0)
    assert all(
        torch.equal(getattr(again, f"medoids_{m}"), getattr(comp, f"medoids_{m}")) for m in MODS
    )


def test_fit_priors_with_fewer_distinct_profiles_than_prompts():
    comp = _module()
    profiles = _profiles()
    profiles["vec"] = profiles["vec"][:2].repeat(3, 1, 1)  # two distinct profiles
    profiles["bag"] = profiles["bag"][:0]  # nobody has it: priors stay untouched
    comp.fit_priors(profiles)
    assert len(torch.unique(comp.medoids_vec.reshape(5, -1), dim=0)) == 2
    assert _is_row_of(comp.medoids_vec, profiles["vec"])
    assert not comp.medoids_bag.any()


def test_output_shape_and_eval_determinism():
    comp, enc = _module().eval(), _encoders().eval()
    comp.fit_priors(_profiles())
    h, mask, available = _inputs()
    out = comp(enc, h, mask, available)
    assert out.shape == (4, 3, 5, D)
    assert torch.isfinite(out).all()
    assert torch.equal(comp(enc, h, mask, available), out)
    for m in MODS:  # evaluation starts from the medoids
        assert torch.equal(comp._raw_prompts(m), getattr(comp, f"medoids_{m}"))


def test_training_draws_prompts_from_pool():
    comp, enc = _module(dropout=0.0), _encoders().eval()
    comp.fit_priors(_profiles())
    comp.train()
    h, mask, available = _inputs()
    assert not torch.equal(comp(enc, h, mask, available), comp(enc, h, mask, available))
    raw = comp._raw_prompts("vec")
    assert raw.shape == (5, 3, 8) and _is_row_of(raw, comp.pool_vec)


def test_prompts_are_patient_specific():
    comp, enc = _module().eval(), _encoders().eval()
    comp.fit_priors(_profiles())
    h, mask, available = _inputs()
    out = comp(enc, h, mask, available)
    # Different present data -> different prompts for the missing bag.
    assert not torch.allclose(out[0, 2], out[1, 2])
    # The same present data -> the same prompts.
    for m in MODS:
        h[m][1] = h[m][0]
    out = comp(enc, h, mask, available)
    torch.testing.assert_close(out[0, 2], out[1, 2])
    # Hidden (unavailable) and padded nodes are not context.
    h2 = {m: v.clone() for m, v in h.items()}
    h2["bag"] = torch.randn_like(h["bag"])  # unavailable for everyone
    h2["vec"][:, 0] = 50.0
    mask2 = dict(mask, vec=mask["vec"].clone())
    mask2["vec"][:, 0] = False
    mask["vec"][:, 0] = False
    torch.testing.assert_close(comp(enc, h2, mask2, available), comp(enc, h, mask, available))


def test_patient_with_nothing_available_gets_finite_prompts():
    comp, enc = _module().eval(), _encoders().eval()
    comp.fit_priors(_profiles())
    h, mask, available = _inputs()
    available[0] = False
    out = comp(enc, h, mask, available)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("use_bank", [True, False])
def test_prompt_bank_switch(use_bank):
    comp, enc = _module(use_bank=use_bank).eval(), _encoders().eval()
    comp.fit_priors(_profiles())
    h, mask, available = _inputs()
    comp(enc, h, mask, available).pow(2).sum().backward()
    bank_grads = [p.grad for p in list(comp.bank.values()) + list(comp.bank_score.parameters())]
    if use_bank:
        assert all(g is not None and g.abs().sum() > 0 for g in bank_grads)
    else:
        assert all(g is None for g in bank_grads)
    assert comp.cross.in_proj_weight.grad.abs().sum() > 0
    assert comp.type_embedding.grad.abs().sum() > 0
