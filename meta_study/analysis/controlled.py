"""Analyses of the controlled experiments (paper section 3, appendices C-D, Fig. 6).

Pure functions over canonical rows (pandas), each with a figure in :mod:`figures`' style:

- :func:`head_wd_effect` (D.1 / D.3): US and DS accuracy against head weight decay, per DS task,
  averaged over seeds and other knobs; and the best head weight decay per DS task.
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

from .figures import pyplot, save


#: What one head-WD curve is of: a DS task measured one way (protocol and shots).
_SLICE = ("us_task", "ds_task", "eval_protocol", "shots")


def head_wd_effect(rows: pd.DataFrame, *, shots: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, best): mean US and DS accuracy per (us_task, ds_task, eval_protocol, shots,
    head_wd), and the head weight decay with the highest mean DS accuracy per (us_task, ds_task,
    eval_protocol, shots). A few-shot and a linear-probe accuracy are never averaged together.

    Rows without ``head_wd`` and layer-wise probes are left out.
    """
    r = rows[rows["head_wd"].notna() & rows["representation_layer"].isna()]
    if shots is not None:
        r = r[r["shots"] == shots]
    if r.empty:
        cols = [*_SLICE, "head_wd", "us_accuracy", "ds_accuracy", "runs"]
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=[*_SLICE, "best_head_wd", "best_ds_accuracy",
                                                                 "us_accuracy_at_best"])
    r = r.astype({"shots": "Int64"})
    curves = (r.groupby([*_SLICE, "head_wd"], dropna=False)
               .agg(us_accuracy=("us_accuracy", "mean"), ds_accuracy=("ds_accuracy", "mean"),
                    runs=("run_id", "nunique")).reset_index())
    idx = curves.groupby(list(_SLICE), dropna=False)["ds_accuracy"].idxmax()
    best = curves.loc[idx, [*_SLICE, "head_wd", "ds_accuracy", "us_accuracy"]].rename(
        columns={"head_wd": "best_head_wd", "ds_accuracy": "best_ds_accuracy", "us_accuracy": "us_accuracy_at_best"})
    return curves, best.reset_index(drop=True)


def optimal_head_wd_vs_correlation(rows: pd.DataFrame, *, shots: int | None = None) -> pd.DataFrame:
    """D.4: per DS task, the best head weight decay and the US-DS Spearman correlation across runs."""
    _, best = head_wd_effect(rows, shots=shots)
    r = rows[rows["representation_layer"].isna()]
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
    return pd.DataFrame(out, columns=[*_SLICE, "best_head_wd", "us_ds_spearman", "models"])


def layerwise(rows: pd.DataFrame) -> pd.DataFrame:
    """Fig. 6: mean (and sd over runs) few-shot accuracy per (us_task, ds_task, shots, layer).

    The pre-logit probe (``representation_layer`` null) is included as layer -1 for reference.
    """
    r = rows[rows["eval_protocol"] == "fewshot"].copy()
    if r.empty:
        return pd.DataFrame(columns=["us_task", "ds_task", "shots", "layer", "ds_accuracy", "sd", "runs"])
    r["layer"] = r["representation_layer"].fillna(-1).astype(int)
    return (r.groupby(["us_task", "ds_task", "shots", "layer"])
             .agg(ds_accuracy=("ds_accuracy", "mean"), sd=("ds_accuracy", "std"), runs=("run_id", "nunique"))
             .reset_index())


def plot_head_wd(curves: pd.DataFrame, best: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """D.1/D.3: US accuracy (left) and DS accuracy per task (right) against head weight decay."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    us = curves.groupby("head_wd")["us_accuracy"].mean().reset_index()
    ax = axes[0, 0]
    if len(us):
        ax.plot(us["head_wd"], us["us_accuracy"] * 100, "o-", color="black")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("head weight decay")
    ax.set_ylabel("US accuracy (%)")
    ax.set_title("upstream")
    ax = axes[0, 1]
    several = curves["eval_protocol"].nunique() > 1
    for i, ((ds, proto, shots), g) in enumerate(curves.groupby(["ds_task", "eval_protocol", "shots"], dropna=False)):
        g = g.sort_values("head_wd")
        how = ", ".join([proto] * several + ([] if pd.isna(shots) else [f"{int(shots)}-shot"]))
        label = f"{ds}" + (f" ({how})" if how else "")
        ax.plot(g["head_wd"], g["ds_accuracy"] * 100, "o-", ms=3, color=cmap(i % 10), label=label)
        b = best[(best["ds_task"] == ds) & (best["eval_protocol"] == proto)
                 & ((best["shots"] == shots) if not pd.isna(shots) else best["shots"].isna())]
        if len(b):
            ax.plot(b["best_head_wd"], b["best_ds_accuracy"] * 100, "*", ms=10, color=cmap(i % 10))
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("head weight decay")
    ax.set_ylabel("DS accuracy (%)")
    ax.set_title("downstream (star: best head WD)")
    if len(curves):
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)


def plot_optimal_vs_correlation(table: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """D.4: best head weight decay per DS task against its US-DS rank correlation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.scatter(table["us_ds_spearman"], table["best_head_wd"], color="#2471a3")
    several = table["eval_protocol"].nunique() > 1
    for r in table.itertuples():
        ax.annotate(f"{r.ds_task} ({r.eval_protocol})" if several else str(r.ds_task),
                    (r.us_ds_spearman, r.best_head_wd), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("US-DS Spearman correlation across models")
    ax.set_ylabel("optimal head weight decay")
    ax.set_title("Optimal head WD vs US-DS correlation")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)


def plot_layerwise(table: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """Fig. 6: probe accuracy against block index, one line per DS task (pre-logits at the right)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    cmap = plt.get_cmap("tab10")
    for i, ((ds, shots), g) in enumerate(table.groupby(["ds_task", "shots"], dropna=False)):
        g = g.sort_values("layer")
        blocks = g[g["layer"] >= 0]
        pre = g[g["layer"] < 0]
        ax.errorbar(blocks["layer"], blocks["ds_accuracy"] * 100, yerr=blocks["sd"].fillna(0) * 100, marker="o",
                    ms=3, capsize=2, color=cmap(i % 10), label=f"{ds} ({shots}-shot)")
        if len(pre) and len(blocks):
            ax.plot([blocks["layer"].max() + 1], pre["ds_accuracy"] * 100, "s", color=cmap(i % 10))
    ax.set_xlabel("block (square: pre-logits)")
    ax.set_ylabel("few-shot accuracy (%)")
    ax.set_title("Layer-wise few-shot probes")
    if len(table):
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)


def write_all(rows: pd.DataFrame, out_dir: str, *, footer: str | None = None, shots: int | None = None) -> dict[str, Any]:
    """The controlled-experiment tables and figures that the rows support (empty tables otherwise)."""
    from .outputs import Outputs, write_table

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
    return {"tables": out.tables, "figures": out.figures}
