"""Analyses of the controlled experiments (paper section 3, appendices C-D, Fig. 6).

Pure functions over canonical rows (pandas), each with a figure in :mod:`figures`' style:

- :func:`head_wd_effect` (D.1 / D.3): US and DS accuracy against head weight decay, per DS task,
  averaged over seeds and the configurations run at several head WDs; and the best head weight
  decay per DS task.
- :func:`optimal_head_wd_vs_correlation` (D.4): the best head weight decay of each DS task
  against that task's US-DS Spearman rank correlation across models.
- :func:`layerwise` (Fig. 6): few-shot accuracy of probes on each block's output, per DS task.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .figures import LEGEND_PT, SERIES_MARKERS, pyplot, save
from ..schema import GROUP


def _style(plt: Any, i: int) -> tuple[Any, str]:
    """Series ``i``'s colour and marker: past tab10's 10 colours a new marker shape (18 series of a
    6-task, 3-shot sweep drew "caltech101 (1-shot)" and "near (5-shot)" in one blue, one circle)."""
    return plt.get_cmap("tab10")(i % 10), SERIES_MARKERS[(i // 10) % len(SERIES_MARKERS)]


def _legend_right(ax: Any) -> None:
    """The legend right of the axes at :data:`~.figures.LEGEND_PT`, off the lines (it was 6 pt,
    inside the axes, over the curves and the stars)."""
    ax.legend(fontsize=LEGEND_PT, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


#: What one head-WD curve is of: a DS task measured one way (protocol and shots).
_SLICE = GROUP


def _once(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` without those that repeat a run's measurement from another source (the same export
    ingested under two names), as the groups and the correlation tables count them: a run counted
    twice weighed double in a mean that said it was over ``runs`` runs (0.467 "over 2 runs" of
    0.4 and 0.6). A run with other accuracies stays."""
    cols = ["run_id", *_SLICE, "representation_layer", "us_accuracy", "ds_accuracy"]
    if "source" not in rows.columns or not set(cols) <= set(rows.columns):
        return rows
    # the first source by name is kept on every row of a run (its pre-logits and block probes
    # alike; :func:`layerwise` matches them by (source, run_id)), whatever the rows' order
    order = np.argsort(rows["source"].astype(str).to_numpy(), kind="stable")
    dup = np.empty(len(rows), bool)
    dup[order] = rows.iloc[order].duplicated(cols, keep="first").to_numpy()
    return rows[~dup]


def _with_run(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``_run``, the run a row is of: (source, run_id), a run id being unique within
    its source only (two exports' run "0" were one run in ``runs``, the mean over both)."""
    run = rows["run_id"].astype(str)
    return rows.assign(_run=rows["source"].astype(str) + "\0" + run if "source" in rows else run)


#: The count columns of the tables (the rest are ``shots``, text and floats).
_COUNT_COLUMNS = {"runs", "models", "layer"}
_TEXT_COLUMNS = {"us_task", "ds_task", "eval_protocol"}
#: pandas' own string dtype ("str" from pandas 3; "string" before, where "str" is object).
_TEXT_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else "string"


def _typed(t: pd.DataFrame) -> pd.DataFrame:
    """``t`` with its columns' real types, as the correlation tables have them: ``shots`` as
    ``Int64`` (fits.parquet's). D.4 of a linear-probe sweep (shots null throughout) was written to
    Parquet with a column of type ``null`` beside D.1/D.3's int64, and an empty table (no few-shot
    rows for Fig. 6) with every column ``null``."""
    types = {c: "Int64" if c == "shots" else "int64" if c in _COUNT_COLUMNS else "float64"
             for c in t.columns if c not in _TEXT_COLUMNS}
    if t.empty:
        types.update({c: _TEXT_DTYPE for c in t.columns if c in _TEXT_COLUMNS})
    return t.astype(types)


#: A run's configuration apart from its head weight decay and seed (schema ``PARAM_NAMES``).
_KNOBS = ("model_name", "lr", "wd", "head_lr", "epochs", "data_fraction", "batch_size", "optimizer")


def _compared(r: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``r`` whose runs take part in a head-WD comparison. Every trained run logs its
    resolved ``head_wd`` (its body ``wd`` unless set), so a head-lr sweep ingested beside the
    head-WD sweep put its 15 runs (5 head lrs, body wd 0.1) into the 0.1 point of the curve, whose
    3 runs had body wd 0.01: the mean said "over 18 runs" of two experiments. Per slice, where some
    configuration (:data:`_KNOBS`) was run at two or more head WDs, the configurations run at one
    head WD alone are left out; where none was (no controlled comparison), every run stays."""
    knobs = [c for c in _KNOBS if c in r.columns]
    if not knobs or r.empty:
        return r
    cfg = r.groupby([*_SLICE, *knobs], dropna=False, sort=False).ngroup()
    swept = r.groupby(cfg)["head_wd"].transform("nunique") >= 2
    any_swept = swept.groupby([r[c] for c in _SLICE], dropna=False, sort=False).transform("any")
    return r[swept | ~any_swept]


def head_wd_effect(rows: pd.DataFrame, *, shots: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, best): mean US and DS accuracy per (us_task, ds_task, eval_protocol, shots,
    head_wd), and the head weight decay with the highest mean DS accuracy per (us_task, ds_task,
    eval_protocol, shots). A few-shot and a linear-probe accuracy are never averaged together.

    Rows without ``head_wd`` and layer-wise probes are left out, and so are runs of a configuration
    (the other hyper-parameters, :data:`_KNOBS`) trained at one head WD alone where others were
    trained at several (:func:`_compared`): the means are over seeds and over the configurations
    that compare head WDs.
    """
    rows = _once(rows)
    r = rows[rows["head_wd"].notna() & rows["representation_layer"].isna()]
    if shots is not None:
        r = r[r["shots"] == shots]
    r = _compared(r)
    if r.empty:
        cols = [*_SLICE, "head_wd", "us_accuracy", "ds_accuracy", "runs"]
        return _typed(pd.DataFrame(columns=cols)), _typed(pd.DataFrame(columns=[*_SLICE, "best_head_wd",
                                                                                 "best_ds_accuracy",
                                                                                 "us_accuracy_at_best"]))
    r = _with_run(r.astype({"shots": "Int64"}))
    curves = (r.groupby([*_SLICE, "head_wd"], dropna=False)
               .agg(us_accuracy=("us_accuracy", "mean"), ds_accuracy=("ds_accuracy", "mean"),
                    runs=("_run", "nunique")).reset_index())
    idx = curves.groupby(list(_SLICE), dropna=False)["ds_accuracy"].idxmax()
    best = curves.loc[idx, [*_SLICE, "head_wd", "ds_accuracy", "us_accuracy"]].rename(
        columns={"head_wd": "best_head_wd", "ds_accuracy": "best_ds_accuracy", "us_accuracy": "us_accuracy_at_best"})
    return curves, best.reset_index(drop=True)


def optimal_head_wd_vs_correlation(rows: pd.DataFrame, *, shots: int | None = None) -> pd.DataFrame:
    """D.4: per DS task, the best head weight decay and the US-DS Spearman correlation across runs."""
    _, best = head_wd_effect(rows, shots=shots)
    r = _once(rows)
    r = r[r["representation_layer"].isna()]
    if shots is not None:
        r = r[r["shots"] == shots]
    out = []
    for b in best.itertuples():
        g = r[(r["us_task"] == b.us_task) & (r["ds_task"] == b.ds_task) & (r["eval_protocol"] == b.eval_protocol)]
        g = g[g["shots"].isna()] if pd.isna(b.shots) else g[g["shots"] == b.shots]
        rho = stats.spearmanr(g["us_accuracy"], g["ds_accuracy"]).statistic if len(g) >= 3 and \
            g["us_accuracy"].nunique() > 1 and g["ds_accuracy"].nunique() > 1 else np.nan
        out.append({"us_task": b.us_task, "ds_task": b.ds_task, "eval_protocol": b.eval_protocol, "shots": b.shots,
                    "best_head_wd": b.best_head_wd, "us_ds_spearman": float(rho), "models": len(g)})
    return _typed(pd.DataFrame(out, columns=[*_SLICE, "best_head_wd", "us_ds_spearman", "models"]))


def layerwise(rows: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6: mean (and sd over runs) few-shot accuracy per (us_task, ds_task, shots, layer).

    The pre-logit probe (``representation_layer`` null) is included as layer -1 for reference: of
    the runs probed per block where a (us_task, ds_task, shots) has such probes (a store holding a
    zoo beside the layer-wise sweep averaged the zoo's 50 weak models into the reference, drawn
    below the sweep's own blocks), of every run elsewhere.
    """
    r = _once(rows)
    r = r[r["eval_protocol"] == "fewshot"].copy()
    if r.empty:
        return _typed(pd.DataFrame(columns=["us_task", "ds_task", "shots", "layer", "ds_accuracy", "sd", "runs"]))
    r["layer"] = r["representation_layer"].fillna(-1).astype(int)
    where, run = ["us_task", "ds_task", "shots"], ["source", "run_id"] if "source" in r else ["run_id"]
    probed = r.loc[r["layer"] >= 0, where + run].drop_duplicates()
    if len(probed):
        mark = probed.assign(_probed=True)
        r = r.merge(mark, on=where + run, how="left").merge(
            probed[where].drop_duplicates().assign(_sliced=True), on=where, how="left")
        # a pre-logits row of a sliced setting stays only when its run was probed per block
        keep = (r["layer"] >= 0) | r["_sliced"].isna() | r["_probed"].notna()
        r = r[keep].drop(columns=["_probed", "_sliced"])
    r = _with_run(r)
    return _typed(r.groupby(["us_task", "ds_task", "shots", "layer"])
                  .agg(ds_accuracy=("ds_accuracy", "mean"), sd=("ds_accuracy", "std"), runs=("_run", "nunique"))
                  .reset_index())


def plot_head_wd(curves: pd.DataFrame, best: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """D.1/D.3: US accuracy (left, one line per US task) and DS accuracy per (US task, DS task,
    protocol, shots) (right) against head weight decay; legends at :data:`~.figures.LEGEND_PT`."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), squeeze=False, layout="constrained")
    # per US task: two US tasks' accuracies averaged into one line described neither
    several_us = curves["us_task"].nunique() > 1
    ax = axes[0, 0]
    for ut, u in curves.groupby("us_task"):
        u = u.groupby("head_wd")["us_accuracy"].mean().reset_index()
        ax.plot(u["head_wd"], u["us_accuracy"] * 100, "o-", label=str(ut) if several_us else None,
                **({} if several_us else {"color": "black"}))
    if several_us:
        ax.legend(fontsize=LEGEND_PT, frameon=False)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("head weight decay")
    ax.set_ylabel("US accuracy (%)")
    ax.set_title("upstream")
    ax = axes[0, 1]
    several = curves["eval_protocol"].nunique() > 1
    for i, ((ut, ds, proto, shots), g) in enumerate(curves.groupby(list(_SLICE), dropna=False)):
        g = g.sort_values("head_wd")
        how = ", ".join([proto] * several + ([] if pd.isna(shots) else [f"{int(shots)}-shot"]))
        label = (f"{ut} → {ds}" if several_us else f"{ds}") + (f" ({how})" if how else "")
        color, marker = _style(plt, i)
        ax.plot(g["head_wd"], g["ds_accuracy"] * 100, "-", marker=marker, ms=4, color=color, label=label)
        b = best[(best["us_task"] == ut) & (best["ds_task"] == ds) & (best["eval_protocol"] == proto)
                 & ((best["shots"] == shots) if not pd.isna(shots) else best["shots"].isna())]
        if len(b):
            ax.plot(b["best_head_wd"], b["best_ds_accuracy"] * 100, "*", ms=10, color=color)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("head weight decay")
    ax.set_ylabel("DS accuracy (%)")
    ax.set_title("downstream (star: best head WD)")
    if len(curves):
        _legend_right(ax)
    return save(fig, stem, footer)


def plot_optimal_vs_correlation(table: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """D.4: best head weight decay per DS task against its US-DS rank correlation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.scatter(table["us_ds_spearman"], table["best_head_wd"], color="#2471a3")
    several = table["eval_protocol"].nunique() > 1
    # a task's shot settings are points of their own: unnamed, three read "far far far"
    shots = table["shots"].nunique() > 1
    for r in table.itertuples():
        how = ", ".join([str(r.eval_protocol)] * several + ([f"{int(r.shots)}-shot"] if shots and not pd.isna(r.shots)
                                                            else []))
        ax.annotate(f"{r.ds_task} ({how})" if how else str(r.ds_task),
                    (r.us_ds_spearman, r.best_head_wd), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("US-DS Spearman correlation across models")
    ax.set_ylabel("optimal head weight decay")
    ax.set_title("Optimal head WD vs US-DS correlation")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)


def plot_layerwise(table: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """Fig. 6: probe accuracy against block index, one line per (US task, DS task, shots) probed
    per block (pre-logits, a square, at the right)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    # only the (task, shots) with block probes: a setting probed at the pre-logits alone (1- and
    # 5-shot beside 10-shot probes per block) had a legend entry and nothing drawn
    # a line per (US task, DS task, shots): two US tasks' probes of one DS task drew one zigzag
    keys = ["us_task", "ds_task", "shots"] if "us_task" in table else ["ds_task", "shots"]
    several_us = "us_task" in table and table["us_task"].nunique() > 1
    probed = table[table["layer"] >= 0][keys].drop_duplicates()
    table = table.merge(probed, on=keys)
    for i, (key, g) in enumerate(table.groupby(keys, dropna=False)):
        ds, shots = key[-2], key[-1]
        name = f"{key[0]} → {ds}" if several_us else str(ds)
        g = g.sort_values("layer")
        blocks = g[g["layer"] >= 0]
        pre = g[g["layer"] < 0]
        color, marker = _style(plt, i)
        ax.errorbar(blocks["layer"], blocks["ds_accuracy"] * 100, yerr=blocks["sd"].fillna(0) * 100, marker=marker,
                    ms=4, capsize=2, color=color,
                    label=name if pd.isna(shots) else f"{name} ({int(shots)}-shot)")
        if len(pre):
            ax.plot([blocks["layer"].max() + 1] * len(pre), pre["ds_accuracy"] * 100, "s", color=color)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # blocks are whole numbers: no "0.5" tick
    ax.set_xlabel("block (square: pre-logits)")
    ax.set_ylabel("few-shot accuracy (%)")
    ax.set_title("Layer-wise few-shot probes (mean ± sd over runs)")
    if len(table):
        _legend_right(ax)
    return save(fig, stem, footer)


def write_all(rows: pd.DataFrame, out_dir: str, *, footer: str | None = None, shots: int | None = None) -> dict[str, Any]:
    """The controlled-experiment tables and figures that the rows support (empty tables otherwise)."""
    from .outputs import Outputs, remove_stale_figures, write_table

    out = Outputs()
    curves, best = head_wd_effect(rows, shots=shots)
    write_table(curves, os.path.join(out_dir, "d1_head_wd_curves"), out)
    write_table(best, os.path.join(out_dir, "d3_best_head_wd"), out)
    d4 = optimal_head_wd_vs_correlation(rows, shots=shots)
    write_table(d4, os.path.join(out_dir, "d4_best_head_wd_vs_correlation"), out)
    lw = layerwise(rows)
    write_table(lw, os.path.join(out_dir, "fig6_layerwise"), out)
    if len(curves):
        out.figures += plot_head_wd(curves, best, os.path.join(out_dir, "figures", "d1_d3_head_wd"), footer=footer)
    if len(d4):
        out.figures += plot_optimal_vs_correlation(d4, os.path.join(out_dir, "figures", "d4_head_wd_vs_corr"),
                                                   footer=footer)
    if (lw["layer"] >= 0).any() if len(lw) else False:
        out.figures += plot_layerwise(lw, os.path.join(out_dir, "figures", "fig6_layerwise"), footer=footer)
    # a figure this run did not draw is of an earlier run's data: `--shots 1` (no block probes)
    # after a full run left fig6_layerwise.png's blocks beside a table of the pre-logits alone
    for stem in ("d1_d3_head_wd", "d4_head_wd_vs_corr", "fig6_layerwise"):
        remove_stale_figures(out_dir, stem + ".*", out.figures)
    return {"tables": out.tables, "figures": out.figures}
