"""Preprocessing fitted on training patients only, then applied to any cohort.

:class:`CohortPreprocessor` standardises numeric features, imputes missing
cells inside a present modality, encodes categoricals as integer codes,
keeps the most variable columns of very wide vectors (and, when asked, those
with the largest univariate Cox score among them), standardises the node
and edge features of graphs and fixes their node count, and fits the TF-IDF
vocabulary and SVD of text reports. Every statistic comes
from the patients passed to :meth:`~CohortPreprocessor.fit`; transforming other
patients never changes it. The fitted state is a plain dict (``to_dict`` /
``from_dict``) saved with a model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CohortError
from .cohort import Cohort
from .graph_kind import ModalityGraph, max_nodes
from .text_kind import TEXT, fit_text, text_present, transform_text


@dataclass
class ModalityTransform:
    """The fitted transform of one modality.

    Attributes:
        kind: ``tabular``, ``vector``, ``bag``, ``graph`` or ``text``.
        columns: Columns kept, in order (tabular, vector); the SVD components
            (text).
        categorical: Column -> categories seen in training (code 0 = unknown/missing,
            code k = categories[k-1]).
        center, scale: Per numeric column (bag or graph node feature, text
            component) statistics.
        fill: Per numeric column value used for a missing cell of a present row.
    """

    kind: str
    columns: list[str] = field(default_factory=list)
    categorical: dict[str, list[Any]] = field(default_factory=dict)
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    fill: list[float] = field(default_factory=list)
    width: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """The modality's options at fit time (tokenisation: chunk_size, groups, max_instances)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Kind-specific fitted state, plain values only. graph: ``n_nodes`` (node slots,
    fixed on the training fold), ``edge_width``, ``edge_center``, ``edge_scale``. text:
    ``vocabulary``, ``idf``, ``components``, ``ngram_max`` (see
    :func:`graphmed.data.text_kind.fit_text`)."""

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.categorical]


@dataclass
class TransformedModality:
    """A modality after preprocessing, aligned to the cohort's patients.

    ``values`` is ``(P, F)`` float32 for tabular/vector/text (categorical columns
    hold their integer code; missing patients hold zeros) or a list of
    ``(N_i, d)`` float32 arrays for bags and graph nodes (empty for missing
    patients). ``present`` is ``(P,)``. ``edges`` (graph only) holds per patient
    ``(edge_index (2, E) int64, edge_attr (E, f) float32 or None)``.
    """

    values: np.ndarray | list[np.ndarray]
    present: np.ndarray
    edges: list[tuple[np.ndarray, np.ndarray | None]] | None = None


class CohortPreprocessor:
    """Fit/transform preprocessing of every modality of a cohort.

    Args:
        standardize_bags: Standardise bag instance features with training
            statistics (default True).
        max_features: Default cap on vector widths (variance filter fitted on
            training patients); a modality's ``max_features`` option wins.
        screen_features: Keep at most this many columns of each vector
            modality: those with the largest univariate Cox score statistic
            ``|z|`` on the training patients that have the modality (after the
            variance cap; :func:`cox_score_z`). ``None``: no screening. Needs
            survival times and events.
        token_order: Order of the columns of each vector modality, which fixes
            the columns that share a chunk node: ``"columns"`` (as given) or
            ``"correlation"`` (the leaf order of an average-linkage clustering
            of the columns on ``1 - |correlation|`` over the training patients,
            so that each chunk holds correlated columns; :func:`correlation_order`).
            A modality with its own ``groups`` option is left as given.
    """

    def __init__(
        self,
        standardize_bags: bool = True,
        max_features: int | None = None,
        screen_features: int | None = None,
        token_order: str = "columns",
    ):
        if token_order not in TOKEN_ORDERS:
            raise CohortError(
                f"token_order must be one of {list(TOKEN_ORDERS)}, but got {token_order!r}"
            )
        self.standardize_bags = standardize_bags
        self.max_features = max_features
        self.screen_features = screen_features
        self.token_order = token_order
        self.transforms_: dict[str, ModalityTransform] | None = None
        self.fitted_on_: list[str] = []

    # ------------------------------------------------------------------- fit
    def fit(self, cohort: Cohort) -> CohortPreprocessor:
        """Fit every statistic on the patients of ``cohort`` (the training fold)."""
        present = cohort.present_mask()
        transforms = {}
        for mod, spec in cohort.modalities.items():
            values = cohort.data[mod]
            if spec.kind == "bag":
                transforms[mod] = self._fit_bag(mod, values, cohort.width(mod))
            elif spec.kind == "graph":
                transforms[mod] = self._fit_graph(mod, values, spec.options)
            elif spec.kind == "text":
                transforms[mod] = _fit_text_modality(mod, values, spec.options)
            else:
                rows = values.loc[values.index.intersection(present.index[present[mod]])]
                if rows.empty:
                    raise CohortError(
                        f"modality '{mod}': no training patient has it, so it cannot be "
                        "standardised; drop the modality or use a split where some "
                        "training patients have it"
                    )
                cap = spec.options.get("max_features", self.max_features)
                categorical = spec.options.get("categorical")
                screen = None
                if spec.kind == "vector" and self.screen_features is not None:
                    screen = (
                        self.screen_features,
                        cohort.time,
                        cohort.event,
                        cohort.patients.index,
                    )
                order = (
                    self.token_order
                    if spec.kind == "vector" and not spec.options.get("groups")
                    else "columns"
                )
                transforms[mod] = _fit_table(rows, spec.kind, cap, categorical, screen, order)
        for mod, tr in transforms.items():
            tr.options = copy.deepcopy(dict(cohort.modalities[mod].options))
        self.transforms_ = transforms
        self.fitted_on_ = cohort.patient_ids
        return self

    def _fit_bag(self, mod: str, bags: dict[str, np.ndarray], width: int) -> ModalityTransform:
        mean, std = _moments(bags.values(), width)
        if mean is None:
            raise CohortError(f"modality '{mod}': no training patient has a non-empty bag")
        if not self.standardize_bags:
            mean, std = np.zeros(width), np.ones(width)
        return ModalityTransform("bag", center=mean.tolist(), scale=std.tolist(), width=width)

    def _fit_graph(
        self, mod: str, graphs: dict[str, ModalityGraph], options: dict[str, Any]
    ) -> ModalityTransform:
        present = [g for g in graphs.values() if len(g)]
        if not present:
            raise CohortError(f"modality '{mod}': no training patient has a graph")
        width = int(present[0].x.shape[1])
        mean, std = _moments((g.x for g in present), width)
        try:
            cap = max_nodes(options)
        except CohortError as err:
            raise CohortError(f"modality '{mod}': {err}") from err
        state: dict[str, Any] = {"n_nodes": int(min(cap, max(len(g) for g in present)))}
        state["edge_width"] = 0
        if present[0].edge_attr is not None:
            e_width = int(present[0].edge_attr.shape[1])
            e_mean, e_std = _moments((g.edge_attr for g in present), e_width)
            if e_mean is None:  # no edge at all
                e_mean, e_std = np.zeros(e_width), np.ones(e_width)
            state.update(edge_width=e_width, edge_center=e_mean.tolist(), edge_scale=e_std.tolist())
        if not self.standardize_bags:
            mean, std = np.zeros(width), np.ones(width)
        return ModalityTransform(
            "graph", center=mean.tolist(), scale=std.tolist(), width=width, state=state
        )

    # ------------------------------------------------------------- transform
    def transform(self, cohort: Cohort) -> dict[str, TransformedModality]:
        """Apply the fitted transforms; the statistics are never refitted."""
        if self.transforms_ is None:
            raise CohortError("CohortPreprocessor is not fitted; call fit(train_cohort) first")
        unknown = set(self.transforms_) - set(cohort.modalities)
        ids = cohort.patients.index
        out = {}
        for mod, tr in self.transforms_.items():
            if mod in unknown:
                # A modality the model knows but this cohort lacks: missing for everyone.
                empty = (
                    [np.zeros((0, tr.width), np.float32) for _ in ids]
                    if tr.kind in ("bag", "graph")
                    else np.zeros((len(ids), len(tr.columns)), np.float32)
                )
                edges = [(np.zeros((2, 0), np.int64), None)] * len(ids)
                out[mod] = TransformedModality(
                    empty, np.zeros(len(ids), bool), edges if tr.kind == "graph" else None
                )
            elif tr.kind == "bag":
                out[mod] = _transform_bag(cohort.data[mod], ids, tr)
            elif tr.kind == "graph":
                out[mod] = _transform_graph(cohort.data[mod], ids, tr, mod)
            elif tr.kind == "text":
                out[mod] = _transform_text(cohort.data[mod], ids, tr)
            else:
                out[mod] = _transform_table(cohort.data[mod], ids, tr, mod)
        return out

    def fit_transform(self, cohort: Cohort) -> dict[str, TransformedModality]:
        return self.fit(cohort).transform(cohort)

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        if self.transforms_ is None:
            raise CohortError("CohortPreprocessor is not fitted; nothing to save")
        return {
            "standardize_bags": self.standardize_bags,
            "max_features": self.max_features,
            "screen_features": self.screen_features,
            "token_order": self.token_order,
            "transforms": {m: copy.deepcopy(vars(t)) for m, t in self.transforms_.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CohortPreprocessor:
        pre = cls(
            state["standardize_bags"],
            state["max_features"],
            state.get("screen_features"),
            state.get("token_order", "columns"),
        )
        pre.transforms_ = {
            m: ModalityTransform(**copy.deepcopy(t)) for m, t in state["transforms"].items()
        }
        return pre


TOKEN_ORDERS = ("columns", "correlation")


def correlation_order(z: np.ndarray) -> np.ndarray:
    """A permutation of the columns of ``z`` (``(n, p)``, standardised) that puts
    correlated columns side by side: the leaf order of an average-linkage
    hierarchical clustering (:func:`scipy.cluster.hierarchy.linkage`) on the
    distance ``1 - |r|`` between columns. Constant columns count as uncorrelated
    with every other. Deterministic: the same data give the same order.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    n, p = z.shape
    if p < 3:
        return np.arange(p)
    norm = np.linalg.norm(z, axis=0)
    unit = np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)
    corr = np.clip(np.abs(unit.T @ unit), 0.0, 1.0)
    dist = 1.0 - corr
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="average")
    return leaves_list(tree)


def cox_score_z(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Univariate Cox score statistics of every column of ``x``, all at once.

    The score test of ``beta = 0`` in a one-covariate Cox model (Breslow
    ties): ``z = U / sqrt(I)`` with ``U = sum over events of (x_i - mean of x
    over the risk set)`` and ``I`` the sum of the risk-set variances; 0 for a
    column constant on every risk set. ``x``: ``(n, p)`` without NaN.
    """
    order = np.argsort(time, kind="stable")
    x, t, d = x[order], np.asarray(time, float)[order], np.asarray(event, bool)[order]
    first = np.searchsorted(t, t, side="left")  # the risk set of i: rows first[i]..n-1
    s0 = np.arange(len(t), 0, -1, dtype=float)[first][d]
    s1 = np.cumsum(x[::-1], axis=0)[::-1][first][d]
    s2 = np.cumsum((x * x)[::-1], axis=0)[::-1][first][d]
    mean = s1 / s0[:, None]
    u = (x[d] - mean).sum(axis=0)
    info = np.clip(s2 / s0[:, None] - mean * mean, 0, None).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(info > 1e-12, u / np.sqrt(info), 0.0)
    return z


def _screen(num: pd.DataFrame, keep: int, time, event, ids: pd.Index) -> list[str]:
    """The ``keep`` columns of ``num`` with the largest ``|z|`` (in their original order)."""
    at = ids.get_indexer(num.index)
    t, d = np.asarray(time, float)[at], np.asarray(event, bool)[at]
    if len(num.columns) <= keep or not d.any():
        return list(num.columns)
    x = num.to_numpy()
    x = np.where(np.isnan(x), np.nanmedian(x, axis=0), x)
    x = np.nan_to_num(x - x.mean(axis=0))
    z = np.abs(cox_score_z(x, t, d))
    chosen = np.sort(np.argsort(-z, kind="stable")[:keep])
    return [num.columns[i] for i in chosen]


def _fit_table(
    rows: pd.DataFrame,
    kind: str,
    cap: int | None,
    categorical: list[str] | None,
    screen: tuple | None = None,
    order: str = "columns",
) -> ModalityTransform:
    if categorical is None:
        categorical = [c for c in rows.columns if not pd.api.types.is_numeric_dtype(rows[c])]
    if kind == "tabular" and categorical:
        bad = [c for c in categorical if c not in rows.columns]
        if bad:
            raise CohortError(f"categorical columns {bad} are not in the modality's columns")
    numeric = [c for c in rows.columns if c not in categorical]
    num = rows[numeric].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    if kind == "vector" and cap is not None and len(numeric) > cap:
        var = num.var(axis=0, skipna=True).fillna(0.0).to_numpy()
        keep = np.sort(np.argsort(-var, kind="stable")[:cap])
        numeric = [numeric[i] for i in keep]
        num = num[numeric]
    if screen is not None and len(numeric) > screen[0]:
        numeric = _screen(num, *screen)
        num = num[numeric]
    center = num.mean(axis=0, skipna=True).fillna(0.0)
    scale = num.std(axis=0, skipna=True, ddof=0).fillna(1.0)
    scale = scale.where(scale > 1e-8, 1.0)
    fill = num.median(axis=0, skipna=True).fillna(0.0)
    cats = {}
    for c in categorical:
        seen = pd.Series(rows[c]).dropna().unique().tolist()
        cats[c] = sorted(seen, key=lambda v: (str(type(v)), v))
    columns = [c for c in rows.columns if c in cats or c in numeric]
    if order == "correlation" and len(numeric) > 2:
        z = ((num.fillna(fill) - center) / scale).to_numpy(np.float64)
        numeric = [numeric[i] for i in correlation_order(z)]
        columns = [c for c in columns if c in cats] + numeric
    return ModalityTransform(
        kind,
        columns=columns,
        categorical=cats,
        center=[float(center[c]) for c in numeric],
        scale=[float(scale[c]) for c in numeric],
        fill=[float(fill[c]) for c in numeric],
        width=len(columns),
    )


def _transform_table(
    frame: pd.DataFrame, ids: pd.Index, tr: ModalityTransform, mod: str
) -> TransformedModality:
    missing_cols = [c for c in tr.columns if c not in frame.columns]
    if missing_cols and len(missing_cols) == len(tr.columns):
        raise CohortError(
            f"modality '{mod}': none of the {len(tr.columns)} fitted columns are present "
            f"(first expected: {tr.columns[:3]}); is this the same kind of data?"
        )
    present_rows = frame.index[frame.notna().any(axis=1)]
    present = ids.isin(present_rows)
    aligned = frame.reindex(ids)
    out = np.zeros((len(ids), len(tr.columns)), np.float32)
    numeric = tr.numeric_columns
    stats = {c: (tr.center[i], tr.scale[i], tr.fill[i]) for i, c in enumerate(numeric)}
    for j, col in enumerate(tr.columns):
        if col in tr.categorical:
            cats = tr.categorical[col]
            if col in aligned.columns:
                codes = pd.Categorical(aligned[col], categories=cats).codes + 1  # -1 -> 0
            else:
                codes = np.zeros(len(ids))
            out[:, j] = codes
        else:
            center, scale, fill = stats[col]
            if col in aligned.columns:
                vals = pd.to_numeric(aligned[col], errors="coerce").to_numpy(np.float64)
                vals = np.where(np.isfinite(vals), vals, fill)
            else:
                vals = np.full(len(ids), fill)
            out[:, j] = (vals - center) / scale
    out[~present] = 0.0
    return TransformedModality(out, np.asarray(present))


def _transform_bag(
    bags: dict[str, np.ndarray], ids: pd.Index, tr: ModalityTransform
) -> TransformedModality:
    center = np.asarray(tr.center, np.float32)
    scale = np.asarray(tr.scale, np.float32)
    values, present = [], np.zeros(len(ids), bool)
    empty = np.zeros((0, tr.width), np.float32)
    for i, pid in enumerate(ids):
        arr = bags.get(pid)
        if arr is None or len(arr) == 0:
            values.append(empty)
            continue
        if arr.shape[1] != tr.width:
            raise CohortError(
                f"bag of patient '{pid}' has width {arr.shape[1]}, but the model was fitted "
                f"on width {tr.width}"
            )
        values.append((arr.astype(np.float32) - center) / scale)
        present[i] = True
    return TransformedModality(values, present)


def _moments(arrays, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Mean and standard deviation (1 where constant) over the rows of ``arrays``."""
    count, total, total_sq = 0, np.zeros(width), np.zeros(width)
    for arr in arrays:
        if len(arr):
            a = arr.astype(np.float64)
            count += len(a)
            total += a.sum(0)
            total_sq += (a * a).sum(0)
    if count == 0:
        return None, None
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)


def _transform_graph(
    graphs: dict[str, ModalityGraph], ids: pd.Index, tr: ModalityTransform, mod: str
) -> TransformedModality:
    center = np.asarray(tr.center, np.float32)
    scale = np.asarray(tr.scale, np.float32)
    e_width = int(tr.state.get("edge_width", 0))
    if e_width:
        e_center = np.asarray(tr.state["edge_center"], np.float32)
        e_scale = np.asarray(tr.state["edge_scale"], np.float32)
    values, edges, present = [], [], np.zeros(len(ids), bool)
    empty = np.zeros((0, tr.width), np.float32)
    for i, pid in enumerate(ids):
        g = graphs.get(pid)
        if g is None or len(g) == 0:
            values.append(empty)
            edges.append((np.zeros((2, 0), np.int64), None))
            continue
        if g.x.shape[1] != tr.width:
            raise CohortError(
                f"modality '{mod}': the graph of patient '{pid}' has node features of width "
                f"{g.x.shape[1]}, but the model was fitted on width {tr.width}"
            )
        attr = None
        if e_width:
            if g.edge_attr is None or g.edge_attr.shape[1] != e_width:
                got = "none" if g.edge_attr is None else f"width {g.edge_attr.shape[1]}"
                raise CohortError(
                    f"modality '{mod}': the graph of patient '{pid}' has edge features of "
                    f"{got}, but the model was fitted on edge features of width {e_width}"
                )
            attr = (g.edge_attr.astype(np.float32) - e_center) / e_scale
        values.append((g.x.astype(np.float32) - center) / scale)
        edges.append((g.edge_index, attr))
        present[i] = True
    return TransformedModality(values, present, edges)


def _fit_text_modality(mod: str, frame: pd.DataFrame, options: dict[str, Any]) -> ModalityTransform:
    has = text_present(frame)
    if len(has) == 0:
        raise CohortError(
            f"modality '{mod}': no training patient has a report, so no vocabulary can be "
            "fitted; drop the modality or use a split where some training patients have it"
        )
    try:
        state, projected = fit_text(frame.loc[has, TEXT].tolist(), options)
    except CohortError as err:
        raise CohortError(f"modality '{mod}': {err}") from err
    center = projected.mean(0)
    scale = projected.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    stem = "dim" if "encoder" in state else "svd"  # a pretrained model's axes, or SVD components
    columns = [f"{mod}_{stem}{j}" for j in range(projected.shape[1])]
    return ModalityTransform(
        "text",
        columns=columns,
        center=center.tolist(),
        scale=scale.tolist(),
        fill=[0.0] * len(columns),
        width=len(columns),
        state=state,
    )


def _transform_text(
    frame: pd.DataFrame, ids: pd.Index, tr: ModalityTransform
) -> TransformedModality:
    has = text_present(frame)
    present = ids.isin(has)
    out = np.zeros((len(ids), len(tr.columns)), np.float32)
    if present.any():
        texts = frame[TEXT].reindex(ids[present]).tolist()
        projected = transform_text(tr.state, texts)
        center, scale = np.asarray(tr.center), np.asarray(tr.scale)
        out[present] = (projected - center) / scale
    return TransformedModality(out, np.asarray(present))
