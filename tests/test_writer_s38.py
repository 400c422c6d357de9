"""Defects found in a review of the sweep's MLflow writer (meta_study/tune/_shards.py, writer.py,
_child.py, tracking.py): what the writer says, and when, about a server or a storage that fails."""

from __future__ import annotations

import http.server
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune._shards import error_line
from meta_study.tune.state import StateDir
from meta_study.tune.writer import MlflowWriter, Op, SweepTarget


class _Trial:
    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config = trial_id, config

    def __str__(self) -> str:
        return f"t_{self.trial_id}"


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """A tracking server behind a proxy that answers 503 to every call."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"upstream unavailable"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def unavailable(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _callback(tmp_path: Path, uri: str) -> tuple[Any, str]:
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(f"sqlite:///{tmp_path}/mlflow.db", "down", "s", state, params={}, tags={})
    return MlflowSweepCallback(uri, exp_id, parent, state), state


@pytest.mark.slow(10)
def test_the_end_of_sweep_line_gives_the_reason(tmp_path: Path, unavailable: str, monkeypatch, capsys) -> None:
    """"not every MLflow operation of this sweep reached ..." gave no reason: a 503 from a proxy, a
    refused connection and a refused credential read the same. The writer's last error now comes
    back with the flush's reply and is on that line, without the credentials."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-never-shown")
    cb, state = _callback(tmp_path, unavailable)
    cb.on_trial_start(0, [], _Trial("t1", {"lr": 0.1}))
    capsys.readouterr()
    assert cb.flush(timeout_s=1) is False
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "(last error: RestError: MLflow runs/" in line and "HTTP 503: upstream unavailable)" in line, line
    assert "what was left is kept in" in line and StateDir(state).spooled(), line
    assert "s3cret" not in line


def test_an_error_line_keeps_no_credentials() -> None:
    e = ConnectionError("HTTPConnectionPool(http://ada:s3cret@127.0.0.1:9/api): refused\nmore")
    assert error_line(e) == "ConnectionError: HTTPConnectionPool(http://127.0.0.1:9/api): refused"


@pytest.mark.slow(15)
def test_lost_operations_are_not_said_to_be_spooled(tmp_path: Path, capsys) -> None:
    """Server down and storage down at the sweep's end: the writer kept the operations it could
    not spool in memory, the driver killed it 60 s after the flush (its last flush waited the whole
    flush timeout, 300 s) and they died with it, while the line said they were kept in the spool
    for --resume. The line now says how many are lost."""
    cb, state = _callback(tmp_path, "http://127.0.0.1:9")    # nothing listens there
    spool = Path(state) / "meta_study" / "spool"
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_text("")        # a file where the spool's folder goes: every spool write fails
    cb.on_trial_start(0, [], _Trial("t1", {"lr": 0.1}))
    capsys.readouterr()
    assert cb.flush(timeout_s=1) is False
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "1 operation(s) could not be spooled to" in line and "are lost" in line, line
    assert "kept in" not in line and "ConnectionRefusedError" in line, line


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=client.create_run(exp).info.run_id,
                           state_dir=str(tmp_path / "exp"))


def test_a_server_down_mid_sweep_is_said_once_and_its_return_too(store, capfd) -> None:
    """A server down mid-sweep went unsaid until the end-of-sweep flush gave up (5 minutes later by
    default). Said once after SAY_DOWN_AFTER_S of failed calls, and once when a call goes through."""
    w = MlflowWriter(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {}, 30.0))
    w.SAY_DOWN_AFTER_S = 0.6
    w.setup()
    real, calls = w._do_step, []

    def flaky(trial: str, step: Any) -> None:   # the first 3 calls fail: at 0, 0.5 and 1.5 s
        calls.append(trial)
        if len(calls) <= 3:
            raise ConnectionRefusedError(111, "Connection refused")
        real(trial, step)

    w._do_step = flaky  # type: ignore[method-assign]
    w.put(Op("run", "t1", {"name": "t1", "config": {"lr": 0.1}}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(30) is True
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("meta-study writer: MLflow calls")]
    assert len(err) == 2, err
    assert "have failed for" in err[0] and "ConnectionRefusedError: [Errno 111] Connection refused" in err[0], err
    assert "go through again" in err[1], err
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED"
