"""Defects found in a review of the sweep infrastructure (meta_study/tune/submit.py, provenance.py,
finalize.py, _shards.py): what the submit wrapper uploads."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with one committed job script, as the current directory, with no Ray address set
    (:func:`_submitted` stubs the wrapper's job API check)."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q")
    (r / "job.py").write_text("print('job')\n")
    _git(r, "add", "job.py")
    _git(r, "commit", "-q", "-m", "job")
    monkeypatch.chdir(r)
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "META_STUDY_GIT_SHA", "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"):
        monkeypatch.delenv(name, raising=False)
    return r


def _submitted(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[int, dict | None]:
    """``submit.main(argv)``'s exit status and the runtime_env it hands ``ray job submit`` (None:
    nothing was submitted)."""
    from meta_study.tune import submit

    seen: list[list[str]] = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda a, env=None: seen.append(list(a)) or 0)
    # no cluster here: with no address the wrapper looks for one on this machine, as `ray job submit` would
    monkeypatch.setattr(submit, "check_job_api", lambda *a, **k: None)
    rc = submit.main(argv)
    if not seen:
        return rc, None
    a = seen[0]
    return rc, json.loads(a[a.index("--runtime-env-json") + 1])


def test_submit_leaves_git_out_of_the_upload(repo, monkeypatch, tmp_path):
    """The wrapper leaves ``.git`` out of the upload itself, whatever Ray's default excludes are
    (Ray 2.60's, ``.git,.venv,venv,__pycache__``, are replaced by
    ``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES``; without them the whole
    history went up with every job (toward Ray's 512 MiB limit), ``.git/config`` with a remote's
    token in its URL too), and the job never needs it (the commit is in META_STUDY_GIT_SHA)."""
    from ray._private.runtime_env.packaging import _zip_files

    _git(repo, "remote", "add", "origin", "https://user:ghp_secret@example.com/x.git")
    rc, env = _submitted(monkeypatch, ["--", "python", "job.py"])
    assert rc == 0 and env is not None
    assert ".git" in env["excludes"], env
    assert env["env_vars"]["META_STUDY_GIT_SHA"] == _git(repo, "rev-parse", "HEAD").strip()
    # what Ray's own packing makes of that runtime_env (ray job submit's include_gitignore=True)
    out = tmp_path / "pkg.zip"
    _zip_files(str(repo), env["excludes"], str(out), include_gitignore=True)
    names = zipfile.ZipFile(out).namelist()
    assert "job.py" in names and not [n for n in names if n.startswith(".git")], names


def test_submit_keeps_the_users_excludes_and_adds_git_once(repo, monkeypatch):
    rc, env = _submitted(monkeypatch, ["--runtime-env-json", json.dumps({"excludes": ["data/", ".git"]}),
                                       "--", "python", "job.py"])
    assert rc == 0 and env is not None and env["excludes"] == ["data/", ".git"], env


def test_submit_refuses_a_secrets_file_in_the_upload_in_one_line(repo, monkeypatch, capsys):
    """An untracked ``.env`` that no .gitignore excludes went up with the job (Ray keeps the upload
    on the cluster, where any job can read it), while a secret in --runtime-env-json is refused
    for the same exposure; the commit was only marked -dirty."""
    (repo / ".env").write_text("MLFLOW_TRACKING_PASSWORD=hunter2\n")
    rc, env = _submitted(monkeypatch, ["--", "python", "job.py"])
    err = capsys.readouterr().err
    assert rc == 2 and env is None, err
    assert err.startswith("submit: --working-dir .: the upload would hold .env, a secrets file by its name: ") \
        and err.count("\n") == 1 and "hunter2" not in err, err
    assert "--runtime-env-json '{\"excludes\": [\".env\"]}'" in err, err
    # left out (.gitignore, .rayignore or the runtime_env's excludes): submitted
    (repo / ".rayignore").write_text(".env\n")
    rc, env = _submitted(monkeypatch, ["--", "python", "job.py"])
    assert rc == 0 and env is not None
    (repo / ".rayignore").unlink()
    rc, env = _submitted(monkeypatch, ["--runtime-env-json", json.dumps({"excludes": [".env"]}),
                                       "--", "python", "job.py"])
    assert rc == 0 and env is not None


@pytest.mark.parametrize("rel, secret", [
    ("sub/.env.local", True), (".netrc", True), ("meta-study-local/ray-auth-token", True),
    ("keys/id_ed25519", True), ("home/.aws/credentials", True),
    (".env.example", False), ("keys/id_ed25519.pub", False), ("credentials", False), (".envrc.md", False),
])
def test_uploaded_secret_files_knows_secrets_by_name(tmp_path, rel, secret):
    from meta_study.tune.submit import upload_excludes, uploaded_secret_files

    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text("x\n")
    (tmp_path / "job.py").write_text("print('job')\n")
    assert uploaded_secret_files(str(tmp_path), upload_excludes(str(tmp_path))) == ([rel] if secret else [])


@pytest.mark.slow(15)
def test_writer_child_spools_what_it_holds_when_the_last_line_is_cut_short(tmp_path):
    """A driver killed while a long operation line was partly in the (non-blocking) pipe left the
    writer child a last line without its end: a JSONDecodeError traceback, and the operations it
    had queued but not sent died with it, unspooled (its heartbeat left behind too)."""
    import sys

    args = {"tracking_uri": "http://127.0.0.1:1", "experiment_id": "1", "parent_run_id": "p",
            "state_dir": str(tmp_path / "exp"), "flush_timeout_s": 1.0}
    op = {"kind": "metrics", "trial": "t1", "payload": {"metrics": {"a": 1.0}, "step": 1, "time": 1}}
    data = json.dumps({"creds": None}) + "\n" + json.dumps(op) + "\n" + json.dumps(op)[:20]
    r = subprocess.run([sys.executable, "-m", "meta_study.tune.writer", json.dumps(args)], input=data,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "meta-study writer: skipped an unreadable operation line (no end of line" in r.stderr, r.stderr[-3000:]
    spool = tmp_path / "exp" / "meta_study" / "spool"
    lines = [json.loads(x) for f in sorted(spool.iterdir()) for x in f.read_text().splitlines()]
    assert [(x["trial"], x["payload"]["metrics"]) for x in lines] == [("t1", [["a", 1.0, 1, 1]])], lines
    assert not (tmp_path / "exp" / "meta_study" / "writer.json").exists()     # the heartbeat stopped


@pytest.mark.slow(30)
def test_a_terminated_writer_child_spools_what_it_holds(tmp_path):
    """SIGTERM (systemd's stop signals every process of the unit, SLURM's scancel, a signal to the
    process group) killed the writer child with its queue: exit -15 and an empty spool against a
    server that failed. It now sends for a short while, spools the rest and exits 0."""
    import signal
    import socket
    import sys
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    called = threading.Event()

    def refuse() -> None:     # a server that drops every call: the operation stays in the writer's retries
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            called.set()
            conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    args = {"tracking_uri": f"http://127.0.0.1:{srv.getsockname()[1]}", "experiment_id": "1", "parent_run_id": "p",
            "state_dir": str(tmp_path / "exp"), "flush_timeout_s": 600.0}
    op = {"kind": "metrics", "trial": "t1", "payload": {"metrics": {"a": 1.0}, "step": 1, "time": 1}}
    p = subprocess.Popen([sys.executable, "-m", "meta_study.tune.writer", json.dumps(args)], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write(json.dumps({"creds": None}) + "\n" + json.dumps(op) + "\n")
        p.stdin.flush()
        assert called.wait(120), "the writer never tried to send the operation"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
        srv.close()
    assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert "meta-study writer: terminated; sending for 10 s, then spooling the rest" in err, err[-3000:]
    spool = tmp_path / "exp" / "meta_study" / "spool"
    lines = [json.loads(x) for f in sorted(spool.iterdir()) for x in f.read_text().splitlines()]
    assert [(x["trial"], x["payload"]["metrics"]) for x in lines] == [("t1", [["a", 1.0, 1, 1]])], lines
