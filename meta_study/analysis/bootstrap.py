"""Bootstrap confidence intervals of Eq. 1's parameters per frontier (the paper's pair by default).

A pure function of one group and a seed (:mod:`.resampling`): the Ray path and the serial path
give the same numbers bit for bit. The headline's own intervals come from the selection
(``fits.parquet``); these are the paper's Eq. 1 on the hull vertices and on all points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..defaults import BOOTSTRAP_LEVEL, BOOTSTRAP_SAMPLES, MAX_SAMPLES, MIN_SAMPLES
from .fitting import FitOptions, prepare
from ..errors import OPTION_RANGES, Range
from .frontiers import check_frontier_names
from .groups import GROUP_COLUMNS
from .hull import SubsetHulls
from .powerlaw import ALPHA_MIN, fit_power_laws
from .resampling import BOOTSTRAP_STREAM, PARAMS, draw_problems, group_rng, serially, whole_number


#: Drawn points per block of resamples fitted together (:func:`bootstrap_group`): ~4 MB of drawn
#: indices; ~65 MB at the peak with every frontier's points and the fits' work (measured on 1,200
#: fitting points, 2026-12-06), whatever ``samples``.
BOOTSTRAP_BLOCK_POINTS = 1 << 19
#: The most resamples per group is :data:`meta_study.defaults.MAX_SAMPLES` (the command line's
#: ``--samples`` too): a library call with a typo of extra zeros ran until killed.

BOOTSTRAP_COLUMNS = (*GROUP_COLUMNS, "frontier", "param", "estimate", "lo", "hi", "level", "samples", "n_ok", "status")


@dataclass(frozen=True)
class BootstrapOptions:
    """B resamples (with replacement) of the fitting points; percentile intervals at ``level``,
    widened where needed to reach the estimate, for Eq. 1 on each of ``frontiers`` (the paper's
    pair by default: the headline's own intervals are in ``fits.parquet``). ``samples`` and
    ``seed`` are whole numbers (``1e3`` is 1000), ``samples`` 10 to :data:`MAX_SAMPLES`; fewer
    samples than :func:`min_samples` (41 at 0.95) give intervals narrower than their level
    (:func:`resolution_note` says so)."""

    samples: int = BOOTSTRAP_SAMPLES
    level: float = BOOTSTRAP_LEVEL
    seed: int = 0
    fit: FitOptions = field(default_factory=FitOptions)
    frontiers: tuple[str, ...] = ("vertices", "all")

    def __post_init__(self) -> None:
        # 1e3 or a numpy integer (a value read from a table): `range(1e3)` failed in the resampling,
        # in a Ray worker, and an np.int64 failed writing results.json, after all the work
        object.__setattr__(self, "samples", whole_number("samples", self.samples, "resamples per group"))
        object.__setattr__(self, "seed", whole_number("seed", self.seed, "the master seed"))
        # each once, as the CLI's --frontiers: ("vertices", "vertices") fitted every draw twice and
        # counted it twice (n_ok 40 of 20 resamples; each row twice); one name is a tuple of it
        object.__setattr__(self, "frontiers", check_frontier_names(self.frontiers))
        Range(MIN_SAMPLES, MAX_SAMPLES).check("samples", self.samples, "resamples per group")
        # numpy seeds are >= 0: -1 (a script's --seed -1) was numpy's "expected non-negative integer" traceback
        Range(0).check("seed", self.seed, "the master seed")
        OPTION_RANGES["level"].check("level", self.level)


def bootstrap_group(key: Sequence[Any], us_accuracy: np.ndarray, ds_accuracy: np.ndarray,
                    options: BootstrapOptions = BootstrapOptions()) -> pd.DataFrame:
    """Percentile bootstrap intervals for k, alpha, e_ir and saturation of Eq. 1 on each frontier.

    Each resample draws the fitting points with replacement, recomputes every frontier inside the
    draw and fits it. The estimate is the fit on the fitting points themselves; where it lies
    outside the resamples' percentile interval, the interval is widened to reach it.

    Returns:
        One row per (frontier, param): :data:`BOOTSTRAP_COLUMNS`; ``n_ok`` counts usable resamples
        and ``status`` is the status of the fit on the fitting points (a group too small to fit
        keeps its rows, NaN, with that status). ``lo`` and ``hi`` are NaN where no resample is
        usable, or where every usable one fitted the estimate's own points (no variation measured).
    """
    p = prepare(us_accuracy, ds_accuracy, options.fit)
    pool = p.fit_idx
    rng = group_rng(options.seed, key, BOOTSTRAP_STREAM)
    hulls = SubsetHulls(p.us, p.ds, nondecreasing=options.fit.nondecreasing)
    m = len(options.frontiers)
    est_problems = draw_problems(p, pool, options.frontiers, hulls)    # in options.frontiers' order
    ests = fit_power_laws([1.0 - fu for _, fu, _ in est_problems], [1.0 - fd for _, _, fd in est_problems],
                          loss=options.fit.loss, alpha_max=options.fit.alpha_max)
    # The resamples are drawn, fitted and reduced to their parameters a block at a time, in the
    # order one stream draws them (the same draws as all at once): held all at once, every drawn
    # index and every frontier's points of every resample were in memory together, ~3 MB per 100
    # resamples of 1,000 fitting points (6.7 GB at --samples 100000 on a 1,200-model group, per task)
    per_block = max(1, BOOTSTRAP_BLOCK_POINTS // max(1, pool.size))
    vals: list[list[list[float]]] = [[] for _ in range(m)]     # frontier -> usable resamples' params
    same = [True] * m      # every usable resample of frontier j fitted the estimate's own points
    done = 0
    while done < options.samples:
        size = min(per_block, options.samples - done)
        draws = [rng.choice(pool, size=pool.size, replace=True) if pool.size else pool for _ in range(size)]
        done += size
        problems = [pr for s in draws for pr in draw_problems(p, s, options.frontiers, hulls)]
        fits = fit_power_laws([1.0 - fu for _, fu, _ in problems], [1.0 - fd for _, _, fd in problems],
                              loss=options.fit.loss, alpha_max=options.fit.alpha_max)
        for i, f in enumerate(fits):
            if not f.usable:
                continue
            j = i % m              # frontier j of each resample
            vals[j].append([float(getattr(f, param)) for param in PARAMS])
            if same[j]:
                (_, eu, ed), (_, fu, fd) = est_problems[j], problems[i]
                same[j] = _same_points(eu, ed, fu, fd)
    alpha_tail = (1.0 - options.level) / 2.0
    rows = []
    for j, frontier in enumerate(options.frontiers):
        est = ests[j]
        boot = np.array(vals[j], dtype=float).reshape(-1, len(PARAMS))
        # Every usable resample fitted the very points of the estimate (3 fitting points: a resample
        # fits only when it draws all three, and then reproduces the estimate): the resamples measured
        # no variation, and "alpha 2.62 [2.62, 2.62]" read as a precise alpha. No interval then.
        no_spread = bool(len(boot)) and same[j]
        for c, param in enumerate(PARAMS):
            vals_p = boot[:, c]
            e = float(getattr(est, param)) if est.usable else math.nan
            lo = hi = math.nan
            if vals_p.size and not no_spread:
                lo, hi = (float(v) for v in np.quantile(vals_p, [alpha_tail, 1 - alpha_tail]))
                # The estimate can lie outside the resamples' percentiles: with few resamples (10:
                # the 2.5% and 97.5% ends lie between the two most extreme; it fell outside in one
                # row of 25 of the example tables, none at 200), or at a low --level, since a
                # resample's hull lies on or below the data's (its points are a subset) and the
                # vertices' resamples lean to a higher e_ir. "k 0.48 [0.71, 26.5]" read as a broken
                # interval; it is widened to reach its estimate, never narrowed.
                if math.isfinite(e):
                    lo, hi = min(lo, e), max(hi, e)
            rows.append({**dict(zip(GROUP_COLUMNS, key)), "frontier": frontier, "param": param,
                         "estimate": e, "lo": lo, "hi": hi, "level": options.level, "samples": options.samples,
                         "n_ok": int(vals_p.size), "status": est.status})
    return pd.DataFrame(rows, columns=list(BOOTSTRAP_COLUMNS))


def _same_points(us_a: np.ndarray, ds_a: np.ndarray, us_b: np.ndarray, ds_b: np.ndarray) -> bool:
    """Whether two fitting problems hold the same set of (US, DS) points (repeats and order aside)."""
    a = np.unique(np.column_stack([us_a, ds_a]), axis=0)
    b = np.unique(np.column_stack([us_b, ds_b]), axis=0)
    return a.shape == b.shape and bool(np.array_equal(a, b))


# How many resamples a percentile interval needs. np.quantile (linear) puts the tail quantile
# p = (1 - level) / 2 at position p * (B - 1) among the B sorted usable resamples (0 = the lowest):
# below position 1 each end lies between the two most extreme resamples, and the interval is
# narrower than its level says (from the lowest resample to the highest, 10 resamples hold about
# (B - 1) / (B + 1) = 82% of the distribution, not 95%). p * (B - 1) >= 1 puts at least one
# resample beyond each end: B >= 1 + 2 / (1 - level), 41 at 95%, 21 at 90%, 201 at 99%.
def min_samples(level: float) -> int:
    """The fewest usable resamples whose percentile interval at ``level`` (a fraction) has a
    resample beyond each end: 41 at 0.95 (the block comment above says why)."""
    return math.ceil(1 + 2 / (1 - level) - 1e-9)   # 1e-9: 2 / (1 - 0.95) is 40.000000000000036


def resolution_note(table: pd.DataFrame) -> str:
    """One line saying that the intervals of a bootstrap table (:data:`BOOTSTRAP_COLUMNS`) rest on
    too few resamples for their level (:func:`min_samples`), or "" when none does: ``--samples 10``
    at the default 95% gave intervals narrower than 95%, said nowhere. Counts the intervals (per
    group and frontier) of fewer usable resamples (``n_ok``) when ``samples`` were enough."""
    if table.empty or not {"level", "samples", "n_ok", "lo", "hi", "param"} <= set(table.columns):
        return ""
    t = table[(table["param"] == "alpha") & np.isfinite(table["lo"].astype(float))
              & np.isfinite(table["hi"].astype(float))]
    if t.empty:
        return ""
    level = float(t["level"].iloc[0])
    need, samples = min_samples(level), int(t["samples"].min())
    pct = f"{100 * level:g}%"
    if samples < need:
        return (f"note: {samples} resamples per group are too few for {pct} intervals: each end lies between the "
                f"two most extreme resamples, and the intervals are narrower than {pct}; --samples {need} or more "
                "resolves them")
    short = int((t["n_ok"].astype(int) < need).sum())
    if short:
        return (f"note: {short} of {len(t)} intervals rest on fewer than {need} usable resamples, too few for "
                f"{pct}: each of their ends lies between the two most extreme usable resamples, and they are "
                f"narrower than {pct}")
    return ""


def alpha_bound(alpha: float, alpha_max: float) -> float | None:
    """The bound of Eq. 1's alpha that ``alpha`` sits on: ``alpha_max``, or the lower one
    (:data:`~.powerlaw.ALPHA_MIN`, reached when ``k = 0``: the law is flat and alpha is not
    identified; "0.001 [0.001, 0.001]" read as a precise alpha); None where it sits on neither."""
    for b in (alpha_max, ALPHA_MIN):
        if math.isfinite(alpha) and abs(alpha - b) <= 1e-6 * max(1.0, b):
            return b
    return None


def alpha_bound_words(estimate: float, lo: float, hi: float, alpha_max: float,
                      k: float = math.nan) -> tuple[str, str]:
    """Where an alpha row of a bootstrap table sits on a bound, in words: the estimate's ("at its
    bound 10", "" where it sits on none) and the interval's ends' ("interval reaches its bound
    0.001", "" where neither end does). ``meta-study bootstrap`` and the report say them alike."""
    b = alpha_bound(estimate, alpha_max)
    # every bound an end of the interval sits on: "10 [0.001, 10] at its bound 10" left its
    # lower end unsaid, and "[0.001, 10] (interval reaches its bound 0.001)" its upper one
    ends = list(dict.fromkeys(x for x in (alpha_bound(lo, alpha_max), alpha_bound(hi, alpha_max))
                              if x is not None and x != b))
    reach = (f"interval reaches its bound{'s' if len(ends) > 1 else ''} {' and '.join(f'{x:g}' for x in ends)}"
             if ends else "")
    # alpha at its floor is a flat law whatever k (e_US^0.001 is about 1); "k = 0" only where k
    # (the same fit's estimate) is 0: the fitter also stops at the floor with k > 0
    flat = ("k = 0: a flat law" if _on(k, (K_MIN,)) is not None else "a flat law") + ", alpha not identified"
    at = (f"at its bound {b:g}" + (f" ({flat})" if b == ALPHA_MIN else "") if b is not None else "")
    return at, reach


#: The bounds the fitter (:mod:`.powerlaw`) holds Eq. 1's e_ir to: it clips the intercept to
#: [0, 1] (a DS error), and reports a fit there as ``at_bound`` ("e_ir = 0", "e_ir = 1").
E_IR_BOUNDS = (0.0, 1.0)
#: k's only bound in the fitter: k >= 0 (k = 0 is a flat law, e_DS = e_ir whatever the US error).
K_MIN = 0.0


def _on(x: float, bounds: Sequence[float]) -> float | None:
    """The bound of ``bounds`` that ``x`` sits on (to 1e-12: the fitter clips to them exactly, and a
    percentile of resamples all on a bound is that bound), or None."""
    return next((b for b in bounds if math.isfinite(x) and abs(x - b) <= 1e-12), None)


def eir_bound_words(estimate: float, lo: float, hi: float) -> tuple[str, str]:
    """Where an e_ir row of a bootstrap table sits on a bound (:data:`E_IR_BOUNDS`), in words, as
    :func:`alpha_bound_words`: the estimate's and the interval's ends'. "e_ir 0.0 [0.0-0.0],
    saturation 100.0 [100.0-100.0]" on Country211 (DS accuracies ~30-40%) read as a certain 100%
    saturation: the fitter's bound, not an estimate, and the resamples pinned there too."""
    b = _on(estimate, E_IR_BOUNDS)
    ends = list(dict.fromkeys(x for x in (_on(lo, E_IR_BOUNDS), _on(hi, E_IR_BOUNDS)) if x is not None and x != b))
    # said beside alpha's "(interval reaches its bound 10)" by `meta-study bootstrap`: no nested brackets
    reach = (f"interval reaches its bound{'s' if len(ends) > 1 else ''} {' and '.join(f'{x:g}' for x in ends)}, "
             f"{'saturations' if len(ends) > 1 else 'a saturation'} of {' and '.join(f'{100 * (1 - x):g}%' for x in ends)}"
             if ends else "")
    whole = b is not None and _on(lo, (b,)) is not None and _on(hi, (b,)) is not None
    at = (f"at its bound {b:g}{' across its whole interval' if whole else ''}: the saturation "
          f"{100 * (1 - b):g}% is the bound, not an estimate" if b is not None else "")
    return at, reach


def bound_notes(params: Mapping[str, tuple[float, float, float]], alpha_max: float, *,
                alpha: bool = True) -> list[str]:
    """Every bound a (group, frontier) of a bootstrap table sits on, one note each: ``params`` maps
    "k", "alpha" and "e_ir" to (estimate, lo, hi). alpha's (:func:`alpha_bound_words`; left out
    with ``alpha=False``, for ``meta-study bootstrap``, whose line gives them beside alpha's
    interval), e_ir's (:func:`eir_bound_words`), and k's estimate on its bound 0 where alpha's
    words do not already say it (a flat law's alpha sits at its lower bound, and its words say
    "k = 0"; resamples of a flat law reach alpha's lower bound, and its words say that)."""
    nan3 = (math.nan, math.nan, math.nan)
    a_at, a_reach = alpha_bound_words(*params.get("alpha", nan3), alpha_max, k=params.get("k", nan3)[0])
    e_at, e_reach = eir_bound_words(*params.get("e_ir", nan3))
    notes = [f"alpha {a_at}"] if alpha and a_at else []
    notes += [f"alpha's {a_reach}"] if alpha and a_reach else []
    if _on(params.get("k", nan3)[0], (K_MIN,)) is not None and "k = 0" not in a_at:
        notes.append("k at its bound 0: a flat law, alpha not identified")
    notes += [f"e_IR {e_at}"] if e_at else []
    notes += [f"e_IR's {e_reach}"] if e_reach else []
    return notes


def usable_words(n_ok: int, samples: int) -> str:
    """How many resamples of a bootstrap row gave a usable fit: "46 of 200 resamples usable"."""
    return f"{n_ok} of {samples} resamples usable"


#: A failed fit's ``status`` (:class:`~.powerlaw.PowerLawFit`) in words, for a row without a fit.
STATUS_WORDS = {"too_few_points": "fewer than 3 points on this frontier",
                "degenerate": "fewer than 3 distinct US accuracies on this frontier",
                "nonfinite": "the fit gave non-finite values"}


def no_interval_reason(estimate: float, lo: float, hi: float, n_ok: int, samples: int, status: Any) -> str:
    """Why a row of a bootstrap table (:data:`BOOTSTRAP_COLUMNS`) has no interval, in words, or ""
    where it has one; the cases are those :func:`bootstrap_group` leaves NaN: no fit on the
    group's own points (``status`` says why), no usable resample, or every usable one fitted the
    estimate's own points (3 fitting points: no variation measured)."""
    if not math.isfinite(estimate):
        known = isinstance(status, str) and status not in ("", "ok", "at_bound")
        return "no fit: " + (STATUS_WORDS.get(status, status) if known else "no usable fit on the group's points")
    if math.isfinite(lo) and math.isfinite(hi):
        return ""
    if n_ok == 0:
        return f"no interval: none of the {samples} resamples gave a usable fit" if samples else \
            "no interval: no resample gave a usable fit"
    return (f"no interval: every usable resample ({n_ok} of {samples}) drew the very points of the fit (3 "
            "fitting points), so the resamples measured no variation")


def bootstrap(groups: Sequence[Any], options: BootstrapOptions = BootstrapOptions(), *,
              progress: Callable[[str, int, int | None], None] | None = None) -> pd.DataFrame:
    """:func:`bootstrap_group` for every group, serially."""
    frames = serially("bootstrap", bootstrap_group, groups, options, progress)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BOOTSTRAP_COLUMNS))


__all__ = ["BOOTSTRAP_COLUMNS", "BootstrapOptions", "E_IR_BOUNDS", "K_MIN", "MAX_SAMPLES", "STATUS_WORDS", "alpha_bound",
           "alpha_bound_words", "bootstrap", "bootstrap_group", "bound_notes", "eir_bound_words", "min_samples",
           "no_interval_reason", "resolution_note", "usable_words"]
