"""Edge-case groups through fit_groups (review L): unpaired arrays, NaN accuracies, models 1e-12
apart in US, no back-test, nonsense test-set sizes. Each result is a flagged answer, never an
exception, and what a row of fits.parquet says agrees with the answer built from it."""

from __future__ import annotations

import math

import numpy as np

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.selection import SelectionOptions

US = np.linspace(0.5, 0.9, 20)
DS = 0.3 + 0.5 * (US - 0.5) ** 0.7


def _same_answer(a, b) -> None:
    assert a.usable and b.usable and a.trusted == b.trusted
    u = np.array([a.headline.best_us, a.headline.best_us + 0.03])
    np.testing.assert_allclose(a.headline.predict_accuracy(u), b.headline.predict_accuracy(u))
    np.testing.assert_allclose(a.headline.interval(u), b.headline.interval(u))


def test_unpaired_us_and_ds_arrays_are_a_degenerate_group_not_an_exception():
    sel = fit_groups([(US, DS[:5]), (US, DS)])
    assert not sel[0].usable and not sel[0].trusted
    assert {c.fit.status for c in sel[0].candidates} == {"degenerate"}
    assert "20 values" in sel[0].trust_reason
    assert sel[1].usable          # the other groups go on


def test_a_nan_accuracy_drops_that_model_not_the_group():
    # one NaN US made the hold-out quantile NaN: "no usable fit (too_few_points: no points)"
    clean = fit_groups([(US, DS)])[0]
    nan_us = fit_groups([(np.r_[US, np.nan], np.r_[DS, 0.5])])[0]
    _same_answer(nan_us, clean)
    # one NaN DS among the visible models made the best DS seen NaN: "no usable fit", no reason
    nan_ds = fit_groups([(US, np.r_[np.nan, DS[1:]])])[0]
    ref = fit_groups([(US[1:], DS[1:])])[0]
    _same_answer(nan_ds, ref)


def test_a_rows_interval_is_the_interval_its_answer_states_for_near_tied_models():
    # three models repeated 1e-12 higher in US: back-test reaches of ~1e-11, which the row's
    # residuals (rounded to 1e-6) turned into 0, so predict_interval gave another interval
    us = np.array([0.7781999528258101, 0.7847278211649014, 0.7871866633073201, 0.7949241738906245,
                   0.825452320814724, 0.8848225561565519, 0.9024578360282909])
    ds = np.array([0.40868120226149623, 0.3336970295818237, 0.4245582218770502, 0.31145921960380296,
                   0.3504449894600573, 0.392962150121602, 0.35199762376045246])
    sel = fit_groups([(np.r_[us, us[:3] + 1e-12], np.r_[ds, ds[:3]])])[0]
    row = {"law": "ensemble", **sel.headline.to_row()}
    assert sel.claims.steps
    for st in sel.claims.steps:
        lo, hi = predict_interval(row, st.us)
        assert float(predict_fit(row, st.us)) == st.ds
        assert (float(lo), float(hi)) == (st.lo, st.hi), st.points


def test_without_a_back_test_the_us_needed_band_is_unknown_not_never():
    o = FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=0.97))
    sel = fit_groups([(US[:5], DS[:5])], o)[0]
    assert sel.n_cuts == 0 and math.isfinite(sel.claims.us_needed)
    # inf is "never reached"; with no interval at all the band's ends are unknown
    assert math.isnan(sel.claims.us_needed_lo) and math.isnan(sel.claims.us_needed_hi)


def test_a_test_set_size_below_one_example_is_no_size():
    ref = fit_groups([(US, DS)])[0]
    for bad in (1e-300, 0.5, 0.0, -5.0):
        sel = fit_groups([(US, DS)], test_sizes=[np.full(US.size, bad)])[0]
        assert math.isnan(sel.noise) and math.isnan(sel.headline.test_size), bad
        assert "noise" not in sel.trust_reason, (bad, sel.trust_reason)
        _same_answer(sel, ref)


def test_a_few_hand_typed_accuracies_are_no_test_set_size():
    from meta_study.analysis.headline import estimate_test_size

    # a DS accuracy of 0.4 read as 2 / 5: a 5-example test set, an interval floor of +-36 points
    for values in ([0.4], [0.5], [0.2, 0.4, 0.6], [0.52, 0.54]):
        assert math.isnan(estimate_test_size(np.array(values))), values
    assert estimate_test_size(np.arange(1, 11) * 2 / 100_000 + 0.5) == 50_000   # ten values of k / 50,000
    assert estimate_test_size(np.array([1 / 7, 2 / 7])) == 7                         # no power of ten
    sel = fit_groups([(US, np.full(US.size, 0.4))])[0]
    assert math.isnan(sel.noise) and "noise" not in sel.trust_reason
