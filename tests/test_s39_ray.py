"""Defects found in a review of meta_study/ray_session.py, meta_study/tune/preflight.py and
meta_study/tune/submit.py, each with the test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from meta_study import ray_session
from meta_study.errors import UserError


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


# ---- the storage probe: a node whose probe worker dies is that node's answer, not a traceback ----

CRASHING_PROBE = textwrap.dedent("""
    import os, sys
    from meta_study.errors import UserError
    from meta_study.ray_session import start_or_connect
    from meta_study.tune import preflight

    start_or_connect(num_cpus=1, quiet=True)

    def crash(uri, name, token):      # the probe's worker dies there (OOM killer, a segfault)
        os._exit(1)

    preflight._probe = crash
    try:
        preflight.check_storage_on_nodes(sys.argv[1], timeout_s=60)
    except UserError as e:
        print(f"USERERROR {e}")   # one string: a Ray log line cannot land inside it
    print(f"LEFT {sorted(os.listdir(sys.argv[1]))}")   # one string: a Ray log line cannot land inside it
""")


@pytest.mark.slow(20)
def test_a_probe_whose_worker_dies_is_that_nodes_answer(tmp_path):
    """A probe task whose worker died on a node (the OOM killer, a crash, a runtime_env that node
    could not set up) raised from ``ray.get``: the sweep ended in WorkerCrashedError's traceback
    instead of the one line naming the node."""
    storage = tmp_path / "st"
    storage.mkdir()
    r = subprocess.run([sys.executable, "-c", CRASHING_PROBE, str(storage)], capture_output=True, text=True,
                       timeout=150, env=_env())
    # a Ray log line printed without its newline ("(raylet) A worker died ...") may run into it
    line = next((x[x.index("USERERROR"):] for x in r.stdout.splitlines() if "USERERROR " in x), None)
    assert line is not None, r.stdout + r.stderr[-3000:]
    assert f"--storage-path {storage}: 1 of 1 Ray nodes cannot use it (node " in line
    assert "WorkerCrashedError: " in line and "Traceback" not in r.stderr
    assert "LEFT []" in r.stdout      # the driver's probe file is removed


# ---- the token hint with RAY_AUTH_MODE=token and Ray's default token file ---------------------

_REFUSED = ("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
            "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token is missing "
            "or incorrect.")


class _RefusingRay:
    @staticmethod
    def init(**kwargs):
        try:
            raise RuntimeError(_REFUSED)
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379") from cause


@pytest.mark.parametrize("default_file", [True, False])
def test_ray_auth_mode_token_alone_is_not_told_to_export_it(monkeypatch, tmp_path, default_file):
    """With RAY_AUTH_MODE=token and neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH, Ray sends its
    default file ~/.ray/auth_token: the hint said "no Ray token is set here: export
    RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH", to a user who had exported the mode and whose
    token file Ray had sent."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("HOME", str(tmp_path))
    if default_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("0" * 64)
    monkeypatch.setattr(ray_session, "check_address", lambda *a, **k: None)
    monkeypatch.setitem(ray_session._own, "started", False)
    with pytest.raises(UserError) as e:
        ray_session._connect(_RefusingRay, "127.0.0.1:6379", {})
    msg = str(e.value)
    assert "\n" not in msg and "export RAY_AUTH_MODE=token" not in msg, msg
    if default_file:
        assert msg.endswith(f"; the cluster refused the Ray token of {tmp_path}/.ray/auth_token (Ray's default file: "
                            "neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set): export RAY_AUTH_TOKEN_PATH (the "
                            "lines of the cluster's env.sh)"), msg
    else:
        assert msg.endswith("; RAY_AUTH_MODE is token but no Ray token is set here: export RAY_AUTH_TOKEN_PATH (the "
                            "lines of the cluster's env.sh)"), msg


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


@pytest.mark.slow(30)
def test_ray_auth_mode_token_without_any_token_is_one_line_against_a_real_cluster(tmp_path):
    """RAY_AUTH_MODE=token with no token anywhere (no RAY_AUTH_TOKEN, no RAY_AUTH_TOKEN_PATH, no
    ~/.ray/auth_token): Ray's ``AuthenticationError`` (no ConnectionError) escaped as a traceback."""
    env = _env()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert server.stdout is not None
        gcs = server.stdout.readline().strip()
        assert gcs.startswith("127.0.0.1:"), gcs
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=150,
                           env={**env, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token",
                                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        assert r.stdout.startswith(f"ERROR --address {gcs}: could not join the Ray cluster there"), \
            r.stdout + r.stderr[-2000:]
        assert r.stdout.rstrip().endswith("; RAY_AUTH_MODE is token but no Ray token is set here: export "
                                          "RAY_AUTH_TOKEN_PATH (the lines of the cluster's env.sh)"), r.stdout
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=60)


# ---- the submit wrapper's upload -------------------------------------------------------------


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A checkout with one committed job script, as the current directory, with no Ray address set."""
    r = tmp_path / "repo"
    (r / "sweeps").mkdir(parents=True)
    _git(r, "init", "-q")
    (r / "job.py").write_text("print('job')\n")
    _git(r, "add", "job.py")
    _git(r, "commit", "-q", "-m", "job")
    monkeypatch.chdir(r)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "META_STUDY_GIT_SHA", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"):
        monkeypatch.delenv(name, raising=False)
    return r


def _submitted(monkeypatch, argv: list[str]) -> tuple[int, list[str] | None]:
    from meta_study.tune import submit

    seen: list[list[str]] = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda a, env=None: seen.append(list(a)) or 0)
    # no cluster here: with no address the wrapper looks for one on this machine, as `ray job submit` would
    monkeypatch.setattr(submit, "check_job_api", lambda *a, **k: None)
    rc = submit.main(argv)
    return rc, (seen[0] if seen else None)


@pytest.mark.parametrize("ignore", [".gitignore", ".rayignore", ".git/info/exclude"])
def test_submit_refuses_a_job_script_the_upload_leaves_out(repo, monkeypatch, capsys, ignore):
    """``python sweeps/mine.py`` where a .gitignore (or .rayignore, or .git/info/exclude) matches
    sweeps/mine.py: the script was left out of the upload and the job failed on the cluster
    ("can't open file"), after the upload, in the job's log alone under --no-wait."""
    (repo / "sweeps" / "mine.py").write_text("print('mine')\n")
    (repo / ignore).write_text("sweeps/mine.py\n")
    rc, argv = _submitted(monkeypatch, ["--", "python", "sweeps/mine.py", "--smoke"])
    err = capsys.readouterr().err
    assert rc == 2 and argv is None, err
    assert err.startswith("submit: --working-dir .: the job's command names sweeps/mine.py, which the upload "
                          "leaves out (") and err.count("\n") == 1, err
    # an ignored file that is no Python script (an output the job writes) is no refusal, nor is
    # a script that is uploaded
    (repo / "out.json").write_text("{}")
    (repo / ignore).write_text("out.json\n")
    rc, argv = _submitted(monkeypatch, ["--", "python", "sweeps/mine.py", "--out", "out.json"])
    assert rc == 0 and argv is not None, capsys.readouterr().err


@pytest.mark.parametrize("name", [".git-credentials", ".pypirc"])
def test_submit_refuses_git_and_pypi_credential_files_in_the_upload(repo, monkeypatch, capsys, name):
    """git's credential store (``https://user:TOKEN@host`` lines in clear text) and ``.pypirc`` (a
    PyPI upload token) went up with the job, readable by any job of the cluster."""
    (repo / name).write_text("https://user:ghp_secret@example.com\n")
    rc, argv = _submitted(monkeypatch, ["--", "python", "job.py"])
    err = capsys.readouterr().err
    assert rc == 2 and argv is None, err
    assert err.startswith(f"submit: --working-dir .: the upload would hold {name}, a secrets file by its name: "), err
    assert "ghp_secret" not in err


QUOTA = textwrap.dedent("""
    import ray._private.utils as u
    u._get_docker_cpus = lambda *a, **k: 1.0          # a container limited to 1 CPU (cgroup cpu.max)
    from meta_study.ray_session import start_or_connect
    ray = start_or_connect(quiet=True)
    print(f"CPUS {ray.cluster_resources()['CPU']}")   # one string: a Ray log line cannot land inside it
""")


@pytest.mark.slow(20)
def test_own_ray_takes_the_containers_cpu_quota_not_the_hosts_cpu_count():
    """A Ray of our own was started with ``num_cpus=os.cpu_count()``, the host's count, over Ray's
    own detection, which honours a container's CPU quota: a sweep in a 1-CPU pod on a bigger host
    ran as many trials at once as the host has cores."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a host of 2 CPUs or more to tell the two counts apart")
    r = subprocess.run([sys.executable, "-c", QUOTA], capture_output=True, text=True, timeout=120,
                       env=_env(RAY_DISABLE_DOCKER_CPU_WARNING="1"))
    assert "CPUS 1.0" in r.stdout, r.stdout + r.stderr[-2000:]
