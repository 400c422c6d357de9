"""Sample-size sensitivity and bootstrap confidence intervals (Abnar et al. 2022, Fig. 3, F.10-F.16).

Both are pure functions of one group and a seed. The random stream of every draw is derived from
(seed, a stable hash of the group key, sample size, trial), so the result does not depend on
which process computes which group: the Ray path (``parallel.py``) and the serial path give the
same numbers bit for bit.
"""

from __future__ import annotations

from ..defaults import BOOTSTRAP_LEVEL, BOOTSTRAP_SAMPLES, SENSITIVITY_TRIALS
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .frontiers import FRONTIERS, check_frontier_names, curve_points, frontier_points
from .hull import SubsetHulls
from .holdout import FitOptions, frontier_errors_many, prepare
from .powerlaw import PowerLawFit, fit_power_laws
from .groups import GROUP_COLUMNS, stable_hash

PARAMS = ("k", "alpha", "e_ir", "saturation")
SENSITIVITY_COLUMNS = (*GROUP_COLUMNS, "n", "trial", "frontier", "n_fit", "k", "alpha", "e_ir", "saturation",
                       "fit_err", "pred_err", "status")


@dataclass(frozen=True)
class SensitivityOptions:
    """The sample-size protocol.

    Attributes:
        sizes: sample sizes; None = ``n_sizes`` geometric steps from ``min_size`` to all fitting points.
        trials: draws per size.
        replace: draw with replacement (the bootstrap variant) instead of without.
        seed: the master seed.
        fit: how each draw is split and fitted.
        frontiers: the frontier estimators compared (the paper's Eq. 1 is fitted to each).
    """

    sizes: tuple[int, ...] | None = None
    n_sizes: int = 8
    min_size: int = 10
    trials: int = SENSITIVITY_TRIALS
    replace: bool = False
    seed: int = 0
    fit: FitOptions = field(default_factory=FitOptions)
    frontiers: tuple[str, ...] = tuple(FRONTIERS)

    def __post_init__(self) -> None:
        check_frontier_names(self.frontiers)


def _draw_problems(p: Any, s: np.ndarray, frontiers: Sequence[str], hulls: SubsetHulls
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(frontier, US, DS) points of each frontier estimator on the draw ``s`` (indices).

    The hull-based frontiers come from ``hulls`` (one sort per group, O(n) per draw: the same
    vertices as ``frontier_points`` on the drawn points); the others from ``frontier_points``."""
    us, ds = p.us[s], p.ds[s]
    out = []
    h = hulls.hull(s) if ("vertices" in frontiers or "hull-curve" in frontiers) else None
    for fr in frontiers:
        if fr == "vertices":
            out.append((fr, p.us[h], p.ds[h]))
        elif fr == "hull-curve":
            out.append((fr, *curve_points(p.us[h], p.ds[h])))
        elif fr == "all":
            out.append((fr, us, ds))          # every drawn point; the order does not matter to a fit
        else:
            F = frontier_points(fr, us, ds, nondecreasing=hulls.nondecreasing)
            out.append((fr, F.us, F.ds))
    return out


def default_sizes(n_fit: int, n_sizes: int = 8, min_size: int = 10) -> list[int]:
    """About ``n_sizes`` geometric steps from ``min_size`` up to ``n_fit`` (duplicates removed)."""
    if n_fit <= 0:
        return []
    if n_fit <= min_size:
        return [n_fit]
    return sorted({int(round(v)) for v in np.geomspace(min_size, n_fit, n_sizes)})


_SENSITIVITY_STREAM, _BOOTSTRAP_STREAM = 0, 1


def _rng(seed: int, key: Sequence[Any], stream: int, *more: int) -> np.random.Generator:
    """An independent generator per (seed, group, stream, more...): order-free, process-free."""
    h = stable_hash(key)
    return np.random.default_rng(np.random.SeedSequence([seed, h & 0xFFFFFFFF, h >> 32, stream, *more]))


def _rows(key: dict[str, Any], fits: Sequence[PowerLawFit], meta: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for f, m in zip(fits, meta):
        out.append({**key, **m, "k": f.k, "alpha": f.alpha, "e_ir": f.e_ir, "saturation": f.saturation,
                    "status": f.status})
    return out


def sensitivity_group(key: Sequence[Any], us_acc: np.ndarray, ds_acc: np.ndarray,
                      options: SensitivityOptions = SensitivityOptions()) -> pd.DataFrame:
    """Fit Eq. 1 to every frontier estimator on random subsamples of a group's fitting points.

    For each size ``n`` and trial: draw ``n`` fitting points uniformly, recompute each frontier
    inside the draw, fit it, and score ``fit_err`` (on the points each fit used) and ``pred_err``
    (against the group's held-out frontier, exactly as in :mod:`holdout`).

    Args:
        key: the group key (us_task, ds_task, eval_protocol, shots); seeds the draws.

    Returns:
        One row per (n, trial, frontier): :data:`SENSITIVITY_COLUMNS`.
    """
    p = prepare(us_acc, ds_acc, options.fit)
    pool = p.fit_idx
    sizes = list(options.sizes) if options.sizes else default_sizes(pool.size, options.n_sizes, options.min_size)
    hulls = SubsetHulls(p.us, p.ds, nondecreasing=options.fit.nondecreasing)
    problems_us, problems_ds, used, meta = [], [], [], []
    for n in sizes:
        n_draw = n if options.replace else min(n, pool.size)
        for t in range(options.trials):
            if pool.size == 0:
                s = pool
            else:
                s = _rng(options.seed, key, _SENSITIVITY_STREAM, n, t).choice(pool, size=n_draw, replace=options.replace)
            for frontier, fu, fd in _draw_problems(p, s, options.frontiers, hulls):
                problems_us.append(1.0 - fu)
                problems_ds.append(1.0 - fd)
                used.append((frontier, fu, fd))
                meta.append({"n": int(n), "trial": t, "frontier": frontier, "n_fit": int(fu.size)})
    fits = fit_power_laws(problems_us, problems_ds, loss=options.fit.loss, alpha_max=options.fit.alpha_max)
    key_d = dict(zip(GROUP_COLUMNS, key))
    rows = _rows(key_d, fits, meta)
    fit_err, pred_err = frontier_errors_many(p, [fr for fr, _, _ in used], fits, [(u, d) for _, u, d in used])
    for row, fe, pe in zip(rows, fit_err.tolist(), pred_err.tolist()):
        row["fit_err"], row["pred_err"] = fe, pe
    return pd.DataFrame(rows, columns=list(SENSITIVITY_COLUMNS))


def _serially(kind: str, fn: Callable[..., pd.DataFrame], groups: Sequence[Any], options: Any,
              progress: Callable[[str, int, int | None], None] | None) -> list[pd.DataFrame]:
    """``fn`` for each group in turn, reporting progress after each (the Ray path reports per task)."""
    frames = []
    for i, g in enumerate(groups):
        if progress:
            progress(kind, i, len(groups))
        frames.append(fn(g.key, g.us_acc, g.ds_acc, options))
    if progress:
        progress(kind, len(groups), len(groups))
    return frames


def sensitivity(groups: Sequence[Any], options: SensitivityOptions = SensitivityOptions(), *,
                progress: Callable[[str, int, int | None], None] | None = None) -> pd.DataFrame:
    """:func:`sensitivity_group` for every group (objects with ``key``, ``us_acc``, ``ds_acc``), serially."""
    frames = _serially("sensitivity", sensitivity_group, groups, options, progress)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SENSITIVITY_COLUMNS))


# --------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# --------------------------------------------------------------------------------------------

BOOTSTRAP_COLUMNS = (*GROUP_COLUMNS, "frontier", "param", "estimate", "lo", "hi", "level", "n_boot", "n_ok", "status")


@dataclass(frozen=True)
class BootstrapOptions:
    """B resamples (with replacement) of the fitting points; percentile intervals at ``level``,
    for Eq. 1 on each of ``frontiers`` (the paper's pair by default: the headline's own intervals
    are in ``fits.parquet``)."""

    n_boot: int = BOOTSTRAP_SAMPLES
    level: float = BOOTSTRAP_LEVEL
    seed: int = 0
    fit: FitOptions = field(default_factory=FitOptions)
    frontiers: tuple[str, ...] = ("vertices", "all")

    def __post_init__(self) -> None:
        check_frontier_names(self.frontiers)


def bootstrap_group(key: Sequence[Any], us_acc: np.ndarray, ds_acc: np.ndarray,
                    options: BootstrapOptions = BootstrapOptions()) -> pd.DataFrame:
    """Percentile bootstrap intervals for k, alpha, e_ir and saturation of Eq. 1 on each frontier.

    Each resample draws the fitting points with replacement, recomputes every frontier inside the
    draw and fits it. The estimate is the fit on the fitting points themselves.

    Returns:
        One row per (frontier, param): :data:`BOOTSTRAP_COLUMNS`; ``n_ok`` counts usable resamples
        and ``status`` is the status of the fit on the fitting points (a group too small to fit
        keeps its rows, NaN, with that status).
    """
    p = prepare(us_acc, ds_acc, options.fit)
    pool = p.fit_idx
    rng = _rng(options.seed, key, _BOOTSTRAP_STREAM)
    draws = [rng.choice(pool, size=pool.size, replace=True) if pool.size else pool for _ in range(options.n_boot)]
    e_us, e_ds, frontiers = [], [], []
    hulls = SubsetHulls(p.us, p.ds, nondecreasing=options.fit.nondecreasing)
    for s in [pool, *draws]:
        for frontier, fu, fd in _draw_problems(p, s, options.frontiers, hulls):
            e_us.append(1.0 - fu)
            e_ds.append(1.0 - fd)
            frontiers.append(frontier)
    fits = fit_power_laws(e_us, e_ds, loss=options.fit.loss, alpha_max=options.fit.alpha_max)
    m = len(options.frontiers)
    alpha_tail = (1.0 - options.level) / 2.0
    rows = []
    for j, frontier in enumerate(options.frontiers):
        est = fits[j]
        boot = [f for f, fr in zip(fits[m:], frontiers[m:]) if fr == frontier and f.usable]
        for param in PARAMS:
            vals = np.array([getattr(f, param) for f in boot], dtype=float)
            lo, hi = (np.quantile(vals, [alpha_tail, 1 - alpha_tail]) if vals.size else (math.nan, math.nan))
            rows.append({**dict(zip(GROUP_COLUMNS, key)), "frontier": frontier, "param": param,
                         "estimate": getattr(est, param) if est.usable else math.nan, "lo": float(lo),
                         "hi": float(hi), "level": options.level, "n_boot": options.n_boot, "n_ok": int(vals.size),
                         "status": est.status})
    return pd.DataFrame(rows, columns=list(BOOTSTRAP_COLUMNS))


def bootstrap(groups: Sequence[Any], options: BootstrapOptions = BootstrapOptions(), *,
              progress: Callable[[str, int, int | None], None] | None = None) -> pd.DataFrame:
    """:func:`bootstrap_group` for every group, serially."""
    frames = _serially("bootstrap", bootstrap_group, groups, options, progress)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BOOTSTRAP_COLUMNS))


def summarize_sensitivity(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of fit_err and pred_err per (group, frontier, n) over trials."""
    if table.empty:
        return pd.DataFrame()
    keys = [*GROUP_COLUMNS, "frontier", "n"]
    t = table.astype({"shots": "Int64"})
    return (t.groupby(keys, dropna=False)
             .agg(fit_err_mean=("fit_err", "mean"), fit_err_std=("fit_err", "std"),
                  pred_err_mean=("pred_err", "mean"), pred_err_std=("pred_err", "std"),
                  trials=("trial", "size"), ok=("status", lambda s: int(s.isin(["ok", "at_bound"]).sum())))
             .reset_index())


def rank_frontiers(summary: pd.DataFrame) -> pd.DataFrame:
    """Which frontier is more robust at small n, on this data: per frontier, the mean over groups
    of the mean prediction and fitting errors at each group's smallest and largest size step,
    ranked by the prediction error at the smallest step (1 = most robust)."""
    cols = ["frontier", "groups", "pred_err_small_n", "pred_err_full_n", "fit_err_small_n", "fit_err_full_n",
            "rank_small_n"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    keys = list(GROUP_COLUMNS) + ["frontier"]
    s = summary.sort_values("n")
    first = s.groupby(keys, dropna=False).head(1)
    last = s.groupby(keys, dropna=False).tail(1)
    out = pd.DataFrame({
        "groups": first.groupby("frontier").size(),
        "pred_err_small_n": first.groupby("frontier")["pred_err_mean"].mean(),
        "pred_err_full_n": last.groupby("frontier")["pred_err_mean"].mean(),
        "fit_err_small_n": first.groupby("frontier")["fit_err_mean"].mean(),
        "fit_err_full_n": last.groupby("frontier")["fit_err_mean"].mean(),
    }).reset_index()
    out["rank_small_n"] = out["pred_err_small_n"].rank(method="min").astype("Int64")
    return out.sort_values(["rank_small_n", "frontier"]).reset_index(drop=True)[cols]


__all__ = ["BOOTSTRAP_COLUMNS", "BootstrapOptions", "SENSITIVITY_COLUMNS", "SensitivityOptions", "bootstrap",
           "bootstrap_group", "default_sizes", "rank_frontiers", "sensitivity", "sensitivity_group",
           "summarize_sensitivity"]
