"""Figures in the paper's style, written as PNG and SVG.

- :func:`plot_fit_grid` / :func:`plot_group`: DS vs US accuracy per group with all points, the
  headline's frontier and law (with its prediction interval, at the panel's ``level``, the fits'
  ``SelectionOptions.level``: :func:`panel_level`) and the paper's Eq. 1 on the hull
  vertices, extended over the held-out range (paper Fig. 1, F.6-F.9); a group's own figure adds
  the same panel zoomed on the best models and the prediction (:func:`answer_window`).
- :func:`plot_sensitivity`: fit_err and pred_err against sample size per frontier estimator
  (Fig. 3, F.10-F.16); ``all``, never a headline frontier, dashed and labelled so.
- :func:`plot_params_vs_shots`: k, alpha and e_ir against the number of shots (F.4/F.5), values
  at their bound hollow.
- :func:`plot_heatmap`: correlation matrices (F.20/F.21), missing pairs grey.

Every figure carries a footer, just under it, naming the data and the fit settings that produced
it. Legends sit off the data: one for a figure's DS-vs-US panels (above a grid of several rows, else
under the panels), above Fig. 3, right of F.4/F.5; a DS-vs-US panel's title says whether its
group's answer is trusted (:func:`answer_standing`). The figure
functions (:func:`fit_grid_figure`, :func:`sensitivity_figure`, :func:`params_figure`,
:func:`heatmap_figure`) return the unsaved figure, for tests and notebooks. matplotlib is imported
here only (Agg backend: no display needed).

Sizes are chosen for the report, which shows each PNG at its printed size (:data:`SAVE_DPI`
pixels a figure inch, one CSS inch on the page) unless it is wider than the page: legends, ticks
and heatmap values are 10 pt there, and only the footer (:data:`FOOTER_ID`) is smaller.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .answers import DEFAULT_LEVEL, level_pct
from .frontiers import FRONTIER_KINDS
from .headline import quantile_name
from .selection import Candidate, GroupSelection
from .sensitivity import curve_groups, frontier_curves

HULL_COLOR = "#c0392b"
HEAD_COLOR = "#c0392b"
ALL_COLOR = "#2471a3"
POINT_COLOR = "#5d6d7e"
#: Frontier colours (colour-blind-safe Okabe-Ito; ``bins`` and ``bins-upper`` no longer two greens).
FRONTIER_COLORS = {"vertices": "#D55E00", "hull-curve": "#E69F00", "bins": "#009E73", "hull-curve-upper": "#CC79A7",
                   "bins-upper": "#56B4E9", "all": "#0072B2"}
#: Legend font size (points). The report shows each figure at its printed size (1 figure inch = 1
#: CSS inch), shrunk only where wider than the page, so figures are sized to keep text >= 9 pt there.
LEGEND_PT = 10
#: Pixels per figure inch of the PNGs: the report reads it to show a PNG at its printed size.
SAVE_DPI = 130
#: The legend entry of the hull vertices: the data of the paper's Eq. 1 fit (not the headline's).
HULL_LABEL = "hull vertices (paper's Eq. 1 fit data)"
#: The SVG/artist id of the provenance footer (the one text allowed under 9 pt).
FOOTER_ID = "footer"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": SAVE_DPI, "font.size": 10, "axes.titlesize": 10,
                         "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def save(fig: Any, stem: str, footer: str | None = None) -> list[str]:
    """Write ``stem.png`` and ``stem.svg`` (directories created); returns the paths. The figure
    is closed, also when writing fails: a refit on a schedule (``--every``) whose every run failed
    on a full disk kept each run's figures open in pyplot, tens of MB a grid."""
    import matplotlib.pyplot as plt

    try:
        return _save(fig, stem, footer)
    finally:
        plt.close(fig)


def _save(fig: Any, stem: str, footer: str | None) -> list[str]:
    if footer:
        pin_figure_legends(fig)
        # just under the figure (bbox_inches="tight" takes it in), so that no layout has to
        # leave room for it and it never covers a legend
        fig.text(0.01, 0.0, tex_safe(footer), fontsize=6.5, color="#555555", ha="left", va="top", gid=FOOTER_ID,
                 wrap=True)   # wrapped at the figure's width: a long store path must not widen a small figure
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = [f"{stem}.png", f"{stem}.svg"]
    for p in paths:
        # atomic, like every table: an interrupted save leaves the old figure, not half a PNG.
        # The temporary name does not end in .png (the report lists figures/**/*.png), so the
        # format is given explicitly
        tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with quiet_drawing():
                fig.savefig(tmp, bbox_inches="tight", format=p.rsplit(".", 1)[1])
            os.replace(tmp, p)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(e, OSError) and not e.filename:   # a full disk's error named no figure
                from .outputs import named_os_error

                raise named_os_error(e, p) from e
            raise
    return paths


def pin_figure_legends(fig: Any) -> None:
    """Fix where ``fig``'s figure-level legends sit before a footer is added under it. A legend
    placed on the figure's edge (``loc="outside right lower"``) is placed, at each draw, on the
    edge of the area being saved, and ``bbox_inches="tight"`` saves an area that reaches down to
    the footer: params_vs_shots drew its "Eq. 1 fitted to" legend over the footer's text. Here the
    layout is solved once, frozen, and each such legend anchored to the figure's own box."""
    if not fig.legends:
        return
    from matplotlib.transforms import Bbox

    with quiet_drawing():
        fig.draw_without_rendering()        # the layout engine makes room for the legends once
    if fig.get_layout_engine() is not None:
        fig.set_layout_engine("none")       # and is not asked again (it would drop that room)
    for legend in fig.legends:
        if legend.get_bbox_to_anchor() is fig.bbox:    # on the figure's edge, not on given coordinates
            legend.set_bbox_to_anchor(Bbox.unit(), transform=fig.transFigure)


#: matplotlib's drawing warnings that say nothing a reader of ``fit`` or ``report`` can act on: a
#: task name's emoji or CJK glyph missing from the font (drawn as a box), and a layout that could
#: not make room (dozens of two-line warnings on stderr for a store with such names).
QUIET_WARNINGS = (r"Glyph \d+ .*missing from (current )?font", r"constrained_layout not applied")


@contextlib.contextmanager
def quiet_drawing() -> Any:
    """Drawing without :data:`QUIET_WARNINGS` (every other warning still shows)."""
    import warnings

    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield


#: Characters a legend label or panel title keeps of a task name (the rest an ellipsis): the
#: testbed's 200-character names pushed the legend across every panel.
LABEL_MAX = 40


def short(text: Any, width: int = LABEL_MAX) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut: its start and its end
    kept (names that differ only at the end, "...-severity-3", stay apart)."""
    s = str(text)
    if len(s) <= width:
        return s
    tail = max(0, (width - 1) // 3)
    return s[:width - 1 - tail] + "\u2026" + (s[-tail:] if tail else "")


def shorts(values: Sequence[Any], width: int = LABEL_MAX) -> list[str]:
    """:func:`short` of each value, cut elsewhere where two different values would read alike:
    MMLU's ``...high_school_macroeconomics:acc_norm`` and ``...microeconomics:acc_norm`` were one
    legend entry twice ("mmlu:hendrycksTest-high_sc…mics:acc_norm"), two lines no one could tell
    apart. Such labels keep, within ``width``, their start, the stretch where they first differ
    and their end (:func:`_short_at`); any still alike are widened (at most to the full names).
    Equal values keep equal labels."""
    full = [str(v) for v in values]
    out = [short(v, width) for v in full]

    def alike() -> dict[str, set[str]]:
        names: dict[str, set[str]] = {}
        for v, o in zip(full, out):
            names.setdefault(o, set()).add(v)
        return {o: vs for o, vs in names.items() if len(vs) > 1}

    for _ in range(8):      # each round splits the labels still alike where their values part
        first = {v: len(os.path.commonprefix(sorted(vs))) for vs in alike().values() for v in vs}
        split = [_short_at(v, first[v], width) if v in first else o for v, o in zip(full, out)]
        if split == out:
            break
        out = split
    w, longest = width, max((len(v) for v in full), default=0)
    while w < longest and (shared := alike()):
        w += max(4, width // 4)
        out = [short(v, w) if o in shared else o for v, o in zip(full, out)]
    return out


def _short_at(text: str, at: int, width: int) -> str:
    """``text`` in ``width`` characters: its start, the stretch around character ``at`` and its
    end, each cut marked by an ellipsis; :func:`short` where ``at`` lies in what that keeps."""
    head = tail = (width - 2) // 3
    mid = width - 2 - head - tail
    begin = min(max(head, at - mid // 3), len(text) - tail - mid)
    if begin <= head or len(text) <= width:
        return short(text, width)
    gap = "\u2026" if begin + mid < len(text) - tail else ""
    return text[:head] + "\u2026" + text[begin:begin + mid] + gap + text[len(text) - tail:]


def series_label(us_task: Any, ds_task: Any, protocol: Any = None, *, widths: tuple[int, int, int] = (18, 28, 12)) -> str:
    """A series' legend label, ``us → ds`` (each name shortened to ``widths``), the protocol in
    brackets when given (several protocols in one figure)."""
    text = f"{short(us_task, widths[0])} \u2192 {short(ds_task, widths[1])}"
    return text + (f" ({short(protocol, widths[2])})" if protocol is not None else "")


#: The columns that make a series of the shots and sensitivity figures: only shots are averaged
#: or drawn along x; a DS task under two US tasks (JFT and ImageNet-21k in the paper) is two.
SERIES_KEYS = ("us_task", "eval_protocol", "ds_task")


def series_keys(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (us_task, eval_protocol, ds_task) series of ``frame``, sorted by US, DS task, protocol."""
    if frame.empty:
        return []
    keys = {tuple(str(v) for v in k) for k in frame[list(SERIES_KEYS)].drop_duplicates().itertuples(index=False)}
    return sorted(keys, key=lambda k: (k[0], k[2], k[1]))


def series_labels(keys: Sequence[tuple[str, str, str]], widths: tuple[int, int, int] = (18, 28, 12)) -> list[str]:
    """:func:`series_label` of each key; the protocol said only where the keys have several."""
    several = len({k[1] for k in keys}) > 1
    # each name cut where it stays apart from the others of its kind (:func:`shorts`)
    us, ps, ds = (shorts([k[i] for k in keys], widths[j]) for i, j in ((0, 0), (1, 2), (2, 1)))   # keys: (us, protocol, ds)
    return [f"{u} \u2192 {d}" + (f" ({p})" if several else "") for u, p, d in zip(us, ps, ds)]


def of_series(frame: pd.DataFrame, key: tuple[str, str, str]) -> pd.DataFrame:
    """The rows of ``frame`` in series ``key``."""
    mask = np.ones(len(frame), bool)
    for col, v in zip(SERIES_KEYS, key):
        mask &= (frame[col].astype(str) == v).to_numpy()
    return frame[mask]


#: A DS-vs-US panel's title: characters a line holds at its size (a 5.6-inch panel), and lines at
#: most. A 240-character task name ran across the next panel's title and widened a group's PNG from
#: 1,366 to 2,821 px; the full name is in the page's answers and tables.
TITLE_LINE, TITLE_LINES = 50, 2


def panel_title(text: Any, standing: str = "") -> str:
    """``text`` in at most :data:`TITLE_LINES` lines of :data:`TITLE_LINE` characters, cut in the
    middle (:func:`short`: its start and its end, the protocol and shots, kept) where longer;
    ``standing`` (:func:`answer_standing`) after it, " · " between, on its last line where it fits
    there, else on a line of its own."""
    import textwrap

    s = short(text, TITLE_LINE * TITLE_LINES)
    lines = textwrap.wrap(s, TITLE_LINE, break_long_words=True, break_on_hyphens=True) or [s]
    if len(lines) > TITLE_LINES:        # breaks at spaces and hyphens left short lines: cut evenly
        lines = [s[i:i + TITLE_LINE] for i in range(0, len(s), TITLE_LINE)]
    if standing:
        if len(lines[-1]) + len(standing) + 3 <= TITLE_LINE + 5:     # a line holds ~56 characters at 11 pt
            lines[-1] += f" \u00b7 {standing}"
        else:
            lines.append(standing)
    return "\n".join(lines)


def tex_safe(text: Any) -> str:
    """``text`` as matplotlib draws it literally: ``$`` would start mathtext (and a stray
    ``\\command`` inside it would crash the drawing), so every ``$`` is escaped."""
    return str(text).replace("$", r"\$")


def draw_group(ax: Any, us: np.ndarray, ds: np.ndarray, selection: GroupSelection, paper: Candidate | None,
               title: str, frontier_us: np.ndarray | None = None, frontier_ds: np.ndarray | None = None,
               level: float | None = None, *, legend: bool = True) -> None:
    """One DS-vs-US panel (accuracies in percent). Each curve is drawn only where it means
    something: the headline over the visible US range (the laws' quantile); the headline's prediction and
    its ``level`` interval (the fits' ``SelectionOptions.level``, :func:`panel_level`; named so in
    the legend) from the best visible model to the end of the tested horizon (and to the
    held-out models, dashed, where they lie farther); the paper's Eq. 1 on the hull vertices over
    its fitted range, dashed over the held-out range. A dotted line marks the tested horizon. The
    title ends with the answer's standing (:func:`answer_standing`). ``legend``: the panel's own
    legend under it; a figure of several panels draws one for all (:func:`shared_legend`)."""
    thr = selection.holdout_threshold
    held = us > thr if math.isfinite(thr) else np.zeros(us.size, bool)
    ax.scatter(us[~held] * 100, ds[~held] * 100, s=12, color=POINT_COLOR, alpha=0.7, lw=0, label="models")
    if held.any():
        ax.scatter(us[held] * 100, ds[held] * 100, s=16, facecolors="none", edgecolors=POINT_COLOR, lw=0.8,
                   label="held out")
    if frontier_us is not None and frontier_us.size:
        # the data of the paper's Eq. 1 fit (tables._panel gives them only when that fit was made:
        # under --laws/--frontiers without it, no fit used them)
        ax.plot(frontier_us * 100, frontier_ds * 100, "D", color=HULL_COLOR, ms=3.5, alpha=0.8, lw=0,
                label=HULL_LABEL)
    h = selection.headline
    level = panel_level(level)
    drawn: list[np.ndarray] = [ds]          # every y value drawn (fractions): the y axis holds them all
    vis_lo = float(np.nanmin(us[~held])) if (~held).any() else float(np.nanmin(us))
    if h.usable:
        xs_fit = np.linspace(vis_lo, h.best_us, 150)
        med = h.predict_accuracy(xs_fit)
        drawn.append(med)
        ax.plot(xs_fit * 100, med * 100, color=HEAD_COLOR, lw=1.0, alpha=0.6,
                label=f"laws' {quantile_name(h.quantile)} (fit range)")
        hus = h.horizon_us
        end = hus if math.isfinite(hus) else h.best_us
        far = float(np.nanmax(us)) if held.any() else end
        for lo_u, hi_u, ls, label in ((h.best_us, end, "-", "headline prediction"),      # trust: in the title
                                      (end, far, "--", "beyond the tested horizon")):
            if hi_u <= lo_u:
                continue
            xs = np.linspace(lo_u, hi_u, 60)
            p = h.predict_accuracy(xs)
            lo, hi = selection_interval(selection, xs, level)
            ax.plot(xs * 100, p * 100, color=HEAD_COLOR, lw=2.0, ls=ls, label=label)
            drawn.append(p)
            if np.isfinite(lo).any():
                # under the models (zorder 0.5 < the points' 1): drawn after them, it tinted the
                # held-out models it spans, the ones a reader compares with it
                ax.fill_between(xs * 100, lo * 100, hi * 100, color=HEAD_COLOR, alpha=0.15 if ls == "-" else 0.07,
                                lw=0, zorder=0.5, label=f"{level_pct(level)} interval" if ls == "-" else None)
                drawn += [lo, hi]
            if ls == "-" and selection.trusted:
                # the band for the frontier's law (usually inside the interval, which holds a model's
                # scatter about it too), where a trusted answer states it: within the tested horizon
                t_lo, t_hi = h.interval(xs, level, band="trend")
                if np.isfinite(t_lo).any():
                    ax.fill_between(xs * 100, t_lo * 100, t_hi * 100, color=HEAD_COLOR, alpha=0.25, lw=0,
                                    zorder=0.6, label=f"{level_pct(level)} band of the trend")
        if math.isfinite(hus):
            ax.axvline(hus * 100, color="#444444", lw=0.9, ls=":", label="tested horizon")
    if paper is not None and paper.fit.usable:
        top = float(np.nanmax(us[~held])) if (~held).any() else float(np.nanmax(us))
        xs = np.linspace(vis_lo, top, 150)
        ax.plot(xs * 100, paper.fit.predict_accuracy(xs) * 100, color=ALL_COLOR, lw=1.3,
                label="paper: Eq. 1 on hull vertices")
        drawn.append(paper.fit.predict_accuracy(xs))
        if held.any():
            xe = np.linspace(top, float(np.nanmax(us)), 50)
            ax.plot(xe * 100, paper.fit.predict_accuracy(xe) * 100, color=ALL_COLOR, lw=1.3, ls="--",
                    label="paper: Eq. 1, held-out range")
            drawn.append(paper.fit.predict_accuracy(xe))
    if math.isfinite(thr) and held.any():
        ax.axvline(thr * 100, color="#444444", lw=0.6, ls="-.", alpha=0.6, label="hold-out threshold")
    # the y axis holds the points and every curve drawn (each only over its fitted or tested range,
    # so none can squash the points): no curve leaves its axes
    ys = np.concatenate([np.asarray(d, float).ravel() for d in drawn])
    ys = ys[np.isfinite(ys)]
    y_lo, y_hi = float(ys.min()), float(ys.max())
    pad = max(0.02, 0.08 * (y_hi - y_lo))
    # within 0-100% unless a law itself leaves it (then that is what the reader must see)
    lo, hi = edge_margin(y_lo - pad if y_lo < 0 else max(0.0, y_lo - pad),
                         y_hi + pad if y_hi > 1 else min(1.0, y_hi + pad))
    ax.set_ylim(lo * 100, hi * 100)
    ax.yaxis.set_major_locator(accuracy_locator())
    # a panel of points alone (no usable fit) read as a drawing that failed: the title says why
    ax.set_title(tex_safe(panel_title(title, answer_standing(selection))), fontsize=LEGEND_PT + 1)
    ax.set_xlabel("US accuracy (%)")
    ax.set_ylabel("DS accuracy (%)")
    if legend:
        # under the axes, never on the points: where the data leave room differs per task
        ax.legend(fontsize=LEGEND_PT, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False,
                  borderaxespad=0.0, columnspacing=1.0, handlelength=1.8)


def answer_standing(selection: GroupSelection) -> str:
    """A panel title's last words: whether the group's answer is trusted ("trusted", "not
    trusted"), or that it has none ("no usable fit: no prediction"). The legend said it once per panel
    ("headline prediction (trusted)"); a grid has one legend for all its panels."""
    if not selection.headline.usable:
        return "no usable fit: no prediction"
    return "trusted" if selection.trusted else "not trusted"


def shared_legend(fig: Any, axes: Sequence[Any], *, where: str, ncol: int, title: str | None = None) -> Any:
    """One figure-level legend for ``axes`` (``where``: "upper" or "lower", outside the panels),
    its entries those some panel draws, each once, in drawing order (:func:`merged_entries`).
    ``title`` heads it (above the panels, a suptitle and the legend would share the top edge).
    OpenCLIP's grid of 30 panels had 30 copies of one legend, a third of its height."""
    handles, labels = merged_entries(axes)
    return fig.legend(handles, [tex_safe(t) for t in labels], loc=f"outside {where} center", ncol=ncol,
                      frameon=False, fontsize=LEGEND_PT, columnspacing=1.2, handlelength=1.8,
                      title=tex_safe(title) if title else None, title_fontsize=LEGEND_PT + 2)


def merged_entries(axes: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """The labelled artists of ``axes``, one per label (the first panel's), ordered as the
    panels draw them: a label a later panel adds (held-out models, a 50% interval beside a 90% one)
    goes after the label drawn just before it there."""
    order: list[str] = []
    first: dict[str, Any] = {}
    for ax in axes:
        prev = -1
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in first:
                first[lab] = h
                order.insert(prev + 1, lab)
            prev = order.index(lab)
    return [first[lab] for lab in order], order


#: The share of a DS axis' span left beyond 0% or 100% where the axis ends there: a model at
#: exactly 100% DS sat on the top edge, half its marker cut off.
EDGE_MARGIN = 0.025


def edge_margin(lo: float, hi: float) -> tuple[float, float]:
    """DS axis limits (fractions) ``lo``, ``hi`` with :data:`EDGE_MARGIN` of room added beyond an
    end at exactly 0% or 100% (where points can lie on it); :func:`accuracy_locator` keeps the
    ticks inside 0-100%, as the report's hover view (``report._flat_span``)."""
    room = EDGE_MARGIN * (hi - lo)
    return (lo - room if lo == 0.0 else lo), (hi + room if hi == 1.0 else hi)


def accuracy_locator() -> Any:
    """matplotlib's default tick locator, without ticks below 0% or above 100% (an accuracy no
    model can have, drawn in the margin :func:`edge_margin` leaves)."""
    from matplotlib.ticker import AutoLocator

    class AccuracyLocator(AutoLocator):
        def tick_values(self, vmin: float, vmax: float) -> Any:
            t = np.asarray(super().tick_values(vmin, vmax))
            return t[(t >= -1e-9) & (t <= 100 + 1e-9)]

    return AccuracyLocator()


def panel_level(level: Any = None) -> float:
    """The interval level a panel draws: its ``level`` (the fits' ``SelectionOptions.level``, as
    each fits.parquet row records it), or :data:`~.answers.DEFAULT_LEVEL` for a panel that names
    none. The figures drew the 90% interval whatever level the fits were made at, beside answers
    that stated 50% ones."""
    return DEFAULT_LEVEL if level is None or (isinstance(level, float) and math.isnan(level)) else float(level)


def selection_interval(selection: GroupSelection, us_accuracy: np.ndarray,
                       level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The headline's ``level`` interval (:func:`panel_level`) at ``us_accuracy`` (NaN where it has none)."""
    return selection.headline.interval(us_accuracy, panel_level(level))


def plot_fit_grid(panels: Sequence[dict[str, Any]], stem: str, *, footer: str | None = None,
                  columns: int = 2, title: str | None = None) -> list[str]:
    """A grid of :func:`draw_group` panels (kwargs per panel) saved as ``stem``.png/svg."""
    return save(fit_grid_figure(panels, columns=columns, title=title), stem, footer)


#: A DS-vs-US panel's height (inches) in a grid, its title and tick labels included: the axes keep
#: the size they had when each panel carried its own legend (6.2 inches with it).
PANEL_H = 4.7
#: A shared legend's height (inches): a line of entries at LEGEND_PT, and a title line.
LEGEND_LINE_H, LEGEND_TITLE_H = 0.24, 0.3


def fit_grid_figure(panels: Sequence[dict[str, Any]], *, columns: int = 2, title: str | None = None) -> Any:
    """The figure of :func:`plot_fit_grid`: one legend for every panel (:func:`shared_legend`),
    above the panels under ``title`` where they run to several rows (read before 30 panels, not
    after them), else under the panel. Two panels a row, so that the text reads at 9 pt or more
    where the report shows the grid."""
    plt = pyplot()
    n = max(1, len(panels))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    # constrained layout makes room for the legend (tight_layout ignores figure legends)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, PANEL_H * rows), squeeze=False, layout="constrained")
    for ax, p in zip(axes.flat, panels):
        draw_group(ax, **p, legend=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    ncol = 3 if cols > 1 else 2     # ~3.2 inches a column: "hull vertices (paper's Eq. 1 fit data)"
    on_top = rows > 1
    legend = shared_legend(fig, list(axes.flat)[:len(panels)], where="upper" if on_top else "lower", ncol=ncol,
                           title=title if on_top else None)
    if title and not on_top:
        fig.suptitle(tex_safe(title))
    # the figure grows by the legend, so that the panels keep their size
    lines = math.ceil(len(legend.get_texts()) / ncol)
    heading = (title.count("\n") + 1) * LEGEND_TITLE_H if title else 0.0
    fig.set_size_inches(5.6 * cols, PANEL_H * rows + lines * LEGEND_LINE_H + heading + 0.2)
    return fig


def plot_group(panel: dict[str, Any], stem: str, *, footer: str | None = None) -> list[str]:
    """One group's figure (:func:`group_figure`)."""
    return save(group_figure(panel), stem, footer)


def group_figure(panel: dict[str, Any]) -> Any:
    """One group: its panel over the whole US range, and beside it the same drawing zoomed on
    where the answer is (:func:`answer_window`); one legend under both. Over the whole range of a
    group whose models span 0-85% US, the prediction from the best model to the tested horizon was
    a sliver at the edge. Where that region is most of the range already (more than 60% of it),
    the panel alone."""
    window = answer_window(panel["us"], panel["ds"], panel["selection"], panel.get("paper"), panel.get("level"))
    us = np.asarray(panel["us"], float)
    if window is None or (window[0][1] - window[0][0]) > 0.6 * (np.nanmax(us) - np.nanmin(us)):
        return fit_grid_figure([panel], columns=1)    # the whole range is the answer's region already
    plt = pyplot()
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(10.4, 5.4), layout="constrained", width_ratios=(1, 0.8))
    draw_group(full, **panel, legend=False)
    draw_group(zoom, **panel, legend=False)
    # the same drawing: one legend, across both panels (under the full panel alone, it left a blank
    # as tall under the zoom)
    shared_legend(fig, [full], where="lower", ncol=3)
    (x0, x1), (y0, y1) = window
    zoom.set_xlim(x0 * 100, x1 * 100)
    zoom.set_ylim(y0 * 100, y1 * 100)
    zoom.set_title("zoom: the best models and the prediction", fontsize=LEGEND_PT + 1)
    return fig


def answer_window(us: np.ndarray, ds: np.ndarray, selection: GroupSelection, paper: Candidate | None = None,
                  level: float | None = None) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((US from, to), (DS from, to)) as fractions: from the best visible model's neighbours to the
    farther of the tested horizon and the held-out models, the prediction taking the right 40% of
    the width; the DS range holds every model, curve and interval drawn inside it. None without a
    usable headline."""
    h = selection.headline
    if not h.usable:
        return None
    us, ds = np.asarray(us, float), np.asarray(ds, float)
    right = max(h.horizon_us if math.isfinite(h.horizon_us) else h.best_us, float(np.nanmax(us)), h.best_us + 0.005)
    right = min(right, 1.0)                 # no US accuracy lies past 100% (a best model at >= 99.5%)
    span = right - h.best_us
    left = h.best_us - max(1.5 * span, 0.02)
    thr = selection.holdout_threshold
    if math.isfinite(thr) and (us > thr).any():
        left = min(left, thr - 0.25 * span)
    left = max(left, float(np.nanmin(us)))          # never left of the data (nor below 0)
    pad = 0.03 * (right - left)
    x0, x1 = left - pad, min(right + pad, 1.0)
    xs = np.linspace(max(x0, float(np.nanmin(us))), x1, 120)
    inside = (us >= x0) & (us <= x1)
    ys = [ds[inside], h.predict_accuracy(xs[xs >= h.best_us]), h.predict_accuracy(xs[xs <= h.best_us])]
    # the interval where it says something: at 100% US it is [0, 1] (nothing to extrapolate from),
    # which set the zoom's DS range to 0-100% and flattened every model into one line
    lo, hi = selection_interval(selection, xs[(xs >= h.best_us) & (xs < 1.0)], level)
    ys += [lo, hi]
    if paper is not None and paper.fit.usable:
        ys.append(paper.fit.predict_accuracy(xs))
    y = np.concatenate([np.asarray(v, float).ravel() for v in ys])
    y = y[np.isfinite(y)]
    if not y.size:
        return None
    y_lo, y_hi = float(y.min()), float(y.max())
    ypad = max(0.005, 0.06 * (y_hi - y_lo))
    return (x0, x1), edge_margin(max(0.0, y_lo - ypad) if y_lo >= 0 else y_lo - ypad,
                                 min(1.0, y_hi + ypad) if y_hi <= 1 else y_hi + ypad)


def plain_ticks(axis: Any, values: Sequence[float], *, log: bool) -> None:
    """Ticks at ``values`` only, each labelled as a plain number, and no minor ticks (a log axis
    otherwise draws unlabelled ones, or labels 10^1). A value within 9% of the axis span of the
    last kept one is skipped, so that no two labels collide."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    # positions in the axis' own scale (log10 on a log axis, symlog's where 0 shots sit at its
    # origin); a value the scale cannot place (0 on a log axis) gets no tick
    vals = [v for v in sorted({round(float(v)) for v in values if math.isfinite(v)})
            if not (log and v <= 0 and axis.get_scale() == "log")]
    if not vals:
        return
    pos = [float(x) for x in np.asarray(axis.get_transform().transform(np.asarray(vals, float)), float)]
    span = (pos[-1] - pos[0]) or 1.0
    kept = [vals[0]]
    last = pos[0]
    for v, x in zip(vals[1:], pos[1:]):
        if x - last >= 0.09 * span:
            kept.append(v)
            last = x
    axis.set_major_locator(FixedLocator(kept))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(NullLocator())


def plot_sensitivity(summary: pd.DataFrame, stem: str, *, footer: str | None = None,
                     title: str = "Sample-size sensitivity") -> list[str]:
    """Fig. 3 per DS task, as in the paper (:func:`sensitivity_figure`), saved as PNG and SVG."""
    return save(sensitivity_figure(summary, title=title), stem, footer)


def frontier_label(frontier: str) -> str:
    """A frontier's legend entry; ``all`` says that it never enters the headline."""
    return frontier if frontier in FRONTIER_KINDS else f"{frontier} (every model; never in the headline)"


#: What a point and a bar of the sensitivity figure are (:func:`~.sensitivity.frontier_curves`), as
#: its heading says them; the report's alt text and ranking name the same statistic.
SENS_STATISTIC = "median over groups of each group's mean over trials; bars: median sd over trials"


#: DS tasks up to which the sensitivity figure has a row each; beyond, one row of their median (the
#: testbed's 202 tasks made a 526-inch-tall figure: 68,000 px, minutes to encode, unreadable).
SENS_TASKS_MAX = 12


def sensitivity_series(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (US task, protocol, DS task) rows of :func:`sensitivity_figure`: those with a finite
    error (a group too small to fit drew blank panels), else all; beyond :data:`SENS_TASKS_MAX`
    of them the figure draws one row of their mean."""
    errors = [c for c in ("fit_err_mean", "pred_err_mean") if c in summary]
    keys = [k for k in series_keys(summary) if errors and of_series(summary, k)[errors].notna().any().any()]
    return keys or series_keys(summary)


def sensitivity_left_out(summary: pd.DataFrame) -> str:
    """The series :func:`sensitivity_series` leaves out (no fit at any sample size), said in a few
    words ("1 of 3 DS tasks"), or "" when none is: a group too small to fit vanished from Fig. 3
    without a word, beside an answer for it in the report."""
    every, drawn = series_keys(summary), sensitivity_series(summary)
    if len(drawn) >= len(every):
        return ""
    what = "DS tasks" if len({k[:2] for k in every}) <= 1 else "US \u2192 DS task pairs"
    return f"{len(every) - len(drawn)} of {len(every)} {what}"


def sensitivity_figure(summary: pd.DataFrame, *, title: str = "Sample-size sensitivity") -> Any:
    """One row per (US task, protocol, DS task): fitting and prediction error (in accuracy points)
    against the number of models, one line per frontier estimator: per size step the median over
    the row's groups (its shot settings; every group in the one row beyond :data:`SENS_TASKS_MAX`)
    of each group's mean over trials, bars the median sd over trials
    (:func:`~.sensitivity.frontier_curves`, :data:`SENS_STATISTIC`); a DS task under two US tasks is two rows
    (titled ``us → ds``). One legend above the panels, off the data and under the title
    (constrained layout: no gap, no overlap); the x ticks are the sample sizes drawn, every one
    labelled. A series with no fit at any size has no row; the title counts them
    (:func:`sensitivity_left_out`)."""
    plt = pyplot()
    keys = sensitivity_series(summary)
    labels = series_labels(keys, widths=(12, 20, 8))        # a panel's title holds ~44 characters
    pooled = len(keys) > SENS_TASKS_MAX
    rows = 1 if pooled else max(1, len(keys))
    fig, axes = plt.subplots(rows, 2, figsize=(9, 0.9 + 2.6 * rows), squeeze=False, layout="constrained")
    handles: dict[str, Any] = {}
    one_us = len({k[0] for k in keys}) <= 1 and len({k[1] for k in keys}) <= 1
    ds_names = shorts([k[2] for k in keys])
    kept = total = 0        # the groups the rows' medians are over, of those the rows hold
    for r, (key, row_label) in enumerate([(None, None)] if pooled or not keys else list(zip(keys, labels))):
        part = of_series(summary, key) if key is not None else summary
        curves = frontier_curves(part)
        cg = curve_groups(part)
        kept, total = kept + cg.kept, total + cg.total
        for c, (metric, name) in enumerate((("fit_err", "fitting error"), ("pred_err", "prediction error"))):
            ax = axes[r, c]
            ns: list[float] = []
            for frontier, color in FRONTIER_COLORS.items():
                agg = curves[curves["frontier"] == frontier]
                if agg.empty:
                    continue
                # the median over the row's groups at each size step (frontier_curves: what the
                # report's ranking under the figure says; a mean was one group's miss)
                h = ax.errorbar(agg["n"], agg[metric] * 100, yerr=agg[f"{metric}_sd"].fillna(0) * 100, color=color, marker="o",
                                ms=3, capsize=2, lw=1.2, ls="--" if frontier not in FRONTIER_KINDS else "-",
                                label=frontier_label(frontier))
                handles.setdefault(frontier, h)
                ns += agg["n"].tolist()
            log = bool(ns) and max(ns) >= 3 * min(ns)
            if log:
                ax.set_xscale("log")
            plain_ticks(ax.xaxis, ns, log=log)
            ax.set_ylabel(f"{name} (pt)")
            what = "DS tasks" if one_us else "US \u2192 DS task pairs"
            row = (ds_names[r] if one_us else row_label) if key is not None else None
            # the pooled row's medians are over its kept groups (curve_groups): "75 DS tasks" stood
            # above medians over 71 of them
            over = (f"median over {len(keys)} {what}" if cg.kept >= cg.total else
                    f"median over {cg.kept} of {cg.total} groups ({len(keys)} {what})")
            label = ((f"{row}: {name}" if len(row) + len(name) <= 42 else f"{row}\n{name}") if row is not None else (
                (f"{over}: {name}" if len(over) + len(name) <= 42 else f"{over}:\n{name}") if pooled else name))
            ax.set_title(tex_safe(label), fontsize=LEGEND_PT + 1)
            if r == rows - 1:
                ax.set_xlabel("number of models in the sample")
    per = "per DS task" if one_us else "per US \u2192 DS task"
    heading = tex_safe(title) + (f": Eq. 1 on each frontier estimator, {per}" if not pooled else
                                 ": Eq. 1 on each frontier estimator (per task: sensitivity_summary)")
    # the statistic drawn, said where the reader looks (the report's ranking quotes the same one)
    heading += f"\n{SENS_STATISTIC}"
    if kept < total:
        # each curve is over one set of groups at every step (curve_groups): said where some are not
        heading += (f"\nmedians over {kept} of {total} groups: those with every frontier's error at each step "
                    "of the commonest size grid")
    left = sensitivity_left_out(summary)
    if left:
        heading += f"\n({left} not drawn: no fit at any sample size)"
    if handles:
        # the legend's title is the figure's (a suptitle and an "outside" legend share the top edge)
        fig.legend(list(handles.values()), [frontier_label(f) for f in handles], loc="outside upper center",
                   ncol=3, frameon=False, fontsize=LEGEND_PT, columnspacing=1.2, handlelength=2.2,
                   title=heading, title_fontsize=LEGEND_PT + 2)
    else:
        fig.suptitle(heading)
    return fig


def plot_params_vs_shots(fits: pd.DataFrame, stem: str, *, footer: str | None = None) -> list[str]:
    """k, alpha and e_ir against shots, one line per (US task, protocol, DS task), hull solid and all
    dashed."""
    return save(params_figure(fits), stem, footer)


def bound_params(message: Any) -> frozenset[str]:
    """The Eq. 1 parameters that a fit's ``message`` says sit at a bound, in
    :mod:`.powerlaw`'s words ("alpha at its lower/upper bound ...", "k = 0 (alpha is not
    identified)", "e_ir = 0", "e_ir = 1"). Such a value is the constraint, not an estimate."""
    m = str(message or "")
    out: set[str] = set()
    if "alpha at its" in m:
        out.add("alpha")
    if "k = 0" in m:
        out |= {"k", "alpha"}
    if "e_ir = 0" in m or "e_ir = 1" in m:
        out.add("e_ir")
    return frozenset(out)


#: params_figure's marker shapes, one per round of the palette's colours (beyond 10 or 20 series).
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
#: params_figure's series legend: entries a column at most.
PARAMS_LEGEND_ROWS = 20
#: params_figure's series at most (two legend columns): beyond, the first PARAMS_SERIES_MAX, the
#: title says so. 400 DS tasks drew a 52-inch-wide figure (20 legend columns, a minute to save) of
#: 800 lines no one could tell apart; every value is in fits.csv.
PARAMS_SERIES_MAX = 2 * PARAMS_LEGEND_ROWS
#: params_figure's panels: (column, y label, scale). e_IR is an error: shown in percent, as the page.
PARAM_PANELS = (("k", "k (scale)", 1.0), ("alpha", "α (exponent)", 1.0), ("e_ir", "e_IR: DS error floor (%)", 100.0))


def params_figure(fits: pd.DataFrame) -> Any:
    """The figure of :func:`plot_params_vs_shots`: Eq. 1 on the hull vertices (solid) and on all
    points (dashed) per (US task, protocol, DS task), labelled ``us → ds`` (names shortened); a
    value at its bound (``message``, :func:`bound_params`) is a hollow marker. Two legends right of
    the panels: the series, and what lines and markers mean. Beyond :data:`PARAMS_SERIES_MAX`
    series, the first of them (in legend order), the title says so, as it counts the series
    without a usable fit (none drawn)."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    # the rows it is of: Eq. 1 on the hull vertices and on all points, at a shot count (a series
    # with usable fits on other frontiers only had a legend entry and no line)
    rows = fits[fits["frontier"].isin(["vertices", "all"]) & fits["shots"].notna()]
    f = rows[rows["status"].isin(["ok", "at_bound"])].astype({"shots": "int64"})
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), squeeze=False, layout="constrained")
    keys = series_keys(f)
    n_series = len(keys)
    keys = keys[:PARAMS_SERIES_MAX]
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    ncol = 10 if len(keys) <= 10 else 20
    # past the palette's colours, a marker shape per round of them: 40 DS tasks drew task-00 and
    # task-20 alike
    style = [(cmap(i % ncol), SERIES_MARKERS[(i // ncol) % len(SERIES_MARKERS)]) for i in range(len(keys))]
    any_bound = False
    zero = bool((f["shots"] == 0).any())
    for ax, (p, ylabel, scale) in zip(axes.flat, PARAM_PANELS):
        for i, key in enumerate(keys):
            color, marker = style[i]
            series = of_series(f, key)
            for frontier, ls in (("vertices", "-"), ("all", "--")):
                g = series[series["frontier"] == frontier].sort_values("shots")
                if not len(g):
                    continue
                y = g[p].to_numpy(float) * scale
                bound = np.array([p in bound_params(m) for m in g.get("message", pd.Series([""] * len(g)))], bool)
                any_bound |= bool(bound.any())
                ax.plot(g["shots"], y, ls=ls, color=color, lw=1.3)
                ax.plot(g["shots"][~bound], y[~bound], marker, ms=4.5, color=color)
                ax.plot(g["shots"][bound], y[bound], marker, ms=6, mfc="white", mec=color, mew=1.4)
        if zero:
            # 0 shots (0- and 5-shot ICL of one task): on a log axis its points and the lines
            # from them vanished without a word; symlog is linear below 1 and logarithmic above
            ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        else:
            ax.set_xscale("log")
        plain_ticks(ax.xaxis, f["shots"].unique().tolist() if len(f) else [], log=True)
        ax.set_xlabel("shots")
        ax.set_ylabel(ylabel)
    if keys:
        # off the lines: the series, then what the line styles and markers mean; in columns of at
        # most PARAMS_LEGEND_ROWS entries, the figure as tall as both legends (40 DS tasks ran the
        # series' legend down over the second one)
        several = len(keys) > ncol
        cols = math.ceil(len(keys) / PARAMS_LEGEND_ROWS)
        fig.legend([Line2D([], [], color=c, lw=1.6, marker=m if several else None, ms=4.5) for c, m in style],
                   [tex_safe(t) for t in series_labels(keys)], loc="outside right upper", fontsize=LEGEND_PT,
                   frameon=False, title="US task \u2192 DS task", title_fontsize=LEGEND_PT, ncol=cols)
        lines = math.ceil(len(keys) / cols) + 1 + 5 + (3 if any_bound else 0)   # entries and titles, in lines
        fig.set_size_inches(10 + 2.2 * (cols - 1), max(3.4, 0.6 + 0.2 * lines))
        marks = [(Line2D([], [], color="#444444", ls="-"), "hull vertices"),
                 (Line2D([], [], color="#444444", ls="--"), "all points"),
                 (Line2D([], [], color="#444444", marker="o", ls="", ms=4.5), "estimate")]
        if any_bound:
            marks.append((Line2D([], [], color="#444444", marker="o", ls="", ms=6, mfc="white", mew=1.4),
                          "at its bound\n(a constraint,\nnot an estimate)"))
        fig.legend(*zip(*marks), loc="outside right lower", fontsize=LEGEND_PT, frameon=False,
                   title="Eq. 1 fitted to", title_fontsize=LEGEND_PT)
    # the series whose Eq. 1 fits all failed have no parameters to draw: said, as the groups of Fig. 3
    # are (a DS task too small to fit vanished from the legend without a word)
    every = series_keys(rows)
    unfit = len(every) - n_series
    if not keys:    # few-shot groups whose fits all failed read "no few-shot groups"
        axes[0, 1].text(0.5, 0.5, "no usable Eq. 1 fit to draw" if every else
                        "no few-shot groups with several shot settings", ha="center", va="center",
                        transform=axes[0, 1].transAxes)
    fig.suptitle("Eq. 1 parameters vs shots" + (f"\n(the first {len(keys)} of {n_series} series; all in fits.csv)"
                                                 if n_series > len(keys) else "")
                 + (f"\n({unfit} of {len(every)} series not drawn: no usable Eq. 1 fit)" if unfit > 0 else ""))
    return fig


#: Heatmap cell values (points): at the report's printed size, as legible as the legends.
HEAT_PT = 10
#: A heatmap cell's side (inches).
HEAT_CELL = 0.6
#: Tasks per side up to which each cell holds its value. Beyond, cells shrink so that the cells
#: span at most HEAT_MAX_IN inches, labels shrink to the cell, and the values stay in the
#: correlations table: the testbed's 202 DS tasks drew a 121-inch square (16,000 px at SAVE_DPI,
#: 40,804 texts) that took minutes and 6 GB, and no one reads 40,804 numbers off a picture.
HEAT_TEXT_MAX = 30
HEAT_MAX_IN = 20.0


def plot_heatmap(matrix: pd.DataFrame, stem: str, *, title: str, footer: str | None = None) -> list[str]:
    """A labelled correlation heatmap with values in the cells (:func:`heatmap_figure`)."""
    return save(heatmap_figure(matrix, title=title), stem, footer)


def heatmap_figure(matrix: pd.DataFrame, *, title: str) -> Any:
    """Spearman ρ per cell, its value written in it at :data:`HEAT_PT`; cells sized to hold it, up
    to :data:`HEAT_TEXT_MAX` tasks a side (beyond, colour only, within :data:`HEAT_MAX_IN`). A cell
    without a value (no such pair, too few models, one accuracy for all) is grey, never white
    (which reads as ρ = 0)."""
    plt = pyplot()
    m = matrix.astype(float)
    rows, cols = m.shape
    written = max(rows, cols) <= HEAT_TEXT_MAX
    cell = HEAT_CELL if written else max(HEAT_MAX_IN / max(rows, cols), 0.08)
    label_pt = 10.0 if written else min(10.0, max(cell * 72 * 0.8, 4.0))
    # task names cut to LABEL_MAX (a 240-character one made a 5 x 5 heatmap 23 x 17 inches, its
    # cells an eighth of it); room for the labels: ~0.075 in a character at 10 pt, the column
    # labels rotated by 45 degrees
    row_names, col_names = shorts(list(m.index)), shorts(list(m.columns))
    row_lab = 0.3 + 0.075 * label_pt / 10 * max([len(v) for v in row_names] or [4])
    col_lab = 0.3 + 0.055 * label_pt / 10 * max([len(v) for v in col_names] or [4])
    fig, ax = plt.subplots(figsize=(cell * cols + row_lab + 1.3, cell * rows + col_lab + 0.5),
                           layout="constrained")
    values = m.to_numpy()
    ax.set_facecolor("#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(cols), [tex_safe(c) for c in col_names], rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=label_pt)
    ax.set_yticks(range(rows), [tex_safe(i) for i in row_names], fontsize=label_pt)
    ax.spines[:].set_visible(False)
    for i in range(rows if written else 0):
        for j in range(cols):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=HEAT_PT,
                        color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Spearman ρ", shrink=min(1.0, max(0.3, 6 / (cell * rows + 1))))
    missing = not np.isfinite(values).all()
    note = [] if written else [f"{rows} x {cols}: values in the correlations table, not in the cells"]
    # grey is any NaN: in F.20 every pair is there, its ρ NaN for too few models with both or one
    # accuracy for all ("no such pair" said otherwise); the table's ``note`` says which
    note += ["grey: no ρ (no such pair, or the table's note says why)"] if missing else []
    ax.set_title(tex_safe(title) + "".join(f"\n({n})" for n in note), fontsize=LEGEND_PT + 1)
    return fig
