"""Session 48: a new user's first hour, through ``meta-study demo --synthetic`` and its report.

What a first reading of the demo's terminal lines and its HTML report found misleading: a
figure's legend drawn over its provenance footer, and statements whose words did not match what
the numbers beside them were.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest


def _eq1_rows(tasks=("far", "mid", "near")) -> pd.DataFrame:
    """Eq. 1 rows of fits.parquet as params_vs_shots reads them: hull and all, at four shot counts."""
    rows = []
    for i, task in enumerate(tasks):
        for shots in (1, 5, 10, 25):
            for frontier in ("vertices", "all"):
                rows.append({"us_task": "sim_up", "eval_protocol": "fewshot", "ds_task": task, "shots": shots,
                             "frontier": frontier, "law": "eq1", "status": "ok", "message": "",
                             "k": 0.6 + 0.1 * i + 0.01 * shots, "alpha": 1.5 + 0.3 * i, "e_ir": 0.1 + 0.15 * i})
    return pd.DataFrame(rows)


def _dark_rows(path, x_from: float, x_to: float) -> np.ndarray:
    """The pixel rows of a PNG with dark pixels between ``x_from`` and ``x_to`` (fractions of its width)."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"))
    return np.where((a[:, int(x_from * a.shape[1]):int(x_to * a.shape[1])] < 160).any(axis=1))[0]


# 1. params_vs_shots: the "Eq. 1 fitted to" legend drawn over the footer

def test_the_params_figure_legend_stays_where_it_is_when_the_footer_is_added(tmp_path):
    """The legend at the figure's lower right edge ("Eq. 1 fitted to: hull vertices, all points,
    estimate") is placed on the edge of the area saved, and ``bbox_inches="tight"`` saved an area
    reaching down to the footer: in the demo's report its "estimate" entry and the footer's
    "meta-study 0.1.0 · 2026-12-06 ..." were drawn over each other. The footer is added under
    the figure; nothing above it moves."""
    from meta_study.analysis.figures import params_figure, save

    path = save(params_figure(_eq1_rows()), str(tmp_path / "p"), footer="data: x")[0]
    left = _dark_rows(path, 0.0, 0.1)               # the footer is the last run of text on the left
    gaps = np.where(np.diff(left) > 1)[0]
    footer_top = int(left[gaps[-1] + 1]) if len(gaps) else int(left[0])
    legend_bottom = int(_dark_rows(path, 0.88, 1.0).max())     # the legends' column, right of the footer
    assert legend_bottom < footer_top, (legend_bottom, footer_top)


# 2. the report's table: the back-test column is the mean over the cuts

@pytest.fixture(scope="module")
def one_group_fits() -> pd.DataFrame:
    """fits.parquet rows of one fitted group of 14 models."""
    from meta_study.analysis.fitting import FitOptions, fit_groups
    from meta_study.analysis.groups import Group
    from meta_study.analysis.tables import fits_frame

    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.3, 0.8, 14))
    g = Group("up", "a", "fewshot", 5, us, 0.9 - 0.6 * (1 - us) ** 1.3)
    return fits_frame([g], fit_groups([(g.us_accuracy, g.ds_accuracy)], FitOptions(), keys=[g.key]))


def test_the_table_says_its_back_test_error_is_the_mean_over_the_cuts(one_group_fits):
    """A headline trusted on its latest cut alone ("latest back-test error 2.4 pt <= tolerance 3 pt
    (the mean over 4 cuts: 3.9 pt)") stood in the table as "back-test err (pt) 3.92 ... headline,
    trusted": over the tolerance, trusted, and no word on which error the column holds."""
    from meta_study.report import _table_html

    page = _table_html(one_group_fits)
    heads = re.findall(r"<th[^>]*>(.*?)</th>", page)
    backtest = [h for h in heads if h.startswith("back-test err")]
    assert backtest == ["back-test err, mean over cuts (pt)"], heads
    assert "flat guess back-test, mean over cuts (pt)" in heads, heads
    assert "latest two cuts" in page           # the header's tooltip says the other rule


# 3. Fig. 3's rows average the shot settings of a task: said

def _sensitivity(shots_of: dict[str, tuple[int, ...]]) -> pd.DataFrame:
    """A raw sensitivity table: per DS task and shot count, two frontiers x three sizes x two trials."""
    rows = []
    for ds, shots in shots_of.items():
        for s in shots:
            for frontier in ("vertices", "all"):
                for n in (10, 20, 40):
                    for trial in (0, 1):
                        err = 0.01 * (1 + trial) + 0.1 / n
                        rows.append({"us_task": "up", "ds_task": ds, "eval_protocol": "fewshot", "shots": s, "n": n,
                                     "trial": trial, "frontier": frontier, "n_fit": n, "k": np.nan,
                                     "alpha": np.nan, "e_ir": np.nan, "saturation": np.nan, "fit_err": err,
                                     "pred_err": 2 * err, "status": "ok"})
    return pd.DataFrame(rows).astype({"shots": "Int64"})


def test_the_sensitivity_text_says_a_row_averages_its_shot_settings():
    """The demo's Fig. 3 has a row "sim_up -> far (fewshot)" for the four groups answered above it
    (1, 5, 10 and 25 shots), averaged step by step; the page said "Per US -> DS task pair" only,
    and a reader took each row for one group."""
    from meta_study.report import _sensitivity_rows

    several = _sensitivity_rows(_sensitivity({"a": (1, 5, 10), "b": (1, 5, 10)}))
    assert several == "Per DS task, each row the median over its shot settings at each sample-size step", several
    # one group per task: nothing averaged, nothing said
    assert _sensitivity_rows(_sensitivity({"a": (5,), "b": (5,)})) == "Per DS task"


# 4. the demo's known-law check: the stop-paying range is the laws' spread, not a 90% interval

def test_the_known_law_check_calls_the_stop_paying_range_the_laws_spread(tmp_path):
    """`demo --synthetic`'s check, under "truth inside the 90% interval?", printed a supported
    stop-paying point as "stops paying 87.4% in [80.0, inf] yes": the report says that range as
    "(spread of the laws: ...)", never a 90% interval, and an upper end at inf is "past the data"."""
    import math

    from meta_study.demo import _compare_known_laws
    from test_demo import _synthetic_results

    results, fits = _synthetic_results(tmp_path / "r")
    i = fits.index[fits["headline"] & (fits["ds_task"] == "mid")][0]
    fits.loc[i, ["trusted", "stop_paying_supported"]] = [True, True]
    fits.loc[i, ["stop_paying_us", "stop_paying_lo", "stop_paying_hi"]] = [0.8, 0.7, math.inf]
    fits.to_parquet(results / "fits.parquet")
    lines: list[str] = []
    _compare_known_laws(results, lines.append)
    mid = next(line for line in lines if line.split()[0] == "mid")
    said = mid[mid.index("stops paying"):]
    assert "laws' spread" in said and "past the data]" in said and "inf" not in said, said


# 5. the headline's members: never the fits to every model

def test_the_answers_intro_says_the_fits_to_every_model_are_not_members(one_group_fits, tmp_path):
    """"every law is fitted to every frontier estimator ...; the headline is the 0.4 quantile of
    their predictions" stood above "0.4 quantile of 25 law x frontier fits" and figures whose footer
    says "5 laws x 6 frontiers": the sixth, "all", is fitted and never a member."""
    import html
    from pathlib import Path

    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.report import render_report

    assert (one_group_fits["frontier"] == "all").any()
    page = Path(render_report(Analysis(fits=one_group_fits, options=AnalysisOptions(), provenance={}), tmp_path / "r"))
    intro = html.unescape(re.sub(r"<[^>]+>", "", page.read_text().split("<h2>Answers</h2>")[1].split("</p>")[0]))
    assert "The fits to every model (the frontier \u201call\u201d) are never among them" in intro, intro
