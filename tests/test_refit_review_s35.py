"""A fresh review of the scheduled refit and of what researchers browse: the one line a refused
tracking URI gets, what a failed refit leaves in OUT, the explorer's layout, and the unit an MLflow
source's out-of-range accuracy is named in."""

from __future__ import annotations

import os
import re

import pytest

from meta_study.errors import UserError
from meta_study.refit import refit
from meta_study.store import Store
from conftest import MAPPINGS, committed_store, one_error_line, quick_refit_config, run_cli


@pytest.mark.parametrize("uri, needle", [("foo://bar", "unsupported URI 'foo://bar'"),
                                          ("adir", "filesystem tracking backend")])
def test_a_tracking_uri_mlflow_refuses_is_not_called_a_server_that_does_not_answer(tmp_path, uri, needle):
    """`--tracking-uri foo://bar` (a scheme MLflow has no store for) and `--tracking-uri adir` (a
    file store, which MLflow 3 refuses) were "no MLflow tracking server answers there (...)", with
    MLflow's paragraph cut mid-word at 200 characters ("'http', 'http);"): no server was asked."""
    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "out"), "--tracking-uri", uri, "--serial")
    line = one_error_line(r, f"--tracking-uri {uri}: MLflow refuses this tracking URI (", needle,
                          "nothing was refitted")
    assert "answers" not in line
    why = line.split("MLflow refuses this tracking URI (", 1)[1].rsplit("); nothing was refitted", 1)[0]
    assert why.endswith(".") and why.count(". ") == 0, why    # its first sentence, whole


def test_a_tracking_server_that_does_not_answer_is_still_said_so(tmp_path):
    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "out"), "--tracking-uri", "http://127.0.0.1:9",
                "--serial")
    one_error_line(r, "--tracking-uri http://127.0.0.1:9: no MLflow tracking server answers there "
                      "(connection refused)")


def test_mlflow_text_is_cut_at_a_word_never_inside_one():
    from meta_study.refit import _first_sentence, _one_line

    long = "word " * 100
    assert _one_line(RuntimeError(long), "x").endswith("word...")
    assert _first_sentence("Use a database (e.g. sqlite) instead. More advice here.") == \
        "Use a database (e.g. sqlite) instead."
    assert _first_sentence("x" * 300 + " tail").endswith("...") and len(_first_sentence("y " * 300)) <= 240


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "foo://bar"])
def test_a_refit_that_fails_its_tracking_check_leaves_no_out_behind(tmp_path, uri):
    """A first refit against an unreachable (or refused) tracking URI made OUT holding only
    `.refit-out.lock`: the check came after the locks. A later refit to another OUT, or a look at
    the directory, found an OUT with no refit in it."""
    s = committed_store(tmp_path / "st", runs=12)
    out = tmp_path / "out"
    with pytest.raises(UserError):
        refit(quick_refit_config(s, out, tracking_uri=uri), log=lambda m: None)
    assert not out.exists()
    # through the command: no lock file is left in the OUT it prepares
    r = run_cli("refit", "--store", s.uri, "--out", str(out), "--tracking-uri", uri, "--serial")
    assert r.returncode == 2
    assert not out.exists()     # the command made it (prepare_out), and removes it again
    out.mkdir()
    r = run_cli("refit", "--store", s.uri, "--out", str(out), "--tracking-uri", uri, "--serial")
    assert r.returncode == 2 and out.is_dir() and not any(out.iterdir())   # one it did not make stays


def test_a_refit_whose_every_source_fails_removes_the_out_it_made(tmp_path):
    """Every source failing raised "no store was made" and left OUT holding its lock file alone."""
    out = tmp_path / "out"
    cfg = quick_refit_config(Store(str(tmp_path / "new-store")), out,
                             sources=(str(tmp_path / "missing.csv"),))
    with pytest.raises((UserError, OSError)):
        refit(cfg, log=lambda m: None)
    assert not out.exists()


def test_a_failed_refit_into_an_out_with_versions_keeps_everything(tmp_path):
    """The clean-up removes only an OUT of lock files: a failing refit leaves an OUT with results as it was."""
    s = committed_store(tmp_path / "st", runs=12)
    out = tmp_path / "out"
    assert refit(quick_refit_config(s, out), log=lambda m: None).status == "refitted"
    before = sorted(p.name for p in out.iterdir())
    cfg = quick_refit_config(s, out, sources=(str(tmp_path / "missing.csv"),))
    with pytest.raises((UserError, OSError)):
        refit(cfg, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
def test_the_explorer_never_widens_the_page_with_a_long_task_name(tmp_path):
    """The explorer's own CSS (a page that embeds its section without the report's) let a task name
    of 400 unbroken characters widen the group picker, and the page, past the viewport."""
    import numpy as np
    import pandas as pd

    from meta_study.explorer import CSS, explorer_html
    from test_report_html import CHROMIUM, FLAGS

    long = "t" * 400
    heads = pd.DataFrame([{"us_task": "up", "ds_task": long, "eval_protocol": "fewshot", "shots": 5,
                           "holdout_threshold": np.nan, "best_us": np.nan, "horizon_us": np.nan}])
    points = pd.DataFrame({"us_task": "up", "ds_task": long, "eval_protocol": "fewshot", "shots": 5,
                           "run_id": [f"r{i}" for i in range(5)], "model_name": ["m" * 300] * 5,
                           "us_accuracy": np.linspace(0.5, 0.8, 5), "ds_accuracy": np.linspace(0.3, 0.6, 5)})
    page = tmp_path / "p.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{CSS}</style><body>"
                    f"{explorer_html(heads, points)}</body>")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 800, "height": 600})
        pg.goto(page.resolve().as_uri(), wait_until="load")
        pg.dispatch_event("#ex-svg circle", "mouseover")   # the hovered model's long name on its line
        hovered = pg.evaluate("document.getElementById('ex-hover').textContent")
        widths = pg.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth, "
                             "document.getElementById('ex-group').getBoundingClientRect().width]")
        browser.close()
    assert hovered.startswith("m" * 300)
    scroll, client, select = widths
    assert select <= client and scroll <= client, widths


def test_an_mlflow_accuracy_out_of_range_is_named_in_the_unit_it_was_logged_in(tmp_path):
    """A run logging `upstream/top1_pct` = 100.5 under a percent mapping was quarantined as
    "us_accuracy: 1.005 out of range [0, 1] (a percent in a fraction field? set its unit to
    percent)": the unit was set already. Files said "100.5 out of range [0, 100] (unit percent)"."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path / 'ml.db'}"
    c = MlflowClient(db)
    e = c.create_experiment("bob")
    for i, (us, ds) in enumerate([(100.5, 40.0), (50.0, 40.0), (60.0, 101.0)]):
        r = c.create_run(e)
        c.log_metric(r.info.run_id, "upstream/top1_pct", us)
        c.log_metric(r.info.run_id, "eval/pets/k5_pct", ds)
        c.log_param(r.info.run_id, "arch", f"resnet{i}")
        c.set_terminated(r.info.run_id)
    r = run_cli("ingest", db, "--experiment", "bob", "--mapping", str(MAPPINGS / "mlflow_percent_keys.yaml"),
                "--store", str(tmp_path / "st"))
    assert "for: ds_accuracy: out of range [0, 100] (unit percent)" in r.stdout + r.stderr, r.stdout
    reasons = sorted(Store(str(tmp_path / "st")).quarantine().to_pandas()["reason"])
    assert reasons[:2] == ["ds_accuracy: 101 out of range [0, 100] (unit percent)",
                           "us_accuracy: 100.5 out of range [0, 100] (unit percent)"], reasons
    assert not any(re.search(r"1\.005|1\.01 ", x) for x in reasons)
    rows = Store(str(tmp_path / "st")).to_pandas()
    assert not any(c.startswith("_") for c in rows.columns)   # the unit columns are not stored


def test_a_database_tracking_store_that_does_not_answer_fails_in_seconds(tmp_path):
    """`--tracking-uri postgresql://127.0.0.1:9/db` (no database there): MLflow retried creating its
    engine 10 times, ~2 minutes of "Operation will be retried in 51.1 seconds" warnings, and the
    line then said "no MLflow tracking server answers there". One connect now, one line."""
    import time

    s = committed_store(tmp_path / "st", runs=12)
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"^--tracking-uri postgresql://127\.0\.0\.1:9/db: no database server "
                                        r"answers there \(Connection refused\); nothing was refitted$"):
        refit(quick_refit_config(s, out, tracking_uri="postgresql://127.0.0.1:9/db"), log=lambda m: None)
    assert time.monotonic() - t0 < 60 and not out.exists()     # MLflow's retries took ~2 minutes


def test_a_sqlite_tracking_store_that_cannot_be_opened_is_no_server(tmp_path):
    """`sqlite:////proc/nope/mlflow.db`: "no MLflow tracking server answers there ([Errno 2] ...)"
    for a file MLflow could not make."""
    s = committed_store(tmp_path / "st", runs=12)
    with pytest.raises(UserError, match=r"sqlite:////proc/nope/mlflow\.db: MLflow cannot open this tracking store "
                                        r"\(.*No such file or directory.*\); nothing was refitted$"):
        refit(quick_refit_config(s, tmp_path / "out", tracking_uri="sqlite:////proc/nope/mlflow.db"),
              log=lambda m: None)


@pytest.mark.slow
def test_a_tracking_server_that_refuses_the_credentials_is_not_called_silent(tmp_path, monkeypatch):
    """A server with MLflow's basic auth and no (or wrong) credentials in the environment: the refit
    said "no MLflow tracking server answers there (HTTP 401)" of a server that had answered."""
    from mlflow_server import MlflowServer

    from meta_study.refit import check_tracking

    s = committed_store(tmp_path / "st", runs=12)
    with MlflowServer(tmp_path / "auth", auth=True) as srv:
        cfg = quick_refit_config(s, tmp_path / "out", tracking_uri=srv.uri)
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        with pytest.raises(UserError, match=r"the MLflow tracking server there refuses access \(HTTP 401: not "
                                            r"authenticated; set MLFLOW_TRACKING_USERNAME") as e:
            refit(cfg, log=lambda m: None)
        assert "answers" not in str(e.value) and not (tmp_path / "out").exists()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", srv.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(UserError, match=r"\(HTTP 401: not authenticated; check MLFLOW_TRACKING_USERNAME"):
            check_tracking(cfg)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", srv.password)
        assert check_tracking(cfg)


def test_the_run_address_of_an_ipv6_tracking_server_opens_in_a_browser():
    """`--tracking-uri http://[::1]:5000`: the refit printed `mlflow run: <id>
    (http://::1:5000/#/experiments/1/runs/<id>...)`, an address no browser opens."""
    from meta_study.mlflow_client import experiment_url

    assert experiment_url("http://[::1]:5000", "1", "r") == \
        "http://[::1]:5000/#/experiments/1/runs/r?workflowType=machine_learning"
    assert experiment_url("http://u:pw@[fe80::1]/mlflow?token=t", "2") == \
        "http://[fe80::1]/mlflow/#/experiments/2/runs?workflowType=machine_learning"
    assert experiment_url("http://h:5000/", "1") == "http://h:5000/#/experiments/1/runs?workflowType=machine_learning"


def test_a_refit_into_a_deleted_experiment_is_refused_before_any_work(tmp_path):
    """The refits' experiment deleted in the MLflow UI: every refit fitted, wrote a version, then
    failed "publishing ... failed (The experiment 1 must be in the 'active' state ...); ... the next
    refit publishes them", exit 1, and so did the next, forever."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    s = committed_store(tmp_path / "st", runs=12)
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    c = MlflowClient(db)
    c.delete_experiment(c.create_experiment("meta-study/refits"))
    out = tmp_path / "out"
    r = run_cli("refit", "--store", s.uri, "--out", str(out), "--tracking-uri", db, "--serial", "--trials", "2",
                "--samples", "20")
    one_error_line(r, "--publish-experiment meta-study/refits: the experiment is deleted in MLflow",
                   "mlflow experiments restore --experiment-id", "nothing was refitted")
    assert not (out / "refits").exists() and not (out / "LATEST").exists()


def test_the_refit_run_says_the_threshold_its_stop_paying_points_were_found_with(tmp_path):
    """The run logged `fit/.../headline/stop_paying_us` without the `--threshold` (DS points per US
    point) that defines it: two refits at 0.1 and 0.5 logged incomparable numbers under one key."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    s = committed_store(tmp_path / "st", runs=12)
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    res = refit(quick_refit_config(s, tmp_path / "out", tracking_uri=db, threshold=0.25), log=lambda m: None)
    assert MlflowClient(db).get_run(res.mlflow_run_id).data.params["threshold"] == "0.25"


@pytest.mark.parametrize("name", ["..", ".", ""])
def test_an_experiment_named_dot_dot_keeps_its_artifacts_under_mlartifacts(tmp_path, name):
    """``artifact_location(sqlite, "..")`` was ``PARENT/mlartifacts/..``: the database's own directory."""
    from meta_study.mlflow_client import artifact_location

    loc = artifact_location(f"sqlite:///{tmp_path}/mlflow.db", name)
    assert loc is not None and loc.startswith((tmp_path / "mlartifacts").as_uri() + "/"), loc
