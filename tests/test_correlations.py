from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.correlations import (correlation_tables, ds_task_correlations, increase_likelihood,
                                              shots_correlation, us_ds_correlations)


def _fits():
    rows = []
    for ds, sign in (("a", 1), ("b", -1)):
        for shots in (1, 5, 10, 25):
            for fr in ("hull", "all"):
                rows.append({"us_task": "up", "ds_task": ds, "frontier": fr, "shots": shots, "status": "ok",
                             "k": 1.0 + sign * shots / 25, "alpha": 1.0 + (shots % 2), "e_ir": 0.5 - shots / 100})
    rows.append({"us_task": "up", "ds_task": "a", "frontier": "hull", "shots": 50, "status": "nonfinite",
                 "k": np.nan, "alpha": np.nan, "e_ir": np.nan})
    return pd.DataFrame(rows)


def test_f1_correlation_with_shots():
    t = shots_correlation(_fits()).set_index(["ds_task", "frontier"])
    assert t.loc[("a", "hull"), "corr_k"] == pytest.approx(1.0)
    assert t.loc[("b", "all"), "corr_k"] == pytest.approx(-1.0)
    assert t.loc[("a", "hull"), "corr_e_ir"] == pytest.approx(-1.0)
    assert t.loc[("a", "hull"), "n_shots"] == 4  # the failed 50-shot fit is left out


def test_f2_likelihood_of_increase_averaged_over_tasks():
    t = increase_likelihood(_fits()).set_index("frontier")
    assert t.loc["hull", "p_increase_k"] == pytest.approx(0.5)       # always up on a, always down on b
    assert t.loc["hull", "p_increase_e_ir"] == pytest.approx(0.0)
    assert t.loc["hull", "p_increase_alpha"] == pytest.approx(1 / 3)  # 1->5->10->25: alpha 2,2,1,2
    assert t.loc["hull", "n_ds_tasks"] == 2


def _rows():
    rng = np.random.default_rng(0)
    us = rng.uniform(0.5, 0.9, 50)
    recs = []
    for i, u in enumerate(us):
        recs += [{"source": "s", "run_id": f"r{i}", "us_task": "up", "eval_protocol": "shift", "shots": None,
                  "us_accuracy": u, "ds_task": "same", "ds_accuracy": u * 0.9},
                 {"source": "s", "run_id": f"r{i}", "us_task": "up", "eval_protocol": "shift", "shots": None,
                  "us_accuracy": u, "ds_task": "reversed", "ds_accuracy": 1 - u},
                 {"source": "s", "run_id": f"r{i}", "us_task": "up", "eval_protocol": "shift", "shots": None,
                  "us_accuracy": u, "ds_task": "noise", "ds_accuracy": rng.uniform()}]
    return pd.DataFrame(recs)


def test_f20_and_f21_spearman():
    rows = _rows()
    m = ds_task_correlations(rows)
    assert m.loc["same", "reversed"] == pytest.approx(-1.0) and m.loc["same", "same"] == pytest.approx(1.0)
    assert abs(m.loc["same", "noise"]) < 0.4
    u = us_ds_correlations(rows).set_index("ds_task")
    assert u.loc["same", "spearman"] == pytest.approx(1.0) and u.loc["reversed", "spearman"] == pytest.approx(-1.0)
    assert u.loc["same", "n_models"] == 50


def test_correlation_tables_long_forms():
    t = correlation_tables(_rows(), _fits())
    assert set(t) == {"f1_shots_correlation", "f2_increase_likelihood", "f20_ds_task_spearman", "f21_us_ds_spearman"}
    assert len(t["f20_ds_task_spearman"]) == 9 and len(t["f21_us_ds_spearman"]) == 3
    few = us_ds_correlations(_rows().head(6))
    assert few["spearman"].isna().all()


def test_shots_are_ordered_as_numbers_in_figures_and_the_report(tmp_path):
    # as text, 10 and 25 sort before 5 (seen: heatmaps and F.21 in the order 10, 1, 25, 5)
    import meta_study.analysis.figures as fig
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.groups import Selection
    from meta_study.report import _natural
    from meta_study.validation import validate
    from meta_study.store import Store
    from conftest import make_rows

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(30, ds_tasks=("a", "b"), shots=(1, 5, 10, 25))).table)
    seen = {}
    orig = fig.plot_heatmap

    def spy(m, stem, **kw):
        seen[Path(stem).name] = list(m.index)
        return orig(m, stem, **kw)

    fig.plot_heatmap = spy
    try:
        a = analyze(s, options=AnalysisOptions(fits=False, correlations=True), use_ray=False)
        ResultsDir(tmp_path / "o").write(a, Selection())
    finally:
        fig.plot_heatmap = orig
    assert seen["f21_us_ds"] == [f"up/fewshot/{k}shot" for k in (1, 5, 10, 25)]
    names = sorted((tmp_path / "o" / "figures").glob("f20_*.png"), key=_natural)
    assert [p.stem.rsplit("_", 1)[1] for p in names] == ["1", "5", "10", "25"]
