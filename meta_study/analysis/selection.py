"""Which (law, frontier) to believe, and how far: back-tested selection, intervals, trust flags.

Judged by prediction, not by fit. For every group:

1. **Split.** Points at or below the hold-out threshold (:func:`holdout.holdout_threshold`) are
   the *visible* data; the others are held out. Held-out models are never used to choose: they
   only score the reported ``pred_err``.
2. **Back-test (rolling origin).** For each cut ``c`` in ``cuts`` (quantiles of the visible US
   accuracies, default 0.5, 0.6, 0.7, 0.8): fit every (law, frontier) to the visible models at or
   below the cut and predict the frontier above it, the upper-hull vertices of the visible models
   above the cut (the same target as ``pred_err``). A cut needs ``MIN_ABOVE`` models above it.
   ``backtest_err`` is the mean over cuts of the RMSE there (accuracy, fraction).
3. **Headline.** Among the frontier estimators (``all`` predicts the typical model, not the best
   one, so it is never the headline) and usable fits, the lowest ``backtest_err`` wins; a tie
   goes to the law with fewer parameters. ``backtest_margin`` is the runner-up's error minus the
   winner's. Without any back-test (too few models) the paper's ``eq1`` on ``vertices`` is the
   headline, flagged. The flat guess (the best DS accuracy seen below the cut) is back-tested
   beside the laws.
4. **Uncertainty.** The headline law is refitted on ``interval_samples`` resamples of the visible models,
   with the frontier recomputed on each: percentile intervals for saturation, the stop-paying US
   accuracy and the prediction. The prediction interval adds the back-test error in quadrature:
   half-width ``sqrt(h_boot^2 + (z sigma_bt)^2)`` with ``z`` the normal quantile of ``level`` and
   ``sigma_bt`` the RMS of the headline's back-test residuals. ``coverage`` is that interval's
   measured coverage on the back-tests, leave-one-cut-out (``sigma_bt`` from the other cuts).
5. **Trust.** A headline is ``trusted`` only when none of :data:`FLAGS` applies; ``warnings``
   names each that does. An untrusted group reports no finding: its :class:`Claims` (intervals,
   stop-paying point, prediction, US needed) are NaN.

The prediction is stated at ``predict_us``: as far beyond the best visible model (in log US
error) as the back-tests reached beyond their cuts, so the statement is no farther out than what
was tested.
"""

from __future__ import annotations

from ..errors import Range

from ..defaults import PAYOFF_THRESHOLD, TOLERANCE
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from scipy.special import ndtri

from .frontiers import FRONTIER_KINDS, FRONTIERS, check_frontier_names, frontier_points
from .groups import stable_hash
from .hull import upper_hull
from .laws import LAWS, LawFit, get_law
from .payoff import stop_paying_many, us_needed_many

MIN_ABOVE = 3            # models above a back-test cut, at least
CHORD_TOL = 0.02         # a model within 2 DS points below a frontier edge supports it
CHORD_GAP = 0.25         # ... an unsupported stretch wider than this share of the US range is a chord
EXTRAPOLATION = 2.0      # claims farther out than this many back-tested horizons (log US error)
FLAGS = ("few_points", "chord", "at_bound", "backtest", "extrapolation")


@dataclass(frozen=True)
class Candidate:
    """One (law, frontier) fitted to one group's visible models, with what it predicted.

    Errors are accuracy fractions (RMSE). ``backtest_err`` is NaN without a back-test.
    """

    law: str
    frontier: str
    fit: LawFit
    n_fit: int
    n_support: int
    fit_err: float
    pred_err: float
    backtest_err: float
    backtest_sigma: float
    coverage: float
    warnings: tuple[str, ...] = ()

    @property
    def headline_eligible(self) -> bool:
        return self.frontier in FRONTIER_KINDS and self.fit.usable


@dataclass(frozen=True)
class Claims:
    """The headline's answer and its intervals (fractions; NaN where undefined, see payoff)."""

    saturation: float = math.nan
    saturation_lo: float = math.nan
    saturation_hi: float = math.nan
    stop_paying_us: float = math.nan
    stop_paying_lo: float = math.nan
    stop_paying_hi: float = math.nan
    predict_us: float = math.nan
    predict_ds: float = math.nan
    predict_lo: float = math.nan
    predict_hi: float = math.nan
    us_needed: float = math.nan      # the US accuracy the law needs for SelectionOptions.ds_target
    us_needed_lo: float = math.nan
    us_needed_hi: float = math.nan


@dataclass(frozen=True)
class GroupSelection:
    """Every candidate of one group, which one is the headline, and how far it is trusted."""

    candidates: tuple[Candidate, ...]
    headline: int
    holdout_threshold: float
    n_points: int
    n_heldout: int
    flat_backtest_err: float
    flat_pred_err: float
    backtest_margin: float
    horizon: float              # back-tested horizon: max over cuts of log(e_cut / e_best_above)
    claims: Claims = field(default_factory=Claims)
    trusted: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def best(self) -> Candidate:
        return self.candidates[self.headline]


@dataclass(frozen=True)
class SelectionOptions:
    """How candidates are back-tested, chosen, bounded and trusted.

    Attributes:
        laws, frontiers: the candidates (registry names).
        cuts: back-test cuts, quantiles of the visible US accuracies.
        tolerance: back-test RMSE (fraction) above which a headline is not trusted (0.03 = 3 points).
        level: the prediction interval's nominal coverage.
        interval_samples: bootstrap resamples of the headline (0: no intervals).
        payoff_threshold: "stops paying" below this many DS points per US point.
        ds_target: a DS accuracy (fraction) for the calculator's "US needed" (None: not asked).
        seed: the bootstrap's master seed (each group's stream also depends on its key).

    Interval ends that are "never" (the law does not get there before 100% US) are ``inf``.
    """

    laws: tuple[str, ...] = tuple(LAWS)
    frontiers: tuple[str, ...] = tuple(FRONTIERS)
    cuts: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    tolerance: float = TOLERANCE
    level: float = 0.9
    interval_samples: int = 100
    payoff_threshold: float = PAYOFF_THRESHOLD
    ds_target: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.laws:
            get_law(name)
        check_frontier_names(self.frontiers)
        if not self.laws:
            raise ValueError("need at least one law")
        if not all(0 < c < 1 for c in self.cuts):
            raise ValueError(f"back-test cuts must be quantiles in (0, 1), got {self.cuts}")
        Range(0, 1, lo_open=True, hi_open=True).check("level", self.level)
        Range(0, 1, lo_open=True).check("tolerance", self.tolerance, "a fraction of accuracy")
        Range(0).check("interval_samples", self.interval_samples)
        Range(0, lo_open=True).check("payoff_threshold", self.payoff_threshold, "DS points per US point")
        if self.ds_target is not None:
            Range(0, 1, lo_open=True).check("ds_target", self.ds_target, "a DS accuracy")


def target_frontier(us: np.ndarray, ds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frontier a prediction is scored against: the upper-hull vertices of the given models."""
    h = upper_hull(us, ds)
    return us[h], ds[h]


def _rmse(pred: np.ndarray, target: np.ndarray) -> float:
    ok = np.isfinite(target)
    if not ok.any() or not np.isfinite(pred[ok]).all():
        return math.nan
    return float(np.sqrt(np.mean((pred[ok] - target[ok]) ** 2)))


@dataclass
class _Problems:
    """Fitting problems gathered per law, so that each law is fitted in one batched call."""

    us: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ds: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(self, law: str, us: np.ndarray, ds: np.ndarray) -> tuple[str, int]:
        self.us.setdefault(law, []).append(us)
        self.ds.setdefault(law, []).append(ds)
        return law, len(self.us[law]) - 1

    def solve(self, fit_kw: dict[str, Any]) -> dict[str, list[LawFit]]:
        return {law: get_law(law).fit_many(self.us[law], self.ds[law], **fit_kw) for law in self.us}


@dataclass
class _Group:
    """One group while it is being selected: its split, frontiers and problem references."""

    us: np.ndarray
    ds: np.ndarray
    key: Any
    threshold: float
    vis: np.ndarray
    held: np.ndarray
    frontiers: dict[str, Any] = field(default_factory=dict)
    final: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    # per cut: (target us, target ds, flat guess, e_cut / e_best ratio, {(law, frontier): ref})
    cuts: list[tuple[np.ndarray, np.ndarray, float, float, dict[tuple[str, str], tuple[str, int]]]] = \
        field(default_factory=list)


def _chord_gap(fr: Any, us: np.ndarray, ds: np.ndarray) -> float:
    """The widest US stretch (share of the frontier's US range) with no model within CHORD_TOL
    below the frontier's polyline through its support models."""
    sx, sy = us[fr.support], ds[fr.support]
    order = np.argsort(sx, kind="stable")
    sx, sy = sx[order], sy[order]
    if sx.size < 2 or sx[-1] <= sx[0]:
        return 0.0
    inside = (us >= sx[0]) & (us <= sx[-1])
    line = np.interp(us[inside], sx, sy)
    near = np.sort(us[inside][ds[inside] >= line - CHORD_TOL])
    pts = np.concatenate([[sx[0]], near, [sx[-1]]])
    return float(np.max(np.diff(pts)) / (sx[-1] - sx[0]))


def select_groups(groups_xy: Sequence[tuple[np.ndarray, np.ndarray]], keys: Sequence[Any],
                  thresholds: Sequence[float], options: SelectionOptions = SelectionOptions(), *,
                  nondecreasing: bool = False, fit_kw: dict[str, Any] | None = None) -> list[GroupSelection]:
    """Back-test, choose, bound and flag every group in batched fits (see the module doc).

    Args:
        groups_xy: (US accuracies, DS accuracies) per group, fractions.
        keys: each group's key (seeds its bootstrap).
        thresholds: each group's hold-out threshold: points at or below it are visible.
        nondecreasing: frontiers without their decreasing tail.
        fit_kw: ``loss`` and ``alpha_max`` for the Eq. 1 laws.

    Returns:
        One :class:`GroupSelection` per group, in order. Never raises on bad data: a group that
        cannot be fitted gets candidates with failure statuses and an untrusted headline.
    """
    probs = _Problems()
    gs: list[_Group] = []
    for (us, ds), key, thr in zip(groups_xy, keys, thresholds):
        us, ds = np.asarray(us, float), np.asarray(ds, float)
        vis, held = np.flatnonzero(us <= thr), np.flatnonzero(us > thr)
        g = _Group(us=us, ds=ds, key=key, threshold=float(thr), vis=vis, held=held)
        for fr in options.frontiers:
            F = frontier_points(fr, us[vis], ds[vis], nondecreasing=nondecreasing)
            g.frontiers[fr] = F
            for law in options.laws:
                g.final[(law, fr)] = probs.add(law, F.us, F.ds)
        uv, dv = us[vis], ds[vis]
        for c in sorted(set(options.cuts)):
            if uv.size < 2 * MIN_ABOVE:
                break
            q = float(np.quantile(uv, c))
            below, above = uv <= q, uv > q
            if above.sum() < MIN_ABOVE or below.sum() < 3:
                continue
            tx, ty = target_frontier(uv[above], dv[above])
            refs = {}
            for fr in options.frontiers:
                F = frontier_points(fr, uv[below], dv[below], nondecreasing=nondecreasing)
                for law in options.laws:
                    refs[(law, fr)] = probs.add(law, F.us, F.ds)
            ratio = (1.0 - q) / max(1.0 - float(uv[above].max()), 1e-6)
            g.cuts.append((tx, ty, float(dv[below].max()), ratio, refs))
        gs.append(g)
    kw = dict(fit_kw or {})
    solved = probs.solve(kw)
    out = [_choose(g, solved, options) for g in gs]
    return _with_claims(gs, out, options, nondecreasing, kw)


def _choose(g: _Group, solved: dict[str, list[LawFit]], o: SelectionOptions) -> GroupSelection:
    us, ds = g.us, g.ds
    dv = ds[g.vis]
    held_t = target_frontier(us[g.held], ds[g.held]) if g.held.size else (us[:0], ds[:0])
    cands = []
    for (law, fr), (lw, i) in g.final.items():
        fit = solved[lw][i]
        F = g.frontiers[fr]
        fit_err = _rmse(fit.predict_accuracy(F.us), F.ds) if F.us.size else math.nan
        if fr == "all":
            pred_err = _rmse(fit.predict_accuracy(us[g.held]), ds[g.held]) if g.held.size else math.nan
        else:
            pred_err = _rmse(fit.predict_accuracy(held_t[0]), held_t[1]) if held_t[0].size else math.nan
        errs, resid = [], []
        for tx, ty, _flat, _ratio, refs in g.cuts:
            f = solved[refs[(law, fr)][0]][refs[(law, fr)][1]]
            r = f.predict_accuracy(tx) - ty
            errs.append(float(np.sqrt(np.mean(r * r))) if f.usable else math.nan)
            resid.append(r if f.usable else None)
        bt = float(np.mean(errs)) if errs and all(np.isfinite(errs)) else math.nan
        sigma = float(np.sqrt(np.mean(np.concatenate(resid) ** 2))) if errs and np.isfinite(bt) else math.nan
        cov = _coverage(resid, o.level) if np.isfinite(bt) else math.nan
        cands.append(Candidate(law=law, frontier=fr, fit=fit, n_fit=int(F.us.size), n_support=F.n_support,
                               fit_err=fit_err, pred_err=pred_err, backtest_err=bt, backtest_sigma=sigma,
                               coverage=cov))
    flat_bt = float(np.mean([_rmse(np.full(tx.shape, flat), ty) for tx, ty, flat, _r, _refs in g.cuts])) \
        if g.cuts else math.nan
    flat_pred = _rmse(np.full(held_t[0].shape, dv.max()), held_t[1]) if held_t[0].size and dv.size else math.nan
    order = sorted((i for i, c in enumerate(cands) if c.headline_eligible and np.isfinite(c.backtest_err)),
                   key=lambda i: (round(cands[i].backtest_err, 6), get_law(cands[i].law).n_params, i))
    if order:
        head = order[0]
        margin = cands[order[1]].backtest_err - cands[head].backtest_err if len(order) > 1 else math.nan
    else:
        fallback = [i for i, c in enumerate(cands) if (c.law, c.frontier) == ("eq1", "vertices")]
        head, margin = (fallback[0] if fallback else 0), math.nan
    horizon = float(max(math.log(r) for *_x, r, _refs in g.cuts)) if g.cuts else 0.0
    cands = [_flag(c, g, o, flat_bt) for c in cands]
    warnings = cands[head].warnings
    if not cands[head].fit.usable:
        # no usable headline: say what is wrong with the data itself (e.g. every model at one US
        # accuracy is "degenerate" for every law, while the hull of such a cloud is one point)
        why = dict.fromkeys(w for c in cands if c.frontier == "all" for w in c.warnings)
        warnings = tuple(dict.fromkeys((*warnings, *why)))
    return GroupSelection(candidates=tuple(cands), headline=head, holdout_threshold=g.threshold,
                          n_points=int(us.size), n_heldout=int(g.held.size), flat_backtest_err=flat_bt,
                          flat_pred_err=flat_pred, backtest_margin=float(margin), horizon=horizon,
                          trusted=False, warnings=warnings)


def _coverage(resid: list[np.ndarray | None], level: float) -> float:
    """Leave-one-cut-out coverage of ``pred +- z sigma`` on the back-test residuals."""
    if len(resid) < 2 or any(r is None for r in resid):
        return math.nan
    z = float(ndtri(0.5 + level / 2.0))
    hit, total = 0, 0
    for i, r in enumerate(resid):
        rest = np.concatenate([x for j, x in enumerate(resid) if j != i])  # type: ignore[misc]
        sigma = float(np.sqrt(np.mean(rest ** 2)))
        hit += int(np.sum(np.abs(r) <= z * sigma))  # type: ignore[arg-type]
        total += r.size  # type: ignore[union-attr]
    return hit / total if total else math.nan


def _flag(c: Candidate, g: _Group, o: SelectionOptions, flat_bt: float) -> Candidate:
    """The trust flags that apply to one candidate (extrapolation is added with the claims)."""
    w = []
    n_par = get_law(c.law).n_params
    if not c.fit.usable:
        w.append(f"few_points: no fit ({c.fit.status}: {c.fit.message})" if c.fit.status == "too_few_points"
                 else f"no fit: {c.fit.status}: {c.fit.message}")
        return replace(c, warnings=tuple(w))
    if c.n_support < n_par + 2:
        w.append(f"few_points: {c.n_support} frontier models for {n_par} parameters (need {n_par + 2})")
    F = g.frontiers[c.frontier]
    if c.frontier != "all":
        gap = _chord_gap(F, g.us[g.vis], g.ds[g.vis])
        if gap > CHORD_GAP:
            w.append(f"chord: {100 * gap:.0f}% of the frontier's US range has no model within "
                     f"{100 * CHORD_TOL:g} points of it")
    if c.fit.status == "at_bound":
        w.append(f"at_bound: {c.fit.message}")
    if not math.isfinite(c.backtest_err):
        w.append(f"backtest: no back-test (needs {2 * MIN_ABOVE} or more visible models and "
                 f"{MIN_ABOVE} above a cut)")
    elif c.backtest_err > o.tolerance:
        w.append(f"backtest: error {100 * c.backtest_err:.1f} points > tolerance {100 * o.tolerance:g}")
    elif math.isfinite(flat_bt) and c.backtest_err >= flat_bt:
        w.append(f"backtest: error {100 * c.backtest_err:.1f} points does not beat the flat guess "
                 f"({100 * flat_bt:.1f})")
    return replace(c, warnings=tuple(w))


def _horizons(e_from: float, u_to: float, horizon: float) -> float:
    """How many back-tested horizons a claim at US accuracy ``u_to`` lies beyond US error
    ``e_from``, in log US error (0 for a claim at 0% US or one that is NaN)."""
    if not (math.isfinite(e_from) and math.isfinite(u_to)) or u_to <= 0:
        return 0.0
    return math.log(max(e_from, 1e-9) / max(1.0 - u_to, 1e-9)) / max(horizon, 1e-9)


def _with_claims(gs: list[_Group], sel: list[GroupSelection], o: SelectionOptions, nondecreasing: bool,
                 fit_kw: dict[str, Any]) -> list[GroupSelection]:
    """Bootstrap every headline (batched per law), then the claims, the extrapolation flag and trust."""
    probs = _Problems()
    refs: list[list[tuple[str, int]]] = []
    for g, s in zip(gs, sel):
        c = s.best
        mine: list[tuple[str, int]] = []
        if c.fit.usable and o.interval_samples > 0 and g.vis.size >= 2:
            rng = np.random.default_rng(np.random.SeedSequence([o.seed, stable_hash(g.key) & 0xFFFFFFFF, 7]))
            uv, dv = g.us[g.vis], g.ds[g.vis]
            for _ in range(o.interval_samples):
                d = rng.integers(0, uv.size, uv.size)
                F = frontier_points(c.frontier, uv[d], dv[d], nondecreasing=nondecreasing)
                mine.append(probs.add(c.law, F.us, F.ds))
        refs.append(mine)
    solved = probs.solve(fit_kw)
    z = float(ndtri(0.5 + o.level / 2.0))
    tail = (1.0 - o.level) / 2.0
    out = []
    for g, s, mine in zip(gs, sel, refs):
        c = s.best
        if not c.fit.usable:
            out.append(replace(s, trusted=False))
            continue
        e_best = max(1.0 - float(g.us[g.vis].max()), 1e-6) if g.vis.size else math.nan
        pu = 1.0 - e_best * math.exp(-s.horizon) if g.vis.size else math.nan
        boots = [f for f in (solved[lw][i] for lw, i in mine) if f.usable]

        def interval(vals: np.ndarray) -> tuple[float, float]:
            v = vals[~np.isnan(vals)]
            if v.size < max(10, len(mine) // 2):
                return math.nan, math.nan
            # inf ("never") sorts last; quantiles are taken with it as 2.0 and mapped back
            lo, hi = np.quantile(np.where(np.isinf(v), 2.0, v), [tail, 1.0 - tail])
            return (math.inf if lo > 1.5 else float(lo)), (math.inf if hi > 1.5 else float(hi))

        sat = c.fit.saturation
        sp = float(stop_paying_many(c.law, [c.fit.params], o.payoff_threshold)[0])
        pd_ = float(c.fit.predict_accuracy(np.array([pu]))[0]) if math.isfinite(pu) else math.nan
        un = (float(us_needed_many(c.law, [c.fit.params], o.ds_target)[0]) if o.ds_target is not None
              else math.nan)
        sat_lo = sat_hi = sp_lo = sp_hi = p_lo = p_hi = un_lo = un_hi = math.nan
        if boots:
            sat_lo, sat_hi = interval(np.array([f.saturation for f in boots]))
            # "never" (NaN) sorts above every accuracy: inf, which an interval end can be
            sp_lo, sp_hi = interval(np.nan_to_num(stop_paying_many(c.law, [f.params for f in boots],
                                                                   o.payoff_threshold), nan=math.inf))
            if o.ds_target is not None:
                un_lo, un_hi = interval(np.nan_to_num(us_needed_many(c.law, [f.params for f in boots], o.ds_target),
                                                      nan=math.inf))
            if math.isfinite(pu):
                preds = np.array([float(f.predict_accuracy(np.array([pu]))[0]) for f in boots])
                lo, hi = interval(preds)
                h_boot = (hi - lo) / 2.0 if math.isfinite(lo) else 0.0
                half = math.sqrt(h_boot ** 2 + (z * c.backtest_sigma) ** 2) if math.isfinite(c.backtest_sigma) \
                    else math.nan
                p_lo, p_hi = max(0.0, pd_ - half), min(1.0, pd_ + half)
        claims = Claims(saturation=sat, saturation_lo=sat_lo, saturation_hi=sat_hi, stop_paying_us=sp,
                        stop_paying_lo=sp_lo, stop_paying_hi=sp_hi, predict_us=pu, predict_ds=pd_,
                        predict_lo=p_lo, predict_hi=p_hi, us_needed=un, us_needed_lo=un_lo, us_needed_hi=un_hi)
        warnings = list(c.warnings)
        best = f" beyond the best model ({100 * (1 - e_best):.1f}%)"
        for what, e_from, u_to, where in (
                (f"the stop-paying point {100 * sp:.1f}% US is", e_best, sp, best),
                (f"the US accuracy needed for {100 * (o.ds_target or 0):g}% DS, {100 * un:.1f}%, is", e_best, un, best),
                ("the held-out models reach", 1.0 - g.threshold, float(g.us[g.held].max()) if g.held.size else math.nan,
                 "")):
            times = _horizons(e_from, u_to, s.horizon)
            if times > EXTRAPOLATION:
                warnings.append(f"extrapolation: {what} {times:.1f}x the back-tested horizon{where}")
        # an untrusted group states no finding: its claims stay NaN (the law's own parameters and
        # saturation remain in its candidate row, as a description of the fit)
        out.append(replace(s, claims=claims if not warnings else Claims(), warnings=tuple(warnings),
                           trusted=not warnings))
    return out


__all__ = ["CHORD_GAP", "CHORD_TOL", "Candidate", "Claims", "EXTRAPOLATION", "FLAGS", "GroupSelection",
           "MIN_ABOVE", "SelectionOptions", "select_groups", "target_frontier"]
