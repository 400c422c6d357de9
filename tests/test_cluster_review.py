"""Defects found in a review of the cluster tooling (cluster/, meta_study/tune/submit.py,
provenance.py), each with the test that failed before its fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow_server import refused_port

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True, timeout=30)


def test_submit_git_sha_is_dirty_with_an_untracked_file_the_job_uploads(tmp_path):
    """``ray job submit --working-dir`` uploads untracked files too (all but .gitignore's), and a
    new sweep script, not yet added, ran under a commit recorded as clean."""
    from meta_study.tune.submit import submit_git_sha

    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("out/\n")
    _git(tmp_path, "add", ".gitignore")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert submit_git_sha(str(tmp_path)) == head
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "log.txt").write_text("ignored, not uploaded\n")
    assert submit_git_sha(str(tmp_path)) == head
    (tmp_path / "new_sweep.py").write_text("print('not in the commit')\n")
    assert submit_git_sha(str(tmp_path)) == head + "-dirty"


def test_a_sweep_run_from_an_edited_checkout_records_a_dirty_commit(tmp_path, monkeypatch):
    """docs/tracking.md: ``git_sha`` is ``-dirty`` with uncommitted changes. A sweep run from a
    checkout (no submit wrapper) recorded the bare commit, edited or not."""
    from meta_study.tune import provenance

    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    _git(tmp_path, "init", "-q")
    (tmp_path / "sweep.py").write_text("print(1)\n")
    _git(tmp_path, "add", "sweep.py")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_sha(tmp_path) == head
    (tmp_path / "sweep.py").write_text("print(2)\n")
    assert provenance.git_sha(tmp_path) == head + "-dirty"
    monkeypatch.setenv(provenance.GIT_SHA_ENV, "abc123")     # the submitting machine's word wins
    assert provenance.git_sha(tmp_path) == "abc123"


def test_local_add_node_runs_the_clusters_python_not_the_callers(tmp_path):
    """With no venv active (and PYTHON unset), local-add-node.sh ran ``python3`` from the caller's
    PATH: one without Ray failed ``ray status`` until the timeout (120 s) and was reported as "the
    head reports no nodes". The cluster's interpreter is STATE_DIR/bin/python (local-up.sh's)."""
    state = tmp_path / "state dir"  # a space, as in a clone under "~/My Projects"
    (state / "bin").mkdir(parents=True)
    (state / "ray").mkdir()
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\nexport RAY_AUTH_MODE=token\n")
    called = tmp_path / "called"
    # the cluster's interpreter, as local-up.sh writes it; this one only says it was asked and fails
    stub = state / "bin" / "python"
    stub.write_text(f"#!/bin/sh\necho \"$@\" >> '{called}'\nexit 1\n")
    stub.chmod(0o755)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "RAY_ADDRESS")}
    env.update(PATH=path, META_STUDY_UP_TIMEOUT="3")
    r = subprocess.run(["bash", str(CLUSTER / "local-add-node.sh"), str(state)], env=env, capture_output=True,
                       text=True, timeout=60)
    assert called.exists(), r.stderr  # the cluster's python was the one asked
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"{stub} cannot import ray" in r.stderr, r.stderr
    assert not (state / "node2.pid").exists()


class _NotRay(BaseHTTPRequestHandler):
    """Another server where the job API should be (MLflow's port given for the dashboard's)."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def _submit(*args: str, timeout_s: float = 2.0) -> subprocess.CompletedProcess:
    code = ("import sys, meta_study.tune.submit as s\n"
            f"s.JOB_API_TIMEOUT_S = {timeout_s}\n"
            "sys.exit(s.main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_submit_refuses_a_job_api_address_that_is_not_one_in_one_line(tmp_path):
    """A closed port, a port that never answers and another server each gave ``ray job submit``'s
    traceback (exit 1), the silent one after the TCP timeout (minutes)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))          # bound, not listening: connection refused
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                       # accepts the handshake, never answers
    other = ThreadingHTTPServer(("127.0.0.1", 0), _NotRay)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        for sock, why in ((closed, "cannot reach Ray's job API ("), (silent, "cannot reach Ray's job API (no answer "
                          "in time)"), (other.socket, "not Ray's job API (HTTP 404")):
            address = f"http://127.0.0.1:{sock.getsockname()[1]}"
            r = _submit("--address", address, "--no-wait", "--", "python", "-c", "1")
            assert r.returncode == 2, r.stderr[-2000:]
            assert r.stderr.count("\n") == 1 and f"submit: --address {address}: {why}" in r.stderr, r.stderr
    finally:
        other.shutdown()
        closed.close()
        silent.close()


def test_submit_refuses_a_working_dir_that_is_not_a_directory(tmp_path):
    # was "submit: git unknown ..." and then Ray's traceback from packaging the upload
    missing = tmp_path / "no such dir"
    r = _submit("--working-dir", str(missing), "--address", "http://127.0.0.1:9", "--", "python", "-c", "1")
    assert r.returncode == 2 and r.stderr == f"submit: --working-dir {missing}: not a directory (it is uploaded " \
                                             "as the job's working directory)\n", r.stderr


def test_render_says_which_input_is_missing_in_one_line(tmp_path):
    # `${1:?...}` and `${BUCKET:?...}`: exit 1, and bash's "render.sh: line 14: 1: " before the words
    env = {k: v for k, v in os.environ.items() if k not in ("BUCKET", "REGISTRY")}
    for args, extra, says in (([], {"BUCKET": "b-1", "REGISTRY": "r"}, "render: no OUT_DIR given;"),
                              ([str(tmp_path / "out")], {"REGISTRY": "ghcr.io/lab"}, "render: set BUCKET to"),
                              ([str(tmp_path / "out")], {"BUCKET": "lab-bucket"}, "render: set REGISTRY to")):
        r = subprocess.run(["bash", str(CLUSTER / "render.sh"), *args], env={**env, **extra}, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.startswith(says) and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_local_add_node_says_at_once_that_the_head_is_not_running(tmp_path):
    """env.sh outlives a head that crashed: ``ray status`` against its address waits ~40 s a call for
    the GCS, and local-add-node.sh gave up only after its timeout (120 s), saying "reports no nodes"."""
    import time

    state = tmp_path / "st"
    (state / "bin").mkdir(parents=True)
    (state / "ray").mkdir()
    (state / "bin" / "python").write_text(f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n")   # as local-up.sh
    (state / "bin" / "python").chmod(0o755)
    port = refused_port()                            # a port nothing listens on: the crashed head's
    (state / "env.sh").write_text(f"export RAY_ADDRESS=127.0.0.1:{port}\nexport RAY_AUTH_MODE=token\n")
    (state / "ray.pid").write_text("999999999\n")    # the head's, gone
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHON"] = sys.executable                   # an interpreter with Ray, whichever default applies
    start = time.monotonic()
    r = subprocess.run(["bash", str(CLUSTER / "local-add-node.sh"), str(state)], env={**env, "META_STUDY_UP_TIMEOUT": "1"},
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert r.returncode == 1 and f"the head in {state} is not running" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and took < 20, (took, r.stderr)
    assert not (state / "node2.pid").exists()


@pytest.fixture
def submit_refit(monkeypatch):
    import importlib.util

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = importlib.util.spec_from_file_location("submit_refit_review", CLUSTER / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submit_refit_errors_are_one_line(submit_refit, tmp_path, capsys):
    """A missing template or token file, no API outside a pod, and an API that is down were each a
    traceback (FileNotFoundError, KeyError, URLError)."""
    template = str(CLUSTER / "kuberay" / "rayjob-refit.yaml")
    down = f"http://127.0.0.1:{refused_port()}"          # nothing listens there (held bound: nothing will)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    for argv, code, says in (
            (["--template", str(tmp_path / "nope.yaml")], 2, f"--template {tmp_path / 'nope.yaml'}: No such file"),
            (["--template", template], 2, "not in a pod (no KUBERNETES_SERVICE_HOST): pass --api"),
            (["--template", template, "--api", down, "--token-file", str(tmp_path / "nope")], 2,
             f"--token-file {tmp_path / 'nope'}: not a readable file"),
            (["--template", template, "--api", down, "--token-file", str(token)], 1,
             f"cannot list RayJobs at {down}: ")):
        with pytest.raises(SystemExit) as e:
            submit_refit.main(argv)
        err = capsys.readouterr().err + (e.value.code if isinstance(e.value.code, str) else "")
        assert (e.value.code if isinstance(e.value.code, int) else 1) == code, (argv, err)
        assert f"submit_refit: {says}" in err and err.strip().count("\n") == 0, (argv, err)


class _RayVersionThenSilence(BaseHTTPRequestHandler):
    """Answers the wrapper's /api/version check, then never answers ``ray job submit`` itself."""

    seen = 0

    def do_GET(self):  # noqa: N802 - the stdlib's name
        type(self).seen += 1
        if type(self).seen > 1:
            time.sleep(30)
        body = b'{"ray_version": "2.60.0"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _children(pid: int, running: str = "") -> list[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``running``."""
    ps = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    return [int(p) for p, pp, args in ((line.split(None, 2) + [""])[:3] for line in ps.splitlines())
            if int(pp) == pid and running in args]


def _alive(pid: int) -> bool:
    ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return ps.returncode == 0 and not ps.stdout.strip().startswith("Z")


def test_killing_the_submit_wrapper_stops_ray_job_submit(tmp_path):
    """SIGTERM to the wrapper (``kill PID``, a cancelled CI job) left ``ray job submit`` running,
    re-parented to init: it went on to upload the working dir and submit the job."""
    _RayVersionThenSilence.seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RayVersionThenSilence)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "job.py").write_text("print(1)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    wrapper = subprocess.Popen([sys.executable, "-m", "meta_study.tune.submit", "--address",
                                f"http://127.0.0.1:{server.server_address[1]}", "--working-dir", str(tmp_path), "--",
                                "python", "job.py"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=REPO)
    child = None
    try:
        # `ray job submit` itself, once it has asked the job API (the wrapper forwards signals by
        # then): not the wrapper's git calls before it, nor the moment before its handlers are set
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline and wrapper.poll() is None:
            if _RayVersionThenSilence.seen >= 2:
                child = next(iter(_children(wrapper.pid, "ray.scripts.scripts")), None)
            time.sleep(0.2)
        assert child is not None, wrapper.stderr.read() if wrapper.poll() is not None else "no child"
        wrapper.terminate()
        code = wrapper.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "ray job submit outlived the wrapper"
        assert code == 128 + 15      # as a shell reports a process ended by SIGTERM
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        if child is not None and _alive(child):
            os.kill(child, 9)   # the one process this test started
        server.shutdown()
