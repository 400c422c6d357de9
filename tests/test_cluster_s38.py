"""Defects found in a review of cluster/ and meta_study/ray_session.py against docs/cluster.md,
each with the test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from meta_study import ray_session
from meta_study.errors import UserError

# What Ray 2.60's ray.init raises when the cluster refuses the token (measured): the first line
# names no token, the cause chain does.
_REFUSED = ("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
            '  File "python/ray/includes/common.pxi", line 119, in ray._raylet.check_status\n'
            "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing "
            "or incorrect. Ensure that the token for the cluster is available ...")


class _RefusingRay:
    """A ``ray`` module whose ``init`` fails as Ray's does when the cluster refuses the token."""

    @staticmethod
    def init(**kwargs):
        try:
            raise RuntimeError(_REFUSED)
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379") from cause


@pytest.mark.parametrize(("env", "hint"), [
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/tmp/other/ray-auth-token"},
     "; the cluster refused the Ray token of RAY_AUTH_TOKEN_PATH (/tmp/other/ray-auth-token): is it this cluster's?"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "f00d" * 16, "RAY_AUTH_TOKEN_PATH": "/tmp/t"},
     "; the cluster refused the Ray token of RAY_AUTH_TOKEN (it wins over RAY_AUTH_TOKEN_PATH): is it this cluster's?"),
    ({"RAY_AUTH_TOKEN_PATH": "/tmp/t"},   # the path without the mode: Ray sends no token at all
     "; the cluster wants a Ray token, and without RAY_AUTH_MODE=token here Ray sends none: export "
     "RAY_AUTH_MODE=token (the lines of the cluster's env.sh)"),
    ({}, "; no Ray token is set here: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (the lines of the "
         "cluster's env.sh)"),
])
def test_a_refused_ray_token_is_said_in_the_one_line_error(monkeypatch, env, hint):
    """A token of another cluster (or a token path without RAY_AUTH_MODE=token) got "could not join
    the Ray cluster there after 20 s (Failed to connect to Ray cluster at ...)" and no word about
    the token: Ray's first line names none, and the hint looked only at that line."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(ray_session, "check_address", lambda *a, **k: None)   # a GCS answers there
    monkeypatch.setattr(ray_session, "_check_token_file", lambda *a: None)    # a token there it can read
    monkeypatch.setitem(ray_session._own, "started", False)
    with pytest.raises(UserError) as e:
        ray_session._connect(_RefusingRay, "127.0.0.1:6379", {})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--address 127.0.0.1:6379: could not join the Ray cluster there after ")
    assert msg.endswith("(Failed to connect to Ray cluster at 192.0.2.2:6379)" + hint), msg
    assert "f00d" not in msg   # the token itself is never shown


def test_ray_address_local_means_a_ray_of_its_own(monkeypatch, capsys):
    """``RAY_ADDRESS=local`` (Ray's spelling for "start one here") was taken for a cluster: the
    command said "ray: the cluster at local (from $RAY_ADDRESS; --address local starts a Ray of its
    own)" and then ``ray.init()`` started a plain Ray, without the private Ray's token, loopback
    address and watchdog (and with every CPU, whatever ``--workers`` said)."""
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert ray_session.own_ray_requested(None)
    assert ray_session.describe_target(None) == "ray: a Ray of its own on this machine"
    ray_session.check_target(None)
    assert capsys.readouterr().err == ""
    calls = []
    monkeypatch.setattr(ray_session, "_start_own", lambda ray, n, kw: calls.append(("own", n)))
    monkeypatch.setattr(ray_session, "_connect", lambda ray, a, kw: calls.append(("connect", a)))
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    ray_session.start_or_connect(None, num_cpus=1)
    assert calls == [("own", 1)]
    # a named cluster in RAY_ADDRESS is still joined
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not ray_session.own_ray_requested(None) and ray_session.own_ray_requested("local")


SERVER = textwrap.dedent("""
    import sys
    from meta_study.analysis.parallel import init_ray
    ray = init_ray("local", 1)
    print(ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()          # keep Ray up until the test closes stdin
""")
CLIENT = textwrap.dedent("""
    import sys
    from meta_study.errors import UserError
    from meta_study.ray_session import start_or_connect
    try:
        start_or_connect(sys.argv[1], quiet=True)
    except UserError as e:
        print(f"ERROR {e}")   # one string: a Ray log line cannot land inside it
""")


@pytest.mark.slow(60)
def test_a_wrong_ray_token_is_named_against_a_real_cluster(tmp_path):
    """The same against a real Ray (a private one of meta-study's, which takes only its own token):
    Ray's cause chain says InvalidAuthToken, and the one line names the token file that was refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert server.stdout is not None
        gcs = server.stdout.readline().strip()
        assert gcs.startswith("127.0.0.1:"), gcs
        wrong = tmp_path / "other-token"
        wrong.write_text("0" * 64)
        wrong.chmod(0o600)
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=150,
                           env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong),
                                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        assert r.stdout.startswith(f"ERROR --address {gcs}: could not join the Ray cluster there"), r.stdout + r.stderr[-2000:]
        assert r.stdout.rstrip().endswith(f"; the cluster refused the Ray token of RAY_AUTH_TOKEN_PATH ({wrong}): "
                                          "is it this cluster's?"), r.stdout
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)


@pytest.mark.parametrize(("script", "usage"), [
    ("local-up.sh", "cluster/local-up.sh [STATE_DIR]"),
    ("local-add-node.sh", "cluster/local-add-node.sh [STATE_DIR] [NAME]"),
    ("local-down.sh", "cluster/local-down.sh [STATE_DIR]"),
])
def test_the_local_scripts_take_help_and_refuse_other_options(tmp_path, script, usage):
    """``--help`` was taken for a state directory: local-up.sh died in mkdir's "unrecognized option
    '--help/mlflow/artifacts'", local-add-node.sh said "--help/env.sh not found: start the head with
    cluster/local-up.sh --help first", local-down.sh "nothing to stop: -h does not exist"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_"))}
    path = str(REPO / "cluster" / script)
    r = subprocess.run(["bash", path, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert usage in r.stdout and not r.stdout.startswith("#!") and "set -euo" not in r.stdout
    r = subprocess.run(["bash", path, "-x"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"{script[:-3]}: error: unknown option -x (usage: {usage}; --help)\n"
    assert list(tmp_path.iterdir()) == []   # no state directory named after the option


FAKE_PYTHON = """#!/bin/bash
# the head's interpreter with Ray's CLI faked: a head that lists one node, and a node that never joins
case "$1 $2 $3" in
  "-c import ray "*) exit 0 ;;
  "-m ray.scripts.scripts status") printf 'Active:\\n 1 node_abc\\nPending:\\n (no pending nodes)\\n'; exit 0 ;;
  "-m ray.scripts.scripts start") exec sleep 300 ;;
esac
exec {python} "$@"
"""


def test_local_add_node_stops_a_node_that_did_not_join(tmp_path):
    """A node that did not join in META_STUDY_UP_TIMEOUT was left running with its NAME.pid after
    "did not join in N s": it could still join and take tasks, and a rerun said "already running"."""
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    (state / "bin").mkdir()
    fake = state / "bin" / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\nexport RAY_AUTH_MODE=token\n"
                                  "export RAY_AUTH_TOKEN_PATH=/dev/null\n")
    head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             f"--temp-dir={os.path.realpath(state / 'ray')}"])
    try:
        (state / "ray.pid").write_text(f"{head.pid}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_"))}
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-add-node.sh"), str(state), "n2"], capture_output=True,
                           text=True, timeout=120, env={**env, "META_STUDY_UP_TIMEOUT": "2"})
        assert r.returncode == 1 and "error: n2 did not join in 2 s" in r.stderr, r.stderr
        assert not (state / "n2.pid").exists(), "the node that did not join still runs"
        pid = int(r.stderr.split("stopping n2 (pid ")[1].split(")")[0])
        ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
        assert ps.returncode != 0 or ps.stdout.strip().startswith("Z"), ps.stdout
    finally:
        head.kill()
        head.wait()
        if (state / "n2.pid").exists():   # the old script's leftover: the fake node, a `sleep 300` of ours
            subprocess.run(["kill", (state / "n2.pid").read_text().strip()], check=False)


def test_refit_submitter_rides_out_a_response_cut_off_by_an_api_server_restart():
    """A response the API server cut off (it restarted mid-answer: http.client's IncompleteRead,
    not an OSError) ended the waiting pod with a traceback, so the CronJob's Job failed while the
    refit went on; the wait retries API errors (--max-api-errors) precisely for restarts."""
    import importlib.util
    import json
    import socket
    import threading

    spec = importlib.util.spec_from_file_location("submit_refit_s38", REPO / "cluster" / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    done = json.dumps({"metadata": {"name": "r1"},
                       "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}}).encode()
    answers = [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"metadata\": {",
               b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(done), done)]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve():
        for answer in answers:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        api = module.KubeApi(f"http://127.0.0.1:{listener.getsockname()[1]}", "meta-study", None, None)
        final = module.wait(api, "r1", 0.01, 3)
        assert final["status"]["jobStatus"] == "SUCCEEDED"
    finally:
        listener.close()
        t.join(timeout=10)
