"""Session 42's review of the analysis modules: hull, frontiers, payoff, fitting, controlled, correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from meta_study.analysis.controlled import head_wd_effect, layerwise, optimal_head_wd_vs_correlation, write_all
from meta_study.analysis.correlations import correlation_tables, ds_task_correlations
from meta_study.analysis.fitting import FitOptions, fit_group, holdout_threshold, prepare
from meta_study.analysis.frontiers import FRONTIERS, frontier_points
from meta_study.analysis.hull import SubsetHulls, hull_frontier, upper_hull


def test_models_without_a_ds_accuracy_do_not_move_the_holdout_split():
    # the 5 best of 10 models have no DS accuracy: they are no models (neither visible nor held
    # out), yet they counted in the 0.8 quantile, which fell among them and held out none of the 5
    us = np.linspace(0.5, 0.95, 10)
    ds = 0.2 + 0.5 * us
    ds[5:] = np.nan
    real = holdout_threshold(us[:5], FitOptions())
    p = prepare(us, ds, FitOptions())
    assert p.threshold == pytest.approx(real) and list(p.held_idx) == [4] and list(p.fit_idx) == [0, 1, 2, 3]
    s = fit_group(us, ds)
    assert s.holdout_threshold == pytest.approx(real) and s.n_heldout == 1
    assert holdout_threshold(us, FitOptions(), ds) == pytest.approx(real)
    # every point kept (quantile 1.0): the threshold is the best real model, not a NaN-DS one
    assert holdout_threshold(us, FitOptions(holdout_quantile=1.0), ds) == us[4]
    # without DS accuracies, or with finite ones, the threshold is as before
    assert holdout_threshold(us, FitOptions()) == pytest.approx(np.quantile(us, 0.8))
    assert holdout_threshold(us, FitOptions(), 0.2 + 0.5 * us) == pytest.approx(np.quantile(us, 0.8))


def _head_wd_rows(shots: int | None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    recs = []
    for i, wd in enumerate((0.0, 1e-2, 1e-1)):
        for seed in range(2):
            for ds in ("near", "far"):
                recs.append({"source": "sim", "run_id": f"{i}-{seed}", "us_task": "up", "ds_task": ds,
                             "eval_protocol": "linear" if shots is None else "fewshot", "shots": shots,
                             "representation_layer": None, "head_wd": wd, "us_accuracy": 0.6 - wd + rng.normal(0, 0.01),
                             "ds_accuracy": 0.5 + wd + rng.normal(0, 0.01)})
    return pd.DataFrame(recs).astype({"shots": "Int64", "representation_layer": "Int64"})


@pytest.mark.parametrize("shots", [None, 10])
def test_controlled_tables_have_typed_shots_like_d1_d3(tmp_path, shots):
    # D.4 of a linear-probe sweep (shots null throughout) was written with a shots column of
    # Parquet type null, beside D.1/D.3's int64; an empty Fig. 6 table had every column null
    rows = _head_wd_rows(shots)
    d4 = optimal_head_wd_vs_correlation(rows)
    assert len(d4) == 2 and str(d4["shots"].dtype) == "Int64" and d4["models"].dtype == np.int64
    write_all(rows, str(tmp_path))
    for name in ("d1_head_wd_curves", "d3_best_head_wd", "d4_best_head_wd_vs_correlation", "fig6_layerwise"):
        schema = pq.read_schema(tmp_path / f"{name}.parquet")
        assert str(schema.field("shots").type) == "int64", name
        assert all(str(f.type) != "null" for f in schema), (name, schema)


def test_empty_controlled_tables_are_typed():
    rows = _head_wd_rows(10).assign(head_wd=np.nan, eval_protocol="linear")
    curves, best = head_wd_effect(rows)
    lw = layerwise(rows)
    for t in (curves, best, lw):
        assert t.empty and str(t["shots"].dtype) == "Int64"
        assert all(t[c].dtype != object for c in t.columns), t.dtypes
    assert lw["layer"].dtype == np.int64 and lw["runs"].dtype == np.int64


def test_fig6_layerwise_shots_are_int64_whatever_the_rows_held():
    rows = _head_wd_rows(10)
    probes = rows.assign(representation_layer=1, ds_accuracy=rows["ds_accuracy"] / 2)
    both = pd.concat([rows, probes], ignore_index=True).astype({"shots": "float64", "representation_layer": "float64"})
    lw = layerwise(both)
    assert str(lw["shots"].dtype) == "Int64" and list(lw["shots"].unique()) == [10]


def _two_task_rows(sources_runs: list[tuple[str, str]]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    recs = []
    for src, run in sources_runs:
        a, b = rng.uniform(0.2, 0.9, 2)
        for task, acc in (("a", a), ("b", b)):
            recs.append({"source": src, "run_id": run, "us_task": "up", "ds_task": task, "eval_protocol": "linear",
                         "shots": None, "us_accuracy": 0.5, "ds_accuracy": acc})
    return pd.DataFrame(recs)


def test_f20_tells_apart_models_whose_source_and_run_id_join_to_one_name():
    # source "hub" run "org/vit" and source "hub/org" run "vit" were one model "hub/org/vit": 3
    # models of 4 for F.20, that model's accuracies the mean of two
    runs = [("hub", "org/vit"), ("hub/org", "vit"), ("hub", "x"), ("hub", "y")]
    rows = _two_task_rows(runs)
    w = rows.pivot_table(index=["source", "run_id"], columns="ds_task", values="ds_accuracy")
    expect = w.corr(method="spearman", min_periods=3).loc["a", "b"]
    assert ds_task_correlations(rows).loc["a", "b"] == pytest.approx(expect)
    f20 = correlation_tables(rows)["f20_ds_task_spearman"]
    ab = f20[(f20["ds_task_a"] == "a") & (f20["ds_task_b"] == "b")].iloc[0]
    assert ab["n_models"] == 4 and ab["spearman"] == pytest.approx(expect)


def test_f20_of_rows_without_a_source_takes_the_run_ids():
    rows = _two_task_rows([("s", "1"), ("s", "2"), ("s", "3"), ("s", "4")])
    m = ds_task_correlations(rows.drop(columns="source"))
    assert m.loc["a", "b"] == pytest.approx(ds_task_correlations(rows).loc["a", "b"])


@pytest.mark.parametrize("call", [lambda us, ds: upper_hull(us, ds), lambda us, ds: SubsetHulls(us, ds),
                                  *[lambda us, ds, f=f: frontier_points(f, us, ds) for f in FRONTIERS]])
def test_points_of_two_sizes_are_one_value_error_naming_both(call):
    # one DS accuracy for three US ones was broadcast, then "index 1 is out of bounds" (IndexError)
    for ds in ([0.7], [0.7, 0.8]):
        with pytest.raises(ValueError, match=rf"us_accuracy has 3 values but ds_accuracy has {len(ds)}$"):
            call([0.1, 0.5, 0.9], ds)


@pytest.mark.parametrize("name", list(FRONTIERS))
def test_frontier_points_of_a_2d_array_are_those_of_its_flat_points(name):
    # upper_hull's flat indices indexed a (4, 5) array's rows: an IndexError
    us = np.linspace(0.1, 0.9, 20)
    ds = np.sqrt(us) - 0.1 * np.cos(9 * us)
    F, flat = frontier_points(name, us.reshape(4, 5), ds.reshape(4, 5)), frontier_points(name, us, ds)
    assert np.array_equal(F.us, flat.us) and np.array_equal(F.ds, flat.ds) and np.array_equal(F.support, flat.support)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]])
def test_hull_frontier_takes_the_vertices_in_any_order(order):
    # np.interp needs increasing US: right to left every value was NaN, (0.6, 0.2, 1.0) gave
    # NaN and 0.475 for 0.3 and 0.55
    hx, hy = np.array([0.2, 0.6, 1.0]), np.array([0.1, 0.5, 0.6])
    v = hull_frontier(hx[order], hy[order], np.array([0.4, 0.8, 0.1]))
    assert v[:2] == pytest.approx([0.3, 0.55]) and np.isnan(v[2])
    with pytest.raises(ValueError, match="hull_us has 3 values but hull_ds has 2$"):
        hull_frontier(hx, hy[:2], np.array([0.4]))
