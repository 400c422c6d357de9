"""The HTML report in a real headless Chromium: every image loads, the console stays clean."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
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


#: The explorer: choose the last group, mark the eva02 models, zoom in at the centre, reset.
#: Returns (groups offered, circles drawn, marked, info line, domain before, after zoom, after reset).
EXPLORE_PROBE = """() => {
  const sel = document.getElementById('ex-group'), svg = document.getElementById('ex-svg');
  const find = document.getElementById('ex-find');
  sel.value = String(sel.options.length - 1); sel.dispatchEvent(new Event('change'));
  find.value = 'eva02'; find.dispatchEvent(new Event('input'));
  const before = svg.dataset.domain.split(',').map(Number), r = svg.getBoundingClientRect();
  svg.dispatchEvent(new WheelEvent('wheel', {deltaY: -400, clientX: r.left + r.width / 2,
                                             clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));
  const zoomed = svg.dataset.domain.split(',').map(Number);
  svg.dispatchEvent(new MouseEvent('dblclick', {bubbles: true}));
  return [sel.options.length, svg.querySelectorAll('circle').length, svg.querySelectorAll('circle.hit').length,
          document.getElementById('ex-info').textContent, before, zoomed, svg.dataset.domain.split(',').map(Number),
          Array.from(svg.querySelectorAll('circle.hit title')).map(t => t.textContent)];
}"""


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
    assert "<h2>Answers</h2>" in html and "imagenet-real" in html and "<b>not trusted</b>" in html
    # every group has its sentence: trusted ones state what +1/+3/+5 US points buy, the others why not
    assert html.count("<li") >= 5 and "DS pt per US pt" in html and "90% interval" in html
    assert "<table class=sortable>" in html and "fits.csv" in html   # HTML tables, CSV downloads
    images, messages, (up, down) = open_in_chromium(page, SORT_PROBE)
    assert len(up) >= 10 and up == sorted(up) and down == sorted(up, reverse=True), (up, down)
    # hover: every group's models as points whose tooltip names the run (the model)
    _, _, hover = open_in_chromium(page, HOVER_PROBE)
    import pandas as pd

    points = pd.read_parquet(tmp_path / "report" / "points.parquet")
    assert [n for n, _ in hover] == points.groupby("ds_task", sort=False).size().tolist()
    assert all(t.startswith("eva02") or "@" in t for _, t in hover) and all(": US " in t for _, t in hover)
    # the explorer: every group, zoom at the cursor, reset, marking a model family by name
    _, msgs, (n_opts, n_circles, n_hit, line, before, zoomed, reset, hit_titles) = open_in_chromium(page, EXPLORE_PROBE)
    last = points[points["ds_task"] == points["ds_task"].unique()[-1]]
    n_eva = int(last["run_id"].str.lower().str.contains("eva02").sum())
    assert n_opts == 5 and n_circles == len(last) and n_hit == n_eva > 0, (n_opts, n_circles, n_hit)
    assert line == f"{n_eva} of {len(last)} models match" and all(t.startswith("eva02") for t in hit_titles)
    assert zoomed[1] - zoomed[0] < 0.7 * (before[1] - before[0]) and zoomed[0] > before[0]   # zoomed in, at the centre
    assert reset == before and not msgs, (before, reset, msgs)
    assert len(images) >= 9, images            # grid, 5 groups, sensitivity, 2 heatmaps
    broken = [i for i in images if not (i[1] and i[2] > 0)]
    assert not broken, broken
    assert not messages, messages


def test_hostile_task_names_are_escaped(tmp_path):

    from meta_study.validation import validate
    from meta_study.store import Store
    from conftest import make_rows

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(30, ds_tasks=("<img src=x onerror=alert(1)>", "a&b"))).table)
    r = run_cli("report", s.uri, "--out", str(tmp_path / "rep"), "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    # when no group is trusted, the page says so plainly, with the reasons counted per group
    fits = pd.read_parquet(tmp_path / "rep" / "fits.parquet")
    if not fits.loc[fits["headline"], "trusted"].any():
        assert "No group has a trusted answer here" in html and "With 30 models per group" in html
        assert "of 2 groups" in html
    images, messages = open_in_chromium(tmp_path / "rep" / "index.html")
    assert all(i[1] and i[2] > 0 for i in images) and not messages, (images, messages)


def test_explorer_offers_every_group_and_caps_the_page(monkeypatch):
    """The static hover views stop at the first 60 groups; the explorer offers all of them, and a
    page too large to embed says how many groups it left out."""
    import numpy as np
    import pandas as pd

    from meta_study import explorer

    n = 70
    heads = pd.DataFrame({"us_task": "up", "ds_task": [f"t{i:02d}" for i in range(n)], "eval_protocol": "fewshot",
                          "shots": 5, "law": "power", "frontier": "vertices", "holdout_threshold": 0.8, "status": "ok",
                          "k": 0.9, "alpha": 1.2, "e_ir": np.nan, "e_us_star": np.nan})
    rng = np.random.default_rng(0)
    points = pd.concat([pd.DataFrame({"us_task": "up", "ds_task": f"t{i:02d}", "eval_protocol": "fewshot", "shots": 5,
                                      "run_id": [f"m{j}</script>" for j in range(20)],
                                      "us_accuracy": rng.uniform(0.3, 0.9, 20), "ds_accuracy": rng.uniform(0.2, 0.8, 20)})
                        for i in range(n)], ignore_index=True)
    page = explorer.explorer_html(heads, points)
    assert page.count("<option ") == n and "not embedded" not in page
    blob = page.split("<script type=application/json id=ex-data>")[1].split("</script>")[0]
    import json

    data = json.loads(blob)
    assert len(data["runs"]) == 20 and all(len(g["p"]) == 20 for g in data["groups"])   # names once
    assert data["groups"][0]["t"] == 80.0 and len(data["groups"][0]["l"]) > 100
    monkeypatch.setattr(explorer, "MAX_POINTS", 20 * 30)
    page = explorer.explorer_html(heads, points)
    assert page.count("<option ") == 30 and "40 more groups are not embedded" in page
