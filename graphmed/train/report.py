"""Reports drawn from the out-of-fold predictions of a cross-validation run.

The input is the ``oof_predictions.csv`` table a run writes (or the same
frame in memory): ``patient_id, repeat, fold, time, event, risk`` and,
when the model gives them, ``surv_<t>``, ``proba_<class>``, ``label``,
``att_mod_<modality>`` and ``att_path_<meta-path>`` columns.

Honest risk groups. Out-of-fold risks come from a different model in each
fold, and their scales differ between folds (a Cox risk is defined up to a
constant). One cut over the pooled risks would then sort whole folds into
one group. :func:`assign_risk_groups` therefore cuts *within* each
(repeat, fold) at that fold's own quantiles, as if each fold's model had
chosen its threshold on its own test patients, and only then pools the
groups. Predicted survival probabilities are on an absolute scale, so
calibration bins pool the folds directly.

Every report uses one repeat (``repeat=0`` by default) so that each patient
counts once; ``repeat=None`` pools all repeats. Figures are drawn on
:class:`matplotlib.figure.Figure` objects (no pyplot state, nothing shown)
and written atomically.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._atomic import atomic_path, write_json
from ..errors import GraphMedError

GROUP_NAMES = {"median": ("low", "high"), "tertiles": ("low", "mid", "high")}
_QUANTILES = {"median": (0.5,), "tertiles": (1 / 3, 2 / 3)}
_COLORS = {"low": "tab:green", "mid": "tab:orange", "high": "tab:red"}
_ATTENTION = (("att_mod_", "modality"), ("att_path_", "meta-path"))
_CAL_KEYS = ("predicted", "observed", "observed_lower", "observed_upper")

Method = Literal["median", "tertiles"]


def risk_groups(
    risk: np.ndarray, method: Method = "median", cutpoints: list[float] | None = None
) -> np.ndarray:
    """Label each risk ``"low"``/``"high"`` (median) or ``"low"``/``"mid"``/``"high"`` (tertiles).

    Args:
        risk: shape ``(n,)``, higher means worse; no NaN.
        method: ``"median"`` (two groups) or ``"tertiles"`` (three).
        cutpoints: fixed thresholds instead of the quantiles of ``risk``
            (one for median, two for tertiles). A risk equal to a cutpoint
            goes to the lower group.

    Returns:
        Object array of shape ``(n,)`` with the group names.
    """
    if method not in GROUP_NAMES:
        raise GraphMedError(f"method must be 'median' or 'tertiles', but got {method!r}")
    risk = np.asarray(risk, dtype=float).ravel()
    if np.isnan(risk).any():
        raise GraphMedError(
            f"risk has {int(np.isnan(risk).sum())} NaN values; drop those patients first "
            "(pd.isnull(risk) finds them)"
        )
    names = GROUP_NAMES[method]
    if cutpoints is None:
        cuts = np.quantile(risk, _QUANTILES[method]) if risk.size else np.zeros(len(names) - 1)
    else:
        cuts = np.sort(np.asarray(cutpoints, dtype=float).ravel())
        if cuts.size != len(names) - 1:
            raise GraphMedError(
                f"method {method!r} expects {len(names) - 1} cutpoint(s), but got {cuts.size}"
            )
    return np.asarray(names, dtype=object)[np.searchsorted(cuts, risk, side="left")]


def assign_risk_groups(
    oof: pd.DataFrame, method: Method = "median", by_fold: bool = True
) -> pd.Series:
    """Risk group of every row of ``oof``, cut within each (repeat, fold) when ``by_fold``.

    With ``by_fold=False`` one cut is taken over all rows, which is only fair
    when every fold's risks share one scale.
    """
    _require(oof, ["risk"], "risk groups")
    if not by_fold:
        return pd.Series(risk_groups(oof["risk"].to_numpy(), method), index=oof.index)
    keys = [k for k in ("repeat", "fold") if k in oof.columns]
    if "fold" not in keys:
        raise GraphMedError(
            "grouping within folds needs a 'fold' column, but the table has none; "
            "pass by_fold=False if all risks come from one model"
        )
    groups = pd.Series(index=oof.index, dtype=object)
    for _, part in oof.groupby(keys, sort=False):
        groups.loc[part.index] = risk_groups(part["risk"].to_numpy(), method)
    return groups


def km_by_risk_group(
    oof: pd.DataFrame,
    path: str | os.PathLike,
    method: Method = "median",
    by_fold: bool = True,
    repeat: int | None = 0,
) -> dict[str, Any]:
    """Plot Kaplan-Meier curves per risk group and test them with the log-rank test.

    With ``by_fold`` (the default) groups are cut within each (repeat, fold)
    at that fold's own quantiles, since out-of-fold risks from different
    folds are on different scales, and then pooled (see
    :func:`assign_risk_groups`). Writes a PNG to ``path`` with 95 % confidence bands and
    at-risk counts.

    Returns:
        ``{"p_value", "test_statistic", "groups": {name: n}, "events": {name: n},
        "median_survival": {name: time or None}, "method", "by_fold", "repeat", "n"}``;
        ``p_value`` is None when fewer than two groups are non-empty.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import multivariate_logrank_test

    df = _one_repeat(_require(oof, ["time", "event", "risk"], "the Kaplan-Meier plot"), repeat)
    df = _complete(df, ["time", "event", "risk"], "the Kaplan-Meier plot")
    if df.empty:
        raise GraphMedError(
            "no rows with a time, event and risk to plot (all have a missing value)"
        )
    groups = assign_risk_groups(df, method, by_fold).to_numpy()
    time, event = df["time"].to_numpy(float), df["event"].to_numpy(int)
    present = [g for g in GROUP_NAMES[method] if (groups == g).any()]
    result: dict[str, Any] = {"p_value": None, "test_statistic": None}
    if len(present) > 1:
        test = multivariate_logrank_test(time, groups, event)
        result = {"p_value": float(test.p_value), "test_statistic": float(test.test_statistic)}
    result["groups"] = {g: int((groups == g).sum()) for g in present}
    result["events"] = {g: int(event[groups == g].sum()) for g in present}
    result.update(method=method, by_fold=by_fold, repeat=repeat, n=len(df))

    fig = _figure((7.5, 5.5))
    ax = fig.add_subplot()
    fitters, medians = [], {}
    for g in reversed(present):  # high risk first in the legend
        mask = groups == g
        kmf = KaplanMeierFitter(label=f"{g} risk").fit(time[mask], event[mask])
        label = f"{g} risk (n={mask.sum()}, {event[mask].sum()} events)"
        kmf.plot_survival_function(ax=ax, ci_show=True, color=_COLORS[g], label=label)
        fitters.append(kmf)
        med = float(kmf.median_survival_time_)
        medians[g] = med if np.isfinite(med) else None
    result["median_survival"] = {g: medians[g] for g in present}
    ax.set(xlabel="time", ylabel="survival probability", ylim=(0, 1.02))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    how = "within each fold" if by_fold else "over all folds"
    split = "median split" if method == "median" else "tertiles"
    ax.set_title(
        f"Kaplan-Meier by predicted risk ({split} {how}, {_repeat_text(repeat)})\n"
        f"log-rank {_format_p(result['p_value'])}, n = {len(df)}"
    )
    add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
    _save(fig, path)
    return result


def calibration_plot(
    oof: pd.DataFrame,
    path: str | os.PathLike,
    horizon: float | None = None,
    n_bins: int = 5,
    repeat: int | None = 0,
) -> dict[str, Any]:
    """Plot predicted against Kaplan-Meier observed survival at one horizon.

    Patients are cut into ``n_bins`` quantile bins of predicted survival at
    ``horizon`` (default: the ``surv_<t>`` column nearest the median event
    time). Per bin, the mean prediction is set against the Kaplan-Meier
    estimate at ``horizon`` with its 95 % interval; a bin whose follow-up
    ends before ``horizon`` (KM not defined there) has ``observed`` None.

    Returns:
        ``{"horizon", "column", "bins": [{"bin", "n", "predicted", "observed",
        "observed_lower", "observed_upper", "predicted_min", "predicted_max"}],
        "calibration_error"}``; ``calibration_error`` is the unweighted mean of
        ``|predicted - observed|`` over bins with an observed value.
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise GraphMedError(f"n_bins must be a positive integer, but got {n_bins!r}")
    surv = _surv_columns(oof)
    if not surv:
        raise GraphMedError(
            "the calibration plot needs predicted survival columns named surv_<t> "
            "(e.g. surv_365.0), but the table has none; they are written by survival "
            "heads that predict a survival curve"
        )
    df = _one_repeat(_require(oof, ["time", "event"], "the calibration plot"), repeat)
    times = np.array(sorted(surv))
    if horizon is None:
        ev = df.loc[df["event"] == 1, "time"]
        target = float((ev if len(ev) else df["time"]).median())
        horizon = float(times[np.argmin(np.abs(times - target))])
    elif not np.isclose(times, horizon, rtol=1e-9, atol=1e-9).any():
        raise GraphMedError(
            f"no surv_<t> column at horizon {horizon}; available horizons: {times.tolist()}"
        )
    column = surv[float(times[np.isclose(times, horizon, rtol=1e-9, atol=1e-9)][0])]
    rows = _calibration_bins(
        _complete(df, ["time", "event", column], "calibration"), column, horizon, n_bins
    )
    ok = [r for r in rows if r["observed"] is not None]
    error = float(np.mean([abs(r["predicted"] - r["observed"]) for r in ok])) if ok else None

    fig = _figure((5.5, 5.5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    if ok:
        x, y, lo, hi = (np.array([r[k] for r in ok], dtype=float) for k in _CAL_KEYS)
        yerr = np.clip(np.vstack([y - lo, hi - y]), 0, None)
        ax.errorbar(x, y, yerr=yerr, fmt="o-", capsize=4, label="bins (KM, 95% CI)")
        for r in ok:
            xy = (r["predicted"], r["observed"])
            ax.annotate(f"n={r['n']}", xy, textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.set_xlabel(f"predicted survival at t = {horizon:g}")
    ax.set_ylabel(f"observed (Kaplan-Meier) survival at t = {horizon:g}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    shown = "n/a" if error is None else f"{error:.3f}"
    ax.set_title(
        f"Calibration at t = {horizon:g} ({_repeat_text(repeat)}, {len(rows)} bins)\n"
        f"mean |predicted - observed| = {shown}"
    )
    _save(fig, path)
    return dict(horizon=horizon, column=column, bins=rows, calibration_error=error, repeat=repeat)


def _calibration_bins(df: pd.DataFrame, column: str, horizon: float, n_bins: int) -> list[dict]:
    """Quantile bins of predicted survival with each bin's Kaplan-Meier estimate at ``horizon``."""
    from lifelines import KaplanMeierFitter

    pred = df[column].to_numpy(float)
    time, event = df["time"].to_numpy(float), df["event"].to_numpy(int)
    bins = pd.qcut(pred, n_bins, labels=False, duplicates="drop") if pred.size else pred
    bins = np.nan_to_num(bins, nan=0.0)  # qcut gives NaN when every prediction is equal
    rows = []
    for b in np.unique(bins):
        mask = bins == b
        kmf = KaplanMeierFitter().fit(time[mask], event[mask])
        obs = float(kmf.survival_function_.loc[:horizon].iloc[-1, 0])
        lo, hi = kmf.confidence_interval_survival_function_.loc[:horizon].iloc[-1]
        # Beyond the bin's last follow-up the KM curve is not an estimate.
        defined = time[mask].max() >= horizon or obs == 0.0
        rows.append(
            {
                "bin": int(b),
                "n": int(mask.sum()),
                "predicted": float(pred[mask].mean()),
                "observed": obs if defined else None,
                "observed_lower": float(lo) if defined else None,
                "observed_upper": float(hi) if defined else None,
                "predicted_min": float(pred[mask].min()),
                "predicted_max": float(pred[mask].max()),
            }
        )
    return rows


def attention_summary(oof: pd.DataFrame, repeat: int | None = 0) -> pd.DataFrame:
    """Mean and sd of each ``att_mod_*`` and ``att_path_*`` column over patients.

    Returns:
        One row per column: ``kind`` ("modality" or "meta-path"), ``name``,
        ``column``, ``mean``, ``sd``, ``n`` (non-missing values). Modalities
        come first, then meta-paths (the two are normalised separately, so
        are not ranked against each other); within each, by mean descending.
        Empty (same columns) when the table has no attention columns.
    """
    found = [(p, k, c) for p, k in _ATTENTION for c in oof.columns if str(c).startswith(p)]
    if not found:
        return pd.DataFrame(columns=["kind", "name", "column", "mean", "sd", "n"])
    values = _one_repeat(oof, repeat)[[c for _, _, c in found]].apply(
        pd.to_numeric, errors="coerce"
    )
    out = pd.DataFrame(
        {
            "kind": [k for _, k, _ in found],
            "name": [c[len(p) :] for p, _, c in found],
            "column": [c for _, _, c in found],
            "mean": values.mean().to_numpy(),
            "sd": values.std().to_numpy(),
            "n": values.notna().sum().to_numpy(),
        }
    )
    # Modality and meta-path weights are normalised separately: rank within each kind.
    out["_kind"] = [[k for _, k in _ATTENTION].index(k) for k in out["kind"]]
    out = out.sort_values(["_kind", "mean"], ascending=[True, False], kind="stable")
    return out.drop(columns="_kind").reset_index(drop=True)


def attention_plot(
    oof: pd.DataFrame, path: str | os.PathLike, repeat: int | None = 0
) -> pd.DataFrame:
    """Horizontal bar chart (mean with sd) of :func:`attention_summary`; returns the summary."""
    summary = attention_summary(oof, repeat)
    if summary.empty:
        raise GraphMedError(
            "the attention plot needs attention columns named att_mod_<modality> or "
            "att_path_<meta-path>, but the table has none; they are written by graphmed "
            "models, not by the baselines"
        )
    kinds = [k for _, k in _ATTENTION if (summary["kind"] == k).any()]
    sizes = [int((summary["kind"] == k).sum()) for k in kinds]
    fig = _figure((6.5, 1.2 + 0.45 * sum(sizes) + 0.6 * len(kinds)))
    axes = fig.subplots(len(kinds), 1, squeeze=False, gridspec_kw={"height_ratios": sizes})[:, 0]
    for ax, kind in zip(axes, kinds):
        part = summary[summary["kind"] == kind].iloc[::-1]  # largest on top
        ax.barh(
            part["name"],
            part["mean"],
            xerr=part["sd"].fillna(0),
            capsize=3,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_xlabel(f"{kind} attention weight (mean ± sd over patients)")
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_title(f"Attention weights ({_repeat_text(repeat)})")
    fig.tight_layout()
    _save(fig, path)
    return summary


def write_reports(
    oof: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike, method: Method = "median"
) -> dict[str, str]:
    """Write every report the table allows into ``out_dir``; return ``{name: path}``.

    ``km.png`` when there is a ``risk`` column, ``calibration.png`` with
    ``surv_<t>`` columns, ``attention.png`` with attention columns, and
    always ``report.json`` with the numbers behind them. ``oof`` may also be
    the path of an ``oof_predictions.csv``.
    """
    if not isinstance(oof, pd.DataFrame):
        oof = pd.read_csv(oof, dtype={"patient_id": str})
    out = Path(out_dir)
    paths: dict[str, str] = {}
    numbers: dict[str, Any] = {}
    if "risk" in oof.columns:
        numbers["km"] = km_by_risk_group(oof, out / "km.png", method=method)
        paths["km"] = str(out / "km.png")
    if _surv_columns(oof):
        numbers["calibration"] = calibration_plot(oof, out / "calibration.png")
        paths["calibration"] = str(out / "calibration.png")
    if not attention_summary(oof).empty:
        numbers["attention"] = attention_plot(oof, out / "attention.png").to_dict("records")
        paths["attention"] = str(out / "attention.png")
    write_json(out / "report.json", _finite(numbers))
    paths["report"] = str(out / "report.json")
    return paths


def _require(oof: pd.DataFrame, columns: list[str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in oof.columns]
    if missing:
        raise GraphMedError(
            f"{what} needs columns {columns}, but {missing} are missing; "
            f"the table has {list(oof.columns)[:12]}"
        )
    return oof


def _complete(df: pd.DataFrame, columns: list[str], what: str) -> pd.DataFrame:
    """Rows with every column present; the dropped ones are counted in a warning."""
    kept = df.dropna(subset=columns)
    if len(kept) < len(df):
        warnings.warn(
            f"{what}: {len(df) - len(kept)} of {len(df)} rows have a missing value in "
            f"{columns} and are left out",
            UserWarning,
            stacklevel=3,
        )
    return kept


def _one_repeat(oof: pd.DataFrame, repeat: int | None) -> pd.DataFrame:
    if repeat is None or "repeat" not in oof.columns:
        return oof
    sel = oof[oof["repeat"] == repeat]
    if sel.empty:
        have = sorted(pd.unique(oof["repeat"]).tolist())
        raise GraphMedError(
            f"no rows with repeat == {repeat}; the table has repeats {have}. Pass one of "
            "them, or repeat=None to pool all repeats (each patient then counts once per repeat)"
        )
    return sel


def _surv_columns(oof: pd.DataFrame) -> dict[float, str]:
    found = {}
    for c in oof.columns:
        if str(c).startswith("surv_"):
            try:
                found[float(str(c)[5:])] = c
            except ValueError:
                continue
    return found


def _repeat_text(repeat: int | None) -> str:
    return "all repeats" if repeat is None else f"repeat {repeat}"


def _format_p(p: float | None) -> str:
    if p is None:
        return "p n/a (one group)"
    if p < 1e-300:
        return "p < 1e-300"
    return f"p = {p:.1e}" if p < 1e-3 else f"p = {p:.3f}"


def _finite(obj: Any) -> Any:
    """NaN and inf become None, so that report.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _figure(figsize: tuple[float, float]):
    """A pyplot-free Figure; selects Agg only when no backend was chosen."""
    import matplotlib
    from matplotlib.figure import Figure

    get = getattr(matplotlib.rcParams, "_get_backend_or_none", None)
    if get is not None and get() is None:
        matplotlib.use("Agg")
    return Figure(figsize=figsize)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
