"""The refit job: versioned results, no-op when nothing changed, only changed groups re-sampled,
an MLflow run with metrics and artifacts, overlap protection, a loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from meta_study.refit import RefitConfig, metric_key, parse_every, refit, refit_lock
from meta_study.validation import validate
from meta_study.store import Store
from conftest import committed_store, make_rows, one_error_line, quick_refit_config, run_cli


_store = committed_store           # 60 runs on DS tasks a, b, c
_cfg = quick_refit_config


def test_second_refit_is_a_noop(tmp_path, monkeypatch):
    s = _store(tmp_path / "st")
    first = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert first.status == "refitted" and len(first.changed) == 3
    v = Path(first.version_dir)
    for f in ("fits.parquet", "sensitivity.parquet", "bootstrap.parquet", "index.html", "refit.json",
              "figures/fits_grid.png", "figures/sensitivity.png", "correlations/f21_us_ds_spearman.parquet"):
        assert (v / f).exists(), f
    assert (tmp_path / "out" / "LATEST").read_text().strip() == v.name
    with monkeypatch.context() as m:   # a no-op stops at the fingerprints: it fits nothing
        m.setattr("meta_study.analysis.results.fit_table", lambda *a, **k: pytest.fail("a no-op refit fitted"))
        second = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert second.status == "noop" and "nothing changed" in second.message
    assert len(list((tmp_path / "out" / "refits").iterdir())) == 1
    # changing an analysis option refits everything
    m = monkeypatch
    third = refit(RefitConfig(**{**_cfg(s, tmp_path / "out").__dict__, "threshold": 0.2}), log=lambda m: None)
    assert third.status == "refitted" and len(third.changed) == 3
    # and so does other analysis code (an upgrade; the package version did not change)
    assert refit(RefitConfig(**{**_cfg(s, tmp_path / "out").__dict__, "threshold": 0.2}),
                 log=lambda m: None).status == "noop"
    m.setattr("meta_study.analysis.results._CODE", ["0123456789abcdef"])
    fourth = refit(RefitConfig(**{**_cfg(s, tmp_path / "out").__dict__, "threshold": 0.2}), log=lambda m: None)
    assert fourth.status == "refitted" and len(fourth.changed) == 3


def test_only_changed_groups_are_resampled(tmp_path):
    s = _store(tmp_path / "st")
    first = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    time.sleep(1.1)  # version directories are named by the second
    more = make_rows(10, ds_tasks=("b",), seed=9, run_prefix="new")
    s.commit(validate(more).table)
    second = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert second.status == "refitted"
    assert [k[1] for k in second.changed] == ["b"] and second.unchanged == 2
    old = pd.read_parquet(Path(first.version_dir) / "sensitivity.parquet")
    new = pd.read_parquet(Path(second.version_dir) / "sensitivity.parquet")
    for task in ("a", "c"):   # unchanged groups keep their rows exactly
        pd.testing.assert_frame_equal(old[old["ds_task"] == task].reset_index(drop=True),
                                      new[new["ds_task"] == task].reset_index(drop=True))
    fits = pd.read_parquet(Path(second.version_dir) / "fits.parquet")
    assert fits.set_index(["ds_task", "law", "frontier"]).loc[("b", "eq1", "all"), "n_points"] == 70
    info = json.loads((Path(second.version_dir) / "refit.json").read_text())
    assert info["previous"] == Path(first.version_dir).name and len(info["changed"]) == 1


def test_the_refit_and_meta_study_fit_make_the_same_tables(tmp_path):
    """The refit goes through the same orchestrator as `meta-study fit` / `report` and the demo
    (analysis.results.analyze): on one store with one set of options, its fits.parquet equals
    fit's, and after one group changed, its incremental sensitivity and bootstrap (the changed
    group resampled, the others' rows kept) equal a full analysis of the new store."""
    from meta_study.analysis.results import AnalysisOptions, analyze

    s = _store(tmp_path / "st")
    cfg = _cfg(s, tmp_path / "out")
    first = refit(cfg, log=lambda m: None)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "fit"), "--no-figures")
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(Path(first.version_dir) / "fits.parquet"),
                                  pd.read_parquet(tmp_path / "fit" / "fits.parquet"))
    time.sleep(1.1)  # version directories are named by the second
    s.commit(validate(make_rows(10, ds_tasks=("b",), seed=9, run_prefix="new")).table)
    second = refit(cfg, log=lambda m: None)
    assert [k[1] for k in second.changed] == ["b"]
    full = analyze(Store(s.uri), options=AnalysisOptions(fit=cfg.fit, sensitivity=cfg.sensitivity,
                                                         bootstrap=cfg.bootstrap), use_ray=False)
    for name, table in (("fits", full.fits), ("sensitivity", full.sensitivity), ("bootstrap", full.bootstrap)):
        pd.testing.assert_frame_equal(pd.read_parquet(Path(second.version_dir) / f"{name}.parquet"),
                                      table.reset_index(drop=True), check_dtype=False, obj=name)


def test_unfittable_groups_are_reported_and_the_refit_goes_on(tmp_path):
    s = _store(tmp_path / "st")
    flat = make_rows(6, ds_tasks=("flat",), run_prefix="f")
    flat["us_accuracy"] = 0.5
    s.commit(validate(flat).table)
    r = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert r.status == "refitted"
    assert any("flat" in u and "degenerate" in u for u in r.unfittable)
    html = (Path(r.version_dir) / "index.html").read_text()
    assert "could not be made" in html and "degenerate" in html


def test_refit_publishes_one_mlflow_run(tmp_path, mlflow_server):
    s = _store(tmp_path / "st")
    exp = f"meta-study/refits-{os.getpid()}-{time.time_ns()}"
    r = refit(_cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp), log=lambda m: None)
    client = MlflowClient(mlflow_server.uri)
    e = client.get_experiment_by_name(exp)
    assert e.tags.get("mlflow.experimentKind") == "custom_model_development"   # the UI lists its runs
    runs = client.search_runs([e.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == r.mlflow_run_id and runs[0].info.status == "FINISHED"
    # the address the CLI prints opens the run in the UI's model-training view (tests/test_mlflow_ui.py)
    assert r.mlflow_url == f"{mlflow_server.uri}/#/experiments/{e.experiment_id}/runs/{r.mlflow_run_id}" \
                           "?workflowType=machine_learning"
    run = runs[0]
    assert run.data.params["store"] == s.uri and run.data.params["n_groups"] == "3"
    info = json.loads((Path(r.version_dir) / "refit.json").read_text())
    assert run.data.params["fingerprint"] == info["fingerprint"]
    fits = pd.read_parquet(Path(r.version_dir) / "fits.parquet")
    key = metric_key(("up", "a", "fewshot", 5), "vertices", "saturation")
    assert key == "fit/up/a/fewshot/5/vertices/saturation"
    paper = fits.set_index(["ds_task", "law", "frontier"]).loc[("a", "eq1", "vertices")]
    assert run.data.metrics[key] == pytest.approx(paper["saturation"])
    head = fits[fits["headline"]].set_index("ds_task").loc["a"]
    assert run.data.metrics[metric_key(("up", "a", "fewshot", 5), "headline", "backtest_err")] == \
        pytest.approx(head["backtest_err"])
    assert run.data.metrics[metric_key(("up", "a", "fewshot", 5), "headline", "trusted")] == float(head["trusted"])
    arts = {a.path for a in client.list_artifacts(r.mlflow_run_id)}
    assert {"index.html", "fits.parquet", "sensitivity.parquet", "bootstrap.parquet", "figures", "correlations"} <= arts
    figs = {a.path for a in client.list_artifacts(r.mlflow_run_id, "figures")}
    assert "figures/fits_grid.png" in figs and "figures/sensitivity.png" in figs
    # a no-op refit logs nothing
    assert refit(_cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp),
                 log=lambda m: None).status == "noop"
    assert len(client.search_runs([e.experiment_id])) == 1


def test_two_refits_never_overlap_on_one_store(tmp_path):
    s = _store(tmp_path / "st")
    with refit_lock(s, str(tmp_path / "other-out")) as held:
        assert held
        r = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
        assert r.status == "locked" and "another refit" in r.message
    assert refit(_cfg(s, tmp_path / "out"), log=lambda m: None).status == "refitted"


def test_every_loop_from_the_cli(tmp_path):
    s = _store(tmp_path / "st")
    p = subprocess.Popen([sys.executable, "-m", "meta_study.cli", "refit", "--store", s.uri, "--out",
                          str(tmp_path / "out"), "--every", "1s", "--serial", "--trials", "2", "--samples", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sum("refit: noop" in x for x in lines) < 2:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    text = "".join(lines)
    assert text.count("refit: 3 changed") == 1 and text.count("refit: noop") >= 2, text
    assert "next refit in" in text


def test_a_scheduled_refit_outlives_a_failed_run(tmp_path):
    """`refit --every 1h` exited 2 at the first error of any later run (the store or the tracking
    server briefly unreachable), ending the schedule; the error is now said and the loop goes on."""
    s = _store(tmp_path / "st")
    p = subprocess.Popen([sys.executable, "-m", "meta_study.cli", "refit", "--store", s.uri, "--out",
                          str(tmp_path / "out"), "--every", "1s", "--serial", "--trials", "2", "--samples", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 240
    moved = failed = False
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "refit: 3 changed" in line:      # the store goes away; a later run (not always the next) fails
            os.rename(tmp_path / "st", tmp_path / "gone")
            moved = True
        elif moved and "the next refit tries again" in line:
            assert not (tmp_path / "st").exists()     # nothing made at the store's path meanwhile
            os.rename(tmp_path / "gone", tmp_path / "st")
            moved, failed = False, True
        elif failed and "refit: noop" in line:
            break
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    text = "".join(lines)
    assert failed and "refit: noop" in text.split("the next refit tries again")[-1], text   # failed, then on again
    assert "Traceback" not in text


def test_cli_refit_and_report(tmp_path):
    s = _store(tmp_path / "st")
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "out"), "--serial", "--trials", "2",
                "--samples", "20", env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stderr
    assert "refit: 3 changed, 0 unchanged" in r.stdout and "report:" in r.stdout
    r = run_cli("report", s.uri, "--out", str(tmp_path / "rep"), "--serial", "--trials", "2", "--samples", "20")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "index.html").exists()
    bad = run_cli("refit", "--store", s.uri, "--every", "soon", cwd=tmp_path)   # its default --out is made there
    assert bad.returncode == 2 and "--every" in bad.stderr


def test_refit_frontiers_reach_the_sensitivity_step(tmp_path):
    """`refit --frontiers vertices` fitted on vertices only but ran the sample-size sensitivity on
    all six frontiers (`sensitivity --frontiers` and `report --frontiers` honour the flag)."""
    s = _store(tmp_path / "st")
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "out"), "--serial", "--trials", "2",
                "--samples", "20", "--frontiers", "vertices,bins", env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stderr
    [sens] = (tmp_path / "out").glob("refits/*/sensitivity.parquet")
    assert set(pd.read_parquet(sens)["frontier"]) == {"vertices", "bins"}


def test_helpers():
    assert parse_every("90s") == 90 and parse_every("30m") == 1800 and parse_every("1d") == 86400
    key = metric_key(("up", "..", "a/b", None), "hull", "k")     # made MLflow-safe, and marked by a hash
    assert key.startswith("fit/up/_/a_b/na-") and key.endswith("/hull/k")


def test_a_killed_refits_half_written_directory_is_removed(tmp_path):
    s = _store(tmp_path / "st")
    refits = tmp_path / "out" / "refits"
    dead = refits / ".tmp-20260101T000000Z-999999999"          # no such pid: a SIGKILLed refit
    (dead / "figures").mkdir(parents=True)
    (dead / "fits.parquet").write_bytes(b"half")
    live = refits / f".tmp-20260101T000001Z-{os.getppid()}"    # a live process's: not ours to remove
    live.mkdir()
    r = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert r.status == "refitted"
    assert not dead.exists() and live.exists()
    assert not [d for d in refits.glob(".tmp-*") if d != live]


def _refit_cli(s: Store, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "meta_study.cli", "refit", "--store", s.uri, "--out", str(out), "--serial",
            "--trials", "2", "--samples", "20", *args]


def _runs(client: MlflowClient, exp: str) -> list:
    e = client.get_experiment_by_name(exp)
    return client.search_runs([e.experiment_id]) if e else []


def _kill_when(cmd: list[str], ready, timeout: float = 240) -> None:
    """Start ``cmd`` and SIGKILL it as soon as ``ready()`` is true (polled every 10 ms)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert p.poll() is None, f"the refit ended before it could be killed: {p.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the refit never reached the point to kill it at"
            time.sleep(0.01)
    finally:
        p.kill()
        p.wait(timeout=60)


@pytest.mark.slow(60)
def test_a_killed_publish_is_finished_by_the_next_refit_exactly_once(tmp_path, mlflow_server):
    s = _store(tmp_path / "st")
    out = tmp_path / "out"
    exp = f"meta-study/refits-killed-{os.getpid()}-{time.time_ns()}"
    cmd = _refit_cli(s, out, "--tracking-uri", mlflow_server.uri, "--experiment", exp)
    client = MlflowClient(mlflow_server.uri)
    # 1. killed right after OUT/LATEST moved: the version exists, its run does not (or is partial)
    _kill_when(cmd, lambda: (out / "LATEST").exists())
    first = (out / "LATEST").read_text().strip()
    r = run_cli(*cmd[3:])
    assert r.returncode == 0, r.stderr
    assert "refit: published:" in r.stdout and "left unpublished" in r.stdout, r.stdout   # not "noop"
    runs = _runs(client, exp)
    assert len(runs) == 1 and runs[0].data.tags["meta_study.refit"] == first, [x.info for x in runs]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["meta_study.role"] == "refit"
    assert runs[0].data.params["n_groups"] == "3" and any(k.startswith("fit/") for k in runs[0].data.metrics)
    assert run_cli(*cmd[3:]).stdout.startswith("refit: noop")
    # 2. killed once the new version's run exists: the next refit completes that same run
    time.sleep(1.1)                                  # version directories are named by the second
    s.commit(validate(make_rows(10, ds_tasks=("b",), seed=9, run_prefix="new")).table)
    _kill_when(cmd, lambda: any(x.info.status == "RUNNING" for x in _runs(client, exp)))
    started = [x for x in _runs(client, exp) if x.info.status == "RUNNING"]
    assert len(started) == 1
    r = run_cli(*cmd[3:])
    assert r.returncode == 0 and "refit: published:" in r.stdout, r.stdout + r.stderr
    runs = _runs(client, exp)
    assert len(runs) == 2 and {x.info.status for x in runs} == {"FINISHED"}
    again = client.get_run(started[0].info.run_id)
    assert again.info.status == "FINISHED" and again.data.params["n_changed"] == "1"
    assert again.data.metrics["refit/changed"] == 1.0
    # 3. killed mid-publish, then the data changes before the next refit: the new version is
    # published, and the run of the version it replaced is closed, never left RUNNING
    time.sleep(1.1)
    s.commit(validate(make_rows(10, ds_tasks=("c",), seed=11, run_prefix="newer")).table)
    _kill_when(cmd, lambda: any(x.info.status == "RUNNING" for x in _runs(client, exp)))
    time.sleep(1.1)
    s.commit(validate(make_rows(10, ds_tasks=("a",), seed=12, run_prefix="newest")).table)
    r = run_cli(*cmd[3:])
    assert r.returncode == 0 and "refit: 1 changed" in r.stdout, r.stdout + r.stderr
    runs = _runs(client, exp)
    assert len(runs) == 4 and sorted(x.info.status for x in runs) == ["FINISHED"] * 3 + ["KILLED"]
    killed = [x for x in runs if x.info.status == "KILLED"][0]
    assert killed.data.tags["meta_study.status"] == "superseded"
    assert not [x for x in runs if x.info.status == "RUNNING"]


def test_a_refit_refuses_credentials_and_fails_in_one_line_on_a_dead_server(tmp_path):
    from mlflow_server import refused_port

    s = _store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "out"
    secret = "PW-s3cret-123"
    cmd = _refit_cli(s, out)[3:]
    for args, env, where in ((("--tracking-uri", f"http://alice:{secret}@127.0.0.1:9/"), {}, "--tracking-uri"),
                             ((), {"MLFLOW_TRACKING_URI": f"http://alice:{secret}@127.0.0.1:9/"}, "MLFLOW_TRACKING_URI"),
                             ((), {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:9/?token={secret}"}, "MLFLOW_TRACKING_URI")):
        r = run_cli(*cmd, *args, env=env)
        assert r.returncode == 2 and secret not in r.stdout + r.stderr, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "credentials" in r.stderr and where in r.stderr
        assert not out.exists() or not (out / "LATEST").exists()
    # a server nothing answers at: one line, seconds (MLflow alone retried for ~4 minutes), nothing done
    dead = f"http://127.0.0.1:{refused_port()}"
    t0 = time.monotonic()
    r = run_cli(*cmd, "--tracking-uri", dead)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"meta-study: error: --tracking-uri {dead}: no MLflow tracking server answers there " \
                               "(connection refused); nothing was refitted"
    assert time.monotonic() - t0 < 120
    assert not (out / "LATEST").exists()


def test_a_failed_publish_is_one_line_that_says_the_next_refit_publishes(tmp_path, mlflow_server):
    from meta_study.refit import PublishError, is_published, publish_to_mlflow
    from mlflow_server import refused_port

    s = _store(tmp_path / "st", runs=12, tasks=("a",))
    exp = f"meta-study/refits-failed-{os.getpid()}-{time.time_ns()}"
    r = refit(_cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp), log=lambda m: None)
    version = Path(r.version_dir)
    info = json.loads((version / "refit.json").read_text())
    dead = _cfg(s, tmp_path / "out", tracking_uri=f"http://127.0.0.1:{refused_port()}", experiment=exp)
    with pytest.raises(PublishError) as e:     # the server failed partway: exit 1, not "bad input"
        publish_to_mlflow(dead, version, info)
    assert "\n" not in str(e.value) and "the next refit publishes them" in str(e.value) and "refused" in str(e.value)
    assert not is_published(dead, version.name)
    assert is_published(_cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp), version.name)


def test_a_refit_is_of_the_store_version_it_read(tmp_path, monkeypatch):
    """An ingest that committed while a refit ran made refit.json, results.json and the figures
    say version 2 while fits.parquet held version 1's groups and the correlation tables (which
    read the store again) version 2's rows."""
    from meta_study.analysis.groups import Selection

    s = _store(tmp_path / "st")
    read = Selection.snapshot

    def then_an_ingest(self, store):
        snap = read(self, store)
        s.commit(validate(make_rows(20, ds_tasks=("late",), seed=5, run_prefix="late")).table)   # version 2
        return snap

    monkeypatch.setattr(Selection, "snapshot", then_an_ingest)
    r = refit(_cfg(s, tmp_path / "out"), log=lambda m: None)
    assert s.version == 2
    v = Path(r.version_dir)
    assert json.loads((v / "refit.json").read_text())["store_version"] == 1
    part = json.loads((v / "results.json").read_text())["parts"]["fits"]
    assert part["store_version"] == 1 and part["store_snapshot"].startswith("1:")
    assert set(pd.read_parquet(v / "fits.parquet")["ds_task"]) == {"a", "b", "c"}
    f21 = pd.read_parquet(v / "correlations" / "f21_us_ds_spearman.parquet")
    assert "late" not in set(f21.astype(str).stack())


def test_two_versions_of_one_second_in_one_out_both_exist(tmp_path, monkeypatch):
    """Refits of two stores into one --out in the same second crashed (`OSError: [Errno 39]
    Directory not empty: '.tmp-...' -> '.../refits/20261203T220248Z'`) and lost the analysis:
    version names were only unique to the second."""
    import datetime as dt
    import types

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 12, 3, 22, 2, 48, tzinfo=tz)

    monkeypatch.setattr("meta_study.refit._dt", types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone))
    one, two = _store(tmp_path / "st1", runs=12, tasks=("a",)), _store(tmp_path / "st2", runs=12, tasks=("b",), seed=1)
    first = refit(_cfg(one, tmp_path / "out"), log=lambda m: None)
    second = refit(_cfg(two, tmp_path / "out"), log=lambda m: None)
    assert first.status == second.status == "refitted"
    names = sorted(p.name for p in (tmp_path / "out" / "refits").iterdir())
    assert names == ["20261203T220248Z", "20261203T220248Z-02"]      # sorted by name = by time
    assert Path(second.version_dir).name == names[-1] == (tmp_path / "out" / "LATEST").read_text().strip()
    assert json.loads((Path(second.version_dir) / "refit.json").read_text())["previous"] == names[0]


def test_a_refit_into_an_out_another_refit_writes_is_skipped(tmp_path):
    """Refits of two stores (two store locks) into one --out ran at once: each would end the
    other's MLflow run as superseded mid-publish. The second is skipped, like on one store."""
    from meta_study.refit import out_lock

    one, two = _store(tmp_path / "st1", runs=12, tasks=("a",)), _store(tmp_path / "st2", runs=12, tasks=("b",))
    with out_lock(str(tmp_path / "out")) as held:
        assert held
        r = refit(_cfg(two, tmp_path / "out"), log=lambda m: None)
        assert r.status == "locked" and f"another refit is writing to {tmp_path / 'out'} (pid {os.getpid()}" in r.message
        assert not (tmp_path / "out" / "refits").exists()
    assert refit(_cfg(one, tmp_path / "out"), log=lambda m: None).status == "refitted"


def test_a_refit_of_no_store_creates_nothing(tmp_path):
    """`refit --store nosuch --out O6` created nosuch/_meta/REFIT.lock and O6, then said "not a
    meta-study store"."""
    from meta_study.errors import UserError

    r = run_cli("refit", "--store", str(tmp_path / "nosuch"), "--out", str(tmp_path / "O6"), "--serial",
                env={"MLFLOW_TRACKING_URI": ""})
    assert one_error_line(r, f"{tmp_path / 'nosuch'}: no such store")
    with pytest.raises(UserError, match="no such store"):
        refit(RefitConfig(store=str(tmp_path / "nosuch"), out=str(tmp_path / "O7"), use_ray=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_metric_keys_are_unique_per_group_and_within_mlflows_limit():
    from meta_study.refit import MLFLOW_KEY_MAX

    assert metric_key(("up", "a", "fewshot", 5), "vertices", "k") == "fit/up/a/fewshot/5/vertices/k"
    assert metric_key(("up", "a", "linear", None), "headline", "alpha") == "fit/up/a/linear/na/headline/alpha"
    groups = [("up", "a/b", "fewshot", 5), ("up", "a_b", "fewshot", 5), ("up", "..", "fewshot", 5),
              ("up", "_", "fewshot", 5), ("u" * 300, "d" * 300 + "1", "p" * 300, -2**63),
              ("u" * 300, "d" * 300 + "2", "p" * 300, -2**63), ("up", "ü", "fewshot", None), ("up", "_", "fewshot", None)]
    keys = [metric_key(g, "headline", "stop_paying_us") for g in groups]
    assert len(set(keys)) == len(keys), keys
    assert max(map(len, keys)) <= MLFLOW_KEY_MAX
    assert keys[0].startswith("fit/up/a_b/fewshot/5-") and keys[1] == "fit/up/a_b/fewshot/5/headline/stop_paying_us"
    assert metric_key(("up", "a/b", "fewshot", 5), "headline", "stop_paying_us") == keys[0]   # the same in every refit


def test_long_and_slashed_group_names_publish(tmp_path, mlflow_server):
    """A group whose metric key ran past MLflow's 250 characters failed every publish (and left
    the run RUNNING); `a/b` and `a_b` shared keys and overwrote each other's metrics."""
    rows = pd.concat([make_rows(12, us_task="u" * 100, ds_tasks=("d" * 200,)),
                      make_rows(12, ds_tasks=("a/b", "a_b"), seed=3, run_prefix="s")], ignore_index=True)
    s = Store(str(tmp_path / "st"))
    s.commit(validate(rows).table)
    exp = f"meta-study/refits-keys-{os.getpid()}-{time.time_ns()}"
    r = refit(_cfg(s, tmp_path / "out", tracking_uri=mlflow_server.uri, experiment=exp), log=lambda m: None)
    run = MlflowClient(mlflow_server.uri).get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED"
    fits = pd.read_parquet(Path(r.version_dir) / "fits.parquet")
    paper = fits[(fits["law"] == "eq1") & (fits["frontier"] == "vertices")].set_index("ds_task")
    for task, us in (("a/b", "up"), ("a_b", "up"), ("d" * 200, "u" * 100)):
        key = metric_key((us, task, "fewshot", 5), "vertices", "saturation")
        assert run.data.metrics[key] == pytest.approx(paper.loc[task, "saturation"]), task


def test_renaming_a_model_or_a_repeat_warning_changes_the_fingerprint():
    """A model renamed in a re-ingested file left the fingerprint, so the next refit was a no-op
    and its report named the model by its old name."""
    import dataclasses

    import numpy as np

    from meta_study.analysis.groups import Group
    from meta_study.refit import group_fingerprint

    g = Group("up", "a", "fewshot", 5, np.array([0.5, 0.6]), np.array([0.3, 0.4]), np.array(["r0", "r1"], object),
              np.array(["vit", None], object))
    fp = group_fingerprint(g)
    assert group_fingerprint(dataclasses.replace(g, model_names=np.array(["vit-b", None], object))) != fp
    assert group_fingerprint(dataclasses.replace(g, repeated="repeated: 1 row ...")) != fp
    reordered = dataclasses.replace(g, us_accuracy=g.us_accuracy[::-1], ds_accuracy=g.ds_accuracy[::-1],
                                    run_ids=g.run_ids[::-1], model_names=g.model_names[::-1])
    assert group_fingerprint(reordered) == fp
