"""Session 45 review of the refit job, the figures, the explorer and the HTML report."""

from __future__ import annotations

import numpy as np
import pytest

from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Group
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.tables import fit_table


def _saturating(ds_task: str = "t", seed: int = 1, n: int = 60) -> Group:
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, 0.9, n)
    ds = np.clip(0.95 - 0.8 * (1 - us) ** 1.4 - rng.exponential(0.01, n), 0, 1)
    return Group("up", ds_task, "fewshot", 5, us, ds)


def _interval_fill(ax):
    """The label and the (lo, hi) edges of the panel's solid interval band."""
    from matplotlib.collections import PolyCollection

    for c in ax.collections:
        if isinstance(c, PolyCollection) and not c.get_label().startswith("_"):
            v = c.get_paths()[0].vertices
            return c.get_label(), v
    return None, None


@pytest.mark.parametrize("level", [0.5, 0.95])
def test_group_figure_draws_and_names_the_interval_level_the_fits_were_made_at(level):
    """``figures.selection_interval`` drew the 90% interval, labelled "90% interval", whatever
    ``SelectionOptions(level=...)`` the fits (and every answer beside the figure) were made at."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import fit_grid_figure, group_figure, selection_interval

    _, panels = fit_table([_saturating()], FitOptions(selection=SelectionOptions(level=level)))
    panel = {k: v for k, v in panels[0].items() if k != "slug"}
    panel["level"] = level      # what the fits row records (tables._panel passes it along)
    sel = panel["selection"]
    assert sel.usable
    xs = np.linspace(sel.headline.best_us, sel.headline.horizon_us, 7)
    np.testing.assert_allclose(selection_interval(sel, xs, level)[0], sel.headline.interval(xs, level)[0])
    assert not np.allclose(sel.headline.interval(xs, level)[0], sel.headline.interval(xs, 0.9)[0])
    for fig in (group_figure(panel), fit_grid_figure([panel])):
        ax = fig.axes[0]
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert f"{100 * level:g}% interval" in labels and "90% interval" not in labels, labels
        label, verts = _interval_fill(ax)
        assert label == f"{100 * level:g}% interval"
        lo, hi = sel.headline.interval(verts[:, 0] / 100, level)
        y = verts[:, 1] / 100
        # every vertex of the band is on the level's lower or upper edge
        assert np.all(np.isclose(y, lo, atol=1e-6) | np.isclose(y, hi, atol=1e-6))
        plt.close(fig)


def test_a_panel_without_a_level_draws_the_default_90_percent():
    from meta_study.analysis.figures import fit_grid_figure

    _, panels = fit_table([_saturating()])
    panel = {k: v for k, v in panels[0].items() if k not in ("slug", "level")}
    fig = fit_grid_figure([panel])
    assert "90% interval" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_the_pipeline_s_figures_draw_the_fits_level():
    """End to end: a fit at ``SelectionOptions(level=0.5)`` draws and names its 50% interval."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import group_figure

    _, panels = fit_table([_saturating()], FitOptions(selection=SelectionOptions(level=0.5)))
    fig = group_figure({k: v for k, v in panels[0].items() if k != "slug"})
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    assert "50% interval" in labels, labels


def test_a_refit_run_says_whether_its_stop_paying_point_is_a_finding(tmp_path):
    """The MLflow run logged ``stop_paying_us`` for every headline where it was finite, an
    extrapolation to 100% US (the report: "not findings") as much as a supported point, and
    nothing that told them apart: a dashboard of refits plotted the extrapolation as the finding."""
    import pandas as pd

    from meta_study.refit import RefitConfig, _run_values, metric_key

    base = {"us_task": "up", "eval_protocol": "fewshot", "shots": 5, "law": "median", "frontier": "headline",
            "headline": True, "saturation": 0.9, "alpha": float("nan"), "k": float("nan"), "e_ir": float("nan"),
            "fit_err": 0.01, "pred_err": 0.02, "backtest_err": 0.02, "trusted": True}
    fits = pd.DataFrame([{**base, "ds_task": "found", "stop_paying_us": 0.7, "stop_paying_supported": True},
                         {**base, "ds_task": "extrapolated", "stop_paying_us": 0.97, "stop_paying_supported": False}])
    fits.astype({"shots": "Int64"}).to_parquet(tmp_path / "fits.parquet")
    info = {"store": "st", "store_version": 1, "fingerprint": "f", "options_fingerprint": "o", "groups": {},
            "changed": [], "unfittable": [], "sources": [], "time": "2026-12-06T00:00:00+00:00"}
    _, metrics = _run_values(RefitConfig(store="st", out=str(tmp_path / "out")), tmp_path, info)
    got = {k: v for k, v, _ in metrics}
    for task, supported in (("found", 1.0), ("extrapolated", 0.0)):
        assert got[metric_key(("up", task, "fewshot", 5), "headline", "stop_paying_us")] > 0
        assert got[metric_key(("up", task, "fewshot", 5), "headline", "stop_paying_supported")] == supported


@pytest.mark.slow(40)
def test_a_refit_s_figures_name_the_fit_settings_as_every_analysis_command_s_do(tmp_path):
    """A refit's figure footers said "refit <version>" and no fit setting: a refit at
    ``--holdout-quantile 0.7 --loss huber`` drew figures that read as the defaults' (docs: figures
    carry "the store, its version, the fit settings and the time")."""
    from pathlib import Path

    from conftest import committed_store, quick_refit_config

    from meta_study.analysis.tables import options_text
    from meta_study.refit import refit

    fit = FitOptions(holdout_quantile=0.7, loss="huber")
    cfg = quick_refit_config(committed_store(tmp_path / "st", runs=30, tasks=("a",)), tmp_path / "out", fit=fit)
    r = refit(cfg, log=lambda m: None)
    assert r.status == "refitted"
    import html
    import re

    svg = (Path(r.version_dir) / "figures" / "fits_grid.svg").read_text()
    group = re.search(r'<g id="footer">(.*?)</g>', svg, re.S)
    assert group, "no footer"
    # the footer's words, its wrapped lines joined again
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", group.group(1))).split())
    assert f"refit {Path(r.version_dir).name}" in text and options_text(fit) in text, text


def _edge_reason() -> str:
    """The trust reason of a headline whose back-tests passed but whose curve misses its best
    visible model, as ``selection._trust`` words it."""
    return ("the headline at the best visible US accuracy (77.6%) lies 4.0 pt below the best visible DS accuracy, "
            "more than the tolerance 3 pt: the curve does not reach the edge of its data (back-test error 2.1 pt)")


def test_the_no_trusted_answer_box_names_the_edge_rule_as_a_reason():
    """The box counted reasons by their words up to the first bracket: the edge rule's groups read
    "the headline at the best visible US accuracy: 2 of 3 groups", which names no reason."""
    import pandas as pd

    from meta_study.report import _verdict

    heads = pd.DataFrame({"trusted": [False] * 3, "trust_reason": [_edge_reason(), _edge_reason().replace("77.6", "80.1"),
                                                                    "back-test error 9.0 pt > tolerance 3 pt"],
                          "n_points": [40] * 3, "n_heldout": [8] * 3, "best_us": [float("nan")] * 3})
    text = _verdict(heads)
    assert "the curve misses the best visible DS accuracy by more than the tolerance: 2 of 3 groups" in text, text
    assert "US accuracy: 2 of 3" not in text and "back-test error above the tolerance: 1 of 3 groups" in text


def test_the_report_says_both_conditions_of_trust(tmp_path):
    """The page said a headline "is trusted when its own back-test error ... is within the tolerance",
    beside groups whose back-test error was within it and that were not trusted (the edge rule)."""
    from conftest import committed_store

    from meta_study.analysis.results import AnalysisOptions, analyze
    from meta_study.report import render_report

    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    page = render_report(analyze(s, options=AnalysisOptions(), use_ray=False), tmp_path / "rep")
    text = " ".join(open(page, encoding="utf-8").read().split())
    assert "is within the tolerance, and its curve at the best visible model lies within the tolerance of the best " \
           "DS accuracy seen" in text
