"""Session 43: the report and figures a researcher reads first, their text against the tables
(small procedural tables; text, not pixels)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd

from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fit_table


def _page_text(page: Path) -> str:
    """The page's words, as a reader sees them (tags, scripts and styles out; one space apart)."""
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def _sensitivity_rows(groups: dict[tuple[str, str], bool]) -> pd.DataFrame:
    """A raw sensitivity table (:data:`SENSITIVITY_COLUMNS`): per (US task, DS task) group, two
    frontiers x three sizes x two trials; a group marked False has no fit at any size (NaN errors)."""
    rows = []
    for (us, ds), fitted in groups.items():
        for frontier in ("vertices", "all"):
            for n in (10, 20, 40):
                for trial in (0, 1):
                    err = 0.01 * (1 + trial) + 0.1 / n if fitted else np.nan
                    rows.append({"us_task": us, "ds_task": ds, "eval_protocol": "fewshot", "shots": 5, "n": n,
                                 "trial": trial, "frontier": frontier, "n_fit": n, "k": np.nan, "alpha": np.nan,
                                 "e_ir": np.nan, "saturation": np.nan, "fit_err": err, "pred_err": 2 * err,
                                 "status": "ok" if fitted else "too_few_points"})
    return pd.DataFrame(rows).astype({"shots": "Int64"})


def test_the_sensitivity_text_names_its_rows_as_the_figure_does():
    """Fig. 3 of two US tasks sharing a DS task has a row per US -> DS pair ("up -> a", "up2 -> a",
    its title "per US -> DS task"); the page above it said "Per DS task"."""
    from meta_study.analysis.figures import sensitivity_figure
    from meta_study.analysis.sensitivity import summarize_sensitivity
    from meta_study.report import _sensitivity_rows as rows_text
    import matplotlib.pyplot as plt

    two_us = _sensitivity_rows({("up", "a"): True, ("up2", "a"): True})
    fig = sensitivity_figure(summarize_sensitivity(two_us))
    assert "per US \u2192 DS task" in fig.legends[0].get_title().get_text()
    plt.close(fig)
    assert html.unescape(rows_text(two_us)) == "Per US \u2192 DS task pair"
    # one US task: as before
    assert rows_text(_sensitivity_rows({("up", "a"): True, ("up", "b"): True})) == "Per DS task"


def test_fig3_and_the_page_say_which_groups_no_sample_size_could_fit(tmp_path):
    """A group too small to fit at any sample size vanished from Fig. 3 (its blank row dropped)
    without a word, beside an answer for it on the page."""
    from meta_study.analysis.figures import sensitivity_figure
    from meta_study.analysis.outputs import write_sensitivity
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.analysis.sensitivity import summarize_sensitivity
    from meta_study.report import render_report
    import matplotlib.pyplot as plt

    table = _sensitivity_rows({("up", "a"): True, ("up", "b"): True, ("up", "tiny"): False})
    fig = sensitivity_figure(summarize_sensitivity(table))
    assert len([a for a in fig.axes if a.get_title()]) == 4          # rows a and b, two panels each
    assert "1 of 3 DS tasks not drawn: no fit at any sample size" in fig.legends[0].get_title().get_text()
    plt.close(fig)
    every = sensitivity_figure(summarize_sensitivity(table[table["ds_task"] != "tiny"]))
    assert "not drawn" not in every.legends[0].get_title().get_text()
    plt.close(every)

    us = np.linspace(0.3, 0.8, 12)
    fits, _ = fit_table([Group("up", t, "fewshot", 5, us, 0.9 * us) for t in ("a", "b", "tiny")])
    write_sensitivity(table, str(tmp_path / "rep"))
    text = _page_text(Path(render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={},
                                                  sensitivity=table), tmp_path / "rep")))
    section = text.split("Sample-size sensitivity", 1)[1]
    assert "1 of 3 DS tasks is not drawn: no fit at any sample size." in section, section[:600]


def test_params_vs_shots_says_which_series_have_no_usable_fit():
    """A DS task whose Eq. 1 fits failed at every shot count vanished from F.4/F.5's legend without
    a word; where every series failed, the panel said "no few-shot groups with several shot
    settings" of a store full of them; and a series with usable fits only on frontiers the figure
    does not draw had a legend entry and no line."""
    from meta_study.analysis.figures import params_figure
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.3, 0.85, 30))
    groups = []
    for s in (1, 5, 10):
        groups.append(Group("up", "a", "fewshot", s, us, 1 - (0.1 + (1 - us) ** 1.5) * (1 + 1 / s)
                            + rng.normal(0, 0.01, 30)))
        groups.append(Group("up", "b", "fewshot", s, np.array([0.4, 0.5]), np.array([0.3, 0.35])))
    fits, _ = fit_table(groups)
    eq1 = fits[fits["law"] == "eq1"]

    def read(frame: pd.DataFrame) -> tuple[str, list[str], list[str]]:
        fig = params_figure(frame)
        out = (fig._suptitle.get_text(), [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else [],
               [t.get_text() for ax in fig.axes for t in ax.texts])
        plt.close(fig)
        return out

    title, legend, _ = read(eq1)
    assert legend == ["up \u2192 a"] and "(1 of 2 series not drawn: no usable Eq. 1 fit)" in title, (title, legend)
    title, legend, texts = read(eq1[eq1["ds_task"] == "b"])
    assert not legend and "(1 of 1 series not drawn: no usable Eq. 1 fit)" in title, title
    assert texts == ["no usable Eq. 1 fit to draw"], texts
    # usable only on bins (not drawn): no legend entry without a line
    title, legend, _ = read(eq1[(eq1["ds_task"] == "b") | (eq1["frontier"] == "bins")])
    assert not legend, legend
    title, legend, _ = read(eq1[eq1["ds_task"] == "a"])
    assert "not drawn" not in title, title


def test_the_hover_view_names_a_run_as_the_explorer_does() -> None:
    """Each group's hover names were cut to the prefixes that set its own runs apart: a run
    ``abcdefgh-1`` alone in its group read ``abcdefgh`` there, and ``abcdefgh-1`` in the
    explorer and the other group, where ``abcdefgh-2`` stands beside it."""
    import numpy as np
    import pandas as pd

    from meta_study.analysis.fitting import FitOptions, fit_groups
    from meta_study.analysis.groups import Group
    from meta_study.analysis.tables import fits_frame
    from meta_study.explorer import point_names
    from meta_study.report import _hover_html

    rng = np.random.default_rng(0)
    rows, groups = [], []
    for task, runs in (("a", ["abcdefgh-1"] + [f"x{i:07d}" for i in range(11)]),
                       ("b", ["abcdefgh-1", "abcdefgh-2"] + [f"x{i:07d}" for i in range(10)])):
        us = np.sort(rng.uniform(0.3, 0.8, len(runs)))
        ds = 0.9 - 0.6 * (1 - us) ** 1.3
        groups.append(Group("up", task, "fewshot", 5, us, ds))
        rows += [{"us_task": "up", "ds_task": task, "eval_protocol": "fewshot", "shots": 5, "run_id": r,
                  "model_name": "vit", "us_accuracy": u, "ds_accuracy": d} for r, u, d in zip(runs, us, ds)]
    points = pd.DataFrame(rows)
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], FitOptions(), keys=[g.key for g in groups])
    fits = fits_frame(groups, sels)
    html = _hover_html(fits[fits["headline"]].reset_index(drop=True), points)
    want = dict(zip(points["run_id"], point_names(points)))["abcdefgh-1"]
    assert "abcdefgh-1" in want
    assert html.count(f"<title>{want}: US") == 2, html[:2000]
