"""The trend's band beside the prediction interval (session 53, answer issue #21).

The 90% interval is a prediction interval: calibrated on held-out models, it holds their scatter
about the law too, so on synthetic families with a known law it held the law's own value 98-100%
of the time in trusted groups, not the 85-95% the issue asks of every claim. The trend's band
(``predict_interval(..., band="trend")``, ``ds_plus*_trend_lo/hi``) applies the same half-width
rule to the back-tests' predictions scored against the final fit's curve (``trend_residuals``),
not against the measured points; a trusted group's US needed for a target is where that band
reaches it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from tables_rebuild import bench_selection

from meta_study.analysis import predict_interval
from meta_study.analysis.answers import answer_text
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.headline import trend_around
from meta_study.analysis.payoff import us_needed_from_values
from meta_study.analysis.selection import U_GRID, SelectionOptions
from meta_study.analysis.tables import fits_frame

def _group(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Models below a known Eq. 1 law, exponential gaps of 2 points (the frontier scatters below it)."""
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, 0.9, n)
    return us, 1 - 0.9 * (1 - us) ** 1.5 - rng.exponential(0.02, n)


def _rows(tmp_path, ds_target: float | None = None) -> pd.DataFrame:
    us, ds = _group()
    g = Group("up", "down", "linear", None, us, ds)
    sels = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=ds_target)),
                      keys=[g.key])
    path = tmp_path / "fits.parquet"
    fits_frame([g], sels).to_parquet(path)
    return pd.read_parquet(path)      # as external checks read them back


def test_the_trend_band_is_stored_reproduced_from_the_row_and_inside_the_prediction_interval(tmp_path) -> None:
    fits = _rows(tmp_path)
    h = fits[fits["headline"]].iloc[0].to_dict()
    assert h["trusted"], h["trust_reason"]
    for k in (1, 3, 5):
        u = np.array([h["best_us"] + k / 100])
        lo, hi = predict_interval(h, u)
        t_lo, t_hi = predict_interval(h, u, band="trend")
        assert (lo[0], hi[0]) == pytest.approx((h[f"ds_plus{k}_lo"], h[f"ds_plus{k}_hi"]))
        assert (t_lo[0], t_hi[0]) == pytest.approx((h[f"ds_plus{k}_trend_lo"], h[f"ds_plus{k}_trend_hi"]))
        # around the prediction, and here (2-point gaps below the law) narrower than the interval
        assert t_lo[0] < h[f"ds_plus{k}"] < t_hi[0] and t_hi[0] - t_lo[0] < hi[0] - lo[0]
    # a candidate's row has no trend residuals: no band (its interval works as before)
    for r in fits[~fits["headline"]].head(5).to_dict("records"):
        t_lo, t_hi = predict_interval(r, np.array([0.85]), band="trend")
        assert np.isnan(t_lo).all() and np.isnan(t_hi).all()
    with pytest.raises(ValueError, match="band 'law' is not one of 'prediction', 'trend'"):
        predict_interval(h, np.array([0.9]), band="law")


def test_a_headline_row_written_before_the_band_has_none_and_its_answer_states_none(tmp_path) -> None:
    h = _rows(tmp_path).query("headline").iloc[0].to_dict()
    old = {k: v for k, v in h.items() if "trend" not in k}     # no trend_residuals, no _trend_ columns
    t_lo, t_hi = predict_interval(old, np.array([h["best_us"] + 0.03]), band="trend")
    assert np.isnan(t_lo).all() and np.isnan(t_hi).all()
    assert "trend" not in answer_text(old) and "trend" in answer_text(h)
    with pytest.raises(ValueError, match="row's trend_residuals is not the JSON list"):
        predict_interval({**h, "trend_residuals": "[[1, 2"}, np.array([0.9]), band="trend")


def test_the_answer_says_the_trend_beside_the_interval_and_the_us_needed_is_the_trend_s(tmp_path) -> None:
    fits = _rows(tmp_path, ds_target=0.985)
    h = fits[fits["headline"]].iloc[0].to_dict()
    text = answer_text(h)
    t1 = f"trend {100 * h['ds_plus1_trend_lo']:.1f}%-{100 * h['ds_plus1_trend_hi']:.1f}%]"
    assert t1 in text, text
    # the US needed: where the trend's band reaches the target, from the stored row alone
    lo_c, hi_c = predict_interval(h, U_GRID, band="trend")
    assert h["us_needed_lo"] == pytest.approx(max(float(us_needed_from_values(hi_c[None], 0.985)[0]), h["best_us"]))
    assert h["us_needed_hi"] == pytest.approx(max(float(us_needed_from_values(lo_c[None], 0.985)[0]), h["best_us"]))
    untrusted = {**h, "trusted": False, "trust_reason": "back-test error 9 pt > tolerance 3 pt"}
    assert "trend" not in answer_text(untrusted)      # an untrusted answer states its interval alone


@pytest.fixture(scope="module")
def claims() -> pd.DataFrame:
    bench = bench_selection()
    return bench.claims_check(bench.demo_simulator(0) + bench.law_families(0, 30))


@pytest.mark.slow(20)
def test_on_synthetic_families_the_trend_band_holds_the_law_near_90_percent(claims: pd.DataFrame) -> None:
    """The demo's simulator and 30 groups below known laws (eq1, eq1 with a Bayes error,
    logit-linear): in trusted groups the DS claims' trend bands hold the law's value within 5
    points of 90% (the prediction interval held it every time: too wide for the law)."""
    tr = claims[claims["trusted"]]
    assert tr["group"].nunique() >= 25
    ds = tr[tr["claim"].str.startswith("DS")]
    assert len(ds) >= 100
    assert 0.85 <= ds["covered"].mean() <= 0.95, ds.groupby("claim")["covered"].mean()
    assert ds["prediction interval"].mean() >= 0.98
    need = tr[tr["claim"] == "US needed"]
    assert len(need) >= 25 and need["covered"].mean() >= 0.85
    assert math.isclose(claims.loc[claims["claim"] == "DS at +1", "prediction interval"].isna().mean(), 0.0)


def test_the_trend_band_never_leaves_the_prediction_interval(tmp_path) -> None:
    """A model's accuracy is the law plus its scatter, so the law's band is cut to the interval:
    on public groups its low end fell below the interval's (a law band wider than a model's)."""
    from meta_study.analysis.headline import Headline

    h = Headline.from_row(_rows(tmp_path).query("headline").iloc[0].to_dict())
    wide = tuple((5 * r, x, c) for r, x, c in h.trend_residuals)     # back-tests far off the final curve
    u = np.array([h.best_us + 0.01, h.best_us + 0.03])
    lo, hi = h.interval(u)
    raw_lo, raw_hi = trend_around(h.predict_accuracy(u), u, wide, h.best_us, 0.9)
    assert (raw_lo < lo).all()      # uncut, the band would reach below the interval
    t_lo, t_hi = replace(h, trend_residuals=wide).interval(u, band="trend")
    assert np.all(t_lo >= lo) and np.all(t_hi <= hi) and np.all(t_lo < t_hi)


@pytest.mark.slow(20)
def test_stop_paying_and_saturation_stated_as_extrapolations_hold_the_law(claims: pd.DataFrame) -> None:
    """Session 54: no trusted synthetic group states its stop-paying point as a finding (the headline's
    slope stays above the threshold at the best model), so each states it to 100% US as an extrapolation,
    with the members' spread. That spread, and the saturation's, hold the law's point all the same
    (bench_selection.py (s): 95% and 99% over 103 trusted groups)."""
    ex = claims.attrs["extrapolations"]
    tr = ex[ex["trusted"]]
    # each trusted group is checked once: as a finding (none today), or as an extrapolation
    found = set(claims.loc[claims["trusted"] & (claims["claim"] == "stop paying"), "group"])
    assert found.isdisjoint(tr["group"]) and found | set(tr["group"]) == set(claims.loc[claims["trusted"], "group"])
    assert len(tr) >= 25
    assert tr["stop paying"].mean() >= 0.85 and tr["saturation"].mean() >= 0.85, tr.mean(numeric_only=True)
