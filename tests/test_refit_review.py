"""A review of the refit job, its results directory and its report for what a lab would hit:
a report whose words the rows do not support, and a results directory whose page or figures
describe data it no longer holds."""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.results import AnalysisOptions, analyze
from meta_study.analysis.selection import SelectionOptions
from meta_study.refit import RefitConfig, refit
from meta_study.report import render_report
from meta_study.store import Store
from meta_study.validation import validate
from conftest import committed_store, make_rows, quick_refit_config, run_cli


_store = functools.partial(committed_store, runs=30, tasks=("a",))
_cfg = quick_refit_config


def _text(page: Path) -> str:
    """The page's words, as a reader sees them (tags, scripts and styles out; one space apart)."""
    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


def test_the_report_states_the_threshold_the_stop_paying_point_was_found_with(tmp_path):
    """RefitConfig(threshold=0.5) found the stop-paying points at the default 0.1 (the fits read
    fit.selection.payoff_threshold) while its report said "+1 US pt buys < 0.5 DS pt" beside them;
    and render_report printed whatever threshold it was handed, not the fits'."""
    cfg = _cfg(_store(tmp_path / "st"), tmp_path / "out", threshold=0.5)
    assert cfg.fit.selection.payoff_threshold == 0.5 and cfg.threshold == 0.5
    fit_half = FitOptions(selection=SelectionOptions(payoff_threshold=0.5))
    assert RefitConfig(store="s", out="o", fit=fit_half).threshold == 0.5     # set on either side: both
    with pytest.raises(ValueError, match="threshold 0.2 and fit.selection.payoff_threshold 0.5"):
        RefitConfig(store="s", out="o", fit=fit_half, threshold=0.2)
    # the page says the fits' threshold, whatever it is handed
    s = Store(cfg.store)
    a = analyze(s, options=AnalysisOptions(fit=fit_half), use_ray=False)
    fits = a.fits.copy()
    head = fits.index[fits["headline"]][0]
    fits.loc[head, ["trusted", "stop_paying_supported"]] = True
    fits.loc[head, ["stop_paying_us", "stop_paying_lo", "stop_paying_hi"]] = (0.8, 0.7, 0.9)
    (tmp_path / "rep").mkdir()
    page = Path(render_report(dataclasses.replace(a, fits=fits), tmp_path / "rep", threshold=0.1))
    text = _text(page)
    assert "Scaling stops paying (+1 US pt buys < 0.5 DS pt) at 80.0% US" in text, text
    assert "< 0.1 DS pt" not in text


def test_an_untrusted_report_claims_no_interval_its_rows_lack(tmp_path):
    """A store of a few models: no group had a back-test, so no answer had an interval, but the
    verdict said "Each answer still gives its 90% interval"; an answer with no steps (no usable
    fit) read "(...)). . few_points"."""
    one = refit(_cfg(_store(tmp_path / "one", runs=1), tmp_path / "o1"), log=lambda m: None)
    three = refit(_cfg(_store(tmp_path / "three", runs=3), tmp_path / "o3"), log=lambda m: None)
    for r in (one, three):
        assert r.status == "refitted"
        text = _text(Path(r.version_dir) / "index.html")
        assert "No group has a trusted answer here" in text
        assert "Each answer still gives its 90% interval" not in text, text
        assert "No answer has a 90% interval either" in text
        assert ". . " not in text and "). ." not in text, text
    assert "With 1 visible model per group" in _text(Path(one.version_dir) / "index.html")


def test_a_fit_into_a_reports_directory_leaves_no_stale_page_and_no_deleted_groups_figure(tmp_path):
    """`report --out D`, an ingest that deletes the runs of some groups, then `fit --out D`:
    D/index.html still said the old store version's numbers beside the new fits.parquet and the
    figures fit had redrawn; and the deleted groups' figures (and the heatmap of a deleted slice)
    stayed in D/figures, which the next report showed as its own."""
    s = _store(tmp_path / "st", runs=20, tasks=("a", "b"))
    s.commit(validate(make_rows(12, us_task="up2", ds_tasks=("a", "b"), seed=3, run_prefix="q")).table)
    d = tmp_path / "D"
    args = ("--serial", "--trials", "2", "--samples", "20")
    r = run_cli("report", s.uri, "--out", str(d), *args)
    assert r.returncode == 0, r.stderr
    assert any("_b_" in p.name for p in (d / "figures" / "groups").glob("*.png"))
    assert list((d / "figures").glob("f20_up2_*.png"))
    s.commit(validate(make_rows(10, ds_tasks=("a",), seed=7, run_prefix="n")).table,
             delete_runs=[("src", f"r{i}") for i in range(20)] + [("src", f"q{i}") for i in range(12)])
    r = run_cli("fit", s.uri, "--out", str(d))
    assert r.returncode == 0, r.stderr
    assert json.loads((d / "results.json").read_text())["parts"]["fits"]["store_version"] == 3
    assert set(pd.read_parquet(d / "fits.parquet")[["us_task", "ds_task"]].itertuples(index=False)) == {("up", "a")}
    assert not (d / "index.html").exists()       # no page of version 1 beside version 2's fits
    assert not [p for p in (d / "figures" / "groups").iterdir() if "_b_" in p.name]
    r = run_cli("report", s.uri, "--out", str(d), *args)
    assert r.returncode == 0, r.stderr
    page = (d / "index.html").read_text()
    assert "store version: 3" in page and "figures/groups/up_b" not in page
    # nor the heatmap of a slice (US task up2) whose runs were all deleted
    assert not list((d / "figures").glob("f20_up2_*")) and "f20_up2" not in page
    # a command that computed nothing leaves the page as it is
    r = run_cli("fit", s.uri, "--out", str(d))
    assert r.returncode == 0 and "reused fits" in r.stdout, r.stdout + r.stderr
    assert (d / "index.html").read_text() == page


def test_the_report_shows_only_figures_of_groups_in_its_fits(tmp_path):
    """A figure left in figures/groups by an earlier command (of a group no longer in the data) is
    not shown as one of the report's."""
    s = _store(tmp_path / "st", runs=20, tasks=("a",))
    opts = AnalysisOptions(fit=FitOptions())
    a = analyze(s, options=opts, use_ray=False)
    stale = tmp_path / "rep" / "figures" / "groups" / "up_gone_fewshot_5-123456.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    page = Path(render_report(a, tmp_path / "rep"))
    assert "up_gone_fewshot_5" not in page.read_text()


def test_refit_all_frontiers_is_refused_in_one_line(tmp_path):
    """`refit --frontiers all` fitted every group to nothing (each "could not fit: degenerate: no
    usable candidate"), wrote and published that version, and exited 0; `fit` and `report` refuse
    the same option in one line."""
    from conftest import one_error_line

    s = _store(tmp_path / "st", runs=12)
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "out"), "--serial", "--frontiers", "all",
                env={"MLFLOW_TRACKING_URI": ""})
    one_error_line(r, "--frontiers all", "Add one")
    assert not (tmp_path / "out").exists()        # refused before --out is made: no empty directory left


def test_a_version_whose_started_run_is_gone_for_good_is_published_by_the_next_refit(tmp_path, mlflow_server):
    """A refit killed mid-publish leaves OUT/published/ saying "started" with its run's id. When
    that run is then gone for good (deleted and garbage-collected, or the tracking database reset
    at the same URI), every later refit failed "publishing ... failed (RESOURCE_DOES_NOT_EXIST:
    Run ... not found)" while saying the next refit would publish it: the version never was."""
    import subprocess
    import sys
    import time

    from mlflow.tracking import MlflowClient

    from meta_study.refit import _ledger_path, is_published

    s = _store(tmp_path / "st", runs=12)
    exp = f"meta-study/refits-gone-{time.time_ns()}"
    cfg = _cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp)
    first = refit(cfg, log=lambda m: None)
    version = Path(first.version_dir).name
    # the state a publish killed after creating its run leaves: the ledger says "started"
    ledger = _ledger_path(cfg, version)
    entry = json.loads(ledger.read_text())
    ledger.write_text(json.dumps({**entry, "status": "started"}))
    client = MlflowClient(mlflow_server.uri)
    client.delete_run(first.mlflow_run_id)
    gc = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", mlflow_server.backend,
                         "--artifacts-destination", str(mlflow_server.root / "artifacts"),
                         "--run-ids", first.mlflow_run_id, "--tracking-uri", mlflow_server.uri],
                        capture_output=True, text=True, timeout=300)
    assert gc.returncode == 0, gc.stderr
    again = refit(cfg, log=lambda m: None)
    assert again.status == "published" and again.version_dir == first.version_dir
    assert again.mlflow_run_id != first.mlflow_run_id and is_published(cfg, version)
    run = client.get_run(again.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["meta_study.refit"] == version
    assert refit(cfg, log=lambda m: None).status == "noop"


def _two_versions(tmp_path: Path):
    """A store, the fits of its version 1 and of its version 2 (which adds the group 'late')."""
    s = _store(tmp_path / "st", runs=12)
    opts = AnalysisOptions(fit=FitOptions())
    v1 = analyze(s, options=opts, use_ray=False)
    s.commit(validate(make_rows(12, ds_tasks=("late",), seed=4, run_prefix="late")).table)
    v2 = analyze(s, options=opts, use_ray=False)
    assert v1.snapshot_id != v2.snapshot_id
    return s, v1, v2


def test_two_commands_writing_one_results_directory_leave_it_consistent(tmp_path, monkeypatch):
    """Two commands writing one DIR at once (an hourly report overrunning the next, a fit beside
    it): one wrote fits.parquet and, before it recorded it, the other wrote and recorded its own;
    the first then recorded its store version over the other's table, so results.json named one
    version and fits.parquet held another's groups. The directory's writes now take turns."""
    import threading

    from meta_study.analysis import results as R
    from meta_study.analysis.groups import Selection

    _, v1, v2 = _two_versions(tmp_path)
    d = R.ResultsDir(tmp_path / "D")
    held = threading.Event()
    release = threading.Event()
    first = threading.Thread(target=lambda: d.write(v1, Selection(), figures=False))

    def pause_the_first(name):      # the first writer stops with its table written, not yet recorded
        if threading.current_thread() is first:
            held.set()
            assert release.wait(120)

    monkeypatch.setattr(R, "failpoint", pause_the_first)
    first.start()
    assert held.wait(120)
    second = threading.Thread(target=lambda: d.write(v2, Selection(), figures=False))
    second.start()
    second.join(2)          # without the lock it is done by now; with it, it waits for the first
    release.set()
    first.join(120)
    second.join(120)
    assert not first.is_alive() and not second.is_alive()
    recorded = json.loads((d.path / "results.json").read_text())["parts"]["fits"]
    has_late = "late" in set(pd.read_parquet(d.path / "fits.parquet")["ds_task"])
    assert not recorded.get("incomplete")
    assert has_late == (recorded["store_snapshot"] == v2.snapshot_id), (recorded, has_late)
    assert recorded["store_snapshot"] == v2.snapshot_id     # the later write is the one kept


def test_a_report_of_a_directory_another_command_rewrote_is_refused(tmp_path):
    """A report's page written after another command had rewritten the directory with a newer store
    version stated the old numbers over the new tables; it is refused in one line, and no page is
    left beside the new tables."""
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import ResultsDir
    from meta_study.errors import UserError

    _, v1, v2 = _two_versions(tmp_path)
    d = ResultsDir(tmp_path / "D")
    d.write(v1, Selection(), figures=False)
    d.write(v2, Selection(), figures=False)       # another command, meanwhile
    with pytest.raises(UserError, match="another command wrote fits .store version 2. while this report was made"):
        render_report(v1, d.path)
    assert not (d.path / "index.html").exists()
    render_report(v2, d.path)
    assert "store version: 2" in (d.path / "index.html").read_text()


def test_a_refit_whose_source_failed_exits_1_and_records_it(tmp_path):
    """An ingest source that failed was a line among others: the refit published results of the
    store as it was and exited 0, so a cron refit never showed the failure."""
    ok = tmp_path / "ok.csv"
    make_rows(12, ds_tasks=("a",)).drop(columns=["extra"]).to_csv(ok, index=False)
    bad = tmp_path / "typo.csv"
    bad.write_text("run_id,us_task,us_accuracy\nr1,up,0.5\n")
    out = tmp_path / "out"
    r = run_cli("refit", "--store", str(tmp_path / "st"), "--source", str(ok), "--source", str(bad), "--serial",
                "--out", str(out), "--trials", "1", "--samples", "10")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refit: 1 source(s) failed; this refit used the store as it was" in r.stderr
    assert "refit: 1 changed" in r.stdout
    (version,) = (out / "refits").iterdir()
    failed = json.loads((version / "refit.json").read_text())["failed_sources"]
    assert len(failed) == 1 and failed[0].startswith(str(bad)) and "FAILED" in failed[0]
    assert "(refit.json: failed_sources)" in r.stderr
    # again: nothing changed, so no version and no refit.json records it; the line says no more
    r = run_cli("refit", "--store", str(tmp_path / "st"), "--source", str(ok), "--source", str(bad), "--serial",
                "--out", str(out), "--trials", "1", "--samples", "10")
    assert r.returncode == 1 and "refit: noop" in r.stdout, r.stdout + r.stderr
    assert "refit: 1 source(s) failed; this refit used the store as it was\n" in r.stderr, r.stderr
    assert len(list((out / "refits").iterdir())) == 1


def test_a_refit_into_a_new_store_whose_only_source_fails_leaves_nothing_there(tmp_path):
    # it said "not a meta-study store (no _meta/manifests)" and left _meta/REFIT.lock at the path,
    # which every later command then read as a damaged store
    bad = tmp_path / "typo.csv"
    bad.write_text("run_id,us_task,us_accuracy\nr1,up,0.5\n")
    st = tmp_path / "new"
    r = run_cli("refit", "--store", str(st), "--source", str(bad), "--serial", "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no store was made, nothing to refit: every source failed" in r.stderr and "manifests" not in r.stderr
    assert not st.exists()


def test_refit_tracking_uri_none_publishes_nothing_and_a_lone_mapping_is_refused(tmp_path):
    # the help said "none: no run", and --tracking-uri none failed: "no MLflow tracking server
    # answers there"; --mapping without --source was silently ignored
    st = _store(tmp_path / "st")
    r = run_cli("refit", "--store", st.uri, "--tracking-uri", "none", "--serial", "--out", str(tmp_path / "out"),
                "--trials", "1", "--samples", "10")
    assert r.returncode == 0 and "mlflow run" not in r.stdout, r.stdout + r.stderr
    m = tmp_path / "m.yaml"
    m.write_text("name: x\n")
    r = run_cli("refit", "--store", st.uri, "--mapping", str(m), "--serial", "--out", str(tmp_path / "out2"))
    assert r.returncode == 2 and "it maps the files of --source, and none is given" in r.stderr, r.stderr
