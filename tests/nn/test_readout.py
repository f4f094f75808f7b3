import pytest
import torch

from graphmed.nn.readout import ModalityReadout

D = 16
MODS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _graph(b: int = 3):
    h = {"a": torch.randn(b, 4, D), "b": torch.randn(b, 2, D), "c": torch.randn(b, 6, D)}
    mask = {m: torch.ones(b, v.shape[1], dtype=torch.bool) for m, v in h.items()}
    mask["c"][:, 4:] = False
    mask["b"][1] = False
    available = torch.stack([mask[m].any(1) for m in MODS], 1)
    return h, mask, available


def test_shapes_and_weights():
    readout = ModalityReadout(MODS, D)
    h, mask, available = _graph()
    fused, emb, alpha = readout(h, mask, available)
    assert fused.shape == (3, D) and emb.shape == (3, 3, D) and alpha.shape == (3, 3)
    torch.testing.assert_close(alpha.sum(1), torch.ones(3))
    assert alpha[1, 1] == 0 and not emb[1, 1].any()  # b unavailable for patient 1
    torch.testing.assert_close(fused, (alpha[..., None] * emb).sum(1))


def test_masked_and_unavailable_nodes_do_not_influence():
    readout = ModalityReadout(MODS, D)
    h, mask, available = _graph()
    fused, emb, alpha = readout(h, mask, available)
    h2 = {m: v.clone() for m, v in h.items()}
    h2["c"][:, 4:] = 50 * torch.randn(3, 2, D)
    h2["b"][1] = 50 * torch.randn(2, D)
    fused2, emb2, alpha2 = readout(h2, mask, available)
    torch.testing.assert_close(fused2, fused, rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha2, alpha, rtol=0, atol=1e-6)


def test_single_available_modality_gets_all_weight():
    readout = ModalityReadout(MODS, D)
    h, mask, _ = _graph()
    available = torch.tensor([[False, False, True]] * 3)
    fused, emb, alpha = readout(h, mask, available)
    assert alpha.tolist() == [[0.0, 0.0, 1.0]] * 3
    torch.testing.assert_close(fused, emb[:, 2])
