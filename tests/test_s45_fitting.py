"""Review s45: the logit/probit curves near 100% US and the calculator on them; --nondecreasing plateaus; bins
with tied US accuracies."""

from __future__ import annotations

import numpy as np
import pytest

from meta_study.analysis import payoff
from meta_study.analysis.frontiers import frontier_points
from meta_study.analysis.hull import SubsetHulls, upper_hull
from meta_study.analysis.laws import LAWS, LawFit

def test_a_point_at_0_or_1_still_counts_in_the_fit():
    # DS 0 and 1 alone: the clipped DS-1 points are what says DS rises (a guard for any change to
    # how the fits treat accuracies of exactly 0 or 1: left out, power fitted a flat law)
    us, ds = np.linspace(0.4, 0.8, 12), np.r_[np.zeros(6), np.ones(6)]
    for law in ("power", "logit-linear", "probit-linear"):
        f = LAWS[law].fit(us, ds)
        assert f.usable and float(f.predict_accuracy(0.8)) > 0.5, law


@pytest.mark.parametrize("law,p", [("logit-linear", {"a": -3.0, "b": 1.5}), ("probit-linear", {"a": -1.5, "b": 1.2})])
def test_curve_rises_to_its_saturation(law, p):
    f = LawFit(law, p, 0.0, 5, "ok")
    assert f.saturation == 1.0
    assert float(f.predict_accuracy(1.0)) == 1.0          # was flat at its 99.99% value past 99.99% US
    u = np.array([0.9999, 0.99999, 0.999999])
    assert np.all(np.diff(f.predict_accuracy(u)) > 0)
    target = float(f.predict_accuracy(0.99995))            # between 99.99% US and the saturation
    assert payoff.us_needed(f, target) == pytest.approx(0.99995, abs=1e-6)   # was NaN ("never")


def test_stop_paying_agrees_with_the_curve():
    # logit b = 1.5: the slope falls to 0 at 100% US (b e^-a (1 - u)^(b-1)); it read 0.30 all the way
    # from 99.99% US (the clipped slope on a flat curve), so "never stops paying"
    f = LawFit("logit-linear", {"a": -3.0, "b": 1.5}, 0.0, 5, "ok")
    u_star = payoff.stop_paying_us(f, 0.1)
    assert np.isfinite(u_star) and 0.9999 < u_star < 1.0
    analytic = 1.0 - (0.1 / (1.5 * np.exp(3.0))) ** 2      # (1 - u)^0.5 = t / (b e^-a)
    assert u_star == pytest.approx(analytic, abs=3e-7)
    h = 1e-9
    for u in (u_star - 2e-6, u_star + 2e-6):               # the slope is the curve's derivative there
        num = float(f.predict_accuracy(u + h) - f.predict_accuracy(u - h)) / (2 * h)
        assert float(f.slope(u)) == pytest.approx(num, rel=1e-3)


@pytest.mark.parametrize("law", ["logit-linear", "probit-linear"])
def test_flat_law_is_flat_at_the_ends(law):
    f = LawFit(law, {"a": 0.3, "b": 0.0}, 0.0, 5, "ok")
    v = f.predict_accuracy(np.array([0.0, 0.5, 1.0]))
    assert np.all(np.isfinite(v)) and np.ptp(v) == 0 and v[0] == pytest.approx(f.saturation)
    assert np.all(f.slope(np.array([0.0, 0.5, 1.0])) == 0)
    assert np.isnan(f.predict_accuracy(np.array([np.nan]))).all()    # no model, no prediction


# ---- --nondecreasing keeps a plateau at the top ---------------------------------------------------

PLATEAU_US = np.array([0.5, 0.7, 0.9, 0.95, 0.6])
PLATEAU_DS = np.array([0.3, 0.8, 0.8, 0.7, 0.4])


def test_nondecreasing_hull_keeps_a_flat_top_edge():
    # the hull is 0 -> 1 -> 2 -> 3; (0.9, 0.8) ends a flat edge, not the decreasing tail: it was dropped
    assert list(upper_hull(PLATEAU_US, PLATEAU_DS)) == [0, 1, 2, 3]
    assert list(upper_hull(PLATEAU_US, PLATEAU_DS, nondecreasing=True)) == [0, 1, 2]
    hulls = SubsetHulls(PLATEAU_US, PLATEAU_DS, nondecreasing=True)
    assert list(hulls.hull(np.arange(5))) == [0, 1, 2]


@pytest.mark.parametrize("name", ["vertices", "hull-curve", "bins"])
def test_nondecreasing_frontiers_keep_a_plateau(name):
    us = np.r_[PLATEAU_US, np.linspace(0.5, 0.95, 12)]
    ds = np.r_[PLATEAU_DS, np.full(12, 0.1)]
    f = frontier_points(name, us, ds, nondecreasing=True)
    assert f.us.max() == pytest.approx(0.9) and f.ds.max() == 0.8 and f.ds[-1] == 0.8   # was 0.7 US


# ---- bins: a long run of tied US accuracies does not swallow the models past it -------------------

@pytest.mark.parametrize("us,ds,want", [
    (np.r_[np.full(10, 0.5), 0.6], np.r_[np.linspace(0.3, 0.7, 10), 0.65], [0.5, 0.6]),
    (np.r_[0.4, np.full(10, 0.5), 0.6, 0.7], np.r_[0.2, np.linspace(0.3, 0.7, 10), 0.65, 0.66], [0.4, 0.5, 0.7]),
])
def test_bins_keep_the_models_past_a_tied_run(us, ds, want):
    # the cuts inside the run all moved to its start: one bin from there on, and the best US
    # models (below the run's best DS) were lost from the frontier ([0.5] and [0.4, 0.5])
    f = frontier_points("bins", us, ds)
    assert list(f.us) == want
    assert all(f.ds[list(f.us).index(u)] == ds[us == u].max() for u in want)   # each bin's best model


def test_bins_without_ties_are_unchanged():
    rng = np.random.default_rng(3)
    us, ds = rng.random(50), rng.random(50)
    f = frontier_points("bins", us, ds)
    order = np.argsort(us)
    cuts = np.round(np.linspace(0, 50, 8)).astype(int)           # n_bins(50) = 7
    want = [order[a:b][np.argmax(ds[order[a:b]])] for a, b in zip(cuts[:-1], cuts[1:])]
    assert list(f.support) == want
