"""Defects found in a review of the writer's client side (stop 42): meta_study/tune/_child.py,
writer.py, _rest.py, provenance.py and meta_study/mlflow_client.py. MLflow is a real store (a
sqlite file) or a real ``mlflow server``; faults come from tiny HTTP servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune.writer import Op, SweepTarget, WriterProcess


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


@pytest.mark.slow(10)
def test_operations_sent_after_a_sigterm_reach_mlflow(store):
    """SIGTERM to the sweep's process group (systemd's stop, scancel, ``kill -TERM -PGID``) reaches
    the driver and its writer child at once. The driver unwinds and sends its last operations
    (every open run tagged interrupted and ended KILLED), then flushes; the child, still sending
    what it had, had left its read loop: those lines were never read, the run stayed RUNNING, and
    the driver took the child's exit line for its flush's answer, ``ok``: nothing was said. The
    child now reads on (within its TERM_FLUSH_S) and answers the flush."""
    w = WriterProcess(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {"sweep": "s"}, 60.0))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}}))
    assert w.flush(60.0) is True           # the child serves its loop (its SIGTERM handler is set)
    for i in range(50):                    # work in hand when the signal comes (~1-3 s on sqlite)
        w.put(Op("run", f"b{i}", {"name": f"s_b{i}", "config": {"lr": i}}))
    time.sleep(0.2)
    os.kill(w._proc.pid, signal.SIGTERM)
    time.sleep(0.3)                        # the child takes the signal before the driver's last lines
    w.put(Op("tag", "t1", {"key": "meta_study.status", "value": "interrupted"}))
    w.put(Op("end", "t1", {"status": "KILLED"}))
    ok = w.close(60.0)
    [run] = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert (ok, run.info.status, run.data.tags.get("meta_study.status")) == (True, "KILLED", "interrupted")


class _Quiet(http.server.ThreadingHTTPServer):
    """A test server that says nothing of a client that went away (a writer child that exited, a
    TLS client that refused the certificate): socketserver printed "Exception occurred during
    processing of request" to sys.stderr from a handler thread that outlived its test, into the
    stderr another test of the worker was capturing (its one-error-line check failed). Its
    handler threads are joined as it closes."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _Held(_Quiet):
    """A tracking server that holds every call until ``release`` is set, then answers 503."""

    def __init__(self) -> None:
        self.got, self.release = threading.Event(), threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.got.set()
                server.release.wait(120)
                body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.slow(16)
def test_a_flush_the_child_exited_before_reading_is_unanswered(tmp_path):
    """The driver's flush read the child's last line (``final``: written as it exits) as its own
    answer when the child had stopped reading first (a SIGTERM, its TERM_FLUSH_S up, a call still
    in flight): the operations sent meanwhile were never read, yet the driver went on as for an
    answered flush and said what was left is spooled. Now such a flush is unanswered (the driver
    says operations may be missing)."""
    from meta_study.tune._child import TERM_FLUSH_S

    srv = _Held()
    try:
        uri = f"http://127.0.0.1:{srv.server_address[1]}"
        w = WriterProcess(SweepTarget(uri, "1", "p", str(tmp_path / "exp"), {}, 60.0))
        w.put(Op("metrics", "t1", {"metrics": {"a": 1.0}, "step": 1, "time": 1}))
        assert srv.got.wait(120), "the writer never made its call"
        os.kill(w._proc.pid, signal.SIGTERM)
        time.sleep(TERM_FLUSH_S + 3)       # the child stopped reading; its call is still held
        assert w._proc.poll() is None
        w.put(Op("tag", "t1", {"key": "k", "value": "never read"}))
        out: list[bool] = []
        t = threading.Thread(target=lambda: out.append(w.flush(5.0)))
        t.start()
        time.sleep(0.3)
        srv.release.set()                  # the held call fails: the child spools and exits
        t.join(120)
        assert out == [False] and w.unanswered is True
        w.close(5.0)
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
    spool = tmp_path / "exp" / "meta_study" / "spool"
    spooled = [json.loads(x) for f in sorted(spool.iterdir()) for x in f.read_text().splitlines()]
    assert spooled and "never read" not in json.dumps(spooled), spooled   # never read: not spooled either


def _tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the certificate is its own CA)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _serve(handler_post, tls: tuple[Path, Path] | None = None) -> "_Quiet":
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, body = handler_post(self.path)
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = _Quiet(("127.0.0.1", 0), Handler)
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("setting", ["insecure", "server_cert"])
def test_the_writers_tls_setting_wins_over_requests_ca_bundle(tmp_path, monkeypatch, setting):
    """On the writer's ``requests`` path (a proxy, or a server that redirected), MLflow's TLS
    settings lost to REQUESTS_CA_BUNDLE: requests lets that variable override a session's own
    ``verify``, and the writer set it on the session. MLFLOW_TRACKING_INSECURE_TLS or
    MLFLOW_TRACKING_SERVER_CERT_PATH was ignored, every call failed verification and was retried
    until the flush spooled it, while the driver's MlflowClient (which passes ``verify`` per
    request, as now the writer does) worked."""
    import certifi

    from meta_study.tune._rest import _RestRuns

    cert, key = _tls_pair(tmp_path)
    https = _serve(lambda path: (200, {"Content-Type": "application/json"}, b"{}"), tls=(cert, key))
    target = f"https://127.0.0.1:{https.server_address[1]}"
    redirect = _serve(lambda path: (307, {"Location": target + path}, b""))
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())    # a lab's bundle, without this server's CA
        host = f"http://127.0.0.1:{redirect.server_address[1]}"
        creds = {f: None for f in _RestRuns.CRED_FIELDS}
        creds.update(host=host, ignore_tls_verification=setting == "insecure",
                     server_cert_path=str(cert) if setting == "server_cert" else None)
        rest = _RestRuns(host, creds)
        assert rest.post("runs/update", {"run_id": "r", "status": "FINISHED", "end_time": 1}) == {}
        assert rest.via_requests       # the redirect moved it to the requests path
    finally:
        for srv in (https, redirect):
            srv.shutdown()
            srv.server_close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_writer_trusts_the_cas_mlflows_client_trusts(tmp_path, monkeypatch):
    """With no CA bundle set, MLflow's client (requests) verifies against certifi's bundle, and the
    writer's http.client path against OpenSSL's default paths (the system's CAs): two sets. A
    cluster's old system bundle, without a root certifi has, failed every call of the writer while
    the driver's client created the parent run. Shown the other way round with SSL_CERT_FILE (read
    by OpenSSL's default paths only): the writer took a server MLflow's client refuses."""
    import requests

    from meta_study.tune._rest import _RestRuns

    cert, key = _tls_pair(tmp_path)
    https = _serve(lambda path: (200, {"Content-Type": "application/json"}, b"{}"), tls=(cert, key))
    try:
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        host = f"https://127.0.0.1:{https.server_address[1]}"
        with pytest.raises(requests.exceptions.SSLError):     # MLflow's transport
            requests.post(host + "/api/2.0/mlflow/runs/update", data=b"{}", timeout=30)
        creds = {f: None for f in _RestRuns.CRED_FIELDS}
        creds.update(host=host, ignore_tls_verification=False)
        rest = _RestRuns(host, creds)
        assert not rest.via_requests
        with pytest.raises(ssl.SSLError):
            rest.post("runs/update", {"run_id": "r", "status": "FINISHED", "end_time": 1})
    finally:
        https.shutdown()
        https.server_close()


def test_provenance_never_writes_the_users_git_index(tmp_path):
    """``git status`` (the dirty check at every sweep start and submit) refreshed the checkout's index
    and wrote it back under ``.git/index.lock``: a ``git commit`` the user ran at that moment failed
    ("Unable to create '.git/index.lock': File exists"). Git's optional locks are off now: the
    index is only read."""
    from meta_study.tune.provenance import checkout_sha

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "f.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "f.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=repo, check=True)
    index = repo / ".git" / "index"
    os.utime(index, (1_000_000_000, 1_000_000_000))
    os.utime(repo / "f.py", (1_000_000_100, 1_000_000_100))   # same content, other stat: git refreshes the entry
    before = (index.read_bytes(), index.stat().st_mtime_ns)
    sha = checkout_sha(repo)
    assert len(sha) == 40 and not sha.endswith(("-dirty", "-unknown-state")), sha
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
