"""The held-out split, back-tested selection, trust flags and intervals, checked on known laws."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from meta_study.analysis.fitting import FitOptions, fit_group, fit_groups, holdout_threshold
from meta_study.analysis.hull import upper_hull
from meta_study.analysis.laws import LAWS
from meta_study.analysis.selection import SelectionOptions

#: Laws whose frontiers differ enough over [0.3, 0.95] for a back-test to tell them apart.
DISTINCT = {
    "eq1": ({"k": 0.9, "alpha": 1.6, "e_ir": 0.25}, 0.95),
    "eq1-bayes": ({"k": 0.8, "alpha": 0.5, "e_ir": 0.1, "e_us_star": 0.1}, 0.89),
    "power": ({"k": 0.9, "alpha": 0.6}, 0.95),
    "logit-linear": ({"a": 0.4, "b": 1.6}, 0.95),
    "probit-linear": ({"a": 0.3, "b": 1.5}, 0.95),
}


def cloud(law: str, params: dict, seed: int, *, n: int = 1500, hi: float = 0.95, gap: float = 0.003):
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, hi, n)
    return us, np.clip(LAWS[law].predict(params, us) - rng.exponential(gap, n), 0, 1)


def test_threshold_by_quantile_and_by_value():
    us = np.arange(1, 11) / 10
    assert holdout_threshold(us, FitOptions()) == pytest.approx(np.quantile(us, 0.8))
    assert holdout_threshold(us, FitOptions(holdout_above=0.55)) == 0.55
    assert holdout_threshold(us, FitOptions(holdout_quantile=None)) == 1.0
    assert holdout_threshold(us, FitOptions(holdout_quantile=1.0)) == 1.0


def test_every_candidate_is_fitted_and_exactly_one_is_the_headline():
    us, ds = cloud("eq1", DISTINCT["eq1"][0], 0)
    s = fit_group(us, ds)
    assert len(s.candidates) == len(LAWS) * 6
    assert {(c.law, c.frontier) for c in s.candidates} >= {("eq1", "vertices"), ("logit-linear", "all")}
    assert s.best.frontier != "all" and s.best.fit.usable
    others = [c.backtest_err for c in s.candidates if c.headline_eligible and c is not s.best]
    assert s.best.backtest_err <= min(others) and s.backtest_margin == pytest.approx(
        sorted(others)[0] - s.best.backtest_err)


def test_pred_err_is_the_rmse_against_the_heldout_frontier():
    us, ds = cloud("eq1", DISTINCT["eq1"][0], 1, gap=0.03)
    s = fit_group(us, ds, FitOptions(holdout_above=0.8))
    held = us > 0.8
    h = upper_hull(us[held], ds[held])
    tx, ty = us[held][h], ds[held][h]
    for c in s.candidates:
        if c.frontier == "all":
            want = np.sqrt(np.mean((c.fit.predict_accuracy(us[held]) - ds[held]) ** 2))
        else:
            want = np.sqrt(np.mean((c.fit.predict_accuracy(tx) - ty) ** 2))
        assert c.pred_err == pytest.approx(want, rel=1e-12)
    assert s.flat_pred_err == pytest.approx(np.sqrt(np.mean((ds[~held].max() - ty) ** 2)))
    assert s.n_heldout == held.sum() and s.holdout_threshold == 0.8


def test_heldout_models_never_change_the_choice():
    # the models above the hold-out line are only scored: moving them changes pred_err, not the fits
    us, ds = cloud("power", DISTINCT["power"][0], 2)
    thr = float(np.quantile(us, 0.8))
    ds2 = np.where(us > thr, ds * 0.5, ds)
    a, b = fit_group(us, ds), fit_group(us, ds2)
    assert (a.best.law, a.best.frontier) == (b.best.law, b.best.frontier)
    assert a.best.fit.params == b.best.fit.params and a.best.pred_err != b.best.pred_err


@pytest.mark.parametrize("law", sorted(DISTINCT))
def test_selection_picks_the_true_law(law):
    params, hi = DISTINCT[law]
    picks = Counter(fit_group(*cloud(law, params, seed, hi=hi)).best.law for seed in range(4))
    assert picks.most_common(1)[0][0] == law and picks[law] >= 3, picks


def test_a_clean_group_is_trusted_and_its_claims_are_right():
    p = {"k": 0.9, "alpha": 1.6, "e_ir": 0.25}
    us, ds = cloud("eq1", p, 3, hi=0.995)
    s = fit_group(us, ds, FitOptions(holdout_quantile=1.0))      # the answer from every model
    assert s.trusted and s.warnings == (), s.warnings
    cl = s.claims
    t = 0.1
    u_star = 1 - (t / (p["k"] * p["alpha"])) ** (1 / (p["alpha"] - 1))
    assert cl.stop_paying_lo - 0.01 <= u_star <= cl.stop_paying_hi + 0.01
    truth = LAWS["eq1"].predict(p, np.array([cl.predict_us]))[0]
    assert cl.predict_lo <= truth <= cl.predict_hi
    assert cl.saturation == pytest.approx(0.75, abs=0.03)


def test_a_chord_is_flagged():
    # a few weak models far to the left and an accelerating cloud near the top: the hull is one
    # long chord with no model near it
    rng = np.random.default_rng(4)
    us = np.concatenate([rng.uniform(0.40, 0.42, 5), rng.uniform(0.75, 0.9, 600)])
    ds = np.concatenate([rng.uniform(0.02, 0.05, 5), np.clip(4.0 * (us[5:] - 0.75) ** 1.5, 0, 1)])
    ds[5:] -= rng.exponential(0.01, 600)
    s = fit_group(us, np.clip(ds, 0, 1))
    vertices = next(c for c in s.candidates if (c.law, c.frontier) == ("eq1", "vertices"))
    assert any(w.startswith("chord:") for w in vertices.warnings), vertices.warnings


def test_an_untrusted_group_states_no_finding():
    us, ds = cloud("eq1", DISTINCT["eq1"][0], 7)
    s = fit_group(us, ds)                  # the stop-paying point lies far beyond the data
    assert not s.trusted and any(w.startswith("extrapolation:") for w in s.warnings)
    c = s.claims
    assert all(math.isnan(v) for v in (c.saturation_lo, c.stop_paying_us, c.predict_ds, c.predict_lo, c.us_needed))
    assert math.isfinite(s.best.fit.saturation)          # the fit itself is still described


def test_too_few_points_are_flagged_and_never_trusted():
    u = np.array([0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9])
    d = 1 - (0.9 * (1 - u) ** 1.5 + 0.2)
    s = fit_group(u, d)
    assert not s.trusted
    assert any(w.startswith("few_points:") for w in s.warnings) or any(w.startswith("backtest: no back-test")
                                                                      for w in s.warnings)
    tiny = fit_group(np.array([0.5, 0.6]), np.array([0.3, 0.4]))
    assert not tiny.trusted and tiny.warnings and all(not c.fit.usable for c in tiny.candidates
                                                      if c.law in ("eq1", "eq1-bayes"))


def test_backtest_tolerance_decides_trust():
    us, ds = cloud("eq1", {"k": 0.9, "alpha": 1.6, "e_ir": 0.25}, 5, hi=0.99, gap=0.02)
    loose = fit_group(us, ds, FitOptions(selection=SelectionOptions(tolerance=0.5)))
    strict = fit_group(us, ds, FitOptions(selection=SelectionOptions(tolerance=1e-5)))
    assert not strict.trusted and any(w.startswith("backtest: error") for w in strict.warnings)
    assert (loose.best.law, loose.best.frontier) == (strict.best.law, strict.best.frontier)


def test_interval_coverage_on_synthetic_groups():
    # 40 groups from a known law with noisy models (every model visible, the stop-paying point
    # inside the data, so the groups are trusted and state intervals); the 90% prediction
    # interval at predict_us must cover the true frontier in most groups, and the back-test
    # coverage is reported
    p = {"k": 0.9, "alpha": 1.6, "e_ir": 0.2}
    groups = [cloud("eq1", p, 100 + i, n=400, gap=0.02, hi=0.995) for i in range(40)]
    sels = fit_groups(groups, FitOptions(holdout_quantile=1.0, selection=SelectionOptions(interval_samples=60)),
                      keys=[(i,) for i in range(40)])
    assert sum(s.trusted for s in sels) >= 30
    hit = [s.claims.predict_lo <= LAWS["eq1"].predict(p, np.array([s.claims.predict_us]))[0] <= s.claims.predict_hi
           for s in sels if s.trusted]
    assert np.mean(hit) >= 0.8, np.mean(hit)
    cov = np.array([s.best.coverage for s in sels])
    assert np.isfinite(cov).all() and 0.7 <= cov.mean() <= 1.0


def test_holdout_quantile_one_fits_every_point():
    us, ds = cloud("eq1", DISTINCT["eq1"][0], 6)
    s = fit_group(us, ds, FitOptions(holdout_quantile=1.0))
    assert s.n_heldout == 0 and math.isnan(s.best.pred_err) and math.isfinite(s.best.backtest_err)
    allf = next(c for c in s.candidates if (c.law, c.frontier) == ("eq1", "all"))
    assert allf.n_fit == us.size


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown law"):
        SelectionOptions(laws=("eq2",))
    with pytest.raises(ValueError, match="unknown frontier"):
        SelectionOptions(frontiers=("hull",))
    with pytest.raises(ValueError, match="cuts"):
        SelectionOptions(cuts=(0.5, 1.5))


@pytest.mark.parametrize("make, option", [
    (lambda: FitOptions(holdout_quantile=1.5), "holdout_quantile"),
    (lambda: FitOptions(holdout_quantile=0.0), "holdout_quantile"),
    (lambda: FitOptions(holdout_above=-0.1), "holdout_above"),
    (lambda: FitOptions(alpha_max=0.0), "alpha_max"),
    (lambda: SelectionOptions(tolerance=0.0), "tolerance"),
    (lambda: SelectionOptions(tolerance=float("nan")), "tolerance"),
    (lambda: SelectionOptions(payoff_threshold=0.0), "payoff_threshold"),
    (lambda: SelectionOptions(ds_target=80.0), "ds_target"),
    (lambda: SelectionOptions(interval_samples=-1), "interval_samples"),
    (lambda: SelectionOptions(level=1.0), "level"),
])
def test_ranges_are_checked_once_where_options_are_defined(make, option):
    """The command line used to repeat these checks; now the dataclasses own them (the CLI only
    names the flag), so a refit config or a library caller is held to the same ranges."""
    from meta_study.errors import OptionError

    with pytest.raises(OptionError) as e:
        make()
    assert e.value.option == option and isinstance(e.value, ValueError)


def test_fit_progress_moves_per_chunk_and_does_not_change_the_results():
    """Fits report progress as chunks of groups complete (they said nothing until the end)."""
    from meta_study.analysis.fitting import PROGRESS_CHUNK

    rng = np.random.default_rng(3)
    groups = []
    for _ in range(2 * PROGRESS_CHUNK + 3):
        us = rng.uniform(0.3, 0.9, 25)
        groups.append((us, np.clip(0.9 - 0.6 * (1 - us) ** 1.3 + rng.normal(0, 0.01, us.size), 0, 1)))
    seen = []
    with_progress = fit_groups(groups, FitOptions(), progress=lambda *a: seen.append(a))
    n = len(groups)
    assert seen == [("fits", 0, n), ("fits", PROGRESS_CHUNK, n), ("fits", 2 * PROGRESS_CHUNK, n), ("fits", n, n)]
    plain = fit_groups(groups, FitOptions())
    for a, b in zip(with_progress, plain):
        assert (a.best.law, a.best.frontier, a.trusted) == (b.best.law, b.best.frontier, b.trusted)
        assert np.allclose([a.best.fit.saturation, a.claims.predict_ds, a.claims.predict_lo],
                           [b.best.fit.saturation, b.claims.predict_ds, b.claims.predict_lo], equal_nan=True)
