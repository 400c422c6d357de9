"""Defects found in a review of job submission and provenance (meta_study/tune/submit.py,
provenance.py, cluster/), each with the test that failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def _repo_with_slow_status(repo: Path) -> str:
    """A checkout whose ``git status`` runs a clean filter that takes 60 s (a stand-in for a huge
    untracked tree or a slow fsmonitor hook); the filter, as hooks do, keeps git's stderr open."""
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("a\n")
    (repo / ".gitattributes").write_text("f.txt filter=slow\n")
    _git(repo, "config", "filter.slow.clean", "cat")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    _git(repo, "config", "filter.slow.clean", "sleep 60; cat")
    (repo / "f.txt").write_text("b\n")     # edited: the tree is dirty, and git must run the filter to see it
    return _git(repo, "rev-parse", "HEAD")


def test_a_git_status_that_times_out_is_recorded_as_unknown_not_clean(tmp_path, monkeypatch):
    """``git status`` outliving its timeout was taken for a clean tree: an edited checkout was
    recorded as the bare commit. And the wait went on past the timeout for as long as a filter or
    hook git had started kept the output pipe open (here 60 s)."""
    from meta_study.tune import provenance
    from meta_study.tune.submit import submit_git_sha

    head = _repo_with_slow_status(tmp_path)
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", {"rev-parse": 10.0, "status": 1.0}, raising=False)
    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    t0 = time.monotonic()
    assert submit_git_sha(str(tmp_path)) == head + "-unknown-state"
    # not the filter's 60 s (the bug); ~2 s unloaded, so a bound far from both for a loaded machine
    assert time.monotonic() - t0 < 45
    assert provenance.git_sha(tmp_path) == head + "-unknown-state"
    assert provenance.git_dirty(tmp_path) is None


def test_a_non_utf8_file_name_in_git_status_is_no_crash(tmp_path, monkeypatch):
    """With ``core.quotePath=false`` git prints file names raw; an untracked ``caf\\xe9.txt`` was a
    UnicodeDecodeError: a traceback in a sweep, and submit's one line named a codec, not the file."""
    from meta_study.tune import provenance
    from meta_study.tune.submit import submit_git_sha

    _git(tmp_path, "init", "-q")
    _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "init")
    _git(tmp_path, "config", "core.quotePath", "false")
    head = _git(tmp_path, "rev-parse", "HEAD")
    open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), "wb").close()
    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    assert provenance.git_dirty(tmp_path) is True
    assert submit_git_sha(str(tmp_path)) == head + "-dirty"
    assert provenance.git_sha(tmp_path) == head + "-dirty"


def _submit(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m meta_study.tune.submit ARGS`` with none of this shell's Ray variables (unless in ``env``)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "meta_study.tune.submit", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def _closed_port() -> int:
    from mlflow_server import refused_port

    return refused_port()    # held bound for good: no other test's server can take it meanwhile


def test_submit_refuses_an_unreachable_cluster_address_in_one_line_at_once():
    """A ``HOST:PORT`` (or ``ray://``) address with no cluster behind it: ``ray job submit`` waited
    ~45 s for a GCS there, then printed a traceback (RpcError: Timed out ...), exit 1."""
    port = _closed_port()
    for source, address, args, env in (("--address", f"127.0.0.1:{port}", ["--address", f"127.0.0.1:{port}"], {}),
                                       ("--address", f"ray://127.0.0.1:{port}", ["--address", f"ray://127.0.0.1:{port}"], {}),
                                       ("RAY_ADDRESS", f"127.0.0.1:{port}", [], {"RAY_ADDRESS": f"127.0.0.1:{port}"})):
        t0 = time.monotonic()
        r = _submit(*args, "--", "python", "-c", "1", env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
        assert r.stderr.startswith(f"submit: {source} {address}: cannot reach a Ray cluster there ("), r.stderr
        assert time.monotonic() - t0 < 20


def test_submit_refuses_two_different_working_dirs_in_one_line(tmp_path):
    """``--runtime-env-json '{"working_dir": ...}'`` is what Ray uploads; the commit was taken from
    ``--working-dir`` (``.``) all the same. Both given and different is refused."""
    other = tmp_path / "other"
    other.mkdir()
    r = _submit("--working-dir", ".", "--runtime-env-json", json.dumps({"working_dir": str(other)}),
                "--address", f"http://127.0.0.1:{_closed_port()}", "--", "python", "-c", "1")
    assert r.returncode == 2 and r.stderr == (f"submit: --working-dir . and --runtime-env-json's working_dir {other} "
                                              "differ: give the job's working directory once\n"), r.stderr
    r = _submit("--runtime-env-json", json.dumps({"working_dir": str(tmp_path / "nope")}),
                "--address", f"http://127.0.0.1:{_closed_port()}", "--", "python", "-c", "1")
    assert r.returncode == 2 and r.stderr == (f"submit: --runtime-env-json's working_dir {tmp_path / 'nope'}: not a "
                                              "directory (it is uploaded as the job's working directory)\n"), r.stderr


# --- with a real local cluster (cluster/local-up.sh, token authentication on) ------------------------

def _script(name: str, state: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "META_STUDY_LOCAL_DIR"}
    e["PYTHON"] = sys.executable
    return subprocess.run(["bash", str(REPO / "cluster" / name), str(state)], env=e, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray head and MLflow server; its env.sh's exports. Stopped (by their PIDs, local-down.sh)."""
    import re

    state = tmp_path_factory.mktemp("s36") / "st"
    try:
        up = _script("local-up.sh", state)
        assert up.returncode == 0, up.stderr[-3000:]
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, re.M))
        assert "RAY_API_SERVER_ADDRESS" in exports, up.stdout
        yield exports
    finally:
        _script("local-down.sh", state, timeout=180)
        if (state / "ray").is_symlink():
            subprocess.run(["rm", "-rf", os.path.realpath(state / "ray")], check=False)


@pytest.mark.slow(60)
def test_submit_says_in_one_line_that_the_ray_token_is_missing_or_wrong(cluster, tmp_path):
    """Ray 2.60 turns token authentication on. Without the token (env.sh not sourced whole) or with
    another cluster's, ``ray job submit`` printed a traceback (AuthenticationError), exit 1."""
    no_token = {k: v for k, v in cluster.items() if not k.startswith("RAY_AUTH")}
    r = _submit("--no-wait", "--", "python", "-c", "1", cwd=tmp_path, env=no_token)
    api = cluster["RAY_API_SERVER_ADDRESS"]
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"submit: RAY_API_SERVER_ADDRESS {api}: the cluster wants a Ray token (HTTP 401) "
                               "and none is set: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH"), r.stderr
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    r = _submit("--no-wait", "--", "python", "-c", "1", cwd=tmp_path,
                env={**cluster, "RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"submit: RAY_API_SERVER_ADDRESS {api}: the cluster refused the Ray token (HTTP 403) "
                               f"of RAY_AUTH_TOKEN_PATH {wrong}; is it this cluster's?"), r.stderr


def _two_checkouts(tmp_path: Path) -> tuple[Path, Path]:
    here, other = tmp_path / "here", tmp_path / "other"
    for repo in (here, other):
        repo.mkdir()
        _git(repo, "init", "-q")
        (repo / "job.py").write_text(f"print('ran in {repo.name}')\n")
        _git(repo, "add", "job.py")
        _git(repo, "commit", "-q", "-m", repo.name)
    return here, other


@pytest.mark.slow(30)
def test_submit_sends_the_job_where_address_says(cluster, tmp_path):
    """Ray's job client takes RAY_API_SERVER_ADDRESS (then RAY_ADDRESS) over ``--address``: with
    env.sh of one cluster sourced, ``--address`` of another was checked, then ignored (here the
    environment's is a closed port: ConnectionError traceback, exit 1)."""
    here, _ = _two_checkouts(tmp_path)
    env = {**cluster, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{_closed_port()}"}
    r = _submit("--address", cluster["RAY_API_SERVER_ADDRESS"], "--", "python", "job.py", cwd=here, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "ran in here" in r.stdout, r.stdout[-2000:]


@pytest.mark.slow(30)
def test_submit_records_the_commit_of_the_working_dir_it_uploads(cluster, tmp_path):
    """The commit recorded was that of ``.``, not of the runtime_env's ``working_dir`` that Ray
    uploaded: another checkout's code ran under this one's commit."""
    here, other = _two_checkouts(tmp_path)
    sha = _git(other, "rev-parse", "HEAD")
    r = _submit("--runtime-env-json", json.dumps({"working_dir": str(other)}), "--", "python", "job.py", cwd=here,
                env=cluster)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"submit: git {sha}, researcher" in r.stderr, r.stderr[-2000:]
    assert "ran in other" in r.stdout, r.stdout[-2000:]


@pytest.mark.slow(20)
def test_local_up_refuses_a_fixed_port_in_use_or_no_port_at_once(tmp_path):
    """META_STUDY_RAY_PORT naming a port another program listens on: Ray's GCS could not bind it,
    and after ~60 s local-up.sh said "a port was taken during startup". Said now before anything
    starts, in one line; and a value that is no port number is refused too (MLflow's ``63.79``
    was passed to ``mlflow server``, whose error was shown as "mlflow exited during startup")."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    state = tmp_path / "st"
    try:
        for var in ("META_STUDY_RAY_PORT",):   # MLflow's exits at once (test_cluster.py's not_fooled test)
            t0 = time.monotonic()
            e = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_"))}
            r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True,
                               text=True, timeout=120, env={**e, "PYTHON": sys.executable, var: str(port)})
            assert r.returncode == 1 and r.stdout == "", r.stderr[-2000:]
            assert r.stderr == (f"local-up: error: {var}={port}: the port is in use (another program holds it); "
                                f"choose another, or unset {var} for a free one\n"), r.stderr[-2000:]
            assert time.monotonic() - t0 < 30 and not (state / "ray.pid").exists()
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True, text=True,
                           timeout=120, env={**e, "PYTHON": sys.executable, "META_STUDY_MLFLOW_PORT": "63.79"})
        assert r.returncode == 1 and r.stderr == ("local-up: error: META_STUDY_MLFLOW_PORT=63.79: not a port number "
                                                  "(1-65535)\n"), r.stderr[-2000:]
    finally:
        holder.close()


@pytest.mark.slow(30)
def test_submit_does_not_upload_what_git_ignores_through_info_exclude(cluster, tmp_path):
    """Ray's upload reads only the tree's .gitignore and .rayignore: a data directory that git
    ignores through ``.git/info/exclude`` was uploaded with every job (toward Ray's 512 MiB limit),
    and a script ignored there ran under a commit recorded as clean."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "job.py").write_text("import os; print('data uploaded:', os.path.exists('data'), os.path.exists('keep.txt'))\n")
    _git(repo, "add", "job.py")
    _git(repo, "commit", "-q", "-m", "job")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("# git ls-files --exclude-per-directory\ndata/\nkeep.txt\n")
    (repo / "data").mkdir()
    (repo / "data" / "big.bin").write_bytes(b"x" * 1000)
    (repo / "keep.txt").write_text("ignored too\n")
    assert _git(repo, "status", "--porcelain") == ""         # git ignores both
    r = _submit("--", "python", "job.py", cwd=repo, env=cluster)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "data uploaded: False False" in r.stdout, r.stdout[-2000:]
