"""Session 44's review of the back-tests, the headline and the laws (selection.py, headline.py, laws.py).

- A group whose models below every back-test cut share one US accuracy (a shared backbone under
  many heads) has cuts but no back-test: its trust reason said "needs 6 or more visible models, 3
  above a cut" of 20 visible models, 10 above the cut. It now says which fit failed and why.
- ``cuts=()`` (no back-test asked for) said the same wrong thing; it now says no cut was asked for.
- ``SelectionOptions(cuts=0.7)`` raised "'float' object is not iterable"; a list of cuts made the
  frozen options unhashable.
- A group with an accuracy outside [0, 1] has no answer and no back-test (``n_cuts`` 0), but its
  row kept a tested horizon (``horizon_us``) from residuals it no longer states.
- Each candidate's row under ``cuts=()`` said "needs 6 or more visible models" too.
- A DS test-set size column of object dtype holding ``pandas.NA`` raised a TypeError in
  ``select_groups``, which never raises on bad data; ``pandas.NA`` is no size.
- ``predict_fit`` / ``predict_interval`` on rows read back from ``fits.parquet`` (pandas and
  pyarrow) give exactly the in-memory headline's and candidates' curves and intervals, and the
  stored steps (a guard: they already agreed).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.headline import interval_around
from meta_study.analysis.selection import SelectionOptions, select_groups
from meta_study.analysis.tables import fits_frame

KEY = [("u", "d", "p", None)]


def _linear(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    us = np.sort(rng.uniform(0.5, 0.9, n))
    return us, 0.2 + 0.6 * us + rng.normal(0, 0.01, n)


def test_models_below_every_cut_at_one_us_accuracy_say_why_there_is_no_backtest() -> None:
    us = np.r_[np.full(10, 0.6), np.full(10, 0.8)]
    ds = np.r_[np.linspace(0.3, 0.4, 10), np.linspace(0.5, 0.6, 10)]
    (sel,) = select_groups([(us, ds)], KEY, [1.0])
    assert sel.usable and sel.n_cuts == 0 and not sel.trusted
    assert "needs 6 or more" not in sel.trust_reason, sel.trust_reason
    assert sel.trust_reason.startswith("no back-test (no law could be fitted below its back-test cut: "
                                       "to the models up to 60.0% US, degenerate: "), sel.trust_reason
    assert "same US" in sel.trust_reason
    # the report counts it among "no back-test" (the part before the first " (")
    assert sel.trust_reason.split(" (")[0] == "no back-test"


def test_a_group_too_small_for_a_cut_keeps_its_reason() -> None:
    us = np.array([0.5, 0.6, 0.65, 0.7, 0.75])
    ds = np.array([0.3, 0.4, 0.42, 0.5, 0.52])
    (sel,) = select_groups([(us, ds)], KEY, [1.0])
    assert sel.trust_reason == "no back-test (needs 6 or more visible models, 3 above a cut)"


def test_no_cuts_asked_for_is_said() -> None:
    us, ds = _linear(20)
    (sel,) = select_groups([(us, ds)], KEY, [1.0], SelectionOptions(cuts=()))
    assert sel.n_cuts == 0 and not sel.trusted
    assert sel.trust_reason == "no back-test (no back-test cuts were asked for: SelectionOptions.cuts is empty)"


def test_one_number_is_one_cut_and_lists_become_tuples() -> None:
    o = SelectionOptions(cuts=0.7)
    assert o.cuts == (0.7,)
    listed = SelectionOptions(laws=["eq1", "power"], frontiers=["vertices"], cuts=[0.5, 0.7])
    assert (listed.laws, listed.frontiers, listed.cuts) == (("eq1", "power"), ("vertices",), (0.5, 0.7))
    hash(listed)
    assert listed == SelectionOptions(laws=("eq1", "power"), frontiers=("vertices",), cuts=(0.5, 0.7))
    us, ds = _linear(20)
    (sel,) = select_groups([(us, ds)], KEY, [1.0], o)
    assert sel.n_cuts == 1


def test_a_group_with_an_accuracy_outside_0_1_states_no_tested_horizon() -> None:
    us, ds = _linear(20)
    us, ds = np.r_[us, -0.1], np.r_[ds, 0.2]
    (sel,) = select_groups([(us, ds)], KEY, [0.85])
    assert not sel.usable and sel.n_cuts == 0
    assert math.isnan(sel.headline.horizon_us) and sel.headline.residuals == ()
    g = Group("u", "d", "p", None, us, ds)
    row = fits_frame([g], [sel]).iloc[0]
    assert row["law"] == "ensemble" and math.isnan(row["horizon_us"]), row["horizon_us"]
    assert "outside [0, 1]" in sel.trust_reason


def _roundtrip(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    buf = io.BytesIO()
    df.to_parquet(buf)
    buf.seek(0)
    back = pd.read_parquet(buf)
    buf.seek(0)
    return back, pq.read_table(buf).to_pylist()


def test_rows_read_back_predict_exactly_what_the_selection_holds() -> None:
    cases = {f"g{n}_{s}": _linear(n, s) for n in (4, 9, 30) for s in range(2)}
    # exact fractions k / 331 (a test-set size read off them) and a constant task (no spread)
    x = np.linspace(0.5, 0.9, 15)
    cases["k_over_n"] = (np.round(x * 997) / 997, np.round((0.2 + 0.6 * x) * 331) / 331)
    cases["flat"] = (np.linspace(0.5, 0.9, 10), np.full(10, 0.5))
    groups = [Group("u", k, "p", None, np.asarray(u), np.asarray(d)) for k, (u, d) in cases.items()]
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups],
                      FitOptions(selection=SelectionOptions(ds_target=0.7)))
    back, arrow = _roundtrip(fits_frame(groups, sels, 0.7))
    grid = np.linspace(0.0, 1.0, 101)
    for g, sel in zip(groups, sels):
        rows = back[back["ds_task"] == g.ds_task]
        head = rows[rows["law"] == "ensemble"].iloc[0]
        head_arrow = next(r for r in arrow if r["ds_task"] == g.ds_task and r["law"] == "ensemble")
        h = sel.headline
        for row in (head, head_arrow):
            np.testing.assert_array_equal(predict_fit(row, grid), h.predict_accuracy(grid))
            lo, hi = predict_interval(row, grid)
            lo2, hi2 = h.interval(grid)
            np.testing.assert_array_equal(lo, lo2)
            np.testing.assert_array_equal(hi, hi2)
        for st in sel.claims.steps:
            if math.isfinite(st.us):
                lo, hi = predict_interval(head, st.us)
                np.testing.assert_array_equal([float(predict_fit(head, st.us)), float(lo), float(hi)],
                                              [head[f"ds_plus{st.points}"], head[f"ds_plus{st.points}_lo"],
                                               head[f"ds_plus{st.points}_hi"]])
        for c in sel.candidates:
            row = rows[(rows["law"] == c.law) & (rows["frontier"] == c.frontier)].iloc[0]
            want = np.clip(c.fit.predict_accuracy(grid), 0.0, 1.0)
            np.testing.assert_array_equal(predict_fit(row, grid), want)
            lo, hi = predict_interval(row, grid)
            lo2, hi2 = interval_around(want, grid, c.residuals, h.best_us, 0.9, h.test_size)
            np.testing.assert_array_equal(lo, lo2)
            np.testing.assert_array_equal(hi, hi2)


def test_no_cuts_asked_for_is_said_on_the_candidates_too() -> None:
    us, ds = _linear(20)
    (sel,) = select_groups([(us, ds)], KEY, [1.0], SelectionOptions(cuts=()))
    said = [w for c in sel.candidates for w in c.warnings if w.startswith("backtest:")]
    assert said and all(w == "backtest: no back-test (no back-test cuts were asked for: SelectionOptions.cuts is "
                        "empty)" for w in said), said


def test_a_test_set_size_column_with_pandas_na_is_read_not_raised() -> None:
    us, ds = _linear(20)
    sizes = pd.Series([1000] * 19 + [pd.NA], dtype=object)
    (sel,) = select_groups([(us, ds)], KEY, [1.0], test_sizes=[sizes])
    assert sel.headline.test_size == 1000.0
