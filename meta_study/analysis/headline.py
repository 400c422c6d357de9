"""The headline predictor: a low quantile of the laws' predictions, with an interval calibrated on
the back-tests.

Choosing one (law, frontier) per group by its back-test error is mostly noise: within a group the
candidates' back-test ranks barely predict their ranks on held-out models (rank correlation 0.1-0.6
on public tables), so the winner is often a lucky one. The headline is therefore built from all
of them:

- **Members**: every usable candidate on a frontier estimator (every law on ``vertices``,
  ``hull-curve``, ``bins`` and their ``-upper`` variants; never ``all``, which predicts the typical
  model, not the best one).
- **Prediction** ``p(u)``: the pointwise :data:`MEMBER_QUANTILE` (0.4) quantile of the members'
  predicted DS accuracies at US accuracy ``u``, inside the data and beyond it. The laws that keep
  rising overshoot the next models more often than the flat ones undershoot them (the frontier's
  gains slow down sooner than most laws say), so a quantile a little below the median predicts
  held-out models best. The one constant was chosen on 11 tables at once and checked leaving one
  table out: chosen on the other ten, it is 0.4 for 8 of the 11 (0.35 or 0.45 for the others), and
  0.35-0.45 are within 0.01 of each other over the six public zoos (BENCHMARKS.md, "A quantile of
  the members"). With every law, 10 members level off (Eq. 1) and 15 rise to 100% DS (power,
  logit, probit): 0.4 lies on the boundary between the two kinds, the median among the rising
  ones; a subset of ``laws`` changes the mix and what the quantile means. "DS points per US point" at ``u`` is what the US point centred on ``u`` buys,
  ``p(u + 1/2 pt) - p(u - 1/2 pt)`` (a secant: ``p`` has kinks where the member at the quantile
  changes, and a derivative jumps there).
- ``flat``: the best DS accuracy among the visible models, the "already saturated" guess the
  answer is scored against (and the edge trust checks the curve against).
- **Rows written before 2026-12-06** held the members' median discounted towards ``flat`` by the
  back-tests (``discount`` ``w`` < 1: ``flat + w (m(u) - flat)`` beyond the best model, the
  median moved by the same amount as at ``best_us`` at or below it). :meth:`Headline.from_row`
  reads them as they were written (no ``member_quantile`` column: the median), so their
  predictions do not change under them. The discount was dropped: a group's back-test discount
  barely predicted the discount its held-out models needed (rank correlation 0.04 over 595
  groups), and without it the quantile predicts held-out models better on the public zoos.
- **Back-test error** of the headline: each cut predicted by the quantile of the members fitted
  below it; the error is the mean over cuts of the RMSE, as for every candidate.
- **Tested horizon**: how far beyond its best model each cut predicted, in log US error
  (``x = ln(e_best / e_target)``), and the median of that over cuts: half the back-tests reached
  at least this far. A statement past it is an extrapolation and says so.
- **Interval**: ``[p(u) - h(x(u)), max(p(u) + h(x(u)), top(u))]`` where ``x(u) = ln((1 - best_us) / (1 - u))``
  is how far ``u`` lies beyond the best visible model and ``top(u)`` the highest member's
  prediction. From the back-test residuals ``r_i`` and their reaches ``x_i``:
  ``h(x) = q_H max(1, x / H)`` with ``H`` the longest reach and ``q_H`` the empirical ``level``
  quantile of ``|r_i| / max(1, x_i / H)``: the errors the back-tests saw, out to the farthest
  back-test, growing in proportion to the distance past it, so that a far extrapolation gets a
  wide interval, never a confident one. Above, the headline leans low on purpose (the members'
  0.4 quantile); the laws that keep rising say how much more the next models may gain, and the
  highest of them bounds the upper end where that is higher (an emergent jump, a frontier that did
  not slow down). The residuals are against
  measured accuracies, so the test sets' sampling noise is in them; where the DS test-set size
  ``n`` is known or can be read off the accuracies (exact fractions ``k / n``), no half-width is
  below the binomial ``z sqrt(p (1 - p) / n)`` of the predicted accuracy (nor, near 0% or 100%,
  below the Clopper-Pearson bound of a perfect score: :func:`noise_half_width`). Where it is not,
  back-tests that all hit exactly (a task at one DS accuracy) calibrate no width: no interval.
  Rows written before 2026-12-06 (no ``interval_rule``: :data:`LEGACY_INTERVAL_RULE`) keep the
  symmetric ``p(u) +- max(q_H max(1, x / H), q_M max(1, x / M))`` they stated (``M`` the median
  reach): its term past the median reach made it too wide on eight of 11 tables.

Measured on 11 tables (BENCHMARKS.md; public vision and language-model zoos, derived timm tables,
synthetic families): the headline's median held-out RMSE is 0.57x the flat guess's (geometric mean
over tables; 0.73x over the six public zoos and timm's 5 groups), at or below it on 83% of groups,
and its 90% interval covers 85.9-100% of the hidden frontier points per table, within 85-95% on
eight of the 11 (too wide on the ImageNet testbed, OpenCLIP and RobustBench, 97.5-100%).

A headline row of ``fits.parquet`` (``law == "ensemble"``) carries everything needed to predict:
the members' parameters (``members``, JSON), ``member_quantile``, ``flat``, ``discount`` (1 since
the discount was dropped), ``best_us``, ``horizon_us``, the back-test residuals
(``interval_residuals``, JSON) and ``ds_test_size``;
:meth:`Headline.from_row` rebuilds it.

Cost: a prediction is one evaluation per member (25 at most), ~20 us for a few points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .laws import CLIP, LawFit, get_law

#: The ``law`` (and ``frontier``) of a headline row in ``fits.parquet``.
ENSEMBLE = "ensemble"

#: The headline is this pointwise quantile of its members' predictions. Held-out protocol on 11
#: tables (595 groups), headline median RMSE / the flat guess's, geometric mean over the six public
#: zoos: 0.5 (the median) 0.78, 0.45 0.75, 0.4 0.74, 0.35 0.74, 0.3 0.76, 0.25 0.76; chosen on all
#: tables at once, and 0.4 again on 8 of 11 when chosen leaving each table out (BENCHMARKS.md).
MEMBER_QUANTILE = 0.4

#: ``member_quantile`` of a headline row written before it was stored (2026-12-06): the median.
LEGACY_QUANTILE = 0.5

#: How a headline row's interval is built (its ``interval_rule`` column): the back-tests' errors
#: out to the longest back-test, growing in proportion to the distance past it, and up to the
#: highest member's prediction above (2026-12-06; BENCHMARKS.md "The interval's upper end").
INTERVAL_RULE = "longest+members"

#: ``interval_rule`` of a row written before it was stored: symmetric, growing past the longest and
#: past the median back-test reach.
LEGACY_INTERVAL_RULE = "reaches"


def empirical_quantile(scores: Sequence[float], level: float) -> float:
    """The ``ceil(n level)``-th smallest of ``n`` scores (the sample ``level`` quantile, no
    interpolation); NaN without scores."""
    s = np.sort(np.asarray(scores, dtype=float))
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan
    return float(s[min(s.size, max(1, math.ceil(s.size * level))) - 1])


#: Half the US step of a slope: "+1 US point buys" is the change over the point centred on u.
HALF_POINT = 0.005


def point_secant(curve: Any, us_accuracy: np.ndarray) -> np.ndarray:
    """``(c(u + 1/2 pt) - c(u - 1/2 pt)) / 1 pt``: DS points per US point of ``curve`` (US
    fractions -> DS fractions, any leading shape) over the US point centred on each ``u``, the
    ends kept within [0, 1] (at 100% US: the last half point). Two evaluations of the curve."""
    u = np.asarray(us_accuracy, dtype=float)
    lo, hi = np.clip(u - HALF_POINT, 0.0, 1.0), np.clip(u + HALF_POINT, 0.0, 1.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return (np.asarray(curve(hi), float) - np.asarray(curve(lo), float)) / (hi - lo)


def distance(us_accuracy: np.ndarray, best_us: float) -> np.ndarray:
    """``x(u)``: how far ``u`` lies beyond ``best_us`` in log US error (0 at or below it, inf at 100%)."""
    u = np.asarray(us_accuracy, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(max(1.0 - best_us, 1e-12) / np.clip(1.0 - u, 0.0, None))
    # at or below the best model is no distance, also where its US error is below the 1e-12 floor
    # (a best model at 100% US: its own accuracy was infinitely far, the interval there [0%-100%])
    return np.where(np.isnan(x), np.nan, np.where(u <= best_us, 0.0, np.maximum(x, 0.0)))


def half_width(x: np.ndarray, residuals: Sequence[Sequence[float]], level: float,
               rule: str = INTERVAL_RULE) -> np.ndarray:
    """The interval's half-width at distances ``x`` (log US error beyond the best model), from
    back-test (|residual|, reach) pairs; see the module doc. NaN without residuals.

    ``q_H max(1, x / H)`` (:data:`INTERVAL_RULE`, since 2026-12-06) or, for rows written before
    (:data:`LEGACY_INTERVAL_RULE`), ``max(q_H max(1, x / H), q_M max(1, x / M))``: ``H`` is the
    longest reach of any target (not the tested horizon, :func:`tested_reach`: the median over
    cuts of each cut's farthest), ``M`` the median reach of the targets, and ``q_R`` the empirical
    ``level`` quantile of ``|r| / max(1, reach / R)``. With no reach at all (every target at the
    best model's US accuracy), any distance beyond it is infinitely uncertain.
    """
    x = np.asarray(x, dtype=float)
    if not len(residuals):
        return np.full(x.shape, np.nan)
    pairs = np.asarray(residuals, dtype=float)
    r, reach = pairs[:, 0], pairs[:, 1]
    positive = reach[reach > 0]
    if positive.size == 0:
        return np.where(x > 0, np.inf, empirical_quantile(r, level))
    reaches = (float(positive.max()),) if check_interval_rule(rule) == INTERVAL_RULE \
        else (float(positive.max()), float(np.median(positive)))
    out = np.zeros(x.shape)
    for R in reaches:
        q = empirical_quantile(r / np.maximum(1.0, reach / R), level)
        with np.errstate(invalid="ignore"):
            out = np.maximum(out, q * np.maximum(1.0, x / R))
    return out


def check_band(band: str) -> str:
    """``band`` if it is one of :data:`BANDS`, else a ValueError naming it."""
    if band not in BANDS:
        raise ValueError(f"band {band!r} is not one of {', '.join(map(repr, BANDS))}")
    return band


def check_interval_rule(rule: str) -> str:
    """``rule`` if it is one this version knows (a row's ``interval_rule``), else a ValueError naming it."""
    if rule not in (INTERVAL_RULE, LEGACY_INTERVAL_RULE):
        raise ValueError(f"interval_rule {rule!r} is not one this meta-study knows "
                         f"({INTERVAL_RULE!r} or {LEGACY_INTERVAL_RULE!r}); a newer version wrote the row?")
    return rule


def tested_reach(residuals: Sequence[Sequence[float]]) -> float:
    """The tested horizon (log US error; 0 for none): the median over back-test cuts of how far
    each cut predicted beyond its best model, so that half the cuts reached at least this far.
    The single longest reach (the earliest cut's) vouches for too little to be the horizon.
    ``residuals`` are (|residual|, reach, cut) triples; pairs count as one cut."""
    if not len(residuals):
        return 0.0
    arr = np.asarray(residuals, dtype=float)
    cut = arr[:, 2] if arr.shape[1] > 2 else np.zeros(arr.shape[0])
    farthest = [float(arr[cut == c, 1].max()) for c in np.unique(cut)]
    return max(0.0, float(np.median(farthest)))


def latest_cut_errors(residuals: Sequence[Sequence[float]], k: int = 2) -> tuple[float, ...]:
    """The RMSE of each of the latest ``k`` back-test cuts, earliest first, from (|residual|,
    reach, cut) triples; fewer where the group has fewer cuts (pairs count as one cut)."""
    if not len(residuals) or k <= 0:     # k = 0: none ([-0:] read every cut)
        return ()
    arr = np.asarray(residuals, dtype=float)
    cut = arr[:, 2] if arr.shape[1] > 2 else np.zeros(arr.shape[0])
    return tuple(float(np.sqrt(np.mean(arr[cut == c, 0] ** 2))) for c in np.unique(cut)[-k:])


def latest_cut_error(residuals: Sequence[Sequence[float]]) -> float:
    """The RMSE of the latest back-test cut (the one fitted to the most models, predicting the
    frontier just above them: the held-out split itself at a smaller scale), from (|residual|,
    reach, cut) triples; NaN without residuals. Pairs count as one cut."""
    last = latest_cut_errors(residuals, 1)
    return last[0] if last else math.nan


def estimate_test_size(accuracies: np.ndarray, max_size: int = 200_000) -> float:
    """The test-set size behind accuracies measured as ``k / n`` on one test set: the least common
    multiple of their reduced denominators, when every value is such a fraction (to 1e-9) and the
    result is at most ``max_size``; NaN otherwise (rounded or averaged values say nothing).

    NaN too when that is a power of ten: it is what values rounded to that many decimals give
    (timm's percents to 0.001 gave 100,000 for ImageNet-A's 7,500 images; 0.3 and 0.5 typed by
    hand gave 10, a 26-point floor). A test set of exactly 10^k images is then unknown, as any
    size that cannot be told from rounding; 50,000 (ImageNet) stays: rounding to 5 decimals gives
    odd last digits, k / 50,000 never does. Likewise for any divisor of a power of ten that too
    few values back (0.4 alone gave 5; 0.52 and 0.54 gave 50)."""
    from fractions import Fraction

    n, seen = 1, set()
    for v in np.unique(np.asarray(accuracies, dtype=float)):
        if not np.isfinite(v):
            continue
        f = Fraction(float(v)).limit_denominator(max_size)
        if abs(float(f) - v) > 1e-9:
            return math.nan
        n = math.lcm(n, f.denominator)
        if f.denominator > 1:
            seen.add(f)
        if n > max_size:
            return math.nan
    # the values that are evidence: distinct fractions, not distinct floats (three chance-level
    # accuracies 0.25 +- 1e-16, as averaging leaves them, were three values of 1/4: a test set of
    # 4 examples and an interval floor of +-36 points on every step)
    distinct = len(seen)
    if n <= 1 or 10 ** round(math.log10(n)) == n:
        return math.nan
    # n divides 10^d (n = 10^d / m): values rounded to d decimals give it when every one of them
    # happens to be a multiple of m in its last digits, with chance about m^-distinct. Believed
    # only where that chance is below 1e-3: one DS accuracy of 0.4 (or 0.52 and 0.54) gave a test
    # set of 5 (50) examples, an interval floor of +-36 (+-12) points; k / 50,000 over 10 or
    # more values (ImageNet) stays
    d = next((k for k in range(1, 20) if 10 ** k % n == 0), None)
    if d is not None and distinct * math.log10(10 ** d // n) < 3:
        return math.nan
    return float(n)


def noise_half_width(pred: np.ndarray, test_size: float, level: float) -> np.ndarray:
    """The binomial floor of an interval: ``z sqrt(p (1 - p) / n)``, ``z`` the normal quantile of
    ``level``, and never below ``1 - ((1 - level) / 2)^(1 / n)``, the Clopper-Pearson ``level``
    bound of a perfect (or zero) score on ``n`` examples; 0 where the test-set size is unknown. A
    measured accuracy cannot be predicted more precisely than the sampling noise of its test set.
    The Wald term alone vanished at a predicted 0% or 100% (a task at 100% DS on 1000 examples
    read [100.0%-100.0%]; 1000 of 1000 right bounds it at 99.7%); it is below the perfect score's
    bound only within about 3 / n of either end."""
    if not (math.isfinite(test_size) and test_size > 0):
        return np.zeros(np.shape(pred))
    from scipy.special import ndtri

    p = np.clip(np.asarray(pred, dtype=float), 0.0, 1.0)
    edge = 1.0 - ((1.0 - level) / 2.0) ** (1.0 / test_size)
    return np.maximum(float(ndtri(0.5 + level / 2.0)) * np.sqrt(p * (1.0 - p) / test_size), edge)


#: A residual half-width below this (a ten-thousandth of an accuracy point) is the fitter's
#: numerical zero: every back-test target was met exactly (a task at one DS accuracy, or at 100%
#: DS above every cut). It calibrates no width, and without a test-set size no interval is stated.
NO_SPREAD = 1e-6


def member_predictions(fits: Sequence[LawFit], us_accuracy: np.ndarray) -> np.ndarray:
    """The members' predicted DS accuracies at ``us_accuracy``: (members, points), each within
    ``laws.CLIP`` of 0% or 100% put at that bound. The power, logit and probit laws' transforms
    clip accuracies CLIP (0.01 pt) from the ends, so fitted to a task at 100% DS on every model
    they predict 99.99%, never 100%: their quantile said "99.99% DS [99.98%-100.0%]" there, a
    width the back-tests did not measure (they had met every target)."""
    X = np.stack([f.predict_accuracy(us_accuracy) for f in fits])
    return np.where(X >= 1.0 - CLIP, 1.0, np.where(X <= CLIP, 0.0, X))


def no_spread(residuals: Sequence[Sequence[float]], level: float, rule: str = INTERVAL_RULE) -> bool:
    """The back-tests hit exactly: the residuals' half-width at the best model (the least it is
    anywhere) is below :data:`NO_SPREAD` (see :func:`interval_around`)."""
    return bool(len(residuals)) and bool(half_width(np.zeros(1), residuals, level, rule)[0] < NO_SPREAD)


def interval_around(pred: np.ndarray, us_accuracy: np.ndarray, residuals: Sequence[Sequence[float]],
                    best_us: float, level: float, test_size: float = math.nan, rule: str = INTERVAL_RULE,
                    upper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``pred +- max(half_width(x(u)), binomial floor)`` clipped to [0, 1], the upper end raised
    to ``upper`` (the highest member's prediction, under :data:`INTERVAL_RULE`) where that is
    higher (see the module doc); NaN without residuals, and, where the test-set size is unknown
    (no floor), when the back-tests hit exactly (:func:`no_spread`): they calibrate no width, and
    a 90% interval of width 0 ("[50.0%-50.0%]" for a task at chance) claimed certainty."""
    if not len(residuals):
        return np.full(np.shape(us_accuracy), np.nan), np.full(np.shape(us_accuracy), np.nan)
    half = half_width(distance(us_accuracy, best_us), residuals, level, rule)
    if math.isfinite(test_size) and test_size > 0:
        half = np.fmax(half, noise_half_width(pred, test_size, level))
    elif no_spread(residuals, level, rule):
        half = np.full(np.shape(us_accuracy), np.nan)
    return _band(pred, half, upper)


def _band(pred: np.ndarray, half: np.ndarray, upper: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``[pred - half, max(pred + half, upper)]`` clipped to [0, 1]; NaN where ``half`` is."""
    with np.errstate(invalid="ignore"):
        lo = np.clip(pred - half, 0.0, 1.0)
        hi = np.clip(pred + half, 0.0, 1.0)
        if upper is not None:
            hi = np.fmax(hi, np.clip(upper, 0.0, 1.0))
    return np.where(np.isnan(half), np.nan, lo), np.where(np.isnan(half), np.nan, hi)


#: The bands :func:`~meta_study.analysis.predict_interval` gives: ``prediction``, for the DS
#: accuracy a model at that US accuracy will measure (the interval above), and ``trend``, for the
#: frontier's law there (:func:`trend_around`).
BANDS = ("prediction", "trend")


def trend_around(pred: np.ndarray, us_accuracy: np.ndarray, trend_residuals: Sequence[Sequence[float]],
                 best_us: float, level: float, rule: str = INTERVAL_RULE) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` band for the frontier's law (the trend) at ``us_accuracy``, not for a model's
    measured accuracy: ``p(u) +- h'(x(u))`` clipped to [0, 1], ``h'`` the interval's half-width
    rule (:func:`half_width`) on the **denoised** back-test residuals: each cut's prediction of its
    targets against the final fit's curve at their US accuracies, not against the measured
    frontier points, so a model's scatter about the law is not in them (nor a binomial floor). NaN
    without them (a candidate's row; a row written before 2026-12-07) or where they are all zero.

    Why two bands: a prediction interval calibrated on held-out models must hold their scatter
    about the law too, so against the law itself it is too wide. On the synthetic families of
    ``bench_selection.py`` (s), the law's value at +1, +3 and +5 US points and at the horizon lies
    inside the prediction interval 98-100% of the time in trusted groups, inside this band 84-94%
    (BENCHMARKS.md, "A band for the trend"). Removing the scatter from the prediction interval's
    half-width in quadrature instead held as often, but where the back-tests missed no more than
    the scatter it left a band whose low end was the prediction itself, which held the law 18% of
    the time. It cannot be checked on real tables, where no law is known."""
    if not len(trend_residuals) or no_spread(trend_residuals, level, rule):
        return np.full(np.shape(us_accuracy), np.nan), np.full(np.shape(us_accuracy), np.nan)
    return _band(pred, half_width(distance(us_accuracy, best_us), trend_residuals, level, rule), None)


@dataclass(frozen=True, kw_only=True)     # keywords only: the fields' order changed on 2026-12-06
class Headline:
    """A quantile of the members' predictions (see the module doc). Accuracies are fractions.

    Attributes:
        members: the members' fits (usable ones only).
        names: ``law/frontier`` of each member.
        flat: the best visible DS accuracy.
        best_us: the best visible US accuracy.
        residuals: (|residual|, reach, cut) of every back-test target: how far it missed, how far
            (log US error) beyond its cut's best model it lay, and which cut (empty: no back-test).
        test_size: the DS test-set size (known or estimated; NaN: unknown).
        quantile: the members' pointwise quantile the prediction is (:data:`MEMBER_QUANTILE`).
        discount: ``w`` in [0, 1], the share of the gain over ``flat`` kept beyond the best model;
            1 (none) since 2026-12-06, below 1 only in headline rows written before.
        interval_rule: how the interval is built (:data:`INTERVAL_RULE`;
            :data:`LEGACY_INTERVAL_RULE` for rows written before it was stored).
        trend_residuals: (|residual|, reach, cut) of every back-test target against the final
            fit's curve instead of the measured point (:func:`trend_around`; empty: none).
    """

    members: tuple[LawFit, ...]
    names: tuple[str, ...]
    flat: float
    best_us: float
    residuals: tuple[tuple[float, ...], ...] = ()
    test_size: float = math.nan
    quantile: float = MEMBER_QUANTILE
    discount: float = 1.0
    interval_rule: str = INTERVAL_RULE
    trend_residuals: tuple[tuple[float, ...], ...] = ()

    @property
    def usable(self) -> bool:
        return bool(self.members) and math.isfinite(self.flat)

    @property
    def horizon(self) -> float:
        """The tested horizon, log US error (0: no back-test): see :func:`tested_reach`."""
        return tested_reach(self.residuals)

    @property
    def horizon_us(self) -> float:
        """The US accuracy the back-tests reached to, beyond the best model (NaN: no back-test)."""
        return us_at(self.best_us, self.horizon)

    def _stack(self, u: np.ndarray, what: str) -> np.ndarray:
        # (a row written before 2026-12-06 moves by at most laws.CLIP, 0.01 pt, where its members
        # sat at the clip: member_predictions puts them at the bound)
        return member_predictions(self.members, u) if what == "predict" else np.stack([f.slope(u) for f in self.members])

    def center(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """The members' pointwise :attr:`quantile` (before any discount: the prediction itself
        since the discount was dropped)."""
        u = np.asarray(us_accuracy, dtype=float)
        if not self.members:
            return np.full(u.shape, np.nan)
        return np.quantile(self._stack(u, "predict"), self.quantile, axis=0)

    def _discounted(self, X: np.ndarray, u: np.ndarray, at_best: np.ndarray | float) -> np.ndarray:
        """Curves ``X`` unchanged where the discount is 1 (every headline since 2026-12-06); for a
        row written before, ``X`` (values at ``u``; ``at_best``: their values at ``best_us``) discounted:
        beyond the best model ``flat + w (X - flat)``; at or below it, ``X`` moved by the same
        amount as at ``best_us`` (continuous there). The discount measures how much of the gain
        predicted *beyond* the best model materialised; inside the data the members follow the
        models, and scaling them there squashed the curve towards ``flat`` (a group with w = 0.2
        "stopped paying" at 60% US where its visible models still gained 0.3 DS pt per US pt)."""
        if self.discount == 1.0:
            return X
        with np.errstate(invalid="ignore", over="ignore"):
            beyond = self.flat + self.discount * (X - self.flat)
            inside = X - (1.0 - self.discount) * (np.asarray(at_best, float) - self.flat)
            return np.where(u > self.best_us, beyond, inside)

    def predict_accuracy(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """``p(u)``: the predicted DS accuracy of the best models at ``us_accuracy``."""
        u = np.asarray(us_accuracy, dtype=float)
        if not self.usable:
            return np.full(u.shape, np.nan)
        m_best = float(self.center(np.array([self.best_us]))[0])
        return np.clip(self._discounted(self.center(u), u, m_best), 0.0, 1.0)

    def slope(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """DS points gained per US point at ``us_accuracy``: what the US point centred on it buys,
        ``(p(u + 1/2 pt) - p(u - 1/2 pt)) / 1 pt`` (:func:`point_secant`). Not the derivative:
        the members' quantile has a kink wherever the member at it changes, and its derivative
        jumped there (0.68, 0.05, 0.70 DS pt per US pt at +1, +3, +5 points on one public
        group, whose prediction rose about 0.5 per point throughout)."""
        u = np.asarray(us_accuracy, dtype=float)
        if not self.usable:
            return np.full(u.shape, np.nan)
        return point_secant(self.predict_accuracy, u)

    def member_curves(self, us_accuracy: np.ndarray, what: str = "predict") -> np.ndarray:
        """Each member discounted as the headline is (:meth:`_discounted`) (or its
        slope): (members, points). Their spread describes the disagreement between the laws."""
        u = np.asarray(us_accuracy, dtype=float)
        if what == "predict":
            X = self._stack(u, what)
            at_best = self._stack(np.array([self.best_us]), what)    # (members, 1)
            return self._discounted(X, u, at_best.reshape((-1,) + (1,) * u.ndim))
        return point_secant(lambda v: self.member_curves(v, "predict"), u)   # as the headline's slope

    def interval(self, us_accuracy: np.ndarray | float, level: float = 0.9,
                 band: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
        """The ``level`` prediction interval (lo, hi) at ``us_accuracy`` (see the module doc), or
        with ``band="trend"`` the band for the frontier's law there (:func:`trend_around`)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        check_band(band)
        u = np.asarray(us_accuracy, dtype=float)
        # the headline leans low (the members' 0.4 quantile); above it, the laws that keep rising
        # say how much more the next models may gain: the highest member bounds the upper end
        upper = None
        if self.interval_rule == INTERVAL_RULE and self.usable:
            upper = self.member_curves(u).max(axis=0)
        pred = self.predict_accuracy(u)     # one evaluation of every member, for both bands
        lo, hi = interval_around(pred, u, self.residuals, self.best_us, level, self.test_size, self.interval_rule,
                                 upper)
        if band == "trend":
            # within the prediction interval: a model's accuracy there is the law plus its scatter,
            # so the law cannot lie where the interval says no model will (the band's low end fell
            # below the interval's on 10 of 120 public groups, one law band wider than the model's)
            t_lo, t_hi = trend_around(pred, u, self.trend_residuals, self.best_us, level, self.interval_rule)
            return (np.where(np.isnan(t_lo), np.nan, np.fmax(t_lo, lo)),
                    np.where(np.isnan(t_hi), np.nan, np.fmin(t_hi, hi)))
        return lo, hi

    @property
    def saturation(self) -> float:
        """``p(100% US)``: an extrapolation by definition."""
        return float(self.predict_accuracy(np.array([1.0]))[0]) if self.usable else math.nan

    # ---- fits.parquet -------------------------------------------------------------------

    def to_row(self) -> dict[str, Any]:
        """The columns a headline row carries so that :meth:`from_row` can rebuild it."""
        members = [[f.law, name.split("/", 1)[1], {k: float(v) for k, v in f.params.items()}, f.status]
                   for f, name in zip(self.members, self.names)]
        return {"members": json.dumps(members, separators=(",", ":")), "member_quantile": self.quantile,
                "interval_rule": self.interval_rule, "flat": self.flat, "discount": self.discount, "best_us": self.best_us, "horizon_us": self.horizon_us,
                "interval_residuals": residuals_json(self.residuals),
                "trend_residuals": residuals_json(self.trend_residuals), "ds_test_size": self.test_size}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Headline":
        """The headline a row of ``fits.parquet`` describes (``law == "ensemble"``)."""
        members = parse_members(row.get("members"))
        fits = []
        for law, fr, params, status in members:
            names = get_law(law).params
            missing = [p for p in names if p not in params]
            if missing:    # a KeyError('k') at the first prediction named neither the member nor the row
                raise ValueError(f"a headline row's member {law}/{fr} has no {', '.join(map(repr, missing))} parameter")
            fits.append(LawFit(law=law, params={p: row_number(params[p]) for p in names}, sse=math.nan, n_points=0,
                               status=status))
        # a row read back with pyarrow (to_pylist) has None where pandas wrote NaN. A row written
        # before member_quantile was stored held the median (and a discount): read as written
        q = row_number(row.get("member_quantile"))
        if not math.isfinite(q):
            q = LEGACY_QUANTILE
        elif not 0.0 <= q <= 1.0:     # np.quantile's "Quantiles must be in the range [0, 1]" named no row
            raise ValueError(f"a headline row's member_quantile is {q!r}, not a quantile in [0, 1]")
        w = row_number(row.get("discount"))
        return cls(interval_rule=row_interval_rule(row), members=tuple(fits), names=tuple(f"{law}/{fr}" for law, fr, *_ in members),
                   flat=row_number(row.get("flat")), best_us=row_number(row.get("best_us")),
                   residuals=parse_residuals(row.get("interval_residuals")),
                   test_size=row_number(row.get("ds_test_size")), quantile=q,
                   discount=w if math.isfinite(w) else 1.0,
                   trend_residuals=parse_residuals(row.get("trend_residuals"), "trend_residuals"))


def quantile_name(quantile: Any) -> str:
    """How the answer names the members' quantile a headline is: "median" for 0.5, else "0.4
    quantile". ``quantile`` is a row's ``member_quantile`` or a :class:`Headline`'s; a missing one
    (None, NaN, ``pandas.NA``, text: a row written before the column was stored, 2026-12-06) is
    :data:`LEGACY_QUANTILE`, as :meth:`Headline.from_row` predicts with it. The report's text, the
    figures' legends and the rows' ``message`` all say it through here, so they cannot name one
    headline differently."""
    q = row_number(quantile)
    q = LEGACY_QUANTILE if not math.isfinite(q) else q
    return "median" if q == 0.5 else f"{q:g} quantile"


def row_interval_rule(row: Mapping[str, Any]) -> str:
    """A row's ``interval_rule``: :data:`LEGACY_INTERVAL_RULE` where it has none (written before
    the column was stored: its intervals stay as written), a ValueError for one this version does
    not know."""
    rule = row.get("interval_rule")
    if rule is None or (not isinstance(rule, str) and not math.isfinite(row_number(rule))) or rule == "":
        return LEGACY_INTERVAL_RULE
    if not isinstance(rule, str):
        raise ValueError(f"a fits.parquet row's interval_rule is {rule!r}, not a rule's name")
    return check_interval_rule(rule)


def us_at(best_us: float, reach: float) -> float:
    """The US accuracy ``reach`` (log US error) beyond ``best_us``; NaN for no reach."""
    return 1.0 - (1.0 - best_us) * math.exp(-reach) if reach > 0 and math.isfinite(best_us) else math.nan


def row_number(v: Any) -> float:
    """A number of a ``fits.parquet`` row; NaN for None (pyarrow's null), NA or text."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def residuals_json(residuals: Sequence[Sequence[float]]) -> str:
    """(|residual|, reach, cut) triples as a JSON list, every float exact (shortest repr), so that
    a row's interval is the one its answer states: rounded to 1e-6, a reach of 1e-12 (two models
    1e-12 apart in US) became 0 and the row's 90% interval at +5 US points [29.8%-55.1%] where
    the answer said [0.0%-89.1%]."""
    return json.dumps([[float(v) for v in t] for t in residuals], separators=(",", ":"))


def parse_residuals(raw: Any, column: str = "interval_residuals") -> tuple[tuple[float, ...], ...]:
    """A row's ``interval_residuals`` (:func:`residuals_json`; pairs from before the cut was kept);
    () for none, a ValueError naming the column for text that is not such a list (a JSONDecodeError
    or an IndexError deep in the interval said neither)."""
    if not (isinstance(raw, str) and raw):
        return ()
    try:
        out = tuple(tuple(float(v) for v in t) for t in json.loads(raw))
    except (ValueError, TypeError) as e:
        raise ValueError(f"a fits.parquet row's {column} is not the JSON list meta-study writes ({e})") from None
    if any(len(t) not in (2, 3) for t in out):
        raise ValueError(f"a fits.parquet row's {column} holds an entry that is not (|residual|, reach[, cut])")
    # one kind per row: pairs beside triples gave numpy's "inhomogeneous shape" ValueError at the
    # first interval, naming neither the column nor the row
    if len({len(t) for t in out}) > 1:
        raise ValueError(f"a fits.parquet row's {column} mixes (|residual|, reach) pairs with "
                         "(|residual|, reach, cut) triples")
    return out


def parse_members(raw: Any) -> list[tuple[str, str, dict[str, Any], str]]:
    """A headline row's ``members`` (:meth:`Headline.to_row`) as (law, frontier, params, status);
    [] for none, a ValueError naming the column for text that is not such a list."""
    if not (isinstance(raw, str) and raw):
        return []
    try:
        return [(str(law), str(fr), dict(params), str(status)) for law, fr, params, status in json.loads(raw)]
    except (ValueError, TypeError) as e:
        raise ValueError(f"a headline row's members is not the JSON list meta-study writes ({e})") from None


__all__ = ["ENSEMBLE", "HALF_POINT", "INTERVAL_RULE", "LEGACY_INTERVAL_RULE", "LEGACY_QUANTILE", "MEMBER_QUANTILE", "NO_SPREAD", "Headline", "member_predictions", "no_spread", "row_number", "distance", "empirical_quantile", "estimate_test_size", "half_width", "check_interval_rule", "latest_cut_error", "latest_cut_errors", "row_interval_rule",
           "interval_around", "noise_half_width", "parse_members", "parse_residuals", "point_secant", "quantile_name", "residuals_json", "tested_reach",
           "us_at"]
