"""Session 53 review of the trend's band (answer issue #21): what the answer says of it.

The trend's band (``ds_plus*_trend_lo/hi``) is narrower than the prediction interval: a model's
scatter about the law removed. Where the text names an interval, it must be the one it names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from meta_study.analysis import predict_interval
from meta_study.analysis.answers import answer_text
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.payoff import us_needed_from_values
from meta_study.analysis.selection import U_GRID, SelectionOptions
from meta_study.analysis.tables import fits_frame


def _headline(tmp_path, tolerance: float, target: float) -> dict:
    """The headline row, read back from fits.parquet, of models below a known Eq. 1 law."""
    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 200)
    ds = 1 - 0.9 * (1 - us) ** 1.5 - rng.exponential(0.02, 200)
    g = Group("up", "down", "linear", None, us, ds)
    o = FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=target, tolerance=tolerance))
    fits_frame([g], fit_groups([(us, ds)], o, keys=[g.key]), ds_target=target).to_parquet(tmp_path / "fits.parquet")
    f = pd.read_parquet(tmp_path / "fits.parquet")
    return f[f["headline"]].iloc[0].to_dict()


def _needed(row: dict, band: str, target: float) -> tuple[float, float]:
    lo, hi = predict_interval(row, U_GRID, band=band)
    return (max(float(us_needed_from_values(hi[None], target)[0]), row["best_us"]),
            max(float(np.nan_to_num(us_needed_from_values(lo[None], target), nan=math.inf,
                                         posinf=math.inf)[0]), row["best_us"]))


def test_an_untrusted_answer_s_us_needed_is_the_90_percent_interval_it_names(tmp_path) -> None:
    """An untrusted group states "needs US in the 90% interval [a-b]" and no trend band anywhere:
    its a-b were where the trend's band (the frontier's scatter removed, here of a fit it does not
    trust) reaches the target, narrower than the interval it names."""
    h = _headline(tmp_path, tolerance=1e-4, target=0.985)
    assert not h["trusted"], h["trust_reason"]
    lo, hi = _needed(h, "prediction", 0.985)
    assert (lo, hi) != _needed(h, "trend", 0.985)   # the two differ here
    assert math.isclose(h["us_needed_lo"], lo) and (h["us_needed_hi"] == hi or math.isclose(h["us_needed_hi"], hi))
    assert "needs US in the 90% interval [" in answer_text(h)


def test_a_trusted_answer_s_us_needed_says_its_brackets_are_the_trend_s(tmp_path) -> None:
    """The legend says brackets give the prediction interval, then the trend's band: a trusted
    US needed in brackets of the trend's band alone read as the prediction interval."""
    h = _headline(tmp_path, tolerance=0.03, target=0.985)
    assert h["trusted"], h["trust_reason"]
    assert (h["us_needed_lo"], h["us_needed_hi"]) == _needed(h, "trend", 0.985)
    text = answer_text(h)
    need = text[text.index("98.5% DS"):]
    assert "[trend " in need, need
    # a row written before the band (no _trend_ columns): its US needed is the interval's, said as before
    old = {k: v for k, v in h.items() if "_trend_" not in k}
    need = answer_text(old)[answer_text(old).index("98.5% DS"):]
    assert "trend" not in need and " US [" in need, need


def _row(**kw: float) -> dict:
    """A trusted headline row's +1 step (hand-built: the rendering alone)."""
    row = {"trusted": True, "trust_reason": "back-test error 0.4 pt <= tolerance 3 pt", "best_us": 0.847,
           "horizon_us": 0.9, "flat": 0.8, "level": 0.9, "payoff_threshold": 0.1, "ds_plus1": 0.90374,
           "ds_plus1_lo": 0.898, "ds_plus1_hi": 0.909, "slope_plus1": 0.6}
    return {**row, **kw}


def test_the_estimate_is_printed_inside_its_trend_band() -> None:
    """"90.4% DS [89.8%-90.9%, trend 90.35%-90.37%]": the estimate, 90.36%, at the interval's
    decimals read as a point outside the band that holds it."""
    text = answer_text(_row(ds_plus1=0.9036, ds_plus1_trend_lo=0.90351, ds_plus1_trend_hi=0.90369))
    assert "+1 US pt: 90.36% DS [" in text and "trend 90.35%-90.37%]" in text, text


def test_a_trend_band_of_width_zero_is_not_stated() -> None:
    """Where the back-tests miss no more than the frontier's scatter and the laws agree, the band
    is the prediction alone: "[89.8%-90.9%, trend 90.4%-90.4%]" claimed the law exactly."""
    text = answer_text(_row(ds_plus1=0.904, ds_plus1_trend_lo=0.904, ds_plus1_trend_hi=0.904))
    assert "+1 US pt: 90.4% DS [89.8%-90.9%]" in text and "trend" not in text, text
