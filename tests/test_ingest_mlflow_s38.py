"""MLflow ingest, review s38: a database port that takes the connection and never answers (both
readers hung for good), finished runs without an end time in a REST full read over more than one
page (lost for good, ``--full`` included), and what a 401 tells the user."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import uuid

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from meta_study.errors import UserError
from meta_study.ingest import mlflow_runs
from meta_study.ingest.mlflow_runs import db_connect_args, mlflow_mapping
from meta_study.store import Store
from conftest import run_cli
from test_ingest_mlflow_sql_postgres import postgres  # noqa: F401 - the fixture


@pytest.fixture()
def silent_port():
    """A port on 127.0.0.1 that accepts connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    for c in conns:
        c.close()
    srv.close()


def _within(fn, seconds: float):
    """``fn()``'s exception (or None), or a failure when it has not returned within ``seconds``."""
    out: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"still waiting after {seconds} s: no connect timeout"
    return out[0]


@pytest.mark.parametrize("reader", ["sql", "client"])
def test_a_database_port_that_never_answers_fails_in_one_line(reader, silent_port, monkeypatch):
    # libpq waits for ever by default: a firewall dropping packets, or another service on the port
    pytest.importorskip("psycopg")
    from meta_study.ingest.mlflow_source import MlflowSource
    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    monkeypatch.setattr(mlflow_runs, "DB_CONNECT_TIMEOUT_S", 1)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(k, "1")
    url = f"postgresql://127.0.0.1:{silent_port}/mlflow"
    if reader == "sql":
        src = MlflowSqlSource(spec=f"mlflow-sql:{url}", mapping=mlflow_mapping(None))
        err = _within(lambda: src.connect(), 30)
        assert isinstance(err, UserError) and str(err) == (
            f"mlflow-sql:{url}: cannot connect (connection timeout expired)"), err
    else:
        src = MlflowSource(uri=url, mapping=mlflow_mapping(None))
        err = _within(lambda: src._call(src._client), 30)
        assert isinstance(err, UserError) and str(err) == f"{url}: unreachable (timed out)", err


def test_connect_timeout_the_user_set_wins(monkeypatch):
    from sqlalchemy.engine import make_url

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert db_connect_args(make_url("postgresql://db/mlflow")) == {"connect_timeout": mlflow_runs.DB_CONNECT_TIMEOUT_S}
    assert db_connect_args(make_url("postgresql+psycopg2://db/mlflow")) == {"connect_timeout": 20}
    assert db_connect_args(make_url("mysql+pymysql://db/mlflow")) == {"connect_timeout": 20}
    assert db_connect_args(make_url("postgresql://db/mlflow?connect_timeout=5")) == {}
    assert db_connect_args(make_url("mssql+pyodbc://db/mlflow")) == {}     # no such argument there
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    assert db_connect_args(make_url("postgresql://db/mlflow")) == {}


def test_a_finished_run_without_end_time_comes_in_with_a_rest_full_read_over_pages(mlflow_server, tmp_path):
    # MLflow's filters have no IS NULL and `end_time > t` leaves such a run out: the first ingest
    # (a full read) with more runs than a page lost it, and so did every --full after
    c = MlflowClient(mlflow_server.uri)
    name = f"s38-noend-{uuid.uuid4().hex[:8]}"
    exp = c.create_experiment(name)

    def run(i: int, end: bool) -> str:
        rid = c.create_run(exp).info.run_id
        now = int(time.time() * 1000)
        c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, now, 0), Metric("ds/pets/10shot/top1", 0.3 + i / 100, now, 0)],
                    params=[Param("model_name", "vit_tiny_cpu")])
        if end:
            c.set_terminated(rid)
        else:
            c.update_run(rid, "FINISHED")    # sets no end time
        return rid

    no_end = run(0, end=False)
    assert c.get_run(no_end).info.end_time is None
    dated = [run(i, end=True) for i in range(1, 6)]
    for extra in ((), ("--full",)):
        store = str(tmp_path / f"store{len(extra)}")
        r = run_cli("ingest", mlflow_server.uri, "--experiment", name, "--store", store, "--page-size", "2",
                    "--quiet", *extra)
        assert r.returncode == 0, r.stderr
        assert set(Store(store).to_pandas()["run_id"]) == {no_end, *dated}


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    seen_timeouts: list[str | None] = []   # MLFLOW_HTTP_REQUEST_TIMEOUT as each request was made (same process)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen_timeouts.append(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT"))
        body = b"You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/index.html"
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *a) -> None:
        pass


@pytest.mark.parametrize("given", [False, True])
def test_a_401_says_whether_credentials_were_given_and_which_variables_to_set(given, tmp_path, monkeypatch):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        if given:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-pw-s38")
        uri = f"http://127.0.0.1:{srv.server_address[1]}"
        r = run_cli("ingest", uri, "--store", str(tmp_path / "store"), "--quiet")
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 2, r.stderr
    why = "refused the credentials given" if given else "wants credentials and none were given"
    assert f"{uri}: FAILED: the server {why} (HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD " \
           "(or MLFLOW_TRACKING_TOKEN)" in r.stderr, r.stderr
    assert "wrong-pw-s38" not in r.stderr + r.stdout


@pytest.mark.parametrize("password", ["not-it-s38", None])
def test_sql_source_a_refused_login_says_which_variables_give_credentials(postgres, password, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    # docs/ingest.md: a wrong password reads "the database refused the credentials"; the SQL source
    # said "cannot connect (authentication failed ...)" alone, and none given ("no password
    # supplied") was not even called a login failure
    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    for k in ("PGPASSWORD", "PGUSER", "META_STUDY_DB_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("META_STUDY_DB_USER", "admin")
    if password:
        monkeypatch.setenv("META_STUDY_DB_PASSWORD", password)
    spec = f"mlflow-sql:postgresql+{postgres['driver']}://127.0.0.1:{postgres['port']}/postgres"
    with pytest.raises(UserError) as e:
        MlflowSqlSource(spec=spec, mapping=mlflow_mapping(None)).connect()
    msg = str(e.value)
    assert msg.startswith(f"{spec}: cannot connect (authentication failed (") and "\n" not in msg, msg
    assert msg.endswith("); the database refused the credentials: set META_STUDY_DB_USER and META_STUDY_DB_PASSWORD "
                        "(or the driver's own, e.g. PGUSER and PGPASSWORD, ~/.pgpass)"), msg
    assert "not-it-s38" not in msg


def test_ingest_leaves_no_mlflow_http_settings_behind(tmp_path, monkeypatch):
    # ingest's retry settings were set for good in the process: a refit that ingests first then
    # took them for the user's own, and its 10 s reachability check waited 60 s, 3 times
    from meta_study.ingest.mlflow_source import HTTP_DEFAULTS

    for k in (*HTTP_DEFAULTS, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Unauthorized.seen_timeouts.clear()
    try:
        r = run_cli("ingest", f"http://127.0.0.1:{srv.server_address[1]}", "--store", str(tmp_path / "s"), "--quiet")
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 2 and "(HTTP 401)" in r.stderr, r.stderr
    # in effect meanwhile: the first request is the probe's (10 s, session 55), the ingest's own 60 s
    seen = _Unauthorized.seen_timeouts
    assert seen and seen[0] == "10" and set(seen[1:]) == {"60"}, seen
    assert not [k for k in HTTP_DEFAULTS if k in os.environ]
