"""The static HTML report of an analysis (what ``meta-study report``, refits and the demo write).

The page sits next to the tables and figures it shows (``DIR/index.html`` with ``figures/...``
linked relatively), so the directory can be copied, served or attached to MLflow as it is. It
loads nothing from the network and reads without JavaScript; a few inline lines of it make each
table sortable by clicking a column header, and :mod:`meta_study.explorer` adds a zoomable view of
any group's models. Every value from the data (task names can hold
anything) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from .analysis.answers import answer, flags, payoff_summary
from .analysis.figures import quantile_name
from .analysis.groups import group_slug
from .analysis.headline import MEMBER_QUANTILE, row_number
from .analysis.selection import FLAG_HELP, WORSE_THAN_FLAT_BY
from .analysis.tables import headlines
from .schema import GROUP
from .explorer import CSS as EXPLORER_CSS
from .explorer import KEYS as EXPLORE_KEYS
from .explorer import (explorer_html, group_key, nice_ticks, point_names, points_by_group, prediction_band,
                       prediction_line)

if TYPE_CHECKING:
    from .analysis.results import Analysis

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.prov{color:#555;font-size:.85rem} table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left}
tr.bad td{color:#a33} img{max-width:100%;height:auto;border:1px solid #eee;margin:.3rem 0} .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:.6rem}
.figs{display:flex;flex-wrap:wrap;gap:.6rem;align-items:flex-start}
.note{font-size:.85rem;color:#444;max-width:60rem} .flag{display:inline-block;font-size:.75rem;background:#eef;border:1px solid #ccd;border-radius:3px;padding:0 .3rem;margin:0 .1rem;cursor:help} .verdict{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem .8rem;max-width:60rem}
table.sortable th{cursor:pointer}
svg.points .ax{stroke:#999} svg.points .tk{font-size:9px;fill:#555} svg.points .lb{font-size:10px;fill:#333}
svg.points circle.v{fill:#3a6ea5;fill-opacity:.55} svg.points circle.h{fill:none;stroke:#3a6ea5}
svg.points circle:hover{fill:#e67e22;fill-opacity:1;r:4} svg.points .law{fill:none;stroke:#c0392b;stroke-width:1.6}
svg.points .band{fill:#c0392b;fill-opacity:.15;stroke:none} svg.points .thr{stroke:#444;stroke-dasharray:4 3;opacity:.6}
figure{margin:0} figcaption{font-size:.85rem}
td.l:nth-child(-n+3),ul.answers li,figcaption,.prov{overflow-wrap:anywhere} select{max-width:100%}
td.l:nth-child(-n+2){min-width:7.5em} td.l:nth-child(3){min-width:4.5em}
.tw{overflow-x:auto}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if not math.isfinite(f) else f"{f:.{digits}g}"


def _flags_html(warnings: Any) -> str:
    """Each warning once, as a short label whose tooltip says what it means and the detail."""
    out = []
    for label, detail in flags(warnings):
        help_ = FLAG_HELP.get(label, "")
        tip = f"{help_}: {detail}" if help_ and detail else (help_ or detail)
        out.append(f"<span class=flag title='{_e(tip)}'>{_e(label)}</span>")
    return " ".join(out)


def trusted_held_out(heads: pd.DataFrame) -> int:
    """Trusted headline rows that carry the ``held_out`` warning: the models above the hold-out
    line, which the fit did not see, were predicted worse than by the flat guess or missed by more
    than the trust tolerance (:func:`held_out_words` says which, as the demo's held-out check
    does). ``meta-study fit`` counts them in its first line."""
    return len(_held_out_rows(heads))


def _held_out_rows(heads: pd.DataFrame) -> list[dict[str, Any]]:
    return [r for r in heads.to_dict("records")
            if _truthy(r.get("trusted")) and "held_out" in dict(flags(r.get("warnings")))]


def _truthy(v: Any) -> bool:
    """A flag read from a table: None, NA and NaN are False (bool(NaN) is True)."""
    return not (v is None or pd.isna(v)) and bool(v)


#: A right answer about the models the fit did not see, in accuracy points: within this RMSE of
#: their frontier (the answer issue's measure; the trust tolerance on the back-tests is 3 points)
#: and no worse than the flat guess there. The demo's held-out check and this report both use it.
RIGHT_WITHIN = 5.0


def beats_flat(err_pt: float, flat_pt: float) -> bool:
    """Whether an answer's RMSE on the held-out frontier (points) is no worse than the flat guess's
    there, by the selection's margin for its ``held_out`` warning (:data:`WORSE_THAN_FLAT_BY`): the
    report and the demo's held-out check judge it alike (the demo's plain ``<=`` read an answer in
    (flat, flat + 0.0005 pt] "worse than the flat guess" that the report read as right)."""
    return err_pt <= flat_pt + 100 * WORSE_THAN_FLAT_BY


def _errors(r: Mapping[str, Any]) -> tuple[float, float]:
    """A row's RMSE on the held-out frontier and the flat guess's there, in points; NaN unknown."""
    def num(v: Any) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return math.nan
        return 100 * f if math.isfinite(f) else math.nan
    return num(r.get("pred_err")), num(r.get("flat_pred_err"))


def _pt_range(values: list[float]) -> str:
    """Errors in points: "4.6" or "3.4-4.9"."""
    lo, hi = f"{min(values):.1f}", f"{max(values):.1f}"
    return lo if lo == hi else f"{lo}-{hi}"


def held_out_words(heads: pd.DataFrame) -> str:
    """What the trusted answers flagged ``held_out`` mean, in plain text, or "" where none is.

    A trusted answer is flagged when the models above the hold-out line, which the fit did not
    see, were predicted worse than by the flat guess, or missed by more than the trust tolerance
    (:mod:`~meta_study.analysis.selection`). They are said apart, as the demo's held-out check
    judges them (:data:`RIGHT_WITHIN`): within 5 pt and closer than the flat guess, an answer is
    right but *less precise than trusted* (the demo: "right (within 5 pt), but off by more than its
    3 pt trust tolerance"); within 5 pt but beaten by the flat guess, *not confirmed*; off by more
    than 5 pt, *contradicted by the newest models* (the demo: "MISSED"). Every flagged answer read
    "contradicted": in the demo 3 answers off by 3.4-4.9 pt RMSE (the flat guess by 14-16 pt) that
    its step [4] called right. A row without both errors (an older table) is said with both reasons.
    """
    rows = _held_out_rows(heads)
    if not rows:
        return ""
    n = len(rows)
    errs = [_errors(r) for r in rows]
    known = [(e, f) for e, f in errs if not (math.isnan(e) or math.isnan(f))]
    near = [(e, f) for e, f in known if e <= RIGHT_WITHIN]
    loose = [(e, f) for e, f in near if beats_flat(e, f)]
    worse = [(e, f) for e, f in near if not beats_flat(e, f)]
    missed = [(e, f) for e, f in known if e > RIGHT_WITHIN]

    def who(k: int) -> str:       # "they were" where one kind is all of them, else "3 were"
        if k == n:
            return "it was" if n == 1 else "they were"
        return f"{k} {'was' if k == 1 else 'were'}"

    def them(k: int) -> str:
        return "it" if k == 1 else "them"

    def pts(group: list[tuple[float, float]]) -> str:
        return f"{_pt_range([e for e, _ in group])} pt RMSE; the flat guess {_pt_range([f for _, f in group])} pt"

    w = f"{RIGHT_WITHIN:g} pt"
    parts: list[str] = []
    if loose:
        parts.append(f"{who(len(loose))} within {w} and closer than the flat guess, but off by more than the trust "
                     f"tolerance ({pts(loose)}): read {them(len(loose))} as right, but less precise than trusted")
    if worse:
        parts.append(f"{who(len(worse))} within {w}, but predicted worse than by the flat guess, no gain past the best "
                     f"DS accuracy the fit saw ({pts(worse)}): read {them(len(worse))} as not confirmed by the "
                     "newest models")
    if missed:
        parts.append(f"{who(len(missed))} missed by more than {w} ({pts(missed)}): read {them(len(missed))} as "
                     "contradicted by the newest models")
    if len(known) < n:
        parts.append(f"{who(n - len(known))} predicted worse than by the flat guess or off by more than the trust "
                     "tolerance (the held_out label of each says which)")
    return (f"{n} of the trusted answers {'is' if n == 1 else 'are'} flagged held_out: on the models above the "
            f"hold-out line, which the fit did not see, " + "; ".join(parts) + ".")


def _held_out_html(heads: pd.DataFrame) -> str:
    """Said beside the count of trusted answers, or "": a "trusted" in bold beside a small label
    read as an answer the newest models had confirmed (5 of the demo's 9 trusted answers)."""
    words = held_out_words(heads)
    if not words:
        return ""
    head, rest = words.split(": ", 1)         # the count in bold, as the count of trusted answers
    return f" <b>{_e(head)}</b>: {_e(rest)}"


def _figure_alt(name: str, groups: Mapping[str, Mapping[str, Any]], level: str) -> str:
    """What a figure of the page shows, for a reader who cannot see it (its file name said nothing:
    "imagenet_imagenet-a_shift-475599"): ``name`` is the PNG's stem under figures/ or figures/groups/,
    ``groups`` the headline rows by :func:`_slug`. The paper's Eq. 1 and the hold-out line are not
    named: a figure draws them only where they exist (``--laws`` without eq1, ``--holdout-quantile 1``)."""
    r = groups.get(name)
    if r is not None:
        shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
        # a group with no usable fit draws its models alone (its title says so): the alt text named
        # a prediction and an interval the figure does not have. A row without a status: as before
        st = r.get("status")
        shown = (f"the models and the headline prediction with its {level} interval"
                 if st is None or pd.isna(st) or st == "ok" else "the models alone (no usable fit: no prediction)")
        return f"DS against US accuracy, {r['us_task']} to {r['ds_task']} ({r['eval_protocol']}{shots}): {shown}"
    if name == "fits_grid":
        return (f"DS against US accuracy for every group: the models and the headline prediction with its "
                f"{level} interval")
    if name == "sensitivity":
        # the statistic it draws, as its heading and the ranking under it say (a mean was drawn
        # under a sentence of medians: another ranking, numbers ~1.5 pt higher)
        from .analysis.figures import SENS_STATISTIC

        return ("Fitting and prediction error of Eq. 1 in accuracy points against the number of models, per "
                f"frontier: the {SENS_STATISTIC}")
    if name == "params_vs_shots":
        return "Eq. 1's parameters k, alpha and e_IR against the number of shots"
    if name.startswith("f20_"):
        return f"Spearman rank correlation of DS accuracy between DS tasks ({name[4:]})"
    if name.startswith("f21_"):
        return "Spearman rank correlation of US with DS accuracy, per DS task"
    return name.replace("_", " ")


def _slug(r: Mapping[str, Any]) -> str:
    shots = None if pd.isna(r["shots"]) else int(r["shots"])
    return group_slug((str(r["us_task"]), str(r["ds_task"]), str(r["eval_protocol"]), shots))


def _answers_html(heads: pd.DataFrame, threshold: float, figures: set[str] = frozenset()) -> str:
    """One item per group, each an anchor (``#answer-SLUG``) that links to its figure in "Per task"
    (``#figure-SLUG``) where one was drawn: with 200 groups, finding a task's figure was a scroll."""
    items = []
    for r in heads.to_dict("records"):
        a = answer(r, threshold)
        cls = "" if a.trusted else " class=bad"
        shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
        slug = _slug(r)
        link = f" <a href='#figure-{_e(slug)}'>figure</a>" if slug in figures else ""
        # a group with no usable fit has no steps: no lone ". " after its reason
        steps = f"{_e('; '.join(a.steps))}. " if a.steps else ""
        items.append(f"<li{cls} id='answer-{_e(slug)}'><b>{_e(r['us_task'])} &rarr; {_e(r['ds_task'])}</b> "
                     f"({_e(r['eval_protocol'])}{shots}): <b>{_e(a.word)}</b> ({_e(a.reason)}). "
                     f"{steps}{_e(a.claims)} {_flags_html(r.get('warnings'))}{link}</li>")
    return "<ul class=answers>" + "".join(items) + "</ul>"


#: Click a header to sort its table by that column (numbers as numbers), click again to reverse.
SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const key = r => { const t = r.cells[col].innerText.trim(), x = parseFloat(t);
                     return isNaN(x) ? t.toLowerCase() : x; };
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  rows.sort((a, b) => { const p = key(a), q = key(b);
    return (typeof p === typeof q ? (p < q ? -1 : p > q ? 1 : 0) : (typeof p === 'number' ? -1 : 1)) * dir; });
  rows.forEach(r => body.appendChild(r));
}));
"""


def _levels(heads: pd.DataFrame) -> str:
    """The interval level(s) of the headline rows as the text names them ("90%"; "50%/90%" for
    rows made at two): a table made with ``SelectionOptions(level=0.5)`` stores 50% intervals,
    and the page said "Brackets give the 90% interval"."""
    from .analysis.answers import DEFAULT_LEVEL, level_pct, row_level

    levels = sorted({row_level(r) for r in heads.to_dict("records")}) or [DEFAULT_LEVEL]
    return "/".join(level_pct(v) for v in levels)


#: How ``selection._trust`` begins the reason of a headline whose curve misses the edge of its own
#: data (back-tests passed), and how the "no trusted answer" box counts such groups.
EDGE_REASON = "the headline at the best visible US accuracy"
EDGE_MISS = "the curve misses the best visible DS accuracy by more than the tolerance"


def _verdict(heads: pd.DataFrame) -> str:
    """Said plainly when no group is trusted: why, counted per group from the rows shown."""
    if len(heads) == 0 or bool(heads["trusted"].any()):
        return ""
    reasons: dict[str, int] = {}
    for r in heads.to_dict("records"):
        why = str(r.get("trust_reason") or "no usable fit")
        # the edge rule's reason ("the headline at the best visible US accuracy (77.6%) lies 4.0 pt
        # below ...") cut at its first bracket read "the headline at the best visible US accuracy:
        # 2 of 12 groups", a reason that says nothing
        key = ("back-test error above the tolerance" if why.startswith("back-test error")
               else EDGE_MISS if why.startswith(EDGE_REASON) else why.split(" (")[0])
        reasons[key] = reasons.get(key, 0) + 1
    of = f"{len(heads)} group{'s' if len(heads) != 1 else ''}"     # "no usable fit: 1 of 1 groups"
    why = ", ".join(f"{k}: {v} of {of}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    # the models the fits saw: held-out ones are no fitting data ("60 models per group: no usable
    # fit" read beside answers that said "no points", every model being held out)
    n = heads["n_points"].astype(int) - heads["n_heldout"].fillna(0).astype(int)
    span = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}&ndash;{int(n.max())}"
    # said only as far as the rows hold intervals: a group with no usable fit or no back-test has none
    with_iv = int(_has_interval(heads).sum())
    L = _levels(heads)
    iv = (f"Each answer still gives its {L} interval" if with_iv == len(heads) else
          f"No answer has a {L} interval either (no back-test to calibrate one, or no usable fit)" if with_iv == 0
          else f"{with_iv} of {len(heads)} answers still {'gives its' if with_iv == 1 else 'give their'} {L} interval "
          f"(the {'other has' if len(heads) - with_iv == 1 else 'others have'} none: no back-test to calibrate one, "
          "or no usable fit)")
    models = "visible model" if span == "1" else "visible models"
    return (f"<p class=verdict><b>No group has a trusted answer here.</b> With {span} {models} per group: "
            f"{_e(why)}. {iv}; docs/analysis.md says what each reason means and what data would settle it.</p>")


#: What "the tested horizon" is: the answers ("past the tested horizon"), the figures' legends, the
#: explorer's and the hover view's lines all use the words, and the page defined them nowhere
#: (only docs/analysis.md did).
HORIZON_NOTE = ("The tested horizon is how far past its best visible model a group's back-tests predicted (half of "
                "their cuts reached at least that far): past it a trusted answer states only the interval. ")


def _has_interval(heads: pd.DataFrame) -> pd.Series:
    """Per headline row: whether its answer states an interval (at the row's level) at +1, +3 or +5 US points (as
    :func:`~meta_study.analysis.answers.interval` prints one), or, every step lying past 100% US,
    at the tested horizon."""
    from .analysis.answers import interval
    from .analysis.selection import PLUS_POINTS

    def _f(r: Mapping[str, Any], key: str) -> float:
        try:
            return float(r.get(key))
        except (TypeError, ValueError):
            return math.nan

    def past_100(r: Mapping[str, Any]) -> bool:
        return _f(r, "best_us") + min(PLUS_POINTS) / 100.0 > 1.0 + 1e-9

    return pd.Series([any(interval(_f(r, f"ds_plus{k}_lo"), _f(r, f"ds_plus{k}_hi")) for k in PLUS_POINTS)
                      or (past_100(r) and bool(interval(_f(r, "predict_lo"), _f(r, "predict_hi"))))
                      for r in heads.to_dict("records")], index=heads.index, dtype=bool)


#: Groups drawn in the hover view at most (each point is an SVG circle: ~120 bytes).
MAX_HOVER_GROUPS = 60


def _points_svg(r: Mapping[str, Any], pts: pd.DataFrame) -> str:
    """One group's models as an inline SVG scatter: hover a point for its model (:func:`point_name`),
    US and DS accuracy; hollow points were held out, right of the dashed hold-out threshold; the red
    line is the headline's prediction from the best visible model to the tested horizon, shaded by
    its interval at the row's level (:func:`~meta_study.explorer.prediction_band`, as the figures
    and the explorer shade it). No script needed. A model without both accuracies has no place on
    it and is left out; "" where no model has both and there is no line to draw."""
    import numpy as np

    w, h, pad = 380, 270, 42
    # named over every group's points (the explorer's names): per group, a run's name could be
    # shorter here than in the explorer, where more runs share its prefix
    names = pts[NAME_COLUMN].tolist() if NAME_COLUMN in pts else point_names(pts)
    us, ds = pts["us_accuracy"].to_numpy(float) * 100, pts["ds_accuracy"].to_numpy(float) * 100
    # a model with a NaN accuracy (a run that logged no DS metric) made the axes' ends NaN and
    # nice_ticks raised: no report was written for the whole store
    ok = np.isfinite(us) & np.isfinite(ds)
    names, us, ds = [n for n, k in zip(names, ok) if k], us[ok], ds[ok]
    xs, ys = prediction_line(r, 40)
    line = np.isfinite(xs) & np.isfinite(ys)
    bx, blo, bhi = prediction_band(r, 40)
    # the axes hold the models, the prediction line and its interval, ending on round ticks
    ax, ay = np.concatenate([us, xs[line], bx]), np.concatenate([ds, ys[line], blo, bhi])
    if not ax.size:
        return ""
    xt, yt = nice_ticks(*_flat_span(ax)), nice_ticks(*_flat_span(ay))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    sx = lambda v: pad + (v - x0) / (x1 - x0) * (w - pad - 10)  # noqa: E731
    sy = lambda v: h - pad - (v - y0) / (y1 - y0) * (h - pad - 10)  # noqa: E731
    # None (pyarrow's null) or NA: no threshold, nothing held out (float(None) raised a TypeError);
    # compared unrounded, as the fit decided
    thr = row_number(r.get("holdout_threshold"))
    held = pts["us_accuracy"].to_numpy(float)[ok] > thr if math.isfinite(thr) else np.zeros(us.size, bool)
    out = [f"<svg class=points viewBox='0 0 {w} {h}' width={w} height={h} role=img "
           f"aria-label='{_e(r['us_task'])} to {_e(r['ds_task'])}'>",
           f"<line x1={pad} y1={h - pad} x2={w - 10} y2={h - pad} class=ax /><line x1={pad} y1=10 x2={pad} "
           f"y2={h - pad} class=ax />"]
    for v in xt:
        out.append(f"<text x={sx(v):.1f} y={h - pad + 14} class=tk text-anchor=middle>{v:g}</text>")
    for v in yt:
        out.append(f"<text x={pad - 4} y={sy(v) + 3:.1f} class=tk text-anchor=end>{v:g}</text>")
    out.append(f"<text x={(pad + w) / 2:.0f} y={h - 6} class=lb text-anchor=middle>US accuracy (%)</text>"
               f"<text x=10 y={(h - pad) / 2:.0f} class=lb text-anchor=middle transform='rotate(-90 10 "
               f"{(h - pad) / 2:.0f})'>DS accuracy (%)</text>")
    if bx.size > 1:          # under the models, as the figures and the explorer shade it
        from .analysis.answers import level_pct, row_level

        edge = [f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(bx, bhi)] + \
               [f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(bx[::-1], blo[::-1])]
        out.append(f"<polygon class=band points='{' '.join(edge)}'><title>{level_pct(row_level(r))} interval of "
                   "the headline prediction</title></polygon>")
    # only where it holds models out, as the figures and the explorer draw it (and inside the axes)
    if held.any() and x0 <= 100 * thr <= x1:
        out.append(f"<line x1={sx(100 * thr):.1f} y1=10 x2={sx(100 * thr):.1f} y2={h - pad} class=thr>"
                   "<title>hold-out threshold</title></line>")
    for name, a, b, hd in zip(names, us, ds, held):
        out.append(f"<circle cx={sx(a):.1f} cy={sy(b):.1f} r=2.6 class={'h' if hd else 'v'}><title>"
                   f"{_e(name)}: US {a:.2f}%, DS {b:.2f}%{' (held out)' if hd else ''}"
                   "</title></circle>")
    if line.sum() > 1:       # drawn last, over the models (a group can have thousands)
        # missing (None, NaN, NA: bool(NA) raised, bool(NaN) is True): not trusted, as the explorer reads it
        trusted = r.get("trusted")
        trusted = not (trusted is None or pd.isna(trusted)) and bool(trusted)
        out.append("<polyline class=law points='" + " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(xs[line], ys[line]))
                   # as the figures label it: an untrusted answer states its interval, not this line
                   + f"'><title>headline prediction{'' if trusted else ' (not trusted)'}, from the best "
                   "visible model to the tested horizon</title></polyline>")
    out.append("</svg>")
    return "".join(out)


def _flat_span(v: Any) -> tuple[float, float]:
    """An axis' data range in accuracy points; where every value is the same, one point around it
    inside 0-100 (nice_ticks centres a flat range: every model at 100% read 99.4% to 100.6%)."""
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9 and 0.0 <= lo <= 100.0:
        lo = min(max(lo - 0.5, 0.0), 99.0)
        hi = lo + 1.0
    return lo, hi


#: The hover view's column of each point's name, given before the points are split by group.
NAME_COLUMN = "_point_name"


def _hover_html(heads: pd.DataFrame, points: pd.DataFrame | None) -> str:
    if points is None or points.empty or heads.empty:
        return ""
    by = points_by_group(points.assign(**{NAME_COLUMN: point_names(points)}))
    cells = []
    seen = 0
    # the first MAX_HOVER_GROUPS groups that have something to draw: a group without a model with
    # both accuracies was counted among "the first 60 of N" and left a drawable one out
    for r in heads.to_dict("records"):
        if len(cells) == MAX_HOVER_GROUPS:
            break
        seen += 1
        g = by.get(group_key(r[c] for c in EXPLORE_KEYS))
        svg = "" if g is None or g.empty else _points_svg(r, g)
        if not svg:          # no model with both accuracies, no line: nothing to draw
            continue
        shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
        cells.append(f"<figure><figcaption>{_e(r['us_task'])} &rarr; {_e(r['ds_task'])} ({_e(r['eval_protocol'])}"
                     f"{shots})</figcaption>{svg}</figure>")
    more = (f" {len(cells)} of {len(heads)} groups are drawn (the first with models to draw); points.parquet has "
            "them all." if seen < len(heads) else "")
    return ("<h2>Which model is which</h2><p class=note>Hover over a point for its model and accuracies; "
            "hollow points were held out (right of the dashed line), the red line is the headline's prediction up to the "
            f"tested horizon, shaded by its {_levels(heads)} interval.{more}</p>"
            "<div class=grid>"
            + "".join(cells) + "</div>")


def _pt(v: Any) -> str:
    """An error (fraction) in accuracy points."""
    return _num(100 * float(v), 3) if v is not None and not pd.isna(v) else "&ndash;"


def _headline_what(r: Mapping[str, Any]) -> str:
    """What a headline row predicts with, read off the row: a row written before 2026-12-06 has no
    ``member_quantile`` (the members' median) and may keep less than all of their gain (``discount``
    ``w``: "discount 1.00" read as a 100% discount where it meant none)."""
    if pd.isna(r.get("discount")):
        return "none: no usable law x frontier fit"
    # named as the figures' legends name it (one helper: they cannot disagree)
    what = f"{quantile_name(r.get('member_quantile'))} of {int(r['n_fit'])} law x frontier fits"
    w = float(r["discount"])
    return what + (f", {100 * w:.0f}% of their predicted gain kept (w)" if w < 1 else "")


def _quantiles(heads: pd.DataFrame) -> str:
    """The members' quantile the headline rows are, as each row's predictor names it
    (:func:`~meta_study.analysis.figures.quantile_name`): "0.4 quantile", "median" for rows written
    before ``member_quantile`` was stored, "0.4 quantile or median" for a mix. The page said "the
    0.4 quantile" above rows, and beside figures, that predicted with the median. Only the rows with
    a usable headline say it (those without have no ``discount``, :func:`_headline_what`): a group
    with no usable fit stores no ``member_quantile`` either, and was read as a legacy median, so a
    store with one such group said "the 0.4 quantile or median"."""
    if "member_quantile" not in heads:      # written before the column was stored: every row the median
        return quantile_name(None)
    usable = heads["discount"].notna() if "discount" in heads else pd.Series(True, index=heads.index)
    names = dict.fromkeys(quantile_name(q) for q in heads.loc[usable, "member_quantile"])
    return " or ".join(names) or quantile_name(MEMBER_QUANTILE)


def _failed(status: Any) -> bool:
    """A fit that was not made (a row in red in :func:`_table_html`)."""
    return status not in ("ok", "at_bound")


def _table_rows(fits: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`_table_html`: each group's headline and the paper's Eq. 1 on the hull vertices."""
    return fits[fits["headline"].astype(bool) | ((fits["law"] == "eq1") & (fits["frontier"] == "vertices"))]


def _failed_html(fits: pd.DataFrame) -> str:
    """The groups with a row in red in :func:`_table_html`, counted as the table marks them: those
    without a headline, and those whose headline stands but whose paper's Eq. 1 failed ("Fits could
    not be made for 2 groups (in red)" stood above 4 groups in red)."""
    rows = _table_rows(fits)
    if rows.empty:
        return ""
    key = [rows[c].astype(str) for c in GROUP]
    bad = rows["status"].map(_failed).astype(bool)
    no_head = set(zip(*(k[bad & rows["headline"].astype(bool)] for k in key)))
    any_bad = set(zip(*(k[bad] for k in key)))
    n_head, n_paper = len(no_head), len(any_bad - no_head)
    if not n_head and not n_paper:
        return ""
    where = "with the reason, in the table &ldquo;Headline and the paper's fit&rdquo; below"
    groups = lambda n, more="": f"{n} {more}group{'s' if n != 1 else ''}"  # noqa: E731
    paper = (f"the paper's Eq. 1 on the hull vertices could not be fitted for "
             f"{groups(n_paper, 'more ' if n_head else '')}")
    stands = "whose headline stands" if n_paper == 1 else "whose headlines stand"
    if not n_head:
        return f" <b>{paper[0].upper()}{paper[1:]}</b>, {stands} (in red, {where})."
    # "(no usable headline)": the table below still lists each one's headline row ("headline, not
    # trusted"), so "(no headline)" read as a contradiction of it
    return (f" <b>Fits could not be made for {groups(n_head)}</b> (no usable headline)"
            + (f"; {paper}, {stands}" if n_paper else "") + f". Each failed fit is in red, {where}.")


def _table_html(fits: pd.DataFrame) -> str:
    """Per group: the headline and the paper's Eq. 1 on the hull vertices, side by side. Accuracies
    in percent, errors in accuracy points; the fit's status apart from the group's warnings."""
    head = ("<tr><th class=l>US task</th><th class=l>DS task</th><th class=l>protocol</th><th>shots</th>"
            "<th class=l>predictor</th><th title='models in the group (in brackets: held out, i.e. above the "
            "hold-out threshold: never fitted, they score the held-out error)'>models (held out)</th>"
            # the mean over the cuts: a headline trusted on its latest cuts showed 3.92 here, over the
            # tolerance of 3, beside its answer "latest two back-tests' errors 2.4 and 2.1 pt <= tolerance 3 pt"
            "<th title='the RMSE of each back-test cut (fit below a US cut, predict the frontier above it), "
            "the mean over the cuts; a headline is also trusted when each of its latest two cuts is within the "
            "tolerance (its answer says which)'>back-test err, mean over cuts (pt)</th>"
            "<th title='the flat guess (the best DS accuracy below the cut) scored on the same cuts'>flat guess "
            "back-test, mean over cuts (pt)</th>"
            "<th title='RMSE at the frontier of the held-out models (above the hold-out threshold), which no "
            "fit saw'>held-out err (pt)</th>"
            f"<th title='leave-one-cut-out: the share of back-test targets inside the {_levels(headlines(fits))} interval that the other cuts give (the held-out models are scored in the held-out check, not here)'>back-test interval coverage (%)</th>"
            "<th class=l>role</th><th class=l>fit status</th><th class=l>warnings</th></tr>")
    rows = []
    for r in _table_rows(fits).to_dict("records"):
        bad = _failed(r["status"])
        shots = "" if pd.isna(r["shots"]) else str(int(r["shots"]))
        if r["headline"]:
            role = "headline, trusted" if r["trusted"] else "headline, not trusted"
            # the headline's n_fit counts its member fits (law x frontier), not models
            # a headline without a usable member fit has none: it said "ensemble", a name for
            # nothing in the page, beside "Fits could not be made" (its fit status says why)
            what = _headline_what(r)
        else:
            n_v = int(r["n_fit"])    # "Eq. 1 on the 1 hull vertices" in a group of two models
            role, what = "paper", f"Eq. 1 on the {n_v} hull {'vertex' if n_v == 1 else 'vertices'}"
        status = _e(r["status"]) + (f": {_e(r['message'])}" if r.get("message") and not r["headline"] else "")
        cov = r.get("coverage")
        rows.append(
            f"<tr class='{'bad' if bad else ''}'><td class=l>{_e(r['us_task'])}</td><td class=l>{_e(r['ds_task'])}</td>"
            f"<td class=l>{_e(r['eval_protocol'])}</td><td>{shots}</td><td class=l>{_e(what)}</td>"
            f"<td>{int(r['n_points'])} ({int(r['n_heldout'])})</td><td>{_pt(r['backtest_err'])}</td>"
            f"<td>{_pt(r['flat_backtest_err'])}</td><td>{_pt(r['pred_err'])}</td>"
            f"<td>{_num(100 * float(cov), 3) if cov is not None and not pd.isna(cov) else '&ndash;'}</td>"
            f"<td class=l>{role}</td><td class=l>{status}</td><td class=l>{_flags_html(r.get('warnings'))}</td></tr>")
    return f"<div class=tw><table class=sortable><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"


def _sensitivity_text(sensitivity: pd.DataFrame | None, quantile: str | None = None) -> str:
    """What Fig. 3 says about the headline's members, from the ranking of the frontiers a headline
    can use (``all`` never enters it: its numbers are given apart, for the paper's comparison);
    ``quantile`` names the headline as :func:`_quantiles` does (default: the current one)."""
    from .analysis.sensitivity import curve_groups, frontier_ranking_text, rank_frontiers, summarize_sensitivity

    if sensitivity is None or not len(sensitivity):
        return ""
    summ = summarize_sensitivity(sensitivity)
    rk = rank_frontiers(summ)
    rk = rk[rk["pred_err_small_n"].notna()]
    quantile = quantile or quantile_name(MEMBER_QUANTILE)
    out = (f" The headline is the {_e(quantile)} of every law on the frontier estimators drawn solid; the paper's Eq. 1 "
           "on each of them shows how that kind of member degrades with fewer models.")
    # frontiers whose errors print the same are said to tie ("then bins-upper (0 pt)" ranked a tie)
    # the numbers are Fig. 3's first and last points, over the groups it draws (curve_groups): said
    # "of 75" where some are left out
    ranking = frontier_ranking_text(rk, _pt, name=_e, best=lambda s: f"<b>{s}</b>", total=curve_groups(summ).total)
    if ranking:
        out += " " + ranking
    for r in rk[~rk["in_headline"].astype(bool)].to_dict("records"):
        out += (f" <b>{_e(r['frontier'])}</b> (dashed; {_pt(r['pred_err_small_n'])} pt at the smallest sample) fits "
                "every model: it estimates the typical model, not the frontier, so it is never part of the headline "
                "whatever its error here.")
    return out


def _sensitivity_rows(sensitivity: pd.DataFrame | None) -> str:
    """What a row of Fig. 3 is: one per DS task, or beyond :data:`~.analysis.figures.SENS_TASKS_MAX`
    of them the figure's one row of their median ("Per DS task" stood above a figure of the mean)."""
    from .analysis.figures import SENS_TASKS_MAX, SERIES_KEYS, sensitivity_series
    from .analysis.sensitivity import summarize_sensitivity

    summ = summarize_sensitivity(sensitivity) if sensitivity is not None and len(sensitivity) else pd.DataFrame()
    keys = sensitivity_series(summ) if len(summ) else []
    # as the figure's own title names them: a row per US -> DS pair where several US tasks (or
    # protocols) share the figure ("Per DS task" stood above rows "up -> a", "up2 -> a")
    what = "DS tasks" if len({k[:2] for k in keys}) <= 1 else "US &rarr; DS task pairs"
    # a row holds every shot setting of its task, averaged step by step (the demo's "sim_up -> far
    # (fewshot)" is its 1-, 5-, 10- and 25-shot groups, four answers above): said, or a row read as one group
    shots = ("shots" in summ and bool(len(summ))
             and bool((summ.groupby(list(SERIES_KEYS), dropna=False)["shots"].nunique(dropna=False) > 1).any()))
    avg = ", each row the median over its shot settings at each sample-size step" if shots else ""
    if len(keys) <= SENS_TASKS_MAX:
        return ("Per DS task" if what == "DS tasks" else "Per US &rarr; DS task pair") + avg
    return (f"One row, the median over the {len(keys)} {what}{' and their shot settings' if shots else ''} (more than "
            f"{SENS_TASKS_MAX} to draw a row each; each one's in the sensitivity_summary table)")


def _sensitivity_left(sensitivity: pd.DataFrame | None) -> str:
    """The groups Fig. 3 leaves out (no fit at any sample size), said as the figure's title says
    them, or "": a group too small to fit vanished from the figure without a word."""
    from .analysis.figures import sensitivity_left_out
    from .analysis.sensitivity import summarize_sensitivity

    left = sensitivity_left_out(summarize_sensitivity(sensitivity)) if sensitivity is not None and len(sensitivity) else ""
    return f" {_e(left)} {'is' if left.startswith('1 of ') else 'are'} not drawn: no fit at any sample size." if left else ""


#: Groups the bootstrap table of the page shows at most, as many as the hover view draws (each a
#: row per frontier: ~700 bytes); the CSV (or Parquet) table has them all.
MAX_BOOTSTRAP_GROUPS = 60

#: The bootstrap's parameters as the page's columns: (param, header, its title, scale, digits). k
#: and alpha are unitless (Eq. 1 on errors as fractions); e_IR and saturation in percent.
BOOTSTRAP_PARAMS = (
    ("k", "k", "Eq. 1's scale k (unitless: Eq. 1 on errors as fractions)", 1.0, 3),
    ("alpha", "&alpha;", "Eq. 1's exponent alpha (unitless)", 1.0, 3),
    ("e_ir", "e<sub>IR</sub> (% DS error)", "the irreducible DS error: the DS error Eq. 1 keeps at 100% US "
     "accuracy, in percent", 100.0, 3),
    ("saturation", "saturation (% DS accuracy)", "100% - e_IR: the DS accuracy Eq. 1 reaches at 100% US accuracy, "
     "in percent", 100.0, 3),
)


def _boot_value(v: float, scale: float, digits: int) -> str:
    """A parameter of the bootstrap table as the page shows it (percent at one decimal)."""
    if not math.isfinite(v):
        return "&ndash;"
    return f"{scale * v:.1f}" if scale != 1.0 else f"{v:.{digits}g}"


def _bootstrap_html(boot: pd.DataFrame | None, alpha_max: float, root: Path,
                    max_groups: int = MAX_BOOTSTRAP_GROUPS) -> str:
    """The "Parameter uncertainty (bootstrap)" section: per group (the first ``max_groups``) and
    frontier the bootstrap ran on, each parameter of the paper's Eq. 1 with its interval, the usable
    resamples, and why a row has no interval (:func:`~.analysis.bootstrap.no_interval_reason`, as
    ``meta-study bootstrap`` reads the same rows); "" where no bootstrap was made. It was only a CSV
    link under "Tables": the page never said how uncertain a group's law is."""
    from .analysis.bootstrap import bound_notes, no_interval_reason, resolution_note

    if boot is None or boot.empty:
        return ""
    keys = list(GROUP)
    wide: dict[tuple[Any, ...], dict[str, Any]] = {}       # (group..., frontier) -> its row and params
    for r in boot.to_dict("records"):
        k = (*(r[c] for c in keys), r["frontier"])
        w = wide.setdefault(k, {**r, "params": {}})
        w["params"][r["param"]] = (float(r["estimate"]), float(r["lo"]), float(r["hi"]))
    groups = list(dict.fromkeys(k[:-1] for k in wide))
    shown = set(groups[:max_groups])
    nan3 = (math.nan, math.nan, math.nan)
    rows, no_iv = [], 0
    for k, w in wide.items():
        est, lo, hi = w["params"].get("alpha", nan3)
        n_ok, samples = int(w["n_ok"]), int(w["samples"])
        why = no_interval_reason(est, lo, hi, n_ok, samples, w.get("status"))
        no_iv += bool(why)
        if k[:-1] not in shown:
            continue
        # every parameter on a bound, not alpha's alone: "e_IR 0.0 [0.0-0.0], saturation 100.0
        # [100.0-100.0]" on Country211 (DS ~30-40%) had an empty note and read as a certain 100%
        notes = ([why] if why else []) + bound_notes(w["params"], alpha_max)
        cells = []
        for param, _, _, scale, digits in BOOTSTRAP_PARAMS:
            e, a, b = w["params"].get(param, nan3)
            iv = (f" [{_boot_value(a, scale, digits)}-{_boot_value(b, scale, digits)}]"
                  if math.isfinite(a) and math.isfinite(b) else "")
            cells.append(f"<td>{_boot_value(e, scale, digits)}{iv}</td>")
        shots = "" if pd.isna(w["shots"]) else str(int(w["shots"]))
        rows.append(f"<tr class='{'bad' if not math.isfinite(est) else ''}'><td class=l>{_e(w['us_task'])}</td>"
                    f"<td class=l>{_e(w['ds_task'])}</td><td class=l>{_e(w['eval_protocol'])}</td><td>{shots}</td>"
                    f"<td class=l>{_e(w['frontier'])}</td>{''.join(cells)}<td>{n_ok} of {samples}</td>"
                    f"<td class=l>{_e('; '.join(notes))}</td></tr>")
    level = f"{100 * float(boot['level'].iloc[0]):g}%"
    lo_b, hi_b = int(boot["samples"].min()), int(boot["samples"].max())
    b_text = f"{lo_b:,}" if lo_b == hi_b else f"{lo_b:,}&ndash;{hi_b:,}"
    frontiers = ", ".join(_e(f) for f in dict.fromkeys(boot["frontier"]))
    head = ("<tr><th class=l>US task</th><th class=l>DS task</th><th class=l>protocol</th><th>shots</th>"
            "<th class=l>frontier</th>"
            + "".join(f"<th title='{_e(t)}'>{h} [{level}]</th>" for _, h, t, _, _ in BOOTSTRAP_PARAMS)
            + "<th title='resamples whose fit was usable, of those drawn'>usable resamples</th>"
            "<th class=l>note</th></tr>")
    missing = (f" {no_iv} of {len(wide)} group &times; frontier rows have no interval (the note says why)."
               if no_iv else "")
    note = resolution_note(boot).removeprefix("note: ")      # as `meta-study bootstrap` says it, as a sentence
    note = f" {_e(note[:1].upper() + note[1:])}." if note else ""
    table_file = "bootstrap.csv" if (root / "bootstrap.csv").exists() else "bootstrap.parquet"
    more = (f"<p class=note>&hellip; and {len(groups) - max_groups} more groups ({table_file} has them "
            "all).</p>" if len(groups) > max_groups else "")
    return ("<h2>Parameter uncertainty (bootstrap)</h2><p class=note>The paper's Eq. 1 on each frontier the bootstrap "
            f"ran on ({frontiers}), fitted to each group's fitting models (those below the hold-out line): the value "
            f"is that fit, and the brackets give the {level} percentile interval [low-high] of the same fit on "
            f"{b_text} resamples of the group's fitting models (drawn with replacement, a frontier's points found "
            "again in each, all of them on 'all'; widened where needed to hold the value). It says how uncertain the law's parameters are on these "
            "models, not where a new model will land (not a prediction interval: those are the answers' brackets), "
            "and it is the paper's fit, not the headline. k and &alpha; are unitless; e<sub>IR</sub> (the "
            "irreducible DS error) and the saturation (100% &minus; e<sub>IR</sub>, the DS accuracy at 100% US "
            f"accuracy) are in percent.{missing}{note}</p>"
            f"<div class=tw><table class=sortable><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            + more)


def _natural(p: Path) -> list[Any]:
    """Sort key that orders numbers in names by value ("f20_up_fewshot_5" before "..._10")."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header, or None when it is not a readable PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _table_links(root: Path) -> list[tuple[str, str]]:
    """(link, note) per table of ``root``: the CSV copy, or the Parquet file when too big for one."""
    out = []
    for sub in ("", "correlations/"):
        d = root / sub if sub else root
        for p in sorted(d.glob("*.parquet")) if d.exists() else []:
            csv = p.with_suffix(".csv")
            out.append((f"{sub}{csv.name}", "") if csv.exists() else (f"{sub}{p.name}", " (Parquet only: more rows than the CSV copies are written for)"))
    return out


def _img(root: Path, rel: str, alt: str) -> str:
    """A figure at its printed size (1 figure inch = 1 CSS inch: its text reads at the point sizes
    it was drawn with), shrunk only where wider than the page; a click opens the full image."""
    from .analysis.figures import SAVE_DPI

    size = png_size(root / rel)
    dims = f" width={round(size[0] * 96 / SAVE_DPI)} height={round(size[1] * 96 / SAVE_DPI)}" if size else ""
    return f"<a href='{_e(rel)}'><img src='{_e(rel)}' alt='{_e(alt)}'{dims} loading='eager'></a>"


def render_report(analysis: "Analysis", results_dir: str | os.PathLike[str], *, title: str = "meta-study report",
                  provenance: Mapping[str, Any] | None = None, threshold: float = 0.1) -> str:
    """Write ``results_dir/index.html`` for ``analysis``: its tables come from the
    :class:`~meta_study.analysis.results.Analysis`, its figures from ``results_dir/figures``
    (where :class:`~meta_study.analysis.results.ResultsDir` wrote them).

    Returns:
        The path of the page.
    """
    root = Path(results_dir)
    fits = analysis.fits
    heads = headlines(fits)
    if analysis.options.fits:
        # the stop-paying points in the rows were found with the fits' own threshold: the text says
        # that one ("+1 US pt buys < 0.1 DS pt" beside a point found at 0.5 was a claim no row made)
        threshold = analysis.options.fit.selection.payoff_threshold
    figs = root / "figures"
    prov = {**analysis.provenance, **dict(provenance or {})}
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}{EXPLORER_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class=prov>" + " &middot; ".join(f"{_e(k)}: {_e(v)}" for k, v in prov.items())
             + "</p>"]
    n_groups = fits.groupby(list(GROUP), dropna=False).ngroups
    n_trusted = int(heads["trusted"].sum())
    # shots by value (1, 5, 10, 25), not as text (1, 10, 25, 5)
    group_pngs = sorted((figs / "groups").glob("*.png"), key=_natural) if (figs / "groups").exists() else []
    # only the figures of groups in these fits: a group whose runs were deleted since an earlier
    # command drew it left its figure in figures/groups, and the page showed it as one of its own
    slugs = {_slug(r) for r in heads.to_dict("records")}
    group_pngs = [p for p in group_pngs if p.stem in slugs]
    unfit = _failed_html(fits)
    quantile = _quantiles(heads)
    level = _levels(heads)      # "90%": the interval the figures shade, named in their alt text
    by_slug = {_slug(r): r for r in heads.to_dict("records")}
    # the question across groups, after the answers, in their own words (the terminal prints the same line)
    summary = payoff_summary(heads.to_dict("records"), threshold) if len(heads) else ""
    parts.append(f"<h2>Answers</h2><p class=note>{n_groups} group{'s' if n_groups != 1 else ''}, {n_trusted} with a "
                 f"trusted answer.{_held_out_html(heads)}{unfit} Per group, "
                 "every law is fitted to every frontier estimator of the visible models; the headline is the "
                 f"{_e(quantile)} of their predictions at each US accuracy"
                 # why a low quantile: said only of one (rows written before 2026-12-06 are the median)
                 + ("" if "median" in quantile else " (the laws that keep rising overshoot the next models more "
                    "often than the flat ones undershoot them)")
                 # the fits to every model (frontier "all") are made too, for the paper's comparison:
                 # the figures' footers say "5 laws x 6 frontiers" beside "0.4 quantile of 25 law x frontier fits"
                 + (". The fits to every model (the frontier &ldquo;all&rdquo;) are never among them: they estimate "
                    "the typical model, not the best" if bool((fits["frontier"] == "all").any()) else "")
                 + ". It is trusted when its own back-test error "
                 "(fit below a US cut, predict the frontier above it), the mean "
                 "over the cuts or each of the latest two cuts', is within the tolerance, and its curve at the best visible model "
                 "lies within the tolerance of the best DS accuracy seen (it reaches the edge of its data); warnings "
                 "describe the data and never withhold an answer by themselves "
                 "(hover a label). Accuracies in percent, errors and slopes in accuracy points (pt). "
                 # a trusted step reads "+1 US pt: 89.9% DS [89.2%-90.6%]": the brackets were said nowhere
                 f"Brackets give the {_levels(heads)} interval [low-high] of what a model there will measure "
                 f"(a prediction interval); \"trend low-high\" in them, in a trusted answer within the tested "
                 f"horizon, is the trend's {_levels(heads)} band (where the frontier's law lies, without one model's "
                 "scatter about it). " + HORIZON_NOTE
                 + "Definitions: docs/analysis.md.</p>" + _verdict(heads)
                 + _answers_html(heads, threshold, {p.stem for p in group_pngs})
                 + (f"<p class=summary><b>{_e(summary)}</b></p>" if summary else ""))
    parts.append("<h2>Headline and the paper's fit</h2>" + _table_html(fits))
    if (figs / "fits_grid.png").exists():
        parts.append("<h2>DS vs US accuracy</h2>"
                     + _img(root, "figures/fits_grid.png", _figure_alt("fits_grid", by_slug, level)))
    parts.append(explorer_html(heads, analysis.points))
    parts.append(_hover_html(heads, analysis.points))
    if group_pngs:
        # the groups beyond --max-group-figures have none: said, as the hover view and the CLI say it
        few = (f"<p class=note>Figures of {len(group_pngs)} of {len(heads)} groups (the first in the order of "
               "fits.csv; <code>meta-study fit STORE --out DIR --max-group-figures N</code> draws more, into a directory "
               "of its own, never a refit's version); an answer with a figure links "
               "to it.</p>"
               if len(group_pngs) < len(heads) else "")
        parts.append("<h2>Per task</h2>" + few + "<div class=figs>" +
                     "".join(f"<span id='figure-{_e(p.stem)}'>"
                             f"{_img(root, f'figures/groups/{p.name}', _figure_alt(p.stem, by_slug, level))}</span>"
                             for p in group_pngs) + "</div>")
    if (figs / "sensitivity.png").exists():
        parts.append("<h2>Sample-size sensitivity</h2><p class=note>" + _sensitivity_rows(analysis.sensitivity)
                     + " (the paper's Fig. 3): fitting and "
                     "prediction error of Eq. 1, in accuracy points, on each frontier estimator on random subsamples "
                     "of the models (each point the median over groups of a group's mean over trials, bars the median "
                     "sd over trials: one group's miss does not move it)." + _sensitivity_left(analysis.sensitivity)
                     + _sensitivity_text(analysis.sensitivity, quantile) + "</p>"
                     + _img(root, "figures/sensitivity.png", _figure_alt("sensitivity", by_slug, level)))
    boot_fit = analysis.options.bootstrap.fit if analysis.options.bootstrap is not None else analysis.options.fit
    parts.append(_bootstrap_html(analysis.bootstrap, boot_fit.alpha_max, root))
    if (figs / "params_vs_shots.png").exists():
        parts.append("<h2>Parameters vs shots</h2><p class=note>Eq. 1's parameters on the hull vertices (solid) and "
                     "on all points (dashed) per DS task; a hollow marker is a value at its bound (the constraint, "
                     "not an estimate).</p>"
                     + _img(root, "figures/params_vs_shots.png", _figure_alt("params_vs_shots", by_slug, level)))
    heat = sorted(figs.glob("f2*.png"), key=_natural) if figs.exists() else []   # 1, 5, 10, 25 shots
    if heat:
        parts.append("<h2>Correlations</h2><p class=note>Spearman rank correlation of DS accuracy between DS tasks "
                     "(per US task, protocol and shots), and of US with DS accuracy (grey: no correlation: no such pair, "
                     "fewer than 3 models, or one accuracy for every model; the tables' note column says which).</p>"
                     "<div class=figs>" + "".join(_img(root, f"figures/{p.name}", _figure_alt(p.stem, by_slug, level)) for p in heat) + "</div>")
    parts.append("<h2>Tables</h2><p class=note>Each table as CSV, a copy of the Parquet record beside it. Unlike "
                 "this page, the tables keep fractions: an accuracy of 0.853 is 85.3%, an error of 0.012 is 1.2 pt "
                 "(docs/analysis.md defines every column).</p><ul>" + "".join(
                     f"<li><a href='{_e(t)}'>{_e(t)}</a>{_e(what)}</li>" for t, what in _table_links(root)) + "</ul>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    out = root / "index.html"
    from .analysis.results import ResultsDir

    results = ResultsDir(root)
    with results.locked():     # no other command's write between the check and the page
        _check_unchanged(results, analysis)
        tmp = root / f".index.html.tmp-{os.getpid()}"
        try:
            tmp.write_text("\n".join(parts), encoding="utf-8")
            os.replace(tmp, out)
        except BaseException as e:
            tmp.unlink(missing_ok=True)   # a full disk left a half-written temporary per try
            if isinstance(e, OSError) and not e.filename:   # "[Errno 28] No space left on device", naming no file
                from .analysis.outputs import named_os_error

                raise named_os_error(e, out) from e
            raise
    return str(out)


def _check_unchanged(results: Any, analysis: "Analysis") -> None:
    """Raise a one-line UserError when ``results.json`` no longer records ``analysis``'s parts as
    of its store version: another command wrote the directory after this one did (its page would
    state one version's numbers over another's tables and figures)."""
    from .errors import UserError

    if not analysis.snapshot_id or not (results.path / "results.json").exists():
        return
    recorded = results.manifest()["parts"]
    for part in analysis.options.parts():
        have = recorded.get(part)
        if have is not None and (have.get("store_snapshot") != analysis.snapshot_id or have.get("incomplete")):
            raise UserError(f"{results.path}: another command wrote {part} (store version "
                            f"{have.get('store_version')}) while this report was made; no index.html was written, "
                            "run the report again")
