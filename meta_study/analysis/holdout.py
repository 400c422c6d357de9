"""Held-out prediction: fit on the models up to a US accuracy threshold, predict beyond it.

Definitions (``docs/analysis.md`` has them beside the paper's wording):

- **Split.** The threshold is a US accuracy: given directly (``holdout_above``) or as a quantile
  of the group's US accuracies (``holdout_quantile``, default 0.8). Points with US accuracy at or
  below it are fitting data; the rest are held out.
- **Frontiers.** ``hull`` fits the law to the upper-hull vertices of the fitting points; ``all``
  fits it to every fitting point.
- ``fit_err``: mean absolute DS-accuracy error over the points the fit used (hull vertices for
  ``hull``, all fitting points for ``all``).
- ``pred_err`` for ``hull``: mean absolute error, over the held-out points, between the law's
  prediction and the upper hull of the **whole** group evaluated at each held-out point's US
  accuracy: the best DS accuracy achievable there.
- ``pred_err`` for ``all``: mean absolute error against the held-out points themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .hull import hull_frontier, upper_hull
from .powerlaw import ALPHA_MAX, PowerLawFit, fit_power_laws

FRONTIERS = ("hull", "all")


@dataclass(frozen=True)
class FitOptions:
    """How groups are fitted. Defaults follow the paper."""

    holdout_quantile: float | None = 0.8     # None: no held-out split by quantile
    holdout_above: float | None = None       # a US accuracy; wins over the quantile
    loss: str = "lsq"
    alpha_max: float = ALPHA_MAX
    nondecreasing: bool = False              # keep only the hull's non-decreasing part

    def __post_init__(self) -> None:
        q = self.holdout_quantile
        if q is not None and not (0 < q <= 1):
            raise ValueError(f"holdout_quantile must be in (0, 1], got {q}")


@dataclass(frozen=True)
class FrontierFit:
    """The law fitted to one frontier of one group, with its fitting and prediction errors.

    Attributes:
        frontier: ``hull`` or ``all``.
        fit: the :class:`PowerLawFit`.
        n_points: points in the group.
        n_fit: points the fit used (hull vertices, or fitting points).
        n_heldout: held-out points.
        fit_err, pred_err: mean absolute DS-accuracy errors (see the module doc); NaN when the fit
            failed or nothing is held out.
        holdout_threshold: the US accuracy at or below which points are fitting data.
    """

    frontier: str
    fit: PowerLawFit
    n_points: int
    n_fit: int
    n_heldout: int
    fit_err: float
    pred_err: float
    holdout_threshold: float


def holdout_threshold(us_acc: np.ndarray, options: FitOptions) -> float:
    """The US accuracy at or below which points are fitting data."""
    us = np.asarray(us_acc, dtype=float)
    if options.holdout_above is not None:
        return float(options.holdout_above)
    if options.holdout_quantile is None or options.holdout_quantile >= 1 or us.size == 0:
        return float(np.max(us)) if us.size else math.nan
    return float(np.quantile(us, options.holdout_quantile))


@dataclass(frozen=True)
class _Prepared:
    """One group split and hulled, ready for the batched fit."""

    us: np.ndarray
    ds: np.ndarray
    threshold: float
    fit_idx: np.ndarray        # fitting points
    hull_idx: np.ndarray       # hull vertices of the fitting points
    held_idx: np.ndarray       # held-out points
    full_hull_x: np.ndarray    # hull of the whole group, for the hull's pred_err
    full_hull_y: np.ndarray
    held_hull_target: np.ndarray   # the whole group's hull at the held-out US accuracies (NaN outside)


def prepare(us_acc: np.ndarray, ds_acc: np.ndarray, options: FitOptions) -> _Prepared:
    us = np.asarray(us_acc, dtype=float)
    ds = np.asarray(ds_acc, dtype=float)
    thr = holdout_threshold(us, options)
    fit_mask = us <= thr
    fit_idx = np.flatnonzero(fit_mask)
    held_idx = np.flatnonzero(~fit_mask)
    hull_local = upper_hull(us[fit_idx], ds[fit_idx], nondecreasing=options.nondecreasing)
    full = upper_hull(us, ds, nondecreasing=options.nondecreasing)
    return _Prepared(us=us, ds=ds, threshold=thr, fit_idx=fit_idx, hull_idx=fit_idx[hull_local], held_idx=held_idx,
                     full_hull_x=us[full], full_hull_y=ds[full],
                     held_hull_target=hull_frontier(us[full], ds[full], us[held_idx]))


def _errors(fit: PowerLawFit, us: np.ndarray, ds: np.ndarray) -> float:
    if not fit.usable or us.size == 0:
        return math.nan
    return float(np.mean(np.abs(fit.predict_accuracy(us) - ds)))


def frontier_errors(p: _Prepared, frontier: str, fit: PowerLawFit, used_idx: np.ndarray) -> tuple[float, float]:
    """(fit_err, pred_err) of one frontier's fit, per the module's definitions."""
    fit_err = _errors(fit, p.us[used_idx], p.ds[used_idx])
    held_us = p.us[p.held_idx]
    if frontier == "hull":
        target = p.held_hull_target   # computed once per group, not once per draw
    else:
        target = p.ds[p.held_idx]
    ok = np.isfinite(target)
    pred_err = _errors(fit, held_us[ok], target[ok])
    return fit_err, pred_err


def frontier_errors_many(p: _Prepared, frontiers: Sequence[str], fits: Sequence[PowerLawFit],
                         used_idx: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`frontier_errors` for many fits of one group at once: (fit_err, pred_err) arrays.

    The same definitions, vectorized: fit errors over the concatenated used points (one
    ``bincount`` per group instead of a call per fit), prediction errors as one (fits x held-out
    points) matrix. Equal to the per-fit function up to summation order (~1e-16).
    """
    m = len(fits)
    usable = np.array([f.usable for f in fits], dtype=bool)
    k = np.array([f.k if f.usable else np.nan for f in fits], dtype=float)
    a = np.array([f.alpha if f.usable else np.nan for f in fits], dtype=float)
    c = np.array([f.e_ir if f.usable else np.nan for f in fits], dtype=float)
    lens = np.array([i.size for i in used_idx], dtype=np.int64)
    cat = np.concatenate(used_idx).astype(np.int64) if m else np.zeros(0, np.int64)
    seg = np.repeat(np.arange(m), lens)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pred = 1.0 - (k[seg] * np.power(1.0 - p.us[cat], a[seg]) + c[seg])
        sums = np.bincount(seg, weights=np.abs(pred - p.ds[cat]), minlength=m)
        fit_err = np.where(usable & (lens > 0), sums / np.maximum(lens, 1), np.nan)
        held_us = p.us[p.held_idx]
        P = 1.0 - (k[:, None] * np.power(1.0 - held_us[None, :], a[:, None]) + c[:, None])     # (fits, held)
        is_hull = np.array([f == "hull" for f in frontiers], dtype=bool)
        T = np.where(is_hull[:, None], p.held_hull_target[None, :], p.ds[p.held_idx][None, :])
        ok = np.isfinite(T)
        cnt = ok.sum(1)
        pred_err = np.where(usable & (cnt > 0), np.where(ok, np.abs(P - T), 0.0).sum(1) / np.maximum(cnt, 1), np.nan)
    return fit_err, pred_err


def fit_groups(groups_xy: Sequence[tuple[np.ndarray, np.ndarray]], options: FitOptions = FitOptions()
               ) -> list[tuple[FrontierFit, FrontierFit]]:
    """Fit the hull and the all-points law of many groups in one batched call.

    Args:
        groups_xy: (US accuracies, DS accuracies) per group.

    Returns:
        One ``(hull_fit, all_fit)`` pair per group. Never raises on bad data: a group that cannot
        be fitted gets a fit with a failure status and NaN errors.
    """
    preps = [prepare(us, ds, options) for us, ds in groups_xy]
    e_us, e_ds = [], []
    for p in preps:
        for idx in (p.hull_idx, p.fit_idx):
            e_us.append(1.0 - p.us[idx])
            e_ds.append(1.0 - p.ds[idx])
    fits = fit_power_laws(e_us, e_ds, loss=options.loss, alpha_max=options.alpha_max)
    out = []
    for i, p in enumerate(preps):
        pair = []
        for j, (frontier, idx) in enumerate((("hull", p.hull_idx), ("all", p.fit_idx))):
            f = fits[2 * i + j]
            fe, pe = frontier_errors(p, frontier, f, idx)
            pair.append(FrontierFit(frontier=frontier, fit=f, n_points=p.us.size, n_fit=int(idx.size),
                                    n_heldout=int(p.held_idx.size), fit_err=fe, pred_err=pe,
                                    holdout_threshold=p.threshold))
        out.append((pair[0], pair[1]))
    return out


def fit_group(us_acc: np.ndarray, ds_acc: np.ndarray, options: FitOptions = FitOptions()
              ) -> tuple[FrontierFit, FrontierFit]:
    """:func:`fit_groups` for one group."""
    return fit_groups([(us_acc, ds_acc)], options)[0]
