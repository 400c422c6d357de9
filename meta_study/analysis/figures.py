"""Figures in the paper's style, written as PNG and SVG.

- :func:`plot_fit_grid` / :func:`plot_group`: DS vs US accuracy per group with all points, the
  headline's frontier and law (with its prediction interval) and the paper's Eq. 1 on the hull
  vertices, extended over the held-out range (paper Fig. 1, F.6-F.9).
- :func:`plot_sensitivity`: fit_err and pred_err against sample size per frontier estimator
  (Fig. 3, F.10-F.16).
- :func:`plot_params_vs_shots`: k, alpha and e_ir against the number of shots (F.4/F.5).
- :func:`plot_heatmap`: correlation matrices (F.20/F.21).

Every figure carries a footer, just under it, naming the data and the fit settings that produced
it. Legends sit off the data: under each DS-vs-US panel, above Fig. 3, right of F.4/F.5. The figure
functions (:func:`fit_grid_figure`, :func:`sensitivity_figure`, :func:`params_figure`) return the
unsaved figure, for tests and notebooks. matplotlib is imported here only (Agg backend: no display
needed).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .selection import Candidate, GroupSelection

HULL_COLOR = "#c0392b"
ALL_COLOR = "#2471a3"
POINT_COLOR = "#7f8c8d"
FRONTIER_COLORS = {"vertices": HULL_COLOR, "hull-curve": "#e67e22", "bins": "#27ae60", "hull-curve-upper": "#8e44ad",
                   "bins-upper": "#16a085", "all": ALL_COLOR}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "font.size": 9, "axes.titlesize": 9,
                         "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def save(fig: Any, stem: str, footer: str | None = None) -> list[str]:
    """Write ``stem.png`` and ``stem.svg`` (directories created); returns the paths."""
    if footer:
        # just under the figure (bbox_inches="tight" takes it in), so that no layout has to
        # leave room for it and it never covers a legend
        fig.text(0.01, 0.0, footer, fontsize=6.5, color="#555555", ha="left", va="top")
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = [f"{stem}.png", f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _fit_label(name: str, c: Candidate) -> str:
    if not c.fit.usable:
        return f"{name}: {c.fit.status}"
    err = f" · pred err {100 * c.pred_err:.1f} pt" if math.isfinite(c.pred_err) else ""
    # two lines, so that a legend fits under a 4-inch panel at 6 pt
    return f"{name}\n{c.law} on {c.frontier} · sat {100 * c.fit.saturation:.1f}%{err}"


def draw_group(ax: Any, us: np.ndarray, ds: np.ndarray, selection: GroupSelection, paper: Candidate | None,
               title: str, frontier_us: np.ndarray | None = None, frontier_ds: np.ndarray | None = None) -> None:
    """One DS-vs-US panel (accuracies in percent): the headline in red, the paper's Eq. 1 on the
    hull vertices in blue (dashed beyond the hold-out line)."""
    thr = selection.holdout_threshold
    held = us > thr if math.isfinite(thr) else np.zeros(us.size, bool)
    ax.scatter(us[~held] * 100, ds[~held] * 100, s=6, color=POINT_COLOR, alpha=0.45, lw=0, label="models")
    if held.any():
        ax.scatter(us[held] * 100, ds[held] * 100, s=9, facecolors="none", edgecolors=POINT_COLOR, lw=0.6,
                   alpha=0.8, label="held out")
    head = selection.best
    if frontier_us is not None and frontier_us.size:
        ax.plot(frontier_us * 100, frontier_ds * 100, ".", color=HULL_COLOR, ms=3, alpha=0.6,
                label=f"{head.frontier} frontier (fit data)")
    lo = float(np.nanmin(us)) if us.size else 0.0
    xs_fit = np.linspace(lo, thr if math.isfinite(thr) else float(np.nanmax(us)), 200)
    xs_ext = np.linspace(xs_fit[-1], min(1.0, max(float(np.nanmax(us)) + 0.02, xs_fit[-1] + 0.02)), 80)
    trust = "trusted" if selection.trusted else "not trusted"
    shown = [(head, HULL_COLOR, f"headline ({trust})")]
    if paper is not None and (paper.law, paper.frontier) != (head.law, head.frontier):
        shown.append((paper, ALL_COLOR, "paper"))
    for c, color, name in shown:
        if not c.fit.usable:
            continue
        ax.plot(xs_fit * 100, c.fit.predict_accuracy(xs_fit) * 100, color=color, lw=1.4, label=_fit_label(name, c))
        ax.plot(xs_ext * 100, c.fit.predict_accuracy(xs_ext) * 100, color=color, lw=1.4, ls="--")
    cl = selection.claims
    if math.isfinite(cl.predict_lo):
        ax.errorbar([cl.predict_us * 100], [cl.predict_ds * 100],
                    yerr=[[100 * (cl.predict_ds - cl.predict_lo)], [100 * (cl.predict_hi - cl.predict_ds)]],
                    fmt="s", color=HULL_COLOR, ms=4, capsize=3, lw=1, label="prediction, 90% interval")
    if math.isfinite(thr) and held.any():
        ax.axvline(thr * 100, color="#444444", lw=0.6, ls="-.", alpha=0.6)
    # the axes follow the data: an extrapolated law must not squash the points
    # (and the prediction's interval, which lies beyond the points by design)
    y_lo, y_hi = float(np.nanmin(ds)), float(np.nanmax(ds))
    if math.isfinite(cl.predict_lo):
        y_lo, y_hi = min(y_lo, cl.predict_lo), max(y_hi, cl.predict_hi)
    pad = max(0.02, 0.08 * (y_hi - y_lo))
    ax.set_ylim(max(0.0, y_lo - pad) * 100, min(1.0, y_hi + pad) * 100)
    ax.set_title(title)
    ax.set_xlabel("US accuracy (%)")
    ax.set_ylabel("DS accuracy (%)")
    # under the axes, never on the points: where the data leave room differs per task
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False,
              borderaxespad=0.0, columnspacing=1.0, handlelength=1.6)


def plot_fit_grid(panels: Sequence[dict[str, Any]], stem: str, *, footer: str | None = None,
                  columns: int = 3, title: str | None = None) -> list[str]:
    """A grid of :func:`draw_group` panels (kwargs per panel) saved as ``stem``.png/svg."""
    return save(fit_grid_figure(panels, columns=columns, title=title), stem, footer)


def fit_grid_figure(panels: Sequence[dict[str, Any]], *, columns: int = 3, title: str | None = None) -> Any:
    """The figure of :func:`plot_fit_grid`: each panel's legend under it, off the data."""
    plt = pyplot()
    n = max(1, len(panels))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    # constrained layout makes room for the legends under each panel (tight_layout ignores them)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 4.6 * rows), squeeze=False, layout="constrained")
    for ax, p in zip(axes.flat, panels):
        draw_group(ax, **p)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def plot_group(panel: dict[str, Any], stem: str, *, footer: str | None = None) -> list[str]:
    """One group's panel on its own."""
    return plot_fit_grid([panel], stem, footer=footer, columns=1)


def plot_sensitivity(summary: pd.DataFrame, stem: str, *, footer: str | None = None,
                     title: str = "Sample-size sensitivity") -> list[str]:
    """Fig. 3 per DS task, as in the paper (:func:`sensitivity_figure`), saved as PNG and SVG."""
    return save(sensitivity_figure(summary, title=title), stem, footer)


def sensitivity_figure(summary: pd.DataFrame, *, title: str = "Sample-size sensitivity") -> Any:
    """One row per DS task: fitting and prediction error (in accuracy points) against the number
    of models, one line per frontier estimator, mean ± sd over trials. A DS task with several
    groups (shots, protocols) averages them by size step. One legend above the panels, off the
    data; the x ticks are the sample sizes drawn, as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    plt = pyplot()
    tasks = sorted(summary["ds_task"].unique()) if not summary.empty else []
    rows = max(1, len(tasks))
    fig, axes = plt.subplots(rows, 2, figsize=(9, 1.2 + 2.5 * rows), squeeze=False)
    handles: dict[str, Any] = {}
    for r, task in enumerate(tasks or [None]):
        part = summary[summary["ds_task"] == task] if task is not None else summary
        for c, (metric, name) in enumerate((("fit_err", "fitting error"), ("pred_err", "prediction error"))):
            ax = axes[r, c]
            ns: list[float] = []
            for frontier, color in FRONTIER_COLORS.items():
                sf = part[part["frontier"] == frontier]
                if sf.empty:
                    continue
                # groups have their own size grids (10 ... their number of fitting points), so
                # average the k-th size step over groups rather than equal n values
                step = sf.groupby(["us_task", "ds_task", "eval_protocol", "shots"], dropna=False)["n"].rank(method="dense")
                agg = sf.assign(step=step).groupby("step").agg(
                    n=("n", "mean"), m=(f"{metric}_mean", "mean"), sd=(f"{metric}_std", "mean")).reset_index()
                h = ax.errorbar(agg["n"], agg["m"] * 100, yerr=agg["sd"].fillna(0) * 100, color=color, marker="o",
                                ms=3, capsize=2, lw=1.2, label=frontier)
                handles.setdefault(frontier, h)
                ns += agg["n"].tolist()
            if ns and max(ns) >= 3 * min(ns):
                ax.set_xscale("log")
            # plain numbers at the sizes drawn (log axes otherwise label 10^1, 1.05x10^1, ...)
            ticks = sorted({round(x) for x in ns})
            if ticks:
                if len(ticks) > 7:
                    ticks = [ticks[i] for i in np.linspace(0, len(ticks) - 1, 7).round().astype(int)]
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel(f"{name} (points)")
            ax.set_title(f"{task}: {name}" if task is not None else name, fontsize=9)
            if r == rows - 1:
                ax.set_xlabel("number of models in the sample")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 6),
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.35 / (1.2 + 2.5 * rows)), fontsize=8)
    fig.suptitle(title + " (per DS task)")
    fig.tight_layout(rect=(0, 0.03, 1, 1 - 0.8 / (1.2 + 2.5 * rows)))
    return fig


def plot_params_vs_shots(fits: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """k, alpha and e_ir against shots, one line per DS task, hull solid and all dashed."""
    return save(params_figure(fits), stem, footer)


def params_figure(fits: pd.DataFrame) -> Any:
    """The figure of :func:`plot_params_vs_shots`: one legend of DS tasks right of the panels."""
    plt = pyplot()
    f = fits[fits["status"].isin(["ok", "at_bound"]) & fits["shots"].notna()].astype({"shots": "int64"})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), squeeze=False, layout="constrained")
    tasks = sorted(f["ds_task"].unique()) if not f.empty else []
    cmap = plt.get_cmap("tab10")
    for ax, p in zip(axes.flat, ("k", "alpha", "e_ir")):
        for i, ds in enumerate(tasks):
            for frontier, ls in (("vertices", "-"), ("all", "--")):
                g = f[(f["ds_task"] == ds) & (f["frontier"] == frontier)].sort_values("shots")
                if len(g):
                    ax.plot(g["shots"], g[p], ls=ls, marker="o", ms=3, color=cmap(i % 10),
                            label=f"{ds}" if frontier == "vertices" else None)
        ax.set_xscale("log")
        ax.set_xlabel("shots")
        ax.set_title({"k": "k", "alpha": "α", "e_ir": "e_IR"}[p])
    if tasks:
        # one legend for the three panels, to their right, off the lines
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize=7, frameon=False,
                   title="DS task", title_fontsize=7)
    else:
        axes[0, 1].text(0.5, 0.5, "no few-shot groups with several shot settings", ha="center", va="center",
                        transform=axes[0, 1].transAxes)
    fig.suptitle("Eq. 1 parameters vs shots (hull vertices solid, all points dashed)")
    return fig


def plot_heatmap(matrix: pd.DataFrame, stem: str, *, title: str, footer: str | None = None) -> list[str]:
    """A labelled correlation heatmap with values in the cells."""
    plt = pyplot()
    m = matrix.astype(float)
    size = max(3.2, 0.55 * max(m.shape) + 1.6)
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(m.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(m.shape[1]), [str(c) for c in m.columns], rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), [str(i) for i in m.index])
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Spearman ρ")
    ax.set_title(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)
