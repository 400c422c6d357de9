"""A results directory rewritten without figures keeps none of an earlier table's; the answer
says which brackets are 90% intervals; a results.json that cannot be written leaves no temporary."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import committed_store, make_rows, run_cli
from meta_study.analysis import outputs
from meta_study.validation import validate


def _figure_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "figures").rglob("*") if p.is_file())


def _plant(root: Path, *stems: str) -> None:
    for stem in stems:
        for ext in (".png", ".svg"):
            p = root / "figures" / (stem + ext)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"an earlier table's figure")


def test_tables_written_without_figures_remove_the_figures_of_an_earlier_table(tmp_path):
    """`fit --no-figures` (sensitivity, correlations alike) on a newer store version rewrote the
    tables and left the earlier version's grid, group figures and heatmaps beside them."""
    from meta_study.analysis.correlations import correlation_tables
    from meta_study.analysis.groups import Group
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity

    _plant(tmp_path, "fits_grid", "groups/up_a_fewshot_5-123456", "params_vs_shots", "sensitivity",
           "f20_up_fewshot_5", "f21_us_ds", "unrelated")
    outputs.write_fits(pd.DataFrame({"law": ["eq1"]}), (), str(tmp_path))
    assert _figure_files(tmp_path) == ["figures/f20_up_fewshot_5.png", "figures/f20_up_fewshot_5.svg",
                                       "figures/f21_us_ds.png", "figures/f21_us_ds.svg",
                                       "figures/sensitivity.png", "figures/sensitivity.svg",
                                       "figures/unrelated.png", "figures/unrelated.svg"]
    table = sensitivity([Group("up", "a", "fewshot", 5, np.array([0.5]), np.array([0.4]))], SensitivityOptions(trials=1))
    outputs.write_sensitivity(table, str(tmp_path), figures=False)
    assert "figures/sensitivity.png" not in _figure_files(tmp_path)
    rows = validate(make_rows(12, ds_tasks=("a", "b"))).table.to_pandas()
    outputs.write_correlations(correlation_tables(rows), str(tmp_path), figures=False)
    assert _figure_files(tmp_path) == ["figures/unrelated.png", "figures/unrelated.svg"]
    assert (tmp_path / "fits.parquet").exists() and (tmp_path / "correlations" / "f21_us_ds_spearman.parquet").exists()


def test_fit_no_figures_on_a_newer_store_version_leaves_no_figure_of_the_old_one(tmp_path):
    store = committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))
    out = tmp_path / "out"
    assert run_cli("fit", store.uri, "--out", str(out), "--max-group-figures", "1").returncode == 0
    assert "figures/fits_grid.png" in _figure_files(out)
    store.commit(validate(make_rows(20, ds_tasks=("a",), seed=5, run_prefix="n")).table)
    r = run_cli("fit", store.uri, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert _figure_files(out) == []


def _row(**kw):
    row = {"trusted": True, "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.349, "flat": 0.207, "horizon_us": 0.40, "warnings": "",
           "ds_plus1": 0.25, "ds_plus1_lo": 0.23, "ds_plus1_hi": 0.27, "slope_plus1": 0.05,
           "ds_plus3": 0.26, "ds_plus3_lo": 0.23, "ds_plus3_hi": 0.29, "slope_plus3": 0.05,
           "ds_plus5": 0.27, "ds_plus5_lo": 0.23, "ds_plus5_hi": 0.31, "slope_plus5": 0.05,
           "ds_target": math.nan, "stop_paying_supported": True, "stop_paying_us": 0.3}
    row.update(kw)
    return row


def test_the_laws_spread_is_not_said_in_the_brackets_of_a_90_percent_interval():
    """The report says "Brackets give the 90% interval [low-high]"; the stop-paying point and the
    limit at 100% US were bracketed alike, though theirs is the laws' spread (their quantiles, the
    stop-paying one widened to hold the point), calibrated by nothing: "an extrapolation: 26.0%
    [25.0%-28.0%]" read as a 90% interval on an extrapolation."""
    from meta_study.analysis.answers import answer_text

    text = answer_text(_row(stop_paying_lo=0.25, stop_paying_hi=0.33, saturation=0.26, saturation_lo=0.25,
                            saturation_hi=0.28))
    assert "at 30.0% US (spread of the laws: 25.0%-33.0%)" in text, text
    assert "an extrapolation: 26.0% (spread of the laws: 25.0%-28.0%)." in text, text
    assert "[25.0%" not in text
    assert "+1 US pt: 25.0% DS [23.0%-27.0%]" in text          # the steps' 90% intervals keep their brackets
    text = answer_text(_row(stop_paying_us=0.752, stop_paying_lo=0.5, stop_paying_hi=math.inf, saturation=0.3,
                            saturation_lo=math.nan, saturation_hi=math.nan))
    assert "at 75.2% US (spread of the laws: 50.0%-past the data);" in text and "never" not in text, text
    assert "an extrapolation: 30.0%." in text                    # no spread: none said


def test_a_results_json_that_cannot_be_written_leaves_no_temporary(tmp_path, monkeypatch):
    """A full disk while recording a part left a half-written .results.json.tmp-* in DIR, one more
    per try."""
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import Analysis, AnalysisOptions, ResultsDir

    rd = ResultsDir(tmp_path)
    analysis = Analysis(fits=None, options=AnalysisOptions(), provenance={"store": "s", "store version": 1})
    rd._record(["fits"], analysis, Selection())
    before = (tmp_path / "results.json").read_text()

    def full(self, text, *a, **k):
        with open(self, "w") as f:
            f.write(text[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        rd._record(["fits"], analysis, Selection(), incomplete=True)
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    assert (tmp_path / "results.json").read_text() == before


def test_a_semicolon_in_a_run_id_makes_no_warning_label_of_its_own():
    """A ``repeated`` warning names a run id; ``r1;chord: bogus`` (no space after the ";") was split
    by the readers into a ``chord`` warning the group does not have."""
    from meta_study.analysis.answers import flags
    from meta_study.analysis.tables import join_warnings

    joined = join_warnings(["repeated: 1 row repeated a run's accuracies from another source and was counted "
                            "once (e.g. run r1;chord: bogus in a and b)", "backtest: over the tolerance"])
    assert [label for label, _ in flags(joined)] == ["repeated", "backtest"]
    assert "r1,chord: bogus" in dict(flags(joined))["repeated"]


#: In Chromium: zoom in by ``n`` wheel notches (out where negative) at the plot's centre; prints
#: the domain after it and the tick labels drawn.
_ZOOM = r'''
import json, sys
from playwright.sync_api import sync_playwright
page_uri, chromium, flags, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
probe = """(n) => { const svg = document.getElementById('ex-svg'), r = svg.getBoundingClientRect();
  for (let i = 0; i < Math.abs(n); i++) svg.dispatchEvent(new WheelEvent('wheel', {deltaY: n > 0 ? -100 : 100,
    clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));
  return [svg.dataset.domain.split(',').map(Number), Array.from(svg.querySelectorAll('text.tk')).map(t => t.textContent)]; }"""
with sync_playwright() as p:
    b = p.chromium.launch(executable_path=chromium, args=flags)
    page = b.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_uri, wait_until="load")
    print(json.dumps([page.evaluate(probe, n), errors]))
    b.close()
'''


@pytest.mark.slow(20)
def test_zooming_far_in_or_out_never_hangs_the_explorer(tmp_path):
    """A few hundred wheel notches (seconds on a trackpad) zoomed into a span of 1e-14 points: the
    tick loop's `v += step` stopped moving and the tab hung."""
    import json
    import subprocess
    import sys

    from test_report_html import CHROMIUM, FLAGS

    from meta_study import explorer

    heads = pd.DataFrame({"us_task": ["up"], "ds_task": ["a"], "eval_protocol": ["fewshot"], "shots": [5],
                          "holdout_threshold": [0.8], "best_us": [math.nan], "horizon_us": [math.nan]})
    points = pd.DataFrame({"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5,
                           "run_id": ["r1", "r2", "r3"], "us_accuracy": [0.5, 0.6, 0.7], "ds_accuracy": [0.3, 0.4, 0.5]})
    page = tmp_path / "ex.html"
    page.write_text("<!doctype html><meta charset=utf-8>" + explorer.explorer_html(heads, points))
    for n, lo, hi in ((400, 0.01 - 1e-6, 0.0105), (-400, 999, 1000 + 1e-6)):
        r = subprocess.run([sys.executable, "-c", _ZOOM, page.resolve().as_uri(), CHROMIUM, json.dumps(FLAGS), str(n)],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr[-2000:]
        (dom, ticks), errors = json.loads(r.stdout)
        assert not errors
        spans = (dom[1] - dom[0], dom[3] - dom[2])
        assert lo <= min(spans) and max(spans) <= hi, (n, dom)   # clamped: 0.01 to 1000 points a side
        assert 4 <= len(ticks) <= 16, ticks                     # each axis 2-8 labels


def test_a_part_another_command_wrote_with_other_options_since_the_plan_is_not_overwritten(tmp_path):
    """The check of the options ran before the work, outside the directory's lock: a `fit --out D
    --tolerance 5` that finished while `fit --out D` computed was overwritten, silently, by the
    second one's part (results.json then named only the second one's options)."""
    from dataclasses import replace

    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.errors import UserError

    store = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    rd = ResultsDir(tmp_path / "out")
    mine = analyze(store, Selection(), AnalysisOptions(), results=rd, use_ray=False)    # planned: compute
    other_fit = FitOptions()
    other_fit = replace(other_fit, selection=replace(other_fit.selection, tolerance=0.05))
    theirs = analyze(store, Selection(), AnalysisOptions(fit=other_fit), results=rd, use_ray=False)
    rd.write(theirs, Selection(), figures=False)
    before = (rd.path / "results.json").read_text(), (rd.path / "fits.parquet").read_bytes()
    with pytest.raises(UserError, match="fits.parquet: made with other options: --tolerance 5"):
        rd.write(mine, Selection(), figures=False)
    assert ((rd.path / "results.json").read_text(), (rd.path / "fits.parquet").read_bytes()) == before
