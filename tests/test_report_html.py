"""The HTML report in a real headless Chromium: every image loads, the console stays clean."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import MAPPINGS, run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


#: Click the "back-test err (pt)" header of the first sortable table, twice: the column's values
#: after each click (the inline sort script must order them as numbers, up then down).
SORT_PROBE = """() => {
  const t = document.querySelector('table.sortable');
  const col = Array.from(t.tHead.rows[0].cells).findIndex(c => c.innerText.startsWith('back-test err'));
  const values = () => Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[col].innerText));
  t.tHead.rows[0].cells[col].click(); const up = values();
  t.tHead.rows[0].cells[col].click(); const down = values();
  return [up, down];
}"""


#: Per hover view: (number of points, the first point's tooltip).
HOVER_PROBE = """() => Array.from(document.querySelectorAll('svg.points')).map(
  s => [s.querySelectorAll('circle').length, s.querySelector('circle title').textContent])"""


def open_in_chromium(page_path: Path, probe: str | None = None) -> tuple[list, list] | tuple[list, list, object]:
    """(images as [src, complete, naturalWidth], console messages + page errors) after load, and
    what ``probe`` (a JS function) returns when given."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        messages: list = []
        page.on("console", lambda m: messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
        page.on("requestfailed", lambda r: messages.append(("requestfailed", r.url)))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        probed = page.evaluate(probe) if probe else None
        browser.close()
    return (images, messages, probed) if probe else (images, messages)


def test_report_of_the_timm_results_renders(tmp_path, timm_dir):
    store = tmp_path / "st"
    assert run_cli("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", str(store),
                   "--quiet").returncode == 0
    r = run_cli("report", str(store), "--out", str(tmp_path / "report"), "--serial", "--trials", "2", "--samples", "30")
    assert r.returncode == 0, r.stderr
    page = tmp_path / "report" / "index.html"
    html = page.read_text()
    assert "<h2>Answers</h2>" in html and "imagenet-real" in html and "not identified" in html
    # every group has its sentence: trusted ones state where scaling stops paying, the others why not
    assert html.count("<li") >= 5 and ("scaling stops paying" in html or "keeps paying" in html)
    assert "<table class=sortable>" in html and "fits.csv" in html   # HTML tables, CSV downloads
    images, messages, (up, down) = open_in_chromium(page, SORT_PROBE)
    assert len(up) >= 10 and up == sorted(up) and down == sorted(up, reverse=True), (up, down)
    # hover: every group's models as points whose tooltip names the run (the model)
    _, _, hover = open_in_chromium(page, HOVER_PROBE)
    import pandas as pd

    points = pd.read_parquet(tmp_path / "report" / "points.parquet")
    assert [n for n, _ in hover] == points.groupby("ds_task", sort=False).size().tolist()
    assert all(t.startswith("eva02") or "@" in t for _, t in hover) and all(": US " in t for _, t in hover)
    assert len(images) >= 9, images            # grid, 5 groups, sensitivity, 2 heatmaps
    broken = [i for i in images if not (i[1] and i[2] > 0)]
    assert not broken, broken
    assert not messages, messages


def test_hostile_task_names_are_escaped(tmp_path):
    import pandas as pd

    from meta_study.schema import validate
    from meta_study.store import Store
    from conftest import make_rows

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(30, ds_tasks=("<img src=x onerror=alert(1)>", "a&b"))).table)
    r = run_cli("report", s.uri, "--out", str(tmp_path / "rep"), "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    # 30 random models per group identify nothing, and the page says so plainly
    assert "No task is identified here" in html and "With 30 models per group" in html
    images, messages = open_in_chromium(tmp_path / "rep" / "index.html")
    assert all(i[1] and i[2] > 0 for i in images) and not messages, (images, messages)
