"""Shared tiny fixtures: a hand-made cohort with every modality kind and missingness.

The cohort has 24 patients and three modalities:

* ``clinical`` (tabular): ``age``, ``size``, ``marker`` (numeric) and ``grade``
  (categorical: low/high, and ``mid`` only for test patients p17 and p20), with
  a NaN ``size`` for p09 (a training patient who has the modality);
* ``expr`` (vector): 20 genes with very different variances (chunks of 8);
* ``wsi`` (bag): 1 to 11 instances of width 6 per patient.

Missingness (see ``MISSING``): each modality is missing for some patients,
``p07`` has only ``clinical`` and ``p08`` only ``wsi``. Session-scoped objects
are shared, so tests must not modify them. Tests reach the helpers through
fixtures (``make_frames``, ``make_cohort``, ``train_ids``, ``test_ids``), not
by importing this file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from graphmed.data.cohort import Cohort
from graphmed.data.preprocess import CohortPreprocessor
from graphmed.graph.build import PatientGraphs, build_graphs
from graphmed.graph.relations import RelationGraph

N_PATIENTS = 24
N_GENES = 20
BAG_WIDTH = 6
MODALITIES = ["clinical", "expr", "wsi"]
RELATIONS = [("clinical", "informs", "expr"), ("expr", "expressed_in", "wsi")]
MISSING = {
    "clinical": ["p01", "p02", "p08"],
    "expr": ["p03", "p04", "p07", "p08"],
    "wsi": ["p05", "p06", "p07"],
}
TRAIN_IDS = [f"p{i:02d}" for i in range(16)]
TEST_IDS = [f"p{i:02d}" for i in range(16, N_PATIENTS)]


def _make_frames(n: int = N_PATIENTS, seed: int = 0) -> dict:
    """Raw frames of the fixture cohort (fresh copies, safe to modify)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(n)]
    patients = pd.DataFrame(
        {"patient_id": ids, "time": rng.uniform(1, 10, n), "event": rng.integers(0, 2, n)}
    )
    patients.loc[0, "event"] = 1
    clinical = pd.DataFrame(
        {
            "patient_id": ids,
            "age": rng.normal(60, 10, n),
            "size": rng.normal(3, 1, n),
            "grade": rng.choice(["low", "high"], n),
            "marker": rng.lognormal(0, 1, n),
        }
    )
    clinical.loc[9, "size"] = np.nan  # a missing cell inside a present row
    clinical.loc[[17, 20], "grade"] = "mid"  # a category no training patient has
    scales = np.linspace(0.1, 5.0, N_GENES)
    expr = pd.DataFrame(
        rng.normal(size=(n, N_GENES)) * scales, columns=[f"g{j:02d}" for j in range(N_GENES)]
    )
    expr.insert(0, "patient_id", ids)
    sizes = rng.integers(1, 12, n)
    wsi = {pid: rng.normal(size=(k, BAG_WIDTH)).astype(np.float32) for pid, k in zip(ids, sizes)}
    clinical = clinical[~clinical.patient_id.isin(MISSING["clinical"])]
    expr = expr[~expr.patient_id.isin(MISSING["expr"])]
    wsi = {p: a for p, a in wsi.items() if p not in MISSING["wsi"]}
    return {"patients": patients, "clinical": clinical, "expr": expr, "wsi": wsi}


def _make_cohort(frames: dict | None = None, options: dict | None = None) -> Cohort:
    frames = frames or _make_frames()
    return Cohort.from_frames(
        frames["patients"],
        {m: frames[m] for m in MODALITIES if m in frames},
        kinds={"clinical": "tabular", "expr": "vector", "wsi": "bag"},
        options=options,
        relations=[r for r in RELATIONS if r[0] in frames and r[2] in frames],
        name="tiny",
    )


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Run torch on one thread: the test tensors are tiny, and on a busy 2-core machine
    intra-op threads made each small op some 100x slower (7 ms instead of 70 us)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_frames():
    """Factory of fresh raw frames ``{"patients", "clinical", "expr", "wsi"}``, safe to modify."""
    return _make_frames


@pytest.fixture(scope="session")
def make_cohort():
    """Factory ``make_cohort(frames=None, options=None)`` of the fixture cohort."""
    return _make_cohort


@pytest.fixture(scope="session")
def train_ids() -> list[str]:
    return list(TRAIN_IDS)


@pytest.fixture(scope="session")
def test_ids() -> list[str]:
    return list(TEST_IDS)


@pytest.fixture(scope="session")
def cohort() -> Cohort:
    return _make_cohort()


@pytest.fixture(scope="session")
def relations(cohort) -> RelationGraph:
    return RelationGraph.from_cohort(cohort)


@pytest.fixture(scope="session")
def preprocessor(cohort) -> CohortPreprocessor:
    """Fitted on the training patients only."""
    return CohortPreprocessor().fit(cohort.subset(TRAIN_IDS))


@pytest.fixture(scope="session")
def graphs(cohort, preprocessor) -> PatientGraphs:
    """Graphs of every patient; bags capped at 8 nodes."""
    return build_graphs(cohort, preprocessor, max_instances=8)


class _Payload:
    """Unpickling this object calls ``exec``, which writes ``marker``: a crafted file's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture
def crafted_torch_file():
    """Factory ``crafted_torch_file(path, marker, wrap)``: a torch file whose unpickling
    writes ``marker``; ``wrap(payload)`` places the payload inside the saved object."""

    def write(path, marker, wrap=lambda payload: {"payload": payload}):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wrap(_Payload(marker)), path)
        return path

    return write


@pytest.fixture(scope="session")
def synthetic_fit():
    """``synthetic_fit(n, seed, censoring, overrides)``: a synthetic cohort, its fitted
    preprocessing under the default config with ``overrides``, and its graphs."""
    import graphmed
    from graphmed.train.builder import fit_data
    from graphmed.train.config import load_experiment

    def fit(n: int, seed: int, censoring: float, overrides: list[str]):
        cohort = graphmed.make_synthetic_cohort(n, bag_size=(2, 6), censoring=censoring, seed=seed)
        fitted = fit_data(cohort, load_experiment(None, overrides))
        return cohort, fitted, fitted.graphs(cohort)

    return fit
