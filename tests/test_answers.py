"""The answer in words (``meta_study.analysis.answers``) says only what its row supports."""

from __future__ import annotations

import math

import pytest

from meta_study.analysis.answers import answer_text


def _row(**kw):
    row = {"trusted": True, "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.349, "flat": 0.207, "horizon_us": 0.40, "warnings": "",
           "ds_plus1": 0.25, "ds_plus1_lo": 0.23, "ds_plus1_hi": 0.27, "slope_plus1": 0.5,
           "ds_plus3": 0.26, "ds_plus3_lo": 0.23, "ds_plus3_hi": 0.29, "slope_plus3": 0.5,
           "ds_plus5": 0.27, "ds_plus5_lo": 0.23, "ds_plus5_hi": 0.31, "slope_plus5": 0.5,
           "ds_target": math.nan}
    row.update(kw)
    return row


def test_the_best_ds_seen_is_not_called_the_best_models():
    # best_us and flat are the highest US and the highest DS among the visible models: often two models
    text = answer_text(_row())
    assert "best visible model: 34.9% US; best DS seen: 20.7%" in text
    assert "+1 US pt: 25.0% DS [23.0%-27.0%], 0.50 DS pt per US pt" in text
    assert "below the best DS seen" not in text


def test_a_prediction_below_the_best_ds_seen_says_why_once():
    text = answer_text(_row(ds_plus1=0.193, ds_plus1_lo=0.178, ds_plus1_hi=0.207,
                            ds_plus3=0.195, ds_plus3_lo=0.17, ds_plus3_hi=0.21))
    assert "+1 US pt: 19.3% DS [17.8%-20.7%], 0.50 DS pt per US pt (below the best DS seen, 20.7%" in text
    assert text.count("below the best DS seen") == 1


def test_no_trend_states_no_gain_per_us_point():
    text = answer_text(_row(warnings="no_trend: DS does not rise with US in these models (Spearman rho = -0.08, p = 0.6)"))
    assert "DS pt per US pt" not in text
    assert "no DS gain per US pt stated" in text
    # nor a US accuracy for a DS target: "needs US in [89.8%-never]" on a falling task
    target = answer_text(_row(trusted=False, ds_target=0.9, us_needed=math.nan, us_needed_lo=0.898,
                              us_needed_hi=math.inf,
                              warnings="no_trend: DS does not rise with US in these models (Spearman rho = -0.4, p = 0.01)"))
    assert "90.0% DS: no US accuracy is stated (no significant rise of DS with US in these models" in target
    assert "89.8%" not in target


def test_the_calculator_gives_an_untrusted_group_an_interval_not_a_point():
    untrusted = answer_text(_row(trusted=False, trust_reason="back-test error 5.0 pt > tolerance 3 pt",
                                 ds_target=0.5, us_needed=0.999, us_needed_lo=0.479, us_needed_hi=math.inf))
    assert "50.0% DS needs US in the 90% interval [47.9%-never]" in untrusted
    assert "99.9%" not in untrusted
    trusted = answer_text(_row(ds_target=0.26, us_needed=0.385, us_needed_lo=0.37, us_needed_hi=0.41))
    assert "26.0% DS needs 38.5% US [37.0%-41.0%]." in trusted
    past = answer_text(_row(ds_target=0.3, us_needed=0.45, us_needed_lo=0.41, us_needed_hi=0.6))
    assert "30.0% DS needs 45.0% US [41.0%-60.0%] (past the tested horizon)" in past


def test_a_target_already_reached_and_a_limit_below_the_best_ds_seen_say_so():
    """The calculator gave '60% DS needs US in [48.6%-69.0%]' where a visible model had 63.1%; a
    trusted claim said 'DS levels off near 30.8%' beside 'best DS seen: 30.9%'."""
    text = answer_text(_row(ds_target=0.2, us_needed=0.3, us_needed_lo=0.28, us_needed_hi=0.33))
    assert "20.0% DS is reached already (best DS seen: 20.7%)." in text and "needs" not in text
    text = answer_text(_row(stop_paying_supported=True, stop_paying_us=0.3, stop_paying_lo=0.25, stop_paying_hi=0.33,
                            saturation=0.205, saturation_lo=0.2, saturation_hi=0.21))
    assert "DS has levelled off: the laws' limit, 20.5%, is below the best DS seen (20.7%)." in text
    text = answer_text(_row(stop_paying_supported=True, stop_paying_us=0.3, stop_paying_lo=0.25, stop_paying_hi=0.33,
                            saturation=0.26, saturation_lo=0.25, saturation_hi=0.28))
    # the saturation is p(100% US): stated as an extrapolation even beside a supported stop-paying
    # point ('DS levels off near 97.5%' on a task whose true limit was 85%)
    assert "the laws' limit at 100% US, an extrapolation: 26.0% (spread of the laws: 25.0%-28.0%)." in text


def test_a_detail_with_a_semicolon_is_no_label_of_its_own():
    from meta_study.analysis.answers import flags
    from meta_study.analysis.tables import join_warnings

    joined = join_warnings(["few_points: no fit (too_few_points: 2 point(s); the law has 3 parameters)",
                            "extrapolation: past the horizon"])
    assert [label for label, _ in flags(joined)] == ["few_points", "extrapolation"]


def test_a_group_without_a_fit_or_a_back_test_says_so_in_one_sentence():
    nofit = answer_text({"trusted": False, "trust_reason": "no usable fit (too_few_points: 1 point(s))",
                         "best_us": math.nan, "flat": math.nan, "warnings": "", "ds_target": math.nan})
    assert nofit == "not trusted (no usable fit (too_few_points: 1 point(s)))."
    nan = {f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("_lo", "_hi")}    # no interval
    text = answer_text(_row(trusted=False, trust_reason="no back-test", horizon_us=math.nan, **nan))
    assert text.endswith("+1/+3/+5 US pt: no 90% interval (no back-test to calibrate one).") and ". ." not in text
    assert "[none]" not in text


def test_steps_past_100_percent_us_are_said_and_the_horizon_stands_in():
    """A trusted group whose best model is at 99.5% US said nothing but its best model: every +k
    step lay past 100% US and was dropped without a word."""
    nan = {f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("", "_lo", "_hi")}
    text = answer_text(_row(best_us=0.995, flat=0.931, horizon_us=0.99936, predict_us=0.99936, predict_ds=0.96,
                            predict_lo=0.921, predict_hi=0.999, **nan))
    assert "+1/+3/+5 US pt: past 100% US; at the tested horizon (99.94% US): 96.0% DS [92.1%-99.9%]." in text, text
    untrusted = answer_text(_row(trusted=False, best_us=0.995, predict_us=0.99936, predict_ds=0.96,
                                 predict_lo=0.921, predict_hi=0.999, **nan))
    assert "at the tested horizon (99.94% US): 90% interval [92.1%-99.9%]" in untrusted and "96.0%" not in untrusted
    some = {f"ds_plus{k}{s}": math.nan for k in (3, 5) for s in ("", "_lo", "_hi")}
    text = answer_text(_row(best_us=0.98, horizon_us=0.999, **some))
    assert "+3/+5 US pt: past 100% US." in text and "tested horizon (" not in text


def test_a_best_model_at_99_percent_us_states_its_step_to_100():
    import numpy as np

    from meta_study.analysis.fitting import FitOptions, fit_group

    rng = np.random.default_rng(3)
    us = np.concatenate([rng.uniform(0.6, 0.985, 40), [0.99]])
    ds = 0.9 - 0.5 * (1 - us) ** 1.2 - rng.exponential(0.004, us.size)
    s = fit_group(us, ds, FitOptions(holdout_quantile=1.0))
    steps = {st.points: st for st in s.claims.steps}
    assert math.isfinite(steps[1].ds) and steps[1].us == 1.0            # exactly 100% US is a step
    assert math.isnan(steps[3].ds) and math.isnan(steps[5].ds)


def test_a_supported_stop_paying_point_says_past_the_data_not_never():
    text = answer_text(_row(stop_paying_supported=True, stop_paying_us=0.752, stop_paying_lo=0.5,
                            stop_paying_hi=math.inf, saturation=0.3, saturation_lo=0.28, saturation_hi=0.32))
    assert "at 75.2% US (spread of the laws: 50.0%-past the data)" in text and "never" not in text


def test_the_calculator_near_the_best_model_and_past_the_prediction():
    # the laws' trend passes 90% at 81.2% US but no visible model (best at 81.8%, 89.9%) reaches
    # it: "needs 81.8% US" named the best model's US accuracy, which has less
    text = answer_text(_row(best_us=0.818, flat=0.899, horizon_us=0.85, ds_target=0.9, us_needed=0.818,
                            us_needed_lo=0.818, us_needed_hi=math.inf))
    assert "90.0% DS needs more US than the best visible model's 81.8% [81.8%-never]." in text, text
    # a prediction that never reaches the target, beside an interval that does
    text = answer_text(_row(ds_target=0.97, us_needed=math.nan, us_needed_lo=0.975, us_needed_hi=math.inf))
    assert "97.0% DS is not reached by the prediction up to 100% US, past the tested horizon (90% interval [97.5%-never])." in text, text


def test_a_curve_that_never_pays_in_the_data_stops_at_the_weakest_model():
    import numpy as np

    from meta_study.analysis.payoff import stop_paying_from_slopes

    grid = np.array([0.5, 0.6, 0.7, 0.8])
    out = stop_paying_from_slopes(np.array([[0.05, 0.04, 0.03, 0.02], [0.3, 0.2, 0.2, 0.2], [0.3, 0.2, 0.05, 0.01]]),
                                  0.1, grid)
    assert out[0] == 0.5 and out[1] == math.inf and 0.6 < out[2] < 0.7     # [1] still pays: never


def test_the_report_counts_an_interval_at_the_horizon_when_every_step_is_past_100_percent():
    # its verdict said "the others have none: no back-test to calibrate one, or no usable fit" of a
    # group with four back-test cuts whose steps lay past 100% US
    import pandas as pd

    from meta_study.report import _has_interval

    nan = {f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("", "_lo", "_hi")}
    heads = pd.DataFrame([_row(best_us=0.995, predict_lo=0.92, predict_hi=0.99, **nan),
                          _row(best_us=0.5, predict_lo=0.92, predict_hi=0.99, **nan)])
    assert _has_interval(heads).tolist() == [True, False]


def test_a_best_model_just_below_100_percent_does_not_read_100_percent():
    """A best model at 99.95% US read "best visible model: 100.0% US" beside "+1 US pt: past 100% US"."""
    nan = {f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("", "_lo", "_hi")}
    text = answer_text(_row(best_us=0.9995, flat=0.931, horizon_us=0.9995, **nan))
    assert "best visible model: 99.95% US" in text, text
    assert "best visible model: 34.9% US" in answer_text(_row())          # one decimal otherwise


def test_a_backtest_warning_never_compares_two_equal_looking_numbers():
    from meta_study.analysis.selection import _apart

    assert _apart(9.53, 9.46) == ("9.53", "9.46")       # read "9.5 pt does not beat the flat guess (9.5 pt)"
    assert _apart(9.5, 9.5) == ("9.5", "9.5") and _apart(3.04, 2.0) == ("3.0", "2.0")


def test_an_answer_read_back_from_the_table_states_the_threshold_its_point_was_found_with(tmp_path):
    """fits.parquet did not record the payoff threshold: ``answer_text(row)`` said "< 0.1 DS pt"
    beside a stop-paying point found at 0.2. Each row carries it now, and answers default to it."""
    from meta_study.analysis.answers import answer_text

    row = {"trusted": True, "trust_reason": "backtest ok", "best_us": 0.9, "flat": 0.8, "horizon_us": 0.99,
           "stop_paying_us": 0.95, "stop_paying_lo": 0.93, "stop_paying_hi": 0.97, "stop_paying_supported": True,
           "payoff_threshold": 0.2}
    assert "< 0.2 DS pt" in answer_text(row) and "< 0.1 DS pt" not in answer_text(row)
    assert "< 0.2 DS pt" in answer_text(row, 0.2)
    with pytest.raises(ValueError, match="not the row's payoff_threshold 0.2"):   # a point found at 0.2, said at 0.5
        answer_text(row, 0.5)
    assert "< 0.1 DS pt" in answer_text({k: v for k, v in row.items() if k != "payoff_threshold"})


def test_every_row_of_the_fits_table_carries_its_payoff_threshold():
    import dataclasses

    import numpy as np

    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import Group
    from meta_study.analysis.tables import fit_table

    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 60)
    ds = 1 - (0.8 * (1 - us) ** 1.5 + 0.1) - rng.uniform(0, 0.05, 60)
    g = Group("up", "d", "fewshot", 5, us, ds)
    opts = FitOptions()
    opts = dataclasses.replace(opts, selection=dataclasses.replace(opts.selection, payoff_threshold=0.2))
    df, _ = fit_table([g], opts)
    assert len(df) > 1 and (df["payoff_threshold"] == 0.2).all()


def test_models_held_out_to_check_the_answer_are_said():
    """With the default hold-out (the top 20% of US hidden), "+1 US pt" is beyond the best visible
    model (84.7% US on timm), while the store held models up to 90.1%: unsaid, a reader took the
    answer for one from the best model in the data."""
    text = answer_text(_row(n_heldout=310, holdout_threshold=0.351))
    assert "best visible model: 34.9% US (310 models above it held out to check the answer);" in text
    assert "held out" not in answer_text(_row(n_heldout=0, holdout_threshold=0.9))    # --holdout-quantile 1.0
    assert "1 model above" in answer_text(_row(n_heldout=1, holdout_threshold=0.351))
