"""Ingest, review s55: advice that leads to a second failure, and a silent tracking server.

- A file with both accuracy columns in percent was refused naming only ``us_accuracy``, with
  ``units: {us_accuracy: percent}``; following that failed again on ``ds_accuracy``. A column of
  half fractions, half percents was told to set its percent unit, which was then refused as a mix.
- ``meta-study ingest http://HOST:PORT`` against a port that takes the connection and never
  answers waited ~3 minutes in silence (retries of 60 s reads), then said "timed out"; refit's
  check says "no MLflow tracking server answers there" within seconds.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest

from conftest import one_error_line, run_cli
from test_ingest_mlflow_s38 import silent_port  # noqa: F401 - the fixture
from meta_study.store import Store

TASKS = ("pets", "cifar", "dtd")


def _frame(n: int = 30) -> pd.DataFrame:
    """``n`` runs on each of TASKS, accuracies as fractions."""
    rows = [{"run_id": f"r{i}", "model_name": f"m{i}", "us_task": "in1k", "us_accuracy": round(0.5 + i / 100, 4),
             "ds_task": t, "ds_accuracy": round(0.3 + i / 100 + j / 50, 4), "eval_protocol": "linear"}
            for i in range(n) for j, t in enumerate(TASKS)]
    return pd.DataFrame(rows)


def _stored(store: Path) -> pd.DataFrame:
    return Store(str(store)).to_pandas()


# --------------------------------------------------------------------------------------------
# 1. Percent advice: every column at once, and a mix said on the first try
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_both_columns_in_percent_are_named_in_one_line_and_its_fix_works(tmp_path, monkeypatch, chunk_rows):
    from meta_study.ingest import files

    if chunk_rows:   # a large file, read in pieces
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)
    f = _frame()
    f["us_accuracy"] *= 100
    f["ds_accuracy"] *= 100
    f.to_csv(tmp_path / "pct.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "pct.csv"), "--store", str(tmp_path / "st"))
    line = one_error_line(r, "pct.csv: FAILED: us_accuracy is in percent, not a fraction: 90 of 90 values are in "
                          "(1, 100], so nothing of this source was stored; ds_accuracy is in percent too: 90 of 90 "
                          "values are in (1, 100]; set 'units: {us_accuracy: percent, ds_accuracy: percent}' "
                          "(or 'accuracy_unit: percent') in a --mapping")
    assert "mixes" not in line, line
    assert not Store(str(tmp_path / "st")).exists() or not len(_stored(tmp_path / "st"))
    # the fix it gives, as given, is the last step
    (tmp_path / "m.yaml").write_text("units: {us_accuracy: percent, ds_accuracy: percent}\n")
    r = run_cli("ingest", str(tmp_path / "pct.csv"), "--store", str(tmp_path / "st"), "--mapping", str(tmp_path / "m.yaml"))
    assert r.returncode == 0 and "90 new" in r.stdout, r.stdout + r.stderr
    got = _stored(tmp_path / "st").sort_values(["run_id", "ds_task"])
    want = _frame().sort_values(["run_id", "ds_task"])
    assert got["ds_accuracy"].round(6).tolist() == want["ds_accuracy"].round(6).tolist()


def _half_percent(tmp_path: Path) -> Path:
    """ds_accuracy: in every task, two runs in three in percent (92.1), the rest fractions (0.921)."""
    f = _frame()
    pct = f["run_id"].str[1:].astype(int) % 3 != 0
    f.loc[pct, "ds_accuracy"] = (f.loc[pct, "ds_accuracy"] * 100).round(4)
    f.to_csv(tmp_path / "half.csv", index=False)
    return tmp_path / "half.csv"


@pytest.mark.parametrize("chunk_rows", [None, 7])
def test_a_column_mixing_fractions_and_percents_is_said_on_the_first_try(tmp_path, monkeypatch, chunk_rows):
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)
    f = _half_percent(tmp_path)
    st = str(tmp_path / "st")
    line = one_error_line(run_cli("ingest", str(f), "--store", st),
                          "half.csv: FAILED: ds_accuracy is in percent, not a fraction: 60 of 90 values are in (1, 100]",
                          "but ds_accuracy also has 30 values in (0, 1]: it mixes fractions with percents",
                          "which a percent unit refuses too",
                          "write every value of ds_accuracy as a fraction")
    # not the advice that was refused next ("declared percent but mixes fractions with percents")
    assert "in a --mapping" not in line, line
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    one_error_line(run_cli("ingest", str(f), "--store", st, "--mapping", str(tmp_path / "m.yaml")),
                   "ds_accuracy is declared percent but mixes fractions with percents")
    # its fix: every value a fraction
    fixed = pd.read_csv(f)
    fixed.loc[fixed["ds_accuracy"] > 1, "ds_accuracy"] /= 100
    fixed.to_csv(f, index=False)
    r = run_cli("ingest", str(f), "--store", st)
    assert r.returncode == 0 and "90 new" in r.stdout, r.stdout + r.stderr


def test_a_percent_column_and_a_mixed_one_get_one_line_with_both_fixes(tmp_path):
    f = pd.read_csv(_half_percent(tmp_path))
    f["us_accuracy"] *= 100
    f.to_csv(tmp_path / "half.csv", index=False)
    line = one_error_line(run_cli("ingest", str(tmp_path / "half.csv"), "--store", str(tmp_path / "st")),
                          "us_accuracy is in percent, not a fraction: 90 of 90 values are in (1, 100], so nothing",
                          "ds_accuracy is in percent too: 60 of 90 values", "ds_accuracy also has 30 values in (0, 1]",
                          "set 'units: {us_accuracy: percent}' in a --mapping")
    # accuracy_unit would give ds_accuracy the percent unit too, which is refused
    assert "accuracy_unit" not in line, line


def test_a_percent_column_with_one_near_chance_value_is_still_told_to_set_its_unit(tmp_path):
    """Guard: a percent column with a value <= 1 too rare for the mix rule (under 1 in 10 of its
    task) is told to set its unit, and that works: the lone value is quarantined, the rest stored."""
    f = _frame()
    f["ds_accuracy"] = (f["ds_accuracy"] * 100).round(4)
    f.loc[0, "ds_accuracy"] = 0.62                        # a fraction among percents (pets: 30..59)
    f.to_csv(tmp_path / "p.csv", index=False)
    st = str(tmp_path / "st")
    line = one_error_line(run_cli("ingest", str(tmp_path / "p.csv"), "--store", st),
                          "ds_accuracy is in percent, not a fraction: 89 of 90 values are in (1, 100], so nothing",
                          "set 'units: {ds_accuracy: percent}' in a --mapping")
    assert "mixes" not in line and "accuracy_unit" not in line, line
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    r = run_cli("ingest", str(tmp_path / "p.csv"), "--store", st, "--mapping", str(tmp_path / "m.yaml"))
    assert r.returncode == 0 and "89 new" in r.stdout and "1 quarantined" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# 2. A tracking server that takes the connection and never answers
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def silent_url(silent_port: int) -> str:  # noqa: F811 - the imported fixture
    """http://127.0.0.1:PORT of a real socket that accepts connections and never says a word."""
    return f"http://127.0.0.1:{silent_port}"


@pytest.mark.timeout(400)
def test_ingest_from_a_silent_server_fails_in_one_line_saying_nothing_answers(silent_url, tmp_path):
    # a subprocess, with the user's environment as it is (no MLFLOW_HTTP_REQUEST_* set): its limit
    # only catches a hang; the old code waited out its retries (~3 minutes) and said "timed out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    r = run_cli("ingest", silent_url, "--store", str(tmp_path / "st"), env=env, timeout=360)
    one_error_line(r, f"{silent_url}: FAILED: no MLflow tracking server answers there (no answer within 10 s), "
                      "so nothing of this source was stored; is it running, and is the address right?")
    assert not Store(str(tmp_path / "st")).exists() or not len(_stored(tmp_path / "st"))


def test_the_probe_is_refits_words_and_a_real_server_answers_it(silent_url, mlflow_server):
    from meta_study.mlflow_client import unanswered

    from mlflow_server import refused_port

    assert unanswered(silent_url, timeout_s=1) == "no answer in time"
    assert unanswered(f"http://127.0.0.1:{refused_port()}") == "connection refused"
    assert unanswered(mlflow_server.uri, timeout_s=60) is None   # a live server (loaded CI: a minute's grace)
    assert unanswered("sqlite:///nowhere/mlflow.db") is None     # no server to ask


class _SlowSearch(http.server.BaseHTTPRequestHandler):
    """A proxy before a real MLflow server whose run searches answer after DELAY_S (above the
    probe's limit, under the ingest's read timeout): a live server with a large search."""

    upstream = ""
    DELAY_S = 12.0
    searches: list[float] = []

    def log_message(self, *a) -> None:
        pass

    def _relay(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if "runs/search" in self.path:
            self.searches.append(self.DELAY_S)
            time.sleep(self.DELAY_S)
        req = urllib.request.Request(self.upstream + self.path, data=body, method=self.command,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _relay


@pytest.mark.timeout(400)
def test_a_real_server_whose_search_is_slow_still_ingests(mlflow_server, tmp_path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from meta_study.mlflow_client import PROBE_TIMEOUT_S

    c = MlflowClient(mlflow_server.uri)
    name = f"s55-slow-{uuid.uuid4().hex[:8]}"
    exp = c.create_experiment(name)
    rid = c.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, now, 0), Metric("ds/pets/10shot/top1", 0.3, now, 0)],
                params=[Param("model_name", "vit_tiny_cpu")])
    c.set_terminated(rid)
    handler = type("Slow", (_SlowSearch,), {"upstream": mlflow_server.uri, "searches": []})
    assert handler.DELAY_S > PROBE_TIMEOUT_S
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
        r = run_cli("ingest", f"http://127.0.0.1:{srv.server_address[1]}", "--experiment", name,
                    "--store", str(tmp_path / "st"), "--quiet", env=env, timeout=360)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert handler.searches, "no search went through the slow proxy"
    assert set(_stored(tmp_path / "st")["run_id"]) == {rid}
