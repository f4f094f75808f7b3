"""Fuzzing the cohort reader: any folder is either a cohort that trains, or a GraphMedError.

Hypothesis writes small random cohort folders: random modality kinds and
widths, missing rows and cells, extreme values (1e300, 1e-300, -0.0), NaN and
inf sprinkled, duplicate patient ids, odd dtypes (ints, bools, strings, dates
and categories in Parquet, float16 and int bags, decimal commas, 'NA'), and
bag files as .npy or .pt. :func:`read_cohort` must either return a cohort whose
graphs train one step to a finite loss, or raise :class:`GraphMedError`; any
other exception is a bug.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphmed.data.io import read_cohort
from graphmed.errors import GraphMedError
from graphmed.train.builder import build_model, fit_data
from graphmed.train.config import load_experiment

MAX_EXAMPLES = 200
SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, -0.0, 0.0, 1e31, 3.0]
DIRT = ["special"] * 4 + ["dtype"] * 2 + ["duplicate id", "duplicate row", "time", "event", "width"]
CONFIG = ["model.hidden=8", "model.heads=2", "model.layers=1", "train.progress=false"]
CONFIG += ["model.n_prompts=2", "model.n_bank=2", "model.bag_tokens=2"]


@st.composite
def numbers(draw, n: int, dirt: str | None) -> list[float]:
    """``n`` numbers; with ``dirt == "special"`` NaN, inf, 1e300, ... may be sprinkled in."""
    base = draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n))
    if dirt == "special":
        for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)):
            base[i] = draw(st.sampled_from(SPECIAL))
    return base


@st.composite
def tables(draw, ids: list[str], kind: str, dirt: str | None) -> pd.DataFrame:
    """A table of a subset of ``ids`` with random columns (odd ones with ``dirt``)."""
    rows = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True))
    if dirt == "duplicate row":
        rows.append(rows[0])
    n = len(rows)
    frame = pd.DataFrame({"patient_id": rows})
    width = draw(st.integers(1, 4 if kind == "tabular" else 12))
    for j in range(width):
        col = f"c{j}"
        kinds = ["float", "float", "int", "str", "bool"]
        dtype = draw(st.sampled_from(kinds + (["text", "date"] if dirt == "dtype" else [])))
        if kind == "vector" and (dirt != "dtype" or draw(st.integers(0, 2))):
            dtype = "float"
        if dtype == "float":
            frame[col] = draw(numbers(n, dirt))
        elif dtype == "int":
            frame[col] = draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
        elif dtype == "bool":
            frame[col] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        elif dtype == "str":
            frame[col] = draw(
                st.lists(st.sampled_from(["a", "b", "NA", ""]), min_size=n, max_size=n)
            )
        elif dtype == "text":  # numbers written as text, some of them odd
            cells = st.sampled_from(["1.5", "57,0", "abc", "-3", "1e400", "nan", " 2 "])
            frame[col] = draw(st.lists(cells, min_size=n, max_size=n))
        else:
            frame[col] = pd.to_datetime("2020-01-01") + pd.to_timedelta(range(n), unit="D")
        if draw(st.booleans()):  # missing cells
            frame[col] = frame[col].astype(object)
            for i in draw(st.lists(st.integers(0, n - 1), max_size=2)):
                frame.loc[i, col] = None
    return frame


@st.composite
def bags(draw, ids: list[str], dirt: str | None) -> dict[str, np.ndarray]:
    width = draw(st.integers(1, 5))
    odd = ["float64", "float16", "int64", "bool", "complex64"] if dirt == "dtype" else []
    dtype = draw(st.sampled_from(["float32", "float32", *odd]))
    out = {}
    for pid in draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True)):
        k = draw(st.integers(0, 4))
        w = width + 1 if dirt == "width" and not draw(st.integers(0, 3)) else width
        arr = np.asarray(draw(numbers(max(k * w, 1), dirt))[: k * w], dtype=np.float64)
        arr = arr.reshape(k, w)
        with np.errstate(all="ignore"):
            out[pid] = arr.astype(dtype)
    return out


@st.composite
def cohort_specs(draw) -> dict:
    # One kind of dirt per cohort (a quarter are clean), so that each fault is met alone.
    dirt = draw(st.sampled_from([None] * 4 + DIRT))
    n = draw(st.integers(3, 16))
    ids = [f"p{i:02d}" for i in range(n)]
    if dirt == "duplicate id":
        ids[-1] = ids[0]
    time = draw(st.lists(st.floats(0, 50), min_size=n, max_size=n))
    if dirt == "time":
        time = draw(numbers(n, "special"))
    event = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    event[0] = 1
    if dirt == "event":
        event = draw(
            st.lists(st.sampled_from([0, 1, "1", "True", 2, "yes"]), min_size=n, max_size=n)
        )
    kinds = draw(st.lists(st.sampled_from(["tabular", "vector", "bag"]), min_size=1, max_size=3))
    modalities = {}
    target = draw(st.integers(0, len(kinds) - 1))  # the one modality that gets the dirt
    for i, kind in enumerate(kinds):
        mine = dirt if i == target else None
        data = draw(bags(ids, mine)) if kind == "bag" else draw(tables(ids, kind, mine))
        fmt = draw(st.sampled_from([".npy", ".pt"] if kind == "bag" else [".csv", ".parquet"]))
        modalities[f"m{i}"] = (kind, data, fmt)
    return {"ids": ids, "time": time, "event": event, "modalities": modalities, "dirt": dirt}


def write_spec(spec: dict, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    patients = pd.DataFrame(
        {"patient_id": spec["ids"], "time": spec["time"], "event": spec["event"]}
    )
    patients.to_csv(root / "patients.csv", index=False)
    conf: dict = {"name": "fuzz", "modalities": {}}
    for mod, (kind, data, fmt) in spec["modalities"].items():
        if kind == "bag":
            (root / mod).mkdir()
            for pid, arr in data.items():
                if fmt == ".npy":
                    np.save(root / mod / f"{pid}.npy", arr)
                else:
                    torch.save(torch.from_numpy(arr), root / mod / f"{pid}.pt")
            conf["modalities"][mod] = {"kind": kind, "path": mod}
        else:
            path = f"{mod}{fmt}"
            if fmt == ".csv":
                data.to_csv(root / path, index=False)
            else:
                try:
                    data.to_parquet(root / path, index=False)
                except Exception:  # a mix pyarrow cannot store: write it as text
                    data.astype(str).to_parquet(root / path, index=False)
            conf["modalities"][mod] = {"kind": kind, "path": path}
    names = list(conf["modalities"])
    if len(names) > 1:
        conf["relations"] = [[names[0], "r", names[1]]]
    (root / "cohort.yaml").write_text(yaml.safe_dump(conf))


def train_one_step(cohort) -> float:
    config = load_experiment(None, CONFIG)
    fitted = fit_data(cohort, config)
    graphs = fitted.graphs(cohort)
    model = build_model(fitted, graphs, cohort)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = graphs.batch(np.arange(len(graphs)))
    loss, _ = model.loss(batch, model(batch))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _reason(message: str) -> str:
    """The message with its file, column, patient and values taken out, to count kinds."""
    text = message.split(": ", 1)[-1]
    text = re.sub(r"'[^']*'|\([^)]*\)|-?\d[\d.e+-]*", "_", text)
    return text[:60]


@pytest.mark.slow
def test_read_cohort_returns_a_trainable_cohort_or_a_graphmed_error(record_property):
    seen: Counter = Counter()
    reasons: Counter = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run (and in CI)
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spec=cohort_specs())
    def check(spec):
        seen["examples"] += 1
        with tempfile.TemporaryDirectory() as tmp:
            write_spec(spec, Path(tmp) / "c")
            try:
                cohort = read_cohort(Path(tmp) / "c")
            except GraphMedError as err:
                seen["refused"] += 1
                reasons[_reason(str(err))] += 1
                return
            loss = train_one_step(cohort)
            assert np.isfinite(loss), f"loss {loss} for an accepted cohort ({spec['dirt']})"
            seen["accepted"] += 1
            seen[f"accepted with dirt {spec['dirt']}"] += 1

    check()
    record_property("fuzz_examples", seen["examples"])
    print(
        f"fuzzed {seen['examples']} cohorts: {seen['accepted']} read and trained one step, "
        f"{seen['refused']} refused with a GraphMedError; reasons: {dict(reasons.most_common())}; "
        f"{dict(seen)}"
    )
    assert seen["examples"] >= MAX_EXAMPLES // 2
    assert seen["accepted"] and seen["refused"]  # both paths are exercised
