"""Session 56: the report shows the bootstrap's parameter intervals, not only a CSV link.

``meta-study report`` computed the bootstrap (``DIR/bootstrap.parquet``: per group x frontier x
parameter, the estimate of the paper's Eq. 1 and its percentile interval), and the page showed it
only as a link under "Tables": a reader never saw how uncertain each group's law is. The section
"Parameter uncertainty (bootstrap)" states each row's numbers, and says in words why a row has no
interval (no fit on the group's points; every usable resample fitted the fit's own points).
"""

from __future__ import annotations

import html
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_rows, run_cli

SECTION = "<h2>Parameter uncertainty (bootstrap)</h2>"


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


def _section(page: str) -> str:
    assert SECTION in page
    return page.split(SECTION, 1)[1].split("<h2>", 1)[0]


def _rows(section: str) -> dict[tuple[str, ...], list[str]]:
    """The section's table: (US task, DS task, protocol, shots, frontier) -> the other cells' text."""
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    out = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        cells = [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
        out[tuple(cells[:5])] = cells[5:]
    return out


def _cell(v: float, lo: float, hi: float, percent: bool) -> str:
    """What the page should show for one parameter, written here apart from the report's code."""
    def f(x: float) -> str:
        return "–" if not math.isfinite(x) else (f"{100 * x:.1f}" if percent else f"{x:.3g}")
    return f(v) + (f" [{f(lo)}-{f(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else "")


class _Balance(HTMLParser):
    """Every table, row, cell, paragraph and div opened is closed, in order."""

    TAGS = {"table", "thead", "tbody", "tr", "td", "th", "p", "div", "sub"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.TAGS:
            assert self.stack and self.stack[-1] == tag, (tag, self.stack)
            self.stack.pop()


def _balanced(fragment: str) -> None:
    p = _Balance()
    p.feed(fragment)
    p.close()
    assert not p.stack, p.stack


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    """`meta-study report` on a store of two groups of 40 models and one of 4 (3 fitting points:
    the hull vertices too few to fit, all points fitted only by resamples that draw all three)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    d = tmp_path_factory.mktemp("s56report")
    # group c's middle model lies below the chord of its neighbours: 2 hull vertices below the hold-out line
    small = make_rows(4, ds_tasks=("c",), run_prefix="x").assign(us_accuracy=[0.3, 0.5, 0.7, 0.9],
                                                                 ds_accuracy=[0.2, 0.25, 0.6, 0.7])
    rows = pd.concat([make_rows(40, ds_tasks=("a", "b")), small], ignore_index=True)
    store = Store(str(d / "st"))
    store.commit(validate(rows).table)
    r = run_cli("report", store.uri, "--out", str(d / "rep"), "--serial", "--samples", "60", "--sizes", "10,20",
                "--trials", "2")
    assert r.returncode == 0, r.stderr
    return (d / "rep" / "index.html").read_text(), pd.read_parquet(d / "rep" / "bootstrap.parquet")


def test_the_page_states_every_bootstrap_row_as_bootstrap_parquet_holds_it(reported):
    page, boot = reported
    section = _section(page)
    rows = _rows(section)
    assert len(rows) == boot.groupby(["us_task", "ds_task", "eval_protocol", "shots", "frontier"]).ngroups == 6
    for key, g in boot.groupby(["us_task", "ds_task", "eval_protocol", "shots", "frontier"], sort=False):
        us_task, ds_task, protocol, shots, frontier = key
        cells = rows[(us_task, ds_task, protocol, str(int(shots)), frontier)]
        p = g.set_index("param")
        want = [_cell(*p.loc[name, ["estimate", "lo", "hi"]].astype(float), percent=name in ("e_ir", "saturation"))
                for name in ("k", "alpha", "e_ir", "saturation")]
        assert cells[:4] == want, (key, cells)
        assert cells[4] == f"{int(p['n_ok'].iloc[0])} of 60", (key, cells)
    # what the interval is, said once, with its level, resamples and units
    intro = _text(section.split("<table", 1)[0])
    assert "95% percentile interval" in intro and "60 resamples of the group's fitting models" in intro
    assert "not a prediction interval" in intro
    assert "k and α are unitless" in intro and "are in percent" in intro
    assert "(% DS error)" in section and "(% DS accuracy)" in section
    _balanced(section)
    _balanced(page.split("<body>", 1)[1].split("<script>", 1)[0])


def test_a_group_without_an_interval_says_why_in_words(reported):
    """The 4-model group: 3 fitting points. No fit on its hull vertices (fewer than 3), and on all
    points every usable resample drew the same three points: no interval, said as such."""
    page, boot = reported
    rows = _rows(_section(page))
    c = boot[boot["ds_task"] == "c"].set_index(["frontier", "param"])
    assert c.loc[("vertices", "alpha"), "status"] == "too_few_points"
    assert rows[("up", "c", "fewshot", "5", "vertices")][:4] == ["–"] * 4
    assert rows[("up", "c", "fewshot", "5", "vertices")][-1] == "no fit: fewer than 3 points on this frontier"
    n_ok = int(c.loc[("all", "alpha"), "n_ok"])
    assert 0 < n_ok < 60 and math.isnan(c.loc[("all", "alpha"), "lo"])
    assert rows[("up", "c", "fewshot", "5", "all")][-1].startswith(
        f"no interval: every usable resample ({n_ok} of 60) drew the very points of the fit (3 fitting points)")
    intro = _text(_section(page).split("<table", 1)[0])
    assert "2 of 6 group × frontier rows have no interval (the note says why)." in intro
    # the 40-model groups have intervals, and no such note
    assert not any(rows[("up", t, "fewshot", "5", f)][-1].startswith("no ") for t in "ab" for f in ("vertices", "all"))


def _group():
    """One group of 30 models on a smooth law with noise."""
    from meta_study.analysis.groups import Group

    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.3, 0.8, 30))
    return Group("up", "a", "fewshot", 5, us, 0.9 - 0.6 * (1 - us) ** 1.3 + rng.normal(0, 0.01, 30))


def _boot(samples: int) -> pd.DataFrame:
    from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group

    g = _group()
    return bootstrap_group(g.key, g.us_accuracy, g.ds_accuracy, BootstrapOptions(samples=samples))


def _analysis(boot: pd.DataFrame | None, samples: int):
    """The group's fits with ``boot`` as its bootstrap, as ``analyze`` returns them."""
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.fitting import FitOptions, fit_groups
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.analysis.tables import fits_frame

    g = _group()
    fits = fits_frame([g], fit_groups([(g.us_accuracy, g.ds_accuracy)], FitOptions(), keys=[g.key]))
    opts = AnalysisOptions(bootstrap=BootstrapOptions(samples=samples) if boot is not None else None)
    return Analysis(fits=fits, options=opts, provenance={}, bootstrap=boot)


def test_too_few_resamples_and_alphas_bound_are_said_as_the_cli_says_them(tmp_path):
    """10 resamples at 95%: the intervals are narrower than their level (resolution_note), and the
    page says so; an alpha on its bound is said in the row, as `meta-study bootstrap` says it."""
    from meta_study.report import render_report

    boot = _boot(10)
    section = _section(Path(render_report(_analysis(boot, 10), tmp_path)).read_text())
    assert ("10 resamples per group are too few for 95% intervals: each end lies between the two most extreme "
            "resamples, and the intervals are narrower than 95%; --samples 41 or more resolves them.") in _text(section)
    # alpha at its upper bound on one frontier
    boot.loc[(boot["frontier"] == "vertices") & (boot["param"] == "alpha"), ["estimate", "hi"]] = 10.0
    rows = _rows(_section(Path(render_report(_analysis(boot, 10), tmp_path)).read_text()))
    assert rows[("up", "a", "fewshot", "5", "vertices")][-1] == "alpha at its bound 10"


def test_rows_are_capped_and_the_table_named_and_no_bootstrap_has_no_section(tmp_path):
    from meta_study.report import _bootstrap_html, render_report

    one = _boot(20)
    boot = pd.concat([one.assign(ds_task=t) for t in ("a", "b", "c")], ignore_index=True)
    section = _bootstrap_html(boot, 10.0, tmp_path, max_groups=1)
    assert len(_rows(section)) == 2          # the first group's two frontiers
    assert "… and 2 more groups (bootstrap.parquet has them all)." in _text(section)
    (tmp_path / "bootstrap.csv").write_text("")
    assert "(bootstrap.csv has them all)" in _text(_bootstrap_html(boot, 10.0, tmp_path, max_groups=1))
    assert "more groups" not in _text(_bootstrap_html(boot, 10.0, tmp_path))
    # no bootstrap made (a library call without one): no section, no empty table
    (tmp_path / "none").mkdir()
    page = Path(render_report(_analysis(None, 20), tmp_path / "none")).read_text()
    assert "Parameter uncertainty" not in page
