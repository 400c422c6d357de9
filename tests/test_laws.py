"""The law registry and the frontier estimators: recovery of known laws, global optima, closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, logit, ndtr, ndtri

from meta_study.analysis import predict_fit
from meta_study.analysis.frontiers import FRONTIERS, frontier_points, n_bins
from meta_study.analysis.laws import LAWS, PARAM_COLUMNS, get_law
from meta_study.analysis.payoff import stop_paying_us, us_needed
from meta_study.analysis.powerlaw import fit_power_law

#: One known law per registered law, each concave in accuracy over [0.3, 0.95] (so that the
#: hull-based frontiers follow it).
TRUE = {
    "eq1": {"k": 0.9, "alpha": 1.6, "e_ir": 0.25},
    "eq1-bayes": {"k": 1.1, "alpha": 1.4, "e_ir": 0.15, "e_us_star": 0.03},
    "power": {"k": 0.9, "alpha": 1.2},
    "logit-linear": {"a": 0.4, "b": 0.8},
    "probit-linear": {"a": 0.3, "b": 0.85},
}


def closed_form(law: str, p: dict, u: np.ndarray) -> np.ndarray:
    e = 1 - u
    if law == "eq1":
        return 1 - (p["k"] * e ** p["alpha"] + p["e_ir"])
    if law == "eq1-bayes":
        return 1 - (p["k"] * np.clip(e - p["e_us_star"], 0, None) ** p["alpha"] + p["e_ir"])
    if law == "power":
        return 1 - p["k"] * e ** p["alpha"]
    if law == "logit-linear":
        return expit(p["a"] + p["b"] * logit(u))
    return ndtr(p["a"] + p["b"] * ndtri(u))


def test_registry_is_complete_and_typed():
    assert set(LAWS) == set(TRUE)
    for name, law in LAWS.items():
        assert law.name == name and set(law.params) <= set(PARAM_COLUMNS) and law.bounds and law.formula
    with pytest.raises(ValueError, match="unknown law 'nope'"):
        get_law("nope")
    assert set(FRONTIERS) == {"vertices", "hull-curve", "bins", "hull-curve-upper", "bins-upper", "all"}


@pytest.mark.parametrize("law", sorted(TRUE))
def test_each_law_recovers_itself_from_exact_points(law):
    u = np.linspace(0.3, 0.95, 40)
    fit = LAWS[law].fit(u, closed_form(law, TRUE[law], u))
    assert fit.usable, fit.message
    grid = np.linspace(0.3, 0.99, 50)
    np.testing.assert_allclose(fit.predict_accuracy(grid), closed_form(law, TRUE[law], grid), atol=2e-3)


@pytest.mark.parametrize("frontier", sorted(FRONTIERS))
@pytest.mark.parametrize("law", sorted(TRUE))
def test_each_law_on_each_frontier_recovers_a_known_frontier(law, frontier):
    # models under a known frontier (all: symmetric noise around it, since `all` estimates the
    # typical model); the fit must follow the frontier over the models' range
    rng = np.random.default_rng(1)
    us = rng.uniform(0.3, 0.95, 3000)
    truth = closed_form(law, TRUE[law], us)
    ds = truth + (rng.normal(0, 0.004, us.size) if frontier == "all" else -rng.exponential(0.003, us.size))
    F = frontier_points(frontier, us, np.clip(ds, 0, 1))
    fit = LAWS[law].fit(F.us, F.ds)
    assert fit.usable
    lo = 0.3 if not frontier.endswith("upper") else float(np.median(us))
    grid = np.linspace(lo, 0.95, 40)
    err = np.max(np.abs(fit.predict_accuracy(grid) - closed_form(law, TRUE[law], grid)))
    assert err < 0.012, (law, frontier, err)


def test_frontier_estimators_are_what_they_say():
    rng = np.random.default_rng(0)
    us, ds = rng.uniform(0.4, 0.9, 900), rng.uniform(0.1, 0.8, 900)
    v = frontier_points("vertices", us, ds)
    c = frontier_points("hull-curve", us, ds)
    assert c.us.size == 48 and np.all(np.diff(c.us) > 0) and c.us[0] == v.us[0] and c.us[-1] == v.us[-1]
    np.testing.assert_array_equal(c.support, v.support)
    b = frontier_points("bins", us, ds)
    assert b.us.size == n_bins(900) == 30
    # each bin's point is the best model of its bin: no model in the bin's US range beats it
    edges = np.concatenate([[-np.inf], (b.us[1:] + b.us[:-1]) / 2, [np.inf]])
    assert all(ds[(us >= lo) & (us <= hi)].max() >= y for lo, hi, y in zip(edges[:-1], edges[1:], b.ds))
    up = frontier_points("bins-upper", us, ds)
    assert up.us.min() >= np.median(us) and np.all(us[up.support] == up.us)
    a = frontier_points("all", us, ds)
    assert a.us.size == 900 and np.all(np.diff(a.us) >= 0)
    with pytest.raises(ValueError, match="unknown frontier"):
        frontier_points("hull", us, ds)


def test_eq1_is_the_exact_powerlaw_fitter():
    rng = np.random.default_rng(3)
    u = rng.uniform(0.3, 0.9, 60)
    d = closed_form("eq1", TRUE["eq1"], u) - rng.exponential(0.02, 60)
    a, b = LAWS["eq1"].fit(u, d), fit_power_law(1 - u, 1 - d)
    assert a.params == {"k": b.k, "alpha": b.alpha, "e_ir": b.e_ir} and a.sse == b.sse


def test_eq1_bayes_is_the_global_optimum_over_its_floor():
    # a dense brute force over e_US* (eq1 is exact for each): ours is at least as good
    rng = np.random.default_rng(4)
    for trial in range(4):
        u = rng.uniform(0.3, 0.93, 50)
        d = closed_form("eq1-bayes", TRUE["eq1-bayes"], u) - rng.exponential(0.01, 50)
        fit = LAWS["eq1-bayes"].fit(u, d)
        emin = 1 - u.max()
        brute = min(fit_power_law(1 - u - s, 1 - d).sse for s in np.linspace(0, 0.98 * emin, 400))
        assert fit.sse <= brute * (1 + 1e-6) + 1e-12
        assert 0 <= fit.params["e_us_star"] <= 0.98 * emin + 1e-12


@pytest.mark.parametrize("law", ["power", "logit-linear", "probit-linear"])
def test_closed_form_laws_are_their_least_squares(law):
    rng = np.random.default_rng(5)
    u = rng.uniform(0.3, 0.95, 80)
    d = np.clip(closed_form(law, TRUE[law], u) + rng.normal(0, 0.02, 80), 0.01, 0.99)
    fit = LAWS[law].fit(u, d)
    tx, ty = {"power": (np.log(1 - u), np.log(1 - d)), "logit-linear": (logit(u), logit(d)),
              "probit-linear": (ndtri(u), ndtri(d))}[law]
    slope, intercept = np.polyfit(tx, ty, 1)
    got = (fit.params["alpha"], math.log(fit.params["k"])) if law == "power" else (fit.params["b"], fit.params["a"])
    np.testing.assert_allclose(got, (slope, intercept), rtol=1e-9)


def test_bounds_and_bad_input_are_statuses():
    u = np.linspace(0.3, 0.9, 20)
    falling = LAWS["logit-linear"].fit(u, 0.9 - 0.5 * u)           # DS falls as US rises: b = 0
    assert falling.status == "at_bound" and falling.params["b"] == 0.0
    assert LAWS["power"].fit(u[:1], u[:1]).status == "too_few_points"
    assert LAWS["eq1-bayes"].fit(u[:3], u[:3]).status == "too_few_points"
    assert LAWS["probit-linear"].fit(np.full(5, 0.5), u[:5]).status == "degenerate"
    assert LAWS["eq1"].fit(u, np.full(20, np.nan)).status == "nonfinite"


@pytest.mark.parametrize("law", sorted(TRUE))
def test_predict_fit_matches_the_closed_forms(law):
    row = {"law": law, "status": "ok", "n_fit": 10, **{p: math.nan for p in PARAM_COLUMNS}, **TRUE[law]}
    u = np.array([0.2, 0.5, 0.8, 0.9, 0.99])
    np.testing.assert_allclose(predict_fit(row, u), closed_form(law, TRUE[law], u), rtol=1e-12)
    import pandas as pd
    np.testing.assert_allclose(predict_fit(pd.Series(row), u), closed_form(law, TRUE[law], u), rtol=1e-12)
    assert np.isnan(predict_fit({**row, "status": "too_few_points"}, u)).all()


def test_calculator_matches_closed_forms():
    law = LAWS["eq1"]
    k, a, c = 0.9, 1.6, 0.25
    fit = law.fit(np.linspace(0.3, 0.95, 30), closed_form("eq1", {"k": k, "alpha": a, "e_ir": c},
                                                          np.linspace(0.3, 0.95, 30)))
    k, a, c = fit.params["k"], fit.params["alpha"], fit.params["e_ir"]
    t = 0.1
    assert stop_paying_us(fit, t) == pytest.approx(1 - (t / (k * a)) ** (1 / (a - 1)), abs=2e-4)
    y = 0.6
    assert us_needed(fit, y) == pytest.approx(1 - ((1 - c - y) / k) ** (1 / a), abs=2e-4)
    assert us_needed(fit, 0.9) == math.inf                        # above the saturation 0.75: never
    low = LAWS["eq1"].from_row({"status": "ok", "k": 0.5, "alpha": 1.6, "e_ir": 0.25})   # 25% DS at 0% US
    assert us_needed(low, 0.2) == 0.0                              # reached at 0% US
    assert us_needed(fit, 1 - c) == pytest.approx(1.0, abs=1e-6)   # the saturation: only at 100%
    grow = LAWS["eq1"].from_row({"status": "ok", "k": 0.9, "alpha": 0.7, "e_ir": 0.1})
    assert stop_paying_us(grow, t) == math.inf                     # alpha < 1: keeps paying ("never")
    flat = LAWS["eq1"].from_row({"status": "ok", "k": 0.05, "alpha": 1.0, "e_ir": 0.1})
    assert stop_paying_us(flat, t) == 0.0                          # never paid t per point ("0%")
    bayes = LAWS["eq1-bayes"].from_row({"status": "ok", "k": 0.9, "alpha": 0.7, "e_ir": 0.1, "e_us_star": 0.05})
    assert stop_paying_us(bayes, t) == pytest.approx(0.95, abs=3e-4)   # flat past the US Bayes accuracy (grid: 0.3% of e)
