"""The results directory and its figures: a DS task without a single rho keeps its (grey) column in
F.21; the parameters-vs-shots figure of hundreds of DS tasks is capped; a part written without
figures is reused, not recomputed, by a command that draws them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import committed_store, make_rows
from meta_study.analysis import outputs
from meta_study.validation import validate


def test_f21_keeps_a_ds_task_without_any_rho_as_a_grey_column(tmp_path, monkeypatch):
    """A DS task whose every model has one accuracy (or too few models) has NaN rho in every slice:
    pivot_table dropped its column, so F.21 left the task out instead of drawing it grey as the
    figure's note says."""
    from meta_study.analysis import figures
    from meta_study.analysis.correlations import correlation_tables

    rows = make_rows(12, ds_tasks=("a", "b", "c"))
    rows.loc[rows["ds_task"] == "c", "ds_accuracy"] = 0.5
    tables = correlation_tables(validate(rows).table.to_pandas())
    assert tables["f21_us_ds_spearman"]["ds_task"].tolist() == ["a", "b", "c"]
    drawn: dict[str, pd.DataFrame] = {}

    def plot_heatmap(m: pd.DataFrame, stem: str, **kw: object) -> list[str]:
        drawn[stem.rsplit("/", 1)[-1]] = m
        return []

    monkeypatch.setattr(figures, "plot_heatmap", plot_heatmap)
    outputs.write_correlations(tables, str(tmp_path))
    f21 = drawn["f21_us_ds"]
    assert list(f21.columns) == ["a", "b", "c"], f21
    assert f21["c"].isna().all() and f21[["a", "b"]].notna().all().all()


def _eq1_fits(n_tasks: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [dict(us_task="up", eval_protocol="fewshot", ds_task=f"task-{t:03d}", shots=shots, law="eq1", frontier=fr,
                 k=rng.uniform(0.5, 2), alpha=rng.uniform(0.1, 2), e_ir=rng.uniform(0, 0.3), status="ok", message="")
            for t in range(n_tasks) for shots in (1, 5) for fr in ("vertices", "all")]
    return pd.DataFrame(rows).astype({"shots": "Int64"})


def test_params_vs_shots_of_hundreds_of_ds_tasks_is_capped_and_says_so():
    """400 DS tasks drew a 52-inch-wide figure (20 legend columns, a minute to save), 800 lines no
    one could tell apart; now the first PARAMS_SERIES_MAX series, the title says how many of how many."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import PARAMS_SERIES_MAX, params_figure

    fig = params_figure(_eq1_fits(45))
    try:
        series = fig.legends[0]
        assert len(series.legend_handles) == PARAMS_SERIES_MAX
        assert fig.get_size_inches()[0] <= 12.5, fig.get_size_inches()
        assert f"the first {PARAMS_SERIES_MAX} of 45 series" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    fig = params_figure(_eq1_fits(3))     # under the cap: all of them, no note
    try:
        assert len(fig.legends[0].legend_handles) == 3 and "first" not in fig._suptitle.get_text()
    finally:
        plt.close(fig)


@pytest.mark.slow(25)
def test_a_part_written_without_figures_is_reused_and_its_figures_drawn(tmp_path):
    """`sensitivity --no-figures` (minutes to hours on Ray), then `report` or `sensitivity` with the
    same options: the whole sensitivity was computed again to draw one figure from its table."""
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.sensitivity import SensitivityOptions

    store = committed_store(tmp_path / "st", runs=14, tasks=("a", "b"))
    d = ResultsDir(tmp_path / "D")
    opts = AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=1), correlations=True)
    first = analyze(store, Selection(), opts, results=d, use_ray=False)
    d.write(first, Selection(), figures=False)
    assert not (d.path / "figures").exists()
    before = pd.read_parquet(d.path / "sensitivity.parquet")

    again = analyze(store, Selection(), opts, results=d, use_ray=False, figures=True)
    assert set(again.reused) == {"sensitivity", "correlations"}, again.reused
    out = d.write(again, Selection(), figures=True)
    names = {p.name for p in (d.path / "figures").glob("*.png")}
    assert {"sensitivity.png", "f21_us_ds.png"} <= names, names
    assert any(p.endswith("sensitivity.png") for p in out.figures)
    parts = json.loads((d.path / "results.json").read_text())["parts"]
    assert parts["sensitivity"]["figures"] is True and parts["correlations"]["figures"] is True
    assert not any(v.get("incomplete") for v in parts.values())
    pd.testing.assert_frame_equal(pd.read_parquet(d.path / "sensitivity.parquet"), before)
    # and now recorded with figures: reused as it is, nothing written
    third = analyze(store, Selection(), opts, results=d, use_ray=False, figures=True)
    assert set(third.reused) == {"sensitivity", "correlations"}
    assert d.write(third, Selection(), figures=True).tables == []


@pytest.mark.slow(25)
def test_fits_with_fewer_group_figures_than_asked_are_fitted_again(tmp_path):
    """`fit --max-group-figures 1`, then `fit --max-group-figures 4` in the same DIR: "reused fits",
    and still one group's figure (the figures need the selections, which are not stored)."""
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.groups import Selection

    store = committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))
    d = ResultsDir(tmp_path / "D")

    def fit(n: int) -> tuple[str, ...]:
        a = analyze(store, Selection(), AnalysisOptions(), results=d, use_ray=False, figures=True, group_figures=n)
        d.write(a, Selection(), figures=True, max_group_figures=n)
        return a.reused

    assert fit(1) == ()
    assert len(list((d.path / "figures" / "groups").glob("*.png"))) == 1
    assert fit(4) == ()          # 2 groups: both drawn now
    assert len(list((d.path / "figures" / "groups").glob("*.png"))) == 2
    assert fit(4) == ("fits",) and fit(1) == ("fits",)     # as many as asked, or more: reused
    assert json.loads((d.path / "results.json").read_text())["parts"]["fits"]["group_figures"] == 2
