"""Review of the parallel shell, the sample-size sensitivity, the Eq. 1 fitter and the fitting driver.

A group with no fitting points no longer claims draws of 10 and 30 models from none under
``sizes``; the frontier ranking counts, and takes its medians over, only the groups where the
frontiers were scored; an unknown loss is refused when the options are made, not deep in the fits or
in a Ray worker; the Ray tasks' costs follow their work; the Ray path equals the serial one on edge
groups."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.frontiers import FRONTIERS
from meta_study.analysis.sensitivity import (SENSITIVITY_COLUMNS, SensitivityOptions, rank_frontiers,
                                             sensitivity_group, summarize_sensitivity)

KEY = ("up", "d", "fewshot", 5)


def _all_held_out(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A group whose models all lie above ``holdout_above=0.2``: no fitting point."""
    us = np.linspace(0.5, 0.9, n)
    return us, 0.8 * us


@pytest.mark.parametrize("sizes", [None, (10, 30)])
@pytest.mark.parametrize("replace", [False, True])
def test_a_group_with_no_fitting_points_draws_no_step_whatever_the_sizes(sizes, replace) -> None:
    """--sizes 10,30 with every model held out: rows said 10 and 30 models were drawn, from none
    (the default sizes have no step there, and `sensitivity` says "nothing to fit" of the empty
    table)."""
    us, ds = _all_held_out()
    t = sensitivity_group(KEY, us, ds, SensitivityOptions(trials=2, sizes=sizes, replace=replace,
                                                          fit=FitOptions(holdout_above=0.2)))
    assert t.empty and list(t.columns) == list(SENSITIVITY_COLUMNS)
    assert summarize_sensitivity(t).empty


def test_a_group_with_fitting_points_still_draws_what_it_says() -> None:
    """The stated n is the number of models drawn: capped at the fitting points without replacement."""
    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 25)
    ds = np.clip(0.9 - 0.6 * (1 - us) ** 1.3, 0, 1)
    t = sensitivity_group(KEY, us, ds, SensitivityOptions(trials=2, sizes=(10, 30),
                                                          fit=FitOptions(holdout_quantile=None)))
    assert sorted(set(t["n"])) == [10, 25]
    alls = t[t["frontier"] == "all"]
    assert (alls["n_fit"] == alls["n"]).all()


def _rows(frontier: str, group: str, errs: dict[int, float]) -> list[dict]:
    return [{"us_task": "u", "ds_task": group, "eval_protocol": "fewshot", "shots": None, "frontier": frontier,
             "n": n, "fit_err_mean": 0.01, "fit_err_std": 0.0, "pred_err_mean": e, "pred_err_std": 0.0,
             "trials": 3, "ok": 3} for n, e in errs.items()]


def test_the_ranking_counts_only_the_groups_it_scored() -> None:
    """A group where no frontier could be scored at its smallest step (too few models there) was
    counted in ``groups`` (3 for medians over 2), and its largest step entered the ``_full_n``
    medians that the ``_small_n`` ones were not over."""
    rows = []
    for g, full in (("easy1", 0.01), ("easy2", 0.02)):
        rows += _rows("vertices", g, {10: 0.02, 40: full}) + _rows("bins", g, {10: 0.015, 40: full})
    rows += _rows("vertices", "tiny", {3: math.nan, 40: 0.5}) + _rows("bins", "tiny", {3: math.nan, 40: 0.5})
    rk = rank_frontiers(pd.DataFrame(rows).astype({"shots": "Int64"})).set_index("frontier")
    assert rk.loc["bins", "groups"] == rk.loc["vertices", "groups"] == 2
    assert math.isclose(rk.loc["vertices", "pred_err_small_n"], 0.02)
    assert math.isclose(rk.loc["vertices", "pred_err_full_n"], 0.015)     # the two scored groups' median
    assert rk.loc["bins", "rank_small_n"] == 1


def test_the_ranking_counts_each_frontiers_own_groups_when_none_is_common() -> None:
    """No group where every ranked frontier was scored: each median is over its frontier's own
    groups, and ``groups`` says how many (it counted the unscored ones too)."""
    rows = (_rows("vertices", "a", {10: 0.02}) + _rows("bins", "a", {10: math.nan})
            + _rows("vertices", "b", {10: math.nan}) + _rows("bins", "b", {10: 0.03})
            + _rows("vertices", "c", {10: math.nan}) + _rows("bins", "c", {10: math.nan}))
    rk = rank_frontiers(pd.DataFrame(rows)).set_index("frontier")
    assert rk.loc["vertices", "groups"] == 1 and rk.loc["bins", "groups"] == 1


def test_an_unknown_loss_is_refused_when_the_options_are_made() -> None:
    """A typo was accepted, then raised deep in the fits, or in a Ray worker after Ray had started."""
    for loss in ("lsq", "huber", "log"):
        assert FitOptions(loss=loss).loss == loss
    with pytest.raises(ValueError, match=r"loss must be one of lsq, huber, log, not 'huberr'"):
        FitOptions(loss="huberr")
    with pytest.raises(ValueError, match="loss must be one of"):
        SensitivityOptions(fit=FitOptions(loss="l2"))


_RAY_AGREES = r"""
import sys
import numpy as np, pandas as pd
sys.path.insert(0, {tests!r})
from test_sensitivity import synthetic_group
from meta_study.analysis.groups import Group
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap
from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity
from meta_study.analysis.parallel import bootstrap_ray, init_ray, sensitivity_ray

ray = init_ray("local", workers=2)          # a Ray of our own: 127.0.0.1 only, dies with this process
try:
    good = synthetic_group("a", 120, 0)
    held = Group("up", "held", "fewshot", 10, np.linspace(0.96, 0.99, 12), np.linspace(0.3, 0.5, 12))
    tiny = Group("up", "tiny", "fewshot", 10, np.array([0.5, 0.6]), np.array([0.2, 0.3]))
    f32 = Group("up", "f32", "fewshot", np.int64(10), synthetic_group("b", 80, 1).us_accuracy.astype(np.float32),
                synthetic_group("b", 80, 1).ds_accuracy.astype(np.float32))
    groups = [good, held, tiny, f32]
    fit = FitOptions(holdout_above=0.95)
    so = SensitivityOptions(trials=2, sizes=(10, 40), seed=5, fit=fit)
    serial, par = sensitivity(groups, so), sensitivity_ray(groups, so, workers=2)
    pd.testing.assert_frame_equal(serial, par)
    assert "held" not in set(par["ds_task"]) and {{"a", "tiny", "f32"}} <= set(par["ds_task"]), par
    bo = BootstrapOptions(samples=15, seed=3, fit=fit)
    pd.testing.assert_frame_equal(bootstrap(groups, bo), bootstrap_ray(groups, bo, workers=2))
    print("AGREE", len(par))
finally:
    ray.shutdown()
"""


@pytest.mark.slow(25)
def test_ray_and_serial_agree_on_edge_groups() -> None:
    """Every group of the serial path, in its order, bit for bit: one with no fitting point, one too
    small to fit, float32 accuracies and a numpy shots value among them. In a subprocess, so that
    no Ray outlives the test in the test process."""
    code = _RAY_AGREES.format(tests=str(Path(__file__).parent))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "AGREE" in r.stdout, (r.stdout, r.stderr[-3000:])


def _costs(monkeypatch: pytest.MonkeyPatch, kind: str, groups: list, options) -> list[float]:
    from meta_study.analysis import parallel

    seen: list[float] = []
    monkeypatch.setattr(parallel, "_run", lambda k, g, o, costs, **kw: seen.extend(costs))
    (parallel.sensitivity_ray if kind == "sensitivity" else parallel.bootstrap_ray)(groups, options)
    return seen


def test_ray_task_costs_follow_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks are balanced on estimated costs. A sensitivity draw's work is mostly fixed per
    frontier (measured: 10 models on 6 frontiers ~2,400 point-fits, 1,000 models ~4,700); counted
    as n + 50 per draw, a 60-model group was estimated at 1/12 of a 5,000-model one and took half
    its time. Held-out models (``holdout_above``) are not drawn."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sensitivity import synthetic_group

    from meta_study.analysis.bootstrap import BootstrapOptions

    small, large = synthetic_group("s", 60, 0), synthetic_group("l", 5000, 1)
    so = SensitivityOptions()
    c_small, c_large = _costs(monkeypatch, "sensitivity", [small, large], so)
    assert 1.5 <= c_large / c_small <= 3, (c_small, c_large)
    # every model held out: nothing is drawn
    cut = _costs(monkeypatch, "sensitivity", [large], SensitivityOptions(fit=FitOptions(holdout_above=0.2)))[0]
    assert cut < c_small / 5, (cut, c_small)
    # the bootstrap fits each frontier of each resample: 6 frontiers cost more than 2
    two = _costs(monkeypatch, "bootstrap", [small], BootstrapOptions(samples=100, frontiers=("vertices", "all")))[0]
    six = _costs(monkeypatch, "bootstrap", [small], BootstrapOptions(samples=100, frontiers=tuple(FRONTIERS)))[0]
    assert six == pytest.approx(3 * two)
