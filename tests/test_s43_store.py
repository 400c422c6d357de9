"""Session 43 review of the local store's data safety (meta_study/store/_files.py, _store.py,
_manifest.py): a directory that cannot be listed is an error, never "missing" files whose rows a
repair drops; a manifest never makes a command touch files outside the store; a directory where a
superseded file was does not stop every later commit."""

from __future__ import annotations

import errno
import glob
import os

import pytest

from meta_study.errors import StoreDamagedError
from meta_study.store import Store
from meta_study.store._manifest import _Manifest
from meta_study.validation import validate
from conftest import make_rows


def _rows(n: int = 3, **kw):
    return validate(make_rows(n, **kw)).table


def _unlistable(monkeypatch, dirs: set[str], code: int = errno.EACCES) -> None:
    """``os.scandir`` (what ``os.walk`` lists with) fails on ``dirs`` as the kernel does on a
    directory we may not read (EACCES; the tests run as root, which may read any) or on a
    stale NFS handle or a bad sector (ESTALE, EIO)."""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).rstrip("/") in dirs:
            raise OSError(code, os.strerror(code), path)
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


def _fail_finalize_once(monkeypatch) -> None:
    """The next commit's finalize fails after its commit point (a full disk, EIO): the version is
    committed with its files still staged, as a writer killed there leaves it."""
    real = Store._finalize
    calls = {"n": 0}

    def finalize(self, m):
        calls["n"] += 1
        if calls["n"] == 2:   # the first finalizes the version the commit builds on
            raise OSError(errno.EIO, "simulated failure")
        return real(self, m)
    monkeypatch.setattr(Store, "_finalize", finalize)


def test_a_partition_directory_that_cannot_be_listed_is_an_error_not_rows_dropped(tmp_path, monkeypatch):
    # Its file was "missing": every commit said 'damaged store file ... --repair drops their
    # rows', and '--repair' did, setting the intact file aside.
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(_rows(ds_tasks=("a", "b")))
    os.makedirs(f"{root}/_damaged/0000000009/x")   # where the store reads nothing: as before
    _unlistable(monkeypatch, {f"{root}/up/b", f"{root}/_damaged/0000000009/x"})
    with pytest.raises(PermissionError, match="up/b"):
        s.commit(_rows(1, source="z", ds_tasks=("a",)))
    with pytest.raises(PermissionError, match="up/b"):
        s.check()
    with pytest.raises(PermissionError, match="up/b"):
        s.check(repair=True)
    monkeypatch.undo()
    assert s.version == 1 and s.read().num_rows == 6 and s.check().ok
    assert not os.path.exists(f"{root}/_damaged/0000000002")


def test_a_staging_directory_that_cannot_be_listed_is_never_collected_as_finished(tmp_path, monkeypatch):
    # A committed version whose files are still staged: a listing of its staging directory that
    # failed (EIO, ESTALE) read as "nothing staged", so the next commit deleted the files that
    # version superseded, then the staging directory, the only copy of its rows.
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(_rows(ds_tasks=("a",)))
    _fail_finalize_once(monkeypatch)
    df = make_rows(3, ds_tasks=("a",))
    df["ds_accuracy"] = df["ds_accuracy"] / 2
    assert s.commit(validate(df).table).version == 2
    monkeypatch.undo()
    (txn,) = os.listdir(f"{root}/_staging")
    _unlistable(monkeypatch, {f"{root}/_staging/{txn}"}, errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        s.commit(_rows(1, source="z", ds_tasks=("b",)))
    monkeypatch.undo()
    got = s.read().to_pandas().sort_values("run_id")
    assert list(got["ds_accuracy"]) == list(df.sort_values("run_id")["ds_accuracy"])
    assert s.commit(_rows(1, source="z", ds_tasks=("b",))).version == 3 and s.check().ok


@pytest.mark.parametrize("field", ["pending_delete", "data_path"])
def test_a_manifest_naming_a_path_outside_the_store_is_damage_and_touches_nothing_outside(tmp_path, field):
    # A manifest's checksum is no secret: whoever could write a shared store's manifest made the
    # next 'store info' of any user delete (pending_delete) or replace (a live file's path) files
    # outside the store.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(_rows(ds_tasks=("a",)))
    m = _Manifest.from_json(open(f"{root}/_meta/manifests/0000000001.json", "rb").read(), "m")
    data = [dict(e) for e in m.data]
    pending = []
    if field == "pending_delete":
        pending = ["../victim.txt"]
    else:
        data[0]["path"] = "up/../../victim.txt"   # the staged file would be moved over it
    m2 = _Manifest(version=2, data=data, quarantine=m.quarantine, state=m.state, pending_delete=pending,
                   log=m.log, txn="0000000002-x")
    (tmp_path / "st/_meta/manifests/0000000002.json").write_bytes(m2.to_json())
    with pytest.raises(StoreDamagedError, match="0000000002.json: damaged manifest: garbles"):
        Store(root, notify=None).require()
    assert victim.read_text() == "precious"
    r = s.check(repair=True)
    assert r.rolled_back_to == 1 and s.read().num_rows == 3 and victim.read_text() == "precious"


def test_a_repair_log_naming_a_path_outside_the_store_is_damage():
    m = _Manifest(version=2, log=[{"version": 2, "operation": "repair", "set_aside": ["../../home/x/.bashrc"]}])
    with pytest.raises(ValueError, match="set_aside"):
        _Manifest.from_json(m.to_json(), "m")


def test_a_directory_where_a_superseded_file_was_is_set_aside_not_a_stuck_store(tmp_path, monkeypatch):
    # unlink() of it failed with EISDIR: every later commit, and the repair, finished the same
    # version first and failed the same way
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(_rows(ds_tasks=("a",)))
    (old,) = glob.glob(f"{root}/up/a/*.parquet")
    _fail_finalize_once(monkeypatch)
    df = make_rows(3, ds_tasks=("a",))
    df["ds_accuracy"] = df["ds_accuracy"] / 2
    assert s.commit(validate(df).table).version == 2
    monkeypatch.undo()
    os.unlink(old)
    os.mkdir(old)
    (tmp_path / "st" / os.path.relpath(old, root) / "keep").write_text("someone's")
    assert s.commit(_rows(1, source="z", ds_tasks=("b",))).version == 3
    assert s.read().num_rows == 4 and s.check().ok and not os.path.exists(old)
    rel = os.path.relpath(old, root)
    assert (tmp_path / "st/_damaged/0000000002" / rel / "keep").read_text() == "someone's"


def test_a_lock_file_that_cannot_be_locked_is_named(tmp_path, monkeypatch):
    # a network filesystem whose lock service is off or unreachable: every commit failed with a
    # bare "[Errno 37] No locks available", naming no file
    import fcntl

    def flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", flock)
    root = str(tmp_path / "st")
    for act in (lambda: Store(root, notify=None).commit(_rows(1)), lambda: Store(root, notify=None).lock_holder()):
        with pytest.raises(OSError, match=r"cannot lock the store's lock file \(No locks available.*_meta/LOCK"):
            act()
