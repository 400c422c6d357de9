"""A store on S3 (a real S3 API server on 127.0.0.1, tests/s3_server.py): commits whose safety
needs no timing assumption (the manifest of a version is created with ``If-None-Match: *``), a
lease that names its holder, expires when its writer dies and can be broken, and the failpoint
external checks use (``META_STUDY_FAILPOINT=stall_before_publish``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study import errors
from meta_study.schema import KEY
from meta_study.validation import validate
from meta_study.store import Store, partition_dir

boto3 = pytest.importorskip("boto3")


def _uri(request) -> str:
    return f"s3://lab/{request.node.name.replace('[', '-').replace(']', '')}"


def _csv(path: Path, prefix: str, n: int = 5) -> Path:
    make_rows(n, run_prefix=prefix, ds_tasks=("a", "b")).drop(columns=["extra"]).to_csv(path, index=False)
    return path


def _start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meta_study.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_line(p: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    """stderr lines of ``p`` up to the first holding ``marker``."""
    assert p.stderr is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        seen.append(line)
        if marker in line:
            return seen
        if not line and p.poll() is not None:
            break
    raise AssertionError(f"never saw {marker!r} (exit {p.poll()}): {''.join(seen)[-2000:]}")


def _finish(p: subprocess.Popen, earlier: list[str] = (), timeout: float = 180) -> tuple[str, str]:
    out, err = p.communicate(timeout=timeout)
    err = "".join(earlier) + err
    assert p.returncode == 0, err[-3000:]
    return out, err


def _assert_sound(uri: str, env: dict, runs: set[str]) -> pd.DataFrame:
    df = Store(uri).to_pandas()
    assert not df.duplicated(list(KEY)).any()
    assert set(df["run_id"]) == runs                      # exactly the union, nothing lost, nothing extra
    r = run_cli("store", "check", uri, env=env)
    assert r.returncode == 0 and "no damage" in r.stdout, r.stdout + r.stderr
    return df


def _runs(prefix: str, n: int = 5) -> set[str]:
    return {f"{prefix}{i}" for i in range(n)}


def test_s3_commit_read_and_release(request, s3, s3env):
    """What differs for object stores (a lease instead of flock, copies instead of renames, the
    conditional commit point) on the real S3 API."""
    s = Store(_uri(request), lease_s=5)
    t = validate(make_rows(3)).table
    assert s.commit(t, quarantine=pd.DataFrame({"source": ["s"], "reason": ["x"], "raw": ["{}"]})).inserted == 6
    assert s.commit(t).version is None
    df = make_rows(3)
    df["ds_accuracy"] = 0.5
    r = s.commit(validate(df).table, state={"mlflow:x": pa.table({"a": [1]})})
    assert r.updated == 6 and s.version == 2
    assert len(s.read()) == 6 and set(s.read().column("ds_accuracy").to_pylist()) == {0.5}
    assert len(s.quarantine()) == 1 and s.read_state("mlflow:x").num_rows == 1
    assert s.lock_holder() is None                                 # released
    assert s._f.listdir(partition_dir("up", "a")) and len(s._f.listdir(partition_dir("up", "a"))) == 1
    assert not s._f.listdir("_staging")
    lease = json.loads(s3.client().get_object(Bucket="lab", Key=f"{request.node.name}/_meta/LEASE.json")["Body"].read())
    assert lease["released"] and lease["pid"] == os.getpid()
    assert s.check().ok


def test_endpoint_and_keys_from_the_store_uri(request, s3, monkeypatch):
    """Without AWS_ENDPOINT_URL*: the endpoint in the URI (pyarrow's form) serves both the data
    files (pyarrow) and the conditional writes (boto3), keys given as the URI's user info."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = (f"s3://testing:testing-secret@lab/{request.node.name}?endpoint_override=127.0.0.1:{s3.port}"
           "&scheme=http&region=us-east-1")
    s = Store(uri, lease_s=5)
    assert "testing-secret" not in s.uri
    assert s.commit(validate(make_rows(2)).table).version == 1
    assert len(Store(uri).read()) == 4 and s.check().ok and s.lock_holder() is None


def test_a_held_lease_names_its_holder_to_a_waiting_writer(request, s3env):
    uri = _uri(request)
    holder = Store(uri, lease_s=30, notify=None)
    holder.commit(validate(make_rows(1)).table)
    notices: list[str] = []
    # 3 s, not 1: its first look (two requests to moto) must come before the timeout for the notice
    # below, which a loaded machine can delay past 1 s
    waiter = Store(uri, lock_timeout_s=3.0, notify=notices.append)
    with holder._lock():
        h = waiter.lock_holder()
        assert h is not None and h.pid == os.getpid() and not h.expired
        with pytest.raises(errors.StoreLockedError) as e:
            waiter.commit(validate(make_rows(1, run_prefix="w-")).table)
    line = str(e.value)
    assert f"pid {os.getpid()} on " in line and "lease until" in line and f"'meta-study store unlock {uri}'" in line
    assert notices and "waiting for the writer holding its lease" in notices[0]
    assert waiter.lock_holder() is None                      # released on leaving the block


@pytest.mark.slow(15)
def test_heartbeat_keeps_a_short_lease_through_a_long_commit(request, s3env, monkeypatch):
    """A commit stalled for more than two lease lengths keeps its lease (renewed every quarter),
    so the other writer waits instead of taking it over."""
    import threading

    from meta_study import failpoints

    uri = _uri(request)
    failpoints.HITS.clear()
    monkeypatch.setenv("META_STUDY_FAILPOINT", "stall_before_publish:1")   # the first commit only
    monkeypatch.setenv("META_STUDY_STALL_S", "9")
    notes: list[str] = []
    a, b = Store(uri, lease_s=4, notify=None), Store(uri, lease_s=4, notify=notes.append)
    t = threading.Thread(target=a.commit, args=(validate(make_rows(2, run_prefix="a-")).table,),
                         kwargs={"info": {"source": "a"}})
    t.start()
    deadline = time.monotonic() + 60
    while b.lock_holder() is None:
        assert time.monotonic() < deadline and t.is_alive()
        time.sleep(0.05)
    b.commit(validate(make_rows(2, run_prefix="b-")).table, info={"source": "b"})
    t.join()
    assert [h["source"] for h in Store(uri).history()] == ["a", "b"]
    assert any("waiting for the writer holding its lease" in n for n in notes), notes
    assert not any("took over" in n or "merging again" in n for n in notes), notes
    assert Store(uri).check().ok


def test_losing_the_commit_point_merges_again_and_never_deletes_the_winners_files(request, s3env):
    """The commit point alone decides: a writer whose version was taken while it prepared its
    commit (its lease broken meanwhile) deletes only its own staging directory and merges again."""
    uri = _uri(request)
    a, b = Store(uri, lease_s=30, notify=None), Store(uri, lease_s=30, notify=None)
    a.commit(validate(make_rows(2, run_prefix="base-")).table)
    notices: list[str] = []
    b.notify = notices.append

    real_publish = b._publish
    def publish_after_a(m, txn):        # noqa: ANN001 - b stalls at its commit point; a commits meanwhile
        b._publish = real_publish
        assert a.unlock() is not None   # a breaks b's lease ('store unlock'), as after a long pause
        a.commit(validate(make_rows(2, run_prefix="a-")).table)
        return real_publish(m, txn)
    b._publish = publish_after_a
    r = b.commit(validate(make_rows(2, run_prefix="b-")).table)
    assert r.version == 3 and r.inserted == 4
    assert any("committed by another writer" in n and "merging again" in n for n in notices), notices
    assert set(Store(uri).to_pandas()["run_id"]) == {"base-0", "base-1", "a-0", "a-1", "b-0", "b-1"}
    assert [h["version"] for h in Store(uri).history()] == [1, 2, 3]
    assert not a._f.listdir("_staging")
    assert Store(uri).check().ok

    # commit_stream consumed its input: it fails in one line instead, having stored nothing
    def publish_after_a2(m, txn):       # noqa: ANN001
        b._publish = real_publish
        a.unlock()
        a.commit(validate(make_rows(2, run_prefix="a2-")).table)
        return real_publish(m, txn)
    b._publish = publish_after_a2
    with pytest.raises(errors.StoreConflictError, match="version 4 was committed by another writer"):
        b.commit_stream([(validate(make_rows(2, run_prefix="b2-")).table, None)])
    assert "b2-0" not in set(Store(uri).to_pandas()["run_id"]) and Store(uri).check().ok
    assert not a._f.listdir("_staging")


def test_a_commit_whose_reply_was_lost_and_retried_into_412_is_reported_stored(request, s3env, monkeypatch):
    """The conditional PUT of the manifest landed but its reply timed out; the client's retry
    found the name taken (412). That is this writer's own commit: both commit (which merged again
    and said "nothing changed") and commit_stream (which said "nothing of this commit was
    stored") reported a stored version as not stored."""
    from meta_study.store._s3 import S3Objects

    uri = _uri(request)
    real_create = S3Objects.create
    lost = []

    def landed_reply_lost(self, rel, data):   # noqa: ANN001
        etag = real_create(self, rel, data)
        if "/manifests/" in f"/{rel}" and not rel.endswith(".copy.json") and etag is not None:   # the commit point
            lost.append(rel)
            return real_create(self, rel, data)   # the retry: 412, None
        return etag

    monkeypatch.setattr(S3Objects, "create", landed_reply_lost)
    s = Store(uri, lease_s=30, notify=None)
    r = s.commit(validate(make_rows(2, run_prefix="a-")).table)
    assert r.version == 1 and r.inserted == 4, r
    r = s.commit_stream([(validate(make_rows(2, run_prefix="b-")).table, None)])
    assert r.version == 2 and r.inserted == 4, r
    assert len(lost) == 2
    assert set(Store(uri).to_pandas()["run_id"]) == {"a-0", "a-1", "b-0", "b-1"} and Store(uri).check().ok
    assert not s._f.listdir("_staging") and [h["version"] for h in Store(uri).history()] == [1, 2]


@pytest.mark.slow(20)
def test_concurrent_ingests_with_a_writer_stalled_before_publish(request, s3, s3env, tmp_path):
    uri = _uri(request)
    env = {**s3.env, "META_STUDY_LEASE_S": "20"}   # renewed every 5 s: it never expires under a live writer
    go = tmp_path / "go"
    # a stalls just before its commit point until b has said it waits (at most 300 s: never a race
    # against b's start-up, however loaded the machine)
    a = _start("ingest", str(_csv(tmp_path / "a.csv", "a-")), "--store", uri,
               env={**env, "META_STUDY_FAILPOINT": "stall_before_publish", "META_STUDY_STALL_S": "300",
                    "META_STUDY_STALL_UNTIL": str(go)})
    early = _wait_line(a, "failpoint stall_before_publish")
    b = _start("ingest", str(_csv(tmp_path / "b.csv", "b-")), "--store", uri, env=env)
    # b waits for a (whose heartbeat keeps its lease through the stall) and says for whom
    waited = _wait_line(b, "waiting for the writer holding its lease")
    assert f"pid {a.pid} on " in waited[-1] and "store unlock" in waited[-1], waited[-1]
    go.touch()
    _finish(a, early)
    out_b, err_b = _finish(b, waited)
    assert "took over" not in err_b                          # a finished first: no expiry needed
    _assert_sound(uri, s3.env, _runs("a-") | _runs("b-"))
    assert [Path(h["source"]).stem for h in Store(uri).history()] == ["a", "b"]   # one after the other


@pytest.mark.slow(20)
def test_writer_paused_past_its_lease_loses_the_race_and_commits_after(request, s3, s3env, tmp_path):
    """The failure of the old lease: a writer paused (SIGSTOP, as a long GC pause or a stalled
    PUT) between its checks and its commit point while another takes the expired lease."""
    uri = _uri(request)
    env = {**s3.env, "META_STUDY_LEASE_S": "3"}
    a = _start("ingest", str(_csv(tmp_path / "a.csv", "a-")), "--store", uri,
               env={**env, "META_STUDY_FAILPOINT": "stall_before_publish", "META_STUDY_STALL_S": "5"})
    early = _wait_line(a, "failpoint stall_before_publish")
    a.send_signal(signal.SIGSTOP)                 # staged, not published (5 s to spare), heartbeat frozen
    try:
        out_b, err_b = _finish(_start("ingest", str(_csv(tmp_path / "b.csv", "b-")), "--store", uri, env=env))
        assert f"took over the expired lease of pid {a.pid} on " in err_b, err_b
        assert "10 new" in out_b
    finally:
        a.send_signal(signal.SIGCONT)
    out_a, err_a = _finish(a, early)
    assert "committed by another writer" in err_a and "merging again" in err_a, err_a
    assert "10 new" in out_a
    _assert_sound(uri, s3.env, _runs("a-") | _runs("b-"))
    assert [Path(h["source"]).stem for h in Store(uri).history()] == ["b", "a"]


@pytest.mark.slow(25)
def test_killed_writer_lease_expires_with_a_message_or_is_unlocked(request, s3, s3env, tmp_path):
    uri = _uri(request)
    # a writer SIGKILLed holding a 4 s lease: the next one says who holds it, then takes it over
    a = _start("ingest", str(_csv(tmp_path / "a.csv", "a-")), "--store", uri,
               env={**s3.env, "META_STUDY_LEASE_S": "4", "META_STUDY_FAILPOINT": "before_publish"})
    _wait_line(a, "failpoint before_publish")
    a.send_signal(signal.SIGKILL)
    a.wait()
    out, err = _finish(_start("ingest", str(_csv(tmp_path / "b.csv", "b-")), "--store", uri, env=s3.env))
    # b names the dead writer when it takes the lease over (and, when it got there before the
    # lease ran out, first while it waited; on a loaded machine it may start after)
    assert f"took over the expired lease of pid {a.pid} on " in err and "expired at" in err, err
    if "waiting for the writer holding its lease" in err:
        assert f"waiting for the writer holding its lease: pid {a.pid} on " in err, err

    # one SIGKILLed holding a 10-minute lease: 'store unlock' breaks it for the writer waiting
    c = _start("ingest", str(_csv(tmp_path / "c.csv", "c-")), "--store", uri,
               env={**s3.env, "META_STUDY_LEASE_S": "600", "META_STUDY_FAILPOINT": "before_publish"})
    _wait_line(c, "failpoint before_publish")
    c.send_signal(signal.SIGKILL)
    c.wait()
    d = _start("ingest", str(_csv(tmp_path / "d.csv", "d-")), "--store", uri, env=s3.env)
    waited = _wait_line(d, "waiting for the writer holding its lease")
    assert f"pid {c.pid} on " in waited[-1] and f"'meta-study store unlock {uri}'" in waited[-1]
    r = run_cli("store", "unlock", uri, env=s3.env)
    assert r.returncode == 0 and f"broke the lease of pid {c.pid} on " in r.stdout, r.stdout + r.stderr
    _finish(d, waited)
    assert run_cli("store", "unlock", uri, env=s3.env).stdout.strip().endswith("not locked")
    _assert_sound(uri, s3.env, _runs("b-") | _runs("d-"))
    assert not Store(uri)._f.listdir("_staging")             # the dead writers' staged files are gone



NO_BOTO3 = '''
import importlib.abc, sys
class _NoBoto(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoBoto())
'''


def test_without_boto3_s3_stores_read_but_writes_say_what_to_install(request, s3, s3env, tmp_path):
    uri = _uri(request)
    assert run_cli("ingest", str(_csv(tmp_path / "a.csv", "a-")), "--store", uri, env=s3.env).returncode == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_BOTO3)
    env = {**s3.env, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    r = run_cli("store", "info", uri, env=env)
    assert r.returncode == 0 and "rows       10" in r.stdout, r.stderr
    assert run_cli("store", "check", uri, env=env).returncode == 0
    one_error_line(run_cli("ingest", str(_csv(tmp_path / "b.csv", "b-")), "--store", uri, env=env),
              uri, "needs boto3", "pip install boto3")


def test_object_stores_without_conditional_writes_are_refused_in_one_line(tmp_path):
    src = str(_csv(tmp_path / "a.csv", "a-"))
    for uri in ("gs://lab/st", "mock:///lab/st"):
        one_error_line(run_cli("ingest", src, "--store", uri, env={"AWS_EC2_METADATA_DISABLED": "true"}),
                  uri.split("://")[0] + "://", "can be read, not written", "s3://")
    with pytest.raises(errors.UserError, match="can be read, not written"):
        Store("mock:///lab/st").commit(validate(make_rows(1)).table)


def test_a_sweep_record_on_s3_is_created_once(request, s3env):
    """Two drivers starting one new sweep on s3:// storage (meta_study/tune/state.py): the record
    is a create-if-absent PUT, so exactly one of racing creators wins and the winner's record is
    what every later reader sees."""
    import threading

    from meta_study.tune.state import Session, StateDir, SweepRecord

    exp_dir = _uri(request) + "/sweep-a"
    wins: dict[int, bool] = {}
    barrier = threading.Barrier(4)

    def create(i: int) -> None:
        rec = SweepRecord(sweep="a", experiment="e", experiment_id="1", parent_run_id=f"parent-{i}",
                          tracking_uri="http://mlflow", sessions=(Session("t", "c", "g", "r"),))
        barrier.wait()
        wins[i] = StateDir(exp_dir).create_record(rec)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins.values()) == [False, False, False, True], wins
    winner = next(i for i, won in wins.items() if won)
    assert StateDir(exp_dir).read_record().parent_run_id == f"parent-{winner}"
    # a bucket the endpoint does not have: one line, not a traceback through the sweep
    with pytest.raises(errors.UserError, match=r"^s3://no-such-bucket/tune/sweep-a/meta_study: cannot write the sweep record: no such bucket"):
        StateDir("s3://no-such-bucket/tune/sweep-a").create_record(
            SweepRecord(sweep="a", experiment="e", experiment_id="1", parent_run_id="p", tracking_uri="http://mlflow"))
