"""The held-out split and the fit_err / pred_err definitions, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meta_study.analysis.holdout import FitOptions, fit_group, holdout_threshold


def law_acc(us, k, alpha, c):
    return 1 - (k * (1 - us) ** alpha + c)


def test_threshold_by_quantile_and_by_value():
    us = np.arange(1, 11) / 10
    assert holdout_threshold(us, FitOptions()) == pytest.approx(np.quantile(us, 0.8))
    assert holdout_threshold(us, FitOptions(holdout_above=0.55)) == 0.55
    assert holdout_threshold(us, FitOptions(holdout_quantile=None)) == 1.0


def test_errors_follow_the_definitions():
    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.3, 0.95, 120))
    ds = law_acc(us, 0.9, 1.3, 0.1) - np.abs(rng.normal(0, 0.03, us.size))   # points under a frontier
    hull, allf = fit_group(us, ds, FitOptions(holdout_above=0.8))
    fit_mask = us <= 0.8
    assert hull.holdout_threshold == 0.8 and allf.n_fit == fit_mask.sum() and hull.n_heldout == (~fit_mask).sum()
    # all points: fit_err over fitting points, pred_err over held-out points
    pa = allf.fit.predict_accuracy(us)
    assert allf.fit_err == pytest.approx(np.mean(np.abs(pa[fit_mask] - ds[fit_mask])))
    assert allf.pred_err == pytest.approx(np.mean(np.abs(pa[~fit_mask] - ds[~fit_mask])))
    # hull: fit_err over the hull vertices of the fitting points ...
    from meta_study.analysis.hull import hull_frontier, upper_hull
    fi = np.flatnonzero(fit_mask)
    hv = fi[upper_hull(us[fi], ds[fi])]
    ph = hull.fit.predict_accuracy(us)
    assert hull.n_fit == hv.size
    assert hull.fit_err == pytest.approx(np.mean(np.abs(ph[hv] - ds[hv])))
    # ... pred_err against the whole group's hull at the held-out US accuracies
    full = upper_hull(us, ds)
    target = hull_frontier(us[full], ds[full], us[~fit_mask])
    assert hull.pred_err == pytest.approx(np.mean(np.abs(ph[~fit_mask] - target)))


def test_hull_fit_predicts_the_frontier_better_than_the_cloud():
    # models scattered below a frontier law: beyond the fitting range, the hull fit tracks the
    # frontier (the best achievable accuracy) and the all-points fit tracks the cloud below it
    grid = np.linspace(0.86, 0.95, 20)
    truth = law_acc(grid, 0.9, 1.3, 0.1)
    hull_err, all_err = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        us = rng.uniform(0.3, 0.95, 1500)
        ds = law_acc(us, 0.9, 1.3, 0.1) - rng.exponential(0.03, us.size)
        hull, allf = fit_group(us, ds)
        hull_err.append(np.mean(np.abs(hull.fit.predict_accuracy(grid) - truth)))
        all_err.append(np.mean(np.abs(allf.fit.predict_accuracy(grid) - truth)))
    assert np.mean(hull_err) < 0.5 * np.mean(all_err)
    assert np.mean(hull_err) < 0.02


def test_no_heldout_points_gives_nan_pred_err():
    us = np.linspace(0.3, 0.9, 30)
    hull, allf = fit_group(us, law_acc(us, 0.5, 1.0, 0.1), FitOptions(holdout_above=1.0))
    assert hull.n_heldout == 0 and math.isnan(hull.pred_err) and math.isnan(allf.pred_err)
    assert allf.fit_err < 1e-9


def test_degenerate_groups_get_statuses_and_nan_errors():
    hull, allf = fit_group(np.array([0.5, 0.6]), np.array([0.3, 0.4]))
    assert hull.fit.status == allf.fit.status == "too_few_points"
    assert math.isnan(hull.fit_err) and math.isnan(allf.pred_err)
    hull, allf = fit_group(np.full(5, 0.7), np.linspace(0.1, 0.5, 5))
    assert allf.fit.status == "degenerate"
    hull, allf = fit_group(np.array([1.0, 1.0, 1.0, 1.0]), np.array([0.9, 0.8, 0.7, 0.6]))  # e_US = 0
    assert allf.fit.status == "degenerate" and not allf.fit.usable


def test_batched_frontier_errors_equal_the_per_fit_ones():
    from meta_study.analysis.holdout import FitOptions, frontier_errors, frontier_errors_many, prepare
    from meta_study.analysis.powerlaw import fit_power_laws

    rng = np.random.default_rng(5)
    us = rng.uniform(0.3, 0.9, 400)
    ds = 1 - (0.8 * (1 - us) ** 1.2 + 0.1) - rng.exponential(0.03, 400)
    for quantile in (0.8, None):                      # with and without held-out points
        p = prepare(us, ds, FitOptions(holdout_quantile=quantile))
        used = [rng.choice(p.fit_idx, size=int(n), replace=False) for n in (2, 5, 40, 200)]  # 2 points: unusable
        used += [p.hull_idx]
        frontiers = ["all", "hull", "all", "hull", "hull"]
        fits = fit_power_laws([1 - us[i] for i in used], [1 - ds[i] for i in used])
        assert not fits[0].usable
        fe, pe = frontier_errors_many(p, frontiers, fits, used)
        for j, (fr, f, idx) in enumerate(zip(frontiers, fits, used)):
            want = frontier_errors(p, fr, f, idx)
            np.testing.assert_allclose([fe[j], pe[j]], want, rtol=1e-12, atol=1e-15, equal_nan=True)
        assert np.isnan(fe[0]) and np.isfinite(fe[1:]).all()
