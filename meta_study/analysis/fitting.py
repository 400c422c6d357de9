"""Held-out prediction: the split, and the fit of every group with back-tested selection.

Definitions (``docs/analysis.md`` has them beside the paper's wording):

- **Split.** The threshold is a US accuracy: given directly (``holdout_above``) or as a quantile
  of the group's US accuracies (``holdout_quantile``, default 0.8; 1.0 keeps every point). Points
  with US accuracy at or below it are the visible fitting data; the rest are held out.
- **Candidates.** Every registered law (:mod:`laws`) on every frontier estimator
  (:mod:`frontiers`) of the visible points; :mod:`selection` back-tests them inside the visible
  data, picks the headline and flags what it cannot trust.
- ``fit_err``: RMSE in DS accuracy over the frontier points the fit used.
- ``pred_err``: RMSE against the held-out models' frontier, the upper-hull vertices of the
  held-out points (for ``all``: against the held-out points themselves). The held-out models
  never take part in the choice.

Sample-size sensitivity reuses :func:`prepare` and :func:`frontier_errors_many` with the same
definitions.
"""

from __future__ import annotations

from ..defaults import HOLDOUT_QUANTILE, LOSS
from ..errors import OPTION_RANGES
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .hull import upper_hull
from .powerlaw import ALPHA_MAX, LOSSES, PowerLawFit
from .selection import GroupSelection, SelectionOptions, select_groups


@dataclass(frozen=True)
class FitOptions:
    """How groups are fitted. Defaults follow the paper."""

    holdout_quantile: float | None = HOLDOUT_QUANTILE   # None: no held-out split by quantile
    holdout_above: float | None = None       # a US accuracy; wins over the quantile
    loss: str = LOSS
    alpha_max: float = ALPHA_MAX
    nondecreasing: bool = False              # keep only the frontier's non-decreasing part
    selection: SelectionOptions = field(default_factory=SelectionOptions)   # laws, frontiers, back-tests

    def __post_init__(self) -> None:
        if self.holdout_quantile is not None:
            OPTION_RANGES["holdout_quantile"].check("holdout_quantile", self.holdout_quantile)
        if self.holdout_above is not None:
            OPTION_RANGES["holdout_above"].check("holdout_above", self.holdout_above, "a US accuracy")
        OPTION_RANGES["alpha_max"].check("alpha_max", self.alpha_max)
        if self.loss not in LOSSES:
            # checked here, as the other options: a typo ("huberr") was fit_power_laws' ValueError
            # deep in the fits, or, for the sensitivity and bootstrap, a Ray worker's traceback
            # after Ray had started
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")


def holdout_threshold(us_accuracy: np.ndarray, options: FitOptions, ds_accuracy: np.ndarray | None = None) -> float:
    """The US accuracy at or below which points are fitting data.

    ``ds_accuracy`` (aligned with ``us_accuracy``), when given, leaves out the models whose DS
    accuracy is not finite as well: they are neither visible nor held out (:func:`prepare`).
    """
    us = np.asarray(us_accuracy, dtype=float).ravel()
    ok = np.isfinite(us)              # a NaN accuracy is no model: one made the quantile NaN
    if ds_accuracy is not None:
        ds = np.asarray(ds_accuracy, dtype=float).ravel()
        if ds.size == us.size:
            # counted, NaN DS models moved the split: with the 5 best of 10 models NaN DS, the
            # 0.8 quantile fell among them and none of the 5 real models was held out (now 1)
            ok &= np.isfinite(ds)
    us = us[ok]
    if options.holdout_above is not None:
        return float(options.holdout_above)
    if options.holdout_quantile is None or options.holdout_quantile >= 1 or us.size == 0:
        return float(np.max(us)) if us.size else math.nan
    return float(np.quantile(us, options.holdout_quantile))


@dataclass(frozen=True)
class Prepared:
    """One group split, ready for many fits of its visible points (sensitivity draws)."""

    us: np.ndarray
    ds: np.ndarray
    threshold: float
    fit_idx: np.ndarray        # visible points
    held_idx: np.ndarray       # held-out points
    target_us: np.ndarray      # the held-out frontier: upper-hull vertices of the held-out points
    target_ds: np.ndarray


def prepare(us_accuracy: np.ndarray, ds_accuracy: np.ndarray, options: FitOptions) -> Prepared:
    """Split one group at its threshold and compute its held-out frontier."""
    # flat, as the selection takes them: a (4, 5) array's flat indices indexed its rows (IndexError)
    us = np.asarray(us_accuracy, dtype=float).ravel()
    ds = np.asarray(ds_accuracy, dtype=float).ravel()
    if us.size != ds.size:   # it was an IndexError deep in the hull
        raise ValueError(f"us_accuracy has {us.size} values but ds_accuracy has {ds.size}")
    thr = holdout_threshold(us, options, ds)
    # a NaN or infinite accuracy is no model, neither visible nor held out (as in the selection):
    # one NaN DS among the visible points failed every bootstrap draw that picked it ("all": the
    # estimate NaN, 5 of 20 draws usable, those without it)
    ok = np.isfinite(us) & np.isfinite(ds)
    fit_idx = np.flatnonzero(ok & (us <= thr))
    held_idx = np.flatnonzero(ok & ~(us <= thr))
    h = held_idx[upper_hull(us[held_idx], ds[held_idx])] if held_idx.size else held_idx
    return Prepared(us=us, ds=ds, threshold=thr, fit_idx=fit_idx, held_idx=held_idx, target_us=us[h],
                    target_ds=ds[h])


def frontier_errors_many(p: Prepared, frontiers: Sequence[str], fits: Sequence[PowerLawFit],
                         used: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(fit_err, pred_err) arrays of many Eq. 1 fits of one group, per the module's definitions.

    ``used`` holds the (US, DS) points each fit was fitted to. Vectorized: fit errors over the
    concatenated points (one ``bincount``), prediction errors as one (fits x targets) matrix.
    """
    m = len(fits)
    usable = np.array([f.usable for f in fits], dtype=bool)
    k = np.array([f.k if f.usable else np.nan for f in fits], dtype=float)
    a = np.array([f.alpha if f.usable else np.nan for f in fits], dtype=float)
    c = np.array([f.e_ir if f.usable else np.nan for f in fits], dtype=float)
    lens = np.array([u.size for u, _ in used], dtype=np.int64)
    cu = np.concatenate([u for u, _ in used]) if m else np.zeros(0)
    cd = np.concatenate([d for _, d in used]) if m else np.zeros(0)
    seg = np.repeat(np.arange(m), lens)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pred = 1.0 - (k[seg] * np.power(1.0 - cu, a[seg]) + c[seg])
        sums = np.bincount(seg, weights=(pred - cd) ** 2, minlength=m)
        fit_err = np.where(usable & (lens > 0), np.sqrt(sums / np.maximum(lens, 1)), np.nan)
        pred_err = np.full(m, np.nan)
        is_all = np.array([f == "all" for f in frontiers], dtype=bool)
        for mask, tu, td in ((~is_all, p.target_us, p.target_ds), (is_all, p.us[p.held_idx], p.ds[p.held_idx])):
            if tu.size and mask.any():
                P = 1.0 - (k[mask, None] * np.power(1.0 - tu[None, :], a[mask, None]) + c[mask, None])
                pred_err[mask] = np.where(usable[mask], np.sqrt(np.mean((P - td[None, :]) ** 2, axis=1)), np.nan)
    return fit_err, pred_err


#: Groups per batched solve when progress is reported. Each group is one batch of ~150 problems
#: either way; fewer, larger batches amortise the solver's per-call cost (100 groups x 4,800
#: points: 24 s in one batch, 28 s in ten), so a chunk is at least this many groups, and at most
#: ~20 progress steps are made.
PROGRESS_CHUNK = 25


def fit_groups(groups_xy: Sequence[tuple[np.ndarray, np.ndarray]], options: FitOptions = FitOptions(),
               keys: Sequence[Any] | None = None,
               progress: Callable[[str, int, int | None], None] | None = None,
               test_sizes: Sequence[np.ndarray | None] | None = None) -> list[GroupSelection]:
    """Fit every law on every frontier of many groups, back-test them and pick each headline.

    Args:
        groups_xy: (US accuracies, DS accuracies) per group, fractions.
        keys: each group's key; default the group's position.
        test_sizes: per group, each model's DS test-set size (NaN where unknown), or None: the
            back-test's binomial noise floor is reported where known.
        progress: called as ``progress("fits", groups done, groups)`` before the first chunk of
            groups and after each (:data:`PROGRESS_CHUNK`). The results depend on it only to
            rounding (~1e-12 relative: the chunks batch the fits otherwise, see
            :func:`~.powerlaw.fit_power_laws`).

    Returns:
        One :class:`~meta_study.analysis.selection.GroupSelection` per group. Never raises on bad
        data: a group that cannot be fitted gets failure statuses and an untrusted headline.
    """
    n = len(groups_xy)
    thresholds = [holdout_threshold(np.asarray(us, float), options, np.asarray(ds, float)) for us, ds in groups_xy]
    keys = list(keys) if keys is not None else [(i,) for i in range(n)]
    sizes = list(test_sizes) if test_sizes is not None else [None] * n
    for what, seq in (("keys", keys), ("test_sizes", sizes)):   # before any chunk is fitted
        if len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries for {n} groups")
    step = n if progress is None else max(PROGRESS_CHUNK, math.ceil(n / 20))
    out: list[GroupSelection] = []
    if progress:
        progress("fits", 0, n)
    for lo in range(0, n, max(step, 1)):
        hi = min(n, lo + step)
        out += select_groups(groups_xy[lo:hi], keys[lo:hi], thresholds[lo:hi], options.selection,
                             nondecreasing=options.nondecreasing,
                             fit_kw={"loss": options.loss, "alpha_max": options.alpha_max}, test_sizes=sizes[lo:hi])
        if progress:
            progress("fits", hi, n)
    return out


def fit_group(us_accuracy: np.ndarray, ds_accuracy: np.ndarray, options: FitOptions = FitOptions()) -> GroupSelection:
    """:func:`fit_groups` for one group."""
    return fit_groups([(us_accuracy, ds_accuracy)], options)[0]


__all__ = ["FitOptions", "Prepared", "fit_group", "fit_groups", "frontier_errors_many",
           "holdout_threshold", "prepare"]
