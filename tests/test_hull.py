from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from meta_study.analysis.hull import hull_frontier, upper_hull


def scipy_upper(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Upper chain of qhull's vertices: those on or above the chord from the leftmost-highest
    to the rightmost-highest vertex, in x order."""
    h = ConvexHull(np.c_[x, y]).vertices
    lft = min(h, key=lambda i: (x[i], -y[i]))
    rgt = max(h, key=lambda i: (x[i], y[i]))
    chord = lambda i: y[lft] + (y[rgt] - y[lft]) * (x[i] - x[lft]) / (x[rgt] - x[lft])  # noqa: E731
    return sorted((i for i in h if y[i] >= chord(i) - 1e-12), key=lambda i: x[i])


@pytest.mark.parametrize("seed", range(5))
def test_matches_scipy_convex_hull(seed):
    rng = np.random.default_rng(seed)
    for trial in range(300):
        n = int(rng.integers(3, 400))
        x = rng.random(n)
        y = rng.random(n) * x if trial % 3 == 0 else (rng.normal(size=n) if trial % 3 == 1 else np.sqrt(x) + rng.normal(0, 0.05, n))
        assert list(upper_hull(x, y)) == scipy_upper(x, y)


def test_returns_indices_in_us_order_and_handles_ties():
    x = np.array([0.5, 0.1, 0.1, 0.9, 0.9, 0.5, 0.3])
    y = np.array([0.8, 0.2, 0.4, 0.3, 0.6, 0.1, 0.5])
    idx = upper_hull(x, y)
    assert list(idx) == [2, 0, 4]            # highest of each tied x; collinear and inner points dropped
    assert list(upper_hull(x, y, nondecreasing=True)) == [2, 0]


def test_collinear_points_are_not_vertices():
    x = np.linspace(0, 1, 11)
    assert list(upper_hull(x, 2 * x + 1)) == [0, 10]


def test_duplicates_and_degenerate_inputs():
    assert list(upper_hull([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])) == [0]
    assert list(upper_hull([0.5], [0.3])) == [0]
    assert upper_hull([], []).size == 0
    assert list(upper_hull([0.1, np.nan, 0.9, 0.5], [0.1, 0.9, 0.2, np.nan])) == [0, 2]


def test_frontier_interpolates_and_is_nan_outside():
    v = hull_frontier(np.array([0.2, 0.6, 1.0]), np.array([0.1, 0.5, 0.6]), np.array([0.4, 0.8, 0.1, 1.0]))
    assert v[0] == pytest.approx(0.3) and v[1] == pytest.approx(0.55) and np.isnan(v[2]) and v[3] == pytest.approx(0.6)


@pytest.mark.parametrize("nondecreasing", [False, True])
def test_subset_hulls_equal_the_hull_of_each_subset(nondecreasing):
    from meta_study.analysis.hull import SubsetHulls

    rng = np.random.default_rng(7)
    n = 3000
    x = np.round(rng.uniform(0.2, 0.9, n), 3)               # ties in US accuracy
    y = 1 - 0.7 * (1 - x) ** 1.3 - rng.exponential(0.05, n)
    y[::97] = np.nan                                        # ignored, as by upper_hull
    hulls = SubsetHulls(x, y, nondecreasing=nondecreasing)
    for trial in range(200):
        size = int(rng.integers(1, n))
        s = rng.choice(n, size=size, replace=bool(trial % 2))   # with replacement: repeated points
        got = hulls.hull(s)
        want = s[upper_hull(x[s], y[s], nondecreasing=nondecreasing)]
        # same vertices (a repeated point may be named by another of its copies: same coordinates)
        np.testing.assert_array_equal(np.c_[x[got], y[got]], np.c_[x[want], y[want]])


def test_pruning_falls_back_to_the_sequential_chain(monkeypatch):
    import meta_study.analysis.hull as hull

    rng = np.random.default_rng(3)
    x = rng.random(500)
    y = np.sqrt(x) + rng.normal(0, 0.02, 500)
    want = upper_hull(x, y)
    monkeypatch.setattr(hull, "_MAX_PRUNE_PASSES", 0)       # every candidate through the sequential chain
    assert list(upper_hull(x, y)) == list(want) == scipy_upper(x, y)
