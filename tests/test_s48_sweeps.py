"""Review s48 of the sweep runner's path: meta_study/tune/runner.py, preflight.py, submit.py,
state.py and finalize.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meta_study.errors import UserError
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepSpec, grid

REPO = Path(__file__).resolve().parents[1]
SPEC = SweepSpec(name="s48_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


def _unprivileged() -> list[str]:
    """A command prefix under which permission bits apply: none for a user; for root, setpriv
    without the capabilities that bypass them (as tests/test_store_s38.py)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root, unable to drop the capabilities that bypass permission bits")
    return prefix


_CHECK = """
import sys
from meta_study.errors import UserError
from meta_study.tune.preflight import check_tracking_reachable
try:
    check_tracking_reachable(sys.argv[1])
except UserError as e:
    print("REFUSED", e)
else:
    print("PASSED")
"""


def _check_unprivileged(uri: str) -> str:
    r = subprocess.run([*_unprivileged(), sys.executable, "-c", _CHECK, uri], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def read_only_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    yield d
    d.chmod(0o755)
    for f in d.iterdir():
        f.chmod(0o644)


@pytest.mark.parametrize("sub", ["", "new/"])
def test_a_sqlite_store_in_a_directory_the_user_cannot_write_is_refused_up_front(read_only_dir, sub):
    """``/shared/alice/ray`` as --storage-path puts the default database in ``/shared``: MLflow
    retried it for ~100 s ("SQLAlchemy engine could not be created"), then SQLAlchemy's traceback."""
    read_only_dir.chmod(0o555)
    out = _check_unprivileged(f"sqlite:///{read_only_dir}/{sub}mlflow.db")
    assert out.startswith("REFUSED --tracking-uri ") and "is not writable by this user" in out, out
    assert str(read_only_dir) in out


def test_a_sqlite_file_the_user_cannot_write_is_refused_up_front(read_only_dir):
    db = read_only_dir / "mlflow.db"
    db.write_bytes(b"")            # an empty file is a new database
    db.chmod(0o444)
    out = _check_unprivileged(f"sqlite:///{db}")
    assert out.startswith("REFUSED") and f"{db} is not writable by this user" in out, out


def test_a_writable_sqlite_path_still_passes(tmp_path):
    assert _check_unprivileged(f"sqlite:///{tmp_path}/a/b/mlflow.db") == "PASSED"
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    assert _check_unprivileged(f"sqlite:///{db}") == "PASSED"


def test_the_default_tracking_uri_is_not_called_a_flag_the_user_gave(tmp_path, monkeypatch):
    """The default sqlite file beside --storage-path was refused as "--tracking-uri sqlite:///...",
    a flag the user never gave."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(runner.provenance, "code_version", lambda *a, **k: "c1")

    def refuse(uri):
        raise UserError(f"--tracking-uri {uri}: its directory /x is not writable by this user")

    monkeypatch.setattr(runner, "check_tracking_reachable", refuse)
    with pytest.raises(UserError) as e:
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray")))
    assert str(e.value) == (f"the default tracking URI sqlite:///{tmp_path}/mlflow.db (beside --storage-path "
                            f"{tmp_path}/ray): its directory /x is not writable by this user")
    given = f"sqlite:///{tmp_path}/other.db"
    with pytest.raises(UserError, match="^--tracking-uri sqlite:///"):
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray2"),
                                            tracking_uri=given))


class _Answers:
    """An HTTP server on 127.0.0.1 that answers every request with ``status`` and an HTML body (no
    MLflow there)."""

    def __init__(self, status: int) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = b"<!DOCTYPE HTML><html>nope</html>"
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *a) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, said", [
    (404, "not an MLflow tracking server there (HTTP 404 for /api/2.0/mlflow/experiments/get-by-name, no MLflow "
          "answer); is the address right (with its path prefix, if any)?"),
    (401, "the tracking server refuses access (HTTP 401: not authenticated); set MLFLOW_TRACKING_USERNAME and "
          "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"),
])
def test_a_tracking_uri_where_no_mlflow_answers_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, status, said):
    """An HTTP server that is not MLflow (the dashboard's port, a path prefix left out), or one
    whose authentication refuses the request, was "error: API request to endpoint ... failed with
    error code 404 != 200. Response body: '<!DOCTYPE HTML>" and exit 1, as if a server had failed."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN",
              "MLFLOW_WORKSPACE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import meta_study.ray_session as ray_session

    def no_ray(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_session, "start_or_connect", no_ray)
    server = _Answers(status)
    try:
        with pytest.raises(SystemExit) as e:
            runner.sweep_main(SPEC, ["--smoke", "--quiet", "--storage-path", str(tmp_path / "ray"),
                                     "--tracking-uri", server.uri])
    finally:
        server.close()
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1] == f"s48_t: --tracking-uri {server.uri}: {said}", err


@pytest.mark.parametrize("python", ["python", "python3", "/usr/bin/python3.11"])
def test_submit_refuses_a_job_script_that_is_not_in_the_working_dir(tmp_path, monkeypatch, capsys, python):
    """``-- python sweeps/head-wd.py`` (a typo) was uploaded and submitted, and failed on the
    cluster ("can't open file"), in the job's log alone with --no-wait."""
    from meta_study.tune import submit

    sent = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda argv, env=None: sent.append(argv) or 0)
    monkeypatch.setattr(submit, "check_job_api", lambda *a, **k: None)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "head_wd.py").write_text("print('job')\n")
    assert submit.main(["--no-wait", "--", python, "sweeps/head-wd.py", "--smoke"]) == 2 and not sent
    err = capsys.readouterr().err
    assert err == ("submit: the job's command runs sweeps/head-wd.py, which is not in --working-dir . (the job runs in "
                   "its upload, where it would not be found either); check the script's path\n"), err
    # the script that is there, a module, a command of a shell, and an absolute path go on
    for cmd in (["python", "sweeps/head_wd.py"], ["python", "-m", "sweeps.nope"], ["bash", "-c", "python nope.py"],
                ["python", "/opt/sweeps/nope.py"]):
        assert submit.main(["--no-wait", "--", *cmd]) == 0, capsys.readouterr().err
    assert len(sent) == 4


@pytest.mark.parametrize("name", ["zoo 2026-12", "zoo#2", "zoo-café", "zoo-50%", "a%20b"])
def test_a_sweep_name_an_object_store_uri_cannot_hold_is_one_line(tmp_path, monkeypatch, capsys, name):
    """On ``s3://`` storage the name goes into the URIs of the sweep's state and of
    ``Tuner.restore``, which pyarrow parses: a space was its ArrowInvalid traceback ("Cannot parse
    URI"), a '#' cut the path there (the state of ``zoo#2`` in ``zoo``'s directory), a '%' was
    decoded. Percent-encoded, a new sweep ran, but ``--resume`` ran in another directory (Tune
    takes the encoded name as the directory's). Refused before anything is contacted."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke", "--quiet", "--name", name, "--tracking-uri", "http://127.0.0.1:9",
                                 "--storage-path", "s3://bucket/tune?region=us-east-1&endpoint_override=127.0.0.1:9"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "-_.")))
    assert err == (f"s48_t: --name {name!r}: holds {bad!r}, which a sweep's name on an object store "
                   "(s3://bucket/tune) cannot: its state and Tune's are found by URIs made of it; give a name of "
                   "letters, digits and - _ . ~ = , only\n"), err


def test_a_plain_name_on_an_object_store_is_the_directory_tune_makes():
    import pyarrow.fs as pafs

    from meta_study.tune.preflight import check_name_in_uri, experiment_dir
    from meta_study.tune.state import StateDir

    storage = "s3://lab/tune?region=us-east-1&endpoint_override=127.0.0.1:9"   # no request: both given
    check_name_in_uri("zoo-2026.12_v2", storage)
    exp = experiment_dir(storage, "zoo-2026.12_v2")
    assert pafs.FileSystem.from_uri(exp)[1] == "lab/tune/zoo-2026.12_v2"
    assert StateDir(exp).path("sweep.json") == "lab/tune/zoo-2026.12_v2/meta_study/sweep.json"


def test_any_name_goes_on_local_storage():
    runner.check_sweep_name("zoo 2026-12#2 é%")     # a directory name: fine on a local or shared path


@pytest.mark.parametrize("storage, why", [
    ("s3://bucket/my dir", "Cannot parse URI: 's3://bucket/my dir/s48_t-smoke/meta_study' due to syntax error"),
    ("s3a://bucket/tune", "Unrecognized filesystem type in URI: s3a://bucket/tune/s48_t-smoke/meta_study"),
])
def test_a_storage_uri_pyarrow_cannot_use_is_one_line(tmp_path, monkeypatch, capsys, storage, why):
    """Was pyarrow's ArrowInvalid traceback, from reading the sweep record (``s3://`` without a
    bucket was already one line: it failed later, in Tune's own check)."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke", "--quiet", "--tracking-uri", "http://127.0.0.1:9",
                                 "--storage-path", storage])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"s48_t: --storage-path {storage}: not a storage URI Tune can use ({why}"), err
    assert err.endswith("; e.g. s3://BUCKET/PATH, gs://BUCKET/PATH or a directory\n") and err.count("\n") == 1, err


@pytest.mark.parametrize("setting, key", [("us_task_kwargs={'n_trian': 8000}", "us_task_kwargs key 'n_trian'"),
                                          ("ds_task_kwargs={'shots': 5}", "ds_task_kwargs key 'shots'")])
def test_a_task_kwarg_no_task_takes_is_refused_before_ray_starts(tmp_path, monkeypatch, capsys, setting, key):
    """Every trial failed on it ("no task factory takes it"), each retried --max-failures times,
    after Ray had started."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    import meta_study.ray_session as ray_session

    def no_ray(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_session, "start_or_connect", no_ray)
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke", "--quiet", "--storage-path", str(tmp_path / "ray"), "--set", setting])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"s48_t: --set {key}: no task factory takes it (the registered ones take "), err
    assert err.count("\n") == 1 and not (tmp_path / "ray").exists(), err


def test_an_https_tracking_uri_of_a_plain_http_server_is_one_line_at_once(monkeypatch):
    """``https://`` given for an MLflow that serves plain HTTP: the TCP check passed, then MLflow's
    client retried the TLS handshake for ~250 s in silence, and the sweep ended in a line of
    urllib3's ("Max retries exceeded ... SSLError ... WRONG_VERSION_NUMBER"), exit 1."""
    from meta_study.tune.preflight import check_tracking_reachable

    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    server = _Answers(200)
    port = server.uri.rsplit(":", 1)[1]
    try:
        with pytest.raises(UserError) as e:
            check_tracking_reachable(f"https://127.0.0.1:{port}")
    finally:
        server.close()
    assert str(e.value) == (f"--tracking-uri https://127.0.0.1:{port}: the server there does not speak TLS (wrong "
                            f"version number); a plain HTTP server is http://127.0.0.1:{port}")


def test_an_https_tracking_server_with_a_certificate_of_its_own_ca_passes(tmp_path, monkeypatch):
    """The handshake checks that TLS is spoken; the certificate is MLflow's call to verify (with
    MLFLOW_TRACKING_SERVER_CERT_PATH, REQUESTS_CA_BUNDLE...), not refused here."""
    import http.server
    import ssl
    import threading

    from test_tracking import _self_signed

    from meta_study.tune.preflight import check_tracking_reachable

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    cert, key = _self_signed(tmp_path)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        check_tracking_reachable(f"https://127.0.0.1:{srv.server_address[1]}/mlflow")
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_https_port_that_takes_the_connection_and_closes_it_is_said_as_for_http(monkeypatch):
    """A ``kubectl port-forward`` whose pod is gone takes the connection and closes it: said so for
    http:// already; for https:// MLflow's client retried the handshake for minutes."""
    import socket
    import threading

    from meta_study.tune.preflight import check_tracking_reachable

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def close_each() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    uri = f"https://127.0.0.1:{srv.getsockname()[1]}"
    try:
        with pytest.raises(UserError) as e:
            check_tracking_reachable(uri)
    finally:
        srv.close()
    assert str(e.value) == (f"--tracking-uri {uri}: the tracking server took the connection and closed it without "
                            "an answer; is it running, and is the address right?")
