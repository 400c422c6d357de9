"""Review s49 of joining a named cluster (meta_study/ray_session.py) and the local cluster scripts:
a Ray token the cluster refuses is said before any work, at once, for a GCS and a client server."""

from __future__ import annotations

import time
from concurrent import futures

import pytest

from meta_study import ray_session
from meta_study.errors import UserError

grpc = pytest.importorskip("grpc")
gcs_pb2 = pytest.importorskip("ray.core.generated.gcs_service_pb2")
gcs_grpc = pytest.importorskip("ray.core.generated.gcs_service_pb2_grpc")
client_pb2 = pytest.importorskip("ray.core.generated.ray_client_pb2")
client_grpc = pytest.importorskip("ray.core.generated.ray_client_pb2_grpc")

GOOD = "a1" * 32


def _authorized(context) -> bool:
    """As a Ray 2.60 cluster with token authentication checks a call (measured: UNAUTHENTICATED,
    "Invalid or missing authentication token", for a missing or wrong one)."""
    return ("authorization", f"Bearer {GOOD}") in tuple(context.invocation_metadata())


class _Gcs(gcs_grpc.InternalKVGcsServiceServicer):
    def InternalKVGet(self, request, context):
        if not _authorized(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing")
        return gcs_pb2.InternalKVGetReply()


class _ClientServer(client_grpc.RayletDriverServicer):
    def ClusterInfo(self, request, context):
        if not _authorized(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid or missing authentication token")
        return client_pb2.ClusterInfoResponse(json="{}")


@pytest.fixture(params=["gcs", "client"])
def cluster(request):
    """A Ray GCS, or a Ray client server (``ray://``), that takes only the token GOOD: the address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    if request.param == "gcs":
        gcs_grpc.add_InternalKVGcsServiceServicer_to_server(_Gcs(), server)
    else:
        client_grpc.add_RayletDriverServicer_to_server(_ClientServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield ("ray://" if request.param == "client" else "") + f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def auth_env(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_USE_TLS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.ray/auth_token of the user's

    def token_file(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        return path
    return token_file


@pytest.mark.parametrize(("env", "hint"), [
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "other-token"},
     "; the cluster refused the Ray token of RAY_AUTH_TOKEN_PATH ({other-token}): is it this cluster's?"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f00d" * 16},
     "; the cluster refused the Ray token of RAY_AUTH_TOKEN: is it this cluster's?"),
    ({"RAY_AUTH_TOKEN_PATH": "this-token"},   # the path without the mode: Ray sends no token at all
     "; the cluster wants a Ray token, and without RAY_AUTH_MODE=token here Ray sends none: export "
     "RAY_AUTH_MODE=token (the lines of the cluster's env.sh)"),
    ({}, "; no Ray token is set here: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (the lines of the "
         "cluster's env.sh)"),
    ({"RAY_AUTH_MODE": "token"}, "; RAY_AUTH_MODE is token but no Ray token is set here: export "
                                 "RAY_AUTH_TOKEN_PATH (the lines of the cluster's env.sh)"),
])
def test_a_refused_ray_token_is_said_before_any_work_and_at_once(cluster, auth_env, monkeypatch, env, hint):
    """A token the cluster refuses passed the check before a command's work (check_target): a refit
    fitted every group, a sweep prepared its trials, then ray.init retried for ~20 s (a GCS) and a
    ``ray://`` address failed after ~30 s as "ray client connection timeout", naming no token at all
    (measured against local-up.sh's cluster, Ray 2.60)."""
    files = {"other-token": auth_env("other-token", "0" * 64), "this-token": auth_env("this-token", GOOD)}
    for k, v in env.items():
        monkeypatch.setenv(k, str(files.get(v, v)))
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        ray_session.check_target(cluster)
    msg = str(e.value)
    assert msg.startswith(f"--address {cluster}: could not join the Ray cluster there (it refused the connection: "
                          "UNAUTHENTICATED)"), msg
    assert msg.endswith(hint.format(**files)), msg
    assert "\n" not in msg and time.monotonic() - t0 < ray_session.CONNECT_TIMEOUT_S, msg


@pytest.mark.parametrize("env", [
    {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "this-token"},
    {"RAY_AUTH_MODE": "TOKEN", "RAY_AUTH_TOKEN": f"  {GOOD}\n"},     # as Ray reads them: case, whitespace
    {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "padded-token"},
    {"RAY_AUTH_MODE": "token", "HOME": "home"},                     # Ray's default file ~/.ray/auth_token
])
def test_the_clusters_own_token_passes_the_check(cluster, auth_env, monkeypatch, tmp_path, env):
    """The token Ray will send is the one checked: a right one is never refused up front."""
    files = {"this-token": auth_env("this-token", GOOD), "padded-token": auth_env("padded-token", f"\n {GOOD} \n")}
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    auth_env("home/.ray/auth_token", GOOD + "\n")
    files["home"] = tmp_path / "home"
    for k, v in env.items():
        monkeypatch.setenv(k, str(files.get(v, v)))
    ray_session.check_target(cluster)


def test_a_token_file_that_cannot_be_read_is_still_said_as_such(cluster, auth_env, monkeypatch, tmp_path):
    """Where the token Ray will send cannot be told (a deleted state directory's token file), the
    check says that, not "refused"."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "gone" / "ray-auth-token"))
    with pytest.raises(UserError, match=r"no Ray token can be read there \(no such file or directory\)"):
        ray_session.check_target(cluster)


@pytest.mark.parametrize("script", ["local-up.sh", "local-add-node.sh", "local-down.sh"])
def test_a_script_that_waits_for_another_on_its_state_directory_says_so_first(tmp_path, script):
    """A second local-up (or local-add-node, local-down) beside a local-up that is starting waited on
    the state directory's lock without a word (~30 s, up to 5 min), then said "already running"."""
    import fcntl
    import os
    import subprocess
    import sys

    from conftest import REPO

    state = tmp_path / "st"
    state.mkdir()
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\n")   # what local-add-node reads first
    (state / "ray-auth-token").write_text("0" * 64)
    (state / "ray-auth-token").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "META_STUDY_LOCAL_DIR"}
    env.update(PYTHON=sys.executable, META_STUDY_LOCK_WAIT="1")
    with open(state / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = subprocess.run(["bash", str(REPO / "cluster" / script), str(state)], env=env, capture_output=True,
                           text=True, timeout=120)
    name = script.removesuffix(".sh")
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and lines[-2:] == [
        f"{name}: waiting for another local-up, local-add-node or local-down on {state} (up to 1 s)",
        f"{name}: another local-up, local-add-node or local-down holds {state}/.lock (waited 1 s)"], r.stderr


def test_a_second_local_up_with_another_python_leaves_the_running_clusters_python(tmp_path):
    """``local-up.sh`` run again beside a running setup with another ``PYTHON`` (another venv's) said
    "already running", but had rewritten STATE_DIR/bin/python first: `python` in the running
    cluster's jobs, and the interpreter local-add-node.sh runs, became another Ray's."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    (state / "mlflow").mkdir()
    (state / "bin").mkdir()
    for name in ("python", "python3"):
        (state / "bin" / name).write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\n")
    other = tmp_path / "other-venv" / "python3"     # another interpreter (here: the same one, by another path)
    other.parent.mkdir()
    other.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    other.chmod(0o755)
    sleeper = "import sys, time; time.sleep(300)"
    # stand-ins for a running head and MLflow: their command lines name the state as local-up's do
    procs = [subprocess.Popen([sys.executable, "-c", sleeper, f"--temp-dir={state / 'ray'}"]),
             subprocess.Popen([sys.executable, "-c", sleeper, f"{state / 'mlflow'}/mlflow.db"])]
    try:
        (state / "ray.pid").write_text(f"{procs[0].pid}\n")
        (state / "mlflow.pid").write_text(f"{procs[1].pid}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "META_STUDY_LOCAL_DIR"}
        env["PYTHON"] = str(other)
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], env=env, capture_output=True,
                           text=True, timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert r.returncode == 0 and "already running" in r.stderr and r.stdout == "export RAY_ADDRESS=127.0.0.1:9\n", \
        r.stderr
    for name in ("python", "python3"):
        assert (state / "bin" / name).read_text() == f'#!/bin/sh\nexec {sys.executable} "$@"\n'


def test_a_client_address_at_a_grpc_server_that_is_no_client_server_is_one_line_at_once(auth_env):
    """``ray://`` at a gRPC server that is neither a GCS nor a client server (a raylet's or an agent's
    port): ray.init retried it for ~30 s, then said only "ray client connection timeout"."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))   # no services: every call UNIMPLEMENTED
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(UserError) as e:
            ray_session.check_target(f"ray://127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert str(e.value) == (f"--address ray://127.0.0.1:{port}: a gRPC server answers there, but not a Ray client "
                            "server (a raylet's port? the client server's is 10001 by default)")


@pytest.mark.slow(45)
def test_local_up_comes_up_behind_a_proxy_and_its_trials_reach_mlflow_directly(tmp_path):
    """With ``http_proxy`` set and no ``no_proxy`` naming 127.0.0.1 (a proxy that does not answer,
    here), local-up's MLflow check asked the proxy: "not healthy after 180 s", and everything stopped
    again. Trials (the raylet's environment) and shells reading env.sh sent MLflow's requests there too."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO

    state = tmp_path / "st"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_") and k.lower() not in ("no_proxy", "meta_study_local_dir")}
    env.update(PYTHON=sys.executable, http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               META_STUDY_UP_TIMEOUT="120", META_STUDY_RAY_START_ARGS="--num-cpus=1")
    up = [str(REPO / "cluster" / "local-up.sh"), str(state)]
    down = [str(REPO / "cluster" / "local-down.sh"), str(state)]
    try:
        r = subprocess.run(["bash", *up], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        leader = int((state / "ray.pid").read_text())
        raylets = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_session(p, leader)
                   and _comm(p) == "raylet"]
        assert raylets, "no raylet in the head's session"
        environ = dict(e.split("=", 1) for e in (raylets[0] / "environ").read_bytes().decode().split("\0") if "=" in e)
        assert environ["no_proxy"].split(",")[0] == "127.0.0.1", environ.get("no_proxy")
        # a shell that reads env.sh reaches MLflow at its address, the proxy still set
        check = ("import os, urllib.request; "
                 "urllib.request.urlopen(os.environ['MLFLOW_TRACKING_URI'] + '/health', timeout=10).read()")
        got = subprocess.run(["bash", "-c", f'. "{state}/env.sh" && "{sys.executable}" -c "{check}"'], env=env,
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr[-2000:]
    finally:
        subprocess.run(["bash", *down], env=env, capture_output=True, text=True, timeout=180)


def _in_session(proc, sid: int) -> bool:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid
    except (OSError, IndexError, ValueError):
        return False


def _comm(proc) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.slow(30)
def test_local_up_says_which_service_was_not_healthy(tmp_path):
    """"not healthy after N s (logs in STATE_DIR)" named neither service: with MLflow's check the one
    that failed (a proxy, above), users read Ray's logs first."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    state = tmp_path / "st"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "META_STUDY_LOCAL_DIR"}
    env.update(PYTHON=sys.executable, META_STUDY_UP_TIMEOUT="1", META_STUDY_RAY_START_ARGS="--num-cpus=1")
    r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], env=env, capture_output=True,
                       text=True, timeout=300)
    said = [line for line in r.stderr.splitlines() if "not healthy after" in line]
    assert r.returncode == 1 and len(said) == 1, r.stderr[-3000:]
    # MLflow is asked first in each round, and creates its database for seconds: never up within 1 s
    assert said[0].startswith("local-up: error: not healthy after 1 s: ") and \
        "MLflow (its REST API does not answer at http://127.0.0.1:" in said[0], said
    assert not (state / "ray.pid").exists() and not (state / "mlflow.pid").exists()   # stopped again
