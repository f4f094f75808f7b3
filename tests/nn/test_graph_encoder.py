"""The graph encoder batches patients' graphs exactly as PyG does, and keeps them apart."""

import pytest
import torch
from torch_geometric.data import Batch, Data

from graphmed.nn.graph_encoder import GraphEncoder, flatten_graphs


def _padded(sizes, n_slots=6, n_edges=10, f=3, g=0, seed=0):
    """Random graphs of ``sizes`` nodes, padded to ``n_slots`` nodes and ``n_edges`` edges."""
    gen = torch.Generator().manual_seed(seed)
    b = len(sizes)
    x = torch.zeros(b, n_slots, f)
    mask = torch.zeros(b, n_slots, dtype=torch.bool)
    index = torch.zeros(b, 2, n_edges, dtype=torch.long)
    edge_mask = torch.zeros(b, n_edges, dtype=torch.bool)
    attr = torch.zeros(b, n_edges, g) if g else None
    datas = []
    for i, n in enumerate(sizes):
        k = int(torch.randint(1, n_edges + 1, (1,), generator=gen))
        xi = torch.randn(n, f, generator=gen)
        ei = torch.randint(0, n, (2, k), generator=gen)
        x[i, :n], mask[i, :n] = xi, True
        index[i, :, :k], edge_mask[i, :k] = ei, True
        data = Data(x=xi, edge_index=ei)
        if g:
            attr[i, :k] = data.edge_attr = torch.randn(k, g, generator=gen)
        datas.append(data)
    return x, mask, index, edge_mask, attr, datas


@pytest.mark.parametrize("g", [0, 2])
def test_flatten_graphs_is_pyg_batching_of_the_real_nodes(g):
    x, mask, index, edge_mask, attr, datas = _padded([4, 6, 1, 3], g=g)
    nodes, edges, flat_attr = flatten_graphs(x, index, edge_mask, attr)
    batch = Batch.from_data_list(datas)
    # Padding slots stay as isolated nodes; renumbering the real ones gives PyG's batch.
    real = mask.reshape(-1)
    new = torch.full((len(real),), -1, dtype=torch.long)
    new[real] = torch.arange(int(real.sum()))
    torch.testing.assert_close(nodes[real], batch.x)
    torch.testing.assert_close(new[edges], batch.edge_index)
    assert (new[edges] >= 0).all()  # no edge touches a padding slot
    if g:
        torch.testing.assert_close(flat_attr, batch.edge_attr)


@pytest.mark.parametrize("conv", ["gatv2", "gin"])
def test_a_patient_encodes_the_same_alone_or_in_a_batch(conv):
    torch.manual_seed(0)
    x, mask, index, edge_mask, attr, _ = _padded([4, 6, 2], g=2, seed=1)
    enc = GraphEncoder(3, 8, tokens=2, edge_dim=2, conv=conv).eval()
    out, out_mask = enc(x, mask, index, edge_mask, attr)
    assert out.shape == (3, 2, 8) and out_mask.all()
    for i in range(3):
        alone, _ = enc(
            x[i : i + 1], mask[i : i + 1], index[i : i + 1], edge_mask[i : i + 1], attr[i : i + 1]
        )
        torch.testing.assert_close(alone, out[i : i + 1], atol=1e-5, rtol=1e-5)
    # Edges matter: dropping one patient's edges changes its encoding and no other's.
    cut = edge_mask.clone()
    cut[1] = False
    changed, _ = enc(x, mask, index, cut, attr)
    torch.testing.assert_close(changed[[0, 2]], out[[0, 2]], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(changed[1], out[1], atol=1e-4)
