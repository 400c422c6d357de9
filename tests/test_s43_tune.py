"""Defects found in a review of how sweeps are submitted and run on Ray (meta_study/tune/submit.py,
meta_study/tune/runner.py, meta_study/ray_session.py). No Ray cluster: the servers a wrong address
reaches (a GCS, a raylet or client server that is none, an HTTP server) are stand-ins on 127.0.0.1
that answer as the real ones did (measured against a cluster/local-up.sh head, Ray 2.60)."""

from __future__ import annotations

import http.server
import threading
from concurrent import futures

import pytest

from meta_study.tune import submit


@pytest.fixture
def no_ray_env(monkeypatch, tmp_path):
    """No address or token from this shell, a small working dir, and nothing ever submitted."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                 "RAY_JOB_HEADERS", "RAY_USE_TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda argv, env=None: pytest.fail(f"submitted: {argv}"))


def _refusal(capsys, *args: str) -> str:
    """submit's stderr for ``args`` (then ``-- python -c 1``), asserting exit 2 and one line."""
    assert submit.main([*args, "--", "python", "-c", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def grpc_server():
    """``start(gcs=True)``: a gRPC server on 127.0.0.1 that answers the GCS's InternalKVGet as a
    GCS does; ``gcs=False``: one without the GCS's calls (UNIMPLEMENTED, as a raylet or a Ray
    client server answer it). Returns its port."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    class KV(gcs_service_pb2_grpc.InternalKVGcsServiceServicer):
        def InternalKVGet(self, request, context):
            return gcs_service_pb2.InternalKVGetReply(value=b"127.0.0.1:8265")

    servers = []

    def start(gcs: bool) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        if gcs:
            gcs_service_pb2_grpc.add_InternalKVGcsServiceServicer_to_server(KV(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return port

    yield start
    for s in servers:
        s.stop(None)


@pytest.fixture
def http_port():
    """An HTTP/1 server on 127.0.0.1 (what the dashboard's port is to a gRPC client)."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):   # not into the test's captured stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    t.join(5)


# --- submit: addresses that were Ray's traceback after a wait -----------------------------------------

def test_submit_with_no_address_and_no_cluster_here_is_one_line(no_ray_env, monkeypatch, capsys):
    """No ``--address``, RAY_API_SERVER_ADDRESS or RAY_ADDRESS: ``ray job submit`` looks for a
    cluster on this machine, as for ``auto``; none there was its ConnectionError traceback (exit 1).
    (Ray's finder is replaced: this machine may run other clusters.)"""
    import ray._private.services as services

    def none_found(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting the `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", none_found)
    assert _refusal(capsys) == ("submit: no --address (nor RAY_API_SERVER_ADDRESS or RAY_ADDRESS), so auto: Could not "
                                "find any running Ray instance on this machine; give the cluster's address with "
                                "--address (local-up.sh's env.sh exports RAY_API_SERVER_ADDRESS)\n")


def test_submit_with_an_empty_address_is_refused_not_sent_elsewhere(no_ray_env, monkeypatch, capsys):
    """``--address "$HEAD"`` with the variable unset: the job went to RAY_API_SERVER_ADDRESS's
    cluster (here one that would be reachable), without a word."""
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.setattr(submit, "check_job_api", lambda *a, **k: None)     # that cluster "answers"
    for empty in ("", "  "):
        assert _refusal(capsys, "--address", empty).startswith(f"submit: --address {empty!r}: empty; give the job API ")


def test_submit_to_a_ray_client_address_without_a_port_is_one_line(no_ray_env, capsys):
    """``ray://HOST``: Ray's client has no default port (gRPC dialled 443); ``ray job submit``
    retried for 30 s, then printed a traceback ("ray client connection timeout")."""
    assert _refusal(capsys, "--address", "ray://127.0.0.1") == (
        "submit: --address ray://127.0.0.1: no port; give the cluster's client server as ray://host:port "
        "(10001 by default)\n")


def test_submit_to_a_gcs_given_as_a_ray_client_address_is_one_line(no_ray_env, grpc_server, capsys):
    """``ray://HOST:6379`` (the GCS's port with ray://): 43 s of client retries, then a traceback."""
    port = grpc_server(gcs=True)
    assert _refusal(capsys, "--address", f"ray://127.0.0.1:{port}") == (
        f"submit: --address ray://127.0.0.1:{port}: a Ray cluster's GCS answers there, not its client server; give "
        f"the GCS without ray:// (127.0.0.1:{port}), or the client server's port (ray://host:10001 by default)\n")


def test_submit_to_an_http_port_given_as_a_ray_client_address_is_one_line(no_ray_env, http_port, capsys):
    """``ray://HOST:8265`` (the dashboard's port): 30 s of client retries, then a traceback."""
    assert _refusal(capsys, "--address", f"ray://127.0.0.1:{http_port}") == (
        f"submit: --address ray://127.0.0.1:{http_port}: an HTTP server answers there, not a Ray client server; "
        f"for Ray's job API (the dashboard) give http://127.0.0.1:{http_port}\n")


def test_submit_to_a_grpc_port_that_is_no_gcs_is_one_line(no_ray_env, grpc_server, capsys):
    """``HOST:PORT`` of a raylet, or of the client server without ray://: Ray's RpcError traceback."""
    port = grpc_server(gcs=False)
    assert _refusal(capsys, "--address", f"127.0.0.1:{port}") == (
        f"submit: --address 127.0.0.1:{port}: a gRPC server answers there, but not a Ray cluster's GCS (a raylet's "
        f"port? a client server's is given as ray://127.0.0.1:{port}); give the GCS as host:port (6379 by default)\n")


def test_submit_lets_a_gcs_and_a_client_server_through(no_ray_env, grpc_server, monkeypatch, capsys):
    """What Ray can use still reaches ``ray job submit``: a GCS at HOST:PORT, and at ray://HOST:PORT
    a server without the GCS's calls (a Ray client server answers UNIMPLEMENTED)."""
    sent = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda argv, env=None: sent.append(argv) or 0)
    gcs, other = grpc_server(gcs=True), grpc_server(gcs=False)
    for address in (f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{other}"):
        assert submit.main(["--address", address, "--", "python", "-c", "1"]) == 0, capsys.readouterr().err
    assert [argv[argv.index("--address") + 1] for argv in sent] == [f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{other}"]


# --- ray_session: a cluster address where the wrong kind of gRPC server answers ------------------------

def test_joining_a_grpc_port_that_is_no_gcs_is_one_line_at_once(grpc_server, monkeypatch):
    """``--address HOST:PORT`` (or RAY_ADDRESS) of a raylet, or of a Ray client server without
    ray://: ``ray.init`` gave up after ~20 s ("Failed to connect to Ray cluster", under a C++ log
    line), naming neither what answered nor what to give."""
    from meta_study.errors import UserError
    from meta_study.ray_session import check_address

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    port = grpc_server(gcs=False)
    with pytest.raises(UserError) as e:
        check_address(f"127.0.0.1:{port}")
    assert str(e.value) == (f"--address 127.0.0.1:{port}: a gRPC server answers there, but not a Ray cluster's GCS "
                            f"(a raylet's port? a client server's is given as ray://127.0.0.1:{port})")
    # as ray:// it is no client server either (one answers ClusterInfo: tests/test_s49_cluster.py)
    with pytest.raises(UserError, match="a gRPC server answers there, but not a Ray client server"):
        check_address(f"ray://127.0.0.1:{port}")


def test_joining_a_gcs_given_as_a_ray_client_address_is_one_line_at_once(grpc_server, monkeypatch):
    """``ray://HOST:6379`` (a GCS with ray://): ~30 s, then "ray client connection timeout"."""
    from meta_study.errors import UserError
    from meta_study.ray_session import check_address

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    port = grpc_server(gcs=True)
    with pytest.raises(UserError) as e:
        check_address(f"ray://127.0.0.1:{port}", source="RAY_ADDRESS")
    assert str(e.value) == (f"RAY_ADDRESS ray://127.0.0.1:{port}: a Ray cluster's GCS answers there, not its client "
                            f"server: give the GCS without ray:// (127.0.0.1:{port})")
    check_address(f"127.0.0.1:{port}")            # the GCS itself: joined


# --- submit: the upload as Ray 2.60 makes it --------------------------------------------------------------

def test_the_upload_is_walked_without_the_directories_ray_leaves_out_by_default(no_ray_env, tmp_path, monkeypatch,
                                                                                   capsys):
    """Ray 2.60 leaves ``.git``, ``.venv``, ``venv`` and ``__pycache__`` out of every upload
    (``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES`` changes that): a virtualenv in an unignored
    ``venv/`` was counted toward the 100 MiB limit, and the job refused, though Ray never uploads it."""
    sent = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda argv, env=None: sent.append(argv) or 0)
    monkeypatch.setattr(submit, "check_job_api", lambda *a, **k: None)
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    (tmp_path / "job.py").write_text("print('job')\n")
    (tmp_path / "venv").mkdir()
    with open(tmp_path / "venv" / "torch.so", "wb") as f:        # sparse: no disk used
        f.truncate(submit.UPLOAD_MAX_BYTES + 2**20)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / ".env").write_text("not a secret\n")
    assert submit.main(["--", "python", "job.py"]) == 0, capsys.readouterr().err
    assert len(sent) == 1
    # where the override puts them back in, Ray uploads them, and the limit holds as before
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", ".git")
    assert submit.main(["--", "python", "job.py"]) == 2 and len(sent) == 1
    assert "__pycache__/.env, a secrets file by its name" in capsys.readouterr().err


def test_address_auto_checks_the_cluster_the_job_goes_to_not_ray_address(no_ray_env, grpc_server, monkeypatch,
                                                                            capsys):
    """``--address auto`` with env.sh's RAY_ADDRESS set: Ray's finder takes RAY_ADDRESS over
    ``auto``, so that cluster was checked (here: refused, nothing there), while ``ray job submit``,
    which runs without RAY_ADDRESS once ``--address`` is given, went to the cluster found on this
    machine. (Ray's finder is replaced by one that reads the environment as Ray's does.)"""
    import os

    import ray._private.services as services
    from mlflow_server import refused_port

    here = grpc_server(gcs=True)      # the cluster "found on this machine"

    def find(addr, temp_dir=None):
        return os.environ.get("RAY_ADDRESS") or f"127.0.0.1:{here}"

    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", find)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{refused_port()}")
    sent = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda argv, env=None: sent.append(env) or 0)
    assert submit.main(["--address", "auto", "--", "python", "-c", "1"]) == 0, capsys.readouterr().err
    assert "RAY_ADDRESS" not in sent[0] and os.environ["RAY_ADDRESS"]   # the job's; ours is kept
