"""The power-law fitter: exact recovery, global optimality against brute force, statuses."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import curve_fit, minimize_scalar

from meta_study.analysis.powerlaw import ALPHA_MAX, ALPHA_MIN, PowerLawFit, fit_power_law, fit_power_laws


def law(e, k, alpha, c):
    return k * np.power(e, alpha) + c


def _inner(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Reference inner solve by enumeration: the best feasible of interior + three edges."""
    n = x.size
    best = (math.inf, 0.0, 0.0)
    cands = []
    A = np.c_[x, np.ones(n)]
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    cands.append((sol[0], sol[1]))
    cands.append((0.0, float(np.clip(y.mean(), 0, 1))))
    sxx = float(x @ x)
    if sxx > 0:
        cands.append((max(0.0, float(x @ y) / sxx), 0.0))
        cands.append((max(0.0, float(x @ (y - 1)) / sxx), 1.0))
    for k, c in cands:
        if k < 0 or c < 0 or c > 1:
            continue
        s = float(np.sum((k * x + c - y) ** 2))
        if s < best[0]:
            best = (s, float(k), float(c))
    return best


def _profile(e_us: np.ndarray, e_ds: np.ndarray, us: np.ndarray) -> np.ndarray:
    """The exact profile SSE at each log-alpha in ``us``, vectorized over alphas: the best
    feasible of the interior solution and the three edge minimizers, residuals explicit."""
    X = np.power(e_us[None, :], np.exp(us)[:, None])           # (G, n)
    y = e_ds[None, :]
    mx, my = X.mean(1, keepdims=True), y.mean()
    sxx = ((X - mx) ** 2).sum(1)
    k_u = np.where(sxx > 0, ((X - mx) * (y - my)).sum(1) / np.where(sxx > 0, sxx, 1), 0.0)
    c_u = my - k_u * mx[:, 0]
    Sxx = (X * X).sum(1)
    safe = np.where(Sxx > 0, Sxx, 1)
    cands = [(k_u, c_u, (k_u >= 0) & (c_u >= 0) & (c_u <= 1)),
             (np.zeros_like(k_u), np.full_like(k_u, np.clip(my, 0, 1)), np.ones_like(k_u, bool)),
             (np.maximum(0, (X * y).sum(1) / safe), np.zeros_like(k_u), np.ones_like(k_u, bool)),
             (np.maximum(0, (X * (y - 1)).sum(1) / safe), np.ones_like(k_u), np.ones_like(k_u, bool))]
    best = np.full(us.size, np.inf)
    for k, c, ok in cands:
        sse = ((k[:, None] * X + c[:, None] - y) ** 2).sum(1)
        best = np.where(ok & (sse < best), sse, best)
    return best


def brute_force(e_us: np.ndarray, e_ds: np.ndarray, n_grid: int = 20000) -> tuple[float, float]:
    """Dense log-alpha grid (20,000 points) with the exact inner solve, then a bounded 1-D polish
    around each of the 5 best grid-local minima. Returns (sse, alpha)."""
    us = np.log(np.geomspace(ALPHA_MIN, ALPHA_MAX, n_grid))
    prof = np.concatenate([_profile(e_us, e_ds, us[i:i + 2000]) for i in range(0, n_grid, 2000)])
    is_min = np.r_[True, prof[1:] <= prof[:-1]] & np.r_[prof[:-1] <= prof[1:], True]
    cand = np.flatnonzero(is_min)
    cand = cand[np.argsort(prof[cand])][:5]
    best = (float(prof.min()), math.exp(float(us[np.argmin(prof)])))
    for j in cand:
        lo, hi = us[max(j - 1, 0)], us[min(j + 1, n_grid - 1)]
        r = minimize_scalar(lambda u: _inner(np.power(e_us, math.exp(u)), e_ds)[0], bounds=(lo, hi),
                            method="bounded", options={"xatol": 1e-12})
        if r.fun < best[0]:
            best = (float(r.fun), math.exp(float(r.x)))
    return best


def curve_fit_sse(e_us, e_ds) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p, _ = curve_fit(law, e_us, e_ds, p0=[1.0, 1.0, 0.1], bounds=([0, ALPHA_MIN, 0], [np.inf, ALPHA_MAX, 1]),
                             method="trf")
        except (RuntimeError, ValueError):
            return math.inf
    return float(np.sum((law(e_us, *p) - e_ds) ** 2))


def random_problems(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Assorted shapes: clean laws, noisy laws, saturating, non-monotone, two-regime, outliers,
    and log-like data whose optimum sits at a tiny alpha, where a single-start trust-region fit
    from alpha = 1 stalls (about 2 in 3 of those)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = int(rng.integers(8, 120))
        e = np.sort(rng.uniform(0.02, 0.95, n))
        kind = i % 7
        if kind == 0:
            y = law(e, rng.uniform(0.05, 1.5), rng.uniform(0.1, 6), rng.uniform(0, 0.6))
        elif kind == 1:
            y = law(e, rng.uniform(0.05, 1.5), rng.uniform(0.1, 6), rng.uniform(0, 0.6)) + rng.normal(0, 0.03, n)
        elif kind == 2:  # saturating hard: DS error barely moves with US error
            y = 0.4 + 0.02 * e ** 0.3 + rng.normal(0, 0.01, n)
        elif kind == 3:  # non-monotone: DS error falls then rises
            y = 0.6 - 0.8 * (e - 0.5) ** 2 + rng.normal(0, 0.02, n)
        elif kind == 4:  # two regimes: a steep law at low error, a flat one elsewhere
            y = np.where(e < 0.3, law(e, 3.0, 2.5, 0.05), 0.35 + 0.1 * e) + rng.normal(0, 0.01, n)
        elif kind == 5:  # a clean law plus a few gross outliers
            y = law(e, 0.8, 1.2, 0.1)
            y[rng.choice(n, 3, replace=False)] = rng.uniform(0, 1, 3)
        else:  # log-like: k e^alpha with alpha ~ 0.01-0.08, shifted down
            y = law(e, rng.uniform(0.5, 3), rng.uniform(0.01, 0.08), rng.uniform(0, 0.1)) - rng.uniform(0, 0.5)
            y = y + rng.normal(0, 0.01, n)
        out.append((e, np.clip(y, 0, 1)))
    return out


def test_exact_recovery_without_noise():
    e = np.linspace(0.03, 0.9, 40)
    for k, alpha, c in [(0.7, 1.5, 0.12), (1.0, 0.3, 0.0), (0.05, 4.0, 0.5), (1.05, 1.0, 0.02)]:
        f = fit_power_law(e, law(e, k, alpha, c))
        assert f.usable
        assert f.k == pytest.approx(k, rel=1e-7) and f.alpha == pytest.approx(alpha, rel=1e-7)
        assert f.e_ir == pytest.approx(c, abs=1e-9)
        assert f.saturation == pytest.approx(1 - c, abs=1e-9)
        assert f.sse < 1e-20


def test_recovery_with_noise_within_tolerance():
    # 200 points, noise sd 0.005 (half an accuracy point): parameters within a few percent
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(20):
        e = rng.uniform(0.05, 0.8, 200)
        f = fit_power_law(e, law(e, 0.6, 1.3, 0.15) + rng.normal(0, 0.005, e.size))
        hits += abs(f.alpha - 1.3) < 0.15 and abs(f.k - 0.6) < 0.1 and abs(f.e_ir - 0.15) < 0.02
    assert hits >= 19


def test_global_optimum_matches_brute_force_and_beats_single_start_curve_fit():
    problems = random_problems(0, 140)
    fits = fit_power_laws([p[0] for p in problems], [p[1] for p in problems])
    stuck = 0
    for (e, y), f in zip(problems, fits):
        ref_sse, _ = brute_force(e, y)
        assert f.usable, f
        assert f.sse <= ref_sse * (1 + 1e-9) + 1e-24, (f, ref_sse)
        stuck += curve_fit_sse(e, y) > ref_sse * (1 + 1e-6) + 1e-12
    # the set includes problems where a single-start curve_fit does not find the optimum
    assert stuck >= 5, stuck


def test_batched_equals_one_by_one():
    problems = random_problems(1, 40)
    batched = fit_power_laws([p[0] for p in problems], [p[1] for p in problems])
    for (e, y), f in zip(problems, batched):
        single = fit_power_law(e, y)
        assert single.status == f.status
        assert single.sse == pytest.approx(f.sse, rel=1e-9, abs=1e-24)
        assert single.alpha == pytest.approx(f.alpha, rel=1e-6)


@pytest.mark.parametrize("e_us,e_ds,status", [
    ([0.1, 0.2], [0.3, 0.4], "too_few_points"),
    ([], [], "too_few_points"),
    ([0.3, 0.3, 0.3, 0.3], [0.1, 0.2, 0.3, 0.4], "degenerate"),
    ([0.1, np.nan, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], "nonfinite"),
    ([0.1, 0.2, 0.3, 0.4], [0.1, np.inf, 0.3, 0.4], "nonfinite"),
    ([0.1, 0.2, 1.3, 0.4], [0.1, 0.2, 0.3, 0.4], "degenerate"),
    ([0.1, 0.2, 0.3], [0.1, 0.2], "degenerate"),
])
def test_bad_groups_get_a_status_not_an_exception(e_us, e_ds, status):
    f = fit_power_law(e_us, e_ds)
    assert f.status == status and f.message
    assert math.isnan(f.k) and not f.usable
    assert np.isnan(f.predict(0.5))


def test_us_error_zero_is_a_valid_point():
    # 100% upstream accuracy: e_us = 0, so x = 0 for every alpha; the point informs e_ir only
    e = np.array([0.0, 0.1, 0.2, 0.4, 0.6])
    f = fit_power_law(e, law(e, 0.5, 1.7, 0.2))
    assert f.usable and f.alpha == pytest.approx(1.7, rel=1e-6) and f.e_ir == pytest.approx(0.2, abs=1e-9)


def test_bad_problems_do_not_disturb_good_ones_in_a_batch():
    e = np.linspace(0.1, 0.9, 30)
    good = law(e, 0.5, 2.0, 0.1)
    fits = fit_power_laws([e, [0.1], e, [0.2, 0.2, 0.2]], [good, [0.2], good, [0.1, 0.2, 0.3]])
    assert [f.status for f in fits] == ["ok", "too_few_points", "ok", "degenerate"]
    assert fits[0] == fits[2]


def test_at_bound_statuses():
    e = np.linspace(0.1, 0.9, 20)
    flat = fit_power_law(e, np.full(20, 0.3))         # DS does not depend on US: k = 0
    assert flat.status == "at_bound" and "k = 0" in flat.message
    rising = fit_power_law(e, 0.9 - e * 0.5)          # DS error falls as US error rises: k = 0 too
    assert rising.status == "at_bound"
    steep = fit_power_law(e, law(e, 1.0, 12.0, 0.1), alpha_max=10.0)
    assert steep.status == "at_bound" and steep.alpha == pytest.approx(10.0)
    assert fit_power_law(e, law(e, 1.0, 12.0, 0.1), alpha_max=20.0).alpha == pytest.approx(12.0, rel=1e-6)


@pytest.mark.parametrize("loss", ["huber", "log"])
def test_robust_and_log_losses_recover_clean_laws(loss):
    e = np.linspace(0.05, 0.9, 60)
    y = law(e, 0.7, 1.4, 0.1)
    f = fit_power_law(e, y, loss=loss)
    assert f.usable and f.loss == loss
    assert f.alpha == pytest.approx(1.4, rel=1e-3) and f.e_ir == pytest.approx(0.1, abs=1e-3)


def test_huber_resists_outliers_better_than_lsq():
    rng = np.random.default_rng(5)
    e = np.sort(rng.uniform(0.05, 0.9, 80))
    y = law(e, 0.7, 1.4, 0.1)
    y[::10] = 0.95  # 8 gross outliers
    lsq = fit_power_law(e, y)
    hub = fit_power_law(e, y, loss="huber")
    assert abs(hub.e_ir - 0.1) < abs(lsq.e_ir - 0.1)
    assert abs(hub.alpha - 1.4) < 0.1


def test_predict_and_saturation():
    f = PowerLawFit(k=0.5, alpha=2.0, e_ir=0.1, sse=0.0, loss="lsq", loss_value=0.0, n_points=3, status="ok")
    assert f.predict(0.2) == pytest.approx(0.5 * 0.04 + 0.1)
    assert f.predict_accuracy(0.8) == pytest.approx(1 - (0.5 * 0.04 + 0.1))
    assert f.saturation == pytest.approx(0.9)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        fit_power_law([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], loss="l1")
    with pytest.raises(ValueError):
        fit_power_laws([[0.1]], [])
