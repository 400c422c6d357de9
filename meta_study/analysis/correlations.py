"""The paper's correlation tables (Abnar et al. 2022, appendix F).

- **F.1** :func:`shots_correlation`: per (us_task, ds_task, frontier), the Pearson correlation of
  each fitted parameter (k, alpha, e_ir) with the number of shots.
- **F.2** :func:`increase_likelihood`: per (us_task, frontier), the likelihood that each parameter
  increases when the number of shots increases (consecutive shot settings), averaged over DS tasks.
- **F.20** :func:`ds_task_correlations`: the Spearman rank correlation between DS tasks, across
  the models evaluated on both.
- **F.21** :func:`us_ds_correlations`: the Spearman rank correlation between each DS task and US.

Inputs are plain DataFrames: fits (``meta-study fit``'s ``fits.parquet``) or canonical rows.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

FIT_PARAMS = ("k", "alpha", "e_ir")
#: F.1 and F.2 are about the paper's Eq. 1 on its two frontiers (hull vertices and all points).
PAPER_FRONTIERS = ("vertices", "all")


def _usable(fits: pd.DataFrame) -> pd.DataFrame:
    if "law" in fits:
        fits = fits[(fits["law"] == "eq1") & fits["frontier"].isin(PAPER_FRONTIERS)]
    f = fits[fits["status"].isin(["ok", "at_bound"]) & fits["shots"].notna()]
    return f.astype({"shots": "int64"})


def shots_correlation(fits: pd.DataFrame) -> pd.DataFrame:
    """Table F.1: correlation of each parameter with the number of shots.

    Args:
        fits: rows with us_task, ds_task, frontier, shots, k, alpha, e_ir, status.

    Returns:
        us_task, ds_task, frontier, n_shots, corr_k, corr_alpha, corr_e_ir (NaN with fewer
        than 3 shot settings or a constant parameter).
    """
    cols = ["us_task", "ds_task", "frontier", "n_shots", *(f"corr_{p}" for p in FIT_PARAMS)]
    f = _usable(fits)
    rows = []
    for (us, ds, fr), g in f.groupby(["us_task", "ds_task", "frontier"], sort=True):
        g = g.sort_values("shots")
        row = {"us_task": us, "ds_task": ds, "frontier": fr, "n_shots": int(g["shots"].nunique())}
        for p in FIT_PARAMS:
            x, y = g["shots"].to_numpy(float), g[p].to_numpy(float)
            ok = len(g) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
            row[f"corr_{p}"] = float(stats.pearsonr(x, y)[0]) if ok else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def increase_likelihood(fits: pd.DataFrame) -> pd.DataFrame:
    """Table F.2: P(parameter increases | shots increase), averaged over DS tasks.

    For each (us_task, ds_task, frontier) the shot settings are sorted; the likelihood is the
    share of consecutive pairs where the parameter went up. Those shares are averaged over DS tasks.

    Returns:
        us_task, frontier, n_ds_tasks, p_increase_k, p_increase_alpha, p_increase_e_ir.
    """
    cols = ["us_task", "frontier", "n_ds_tasks", *(f"p_increase_{p}" for p in FIT_PARAMS)]
    f = _usable(fits)
    per_task = []
    for (us, ds, fr), g in f.groupby(["us_task", "ds_task", "frontier"], sort=True):
        g = g.sort_values("shots").drop_duplicates("shots")
        if len(g) < 2:
            continue
        row = {"us_task": us, "ds_task": ds, "frontier": fr}
        for p in FIT_PARAMS:
            row[p] = float(np.mean(np.diff(g[p].to_numpy(float)) > 0))
        per_task.append(row)
    if not per_task:
        return pd.DataFrame(columns=cols)
    t = pd.DataFrame(per_task)
    out = t.groupby(["us_task", "frontier"], sort=True).agg(
        n_ds_tasks=("ds_task", "nunique"), **{f"p_increase_{p}": (p, "mean") for p in FIT_PARAMS}).reset_index()
    return out[cols]


def _wide(rows: pd.DataFrame) -> pd.DataFrame:
    """Models x DS tasks matrix of DS accuracy (a model is (source, run_id))."""
    r = rows.assign(model=rows["source"].astype(str) + "/" + rows["run_id"].astype(str))
    return r.pivot_table(index="model", columns="ds_task", values="ds_accuracy", aggfunc="mean")


def ds_task_correlations(rows: pd.DataFrame, *, min_models: int = 3) -> pd.DataFrame:
    """Table F.20: Spearman correlation between DS tasks, across models (pairwise complete).

    Args:
        rows: canonical rows of one (us_task, eval_protocol, shots) slice.

    Returns:
        A square DataFrame indexed and columned by DS task; NaN where fewer than ``min_models``
        models have both tasks.
    """
    w = _wide(rows)
    return w.corr(method="spearman", min_periods=min_models)


def us_ds_correlations(rows: pd.DataFrame, *, min_models: int = 3) -> pd.DataFrame:
    """Table F.21: Spearman correlation between US accuracy and each DS task, across models.

    Returns:
        ds_task, n_models, spearman, p_value.
    """
    out = []
    for ds, g in rows.groupby("ds_task", sort=True):
        ok = g["us_accuracy"].notna() & g["ds_accuracy"].notna()
        n = int(ok.sum())
        if n >= min_models and g.loc[ok, "us_accuracy"].nunique() > 1 and g.loc[ok, "ds_accuracy"].nunique() > 1:
            r = stats.spearmanr(g.loc[ok, "us_accuracy"], g.loc[ok, "ds_accuracy"])
            out.append({"ds_task": ds, "n_models": n, "spearman": float(r.statistic), "p_value": float(r.pvalue)})
        else:
            out.append({"ds_task": ds, "n_models": n, "spearman": math.nan, "p_value": math.nan})
    return pd.DataFrame(out, columns=["ds_task", "n_models", "spearman", "p_value"])


def correlation_tables(rows: pd.DataFrame, fits: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """All four tables for a store's rows and (optionally) its fits.

    F.20 and F.21 are computed per (us_task, eval_protocol, shots) slice; the slice columns are
    added to F.21 and F.20 is returned in long form (slice, ds_task_a, ds_task_b, spearman).
    """
    tables: dict[str, pd.DataFrame] = {}
    if fits is not None:
        tables["f1_shots_correlation"] = shots_correlation(fits)
        tables["f2_increase_likelihood"] = increase_likelihood(fits)
    f20, f21 = [], []
    slice_cols = ["us_task", "eval_protocol", "shots"]
    r = rows.astype({"shots": "Int64"})
    for key, g in r.groupby(slice_cols, dropna=False, sort=True):
        sl = dict(zip(slice_cols, key))
        m = ds_task_correlations(g)
        for a in m.index:
            for b in m.columns:
                f20.append({**sl, "ds_task_a": a, "ds_task_b": b, "spearman": m.loc[a, b]})
        f21.append(us_ds_correlations(g).assign(**sl))
    tables["f20_ds_task_spearman"] = pd.DataFrame(f20, columns=[*slice_cols, "ds_task_a", "ds_task_b", "spearman"])
    tables["f21_us_ds_spearman"] = (pd.concat(f21, ignore_index=True)[[*slice_cols, "ds_task", "n_models", "spearman",
                                                                        "p_value"]]
                                    if f21 else pd.DataFrame(columns=[*slice_cols, "ds_task", "n_models", "spearman",
                                                                      "p_value"]))
    return tables
