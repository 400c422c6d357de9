"""Review (session 47) of what a refit says about itself: the groups it could not fit, named as every
command names them; every option that changes a number logged (``--ds-target`` was not); why a new
version was made (the data, or the options: which); and `report` into a DIR made with options it
has no flag for."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import committed_store, make_rows, one_error_line, quick_refit_config, run_cli  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _quiet(m: str) -> None:
    pass


def test_a_group_without_shots_that_cannot_fit_is_named_as_other_commands_name_it(tmp_path):
    """`could not fit: up -> flat (linear, shots=<NA>): ...`: a group with no shot count (a linear
    probe) printed pandas' NA raw. It reads `up -> flat (linear)`, as `fit` and the report say it."""
    from meta_study.refit import refit
    from meta_study.validation import validate

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    flat = make_rows(6, ds_tasks=("flat",), run_prefix="f", shots=(None,))
    flat["us_accuracy"], flat["eval_protocol"] = 0.5, "linear"
    s.commit(validate(flat).table)
    res = refit(quick_refit_config(s, tmp_path / "out"), log=_quiet)
    assert res.status == "refitted", res
    assert [u.split(": ")[0] for u in res.unfittable] == ["up -> flat (linear)"], res.unfittable
    assert not any("<NA>" in u or "shots=" in u for u in res.unfittable), res.unfittable
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    assert info["unfittable"] == res.unfittable


def test_the_refit_line_says_why_and_shows_task_names_as_written(capsys):
    """The CLI's lines: a `why:` line under "N changed", and a task name from a source with an
    escape code in it shown, not obeyed (it was echoed raw)."""
    from meta_study.cli import _echo_refit
    from meta_study.refit import RefitResult

    res = RefitResult(status="refitted", version_dir="out/refits/v", changed=[("up", "a", "fewshot", 5)],
                      unfittable=["up -> a\x1b[2J (linear): degenerate: no_fit"],
                      message="since the refit of T, the options changed (--threshold 0.1 -> 0.2), not the data: "
                              "every group refitted")
    _echo_refit(res)
    out = capsys.readouterr().out
    assert "refit: 1 changed, 0 unchanged group(s) -> out/refits/v" in out
    assert "\n  why: since the refit of T, the options changed (--threshold 0.1 -> 0.2), not the data" in out
    assert "could not fit: up -> a\\x1b[2J (linear)" in out and "\x1b" not in out


@pytest.mark.slow(30)
def test_the_run_logs_ds_target_and_the_calculator_s_answer(tmp_path):
    """`refit --ds-target 0.4` logged no `ds_target` param and no `us_needed` metric: two runs at
    other targets differed only in options_fingerprint, and the calculator's answer was in the
    fits.parquet artifact alone."""
    from mlflow.tracking import MlflowClient

    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.refit import metric_key, refit

    s = committed_store(tmp_path / "st", runs=30, tasks=("a",))
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    fit = FitOptions(selection=SelectionOptions(ds_target=0.4))
    res = refit(quick_refit_config(s, tmp_path / "out", tracking_uri=db, fit=fit), log=_quiet)
    run = MlflowClient(db).get_run(res.mlflow_run_id)
    p = run.data.params
    assert p["ds_target"] == "0.4", p
    for name in ("sizes", "sensitivity_seed", "bootstrap_seed", "bootstrap_level", "bootstrap_frontiers"):
        assert name in p, name
    assert p["why"] == res.message and p["why"].startswith("no earlier refit"), p["why"]
    heads = pd.read_parquet(Path(res.version_dir) / "fits.parquet").query("headline")
    assert heads["us_needed"].notna().any(), heads[["us_needed", "status"]]
    for r in heads.itertuples():
        key = metric_key((r.us_task, r.ds_task, r.eval_protocol, r.shots), "headline", "us_needed")
        if pd.notna(r.us_needed):
            assert run.data.metrics[key] == pytest.approx(r.us_needed), key
    # without a target: the param says none, and no us_needed metric is logged
    res = refit(quick_refit_config(s, tmp_path / "out2", tracking_uri=db), log=_quiet)
    run = MlflowClient(db).get_run(res.mlflow_run_id)
    assert run.data.params["ds_target"] == "none"
    assert not any(k.endswith("/us_needed") for k in run.data.metrics)


@pytest.mark.slow(60)
def test_a_new_version_says_whether_the_options_or_the_data_changed(tmp_path, monkeypatch):
    """A refit whose options alone changed said "refit: 3 changed" as one whose data had: now it
    names the options that changed (as flags), or the data, or the analysis code."""
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.refit import refit
    from meta_study.validation import validate

    s = committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))
    out = tmp_path / "out"
    base = quick_refit_config(s, out)
    first = refit(base, log=_quiet)
    assert first.message == "no earlier refit in this output directory to compare with: every group fitted"
    time.sleep(1.1)    # version directories are named by the second
    opts = replace(base, threshold=0.2, fit=replace(base.fit, selection=SelectionOptions(ds_target=0.4)))
    second = refit(opts, log=_quiet)
    assert second.status == "refitted" and len(second.changed) == 2
    assert "the options changed (--threshold 0.1 -> 0.2; --ds-target none -> 0.4), not the data: every group " \
           "refitted" in second.message, second.message
    info = json.loads((Path(second.version_dir) / "refit.json").read_text())
    assert info["why"] == second.message and info["options"]["threshold"] == 0.2
    time.sleep(1.1)
    s.commit(validate(make_rows(5, ds_tasks=("b", "c"), seed=3, run_prefix="new")).table)
    third = refit(opts, log=_quiet)
    assert sorted(k[1] for k in third.changed) == ["b", "c"], third.changed
    assert "the data of 2 group(s) changed (1 new), not the options: those refitted" in third.message, third.message
    # other analysis code (an upgrade): said as that, not as options
    time.sleep(1.1)
    monkeypatch.setattr("meta_study.analysis.results._CODE", ["0123456789abcdef"])
    fourth = refit(opts, log=_quiet)
    assert "the analysis code changed" in fourth.message and "the options changed" not in fourth.message, \
        fourth.message
    assert fourth.message.endswith("not the data: every group refitted"), fourth.message


@pytest.mark.slow(20)
def test_a_record_from_before_options_were_recorded_says_so(tmp_path):
    """A version written before refit.json recorded its options: the change is still said, as the
    options or the code, without naming one it cannot know."""
    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    base = quick_refit_config(s, tmp_path / "out")
    first = refit(base, log=_quiet)
    rec = Path(first.version_dir) / "refit.json"
    info = json.loads(rec.read_text())
    for k in ("options", "analysis_code", "why"):
        info.pop(k)
    rec.write_text(json.dumps(info))
    time.sleep(1.1)
    second = refit(replace(base, threshold=0.3), log=_quiet)
    assert "the options or the analysis code changed (that refit recorded no options to name), not the data" \
        in second.message, second.message
    # a record damaged since: not "no earlier refit", which sent its owner looking for a lost OUT
    (Path(second.version_dir) / "refit.json").write_text("[]")
    time.sleep(1.1)
    third = refit(replace(base, threshold=0.3), log=_quiet)
    assert third.message == (f"the last refit's record (LATEST: {Path(second.version_dir).name}) is missing or "
                             "damaged, nothing to compare with: every group fitted"), third.message


@pytest.mark.slow(30)
def test_report_keeps_the_settings_it_has_no_option_for_from_dir(tmp_path):
    """`bootstrap --seed 3 --out D`, then `report --out D`: refused with "made with other options:
    --seed 3 (this command: 0); give another --out, or the same options to reuse it", and report
    has no --seed. The settings report lacks are kept from D (and said); those it has are still
    compared."""
    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    d = str(tmp_path / "D")
    r = run_cli("bootstrap", s.uri, "--out", d, "--seed", "3", "--level", "0.9", "--samples", "20", "--serial")
    assert r.returncode == 0, r.stderr
    r = run_cli("sensitivity", s.uri, "--out", d, "--seed", "4", "--bootstrap", "--trials", "2", "--serial",
                "--no-figures")
    assert r.returncode == 0, r.stderr
    # a flag report has, given otherwise: still refused, naming it
    bad = run_cli("report", s.uri, "--out", d, "--serial", "--trials", "2", "--samples", "30")
    one_error_line(bad, "bootstrap.parquet: made with other options: --samples 20 (this command: 30)")
    r = run_cli("report", s.uri, "--out", d, "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0, r.stderr
    assert f"bootstrap: kept the --level 0.9 --seed 3 it was made with in {d}" in r.stdout, r.stdout
    assert f"sensitivity: kept the --bootstrap --seed 4 it was made with in {d}" in r.stdout, r.stdout
    assert "reused bootstrap" in r.stdout and "reused sensitivity" in r.stdout, r.stdout
    assert (tmp_path / "D" / "index.html").exists()
    # a DIR of the defaults: nothing is said
    r = run_cli("report", s.uri, "--out", str(tmp_path / "E"), "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0 and "kept the" not in r.stdout, (r.stdout, r.stderr)
