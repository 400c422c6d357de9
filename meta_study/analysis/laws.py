"""A registry of DS-vs-US laws, each with a batched global fit and one frozen result type.

Every law maps an upstream accuracy ``u`` to a downstream accuracy (fractions), with errors
``e = 1 - accuracy``:

========================  =====================================================  ==========================
name                      law                                                    fitted by
========================  =====================================================  ==========================
``eq1``                   ``e_DS = k e_US^alpha + e_IR`` (Abnar et al., Eq. 1)   least squares in accuracy,
                                                                                 variable projection
                                                                                 (:mod:`powerlaw`, exact)
``eq1-bayes``             ``e_DS = k (e_US - e_US*)^alpha + e_IR``, an upstream  least squares in accuracy:
                          Bayes-error floor ``0 <= e_US* < min e_US`` (the       eq1's exact fit on a
                          paper's footnote 2)                                    profile over ``e_US*``
``power``                 ``e_DS = k e_US^alpha`` (the paper's log-linear        ordinary least squares of
                          baseline)                                              ``log e_DS`` on ``log e_US``
``logit-linear``          ``logit a_DS = a + b logit a_US`` (Kornblith et al.    ordinary least squares in
                          2019; the paper's Fig. F.2)                            logit space
``probit-linear``         ``Phi^-1(a_DS) = a + b Phi^-1(a_US)`` (Miller et al.   ordinary least squares in
                          2021, "accuracy on the line")                          probit space
========================  =====================================================  ==========================

Each law is fitted by the criterion its authors use. The three linear-in-transform laws are
convex least-squares problems solved in closed form, so every fit is its global optimum within
its bounds (``b >= 0``, ``alpha >= 0``: DS does not fall as US rises). ``eq1-bayes`` is exact for
each ``e_US*`` and searched on a grid of 12 values of ``e_US* / min e_US`` in [0, 0.98] refined by
golden section (20 steps, to ~1e-4 of ``min e_US``).

The fits' transforms are clipped to accuracies in ``[CLIP, 1 - CLIP]`` (``CLIP = 1e-4``): an
accuracy of exactly 0 or 1 would be infinite in logit/probit space and ``log 0`` in log space.
Predictions are not clipped: a rising logit/probit law reaches 100% DS at 100% US, its saturation.

Saturation is the DS accuracy the law reaches as US accuracy reaches its best value (100%, or
``1 - e_US*`` for ``eq1-bayes``): ``1 - e_IR`` for the Eq. 1 laws, and 1.0 (no saturation below
100%) for ``power`` with ``alpha > 0`` and the two linear laws with ``b > 0``; a flat law
(``alpha = 0``, ``b = 0``) saturates at the one accuracy it predicts. Parameters outside the
bounds, which no fit gives (a hand-built falling law: ``b < 0``, ``alpha < 0``), saturate at what
``predict_accuracy`` says at the best US accuracy (0 for a falling linear law), never at a value
the law does not reach. The slope ``d a_DS / d a_US``
is "DS points per +1 US point" (0 for a flat law, ``k = 0`` included, even at 100% US).

Cost: the closed-form laws are a few segment sums per problem (~0.05 us a point); ``eq1`` is ~0.3
us a point (see :mod:`powerlaw`); ``eq1-bayes`` is 35 batched ``eq1`` fits (12 grid values, 22
golden-section evaluations and the final fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.special import expit, logit, ndtr, ndtri

from .powerlaw import ALPHA_MAX, fit_power_laws

CLIP = 1e-4
#: Every parameter any law has: the columns of ``fits.parquet`` (NaN where a law lacks one).
PARAM_COLUMNS = ("k", "alpha", "e_ir", "e_us_star", "a", "b")
BAYES_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)  # e_US* / min e_US
BAYES_MAX = BAYES_GRID[-1]
GOLDEN_STEPS = 20


@dataclass(frozen=True)
class LawFit:
    """One fitted law. A failed fit is data: ``status`` says why and the parameters are NaN.

    Attributes:
        law: the law's registry name.
        params: parameter name -> value (the law's own parameters only).
        sse: sum of squared residuals in accuracy units over the points fitted.
        n_points: points fitted.
        status: ``ok``, ``at_bound`` (a constraint is active; still the optimum), ``too_few_points``,
            ``degenerate`` or ``nonfinite``, as for :class:`~meta_study.analysis.powerlaw.PowerLawFit`.
        message: detail for any status but ``ok``.
    """

    law: str
    params: Mapping[str, float] = field(hash=False)
    sse: float
    n_points: int
    status: str
    message: str = ""

    @property
    def usable(self) -> bool:
        return self.status in ("ok", "at_bound")

    def _law(self) -> "Law":
        return LAWS[self.law]

    def predict_accuracy(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """DS accuracy (fraction) predicted at US accuracies ``us_accuracy`` (NaN when unusable)."""
        u = np.asarray(us_accuracy, dtype=float)
        if not self.usable:
            return np.full(u.shape, np.nan)
        return self._law().predict(self.params, u)

    def slope(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """DS points per +1 US point at ``us_accuracy``."""
        u = np.asarray(us_accuracy, dtype=float)
        if not self.usable:
            return np.full(u.shape, np.nan)
        return self._law().slope(self.params, u)

    @property
    def saturation(self) -> float:
        """The DS accuracy reached at the best US accuracy (see the module doc); NaN when unusable."""
        return self._law().saturation(self.params) if self.usable else math.nan


FitMany = Callable[..., list[LawFit]]
Params = Mapping[str, float]


@dataclass(frozen=True)
class Law:
    """A registered law: its parameters, bounds, fit, prediction, slope and saturation.

    ``fit_many(us_seq, ds_seq, loss=..., alpha_max=...)`` takes accuracies (fractions), one array
    pair per problem, and returns one :class:`LawFit` per problem, in order. ``loss`` and
    ``alpha_max`` reach the Eq. 1 fitter (:func:`powerlaw.fit_power_laws`); the closed-form laws
    have their own criterion and ignore them.
    """

    name: str
    formula: str
    params: tuple[str, ...]
    bounds: str
    fit_many: FitMany
    predict: Callable[[Params, np.ndarray], np.ndarray]
    slope: Callable[[Params, np.ndarray], np.ndarray]
    saturation: Callable[[Params], float]

    @property
    def n_params(self) -> int:
        return len(self.params)

    def fit(self, us_accuracy: np.ndarray, ds_accuracy: np.ndarray) -> LawFit:
        return self.fit_many([us_accuracy], [ds_accuracy])[0]

    def from_row(self, row: Mapping[str, Any]) -> LawFit:
        """A :class:`LawFit` from a row of ``fits.parquet`` (its parameter columns and status)."""
        # None: a row read back with pyarrow (to_pylist), where pandas wrote NaN; a NaN count (a
        # table concatenated with one without ``n_fit``) is no count, not a ValueError
        n_fit = row.get("n_fit")
        n_fit = float(n_fit) if isinstance(n_fit, (int, float, np.number)) else math.nan
        missing = [c for c in (*self.params, "status") if c not in row]
        if missing:   # a KeyError('e_us_star') named neither the row nor what is wrong with it
            raise ValueError(f"a fits.parquet row of law {self.name!r} has no {', '.join(map(repr, missing))} "
                             "column (not a row meta-study wrote)")
        # pandas.NA (a table read with dtype_backend="numpy_nullable" or "pyarrow") is NaN here, as
        # None is: float(pd.NA) raised a TypeError on every failed fit's row (its parameters null)
        message = row.get("message")
        return LawFit(law=self.name, params={p: _row_float(row[p]) for p in self.params}, sse=math.nan,
                      n_points=int(n_fit) if math.isfinite(n_fit) else 0, status=str(row["status"]),
                      message=message if isinstance(message, str) else "")


def _row_float(v: Any) -> float:
    """A parameter of a ``fits.parquet`` row: NaN for None, pandas.NA or anything not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _failed(law: str, params: tuple[str, ...], status: str, message: str, n: int) -> LawFit:
    return LawFit(law=law, params={p: math.nan for p in params}, sse=math.nan, n_points=n, status=status,
                  message=message)


def _check(us: np.ndarray, ds: np.ndarray, n_min: int, name: str = "the law") -> tuple[str, str] | None:
    """The input checks every law shares: None when the problem can be fitted. ``name`` is the
    law's, said in the too-few-points message ("the law has 3 parameters" read beside 2-parameter
    laws that had failed for another reason, named no law)."""
    if us.size != ds.size:
        return "degenerate", f"US has {us.size} values but DS has {ds.size}"
    if not (np.isfinite(us).all() and np.isfinite(ds).all()):
        return "nonfinite", "NaN or infinite accuracies in the input"
    if us.size < n_min:
        return "too_few_points", f"{us.size} point(s); {name} needs {n_min}"
    if us.min() < 0 or us.max() > 1 or ds.min() < 0 or ds.max() > 1:
        return "degenerate", "accuracies outside [0, 1]"
    if us.max() == us.min():
        return "degenerate", "all points have the same US accuracy; the law is not identified"
    return None


def _screen(name: str, params: tuple[str, ...], us_seq: Sequence[np.ndarray], ds_seq: Sequence[np.ndarray],
            n_min: int, extra: Callable[[np.ndarray], tuple[str, str] | None]
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[LawFit | None], list[int]]:
    """Flatten the problems and check them (:func:`_check`, then the law's own ``extra`` check).

    Returns (US arrays, DS arrays, results with the failures filled in, indices of the good ones)."""
    us = [np.asarray(u, float).ravel() for u in us_seq]
    ds = [np.asarray(d, float).ravel() for d in ds_seq]
    out: list[LawFit | None] = [None] * len(us)
    good = []
    for i, (u, d) in enumerate(zip(us, ds)):
        bad = _check(u, d, n_min, name) or extra(u)
        if bad:
            out[i] = _failed(name, params, *bad, u.size)
        else:
            good.append(i)
    return us, ds, out, good


def _sse(pred: np.ndarray, ds: np.ndarray) -> float:
    return float(np.sum((pred - ds) ** 2))


# ---- eq1 -------------------------------------------------------------------------------------

def _eq1_predict(p: Params, u: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (p["k"] * np.power(np.clip(1.0 - u, 0.0, None), p["alpha"]) + p["e_ir"])


def _flat(p: Params) -> np.ndarray:
    """Where the law is flat (``k = 0``, or ``alpha = 0`` for ``power``): its slope is 0 everywhere.
    ``k * alpha * e**(alpha - 1)`` read 0 x inf = NaN there at 100% US (e = 0) for alpha < 1, where
    ``predict`` is the constant it is at every other US accuracy."""
    return np.asarray(p["k"]) * np.asarray(p["alpha"]) == 0


def _eq1_slope(p: Params, u: np.ndarray) -> np.ndarray:
    e = np.clip(1.0 - u, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(_flat(p), 0.0, p["k"] * p["alpha"] * np.power(e, p["alpha"] - 1.0))


def _eq1_fit_many(us_seq: Sequence[np.ndarray], ds_seq: Sequence[np.ndarray], *, loss: str = "lsq",
                  alpha_max: float = ALPHA_MAX) -> list[LawFit]:
    us = [np.asarray(u, float).ravel() for u in us_seq]
    ds = [np.asarray(d, float).ravel() for d in ds_seq]
    fits = fit_power_laws([1.0 - u for u in us], [1.0 - d for d in ds], loss=loss, alpha_max=alpha_max)
    return [LawFit(law="eq1", params={"k": f.k, "alpha": f.alpha, "e_ir": f.e_ir}, sse=f.sse, n_points=f.n_points,
                   status=f.status, message=f.message) for f in fits]


# ---- eq1-bayes -------------------------------------------------------------------------------

def _bayes_predict(p: Params, u: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.clip(1.0 - u - p["e_us_star"], 0.0, None)   # past the US Bayes accuracy the law is flat
        return 1.0 - (p["k"] * np.power(x, p["alpha"]) + p["e_ir"])


def _bayes_slope(p: Params, u: np.ndarray) -> np.ndarray:
    x = 1.0 - u - p["e_us_star"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = p["k"] * p["alpha"] * np.power(np.clip(x, 0.0, None), p["alpha"] - 1.0)
    return np.where((x < 0) | _flat(p), 0.0, s)


def _bayes_fit_many(us_seq: Sequence[np.ndarray], ds_seq: Sequence[np.ndarray], *, loss: str = "lsq",
                    alpha_max: float = ALPHA_MAX) -> list[LawFit]:
    """Profile over f = e_US* / min e_US: eq1's exact fit at each f, a grid, then golden section
    between the best grid value's neighbours (the profile is smooth in f: it only rescales the
    distances of the points to the floor)."""
    name, params = "eq1-bayes", ("k", "alpha", "e_ir", "e_us_star")
    us, ds, out, good = _screen(name, params, us_seq, ds_seq, 4, lambda u: (
        ("degenerate", "a model at 100% US accuracy leaves no room for an upstream Bayes error")
        if u.max() >= 1.0 else None))
    if not good:
        return out  # type: ignore[return-value]
    emin = np.array([1.0 - us[i].max() for i in good])

    def profile(fr: np.ndarray) -> list[Any]:
        fits = fit_power_laws([1.0 - us[i] - f * m for i, f, m in zip(good, fr, emin)],
                              [1.0 - ds[i] for i in good], loss=loss, alpha_max=alpha_max)
        return fits

    def sse_of(fits: list[Any]) -> np.ndarray:
        # the criterion each inner fit minimized: SSE for lsq (as before, bit for bit), else the
        # loss's own value (profiled on SSE, a huber or log fit ended with a larger loss than eq1's,
        # the case e_US* = 0 that it contains)
        return np.array([(f.sse if loss == "lsq" else f.loss_value) if f.usable else np.inf for f in fits])

    grid = np.array(BAYES_GRID)
    table = np.stack([sse_of(profile(np.full(len(good), g))) for g in grid], axis=1)   # (problems, grid)
    j = np.argmin(table, axis=1)
    lo, hi = grid[np.maximum(j - 1, 0)], grid[np.minimum(j + 1, grid.size - 1)]
    best_f, best_s = grid[j], table[np.arange(len(good)), j]
    inv = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = hi - inv * (hi - lo), lo + inv * (hi - lo)
    s1, s2 = sse_of(profile(x1)), sse_of(profile(x2))
    for _ in range(GOLDEN_STEPS):
        left = s1 < s2                       # the minimum is in [lo, x2]
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
        x2n = np.where(left, x1, lo + inv * (hi - lo))
        x1n = np.where(left, hi - inv * (hi - lo), x2)
        known = np.where(left, s1, s2)
        x1, x2 = x1n, x2n
        fresh = profile(np.where(left, x1, x2))
        sf = sse_of(fresh)
        s1, s2 = np.where(left, sf, known), np.where(left, known, sf)
    for xs, ss in ((x1, s1), (x2, s2)):
        better = ss < best_s
        best_f, best_s = np.where(better, xs, best_f), np.where(better, ss, best_s)
    final = profile(best_f)
    for i, f, fr, m in zip(good, final, best_f, emin):
        if not f.usable:
            out[i] = _failed(name, params, f.status, f.message, us[i].size)
            continue
        notes = [f.message] if f.message else []
        if fr <= 0.0:
            notes.append("e_us_star = 0 (the law is eq1)")
        if fr >= BAYES_MAX:
            notes.append(f"e_us_star at its upper bound {BAYES_MAX:g} x the best model's US error")
        out[i] = LawFit(law=name, params={"k": f.k, "alpha": f.alpha, "e_ir": f.e_ir, "e_us_star": float(fr * m)},
                        sse=f.sse, n_points=f.n_points, status="at_bound" if notes else "ok",
                        message="; ".join(notes))
    return out  # type: ignore[return-value]


# ---- the closed-form laws: y = a + b x in a transformed space -------------------------------

def _ols_many(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per problem: OLS intercept and slope with the slope bounded below by 0, and whether the
    bound is active. Segment sums over the concatenated problems (no Python loop per point)."""
    n = np.array([x.size for x in xs], dtype=float)
    seg = np.repeat(np.arange(len(xs)), [x.size for x in xs])
    X, Y = np.concatenate(xs), np.concatenate(ys)
    mx = np.bincount(seg, X, len(xs)) / n
    my = np.bincount(seg, Y, len(xs)) / n
    dx, dy = X - mx[seg], Y - my[seg]
    sxx = np.bincount(seg, dx * dx, len(xs))
    sxy = np.bincount(seg, dx * dy, len(xs))
    b = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    clipped = b < 0
    b = np.maximum(b, 0.0)
    return my - b * mx, b, clipped


def _closed_form(name: str, params: tuple[str, str], to_x: Callable[[np.ndarray], np.ndarray],
                 to_y: Callable[[np.ndarray], np.ndarray], make: Callable[[float, float], dict[str, float]],
                 predict: Callable[[Params, np.ndarray], np.ndarray], bound_note: str) -> FitMany:
    def fit_many(us_seq: Sequence[np.ndarray], ds_seq: Sequence[np.ndarray], **_ignored: Any) -> list[LawFit]:
        us, ds, out, good = _screen(name, params, us_seq, ds_seq, 2, lambda u: (
            ("degenerate", "all points have the same US accuracy after clipping; the law is not identified")
            if np.ptp(to_x(u)) == 0 else None))
        if good:
            a, b, clipped = _ols_many([to_x(us[i]) for i in good], [to_y(ds[i]) for i in good])
            for j, i in enumerate(good):
                try:
                    p = make(float(a[j]), float(b[j]))
                except OverflowError:
                    p = {k: math.inf for k in params}
                if not all(math.isfinite(v) for v in p.values()):
                    # e.g. two models 0.0001 apart in US accuracy with DS 20 points apart: the
                    # slope in transformed space is ~1e4 and exp() of the intercept overflows
                    out[i] = _failed(name, params, "nonfinite", "the parameters overflow (points nearly tied in US "
                                     "accuracy but far apart in DS accuracy)", us[i].size)
                    continue
                sse = _sse(predict(p, us[i]), ds[i])
                if not math.isfinite(sse):
                    out[i] = _failed(name, params, "nonfinite", "the law's predictions overflow at these points",
                                     us[i].size)
                    continue
                out[i] = LawFit(law=name, params=p, sse=sse, n_points=int(us[i].size),
                                status="at_bound" if clipped[j] else "ok", message=bound_note if clipped[j] else "")
        return out  # type: ignore[return-value]
    return fit_many


def _clip(a: np.ndarray) -> np.ndarray:
    return np.clip(a, CLIP, 1.0 - CLIP)


def _power_predict(p: Params, u: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - p["k"] * np.power(np.clip(1.0 - u, 0.0, None), p["alpha"])


#: How close to 0% or 100% US a slope of the logit/probit laws is evaluated (exactly there it is a
#: limit, 0/0 in the formula). Predictions are exact: ``logit 1 = inf``, so 100% US is 100% DS.
EDGE = 2.0 ** -53


def _flat_b(p: Params) -> np.ndarray:
    return np.asarray(p["b"]) == 0


def _logit_predict(p: Params, u: np.ndarray) -> np.ndarray:
    # not clipped to [CLIP, 1 - CLIP]: the curve was flat past 99.99% US below its saturation (100%),
    # so a DS target in between was "never" reached and a slope that still paid at 99.99999% US
    # (0.30) sat on a flat curve; b = 0 is the flat law (0 x inf = NaN at 0% or 100% US)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u = np.clip(u, 0.0, 1.0)
        return np.where(_flat_b(p), expit(p["a"]) + 0.0 * u, expit(p["a"] + p["b"] * logit(u)))   # NaN stays NaN


def _logit_slope(p: Params, u: np.ndarray) -> np.ndarray:
    uc = np.clip(u, EDGE, 1.0 - EDGE)
    z = p["a"] + p["b"] * logit(uc)
    return expit(z) * expit(-z) * p["b"] / (uc * (1.0 - uc))


def _probit_predict(p: Params, u: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u = np.clip(u, 0.0, 1.0)
        return np.where(_flat_b(p), ndtr(p["a"]) + 0.0 * u, ndtr(p["a"] + p["b"] * ndtri(u)))


def _probit_slope(p: Params, u: np.ndarray) -> np.ndarray:
    z = ndtri(np.clip(u, EDGE, 1.0 - EDGE))
    # phi(a + b z) / phi(z), as one exponential (both factors underflow towards 0% or 100% US)
    with np.errstate(over="ignore"):
        return p["b"] * np.exp(0.5 * (z * z - (p["a"] + p["b"] * z) ** 2))


def _at_best(predict: Callable[[Params, np.ndarray], np.ndarray], p: Params) -> float:
    """The law's prediction at 100% US: the saturation of parameters the closed forms below do not
    cover (outside the fits' bounds: a hand-built falling law)."""
    return float(predict(p, np.float64(1.0)))


def _eq1_saturation(p: Params) -> float:
    # alpha > 0 (every fit: alpha >= 1e-3) or k = 0: 1 - e_IR. A hand-built alpha <= 0 is not: the
    # curve is 1 - k - e_IR everywhere (alpha = 0) or falls without bound, where 1 - e_IR was said
    if p["alpha"] > 0 or p["k"] == 0:
        return 1.0 - p["e_ir"]
    return _at_best(_eq1_predict, p)


def _power_saturation(p: Params) -> float:
    # alpha = 0 (at its bound) is the flat law e_DS = k: its saturation is 1 - k, the accuracy
    # it predicts everywhere (1.0 was said while predict_accuracy(1.0) was 1 - k); a hand-built
    # alpha < 0 falls without bound (it read 1 - k, its accuracy at 0% US)
    if p["alpha"] > 0 or p["k"] == 0:
        return 1.0
    return 1.0 - float(p["k"]) if p["alpha"] == 0 else _at_best(_power_predict, p)


def _linear_saturation(p: Params) -> float:
    # a hand-built b < 0 falls to 0% DS at 100% US: it read expit(a), its accuracy at 50% US
    return 1.0 if p["b"] > 0 else float(expit(p["a"])) if p["b"] == 0 else _at_best(_logit_predict, p)


def _probit_saturation(p: Params) -> float:
    return 1.0 if p["b"] > 0 else float(ndtr(p["a"])) if p["b"] == 0 else _at_best(_probit_predict, p)


LAWS: dict[str, Law] = {
    "eq1": Law("eq1", "e_DS = k e_US^alpha + e_IR", ("k", "alpha", "e_ir"),
               f"k >= 0, {1e-3:g} <= alpha <= {ALPHA_MAX:g}, 0 <= e_IR <= 1",
               _eq1_fit_many, _eq1_predict, _eq1_slope, _eq1_saturation),
    "eq1-bayes": Law("eq1-bayes", "e_DS = k (e_US - e_US*)^alpha + e_IR", ("k", "alpha", "e_ir", "e_us_star"),
                     f"as eq1, and 0 <= e_US* <= {BAYES_MAX:g} x the best model's US error",
                     _bayes_fit_many, _bayes_predict, _bayes_slope, _eq1_saturation),
    "power": Law("power", "e_DS = k e_US^alpha", ("k", "alpha"), "k > 0, alpha >= 0",
                 _closed_form("power", ("k", "alpha"), lambda u: np.log(np.clip(1.0 - u, CLIP, None)),
                              lambda d: np.log(np.clip(1.0 - d, CLIP, None)),
                              lambda a, b: {"k": math.exp(a), "alpha": b}, _power_predict,
                              "alpha = 0 (DS error does not fall with US error)"),
                 _power_predict, lambda p, u: _eq1_slope({**p, "e_ir": 0.0}, u), _power_saturation),
    "logit-linear": Law("logit-linear", "logit a_DS = a + b logit a_US", ("a", "b"), "b >= 0",
                        _closed_form("logit-linear", ("a", "b"), lambda u: logit(_clip(u)), lambda d: logit(_clip(d)),
                                     lambda a, b: {"a": a, "b": b}, _logit_predict, "b = 0 (DS does not rise with US)"),
                        _logit_predict, _logit_slope, _linear_saturation),
    "probit-linear": Law("probit-linear", "probit a_DS = a + b probit a_US", ("a", "b"), "b >= 0",
                         _closed_form("probit-linear", ("a", "b"), lambda u: ndtri(_clip(u)), lambda d: ndtri(_clip(d)),
                                      lambda a, b: {"a": a, "b": b}, _probit_predict, "b = 0 (DS does not rise with US)"),
                         _probit_predict, _probit_slope, _probit_saturation),
}


def get_law(name: str) -> Law:
    """The registered law ``name``; a ValueError names the choices."""
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; the laws are {', '.join(LAWS)}") from None


def fit_law_many(law: str, us_seq: Sequence[np.ndarray], ds_seq: Sequence[np.ndarray], **kw: Any) -> list[LawFit]:
    """Fit ``law`` to many problems (accuracies, fractions) in one batched call."""
    return get_law(law).fit_many(us_seq, ds_seq, **kw)


__all__ = ["CLIP", "LAWS", "Law", "LawFit", "PARAM_COLUMNS", "fit_law_many", "get_law"]
