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
    # each answer links to its group's figure in "Per task" (5 groups, 5 figures)
    import re

    links = re.findall(r"<a href='#figure-([^']+)'>figure</a>", html)
    assert len(links) == 5 and all(f"<span id='figure-{slug}'>" in html for slug in links), links
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
        heads = fits[fits["headline"]]
        visible = sorted(set(heads["n_points"] - heads["n_heldout"]))
        span = f"{visible[0]}" if len(visible) == 1 else f"{visible[0]}&ndash;{visible[-1]}"
        assert "No group has a trusted answer here" in html and f"With {span} visible models per group" in html
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
                          "k": 0.9, "alpha": 1.2, "e_ir": np.nan, "e_us_star": np.nan, "best_us": 0.8,
                          "horizon_us": 0.86})
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
    assert len(data["names"]) == 20 and all(len(g["p"]) == 20 for g in data["groups"])   # names once
    # the headline's prediction only from the best visible model to the tested horizon
    line = data["groups"][0]["l"]
    assert data["groups"][0]["t"] == 80.0 and len(line) > 10 and line[0][0] == 80.0 and line[-1][0] == 86.0
    monkeypatch.setattr(explorer, "MAX_POINTS", 20 * 30)
    page = explorer.explorer_html(heads, points)
    assert page.count("<option ") == 30 and "40 more groups are not embedded" in page


# --- a synthetic report the way an MLflow sweep fills the store: 32-digit run ids, model names -------

@pytest.fixture(scope="module")
def mlflow_like_report(tmp_path_factory):
    """``meta-study report`` of 48 runs (5 model names, MLflow-style run ids) x 2 DS tasks x shots
    1/5/10/25: 8 groups, every figure of the page (grid, per task, Fig. 3, F.4/F.5, heatmaps)."""
    import uuid

    from conftest import make_rows
    from meta_study.validation import validate
    from meta_study.store import Store

    root = tmp_path_factory.mktemp("mlflow_like")
    df = make_rows(48, ds_tasks=("alpha", "beta"), shots=(1, 5, 10, 25))
    ids = {r: uuid.UUID(int=i + 12345).hex for i, r in enumerate(df["run_id"].unique())}
    df["run_id"] = df["run_id"].map(ids)
    df["model_name"] = df["seed"].map(lambda i: f"vit_s{i % 5}")
    s = Store(str(root / "st"))
    s.commit(validate(df).table)
    r = run_cli("report", s.uri, "--out", str(root / "rep"), "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0, r.stderr
    return root / "rep"


#: Each image of the page: [src, displayed width in CSS px, natural width in px].
IMAGE_SIZES = "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.getBoundingClientRect().width, i.naturalWidth])"


def svg_font_sizes(path: Path) -> tuple[list[float], list[float]]:
    """(every text's size, the legends' text sizes) in figure points, from a matplotlib SVG beside
    its PNG (``svg.fonttype: none`` writes ``font-size: Npx`` in the figure's pt units); the
    provenance footer is left out."""
    import re
    import xml.etree.ElementTree as ET

    from meta_study.analysis.figures import FOOTER_ID

    ns = "{http://www.w3.org/2000/svg}"
    every, legends = [], []

    def walk(el, footer: bool, legend: bool) -> None:
        footer = footer or el.get("id") == FOOTER_ID
        legend = legend or (el.get("id") or "").startswith("legend")
        if el.tag == f"{ns}text" and not footer:     # its own style, or its tspans' (mathtext: 10^0)
            styles = [el.get("style", "")] + [t.get("style", "") for t in el.iter(f"{ns}tspan")]
            sizes = [float(m.group(1)) for st in styles for m in [re.search(r"font-size:\s*([\d.]+)px", st)] if m]
            assert sizes, ET.tostring(el)[:200]
            every.append(min(sizes))
            if legend:
                legends.append(min(sizes))
        for c in el:
            walk(c, footer, legend)

    walk(ET.parse(path).getroot(), False, False)
    return every, legends


@pytest.mark.slow(25)
def test_report_of_an_mlflow_sweep_reads_well(mlflow_like_report):
    """One report (built once: ~15 s), three checks: every figure's text reads at >= 9 pt on the
    page; points are named by model and the explorer keeps its count apart from the hover; shots
    in order and every number with its unit."""
    check_figure_text_sizes(mlflow_like_report)
    check_model_names_and_explorer(mlflow_like_report)
    check_order_and_units(mlflow_like_report)


def check_figure_text_sizes(mlflow_like_report: Path) -> None:
    """Screenshot geometry in Chromium at 1280 x 900: each figure's text (legends, ticks, heatmap
    values; not the provenance footer) as rendered on the page, from the PNG's scale in the page
    and the point sizes its SVG twin was drawn with, is at least 9 pt. The heatmaps were 360 px
    thumbnails with 7 pt values (~4 pt on the page), F.4/F.5's legend ~7 pt."""
    from playwright.sync_api import sync_playwright

    from meta_study.analysis.figures import SAVE_DPI

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((mlflow_like_report / "index.html").resolve().as_uri(), wait_until="load")
        images = page.evaluate(IMAGE_SIZES)
        browser.close()
    figures = {src: (shown, natural) for src, shown, natural in images if src.startswith("figures/")}
    assert {"figures/fits_grid.png", "figures/sensitivity.png", "figures/params_vs_shots.png",
            "figures/f21_us_ds.png"} <= set(figures) and len(figures) >= 16, sorted(figures)
    small = []
    for src, (shown, natural) in figures.items():
        every, legends = svg_font_sizes(mlflow_like_report / src.replace(".png", ".svg"))
        # figure pt -> PNG px (SAVE_DPI / 72) -> CSS px on the page (shown / natural) -> CSS pt (x 0.75)
        to_page = SAVE_DPI / 72 * shown / natural * 0.75
        if min(every) * to_page < 9:
            small.append((src, round(min(every) * to_page, 1), round(shown), natural))
        if src == "figures/fits_grid.png":
            assert legends and min(legends) * to_page >= 9, (min(legends) * to_page, shown, natural)
    assert not small, small


#: The explorer after marking the models named like "vit_s3" and hovering one point: (count line,
#: hover line, legend entries shown, the first point's tooltip).
EXPLORER_HOVER_PROBE = """() => {
  const find = document.getElementById('ex-find'), svg = document.getElementById('ex-svg');
  find.value = 'vit_s3'; find.dispatchEvent(new Event('input'));
  const c = svg.querySelector('circle.hit');
  c.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
  const legend = Array.from(document.querySelectorAll('.ex-legend > span')).filter(s => !s.hidden).map(s => s.innerText);
  return [document.getElementById('ex-info').textContent, document.getElementById('ex-hover').textContent, legend,
          svg.querySelectorAll('circle').length, c.querySelector('title').textContent];
}"""


def check_model_names_and_explorer(mlflow_like_report: Path) -> None:
    """Hovers and the explorer named points by 32-digit run ids although the store has model
    names; the explorer had no legend, and hovering a point overwrote its "N of M match" count."""
    points = pd.read_parquet(mlflow_like_report / "points.parquet")
    assert set(points["model_name"]) == {f"vit_s{i}" for i in range(5)}
    _, messages, hover = open_in_chromium(mlflow_like_report / "index.html", HOVER_PROBE)
    assert hover and all(t.startswith("vit_s") and " · " in t for _, t in hover), hover[:3]
    name = hover[0][1].split(":")[0]
    run = points.loc[points["model_name"] == name.split(" · ")[0], "run_id"]
    assert any(r.startswith(name.split(" · ")[1]) for r in run)          # the run id's first 8 digits follow
    _, messages, (count, hovered, legend, n, title) = open_in_chromium(mlflow_like_report / "index.html",
                                                                        EXPLORER_HOVER_PROBE)
    first = points.groupby(["ds_task", "shots"], sort=True).get_group(("alpha", 1))
    n_hit = int((first["model_name"] == "vit_s3").sum())
    assert n == len(first) and count == f"{n_hit} of {len(first)} models match", count
    assert hovered == title and hovered.startswith("vit_s3 · ") and ": US " in hovered
    assert legend[:3] == ["model", "held out (not fitted)", "matches the search"], legend
    assert not messages, messages


def check_order_and_units(mlflow_like_report: Path) -> None:
    """"Per task" ordered 1, 10, 25, 5; the table's "models fitted / all" column showed the
    headline's number of member fits as if it were models; every number says its unit."""
    import re

    html = (mlflow_like_report / "index.html").read_text()
    per_task = html.split("<h2>Per task</h2>")[1].split("<h2>")[0]
    shots = [int(m) for m in re.findall(r"figures/groups/up_alpha_fewshot_(\d+)-\d+\.png' alt", per_task)]
    assert shots == [1, 5, 10, 25], shots
    table = html.split("<table class=sortable>")[1].split("</table>")[0]
    heads = re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)
    for h in heads:                      # every numeric column names its unit or what it counts
        assert h in ("US task", "DS task", "protocol", "shots", "predictor", "role", "fit status", "warnings") \
            or re.search(r"\((pt|%|held out)\)$", h), h
    assert re.search(r"<th title='models in the group \(in brackets: held out", table)
    fits = pd.read_parquet(mlflow_like_report / "fits.parquet")
    head = fits[fits["headline"]].iloc[0]
    first_row = table.split("<tbody>")[1].split("</tr>")[0]
    assert f"<td>{int(head['n_points'])} ({int(head['n_heldout'])})</td>" in first_row
    assert "fit status" in heads and "ok · " not in table          # the fit's status apart from the flags
    assert "<a href='points.csv'>points.csv</a>" in html and "Parquet only" not in html
    assert "0.853 is 85.3%" in html                                # the CSVs' fractions, said once


def test_sensitivity_text_never_recommends_a_frontier_the_headline_cannot_use():
    """The report called `all` "the most robust frontier" (it predicted best at small n), while the
    headline never uses it. Now only headline frontiers are ranked, and `all` is said for what it is."""
    import numpy as np

    from meta_study.analysis.frontiers import FRONTIER_KINDS
    from meta_study.analysis.sensitivity import rank_frontiers, summarize_sensitivity
    from meta_study.report import _sensitivity_text

    rows = []
    for f_i, frontier in enumerate(("all", *FRONTIER_KINDS)):          # `all` has the smallest error
        for n in (10, 20):
            for t in range(2):
                rows.append({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "n": n,
                             "trial": t, "frontier": frontier, "n_fit": n, "k": 1.0, "alpha": 1.0, "e_ir": 0.1,
                             "saturation": 0.9, "fit_err": 0.01, "pred_err": 0.01 * (f_i + 1) * (30 - n) / 10,
                             "status": "ok"})
    table = pd.DataFrame(rows).astype({"shots": "Int64"})
    rk = rank_frontiers(summarize_sensitivity(table))
    assert rk.loc[rk["frontier"] == "all", "rank_small_n"].isna().all()
    assert rk.iloc[0]["frontier"] == "vertices" and int(rk.iloc[0]["rank_small_n"]) == 1
    assert not rk.loc[rk["frontier"] == "all", "in_headline"].any() and rk["in_headline"].sum() == len(FRONTIER_KINDS)
    text = _sensitivity_text(table)
    assert "<b>vertices</b> predicts best" in text and "<b>all</b> (dashed" in text
    assert "never part of the headline" in text and np.isfinite(rk["pred_err_small_n"]).all()


def test_the_explorer_marks_held_out_points_as_the_fit_did():
    """Compared in the page, a point rounded to 2 decimals against the threshold to 3 (83.46 >
    83.459) showed the fitted model at the hold-out threshold as held out."""
    import json

    import pandas as pd

    from meta_study import explorer

    thr = 0.834585
    heads = pd.DataFrame({"us_task": ["up"], "ds_task": ["a"], "eval_protocol": ["fewshot"], "shots": [5],
                          "law": ["power"], "frontier": ["vertices"], "holdout_threshold": [thr], "status": ["ok"],
                          "k": [0.9], "alpha": [1.2], "e_ir": [float("nan")], "e_us_star": [float("nan")],
                          "best_us": [thr], "horizon_us": [0.86]})
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["at", "above", "below"], "us_accuracy": [thr, 0.84, 0.5],
                           "ds_accuracy": [0.5, 0.52, 0.3]})
    page = explorer.explorer_html(heads, points)
    data = json.loads(page.split("<script type=application/json id=ex-data>")[1].split("</script>")[0])
    held = {data["names"][p[2]]: p[3] for p in data["groups"][0]["p"]}
    assert held == {"at": 0, "above": 1, "below": 0}
    assert "held = p[3] === 1" in page


def test_the_no_trusted_answer_box_counts_the_visible_models():
    """Every model held out (--holdout-above 0.1): the box said "With 60 models per group: no
    usable fit" beside answers that said "no points"; with 5-7 models (one held out) it said 5-7
    beside "needs 6 or more visible models"."""
    from meta_study.report import _verdict

    heads = pd.DataFrame({"trusted": [False, False], "trust_reason": ["no usable fit", "no usable fit"],
                          "n_points": [60, 60], "n_heldout": [60, 60], "best_us": [float("nan")] * 2})
    text = _verdict(heads)
    assert "With 0 visible models per group" in text and "60" not in text, text
    heads = heads.assign(n_points=[5, 7], n_heldout=[1, 1], trust_reason=["no back-test (needs 6 or more)"] * 2)
    assert "With 4&ndash;6 visible models per group" in _verdict(heads)


def test_runs_that_share_their_first_8_characters_keep_distinct_names():
    """Run ids named by a template (``sweep-a-trial-1``, ``sweep-a-trial-2``) do not hold the model
    name: both were shown as ``vit · sweep-a-``, one name in hover, search and the name table."""
    import json

    import pandas as pd

    from meta_study import explorer

    heads = pd.DataFrame({"us_task": ["up"] * 2, "ds_task": ["a", "b"], "eval_protocol": ["fewshot"] * 2,
                          "shots": [5] * 2, "law": ["power"] * 2, "frontier": ["vertices"] * 2,
                          "holdout_threshold": [0.9] * 2, "status": ["ok"] * 2, "k": [0.9] * 2, "alpha": [1.2] * 2,
                          "e_ir": [float("nan")] * 2, "e_us_star": [float("nan")] * 2, "best_us": [0.8] * 2,
                          "horizon_us": [0.86] * 2})
    mlflow_ids = ["0123abcd" + "0" * 24, "0123abcd" + "1" * 24, "fedcba98" + "2" * 24]   # 32 hex digits
    # the two template ids are in different groups: names must be unique per page, not per group
    points = pd.DataFrame({"us_task": "up", "ds_task": ["a", "a", "b", "a", "a", "b"], "eval_protocol": "fewshot",
                           "shots": 5, "run_id": ["sweep-a-trial-1", "x", "sweep-a-trial-2", *mlflow_ids],
                           "model_name": ["vit", "vit", "vit", "vit", "vit", "vit"],
                           "us_accuracy": [0.5, 0.6, 0.7, 0.55, 0.65, 0.75], "ds_accuracy": [0.3] * 6})
    page = explorer.explorer_html(heads, points)
    data = json.loads(page.split("<script type=application/json id=ex-data>")[1].split("</script>")[0])
    shown = [data["names"][p[2]] for g in data["groups"] for p in g["p"]]
    assert len(set(shown)) == 6, shown
    assert "vit · sweep-a-trial-1" in shown and "vit · sweep-a-trial-2" in shown
    assert "vit · fedcba98" in shown                              # an id unique in 8 characters keeps 8
    assert {"vit · 0123abcd0", "vit · 0123abcd1"} <= set(shown)   # shared 8: the shortest unique prefix
    assert len(set(explorer.point_names(points))) == 6            # the report's own hover views too
