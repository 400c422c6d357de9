"""Review s51, leftovers of the runs/get fix (tests/test_s51_ingest.py): the sweep writer against a
real ``mlflow server`` on MLflow's file store, with a proxy that fails runs/get; and the MLflow
client's MySQL engine. Traffic stays on 127.0.0.1."""

from __future__ import annotations

import sys
import types
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from mlflow_proxies import file_store_server as _file_store_server
from test_s51_ingest import _MysqlConn, _RunsGetProxy


@pytest.fixture(scope="module")
def file_store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with _file_store_server(tmp_path_factory.mktemp("filestore")) as srv:
        yield srv


def _creds(uri: str) -> dict[str, Any]:
    from meta_study.tune._rest import _RestRuns

    return {**{f: None for f in _RestRuns.CRED_FIELDS}, "host": uri}


def _writer(uri: str, exp: str, parent: str, state: Path, resumed: bool) -> Any:
    from meta_study.tune._shards import MlflowWriter, SweepTarget

    w = MlflowWriter(SweepTarget(uri, exp, parent, str(state), {"sweep": "s"}, 120.0, resumed))
    w.creds = _creds(uri)
    w.setup()
    return w


def _resumed_conflict(server: Any, tmp_path: Path, proxy: Any) -> tuple[Any, Any, str]:
    """A trial whose run an earlier session created with ``lr=1``, and a resumed writer (through
    ``proxy``) queued a batch with ``lr=2`` (held with another value), a new ``wd`` and a metric."""
    from mlflow.tracking import MlflowClient

    from meta_study.tune._shards import Op

    client = MlflowClient(server.uri)
    exp = client.create_experiment(f"s51w-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    w = _writer(server.uri, exp, parent, tmp_path / "exp", False)
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
    assert w.flush(60) is True
    w = _writer(proxy.uri, exp, parent, tmp_path / "exp", True)
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 2, "wd": 3}}))
    w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
    return w, client, exp


# ---- 1. runs/get fails, then a param conflicts: the file store's INTERNAL_ERROR ---------------------
# The read failed (a 500) and the batch went unread; the file store answers a param it holds with
# another value INTERNAL_ERROR (not INVALID_PARAMETER_VALUE), which marked the batch for a read
# again: the read failed again, the batch went again, was refused again, with no end until the
# flush gave up and spooled it (and every --resume the same). Now the refusal's param is left out
# for good, said in one line naming the run and the param, and the rest of the step is logged.

@pytest.mark.parametrize("store", ["file", "sql"])
def test_a_param_conflict_after_a_failed_read_is_refused_once_and_the_rest_logged(
        store: str, request: pytest.FixtureRequest, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The SQL store (sqlite) answers INVALID_PARAMETER_VALUE: refused three times, the whole step
    was dropped, its metric with it."""
    server = request.getfixturevalue("file_store_server" if store == "file" else "mlflow_server")
    proxy = _RunsGetProxy(server.uri, "500", times=1 << 30)
    try:
        w, client, exp = _resumed_conflict(server, tmp_path, proxy)
        assert w.flush(20) is True, w.last_error       # before: refused until the flush gave up
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"lr": "1", "wd": "3"}, run.data.params
        assert [(h.value, h.step) for h in client.get_metric_history(run.info.run_id, "m")] == [(0.5, 1)]
        said = [line for line in capfd.readouterr().err.splitlines() if "meta-study writer" in line]
        kept = [line for line in said if "'lr'" in line]
        assert len(kept) == 1 and run.info.run_id in kept[0] and "left out" in kept[0], said
        assert proxy.handler.gets == 1 and w.dropped == 0, (proxy.handler.gets, w.dropped)   # no cycle
    finally:
        proxy.close()


class _UnknownWordsProxy:
    """A proxy in front of a real MLflow server that fails every runs/get (a 500 page) and gives a
    log-batch's INTERNAL_ERROR in words :func:`held_params` does not know (another MLflow's), the
    error code kept."""

    def __init__(self, upstream: str) -> None:
        import json
        import urllib.error
        import urllib.request

        from mlflow_proxies import Proxy413, serve

        class H(Proxy413):
            LIMIT = 1 << 40
            gets = 0
            posts = 0

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if "runs/get" in self.path:
                    type(self).gets += 1
                    self._send(500, b"<html><head><title>500 Internal Server Error</title></head></html>")
                    return
                self._relay("GET")

            def do_POST(self) -> None:
                if "runs/log-batch" not in self.path:
                    self._relay("POST")
                    return
                type(self).posts += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = urllib.request.Request(self.upstream + self.path, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                    if b"INTERNAL_ERROR" in data:
                        data = json.dumps({"error_code": "INTERNAL_ERROR", "message": "param mismatch"}).encode()
                self._send(status, data)

        H.upstream = upstream
        self.handler = H
        self.uri, self.srv = serve(H)

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_a_refusal_in_unknown_words_after_a_failed_read_ends_after_one_round(
        file_store_server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The conflict's param cannot be read from the refusal: after one read -> send -> refusal, the
    batch's params go for good (said once, naming the run and them) and its metric is logged."""
    proxy = _UnknownWordsProxy(file_store_server.uri)
    try:
        w, client, exp = _resumed_conflict(file_store_server, tmp_path, proxy)
        assert w.flush(20) is True, w.last_error       # before: refused until the flush gave up
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params["lr"] == "1"
        assert [(h.value, h.step) for h in client.get_metric_history(run.info.run_id, "m")] == [(0.5, 1)]
        said = [line for line in capfd.readouterr().err.splitlines() if "left out for good" in line]
        assert len(said) == 1 and run.info.run_id in said[0] and "'lr'" in said[0], said
        assert "param mismatch" in said[0] and w.dropped == 1, (said, w.dropped)
        assert proxy.handler.gets == 2 and proxy.handler.posts == 2, (proxy.handler.gets, proxy.handler.posts)
    finally:
        proxy.close()


# ---- 2. a runs/get that raised marks the batch "resent" ---------------------------------------------
# Checked: "resent" only makes the next try read the run's metric history and leave out the points
# it holds already (exactly equal: key, value, time, step), so it can neither add a point nor drop
# one the run lacks; its cost is one history read per metric key on a file store. Kept as it is.

def test_a_read_that_failed_its_tries_logs_each_point_once_on_a_file_store(file_store_server: Any,
                                                                             tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from meta_study.tune._shards import Op

    client = MlflowClient(file_store_server.uri)
    exp = client.create_experiment(f"s51w-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    w = _writer(file_store_server.uri, exp, parent, tmp_path / "exp", False)
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
    w.put(Op("metrics", "a", {"metrics": {"m": 0.25}, "step": 0, "time": 500}))
    assert w.flush(60) is True
    proxy = _RunsGetProxy(file_store_server.uri, "reset", times=4)    # the step's first read fails 3 times
    try:
        w = _writer(proxy.uri, exp, parent, tmp_path / "exp", True)
        w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1, "wd": 3}}))
        w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
        assert w.flush(60) is True, w.last_error
        assert w.errors == 1 and proxy.handler.gets == 5, (w.errors, proxy.handler.gets)
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"lr": "1", "wd": "3"}
        assert [(h.value, h.step) for h in client.get_metric_history(run.info.run_id, "m")] == [(0.25, 0), (0.5, 1)]
    finally:
        proxy.close()


# ---- 3. MLflow's client over mysql+pymysql://: no limits on its sessions ---------------------------
# The SQL source's MySQL sessions have a statement and lock-wait limit and its driver a read
# timeout; MLflow's own engine (the REST-like `mysql+pymysql://` ingest path) had none of them, and
# no connect timeout: a silent port, a read behind a migration's lock, a server gone silent
# mid-query hung the ingest for good. No MySQL server here: PyMySQL's place is taken by a DB-API
# module that records how SQLAlchemy (through MLflow's own engine) asks it to connect.

def _recording_pymysql(calls: list[dict[str, Any]]) -> types.ModuleType:
    from test_s50_mlflow_ingest import _fake_dbapi

    mod = _fake_dbapi("pymysql", "1.1.1")

    def connect(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise mod.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' (timed out)")

    mod.connect = connect
    return mod


def test_mlflows_mysql_engine_connects_with_a_connect_and_a_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.store.db.utils as db_utils

    from meta_study.errors import UserError
    from meta_study.ingest import mlflow_source
    from meta_study.ingest.mlflow_runs import DB_CONNECT_TIMEOUT_S
    from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S
    from meta_study.ingest.sources import open_sources

    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "pymysql", _recording_pymysql(calls))
    monkeypatch.setattr(db_utils, "MAX_RETRY_COUNT", 1)     # MLflow's 10 tries, ~100 s of back-off: one here
    uri = "mysql+pymysql://127.0.0.1:9/mlflow"
    (src,) = open_sources([uri], None)
    with pytest.raises(UserError):
        src._call(mlflow_source.database_client, uri, None)
    assert calls and all(c.get("connect_timeout") == DB_CONNECT_TIMEOUT_S for c in calls), calls
    assert all(c.get("read_timeout") == STATEMENT_TIMEOUT_S + 60 for c in calls), calls
    calls.clear()
    own = "mysql+pymysql://127.0.0.1:9/mlflow?connect_timeout=3&read_timeout=7"     # the user's own win
    with pytest.raises(UserError):
        src._call(mlflow_source.database_client, own, None)
    assert calls and all(c["connect_timeout"] == 3 and c["read_timeout"] == 7 for c in calls), calls


def test_mlflows_mysql_engine_limits_each_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own engine (``create_sqlalchemy_engine``, as its store makes it), armed: each new
    session gets the statement and lock-wait limits, a shorter one it has is kept."""
    from mlflow.store.db.utils import create_sqlalchemy_engine

    from meta_study.ingest.mlflow_source import arm_mysql_limits
    from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S

    monkeypatch.setitem(sys.modules, "pymysql", _recording_pymysql([]))
    engine = create_sqlalchemy_engine("mysql+pymysql://127.0.0.1:9/mlflow")
    try:
        arm_mysql_limits(engine)
        arm_mysql_limits(engine)      # once
        (ours,) = [f for f in engine.pool.dispatch.connect if f.__name__ == "_limit_mysql_session"]
        mysql, mariadb, shorter = (_MysqlConn("8.0.36"), _MysqlConn("10.11.6-MariaDB"),
                                   _MysqlConn("8.0.36", lock_wait_timeout=50, max_execution_time=60000))
        for conn in (mysql, mariadb, shorter):
            ours(conn, None)
    finally:
        engine.dispose()
    assert f"SET SESSION max_execution_time = {STATEMENT_TIMEOUT_S * 1000}" in mysql.sql, mysql.sql
    assert f"SET SESSION lock_wait_timeout = {STATEMENT_TIMEOUT_S}" in mysql.sql, mysql.sql
    assert f"SET SESSION max_statement_time = {STATEMENT_TIMEOUT_S}" in mariadb.sql, mariadb.sql
    assert not any(s.startswith("SET") for s in shorter.sql), shorter.sql


def test_mlflows_libpq_engine_gets_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg and psycopg2 read ``connect_timeout`` from the URI MLflow's engine is made from;
    ``PGCONNECT_TIMEOUT`` or the URI's own wins, and other drivers get the URI as given."""
    from sqlalchemy.engine import make_url

    from meta_study.ingest.mlflow_source import with_connect_timeouts

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    for uri in ("postgresql://db.lab/mlflow", "postgresql+psycopg2://db.lab/mlflow?options=-c%20x%3D1"):
        got = make_url(with_connect_timeouts(uri))
        assert got.query["connect_timeout"] == "20" and got.query.get("options") == make_url(uri).query.get("options")
    assert with_connect_timeouts("postgresql://db.lab/mlflow?connect_timeout=5") == \
        "postgresql://db.lab/mlflow?connect_timeout=5"
    assert with_connect_timeouts("mssql+pyodbc://db.lab/mlflow") == "mssql+pyodbc://db.lab/mlflow"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    assert with_connect_timeouts("postgresql://db.lab/mlflow") == "postgresql://db.lab/mlflow"


def test_the_held_param_is_read_from_mlflows_refusal_in_both_stores_words() -> None:
    from meta_study.tune._rest import RestError
    from meta_study.tune._shards import held_params

    one = ("Changing param values is not allowed. Param with key='opt' was already logged with value='a' for "
           "run ID='x'. ' for run ID='r1'. Attempted logging new value 'sgd'.")     # a held value with quotes
    assert held_params(RestError("cut", 500, "INTERNAL_ERROR", one), "r1", {"opt": "sgd", "lr": "1"}) == \
        {"opt": "a' for run ID='x'. "}
    listed = ("Changing param values is not allowed. Params were already logged="
              f"'{[{'key': 'lr', 'old_value': '1', 'new_value': '2'}]}' for run ID='r1'.")
    assert held_params(RestError("cut", 400, "INVALID_PARAMETER_VALUE", listed), "r1", {"lr": "2"}) == {"lr": "1"}
    assert held_params(RestError("cut", 400, "INVALID_PARAMETER_VALUE", listed), "r2", {"lr": "2"}) == {}
    assert held_params(RestError("cut", 500, "INTERNAL_ERROR", "param mismatch"), "r1", {"lr": "2"}) == {}
    assert held_params(RuntimeError(one), "r1", {"opt": "sgd"}) == {}


def _full_disk_proxy(upstream: str, times: int) -> _RunsGetProxy:
    """:class:`_RunsGetProxy` failing every runs/get (a 500 page) whose first ``times`` log-batches
    are answered INTERNAL_ERROR for a reason that is no param's (a full disk); later ones relay."""
    import json

    proxy = _RunsGetProxy(upstream, "500", times=1 << 30)
    left = [times]

    def do_POST(self: Any) -> None:   # noqa: N802 - http.server's name
        if "runs/log-batch" in self.path and left[0] > 0:
            left[0] -= 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps({"error_code": "INTERNAL_ERROR", "message": "[Errno 28] No space left on device"}).encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._relay("POST")

    proxy.handler.do_POST = do_POST   # looked up per request: the running server takes it
    return proxy


def test_an_internal_error_that_is_no_params_keeps_the_params_after_failed_reads(
        file_store_server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A full disk's INTERNAL_ERROR, twice, with every read of the run's params failing: the one
    round meant for a param conflict in unknown words left the run's params out for good (its
    metrics logged without their config). Retried instead, as any error of a server that is
    down: once the disk has room, params and metric are all logged."""
    from mlflow.tracking import MlflowClient

    from meta_study.tune._shards import Op

    proxy = _full_disk_proxy(file_store_server.uri, times=2)
    try:
        client = MlflowClient(file_store_server.uri)
        exp = client.create_experiment(f"s51d-{uuid.uuid4().hex[:6]}")
        parent = client.create_run(exp).info.run_id
        w = _writer(file_store_server.uri, exp, parent, tmp_path / "exp", False)
        w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
        assert w.flush(60) is True
        w = _writer(proxy.uri, exp, parent, tmp_path / "exp", True)   # resumed: its params are read first
        w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1, "wd": 3}}))
        w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
        assert w.flush(60) is True, w.last_error
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"lr": "1", "wd": "3"}, run.data.params
        assert [(h.value, h.step) for h in client.get_metric_history(run.info.run_id, "m")] == [(0.5, 1)]
        assert not [line for line in capfd.readouterr().err.splitlines() if "left out for good" in line]
        assert w.dropped == 0
    finally:
        proxy.close()
