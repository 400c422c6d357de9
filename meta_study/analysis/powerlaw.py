"""The saturating power law of Abnar et al. (2022), fitted globally and in batches.

    e_DS = k * e_US**alpha + e_IR,     k >= 0,  alpha_min <= alpha <= alpha_max,  0 <= e_IR <= 1

with errors ``e = 1 - accuracy``. Saturation is ``1 - e_IR``: the DS accuracy the law predicts at
100% US accuracy.

How the fit finds the global optimum (variable projection)
----------------------------------------------------------
For a fixed ``alpha`` the model is linear in ``(k, e_IR)``: with ``x = e_US**alpha`` it is
``k*x + c``. Minimizing squared error over the half-strip ``k >= 0, 0 <= c <= 1`` is a convex
quadratic program in two variables, solved in closed form: the unconstrained least-squares
solution if it is feasible, otherwise the best of the minimizers on the three edges ``k = 0``,
``c = 0`` and ``c = 1`` (each a clipped one-dimensional least squares). That leaves a 1-D profile
``f(alpha) = min_{k,c} SSE(k, alpha, c)`` which is searched globally:

1. **Grid.** ``f`` on a geometric grid of ``alpha`` (24 points from ``alpha_min`` to
   ``alpha_max``), in float32 (its ``exp`` is 5x cheaper than float64 here), residuals computed
   explicitly so near-perfect fits are still ranked correctly, and ``x`` scaled to at most 1 per
   problem (``k`` absorbs the scale) so that small errors at large ``alpha`` do not underflow.
2. **Refine.** The best 3 grid-local minima (all, where fewer) are refined in float64:
   a parabola through the three grid values gives the start, a Newton step with the parabola's
   curvature gives a bracket, and safeguarded cubic steps (a secant when one end goes stale) on
   ``f'(log alpha)`` converge to ~1e-9 in ``log alpha``. By the envelope theorem ``f'(alpha) = sum_i rho'(r_i) * k * x_i * log(e_US,i)``
   at the inner optimum, so no inner derivative is needed.
3. The best refined candidate wins; SSE is recomputed from explicit residuals.

Cost: ~30 exponentials per point (24 float32 + ~6 float64), i.e. ~0.3 us per point; the batched
call amortizes Python overhead over thousands of problems. ``tests/test_powerlaw.py`` checks the
result against a dense brute-force reference to 1e-9 relative SSE.

Losses: ``lsq`` (default; squared error in accuracy units), ``huber`` (robust; the inner problem
is solved by iteratively reweighted least squares, still convex for fixed alpha) and ``log``
(squared error of ``log e``; inner problem by Gauss-Newton from the weighted linearization, so
its global optimality is not guaranteed the way ``lsq``'s is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LOSSES = ("lsq", "huber", "log")

#: Default bounds on alpha. alpha -> 0 with k -> inf approaches a + b*log(e_US); alpha_min keeps
#: the problem well posed and is reported as a bound when hit.
ALPHA_MIN = 1e-3
from ..defaults import ALPHA_MAX  # noqa: E402 - one default for the fitter and the CLI
GRID_POINTS = 24  # 12 already matched a 6,000-point brute force on 840 test problems: 2x margin
#: log-loss floor on errors (a DS accuracy of exactly 100% would make log(e) = -inf)
LOG_EPS = 1e-6


@dataclass(frozen=True)
class PowerLawFit:
    """One fitted law. A failed fit is data: ``status`` says why and the parameters are NaN.

    Attributes:
        k, alpha, e_ir: the law's parameters (errors, not accuracies).
        sse: sum of squared residuals in accuracy units over the points fitted.
        loss: the loss minimized; ``loss_value`` its value at the optimum.
        n_points: points fitted.
        status: ``ok``, ``at_bound`` (a constraint is active; the fit is still the optimum),
            ``too_few_points`` (< 3), ``degenerate`` (fewer than 3 distinct US errors, values
            outside [0, 1], or US and DS errors of different lengths) or ``nonfinite`` (NaN/inf in
            the input).
        message: a human-readable detail for any status but ``ok``.
    """

    k: float
    alpha: float
    e_ir: float
    sse: float
    loss: str
    loss_value: float
    n_points: int
    status: str
    message: str = ""

    @property
    def saturation(self) -> float:
        """``1 - e_ir``: the DS accuracy predicted at 100% US accuracy."""
        return 1.0 - self.e_ir

    @property
    def usable(self) -> bool:
        """True when the parameters are a valid optimum (``ok`` or ``at_bound``)."""
        return self.status in ("ok", "at_bound")

    def predict(self, e_us: np.ndarray | float) -> np.ndarray:
        """Predicted DS error at US error ``e_us`` (NaN if the fit is not usable)."""
        e = np.asarray(e_us, dtype=float)
        if not self.usable:
            return np.full(e.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.k * np.power(e, self.alpha) + self.e_ir

    def predict_accuracy(self, us_accuracy: np.ndarray | float) -> np.ndarray:
        """Predicted DS accuracy at US accuracy ``us_accuracy``."""
        return 1.0 - self.predict(1.0 - np.asarray(us_accuracy, dtype=float))


def _failed(status: str, message: str, n: int, loss: str) -> PowerLawFit:
    return PowerLawFit(k=math.nan, alpha=math.nan, e_ir=math.nan, sse=math.nan, loss=loss, loss_value=math.nan,
                       n_points=n, status=status, message=message)


def fit_power_law(e_us: Sequence[float] | np.ndarray, e_ds: Sequence[float] | np.ndarray, *, loss: str = "lsq",
                  alpha_max: float = ALPHA_MAX, alpha_min: float = ALPHA_MIN, huber_delta: float = 0.01) -> PowerLawFit:
    """Fit ``e_ds = k * e_us**alpha + e_ir`` to one set of points (errors in [0, 1]).

    Never raises on bad data: see :class:`PowerLawFit` for the statuses.
    """
    return fit_power_laws([e_us], [e_ds], loss=loss, alpha_max=alpha_max, alpha_min=alpha_min,
                          huber_delta=huber_delta)[0]


def fit_power_laws(e_us_seq: Sequence[Sequence[float] | np.ndarray], e_ds_seq: Sequence[Sequence[float] | np.ndarray],
                   *, loss: str = "lsq", alpha_max: float = ALPHA_MAX, alpha_min: float = ALPHA_MIN,
                   huber_delta: float = 0.01, grid_points: int = GRID_POINTS) -> list[PowerLawFit]:
    """Fit many independent problems in one vectorized call; the same answers as one by one, to
    rounding: a problem is padded to the width of the problems batched with it, and its sums
    (numpy's pairwise summation) round by that width (~1e-12 relative in the parameters).

    Args:
        e_us_seq, e_ds_seq: sequences of 1-D arrays (US and DS errors), one pair per problem;
            problems may have different lengths.
        loss: ``lsq`` (squared error in accuracy units), ``huber`` or ``log``.
        alpha_max, alpha_min: bounds on ``alpha``.
        huber_delta: the Huber loss's threshold, in accuracy units (0.01 = 1 point).
        grid_points: size of the global alpha grid.

    Returns:
        One :class:`PowerLawFit` per problem, in order.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    if not (0 < alpha_min < alpha_max) or not math.isfinite(alpha_max):
        raise ValueError(f"need 0 < alpha_min < alpha_max < inf, got {alpha_min}, {alpha_max}")
    if len(e_us_seq) != len(e_ds_seq):
        raise ValueError("e_us_seq and e_ds_seq must have the same number of problems")
    if grid_points < 2:   # the refinement reads the grid's spacing (1 point was an IndexError)
        raise ValueError(f"grid_points must be at least 2, got {grid_points}")
    if loss == "huber" and not huber_delta > 0:
        # 0 made every loss 0 (any law fits), a negative one rewarded large residuals: both were
        # reported as a valid optimum (status at_bound, k = 0); NaN failed every fit as "nonfinite"
        raise ValueError(f"huber_delta must be positive (in accuracy units), got {huber_delta}")
    us = [np.asarray(u, dtype=float).ravel() for u in e_us_seq]
    ds = [np.asarray(d, dtype=float).ravel() for d in e_ds_seq]
    statuses = _check_all(us, ds)
    out: list[PowerLawFit | None] = [
        None if st is None else _failed(st[0], st[1], int(min(u.size, d.size)), loss)
        for st, u, d in zip(statuses, us, ds)]
    good = [i for i, st in enumerate(statuses) if st is None]
    if good:
        solver = _BatchSolver([us[i] for i in good], [ds[i] for i in good], loss=loss, alpha_min=alpha_min,
                              alpha_max=alpha_max, delta=huber_delta, grid_points=grid_points)
        for i, fit in zip(good, solver.solve()):
            out[i] = fit
    return out  # type: ignore[return-value]


def _check_all(us: list[np.ndarray], ds: list[np.ndarray]) -> list[tuple[str, str] | None]:
    """Input checks for every problem, vectorized over problems (segment min/max)."""
    nu = np.array([u.size for u in us], dtype=np.int64)
    nd = np.array([d.size for d in ds], dtype=np.int64)
    out: list[tuple[str, str] | None] = [None] * len(us)
    same = (nu == nd) & (nu > 0)
    if same.any():
        idx = np.flatnonzero(same)
        U = np.concatenate([us[i] for i in idx])
        D = np.concatenate([ds[i] for i in idx])
        starts = np.concatenate([[0], np.cumsum(nu[idx])[:-1]])
        # NaN propagates through min/max, so non-finite values show in the segment extremes
        u_lo, u_hi = np.minimum.reduceat(U, starts), np.maximum.reduceat(U, starts)
        d_lo, d_hi = np.minimum.reduceat(D, starts), np.maximum.reduceat(D, starts)
        nonfinite = ~(np.isfinite(u_lo) & np.isfinite(u_hi) & np.isfinite(d_lo) & np.isfinite(d_hi))
        few = ~nonfinite & (nu[idx] < 3)
        outside = ~nonfinite & ~few & ((u_lo < 0) | (u_hi > 1) | (d_lo < 0) | (d_hi > 1))
        constant = ~nonfinite & ~few & ~outside & (u_hi == u_lo)
        # Two distinct US errors: x takes two values at every alpha, k and e_IR fit the two means
        # exactly, and the profile is flat in alpha (any alpha fits; extrapolation and saturation
        # were an arbitrary grid point's, reported "ok"). A third value lies strictly inside.
        counts = nu[idx]
        inside = (U > np.repeat(u_lo, counts)) & (U < np.repeat(u_hi, counts))
        two = ~nonfinite & ~few & ~outside & ~constant & ~np.logical_or.reduceat(inside, starts)
        for j in np.flatnonzero(nonfinite | few | outside | constant | two):  # only the bad ones
            i = int(idx[j])
            out[i] = (("nonfinite", "NaN or infinite errors in the input") if nonfinite[j] else
                      ("too_few_points", f"{nu[i]} point(s); eq1 needs 3") if few[j] else
                      ("degenerate", "errors outside [0, 1]") if outside[j] else
                      ("degenerate", "all points have the same US error; k and alpha are not identified")
                      if constant[j] else
                      ("degenerate", "only 2 distinct US errors; alpha is not identified (eq1 needs 3)"))
    for i in np.flatnonzero(~same):
        out[i] = (("too_few_points", "no points; eq1 needs 3") if nu[i] == nd[i] == 0 else
                  ("degenerate", f"e_us has {nu[i]} values but e_ds has {nd[i]}"))
    return out


class _BatchSolver:
    """Problems packed into padded 2-D arrays, grouped by length to keep padding small."""

    CHUNK_ELEMS = 1 << 18   # ~2 MB of float64 per array: cache-friendly numpy passes
    MAX_CANDIDATES = 3      # grid-local minima refined per problem
    REFINE_ITERS = 40       # refinement steps at most (typically 2-4)
    IRLS_ITERS = 25         # inner iterations for huber / log losses

    def __init__(self, us: list[np.ndarray], ds: list[np.ndarray], *, loss: str, alpha_min: float,
                 alpha_max: float, delta: float, grid_points: int) -> None:
        self.lengths = np.array([u.size for u in us], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        with np.errstate(divide="ignore"):
            self.logU = np.log(np.concatenate(us))   # e_us = 0 -> -inf -> x = 0 for every alpha > 0
        self.D = np.concatenate(ds)
        self.loss = loss
        self.delta = delta
        self.u_lo, self.u_hi = math.log(alpha_min), math.log(alpha_max)
        self.alpha_min, self.alpha_max = alpha_min, alpha_max   # exp(u_hi) may be an ulp past alpha_max
        self.u_grid = np.linspace(self.u_lo, self.u_hi, grid_points)

    def solve(self) -> list[PowerLawFit]:
        lengths = self.lengths
        order = np.argsort(lengths, kind="stable")
        results: list[PowerLawFit | None] = [None] * len(lengths)
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            # grow the chunk while padding stays under ~25% and the chunk under CHUNK_ELEMS
            stop = start + 1
            while stop < len(order):
                w = int(lengths[order[stop]])
                if w * (stop + 1 - start) > self.CHUNK_ELEMS or w > 1.25 * width + 8:
                    break
                stop += 1
            idx = order[start:stop]
            for j, fit in zip(idx, self._solve_chunk(idx)):
                results[j] = fit
            start = stop
        return results  # type: ignore[return-value]

    # ---- one chunk ---------------------------------------------------------------------------

    def _solve_chunk(self, idx: np.ndarray) -> list[PowerLawFit]:
        lens = self.lengths[idx]
        P, N = idx.size, int(lens.max())
        rows = np.repeat(np.arange(P), lens)
        within = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
        src = np.repeat(self.offsets[idx], lens) + within
        M = np.zeros((P, N), bool)
        L = np.full((P, N), -np.inf)
        Y = np.zeros((P, N))
        M[rows, within] = True
        L[rows, within] = self.logU[src]
        Y[rows, within] = self.D[src]
        n = M.sum(1).astype(float)
        # Scale x = e_US**alpha by its largest value per problem: with ``Lm = max log e_US`` the
        # solver works with ``x' = exp(alpha (L - Lm))`` in (0, 1] and ``k' = k e_max**alpha``,
        # the same profile (k >= 0 absorbs any positive scale). Unscaled, x**2 underflowed in the
        # float32 grid (and float64 sums) for small errors at large alpha: e_US = 1e-3 at
        # alpha = 6.7 gives x**2 ~ 1e-40, the grid profile read k = 0 there and the fit stopped
        # at a grid point with 3.5x the optimum's SSE.
        Lm = np.max(L, axis=1)               # finite: the checks leave a positive e_US per problem
        L = L - Lm[:, None]                  # -inf stays -inf at padding and at e_US = 0
        ch = _Chunk(L=L, Y=Y, M=M, n=n, loss=self.loss, delta=self.delta, irls=self.IRLS_ITERS)
        f_grid = ch.grid_profile(self.u_grid)                     # (P, G)
        lanes_p, lanes_j = self._candidates(f_grid)
        best = self._refine(ch, lanes_p, lanes_j, P, f_grid)
        obj, u, k, c = (np.array(v) for v in zip(*best))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            pred = k[:, None] * np.exp(np.exp(u)[:, None] * ch.L) + c[:, None]
            sse = np.where(ch.M, (pred - ch.Y) ** 2, 0.0).sum(1)
            k = np.where(k > 0, k * np.exp(-np.exp(u) * Lm), k)   # the law's k (k' = k e_max**alpha)
        return [self._result(int(ch.n[i]), obj[i], u[i], k[i], c[i], sse[i]) for i in range(P)]

    def _candidates(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best grid-local minima of each problem (at most MAX_CANDIDATES): (problem, grid
        index) lanes. Not only those near the best grid value: a basin's grid value says little
        of its minimum (two basins 0.1% apart on the grid refined to 0.2% in the other order)."""
        P, G = f.shape
        f = np.where(np.isfinite(f), f, np.inf)
        left = np.concatenate([np.full((P, 1), np.inf), f[:, :-1]], axis=1)
        right = np.concatenate([f[:, 1:], np.full((P, 1), np.inf)], axis=1)
        is_min = (f <= left) & (f <= right)
        score = np.where(is_min, f, np.inf)
        top = np.argsort(score, axis=1)[:, : self.MAX_CANDIDATES]
        ok = np.take_along_axis(score, top, 1) < np.inf
        ok[:, 0] |= ~ok.any(1)  # always refine at least the best grid point
        p_idx = np.repeat(np.arange(P)[:, None], top.shape[1], 1)[ok]
        return p_idx, top[ok]

    def _refine(self, ch: "_Chunk", p: np.ndarray, j: np.ndarray, P: int,
                f_grid: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Per lane: start at the vertex of the parabola through the grid minimum and its two
        neighbours, take a Newton step with the parabola's curvature (10% long, so that a near-exact
        step still lands past the root and brackets it), then cubic steps on f'(log alpha) inside
        the bracket. Returns per problem (objective, log alpha, k, c) of its best lane."""
        uc, at_c, ue, at_e = self._newton_start(ch, p, j, f_grid)
        bracket = _Bracket.around(uc, at_c, ue, at_e)
        for _ in range(self.REFINE_ITERS):
            if not bracket.iterate(ch, p):
                break
        return bracket.best_per_problem(p, P)

    def _newton_start(self, ch: "_Chunk", p: np.ndarray, j: np.ndarray, f_grid: np.ndarray) -> tuple[
            np.ndarray, tuple[np.ndarray, ...], np.ndarray, tuple[np.ndarray, ...]]:
        """The first two points of each lane, ``uc`` and ``ue``, each with (f, f', k, c) there:
        the parabola's vertex and a Newton step from it, or the grid neighbour on the downhill side
        when the step fell short of the root."""
        G = self.u_grid.size
        h = self.u_grid[1] - self.u_grid[0]
        jm, jp = np.maximum(j - 1, 0), np.minimum(j + 1, G - 1)
        fm, f0, fp = f_grid[p, jm], f_grid[p, j], f_grid[p, jp]
        curv = (fp - 2.0 * f0 + fm) / (h * h)                       # f'' from the grid
        interior = (j > 0) & (j < G - 1) & np.isfinite(curv) & (curv > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(interior, -(fp - fm) / (2.0 * h * curv), 0.0)
        uc = self.u_grid[j] + np.clip(shift, -h, h)
        f_c, g_c, k_c, c_c = ch.evaluate(p, uc)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = np.where(interior, -1.1 * g_c / curv, -np.sign(g_c) * 0.25 * h)
        step = np.clip(np.where(np.isfinite(newton), newton, 0.0), -h, h)
        step = np.where(np.abs(step) < 1e-7, -np.sign(g_c) * 1e-7, step)
        ue = np.clip(uc + step, self.u_lo, self.u_hi)
        f_e, g_e, k_e, c_e = ch.evaluate(p, ue)
        # No sign change yet (the Newton step fell short): fall back to the grid neighbour on the
        # downhill side, which brackets the root when the grid minimum is a true local minimum.
        short = (np.sign(g_e) == np.sign(g_c)) & (ue != uc)
        if short.any():
            si = np.flatnonzero(short)
            far = np.where(g_c[si] > 0, self.u_grid[jm[si]], self.u_grid[jp[si]])
            uc[si], f_c[si], g_c[si], k_c[si], c_c[si] = ue[si], f_e[si], g_e[si], k_e[si], c_e[si]
            ue[si] = far
            f_e[si], g_e[si], k_e[si], c_e[si] = ch.evaluate(p[si], far)
        return uc, (f_c, g_c, k_c, c_c), ue, (f_e, g_e, k_e, c_e)

    def _result(self, n: int, obj: float, u: float, k: float, c: float, sse: float) -> PowerLawFit:
        if not all(map(math.isfinite, (obj, u, k, c, sse))):
            return _failed("nonfinite", "the fit produced non-finite values", n, self.loss)
        # exp(log(alpha_max)) is 10.000000000000002 for alpha_max = 10: a fit "at its upper bound 10"
        # stored an alpha past it (and 0.0010000000000000002 at the lower one). The search clips u to
        # [u_lo, u_hi], so a fit on a bound has u exactly there: report the bound itself, and clamp
        # the rest (at most an ulp; the fit is unchanged).
        alpha = (self.alpha_min if u <= self.u_lo else self.alpha_max if u >= self.u_hi
                 else min(max(math.exp(u), self.alpha_min), self.alpha_max))
        bounds = []
        flat = k <= 1e-12
        if flat:  # numerically zero: the law is flat and alpha is not identified
            bounds.append("k = 0 (alpha is not identified)")
        # a flat law's alpha is wherever the search left it: "alpha at its lower bound" beside
        # "k = 0" read as a second finding
        if u <= self.u_lo + 1e-9 and not flat:
            bounds.append(f"alpha at its lower bound {self.alpha_min:g}")
        if u >= self.u_hi - 1e-9 and not flat:
            bounds.append(f"alpha at its upper bound {self.alpha_max:g}")
        if c <= 0:
            bounds.append("e_ir = 0")
        if c >= 1:
            bounds.append("e_ir = 1")
        return PowerLawFit(k=float(k), alpha=alpha, e_ir=float(c), sse=float(sse), loss=self.loss,
                           loss_value=float(obj), n_points=n,
                           status="at_bound" if bounds else "ok", message="; ".join(bounds))


@dataclass
class _Chunk:
    """Padded problems: L = log e_US (-inf at padding), Y = e_DS (0 at padding), M = mask."""

    L: np.ndarray
    Y: np.ndarray
    M: np.ndarray
    n: np.ndarray
    loss: str
    delta: float
    irls: int

    def __post_init__(self) -> None:
        self.sy = self.Y.sum(1)
        self.my = self.sy / self.n
        self.Yc = (self.Y - self.my[:, None]) * self.M
        self.Mf = self.M.astype(float)
        self.L0 = np.where(np.isfinite(self.L), self.L, 0.0)
        self.L32 = self.L.astype(np.float32)
        self.Yc32 = self.Yc.astype(np.float32)
        if self.loss == "log":
            self.logY = np.where(self.M, np.log(np.maximum(self.Y, LOG_EPS)), 0.0)

    # ---- the profile on the grid -------------------------------------------------------------

    def grid_profile(self, u_grid: np.ndarray) -> np.ndarray:
        """The profile objective at every (problem, grid alpha)."""
        P, G = self.L.shape[0], u_grid.size
        f = np.empty((P, G))
        if self.loss != "lsq":
            all_p = np.arange(P)
            for j, u in enumerate(u_grid):
                f[:, j] = self.evaluate(all_p, np.full(P, u), grad=False)[0]
            return f
        n32 = self.n.astype(np.float32)
        my32 = self.my.astype(np.float32)
        M32 = self.M.astype(np.float32)
        X = np.empty(self.L32.shape, np.float32)
        Xc = np.empty_like(X)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for j, u in enumerate(u_grid):
                np.multiply(self.L32, np.float32(math.exp(u)), out=X)
                np.exp(X, out=X)                                   # 0 at padding and at e_us = 0
                f[:, j] = _lsq_profile(X, Xc, self.Yc32, M32, n32, my32)
        return f

    # ---- explicit float64 evaluation of lanes --------------------------------------------------

    def evaluate(self, p: np.ndarray, u: np.ndarray, grad: bool = True) -> tuple[np.ndarray, ...]:
        """Objective, d objective / d log alpha, k and c for problems ``p`` at ``log alpha = u``."""
        L = self.L[p]
        alpha = np.exp(u)[:, None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            X = np.exp(alpha * L)
        XL = X * self.L0[p]   # x log(e_us) -> 0 as e_us -> 0, and 0 at padding
        if self.loss == "lsq":
            # Centered residuals (see _lsq_profile): r_i = k Xc_i - Yc_i + d on valid points.
            Mf, n, my, Yc = self.Mf[p], self.n[p], self.my[p], self.Yc[p]
            Xc = np.empty_like(X)
            mx = X.sum(1) / n
            np.subtract(X, mx[:, None], out=Xc)
            np.multiply(Xc, Mf, out=Xc)
            k, c = _lsq_solve(Xc, Yc, n, mx, my)
            R = k[:, None] * Xc - Yc
            d = k * mx + c - my
            f = np.einsum("pn,pn->p", R, R) + n * d * d
            if not grad:
                return f, np.zeros_like(f), k, c
            g = 2.0 * k * (np.einsum("pn,pn->p", R, XL) + d * XL.sum(1)) * alpha[:, 0]
            return f, g, k, c
        Y, Mf = self.Y[p], self.Mf[p]
        if self.loss == "huber":
            k, c = self._huber_inner(X, Y, Mf)
            r = (k[:, None] * X + c[:, None] - Y) * Mf
            a = np.abs(r)
            f = np.where(a <= self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta)).sum(1)
            drho = np.clip(r, -self.delta, self.delta)
        else:
            k, c = self._log_inner(X, Y, Mf, self.logY[p])
            pred = np.maximum(k[:, None] * X + c[:, None], LOG_EPS)
            r = (np.log(pred) - self.logY[p]) * Mf
            f = np.einsum("pn,pn->p", r, r)
            drho = 2.0 * r / pred
        if not grad:
            return f, np.zeros_like(f), k, c
        g = k * np.einsum("pn,pn->p", drho * Mf, XL) * alpha[:, 0]   # envelope theorem, d/d log alpha
        return f, g, k, c

    def _huber_inner(self, X: np.ndarray, Y: np.ndarray, Mf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = Mf.copy()
        k = c = None
        for _ in range(self.irls):  # IRLS: the Huber problem is convex in (k, c) for fixed alpha
            k, c = _weighted_inner(X, Y, W)
            a = np.abs(k[:, None] * X + c[:, None] - Y)
            W = Mf * np.where(a <= self.delta, 1.0, self.delta / np.maximum(a, 1e-300))
        return k, c  # type: ignore[return-value]

    def _log_inner(self, X: np.ndarray, Y: np.ndarray, Mf: np.ndarray, logY: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Gauss-Newton on log(k x + c) - log y, started from the 1/y^2-weighted linearization.
        p0 = np.maximum(Y, LOG_EPS)
        T = p0.copy()
        k = c = None
        best_f = np.full(X.shape[0], np.inf)
        best_k = np.zeros(X.shape[0])
        best_c = np.zeros(X.shape[0])
        for _ in range(self.irls):
            k, c = _weighted_inner(X, T, Mf / p0**2)
            p0 = np.maximum(k[:, None] * X + c[:, None], LOG_EPS)
            r = (np.log(p0) - logY) * Mf
            f = np.einsum("pn,pn->p", r, r)
            better = f < best_f
            best_f, best_k, best_c = np.where(better, f, best_f), np.where(better, k, best_k), np.where(better, c, best_c)
            T = p0 * (1.0 + logY - np.log(p0))
        return best_k, best_c


@dataclass
class _Bracket:
    """The refinement's state, per lane: the bracket ``[a, b]`` (f' < 0 at a, > 0 at b) with f and
    f' at its ends, the best point evaluated so far, the last two iterates and the lanes still
    refining."""

    a: np.ndarray
    fa: np.ndarray
    ga: np.ndarray
    b: np.ndarray
    fb: np.ndarray
    gb: np.ndarray
    bf: np.ndarray          # the best point so far: objective, log alpha, k, c
    bu: np.ndarray
    bk: np.ndarray
    bc: np.ndarray
    u0: np.ndarray          # the iterate before last, and f' there
    g0: np.ndarray
    u1: np.ndarray          # the last iterate, and f' there
    g1: np.ndarray
    same: np.ndarray        # how many times in a row the same bracket end was replaced
    last_side: np.ndarray   # which end the last iterate replaced (+1: b, -1: a)
    active: np.ndarray

    @classmethod
    def around(cls, uc: np.ndarray, at_c: tuple[np.ndarray, ...], ue: np.ndarray,
               at_e: tuple[np.ndarray, ...]) -> "_Bracket":
        """The bracket of two points with (f, f', k, c) at each."""
        f_c, g_c, k_c, c_c = at_c
        f_e, g_e, k_e, c_e = at_e
        go_left = ue < uc
        take_e = f_e < f_c
        bf, bu = np.where(take_e, f_e, f_c), np.where(take_e, ue, uc)
        bk, bc = np.where(take_e, k_e, k_c), np.where(take_e, c_e, c_c)
        a, b = np.where(go_left, ue, uc), np.where(go_left, uc, ue)
        fa, fb = np.where(go_left, f_e, f_c), np.where(go_left, f_c, f_e)
        ga, gb = np.where(go_left, g_e, g_c), np.where(go_left, g_c, g_e)
        # A bracket needs f' < 0 at a and > 0 at b. Without one the minimum is at a bound of
        # alpha (or k = 0 made f flat), and the best point evaluated is the answer.
        active = (ga < 0) & (gb > 0) & (b > a)
        # The last two iterates and how many times in a row the same bracket end was replaced:
        # a cubic over a bracket whose far end is stale (a kink where the active set of the
        # inner problem changes) creeps from one side; a secant through the last two iterates
        # then extrapolates to the root (Dekker's fallback).
        u1, g1 = np.where(go_left, ue, uc), np.where(go_left, g_e, g_c)
        u0, g0 = np.where(go_left, uc, ue), np.where(go_left, g_c, g_e)
        return cls(a, fa, ga, b, fb, gb, bf, bu, bk, bc, u0, g0, u1, g1, np.zeros(uc.size, np.int8),
                   np.zeros(uc.size, np.int8), active)

    def iterate(self, ch: "_Chunk", p: np.ndarray) -> bool:
        """One cubic step (a secant or bisection one where the bracket went stale) in every
        active lane; False when no lane is active any more."""
        a, fa, ga, b, fb, gb = self.a, self.fa, self.ga, self.b, self.fb, self.gb
        bf, bu, bk, bc = self.bf, self.bu, self.bk, self.bc
        u0, g0, u1, g1, same, last_side = self.u0, self.g0, self.u1, self.g1, self.same, self.last_side
        idx = np.flatnonzero(self.active)
        if idx.size == 0:
            return False
        u = _cubic_step(a[idx], fa[idx], ga[idx], b[idx], fb[idx], gb[idx])
        stale = same[idx] >= 2
        if stale.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                sec = u1[idx] - g1[idx] * (u1[idx] - u0[idx]) / (g1[idx] - g0[idx])
            ok = stale & np.isfinite(sec) & (sec > a[idx]) & (sec < b[idx])
            u = np.where(ok, sec, np.where(stale, 0.5 * (a[idx] + b[idx]), u))
        f_u, g_u, k_u, c_u = ch.evaluate(p[idx], u)
        u0[idx], g0[idx], u1[idx], g1[idx] = u1[idx], g1[idx], u, g_u
        side = np.where(g_u > 0, 1, -1).astype(np.int8)
        same[idx] = np.where(side == last_side[idx], same[idx] + 1, 0)
        last_side[idx] = side
        better = f_u < bf[idx]
        bf[idx] = np.where(better, f_u, bf[idx])
        bu[idx] = np.where(better, u, bu[idx])
        bk[idx] = np.where(better, k_u, bk[idx])
        bc[idx] = np.where(better, c_u, bc[idx])
        right = g_u > 0  # the minimum is left of u: u becomes the new b
        ib, ia = idx[right], idx[~right]
        step = np.minimum(u - a[idx], b[idx] - u)
        b[ib], fb[ib], gb[ib] = u[right], f_u[right], g_u[right]
        a[ia], fa[ia], ga[ia] = u[~right], f_u[~right], g_u[~right]
        # Converged when the objective is provably close: near the minimum f(u) - f* is about
        # g^2 / (2 f''), with f'' from the bracket's derivative secant; stop below 1e-13 of f
        # (the brute-force test asks for 1e-9). Or when the step shrinks below 1e-9.
        with np.errstate(divide="ignore", invalid="ignore"):
            curv = (gb[idx] - ga[idx]) / (b[idx] - a[idx])
            excess = np.where(curv > 0, g_u * g_u / (2.0 * curv), np.inf)
        done = (excess <= 1e-13 * np.abs(f_u) + 1e-300) | (step < 1e-9) | (g_u == 0) | ((b[idx] - a[idx]) < 1e-9)
        self.active[idx[done]] = False
        return True

    def best_per_problem(self, p: np.ndarray, P: int) -> list[tuple[float, float, float, float]]:
        """(objective, log alpha, k, c) of each problem's best lane; ``inf`` for a problem without lanes."""
        best: list[tuple[float, float, float, float]] = [(math.inf, math.nan, math.nan, math.nan)] * P
        for lane in np.argsort(self.bf, kind="stable")[::-1]:  # the best lane is written last
            best[p[lane]] = (float(self.bf[lane]), float(self.bu[lane]), float(self.bk[lane]), float(self.bc[lane]))
        return best


def _cubic_step(a: np.ndarray, fa: np.ndarray, ga: np.ndarray, b: np.ndarray, fb: np.ndarray,
                gb: np.ndarray) -> np.ndarray:
    """Minimizer of the cubic that matches f and f' at a < b (ga < 0 < gb), safeguarded.

    Nocedal & Wright, Numerical Optimization, eq. (3.59). A step outside the open bracket falls
    back to a regula-falsi step, then to bisection. A step next to an end is not rejected: near
    convergence the minimizer *is* next to the end last replaced, and that is how the caller stops.
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
        d2 = np.sqrt(np.maximum(d1 * d1 - ga * gb, 0.0))   # ga * gb < 0, so the root is real
        u = b - (b - a) * (gb + d2 - d1) / (gb - ga + 2.0 * d2)
        secant = b - gb * (b - a) / (gb - ga)
    u = np.where(np.isfinite(u) & (u > a) & (u < b), u, secant)
    return np.where(np.isfinite(u) & (u > a) & (u < b), u, 0.5 * (a + b))


def _lsq_solve(Xc: np.ndarray, Yc: np.ndarray, n: np.ndarray, mx: np.ndarray,
               my: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min sum (k x + c - y)^2 over k >= 0, 0 <= c <= 1, per row, in closed form.

    Inputs are centered per row (``Xc = x - mean x``, ``Yc = y - mean y``, both 0 at padding).
    With ``d = k mx + c - my`` the objective is exactly ``sum (k Xc - Yc)^2 + n d^2``
    ``= k^2 sxx - 2 k sxy + syy + n d^2``: the unconstrained optimum is ``k = sxy / sxx, d = 0``;
    if it is infeasible, the optimum lies on one of the edges k = 0, c = 0, c = 1, and each
    edge's minimizer is a clipped 1-D least squares.
    """
    sxx = np.einsum("pn,pn->p", Xc, Xc)
    sxy = np.einsum("pn,pn->p", Xc, Yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(sxx > 0, sxy / sxx, 0.0).astype(Xc.dtype, copy=False)
    c = my - k * mx
    bad = np.flatnonzero((k < 0) | (c < 0) | (c > 1))
    if bad.size:
        kb, cb = _lsq_edges(sxx[bad], sxy[bad], n[bad], mx[bad], my[bad])
        k[bad], c[bad] = kb, cb
    return k, c


def _lsq_edges(sxx: np.ndarray, sxy: np.ndarray, n: np.ndarray, mx: np.ndarray,
               my: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best of the three edge minimizers of the feasible half-strip (rows where the
    unconstrained optimum is infeasible)."""
    Sxx = sxx + n * mx * mx          # uncentered sums, for the edges c = 0 and c = 1
    Sxy = sxy + n * mx * my
    Sx = n * mx
    with np.errstate(divide="ignore", invalid="ignore"):
        k_c0 = np.maximum(0.0, np.where(Sxx > 0, Sxy / Sxx, 0.0))
        k_c1 = np.maximum(0.0, np.where(Sxx > 0, (Sxy - Sx) / Sxx, 0.0))
    ks = np.stack([np.zeros_like(mx), k_c0, k_c1])
    cs = np.stack([np.clip(my, 0.0, 1.0), np.zeros_like(mx), np.ones_like(mx)])
    d = ks * mx + cs - my
    obj = ks * ks * sxx - 2.0 * ks * sxy + n * d * d   # objective minus the constant syy
    j = np.argmin(obj, axis=0)
    cols = np.arange(mx.size)
    return ks[j, cols], cs[j, cols]


def _lsq_profile(X: np.ndarray, Xc: np.ndarray, Yc: np.ndarray, Mf: np.ndarray, n: np.ndarray,
                 my: np.ndarray) -> np.ndarray:
    """min over (k, c) of the squared error, per row, for x = X (0 at padding); ``Xc`` is scratch."""
    mx = X.sum(1) / n
    np.subtract(X, mx[:, None], out=Xc)
    np.multiply(Xc, Mf, out=Xc)
    k, c = _lsq_solve(Xc, Yc, n, mx, my)
    d = k * mx + c - my
    np.multiply(Xc, k[:, None], out=Xc)
    np.subtract(Xc, Yc, out=Xc)                 # centered residuals k Xc - Yc
    return np.einsum("pn,pn->p", Xc, Xc) + n * d * d


def _weighted_inner(X: np.ndarray, T: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min sum w (k x + c - t)^2 over k >= 0, 0 <= c <= 1, per row (weights 0 at padding)."""
    sw = W.sum(1)
    sw = np.where(sw > 0, sw, 1.0)
    mx = (W * X).sum(1) / sw
    mt = (W * T).sum(1) / sw
    Xc = X - mx[:, None]
    Tc = T - mt[:, None]
    sxx = (W * Xc * Xc).sum(1)
    sxt = (W * Xc * Tc).sum(1)
    k_u = np.where(sxx > 0, sxt / np.where(sxx > 0, sxx, 1.0), 0.0)
    c_u = mt - k_u * mx
    Sxx = (W * X * X).sum(1)
    Sxt = (W * X * T).sum(1)
    Sx = (W * X).sum(1)
    safe = np.where(Sxx > 0, Sxx, 1.0)
    cands = [
        (k_u, c_u),
        (np.zeros_like(k_u), np.clip(mt, 0.0, 1.0)),
        (np.maximum(0.0, np.where(Sxx > 0, Sxt / safe, 0.0)), np.zeros_like(k_u)),
        (np.maximum(0.0, np.where(Sxx > 0, (Sxt - Sx) / safe, 0.0)), np.ones_like(k_u)),
    ]
    best_s = np.full(k_u.size, np.inf)
    best_k = np.zeros_like(k_u)
    best_c = np.zeros_like(k_u)
    for i, (k, c) in enumerate(cands):
        r = k[:, None] * X + c[:, None] - T
        s = (W * r * r).sum(1)
        if i == 0:
            s = np.where((k >= 0) & (c >= 0) & (c <= 1), s, np.inf)
        better = s < best_s
        best_s, best_k, best_c = np.where(better, s, best_s), np.where(better, k, best_k), np.where(better, c, best_c)
    return best_k, best_c
