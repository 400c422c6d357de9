"""Small defects left by the reviews of 2026-12-06: options given as text, an empty list of sample
sizes, a refit's LATEST naming a directory outside refits/, and an old record without a store
version."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.bootstrap import BootstrapOptions
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.errors import OptionError, Range, UserError, option_message
from meta_study.refit import RefitConfig, _run_values, previous_refit


@pytest.mark.parametrize("make", [lambda: BootstrapOptions(level="0.95"), lambda: SelectionOptions(level=None),
                                  lambda: SelectionOptions(tolerance="3")])
def test_an_option_given_as_text_or_none_is_one_user_error_naming_it(make):
    """``BootstrapOptions(level='0.95')`` was a TypeError from the range's comparison (and the
    message's ``{value:g}`` would have raised another)."""
    with pytest.raises(OptionError, match=r"must be in .*got ('0.95'|None|'3') \(not a number\)") as e:
        make()
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_the_command_line_wording_of_an_option_that_is_no_number():
    assert option_message("level", "0.95", Range(0, 1, lo_open=True, hi_open=True)) == \
        "--level must be a number a confidence level (fraction) in (0, 1), got '0.95'"
    assert not Range(0, 1).contains(None) and not Range(0).contains("1") and Range(0, 1).contains(np.float32(0.5))


def test_an_empty_list_of_sample_sizes_is_refused_not_the_default():
    with pytest.raises(UserError, match="sizes .* is empty; give one size or more, or None"):
        SensitivityOptions(sizes=())
    with pytest.raises(UserError, match="is empty"):
        SensitivityOptions(sizes=[])
    assert SensitivityOptions(sizes=None).sizes is None and SensitivityOptions(sizes=[10]).sizes == (10,)


def _record(d, **kw):
    d.mkdir(parents=True)
    rec = {"time": "2026-12-06T10:00:00+00:00", "store": "s", "fingerprint": "f", "options_fingerprint": "o",
           "changed": [], "unfittable": [], "sources": [], "groups": {}, **kw}
    (d / "refit.json").write_text(json.dumps(rec))
    for name in ("fits.parquet", "index.html"):
        (d / name).write_text("")
    return rec


@pytest.mark.parametrize("latest", ["../elsewhere", "/abs/elsewhere", "..", ".", ""])
def test_a_latest_naming_a_directory_outside_refits_is_no_record(tmp_path, latest):
    out = tmp_path / "out"
    _record(tmp_path / "elsewhere")             # what "../elsewhere" from refits/ reaches
    _record(tmp_path / "abs" / "elsewhere")
    (out / "refits").mkdir(parents=True)
    (out / "LATEST").write_text(latest.replace("/abs", str(tmp_path / "abs")) if latest.startswith("/") else latest)
    assert previous_refit(str(out)) == (None, {})


def test_a_latest_naming_a_version_in_refits_is_read(tmp_path):
    out = tmp_path / "out"
    rec = _record(out / "refits" / "20261206T100000Z")
    (out / "LATEST").write_text("20261206T100000Z\n")
    d, info = previous_refit(str(out))
    assert d == out / "refits" / "20261206T100000Z" and info == rec


def test_a_record_without_a_store_version_publishes(tmp_path):
    """A record written before store_version was kept: publishing it ended in a KeyError."""
    d = tmp_path / "v"
    d.mkdir()
    pd.DataFrame({"law": ["eq1"], "frontier": ["vertices"], "headline": [False], "us_task": ["u"], "ds_task": ["d"],
                  "eval_protocol": ["linear"], "shots": pd.array([None], dtype="Int64"), "saturation": [0.9],
                  "alpha": [1.0], "k": [1.0], "e_ir": [0.1], "fit_err": [0.01], "pred_err": [math.nan]}
                 ).to_parquet(d / "fits.parquet")
    info = {"time": "2026-12-06T10:00:00+00:00", "store": "s", "fingerprint": "f", "options_fingerprint": "o",
            "changed": [], "unfittable": [], "sources": [], "groups": {}}
    params, metrics = _run_values(RefitConfig(store="s", out=str(tmp_path)), d, info)
    assert params["store_version"] == "unknown" and any(k.endswith("alpha") for k, _, _ in metrics)


def test_the_group_columns_are_one_set_of_names():
    """The group's columns are ``schema.GROUP`` everywhere; the CLI writes them out (it imports no
    pyarrow at start) and must agree."""
    import subprocess
    import sys

    from meta_study import cli, explorer
    from meta_study.analysis import controlled
    from meta_study.schema import GROUP

    assert cli.SELECTION_KEYS == (*GROUP, "layer") and tuple(explorer.KEYS) == GROUP and controlled._SLICE == GROUP
    out = subprocess.run([sys.executable, "-c", "import sys, meta_study.cli; print('pyarrow' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_hover_views_draw_60_groups_with_models_and_count_them_right():
    """A group with no model with both accuracies counted among "the first 60 of N groups are
    drawn" and left a drawable group out."""
    from meta_study.report import MAX_HOVER_GROUPS, _hover_html

    n = MAX_HOVER_GROUPS + 5
    heads = pd.DataFrame({"us_task": "u", "ds_task": [f"d{i:03d}" for i in range(n)], "eval_protocol": "linear",
                          "shots": pd.array([None] * n, dtype="Int64"), "holdout_threshold": math.nan,
                          "trusted": False, "law": "ensemble", "level": 0.9})
    rows = []
    for i in range(n):
        if i < 3:           # the first three groups have no model with both accuracies
            rows.append({"ds_task": f"d{i:03d}", "run_id": "r0", "us_accuracy": 0.5, "ds_accuracy": math.nan})
            continue
        for j in range(4):
            rows.append({"ds_task": f"d{i:03d}", "run_id": f"r{j}", "us_accuracy": 0.5 + 0.1 * j,
                         "ds_accuracy": 0.3 + 0.1 * j})
    points = pd.DataFrame(rows).assign(us_task="u", eval_protocol="linear", shots=pd.array([None] * len(rows), dtype="Int64"),
                                       model_name=None)
    html = _hover_html(heads, points)
    assert html.count("<figure>") == MAX_HOVER_GROUPS
    assert f"{MAX_HOVER_GROUPS} of {n} groups are drawn" in html
    assert "d062" in html and "d000" not in html     # the 60 drawn are the first 60 with models


def test_a_results_dir_reads_back_the_options_a_part_was_made_with(tmp_path):
    """``ResultsDir.recorded_options``: what `report` keeps of a part's settings it has no flag
    for (it parsed the record itself before)."""
    from meta_study.analysis.results import MAIN_TABLE, MANIFEST, ResultsDir

    r = ResultsDir(tmp_path)
    assert r.recorded_options("bootstrap") is None                      # no results.json
    opts = "BootstrapOptions(samples=20, level=0.9, seed=3, fit=FitOptions(loss='lsq'), frontiers=('vertices',))"
    (tmp_path / MANIFEST).write_text(json.dumps({"parts": {"bootstrap": {"options": opts, "selection": ""}}}))
    assert r.recorded_options("bootstrap") is None                      # its table is gone
    (tmp_path / MAIN_TABLE["bootstrap"]).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / MAIN_TABLE["bootstrap"]).write_text("")
    got = r.recorded_options("bootstrap")
    assert got == {"samples": 20, "level": 0.9, "seed": 3, "fit.loss": "lsq", "frontiers": ("vertices",)}
    (tmp_path / MANIFEST).write_text("{")                               # unreadable: no record
    assert r.recorded_options("bootstrap") is None
