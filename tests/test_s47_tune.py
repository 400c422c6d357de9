"""Review of the sweep's MLflow machinery (stop 47): meta_study/tune/. An interrupted sweep said
nothing of the operations MLflow refused for good; the writer's threads counted them without a
lock; the REST client's idle-connection check used ``select.select``, which refuses a socket
numbered 1024 or more. MLflow is a real sqlite store; HTTP servers listen on 127.0.0.1 only."""

from __future__ import annotations

import http.server
import json
import os
import resource
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from meta_study.mlflow_client import mlflow_client
from meta_study.tune import runner


# ---- an interrupted sweep counts and says the operations MLflow dropped ------------------------

class _Callback:
    """The part of the sweep's MLflow callback an interrupted sweep's end reads."""

    def __init__(self, dropped: int) -> None:
        self.dropped, self.open, self.ended, self.target = dropped, {"t1"}, set(), None

    def close_interrupted(self, signal_name: str) -> list[str]:
        self.ended |= self.open
        left, self.open = sorted(self.open), set()
        return left

    def flush(self, timeout_s: float | None = None) -> bool:
        return True


def _interrupted_end(tmp_path: Path, dropped: int):
    from meta_study.tune.state import SweepRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("s47_interrupted")
    parent = client.create_run(exp).info.run_id
    rec = SweepRecord(sweep="s47", experiment="s47_interrupted", experiment_id=exp, parent_run_id=parent,
                      tracking_uri=uri, sessions=())
    p = SimpleNamespace(name="s47", exp_dir=str(tmp_path / "ray" / "s47"), tracking=uri, resume=False)
    res = runner.end_interrupted("SIGINT", [], {}, _Callback(dropped), p, rec, finished=0, errors=(), t0=0.0)
    return res, client.get_run(parent)


def test_an_interrupted_sweep_logs_and_returns_the_operations_mlflow_dropped(tmp_path: Path):
    """Ctrl-C of a sweep whose writer dropped operations (MLflow refused them for good): the
    parent's summary had ``sweep/interrupted`` but no ``sweep/dropped`` (or an earlier session's),
    and the result said nothing of them, while a sweep's normal end logs and says both."""
    res, run = _interrupted_end(tmp_path, dropped=3)
    assert run.info.status == "KILLED"
    assert run.data.metrics["sweep/interrupted"] == 1.0
    assert run.data.metrics["sweep/dropped"] == 3.0
    assert res.dropped == 3 and res.stop_signal == "SIGINT" and res.interrupted == 1


def test_an_interrupted_sweep_without_dropped_operations_logs_zero(tmp_path: Path):
    """``sweep/dropped`` is the session's count, 0 too: a parent run's latest value otherwise stayed
    an earlier session's."""
    res, run = _interrupted_end(tmp_path, dropped=0)
    assert run.data.metrics["sweep/dropped"] == 0.0 and res.dropped == 0


def test_sweep_main_says_the_dropped_operations_of_an_interrupted_sweep(monkeypatch, capsys):
    """It exits 130 with the interruption's line, and now the dropped operations' line too (no
    --resume sends them; the line came only at a sweep's normal end)."""
    from meta_study.tune.runner import SweepOptions, SweepResult, SweepSpec, grid

    spec = SweepSpec(name="s47_dr", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])})
    res = SweepResult(name="s47_dr", experiment_dir="/x/ray/s47_dr", tracking_uri="sqlite:///x.db",
                      parent_run_id="p", trials=2, finished=1, errored=0, early_stopped=0, seconds=1.0,
                      experiment="s47_dr", interrupted=1, stop_signal="SIGINT", dropped=2)
    monkeypatch.setattr(runner, "parse_options", lambda spec, argv: SweepOptions())
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: res)
    monkeypatch.setattr(runner, "browse_line", lambda *a: "browse: -")
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(spec, [])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "s47_dr: interrupted (SIGINT)" in err, err
    assert "s47_dr: MLflow refused 2 operation(s) of this sweep for good" in err, err


def test_a_sweep_stopped_before_tune_took_over_logs_and_says_its_dropped_operations(tmp_path: Path, capsys):
    """Ctrl-C before Tune's own handler (or with it off): the driver unwinds through ``_abandon``,
    which closed the runs and the parent but neither logged ``sweep/dropped`` nor said it."""
    from meta_study.tune.state import SweepRecord

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("s47_abandon")
    parent = client.create_run(exp).info.run_id
    rec = SweepRecord(sweep="s47_ab", experiment="s47_abandon", experiment_id=exp, parent_run_id=parent,
                      tracking_uri=uri, sessions=())
    runner._abandon(uri, rec, _Callback(dropped=2), KeyboardInterrupt())
    run = client.get_run(parent)
    assert run.info.status == "KILLED"
    assert run.data.metrics["sweep/dropped"] == 2.0
    assert "s47_ab: MLflow refused 2 operation(s) of this sweep for good" in capsys.readouterr().err


# ---- the writer threads' counters --------------------------------------------------------------

class _Racy(int):
    """An int whose first addition waits (up to ``wait_s``) until a second thread adds to it too:
    an unlocked ``x += 1`` from two threads then stores the same sum twice, deterministically."""

    def __new__(cls, value: int, wait_s: float) -> "_Racy":
        obj = super().__new__(cls, value)
        obj.barrier = threading.Barrier(2, timeout=wait_s)
        return obj

    def __add__(self, other: object) -> int:
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:   # the other thread waits for a lock: no race
            pass
        return int(self) + other   # type: ignore[operator]


def test_two_writer_threads_dropping_at_once_count_both(tmp_path: Path):
    """Two writer threads each drop a step MLflow refuses for good at the same moment: both drops
    are counted (the unlocked ``dropped += 1`` lost one, and the end-of-sweep count with it)."""
    from meta_study.tune._rest import RestError
    from meta_study.tune._shards import MlflowWriter, Op, SweepTarget

    w = MlflowWriter(SweepTarget("sqlite:///unused.db", "1", "p", str(tmp_path / "exp")))

    def refuse(trial, step):
        raise RestError("MLflow runs/update: HTTP 400: refused", 400, "INVALID_STATE")

    w._do_step = refuse   # type: ignore[method-assign]
    w.dropped = _Racy(0, wait_s=3.0)
    threads = [threading.Thread(target=w._apply, args=(t, [Op("end", t, {"status": "FINISHED"})]))
               for t in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.dropped == 2
    assert w.errors == 6    # three refusals each


# ---- the REST client on a socket numbered 1024 or more -------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True      # a connection the client keeps open never holds the test's end
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.closed = threading.Semaphore(0)

    def process_request_thread(self, request, client_address):   # noqa: ANN001 - socketserver's
        self.connections += 1
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request):   # noqa: ANN001 - socketserver's
        super().shutdown_request(request)
        self.closed.release()

    def handle_error(self, request, client_address) -> None:   # noqa: ANN001
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive

    def do_POST(self) -> None:   # noqa: N802 - http.server's
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"run": {"info": {"run_id": "r1"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # the second call's connection is closed by the server while idle (keep-alive said)
        self.close_connection = self.path.endswith("runs/update")

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def many_fds():
    """This process with over 1,030 descriptors open: the next socket is numbered 1024 or more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}: fewer than {need} descriptors")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    fds: list[int] = []
    base = os.open(os.devnull, os.O_RDONLY)
    try:
        fds.append(base)
        while fds[-1] < 1030:
            fds.append(os.dup(base))
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_rest_client_works_on_a_socket_numbered_above_1023(many_fds, monkeypatch):
    """A driver with many files open (a big sweep): the writer's connection got a descriptor above
    1023, and ``select.select`` in the idle-connection check raised "filedescriptor out of range"
    at every call after the first: nothing reached MLflow, retried until the flush spooled it.
    The check works there, and still notices a connection the server closed while idle."""
    from meta_study.tune._rest import _RestRuns

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    creds = {f: None for f in _RestRuns.CRED_FIELDS} | {"host": f"http://127.0.0.1:{server.server_port}"}
    rest = _RestRuns(f"http://127.0.0.1:{server.server_port}", creds)
    try:
        assert not rest.via_requests and not rest.via_mlflow
        assert rest.post("runs/create", {"experiment_id": "1"})["run"]["info"]["run_id"] == "r1"
        assert rest.local.conn.sock.fileno() > 1023
        rest.post("runs/update", {"run_id": "r1", "status": "FINISHED"})   # the same connection
        assert server.connections == 1
        assert server.closed.acquire(timeout=60)       # the server closed it after answering
        rest.post("runs/log-batch", {"run_id": "r1"})   # noticed: a new connection, no error
        assert server.connections == 2
        assert rest.local.conn.sock.fileno() > 1023
    finally:
        conn = getattr(rest.local, "conn", None)
        if conn is not None:
            conn.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)
