"""How much of a hidden modality's prognostic signal the other modalities can give back.

Prompt completion, like any imputation, can only return what a patient's other
modalities say about the hidden one. This benchmark measures that ceiling
with a model whose use of each modality can be read off: CoxNet on every
modality (``coxnet_free``: the clinical table unpenalised, the same genes as
``tools/bench_quality.py --max-genes``), fitted on the training fold. Its risk
is ``x . w + b``; the hidden modality's share of it is ``s = x_h . w_h``.

For every cohort x split (the folds, and the same hidden test patients, as
``tools/bench_quality.py --hide widest``):

* ``s`` is predicted from every other column of the design matrix by ridge
  regression (alpha by leave-one-out CV) and by gradient-boosted trees, both
  fitted on the training patients who have the modality; the R^2 of each on
  the test patients who have it says how much of the hidden signal the rest
  carry (0: none; it can be negative);
* the C-index on the test fold with the modality hidden for 30 % and 60 % of
  the patients who have it: CoxNet's own mean imputation ("mean"), the whole
  block imputed by ridge from the other columns (the conditional mean,
  "ridge"), and ``s`` replaced by its boosted prediction ("boosted");
* the same for graphmed's own linear path (``configs/default.yaml``: the
  clinical table and three summaries of each omics group), whose hidden
  summaries enter at their training mean: imputed by ridge instead.

Every statistic is fitted on the training fold. Each split's result is
written atomically to ``--out`` as soon as it is done; a rerun skips it.
At the end: markdown tables and a JSON with every split.

    python tools/bench_completion_ceiling.py --out runs/ceiling \\
        --md docs/bench_completion_ceiling.md --json docs/bench_completion_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphmed._atomic import write_json, write_text  # noqa: E402

IMPUTATIONS = ("mean", "ridge", "boosted")


def _load_bench():
    import importlib.util

    path = Path(__file__).resolve().parent / "bench_quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ceiling(train_c, tests: dict, modality: str, max_genes: int | None, seed: int = 0) -> dict:
    """The ceiling figures of one split.

    Args:
        train_c: The training fold.
        tests: Setting -> test cohort; ``"none"`` (nothing hidden) and the
            settings with ``modality`` hidden for some of the patients.
        modality: The modality hidden in the settings other than ``"none"``.
        max_genes: Cap on vector modalities (highest training variance).
        seed: Seed of CoxNet's inner CV and of the boosted trees.

    Returns:
        ``{"n_coef": nonzero coefficients of the modality, "r2_ridge", "r2_boosted",
        "sd_share": sd of s over the test patients, "c": {setting: {imputation: C}}}``.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    from graphmed.metrics import harrell_c
    from graphmed.train.baselines import CoxNetBaseline

    cox = CoxNetBaseline(free_tabular=True, max_vector_features=max_genes, seed=seed).fit(train_c)
    features = cox.features_
    names = np.array(features.feature_names_)
    missing_col = names == f"{modality}:missing"
    if missing_col.sum() != 1:
        raise ValueError(f"modality {modality!r} is not in the cohort ({train_c.modality_names})")
    block = np.array([n.split(":", 1)[0] == modality for n in names]) & ~missing_col
    rest = ~block & ~missing_col
    w, b = cox.linear_map()
    x_train = features.transform(train_c)
    has = x_train[:, missing_col][:, 0] == 0
    if has.sum() < 10:
        raise ValueError(f"fewer than 10 training patients have {modality!r}")
    share_train = x_train[has][:, block] @ w[block]
    ridge = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(
        x_train[has][:, rest], x_train[has][:, block]
    )
    boosted = HistGradientBoostingRegressor(
        max_iter=200, learning_rate=0.05, early_stopping=True, random_state=seed
    ).fit(x_train[has][:, rest], share_train)

    x_test = features.transform(tests["none"])
    has_test = x_test[:, missing_col][:, 0] == 0
    share_test = x_test[has_test][:, block] @ w[block]
    out = {
        "n_coef": _n_coef(w[block]),
        "sd_share": float(np.std(share_test)),
        "r2_ridge": _r2(share_test, ridge.predict(x_test[has_test][:, rest]) @ w[block]),
        "r2_boosted": _r2(share_test, boosted.predict(x_test[has_test][:, rest])),
        "c": {},
    }
    time_, event = tests["none"].time, tests["none"].event
    for setting, cohort in tests.items():
        x = features.transform(cohort)
        hidden = x[:, missing_col][:, 0] == 1
        risks = {"mean": x @ w + b}
        x_ridge, boost = x.copy(), risks["mean"].copy()
        if hidden.any():
            x_ridge[np.ix_(hidden, np.flatnonzero(block))] = ridge.predict(x[hidden][:, rest])
            x_ridge[hidden, np.flatnonzero(missing_col)[0]] = 0.0  # read as present
            # the risk without the block, plus the predicted share
            without = x[hidden] @ np.where(block | missing_col, 0.0, w) + b
            boost[hidden] = without + boosted.predict(x[hidden][:, rest])
        risks["ridge"], risks["boosted"] = x_ridge @ w + b, boost
        out["c"][setting] = {k: harrell_c(time_, event, r) for k, r in risks.items()}
    out["linear_path"] = linear_path_ceiling(train_c, tests, modality, seed)
    return out


def linear_path_ceiling(train_c, tests: dict, modality: str, seed: int = 0) -> dict:
    """The same question for graphmed's own linear path (``configs/default.yaml``).

    The path reads the clinical table and three summaries of each omics group
    (:class:`~graphmed.nn.linear_path.LinearCoxPath`); a hidden group's
    summaries enter at their training mean. Here they are also imputed by
    ridge from the path's other inputs and the other groups' columns (fitted
    on the training patients who have the group). Returns
    ``{"n_coef", "r2_ridge", "c": {setting: {"mean": C, "ridge": C}}}``;
    ``None`` where the path does not summarise ``modality``.
    """
    import torch
    from sklearn.linear_model import RidgeCV

    from graphmed.metrics import harrell_c
    from graphmed.nn.linear_path import LinearCoxPath
    from graphmed.train.builder import fit_data
    from graphmed.train.config import load_experiment
    from graphmed.train.linear import fit_linear_path

    config = load_experiment(Path(__file__).resolve().parents[1] / "configs/default.yaml")
    fitted = fit_data(train_c, config)
    graphs = fitted.graphs(train_c)
    layouts = graphs.layouts
    tabular = [m for m, lay in layouts.items() if lay.kind == "tabular"]
    vectors = [m for m, lay in layouts.items() if lay.kind == "vector"]
    if not tabular or modality not in vectors:
        return None
    path = LinearCoxPath(layouts, tabular, vectors)
    fit_linear_path(path, graphs, seed=seed)
    offsets = np.cumsum([0, *path.widths().values()])
    k = list(path.widths()).index(f"{modality}:summary")
    cols = np.arange(offsets[k], offsets[k + 1])
    j = list(layouts).index(modality)
    w, b = path.weight.numpy().astype(np.float64), float(path.bias)

    def design(g):
        with torch.no_grad():
            f = path.features(g.x, g.node_mask, g.present).double().numpy()
        others = [
            torch.nan_to_num(g.x[m].double()).reshape(len(f), -1).numpy()
            * g.present[:, [i]].numpy()
            for i, m in enumerate(layouts)
            if m in vectors and m != modality
        ]
        return f, np.concatenate([np.delete(f, cols, 1), *others], 1)

    f_train, z_train = design(graphs)
    has = graphs.present[:, j].numpy()
    ridge = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(z_train[has], f_train[has][:, cols])
    test_graphs = fitted.graphs(tests["none"])
    f_test, z_test = design(test_graphs)
    has_test = test_graphs.present[:, j].numpy()
    share = f_test[has_test][:, cols] @ w[cols]
    out = {
        "n_coef": _n_coef(w[cols]),
        "r2_ridge": _r2(share, ridge.predict(z_test[has_test]) @ w[cols]),
        "c": {},
    }
    time_, event = tests["none"].time, tests["none"].event
    for setting, cohort in tests.items():
        g = fitted.graphs(cohort)
        f, z = design(g)
        hidden = ~g.present[:, j].numpy()
        imputed = f.copy()
        if hidden.any():
            imputed[np.ix_(hidden, cols)] = ridge.predict(z[hidden])
        out["c"][setting] = {
            "mean": harrell_c(time_, event, f @ w + b),
            "ridge": harrell_c(time_, event, imputed @ w + b),
        }
    return out


def _n_coef(w: np.ndarray) -> int:
    """Coefficients that are not zero: ``linear_map`` reads them off predictions, so
    an unused column comes back as rounding noise (about 1e-16), not as 0."""
    return int((np.abs(w) > 1e-9).sum())


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """R^2 of ``pred`` for ``y``; NaN where ``y`` is constant (the modality unused)."""
    var = float(np.var(y))
    if var < 1e-12:
        return float("nan")
    return 1.0 - float(np.mean((y - pred) ** 2)) / var


def run_split(bq, cohort: str, repeat: int, fold: int, args) -> dict:
    task = {
        "cohort": cohort,
        "max_genes": args.max_genes,
        "outer": None,
        "inner": None,
        "folds": args.folds,
        "repeats": args.repeats,
        "seed": args.seed,
        "repeat": repeat,
        "fold": fold,
    }
    train_c, test_c = bq.splits_of(task)
    hide_seed = args.seed * 1009 + 101 * repeat + fold  # tools/bench_quality.py's
    tests = bq.masked_tests(test_c, ["widest"], args.rates, hide_seed)
    t0 = time.time()
    result = ceiling(train_c, tests, bq.widest(train_c), args.max_genes, args.seed)
    result.update(
        cohort=cohort,
        split=f"r{repeat}f{fold}",
        modality=bq.widest(train_c),
        seconds=round(time.time() - t0, 1),
    )
    return result


def summarise(results: list[dict]) -> dict:
    """Per cohort and over all: mean R^2 (over splits where the modality is used) and
    mean C, for CoxNet and (``"linear_path"``) for graphmed's linear path."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["cohort"], []).append(r)
    by["all"] = results
    out = {}
    for name, rs in by.items():
        used = [r for r in rs if r["n_coef"] > 0]
        row = {
            "splits": len(rs),
            "modality_used": len(used),
            "r2_ridge": _mean([r["r2_ridge"] for r in used]),
            "r2_boosted": _mean([r["r2_boosted"] for r in used]),
            "c": _paired([r["c"] for r in rs], IMPUTATIONS),
        }
        paths = [r["linear_path"] for r in rs if r.get("linear_path")]
        if paths:
            row["linear_path"] = {
                "splits": len(paths),
                "modality_used": sum(p["n_coef"] > 0 for p in paths),
                "r2_ridge": _mean([p["r2_ridge"] for p in paths if p["n_coef"] > 0]),
                "c": _paired([p["c"] for p in paths], ("mean", "ridge")),
            }
        out[name] = row
    return out


def _paired(cs: list[dict], imputations) -> dict:
    """Setting -> mean C of each imputation and, hidden settings, each against "mean"."""
    out = {}
    for setting in cs[0]:
        out[setting] = {k: _mean([c[setting][k] for c in cs]) for k in imputations}
        if setting == "none":
            continue
        out[setting]["vs_mean"] = {}
        for k in imputations[1:]:
            d = [c[setting][k] - c[setting]["mean"] for c in cs]
            out[setting]["vs_mean"][k] = {
                "diff": _mean(d),
                "better": int(sum(v > 1e-9 for v in d)),
                "worse": int(sum(v < -1e-9 for v in d)),
            }
    return out


def _mean(values) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def markdown(summary: dict, command: str) -> str:
    lines = [
        "# How much of the hidden modality the rest give back (CoxNet on every modality)",
        "",
        f"    {command}",
        "",
        "R^2 of the hidden modality's share of the risk, on the test patients who have it,",
        "over the splits where CoxNet gives it a coefficient. C: Harrell's, mean over splits;",
        "differences paired against mean imputation (splits better:worse).",
        "",
    ]
    settings = [s for s in summary["all"]["c"] if s != "none"]
    head = ["cohort", "splits (modality used)", "R^2 ridge", "R^2 boosted", "C none"]
    for s in settings:
        head += [f"C {s} mean", f"ridge - mean {s}", f"boosted - mean {s}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in summary.items():
        cells = [
            name,
            f"{row['splits']} ({row['modality_used']})",
            f"{row['r2_ridge']:.3f}",
            f"{row['r2_boosted']:.3f}",
            f"{row['c']['none']['mean']:.3f}",
        ]
        for s in settings:
            c = row["c"][s]
            cells.append(f"{c['mean']:.3f}")
            for k in IMPUTATIONS[1:]:
                v = c["vs_mean"][k]
                cells.append(f"{v['diff']:+.4f} ({v['better']}:{v['worse']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "graphmed's linear path (clinical table + three summaries of each omics group):",
        "the hidden group's summaries at their training mean, or imputed by ridge.",
        "",
    ]
    head = ["cohort", "splits (summaries used)", "R^2 ridge", "C none"]
    for s in settings:
        head += [f"C {s} mean", f"ridge - mean {s}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in summary.items():
        lp = row.get("linear_path")
        if lp is None:
            continue
        cells = [
            name,
            f"{lp['splits']} ({lp['modality_used']})",
            f"{lp['r2_ridge']:.3f}",
            f"{lp['c']['none']['mean']:.3f}",
        ]
        for s in settings:
            v = lp["c"][s]["vs_mean"]["ridge"]
            cells += [f"{lp['c'][s]['mean']:.3f}", f"{v['diff']:+.4f} ({v['better']}:{v['worse']})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cohorts", help="comma-separated (default: the six TCGA cohorts)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rates", default="0.3,0.6", help="test-time missing rates")
    p.add_argument("--max-genes", type=int, default=2000, help="cap on vector modalities")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/ceiling", help="per-split results folder")
    p.add_argument("--md", help="markdown table (default: <out>/results.md)")
    p.add_argument("--json", help="every split and the summary (default: <out>/results.json)")
    args = p.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    return args


def main(argv=None, log=print) -> dict:
    args = parse_args(argv)
    bq = _load_bench()
    cohorts = [c for c in (args.cohorts or ",".join(bq.TCGA)).split(",") if c]
    command = "python tools/bench_completion_ceiling.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    out = Path(args.out)
    results = []
    warnings.simplefilter("ignore")
    for cohort in cohorts:
        splits = bq.make_folds(
            bq.load_cohort(cohort, args.max_genes), args.folds, args.repeats, args.seed
        )
        for repeat, fold, _, _ in splits:
            path = out / cohort / f"r{repeat}f{fold}.json"
            if path.exists():
                results.append(json.loads(path.read_text()))
                continue
            result = run_split(bq, cohort, repeat, fold, args)
            write_json(path, result)
            results.append(result)
            c = result["c"]
            log(
                f"{cohort} r{repeat}f{fold}: R2 ridge {result['r2_ridge']:.3f} boosted "
                f"{result['r2_boosted']:.3f}; C none {c['none']['mean']:.3f}"
                + "".join(
                    f"; {s} mean {v['mean']:.3f} ridge {v['ridge']:.3f} boosted {v['boosted']:.3f}"
                    for s, v in c.items()
                    if s != "none"
                )
            )
    summary = summarise(results)
    write_text(args.md or out / "results.md", markdown(summary, command))
    write_json(
        args.json or out / "results.json",
        {"command": command, "summary": summary, "splits": results},
    )
    return summary


if __name__ == "__main__":
    main()
