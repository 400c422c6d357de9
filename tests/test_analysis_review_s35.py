"""Review s35 of the analysis glue: results-directory messages and reuse, correlation tables of
one store version, groups, frontiers and the calculator on edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import committed_store, make_rows
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Selection
from meta_study.analysis.results import AnalysisOptions, ResultsDir, _describe_difference, _key, analyze
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.errors import UserError


def _diff(old: AnalysisOptions, new: AnalysisOptions, part: str = "sensitivity") -> str:
    return _describe_difference(_key(part, old, Selection()), _key(part, new, Selection()))


def test_a_refusal_names_the_option_that_differs_and_only_that():
    # `--sizes 10,30` against the default sizes paired the fields by position once the tuple
    # had no match: "--n-sizes not given (this command: 8); --min-size 8 (this command: 10);
    # --trials 10 (this command: 10)", none of which the user changed
    msg = _diff(AnalysisOptions(sensitivity=SensitivityOptions()),
                AnalysisOptions(sensitivity=SensitivityOptions(sizes=(10, 30))))
    assert "--sizes" in msg and "--n-sizes" not in msg and "--min-size" not in msg and "--trials" not in msg, msg
    msg = _diff(AnalysisOptions(sensitivity=SensitivityOptions(sizes=(10, 30), trials=5)),
                AnalysisOptions(sensitivity=SensitivityOptions(sizes=(10, 30))))
    assert msg == "other options: --trials 5 (this command: 10)", msg
    msg = _diff(AnalysisOptions(sensitivity=SensitivityOptions(frontiers=("vertices", "all"))),
                AnalysisOptions(sensitivity=SensitivityOptions()))
    assert "--frontiers vertices,all (this command: vertices,hull-curve" in msg, msg
    # nested options keep their flags and units: --tolerance in points
    from meta_study.analysis.selection import SelectionOptions
    msg = _diff(AnalysisOptions(fit=FitOptions(selection=SelectionOptions(tolerance=0.05))), AnalysisOptions(), "fits")
    assert msg == "other options: --tolerance 5 (this command: 3)", msg


def test_another_selection_is_said_with_its_flags():
    old = _key("fits", AnalysisOptions(), Selection(ds_task=("pets",), shots=(5,)))
    new = _key("fits", AnalysisOptions(), Selection())
    msg = _describe_difference(old, new)
    assert msg == "another selection: --ds-task pets --shots 5 (this command: all groups)", msg


def test_correlations_alone_are_of_the_snapshot_they_say():
    # `meta-study correlations` (no fits part) read the store a second time for F.1/F.2: an
    # ingest that committed in between gave tables of two versions under one recorded version
    from meta_study.validation import validate
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        from meta_study.store import Store

        s = Store(str(Path(tmp) / "store"))
        s.commit(validate(make_rows(40, ds_tasks=("a", "b"), shots=(1, 5, 10), seed=1)).table)
        snap = Selection().snapshot(s)
        s.commit(validate(make_rows(40, ds_tasks=("a", "b"), shots=(1, 5, 10), seed=2, run_prefix="new")).table)
        only = analyze(s, Selection(), AnalysisOptions(fits=False, correlations=True), snapshot=snap, use_ray=False)
        both = analyze(s, Selection(), AnalysisOptions(fits=True, correlations=True), snapshot=snap, use_ray=False)
    f1 = only.correlations["f1_shots_correlation"]
    assert len(f1) and only.snapshot_id == snap.snapshot_id
    pd.testing.assert_frame_equal(f1, both.correlations["f1_shots_correlation"])


def _slice_rows(ds_by_task: dict[str, list[float]], us: list[float], source: str = "s") -> pd.DataFrame:
    n = len(us)
    return pd.DataFrame([{"source": source, "run_id": f"r{i}", "us_task": "up", "eval_protocol": "shift",
                          "shots": None, "representation_layer": None, "ds_task": t, "us_accuracy": us[i],
                          "ds_accuracy": d[i]} for t, d in ds_by_task.items() for i in range(n)])


def test_f21_counts_a_run_repeated_by_another_source_once():
    # the same export ingested under two source names: the groups count its runs once
    # (`repeated`), F.21 counted them twice: 10 models and p = 0.0 from 5 models
    from meta_study.analysis.correlations import correlation_tables, us_ds_correlations

    us = [0.1, 0.2, 0.3, 0.4, 0.5]
    one = _slice_rows({"b": [0.1, 0.3, 0.2, 0.4, 0.5]}, us)
    twice = pd.concat([one, one.assign(source="s2")], ignore_index=True)
    pd.testing.assert_frame_equal(us_ds_correlations(twice), us_ds_correlations(one))
    assert us_ds_correlations(twice)["n_models"].tolist() == [5]
    # F.20 likewise: the repeated runs are not more models
    two = _slice_rows({"a": [0.3, 0.1, 0.2, 0.5, 0.4], "b": [0.1, 0.3, 0.2, 0.4, 0.5]}, us)
    t1 = correlation_tables(two)["f20_ds_task_spearman"]
    t2 = correlation_tables(pd.concat([two, two.assign(source="s2")], ignore_index=True))["f20_ds_task_spearman"]
    pd.testing.assert_frame_equal(t1, t2)
    pair = _slice_rows({"a": [0.3, 0.1], "b": [0.1, 0.3]}, [0.1, 0.2])      # 2 models: no correlation
    t3 = correlation_tables(pd.concat([pair, pair.assign(source="s2")], ignore_index=True))["f20_ds_task_spearman"]
    assert t3["spearman"].isna().all(), t3
    # a run with other accuracies in another source is another measurement and stays
    other = pd.concat([one, one.assign(source="s2", ds_accuracy=one["ds_accuracy"] + 0.01)], ignore_index=True)
    assert us_ds_correlations(other)["n_models"].tolist() == [10]


def test_f21_says_why_a_correlation_is_missing():
    from meta_study.analysis.correlations import us_ds_correlations

    t = us_ds_correlations(pd.concat([
        _slice_rows({"flat": [0.3] * 5, "ok": [0.1, 0.3, 0.2, 0.4, 0.5]}, [0.1, 0.2, 0.3, 0.4, 0.5]),
        _slice_rows({"few": [0.1, 0.2]}, [0.1, 0.2])], ignore_index=True)).set_index("ds_task")
    assert np.isnan(t.loc["flat", "spearman"]) and np.isnan(t.loc["few", "spearman"])
    assert t.loc["flat", "note"] == "every model has the same DS accuracy", t.loc["flat", "note"]
    assert t.loc["few", "note"] == "2 models (3 needed)", t.loc["few", "note"]
    assert t.loc["ok", "note"] == "" and t.loc["ok", "spearman"] > 0.8


def test_correlations_are_reused_whatever_the_headline_options(tmp_path):
    # `correlations --out D` (which has no fit options) then `report --out D --threshold 0.2` was
    # refused, "made with other options: --threshold 0.1": F.1-F.21 never depend on the
    # headline's options (threshold, tolerance, target), as sensitivity and bootstrap do not
    from dataclasses import replace

    from meta_study.analysis.selection import SelectionOptions

    s = committed_store(tmp_path / "store", runs=30)
    d = ResultsDir(tmp_path / "out")
    a = analyze(s, Selection(), AnalysisOptions(fits=False, correlations=True), use_ray=False, results=d)
    d.write(a, Selection(), figures=False)
    report = replace(FitOptions(), selection=SelectionOptions(payoff_threshold=0.2, tolerance=0.05, ds_target=0.5))
    assert d.plan("correlations", AnalysisOptions(fit=report, correlations=True), Selection(),
                  s.snapshot_id) == "reuse"
    # what F.1/F.2 are made of still counts: another hold-out split is refused
    with pytest.raises(UserError, match="--holdout-quantile 0.8 \\(this command: 0.9\\)"):
        d.plan("correlations", AnalysisOptions(fit=FitOptions(holdout_quantile=0.9), correlations=True), Selection(),
               s.snapshot_id)


def test_the_same_tasks_in_another_order_are_the_same_selection(tmp_path):
    # `fit --ds-task b --ds-task a` then `report --ds-task a --ds-task b` into one DIR was refused
    # as "another selection": the same groups, the same rows, the same tables
    s = committed_store(tmp_path / "store", runs=20)
    d = ResultsDir(tmp_path / "out")
    ba = Selection(ds_task=("b", "a"), shots=(5, 1))
    a = analyze(s, ba, AnalysisOptions(fits=False, correlations=True), use_ray=False, results=d)
    d.write(a, ba, figures=False)
    ab = Selection(ds_task=("a", "b"), shots=(1, 5))
    assert d.plan("correlations", AnalysisOptions(fits=False, correlations=True), ab, s.snapshot_id) == "reuse"
    with pytest.raises(UserError, match="another selection: --ds-task b --ds-task a --shots 5 --shots 1 "
                                        "\\(this command: --ds-task a --shots 1 --shots 5\\)"):
        d.plan("correlations", AnalysisOptions(fits=False, correlations=True), Selection(ds_task=("a",), shots=(1, 5)),
               s.snapshot_id)


def _wd_rows() -> pd.DataFrame:
    """Runs at two head weight decays, each evaluated 10-shot by few-shot and by a linear probe."""
    out = []
    for i, hw in enumerate([0.0, 0.0, 0.1, 0.1]):
        for proto, ds in (("fewshot", 0.3 + hw), ("linear", 0.8 - hw)):
            out.append({"source": "s", "run_id": f"r{i}", "us_task": "up", "ds_task": "pets", "eval_protocol": proto,
                        "shots": 10, "representation_layer": None, "head_wd": hw, "us_accuracy": 0.5 + i / 100,
                        "ds_accuracy": ds + i / 1000})
    return pd.DataFrame(out)


def test_head_wd_tables_keep_protocols_apart():
    # a few-shot and a linear-probe accuracy of one DS task at the same shots were averaged into
    # one curve: its best head WD was neither protocol's (each has its own, 0.1 and 0)
    from meta_study.analysis.controlled import head_wd_effect, optimal_head_wd_vs_correlation

    curves, best = head_wd_effect(_wd_rows())
    assert len(curves) == 4 and set(curves["eval_protocol"]) == {"fewshot", "linear"}
    b = best.set_index("eval_protocol")
    assert b.loc["fewshot", "best_head_wd"] == pytest.approx(0.1) and b.loc["linear", "best_head_wd"] == 0.0
    assert b.loc["fewshot", "best_ds_accuracy"] == pytest.approx(0.4025)
    d4 = optimal_head_wd_vs_correlation(_wd_rows()).set_index("eval_protocol")
    assert (d4["models"] == 4).all() and d4.loc["fewshot", "us_ds_spearman"] > 0 > d4.loc["linear", "us_ds_spearman"]
    from meta_study.analysis.controlled import write_all

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res = write_all(_wd_rows(), tmp)
        assert any(f.endswith("d1_d3_head_wd.png") for f in res["figures"])
        assert any(f.endswith("d4_head_wd_vs_corr.png") for f in res["figures"])


def test_a_sample_size_above_the_fitting_points_is_not_reported_as_drawn():
    # `--sizes 10,30,100,300` on a group of 40 fitting points gave rows n=100 and n=300 that were
    # each a draw of the same 40 points (sd 0 over trials): the figure showed 100 and 300 models
    from meta_study.analysis.sensitivity import sensitivity_group

    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 50)
    ds = us * 0.8 - rng.exponential(0.03, 50)
    opts = SensitivityOptions(sizes=(10, 30, 100, 300), trials=3, frontiers=("vertices", "all"))
    t = sensitivity_group(("u", "d", "fewshot", 5), us, ds, opts)
    assert sorted(set(t["n"])) == [10, 30, 40]
    assert (t.loc[t["frontier"] == "all", "n_fit"] == t.loc[t["frontier"] == "all", "n"]).all()
    assert len(t) == 3 * 3 * 2
    # with replacement (--bootstrap) a draw of 300 from 40 points is a draw of 300
    rep = sensitivity_group(("u", "d", "fewshot", 5), us, ds, SensitivityOptions(sizes=(300,), trials=1, replace=True,
                                                                                 frontiers=("all",)))
    assert rep["n"].tolist() == [300] and rep["n_fit"].tolist() == [300]


def test_f20_says_why_a_correlation_is_missing():
    # a DS task on which every model scores the same had NaN beside every other task, with no word
    # of why (the heatmap greys it as "no data" although 5 models have both tasks)
    from meta_study.analysis.correlations import correlation_tables

    us = [0.1, 0.2, 0.3, 0.4, 0.5]
    rows = pd.concat([_slice_rows({"flat": [0.3] * 5, "ok": [0.1, 0.3, 0.2, 0.4, 0.5], "ok2": [0.2, 0.1, 0.3, 0.5, 0.4]}, us),
                      _slice_rows({"few": [0.1, 0.2]}, us[:2])], ignore_index=True)
    f20 = correlation_tables(rows)["f20_ds_task_spearman"].set_index(["ds_task_a", "ds_task_b"])
    assert f20.loc[("flat", "ok"), "note"] == "every model has the same DS accuracy on flat"
    assert f20.loc[("ok", "flat"), "note"] == "every model has the same DS accuracy on flat"
    assert f20.loc[("few", "ok"), "note"] == "2 models have both (3 needed)"
    assert f20.loc[("few", "ok"), "n_models"] == 2 and f20.loc[("flat", "ok"), "n_models"] == 5
    assert f20.loc[("ok", "ok2"), "note"] == "" and f20.loc[("ok", "ok2"), "spearman"] == pytest.approx(0.6)
    assert f20.loc[f20["note"] != "", "spearman"].isna().all() and f20.loc[f20["note"] == "", "spearman"].notna().all()


def _protocol_fits() -> pd.DataFrame:
    """eq1 fits of one DS task at 1, 5, 10 shots, measured few-shot (alpha rising with shots) and
    by a linear probe (alpha falling)."""
    rows = []
    for proto, sign in (("fewshot", 1), ("linear", -1)):
        for shots in (1, 5, 10):
            rows.append({"us_task": "up", "ds_task": "pets", "eval_protocol": proto, "law": "eq1",
                         "frontier": "vertices", "shots": shots, "status": "ok", "k": 1.0,
                         "alpha": 2.0 + sign * shots / 10, "e_ir": 0.1 + shots / 100})
    return pd.DataFrame(rows)


def test_f1_f2_keep_protocols_apart():
    # F.1 correlated the few-shot and the linear-probe fits of one task as six settings of three
    # shots (corr_alpha 0, "3 settings"); F.2 kept whichever protocol came first at each shot count
    from meta_study.analysis.correlations import increase_likelihood, shots_correlation

    f1 = shots_correlation(_protocol_fits()).set_index("eval_protocol")
    assert f1.loc["fewshot", "corr_alpha"] == pytest.approx(1.0) and f1.loc["linear", "corr_alpha"] == pytest.approx(-1.0)
    assert (f1["n_shots"] == 3).all()
    f2 = increase_likelihood(_protocol_fits()).set_index("eval_protocol")
    assert f2.loc["fewshot", "p_increase_alpha"] == 1.0 and f2.loc["linear", "p_increase_alpha"] == 0.0
    assert (f2["p_increase_e_ir"] == 1.0).all()


def test_correlations_recorded_with_every_fit_option_are_still_theirs(tmp_path):
    # results.json written before the correlations' key left the headline's options holds the
    # whole fit options: the same command again is no "other options"
    import json
    from dataclasses import replace

    from meta_study.analysis.selection import SelectionOptions

    s = committed_store(tmp_path / "store", runs=20)
    d = ResultsDir(tmp_path / "out")
    fit = replace(FitOptions(), selection=SelectionOptions(payoff_threshold=0.2))
    opts = AnalysisOptions(fit=fit, fits=False, correlations=True)
    d.write(analyze(s, Selection(), opts, use_ray=False, results=d), Selection(), figures=False)
    m = json.loads((d.path / "results.json").read_text())
    m["parts"]["correlations"]["options"] = repr(fit)
    (d.path / "results.json").write_text(json.dumps(m))
    assert d.plan("correlations", opts, Selection(), s.snapshot_id) == "reuse"
    with pytest.raises(UserError, match="--threshold 0.2 \\(this command: 0.1\\)"):
        d.plan("correlations", AnalysisOptions(fits=False, correlations=True), Selection(), s.snapshot_id)
