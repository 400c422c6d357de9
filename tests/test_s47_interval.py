"""The headline's interval since 2026-12-06 (``interval_rule`` "longest+members"): the back-tests'
errors out to the longest back-test, growing in proportion past it, and up to the highest
member's prediction above; rows written before keep the interval they stated."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.headline import (INTERVAL_RULE, LEGACY_INTERVAL_RULE, Headline, distance, empirical_quantile,
                                          half_width)
from meta_study.analysis.tables import fits_frame

MEMBERS = ('[["eq1","vertices",{"k":1.0,"alpha":3.0,"e_ir":0.1},"ok"],'
           '["eq1","bins",{"k":1.0,"alpha":2.0,"e_ir":0.1},"ok"],'
           '["eq1","hull-curve",{"k":1.0,"alpha":1.0,"e_ir":0.0},"ok"]]')
# (|residual|, reach, cut): the longest reach 0.4, the median 0.1
RESIDUALS = "[[0.01,0.05,0],[0.02,0.1,0],[0.015,0.1,1],[0.03,0.4,1]]"


def _row(**kw):
    row = {"law": "ensemble", "members": MEMBERS, "member_quantile": 0.4, "discount": 1.0, "flat": 0.86,
           "best_us": 0.93, "interval_residuals": RESIDUALS, "ds_test_size": math.nan}
    row.update(kw)
    return row


def test_the_upper_end_is_the_highest_member_and_the_lower_end_grows_past_the_longest_back_test():
    row = _row(interval_rule=INTERVAL_RULE)
    h = Headline.from_row(row)
    u = np.array([0.90, 0.93, 0.95, 0.97, 0.99])
    lo, hi = predict_interval(row, u)
    p = predict_fit(row, u)
    x = distance(u, 0.93)
    r = np.array([0.01, 0.02, 0.015, 0.03])
    reach = np.array([0.05, 0.1, 0.1, 0.4])
    q = empirical_quantile(r / np.maximum(1.0, reach / 0.4), 0.9)
    half = q * np.maximum(1.0, x / 0.4)            # only the longest reach, not the median one
    np.testing.assert_allclose(lo, np.clip(p - half, 0, 1), atol=1e-12)
    top = h.member_curves(u).max(axis=0)
    np.testing.assert_allclose(hi, np.clip(np.maximum(p + half, top), 0, 1), atol=1e-12)
    assert np.any(top > p + half), "the test must reach where the highest member sets the upper end"
    assert np.all(lo <= p) and np.all(p <= hi)


def test_a_row_written_before_the_rule_was_stored_keeps_its_symmetric_interval():
    """No ``interval_rule`` column (a table written before 2026-12-06): the interval its answer
    stated, symmetric, growing past the longest and past the median reach."""
    u = np.array([0.95, 0.97, 0.99])
    for old in (_row(), _row(interval_rule=None), _row(interval_rule=math.nan), _row(interval_rule=pd.NA)):
        lo, hi = predict_interval(old, u)
        p = predict_fit(old, u)
        half = half_width(distance(u, 0.93), Headline.from_row(old).residuals, 0.9, LEGACY_INTERVAL_RULE)
        np.testing.assert_allclose(hi, np.clip(p + half, 0, 1), atol=1e-12)
        np.testing.assert_allclose(lo, np.clip(p - half, 0, 1), atol=1e-12)
    # the legacy rule is wider past the median reach than the longest reach's term alone
    res = Headline.from_row(_row()).residuals
    assert half_width(np.array([0.8]), res, 0.9, LEGACY_INTERVAL_RULE)[0] > half_width(np.array([0.8]), res, 0.9)[0]


def test_an_unknown_interval_rule_is_one_error_naming_the_column():
    with pytest.raises(ValueError, match="interval_rule 'wider' is not one this meta-study knows"):
        predict_interval(_row(interval_rule="wider"), 0.95)
    with pytest.raises(ValueError, match="interval_rule is 3.0, not a rule's name"):
        Headline.from_row(_row(interval_rule=3.0))


def test_fits_parquet_rows_carry_the_rule_and_reproduce_their_stated_intervals(tmp_path):
    rng = np.random.default_rng(3)
    us = np.sort(rng.uniform(0.5, 0.9, 80))
    ds = np.clip(1 - 0.9 * (1 - us) ** 0.8 - 0.05 + rng.normal(0, 0.01, us.size), 0, 1)
    g = Group("up", "down", "linear", None, us, ds)
    sels = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0), keys=[g.key])
    path = tmp_path / "fits.parquet"
    fits_frame([g], sels).to_parquet(path)
    back = pd.read_parquet(path)
    assert set(back["interval_rule"]) == {INTERVAL_RULE}
    head = back[back["headline"]].iloc[0].to_dict()
    for k in (1, 3, 5):
        if not math.isfinite(head[f"ds_plus{k}"]):
            continue
        u = head["best_us"] + k / 100
        lo, hi = predict_interval(head, u)
        assert (float(lo), float(hi)) == pytest.approx((head[f"ds_plus{k}_lo"], head[f"ds_plus{k}_hi"]), abs=1e-12)
    # a candidate row (one law, no members): symmetric, by the same rule
    cand = back[~back["headline"]].iloc[0].to_dict()
    lo, hi = predict_interval(cand, 0.95)
    p = predict_fit(cand, 0.95)
    assert float(hi - p) == pytest.approx(float(p - lo), abs=1e-12) or float(hi) in (0.0, 1.0) or float(lo) in (0.0, 1.0)
