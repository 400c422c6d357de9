"""Frontier estimators: which points of a group a law is fitted to, registered by name.

Each estimator is a pure function of a group's points, ``(US accuracies, DS accuracies)``, that
returns a :class:`Frontier`: the points to fit (each weighs the same in the fit) and the models
that define them (``support``, indices into the input).

- ``vertices``: the upper-convex-hull vertices (the literal reading of the paper, section 2.2).
- ``hull-curve``: the hull polyline itself, the frontier of randomized classifiers. By the paper's
  Lemma 2.1 every point on a hull edge is reached by mixing its two end models, so the polyline
  is sampled at ``CURVE_POINTS`` equally spaced US accuracies over the range it covers: every US
  interval weighs by its width, not by how many vertices happen to sit in it.
- ``bins``: the best model in each US-accuracy bin, a binned Pareto frontier. Bins hold equal
  numbers of models (quantiles of US accuracy), ``round(sqrt(n))`` of them clipped to
  ``[BINS_MIN, BINS_MAX]``: a bin's best model estimates the frontier only when the bin holds
  enough models, and equal-count bins put the resolution where the models are.
- ``hull-curve-upper``, ``bins-upper``: the same frontiers of the upper half of the models by US
  accuracy (``UPPER_QUANTILE``): the recent regime only. A cloud whose frontier bends (DS that
  accelerates near the best models, as on ImageNet-A/-R) is extrapolated from its local trend,
  not from a chord back to the weakest model. Back-tests choose between global and local.
- ``all``: every point (the paper's appendix F.1.1 comparison). It estimates the typical model,
  not the frontier, so it is never a headline (see :mod:`selection`).

``nondecreasing=True`` drops the part of the frontier past its highest DS accuracy (the hull's
decreasing tail, or bins past the best bin); ``all`` keeps every point (it is no frontier).

Cost: one sort, O(n log n) (~0.3 ms for 5,000 points).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .hull import hull_frontier, last_max, upper_hull

CURVE_POINTS = 48
BINS_MIN, BINS_MAX = 4, 40
#: Frontier estimators whose fit predicts the best model at a US accuracy (headline candidates).
FRONTIER_KINDS = ("vertices", "hull-curve", "bins", "hull-curve-upper", "bins-upper")


@dataclass(frozen=True)
class Frontier:
    """Points to fit, and the models behind them.

    Attributes:
        name: the estimator.
        us, ds: the points to fit (accuracies, fractions), in increasing US accuracy.
        support: indices (into the group's points) of the models that define the frontier.
    """

    name: str
    us: np.ndarray = field(repr=False)
    ds: np.ndarray = field(repr=False)
    support: np.ndarray = field(repr=False)

    @property
    def n_support(self) -> int:
        """Distinct models behind the frontier (what the law's parameters are identified from)."""
        return int(np.unique(self.support).size)


def _trim(us: np.ndarray, ds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` (in increasing US) up to its last highest DS accuracy (a plateau is not decreasing)."""
    if idx.size == 0:
        return idx
    return idx[: last_max(ds[idx]) + 1]


def vertices(us: np.ndarray, ds: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
    h = upper_hull(us, ds, nondecreasing=nondecreasing)
    return Frontier("vertices", us[h], ds[h], h)


def curve_points(hull_us: np.ndarray, hull_ds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hull polyline through vertices ``(hull_us, hull_ds)`` (increasing US) at CURVE_POINTS
    evenly spaced US accuracies over its range; fewer than 2 vertices are returned as they are."""
    if hull_us.size < 2:
        return hull_us, hull_ds
    x = np.linspace(hull_us[0], hull_us[-1], CURVE_POINTS)
    return x, hull_frontier(hull_us, hull_ds, x)


def hull_curve(us: np.ndarray, ds: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
    h = upper_hull(us, ds, nondecreasing=nondecreasing)
    return Frontier("hull-curve", *curve_points(us[h], ds[h]), h)


def n_bins(n: int) -> int:
    """Bins for ``n`` models: ``round(sqrt(n))`` clipped to [BINS_MIN, BINS_MAX] (and at most n)."""
    return int(min(n, max(BINS_MIN, min(BINS_MAX, round(np.sqrt(n))))))


def bins(us: np.ndarray, ds: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
    ok = np.flatnonzero(np.isfinite(us) & np.isfinite(ds))
    if ok.size == 0:
        return Frontier("bins", us[:0], ds[:0], ok)
    order = ok[np.lexsort((-ds[ok], us[ok]))]          # by US, then best DS first
    nb = n_bins(order.size)
    # equal-count bins over the sorted models; ties in US stay in one bin (a bin edge never
    # splits models with the same US accuracy): a cut inside a run of ties moves to the run's
    # start, or to its end where the start is taken already. Moved to the start only, the cuts
    # after a long run collapsed onto it and the models past it joined its bin: 10 models at 0.5
    # US and one at 0.6 (DS below their best) were one bin, and the 0.6 model was lost.
    cut = np.round(np.linspace(0, order.size, nb + 1)).astype(np.int64)[1:-1]
    xs = us[order]
    starts = np.searchsorted(xs, xs[np.minimum(cut, order.size - 1)], side="left")
    ends = np.searchsorted(xs, xs[np.minimum(cut, order.size - 1)], side="right")
    edges = [0]
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        e = lo if lo > edges[-1] else hi
        if edges[-1] < e < order.size:
            edges.append(e)
    bounds = np.array([*edges, order.size], dtype=np.int64)
    best = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            seg = order[lo:hi]
            best.append(int(seg[np.argmax(ds[seg])]))
    idx = np.array(best, dtype=np.int64)
    idx = idx[np.argsort(us[idx], kind="stable")]
    if nondecreasing:
        idx = _trim(us, ds, idx)
    return Frontier("bins", us[idx], ds[idx], idx)


UPPER_QUANTILE = 0.5


def _upper(fn: "Estimator", name: str) -> "Estimator":
    def upper(us: np.ndarray, ds: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
        ok = np.isfinite(us) & np.isfinite(ds)
        if not ok.any():
            return Frontier(name, us[:0], ds[:0], np.zeros(0, np.int64))
        keep = np.flatnonzero(ok & (us >= np.quantile(us[ok], UPPER_QUANTILE)))
        f = fn(us[keep], ds[keep], nondecreasing=nondecreasing)
        return Frontier(name, f.us, f.ds, keep[f.support])
    upper.__doc__ = f"``{fn.__name__}`` of the models at or above the median US accuracy."
    return upper


def all_points(us: np.ndarray, ds: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
    idx = np.flatnonzero(np.isfinite(us) & np.isfinite(ds))
    idx = idx[np.argsort(us[idx], kind="stable")]
    return Frontier("all", us[idx], ds[idx], idx)


Estimator = Callable[..., Frontier]
FRONTIERS: dict[str, Estimator] = {"vertices": vertices, "hull-curve": hull_curve, "bins": bins,
                                   "hull-curve-upper": _upper(hull_curve, "hull-curve-upper"),
                                   "bins-upper": _upper(bins, "bins-upper"), "all": all_points}


def check_frontier_names(names: str | Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each once in its first place (one name, a ``str``, is a tuple of it);
    a ValueError naming the unknown frontier(s) and the choices (or that none was given).

    Every caller takes one name as well as several (``SelectionOptions(frontiers="vertices")``):
    a bare string was read letter by letter: ``SensitivityOptions(frontiers="all")`` was refused
    as "unknown frontier(s) 'a', 'l', 'l'"."""
    if isinstance(names, str):
        names = (names,)
    try:
        given = tuple(names)
    except TypeError:
        raise ValueError(f"frontiers must be a frontier name or a sequence of them, got {names!r}; the frontiers "
                         f"are {', '.join(FRONTIERS)}") from None
    bad = [f for f in given if not isinstance(f, str) or f not in FRONTIERS]
    if bad or not given:
        raise ValueError(f"unknown frontier(s) {', '.join(map(repr, bad)) or '(none given)'}; the frontiers are "
                         f"{', '.join(FRONTIERS)}")
    return tuple(dict.fromkeys(given))


def frontier_points(name: str, us_accuracy: np.ndarray, ds_accuracy: np.ndarray, *, nondecreasing: bool = False) -> Frontier:
    """The frontier ``name`` of a group's points (accuracies, fractions); a ValueError names the
    choices, or the two sizes when they differ. ``support`` indexes the flattened points."""
    check_frontier_names([name])
    # flat, as upper_hull takes them: a (4, 5) array's flat hull indices indexed its rows
    # (IndexError), and one DS accuracy for three US accuracies was broadcast, then an IndexError
    us = np.asarray(us_accuracy, dtype=float).ravel()
    ds = np.asarray(ds_accuracy, dtype=float).ravel()
    if us.size != ds.size:
        raise ValueError(f"us_accuracy has {us.size} values but ds_accuracy has {ds.size}")
    return FRONTIERS[name](us, ds, nondecreasing=nondecreasing)


__all__ = ["CURVE_POINTS", "FRONTIERS", "FRONTIER_KINDS", "Frontier", "check_frontier_names", "curve_points", "frontier_points", "n_bins"]
