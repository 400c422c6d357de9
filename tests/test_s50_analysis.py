"""Review s50 of the laws' saturation, the answer's threshold and the resampling options' ceilings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meta_study.analysis.answers import answer, answer_text
from meta_study.analysis.bootstrap import MAX_SAMPLES, BootstrapOptions
from meta_study.analysis.laws import LAWS, LawFit
from meta_study.analysis.sensitivity import MAX_SIZE, MAX_TRIALS, SensitivityOptions
from meta_study.errors import OptionError, option_message


# 1. a falling linear law (b < 0, hand-built: no fit gives one) said its saturation was expit(a) /
#    Phi(a), its accuracy at 50% US, while it predicts 0% DS at 100% US; a hand-built power law with
#    alpha < 0 said 1 - k (its accuracy at 0% US), and eq1 with alpha = 0 said 1 - e_IR beside a
#    curve that is 1 - k - e_IR everywhere

@pytest.mark.parametrize("law, params", [
    ("logit-linear", {"a": 0.5, "b": -0.5}),
    ("probit-linear", {"a": 0.5, "b": -0.5}),
    ("power", {"k": 0.3, "alpha": -0.5}),
    ("eq1", {"k": 0.3, "alpha": 0.0, "e_ir": 0.1}),
    ("eq1", {"k": 0.3, "alpha": -0.5, "e_ir": 0.1}),
    ("eq1-bayes", {"k": 0.3, "alpha": 0.0, "e_ir": 0.1, "e_us_star": 0.01}),
])
def test_an_out_of_bounds_law_saturates_where_it_predicts(law, params):
    f = LawFit(law, params, 0.0, 5, "ok")
    want = float(f.predict_accuracy(1.0))
    assert f.saturation == want, (f.saturation, want)
    if law.endswith("-linear"):
        assert f.saturation == 0.0


def test_the_fitted_laws_saturation_is_unchanged():
    """In the fits' bounds the closed forms stand, bit for bit (the numbers a fit gives do not move)."""
    cases = {"eq1": {"k": 0.4, "alpha": 1.3, "e_ir": 0.137}, "eq1-bayes": {"k": 0.4, "alpha": 1e-3, "e_ir": 0.2,
                                                                         "e_us_star": 0.01},
             "power": {"k": 0.4, "alpha": 0.0}, "logit-linear": {"a": 0.3, "b": 0.0},
             "probit-linear": {"a": 0.3, "b": 1.2}}
    old = {"eq1": 1.0 - 0.137, "eq1-bayes": 1.0 - 0.2, "power": 1.0 - 0.4,
           "logit-linear": 1.0 / (1.0 + math.exp(-0.3)), "probit-linear": 1.0}
    for law, p in cases.items():
        assert LawFit(law, p, 0.0, 5, "ok").saturation == pytest.approx(old[law], abs=0, rel=1e-15), law
    assert LawFit("eq1", {"k": 0.0, "alpha": 0.0, "e_ir": 0.25}, 0.0, 5, "ok").saturation == 0.75   # flat, k = 0


def test_accuracies_of_exactly_0_and_1_leave_no_inf_or_nan_in_a_linear_fit():
    """Not a defect (checked): the transforms are clipped, so points at 0% or 100% give finite
    parameters, and the predictions at 0% and 100% US are the exact limits."""
    us, ds = np.array([0.0, 0.0, 0.5, 1.0, 1.0]), np.array([0.0, 0.1, 0.4, 0.9, 1.0])
    for law in ("logit-linear", "probit-linear", "power"):
        f = LAWS[law].fit(us, ds)
        assert f.usable and all(math.isfinite(v) for v in f.params.values()) and math.isfinite(f.sse), law
        assert np.isfinite(f.predict_accuracy(np.array([0.0, 0.5, 1.0]))).all(), law
        assert np.isfinite(f.slope(np.array([0.0, 0.5]))).all(), law


# 2. answer(row, threshold) with a threshold other than the row's payoff_threshold said "Scaling stops
#    paying (+1 US pt buys < 0.5 DS pt) at 95.0% US" of a point found at 0.2: +1 US point still
#    bought more than 0.5 there

_ROW = {"trusted": True, "trust_reason": "backtest ok", "best_us": 0.9, "flat": 0.8, "horizon_us": 0.99,
        "stop_paying_us": 0.95, "stop_paying_lo": 0.93, "stop_paying_hi": 0.97, "stop_paying_supported": True,
        "payoff_threshold": 0.2}


def test_an_answer_refuses_a_threshold_other_than_the_one_its_point_was_found_with():
    with pytest.raises(ValueError, match=r"threshold 0\.5 is not the row's payoff_threshold 0\.2, the one its "
                                         r"stop-paying point was found with"):
        answer(_ROW, 0.5)
    assert "< 0.2 DS pt) at 95.0% US" in answer_text(_ROW, 0.2)            # the row's own, given
    assert "< 0.2 DS pt) at 95.0% US" in answer_text(_ROW, 0.1 + 0.1)      # and as arithmetic gives it
    assert "< 0.2 DS pt) at 95.0% US" in answer_text(_ROW)
    bare = {k: v for k, v in _ROW.items() if k != "payoff_threshold"}      # an older table: the caller's
    assert "< 0.5 DS pt) at 95.0% US" in answer_text(bare, 0.5)
    assert "< 0.5 DS pt" in answer_text({**_ROW, "payoff_threshold": math.nan}, 0.5)


# 3. SensitivityOptions and BootstrapOptions took any count: trials=10**7 (a typo of extra zeros in a
#    library call, or analysis/fig3_sensitivity.py --trials, which has no ceiling) ran until killed,
#    and n_sizes=10**10 was numpy's MemoryError; the commands refuse them (--trials, --samples, --sizes)

def test_the_resampling_options_have_the_commands_ceilings():
    from meta_study import cli

    assert (MAX_TRIALS, MAX_SAMPLES, MAX_SIZE) == (cli.MAX_TRIALS, cli.MAX_SAMPLES, cli.MAX_SIZE)
    assert SensitivityOptions(trials=MAX_TRIALS, sizes=(MAX_SIZE,)).trials == MAX_TRIALS
    assert BootstrapOptions(samples=MAX_SAMPLES).samples == MAX_SAMPLES
    for kw in ({"trials": MAX_TRIALS + 1}, {"sizes": (10, MAX_SIZE + 1)}, {"n_sizes": 10 ** 10},
               {"min_size": 10 ** 12}):
        with pytest.raises(OptionError) as e:
            SensitivityOptions(**kw)
        assert e.value.option == next(iter(kw))
    with pytest.raises(OptionError) as e:
        BootstrapOptions(samples=200_000)
    assert str(e.value) == "samples (resamples per group) must be in [10, 100000], got 200000"
    # the scripts say it with the flag (scripts.run, cli.flag_errors)
    with pytest.raises(OptionError) as e:
        SensitivityOptions(trials=100_000)
    assert option_message(e.value.option, e.value.value, e.value.allowed) == \
        "--trials must be in [1, 10000], got 100000"


# 4. a step's slope spread was printed at 2 decimals whatever its point's: "0.0996 DS pt per US pt
#    (spread of the laws: 0.10-0.45)" (a point outside its spread, a law below the threshold read at
#    it), and laws at 0.0999 and 0.1006 (one below the threshold, one above) read as one "0.10" and
#    their spread went unsaid

def test_a_slope_and_its_spread_read_in_order_and_on_their_sides_of_the_threshold():
    row = {"trusted": True, "trust_reason": "ok", "best_us": 0.70, "flat": 0.50, "horizon_us": 0.80, "warnings": "",
           "payoff_threshold": 0.1, "ds_target": math.nan,
           "ds_plus1": 0.51, "ds_plus1_lo": 0.49, "ds_plus1_hi": 0.53,
           "slope_plus1": 0.0996, "slope_plus1_lo": 0.0991, "slope_plus1_hi": 0.45,
           "ds_plus3": 0.52, "ds_plus3_lo": 0.49, "ds_plus3_hi": 0.55,
           "slope_plus3": 0.1004, "slope_plus3_lo": 0.0999, "slope_plus3_hi": 0.1006,
           "ds_plus5": 0.53, "ds_plus5_lo": 0.49, "ds_plus5_hi": 0.57,
           "slope_plus5": 0.3, "slope_plus5_lo": 0.05, "slope_plus5_hi": 0.45}
    text = answer_text(row)
    assert "+1 US pt: 51.0% DS [49.0%-53.0%], 0.0996 DS pt per US pt (spread of the laws: 0.0991-0.4500);" in text, text
    assert "+3 US pt: 52.0% DS [49.0%-55.0%], 0.1004 DS pt per US pt (spread of the laws: 0.0999-0.1006);" in text, text
    # away from the threshold: 2 decimals, as before
    assert "+5 US pt: 53.0% DS [49.0%-57.0%], 0.30 DS pt per US pt (spread of the laws: 0.05-0.45)." in text, text
    # a spread that reads as one number, on one side of the threshold, is still not said
    same = answer_text({**row, "slope_plus5": 0.301, "slope_plus5_lo": 0.3, "slope_plus5_hi": 0.304})
    assert "0.30 DS pt per US pt." in same and "0.30-0.30" not in same, same
