"""The CLI's entry point and its edges (stop 40): SIGTERM and SIGHUP unwind a command as Ctrl-C
does (the store's lock or lease released, a commit not yet published rolled back, exit 128 + the
signal's number), and one line, not a traceback, for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MAPPINGS, committed_store, make_rows, one_error_line, run_cli
from meta_study.store import Store


def _csv(path: Path, prefix: str, n: int = 5) -> Path:
    make_rows(n, run_prefix=prefix, ds_tasks=("a", "b")).drop(columns=["extra"]).to_csv(path, index=False)
    return path


#: what ``nohup`` does to a command: SIGHUP ignored, as exec keeps it (no preexec_fn, unsafe with threads)
NOHUP = ("sh", "-c", 'trap "" HUP; exec "$@"', "sh")


#: the CLI with SIGHUP at its default whatever this process inherited: CI runs under ``nohup``, whose
#: ignored SIGHUP every child inherits (and rightly keeps: the second half of the SIGHUP test)
HUP_DEFAULT = ("import runpy, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
               "sys.argv = ['meta-study', *sys.argv[1:]]; runpy.run_module('meta_study.cli', run_name='__main__')")


def _ingest(csv: Path, store: str, env: dict, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    cli = ("-m", "meta_study.cli") if prefix else ("-c", HUP_DEFAULT)
    return subprocess.Popen([*prefix, sys.executable, *cli, "ingest", str(csv), "--store", store],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stalled_writer(csv: Path, store: str, env: dict | None = None,
                    prefix: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """An ingest stopped just before its commit point (its rows staged, the lock held) for up to
    10 minutes; returns it once it says so, with what it printed to stderr so far."""
    p = _ingest(csv, store, {**(env or {}), "META_STUDY_FAILPOINT": "stall_before_publish", "META_STUDY_STALL_S": "600"},
                prefix)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        seen.append(line)
        if "failpoint stall_before_publish" in line:
            return p, "".join(seen)
        if not line and p.poll() is not None:
            break
    p.kill()
    raise AssertionError(f"the writer never reached its commit point (exit {p.poll()}): {''.join(seen)[-2000:]}")


def _stopped(p: subprocess.Popen, sig: int, earlier: str) -> str:
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return earlier + err


def _assert_intact(s: Store, runs: set[str], version: int) -> None:
    """The store as the first ingest left it: its rows, its version, no staged files, sound."""
    assert set(s.to_pandas()["run_id"]) == runs and s.summary().version == version
    assert not s._f.listdir("_staging")          # the stopped commit's staged files were removed
    assert s.check().ok


@pytest.mark.slow(10)
def test_sigterm_unwinds_an_ingest_on_a_local_store(tmp_path):
    """``kill PID`` of an ingest holding the lock: it died of the signal (-15) with its staging
    directory left behind; now the commit rolls back, the lock is free, one line, exit 143."""
    store = str(tmp_path / "store")
    first = _ingest(_csv(tmp_path / "a.csv", "a-"), store, {})
    assert first.wait(120) == 0, first.stderr.read()
    p, early = _stalled_writer(_csv(tmp_path / "b.csv", "b-"), store)
    s = Store(store)
    assert s.lock_holder() is not None and s.lock_holder().pid == p.pid
    err = _stopped(p, signal.SIGTERM, early)
    assert p.returncode == 143, (p.returncode, err)
    assert err.strip().splitlines()[-1] == "meta-study: terminated by SIGTERM" and "Traceback" not in err, err
    assert s.lock_holder() is None
    with s._lock(timeout_s=0):                   # a second writer gets it at once
        pass
    _assert_intact(s, {f"a-{i}" for i in range(5)}, 1)


@pytest.mark.slow(20)
def test_sighup_unwinds_too_and_stays_ignored_under_nohup(tmp_path):
    """SIGHUP (the terminal closed) as SIGTERM, exit 129; but a command started under ``nohup``
    (SIGHUP ignored) keeps it ignored and commits."""
    store = str(tmp_path / "store")
    first = _ingest(_csv(tmp_path / "a.csv", "a-"), store, {})
    assert first.wait(120) == 0, first.stderr.read()
    p, early = _stalled_writer(_csv(tmp_path / "b.csv", "b-"), store)
    err = _stopped(p, signal.SIGHUP, early)
    assert p.returncode == 129 and "meta-study: terminated by SIGHUP" in err and "Traceback" not in err, err
    _assert_intact(Store(store), {f"a-{i}" for i in range(5)}, 1)

    go = tmp_path / "go"
    p, early = _stalled_writer(_csv(tmp_path / "b.csv", "b-"), store, {"META_STUDY_STALL_UNTIL": str(go)}, NOHUP)
    p.send_signal(signal.SIGHUP)
    go.touch()
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert Store(store).summary().version == 2


def test_handlers_are_put_back_and_others_left_alone():
    """Only signals at their default are taken, and only while a command runs."""
    from meta_study.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    mine = lambda signum, frame: None   # noqa: E731 - an embedding program's handler
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, mine)
        main(["--version"])
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is mine
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@pytest.mark.slow(20)
def test_sigterm_releases_an_object_stores_lease_at_once(request, s3, s3env, tmp_path):
    """On S3 the lease outlived a killed writer by its whole length (here 10 minutes: every other
    writer waited, or needed 'store unlock'); now it is released on the way out."""
    uri = f"s3://lab/{request.node.name}"
    env = {**s3.env, "META_STUDY_LEASE_S": "600"}
    first = _ingest(_csv(tmp_path / "a.csv", "a-"), uri, env)
    assert first.wait(120) == 0, first.stderr.read()
    p, early = _stalled_writer(_csv(tmp_path / "b.csv", "b-"), uri, env)
    s = Store(uri)
    assert s.lock_holder() is not None and s.lock_holder().pid == p.pid
    err = _stopped(p, signal.SIGTERM, early)
    assert p.returncode == 143 and "meta-study: terminated by SIGTERM" in err and "Traceback" not in err, err
    assert s.lock_holder() is None                # released, not left to expire
    with s._lock(timeout_s=0):
        pass
    _assert_intact(s, {f"a-{i}" for i in range(5)}, 1)


@pytest.mark.slow(30)
def test_sigterm_between_refits_ends_the_loop_cleanly_as_ctrl_c(tmp_path):
    """A service's stop of ``refit --every`` while it waits for its next round: nothing is
    interrupted, so it ends as Ctrl-C there does, exit 0 (it died of the signal, -15)."""
    committed_store(tmp_path / "st", runs=20, tasks=("a",))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    p = subprocess.Popen([sys.executable, "-m", "meta_study.cli", "refit", "--store", str(tmp_path / "st"), "--out",
                          str(tmp_path / "out"), "--serial", "--every", "1h", "--trials", "2", "--samples", "10"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stdout:
            seen.append(line)
            if line.startswith("next refit in"):
                break
        assert seen and seen[-1].startswith("next refit in"), (seen, p.poll())
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "Traceback" not in err, (p.returncode, err)
    assert (tmp_path / "out" / "LATEST").exists()


def test_mapping_with_only_a_sources_file_is_refused_not_ignored(tmp_path):
    """``--mapping`` maps the SOURCEs of the command line; beside a --sources-file alone it was read
    and ignored (the rows mapped by each entry's own mapping, or none), exit 0."""
    _csv(tmp_path / "a.csv", "a-")
    (tmp_path / "sources.yaml").write_text("sources:\n  - uri: a.csv\n")
    r = run_cli("ingest", "--store", str(tmp_path / "st"), "--sources-file", str(tmp_path / "sources.yaml"),
                "--mapping", str(MAPPINGS / "timm_wide.yaml"))
    one_error_line(r, "--mapping ", "timm_wide.yaml", "none is given", "'mapping:'")
    assert not (tmp_path / "st").exists()


def test_publish_experiment_without_a_tracking_uri_is_refused_not_ignored(tmp_path, monkeypatch):
    """No MLflow run is published without a tracking URI: the experiment named was ignored, exit 0."""
    committed_store(tmp_path / "st", runs=10, tasks=("a",))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for extra in ((), ("--tracking-uri", "none")):
        for flag in ("--publish-experiment", "--experiment"):
            r = run_cli("refit", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "out"), "--serial",
                        flag, "mine", *extra, subprocess_=False)
            one_error_line(r, "--publish-experiment 'mine'", "tracking URI")
            assert not (tmp_path / "out").exists()


def test_an_ingest_on_a_store_held_past_the_wait_exits_1_not_2(tmp_path, monkeypatch):
    """"locked by another writer for more than 900 s" exited 2, which a cron job or a systemd timer
    reads as a wrong setting (refit exits 1 for the same wait); the input was fine."""
    import fcntl

    from meta_study.store import _store

    committed_store(tmp_path / "st", runs=5)
    init = _store.Store.__init__
    monkeypatch.setattr(_store.Store, "__init__", lambda self, uri, **kw: init(self, uri, **{**kw, "lock_timeout_s": 0.3}))
    # flock locks belong to an open file description: this one excludes the ingest's, in this process too
    fd = os.open(tmp_path / "st" / "_meta" / "LOCK", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        r = run_cli("ingest", str(_csv(tmp_path / "b.csv", "b-")), "--store", str(tmp_path / "st"), subprocess_=False)
    finally:
        os.close(fd)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "locked by another writer" in lines[0] and "for more than 0.3 s" in lines[0], lines
