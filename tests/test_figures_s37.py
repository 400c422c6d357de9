"""Session 37 review of the figures, the report's failure count and the demo's step lines."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fit_table


def _panel(group: Group) -> dict:
    _, panels = fit_table([group])
    return {k: v for k, v in panels[0].items() if k != "slug"}


def _saturating(ds_task: str = "t", seed: int = 1, n: int = 60) -> Group:
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.3, 0.9, n)
    ds = np.clip(0.95 - 0.8 * (1 - us) ** 1.4 - rng.exponential(0.01, n), 0, 1)
    return Group("up", ds_task, "fewshot", 5, us, ds)


def _style(color, ls) -> tuple:
    from matplotlib.colors import to_hex

    return to_hex(color), {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dashdot"}.get(ls, ls)


def test_every_line_style_of_a_group_figure_has_a_legend_entry():
    """The paper's Eq. 1 went on as a blue dashed line over the held-out range, and the legend
    explained only the red dashes ("beyond the tested horizon"): what the blue dashes were, no one
    could tell."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from meta_study.analysis.figures import fit_grid_figure, group_figure

    panel = _panel(_saturating())
    assert panel["paper"] is not None and panel["paper"].fit.usable
    assert (panel["us"] > panel["selection"].holdout_threshold).any()     # a held-out range to extend over
    for fig in (group_figure(panel), fit_grid_figure([panel])):
        ax = fig.axes[0]
        (legend,) = fig.legends       # one legend a figure (session 52)
        explained = {_style(h.get_color(), h.get_linestyle()) for h in legend.legend_handles
                     if isinstance(h, Line2D) and h.get_linestyle() not in ("None", "")}
        drawn = {_style(ln.get_color(), ln.get_linestyle()) for ln in ax.lines
                 if ln.get_linestyle() not in ("None", "")}
        assert drawn <= explained, drawn - explained
        plt.close(fig)


@pytest.mark.parametrize("edge", [1.0, 0.0])
def test_models_at_100_or_0_percent_ds_are_not_cut_by_the_axes_and_no_tick_passes_the_edge(edge):
    """Models at exactly 100% DS (or 0%) sat on the axes' top (bottom) edge, half cut off."""
    import matplotlib.pyplot as plt

    from meta_study.analysis.figures import fit_grid_figure, group_figure

    rng = np.random.default_rng(2)
    us = rng.uniform(0.3, 0.9, 60)
    if edge == 1.0:          # a task the best models solve
        ds = np.clip(0.4 + 1.2 * (us - 0.3) - rng.exponential(0.02, 60), 0, 1)
    else:                    # a task the worst models fail
        ds = np.clip(-0.3 + 1.2 * (us - 0.3) - rng.exponential(0.02, 60), 0, 1)
    assert (ds == edge).sum() >= 3
    panel = _panel(Group("up", "edge", "fewshot", 5, us, ds))
    for fig in (fit_grid_figure([panel]), group_figure(panel)):
        for ax in (a for a in fig.axes if a.axison):
            y0, y1 = ax.get_ylim()
            shown = (us * 100 >= ax.get_xlim()[0]) & (us * 100 <= ax.get_xlim()[1]) & (ds == edge)
            if not shown.any():
                continue
            margin = 0.01 * (y1 - y0)
            assert (y1 >= 100 + margin) if edge == 1.0 else (y0 <= -margin), (ax.get_title(), y0, y1)
            fig.canvas.draw()
            ticks = [t for t in ax.get_yticks() if y0 <= t <= y1]
            assert ticks and all(0 <= t <= 100 for t in ticks), (ax.get_title(), ticks)
        plt.close(fig)


def test_the_reports_failed_fit_count_agrees_with_its_red_rows(tmp_path):
    """"Fits could not be made for 2 groups (in red ...)" stood above a table with 4 groups in red:
    a failed paper's Eq. 1 row is red while its group's headline stands."""
    import html as html_

    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import render_report

    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 40)
    groups = [_saturating("fine"),
              Group("up", "linear", "fewshot", 5, us, 0.1 + 0.8 * us),      # hull: 2 vertices, Eq. 1 needs 3
              Group("up", "convex", "fewshot", 5, us, us ** 3),
              Group("up", "two", "fewshot", 5, np.array([0.4, 0.6]), np.array([0.3, 0.5]))]   # nothing to fit
    fits, _ = fit_table(groups)
    page = Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}), tmp_path / "rep"))
    text = page.read_text()
    red = {tuple(html_.unescape(c) for c in re.findall(r"<td class=l>([^<]*)</td>", row)[:2])
           for row in re.findall(r"<tr class='bad'>(.*?)</tr>", text)}
    assert red == {("up", "linear"), ("up", "convex"), ("up", "two")}, red
    answers = re.sub(r"<[^>]+>", "", text.split("<h2>Answers</h2>", 1)[1].split("<ul", 1)[0])
    stated = [int(n) for n in re.findall(r"(\d+) (?:more )?groups?\b", answers)[1:]]   # after "4 groups, N trusted"
    assert sum(stated) == len(red) and 1 in stated and 2 in stated, answers


@pytest.mark.slow(40)
def test_a_second_synthetic_demo_says_it_reused_the_logged_runs(tmp_path):
    """A second `demo --synthetic` said "[1] simulated meta-study logged to MLflow" although it
    logged nothing (the runs of the first were reused)."""
    from meta_study.demo import SYNTH_EXPERIMENT, log_synthetic, synthetic_step
    from meta_study.mlflow_client import mlflow_client

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = synthetic_step(tracking)
    assert "logged to MLflow" in first and "reuse" not in first, first
    assert log_synthetic(tracking) == 240
    again = synthetic_step(tracking)
    assert "reused" in again and "logged to MLflow" not in again, again
    assert log_synthetic(tracking) == 240
    client = mlflow_client(tracking)
    exp = client.get_experiment_by_name(SYNTH_EXPERIMENT).experiment_id
    assert len(client.search_runs([exp], max_results=1000)) == 240
