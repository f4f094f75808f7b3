"""A downstream survival analysis on exported patient embeddings.

    # on an export (graphmed export ... --out emb.parquet):
    python tools/downstream_survival.py --embeddings emb.parquet --km km.png
    # end to end: train on one part of a cohort, export the other part, analyse it:
    python tools/downstream_survival.py --demo synthetic --out runs/downstream
    python tools/downstream_survival.py --demo gse7390 --out runs/downstream_gse7390

The analysis treats the embeddings as features of a new cohort: it splits the
exported patients into a train and a test part (stratified by event, seeded),
standardises the ``emb_*`` columns on the train part, fits a penalised
lifelines ``CoxPHFitter`` there, and prints Harrell's C-index on the test
part, beside the C-index of the graphmed model's own ``risk`` column on the
same patients. Kaplan-Meier curves of the test patients, split at the median
Cox risk of the *train* part, go to a PNG with the log-rank p-value.

The endpoint comes from the export (``time`` and ``event`` columns, which
``graphmed export`` copies from the cohort) or from ``--patients``, a CSV with
``patient_id``, ``time``, ``event``.

The demos keep the model honest: the downstream patients are never seen in
training, and a share of their modalities is hidden (``--hide``) so that the
export runs on a cohort with far more missing data than the training one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def analyse(
    frame: pd.DataFrame,
    *,
    test_size: float = 0.3,
    penalizer: float = 0.1,
    seed: int = 0,
    km_path: str | Path | None = None,
) -> dict:
    """Fit CoxPH on the train part of the embeddings; C-index and KM on the test part."""
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test
    from lifelines.utils import concordance_index
    from sklearn.model_selection import train_test_split

    emb = [c for c in frame.columns if c.startswith("emb_")]
    missing = [c for c in ("time", "event") if c not in frame.columns]
    if not emb or missing:
        raise SystemExit(
            f"the table needs emb_* and time/event columns; missing {missing or ['emb_*']}. "
            "Pass --patients patients.csv to add the endpoint."
        )
    data = frame.dropna(subset=["time", "event"]).reset_index(drop=True)
    train, test = train_test_split(
        data, test_size=test_size, stratify=data["event"], random_state=seed
    )
    mean, sd = train[emb].mean(), train[emb].std(ddof=0).replace(0, 1.0)

    def design(part: pd.DataFrame) -> pd.DataFrame:
        x = (part[emb] - mean) / sd
        return x.assign(time=part["time"].to_numpy(), event=part["event"].to_numpy())

    cph = CoxPHFitter(penalizer=penalizer).fit(design(train), "time", "event")
    risk_train = cph.predict_log_partial_hazard(design(train)).to_numpy()
    risk_test = cph.predict_log_partial_hazard(design(test)).to_numpy()
    t, e = test["time"].to_numpy(float), test["event"].to_numpy(int)
    out = {
        "patients": len(data),
        "train": len(train),
        "test": len(test),
        "test_events": int(e.sum()),
        "features": len(emb),
        "penalizer": penalizer,
        "c_train": concordance_index(train["time"], -risk_train, train["event"]),
        "c_test": concordance_index(t, -risk_test, e),
    }
    if "risk" in test.columns and test["risk"].notna().all():
        out["c_test_model_risk"] = concordance_index(t, -test["risk"].to_numpy(), e)
    high = risk_test > np.median(risk_train)  # the cut is chosen on the train part
    if 0 < high.sum() < len(high):
        out["logrank_p"] = float(logrank_test(t[high], t[~high], e[high], e[~high]).p_value)
    out["groups"] = {"low": int((~high).sum()), "high": int(high.sum())}
    if km_path is not None:
        _plot_km(t, e, high, out, Path(km_path))
        out["km"] = str(km_path)
    return out


def _plot_km(t, e, high, result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from lifelines import KaplanMeierFitter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for name, mask, color in (("high", high, "tab:red"), ("low", ~high, "tab:green")):
        if mask.any():
            label = f"{name} risk (n={mask.sum()}, {e[mask].sum()} events)"
            KaplanMeierFitter(label=label).fit(t[mask], e[mask]).plot_survival_function(
                ax=ax, color=color
            )
    p = result.get("logrank_p")
    ax.set(xlabel="time", ylabel="survival probability", ylim=(0, 1.02))
    ax.set_title(
        f"Test patients by CoxPH-on-embeddings risk (train-median cut)\n"
        f"C-index {result['c_test']:.3f}, log-rank p = {p:.3g}"
        if p is not None
        else f"C-index {result['c_test']:.3f}"
    )
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def demo(name: str, out: Path, hide: float, epochs: int, seed: int) -> Path:
    """Train on one part of a cohort, export the other part (with modalities hidden)."""
    import graphmed
    from graphmed.train.config import load_experiment

    if name == "synthetic":
        cohort = graphmed.make_synthetic_cohort(
            1600, missing={"expr": 0.2, "wsi": 0.2}, bag_size=(8, 24), seed=seed
        )
        sets = ["model.hidden=32", "model.heads=2", "model.layers=1", "graph.max_instances=16"]
    else:
        cohort = graphmed.load_recipe("breast_cancer")
        sets = []
    overrides = [f"train.epochs={epochs}", "train.patience=10", "train.progress=false"]
    config = load_experiment(
        Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml", sets + overrides
    )
    rng = np.random.default_rng(seed)
    ids = np.asarray(cohort.patient_ids)
    order = rng.permutation(len(ids))
    half = len(ids) // 2
    train_ids, down_ids = ids[np.sort(order[:half])], ids[np.sort(order[half:])]
    train = cohort.subset(train_ids)
    downstream = cohort.subset(down_ids)
    # Hide the widest modality for a share of the downstream patients (not of training ones).
    target = max(cohort.modality_names, key=cohort.width)
    present = downstream.present_mask()
    others = present.drop(columns=target).any(axis=1)  # keep at least one modality each
    candidates = down_ids[(present[target] & others).to_numpy()]
    hidden = rng.choice(candidates, round(hide * len(candidates)), replace=False)
    downstream = downstream.drop_modality_for(target, hidden)
    downstream.name = f"{cohort.name}_downstream"
    t0 = time.perf_counter()
    model, history = graphmed.fit_final(train, config)
    model.save(out / "model")
    t1 = time.perf_counter()
    summary = graphmed.export_embeddings(
        model, downstream, out / "embeddings.parquet", progress=False
    )
    print(
        f"demo {name}: trained on {train.n_patients} patients ({t1 - t0:.0f} s, best epoch "
        f"{history['best_epoch']}); exported {downstream.n_patients} other patients with "
        f"'{target}' hidden for {len(hidden)} of them -> {summary.path} ({summary.seconds:.1f} s)"
    )
    return summary.path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--embeddings", type=Path, help="Parquet file written by graphmed export")
    src.add_argument("--demo", choices=("synthetic", "gse7390"), help="train, export, analyse")
    p.add_argument("--out", type=Path, default=Path("runs/downstream"), help="demo folder")
    p.add_argument("--patients", type=Path, help="CSV with patient_id, time, event")
    p.add_argument("--km", type=Path, help="Kaplan-Meier PNG (default: beside the embeddings)")
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--penalizer", type=float, default=0.1)
    p.add_argument("--hide", type=float, default=0.5, help="demo: share of patients hidden")
    p.add_argument("--epochs", type=int, default=100, help="demo: training epochs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = args.embeddings
    if args.demo:
        path = demo(args.demo, args.out, args.hide, args.epochs, args.seed)
    frame = pd.read_parquet(path)
    if args.patients is not None:
        ends = pd.read_csv(args.patients, dtype={"patient_id": str})[
            ["patient_id", "time", "event"]
        ]
        frame = frame.drop(columns=["time", "event"], errors="ignore").merge(ends, on="patient_id")
    km = args.km or path.with_name(path.stem + "_km.png")
    res = analyse(
        frame, test_size=args.test_size, penalizer=args.penalizer, seed=args.seed, km_path=km
    )
    print(
        f"{res['patients']} patients, {res['features']} embedding features; CoxPH "
        f"(penalizer {res['penalizer']}) fitted on {res['train']}, tested on {res['test']} "
        f"({res['test_events']} events)"
    )
    print(f"C-index train {res['c_train']:.3f}   test {res['c_test']:.3f}")
    if "c_test_model_risk" in res:
        print(f"C-index test, the graphmed model's own risk column: {res['c_test_model_risk']:.3f}")
    if "logrank_p" in res:
        print(
            f"KM by risk group (train-median cut): low {res['groups']['low']}, high "
            f"{res['groups']['high']} test patients, log-rank p = {res['logrank_p']:.3g}"
        )
    print(f"KM plot -> {km}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
