"""Review s51 of the MLflow ingest and the sweep writer's REST client: leftovers of earlier reviews,
each with a test that failed before its fix. Traffic stays on 127.0.0.1."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from meta_study.errors import UserError
from meta_study.ingest import mlflow_runs, mlflow_source
from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S, MlflowSqlSource
from meta_study.ingest.sources import open_sources
from meta_study.mlflow_client import has_credentials, refuse_credentials, safe_uri, shown_uri
from test_s50_mlflow_ingest import _fake_dbapi
from test_s50b_credentials import _fake_pg8000, _Silent


# ---- 4. a user name holding '/' (a domain account) ---------------------------------------------
# Written raw, it ends the authority for urllib and SQLAlchemy alike: postgresql://dom/user:pw@h/db
# connected to host "dom" (database "user:pw@h/db"), was not refused as credentials, and was shown
# and stored whole, the password with it. Written %2F it was read right (user "dom/user") and refused.

RAW_SLASHED = ["postgresql://dom/user:s3cretpw@db.lab:5432/mlflow", "mysql+pymysql://dom/user:s3cretpw@db.lab/mlflow",
               "http://dom/user:s3cretpw@mlflow.lab:5000"]


@pytest.mark.parametrize("uri", RAW_SLASHED)
def test_a_raw_slash_in_the_user_name_is_user_info_never_shown(uri: str) -> None:
    assert has_credentials(uri)
    for shown in (safe_uri(uri), shown_uri(uri), safe_uri("mlflow-sql:" + uri)):
        assert "s3cretpw" not in shown and "dom" not in shown and "lab" in shown, shown
    with pytest.raises(UserError) as e:
        refuse_credentials(uri)
    msg = str(e.value)
    assert "s3cretpw" not in msg and "%2F" in msg and "\n" not in msg, msg


def test_a_raw_slash_in_a_database_user_without_a_password_is_refused() -> None:
    """``postgresql://dom/user@h/db``: SQLAlchemy read host ``dom``, database ``user@h/db``."""
    uri = "postgresql://dom/user@db.lab/mlflow"
    assert has_credentials(uri) and safe_uri(uri) == "postgresql://db.lab/mlflow"
    with pytest.raises(UserError, match="credentials in the database URL are refused"):
        MlflowSqlSource("mlflow-sql:" + uri, mlflow_source.default_mapping())
    with pytest.raises(UserError, match="credentials in the database URI are refused"):
        open_sources([uri], None)


def test_a_percent_encoded_slash_is_a_user_name_and_refused_without_its_password() -> None:
    uri = "postgresql://dom%2Fuser:s3cretpw@db.lab/mlflow"
    assert has_credentials(uri) and safe_uri(uri) == "postgresql://db.lab/mlflow"
    with pytest.raises(UserError) as e:
        MlflowSqlSource("mlflow-sql:" + uri, mlflow_source.default_mapping())
    assert "s3cretpw" not in str(e.value) and "META_STUDY_DB_USER" in str(e.value)


def test_an_at_sign_in_an_http_path_without_a_password_stays_a_path() -> None:
    """RFC 3986 and requests read ``http://h/a@b`` as host ``h``: not user info."""
    assert not has_credentials("http://mlflow.lab/team@x") and safe_uri("http://mlflow.lab/team@x") == \
        "http://mlflow.lab/team@x"


# ---- 2. MLflow's client over postgresql+pg8000://: its engine had no connect timeout ----------------
# The probe's connect had one (arm_connect_timeout), MLflow's own engine none: it connects in the
# client's constructor, right after the probe, and again whenever its pool drops a connection, and a
# port that took the connection and never answered hung the ingest for good.

def test_mlflows_pg8000_engine_times_out_on_a_port_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.store.db.utils as db_utils

    monkeypatch.setitem(sys.modules, "pg8000", _fake_pg8000())
    monkeypatch.setattr(mlflow_runs, "DB_CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(db_utils, "MAX_RETRY_COUNT", 1)     # MLflow's 10 tries, ~100 s of back-off: one here
    server, out = _Silent(), []
    uri = f"postgresql+pg8000://127.0.0.1:{server.port}/mlflow?user=ann"
    (src,) = open_sources([uri], None)

    def connect() -> None:
        try:
            src._call(mlflow_source.database_client, uri, None)    # the client the probe let through
        except UserError as e:
            out.append(str(e))

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(60)           # far past the 0.3 s: only a hang gets here unfinished
    hung = t.is_alive()
    server.close()       # unblocks a hung connect
    t.join(10)
    assert not hung and out, "MLflow's engine hung on the silent port"
    assert out[0] == f"postgresql+pg8000://127.0.0.1:{server.port}/mlflow: unreachable (timed out)", out[0]


def test_the_whole_mlflow_source_times_out_on_a_pg8000_port_that_never_answers(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """End to end through the source (probe, then MLflow's client): one line, no hang."""
    monkeypatch.setitem(sys.modules, "pg8000", _fake_pg8000())
    monkeypatch.setattr(mlflow_runs, "DB_CONNECT_TIMEOUT_S", 0.3)
    server = _Silent()
    try:
        (src,) = open_sources([f"postgresql+pg8000://127.0.0.1:{server.port}/mlflow?user=ann"], None)
        with pytest.raises(UserError) as e:
            src._call(src._client)
        assert str(e.value).endswith(": unreachable (timed out)") and "\n" not in str(e.value)
    finally:
        server.close()


# ---- 3. MySQL over the SQL path: no statement or lock limit, unlike PostgreSQL ---------------------
# A read behind `mlflow db upgrade`'s ALTER TABLE waits for the metadata lock, a year by default
# (lock_wait_timeout), with no statement limit either: the ingest hung for good.

class _MysqlConn:
    """A DB-API connection that records what the session is sent and answers the variables a MySQL
    or MariaDB server holds."""

    def __init__(self, version: str, **variables: Any) -> None:
        self.sql: list[str] = []
        self.vars = {"version": version, "lock_wait_timeout": 31536000, "max_execution_time": 0,
                     "max_statement_time": 0.0, **variables}
        self._row: tuple[Any, ...] = ()

    def cursor(self) -> "_MysqlConn":
        return self

    def execute(self, sql: str) -> None:
        self.sql.append(sql)
        if sql.startswith("SELECT "):
            self._row = tuple(self.vars[v.strip().lstrip("@")] for v in sql[len("SELECT "):].split(","))

    def fetchone(self) -> tuple[Any, ...]:
        return self._row

    def close(self) -> None:
        pass

    def commit(self) -> None:
        pass


def _mysql_source_sessions(monkeypatch: pytest.MonkeyPatch, conn: _MysqlConn) -> list[str]:
    """What the SQL source's engine sends a new MySQL session (its ``connect`` listeners)."""
    monkeypatch.setitem(sys.modules, "pymysql", _fake_dbapi("pymysql", "1.1.1"))
    src = MlflowSqlSource("mlflow-sql:mysql+pymysql://127.0.0.1:9/mlflow", mlflow_source.default_mapping())
    engine, _ = src._engine()
    try:
        (ours,) = [f for f in engine.pool.dispatch.connect if f.__name__ == "_read_only"]   # not the dialect's
        ours(conn, None)
    finally:
        engine.dispose()
    return conn.sql


def test_a_mysql_session_gets_a_statement_and_a_lock_wait_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _mysql_source_sessions(monkeypatch, _MysqlConn("8.0.36"))
    assert f"SET SESSION max_execution_time = {STATEMENT_TIMEOUT_S * 1000}" in sent, sent
    assert f"SET SESSION lock_wait_timeout = {STATEMENT_TIMEOUT_S}" in sent, sent
    assert "SET SESSION TRANSACTION READ ONLY" in sent


def test_a_mariadb_session_gets_its_own_statement_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _mysql_source_sessions(monkeypatch, _MysqlConn("10.11.6-MariaDB"))
    assert f"SET SESSION max_statement_time = {STATEMENT_TIMEOUT_S}" in sent, sent
    assert not any("max_execution_time =" in s for s in sent), sent      # MariaDB has no such variable


def test_a_shorter_limit_the_session_has_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _mysql_source_sessions(monkeypatch, _MysqlConn("8.0.36", lock_wait_timeout=50, max_execution_time=60000))
    assert not any(s.startswith("SET SESSION lock_wait_timeout") or s.startswith("SET SESSION max_execution")
                   for s in sent), sent


def test_a_mysql_driver_gets_a_read_timeout_past_the_statement_limit() -> None:
    from sqlalchemy.engine import make_url

    from meta_study.ingest.mlflow_sql import mysql_read_timeout

    assert mysql_read_timeout(make_url("mysql+pymysql://h/mlflow")) == {"read_timeout": STATEMENT_TIMEOUT_S + 60}
    assert mysql_read_timeout(make_url("mysql+pymysql://h/mlflow?read_timeout=5")) == {}     # the user's own
    assert mysql_read_timeout(make_url("postgresql://h/mlflow")) == {}


def test_the_read_timeout_is_one_pymysql_takes() -> None:
    """Against the real PyMySQL (skipped without it): ``read_timeout`` is an argument of its connect."""
    pymysql = pytest.importorskip("pymysql")
    import inspect

    assert "read_timeout" in inspect.signature(pymysql.connections.Connection.__init__).parameters


# ---- 1. the sweep writer's read of a run's params (runs/get) --------------------------------------
# Any failure of the read was retried as if the server were down: a 500 (MLflow's INTERNAL_ERROR, or
# a proxy's HTML page) on runs/get held the trial's batch, and every trial queued behind it on the
# writer thread, until the end-of-sweep flush spooled them (and each --resume again), said as "calls
# have failed" though every other call went through. Now a server error is said once and the batch
# goes unread; a network error (a reset) is tried again, a bounded number of times, in place.

class _RunsGetProxy:
    """A proxy in front of a real MLflow server whose runs/get answers ``answer`` (a 500 page, or
    a connection reset) for its first ``times`` requests, then relays."""

    def __init__(self, upstream: str, answer: str, times: int) -> None:
        import socket
        import struct

        from mlflow_proxies import Proxy413, serve

        class H(Proxy413):
            LIMIT = 1 << 40
            gets = 0

            def do_GET(self) -> None:
                if "runs/get" in self.path:
                    type(self).gets += 1
                    if type(self).gets <= times and answer == "reset":
                        # SO_LINGER 0: the close sends an RST, the client's read fails "connection reset"
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.close_connection = True
                        self.connection.close()
                        return
                    if type(self).gets <= times:
                        page = b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>nginx</body></html>"
                        self.send_response(500)
                        self.send_header("Content-Length", str(len(page)))
                        self.end_headers()
                        self.wfile.write(page)
                        return
                self._relay("GET")

        H.upstream = upstream
        self.handler = H
        self.uri, self.srv = serve(H)

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def _resumed_trial(mlflow_server: Any, tmp_path: Any, proxy_answer: str, times: int) -> tuple[Any, Any, Any, str]:
    """A trial whose run an earlier session created (its params must be read before a batch with
    params goes), and a resumed writer talking to the server through the proxy."""
    import uuid

    from mlflow.tracking import MlflowClient

    from meta_study.tune._rest import _RestRuns
    from meta_study.tune._shards import MlflowWriter, Op, SweepTarget

    creds = lambda uri: {**{f: None for f in _RestRuns.CRED_FIELDS}, "host": uri}   # noqa: E731
    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"s51-get-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    proxy = _RunsGetProxy(mlflow_server.uri, proxy_answer, times)
    w = MlflowWriter(SweepTarget(proxy.uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 120.0, False))
    w.creds = creds(proxy.uri)
    w.setup()
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
    assert w.flush(60) is True
    w = MlflowWriter(SweepTarget(proxy.uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 120.0, True))
    w.creds = creds(proxy.uri)
    w.setup()
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1, "wd": 2}}))
    w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
    return w, proxy, client, exp


def test_a_500_page_on_runs_get_is_said_once_and_the_batch_goes(mlflow_server: Any, tmp_path: Any,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    w, proxy, client, exp = _resumed_trial(mlflow_server, tmp_path, "500", times=1 << 30)
    try:
        assert w.flush(20) is True, w.last_error        # before: retried until the flush gave up, then spooled
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"lr": "1", "wd": "2"} and run.data.metrics == {"m": 0.5}
        assert proxy.handler.gets == 1 and w.errors == 0 and w.dropped == 0    # one try: a 500 is no blip
        said = [line for line in capfd.readouterr().err.splitlines() if "meta-study writer" in line]
        assert len(said) == 1 and "could not give run" in said[0] and "HTTP 500: <html> <head>" in said[0], said
    finally:
        proxy.close()


def test_a_connection_reset_on_runs_get_is_tried_again_in_place(mlflow_server: Any, tmp_path: Any) -> None:
    w, proxy, client, exp = _resumed_trial(mlflow_server, tmp_path, "reset", times=2)
    try:
        assert w.flush(60) is True, w.last_error
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"lr": "1", "wd": "2"} and run.data.metrics == {"m": 0.5}
        # read on its third try, within the step: the step itself never failed (before: two failed
        # steps, each marked as perhaps logged, which a file store's server reads back point by point)
        assert proxy.handler.gets == 3 and w.errors == 0, (proxy.handler.gets, w.errors)
    finally:
        proxy.close()


def test_transient_and_server_errors_are_told_apart() -> None:
    from meta_study.tune._rest import RestError, server_error, transient

    assert transient(ConnectionResetError()) and transient(RestError("x", 503, None))
    assert not transient(RestError("x", 500, None)) and server_error(RestError("x", 500, "INTERNAL_ERROR"))
    assert not server_error(RestError("x", 502, None)) and not server_error(RestError("x", 404, "RESOURCE_DOES_NOT_EXIST"))


def test_a_uri_without_a_host_keeps_its_path_as_the_source_name() -> None:
    """The user-name-with-'/' rule (a password after a raw '/') also matched URIs with no host:
    ``sqlite:////data/run:1/exp@lab/mlflow.db`` was named ``sqlite://lab/mlflow.db`` in the store
    (the next ingest stored every row under a new source, and two such databases under one name)."""
    from meta_study.mlflow_client import has_credentials, source_uri, without_user_info

    for uri in ("sqlite:////data/run:1/exp@lab/mlflow.db", "file:///mnt/a:b/c@d/mlruns",
                "mlflow-sql:sqlite:////a:b@c/m.db"):
        assert without_user_info(uri) == uri and not has_credentials(uri), uri
    assert source_uri("sqlite:////data/run:1/exp@lab/mlflow.db").endswith("/data/run:1/exp@lab/mlflow.db")
    # after a host the rule stands: a domain user's password is never shown
    assert without_user_info("postgresql://dom/user:pw@h/db") == "postgresql://h/db"
    assert has_credentials("http://dom/user:pw@h:5000")


class _OldMysqlConn(_MysqlConn):
    """A server without ``max_execution_time`` (MySQL before 5.7.8; MariaDB before 10.1 has no
    ``max_statement_time``): selecting it fails as PyMySQL raises MySQL's error 1193."""

    def __init__(self, version: str, missing: str) -> None:
        super().__init__(version)
        self.missing = missing

    def execute(self, sql: str) -> None:
        if f"@@{self.missing}" in sql:
            raise Exception(1193, f"Unknown system variable '{self.missing}'")   # PyMySQL's args
        super().execute(sql)


@pytest.mark.parametrize("version,missing", [("5.6.51-log", "max_execution_time"),
                                             ("10.0.38-MariaDB", "max_statement_time")])
def test_a_server_without_the_statement_limit_keeps_its_sessions(version: str, missing: str) -> None:
    """Every connection to MySQL 5.6 (Aurora 5.6 too) failed on ``SELECT @@max_execution_time``:
    an ingest that worked before the limits could not connect at all. The lock wait is still set."""
    from meta_study.ingest.mlflow_sql import limit_mysql_session

    conn = _OldMysqlConn(version, missing)
    limit_mysql_session(conn)
    assert "SET SESSION lock_wait_timeout = 1800" in conn.sql, conn.sql
    assert not any(missing in s and s.startswith("SET") for s in conn.sql), conn.sql
    # another error still says what went wrong
    broken = _OldMysqlConn("8.0.36", "max_execution_time")
    broken.execute = lambda sql: (_ for _ in ()).throw(Exception(2013, "Lost connection"))  # type: ignore[method-assign]
    with pytest.raises(Exception, match="Lost connection"):
        limit_mysql_session(broken)
