"""The driver-side MLflow writer on its own: merging, spool on an unreachable server, replay."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune.state import StateDir
from meta_study.tune.tracking import MlflowSweepCallback, Op, plan_ops, flatten, parent_run


class Trial:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.checkpoint = trial_id, config, None

    def __str__(self) -> str:
        return f"t_{self.trial_id}"


def test_plan_merges_a_trials_operations():
    ops = [Op("run", "t", {"config": {"lr": 0.1, "head_lr": None, "cfg": {"a": 1}}, "name": "x"}),
           Op("metrics", "t", {"metrics": {"us/u/top1": 0.5}, "step": 1, "time": 5}),
           Op("tag", "t", {"key": "k", "value": "v"}),
           Op("artifacts", "t", {"dir": "/x"}),
           Op("metrics", "t", {"metrics": {"final": 1.0}, "step": 2, "time": 6}),
           Op("end", "t", {"status": "FINISHED"})]
    steps = plan_ops(ops)
    assert [k for k, _ in steps] == ["batch", "artifacts", "batch", "end"]
    assert steps[0][1]["params"] == {"lr": "0.1", "cfg.a": "1"}          # None values are not params
    assert steps[0][1]["tags"] == {"k": "v"} and steps[0][1]["metrics"] == [("us/u/top1", 0.5, 5, 1)]


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_unreachable_server_spools_then_replays(mlflow_server, tmp_path):
    exp = f"spool-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={"a": 1}, tags={})
    # the same server, through a port where nothing listens: every call fails
    dead = MlflowSweepCallback("http://127.0.0.1:9", exp_id, parent, str(state), tags={"sweep": "s"})
    dead.setup()
    t = Trial("abc", {"lr": 0.001, "model_name": "m"})
    dead.on_trial_start(0, [], t)
    dead.on_trial_result(0, [], t, {"us/up/top1": 0.25, "resolved": {"head_lr": 0.001}, "training_iteration": 1})
    dead.on_trial_complete(0, [], t)
    assert dead.flush(timeout_s=2) is False and dead.errors > 0
    spooled = [json.loads(x) for _, lines in StateDir(str(state)).spooled() for x in lines]
    assert spooled and all(x["trial"] == "abc" for x in spooled)
    # the next sweep process (--resume) replays the spool against the reachable server, and drops
    # the spool once everything went out
    live = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, str(state), tags={"sweep": "s"})
    live.setup()
    assert live.flush(timeout_s=60) is True and StateDir(str(state)).spooled() == []
    client = MlflowClient(mlflow_server.uri)
    runs = [r for r in client.search_runs([exp_id]) if r.data.tags.get("trial_id") == "abc"]
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.data.metrics["us/up/top1"] == 0.25
    assert r.data.params["lr"] == "0.001" and r.data.params["head_lr"] == "0.001"
    assert r.data.tags["mlflow.parentRunId"] == parent and r.data.tags["sweep"] == "s"


def test_restarted_trial_reuses_its_run_and_never_relogs_params(mlflow_server, tmp_path):
    exp = f"reuse-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={}, tags={})
    t = Trial("t1", {"lr": 0.5})
    for _ in range(2):   # a driver, then a resumed driver (new callback, same state dir)
        cb = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, str(state))
        cb.setup()
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, {"us/up/top1": 0.5, "resolved": {"lr": 0.5, "wd": 0.1}})
        cb.on_trial_complete(0, [], t)
        assert cb.flush(timeout_s=60)
    runs = [r for r in MlflowClient(mlflow_server.uri).search_runs([exp_id]) if r.data.tags.get("trial_id") == "t1"]
    assert len(runs) == 1 and runs[0].data.params == {"lr": "0.5", "wd": "0.1"}


def test_writer_outlives_a_killed_driver_and_beats_until_done(mlflow_server, tmp_path):
    """The driver dies with operations queued: its writer process sends them, then exits and
    removes its heartbeat (which a resumed sweep's writer waits for)."""
    import subprocess
    import sys

    from meta_study.tune.state import WRITER

    exp = f"orphan-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={}, tags={})
    driver = f"""
import os, time
from meta_study.tune.writer import SweepTarget, WriterProcess, Op
w = WriterProcess(SweepTarget({mlflow_server.uri!r}, {exp_id!r}, {parent!r}, {str(state)!r}))
w.put(Op("run", "dead1", {{"name": "t_dead1", "config": {{"lr": 0.1}}}}))
w.put(Op("metrics", "dead1", {{"metrics": {{"final": 1.0}}, "step": 1, "time": 1}}))
w.put(Op("end", "dead1", {{"status": "FINISHED"}}))
while w._pipe.backlog:   # the feeder thread has handed the lines to the pipe (no fixed sleep: load)
    time.sleep(0.05)
os._exit(0)          # killed: no flush, no close
"""
    subprocess.run([sys.executable, "-c", driver], check=True, timeout=120)
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 90
    runs: list = []
    while time.monotonic() < deadline:
        runs = [r for r in client.search_runs([exp_id]) if r.data.tags.get("trial_id") == "dead1"]
        if runs and runs[0].info.status == "FINISHED":
            break
        time.sleep(0.5)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.metrics["final"] == 1.0
    assert StateDir(str(state)).runs() == {"dead1": runs[0].info.run_id}     # the map is in the storage
    while StateDir(str(state)).read_json(WRITER) is not None:   # gone once the orphaned writer is done
        assert time.monotonic() < deadline, "the orphaned writer never stopped beating"
        time.sleep(0.2)


def test_a_new_writer_waits_while_the_old_one_beats(tmp_path):
    """The heartbeat that replaces a file lock (object stores have none): a new writer waits while
    an old writer's beat advances, goes on once it stops (the writer died), and not at all when
    there is none."""
    import threading

    from meta_study.tune.state import Heartbeat

    st = StateDir(str(tmp_path / "exp"))
    assert Heartbeat(st).wait_for_previous() == "none"
    old = Heartbeat(st, every_s=0.2)
    old.start()
    threading.Timer(1.5, old.stop).start()          # the old writer finishes its queue after 1.5 s
    t0 = time.monotonic()
    assert Heartbeat(st, every_s=0.2).wait_for_previous(max_wait_s=60) == "finished"
    assert time.monotonic() - t0 >= 1.0
    dead = Heartbeat(st, every_s=0.2)
    dead._beat(7)                                    # a writer killed mid-queue: its file stays, frozen
    assert Heartbeat(st, every_s=0.2).wait_for_previous(max_wait_s=60) == "stale"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), made with ``cryptography``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


def test_rest_transport_tls_auth_and_connections_the_server_closed(tmp_path, monkeypatch):
    """The writer's own HTTP client: TLS verified against MLflow's CA setting (or not verified when
    asked), the credentials' header, a fresh connection when the server has dropped an idle
    keep-alive one, and requests' proxy handling when a proxy applies."""
    import http.server
    import ssl
    import threading

    from meta_study.tune._rest import _RestRuns

    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers.get("Authorization")))
            out = json.dumps({"echo": json.loads(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            self.wfile.flush()
            self.close_connection = True   # ...yet drop it right after, without saying so

        def log_message(self, *a: object) -> None:
            pass

    cert, key = _self_signed(tmp_path)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    host = f"https://127.0.0.1:{srv.server_address[1]}"
    creds = dict.fromkeys(_RestRuns.CRED_FIELDS)
    try:
        monkeypatch.delenv("HTTPS_PROXY", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        rest = _RestRuns(host, {**creds, "host": host, "username": "ada", "password": "pw",
                                "server_cert_path": str(cert)})
        assert not rest.via_requests
        for i in range(3):   # the 2nd and 3rd go out on a new connection: the server closed the old one
            assert rest.post("runs/create", {"i": i, "x": 1.5}) == {"echo": {"i": i, "x": 1.5}}
            time.sleep(0.2)
        assert seen[0] == ("/api/2.0/mlflow/runs/create", "Basic YWRhOnB3")   # base64("ada:pw")
        with pytest.raises(ssl.SSLCertVerificationError):   # not our CA: refused
            _RestRuns(host, {**creds, "host": host}).post("runs/create", {})
        insecure = _RestRuns(host, {**creds, "host": host, "token": "tok", "ignore_tls_verification": True})
        assert insecure.post("runs/update", {"a": 1}) == {"echo": {"a": 1}}
        assert seen[-1] == ("/api/2.0/mlflow/runs/update", "Bearer tok")
    finally:
        srv.shutdown()
        srv.server_close()
    # a proxy from the environment: requests does the sending (it knows proxies); NO_PROXY wins
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert _RestRuns(host, {**creds, "host": host}).via_requests
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not _RestRuns(host, {**creds, "host": host}).via_requests


def test_writer_logs_to_a_server_with_basic_auth(tmp_path, monkeypatch):
    from mlflow_server import MlflowServer

    from meta_study.tune.writer import MlflowWriter, SweepTarget

    with MlflowServer(tmp_path / "auth-server", auth=True) as srv:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", srv.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", srv.password)
        state = tmp_path / "state"
        state.mkdir()
        exp_id, parent = parent_run(srv.uri, "secure-sweep", "s", str(state), params={}, tags={})
        w = MlflowWriter(SweepTarget(srv.uri, exp_id, parent, str(state)))
        w.setup()
        w.put(Op("run", "a1", {"name": "t_a1", "config": {"lr": 0.1}}))
        w.put(Op("metrics", "a1", {"metrics": {"final": 1.0}, "step": 1, "time": 1}))
        w.put(Op("end", "a1", {"status": "FINISHED"}))
        assert w.flush(timeout_s=60) and w.errors == 0
        runs = [r for r in MlflowClient(srv.uri).search_runs([exp_id]) if r.data.tags.get("trial_id") == "a1"]
        assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.params == {"lr": "0.1"}
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        w2 = MlflowWriter(SweepTarget(srv.uri, exp_id, parent, str(state / "x")))
        (state / "x").mkdir()
        w2.setup()
        w2.put(Op("run", "a2", {"name": "t_a2", "config": {}}))
        assert w2.flush(timeout_s=3) is False and w2.errors > 0   # 401: retried, then spooled


def test_pipe_to_the_writer_never_blocks_and_keeps_order(tmp_path):
    """A child that is not reading: lines beyond the pipe's 64 KiB wait in the backlog (send
    returns at once), then reach the child in order once it reads; close() ends its stdin."""
    import subprocess
    import sys

    from meta_study.tune.writer import _Pipe

    out = tmp_path / "got"
    go = tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        f"open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())\n")], stdin=subprocess.PIPE)
    assert child.stdin is not None
    pipe = _Pipe(child.stdin)
    lines = [f"{i:06d} " + "x" * 93 for i in range(5000)]     # 500 kB
    for line in lines:
        pipe.send(line)
    with pipe.cond:
        assert pipe.backlog, "the pipe should be full while the child sleeps"
    go.touch()
    pipe.close()
    assert child.wait(timeout=60) == 0
    assert out.read_text().splitlines() == lines


def test_rest_transport_follows_a_redirecting_server_through_requests(monkeypatch):
    import http.server
    import threading

    from meta_study.tune._rest import _RestRuns

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/old/"):   # e.g. a proxy that moved the API: 307 keeps the POST
                self.send_response(307)
                self.send_header("Location", self.path[len("/old"):])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            out = json.dumps({"path": self.path, "echo": json.loads(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a: object) -> None:
            pass

    for var in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{srv.server_address[1]}/old"
        rest = _RestRuns(host, {**dict.fromkeys(_RestRuns.CRED_FIELDS), "host": host})
        assert not rest.via_requests
        for i in range(2):
            assert rest.post("runs/update", {"i": i}) == {"path": "/api/2.0/mlflow/runs/update", "echo": {"i": i}}
            assert rest.via_requests
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_sweep_refuses_credentials_in_its_tracking_uri(how, tmp_path):
    # the secret would reach the writer child's argv (ps), mlflow_parent.json and the summary
    import subprocess
    import sys

    from conftest import REPO

    uri = "http://alice:s3cret@127.0.0.1:9"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke", "--storage-path", str(tmp_path)]
    if how == "flag":
        args += ["--tracking-uri", uri]
    else:
        env["MLFLOW_TRACKING_URI"] = uri
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "credentials in the tracking URI are refused" in r.stderr, r.stderr[-2000:]
    assert "s3cret" not in r.stdout + r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("mlflow_parent.json"))
