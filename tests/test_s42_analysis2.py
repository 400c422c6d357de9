"""Review s42 (analysis 2): laws, resampling, sensitivity and bootstrap edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group
from meta_study.analysis.laws import fit_law_many, get_law
from meta_study.analysis.payoff import slope
from meta_study.analysis.powerlaw import fit_power_laws
from meta_study.analysis.resampling import group_rng
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.errors import OptionError

FALLING = (np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.8, 0.6, 0.5, 0.3]))   # DS falls as US rises: flat fits


def test_power_law_at_alpha_0_saturates_at_what_it_predicts():
    # alpha = 0 is the flat law e_DS = k: its saturation was 1.0 while it predicts 1 - k everywhere
    f = get_law("power").fit(*FALLING)
    assert f.params["alpha"] == 0.0 and f.status == "at_bound"
    assert f.saturation == pytest.approx(1.0 - f.params["k"])
    assert f.saturation == pytest.approx(float(f.predict_accuracy(1.0)))
    # a rising law still has no saturation below 100%
    g = get_law("power").fit(np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.3, 0.4, 0.5, 0.6]))
    assert g.params["alpha"] > 0 and g.saturation == 1.0


@pytest.mark.parametrize("law", ["eq1", "eq1-bayes", "power"])
def test_a_flat_law_has_slope_0_at_100_percent_us(law):
    # k = 0 (eq1) or alpha = 0 (power): 0 x inf = NaN at US error 0, where the law is as flat as elsewhere
    f = get_law(law).fit(*FALLING)
    assert f.usable
    assert np.isclose(float(f.predict_accuracy(1.0)), float(f.predict_accuracy(0.9)))
    np.testing.assert_array_equal(f.slope(np.array([0.5, 0.99, 1.0])), 0.0)
    assert slope(f, 1.0) == 0.0


def test_rising_eq1_slope_is_unchanged():
    f = get_law("eq1").fit(np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.2, 0.35, 0.45, 0.52]))
    p = f.params
    u = np.array([0.5, 0.9])
    np.testing.assert_allclose(f.slope(u), p["k"] * p["alpha"] * (1 - u) ** (p["alpha"] - 1))


@pytest.mark.parametrize("loss", ["huber", "log"])
def test_eq1_bayes_minimizes_its_own_loss_not_sse(loss):
    # eq1-bayes contains eq1 (e_US* = 0), so its loss can be no larger than eq1's; profiled on SSE, a
    # huber or log fit ended with a larger loss than eq1's (on several of these clouds)
    r = np.random.default_rng(3)
    us_seq, ds_seq = [], []
    for _ in range(12):
        us = np.sort(r.uniform(0.5, 0.95, 12))
        ds = 1 - (0.8 * (1 - us - 0.02) ** 0.7 + 0.1) + r.normal(0, 0.01, 12)
        ds[r.integers(12)] -= 0.2            # an outlier, where the losses disagree
        us_seq.append(us)
        ds_seq.append(ds)
    fits = fit_law_many("eq1-bayes", us_seq, ds_seq, loss=loss)     # one batch: ~35 eq1 fits of 12 problems
    assert all(b.usable for b in fits)
    fb = fit_power_laws([1 - us - b.params["e_us_star"] for us, b in zip(us_seq, fits)], [1 - d for d in ds_seq],
                        loss=loss)
    f0 = fit_power_laws([1 - us for us in us_seq], [1 - d for d in ds_seq], loss=loss)
    for b, e in zip(fb, f0):
        assert b.loss_value <= e.loss_value * (1 + 1e-9)


@pytest.mark.parametrize("kw", [{"min_size": 0}, {"min_size": 2}, {"n_sizes": 0}])
def test_sensitivity_size_options_are_checked(kw):
    # min_size 0 was numpy's "Geometric sequence cannot include zero"; 2 drew unfittable samples;
    # n_sizes 0 made an empty table
    with pytest.raises(OptionError, match=list(kw)[0]):
        SensitivityOptions(**kw)


def test_group_streams_hash_the_key_by_value():
    # a key taken from a table (np.int64 or float shots, np.str_ names, NaN for no shots) drew other
    # resamples than the command line's Group.key for the same group and seed
    def draw(key: tuple) -> float:
        return float(group_rng(0, key, 1).random())

    assert draw(("a", "b", "p", 5)) == draw(("a", "b", "p", np.int64(5))) == draw(("a", "b", "p", 5.0))
    assert draw(("a", "b", "p", None)) == draw(("a", "b", "p", np.nan)) == draw(("a", "b", "p", pd.NA))
    assert draw(("a", "b", "p", None)) == draw((np.str_("a"), "b", "p", None))
    assert draw(("a", "b", "p", 5)) != draw(("a", "b", "p", 6))


def test_bootstrap_of_a_key_read_back_from_a_table_matches():
    r = np.random.default_rng(0)
    us = r.uniform(0.3, 0.9, 30)
    ds = 1 - (0.5 * (1 - us) ** 1.2 + 0.1) - r.uniform(0, 0.1, 30)
    opts = BootstrapOptions(samples=20)
    a = bootstrap_group(("a", "b", "p", 5), us, ds, opts)
    b = bootstrap_group(("a", "b", "p", np.int64(5)), us, ds, opts)
    np.testing.assert_array_equal(a["lo"].to_numpy(), b["lo"].to_numpy())


def test_bootstrap_of_3_points_reports_no_interval():
    # a resample of 3 points fits only when it draws all three, and then reproduces the estimate:
    # "alpha 2.62 [2.62, 2.62]" from 46 of 200 resamples read as a precise alpha
    from meta_study.analysis.fitting import FitOptions

    us, ds = np.array([0.5, 0.6, 0.7]), np.array([0.3, 0.42, 0.5])
    t = bootstrap_group(("a", "b", "p", None), us, ds,
                        BootstrapOptions(samples=50, fit=FitOptions(holdout_quantile=1.0)))
    assert (t["status"] == "ok").all() and t["estimate"].notna().all() and (t["n_ok"] > 0).all()
    assert t["lo"].isna().all() and t["hi"].isna().all()
    # four points: resamples of three of them vary, and the interval is reported as before
    t4 = bootstrap_group(("a", "b", "p", None), np.r_[us, 0.8], np.r_[ds, 0.55],
                         BootstrapOptions(samples=50, fit=FitOptions(holdout_quantile=1.0)))
    a = t4[t4["param"] == "alpha"]
    assert a["lo"].notna().all() and (a["lo"] < a["hi"]).all()
