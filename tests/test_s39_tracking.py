"""Review fixes (session 39) of how a sweep reaches MLflow: a parent run whose params fail is
closed, not left RUNNING; the driver's pipe to its writer on a descriptor above 1023 never hangs
the end of the sweep; a 200 answer that is not MLflow's JSON says what it is."""

from __future__ import annotations

import http.server
import os
import resource
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from meta_study.tune._rest import RestError, _RestRuns
from meta_study.tune.tracking import create_parent_run
from meta_study.tune.writer import Op, SweepTarget, WriterProcess


def test_a_parent_run_whose_params_fail_is_closed_not_left_running(mlflow_server: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The server failed (a 503, a restart) after the parent run was created and before its params
    were logged: the sweep stopped with the error and no sweep record named the run, so nothing
    ever closed it: RUNNING for good (a live sweep in the UI and to ingest), and a second parent
    run when the command ran again."""
    exp = f"parent-fails-{uuid.uuid4().hex[:6]}"

    def refused(self: Any, *a: Any, **k: Any) -> None:
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/log-batch failed with error code 503")

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "log_batch", refused)
        with pytest.raises(MlflowException, match="503"):
            create_parent_run(mlflow_server.uri, exp, "s", params={"lr": 0.1}, tags={})
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs([client.get_experiment_by_name(exp).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_full_pipe_on_a_descriptor_above_1023_does_not_hang_the_flush(tmp_path: Path) -> None:
    """A Ray driver has many files open; with a soft limit above 1024 the writer's stdin got a
    descriptor above 1023. When the child fell behind (the pipe full), the feeder thread called
    select() on it, which refuses such descriptors (ValueError): the thread died, every later line
    waited behind it, and the end-of-sweep flush waited for a reply that never came."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1200:
        pytest.skip(f"a soft limit of {soft} open files keeps every descriptor below 1024")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]   # the driver's open files
    try:
        w = WriterProcess(SweepTarget(f"sqlite:///{tmp_path}/m.db", "0", "p", str(tmp_path), {}, 5.0, False))
        for _ in range(30):      # 300 KB: far more than the pipe holds while the child starts (~1 s)
            w.put(Op("noop", "", {"pad": "x" * 10_000}))
        assert w._pipe is not None and w._pipe.fd > 1023
    finally:
        for fd in held:
            os.close(fd)
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(w.close(timeout_s=5)), daemon=True)
    t.start()
    t.join(120)              # a hang, not a duration: the fixed flush takes ~1-2 s
    assert out == [True]


class _Portal(http.server.BaseHTTPRequestHandler):
    """A login portal (or a misconfigured proxy) between the writer and MLflow: 200 and a page."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<!DOCTYPE html>\n<html><title>Sign in to the lab network</title></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
    srv.daemon_threads, srv.block_on_close = True, False   # a keep-alive connection holds no teardown
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_200_answer_that_is_not_mlflows_json_says_so(portal: str) -> None:
    """The writer's last error, said mid-sweep and at its end, was "JSONDecodeError: Expecting
    value: line 1 column 1 (char 0)": no call, no status, nothing of what answered. One line that
    names the call and shows the start of the page; the connection is reused for the next call."""
    from meta_study.tune._shards import error_line

    rest = _RestRuns(portal, {**dict.fromkeys(_RestRuns.CRED_FIELDS), "host": portal})
    for _ in range(2):
        with pytest.raises(RestError) as e:
            rest.post("runs/log-batch", {"run_id": "r"})
        line = error_line(e.value)
        assert "runs/log-batch" in line and "HTTP 200" in line and "not MLflow's JSON" in line, line
        assert "Sign in to the lab network" in line and e.value.status == 200


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy in front of MLflow: notes the URL each request asks for, answers ``{}``."""

    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a: object) -> None:
        pass


def test_the_writer_goes_through_all_proxy_as_mlflows_client_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only ALL_PROXY set, MLflow's client (requests) went through the proxy and the writer
    straight to the server: where only the proxy reaches it, the driver made the parent run and
    every call of every trial failed until the end-of-sweep flush spooled them."""
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    handler = type("P", (_Proxy,), {"seen": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads, srv.block_on_close = True, False
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{srv.server_address[1]}")
        host = "http://127.0.0.1:9"     # nothing listens there: only the proxy answers
        assert _RestRuns(host, {**dict.fromkeys(_RestRuns.CRED_FIELDS), "host": host}).post("runs/update", {}) == {}
        assert handler.seen == [f"{host}/api/2.0/mlflow/runs/update"]
    finally:
        srv.shutdown()
        srv.server_close()
