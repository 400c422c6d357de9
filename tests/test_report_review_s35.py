"""Review of the report, its figures and its answers as a researcher meets them (session 35)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meta_study.analysis.groups import Group
from meta_study.analysis.tables import fit_table


@pytest.fixture(scope="module")
def long_named():
    """Two groups whose DS task names run to 240 characters (the testbed's have ~200)."""
    rng = np.random.default_rng(1)
    groups = []
    for tail in ("A", "B"):
        us = rng.uniform(0.3, 0.9, 40)
        ds = 0.95 - 0.8 * (1 - us) ** 1.3 + rng.normal(0, 0.01, 40)
        groups.append(Group("up", "very-long-task-name-" * 11 + tail, "fewshot", 5, us, np.clip(ds, 0, 1)))
    _, panels = fit_table(groups)
    return [{k: v for k, v in p.items() if k != "slug"} for p in panels]


def test_long_task_names_keep_panel_titles_inside_their_own_panel(long_named):
    """A 240-character task name drew the panel title across the next panel (two titles over each
    other in fits_grid) and widened a group's PNG from 1,366 to 2,821 px, mostly blank."""
    from meta_study.analysis.figures import fit_grid_figure

    fig = fit_grid_figure(long_named, title="DS vs US")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = [a for a in fig.get_axes() if a.axison]
    titles = [a.title.get_window_extent(r) for a in axes]
    width = fig.bbox.width
    assert all(t.x0 >= 0 and t.x1 <= width for t in titles), [(t.x0, t.x1, width) for t in titles]
    assert min(titles[0].x1, titles[1].x1) - max(titles[0].x0, titles[1].x0) <= 1   # side by side, apart
    texts = [a.get_title() for a in axes]
    # the end kept, before the answer's standing (session 52: "trusted" or not, on a line of its own here)
    assert texts[0] != texts[1] and texts[0].rstrip().rsplit("\n", 1)[0].endswith("A (fewshot, 5-shot)"), texts[0]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_long_named_groups_figure_is_as_wide_as_any_other(tmp_path, long_named):
    from PIL import Image

    from meta_study.analysis.figures import plot_group

    plot_group(long_named[0], str(tmp_path / "g"))
    assert Image.open(tmp_path / "g.png").size[0] < 1500


def test_a_long_task_name_leaves_the_heatmap_its_size():
    """One 240-character DS task made a 5 x 5 heatmap 23 x 17 inches (its cells an eighth of it):
    shrunk to the page's width, the values in the cells were ~4 pt."""
    import pandas as pd

    from meta_study.analysis.figures import heatmap_figure

    names = ["a", "b", "c", "very-long-task-name-" * 12 + "X", "very-long-task-name-" * 12 + "Y"]
    m = pd.DataFrame(np.eye(5), index=names, columns=names)
    fig = heatmap_figure(m, title="DS-task rank correlation")
    w, h = fig.get_size_inches()
    assert w < 10 and h < 10, (w, h)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[3] != labels[4] and labels[3].endswith("X") and len(labels[3]) <= 40, labels
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_known_law_check_states_no_point_the_report_does_not(tmp_path):
    """`demo --synthetic` ended with "near (not trusted: ...): +1 pt (83.7% US): truth 87.7%, answer
    87.2% in [82.4, 92.0]" where the report's answer for that group is the interval alone (an
    untrusted group states its 90% interval, never a point prediction)."""
    import re

    import pandas as pd

    from meta_study.demo import _compare_known_laws
    from test_demo import _synthetic_results

    results, fits = _synthetic_results(tmp_path / "r")
    heads = fits.index[fits["headline"]]
    fits.loc[heads, "trusted"] = [False, True, True]
    fits.to_parquet(results / "fits.parquet")
    lines: list[str] = []
    _compare_known_laws(results, lines.append)
    known = {line.split()[0]: line for line in lines[1:]}
    untrusted = fits.loc[heads[0], "ds_task"]
    assert "not trusted" in known[untrusted] and "answer" not in known[untrusted], known[untrusted]
    assert re.search(r"\+1 pt \([0-9.]+% US\): truth [0-9.]+% in \[", known[untrusted]), known[untrusted]
    row = pd.read_parquet(results / "fits.parquet").loc[heads[1]]
    trusted = known[row["ds_task"]]
    assert pd.notna(row["ds_plus1"]), row       # a trusted step within the horizon: the report's point, said
    assert f"answer {100 * row['ds_plus1']:.1f}% in" in trusted, trusted


@pytest.fixture(scope="module")
def forty_tasks():
    """Eq. 1 fits of 24 DS tasks x shots 1/5 (the testbed has hundreds of DS tasks)."""
    rng = np.random.default_rng(0)
    groups = []
    for d in range(24):
        for shots in (1, 5):
            us = rng.uniform(0.3, 0.9, 30)
            ds = 0.95 - 0.8 * (1 - us) ** (1 + 0.1 * shots ** 0.5 + d * 0.01) + rng.normal(0, 0.01, 30)
            groups.append(Group("up", f"task-{d:02d}", "fewshot", shots, us, np.clip(ds, 0, 1)))
    fits, _ = fit_table(groups)
    return fits[fits["law"] == "eq1"]


def test_params_vs_shots_of_many_tasks_keeps_legends_apart_and_series_distinct(forty_tasks):
    """40 DS tasks: the "Eq. 1 fitted to" legend was drawn over the last ten series' entries, and
    tab20's colours repeated, task-00 and task-20 drawn alike (nothing told them apart); 24 show it."""
    from meta_study.analysis.figures import params_figure

    fig = params_figure(forty_tasks)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    series, marks = fig.legends
    sb, mb = series.get_window_extent(r), marks.get_window_extent(r)
    assert min(sb.y1, mb.y1) - max(sb.y0, mb.y0) <= 1 or min(sb.x1, mb.x1) - max(sb.x0, mb.x0) <= 1, (sb, mb)
    assert sb.y0 >= 0 and mb.y0 >= 0 and sb.y1 <= fig.bbox.height and mb.y1 <= fig.bbox.height
    styles = [(h.get_color(), h.get_marker()) for h in series.legend_handles]
    assert len(styles) == 24 and len(set(styles)) == 24, styles
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_panel_without_a_usable_fit_says_so():
    """A group of 2 models (one held out) drew its points and nothing else: no curve, and no word
    on why (the reason was only in the answers at the top of the page)."""
    from meta_study.analysis.figures import fit_grid_figure

    _, panels = fit_table([Group("up", "two", "fewshot", 5, np.array([0.3, 0.8]), np.array([0.2, 0.6]))])
    assert not panels[0]["selection"].usable
    fig = fit_grid_figure([{k: v for k, v in panels[0].items() if k != "slug"}])
    # in the title (session 52: a grid's one legend is no place for one panel's state)
    assert fig.axes[0].get_title().endswith("no usable fit: no prediction"), fig.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow(60)
def test_a_demo_whose_refit_is_skipped_says_so_in_one_line(tmp_path):
    """A second `meta-study demo` while another was refitting the same working directory printed
    "refit: locked ...", then "done in 50 s ... report None" and exited 0."""
    from conftest import run_cli
    from meta_study.refit import out_lock

    wd = tmp_path / "demo"
    with out_lock(str(wd)) as held:          # what a running demo's refit holds
        assert held
        r = run_cli("demo", "--synthetic", "--workdir", str(wd), timeout=600)
    # another writer, not a wrong input: exit 1 (as a store's held lock), one line
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    for needle in (f"--workdir {wd}", "no report was made", "another refit is writing to"):
        assert needle in lines[0], lines[0]
    assert "report     None" not in r.stdout, r.stdout


@pytest.mark.slow(15)
def test_a_workdir_the_mlflow_url_cannot_hold_is_one_line(tmp_path):
    """`meta-study demo --workdir 'a b?c'` wrote its MLflow database to a file named "a b" beside
    the working directory (the "?" starts the sqlite URL's query), and "%20" read as a space."""
    from conftest import one_error_line, run_cli

    for name in ("a b?c", "demo%20x"):
        wd = tmp_path / name
        r = run_cli("demo", "--synthetic", "--workdir", str(wd), timeout=600)
        one_error_line(r, f"--workdir {wd}", "'?' or '%'")
    assert list(tmp_path.iterdir()) == []          # nothing made, inside or beside it


def _page_text(page) -> str:
    """The page's words, as a reader sees them (tags, scripts and styles out; one space apart)."""
    import html
    import re

    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def test_the_page_says_what_a_trusted_answers_brackets_are(tmp_path):
    """A trusted answer reads "+1 US pt: 89.9% DS [89.2%-90.6%]": nothing on the page said that
    the brackets are the 90% interval (an untrusted one says "90% interval [...]")."""
    import dataclasses
    from pathlib import Path

    from conftest import committed_store
    from meta_study.analysis.results import AnalysisOptions, analyze
    from meta_study.report import render_report

    a = analyze(committed_store(tmp_path / "st", runs=30, tasks=("a",)), options=AnalysisOptions(), use_ray=False)
    fits = a.fits.copy()
    head = fits.index[fits["headline"]][0]
    fits.loc[head, "trusted"] = True
    text = _page_text(Path(render_report(dataclasses.replace(a, fits=fits), tmp_path / "rep")))
    assert "trusted (" in text and " US pt: " in text and "% DS [" in text, text
    assert "Brackets give the 90% interval" in text, text


@pytest.mark.slow(20)
def test_a_task_name_without_spaces_does_not_widen_the_page(tmp_path):
    """A 200-character DS task name without a space or hyphen made the page 2,441 px wide at a
    1,280 px window: the table's number columns and the end of that answer off screen."""
    from playwright.sync_api import sync_playwright

    from conftest import make_rows
    from meta_study.analysis.results import AnalysisOptions, analyze
    from meta_study.report import render_report
    from meta_study.store import Store
    from meta_study.validation import validate
    from test_report_html import CHROMIUM, FLAGS

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(20, ds_tasks=("x" * 200, "ok"))).table)
    page = render_report(analyze(s, options=AnalysisOptions(), use_ray=False), tmp_path / "rep")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(Path(page).resolve().as_uri(), wait_until="load")
        wide, window = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        browser.close()
    assert wide <= window, (wide, window)


def test_the_hover_views_line_of_an_untrusted_group_says_not_trusted():
    """The page's hover view drew an untrusted group's prediction as "headline prediction", where
    its answer gives no point prediction and its figure labels the line "(not trusted)"."""
    import pandas as pd

    from meta_study.report import _points_svg

    row = {"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "law": "power",
           "frontier": "vertices", "holdout_threshold": 0.8, "status": "ok", "k": 0.9, "alpha": 1.2,
           "e_ir": float("nan"), "e_us_star": float("nan"), "best_us": 0.8, "horizon_us": 0.86}
    pts = pd.DataFrame({"run_id": ["m0", "m1", "m2"], "model_name": [None] * 3, "us_accuracy": [0.3, 0.6, 0.9],
                        "ds_accuracy": [0.2, 0.4, 0.7]})
    untrusted = _points_svg({**row, "trusted": False}, pts)
    assert "<polyline" in untrusted and "(not trusted)" in untrusted.split("<polyline")[1], untrusted[-300:]
    assert "not trusted" not in _points_svg({**row, "trusted": True}, pts)
