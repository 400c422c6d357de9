"""Edges of the statistical core: constant DS, saturated DS, and the answer read back from fits.parquet."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis import predict_interval
from meta_study.analysis.answers import answer_text
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Group
from meta_study.analysis.headline import noise_half_width
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.tables import fit_table, headlines

STEPS = ("ds_plus1", "ds_plus3", "ds_plus5", "predict")


def _headline_back(tmp_path, us, ds, sizes=None, options=FitOptions()):
    """The headline row of one group, written to fits.parquet and read back."""
    g = Group("up", "d", "fewshot", 5, np.asarray(us, float), np.asarray(ds, float),
              ds_test_size=np.zeros(0) if sizes is None else np.asarray(sizes, float))
    df, _ = fit_table([g], options)
    df.to_parquet(tmp_path / "fits.parquet")
    return headlines(pd.read_parquet(tmp_path / "fits.parquet")).iloc[0]


def _widths(row) -> list[float]:
    return [row[f"{s}_hi"] - row[f"{s}_lo"] for s in STEPS if math.isfinite(row[f"{s}_hi"] - row[f"{s}_lo"])]


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_ds_states_no_zero_width_interval(tmp_path, value):
    """Every model at one DS accuracy, test-set size unknown: every back-test hit exactly, so the
    90% interval had width 0 ("+1 US pt: 50.0% DS [50.0%-50.0%]", certainty). Nothing calibrates a
    width there: no interval is stated, and the answer and a warning say why."""
    us = np.random.default_rng(3).uniform(0.3, 0.9, 40)
    row = _headline_back(tmp_path, us, np.full(40, value))
    assert not any(w == 0 for w in _widths(row)), {s: (row[f"{s}_lo"], row[f"{s}_hi"]) for s in STEPS}
    lo, hi = predict_interval(row.to_dict(), np.array([row["best_us"], row["best_us"] + 0.01, 0.95]))
    assert not np.any(np.isfinite(lo) & (hi - lo == 0)), (lo, hi)
    text = answer_text(row)
    pct = f"{100 * value:.1f}%"
    assert f"[{pct}-{pct}]" not in text, text
    assert "no 90% interval" in text, text
    assert "backtest: every back-test target was predicted exactly" in row["warnings"], row["warnings"]
    assert "no_trend" in row["warnings"]
    assert math.isnan(row["coverage"])        # the report's "back-test interval coverage": none, not 100%


def test_constant_ds_with_known_test_size_gets_the_binomial_floor(tmp_path):
    """With the DS test-set size known, the interval of a task at 100% DS was [100.0%-100.0%] too:
    the Wald floor sqrt(p (1 - p) / n) vanishes at p = 1. 1000 of 1000 right is not certainty: the
    Clopper-Pearson 90% bound of a perfect score on 1000 examples is 99.70%."""
    us = np.random.default_rng(3).uniform(0.3, 0.9, 40)
    row = _headline_back(tmp_path, us, np.full(40, 1.0), sizes=np.full(40, 1000))
    for s in ("ds_plus1", "ds_plus5"):
        assert row[f"{s}_hi"] == 1.0 and row[f"{s}_lo"] == pytest.approx(0.05 ** (1 / 1000), abs=1e-6), s
    lo, hi = predict_interval(row.to_dict(), np.array([0.95]))
    assert hi[0] - lo[0] > 0.002
    assert "[99.7%-100.0%]" in answer_text(row)


def test_binomial_floor_never_vanishes_at_zero_or_one():
    """The floor at a predicted 0% or 100% was 0 (Wald); in the middle it is unchanged."""
    out = noise_half_width(np.array([0.0, 1.0, 0.5]), 1000.0, 0.9)
    assert out[0] == out[1] == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert out[2] == pytest.approx(1.6448536 * math.sqrt(0.25 / 1000))
    assert np.all(noise_half_width(np.array([0.0, 1.0]), math.nan, 0.9) == 0)     # size unknown: no floor


def test_saturated_ds_with_a_trend_gets_no_zero_width_interval(tmp_path):
    """DS rises with US, then every model above 70% US sits at 100% DS (an easy task): every
    back-test target was 1.0 and met exactly, and the answer stated "+1 US pt: 100.0% DS
    [100.0%-100.0%]" under "trusted"."""
    us = np.random.default_rng(1).uniform(0.5, 0.95, 30)
    row = _headline_back(tmp_path, us, np.minimum(1.0, 0.5 + (us - 0.5) * 4.0),
                         options=FitOptions(selection=SelectionOptions(ds_target=0.99)))
    assert row["spearman_p"] < 0.05 and math.isnan(row["ds_test_size"])
    assert not any(w < 1e-4 for w in _widths(row)), {s: (row[f"{s}_lo"], row[f"{s}_hi"]) for s in STEPS}
    text = answer_text(row)
    assert "[100.0%-100.0%]" not in text.split("Scaling")[0] and "no 90% interval" in text, text


@pytest.mark.parametrize("axis", ["us", "ds"])
def test_accuracies_in_percent_are_named_not_past_100(tmp_path, axis):
    """Accuracies given in percent through the Python API (Group, fit_groups): the group read
    "not trusted (no usable fit (degenerate: errors outside [0, 1]))" and "+1/+3/+5 US pt: past
    100% US" (95 + 0.01 > 1). The reason names the axis, the value and the likely unit mix-up."""
    rng = np.random.default_rng(2)
    us = rng.uniform(0.4, 0.95, 40)
    ds = 0.9 - 0.7 * (1 - us) ** 1.2
    row = _headline_back(tmp_path, 100 * us if axis == "us" else us, 100 * ds if axis == "ds" else ds)
    text = answer_text(row)
    name = axis.upper()
    assert f"{name} accuracy" in row["trust_reason"] and "a percent?" in row["trust_reason"], row["trust_reason"]
    assert f"no_fit: {name} accuracy" in row["warnings"], row["warnings"]
    assert "past 100% US" not in text, text


def test_back_tests_that_hit_exactly_give_no_interval_only_without_a_test_size():
    """Residuals of 1e-8 (the fitter's numerical zero) gave half-widths of ~1e-8 out to +5 US points
    and beyond: printed, "[100.0%-100.0%]". Without a test-set size no interval is stated; with one,
    the binomial floor; a real spread is untouched."""
    from meta_study.analysis.headline import distance, half_width, interval_around

    exact = ((1e-8, 0.3, 0), (2e-8, 0.6, 1), (0.0, 0.9, 2))
    u = np.array([0.8, 0.85, 0.9, 0.99])
    pred = np.full(4, 0.7)
    lo, hi = interval_around(pred, u, exact, 0.8, 0.9)
    assert np.isnan(lo).all() and np.isnan(hi).all(), (lo, hi)
    lo, hi = interval_around(pred, u, exact, 0.8, 0.9, 1000.0)
    assert np.all(hi - lo >= 2 * 1.6448 * math.sqrt(0.21 / 1000)), (lo, hi)
    spread = ((0.01, 0.3, 0), (0.02, 0.6, 1), (0.0, 0.9, 2))
    lo, hi = interval_around(pred[:3], u[:3], spread, 0.8, 0.9)
    np.testing.assert_allclose(hi - lo, 2 * half_width(distance(u[:3], 0.8), spread, 0.9))


def test_a_percent_given_to_predict_fit_is_named_with_its_own_fraction(tmp_path):
    """predict_fit(row, 90) said "got 90 (a percent? give fractions: 0.85, not 85)": another number."""
    from meta_study.analysis import predict_fit

    rng = np.random.default_rng(2)
    us = rng.uniform(0.4, 0.95, 40)
    row = _headline_back(tmp_path, us, 0.9 - 0.7 * (1 - us) ** 1.2 + rng.normal(0, 0.01, 40))
    with pytest.raises(ValueError, match=r"got 90 \(a percent\? give fractions: 0\.9, not 90\)"):
        predict_fit(row, [0.5, 90])
    with pytest.raises(ValueError, match=r"got 87\.5 \(a percent\? give fractions: 0\.875, not 87\.5\)"):
        predict_interval(row, 87.5)
