"""Session 56: "never" is ``inf`` in the point columns ``stop_paying_us`` and ``us_needed`` too.

They said "never" (the law still pays at 100% US; it never reaches the DS target) with NaN, the
value of "no fit / not computed", while their interval ends used inf: a table, a dashboard or a
refit's run could not tell the two apart. From :mod:`meta_study.analysis.payoff` through the
headline's claims, ``fits.parquet``, the answer text, a refit's params (``never`` under the
point's key, as for an interval end) and the demo's check against the simulator's truth."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import make_rows, run_cli  # noqa: E402

from meta_study.analysis.laws import LAWS, LawFit  # noqa: E402
from meta_study.analysis.payoff import (U_GRID, stop_paying_from_slopes, stop_paying_many,  # noqa: E402
                                        stop_paying_us, us_needed, us_needed_from_values, us_needed_many)

#: eq1 with alpha < 1: its slope grows without bound towards 100% US, so it never stops paying;
#: its saturation is 1 - e_ir = 0.9, so 0.95 DS is never reached.
GROWS = {"k": 0.9, "alpha": 0.7, "e_ir": 0.1}
#: a parameter set with no value anywhere (an unusable fit's NaN parameters)
NO_VALUE = {"k": math.nan, "alpha": math.nan, "e_ir": math.nan}


# ---- payoff: inf for "never", NaN for no answer ------------------------------------------------

def test_stop_paying_is_inf_for_never_and_nan_for_no_answer():
    grow = LAWS["eq1"].from_row({"status": "ok", **GROWS})
    assert stop_paying_us(grow, 0.1) == math.inf                          # pays up to 100% US
    assert math.isnan(stop_paying_us(LawFit("eq1", NO_VALUE, math.nan, 0, "degenerate"), 0.1))
    assert math.isnan(stop_paying_us(grow, math.nan))                     # no threshold: no answer
    many = stop_paying_many("eq1", [GROWS, NO_VALUE, {"k": 0.05, "alpha": 1.0, "e_ir": 0.1}], 0.1)
    assert many[0] == math.inf and math.isnan(many[1]) and many[2] == 0.0   # never, no answer, "0%"
    grid = np.array([0.5, 0.6, 0.7])
    s = stop_paying_from_slopes(np.array([[0.5, 0.3, 0.2], [np.nan] * 3, [0.5, 0.05, 0.02]]), 0.1, grid)
    assert s[0] == math.inf and math.isnan(s[1]) and 0.5 < s[2] < 0.6
    assert math.isnan(stop_paying_from_slopes(np.zeros((1, 0)), 0.1, np.zeros(0))[0])   # no grid


def test_us_needed_is_inf_for_never_and_nan_for_no_answer():
    grow = LAWS["eq1"].from_row({"status": "ok", **GROWS})
    assert us_needed(grow, 0.95) == math.inf                              # above its saturation 0.9
    assert 0.0 < us_needed(grow, 0.5) < 1.0 and us_needed(grow, 0.9) == 1.0
    assert math.isnan(us_needed(grow, math.nan))                          # no target: no answer
    assert math.isnan(us_needed(LawFit("eq1", NO_VALUE, math.nan, 0, "degenerate"), 0.5))
    many = us_needed_many("eq1", [GROWS, NO_VALUE], 0.95)
    assert many[0] == math.inf and math.isnan(many[1])
    vals = np.vstack([np.full(U_GRID.size, 0.4), np.full(U_GRID.size, np.nan)])
    out = us_needed_from_values(vals, 0.5)
    assert out[0] == math.inf and math.isnan(out[1])
    assert math.isnan(us_needed_from_values(vals[:1], math.nan)[0])


# ---- fits.parquet and the answer text ----------------------------------------------------------

def _store(path: Path):
    """LIN: DS = 0.1 + 0.6 US (fractions) plus noise of SD 0.003, so +1 US point buys 0.6 DS points
    up to 100% US (never stops paying) and DS stays below 70%; TINY: 2 models, no usable fit."""
    from meta_study.store import Store
    from meta_study.validation import validate

    lin = make_rows(40, ds_tasks=("lin",))
    lin["ds_accuracy"] = 0.1 + 0.6 * lin["us_accuracy"] + np.random.default_rng(3).normal(0.0, 0.003, len(lin))
    tiny = make_rows(2, ds_tasks=("tiny",), run_prefix="t")
    s = Store(str(path))
    s.commit(validate(pd.concat([lin, tiny])).table)
    return s


def test_a_fits_row_says_never_with_inf_and_no_fit_with_nan(tmp_path):
    store = _store(tmp_path / "st")
    out = tmp_path / "o"
    r = run_cli("fit", str(store.uri), "--out", str(out), "--no-figures", "--ds-target", "0.95")
    assert r.returncode == 0, r.stderr
    heads = pd.read_parquet(out / "fits.parquet").query("headline").set_index("ds_task")
    lin, tiny = heads.loc["lin"], heads.loc["tiny"]
    assert lin["status"] == "ok" and tiny["status"] == "too_few_points", heads["status"]
    # the law never stops paying and never reaches 95% DS: inf, as the interval ends say
    assert lin["stop_paying_us"] == math.inf and lin["stop_paying_hi"] == math.inf
    assert lin["us_needed"] == math.inf and lin["us_needed_hi"] == math.inf
    # no usable fit: nothing computed, NaN
    for c in ("stop_paying_us", "stop_paying_lo", "stop_paying_hi", "us_needed", "us_needed_lo", "us_needed_hi"):
        assert math.isnan(tiny[c]), c
    # the CSV copy reads back the same
    csv = pd.read_csv(out / "fits.csv").query("headline").set_index("ds_task")
    assert csv.loc["lin", "stop_paying_us"] == math.inf and math.isnan(csv.loc["tiny", "stop_paying_us"])
    # the answer reads "never" as it did: no "inf" in the command's text
    line = next(x for x in r.stdout.splitlines() if "-> lin" in x)
    assert "95.0% DS is not reached by the prediction up to 100% US" in line, line
    assert "inf" not in r.stdout.lower().replace("info", ""), r.stdout


def test_a_warning_says_never_for_a_stop_paying_point_that_is_inf():
    """The selection's own check of the point (``sp == inf``): the warning on the laws' curve still
    says "never", not "at inf% US"."""
    from meta_study.analysis.fitting import FitOptions, fit_groups

    rng = np.random.default_rng(4)
    us = rng.uniform(0.2, 0.9, 40)
    ds = 0.1 + 0.6 * us + rng.normal(0.0, 0.003, us.size)
    sel = fit_groups([(us, ds)], FitOptions())[0]
    assert sel.trusted and sel.claims.stop_paying_us == math.inf, (sel.trust_reason, sel.claims.stop_paying_us)
    text = "; ".join(sel.warnings)
    assert "inf%" not in text and "nan%" not in text, text


# ---- refit: the point's inf is the param "never" under its key ---------------------------------

def _never_refit(store, out: Path, **kw):
    """A refit of test_s55_refit's store at a DS target of 0.97, above its laws (0.9 at 100% US):
    the trusted group's headline never reaches it (the untrusted one's, a quantile of laws that
    keep rising, does at ~95% US), and neither group's headline stops paying below 100% US."""
    from test_s55_refit import _refit

    return _refit(store, out, 0.97, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from test_s55_refit import _store as s55_store

    return s55_store(tmp_path_factory.mktemp("s56-never") / "st")


def _points(version_dir: str) -> pd.DataFrame:
    return pd.read_parquet(Path(version_dir) / "fits.parquet").query("headline").set_index("ds_task")


def test_a_point_that_is_never_is_the_param_never_under_its_key(store, tmp_path):
    from test_s55_refit import NOISY, SMOOTH, _key

    from meta_study.refit import _run_values

    cfg, res = _never_refit(store, tmp_path / "out")
    heads = _points(res.version_dir)
    assert (heads["stop_paying_us"] == math.inf).all(), heads["stop_paying_us"]
    assert heads.loc[SMOOTH, "us_needed"] == math.inf and math.isfinite(heads.loc[NOISY, "us_needed"])
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    params, metrics = _run_values(cfg, Path(res.version_dir), info)
    logged = {k: v for k, v, _ in metrics}
    for task in (NOISY, SMOOTH):
        assert params[_key(task, "stop_paying_us")] == "never", params
        assert _key(task, "stop_paying_us") not in logged
    assert params[_key(SMOOTH, "us_needed")] == "never" and _key(SMOOTH, "us_needed") not in logged
    # a finite point stays a metric; a key is a metric or a param, never both
    assert logged[_key(NOISY, "us_needed")] == pytest.approx(heads.loc[NOISY, "us_needed"])
    assert _key(NOISY, "us_needed") not in params
    assert not set(params) & set(logged)


@pytest.mark.slow(20)
def test_the_server_keeps_never_for_the_points(store, tmp_path, mlflow_server):
    """Published to a real ``mlflow server``: the points' param ``never`` is read back under the
    metric's key (the untrusted group's is cut and hashed: its DS task is 126 characters)."""
    from mlflow.tracking import MlflowClient
    from test_s55_refit import NOISY, SMOOTH, _key

    _, res = _never_refit(store, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment="s56-never")
    assert res.mlflow_run_id, res
    run = MlflowClient(mlflow_server.uri).get_run(res.mlflow_run_id)
    params, metrics = run.data.params, run.data.metrics
    for task in (NOISY, SMOOTH):
        k = _key(task, "stop_paying_us")
        assert params[k] == "never" and k not in metrics, task
    assert params[_key(SMOOTH, "us_needed")] == "never" and _key(SMOOTH, "us_needed") not in metrics
    assert _key(NOISY, "us_needed") in metrics and _key(NOISY, "us_needed") not in params


# ---- the demo's check against the simulator's truth --------------------------------------------

def test_the_demo_says_never_for_a_truth_that_never_stops_paying(tmp_path, monkeypatch):
    """A known law with alpha < 1 never stops paying: the check printed "truth nan% US ... NO" (a
    "never" inside a spread that ends past the data), where it is "truth never ... yes"."""
    from meta_study import demo
    from test_demo import _synthetic_results

    results, fits = _synthetic_results(tmp_path / "r")
    i = fits.index[fits["headline"] & (fits["ds_task"] == "mid")][0]
    fits.loc[i, ["trusted", "stop_paying_supported"]] = [True, True]
    fits.loc[i, ["stop_paying_us", "stop_paying_lo", "stop_paying_hi"]] = [0.8, 0.7, math.inf]
    fits.to_parquet(results / "fits.parquet")
    k, _, c = demo.SYNTH_LAWS["mid"]
    monkeypatch.setitem(demo.SYNTH_LAWS, "mid", (k, 0.7, c))      # the truth: alpha 0.7
    lines: list[str] = []
    demo._compare_known_laws(results, lines.append)
    mid = next(line for line in lines if line.split()[0] == "mid")
    said = mid[mid.index("stops paying"):]
    assert said.startswith("stops paying: truth never, answer 80.0%,") and said.endswith("past the data] yes"), said
