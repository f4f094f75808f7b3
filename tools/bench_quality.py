"""C-index of graphmed and its baselines on real cohorts, under test-time missingness.

For every cohort (a dataset recipe), R x K-fold stratified CV with the same
folds for every method. Each method is trained once per fold, on the training
fold only (its own validation part or inner CV does the model selection), and
then scored on five versions of the test fold: nothing hidden, and each
modality hidden for 30 % and 60 % of the test patients (seeded; the same
patients for every method). Every method sees the same genes: vector
modalities are capped to the ``--max-genes`` highest-variance columns of the
training fold.

Each (cohort, fold, method) result is written atomically to ``--out`` as soon
as it is finished; a rerun skips what is there. ``--jobs`` runs folds in
parallel processes with one torch thread each. At the end: a markdown table
(``results.md``), a compact JSON and a PNG of C-index against missing rate.
The JSON also keeps every fold's Harrell's and Uno's C and the training
diagnostics (``"folds"``), so a report can be rebuilt after the results
folder is gone: ``--report-only --merge OLD.json`` adds its folds to those of
``--out`` (a cohort x method in the folder keeps the folder's folds).

    python tools/bench_quality.py --jobs 2 --out runs/bench_quality
    python tools/bench_quality.py --quick --out /tmp/bq            # smoke run
    python tools/bench_quality.py --inner 3 --config configs/small_cohort.yaml \\
        --methods graphmed --out runs/bench_quality    # config selection, training folds only

``--inner K`` never touches a test fold: inside the training part of each
outer fold of the first repeat it runs K-fold CV and reports those figures,
for choosing a configuration before the outer benchmark is run with it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphmed._atomic import write_json, write_text  # noqa: E402
from graphmed.train.config import experiment_to_dict, load_experiment  # noqa: E402
from graphmed.train.cv import hide_modalities, make_folds  # noqa: E402

SMALL = ["breast_cancer", "nki70", "gse1992", "gse4335", "gse3143"]
TCGA = ["tcga_blca", "tcga_brca", "tcga_luad", "tcga_ucec", "tcga_coadread", "tcga_lusc"]
COHORTS = [*TCGA, *SMALL]
TCGA_ROOT = Path(
    os.environ.get("GRAPHMED_TCGA", Path(__file__).resolve().parents[2] / "shared/data/tcga")
)
"""Where the TCGA cohort folders are read from (``$GRAPHMED_TCGA``, else ``../shared/data/tcga``)."""
ABLATIONS = {
    "graphmed": [],
    "graphmed-zero": ["model.completion=zero"],
    "graphmed-nobank": ["model.prompt_bank=false"],
    "graphmed-nosteer": ["model.steering=none"],
    "graphmed-homog": ["model.heterogeneous=false"],
    "graphmed-nometa": ["model.metapath_level=false"],
    "graphmed-linear": ["model.linear_path=true", "model.linear_inputs=all"],
    "graphmed-nolinear": ["model.linear_path=false"],
}
BASELINES = ["coxnet", "coxnet_free", "rsf", "mlp_zero", "mlp_mean", "best_single", "rsf_single"]
"""``best_single`` also reports CoxNet on each modality (``coxnet:<m>``), ``rsf_single``
RSF on each modality (``rsf:<m>``)."""
METHODS = [*ABLATIONS, *BASELINES]
QUICK_MODEL = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "train.ensemble=1",
]
QUICK_BASELINE = {
    "rsf": {"n_estimators": 10},
    "mlp_zero": {"epochs": 3},
    "mlp_mean": {"epochs": 3},
    "coxnet": {"n_alphas": 8},
    "coxnet_free": {"n_alphas": 8},
}
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the tasks
@functools.lru_cache(maxsize=4)
def load_cohort(name: str, max_genes: int | None):
    """The recipe's cohort, vector modalities capped to ``max_genes`` (fitted per fold)."""
    if name in TCGA:
        from graphmed.data.io import read_cohort

        if not (TCGA_ROOT / name).is_dir():
            raise SystemExit(f"{TCGA_ROOT / name} not found; set GRAPHMED_TCGA to the folder")
        cohort = read_cohort(TCGA_ROOT / name)
    else:
        from graphmed.data.recipes import load_recipe

        cohort = load_recipe(name)
    for spec in cohort.modalities.values():
        if spec.kind == "vector" and max_genes is not None:
            spec.options["max_features"] = min(spec.options.get("max_features", 1e12), max_genes)
    return cohort


def splits_of(task: dict):
    """``(train cohort, test cohort)`` of a task: an outer fold, or an inner fold of one."""
    cohort = load_cohort(task["cohort"], task["max_genes"])
    ids = np.asarray(cohort.patient_ids)
    if task["outer"] is not None:  # inner CV inside an outer training fold
        _, _, tr, _ = make_folds(cohort, task["folds"], 1, task["seed"])[task["outer"]]
        cohort = cohort.subset(ids[tr])
        ids = np.asarray(cohort.patient_ids)
    k = task["inner"] or task["folds"]
    repeats = 1 if task["inner"] else task["repeats"]
    splits = make_folds(cohort, k, repeats, task["seed"])
    _, _, tr, te = next(s for s in splits if s[:2] == (task["repeat"], task["fold"]))
    return prefilter(cohort.subset(ids[tr]), cohort.subset(ids[te]), task["max_genes"])


def prefilter(train_c, test_c, max_genes: int | None):
    """Keep the ``2 * max_genes`` highest-variance training columns of each wide vector.

    Every method keeps the ``max_genes`` columns of highest variance over the
    training patients who have the modality (the same criterion, with ties
    kept in column order), so this superset changes no result; it only spares
    each method parsing thousands of columns per fold.
    """
    from dataclasses import replace

    if max_genes is None:
        return train_c, test_c
    present = train_c.present_mask()
    data_tr, data_te = dict(train_c.data), dict(test_c.data)
    for mod, spec in train_c.modalities.items():
        table = train_c.data[mod]
        if spec.kind != "vector" or table.shape[1] <= 2 * max_genes:
            continue
        rows = table.loc[table.index.intersection(present.index[present[mod]])]
        var = rows.var(axis=0, skipna=True).fillna(0.0).to_numpy()
        keep = table.columns[np.sort(np.argsort(-var, kind="stable")[: 2 * max_genes])]
        data_tr[mod], data_te[mod] = table[keep], test_c.data[mod][keep]
    return replace(train_c, data=data_tr), replace(test_c, data=data_te)


def widest(cohort) -> str:
    """``rnaseq`` when the cohort has it, else its widest vector modality."""
    if "rnaseq" in cohort.modalities:
        return "rnaseq"
    vectors = [m for m, spec in cohort.modalities.items() if spec.kind == "vector"]
    return max(vectors or cohort.modality_names, key=lambda m: cohort.data[m].shape[1])


def masked_tests(test_c, modalities: list[str], rates: list[float], seed: int) -> dict:
    """Setting name -> test cohort: nothing hidden, then each modality at each rate."""
    tests = {"none": test_c}
    for j, name in enumerate(modalities):
        mod = widest(test_c) if name == "widest" else name  # the setting keeps the asked name
        for rate in rates:
            if rate > 0:
                s = seed * 7919 + 31 * j + int(round(rate * 100))
                tests[f"{name} {int(round(rate * 100))}%"] = hide_modalities(test_c, {mod: rate}, s)
    return tests


def experiment(task: dict):
    overrides = ["train.progress=false", "train.device=cpu", *task["overrides"]]
    overrides += ABLATIONS[task["method"]]
    return load_experiment(ROOT / task["config"], overrides)


def run_task(task: dict) -> dict:
    """Train one method on one training fold, score it on every masked test fold."""
    import torch

    from graphmed.metrics import harrell_c, survival_metrics
    from graphmed.train.baselines import make_baseline
    from graphmed.train.cv import fit_fold_model

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    t0 = time.time()
    train_c, test_c = splits_of(task)
    hide = task["hide"] or train_c.modality_names
    tests = masked_tests(test_c, hide, task["rates"], task["hide_seed"])
    risks: dict[str, dict] = {}  # method -> setting -> risk
    extra: dict = {}
    method = task["method"]
    if method in ABLATIONS:
        fm = fit_fold_model(train_c, experiment(task), task["repeat"], task["fold"])
        risks[task["key"]] = {k: fm.predict(c).risk for k, c in tests.items()}
        fit_c, val_c = (train_c.subset(ids) for ids in (fm.fit_ids, fm.val_ids))
        h = fm.history
        extra = {
            "best_epoch": h["best_epoch"],
            "epochs_run": h["epochs_run"],
            "fit_c": harrell_c(fit_c.time, fit_c.event, fm.predict(fit_c).risk),
            # the C-index of the kept weights on the validation part (the early-stopping
            # score itself is minus the validation loss under train.monitor=loss)
            "val_c": harrell_c(val_c.time, val_c.event, fm.predict(val_c).risk),
            "val_curve": [round(e["val_score"], 4) for e in h["history"]],
            "loss_curve": [round(e["train_loss"], 4) for e in h["history"]],
        }
    else:
        quick = task["quick"]
        per_modality = {"best_single": "coxnet", "rsf_single": "rsf"}
        names = (
            [f"{per_modality[method]}:{m}" for m in train_c.modality_names]
            if method in per_modality
            else [method]
        )
        inner = {}
        for name in names:
            opts = QUICK_BASELINE.get(name.split(":")[0], {}) if quick else {}
            model = make_baseline(
                name, seed=task["seed"], max_vector_features=task["max_genes"], **opts
            )
            model.fit(train_c)
            risks[name] = {k: model.predict_risk(c) for k, c in tests.items()}
            if method == "best_single":  # chosen on the training fold's inner CV, never the test
                mean = model.cv_scores_.mean(0)  # per alpha; NaN where the path failed
                inner[name] = float(np.nanmax(mean)) if np.isfinite(mean).any() else -np.inf
        if method == "best_single":
            chosen = max(inner, key=inner.get)
            risks["best_single"] = risks[chosen]
            extra = {"chosen": chosen, "inner_c": inner}
    results = {
        name: {
            k: survival_metrics(train_c.time, train_c.event, c.time, c.event, per[k])
            for k, c in tests.items()
        }
        for name, per in risks.items()
    }
    return {
        "cohort": task["cohort"],
        "split": task["split"],
        "method": task["key"],
        "spec": task["spec"],
        "seconds": round(time.time() - t0, 2),
        "n_train": train_c.n_patients,
        "n_test": test_c.n_patients,
        "results": results,
        "extra": extra,
    }


def _worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def make_tasks(args, root: Path) -> list[dict]:
    """One task per cohort x split x method, each with its result file and its spec."""
    tasks = []
    for cohort in args.cohorts:
        if args.inner:  # (outer fold of the first repeat, 0, inner fold)
            units = [(o, 0, i) for o in range(args.folds) for i in range(args.inner)]
        else:
            c = load_cohort(cohort, args.max_genes)
            units = [
                (None, r, f) for r, f, _, _ in make_folds(c, args.folds, args.repeats, args.seed)
            ]
        for o, r, f in units[: args.limit or None]:
            split = f"o{o}i{f}" if args.inner else f"r{r}f{f}"
            for method in args.methods:
                tasks.append(_task(args, root, cohort, o, r, f, split, method))
    return tasks


def _task(args, root: Path, cohort: str, outer, repeat: int, fold: int, split: str, method: str):
    key = f"{method}@{args.tag}" if method in ABLATIONS else method
    # the same test patients are hidden for every method of a split
    hide_seed = args.seed * 1009 + 101 * repeat + fold + (1000 * (outer + 1) if args.inner else 0)
    task = {
        "cohort": cohort,
        "outer": outer,
        "inner": args.inner,
        "repeat": repeat,
        "fold": fold,
        "folds": args.folds,
        "repeats": args.repeats,
        "seed": args.seed,
        "split": split,
        "method": method,
        "key": key,
        "rates": args.rates,
        "hide": args.hide,
        "hide_seed": hide_seed,
        "max_genes": args.max_genes,
        "quick": args.quick,
        "config": str(args.config),
        "overrides": args.overrides,
        "path": str(root / cohort / split / f"{key.replace(':', '_')}.json"),
    }
    spec = {k: task[k] for k in ("rates", "hide", "max_genes", "quick", "hide_seed")}
    if method in ABLATIONS:
        spec["config"] = experiment_to_dict(experiment(task))
    task["spec"] = json.loads(json.dumps(spec))  # as it reads back from JSON
    return task


BAG_OPTIONS = {
    "graph": ("max_instances", "bag_pooling", "standardize_bags"),
    "model": ("bag_tokens",),
}


ADDED_OPTIONS = {
    "train": {
        "monitor": "c_index",
        "linear_blend": False,
        "ensemble": 1,
        "compile": False,
        "compile_backend": "inductor",
        "cuda_graphs": False,
    },
    "graph": {"max_tokens": None, "screen_features": None},
    "model": {
        "linear_path": False,
        "linear_refit": False,
        "linear_summaries": False,
        "graph_conv": "gatv2",
    },
}
"""Options added after results were first saved, with the value that gives the
behaviour of the code before them (a result saved without the option was made so)."""


def _comparable(spec: dict, task: dict) -> dict:
    """``spec`` as its result was made: options added to the config since then take
    the value the older code behaved as (``ADDED_OPTIONS``), and on a cohort without
    bags the options that cannot change a result are left out."""
    if "config" not in spec:
        return spec
    config = {k: {**ADDED_OPTIONS.get(k, {}), **v} for k, v in spec["config"].items()}
    kinds = {m.kind for m in load_cohort(task["cohort"], task["max_genes"]).modalities.values()}
    if "bag" in kinds:
        return {**spec, "config": config}
    for section, keys in BAG_OPTIONS.items():
        for key in keys:
            config[section].pop(key, None)
    return {**spec, "config": config}


def run_all(tasks: list[dict], jobs: int, log=print) -> int:
    """Run the tasks not yet done; return how many ran."""
    todo = []
    for task in tasks:
        path = Path(task["path"])
        if path.exists():
            old = json.loads(path.read_text())["spec"]
            if _comparable(old, task) != _comparable(task["spec"], task):
                raise SystemExit(
                    f"{path} was made with other settings (config, rates, genes); "
                    "use another --out or --tag, or delete it"
                )
            continue
        todo.append(task)
    log(f"{len(tasks) - len(todo)} of {len(tasks)} results already done; running {len(todo)}")
    t0 = time.time()

    def done(i: int, result: dict, task: dict) -> None:
        write_json(task["path"], result)
        left = (time.time() - t0) / i * (len(todo) - i)
        cs = "  ".join(f"{k} {v['none']['c_index']:.3f}" for k, v in result["results"].items())
        log(
            f"[{i}/{len(todo)}] {task['cohort']} {task['split']} {task['key']}: C {cs}, "
            f"{result['seconds']:.0f} s (about {left / 60:.0f} min left)"
        )

    if jobs <= 1:
        _worker_init()
        for i, task in enumerate(todo, 1):
            done(i, run_task(task), task)
        return len(todo)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
        futures = {pool.submit(run_task, t): t for t in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            done(i, fut.result(), futures[fut])
    return len(todo)


# ------------------------------------------------------------------ the report
def collect(root: Path, cohorts: list[str], metric: str = "c_index") -> dict:
    """Cohort -> method -> setting -> split -> ``metric``, plus the per-fold extras."""
    scores: dict = {}
    extras: dict = {}
    done: list = []  # [cohort, split, result file stem] of every result read
    for cohort in cohorts:
        for path in sorted((root / cohort).glob("*/*.json")):
            r = json.loads(path.read_text())
            for name, per in r["results"].items():
                for setting, m in per.items():
                    if metric not in m:  # results made before the metric existed
                        continue
                    cell = scores.setdefault(cohort, {}).setdefault(name, {})
                    cell.setdefault(setting, {})[r["split"]] = m[metric]
            done.append([cohort, r["split"], Path(path).stem])
            if r["extra"]:
                extra = {**r["extra"], "split": r["split"]}
                extras.setdefault(cohort, {}).setdefault(r["method"], []).append(extra)
    return {"scores": scores, "extras": extras, "done": done}


def stored_folds(collected: dict, uno: dict) -> dict:
    """The per-fold scores and extras, as kept in ``results.json`` (curves left out)."""
    drop = {"val_curve", "loss_curve"}
    extras = {
        cohort: {
            name: [{k: v for k, v in e.items() if k not in drop} for e in per]
            for name, per in methods.items()
        }
        for cohort, methods in collected["extras"].items()
    }
    return {
        "c_index": collected["scores"],
        "uno_c": uno["scores"],
        "extras": extras,
        "done": collected["done"],
    }


def read_stored(path: Path) -> dict:
    """The per-fold results kept in an earlier ``results.json`` (``"folds"``)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--merge {path}: cannot read it as JSON ({err})") from None
    if "folds" not in saved:
        raise SystemExit(
            f"--merge {path}: it holds no per-fold results (written before results.json "
            "kept them); rerun its methods, or rebuild it from its results folder"
        )
    return saved


def stored_done(saved: dict) -> set[tuple[str, str, str]]:
    """(cohort, split, result file stem) of every result kept in a stored results.json.

    Files written before the list was kept give it from the scores: there a method's
    result file is named after its key, as every graphmed method's is.
    """
    folds = saved["folds"]
    if "done" in folds:
        return {tuple(d) for d in folds["done"]}
    return {
        (cohort, split, name.replace(":", "_"))
        for cohort, methods in folds["c_index"].items()
        for name, cells in methods.items()
        for per in cells.values()
        for split in per
    }


def _with_splits(extras: list[dict], cells: dict) -> list[dict]:
    """Extras kept before they named their split: in the order of the sorted splits."""
    if all("split" in e for e in extras):
        return extras
    splits = sorted({s for per in cells.values() for s in per})
    if len(splits) != len(extras):
        return extras
    return [{**e, "split": s} for e, s in zip(extras, splits)]


def merge_stored(path: Path, collected: dict, uno: dict, cohorts: list[str]) -> list[str]:
    """Add the per-fold results kept in an earlier ``results.json``; return its commands.

    A fold of a cohort x method in the results folder keeps the folder's result: the
    stored ones only fill in the folds the folder lacks.
    """
    saved = read_stored(path)
    folds = saved["folds"]
    for cohort in cohorts:
        for target, key in ((collected["scores"], "c_index"), (uno["scores"], "uno_c")):
            for name, cells in folds[key].get(cohort, {}).items():
                mine = target.setdefault(cohort, {}).setdefault(name, {})
                for setting, per in cells.items():
                    have = mine.setdefault(setting, {})
                    for split, value in per.items():
                        have.setdefault(split, value)
        for name, extras in folds["extras"].get(cohort, {}).items():
            cells = folds["c_index"].get(cohort, {}).get(name, {})
            mine = collected["extras"].setdefault(cohort, {}).setdefault(name, [])
            have = {e.get("split") for e in mine}
            mine += [e for e in _with_splits(extras, cells) if e.get("split") not in have]
    done = {tuple(d) for d in collected["done"]}
    collected["done"] += [list(d) for d in sorted(stored_done(saved) - done) if d[0] in cohorts]
    return list(saved.get("commands", []))


def paired(collected: dict, reference: str) -> dict:
    """Method -> setting -> mean of C(reference) - C(method) over every cohort x fold."""
    scores = collected["scores"]
    out: dict = {}
    names = {m for per in scores.values() for m in per} - {reference}
    for name in _method_order(names):
        if not all(name in per and reference in per for per in scores.values()):
            continue
        for setting in _setting_order({s for per in scores.values() for s in per[name]}):
            diffs = np.array(
                [
                    per[reference][setting][split] - c
                    for per in scores.values()
                    for split, c in per[name].get(setting, {}).items()
                    if split in per[reference].get(setting, {})
                ]
            )
            if diffs.size:
                out.setdefault(name, {})[setting] = {
                    "diff": float(diffs.mean()),
                    "n": int(diffs.size),
                    "better": int((diffs > 0).sum()),
                    "worse": int((diffs < 0).sum()),
                }
    return out


def is_baseline(name: str) -> bool:
    return name.split(":")[0] in {*BASELINES, "rsf"}


def versus_best(collected: dict, reference: str, setting: str = "none") -> dict:
    """Per cohort: ``reference`` against the best baseline and the MLP, paired by fold.

    The best baseline of a cohort is the baseline with the highest mean C over
    that cohort's test folds: picked on the test folds, so it is an optimistic
    bar that no single pre-chosen baseline would reach.
    """
    out: dict = {}
    for cohort, per in collected["scores"].items():
        if reference not in per or setting not in per[reference]:
            continue
        ref = per[reference][setting]
        means = {
            m: float(np.mean([v[split] for split in ref if split in v]))
            for m, cells in per.items()
            if is_baseline(m) and (v := cells.get(setting)) and set(ref) <= set(v)
        }
        if not means:
            continue
        best = max(means, key=means.get)
        row = {"reference": float(np.mean(list(ref.values()))), "n": len(ref), "best": best}
        for label, name in (("best", best), ("mlp", "mlp_zero")):
            if name not in means:
                continue
            d = np.array([ref[k] - per[name][setting][k] for k in ref])
            row[label] = {
                "name": name,
                "mean": means[name],
                "diff": float(d.mean()),
                "better": int((d > 0).sum()),
                "worse": int((d < 0).sum()),
            }
        out[cohort] = row
    return out


def _versus_lines(vs: dict, reference: str) -> list[str]:
    if not vs:
        return []
    lines = [
        "",
        f"{reference} against the best baseline of each cohort (the baseline with the highest "
        "mean C on that cohort's test folds, an optimistic bar) and against the early-fusion "
        "MLP, nothing hidden; paired differences over the same folds, with folds better : worse:",
        "",
        _row("cohort", reference, "best baseline", "its C", "difference", "mlp_zero", "difference"),
        _rule(7),
    ]
    for cohort, r in vs.items():
        b, m = r.get("best", {}), r.get("mlp", {})
        cells = [f"{r['reference']:.3f}", b.get("name", ""), f"{b.get('mean', np.nan):.3f}"]
        cells.append(f"{b['diff']:+.3f} ({b['better']}:{b['worse']})" if b else "")
        cells.append(f"{m['mean']:.3f}" if m else "")
        cells.append(f"{m['diff']:+.3f} ({m['better']}:{m['worse']})" if m else "")
        lines.append(_row(cohort, *cells))
    ref = np.mean([r["reference"] for r in vs.values()])
    best = np.mean([r["best"]["mean"] for r in vs.values() if "best" in r])
    wins = sum(r["mlp"]["diff"] > 0 for r in vs.values() if "mlp" in r)
    lines += [
        "",
        f"Mean over these {len(vs)} cohorts: {reference} {ref:.3f}, best baseline {best:.3f} "
        f"({ref - best:+.3f}); ahead of mlp_zero in {wins} of "
        f"{sum('mlp' in r for r in vs.values())}.",
    ]
    return lines


def _uno_lines(uno: dict) -> list[str]:
    """Uno's C (truncated at tau, see graphmed.metrics) with nothing hidden."""
    scores = uno["scores"]
    if not scores:
        return []
    lines = [
        "",
        "Uno's C-index (IPCW, truncated at tau; nothing hidden), mean ± sd over folds:",
        "",
        _row("cohort", "method", "folds", "Uno's C"),
        _rule(4),
    ]
    for cohort, per in scores.items():
        for name in _method_order(per):
            v = list(per[name].get("none", {}).values())
            if v:
                sd = np.std(v, ddof=1) if len(v) > 1 else np.nan
                lines.append(_row(cohort, name, len(v), f"{np.mean(v):.3f} ± {sd:.3f}"))
    return lines


def _method_order(names) -> list[str]:
    def key(name: str):
        base, _, tag = name.partition("@")
        if base in ABLATIONS:
            return (0, tag != "default", tag, list(ABLATIONS).index(base))
        rank = BASELINES.index(base) if base in BASELINES else len(BASELINES)
        return (1, False, "", rank, name)

    return sorted(names, key=key)


def _setting_order(settings) -> list[str]:
    # nothing hidden, then non-clinical modalities, then clinical, each by rate
    def key(s: str):
        if s == "none":
            return (0, "", 0)
        mod, rate = s.rsplit(" ", 1)
        return (1 + (mod == "clinical"), mod, int(rate.rstrip("%")))

    return sorted(settings, key=key)


def _stats(values: list[float]) -> dict:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def summarise(collected: dict) -> dict:
    """Mean and sd per cohort x method x setting; mean over cohorts and average ranks."""
    from scipy.stats import rankdata

    scores = collected["scores"]
    cohorts = list(scores)
    table = {
        c: {m: {s: _stats(list(v.values())) for s, v in per.items()} for m, per in ms.items()}
        for c, ms in scores.items()
    }
    settings = _setting_order({s for ms in table.values() for per in ms.values() for s in per})
    every = {m for ms in table.values() for m in ms}
    common = [m for m in _method_order(every) if all(m in table[c] for c in cohorts)]
    ranks: dict = {m: [] for m in common}
    for c in cohorts:
        for s in settings:
            have = [m for m in common if s in table[c][m]]
            means = [table[c][m][s]["mean"] for m in have]
            for m, rank in zip(have, rankdata(-np.asarray(means))):  # ties share a rank
                ranks[m].append(float(rank))
    overall = {}
    for m in common:
        row = {
            s: float(np.mean([table[c][m][s]["mean"] for c in cohorts if s in table[c][m]]))
            for s in settings
        }
        row["all_settings"] = float(np.mean(list(row.values())))
        row["avg_rank"] = float(np.mean(ranks[m])) if ranks[m] else float("nan")
        overall[m] = row
    return {"cohorts": table, "settings": settings, "overall": overall}


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _rule(n: int) -> str:
    return "|---" * n + "|"


def markdown(summary: dict, collected: dict, n_patients: dict, reference: str) -> str:
    """The results table, the summary over cohorts, paired differences, diagnostics."""
    settings = summary["settings"]
    names = ["nothing hidden" if s == "none" else f"{s} hidden" for s in settings]
    lines = [_row("cohort (patients)", "method", "folds", *names), _rule(3 + len(settings))]
    for cohort, methods in summary["cohorts"].items():
        best = {s: max(m[s]["mean"] for m in methods.values() if s in m) for s in settings}
        for name in _method_order(methods):
            per = methods[name]
            cells = []
            for s in settings:
                text = f"{per[s]['mean']:.3f} ± {per[s]['sd']:.3f}" if s in per else ""
                cells.append(f"**{text}**" if s in per and per[s]["mean"] == best[s] else text)
            folds = max(v["n"] for v in per.values())
            lines.append(_row(f"{cohort} ({n_patients.get(cohort, '?')})", name, folds, *cells))
    lines += [
        "",
        "Mean over cohorts of the per-cohort mean C-index (and its mean over the settings), "
        "and the average rank of each method over all cohort x setting cells (1 = best):",
        "",
        _row("method", *settings, "mean", "average rank"),
        _rule(3 + len(settings)),
    ]
    overall = summary["overall"]
    for name in sorted(overall, key=lambda m: overall[m]["avg_rank"]):
        row = overall[name]
        cells = [f"{row[s]:.3f}" for s in [*settings, "all_settings"]]
        lines.append(_row(name, *cells, f"{row['avg_rank']:.1f}"))
    pairs = paired(collected, reference)
    if pairs:
        lines += [
            "",
            f"Paired on the same folds: mean over every cohort x fold of C({reference}) minus "
            "C(method) (positive: the reference is better), and the number of folds in which "
            "the reference is better : worse (ties left out):",
            "",
            _row("method", *settings),
            _rule(1 + len(settings)),
        ]
        for name, per in pairs.items():
            cells = [
                f"{per[s]['diff']:+.3f} ({per[s]['better']}:{per[s]['worse']})" if s in per else ""
                for s in settings
            ]
            lines.append(_row(name, *cells))
    lines += _versus_lines(versus_best(collected, reference), reference)
    lines += _diagnostics_lines(summary, collected)
    return "\n".join(lines) + "\n"


def _diagnostics_lines(summary: dict, collected: dict) -> list[str]:
    lines = []
    diag = diagnostics(collected)
    if diag:
        lines += [
            "",
            "graphmed inside the training folds (mean over folds): epoch kept by early "
            "stopping, epochs run, C-index on the fitting part and on the validation part of "
            "the training fold, and on the test fold (nothing hidden):",
            "",
            _row("cohort", "method", "best epoch", "epochs run", "fit C", "val C", "test C"),
            _rule(7),
        ]
        for cohort, per in diag.items():
            for name in _method_order(per):
                d = per[name]
                test = summary["cohorts"][cohort][name]["none"]["mean"]
                numbers = [f"{d[k]:.1f}" for k in ("best_epoch", "epochs_run")]
                numbers += [f"{v:.3f}" for v in (d["fit_c"], d["val_c"], test)]
                lines.append(_row(cohort, name, *numbers))
    chosen = []
    for cohort, per in collected["extras"].items():
        picks = [e["chosen"] for e in per.get("best_single", [])]
        if picks:
            counts = ", ".join(f"{m} {picks.count(m)}" for m in sorted(set(picks)))
            chosen.append(f"{cohort}: {counts}")
    if chosen:
        lines += [
            "",
            "best_single: the modality chosen by inner CV on each training fold (number of "
            "folds): " + "; ".join(chosen),
        ]
    return lines


def diagnostics(collected: dict) -> dict:
    out: dict = {}
    for cohort, per in collected["extras"].items():
        for name, extras in per.items():
            if "fit_c" in extras[0]:
                keys = ("best_epoch", "epochs_run", "fit_c", "val_c")
                out.setdefault(cohort, {})[name] = {
                    k: float(np.mean([e[k] for e in extras])) for k in keys
                }
    return out


def plot(summary: dict, path: Path, only: list[str] | None = None) -> list[str]:
    """C-index against missing rate: a column per cohort (and the mean), a row per family.

    ``only`` limits the lines to those methods (all by default). Returns the
    methods drawn, in legend order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dict(summary["cohorts"])
    panels["mean over cohorts"] = {
        m: {s: {"mean": row[s]} for s in summary["settings"]}
        for m, row in summary["overall"].items()
    }
    if only:
        panels = {t: {m: v for m, v in per.items() if m in only} for t, per in panels.items()}
    families = list(dict.fromkeys(s.rsplit(" ", 1)[0] for s in summary["settings"] if s != "none"))
    methods = _method_order({m for p in panels.values() for m in p})
    palette = plt.get_cmap("tab20").colors
    colours = dict(zip(methods, palette[::2] + palette[1::2]))
    rows, cols = max(1, len(families)), len(panels)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.1 * rows), squeeze=False)
    for col, (title, per) in enumerate(panels.items()):
        for row, fam in enumerate(families):
            ax = axes[row, col]
            for name in _method_order(per):
                stats = per[name]
                pts = [(0, stats["none"]["mean"])] if "none" in stats else []
                pts += sorted(
                    (int(s.rsplit(" ", 1)[1].rstrip("%")), v["mean"])
                    for s, v in stats.items()
                    if s.rsplit(" ", 1)[0] == fam
                )
                main = name.split("@")[0] == "graphmed"
                ax.plot(*zip(*pts), marker="o", ms=3, color=colours[name], lw=2.4 if main else 1.1)
            ax.set_title(f"{title}\n{fam} hidden", fontsize=9)
            ax.set_xticks([0, 30, 60])
            ax.grid(alpha=0.3)
            if row == len(families) - 1:
                ax.set_xlabel("% of test patients hidden", fontsize=8)
            if col == 0:
                ax.set_ylabel("Harrell's C-index", fontsize=8)
    handles = [plt.Line2D([], [], color=colours[m], lw=2) for m in methods]
    fig.legend(handles, methods, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return methods


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "scikit-survival", "scikit-learn", "numpy", "lifelines", "SurvSet"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ----------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cohorts", help=f"comma-separated recipes (default: {','.join(COHORTS)})")
    p.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)} (default: all)")
    p.add_argument("--folds", type=int, help="K of the outer K-fold CV (default 5)")
    p.add_argument("--repeats", type=int, help="repeats of the outer CV (default 3)")
    p.add_argument("--rates", default="0,0.3,0.6", help="test-time missing rates")
    p.add_argument("--hide", help="modalities to hide (default: every modality)")
    p.add_argument("--config", default="configs/default.yaml", help="graphmed's config")
    p.add_argument("--tag", help="name of the config in the results (default: its file stem)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a.b=value")
    p.add_argument("--max-genes", type=int, default=200, help="cap on vector modalities")
    p.add_argument("--plot-methods", help="comma-separated methods drawn in the PNG (default: all)")
    p.add_argument("--reference", help="method for paired differences (default: graphmed@TAG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    p.add_argument("--limit", type=int, help="only the first N splits of each cohort (timing)")
    p.add_argument("--inner", type=int, help="K-fold CV inside each outer training fold")
    p.add_argument("--out", default="runs/bench_quality", help="results folder")
    p.add_argument("--md", help="markdown table (default: <out>/results.md)")
    p.add_argument("--json", help="compact aggregated results (default: <out>/results.json)")
    p.add_argument("--png", help="figure (default: <out>/bench_quality.png)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    p.add_argument(
        "--merge",
        action="append",
        default=[],
        help="an earlier results.json whose per-fold results join the report, and whose "
        "folds a run skips (repeatable)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny run for the smoke test")
    args = p.parse_args(argv)
    quick = args.quick
    args.cohorts = _list(args.cohorts) or (["breast_cancer"] if quick else COHORTS)
    args.methods = _list(args.methods) or (
        ["graphmed", "coxnet", "best_single"] if quick else METHODS
    )
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}; expected one of {', '.join(METHODS)}")
    args.folds = args.folds or (2 if quick else 5)
    args.repeats = args.repeats or (1 if quick else 3)
    args.rates = [float(r) for r in _list(args.rates)]
    args.hide = _list(args.hide)
    args.tag = args.tag or Path(args.config).stem
    if quick:
        args.overrides = QUICK_MODEL + args.overrides
    return args


def _list(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def main(argv=None, log=print) -> dict:
    args = parse_args(argv)
    root = Path(args.out) / ("inner" if args.inner else "")
    command = "python tools/bench_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    ran = 0
    if not args.report_only:
        tasks = make_tasks(args, root)
        stored = set().union(*(stored_done(read_stored(p)) for p in args.merge))
        tasks = [t for t in tasks if (t["cohort"], t["split"], Path(t["path"]).stem) not in stored]
        ran = run_all(tasks, args.jobs, log)
        if ran:  # the commands that produced results, for the report
            root.mkdir(parents=True, exist_ok=True)
            with open(root / "commands.log", "a") as fh:
                stamp = time.strftime("%Y-%m-%d %H:%M")
                fh.write(f"{stamp}  {time.time() - t0:.0f} s  {ran} results  {command}\n")
    collected = collect(root, args.cohorts)
    uno = collect(root, args.cohorts, "uno_c")
    commands = []
    for path in args.merge:
        commands += merge_stored(path, collected, uno, args.cohorts)
    summary = summarise(collected)
    sizes = {c: load_cohort(c, args.max_genes).n_patients for c in summary["cohorts"]}
    reference = args.reference or f"graphmed@{args.tag}"
    table = markdown(summary, collected, sizes, reference)
    table += "\n".join(_uno_lines(uno)) + "\n"
    if (root / "commands.log").exists():
        commands += (root / "commands.log").read_text().splitlines()
    commands = sorted(dict.fromkeys(commands))  # each once, by time (each starts with it)
    info = {"versions": versions(), "commands": commands}
    header = "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    header += "\n\nCommands (when, wall time, results run):\n\n"
    header += "".join(f"    {c}\n" for c in info["commands"])
    write_text(args.md or root / "results.md", header + "\n" + table)
    diag = diagnostics(collected)
    pairs = {"reference": reference, "methods": paired(collected, reference)}
    pairs["versus_best"] = versus_best(collected, reference)
    write_json(
        args.json or root / "results.json",
        {
            **info,
            **summary,
            "paired": pairs,
            "diagnostics": diag,
            "folds": stored_folds(collected, uno),
        },
    )
    only = args.plot_methods.split(",") if args.plot_methods else None
    drawn = plot(summary, Path(args.png or root / "bench_quality.png"), only)
    log(table)
    return {"ran": ran, "summary": summary, "plotted": drawn, "seconds": time.time() - t0}


if __name__ == "__main__":
    main()
