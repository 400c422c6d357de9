"""Review fixes of the sweep writer's MLflow REST client (meta_study/tune/_rest.py): a log-batch too
large for the server or a proxy in front of it (HTTP 413) is split, not retried until the flush
gives up; one that no split makes small enough is a refusal for good, said with what it holds; and
whether the server's store appends a metric point sent again (MLflow's file store) is asked of the
server. Traffic stays on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from meta_study.tune._rest import RestError, _RestRuns
from meta_study.tune._shards import MlflowWriter, Op, SweepTarget, permanent
from mlflow_proxies import Proxy413, serve
from mlflow_proxies import file_store_server as _file_store_server


def _creds(uri: str) -> dict[str, Any]:
    return {**{f: None for f in _RestRuns.CRED_FIELDS}, "host": uri}


class _Limited(http.server.BaseHTTPRequestHandler):
    """runs/log-batch behind a proxy that takes at most LIMIT bytes a request (nginx's
    client_max_body_size): 413 with its HTML page above it; what it takes is recorded."""

    protocol_version = "HTTP/1.1"
    LIMIT = 4000
    taken: list[dict[str, Any]] = []
    sizes: list[int] = []

    def log_message(self, *a: Any) -> None:
        pass

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        body = self.rfile.read(n)         # read whole, as nginx's lingering close lets a client finish
        type(self).sizes.append(n)
        if n > self.LIMIT:
            page = b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>nginx</body></html>"
            self.send_response(413)
        else:
            type(self).taken.append(json.loads(body))
            page = b"{}"
            self.send_response(200)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


@pytest.fixture
def limited() -> Iterator[type]:
    class H(_Limited):
        taken: list[dict[str, Any]] = []
        sizes: list[int] = []
    uri, srv = serve(H)
    H.uri = uri   # type: ignore[attr-defined]
    yield H
    srv.shutdown()
    srv.server_close()


def _batch(n_params: int, n_metrics: int, value: str = "v" * 40) -> dict[str, Any]:
    return {"run_id": "r1",
            "params": [{"key": f"p{i}", "value": value} for i in range(n_params)],
            "tags": [{"key": "t", "value": "x"}],
            "metrics": [{"key": f"m{i % 7}", "value": i / 3, "timestamp": 1000 + i, "step": i} for i in range(n_metrics)]}


def test_a_log_batch_too_large_for_a_proxy_is_split_not_retried(limited: type) -> None:
    """A 413 (the body over a proxy's limit) was an error like a 503: the writer retried the same
    body until the flush gave up, spooled it, and every --resume was refused again. Now the batch
    goes in halves, each split again while too large: the server gets every entity once."""
    body = _batch(60, 300)
    assert len(json.dumps(body)) > 4 * limited.LIMIT
    rest = _RestRuns(limited.uri, _creds(limited.uri))
    assert rest.post("runs/log-batch", body) == {}
    got = {k: [e for b in limited.taken for e in b[k]] for k in ("params", "tags", "metrics")}
    assert got == {k: body[k] for k in ("params", "tags", "metrics")}     # all of it, once, in order
    assert all(b["run_id"] == "r1" for b in limited.taken)
    # the next batch as large goes out split at once: no refused request first
    refused = sum(s > limited.LIMIT for s in limited.sizes)
    rest.post("runs/log-batch", _batch(60, 300))
    assert sum(s > limited.LIMIT for s in limited.sizes) == refused


def test_an_entity_no_split_makes_small_enough_is_refused_for_good(limited: type) -> None:
    """A single param larger than the proxy takes: no retry sends it. It is a refusal for good (the
    writer drops the step after three, counted and said), and the line says what it holds."""
    body = {"run_id": "r1", "params": [{"key": "huge", "value": "x" * 5000}], "tags": [], "metrics": []}
    rest = _RestRuns(limited.uri, _creds(limited.uri))
    with pytest.raises(RestError) as e:
        rest.post("runs/log-batch", body)
    assert permanent(e.value) and e.value.status == 413
    msg = str(e.value)
    assert "\n" not in msg and "HTTP 413: the server, or a proxy in front of it, takes no request of" in msg, msg
    assert "one param 'huge', its value 5,000 bytes" in msg and "413 Request Entity Too Large" in msg, msg


def test_a_413_among_halves_logs_the_rest(limited: type) -> None:
    """One oversized param among small entities: the small ones are logged before the refusal."""
    body = _batch(3, 20)
    body["params"].append({"key": "huge", "value": "x" * 5000})
    rest = _RestRuns(limited.uri, _creds(limited.uri))
    with pytest.raises(RestError) as e:
        rest.post("runs/log-batch", body)
    assert permanent(e.value) and "'huge'" in str(e.value)
    got = [e["key"] for b in limited.taken for e in b["params"]] + [e["key"] for b in limited.taken for e in b["metrics"]]
    assert sorted(got) == sorted([f"p{i}" for i in range(3)] + [m["key"] for m in body["metrics"]])


class _EarlyAnswer(http.server.BaseHTTPRequestHandler):
    """A proxy that answers 413 to a body over LIMIT bytes before reading it, and closes (as many
    do; nginx reads on for a while): the client's send fails on a broken pipe or a reset."""

    protocol_version = "HTTP/1.1"
    LIMIT = 4000
    taken: list[dict[str, Any]] = []

    def log_message(self, *a: Any) -> None:
        pass

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        if n > self.LIMIT:
            page = b"<html><head><title>413 Request Entity Too Large</title></head></html>"
            self.send_response(413)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)    # the answer is out; the body never read
            return
        type(self).taken.append(json.loads(self.rfile.read(n)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def test_a_413_answered_before_the_body_was_read_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The send of a body the proxy would not read failed (BrokenPipeError, or a reset), the 413
    waiting unread: an error like a server down, retried until the flush gave up. Now the answer is
    read and the batch split. (The body is larger than the socket buffers, so the send fails.)"""
    class H(_EarlyAnswer):
        taken: list[dict[str, Any]] = []
    uri, srv = serve(H)
    try:
        rest = _RestRuns(uri, _creds(uri))
        body = _batch(2, 10)
        body["params"][0]["value"] = "y" * 6000
        big = {"run_id": "r1", "params": body["params"], "tags": [],
               "metrics": body["metrics"] + [{"key": f"k{i}", "value": 1.0, "timestamp": 1, "step": i}
                                             for i in range(10)]}
        fill = {"run_id": "r1", "params": [], "tags": [{"key": f"t{i}", "value": "z" * 5000} for i in range(1600)],
                "metrics": []}   # 8 MB: more than loopback's socket buffers take before the peer reads
        with pytest.raises(RestError) as e:
            rest.post("runs/update", fill)       # not split: the 413 itself, read, is what is said
        assert e.value.status == 413 and permanent(e.value), e.value
        with pytest.raises(RestError) as e:
            rest.post("runs/log-batch", big)     # split: all but the one param too large for the proxy
        assert e.value.status == 413 and "one param 'p0'" in str(e.value), e.value
        assert sorted(m["key"] for b in H.taken for m in b["metrics"]) == sorted(m["key"] for m in big["metrics"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_writer_logs_a_batch_larger_than_the_proxy_takes(mlflow_server: Any, tmp_path: Path) -> None:
    """End to end, the writer against a real MLflow server behind a proxy with a body limit: a
    trial's config and metrics above the limit all reach the run, and the flush says all went (it
    gave up after its whole timeout, the batch spooled for a --resume that was refused again)."""
    from mlflow.tracking import MlflowClient

    class H(Proxy413):
        upstream = mlflow_server.uri
    uri, srv = serve(H)
    try:
        client = MlflowClient(mlflow_server.uri)
        exp = client.create_experiment(f"s50-413-{uuid.uuid4().hex[:6]}")
        parent = client.create_run(exp).info.run_id
        w = MlflowWriter(SweepTarget(uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 120.0, False))
        w.creds = _creds(uri)
        w.setup()
        config = {f"knob_{i}": "x" * 60 for i in range(40)}
        metrics = {f"train/loss_{i}": i / 10 for i in range(60)}
        w.put(Op("run", "a", {"name": "s_a", "config": config}))
        w.put(Op("metrics", "a", {"metrics": metrics, "step": 5, "time": 1000}))
        w.put(Op("end", "a", {"status": "FINISHED"}))
        assert w.flush(120) is True and w.dropped == 0
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == config and run.data.metrics == metrics and run.info.status == "FINISHED"
    finally:
        srv.shutdown()
        srv.server_close()


def test_appends_metrics_asks_the_server(mlflow_server: Any, tmp_path: Path) -> None:
    """A database store keeps a point sent again once; a server that cannot say (no server-info:
    an older MLflow, a proxy) or cannot be reached is taken to append."""
    assert _RestRuns(mlflow_server.uri, _creds(mlflow_server.uri)).appends_metrics() is False

    class NoInfo(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
    uri, srv = serve(NoInfo)
    try:
        assert _RestRuns(uri, _creds(uri)).appends_metrics() is True
    finally:
        srv.shutdown()
        srv.server_close()
    with socket.socket() as s:   # bound, never listening: refuses connections
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
        rest = _RestRuns(down, _creds(down))
        assert rest.appends_metrics() is True and getattr(rest, "_appends", None) is None   # asked again later


@pytest.fixture(scope="module")
def file_store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with _file_store_server(tmp_path_factory.mktemp("filestore")) as srv:
        yield srv


@pytest.mark.slow(30)
def test_appends_metrics_of_a_file_store_server(file_store_server: Any) -> None:
    """MLflow's file store appends a point sent again: the writer must read back before a resend."""
    assert _RestRuns(file_store_server.uri, _creds(file_store_server.uri)).appends_metrics() is True


class _LostReply(http.server.BaseHTTPRequestHandler):
    """A proxy in front of a real MLflow server that relays the first log-batch holding metric
    ``m`` and then cuts the connection: the server logged it, the writer never heard."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    cut = 0

    def log_message(self, *a: Any) -> None:
        pass

    def _relay(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        req = urllib.request.Request(self.upstream + self.path, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        if self.path.endswith("runs/log-batch") and body and b'"m"' in body and not type(self).cut:
            type(self).cut += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._relay("POST")

    def do_GET(self) -> None:
        self._relay("GET")


@pytest.mark.slow(30)
def test_a_resent_batch_logs_each_point_once_on_a_file_store_server(file_store_server: Any, tmp_path: Path) -> None:
    """A log-batch whose reply was lost (the server logged it) is resent: MLflow's file store
    appended its points again, each metric of the step twice in the run's history."""
    from mlflow.tracking import MlflowClient

    class H(_LostReply):
        upstream = file_store_server.uri
    uri, srv = serve(H)
    try:
        client = MlflowClient(file_store_server.uri)
        exp = client.create_experiment(f"s50-dup-{uuid.uuid4().hex[:6]}")
        parent = client.create_run(exp).info.run_id
        w = MlflowWriter(SweepTarget(uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 120.0, False))
        w.creds = _creds(uri)
        w.setup()
        w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
        assert w.flush(120) is True
        w = MlflowWriter(SweepTarget(uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 120.0, True))
        w.creds = _creds(uri)
        w.setup()
        w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
        assert w.flush(120) is True and H.cut == 1 and w.errors >= 1
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert [(h.value, h.step) for h in client.get_metric_history(run.info.run_id, "m")] == [(0.5, 1)]
    finally:
        srv.shutdown()
        srv.server_close()
