"""Defects found in a review of the sweep's MLflow client side (stop 46): meta_study/tune/_rest.py,
tracking.py, provenance.py and finalize.py. MLflow is a real ``mlflow server`` on 127.0.0.1 (or a
sqlite store); faults come from tiny HTTP servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.mark.slow(30)
def test_trial_runs_reach_a_workspace_of_a_server_with_workspaces(tmp_path: Path, monkeypatch):
    """A server run with ``--enable-workspaces`` and ``MLFLOW_WORKSPACE`` set: the driver's client
    sends the workspace as a header (the experiment is created there), the writer's REST client did
    not, so the server looked the experiment up in the default workspace and answered every
    runs/create "No Experiment with id=N exists" (a refusal for good): every trial's operations
    were dropped and no trial had a run. The writer now sends the driver's workspace too."""
    from mlflow_server import MlflowServer

    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    with MlflowServer(tmp_path / "srv", args=("--enable-workspaces",)) as server:
        import mlflow
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        mlflow.create_workspace("lab-a")
        monkeypatch.setenv("MLFLOW_WORKSPACE", "lab-a")
        client = MlflowClient(server.uri)
        exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
        parent = client.create_run(exp).info.run_id
        w = WriterProcess(SweepTarget(server.uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 60.0))
        w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}}))
        w.put(Op("metrics", "t1", {"metrics": {"us/up/top1": 0.5}, "step": 3, "time": 1000}))
        w.put(Op("end", "t1", {"status": "FINISHED"}))
        assert w.close(60.0) is True
        runs = client.search_runs([exp], "tags.trial_id = 't1'")
        assert [(r.info.status, r.data.params.get("lr"), r.data.metrics.get("us/up/top1")) for r in runs] == [
            ("FINISHED", "0.1", 0.5)]


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def bad_gateway():
    """A 'tracking server' behind a proxy whose upstream is down: nginx's multi-line 502 page."""
    page = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = _Quiet(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _creds(uri: str) -> dict:
    from meta_study.tune._rest import _RestRuns

    return {**{f: None for f in _RestRuns.CRED_FIELDS}, "host": uri}


def test_an_error_page_is_said_in_one_line_with_its_title(bad_gateway):
    """A proxy's error page is several lines; the writer says an error by its first line (its
    stderr, the end-of-sweep "last error"), which was "HTTP 502: <html>": the reason was lost."""
    from meta_study.tune._rest import RestError, _RestRuns
    from meta_study.tune._shards import error_line

    with pytest.raises(RestError) as e:
        _RestRuns(bad_gateway, _creds(bad_gateway)).post("runs/create", {"experiment_id": "1"})
    assert e.value.status == 502
    assert len(str(e.value).splitlines()) == 1, str(e.value)
    assert "502 Bad Gateway" in error_line(e.value), error_line(e.value)


def test_trial_error_reasons_carry_no_password(tmp_path: Path):
    """A trial's (or an evaluation's) error becomes a tag of its run (``meta_study.reason``,
    ``meta_study.eval_error``) and a line of the sweep's summary: an error naming a URL with a
    password put the password into MLflow. The user info is cut, as the writer cuts it from its own
    lines."""
    from meta_study.tune.finalize import error_line
    from meta_study.tune.tracking import _trial_error_reason

    e = ConnectionError("could not reach http://bob:hunter2@db.lab:5432/feats (refused)")
    assert error_line(e) == "ConnectionError: could not reach http://db.lab:5432/feats (refused)"
    wrapped = SimpleNamespace(cause=ValueError("read s3://AKIA:s3cr@t@lab/x failed"))   # a RayTaskError's cause
    assert "s3cr" not in error_line(wrapped) and "s3://lab/x" in error_line(wrapped)
    err = tmp_path / "error.txt"
    err.write_text("Failure # 1 (occurred at 2026-12-06)\nTraceback ...\n"
                   "OSError: cannot open postgresql://me:pa55@db/x\n")
    reason = _trial_error_reason(SimpleNamespace(pickled_error_file=None, error_file=str(err)))
    assert reason == "OSError: cannot open postgresql://db/x"


def test_a_resumed_sweep_that_ends_clears_the_earlier_interrupted_count(tmp_path: Path, monkeypatch):
    """Ctrl-C logged ``sweep/interrupted = 3`` on the parent run; the ``--resume`` that finished
    every trial logged its counts without that key, so the parent (FINISHED) kept saying 3 trials
    were interrupted, in the UI's runs table for good."""
    from mlflow.tracking import MlflowClient

    from meta_study.tune.tracking import log_sweep_summary

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    log_sweep_summary(uri, exp, parent, {"trials": 4, "finished": 1, "errored": 0, "early_stopped": 0,
                                         "interrupted": 3})
    import meta_study.tune.tracking as tracking

    later = time.time() + 600      # the resumed session's summary is later (within one ms, the higher value won)
    monkeypatch.setattr(tracking, "time", SimpleNamespace(time=lambda: later))
    log_sweep_summary(uri, exp, parent, {"trials": 4, "finished": 4, "errored": 0, "early_stopped": 0,
                                         "eval_failed": 0, "unevaluable": 0})
    m = client.get_run(parent).data.metrics
    assert (m["sweep/finished"], m["sweep/interrupted"]) == (4.0, 0.0)
    fresh = client.create_run(exp).info.run_id    # a sweep never stopped gets no such key
    log_sweep_summary(uri, exp, fresh, {"trials": 1, "finished": 1, "errored": 0})
    assert "sweep/interrupted" not in client.get_run(fresh).data.metrics


@pytest.mark.parametrize("name", ["lr sweep", "café", "a%20b", "q#1?x"])
def test_checkpoint_uris_on_an_object_store_read_back_to_their_path(name):
    """``checkpoint_uri`` is a full URI that ``pyarrow.fs.FileSystem.from_uri`` reads back
    (docs/tracking.md). A sweep named with a space or a non-ASCII letter (names allow both) gave
    ``s3://lab/tune/lr sweep/...``, which it refuses ("Cannot parse URI"); ``%20`` in a name was
    read back as a space, another path."""
    import pyarrow.fs as pafs

    from meta_study.tune.provenance import full_uri

    path = f"lab/tune/{name}/t_00001/checkpoint_000002"
    uri = full_uri(path, "s3", "s3://lab/tune?endpoint_override=127.0.0.1:1&region=us-east-1", {})
    assert uri.startswith("s3://lab/tune/") and " " not in uri and uri.isascii(), uri
    assert pafs.FileSystem.from_uri(uri)[1] == path     # no request: the region and endpoint are given
    assert full_uri("lab/tune/s/t1/checkpoint_000003", "s3", "s3://lab/tune", {}) == \
        "s3://lab/tune/s/t1/checkpoint_000003"
