"""Review s49 of the calculator (``payoff``) and the answer's wording (``answers``): numbers said
as the row holds them, never rounded across the line a claim draws."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from meta_study.analysis.answers import answer_text
from meta_study.analysis.laws import LawFit
from meta_study.analysis.payoff import us_needed, us_needed_many


def _row(**kw):
    row = {"trusted": True, "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.70, "flat": 0.50, "horizon_us": 0.80, "warnings": "", "payoff_threshold": 0.1,
           "ds_plus1": 0.51, "ds_plus1_lo": 0.49, "ds_plus1_hi": 0.53, "slope_plus1": 0.05,
           "ds_plus3": 0.52, "ds_plus3_lo": 0.49, "ds_plus3_hi": 0.55, "slope_plus3": 0.05,
           "ds_plus5": 0.53, "ds_plus5_lo": 0.49, "ds_plus5_hi": 0.57, "slope_plus5": 0.05,
           "ds_target": math.nan}
    row.update(kw)
    return row


def _pylist(row):
    """The row as pyarrow reads it back from fits.parquet (None for NaN)."""
    return pa.Table.from_pylist([row]).to_pylist()[0]


# 1. a law that falls to its limit (k < 0 in Eq. 1, the Python API's hand-built fits): its own
#    limit read "needs 100% US" (reached only in the limit), while any target above it read 0%

def test_a_falling_law_reaches_its_own_limit_at_0_percent_us():
    fit = LawFit("eq1", {"k": -0.2, "alpha": 1.0, "e_ir": 0.3}, 0.0, 10, "ok")   # 90% DS at 0% US, 70% at 100%
    assert fit.saturation == 0.7
    assert us_needed(fit, 0.75) == 0.0
    assert us_needed(fit, 0.7) == 0.0          # was 1.0: "only at 100% US"
    assert us_needed(fit, 0.95) == math.inf     # never (NaN until 2026-12-07)
    # a rising law at its limit still reaches it only at 100% US; a flat one at 0%
    assert us_needed_many("eq1", [{"k": 1.0, "alpha": 10.0, "e_ir": 0.1}], 0.9)[0] == 1.0
    assert us_needed(LawFit("eq1", {"k": 0.0, "alpha": 1.0, "e_ir": 0.3}, 0.0, 10, "ok"), 0.7) == 0.0


# 2. a step's slope rounded across the threshold: "0.10 DS pt per US pt" beside "Scaling stops
#    paying (+1 US pt buys < 0.1 DS pt)" for a slope of 0.0996

def test_a_slope_below_the_threshold_never_prints_at_it():
    row = _row(slope_plus1=0.0996, stop_paying_supported=True, stop_paying_us=0.62, stop_paying_lo=0.55,
               stop_paying_hi=0.66, saturation=0.6, saturation_lo=0.55, saturation_hi=0.8)
    for r in (row, _pylist(row)):
        text = answer_text(r)
        assert "Scaling stops paying (+1 US pt buys < 0.1 DS pt) at 62.0% US" in text, text
        assert "+1 US pt: 51.0% DS [49.0%-53.0%], 0.0996 DS pt per US pt;" in text, text
        assert "0.10 DS pt per US pt" not in text, text
    # at another threshold, the same: 0.2496 is below 0.25, 0.25 exactly is not
    text = answer_text(_row(slope_plus1=0.2496, slope_plus3=0.25, payoff_threshold=0.25))
    assert "0.2496 DS pt per US pt" in text and "0.25 DS pt per US pt" in text, text
    # a slope that reads on the right side of the threshold keeps its 2 decimals
    assert "0.05 DS pt per US pt" in answer_text(_row())


# 3. an estimate printed with fewer decimals than the interval (or spread) beside it read outside
#    it: "needs 85.0% US [85.01%-85.04%]"

def test_the_us_needed_takes_its_intervals_decimals():
    row = _row(ds_target=0.6, us_needed=0.85031, us_needed_lo=0.85012, us_needed_hi=0.85039, horizon_us=0.9)
    for r in (row, _pylist(row)):
        text = answer_text(r)
        assert text.endswith("60.0% DS needs 85.03% US [85.01%-85.04%]."), text
    # a wide interval: one decimal, as before
    text = answer_text(_row(ds_target=0.6, us_needed=0.85, us_needed_lo=0.82, us_needed_hi=0.9, horizon_us=0.9))
    assert text.endswith("60.0% DS needs 85.0% US [82.0%-90.0%]."), text


def test_the_stop_paying_point_and_limit_take_their_spreads_decimals():
    row = _row(stop_paying_supported=True, stop_paying_us=0.72431, stop_paying_lo=0.72412, stop_paying_hi=0.72439,
               saturation=0.80031, saturation_lo=0.80012, saturation_hi=0.80039)
    text = answer_text(_pylist(row))
    assert ("Scaling stops paying (+1 US pt buys < 0.1 DS pt) at 72.43% US (spread of the laws: "
            "72.41%-72.44%); the laws' limit at 100% US, an extrapolation: 80.03% "
            "(spread of the laws: 80.01%-80.04%).") in text, text
    # a point whose spread reaches past the data keeps one decimal
    text = answer_text(_row(stop_paying_supported=True, stop_paying_us=0.724, stop_paying_lo=0.6,
                            stop_paying_hi=math.inf, saturation=0.8, saturation_lo=0.6, saturation_hi=0.9))
    assert "at 72.4% US (spread of the laws: 60.0%-past the data)" in text, text


# 4. answer(row, threshold) took any threshold: 0, -1 or NaN gave "Scaling stops paying (+1 US pt
#    buys < 0 DS pt) at 62.0% US", a claim no row makes (SelectionOptions and --threshold refuse them)

def test_an_answer_refuses_a_threshold_no_fit_could_have_used():
    from meta_study.analysis.answers import answer

    row = _row(stop_paying_supported=True, stop_paying_us=0.62, stop_paying_lo=0.55, stop_paying_hi=0.66,
               saturation=0.6, saturation_lo=0.55, saturation_hi=0.8)
    for bad in (0.0, -1.0, math.nan, 1000.0):
        with pytest.raises(ValueError, match=r"threshold must be DS points per US point in \(0, 100\]"):
            answer(row, bad)
    bare = {k: v for k, v in row.items() if k != "payoff_threshold"}   # a row without its own (an older table)
    assert "< 0.2 DS pt" in answer_text(bare, 0.2) and "< 100 DS pt" in answer_text(bare, 100)
    assert "< 0.1 DS pt" in answer_text(row)      # the row's own
