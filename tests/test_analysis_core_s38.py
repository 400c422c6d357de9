"""Review s38 of the analysis core on degenerate and hostile inputs: rows of fits.parquet read back
with nullable dtypes or damaged, accuracies outside [0, 1], misaligned per-group arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.fitting import FitOptions, fit_groups, prepare
from meta_study.analysis.groups import Group
from meta_study.analysis.headline import Headline
from meta_study.analysis.laws import LAWS
from meta_study.analysis.payoff import stop_paying_from_slopes, stop_paying_us
from meta_study.analysis.selection import SelectionOptions, select_groups
from meta_study.analysis.tables import fits_frame


def _cloud(n: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    us = np.sort(rng.uniform(0.5, 0.9, n))
    return us, 0.9 - 0.5 * (1 - us) ** 0.8 + rng.normal(0, 0.01, n)


def _fits(us: np.ndarray, ds: np.ndarray) -> pd.DataFrame:
    return fits_frame([Group("a", "b", "p", None, us, ds)], fit_groups([(us, ds)]))


@pytest.mark.parametrize("backend", ["numpy_nullable", "pyarrow"])
def test_failed_fit_rows_read_with_nullable_dtypes_predict_nan(tmp_path, backend):
    # a 2-model group: every candidate failed, its parameters NaN, stored as nulls; read back with a
    # nullable backend they are pandas.NA, and float(pd.NA) raised a TypeError on every such row
    _fits(np.array([0.5, 0.6]), np.array([0.3, 0.4])).to_parquet(tmp_path / "fits.parquet")
    df = pd.read_parquet(tmp_path / "fits.parquet", dtype_backend=backend)
    for _, row in df.iterrows():
        assert np.isnan(predict_fit(row, [0.7, 0.9])).all()
        lo, hi = predict_interval(row, [0.7, 0.9])
        assert np.isnan(lo).all() and np.isnan(hi).all()
    fit = LAWS["eq1"].from_row({"status": "ok", "k": 0.5, "alpha": 1.0, "e_ir": pd.NA, "message": pd.NA})
    assert math.isnan(fit.params["e_ir"]) and fit.message == ""


def test_usable_rows_read_with_nullable_dtypes_predict_as_numpy_rows(tmp_path):
    us, ds = _cloud()
    _fits(us, ds).to_parquet(tmp_path / "fits.parquet")
    plain = pd.read_parquet(tmp_path / "fits.parquet")
    nullable = pd.read_parquet(tmp_path / "fits.parquet", dtype_backend="numpy_nullable")
    for i in range(4):   # the headline and three candidates
        np.testing.assert_allclose(predict_fit(nullable.iloc[i], [0.8, 0.95]), predict_fit(plain.iloc[i], [0.8, 0.95]))


def test_a_row_without_its_law_s_column_is_one_clear_error():
    with pytest.raises(ValueError, match="law 'eq1-bayes' has no 'e_us_star' column"):
        LAWS["eq1-bayes"].from_row({"status": "ok", "k": 0.9, "alpha": 0.7, "e_ir": 0.1})
    with pytest.raises(ValueError, match="has no 'status' column"):
        predict_fit({"law": "eq1", "k": 0.9, "alpha": 0.7, "e_ir": 0.1}, 0.9)


def test_a_headline_row_with_damaged_json_is_one_clear_error():
    us, ds = _cloud()
    row = dict(_fits(us, ds).iloc[0])
    assert math.isfinite(float(predict_fit(row, 0.95)))
    with pytest.raises(ValueError, match="members is not the JSON list"):
        predict_fit({**row, "members": '[["eq1"'}, 0.95)
    with pytest.raises(ValueError, match="members is not the JSON list"):
        predict_fit({**row, "members": "[1, 2]"}, 0.95)
    members = json.loads(row["members"])
    del members[0][2]["k"]
    with pytest.raises(ValueError, match=r"member eq1/\S+ has no 'k' parameter"):
        Headline.from_row({**row, "members": json.dumps(members)})
    with pytest.raises(ValueError, match="interval_residuals is not the JSON list"):
        predict_interval({**row, "interval_residuals": "[0.01, 0.1]"}, 0.95)
    with pytest.raises(ValueError, match="interval_residuals holds an entry"):
        predict_interval({**row, "interval_residuals": "[[0.01]]"}, 0.95)


@pytest.mark.parametrize("bad", ["ds_percent_held_out", "us_negative"])
def test_one_accuracy_outside_0_1_leaves_the_group_without_an_answer(bad):
    us, ds = _cloud()
    if bad == "ds_percent_held_out":    # one DS in percent, among the held-out models
        us, ds = np.r_[us, 0.85], np.r_[ds, 95.0]
        said = "DS accuracy 95 is outside [0, 1]"
    else:                               # one US below 0, among the visible ones
        us, ds = np.r_[-0.05, us], np.r_[0.1, ds]
        said = "US accuracy -0.05 is outside [0, 1]"
    sel = fit_groups([(us, ds)])[0]
    # the frontiers without that point were fitted, and made a usable (even trusted) answer that
    # said nothing of it ("off by 5439 pt" on the held-out models)
    assert not sel.usable and not sel.trusted
    assert said in sel.trust_reason
    assert any(w.startswith("no_fit: ") and said in w for w in sel.warnings)
    assert not any(w.startswith("held_out") for w in sel.warnings)
    assert not sel.claims.steps
    row = _fits(us, ds).iloc[0]
    assert math.isnan(row["ds_plus1"]) and np.isnan(predict_fit(row, 0.95))
    good = fit_groups([_cloud()])[0]       # the same models without that point: an answer
    assert good.usable


def test_misaligned_keys_or_sizes_are_refused_not_truncated():
    groups = [_cloud(8, seed) for seed in range(3)]
    with pytest.raises(ValueError, match="keys has 2 entries for 3 groups"):
        fit_groups(groups, keys=[("a",), ("b",)])
    with pytest.raises(ValueError, match="test_sizes has 1 entries for 3 groups"):
        fit_groups(groups, test_sizes=[None])
    with pytest.raises(ValueError, match="thresholds has 2 entries for 3 groups"):
        select_groups(groups, [0, 1, 2], [0.8, 0.8])


def test_prepare_takes_any_shape_and_refuses_unequal_lengths():
    us, ds = _cloud()
    flat = prepare(us, ds, FitOptions())
    square = prepare(us.reshape(4, 5), ds.reshape(4, 5), FitOptions())   # an IndexError before
    np.testing.assert_array_equal(square.fit_idx, flat.fit_idx)
    np.testing.assert_array_equal(square.target_ds, flat.target_ds)
    with pytest.raises(ValueError, match="us_accuracy has 20 values but ds_accuracy has 19"):
        prepare(us, ds[:-1], FitOptions())


def test_a_nan_payoff_threshold_is_no_stop_paying_point():
    fit = LAWS["eq1"].from_row({"status": "ok", "k": 0.5, "alpha": 1.6, "e_ir": 0.25})
    assert stop_paying_us(fit, 0.1) > 0
    assert math.isnan(stop_paying_us(fit, math.nan))     # was 0.0: "never paid"
    assert np.isnan(stop_paying_from_slopes(np.array([[0.5, 0.3, 0.05]]), math.nan)).all()


def test_selection_options_take_one_name_as_a_string():
    o = SelectionOptions(laws="eq1", frontiers="vertices")    # was "unknown law 'e'"
    assert o.laws == ("eq1",) and o.frontiers == ("vertices",)
    with pytest.raises(ValueError, match="unknown law 'eq1,power'"):
        SelectionOptions(laws="eq1,power")
