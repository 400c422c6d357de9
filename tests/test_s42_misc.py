"""Review s42 of meta_study/train/finetune.py, meta_study/tune/finalize.py and meta_study/explorer.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _explorer_page(tmp_path: Path) -> Path:
    from meta_study import explorer

    heads = pd.DataFrame({"us_task": "up", "ds_task": ["a", "b", "c"], "eval_protocol": "fewshot", "shots": 5,
                          "law": "power", "frontier": "vertices", "holdout_threshold": 0.8, "status": "ok",
                          "k": 0.9, "alpha": 1.2, "e_ir": np.nan, "e_us_star": np.nan, "best_us": 0.8,
                          "horizon_us": 0.86})
    points = pd.concat([pd.DataFrame({"us_task": "up", "ds_task": t, "eval_protocol": "fewshot", "shots": 5,
                                      "run_id": [f"{t}{j}" for j in range(n)], "us_accuracy": np.linspace(.3, .9, n),
                                      "ds_accuracy": np.linspace(.2, .8, n)}) for t, n in (("a", 3), ("b", 7), ("c", 11))])
    page = tmp_path / "p.html"
    page.write_text("<!doctype html><html><head><meta charset=utf-8></head><body>" + explorer.explorer_html(heads, points)
                    + "<a id=go href='q.html'>elsewhere</a></body></html>")
    (tmp_path / "q.html").write_text("<!doctype html><html><body>elsewhere</body></html>")
    return page


def test_the_explorer_draws_the_group_its_list_shows_after_going_back(tmp_path):
    """Going back to the report, the browser puts back the group list's choice and the search
    box's text, without a change event: the view drew the first group (3 models) under the third
    group's name (11 models), and its search marked nothing."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    page = _explorer_page(tmp_path)
    probe = ("() => [document.getElementById('ex-group').value, document.querySelectorAll('#ex-svg circle').length, "
             "document.getElementById('ex-info').textContent]")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page()
        tab.goto(page.as_uri(), wait_until="load")
        tab.select_option("#ex-group", "2")
        tab.fill("#ex-find", "c1")
        chosen = tab.evaluate(probe)
        tab.click("#go")
        tab.wait_for_load_state("load")
        tab.go_back(wait_until="load")
        back = tab.evaluate(probe)
        browser.close()
    assert chosen == ["2", 11, "2 of 11 models match"]   # c1 and c10
    assert back == chosen


def _heads(thr: float) -> pd.DataFrame:
    return pd.DataFrame({"us_task": ["up"], "ds_task": ["a"], "eval_protocol": ["fewshot"], "shots": [5],
                         "law": ["power"], "frontier": ["vertices"], "holdout_threshold": [thr], "status": ["ok"],
                         "k": [0.9], "alpha": [1.2], "e_ir": [np.nan], "e_us_star": [np.nan], "best_us": [thr],
                         "horizon_us": [np.nan]})


def test_the_explorer_draws_a_hold_out_threshold_only_where_it_holds_models_out():
    """Without a hold-out (``--holdout-quantile 1.0``: the threshold is the best model's US) the
    explorer drew a "hold-out threshold" line through the best model, with no model beyond it;
    the figures draw it only where a model is held out."""
    from meta_study.explorer import explorer_data

    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["r1", "r2", "r3"], "us_accuracy": [0.5, 0.6, 0.7], "ds_accuracy": [0.3, 0.4, 0.5]})
    data, _ = explorer_data(_heads(0.7), points)
    assert data["groups"][0]["t"] is None and [p[3] for p in data["groups"][0]["p"]] == [0, 0, 0]
    data, _ = explorer_data(_heads(0.65), points)
    assert data["groups"][0]["t"] == 65.0 and [p[3] for p in data["groups"][0]["p"]] == [0, 0, 1]
