"""Defects found by a review of the store for lost, half-written, doubled or silently wrong data,
each reproduced here: names in the store directory whose ``stat`` fails (a symbolic link loop, a
link to nothing), a huge file in a partition's place, a lock file that is a FIFO or a directory,
and an S3 lease whose conditional PUT landed but whose reply was lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study.store import Store, partition_dir
from meta_study.validation import validate


def _csv(path: Path, *, prefix: str = "r", seed: int = 0) -> Path:
    make_rows(3, ds_tasks=("a", "b"), seed=seed, run_prefix=prefix).drop(columns=["extra"]).to_csv(path, index=False)
    return path


def _store(tmp_path: Path) -> str:
    store = str(tmp_path / "st")
    r = run_cli("ingest", str(_csv(tmp_path / "x.csv")), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    return store


def _part_file(store: str, ds: str) -> Path:
    (f,) = (Path(store) / partition_dir("up", ds)).glob("part-*.parquet")
    return f


# ---- names whose stat fails ------------------------------------------------------------------


def test_a_symlink_loop_or_a_link_to_nothing_in_a_partition_is_damage_not_a_traceback(tmp_path):
    """A symbolic link loop in a partition directory made 'store check' end in a traceback
    (OSError ELOOP from the listing) and every ingest fail; a link to nothing was skipped by the
    listing, so 'store check' called the store sound while plain readers failed on it."""
    store = _store(tmp_path)
    rows = len(Store(store).to_pandas())
    os.symlink("loop", Path(store) / partition_dir("up", "a") / "loop")
    os.symlink("nowhere.parquet", Path(store) / partition_dir("up", "b") / "dangling.parquet")
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "up/a/loop (untracked)" in r.stdout + r.stderr and "up/b/dangling.parquet (untracked)" in r.stdout + r.stderr
    more = _csv(tmp_path / "more.csv", prefix="m", seed=3)
    r = run_cli("ingest", str(more), "--store", store, "--quiet")   # a stray link is no damage to build on
    assert r.returncode == 0, r.stderr
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.lexists(Path(store) / partition_dir("up", "a") / "loop")
    aside = [os.path.join(d, n) for d, _, names in os.walk(Path(store, "_damaged")) for n in names]
    assert any(p.endswith("up/b/dangling.parquet") and os.path.islink(p) for p in aside), aside   # moved, kept
    assert run_cli("store", "check", store).returncode == 0
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas()) == rows + 6


def test_a_partition_file_replaced_by_a_symlink_loop_is_one_line_damage(tmp_path):
    store = _store(tmp_path)
    f = _part_file(store, "a")
    f.unlink()
    os.symlink(f.name, f)   # links to itself
    for args in (("store", "info", store), ("fit", store, "--out", str(tmp_path / "fit"))):
        one_error_line(run_cli(*args), f.name, "damaged store file", "symbolic link loop")
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "symbolic link loop" in r.stdout + r.stderr
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0 and "6 rows dropped" not in r.stdout, r.stdout + r.stderr
    assert run_cli("store", "check", store).returncode == 0
    assert set(Store(store).to_pandas()["ds_task"]) == {"b"}


def test_the_latest_manifest_replaced_by_a_symlink_loop_is_read_from_its_copy(tmp_path):
    """The manifest read let ELOOP through as a traceback, instead of reading the copy."""
    store = _store(tmp_path)
    rows = len(Store(store).to_pandas())
    m = Path(store, "_meta/manifests/0000000001.json")
    m.unlink()
    os.symlink(m.name, m)
    r = run_cli("store", "info", store)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(Store(store).to_pandas()) == rows
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not m.is_symlink() and json.loads(m.read_bytes())["version"] == 1
    assert run_cli("store", "check", store).returncode == 0


# ---- after the commit point ----------------------------------------------------------------


def test_a_failure_after_the_commit_point_reports_the_commit_as_stored(tmp_path, monkeypatch):
    """Moving staged files into place failed after the manifest was published (an S3 copy that
    got a 500, a full disk writing the manifest's copy): the commit raised, so ingest said FAILED
    of rows that were in the store."""
    import errno

    from meta_study.store._files import _Files

    store = _store(tmp_path)
    real_move = _Files.move

    def fails(self, src, dst):   # noqa: ANN001
        if src.startswith("_staging/"):
            raise OSError(errno.EIO, "Input/output error", src)
        return real_move(self, src, dst)

    monkeypatch.setattr(_Files, "move", fails)
    told: list[str] = []
    r = Store(store, notify=told.append).commit(validate(make_rows(2, run_prefix="n-")).table)
    assert r.version == 2 and r.inserted == 4
    assert len(told) == 1 and "version 2 is committed" in told[0] and "next command" in told[0], told
    monkeypatch.setattr(_Files, "move", real_move)
    assert {"n-0", "n-1"} <= set(Store(store).to_pandas()["run_id"])
    assert run_cli("store", "info", store).returncode == 0    # finishes it
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas()) == 10
    assert run_cli("store", "check", store).returncode == 0


def test_a_commit_point_whose_reply_was_lost_with_an_error_is_reported_stored(tmp_path, monkeypatch):
    """The manifest's conditional PUT landed, and the client's last retry ended in an error (a read
    timeout, a 503): the commit raised that error with its version stored and its files still
    staged, so ingest said FAILED of rows that were in the store."""
    from meta_study.store._files import _Files

    store = _store(tmp_path)
    real = _Files.create_exclusive

    def landed_then_error(self, rel, data, tmp_rel):   # noqa: ANN001
        assert real(self, rel, data, tmp_rel)
        raise OSError(f"{rel}: conditional PUT failed: Read timeout on endpoint URL")

    monkeypatch.setattr(_Files, "create_exclusive", landed_then_error)
    r = Store(store).commit(validate(make_rows(2, run_prefix="n-")).table)
    monkeypatch.setattr(_Files, "create_exclusive", real)
    assert r.version == 2 and r.inserted == 4
    assert not Store(store)._pending(Store(store)._load())              # finished by the writer itself
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas()) == 10
    assert run_cli("store", "check", store).returncode == 0


def test_a_writer_whose_lock_file_was_replaced_keeps_its_staged_files(tmp_path, monkeypatch):
    """Locally, a garbage collection under flock deleted *every* staging directory, taking a
    writer without the lock for a dead one. With the lock file deleted while a writer held it (or
    an NFS mount without working locks), a second process got "the lock" too: its 'store check'
    deleted the first writer's staged files, and that writer then published a version naming them
    and deleted the files they superseded: every read failed and the partitions' rows were lost."""
    from meta_study.store import _store as store_module

    store = _store(tmp_path)
    before = Store(store).to_pandas()
    real = store_module._failpoint
    seen = []

    def lock_replaced_meanwhile(name: str) -> None:
        if name == "before_publish" and not seen:
            seen.append(name)
            Path(store, "_meta/LOCK").unlink()             # "a stale lock file": removed by hand
            assert Store(store).check().ok                 # another process takes a new one, collects garbage
        real(name)

    monkeypatch.setattr(store_module, "_failpoint", lock_replaced_meanwhile)
    df = make_rows(3, ds_tasks=("a", "b"))
    df["ds_accuracy"] = 0.25
    r = Store(store).commit(validate(df).table)
    assert seen and r.version == 2 and r.updated == 6
    after = Store(store).to_pandas()                       # no damage: the staged files were kept
    assert len(after) == len(before) and set(after["ds_accuracy"]) == {0.25}
    assert run_cli("store", "check", store).returncode == 0


# ---- repair ----------------------------------------------------------------------------------


def test_a_damaged_manifest_copy_is_reported_and_written_again(tmp_path):
    """'store check' never looked at the copy of an intact manifest: a damaged copy, the only way
    back from a later damaged manifest, was called sound."""
    store = _store(tmp_path)
    copy = Path(store, "_meta/manifests/0000000001.copy.json")
    copy.write_bytes(b"garbage")
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "0000000001.copy.json (manifest): its copy is damaged" in r.stderr, r.stdout + r.stderr
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert copy.read_bytes() == Path(store, "_meta/manifests/0000000001.json").read_bytes()
    assert Path(store, "_damaged/0000000001/_meta/manifests/0000000001.copy.json").read_bytes() == b"garbage"
    assert run_cli("store", "check", store).returncode == 0
    Path(store, "_meta/manifests/0000000001.json").write_bytes(b"{")   # the copy serves again
    assert run_cli("store", "info", store).returncode == 0


def test_a_repair_killed_after_its_commit_point_is_finished_by_the_next_command(tmp_path, monkeypatch):
    """A repair publishes a version without the damaged files, then moves them to _damaged/. Killed
    in between, it left a truncated data file in its partition: no later command moved it, plain
    readers failed on it (or read it beside the re-ingested rows), 'store info' said all was well."""
    from meta_study.store._files import _Files

    store = _store(tmp_path)
    f = _part_file(store, "a")
    f.write_bytes(f.read_bytes()[:100])
    real_move = _Files.move

    def killed(self, src, dst):   # noqa: ANN001
        if dst.startswith("_damaged/"):
            raise KeyboardInterrupt   # the process dies here (SIGKILL), after the commit point
        return real_move(self, src, dst)

    monkeypatch.setattr(_Files, "move", killed)
    with pytest.raises(KeyboardInterrupt):
        Store(store).check(repair=True)
    monkeypatch.setattr(_Files, "move", real_move)
    assert Store(store).version == 2 and f.exists()   # committed, not yet moved
    r = run_cli("store", "info", store)                # any command finishes it
    assert r.returncode == 0, r.stderr
    assert not f.exists() and Path(store, "_damaged/0000000002", f.relative_to(store)).exists()
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas()) == 3
    assert run_cli("store", "check", store).returncode == 0


# ---- a huge file ---------------------------------------------------------------------------


def test_a_huge_file_in_a_partitions_place_is_refused_before_it_is_read(tmp_path):
    """Every read loaded the whole file into memory before comparing its size with the manifest's:
    a 64 GiB (sparse) file in a partition's place was a MemoryError traceback, or an OOM kill.
    Run under an address-space limit of 8 GiB, far below the file's size."""
    resource = pytest.importorskip("resource")
    store = _store(tmp_path)
    f = _part_file(store, "a")
    try:
        os.truncate(f, 64 << 30)
    except OSError as e:
        pytest.skip(f"no sparse 64 GiB file here: {e}")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    for args in (("store", "info", store), ("fit", store, "--out", str(tmp_path / "fit"))):
        r = subprocess.run([sys.executable, "-m", "meta_study.cli", *args], capture_output=True, text=True,
                           timeout=300, preexec_fn=limit)
        one_error_line(r, f.name, "damaged store file", f"{64 << 30} bytes, the manifest says")


def test_a_huge_file_in_the_latest_manifests_place_is_damage_read_from_its_copy(tmp_path):
    """A manifest was read whole whatever its size: a 64 GiB file in its place was a MemoryError
    traceback for every command, instead of damage read from the copy and repaired."""
    resource = pytest.importorskip("resource")
    store = _store(tmp_path)
    m = Path(store, "_meta/manifests/0000000001.json")
    intact = m.read_bytes()
    try:
        os.truncate(m, 64 << 30)
    except OSError as e:
        pytest.skip(f"no sparse 64 GiB file here: {e}")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "meta_study.cli", *args], capture_output=True, text=True,
                              timeout=300, preexec_fn=limit)

    r = cli("store", "info", store)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = cli("store", "check", store)
    assert r.returncode == 1 and "0000000001.json (manifest)" in r.stderr and "bytes" in r.stderr, r.stderr
    r = cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert m.read_bytes() == intact
    assert Path(store, "_damaged/0000000001/_meta/manifests/0000000001.json").stat().st_size == 64 << 30
    assert cli("store", "check", store).returncode == 0


# ---- the local lock file ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_lock_file_that_is_a_fifo_or_a_directory_is_one_line(tmp_path, kind):
    """'store unlock' blocked forever opening a FIFO in the lock file's place; an ingest failed with
    a bare "[Errno 22] Invalid argument" (or "Is a directory") that named nothing."""
    store = _store(tmp_path)
    lock = Path(store, "_meta/LOCK")
    lock.unlink()
    os.mkfifo(lock) if kind == "fifo" else lock.mkdir()
    what = "a FIFO" if kind == "fifo" else "a directory"
    try:
        r = run_cli("store", "unlock", store, subprocess_=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("'store unlock' blocked opening a FIFO")
    one_error_line(r, "_meta/LOCK", f"is {what}, not the store's lock file", "remove it")
    r = run_cli("ingest", str(_csv(tmp_path / "more.csv", prefix="m")), "--store", store, "--quiet")
    assert r.returncode == 2 and "_meta/LOCK" in r.stderr and f"is {what}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "Errno" not in r.stderr
    Path(lock).unlink() if kind == "fifo" else lock.rmdir()
    assert run_cli("ingest", str(tmp_path / "more.csv"), "--store", store, "--quiet").returncode == 0


# ---- S3: a lease write whose reply was lost ----------------------------------------------------


def _uri(request) -> str:
    return f"s3://lab/review-{request.node.name.replace('[', '-').replace(']', '')}"


@pytest.mark.slow(10)
def test_a_lease_taken_with_its_reply_lost_is_ours_not_another_writers(request, s3env, monkeypatch):
    """The PUT that takes the lease landed, its reply was lost, and the client's retry got 412:
    the writer then waited for the "other writer" holding the lease, itself, until the lease
    expired (60 s by default), or failed as locked when its timeout was shorter."""
    from meta_study.store._s3 import S3Objects

    real_create = S3Objects.create
    lost = []

    def landed_reply_lost(self, rel, data):   # noqa: ANN001
        etag = real_create(self, rel, data)
        if rel.endswith("LEASE.json") and etag is not None:
            lost.append(rel)
            return real_create(self, rel, data)   # the client's retry: 412, None
        return etag

    monkeypatch.setattr(S3Objects, "create", landed_reply_lost)
    told: list[str] = []
    s = Store(_uri(request), lease_s=600, lock_timeout_s=5, notify=told.append)
    r = s.commit(validate(make_rows(2, run_prefix="a-")).table)
    assert r.version == 1 and lost and not told, told
    assert s.lock_holder() is None   # released
    assert len(Store(_uri(request)).to_pandas()) == 4


@pytest.mark.slow(10)
def test_a_lease_renewal_whose_reply_was_lost_keeps_the_lease(request, s3env, monkeypatch):
    """A renewal that landed but whose reply was lost (the retry: 412) was taken for a broken
    lease: the heartbeat stopped, the lease expired under a live writer (another writer could
    take it and win the commit: an ingest of a large file failed, 'run it again'), and it was never
    released, so the next writer waited for a dead one."""
    from meta_study.store._lock import _lease_lock, lease_holder
    from meta_study.store._s3 import S3Objects

    real_replace = S3Objects.replace
    state = {"renewals": 0}
    lost_one, renewed_after = threading.Event(), threading.Event()

    def replace(self, rel, data, etag):   # noqa: ANN001
        new = real_replace(self, rel, data, etag)
        if rel.endswith("LEASE.json") and new is not None and b"renewed_at" in data:
            state["renewals"] += 1
            if state["renewals"] == 1:
                lost_one.set()
                return real_replace(self, rel, data, etag)   # the retry of a landed PUT: 412, None
            renewed_after.set()
        return new

    monkeypatch.setattr(S3Objects, "replace", replace)
    objects = Store(_uri(request))._f.objects()
    with _lease_lock(objects, 5, "x", lease_s=0.4, notify=None) as beat:
        assert lost_one.wait(60)
        renewed_after.wait(60)
        assert not beat.lost
    assert renewed_after.is_set()
    assert lease_holder(objects) is None   # released, not left to expire


# ---- a store changed under every read ----------------------------------------------------------

def test_a_read_that_loses_every_race_is_one_line_to_run_again(tmp_path, monkeypatch):
    # the readers' retry loops ended in a bare RuntimeError (a traceback) when other processes
    # kept pruning manifests, or collecting files, between a reader's listing and its read
    from dataclasses import replace

    from meta_study.errors import StoreBusyError, UserError
    from meta_study.store import _store as mod

    st = Store(_store(tmp_path))
    real_load = mod.Store._load
    monkeypatch.setattr(mod.Store, "_read_manifest", lambda self, v: (_ for _ in ()).throw(FileNotFoundError(v)))
    with pytest.raises(StoreBusyError, match="run the command again") as e:
        st.to_pandas()
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    monkeypatch.undo()

    bump = iter(range(10, 10_000))     # a new version each time: superseded, never "lost"
    monkeypatch.setattr(mod.Store, "_load", lambda self, version=None: replace(real_load(self), version=next(bump)))
    monkeypatch.setattr(mod.Store, "_read_data", lambda self, entry, schema: (_ for _ in ()).throw(
        FileNotFoundError("part-x.parquet")))
    with pytest.raises(StoreBusyError, match=r"last: part-x\.parquet.*run the command again"):
        st.to_pandas()


# ---- the quarantine of a run read again -------------------------------------------------------

def test_a_fixed_file_takes_its_runs_out_of_the_quarantine(tmp_path):
    # the quarantine only grew: a user who fixed the file saw the row still quarantined and took
    # the fix for failed
    rows = make_rows(3, ds_tasks=("a", "b"), seed=0).drop(columns=["extra"])
    rows["shots"] = rows["shots"].astype(object)
    rows.loc[0, "shots"] = "ten"
    rows.loc[0, "eval_protocol"] = "fewshot"
    f = tmp_path / "q.csv"
    rows.to_csv(f, index=False)
    store = str(tmp_path / "st")
    r = run_cli("ingest", str(f), "--store", store, "--quiet")
    assert r.returncode == 0 and len(Store(store).quarantine()) == 1, r.stdout + r.stderr
    bad_run = rows.loc[0, "run_id"]
    r = run_cli("ingest", str(f), "--store", store, "--quiet")       # unchanged: nothing read again
    assert len(Store(store).quarantine()) == 1
    rows.loc[0, "shots"] = 10
    rows.to_csv(f, index=False)
    r = run_cli("ingest", str(f), "--store", store)
    assert r.returncode == 0, r.stderr
    st = Store(store)
    assert len(st.quarantine()) == 0 and bad_run in set(st.to_pandas()["run_id"])
    # a run read again and rejected again changes nothing: no new version
    rows.loc[1, "us_accuracy"] = 7.5
    rows.to_csv(f, index=False)
    run_cli("ingest", str(f), "--store", store, "--quiet")
    st = Store(store)
    q = st.quarantine().to_pandas()
    assert len(q) == 1
    again = st.commit(quarantine=q[["source", "run_id", "reason", "raw"]],
                      settle_quarantine=[(q["source"][0], q["run_id"][0])])
    assert again.version is None and len(Store(store).quarantine()) == 1
    # a deleted run's quarantine goes with it
    gone = st.commit(delete_runs=[(q["source"][0], q["run_id"][0])])
    assert gone.version is not None and len(Store(store).quarantine()) == 0


def test_store_unlock_and_quarantine_refuse_what_is_no_store_or_source(tmp_path):
    # unlock of a mistyped path said "not locked", exit 0; of a file, named a lock inside it; a
    # --source typo looked like a clean source; --limit -1 showed every row but the last
    one_error_line(run_cli("store", "unlock", str(tmp_path / "nope")), "no such store")
    (tmp_path / "dir").mkdir()
    one_error_line(run_cli("store", "unlock", str(tmp_path / "dir")), "not a meta-study store")
    f = _csv(tmp_path / "x.csv")
    one_error_line(run_cli("store", "unlock", str(f)), "not a store directory")
    store = _store(tmp_path)
    assert run_cli("store", "unlock", store).returncode == 0
    one_error_line(run_cli("store", "quarantine", store, "--source", "nope"), "--source nope: no such source",
                   "its sources: src")
    r = run_cli("store", "quarantine", store, "--source", "src")
    assert r.returncode == 0 and r.stdout.startswith("0 quarantined row(s)"), r.stderr
    r = run_cli("store", "quarantine", store, "--limit", "-1")
    assert r.returncode == 2 and "--limit" in r.stderr
