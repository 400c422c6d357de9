"""The randomized-classifier frontier: the upper convex hull of (US accuracy, DS accuracy) points.

Any convex combination of models is achievable by a randomized classifier (pick model i with
probability w_i), so the best DS accuracy reachable at each US accuracy is the upper convex hull
of the points (Abnar et al. 2022, section 2.2). The hull used here is the **upper chain** from the
leftmost to the rightmost point (among points with equal US accuracy, the highest), with collinear
points dropped: exactly the upper vertices ``scipy.spatial.ConvexHull`` reports. Optionally only its
non-decreasing part (leftmost point up to the last vertex at the highest DS accuracy) is kept.

Cost: O(n log n) for the sort. Only prefix-maximum and suffix-maximum records can be upper-hull
vertices (on the rising part each vertex is above every point to its left, on the falling part
above every point to its right), and there are O(log n) of them for random data, so the monotone
chain runs in Python over a handful of candidates: ~0.1 ms for 5,000 points.
"""

from __future__ import annotations

import numpy as np


def upper_hull(us_accuracy: np.ndarray, ds_accuracy: np.ndarray, *, nondecreasing: bool = False) -> np.ndarray:
    """Indices of the upper-convex-hull vertices, in increasing US accuracy.

    Args:
        us_accuracy, ds_accuracy: accuracies (any finite floats; NaN points are ignored).
        nondecreasing: keep only the part of the chain up to its highest DS accuracy.

    Returns:
        int64 indices into the inputs. One point gives one index; none gives an empty array.
    """
    x, y = _points(us_accuracy, ds_accuracy)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if ok.size == 0:
        return np.zeros(0, np.int64)
    # sort by x ascending, then y descending, then index (stable, so ties keep the first point)
    order = ok[np.lexsort((ok, -y[ok], x[ok]))]
    idx = order[_upper_chain(x[order], y[order])]
    if nondecreasing and idx.size:
        idx = idx[: last_max(y[idx]) + 1]
    return idx


def last_max(values: np.ndarray) -> int:
    """Position of the last highest value: where a non-decreasing head ends. A flat top edge (two
    vertices at the same best DS accuracy) is not decreasing; up to the first highest vertex, its
    right end was dropped, and with it the plateau the law was to be fitted to."""
    v = np.asarray(values)
    return int(v.size - 1 - np.argmax(v[::-1]))


def _points(us_accuracy: np.ndarray, ds_accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points as two flat float arrays, or a ValueError naming both sizes: one DS accuracy
    for three US accuracies was broadcast and then an IndexError ("index 1 is out of bounds")."""
    x = np.asarray(us_accuracy, dtype=float).ravel()
    y = np.asarray(ds_accuracy, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"us_accuracy has {x.size} values but ds_accuracy has {y.size}")
    return x, y


def _upper_chain(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Positions of the upper-hull vertices of points sorted by x ascending, then y descending."""
    if xs.size == 0:
        return np.zeros(0, np.int64)
    # prefix records: strictly above everything to the left
    prev_max = np.concatenate([[-np.inf], np.maximum.accumulate(ys)[:-1]])
    pre = ys > prev_max
    # suffix records: strictly above everything to the right (scan from the right)
    suf_max = np.concatenate([np.maximum.accumulate(ys[::-1])[::-1][1:], [-np.inf]])
    suf = ys > suf_max
    cand = np.flatnonzero(pre | suf)
    # Of identical points (adjacent in the sort, by index) a suffix record is the last one; move
    # it back to the first, as the sort promises (it named the later model: [0, 2] for the points
    # (0, 1), (1, 0), (1, 0)). Prefix records are first of their run already. O(n), and only
    # where a candidate repeats its predecessor.
    prev = np.maximum(cand - 1, 0)
    if ((cand > 0) & (xs[prev] == xs[cand]) & (ys[prev] == ys[cand])).any():
        run_start = np.concatenate([[True], (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])])
        cand = np.maximum.accumulate(np.where(run_start, np.arange(xs.size), 0))[cand]
    # among candidates with equal x only the highest can be a vertex: it comes first in the sort
    cx = xs[cand]
    first_of_x = np.concatenate([[True], cx[1:] != cx[:-1]])
    cand = cand[first_of_x]
    # Vectorized pruning: a candidate that does not turn clockwise with its current neighbours
    # lies on or below a segment between two of the points, so it is no vertex; drop all such at
    # once and repeat. What survives turns clockwise everywhere: the hull. Typically a few passes
    # of ~10 us; pathological inputs fall through to the sequential monotone chain.
    for _ in range(_MAX_PRUNE_PASSES):
        if cand.size < 3:
            return cand.astype(np.int64)
        ax, ay = xs[cand[:-2]], ys[cand[:-2]]
        bx, by = xs[cand[1:-1]], ys[cand[1:-1]]
        px, py = xs[cand[2:]], ys[cand[2:]]
        t1, t2 = (bx - ax) * (py - ay), (by - ay) * (px - ax)
        drop = t1 - t2 >= -1e-12 * (np.abs(t1) + np.abs(t2))
        if not drop.any():
            return cand.astype(np.int64)
        keep = np.ones(cand.size, dtype=bool)
        keep[1:-1] = ~drop
        cand = cand[keep]
    return _monotone_chain(xs, ys, cand)


_MAX_PRUNE_PASSES = 64


def _monotone_chain(xs: np.ndarray, ys: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain (upper part) over candidate positions, sequentially."""
    chain: list[int] = []
    for c in cand:
        px, py = xs[c], ys[c]
        while len(chain) >= 2:
            ax, ay = xs[chain[-2]], ys[chain[-2]]
            bx, by = xs[chain[-1]], ys[chain[-1]]
            # drop b unless a -> b -> p turns clockwise: collinear points are dropped, with a
            # relative tolerance so that points collinear up to rounding are dropped too
            t1, t2 = (bx - ax) * (py - ay), (by - ay) * (px - ax)
            if t1 - t2 >= -1e-12 * (abs(t1) + abs(t2)):
                chain.pop()
            else:
                break
        chain.append(int(c))
    return np.asarray(chain, dtype=np.int64)


class SubsetHulls:
    """Upper hulls of many subsets of one point set (sensitivity draws, bootstrap resamples).

    The points are sorted once (O(n log n)); each subset's hull then costs O(n) with no sort: mark
    the subset in the sorted order, read the marks back in order, run the chain on the candidates.
    For 5,000 points that is ~40 us a subset against ~400 us for :func:`upper_hull`'s sort. The
    vertices are the same points as ``s[upper_hull(us[s], ds[s])]`` (a subset that repeats a point,
    or holds two identical points, gives one of them: same coordinates, so the same fits).
    """

    def __init__(self, us_accuracy: np.ndarray, ds_accuracy: np.ndarray, *, nondecreasing: bool = False) -> None:
        x, y = _points(us_accuracy, ds_accuracy)
        ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        self.order = ok[np.lexsort((ok, -y[ok], x[ok]))]
        self.xs, self.ys = x[self.order], y[self.order]
        self.pos = np.full(x.size, -1, dtype=np.int64)      # point -> place in the sorted order
        self.pos[self.order] = np.arange(self.order.size)
        self.nondecreasing = nondecreasing

    def hull(self, subset: np.ndarray) -> np.ndarray:
        """Indices (into the full point set) of the upper-hull vertices of ``subset``, in increasing
        US accuracy."""
        pos = self.pos[np.asarray(subset, dtype=np.int64)]
        mark = np.zeros(self.order.size, dtype=bool)
        mark[pos[pos >= 0]] = True
        sel = np.flatnonzero(mark)
        chain = sel[_upper_chain(self.xs[sel], self.ys[sel])]
        if self.nondecreasing and chain.size:
            chain = chain[: last_max(self.ys[chain]) + 1]   # up to the last highest vertex
        return self.order[chain]


def hull_frontier(hull_us: np.ndarray, hull_ds: np.ndarray, at_us: np.ndarray) -> np.ndarray:
    """The hull's DS accuracy at US accuracies ``at_us`` (piecewise linear between vertices).

    Outside the hull's US range the value is NaN: no convex combination of models reaches it.
    The vertices may come in any order (``np.interp`` needs them increasing: given from right to
    left, every value was NaN; in another order some were NaN, others wrong: 0.475 for 0.55).
    """
    hx = np.asarray(hull_us, dtype=float).ravel()
    hy = np.asarray(hull_ds, dtype=float).ravel()
    q = np.asarray(at_us, dtype=float)
    if hx.size != hy.size:
        raise ValueError(f"hull_us has {hx.size} values but hull_ds has {hy.size}")
    if hx.size == 0:
        return np.full(q.shape, np.nan)
    order = np.argsort(hx, kind="stable")    # a few vertices: no cost
    hx, hy = hx[order], hy[order]
    out = np.interp(q, hx, hy)
    return np.where((q < hx[0] - 1e-12) | (q > hx[-1] + 1e-12), np.nan, out)
