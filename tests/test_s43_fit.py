"""Session 43 review of the exact fitter and the frontier estimators: bounds reported exactly,
option checks, and guards on the hull's and the frontiers' edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meta_study.analysis.frontiers import FRONTIERS, frontier_points
from meta_study.analysis.hull import SubsetHulls, upper_hull
from meta_study.analysis.laws import fit_law_many
from meta_study.analysis.powerlaw import ALPHA_MAX, ALPHA_MIN, fit_power_law, fit_power_laws

E_US = np.array([0.2, 0.3, 0.4, 0.5, 0.6])


@pytest.mark.parametrize("alpha_max", [ALPHA_MAX, 0.7, 3.0])
def test_alpha_on_its_upper_bound_is_the_bound_not_an_ulp_past_it(alpha_max: float) -> None:
    # e_DS = 0.9 e_US^12 + 0.1 wants alpha = 12: the fit stops at alpha_max. exp(log(10)) is
    # 10.000000000000002, which was stored as alpha, past the bound the message names.
    f = fit_power_law(E_US, 0.9 * E_US**12 + 0.1, alpha_max=alpha_max)
    assert f.status == "at_bound" and f"alpha at its upper bound {alpha_max:g}" in f.message
    assert f.alpha == alpha_max
    (g,) = fit_law_many("eq1", [1.0 - E_US], [1.0 - (0.9 * E_US**12 + 0.1)], alpha_max=alpha_max)
    assert g.params["alpha"] == alpha_max


def test_alpha_on_its_lower_bound_is_the_bound() -> None:
    # a flat law (k = 0) leaves alpha at its lower bound: 0.0010000000000000002 was stored
    fits = fit_power_laws([E_US, E_US], [np.full(5, 0.2), np.full(5, 0.0)])
    for f in fits:
        # the message says the law is flat, not also "alpha at its lower bound" (a second finding
        # about an alpha nothing identifies; 2026-12-06)
        assert f.status == "at_bound" and f.message.startswith("k = 0 (alpha is not identified)")
        assert "alpha at its" not in f.message
        assert f.alpha == ALPHA_MIN


def test_interior_alpha_is_unchanged_and_within_bounds() -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(0.01, 0.6, (50, 12))
    d = np.clip(0.5 * e ** rng.uniform(0.2, 12, (50, 1)) + 0.05 + rng.normal(0, 0.01, e.shape), 0, 1)
    fits = fit_power_laws(list(e), list(d))
    single = [fit_power_law(u, v) for u, v in zip(e, d)]     # batch and single agree
    for f, s in zip(fits, single):
        assert f.usable and ALPHA_MIN <= f.alpha <= ALPHA_MAX
        assert f.alpha == pytest.approx(s.alpha, rel=1e-9, abs=1e-12)
        assert f.sse == pytest.approx(s.sse, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("delta", [0.0, -0.01, math.nan])
def test_huber_delta_must_be_positive(delta: float) -> None:
    # 0 made every Huber loss 0 and a negative delta rewarded large residuals: both came back as a
    # valid optimum ("at_bound", k = 0, e_ir 0 or 1)
    with pytest.raises(ValueError, match="huber_delta must be positive"):
        fit_power_law(E_US, [0.05, 0.1, 0.2, 0.3, 0.5], loss="huber", huber_delta=delta)
    # the threshold only matters for the Huber loss
    assert fit_power_law(E_US, [0.05, 0.1, 0.2, 0.3, 0.5], huber_delta=delta).usable


def _reference_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The upper chain by Andrew's monotone chain over every point, exact on integer points."""
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.lexsort((ok, -y[ok], x[ok]))]
    xs = x[order]
    order = order[np.concatenate([[True], xs[1:] != xs[:-1]])] if order.size else order
    chain: list[int] = []
    for i in order:
        while len(chain) >= 2:
            a, b = chain[-2], chain[-1]
            if (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a]) >= 0:
                chain.pop()
            else:
                break
        chain.append(int(i))
    return np.array(chain, dtype=np.int64)


def test_upper_hull_ties_duplicates_and_collinear_points_match_the_reference() -> None:
    # a guard: integer grids give many ties in US, duplicate points and exactly collinear ones
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 25))
        x, y = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)
        if rng.random() < 0.2:
            x[rng.integers(0, n)] = np.nan
        assert np.array_equal(upper_hull(x, y), _reference_hull(x, y)), (x, y)
        s = rng.integers(0, n, n)
        h = SubsetHulls(x, y).hull(s)
        r = s[upper_hull(x[s], y[s])]
        assert np.array_equal(x[h], x[r]) and np.array_equal(y[h], y[r])


def test_frontiers_keep_the_best_model_once_and_in_order() -> None:
    # a guard: every frontier is sorted by US, names each model at most once, and the hull and
    # bin frontiers keep the model with the best DS accuracy (ties in US and DS included)
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        us, ds = rng.integers(0, 6, n) / 6.0, rng.integers(0, 6, n) / 6.0
        best = np.max(ds)
        for name in FRONTIERS:
            for nd in (False, True):
                f = frontier_points(name, us, ds, nondecreasing=nd)
                assert np.all(np.diff(f.us) >= 0) and np.unique(f.support).size == f.support.size
                if name in ("vertices", "hull-curve", "bins", "all"):
                    assert best in ds[f.support], (name, nd, us, ds)
