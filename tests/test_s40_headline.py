"""The headline's rows read back and its answer in words (a review, 2026-12-05)."""

from __future__ import annotations

import math

import pytest

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.answers import NO_SPREAD_TEXT, answer_text


def _headline_row(**kw):
    # e_DS = e_US^3 + 0.10, one member; the best visible model at 93% US
    row = {"law": "ensemble", "members": '[["eq1","vertices",{"k":1.0,"alpha":3.0,"e_ir":0.1},"ok"]]',
           "flat": 0.86, "discount": 0.5, "best_us": 0.93,
           "interval_residuals": "[[0.01,0.2,0],[0.02,0.3,1]]", "ds_test_size": math.nan}
    row.update(kw)
    return row


def test_residuals_that_mix_pairs_and_triples_are_one_clear_error():
    """Pairs (rows from before the cut was kept) beside triples raised numpy's "setting an array
    element with a sequence ... inhomogeneous shape" at the first interval, naming neither the
    column nor what was wrong with it."""
    row = _headline_row(interval_residuals="[[0.01,0.2],[0.02,0.3,1]]")
    with pytest.raises(ValueError, match="interval_residuals mixes"):
        predict_interval(row, 0.95)
    with pytest.raises(ValueError, match="interval_residuals mixes"):
        predict_interval({**row, "law": "eq1", "k": 1.0, "alpha": 3.0, "e_ir": 0.1, "status": "ok"}, 0.95)
    # one kind per row still reads, pairs (old rows) and triples alike
    for resid in ("[[0.01,0.2],[0.02,0.3]]", "[[0.01,0.2,0],[0.02,0.3,1]]"):
        lo, hi = predict_interval(_headline_row(interval_residuals=resid), 0.95)
        p = predict_fit(_headline_row(interval_residuals=resid), 0.95)
        assert lo <= p <= hi


def test_a_trusted_prediction_at_the_horizon_without_an_interval_says_why():
    """Every step past 100% US, back-tests that hit exactly (no interval): the answer read "at the
    tested horizon (99.999% US): 74.2% DS." with neither an interval nor a reason, where every
    step in the same position says "(no 90% interval: the back-tests hit exactly, ...)"."""
    nan = {f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("", "_lo", "_hi")}
    row = {"trusted": True, "trust_reason": "back-test error 0.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.9999, "flat": 0.7423, "horizon_us": 0.9999942, "predict_us": 0.9999942,
           "predict_ds": 0.7423, "predict_lo": math.nan, "predict_hi": math.nan, "warnings": "",
           "ds_target": math.nan, **nan}
    text = answer_text(row)
    assert f"at the tested horizon (99.999% US): 74.2% DS ({NO_SPREAD_TEXT})." in text, text
    # with an interval it is stated as before
    text = answer_text({**row, "predict_lo": 0.73, "predict_hi": 0.75})
    assert "at the tested horizon (99.999% US): 74.2% DS [73.0%-75.0%]." in text, text
