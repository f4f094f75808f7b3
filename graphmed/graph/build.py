"""Patient heterographs, built once per cohort and cached.

Every patient becomes a graph with one node type per modality:

* tabular: a node per feature (its standardised value, or its category code);
* vector: a node per gene group (``groups`` option) or per contiguous chunk of
  ``chunk_size`` columns (default 8), chunks widened so that a modality has at
  most ``max_tokens`` nodes (default 32);
* bag: a node per instance, at most ``max_instances`` (default 64) of them,
  subsampled (seeded) or pooled to that many k-means prototypes;
* graph: a node per node of the patient's own graph, at most the ``n_nodes``
  fixed on the training fold (option ``max_nodes``, default 256); a larger
  graph keeps connected regions grown breadth-first from seeded start nodes,
  with the edges among the kept nodes;
* text: the TF-IDF + SVD components of the report, chunked as a vector's.

Edges: every modality is complete inside (``intra``) except a graph modality,
whose intra edges are the patient's own edges (stored, per patient, as
``edge_index`` / ``edge_mask`` / ``edge_attr``); each relation joins all nodes
of its two modalities, in both directions. Every patient carries the
same schema, with zero nodes for a missing modality, and a mask of present
modalities, so batching never drops a type.

Storage is the fast path: :class:`PatientGraphs` holds, per modality, one
padded tensor ``(P, N, f)`` and a node mask ``(P, N)``; a batch is an index
into them (:meth:`PatientGraphs.batch`). Because edges are implied by the node
masks, they are not stored; :meth:`PatientGraphs.to_heterodata` materialises
a PyG ``HeteroData`` (with ``edge_index`` and ``edge_weight``) for PyG loaders,
convolutions and inspection.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._safeload import load_tensors, plain
from ..data.cohort import Cohort
from ..data.preprocess import CohortPreprocessor, ModalityTransform, TransformedModality
from ..errors import CohortError
from .batch import GraphBatch

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

    from .relations import RelationGraph


@dataclass
class ModalityLayout:
    """Shape and meaning of one modality's nodes.

    Attributes:
        n_nodes: Node slots per patient (the padded size).
        node_dim: Width of a node's raw feature vector.
        node_names: A name per node slot (feature, group, or instance index).
        categorical: Node index -> number of codes (0 = unknown) for categorical
            tabular features.
        group_sizes: Number of real columns in each vector group.
        edge_dim: Width of a graph modality's edge features (0: none).
    """

    name: str
    kind: str
    n_nodes: int
    node_dim: int
    node_names: list[str] = field(default_factory=list)
    categorical: dict[int, int] = field(default_factory=dict)
    group_sizes: list[int] = field(default_factory=list)
    edge_dim: int = 0


@dataclass
class PatientGraphs:
    """The cached patient graphs of a cohort, ready to batch.

    Attributes:
        patient_ids: Patient order of every tensor.
        layouts: Modality name -> :class:`ModalityLayout`.
        x: Modality -> ``(P, N_m, f_m)`` node features (zeros where absent).
        node_mask: Modality -> ``(P, N_m)`` bool, True for real nodes.
        present: ``(P, M)`` bool, modality order of ``layouts``.
        time, event: ``(P,)`` survival endpoint (float32, float32 0/1).
        labels: Label column -> ``(P,)`` int64 codes (-1 where unknown).
        label_classes: Label column -> class values in code order.
        edge_index: Graph modality -> ``(P, 2, E_m)`` int64 edges between the
            patient's node slots (padding edges point at slot 0).
        edge_mask: Graph modality -> ``(P, E_m)`` bool, True for real edges.
        edge_attr: Graph modality with edge features -> ``(P, E_m, f)``.
    """

    patient_ids: list[str]
    layouts: dict[str, ModalityLayout]
    x: dict[str, torch.Tensor]
    node_mask: dict[str, torch.Tensor]
    present: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    label_classes: dict[str, list[Any]] = field(default_factory=dict)
    edge_index: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    edge_attr: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def modalities(self) -> list[str]:
        return list(self.layouts)

    @property
    def device(self) -> torch.device:
        return self.present.device

    def to(self, device: str | torch.device) -> PatientGraphs:
        """Move every cached tensor once, so batches are indexed on the device."""
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return PatientGraphs(
            self.patient_ids,
            self.layouts,
            move(self.x),
            move(self.node_mask),
            self.present.to(device),
            self.time.to(device),
            self.event.to(device),
            move(self.labels),
            self.label_classes,
            move(self.edge_index),
            move(self.edge_mask),
            move(self.edge_attr),
        )

    def batch(self, index: torch.Tensor | np.ndarray | list[int]) -> GraphBatch:
        """The batch of patients ``index``: pure indexing, no collation."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return GraphBatch(
            x={m: v[idx].float() for m, v in self.x.items()},
            node_mask={m: v[idx] for m, v in self.node_mask.items()},
            present=self.present[idx],
            time=self.time[idx],
            event=self.event[idx],
            labels={k: v[idx] for k, v in self.labels.items()},
            index=idx,
            edge_index={m: v[idx] for m, v in self.edge_index.items()},
            edge_mask={m: v[idx] for m, v in self.edge_mask.items()},
            edge_attr={m: v[idx].float() for m, v in self.edge_attr.items()},
        )

    def subset(self, index: np.ndarray | list[int]) -> PatientGraphs:
        """Graphs of a subset of patients (tensors are indexed copies)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        b = self.batch(idx)
        return PatientGraphs(
            [self.patient_ids[i] for i in idx.tolist()],
            self.layouts,
            {m: self.x[m][idx.to(self.device)] for m in self.x},
            b.node_mask,
            b.present,
            b.time,
            b.event,
            b.labels,
            self.label_classes,
            b.edge_index,
            b.edge_mask,
            {m: self.edge_attr[m][idx.to(self.device)] for m in self.edge_attr},
        )

    # ---------------------------------------------------------- PyG interface
    def to_heterodata(self, i: int, relations: RelationGraph) -> HeteroData:
        """Patient ``i`` as a PyG ``HeteroData`` with every node and edge type.

        Intra-modal edge weights are the cosine similarity of the end nodes'
        raw features; a graph modality's intra edges are its own edges (with
        their ``edge_attr`` when it has edge features). Cross-modal end nodes live in different raw spaces, so
        their stored weight is 1 and the model computes their cosine
        similarity in the shared embedding space.
        """
        from torch_geometric.data import HeteroData

        data = HeteroData()
        feats = {}
        for m in self.modalities:
            mask = self.node_mask[m][i]
            feats[m] = self.x[m][i][mask].float()
            data[m].x = feats[m]
        for s, r, t in relations.edge_types_with_intra:
            ns, nt = len(feats[s]), len(feats[t])
            src = torch.arange(ns).repeat_interleave(nt)
            dst = torch.arange(nt).repeat(ns)
            if s == t and s in self.edge_index:
                own = self.edge_mask[s][i]
                src, dst = self.edge_index[s][i][:, own].long()
                if s in self.edge_attr:
                    data[s, r, t].edge_attr = self.edge_attr[s][i][own].float()
            elif s == t:
                keep = src != dst
                src, dst = src[keep], dst[keep]
            if s == t:
                xs = torch.nn.functional.normalize(feats[s], dim=-1)
                weight = (xs[src] * xs[dst]).sum(-1)
            else:
                weight = torch.ones(len(src))
            data[s, r, t].edge_index = torch.stack([src, dst])
            data[s, r, t].edge_weight = weight
        data.present = self.present[i][None]
        data.time = self.time[i][None]
        data.event = self.event[i][None]
        data.patient_index = torch.tensor([i])
        return data

    def to_data_list(self, relations: RelationGraph) -> list[HeteroData]:
        return [self.to_heterodata(i, relations) for i in range(len(self))]

    # ------------------------------------------------------------ disk cache
    def save(self, path: str | Path) -> None:
        """Save to one file (atomically), to skip rebuilding next time."""
        from .._atomic import atomic_path

        state = {k: getattr(self, k) for k in self.__dataclass_fields__}
        state["layouts"] = {m: vars(v) for m, v in self.layouts.items()}
        # Plain Python values and tensors only, so that load() can refuse pickled code.
        state["label_classes"] = plain(self.label_classes)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> PatientGraphs:
        """Read graphs written by :meth:`save`.

        The file is read with ``torch.load(weights_only=True)``: tensors and
        plain containers only, so a crafted file cannot run code. With
        ``mmap=True`` the tensors are memory-mapped from the file instead of
        read into memory: a batch reads only its patients' pages, so a cache
        larger than memory can be trained from (``to(device)`` or
        ``subset`` copy what they touch). Raises :class:`CohortError` for a
        file that is missing, corrupt, foreign or unsafe.
        """
        fix = "delete it to rebuild"
        state = load_tensors(path, what="cached graphs", fix=fix, error=CohortError, mmap=mmap)
        try:
            state["layouts"] = {m: ModalityLayout(**v) for m, v in state["layouts"].items()}
            return cls(**state)
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise CohortError(f"cannot read cached graphs '{path}' ({err}); {fix}") from err


def build_graphs(
    cohort: Cohort,
    preprocessor: CohortPreprocessor,
    *,
    max_instances: int = 64,
    bag_pooling: str = "subsample",
    chunk_size: int = 8,
    max_tokens: int | None = 32,
    seed: int = 0,
    store_dtype: torch.dtype = torch.float32,
    label_classes: dict[str, list[Any]] | None = None,
) -> PatientGraphs:
    """Tokenise a preprocessed cohort into cached patient graphs.

    Args:
        cohort: The patients to build (any subset; statistics come from
            ``preprocessor``, already fitted on training patients).
        preprocessor: A fitted :class:`CohortPreprocessor`.
        max_instances: Default cap on bag nodes (a bag's ``max_instances``
            option wins).
        bag_pooling: ``"subsample"`` (seeded) or ``"prototypes"`` (k-means).
        chunk_size: Default vector chunk width (a modality's option wins).
        max_tokens: Cap on the chunk nodes of a vector modality: a wider one gets
            chunks of ``ceil(width / max_tokens)`` columns. ``None``: no cap.
        seed: Seed of bag subsampling and prototype initialisation.
        store_dtype: dtype of the cached features (float16 halves memory).
        label_classes: Classes per label column (fitted on training patients);
            default: the sorted values seen in ``cohort``.
    """
    if bag_pooling not in ("subsample", "prototypes"):
        raise CohortError(f"bag_pooling must be 'subsample' or 'prototypes', got '{bag_pooling}'")
    if preprocessor.transforms_ is None:
        raise CohortError("build_graphs needs a fitted CohortPreprocessor")
    arrays = preprocessor.transform(cohort)
    layouts, xs, masks, present = {}, {}, {}, []
    edges: dict[str, dict[str, torch.Tensor]] = {"index": {}, "mask": {}, "attr": {}}
    for mod, tr in preprocessor.transforms_.items():
        options = tr.options  # fitted with the preprocessor, so every cohort gets the same nodes
        arr = arrays[mod]
        if tr.kind == "tabular":
            layout, x, mask = _tabular_nodes(mod, tr, arr)
        elif tr.kind in ("vector", "text"):
            size = int(options.get("chunk_size", chunk_size))
            if max_tokens is not None and not options.get("groups"):
                size = max(size, -(-len(tr.columns) // int(max_tokens)))
            layout, x, mask = _vector_nodes(mod, tr, arr, options.get("groups"), size)
            layout.kind = tr.kind
        elif tr.kind == "graph":
            layout, x, mask, own = _graph_nodes(mod, tr, arr, seed, cohort.patient_ids)
            for key, value in own.items():
                edges[key][mod] = value
        else:
            cap = int(options.get("max_instances", max_instances))
            pooling = options.get("pooling", bag_pooling)
            layout, x, mask = _bag_nodes(mod, tr, arr, cap, pooling, seed, cohort.patient_ids)
        layouts[mod], xs[mod], masks[mod] = layout, x.to(store_dtype), mask
        present.append(torch.from_numpy(arr.present))
    labels, classes = {}, {}
    for col in cohort.labels:
        values = cohort.patients[col]
        cls_list = (label_classes or {}).get(col) or sorted(values.dropna().unique().tolist())
        lookup = {v: k for k, v in enumerate(cls_list)}
        labels[col] = torch.tensor([lookup.get(v, -1) for v in values], dtype=torch.long)
        classes[col] = cls_list
    return PatientGraphs(
        patient_ids=cohort.patient_ids,
        layouts=layouts,
        x=xs,
        node_mask=masks,
        present=torch.stack(present, 1)
        if present
        else torch.zeros(cohort.n_patients, 0, dtype=torch.bool),
        time=torch.as_tensor(cohort.time, dtype=torch.float32),
        event=torch.as_tensor(cohort.event, dtype=torch.float32),
        labels=labels,
        label_classes=classes,
        edge_index=edges["index"],
        edge_mask=edges["mask"],
        edge_attr={m: v.to(store_dtype) for m, v in edges["attr"].items()},
    )


def _tabular_nodes(mod: str, tr: ModalityTransform, arr: TransformedModality):
    values = torch.from_numpy(np.asarray(arr.values))
    n = values.shape[1]
    categorical = {
        j: len(tr.categorical[c]) + 1 for j, c in enumerate(tr.columns) if c in tr.categorical
    }
    layout = ModalityLayout(mod, "tabular", n, 1, list(tr.columns), categorical)
    mask = torch.from_numpy(arr.present)[:, None].expand(-1, n).clone()
    return layout, values[:, :, None], mask


def _vector_nodes(mod, tr, arr, groups, chunk_size):
    values = np.asarray(arr.values)
    col_index = {c: j for j, c in enumerate(tr.columns)}
    if groups:
        members, names, used = [], [], set()
        for name, cols in groups.items():
            idx = [col_index[c] for c in cols if c in col_index]
            if idx:
                members.append(idx)
                names.append(str(name))
                used.update(idx)
        rest = [j for j in range(len(tr.columns)) if j not in used]
        for k in range(0, len(rest), chunk_size):
            members.append(rest[k : k + chunk_size])
            names.append(f"other_{k // chunk_size}")
    else:
        members = [
            list(range(k, min(k + chunk_size, len(tr.columns))))
            for k in range(0, len(tr.columns), chunk_size)
        ]
        names = [f"chunk_{k}" for k in range(len(members))]
    width = max(len(g) for g in members)
    gather = np.full((len(members), width), values.shape[1], dtype=np.int64)
    for g, idx in enumerate(members):
        gather[g, : len(idx)] = idx
    padded = np.concatenate([values, np.zeros((len(values), 1), np.float32)], axis=1)
    x = torch.from_numpy(padded[:, gather])
    layout = ModalityLayout(
        mod, "vector", len(members), width, names, group_sizes=[len(g) for g in members]
    )
    mask = torch.from_numpy(arr.present)[:, None].expand(-1, len(members)).clone()
    return layout, x, mask


def _bag_nodes(mod, tr, arr, cap, pooling, seed, patient_ids):
    bags = arr.values
    sizes = np.array([len(b) for b in bags])
    n = int(max(1, min(cap, sizes.max(initial=1))))
    x = torch.zeros(len(bags), n, tr.width)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, bag in enumerate(bags):
        if len(bag) > n:
            # Seeded by the patient's id, so its nodes never depend on who else is built.
            key = zlib.crc32(patient_ids[i].encode())
            if pooling == "prototypes":
                bag = _kmeans(torch.from_numpy(bag), n, (seed * 1_000_003 + key) % 2**63)
            else:
                rng = np.random.default_rng([seed, key])
                bag = bag[np.sort(rng.choice(len(bag), n, replace=False))]
        k = len(bag)
        if k:
            x[i, :k] = torch.as_tensor(bag)
            mask[i, :k] = True
    layout = ModalityLayout(mod, "bag", n, tr.width, [f"instance_{j}" for j in range(n)])
    return layout, x, mask


def _graph_nodes(mod, tr, arr, seed, patient_ids):
    n = int(tr.state["n_nodes"])
    e_dim = int(tr.state.get("edge_width", 0))
    nodes, own = [], []
    for i, (x, (ei, attr)) in enumerate(zip(arr.values, arr.edges)):
        if len(x) > n:
            # Seeded by the patient's id, so its nodes never depend on who else is built.
            rng = np.random.default_rng([seed, zlib.crc32(patient_ids[i].encode())])
            keep = _regions(len(x), ei, n, rng)
            new = np.full(len(x), -1, np.int64)
            new[keep] = np.arange(len(keep))
            inside = (new[ei[0]] >= 0) & (new[ei[1]] >= 0)
            x, ei = x[keep], new[ei[:, inside]]
            attr = None if attr is None else attr[inside]
        nodes.append(x)
        own.append((ei, attr))
    n_edges = max([1] + [e.shape[1] for e, _ in own])
    x = torch.zeros(len(nodes), n, tr.width)
    mask = torch.zeros(len(nodes), n, dtype=torch.bool)
    index = torch.zeros(len(nodes), 2, n_edges, dtype=torch.long)
    edge_mask = torch.zeros(len(nodes), n_edges, dtype=torch.bool)
    edge_attr = torch.zeros(len(nodes), n_edges, e_dim) if e_dim else None
    for i, (xi, (ei, attr)) in enumerate(zip(nodes, own)):
        x[i, : len(xi)] = torch.as_tensor(xi)
        mask[i, : len(xi)] = True
        k = ei.shape[1]
        index[i, :, :k] = torch.as_tensor(ei)
        edge_mask[i, :k] = True
        if edge_attr is not None and attr is not None:
            edge_attr[i, :k] = torch.as_tensor(attr)
    names = [f"node_{j}" for j in range(n)]
    layout = ModalityLayout(mod, "graph", n, tr.width, names, edge_dim=e_dim)
    out = {"index": index, "mask": edge_mask}
    if edge_attr is not None:
        out["attr"] = edge_attr
    return layout, x, mask, out


def _regions(n_total: int, edge_index: np.ndarray, k: int, rng) -> np.ndarray:
    """``k`` node indices forming connected regions, grown breadth-first from seeded starts.

    Unlike a uniform subsample, a region keeps each kept node's neighbourhood,
    which is what message passing reads.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    ones = np.ones(edge_index.shape[1])
    adj = coo_matrix((ones, (edge_index[0], edge_index[1])), shape=(n_total, n_total)).tocsr()
    taken = np.zeros(n_total, bool)
    keep: list[np.ndarray] = []
    need = k
    while need > 0:
        start = int(rng.choice(np.flatnonzero(~taken)))
        order = breadth_first_order(adj, start, directed=False, return_predecessors=False)
        order = order[~taken[order]][:need]
        taken[order] = True
        keep.append(order)
        need -= len(order)
    return np.sort(np.concatenate(keep))


def _kmeans(points: torch.Tensor, k: int, seed: int, iters: int = 10) -> torch.Tensor:
    """k centroids of ``points`` (N, d) by Lloyd's algorithm, seeded."""
    gen = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(len(points), generator=gen)[:k]].clone()
    for _ in range(iters):
        assign = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).clamp(min=1)[:, None]
        moved = sums / counts
        empty = torch.bincount(assign, minlength=k) == 0
        centroids = torch.where(empty[:, None], centroids, moved)
    return centroids
