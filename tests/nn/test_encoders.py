import pytest
import torch

from graphmed.nn.bag_encoder import BagEncoder
from graphmed.nn.gated_attention import GatedAttentionPool, masked_softmax
from graphmed.nn.tabular_encoder import TabularEncoder
from graphmed.nn.vector_encoder import VectorEncoder

D = 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tabular_input(b: int = 5) -> torch.Tensor:
    x = torch.randn(b, 4, 1)
    x[:, 1, 0] = torch.tensor([0, 1, 2, 3, 7])[:b].float()  # categorical codes (3 = max)
    x[:, 3, 0] = torch.tensor([1, 0, 1, 0, 1])[:b].float()
    return x


def test_tabular_shapes_and_numeric_tokens():
    enc = TabularEncoder(4, D, {1: 4, 3: 2})
    x = _tabular_input()
    h = enc(x)
    assert h.shape == (5, 4, D)
    for j in (0, 2):  # numeric: x_j * W_j + b_j
        torch.testing.assert_close(h[:, j], x[:, j] * enc.weight[j] + enc.bias[j])
    assert enc.embed_profiles(x).shape == (5, D)


def test_tabular_categorical_codes_use_embeddings():
    enc = TabularEncoder(4, D, {1: 4, 3: 2})
    x = _tabular_input()
    h = enc(x)
    # Feature 1 owns rows 0..3 of the embedding, feature 3 rows 4..5.
    emb = enc.cat_embedding.weight
    torch.testing.assert_close(h[:, 1], emb[[0, 1, 2, 3, 3]] + enc.bias[1])  # 7 clamps to 3
    torch.testing.assert_close(h[:, 3], emb[[5, 4, 5, 4, 5]] + enc.bias[3])
    # Not a linear function of the code.
    assert not torch.allclose(h[2, 1] - enc.bias[1], 2 * (h[1, 1] - enc.bias[1]))
    # Changing one patient's code changes that token only.
    x2 = x.clone()
    x2[0, 1, 0] = 2.0
    changed = (enc(x2) != h).any(-1)
    assert changed.tolist() == [[False, True, False, False]] + [[False] * 4] * 4
    # Negative codes fall back to the unknown code 0.
    x3 = x.clone()
    x3[0, 1, 0] = -3.0
    torch.testing.assert_close(enc(x3)[0, 1], emb[0] + enc.bias[1])


def test_tabular_without_categoricals():
    enc = TabularEncoder(3, D)
    x = torch.randn(2, 3, 1)
    torch.testing.assert_close(enc(x), x * enc.weight + enc.bias)


def test_vector_encoder_groups_are_separate():
    enc = VectorEncoder(n_groups=3, group_dim=8, d=D).eval()
    x = torch.randn(4, 3, 8)
    h = enc(x)
    assert h.shape == (4, 3, D)
    assert enc.embed_profiles(x).shape == (4, D)
    x2 = x.clone()
    x2[:, 1] += 1.0
    changed = (enc(x2) != h).any(-1)
    assert changed.tolist() == [[False, True, False]] * 4
    assert enc.weight.shape == (3, 8, D)


def test_vector_encoder_eval_deterministic_train_dropout():
    enc = VectorEncoder(3, 8, D, dropout=0.5)
    x = torch.randn(4, 3, 8)
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    assert not torch.equal(enc(x), enc(x))


def test_bag_encoder_without_tokens_keeps_instances():
    enc = BagEncoder(6, D).eval()
    x, mask = torch.randn(3, 5, 6), torch.rand(3, 5) > 0.3
    h, out_mask = enc(x, mask)
    assert h.shape == (3, 5, D) and torch.equal(out_mask, mask)
    assert enc.out_nodes(5) == 5
    assert enc.embed_profiles(torch.randn(7, 1, 6)).shape == (7, D)


def test_bag_encoder_pools_to_tokens_and_ignores_padding():
    enc = BagEncoder(6, D, tokens=2).eval()
    x = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]).bool()
    h, out_mask = enc(x, mask)
    assert h.shape == (3, 2, D) and enc.out_nodes(5) == 2
    assert out_mask.tolist() == [[True, True], [True, True], [False, False]]
    assert not h[2].any()  # an empty bag pools to zeros
    x2 = x.clone()
    x2[0, 3:] = 100 * torch.randn(2, 6)  # padded instances of patient 0
    x2[2] = torch.randn(5, 6)  # every instance of the empty bag
    h2, _ = enc(x2, mask)
    torch.testing.assert_close(h2, h, rtol=0, atol=0)
    x2[0, 0] += 1.0  # a real instance does matter
    assert not torch.allclose(enc(x2, mask)[0][0], h[0])


def test_gated_attention_weights():
    pool = GatedAttentionPool(D, tokens=3)
    h = torch.randn(2, 4, D)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    out, w = pool(h, mask)
    assert out.shape == (2, 3, D) and w.shape == (2, 4, 3)
    torch.testing.assert_close(w[0].sum(0), torch.ones(3))
    assert not w[0, 2:].any() and not w[1].any()
    torch.testing.assert_close(out[0], w[0].T @ h[0])


def test_masked_softmax():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    p = masked_softmax(scores, mask, dim=1)
    torch.testing.assert_close(p[0], torch.softmax(torch.tensor([1.0, -1e9, 3.0]), 0))
    assert torch.equal(p[1], torch.zeros(3))
