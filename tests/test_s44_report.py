"""The report's table of fits as a reader sees it in a real browser (session 44)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Per row of the fits table, the text of its first three cells (US task, DS task, protocol) and
#: how many lines of the page each takes.
CELL_LINES = """() => Array.from(document.querySelectorAll('table.sortable tbody tr')).flatMap(tr =>
  Array.from(tr.querySelectorAll('td.l')).slice(0, 3).map(td => {
    const r = document.createRange(); r.selectNodeContents(td);
    return [td.textContent, new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top))).size]; }))"""


@pytest.mark.slow(20)
def test_task_names_are_whole_words_and_a_narrow_window_scrolls_the_table_not_the_page(tmp_path):
    """The task columns broke every name at any letter to leave room for the others: the demo's
    report showed "imag / enet" and "synth / _textu / re" at a 1,280 px window. And at a phone's
    width the table and the explorer's legend widened the whole page (918 px at 400), taking the
    answers' text with it."""
    from playwright.sync_api import sync_playwright

    from conftest import make_rows
    from meta_study.analysis.results import AnalysisOptions, analyze
    from meta_study.report import render_report
    from meta_study.store import Store
    from meta_study.validation import validate
    from test_report_html import CHROMIUM, FLAGS

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(20, us_task="imagenet", ds_tasks=("imagenet-real", "synth_texture"))).table)
    page = render_report(analyze(s, options=AnalysisOptions(), use_ray=False), tmp_path / "rep")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(Path(page).resolve().as_uri(), wait_until="load")
        cells = tab.evaluate(CELL_LINES)
        narrow = browser.new_page(viewport={"width": 400, "height": 900})
        narrow.goto(Path(page).resolve().as_uri(), wait_until="load")
        wide, window = narrow.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        # what the explorer's script does for a group without a hold-out threshold
        hidden = narrow.evaluate("(() => { const s = document.getElementById('ex-leg-thr'); s.hidden = true; "
                                 "return getComputedStyle(s).display; })()")
        browser.close()
    assert {t for t, _ in cells} >= {"imagenet", "imagenet-real", "synth_texture", "fewshot"}, cells
    assert [c for c in cells if c[1] != 1] == [], cells
    assert wide <= window, (wide, window)
    # the explorer's legend entries wrap as units now; one its group lacks is still not shown
    assert hidden == "none", hidden
