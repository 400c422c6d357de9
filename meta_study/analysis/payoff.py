"""The calculator: where scaling stops paying, and what US accuracy a DS target needs, for any law.

For a fitted law ``a_DS(u)`` (accuracies as fractions) the DS gain per unit of US accuracy is the
slope ``s(u) = d a_DS / d u``: "DS points per +1 US point".

**Stop paying** at threshold ``t`` (default 0.1: one more US point buys a tenth of a DS point):
the smallest US accuracy ``u*`` past which the slope stays below ``t`` all the way to 100% US,
``u* = inf{u in [0, 1] : s(v) < t for every v in [u, 1)}``.

- ``0.0`` ("0%"): the slope is below ``t`` everywhere; scaling never paid ``t`` per point.
- ``inf`` ("never"): the slope is still at least ``t`` as US accuracy reaches 100%; by the law's own
  account scaling keeps paying (eq1 with ``alpha = 1`` and ``k >= t``, or ``alpha < 1``, for
  example). "As it reaches 100%" is at the grid's last point below it, US error 1e-7: eq1 with
  ``alpha < 1`` whose slope (rising without bound) is still below ``t`` there reads ``0.0``
  (``k = 0.05``, ``alpha = 0.97``: 0.08 DS points per US point at 99.99999% US).

**US needed** for a DS target ``y``: the smallest US accuracy at which the law reaches ``y``.

- ``0.0`` ("0%"): the law is at or above ``y`` already at 0% US (so is a law that falls as US
  rises, which no fit gives, for a ``y`` at its limit).
- ``1.0`` ("100%"): the law reaches ``y`` only in the limit of 100% US (``y`` is its saturation;
  a law that levels off before, eq1-bayes past its US Bayes accuracy, reaches it there).
- ``inf`` ("never"): ``y`` is above everything the law reaches (above its saturation).

NaN is "no answer", never "never": an unusable fit (no value anywhere on the grid), a NaN
``target``, or a threshold that is not above 0. Both were NaN until 2026-12-07, so that a table, a
dashboard or a refit's run could not tell "never" from "not computed"; the interval ends
(``stop_paying_lo/hi``, ``us_needed_lo/hi`` of ``fits.parquet``) were inf for "never" already.

Both are computed on a grid of ``GRID`` US accuracies, dense in log error towards 100% (errors
from 1e-7 to 1, plus exact 0 and 1), then linearly interpolated at the crossing: the result is
within ~0.3% of the US error at that point (0.03 US points at 90% US). The functions take many
fits of one law at once (bootstrap resamples), one row of the grid each: ~40 us a fit.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .laws import LawFit, get_law

GRID = 4000
#: US accuracies of the grid, increasing: 0, then 1 - e for e from 1 down to 1e-7, then 1.
U_GRID = np.concatenate([[0.0], 1.0 - np.geomspace(1.0, 1e-7, GRID)[1:], [1.0]])
DEFAULT_THRESHOLD = 0.1


def _stack(law: str, params: Sequence[Mapping[str, float]], what: str) -> np.ndarray:
    L = get_law(law)
    u = U_GRID[None, :]
    cols = {p: np.array([float(q[p]) for q in params])[:, None] for p in L.params}
    with np.errstate(all="ignore"):
        v = L.slope(cols, u) if what == "slope" else L.predict(cols, u)
    return np.broadcast_to(v, (len(params), U_GRID.size)).astype(float)


def stop_paying_many(law: str, params: Sequence[Mapping[str, float]], threshold: float = DEFAULT_THRESHOLD
                     ) -> np.ndarray:
    """:func:`stop_paying_us` for many parameter sets of one law (fractions; inf = never, NaN = an
    unusable parameter set or a threshold that is not above 0)."""
    if not params:
        return np.zeros(0)
    return stop_paying_from_slopes(_stack(law, params, "slope"), threshold)


def stop_paying_from_slopes(slopes: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                            grid: np.ndarray | None = None) -> np.ndarray:
    """The stop-paying US accuracy of curves given by their slopes on a grid of US accuracies (one
    row per curve; any curve, e.g. the headline's): fractions, ``inf`` ("never") = still paying at
    the grid's end, the grid's start for a curve that never pays on it, NaN = no answer (no slope
    at all on the grid, no grid, or a threshold that is not above 0).

    ``grid`` defaults to :data:`U_GRID`, whose last point (100% US) is a limit and is left out;
    any other grid is taken whole (e.g. one that ends at a back-tested horizon).

    Only the samples are seen: a law's smooth slope is found to the grid's precision (module
    doc), but the headline's secant slope has bumps narrower than a step of :data:`U_GRID`
    (~0.16 US points at 60% US), and a bump back over ``threshold`` between two samples is
    missed (pythia, high_school_chemistry: 0.105 at 61.0% US, 0.089 and 0.085 at the samples
    beside it; the point read 56.8% US, 61.7% on a grid of 1e-5). The answer's grid within the
    data therefore adds an even step of 0.01 US points (``selection.TESTED_STEP``).
    """
    s = np.atleast_2d(np.asarray(slopes, dtype=float))
    if not threshold > 0:   # NaN too: no slope is >= NaN, and every curve read "0%", never paid
        return np.full(s.shape[0], math.nan)
    # one slope per grid point: 10 slopes against U_GRID read as "never", 3 slopes on a grid
    # of 2 US accuracies as a point between them; both silently
    U = U_GRID if grid is None else np.asarray(grid, dtype=float).ravel()
    if s.shape[1] != U.size:
        raise ValueError(f"slopes have {s.shape[1]} value(s) per curve but the grid has {U.size} US accuracies"
                         + (" (U_GRID: pass grid= for another)" if grid is None else ""))
    if grid is None:
        s = s[:, :-1]                                     # the slope at 100% US itself is a limit
        U = U[:-1]
    if U.size == 0:     # no sample: no point (numpy's "argmax of an empty sequence" before)
        return np.full(s.shape[0], math.nan)
    bad = np.isnan(s).all(axis=1)                         # an unusable parameter set
    pays = np.where(np.isnan(s), False, s >= threshold)
    any_pays = pays.any(axis=1)
    last = np.where(any_pays, s.shape[1] - 1 - np.argmax(pays[:, ::-1], axis=1), -1)
    # a curve that never pays on the grid stops paying at its start: 0 on U_GRID, the weakest
    # visible model on a grid of the data (it was 0 there too: "[0.0%-...]" below every model)
    out = np.full(s.shape[0], float(U[0]))
    never = any_pays & (last == s.shape[1] - 1)
    mid = any_pays & ~never
    i = last[mid]
    u0, u1 = U[i], U[i + 1]
    s0, s1 = s[mid, i], s[mid, i + 1]
    with np.errstate(all="ignore"):
        w = np.where(np.isfinite(s0) & (s0 != s1), (s0 - threshold) / (s0 - s1), 0.0)
    # no slope at the next sample (NaN, read as not paying): where it fell below ``threshold`` is
    # not known past the last paying sample, so the next one. Interpolated towards NaN, the point
    # was NaN, read "never" of a curve that stopped paying (slopes 0.5, 0.3, NaN, 0.05, 0.02)
    w = np.where(np.isnan(s1), 1.0, w)
    out[mid] = u0 + np.clip(w, 0.0, 1.0) * (u1 - u0)
    out[never] = math.inf          # still paying at the grid's end: "never"
    out[bad] = math.nan            # no slope at all: no answer (a row of NaN pays nowhere: not "never")
    return out


def _fraction(value: float, name: str) -> float:
    """``value`` as an accuracy fraction, or a ValueError: 80 (a percent) read "never reached" as
    a DS target, and 85 as a US accuracy gave the slope at 100% US (0: "no gain"), both silently,
    where ``predict_fit`` refuses it. NaN stays NaN."""
    v = float(value)
    if math.isinf(v) or v < 0.0 or v > 1.0:
        hint = f" (a percent? give fractions: {v / 100:g}, not {v:g})" if 1.0 < v <= 100.0 else ""
        raise ValueError(f"{name} must be a fraction in [0, 1], got {v:g}{hint}")
    return v


def us_needed_many(law: str, params: Sequence[Mapping[str, float]], target: float) -> np.ndarray:
    """:func:`us_needed` for many parameter sets of one law (fractions; inf = never, NaN = an
    unusable parameter set or a NaN ``target``).

    Raises:
        ValueError: a ``target`` outside [0, 1] (e.g. 80 for 80%).
    """
    target = _fraction(target, "target (a DS accuracy)")
    if not params:
        return np.zeros(0)
    values = _stack(law, params, "predict")
    out = us_needed_from_values(values, target)
    # A target at the law's saturation (to the 1e-12 the values are compared with) is reached where
    # the law stops rising, if it does (eq1-bayes past the US Bayes accuracy, a flat law at 0% US),
    # else only in the limit of 100% US (1.0, the module doc). Read from the values, a steep law
    # within 1e-12 of its limit long before 100% "reached" it there: eq1 with alpha 3 at 99.987% US,
    # alpha 10 at 93.3%, said as reachable below 100%. Not a law that lies above its limit (one
    # that falls to it, k < 0): it reaches the target where its values say, 0% US; it read "100%"
    # for its own limit and "0%" for any target above it (eq1, k = -0.2, e_IR = 0.3: 0.7 and 0.75)
    L = get_law(law)
    with np.errstate(all="ignore"):
        sat = np.array([float(L.saturation({p: float(q[p]) for p in L.params})) for q in params])
        above = (values > target + 1e-12).any(axis=1)
    at = np.flatnonzero((np.abs(sat - target) <= 1e-12) & ~above)
    if at.size:
        s = _stack(law, [params[i] for i in at], "slope")[:, :-1]   # the slope at 100% US itself is a limit
        still = s != 0                                           # rising (or unknown: NaN) there
        flat_tail = ~still[:, -1]
        start = s.shape[1] - np.argmax(still[:, ::-1], axis=1)    # where the trailing run of zero slopes starts
        start = np.where(still.any(axis=1), start, 0)
        lo = U_GRID[np.maximum(start - 1, 0)]                     # it stops rising past this sample
        out[at] = np.where(flat_tail, np.maximum(out[at], np.where(start > 0, lo, 0.0)), 1.0)
    return out


def us_needed_from_values(values: np.ndarray, target: float) -> np.ndarray:
    """The first US accuracy at which curves given by their values on :data:`U_GRID` (one row per
    curve) reach ``target``: fractions, ``inf`` ("never") = no value reaches it, NaN = no answer
    (a curve with no value at all, or a NaN ``target``)."""
    y = np.atleast_2d(np.asarray(values, dtype=float))
    if y.shape[1] != U_GRID.size:   # values on another grid read as U_GRID's first points: a wrong US, silently
        raise ValueError(f"values have {y.shape[1]} value(s) per curve but U_GRID has {U_GRID.size} US accuracies")
    reach = np.where(np.isnan(y), False, y >= target - 1e-12)
    first = np.argmax(reach, axis=1)
    # not reached: "never" (inf), but no answer (NaN) for a curve with no value or a NaN target,
    # which nothing reaches either
    none = np.isnan(y).all(axis=1) | math.isnan(float(target))
    out = np.where(none, math.nan, math.inf)
    some = reach.any(axis=1)
    at0 = some & (first == 0)
    out[at0] = 0.0
    mid = some & (first > 0)
    i = first[mid]
    u0, u1 = U_GRID[i - 1], U_GRID[i]
    y0, y1 = y[mid, i - 1], y[mid, i]
    with np.errstate(all="ignore"):
        w = np.where(y1 != y0, (target - y0) / (y1 - y0), 1.0)
    # no value at the sample before (NaN): reached at the first sample known to reach it, not
    # NaN ("never") from an interpolation towards NaN
    w = np.where(np.isnan(y0), 1.0, w)
    out[mid] = u0 + np.clip(w, 0.0, 1.0) * (u1 - u0)
    return out


def stop_paying_us(fit: LawFit, threshold: float = DEFAULT_THRESHOLD) -> float:
    """The US accuracy (fraction) past which +1 US point buys less than ``threshold`` DS points.

    0.0 when it never paid that much, ``inf`` when it pays up to 100% US ("never"), NaN when the
    fit is unusable or ``threshold`` is not above 0 (no answer).
    """
    if not fit.usable or not threshold > 0:   # NaN too: no slope is >= NaN, so it read "0%", never paid
        return math.nan
    return float(stop_paying_many(fit.law, [fit.params], threshold)[0])


def us_needed(fit: LawFit, target: float) -> float:
    """The smallest US accuracy (fraction) at which the law reaches DS accuracy ``target``.

    0.0 when reached at 0% US, 1.0 when only at 100%, ``inf`` when never (``target`` above all the
    law reaches), NaN when the fit is unusable or ``target`` is NaN (no answer).

    Raises:
        ValueError: a ``target`` outside [0, 1] (e.g. 80 for 80%).
    """
    target = _fraction(target, "target (a DS accuracy)")
    if not fit.usable:
        return math.nan
    return float(us_needed_many(fit.law, [fit.params], target)[0])


def slope(fit: LawFit, us_accuracy: float) -> float:
    """DS points gained per +1 US point at ``us_accuracy`` (a fraction; the derivative of the law).

    Raises:
        ValueError: a ``us_accuracy`` outside [0, 1] (e.g. 85 for 85%).
    """
    u = _fraction(us_accuracy, "us_accuracy")
    return float(fit.slope(np.asarray([u], float))[0])


__all__ = ["DEFAULT_THRESHOLD", "U_GRID", "slope", "stop_paying_from_slopes", "stop_paying_many", "stop_paying_us",
           "us_needed", "us_needed_from_values", "us_needed_many"]
