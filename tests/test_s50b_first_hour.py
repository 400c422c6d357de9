"""Session 50b: the README's main command and the report, read as a new researcher's first hour.

The README gave the demo's run time "after the install" but not the install's (about 5 minutes
and 6.6 GB on a fresh venv, the longest part of the first command), and said "all under
./meta-study-demo/" without where in it the report is (``refits/<UTC time>/index.html``, the
newest named in ``LATEST``) or what to do next. docs/analysis.md said Fig. 3 has a row "per DS
task", where the demo's own page (ImageNet's shifts beside the procedural suite) has a row per
US -> DS task pair, as the page says.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from conftest import REPO


def _readme_main_job() -> str:
    """The README's (a) section: from its heading to the (b) one, spaces and breaks as one space."""
    text = (REPO / "README.md").read_text()
    start, end = text.index("**(a) Install and run the main job**"), text.index("**(b) Install and run the tests**")
    return " ".join(text[start:end].split())


def test_readme_says_how_long_the_install_takes():
    a = _readme_main_job()
    assert re.search(r"the install takes about \d+ minutes", a), a[:300]
    assert re.search(r"the demo then 1-3 minutes", a)


def test_readme_says_where_the_demo_report_lands_and_what_next(tmp_path):
    a = _readme_main_job()
    assert "`meta-study-demo/refits/<UTC time>/index.html`" in a and "`meta-study-demo/LATEST`" in a
    assert "docs/analysis.md#the-report" in a and "Next:" in a
    # true of the code: a refit's page is OUT/refits/STAMP/index.html (the demo's OUT is its
    # workdir) and OUT/LATEST names the newest STAMP
    from meta_study.refit import _latest_name, _write_latest

    (tmp_path / "refits" / "20261207T015134Z").mkdir(parents=True)
    _write_latest(str(tmp_path), "20261207T015134Z")
    assert (tmp_path / "LATEST").read_text().strip() == "20261207T015134Z"
    assert _latest_name(str(tmp_path)) == "20261207T015134Z"
    # the anchor the README links to
    assert "\n### The report\n" in (REPO / "docs" / "analysis.md").read_text()


def _sensitivity(pairs: list[tuple[str, str, str]]) -> pd.DataFrame:
    rows = []
    for us, ds, protocol in pairs:
        for n in (10, 20):
            for trial in range(2):
                rows.append({"us_task": us, "ds_task": ds, "eval_protocol": protocol,
                             "shots": 5 if protocol == "fewshot" else np.nan, "frontier": "vertices", "n": n,
                             "trial": trial, "fit_err": 0.01, "pred_err": 0.02, "status": "ok"})
    return pd.DataFrame(rows)


def test_docs_say_fig3_rows_as_the_page_names_them():
    """The demo's page: "Per US → DS task pair" (two US tasks); docs/analysis.md said "per DS task"."""
    from meta_study.report import _sensitivity_rows

    demo_like = _sensitivity([("imagenet", "imagenet-real", "shift"), ("synth_us", "synth_combo", "fewshot")])
    one_us = _sensitivity([("up", "a", "fewshot"), ("up", "b", "fewshot")])
    assert _sensitivity_rows(demo_like).startswith("Per US &rarr; DS task pair")
    assert _sensitivity_rows(one_us).startswith("Per DS task")
    doc = " ".join((REPO / "docs" / "analysis.md").read_text().split())
    report = doc[doc.index("### The report"):doc.index("### One pipeline")]
    assert "Fig. 3 per DS task, or per US → DS task pair where several US tasks or protocols share the figure" in report


def _group(ds_task: str, n: int, rng: np.random.Generator):
    from meta_study.analysis.groups import Group

    us = np.sort(rng.uniform(0.3, 0.8, n))
    ds = 0.9 - 0.6 * (1 - us) ** 1.3 + rng.normal(0, 0.01, n)
    pts = [{"us_task": "up", "ds_task": ds_task, "eval_protocol": "fewshot", "shots": 5, "run_id": f"{ds_task}{i:03d}",
            "model_name": "vit", "us_accuracy": u, "ds_accuracy": d} for i, (u, d) in enumerate(zip(us, ds))]
    return Group("up", ds_task, "fewshot", 5, us, ds), pts


def _page(sizes: dict[str, int], out) -> str:
    import html
    from pathlib import Path

    from meta_study.analysis.fitting import FitOptions, fit_groups
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.analysis.tables import fits_frame
    from meta_study.report import render_report

    rng = np.random.default_rng(0)
    made = [_group(ds, n, rng) for ds, n in sizes.items()]
    groups = [g for g, _ in made]
    sels = fit_groups([(g.us_accuracy, g.ds_accuracy) for g in groups], FitOptions(), keys=[g.key for g in groups])
    fits, points = fits_frame(groups, sels), pd.DataFrame(sum((p for _, p in made), []))
    page = render_report(Analysis(fits=fits, options=AnalysisOptions(), provenance={}, points=points), out)
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", Path(page).read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def test_the_page_says_what_the_tested_horizon_is(tmp_path):
    """Its answers say "(past the tested horizon)", its figures and hover view draw the prediction
    "to the tested horizon"; the page never said what that is (only docs/analysis.md did)."""
    text = _page({"a": 40}, tmp_path / "one")
    assert "to the tested horizon" in text
    assert ("The tested horizon is how far past its best visible model a group's back-tests predicted (half of "
            "their cuts reached at least that far): past it a trusted answer states only the interval.") in text
    # also where no group has a usable fit: its explorer and hover view still name it
    text = _page({"b": 2}, tmp_path / "none")
    assert "to the tested horizon" in text and "The tested horizon is how far past" in text
