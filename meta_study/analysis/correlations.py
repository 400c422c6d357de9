"""The paper's correlation tables (Abnar et al. 2022, appendix F).

- **F.1** :func:`shots_correlation`: per (us_task, ds_task, eval_protocol, frontier), the Pearson
  correlation of each fitted parameter (k, alpha, e_ir) with the number of shots.
- **F.2** :func:`increase_likelihood`: per (us_task, eval_protocol, frontier), the likelihood that each parameter
  increases when the number of shots increases (consecutive shot settings), averaged over DS tasks.
- **F.20** :func:`ds_task_correlations`: the Spearman rank correlation between DS tasks, across
  the models evaluated on both.
- **F.21** :func:`us_ds_correlations`: the Spearman rank correlation between each DS task and US.

Inputs are plain DataFrames: fits (``meta-study fit``'s ``fits.parquet``) or canonical rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .selection import EXACT_SPEARMAN_MAX, rank_permutation_stats

FIT_PARAMS = ("k", "alpha", "e_ir")
#: F.1 and F.2 are about the paper's Eq. 1 on its two frontiers (hull vertices and all points).
PAPER_FRONTIERS = ("vertices", "all")
#: Table F.21's columns (per slice; :func:`correlation_tables` adds the slice's).
F21_COLUMNS = ["ds_task", "n_models", "spearman", "p_value", "note"]


def _usable(fits: pd.DataFrame) -> pd.DataFrame:
    if "law" in fits:
        fits = fits[(fits["law"] == "eq1") & fits["frontier"].isin(PAPER_FRONTIERS)]
    f = fits[fits["status"].isin(["ok", "at_bound"]) & fits["shots"].notna()]
    if "eval_protocol" not in f.columns:       # fits of one protocol (none named)
        f = f.assign(eval_protocol=None)
    # k = 0 (an at_bound fit): the law is flat and alpha is not identified (powerlaw's "k = 0
    # (alpha is not identified)", alpha left at its lower bound 1e-3): no estimate to correlate.
    # Kept, a flat 1-shot fit beside alphas 2, 1.5, 1 at 5, 10, 25 shots gave F.1 +0.14, not -0.96
    f = f.assign(alpha=f["alpha"].where(~((f["status"] == "at_bound") & (f["k"] <= _K_ZERO))))
    return f.astype({"shots": "int64"})


#: The k below which :mod:`.powerlaw` calls a fit flat (``k = 0``).
_K_ZERO = 1e-12


def shots_correlation(fits: pd.DataFrame) -> pd.DataFrame:
    """Table F.1: correlation of each parameter with the number of shots.

    Args:
        fits: rows with us_task, ds_task, eval_protocol, frontier, shots, k, alpha, e_ir, status.

    Returns:
        us_task, ds_task, eval_protocol, frontier, n_shots, corr_k, corr_alpha, corr_e_ir (NaN
        with fewer than 3 shot settings or a constant parameter; ``corr_alpha`` leaves out the
        settings whose fit is flat, k = 0, where alpha is not identified). A task measured two ways
        (few-shot and linear probes) is two rows: their fits are not settings of one series.
    """
    cols = ["us_task", "ds_task", "eval_protocol", "frontier", "n_shots", *(f"corr_{p}" for p in FIT_PARAMS)]
    f = _usable(fits)
    rows = []
    for (us, ds, proto, fr), g in f.groupby(["us_task", "ds_task", "eval_protocol", "frontier"], sort=True,
                                            dropna=False):
        g = g.sort_values("shots")
        row = {"us_task": us, "ds_task": ds, "eval_protocol": proto, "frontier": fr,
               "n_shots": int(g["shots"].nunique())}
        for p in FIT_PARAMS:
            x, y = g["shots"].to_numpy(float), g[p].to_numpy(float)
            x, y = x[np.isfinite(y)], y[np.isfinite(y)]     # alpha of a flat fit: not identified
            ok = len(y) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
            row[f"corr_{p}"] = float(stats.pearsonr(x, y)[0]) if ok else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def increase_likelihood(fits: pd.DataFrame) -> pd.DataFrame:
    """Table F.2: P(parameter increases | shots increase), averaged over DS tasks, and the paper's
    signed form of it.

    For each (us_task, ds_task, eval_protocol, frontier) the shot settings are sorted; the
    likelihood is the share of consecutive pairs where the parameter went up. Those shares are
    averaged over DS tasks, per (us_task, eval_protocol, frontier). The paper's Table F.2 states
    "the likelihood that each parameter increases/decreases" as one number in [-1, 1] (k -0.65,
    e_IR -0.88 for JFT): ``trend_<param>``, the mean sign of the change over the same pairs (+1 up,
    -1 down, 0 unchanged), averaged the same way; without ties it is ``2 p_increase - 1``. Alpha's
    pairs skip the settings whose fit is flat (k = 0: alpha not identified).

    Returns:
        us_task, eval_protocol, frontier, n_ds_tasks, p_increase_k, p_increase_alpha, p_increase_e_ir,
        trend_k, trend_alpha, trend_e_ir.
    """
    cols = ["us_task", "eval_protocol", "frontier", "n_ds_tasks", *(f"p_increase_{p}" for p in FIT_PARAMS),
            *(f"trend_{p}" for p in FIT_PARAMS)]
    f = _usable(fits)
    per_task = []
    for (us, ds, proto, fr), g in f.groupby(["us_task", "ds_task", "eval_protocol", "frontier"], sort=True,
                                            dropna=False):
        g = g.sort_values("shots").drop_duplicates("shots")
        if len(g) < 2:
            continue
        row = {"us_task": us, "ds_task": ds, "eval_protocol": proto, "frontier": fr}
        for p in FIT_PARAMS:
            v = g[p].to_numpy(float)
            d = np.diff(v[np.isfinite(v)])     # consecutive settings where p is identified
            row[p] = float(np.mean(d > 0)) if d.size else math.nan
            row[f"sign_{p}"] = float(np.mean(np.sign(d))) if d.size else math.nan
        per_task.append(row)
    if not per_task:
        return pd.DataFrame(columns=cols)
    t = pd.DataFrame(per_task)
    out = t.groupby(["us_task", "eval_protocol", "frontier"], sort=True, dropna=False).agg(
        n_ds_tasks=("ds_task", "nunique"), **{f"p_increase_{p}": (p, "mean") for p in FIT_PARAMS},
        **{f"trend_{p}": (f"sign_{p}", "mean") for p in FIT_PARAMS}).reset_index()
    return out[cols]


_REPEAT = ["run_id", "ds_task", "us_accuracy", "ds_accuracy"]


def _repeats(rows: pd.DataFrame) -> np.ndarray | None:
    """Per row of ``rows``, whether it repeats a run's accuracies on a DS task from another source
    (the same export ingested under two names); None where ``rows`` cannot say (no source)."""
    if "source" not in rows.columns or not set(_REPEAT) <= set(rows.columns):
        return None
    # the first source by name is kept on every task: kept in row order, task x kept A's copy and
    # task y B's where their rows came in another order, and F.20 found no model with both
    order = np.argsort(rows["source"].astype(str).to_numpy(), kind="stable")
    dup = np.empty(len(rows), bool)
    dup[order] = rows.iloc[order].duplicated(_REPEAT, keep="first").to_numpy()
    return dup


def _once(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without those that repeat a run's accuracies on a DS task from another source (the
    same export ingested under two names), as the groups count them (``repeated``): counted twice,
    a table said 10 models and p = 0.0 of 5 models. A run with other accuracies stays."""
    dup = _repeats(rows)
    return rows if dup is None else rows[~dup]


def _wide(rows: pd.DataFrame) -> pd.DataFrame:
    """Models x DS tasks matrix of DS accuracy (a model is (source, run_id); a run's copy in another
    source that repeats its accuracies is the same model, see below)."""
    dup = _repeats(rows)
    kept = rows if dup is None else rows[~dup]
    # "\0" apart, not "/": source "hub" run "org/vit" and source "hub/org" run "vit" were one
    # model ("hub/org/vit"), each task's accuracy the mean of the two; rows without a source
    # (their run ids alone) were a KeyError
    run = kept["run_id"].astype(str)
    if "source" not in kept.columns:
        return kept.assign(model=run).pivot_table(index="model", columns="ds_task", values="ds_accuracy",
                                                  aggfunc="mean")
    source = kept["source"].astype(str)
    if dup is not None and dup.any():
        source = _merged_sources(rows, dup, source)
    r = kept.assign(model=source + "\0" + run)
    return r.pivot_table(index="model", columns="ds_task", values="ds_accuracy", aggfunc="mean")


def _merged_sources(rows: pd.DataFrame, dup: np.ndarray, source: pd.Series) -> pd.Series:
    """``source`` of the kept rows, with a run's source replaced by the source whose rows it
    repeats (the first by name): one export ingested twice, the second copy with one more DS task
    (y), kept x from the first source and y from the second, and F.20 said "0 models have both"
    for x and y, which every run had. A copy that measured a task the merged model already holds
    otherwise (a run measured again) stays a model of its own: accuracies are never averaged."""
    d = rows[dup][[*_REPEAT, "source"]].astype({"source": str})
    k = rows[~dup][[*_REPEAT, "source"]].astype({"source": str})
    pairs = d.merge(k, on=_REPEAT, suffixes=("", "_kept"))
    alias = {(r, s): t for r, s, t in pairs.sort_values("source_kept", kind="stable")
             .drop_duplicates(["run_id", "source"])[["run_id", "source", "source_kept"]].itertuples(index=False)}
    for _ in range(len(alias)):     # B repeats A on x, C repeats B on y: C is A's too
        moved = {key: alias.get((key[0], t), t) for key, t in alias.items()}
        if moved == alias:
            break
        alias = moved
    run, task = rows[~dup]["run_id"].to_numpy(), rows[~dup]["ds_task"].to_numpy()
    tasks: dict[tuple[Any, str], set[Any]] = {}
    for r, s, t in zip(run, source, task):
        tasks.setdefault((r, s), set()).add(t)
    final: dict[tuple[Any, str], str] = {}
    held: dict[tuple[Any, str], set[Any]] = {}
    # sources by name: a copy's source (the first by name) is settled before the copy
    for (r, s) in sorted(tasks, key=lambda key: key[1]):
        target = alias.get((r, s), s)
        if target != s and tasks[(r, s)] & held.get((r, target), set()):
            target = s
        held.setdefault((r, target), set()).update(tasks[(r, s)])
        final[(r, s)] = target
    return pd.Series([final[(r, s)] for r, s in zip(run, source)], index=source.index)


#: What one F.20 / F.21 table is of: a model has one accuracy per DS task within it.
SLICE_COLUMNS = ("us_task", "eval_protocol", "shots", "representation_layer")


def _one_slice(rows: pd.DataFrame, what: str, columns: tuple[str, ...] = SLICE_COLUMNS) -> None:
    """Refuse ``rows`` of several (us_task, eval_protocol, shots, representation_layer) slices.
    Given a whole store's rows, F.20 averaged each model's 1-, 5- and 10-shot accuracies (and its
    block probes) into one value per DS task, and F.21 ranked them as that many more models, both
    without a word; :func:`correlation_tables` computes every slice apart.

    Raises:
        ValueError: naming the column that holds several values and the function that splits them.
    """
    for col in columns:
        if col in rows.columns and rows[col].nunique(dropna=False) > 1:
            vals = sorted({"null" if pd.isna(v) else str(v) for v in rows[col]})
            shown = ", ".join(vals[:6]) + (", ..." if len(vals) > 6 else "")
            fix = ("the rows of one representation_layer (null: the pre-logits probes)" if col == "representation_layer"
                   else "the rows of one (us_task, eval_protocol, shots) slice, or correlation_tables(rows), which "
                   "computes every slice apart")
            raise ValueError(f"{what}: the rows hold {len(vals)} values of {col} ({shown}); give {fix}")


def ds_task_correlations(rows: pd.DataFrame, *, min_models: int = 3) -> pd.DataFrame:
    """Table F.20: Spearman correlation between DS tasks, across models (pairwise complete).

    Args:
        rows: canonical rows of one (us_task, eval_protocol, shots) slice.

    Returns:
        A square DataFrame indexed and columned by DS task; NaN where fewer than ``min_models``
        models have both tasks.

    Raises:
        ValueError: rows of several slices (:func:`correlation_tables` splits them).
    """
    _one_slice(rows, "ds_task_correlations")
    w = _wide(rows)
    return w.corr(method="spearman", min_periods=min_models)


def us_ds_correlations(rows: pd.DataFrame, *, min_models: int = 3) -> pd.DataFrame:
    """Table F.21: Spearman correlation between US accuracy and each DS task, across models.

    Args:
        rows: canonical rows of one (us_task, eval_protocol, shots) slice.

    Returns:
        ds_task, n_models, spearman, p_value (two-sided; exact by permutation up to
        :data:`EXACT_SPEARMAN_MAX` models), note (why ``spearman`` is NaN: too few models, or
        every model at one US or one DS accuracy; "" when it is a number).

    Raises:
        ValueError: rows of several slices (:func:`correlation_tables` splits them).
    """
    _one_slice(rows, "us_ds_correlations")
    out = []
    for ds, g in _once(rows).groupby("ds_task", sort=True):
        ok = g["us_accuracy"].notna() & g["ds_accuracy"].notna()
        n = int(ok.sum())
        note = (f"{n} model{'s' if n != 1 else ''} ({min_models} needed)" if n < min_models
                else "every model has the same US accuracy" if g.loc[ok, "us_accuracy"].nunique() < 2
                else "every model has the same DS accuracy" if g.loc[ok, "ds_accuracy"].nunique() < 2 else "")
        if not note:
            rho, p = _spearman(g.loc[ok, "us_accuracy"].to_numpy(float), g.loc[ok, "ds_accuracy"].to_numpy(float))
            out.append({"ds_task": ds, "n_models": n, "spearman": rho, "p_value": p, "note": note})
        else:
            out.append({"ds_task": ds, "n_models": n, "spearman": math.nan, "p_value": math.nan, "note": note})
    return pd.DataFrame(out, columns=F21_COLUMNS)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided p) of the Spearman rank correlation of ``x`` and ``y`` (3 or more values,
    neither constant). Up to :data:`EXACT_SPEARMAN_MAX` models p is exact, over every permutation
    as the groups' trend test does (40,320 at 8, ~2 ms a task); above, scipy's t approximation,
    which gave p = 0 for 3 models in perfect order (exact: 1/3) and 0.2 for 4 models at rho 0.8
    (exact: 0.33)."""
    r = stats.spearmanr(x, y)
    rho, p = float(r.statistic), float(r.pvalue)
    if x.size <= EXACT_SPEARMAN_MAX:
        stat, seen = rank_permutation_stats(x, y)
        p = float(np.mean(np.abs(stat) >= abs(seen) - 1e-9))
    return rho, p


def _pair_note(x: pd.Series, y: pd.Series, a: Any, b: Any, n: int, min_models: int = 3) -> str:
    """Why F.20's correlation of DS tasks ``a`` and ``b`` (the models' accuracies ``x``, ``y``) is NaN."""
    if n < min_models:
        return f"{n} model{'s have' if n != 1 else ' has'} both ({min_models} needed)"
    both = x.notna() & y.notna()
    flat = [str(t) for t, v in ((a, x), (b, y)) if v[both].nunique() < 2]
    if flat:
        return f"every model has the same DS accuracy on {' and '.join(dict.fromkeys(flat))}"
    return "no rank correlation"


def correlation_tables(rows: pd.DataFrame, fits: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """All four tables for a store's rows and (optionally) its fits.

    F.20 and F.21 are computed per (us_task, eval_protocol, shots) slice; the slice columns are
    added to F.21 and F.20 is returned in long form (slice, ds_task_a, ds_task_b, spearman, n_models:
    the models with both tasks, note: why ``spearman`` is NaN, "" when it is a number).
    """
    # one layer: a model's block probes are other accuracies of its DS tasks, averaged into F.20's
    # one value per task and ranked as more models by F.21 (``tables.correlations_tables`` selects one)
    _one_slice(rows, "correlation_tables", ("representation_layer",))
    tables: dict[str, pd.DataFrame] = {}
    if fits is not None:
        tables["f1_shots_correlation"] = shots_correlation(fits)
        tables["f2_increase_likelihood"] = increase_likelihood(fits)
    f20, f21 = [], []
    slice_cols = ["us_task", "eval_protocol", "shots"]
    r = rows.astype({"shots": "Int64"})
    for key, g in r.groupby(slice_cols, dropna=False, sort=True):
        sl = dict(zip(slice_cols, key))
        w = _wide(g)
        m = w.corr(method="spearman", min_periods=3)      # ds_task_correlations, with the counts beside
        have = w.notna()
        for a in m.index:
            for b in m.columns:
                n = int((have[a] & have[b]).sum())
                f20.append({**sl, "ds_task_a": a, "ds_task_b": b, "spearman": m.loc[a, b], "n_models": n,
                            "note": _pair_note(w[a], w[b], a, b, n) if pd.isna(m.loc[a, b]) else ""})
        f21.append(us_ds_correlations(g).assign(**sl))
    tables["f20_ds_task_spearman"] = pd.DataFrame(f20, columns=[*slice_cols, "ds_task_a", "ds_task_b", "spearman",
                                                                "n_models", "note"])
    tables["f21_us_ds_spearman"] = (pd.concat(f21, ignore_index=True)[[*slice_cols, *F21_COLUMNS]]
                                    if f21 else pd.DataFrame(columns=[*slice_cols, *F21_COLUMNS]))
    return {name: _typed(t) for name, t in tables.items()}


#: The text columns of the four tables (the rest are counts ``n_*``, ``shots`` and floats).
_TEXT_COLUMNS = {"us_task", "ds_task", "eval_protocol", "frontier", "ds_task_a", "ds_task_b", "note"}
#: pandas' own string dtype ("str" from pandas 3; "string" before, where "str" is object).
_TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else "string"


def _typed(t: pd.DataFrame) -> pd.DataFrame:
    """``t`` with its columns' real types: an empty table (F.2 of a store with one shot setting,
    F.1 and F.2 of one without shots) had object columns, written to Parquet as type ``null``, and
    a store without shots had a ``null`` shots column in F.20/F.21 (all NA), not ``Int64`` as in
    fits.parquet. Text columns of a non-empty table are left as they are (their values type them)."""
    types = {c: ("Int64" if c == "shots" else "int64" if c.startswith("n_") else _TEXT_DTYPE if c in _TEXT_COLUMNS
                 else "float64") for c in t.columns}
    return t.astype({c: d for c, d in types.items() if d != _TEXT_DTYPE or t.empty})
