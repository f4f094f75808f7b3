"""The ``graph`` modality kind: one small graph per patient (e.g. a cell graph).

In memory a graph modality is a dict ``patient_id -> ModalityGraph``; on disk
it is a folder of ``<patient_id>.npz`` files (arrays ``x``, ``edge_index`` and
optionally ``edge_attr``) or ``<patient_id>.pt`` files (a dict of those
tensors, or a PyG ``Data``), read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..errors import CohortError
from ._per_patient import load_per_patient

GRAPH_SUFFIXES = (".npz", ".pt")
DEFAULT_MAX_NODES = 256
"""Default cap on the nodes a graph modality keeps per patient (option ``max_nodes``)."""
GRAPH_KEYS = ("x", "edge_index", "edge_attr")
LIMIT = 1e30  # as validate.LIMIT: larger magnitudes are corrupted cells


@dataclass(frozen=True, eq=False)
class ModalityGraph:
    """One patient's graph of a graph modality.

    Attributes:
        x: ``(N, d)`` float32 node features.
        edge_index: ``(2, E)`` int64 source and target node of every edge
            (directed; give both directions for an undirected graph).
        edge_attr: ``(E, f)`` float32 edge features, or None.
    """

    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0]) if getattr(self.x, "ndim", 0) else 0

    @property
    def num_edges(self) -> int:
        shape = getattr(self.edge_index, "shape", ())
        return int(shape[1]) if len(shape) == 2 else 0

    def equals(self, other: Any) -> bool:
        """Same arrays with the same dtypes (``edge_attr`` both None or equal)."""
        if not isinstance(other, ModalityGraph):
            return False
        pairs = [(self.x, other.x), (self.edge_index, other.edge_index)]
        if (self.edge_attr is None) != (other.edge_attr is None):
            return False
        if self.edge_attr is not None:
            pairs.append((self.edge_attr, other.edge_attr))
        return all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in pairs)

    def to_data(self):
        """The graph as a PyG ``Data`` (tensors share memory with the arrays)."""
        import torch
        from torch_geometric.data import Data

        data = Data(x=torch.from_numpy(self.x), edge_index=torch.from_numpy(self.edge_index))
        if self.edge_attr is not None:
            data.edge_attr = torch.from_numpy(self.edge_attr)
        return data


def as_modality_graph(value: Any, where: str) -> ModalityGraph:
    """A :class:`ModalityGraph` from a graph, a PyG ``Data``, a dict or a tuple.

    Numeric node and edge features become float32 and an integer edge index
    int64; anything else is kept for :func:`check_graph_modality` to report.

    Raises:
        CohortError: ``value`` is none of those, or names keys other than
            ``x``, ``edge_index``, ``edge_attr``.
    """
    if isinstance(value, ModalityGraph):
        parts: dict[str, Any] = {"x": value.x, "edge_index": value.edge_index}
        parts["edge_attr"] = value.edge_attr
    elif hasattr(value, "edge_index") and hasattr(value, "to_dict"):  # a PyG Data
        parts = dict(value.to_dict())
    elif isinstance(value, Mapping):
        parts = dict(value)
    elif isinstance(value, (tuple, list)) and len(value) in (2, 3):
        parts = dict(zip(GRAPH_KEYS, value))
    else:
        raise CohortError(
            f"{where}: a graph modality holds, per patient, a graph with node features x (N x d) "
            f"and an edge_index (2 x E), got {type(value).__name__}. Pass a dict "
            "{'x': ..., 'edge_index': ...}, a PyG Data or a graphmed ModalityGraph."
        )
    extra = [k for k in parts if k not in GRAPH_KEYS and parts[k] is not None]
    if extra:
        raise CohortError(
            f"{where}: the graph holds '{extra[0]}', which graphmed does not read; a graph has "
            f"{', '.join(GRAPH_KEYS)} (edge_attr optional). Remove it, or append it to the node "
            "features x (e.g. node positions as two more columns)."
        )
    for key in ("x", "edge_index"):
        if parts.get(key) is None:
            raise CohortError(
                f"{where}: the graph has no '{key}'; expected x (N x d node features) and "
                "edge_index (2 x E)."
            )
    x = _numpy(parts["x"])
    ei = _numpy(parts["edge_index"])
    ea = None if parts.get("edge_attr") is None else _numpy(parts["edge_attr"])
    if x.dtype.kind in "biuf":
        x = x.astype(np.float32, copy=False)
    if ei.dtype.kind in "iu":
        ei = ei.astype(np.int64, copy=False)
    if ea is not None and ea.dtype.kind in "biuf":
        ea = ea.astype(np.float32, copy=False)
        if ea.ndim == 1:  # one weight per edge
            ea = ea[:, None]
    return ModalityGraph(x, ei, ea)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def max_nodes(options: Mapping[str, Any]) -> int:
    """The ``max_nodes`` option (default :data:`DEFAULT_MAX_NODES`), checked."""
    cap = options.get("max_nodes", DEFAULT_MAX_NODES)
    if not isinstance(cap, (int, np.integer)) or isinstance(cap, bool) or cap < 1:
        raise CohortError(
            f"graph option 'max_nodes' must be a positive integer, got {cap!r} (default "
            f"{DEFAULT_MAX_NODES})."
        )
    return int(cap)


# ------------------------------------------------------------------ files
def read_graph_folder(folder: Path, rel: str) -> dict[str, ModalityGraph]:
    """Read ``<patient_id>.npz`` / ``.pt`` graphs of ``folder`` (``rel`` in messages)."""
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    arrays = [p.name for p in visible if p.suffix.lower() == ".npy"]
    if arrays:
        raise CohortError(
            f"{rel}/{arrays[0]}: a graph folder holds one .npz (x, edge_index[, edge_attr]) or "
            ".pt graph per patient; a .npy array has no edges. Use kind 'bag' for a folder of "
            "arrays, or save the graph with np.savez(path, x=x, edge_index=edge_index)."
        )
    files = sorted(p for p in visible if p.suffix.lower() in GRAPH_SUFFIXES)
    return load_per_patient(files, rel, "graph", load_graph)


def load_graph(file: Path, name: str) -> ModalityGraph:
    """Load one ``.npz`` or ``.pt`` graph file, or raise :class:`CohortError`."""
    if file.suffix.lower() == ".npz":
        try:
            with np.load(file, allow_pickle=False) as npz:
                parts = {k: npz[k] for k in npz.files}
        except Exception as err:
            raise CohortError(
                f"{name}: cannot read the .npz graph ({type(err).__name__}: {err}). Save it "
                "with np.savez(path, x=x, edge_index=edge_index[, edge_attr=edge_attr]) (no "
                "object arrays)."
            ) from err
        return as_modality_graph(parts, name)
    import torch

    from .._safeload import load_tensors

    with torch.serialization.safe_globals(_pyg_globals()):
        obj = load_tensors(
            file,
            what="graph",
            fix="save the graph as a dict of tensors or a PyG Data with torch.save.",
            error=CohortError,
        )
    if isinstance(obj, torch.Tensor):
        raise CohortError(
            f"{name}: holds a single tensor; a graph file holds x and edge_index. Save "
            "{'x': x, 'edge_index': edge_index} (or a PyG Data) with torch.save, or use kind "
            "'bag' for a folder of feature arrays."
        )
    return as_modality_graph(obj, name)


def _pyg_globals() -> list:
    """PyG's ``Data`` and the classes it pickles, allowed for ``weights_only`` loads."""
    try:
        from torch_geometric.data import Data
        from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
        from torch_geometric.data.storage import GlobalStorage
    except ImportError:  # pragma: no cover - PyG is a dependency
        return []
    return [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


def write_graph_folder(folder: Path, graphs: Mapping[str, ModalityGraph], fmt: str) -> None:
    """Write one ``<patient_id>.<fmt>`` file per graph; remove other graph files there."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {f"{pid}.{fmt}" for pid in graphs}
    for p in folder.iterdir():
        if p.suffix in GRAPH_SUFFIXES and p.name not in names:
            p.unlink()
    for pid, g in graphs.items():
        parts = {"x": g.x, "edge_index": g.edge_index}
        if g.edge_attr is not None:
            parts["edge_attr"] = g.edge_attr
        with atomic_path(folder / f"{pid}.{fmt}") as tmp:
            if fmt == "npz":
                with open(tmp, "wb") as fh:
                    np.savez(fh, **parts)
            else:
                import torch

                tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in parts.items()}
                torch.save(tensors, tmp)


# ------------------------------------------------------------- validation
def check_graph_modality(mod: str, graphs: Any, known, where) -> None:
    """Raise :class:`CohortError` naming the file and patient of the first bad graph.

    Args:
        mod: Modality name.
        graphs: Patient id -> :class:`ModalityGraph`.
        known: Index of the cohort's patient ids.
        where: The validator's ``_Where`` (names files in messages).
    """
    from .validate import check_patient_dict

    name = check_patient_dict(mod, graphs, known, where, "graph", "graph (x, edge_index)")
    for pid, g in graphs.items():
        at = where.item(mod, pid)
        if not isinstance(g, ModalityGraph):
            raise CohortError(
                f"{at}: expected a graph (graphmed.data.ModalityGraph), got {type(g).__name__}; "
                "build the cohort with Cohort.from_frames, which converts dicts and PyG Data."
            )
        _check_one(at, pid, g)
    _same_width(mod, graphs, "node features x", lambda g: g.x.shape[1], where)
    with_attr = [g.edge_attr is not None for g in graphs.values()]
    if any(with_attr) and not all(with_attr):
        pid = next(p for p, g in graphs.items() if g.edge_attr is None)
        other = next(p for p, g in graphs.items() if g.edge_attr is not None)
        raise CohortError(
            f"{where.item(mod, pid)}: has no edge_attr, but other patients' graphs (e.g. "
            f"'{other}') have edge features; give every graph of '{mod}' edge_attr, or none."
        )
    if all(with_attr) and graphs:
        _same_width(mod, graphs, "edge features edge_attr", lambda g: g.edge_attr.shape[1], where)
    if not graphs and not where.part:
        raise CohortError(
            f"{name}: modality '{mod}' has no patients at all (no graph); expected at least "
            "one. Add its data or remove the modality."
        )


def _check_one(at: str, pid: str, g: ModalityGraph) -> None:
    x, ei, ea = g.x, g.edge_index, g.edge_attr
    if x.ndim != 2:
        raise CohortError(
            f"{at}: node features x must be 2-D (nodes x features), got shape {x.shape}. "
            "Reshape one feature per node to (N, 1)."
        )
    if x.dtype != np.float32:
        raise CohortError(
            f"{at}: node features x must be numbers, got dtype {x.dtype}; store them as float32."
        )
    if len(x) == 0:
        raise CohortError(
            f"{at}: the graph of patient '{pid}' has no nodes. Remove the file (or the entry) "
            "to mark the modality missing for this patient."
        )
    if ei.dtype.kind not in "iu":
        raise CohortError(
            f"{at}: edge_index must hold integers (node indices), got dtype {ei.dtype}; convert "
            "it with edge_index.astype(np.int64) (or .long() for a tensor)."
        )
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise CohortError(
            f"{at}: edge_index must have shape (2, E), one column per edge, got {ei.shape}. "
            "Transpose an (E, 2) edge list with edge_index.T."
        )
    n = len(x)
    bad = (ei < 0) | (ei >= n)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CohortError(
            f"{at}: edge {col} has {'source' if row == 0 else 'target'} node {int(ei[row, col])}, "
            f"out of range for a graph of {n} nodes (patient '{pid}'); node indices run from 0 "
            f"to {n - 1}. Re-export the graph with edge_index numbering the rows of x."
        )
    _check_finite(at, pid, x, "node", "x")
    if ea is not None:
        if ea.dtype != np.float32 or ea.ndim != 2:
            raise CohortError(
                f"{at}: edge_attr must be numbers of shape (E, f), got dtype {ea.dtype} and "
                f"shape {ea.shape}."
            )
        if len(ea) != ei.shape[1]:
            raise CohortError(
                f"{at}: edge_attr has {len(ea)} rows but edge_index has {ei.shape[1]} edges; "
                "expected one row of edge features per edge."
            )
        _check_finite(at, pid, ea, "edge", "edge_attr")


def _check_finite(at: str, pid: str, arr: np.ndarray, what: str, key: str) -> None:
    bad = ~(np.abs(arr) <= LIMIT)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        value = float(arr[i, j])
        shown = "NaN" if np.isnan(value) else "inf" if np.isinf(value) else f"{value:g}"
        raise CohortError(
            f"{at}: {key} holds {shown} at {what} {i}, feature {j} (patient '{pid}'); expected "
            "finite features of at most 1e30 in magnitude. Re-extract this patient's graph."
        )


def _same_width(mod, graphs, what, width, where) -> None:
    counts = Counter(int(width(g)) for g in graphs.values())
    if len(counts) <= 1:
        return
    common = counts.most_common(1)[0][0]
    pid, g = next((p, g) for p, g in graphs.items() if width(g) != common)
    other = next(p for p, g in graphs.items() if width(g) == common)
    raise CohortError(
        f"{where.item(mod, pid)}: {what} have width {int(width(g))}, but the other patients' "
        f"graphs (e.g. '{other}') have {common}. Every graph of '{mod}' needs the same "
        "features; re-extract this patient's graph."
    )
