"""The prediction API on rows of fits.parquet, and the headline's curve inside the data
(a review with its own checks, 2026-12-04)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.headline import Headline, estimate_test_size
from meta_study.analysis.laws import LawFit


def _headline(discount: float) -> Headline:
    # e_DS = e_US^3 + 0.10: 3 e^2 DS points per US point (0.48 at 60% US)
    law = LawFit("eq1", {"k": 1.0, "alpha": 3.0, "e_ir": 0.10}, math.nan, 0, "ok")
    best_us = 0.93
    flat = float(law.predict_accuracy(np.array([best_us]))[0]) - 0.002
    # a discount below 1 is a headline row written before 2026-12-06 (the members' median)
    return Headline(members=(law,), names=("eq1/vertices",), flat=flat, discount=discount, best_us=best_us,
                    residuals=((0.01, 0.2, 0.0), (0.01, 0.3, 1.0)), quantile=0.5)


def test_inside_the_data_a_discounted_legacy_headline_keeps_the_members_slope():
    """(Rows written before 2026-12-06, still read as written.) The discount is about gains beyond the best model. Applied everywhere it squashed the curve
    inside the data by w: with w = 0.2 a group 'stopped paying' at 60% US where the visible
    models (and the true law) still gained ~0.5 DS pt per US pt."""
    h = _headline(0.2)
    u = np.array([0.45, 0.6, 0.75, 0.9])
    np.testing.assert_allclose(h.slope(u), 3 * (1 - u) ** 2, rtol=0.02)                   # the law's slope
    m = h.center(u)
    shift = float(h.predict_accuracy(np.array([h.best_us]))[0] - h.center(np.array([h.best_us]))[0])
    np.testing.assert_allclose(h.predict_accuracy(u), m + shift, atol=1e-12)
    # continuous at the best model, discounted beyond it
    eps = 1e-7
    a, b = h.predict_accuracy(np.array([h.best_us, h.best_us + eps]))
    assert abs(a - b) < 1e-5
    beyond = np.array([0.95, 0.97])
    np.testing.assert_allclose(h.predict_accuracy(beyond), h.flat + 0.2 * (h.center(beyond) - h.flat), atol=1e-12)
    # the members' curves (their spread) are discounted the same way
    np.testing.assert_allclose(h.member_curves(np.concatenate([u, beyond]))[0], h.predict_accuracy(np.concatenate([u, beyond])),
                               atol=1e-12)


def test_us_accuracies_outside_0_1_and_bad_levels_are_errors_not_numbers():
    row = _headline(0.5).to_row() | {"law": "ensemble"}
    with pytest.raises(ValueError, match=r"got 85 \(a percent\? give fractions"):
        predict_fit(row, 85)            # was the saturation, 100% US
    with pytest.raises(ValueError, match="got -0.2"):
        predict_interval(row, [0.5, -0.2])
    with pytest.raises(ValueError, match="level must be in"):
        Headline.from_row(row).interval(np.array([0.9]), level=90)
    assert np.isnan(predict_fit(row, np.nan)) and np.isnan(predict_interval(row, np.nan)[0])
    assert predict_fit(row, [0.5, 1.0]).shape == (2,)


def test_a_candidate_law_predicts_accuracies_within_0_1():
    """Far from its data a candidate's curve went below 0 (Eq. 1 on bins: -5.7e6 at 0% US on
    ImageNet-A), and its interval [0, 0] did not hold its own point."""
    row = {"law": "eq1", "k": 40.0, "alpha": 1.2, "e_ir": 0.0, "status": "ok", "best_us": 0.8,
           "interval_residuals": "[[0.02,0.1,0],[0.03,0.2,1]]"}
    u = np.linspace(0, 1, 11)
    p = predict_fit(row, u)
    lo, hi = predict_interval(row, u)
    assert (p >= 0).all() and (p <= 1).all()
    assert ((lo <= p + 1e-12) & (p <= hi + 1e-12)).all()


def test_rows_read_back_with_pyarrow_give_nan_not_type_errors(tmp_path):
    """pandas writes NaN as a Parquet null; pyarrow's to_pylist gives None for it."""
    rows = pd.DataFrame([
        {"law": "ensemble", "members": "[]", "flat": np.nan, "discount": np.nan, "best_us": np.nan,
         "interval_residuals": "", "ds_test_size": np.nan, "status": "too_few_points", "k": np.nan,
         "alpha": np.nan, "e_ir": np.nan},
        {"law": "eq1", "members": "", "flat": np.nan, "discount": np.nan, "best_us": np.nan, "interval_residuals": "",
         "ds_test_size": np.nan, "status": "too_few_points", "k": np.nan, "alpha": np.nan, "e_ir": np.nan}])
    path = tmp_path / "fits.parquet"
    rows.to_parquet(path)
    import pyarrow.parquet as pq

    for row in pq.read_table(path).to_pylist():
        assert row["flat"] is None
        assert np.isnan(predict_fit(row, 0.9))
        assert all(np.isnan(v) for v in predict_interval(row, 0.9))


def test_the_test_set_size_is_read_from_exact_fractions_never_from_rounding():
    rng = np.random.default_rng(0)
    exact = rng.integers(100, 1172, 40) / 1172
    assert estimate_test_size(exact) == 1172
    assert estimate_test_size(rng.integers(1000, 49000, 60) * 2 / 100_000) == 50_000     # k / 50,000
    assert math.isnan(estimate_test_size(np.round(rng.uniform(0.01, 0.9, 60), 5)))     # timm's 0.001%
    assert math.isnan(estimate_test_size(np.array([0.3, 0.5])))                          # typed by hand: not n = 10
    assert math.isnan(estimate_test_size(np.round(rng.uniform(0.1, 0.9, 60), 3)))       # one-decimal percents


def test_a_known_test_set_size_in_extra_floors_the_interval(tmp_path):
    """``ds_n`` (a column of the shipped tables, stored in ``extra``) reached no analysis: the size
    was estimated, or unknown where the accuracies are rounded."""
    rng = np.random.default_rng(1)
    us = np.sort(rng.uniform(0.3, 0.9, 40))
    ds = np.round(np.clip(0.2 + 0.7 * us + rng.normal(0, 0.01, us.size), 0, 1), 3)   # rounded: size unknown
    pd.DataFrame({"run_id": [f"m{i}" for i in range(us.size)], "us_task": "up", "us_accuracy": us,
                  "ds_task": "tiny", "ds_accuracy": ds, "eval_protocol": "linear", "ds_n": 200}
                 ).to_csv(tmp_path / "zoo.csv", index=False)
    st, out = tmp_path / "st", tmp_path / "out"
    assert run_cli("ingest", str(tmp_path / "zoo.csv"), "--store", str(st), "--quiet").returncode == 0
    r = run_cli("fit", str(st), "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    row = pd.read_parquet(out / "fits.parquet").query("headline").iloc[0]
    assert row["ds_test_size"] == 200
    lo, hi = predict_interval(row, row["best_us"])
    p = float(predict_fit(row, row["best_us"]))
    floor = 1.6448536 * math.sqrt(p * (1 - p) / 200)                 # the binomial noise of 200 examples
    assert float(hi - lo) / 2 >= floor - 1e-6 or hi >= 1.0 or lo <= 0.0


def _members_row(**kw):
    # three members that disagree beyond the data: a flat one, a middle one, a steep one
    members = ('[["eq1","vertices",{"k":1.0,"alpha":3.0,"e_ir":0.1},"ok"],'
               '["eq1","bins",{"k":1.0,"alpha":2.0,"e_ir":0.1},"ok"],'
               '["eq1","hull-curve",{"k":1.0,"alpha":1.5,"e_ir":0.1},"ok"]]')
    row = {"law": "ensemble", "members": members, "flat": 0.86, "best_us": 0.93,
           "interval_residuals": "[[0.01,0.2,0],[0.02,0.3,1]]", "ds_test_size": math.nan}
    row.update(kw)
    return row


def test_a_headline_row_predicts_with_its_own_quantile_and_old_rows_with_the_median():
    """The headline became the members' 0.4 quantile (2026-12-06). A row carries its quantile, so a
    row written before (no member_quantile: the median, and its discount) still predicts what its
    answer said, and a new row is not read as a median."""
    from meta_study.analysis.headline import MEMBER_QUANTILE

    u = np.array([0.95, 0.97])
    curves = np.stack([Headline.from_row(_members_row(members=f"[{m}]")).predict_accuracy(u) for m in (
        '["eq1","vertices",{"k":1.0,"alpha":3.0,"e_ir":0.1},"ok"]', '["eq1","bins",{"k":1.0,"alpha":2.0,"e_ir":0.1},"ok"]',
        '["eq1","hull-curve",{"k":1.0,"alpha":1.5,"e_ir":0.1},"ok"]')])
    new = _members_row(member_quantile=MEMBER_QUANTILE, discount=1.0)
    np.testing.assert_allclose(predict_fit(new, u), np.quantile(curves, MEMBER_QUANTILE, axis=0), atol=1e-12)
    old = _members_row(discount=1.0)            # before member_quantile: the median
    np.testing.assert_allclose(predict_fit(old, u), np.median(curves, axis=0), atol=1e-12)
    assert not np.allclose(predict_fit(new, u), predict_fit(old, u))
    old_discounted = _members_row(discount=0.5)
    m = np.median(curves, axis=0)
    np.testing.assert_allclose(predict_fit(old_discounted, u), 0.86 + 0.5 * (m - 0.86), atol=1e-12)
    # what a headline writes, it reads back
    h = Headline.from_row(new)
    assert Headline.from_row(h.to_row()) == h and h.to_row()["member_quantile"] == MEMBER_QUANTILE == 0.4


def test_a_member_quantile_outside_0_1_is_one_error_naming_the_column():
    with pytest.raises(ValueError, match="member_quantile is 40.0, not a quantile in"):
        predict_fit(_members_row(member_quantile=40.0), 0.95)


def test_a_headline_is_built_by_keyword_only():
    """The fields' order changed when the quantile came and the discount went (2026-12-06): a
    positional Headline(members, names, flat, w, best_us) would have put w into best_us silently."""
    with pytest.raises(TypeError):
        Headline((), (), 0.86, 0.5, 0.93)
    assert Headline(members=(), names=(), flat=0.86, best_us=0.93).quantile == 0.4
