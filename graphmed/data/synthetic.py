"""Synthetic multi-modal survival cohorts whose signal needs fusion.

:func:`make_synthetic_cohort` draws latent factors per patient and renders them
as modalities of every kind. It is built so that a model has to earn its score:

* **Shared latents.** Latent ``k`` has a *home* modality (``k mod M``) where it
  loads with strength 1 and *leaks* into the next modality with strength 0.5.
  Each modality is a random linear map of the latents it sees plus noise, so a
  missing modality is partly predictable from the others.
* **Cross-modal hazard.** ``log h = 1.5 * z1 * z2 + 0.5 * z0 + 0.15 * (z3 - z4)``
  where ``z1`` lives mainly in modality 1, ``z2`` in modality 2 and ``z0`` in
  modality 0 (indices mod M). The product term dominates, so no single modality
  (and no linear model on all of them) ranks patients well; a model that
  combines modalities non-linearly can.
* **Labels** (``n_classes > 0``) are quantiles of another interaction,
  ``z3 * z4 + 0.5 * z5``.
* **Bags** are instances from a few clusters: instance = cluster prototype +
  cluster-specific share of the patient's projection + noise; the cluster
  mixture depends on the patient's latents, so both mean pooling and attention
  see the signal, attention more cleanly.
* **Graphs** carry their signal in their edges. Nodes come in two types
  (the first node feature, +1 or -1, half of each in every patient); the other
  features render the latents as bag instances do. Each node links to
  ``_GRAPH_DEGREE`` others, of its own type with probability
  ``sigmoid(2 u)``, where ``u`` is a latent of the graph alone, and ``log h``
  gains ``_GRAPH_HAZARD * u``. The share of same-type neighbours (a
  neighbourhood statistic) reveals ``u``; the bag of the same nodes does not,
  since every patient's node features have the same distribution whatever ``u``.
* **Texts** are short reports whose words follow the hazard's main latent
  ``z0``: each of ``_TEXT_WORDS`` words comes from a "low" or "high" lexicon
  with probability ``sigmoid(2 z0)``, among neutral filler words.
* **Missingness** is MCAR or MAR (drop probability a sigmoid of a latent homed
  in another modality, with the requested average rate); every patient keeps
  at least one modality.

Everything is vectorised: 100k patients with the default modalities take a few
seconds. Each part (latents, each modality, times, missingness) draws from its
own seeded stream, so changing ``missing`` does not change the features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, did_you_mean
from ..typing import KINDS, EdgeType
from .cohort import Cohort

DEFAULT_MODALITIES: dict[str, tuple[str, int]] = {
    "clinical": ("tabular", 8),
    "expr": ("vector", 64),
    "wsi": ("bag", 32),
}
DEFAULT_RELATIONS: tuple[EdgeType, ...] = (
    ("clinical", "informs", "expr"),
    ("expr", "expressed_in", "wsi"),
    ("clinical", "describes", "wsi"),
)
_LEAK = 0.5  # loading of a latent in the modality after its home
_HAZARD = (1.5, 0.5, 0.15)  # interaction, main effect of z0, small main effects
_WEIBULL_SHAPE = 1.5
_WEIBULL_SCALE = 5.0
_N_CLUSTERS = 4  # instance clusters of a bag
_MAR_SLOPE = 2.0
_CATEGORY_LEVELS = (("low", "mid", "high"), ("neg", "pos"))
_GRAPH_DEGREE = 4  # neighbours each node draws (edges are stored in both directions)
_GRAPH_HAZARD = 1.5  # effect of a graph's topology latent on the log hazard
_TEXT_WORDS = 12
_LEXICON = {
    "low": ("indolent", "wellcircumscribed", "lowgrade", "stable", "regressing", "benign"),
    "high": ("necrosis", "invasive", "highgrade", "mitotic", "infiltrative", "metastatic"),
    "filler": ("specimen", "section", "shows", "tissue", "sample", "noted", "with", "and"),
}


def make_synthetic_cohort(
    n_patients: int = 500,
    modalities: Mapping[str, tuple[str, int]] | None = None,
    n_latent: int = 8,
    missing: Mapping[str, float] | None = None,
    missing_mechanism: str = "mcar",
    n_classes: int = 0,
    censoring: float = 0.3,
    seed: int = 0,
    name: str = "synthetic",
    *,
    bag_size: tuple[int, int] = (16, 96),
    noise: float = 1.0,
    relations: Sequence[Sequence[str]] | None = None,
    return_truth: bool = False,
) -> Cohort | tuple[Cohort, dict[str, Any]]:
    """Generate a seeded synthetic cohort.

    Args:
        n_patients: Number of patients (ids ``P000000`` ...).
        modalities: Name -> ``(kind, width)``; kind is ``tabular``, ``vector``,
            ``bag`` (width = instance width), ``graph`` (width = node feature
            width) or ``text`` (width unused). Default: clinical (tabular, 8),
            expr (vector, 64), wsi (bag, 32). Tabular modalities hold up to two
            categorical columns (``cat_0``, ``cat_1``) and numeric ``num_*``.
        n_latent: Number of latent factors, at least 6.
        missing: Modality -> fraction of patients missing it, in [0, 1).
        missing_mechanism: ``"mcar"`` or ``"mar"``.
        n_classes: Number of classes of the ``label`` column (0 = no label).
        censoring: Target fraction of censored patients, in [0, 1).
        seed: Seed; the same seed gives an identical cohort.
        name: Cohort name.
        bag_size: Inclusive range of instances per bag (and nodes per graph, at
            least 2).
        noise: Standard deviation of feature noise (signal variance is about 1).
        relations: ``(source, relation, target)`` triples; default: the known
            clinical/expr/wsi relations where those names exist, chained so
            that every modality is connected.
        return_truth: Also return a dict with ``log_hazard`` (P,), ``latents``
            (P, n_latent), ``label_score`` (P,), ``event_time`` (P,, before
            censoring), ``loadings`` (modality -> (n_latent,) strengths),
            ``patient_ids`` and ``topology`` (graph modality -> (P,) edge latent
            ``u``), all in patient order.

    Returns:
        The cohort, or ``(cohort, truth)`` when ``return_truth`` is set.
    """
    mods = _check_modalities(modalities)
    missing = dict(missing or {})
    _check_args(n_patients, n_latent, missing, missing_mechanism, n_classes, censoring, mods)
    lo, hi = _check_bag_size(bag_size)
    if not noise >= 0:
        raise ConfigError(f"noise must be a non-negative standard deviation, got {noise}")
    names = list(mods)
    n_mod = len(names)
    streams = np.random.SeedSequence(seed).spawn(4 + n_mod)
    rng_latent, rng_time, rng_missing, rng_label = (np.random.default_rng(s) for s in streams[:4])

    z = rng_latent.standard_normal((n_patients, n_latent))
    loadings = _loadings(n_mod, n_latent)
    ids = [f"P{i:06d}" for i in range(n_patients)]
    index = pd.Index(ids, name="patient_id")

    data: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    topology: dict[str, np.ndarray] = {}  # graph modality -> its edge latent u
    for m, (mod, (kind, width)) in enumerate(mods.items()):
        rng = np.random.default_rng(streams[4 + m])
        seen = z * loadings[m]
        proj = rng.standard_normal((n_latent, width)) / np.sqrt((loadings[m] ** 2).sum())
        if kind == "bag":
            data[mod] = _make_bag(rng, seen, proj, ids, noise, lo, hi)
        elif kind == "graph":
            data[mod], topology[mod] = _make_graph(rng, seen, proj, ids, noise, max(lo, 2), hi)
        elif kind == "text":
            data[mod] = _make_text(rng, z[:, 0], index)
        else:
            values = seen @ proj + noise * rng.standard_normal((n_patients, width))
            if kind == "tabular":
                data[mod], cats = _make_table(values, index)
                options[mod] = {"categorical": cats}
            else:
                cols = [f"{mod}_{j:0{len(str(width - 1))}d}" for j in range(width)]
                data[mod] = pd.DataFrame(values, index=index, columns=cols)

    a, b, c = _HAZARD
    log_hazard = a * z[:, 1] * z[:, 2] + b * z[:, 0] + c * (z[:, 3] - z[:, 4])
    for u in topology.values():
        log_hazard = log_hazard + _GRAPH_HAZARD * u
    event_time = _weibull_times(rng_time, log_hazard)
    time, event = _censor(rng_time, event_time, censoring)
    patients = pd.DataFrame({"time": time, "event": event}, index=index)
    label_score = z[:, 3] * z[:, 4] + 0.5 * z[:, 5]
    labels: list[str] = []
    if n_classes > 0:
        label_score = label_score + 0.1 * rng_label.standard_normal(n_patients)
        edges = np.quantile(label_score, np.linspace(0, 1, n_classes + 1)[1:-1])
        patients["label"] = np.searchsorted(edges, label_score).astype(np.int64)
        labels = ["label"]

    if any(rate > 0 for rate in missing.values()):
        drop = _draw_missing(rng_missing, z, names, missing, missing_mechanism)
        for m, mod in enumerate(names):
            gone = drop[:, m]
            if isinstance(data[mod], pd.DataFrame):
                data[mod] = data[mod].loc[~gone]
            else:
                data[mod] = {
                    pid: arr for pid, arr, g in zip(ids, data[mod].values(), gone) if not g
                }

    cohort = Cohort.from_frames(
        patients,
        data,
        kinds={mod: kind for mod, (kind, _) in mods.items()},
        options=options,
        relations=_relations(names) if relations is None else relations,
        labels=labels,
        name=name,
    )
    if not return_truth:
        return cohort
    truth = {
        "log_hazard": log_hazard,
        "latents": z,
        "label_score": label_score,
        "event_time": event_time,
        "loadings": {mod: loadings[m] for m, mod in enumerate(names)},
        "patient_ids": ids,
        "topology": topology,
    }
    return cohort, truth


# ---------------------------------------------------------------- arguments
def _check_modalities(
    modalities: Mapping[str, tuple[str, int]] | None,
) -> dict[str, tuple[str, int]]:
    mods = dict(DEFAULT_MODALITIES if modalities is None else modalities)
    if not mods:
        raise ConfigError("modalities: expected at least one modality, got none")
    out = {}
    for mod, spec in mods.items():
        if not isinstance(spec, Sequence) or isinstance(spec, str) or len(spec) != 2:
            raise ConfigError(
                f"modalities['{mod}']: expected a (kind, width) pair such as ('vector', 64), "
                f"got {spec!r}"
            )
        kind, width = spec
        if kind not in KINDS:
            raise ConfigError(
                f"modalities['{mod}']: unknown kind '{kind}'; expected one of "
                f"{', '.join(KINDS)}.{did_you_mean(kind, KINDS)}"
            )
        if not isinstance(width, (int, np.integer)) or width < 1:
            raise ConfigError(
                f"modalities['{mod}']: width must be a positive integer, got {width!r}"
            )
        out[str(mod)] = (kind, int(width))
    return out


def _check_args(n_patients, n_latent, missing, mechanism, n_classes, censoring, mods) -> None:
    if not isinstance(n_patients, (int, np.integer)) or n_patients < 2:
        raise ConfigError(f"n_patients must be an integer >= 2, got {n_patients!r}")
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 6:
        raise ConfigError(f"n_latent must be at least 6 (hazard and label use 6), got {n_latent}")
    if mechanism not in ("mcar", "mar"):
        raise ConfigError(
            f"missing_mechanism must be 'mcar' or 'mar', got '{mechanism}'."
            f"{did_you_mean(mechanism, ('mcar', 'mar'))}"
        )
    for mod, rate in missing.items():
        if mod not in mods:
            raise ConfigError(
                f"missing: unknown modality '{mod}'; the modalities are {list(mods)}."
                f"{did_you_mean(mod, mods)}"
            )
        if not 0 <= rate < 1:
            raise ConfigError(f"missing['{mod}'] must be in [0, 1), got {rate}")
    if len(mods) == 1 and any(r > 0 for r in missing.values()):
        raise ConfigError("missing: with a single modality no patient can miss it")
    if n_classes < 0 or n_classes == 1:
        raise ConfigError(f"n_classes must be 0 (no label) or at least 2, got {n_classes}")
    if not 0 <= censoring < 1:
        raise ConfigError(f"censoring must be in [0, 1), got {censoring}")


def _check_bag_size(bag_size: tuple[int, int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in bag_size)
    if not 1 <= lo <= hi:
        raise ConfigError(f"bag_size must be (min, max) with 1 <= min <= max, got {bag_size!r}")
    return lo, hi


# ----------------------------------------------------------------- features
def _loadings(n_mod: int, n_latent: int) -> np.ndarray:
    """(M, K) strengths: 1 in a latent's home modality, _LEAK in the next one."""
    out = np.zeros((n_mod, n_latent))
    for k in range(n_latent):
        out[k % n_mod, k] = 1.0
        if n_mod > 1:
            out[(k + 1) % n_mod, k] = _LEAK
    for m in np.flatnonzero(~out.any(axis=1)):  # more modalities than latents
        out[m, m % n_latent] = 1.0
    return out


def _make_table(values: np.ndarray, index: pd.Index) -> tuple[pd.DataFrame, list[str]]:
    """Quantise the first columns into categoricals (at most two); the rest stay numeric."""
    width = values.shape[1]
    n_cat = min(len(_CATEGORY_LEVELS), width // 2)
    frame = pd.DataFrame(index=index)
    cats = []
    for j in range(n_cat):
        levels = _CATEGORY_LEVELS[j]
        edges = np.quantile(values[:, j], np.linspace(0, 1, len(levels) + 1)[1:-1])
        codes = np.searchsorted(edges, values[:, j])
        frame[f"cat_{j}"] = pd.Categorical.from_codes(codes, categories=list(levels))
        cats.append(f"cat_{j}")
    for j in range(n_cat, width):
        frame[f"num_{j - n_cat}"] = values[:, j]
    return frame, cats


def _make_graph(rng, seen, proj, ids, noise, lo, hi) -> tuple[dict[str, dict], np.ndarray]:
    """Graphs whose type homophily follows a latent ``u`` of their own; see the module doc."""
    n = len(ids)
    if proj.shape[1] > 1:
        bag = _make_bag(rng, seen, proj[:, 1:], ids, noise, lo, hi)
        sizes = np.array([len(b) for b in bag.values()])
        rest = np.concatenate(list(bag.values()))
    else:
        sizes = rng.integers(lo, hi + 1, size=n)
        rest = np.zeros((sizes.sum(), 0), np.float32)
    u = rng.standard_normal(n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    owner = np.repeat(np.arange(n), sizes)
    local = np.arange(len(owner)) - starts[owner]
    kind = local % 2  # type 0 at even positions, 1 at odd: half of each per patient
    x = np.column_stack([np.where(kind == 0, 1.0, -1.0).astype(np.float32), rest])
    src = np.repeat(np.arange(len(owner)), _GRAPH_DEGREE)
    same = rng.random(len(src)) < 1 / (1 + np.exp(-2 * u[owner[src]]))
    want = np.where(same, kind[src], 1 - kind[src])
    size = sizes[owner[src]]
    count = (size - want + 1) // 2  # nodes of type ``want`` among positions 0..size-1
    pick = want + 2 * np.floor(rng.random(len(src)) * count).astype(np.int64)
    dst = starts[owner[src]] + pick
    keep = src != dst
    src, dst = src[keep], dst[keep]
    both = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)
    both = both[:, np.argsort(owner[both[0]], kind="stable")]
    cuts = np.cumsum(np.bincount(owner[both[0]], minlength=n))[:-1]
    graphs = {}
    for i, (pid, xs, es) in enumerate(
        zip(ids, np.split(x, np.cumsum(sizes)[:-1]), np.split(both, cuts, axis=1))
    ):
        graphs[pid] = {"x": xs, "edge_index": (es - starts[i]).astype(np.int64)}
    return graphs, u


def _make_text(rng, driver: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """Reports whose share of "high" words follows ``sigmoid(2 * driver)``."""
    n = len(driver)
    high = rng.random((n, _TEXT_WORDS)) < 1 / (1 + np.exp(-2 * driver[:, None]))
    low_w, high_w = np.array(_LEXICON["low"]), np.array(_LEXICON["high"])
    fill = np.array(_LEXICON["filler"])
    words = np.where(
        high,
        high_w[rng.integers(len(high_w), size=(n, _TEXT_WORDS))],
        low_w[rng.integers(len(low_w), size=(n, _TEXT_WORDS))],
    )
    filler = fill[rng.integers(len(fill), size=(n, _TEXT_WORDS))]
    text = [" ".join(w for pair in zip(f, s) for w in pair) for f, s in zip(filler, words)]
    return pd.DataFrame({"text": text}, index=index)


def _make_bag(rng, seen, proj, ids, noise, lo, hi) -> dict[str, np.ndarray]:
    """All instances drawn as one float32 array, then split into per-patient views."""
    n, width = len(ids), proj.shape[1]
    k = seen.shape[1]
    base = (seen @ proj).astype(np.float32)
    prototypes = rng.standard_normal((_N_CLUSTERS, width)).astype(np.float32)
    share = np.linspace(1.0, 0.25, _N_CLUSTERS, dtype=np.float32)  # cluster 0 carries most signal
    logits = seen @ rng.standard_normal((k, _N_CLUSTERS))
    mix = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    sizes = rng.integers(lo, hi + 1, size=n)
    owner = np.repeat(np.arange(n), sizes)
    cluster = (rng.random(len(owner))[:, None] > cum[owner, :-1]).sum(axis=1)
    inst = rng.standard_normal((len(owner), width), dtype=np.float32)
    inst *= np.float32(noise)
    step = 1 << 20  # bounded temporaries: the big array is the only full-size allocation
    for s in range(0, len(owner), step):
        o, c = owner[s : s + step], cluster[s : s + step]
        inst[s : s + step] += prototypes[c]
        inst[s : s + step] += share[c, None] * base[o]
    return dict(zip(ids, np.split(inst, np.cumsum(sizes)[:-1])))


# ------------------------------------------------------------------ outcome
def _weibull_times(rng: np.random.Generator, log_hazard: np.ndarray) -> np.ndarray:
    e = rng.standard_exponential(len(log_hazard))
    return _WEIBULL_SCALE * (e * np.exp(-log_hazard)) ** (1.0 / _WEIBULL_SHAPE)


def _censor(rng, event_time: np.ndarray, censoring: float) -> tuple[np.ndarray, np.ndarray]:
    """Exponential censoring whose rate gives the target censored fraction in expectation."""
    n = len(event_time)
    if censoring == 0:
        return event_time, np.ones(n, dtype=np.int64)
    lo, hi = -30.0, 30.0  # bisection on the log censoring rate
    for _ in range(80):
        mid = (lo + hi) / 2
        frac = np.mean(-np.expm1(-np.exp(mid) * event_time))
        lo, hi = (mid, hi) if frac < censoring else (lo, mid)
    cens_time = rng.standard_exponential(n) / np.exp((lo + hi) / 2)
    event = (event_time <= cens_time).astype(np.int64)
    if event.sum() == 0:  # tiny cohorts: never return an event-less cohort
        event[np.argmin(event_time)] = 1
        cens_time[np.argmin(event_time)] = np.inf
    return np.minimum(event_time, cens_time), event


# -------------------------------------------------------------- missingness
def _draw_missing(rng, z, names, missing, mechanism) -> np.ndarray:
    """(P, M) drop mask with the requested rates; nobody loses every modality."""
    n, n_mod = len(z), len(names)
    prob = np.zeros((n, n_mod))
    for m, mod in enumerate(names):
        rate = float(missing.get(mod, 0.0))
        if rate == 0:
            continue
        if mechanism == "mcar":
            prob[:, m] = rate
        else:  # driven by the first latent homed in the next modality
            driver = z[:, (m + 1) % n_mod]
            prob[:, m] = _sigmoid_with_mean(_MAR_SLOPE * driver, rate)
    drop = rng.random((n, n_mod)) < prob
    empty = np.flatnonzero(drop.all(axis=1))
    cum = np.cumsum(prob[empty] / prob[empty].sum(axis=1, keepdims=True), axis=1)
    keep = (rng.random(len(empty))[:, None] > cum[:, :-1]).sum(axis=1)
    drop[empty, keep] = False
    restore = np.bincount(keep, minlength=n_mod)
    # Drop as many again elsewhere so that the rates stay on target.
    for m in np.flatnonzero(restore):
        cand = np.flatnonzero(~drop[:, m] & ((~drop).sum(axis=1) >= 2) & (prob[:, m] > 0))
        k = min(int(restore[m]), len(cand))
        if k:
            p = prob[cand, m] / prob[cand, m].sum()
            drop[rng.choice(cand, size=k, replace=False, p=p), m] = True
    return drop


def _sigmoid_with_mean(x: np.ndarray, mean: float) -> np.ndarray:
    lo, hi = -50.0, 50.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(x + mid)))) < mean:
            lo = mid
        else:
            hi = mid
    return 1 / (1 + np.exp(-(x + (lo + hi) / 2)))


def _relations(names: list[str]) -> list[EdgeType]:
    rels = [r for r in DEFAULT_RELATIONS if r[0] in names and r[2] in names]
    linked = {names[0]}
    changed = True
    while changed:  # grow the component of the first modality
        changed = False
        for s, _, t in rels:
            if (s in linked) != (t in linked):
                linked |= {s, t}
                changed = True
    prev = names[0]
    for mod in names[1:]:
        if mod not in linked:
            rels.append((prev, "relates_to", mod))
            linked.add(mod)
        prev = mod
    return rels
