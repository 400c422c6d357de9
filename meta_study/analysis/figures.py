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
HEAD_COLOR = "#c0392b"
ALL_COLOR = "#2471a3"
POINT_COLOR = "#5d6d7e"
#: Frontier colours (colour-blind-safe Okabe-Ito; ``bins`` and ``bins-upper`` no longer two greens).
FRONTIER_COLORS = {"vertices": "#D55E00", "hull-curve": "#E69F00", "bins": "#009E73", "hull-curve-upper": "#CC79A7",
                   "bins-upper": "#56B4E9", "all": "#0072B2"}
#: Legend font size (points): with two panels a row the report shows the grid at ~0.9x, so >= 9 pt there.
LEGEND_PT = 10


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 130, "font.size": 10, "axes.titlesize": 10,
                         "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def save(fig: Any, stem: str, footer: str | None = None) -> list[str]:
    """Write ``stem.png`` and ``stem.svg`` (directories created); returns the paths."""
    if footer:
        # just under the figure (bbox_inches="tight" takes it in), so that no layout has to
        # leave room for it and it never covers a legend
        fig.text(0.01, 0.0, tex_safe(footer), fontsize=6.5, color="#555555", ha="left", va="top")
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = [f"{stem}.png", f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def tex_safe(text: Any) -> str:
    """``text`` as matplotlib draws it literally: ``$`` would start mathtext (and a stray
    ``\\command`` inside it would crash the drawing), so every ``$`` is escaped."""
    return str(text).replace("$", r"\$")


def draw_group(ax: Any, us: np.ndarray, ds: np.ndarray, selection: GroupSelection, paper: Candidate | None,
               title: str, frontier_us: np.ndarray | None = None, frontier_ds: np.ndarray | None = None) -> None:
    """One DS-vs-US panel (accuracies in percent). Each curve is drawn only where it means
    something: the laws' median over the US range it was fitted on; the headline's prediction and
    its 90% interval from the best visible model to the end of the tested horizon (and to the
    held-out models, dashed, where they lie farther); the paper's Eq. 1 on the hull vertices over
    its fitted range, dashed over the held-out range. A dotted line marks the tested horizon."""
    thr = selection.holdout_threshold
    held = us > thr if math.isfinite(thr) else np.zeros(us.size, bool)
    ax.scatter(us[~held] * 100, ds[~held] * 100, s=12, color=POINT_COLOR, alpha=0.7, lw=0, label="models")
    if held.any():
        ax.scatter(us[held] * 100, ds[held] * 100, s=16, facecolors="none", edgecolors=POINT_COLOR, lw=0.8,
                   label="held out")
    if frontier_us is not None and frontier_us.size:
        ax.plot(frontier_us * 100, frontier_ds * 100, "D", color=HULL_COLOR, ms=3.5, alpha=0.8, lw=0,
                label="hull vertices (fit data)")
    h = selection.headline
    y_lo, y_hi = float(np.nanmin(ds)), float(np.nanmax(ds))
    vis_lo = float(np.nanmin(us[~held])) if (~held).any() else float(np.nanmin(us))
    if h.usable:
        xs_fit = np.linspace(vis_lo, h.best_us, 150)
        ax.plot(xs_fit * 100, h.median(xs_fit) * 100, color=HEAD_COLOR, lw=1.0, alpha=0.6,
                label="laws' median (fit range)")
        hus = h.horizon_us
        end = hus if math.isfinite(hus) else h.best_us
        far = float(np.nanmax(us)) if held.any() else end
        trust = "trusted" if selection.trusted else "not trusted"
        for lo_u, hi_u, ls, label in ((h.best_us, end, "-", f"headline prediction ({trust})"),
                                      (end, far, "--", "beyond the tested horizon")):
            if hi_u <= lo_u:
                continue
            xs = np.linspace(lo_u, hi_u, 60)
            p = h.predict_accuracy(xs)
            lo, hi = selection_interval(selection, xs)
            ax.plot(xs * 100, p * 100, color=HEAD_COLOR, lw=2.0, ls=ls, label=label)
            if np.isfinite(lo).any():
                ax.fill_between(xs * 100, lo * 100, hi * 100, color=HEAD_COLOR, alpha=0.15 if ls == "-" else 0.07,
                                lw=0, label="90% interval" if ls == "-" else None)
                y_lo, y_hi = min(y_lo, float(np.nanmin(lo))), max(y_hi, float(np.nanmax(hi)))
        if math.isfinite(hus):
            ax.axvline(hus * 100, color="#444444", lw=0.9, ls=":", label="tested horizon")
    if paper is not None and paper.fit.usable:
        top = float(np.nanmax(us[~held])) if (~held).any() else float(np.nanmax(us))
        xs = np.linspace(vis_lo, top, 150)
        ax.plot(xs * 100, paper.fit.predict_accuracy(xs) * 100, color=ALL_COLOR, lw=1.3,
                label="paper: Eq. 1 on hull vertices")
        if held.any():
            xe = np.linspace(top, float(np.nanmax(us)), 50)
            ax.plot(xe * 100, paper.fit.predict_accuracy(xe) * 100, color=ALL_COLOR, lw=1.3, ls="--")
    if math.isfinite(thr) and held.any():
        ax.axvline(thr * 100, color="#444444", lw=0.6, ls="-.", alpha=0.6)
    # the axes follow the data (and the interval where it is drawn): a curve that leaves them is cut
    pad = max(0.02, 0.08 * (y_hi - y_lo))
    ax.set_ylim(max(0.0, y_lo - pad) * 100, min(1.0, y_hi + pad) * 100)
    ax.set_title(tex_safe(title), fontsize=LEGEND_PT + 1)
    ax.set_xlabel("US accuracy (%)")
    ax.set_ylabel("DS accuracy (%)")
    # under the axes, never on the points: where the data leave room differs per task
    ax.legend(fontsize=LEGEND_PT, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False,
              borderaxespad=0.0, columnspacing=1.0, handlelength=1.8)


def selection_interval(selection: GroupSelection, us_accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The headline's 90% interval at ``us_accuracy`` (NaN where it has none)."""
    return selection.headline.interval(us_accuracy, 0.9)


def plot_fit_grid(panels: Sequence[dict[str, Any]], stem: str, *, footer: str | None = None,
                  columns: int = 2, title: str | None = None) -> list[str]:
    """A grid of :func:`draw_group` panels (kwargs per panel) saved as ``stem``.png/svg."""
    return save(fit_grid_figure(panels, columns=columns, title=title), stem, footer)


def fit_grid_figure(panels: Sequence[dict[str, Any]], *, columns: int = 2, title: str | None = None) -> Any:
    """The figure of :func:`plot_fit_grid`: each panel's legend under it, off the data. Two
    panels a row, so that the legends read at 9 pt or more where the report shows the grid."""
    plt = pyplot()
    n = max(1, len(panels))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    # constrained layout makes room for the legends under each panel (tight_layout ignores them)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 6.2 * rows), squeeze=False, layout="constrained")
    for ax, p in zip(axes.flat, panels):
        draw_group(ax, **p)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(tex_safe(title))
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
            ax.set_title(tex_safe(f"{task}: {name}") if task is not None else name, fontsize=LEGEND_PT)
            if r == rows - 1:
                ax.set_xlabel("number of models in the sample")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 6),
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.35 / (1.2 + 2.5 * rows)), fontsize=8)
    fig.suptitle(tex_safe(title) + " (per DS task)")
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
                            label=tex_safe(ds) if frontier == "vertices" else None)
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
    ax.set_xticks(range(m.shape[1]), [tex_safe(c) for c in m.columns], rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), [tex_safe(i) for i in m.index])
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Spearman ρ")
    ax.set_title(tex_safe(title))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save(fig, stem, footer)
