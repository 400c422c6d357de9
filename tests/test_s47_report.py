"""Session 47: the report's static hover views and the headline's wording (text, not pixels).

A row read back from Parquet with a null hold-out threshold, or a model without a DS accuracy,
stopped the whole report; the static views drew the headline's line without the interval the
figures and the explorer shade; the report and the figures named the headline's quantile each
their own way, and the page called rows written before ``member_quantile`` was stored the 0.4
quantile of their members.
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fits_frame


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """One fitted group (its fits.parquet rows, points.parquet rows, and its GroupSelection)."""
    rng = np.random.default_rng(0)
    runs = [f"r{i:03d}" for i in range(14)]
    us = np.sort(rng.uniform(0.3, 0.8, len(runs)))
    ds = 0.9 - 0.6 * (1 - us) ** 1.3
    g = Group("up", "a", "fewshot", 5, us, ds)
    points = pd.DataFrame([{"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "run_id": r,
                            "model_name": "vit", "us_accuracy": u, "ds_accuracy": d} for r, u, d in zip(runs, us, ds)])
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy)], FitOptions(), keys=[g.key])
    return fits_frame([g], sels), points, sels[0]


def _head(fits: pd.DataFrame) -> dict:
    return fits[fits["headline"].astype(bool)].iloc[0].to_dict()


def _page_text(page: Path) -> str:
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def _coords(svg: str, tag: str) -> np.ndarray:
    m = re.search(rf"<{tag} class=\w+ points='([^']*)'", svg)
    assert m, svg[-600:]
    return np.array([[float(v) for v in p.split(",")] for p in m.group(1).split()])


# 1. a null threshold or a NaN accuracy

@pytest.mark.parametrize("null", [None, pd.NA, float("nan")], ids=["None", "NA", "NaN"])
def test_a_hover_view_draws_a_row_with_a_null_threshold_and_skips_a_model_without_an_accuracy(fitted, null):
    """``float(r["holdout_threshold"])`` raised a TypeError for a row read back from Parquet with a
    null there (pyarrow's None, pandas.NA), and a model with a NaN accuracy made the axes' ends NaN
    (nice_ticks: "ticks need finite ends"): no report at all. Now the model is left out, nothing is
    held out and no threshold line is drawn."""
    from meta_study.report import _points_svg

    fits, points, _ = fitted
    row = {**_head(fits), "holdout_threshold": null, "trusted": pd.NA}
    pts = points.copy()
    pts.loc[3, "ds_accuracy"] = np.nan
    pts.loc[5, "us_accuracy"] = np.nan
    svg = _points_svg(row, pts)
    assert svg.count("<circle") == len(points) - 2, svg[:400]
    assert "class=h>" not in svg and "class=thr" not in svg and "held out" not in svg
    assert "nan" not in svg.lower() and "inf" not in svg
    assert "headline prediction (not trusted)" in svg     # NA is not trusted (bool(NA) raised)


def test_a_hover_view_marks_the_threshold_where_it_holds_models_out(fitted):
    """With a threshold the line is drawn where it holds models out, inside the axes, and the
    models beyond it are hollow (as the figures and the explorer draw them)."""
    from meta_study.report import _points_svg

    fits, points, _ = fitted
    row = _head(fits)
    svg = _points_svg(row, points)
    n_held = int((points["us_accuracy"] > row["holdout_threshold"]).sum())
    assert n_held and svg.count("class=h>") == n_held
    x = float(re.search(r"<line x1=([\d.]+) y1=10 x2=\1 y2=\d+ class=thr>", svg).group(1))
    assert 42 <= x <= 370


def test_the_report_is_written_for_rows_read_back_with_nulls(fitted, tmp_path):
    """The whole page, from a fits table whose threshold column came back as None and points with a
    model that logged no DS accuracy; a group none of whose models has both accuracies shows its line
    alone, and without a line too it has no view."""
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import render_report

    fits, points, _ = fitted
    fits = fits.astype({"holdout_threshold": object})
    fits["holdout_threshold"] = None
    pts = points.copy()
    pts.loc[2, "ds_accuracy"] = np.nan
    page = Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}, points=pts),
                              tmp_path / "rep"))
    text = page.read_text()
    assert text.count("<svg class=points") == 1 and "class=band" in text
    pts["ds_accuracy"] = np.nan
    page = Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}, points=pts),
                              tmp_path / "rep2"))
    text = page.read_text()
    assert text.count("<svg class=points") == 1 and "<circle" not in text.split("<svg class=points")[1]
    fits["horizon_us"] = np.nan
    page = Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}, points=pts),
                              tmp_path / "rep3"))
    assert "<svg class=points" not in page.read_text()


# 2. the interval band

def test_the_hover_view_shades_the_headline_interval_as_the_explorer_does(fitted):
    """The static views drew the line alone; the figures and the explorer shade its interval at
    the row's level. The band is the row's :func:`predict_interval` from the best visible model to
    the tested horizon, under the models and inside the axes, its level named."""
    from meta_study.analysis import predict_interval
    from meta_study.report import _points_svg

    fits, points, _ = fitted
    row = _head(fits)
    svg = _points_svg(row, points)
    assert "<polygon class=band" in svg and "90% interval of the headline prediction" in svg
    assert svg.index("<polygon class=band") < svg.index("<circle")
    band, line = _coords(svg, "polygon"), _coords(svg, "polyline")
    n = len(band) // 2
    assert n == 40 and np.allclose(band[:n, 0], line[:, 0])     # along the line
    assert (band[:n, 1] <= line[:, 1] + 0.11).all() and (band[n:][::-1, 1] >= line[:, 1] - 0.11).all()
    # its height against the line's, in pixels, as predict_interval gives it in accuracy
    xs = np.linspace(row["best_us"], row["horizon_us"], 40)
    lo, hi = predict_interval(row, xs)
    ticks = [float(t) for t in re.findall(r"class=tk text-anchor=end>([^<]*)<", svg)]
    per_pt = (270 - 42 - 10) / (ticks[-1] - ticks[0])
    assert np.allclose(band[n:][::-1, 1] - band[:n, 1], (hi - lo) * 100 * per_pt, atol=0.25)
    assert (band[:, 0] >= 42).all() and (band[:, 0] <= 370).all() and (band[:, 1] >= 10).all()
    assert (band[:, 1] <= 228).all()
    other = _points_svg({**row, "level": 0.8}, points)
    assert "80% interval of the headline prediction" in other


def test_a_row_without_a_back_test_has_no_band(fitted):
    from meta_study.report import _points_svg

    fits, points, _ = fitted
    svg = _points_svg({**_head(fits), "interval_residuals": "[]"}, points)
    assert "<polyline class=law" in svg and "class=band" not in svg


def test_the_hover_note_says_what_the_shading_is(fitted):
    from meta_study.report import _hover_html

    fits, points, _ = fitted
    heads = fits[fits["headline"].astype(bool)].reset_index(drop=True)
    note = html.unescape(re.sub(r"<[^>]+>", " ", _hover_html(heads, points).split("<div class=grid>")[0]))
    assert "shaded by its 90% interval" in note, note


# 3. one name for the headline's quantile

@pytest.mark.parametrize(("q", "name"), [(0.4, "0.4 quantile"), (np.float32(0.4), "0.4 quantile"), (0.5, "median"),
                                         (None, "median"), (float("nan"), "median"), (pd.NA, "median"),
                                         ("not a number", "median")])
def test_quantile_name_reads_a_missing_quantile_as_the_legacy_median(q, name):
    from meta_study.analysis.figures import quantile_name

    assert quantile_name(q) == name


def test_the_page_and_the_figure_name_a_legacy_headline_the_median(fitted, tmp_path):
    """A fits table written before ``member_quantile`` was stored holds the members' median
    (headline.LEGACY_QUANTILE). Its predictor column said "median", but the page's text above it
    said "the headline is the 0.4 quantile of their predictions"; the figures' legend and the
    report's words are now one helper's."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import draw_group
    from meta_study.analysis.headline import LEGACY_QUANTILE, MEMBER_QUANTILE
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import _headline_what, render_report

    fits, points, sel = fitted
    legacy = fits.drop(columns=["member_quantile"])
    text = _page_text(Path(render_report(Analysis(fits=legacy, options=AnalysisOptions(), provenance={},
                                                  points=points), tmp_path / "old")))
    assert "the headline is the median of their predictions" in text, text[:1500]
    assert "0.4 quantile" not in text
    text = _page_text(Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={},
                                                  points=points), tmp_path / "new")))
    assert f"the headline is the {MEMBER_QUANTILE:g} quantile of their predictions" in text
    assert "median" not in text
    # the figure of the same headline names it as the table's predictor column does
    for q, rows in ((LEGACY_QUANTILE, legacy), (MEMBER_QUANTILE, fits)):
        s = dataclasses.replace(sel, headline=dataclasses.replace(sel.headline, quantile=q))
        fig, ax = plt.subplots()
        try:
            draw_group(ax, points["us_accuracy"].to_numpy(float), points["ds_accuracy"].to_numpy(float), s, None, "t")
            labels = [t.get_text() for t in ax.get_legend().get_texts()]
        finally:
            plt.close(fig)
        said = _headline_what(_head(rows)).split(" of ")[0]
        assert f"laws' {said} (fit range)" in labels, (said, labels)


def test_the_sensitivity_text_names_the_headline_as_the_rows_do():
    from meta_study.report import _sensitivity_text

    rows = []
    for frontier in ("vertices", "all"):
        for n in (10, 20):
            rows.append({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "n": n, "trial": 0,
                         "frontier": frontier, "n_fit": n, "k": np.nan, "alpha": np.nan, "e_ir": np.nan,
                         "saturation": np.nan, "fit_err": 0.01, "pred_err": 0.02, "status": "ok"})
    table = pd.DataFrame(rows).astype({"shots": "Int64"})
    assert "The headline is the 0.4 quantile of every law" in _sensitivity_text(table)
    assert "The headline is the median of every law" in _sensitivity_text(table, "median")
