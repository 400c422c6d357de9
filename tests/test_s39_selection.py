"""Review s39 of the per-group answer (selection, headline, payoff, fitting): edge cases whose
claims contradicted each other or named the wrong value. Each group goes through fit_groups."""

from __future__ import annotations

import math

import numpy as np

from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.selection import SelectionOptions

US = np.linspace(0.5, 0.9, 20)
# 8 models at 50% US, then 8 rising: the 0.5 back-test cut has every model below it at one US
# accuracy, where no law can be fitted
STACK_US = np.r_[np.full(8, 0.5), np.linspace(0.55, 0.9, 8)]
STACK_DS = np.r_[np.linspace(0.28, 0.3, 8), 0.3 + 0.5 * (np.linspace(0.55, 0.9, 8) - 0.5) ** 0.7]


def test_float_jitter_around_one_fraction_is_not_a_test_set_size():
    # a 4-class task at chance whose accuracies came out of averaging as 0.25 and its two
    # neighbouring floats: three "distinct" values of 1/4 read as a test set of 4 examples, every
    # step's interval floor +-36 points and "test-set noise alone ~43 pt"
    ds = 0.25 + np.tile([0.0, 5.6e-17, 1.2e-16], 7)[:20]
    assert np.unique(ds).size == 3
    sel = fit_groups([(US, ds)])[0]
    assert math.isnan(sel.headline.test_size)
    assert "test-set noise" not in sel.trust_reason, sel.trust_reason
    # one value of 1/4 is no size either way; k / 50,000 over many values still is
    from meta_study.analysis.headline import estimate_test_size

    assert math.isnan(estimate_test_size(ds))
    assert estimate_test_size(np.arange(1, 30) / 50_000) == 50_000


def test_the_extrapolation_warning_names_the_steps_us_not_100_percent():
    # best model at 98.96% US: +1 US point is 99.96%, which the warning called "(100.0%)" beside
    # a tested horizon of "99.94% US"
    us = np.linspace(0.5, 0.9896, 20)
    ds = 0.3 + 0.5 * np.linspace(0, 1, 20) ** 0.8
    sel = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    text = next(w for w in sel.warnings if "and beyond lie past the tested horizon" in w)
    assert "+1 US point (99.96%) and beyond" in text, text


def test_a_headline_without_frontier_estimators_says_why_it_has_no_fit():
    # frontiers=("all",) through the Python API: every fit usable, none a headline member; the
    # reason read "no usable fit" and nothing else
    ds = 0.3 + 0.5 * (US - 0.5) ** 0.7
    sel = fit_groups([(US, ds)], FitOptions(selection=SelectionOptions(frontiers=("all",))))[0]
    assert not sel.usable and all(c.fit.usable for c in sel.candidates)
    assert sel.trust_reason.startswith("no usable fit (no frontier estimator among the frontiers"), sel.trust_reason
    assert "vertices" in sel.trust_reason


def test_the_flat_guess_is_scored_on_the_cuts_the_headline_was_scored_on():
    # the 0.5 cut has its 8 models below it all at 50% US: no member fits there, so the headline
    # is scored on 3 cuts, and the flat guess was averaged over 4 (10.9 pt beside 0.9 pt; 8.4 pt
    # on the same 3 cuts): the comparison behind "does not beat the flat guess" was unequal
    us, ds = STACK_US, STACK_DS
    every = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    three = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0, selection=SelectionOptions(cuts=(0.6, 0.7, 0.8))))[0]
    assert every.n_cuts == three.n_cuts == 3
    assert every.backtest_err == three.backtest_err
    assert every.flat_backtest_err == three.flat_backtest_err


def test_a_target_a_visible_model_has_reached_needs_no_extrapolation_warning():
    # one model 10 points above the trend sets the best DS seen; the discounted curve passes that
    # DS only past the tested horizon, and the group warned "61.2605% DS needs 96.0% US, past the
    # tested horizon" while its answer said "61.3% DS is reached already"
    ds = 0.3 + 0.5 * (US - 0.5) ** 0.7
    ds[14] += 0.1
    flat = float(ds.max())
    opts = FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=flat))
    sel = fit_groups([(US, ds)], opts)[0]
    assert sel.headline.flat == flat and sel.claims.us_needed > sel.headline.horizon_us   # the curve's crossing
    assert not [w for w in sel.warnings if "% DS" in w], sel.warnings


def test_a_candidate_without_a_back_test_says_which_cut_failed_it():
    # 16 visible models and 3 scored cuts: every candidate said "no back-test (needs 6 or more
    # visible models and 3 above a cut)"; the cut at 50% US failed its fit
    sel = fit_groups([(STACK_US, STACK_DS)], FitOptions(holdout_quantile=1.0))[0]
    eq1 = sel.paper
    assert eq1 is not None and math.isnan(eq1.backtest_err)
    text = next(w for w in eq1.warnings if w.startswith("backtest:"))
    assert "needs 6 or more" not in text and "up to 50.0% US" in text and "too_few_points" in text, text


def test_quantile_cuts_that_split_the_models_alike_are_one_back_test():
    # 9 of 15 models at 60% US: the 0.5-0.8 quantiles all split the models there, and one back-test
    # counted as four ("trusted over 4 cuts", each cut's discount learned from copies of itself)
    us = np.r_[[0.5] * 3, [0.6] * 9, [0.7, 0.8, 0.9]]
    ds = 0.3 + 0.5 * (us - 0.45) ** 0.7 - np.random.default_rng(0).exponential(0.01, us.size)
    sel = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    assert sel.n_cuts == 1 and not sel.trusted
    assert sel.trust_reason.startswith("one back-test cut only"), sel.trust_reason


def test_a_back_test_error_that_is_no_number_is_not_trusted():
    # NaN > tolerance is False: a group whose back-tests gave no number would have been trusted
    from dataclasses import replace

    from meta_study.analysis.selection import _trust

    ds = 0.3 + 0.5 * (US - 0.5) ** 0.7
    o = SelectionOptions()
    sel = fit_groups([(US, ds)], FitOptions(holdout_quantile=1.0))[0]
    assert sel.n_cuts >= 2 and _trust(sel, o)[0]
    trusted, reason = _trust(replace(sel, backtest_err=math.nan), o)
    assert not trusted and reason.startswith("no back-test error"), reason
