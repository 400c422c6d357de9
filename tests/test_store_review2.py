"""Defects found by a second review of the store, each reproduced here: an s3:// prefix with a
percent-escape split in two, a staged file deleted by a read-only command, a lost latest
manifest whose intact copy was ignored and then overwritten, a flipped bit in a manifest's
format fields that bypassed its copy, a huge lease that bricked an S3 store, a file where a
partition's directory belongs while a commit is pending, a malformed URI, counts of rows deleted
and written again, the requests opening an S3 store costs, a listing error that let a stalled
writer's commit stand, lease loops that spun, and a lock file that was a dangling link."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import committed_store, make_rows, one_error_line, run_cli
from meta_study.errors import StoreConflictError, StoreDamagedError, StoreLockedError, UserError
from meta_study.store import Store
from meta_study.validation import validate


def _killed_after_publish(monkeypatch: pytest.MonkeyPatch, store: str, seed: int = 9) -> dict:
    """Commit to ``store`` and "kill" the writer right after its commit point (what SIGKILL at
    META_STUDY_FAILPOINT=after_publish leaves, in-process); the manifest it published."""
    import meta_study.store._store as store_mod

    real = store_mod._failpoint

    def die(name: str) -> None:
        if name == "after_publish":
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(store_mod, "_failpoint", die)
    with pytest.raises(KeyboardInterrupt):
        Store(store, notify=None).commit(validate(make_rows(60, ds_tasks=("a", "b", "c"), seed=seed)).table)
    monkeypatch.setattr(store_mod, "_failpoint", real)
    (man,) = sorted(Path(store, "_meta/manifests").glob("*[0-9].json"))[-1:]
    return json.loads(man.read_text())


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# ---- 2: a staged file deleted by a read-only command ------------------------------------------


def test_a_directory_at_a_new_files_path_is_set_aside_and_the_staged_rows_kept(tmp_path, monkeypatch):
    """A writer died past its commit point and a directory stood where one of its files goes:
    'store info' skipped that move and garbage collection deleted the staged file, the only copy
    of its 60 rows (never set aside); '--repair' could only drop them."""
    store = str(tmp_path / "st")
    committed_store(Path(store))
    m = _killed_after_publish(monkeypatch, store)
    e = m["data"][0]
    staged_bytes = Path(store, e["staged"]).read_bytes()
    Path(store, e["path"]).mkdir(parents=True)
    Path(store, e["path"], "note.txt").write_text("someone's")
    r = run_cli("store", "info", store)
    assert r.returncode == 0, r.stderr
    assert Path(store, e["path"]).read_bytes() == staged_bytes           # moved into place
    assert Path(store, "_damaged", f"{m['version']:010d}", e["path"], "note.txt").read_text() == "someone's"
    assert run_cli("store", "check", store).returncode == 0
    assert len(Store(store).read()) == 180


def test_garbage_collection_keeps_a_staging_directory_with_the_only_copy_of_a_live_file(tmp_path, monkeypatch):
    """The other half: garbage collection deleted ``_staging/<txn>`` of a decided version
    without checking that its files had been moved out."""
    store = str(tmp_path / "st")
    committed_store(Path(store))
    m = _killed_after_publish(monkeypatch, store)
    s = Store(store, notify=None)
    s._collect_garbage(s._load())   # without finalizing first
    assert all(Path(store, e["staged"]).exists() for e in m["data"])
    assert len(s.read()) == 180


# ---- 3: the latest manifest lost, its copy intact ---------------------------------------------


def test_a_lost_latest_manifest_is_read_from_its_copy_and_restored(tmp_path):
    """Version 2's manifest deleted, its copy intact: every command took version 1 as the latest
    (its files gone: "missing"), and '--repair' dropped all 180 rows and overwrote the copy."""
    s = committed_store(tmp_path / "st")
    s.commit(validate(make_rows(60, ds_tasks=("a", "b", "c"), seed=5)).table)
    store = str(tmp_path / "st")
    want = s.read().sort_by("run_id")
    copy = Path(store, "_meta/manifests/0000000002.copy.json")
    copy_bytes = copy.read_bytes()
    Path(store, "_meta/manifests/0000000002.json").unlink()
    assert Store(store).version == 2 and Store(store).read().sort_by("run_id").equals(want)
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "0000000002.json" in r.stderr and "missing" in r.stderr, r.stdout + r.stderr
    res = Store(store).check(repair=True)
    assert res.manifest_restored and res.rows_dropped == 0, res
    assert Path(store, "_meta/manifests/0000000002.json").read_bytes() == copy.read_bytes() == copy_bytes
    assert Store(store).check().ok and Store(store).version == 2 and len(Store(store).read()) == 180


def test_a_lone_copy_of_a_pruned_version_is_not_taken_for_the_latest(tmp_path):
    s = committed_store(tmp_path / "st", runs=3)
    s.commit(validate(make_rows(3, ds_tasks=("a", "b", "c"), seed=5)).table)
    Path(tmp_path, "st/_meta/manifests/0000000001.json").unlink()   # pruning died between the two deletes
    assert s._manifest_versions() == [2] and s.version == 2 and s.check().ok


# ---- 4: a flipped bit in "format" or "format_version" -----------------------------------------


@pytest.mark.parametrize("old,new", [(b'"meta-study-store"', b'"meta-study-storf"'),
                                     (b'"format_version": 2', b'"format_version": 6'),
                                     (b'"format_version": 2', b'"format_version": "2"')])
def test_a_flipped_bit_in_a_manifests_format_fields_is_read_from_its_copy(tmp_path, old, new):
    """The format fields were checked before the checksum: 'store info', 'check' and '--repair'
    all said "not a meta-study manifest" or "upgrade meta-study" (exit 2), never trying the copy;
    a string format_version was a TypeError traceback."""
    s = committed_store(tmp_path / "st", runs=3)
    man = Path(tmp_path, "st/_meta/manifests/0000000001.json")
    raw = man.read_bytes()
    assert old in raw
    man.write_bytes(raw.replace(old, new, 1))
    assert len(Store(s.uri).read()) == 9
    assert run_cli("store", "info", s.uri).returncode == 0
    res = Store(s.uri).check(repair=True)
    assert res.manifest_restored and res.rows_dropped == 0, res
    assert man.read_bytes() == raw and Store(s.uri).check().ok


# ---- 6: a file where a partition's directory belongs, a commit pending -------------------------


def test_a_file_in_a_partition_directorys_place_while_a_commit_is_pending(tmp_path, monkeypatch):
    """'store info' sent the user to 'store check' / '--repair', and both, like every ingest,
    failed with "[Errno 17] File exists: .../up/a" (exit 1) before inspecting anything."""
    store = str(tmp_path / "st")
    committed_store(Path(store))
    _killed_after_publish(monkeypatch, store)
    shutil.rmtree(Path(store, "up/a"))
    Path(store, "up/a").write_bytes(b"x")
    assert len(Store(store).read()) == 180          # read from staging meanwhile
    r = run_cli("store", "info", store)
    assert r.returncode == 0, r.stderr
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "Errno" not in r.stderr, r.stdout + r.stderr
    assert "up/a (untracked): is a file, not a directory" in r.stderr, r.stderr
    with pytest.raises(StoreDamagedError, match="up/a: damaged store file: is a file, not a directory"):
        Store(store, notify=None).commit(validate(make_rows(1, run_prefix="z")).table)
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert Path(store, "_damaged/0000000003/up/a").read_bytes() == b"x"   # set aside, where the line says
    assert run_cli("store", "check", store).returncode == 0
    assert len(Store(store).read()) == 180
    import pandas as pd
    assert len(pd.read_parquet(store)) == 180


# ---- 7: a malformed URI ---------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["s3://[lab/x", "file://[x/y"])
def test_a_malformed_store_uri_is_one_line(uri):
    one_error_line(run_cli("store", "info", uri), uri, "not a valid store URI")


# ---- 9: rows deleted and written again in one commit -----------------------------------------


def test_rows_of_deleted_runs_written_again_are_counted_as_stored(tmp_path):
    """Recommitting two rows with delete_runs for their runs returned, and logged, inserted=0,
    updated=0, deleted=2, while the store held both rows: ``deleted`` counts what left the store,
    a row written again is updated or unchanged by its content."""
    t = validate(make_rows(2, ds_tasks=("a",))).table
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(t)
    runs = sorted(set(zip(t.column("source").to_pylist(), t.column("run_id").to_pylist())))
    r = s.commit(t, delete_runs=runs)
    # the same rows: nothing left the store and nothing changed, so no version
    assert (r.version, r.deleted, r.inserted, r.updated, r.unchanged) == (None, 0, 0, 0, 2) and len(s.read()) == 2
    changed = t.set_column(t.schema.get_field_index("ds_accuracy"), "ds_accuracy",
                           pa.array([0.5] * t.num_rows, t.schema.field("ds_accuracy").type))
    r = s.commit(changed, delete_runs=runs)
    assert (r.deleted, r.rewritten, r.inserted, r.updated, r.unchanged) == (0, 2, 0, 2, 0)
    assert s.history()[-1]["rewritten"] == 2 and s.history()[-1]["deleted"] == 0
    assert s.read().column("ds_accuracy").to_pylist() == [0.5, 0.5]
    r = s.commit(None, delete_runs=runs[:1])
    assert (r.deleted, r.rewritten) == (1, 0) and len(s.read()) == 1


# ---- a listing error after the commit point ---------------------------------------------------


def test_a_listing_error_after_publishing_never_lets_a_pruned_name_stand(tmp_path, monkeypatch):
    """A writer stalled while others committed past KEEP_MANIFESTS, then published its version
    under a name pruning had freed. On any error listing the manifests, "the commit stands": it
    was finalized, deleting partition a's file, which the latest version still used."""
    import meta_study.store._store as store_mod
    from meta_study.store._files import _Files

    monkeypatch.setattr(store_mod, "KEEP_MANIFESTS", 2)
    store = str(tmp_path / "st")
    s = committed_store(Path(store), runs=3, tasks=("a",))
    stale = s._load()                                   # version 1: the stalled writer's view
    for i in range(3):                                  # others commit to partition b: 2..4, 1 and 2 pruned
        s.commit(validate(make_rows(3, ds_tasks=("b",), seed=i + 1)).table)
    assert s._manifest_versions() == [3, 4]
    latest_a = next(e for e in s._load().data if e["ds_task"] == "a")

    real_create, real_versions = _Files.create_exclusive, Store._manifest_versions
    failing = []

    def create(self, rel, data, tmp_rel):   # noqa: ANN001
        ok = real_create(self, rel, data, tmp_rel)
        if ok and rel.endswith("0000000002.json"):
            failing.append(1)                           # the listing right after the commit point fails
        return ok

    def versions(self):   # noqa: ANN001
        if failing:
            failing.clear()
            raise OSError("listing failed: a network blip")
        return real_versions(self)

    monkeypatch.setattr(_Files, "create_exclusive", create)
    monkeypatch.setattr(Store, "_manifest_versions", versions)
    loads = iter([stale])
    real_load = Store._load
    monkeypatch.setattr(Store, "_load", lambda self, version=None: next(loads, None) or real_load(self, version))
    w = Store(store, notify=None, lock_timeout_s=5)
    with pytest.raises(StoreConflictError):
        w.commit_stream([(validate(make_rows(3, ds_tasks=("a",), seed=7)).table, None)])
    monkeypatch.undo()
    assert Path(store, latest_a["path"]).exists()       # the latest version's file is still there
    assert Store(store).version == 4 and len(Store(store).read()) == 6 and Store(store).check().ok


# ---- lease loops --------------------------------------------------------------------------------


class _RefusingEndpoint:
    """An S3 endpoint that answers every conditional PUT with 412 and holds a released lease (a
    half-compatible implementation): the lease loops went round at full speed, forever."""

    shown = "s3://lab/x"

    def __init__(self, released: bool) -> None:
        import datetime as dt

        from meta_study.store._s3 import S3Object

        now = dt.datetime.now(dt.timezone.utc)
        rec = {"pid": 1, "host": "h", "user": "u", "since": "s", "lease_s": 60, "released": released}
        self.obj = S3Object(json.dumps(rec).encode(), '"e1"', now, now)
        self.puts = 0

    def create(self, rel: str, data: bytes) -> None:
        return self._put()

    def replace(self, rel: str, data: bytes, etag: str) -> None:
        return self._put()

    def _put(self) -> None:
        self.puts += 1
        if self.puts > 2000:
            raise RuntimeError("spinning")
        return None

    def get(self, rel: str):   # noqa: ANN201
        return self.obj


def test_lease_loops_never_spin_and_time_out(monkeypatch):
    from meta_study.store import _lock

    ep = _RefusingEndpoint(released=True)
    with pytest.raises(StoreLockedError, match="could not take the store's lease"):
        with _lock._lease_lock(ep, 0.5, "s3://lab/x", 60.0):   # type: ignore[arg-type]
            pass
    assert ep.puts < 100, ep.puts     # it timed out (raised above) without spinning; no wall clock (load)
    monkeypatch.setattr(_lock, "BREAK_TRIES", 5)
    held = _RefusingEndpoint(released=False)
    with pytest.raises(OSError, match="could not break the lease"):
        _lock.break_lease(held)   # type: ignore[arg-type]
    assert held.puts == 5


def test_a_huge_or_infinite_lease_length_is_one_line(monkeypatch):
    from meta_study.store._lock import lease_seconds

    for raw in ("inf", "nan", "1e12"):
        monkeypatch.setenv("META_STUDY_LEASE_S", raw)
        with pytest.raises(UserError, match="META_STUDY_LEASE_S"):
            lease_seconds()
    monkeypatch.setenv("META_STUDY_LEASE_S", "0.2")
    assert lease_seconds() == 1.0


def test_a_released_lease_record_with_a_huge_length_is_free():
    """A released record of a writer that ran with META_STUDY_LEASE_S=1e12 made every later
    writer and 'store unlock' fail with "OverflowError: date value out of range"."""
    import datetime as dt

    from meta_study.store._lock import _state_of
    from meta_study.store._s3 import S3Object

    now = dt.datetime.now(dt.timezone.utc)
    for lease_s, released in ((1e300, True), (1e300, False), (float("inf"), False)):
        obj = S3Object(json.dumps({"pid": 1, "lease_s": lease_s, "released": released}).encode(), '"e"', now, now)
        holder, etag, free = _state_of(obj)
        assert etag == '"e"' and free == released and (holder is None) == released
        if holder is not None:   # held: judged by the default lease, its expiry readable
            assert holder.expires_at and holder.expires_at != "?"


# ---- the local lock file ------------------------------------------------------------------------


def test_a_dangling_link_as_the_lock_file_is_refused_not_followed(tmp_path):
    """The lock was opened with O_CREAT and without O_NOFOLLOW: a dangling symbolic link at
    ``_meta/LOCK`` created its target, anywhere outside the store."""
    s = committed_store(tmp_path / "st", runs=2)
    lock = tmp_path / "st/_meta/LOCK"
    lock.unlink()
    outside = tmp_path / "outside" / "made-by-the-lock"
    outside.parent.mkdir()
    os.symlink(outside, lock)
    with pytest.raises(UserError, match="is a symbolic link"):
        s.commit(validate(make_rows(1, run_prefix="z")).table)
    assert not outside.exists()


# ---- S3 -----------------------------------------------------------------------------------------


def _uri(request, name: str = "") -> str:
    return f"s3://lab/review2-{name or request.node.name.replace('[', '-').replace(']', '')}"


@pytest.mark.slow(10)
def test_an_s3_prefix_with_a_percent_escape_is_one_store(request, s3, s3env):
    """boto3 wrote the manifest and the lease under ``a%20b/``, pyarrow the data and the copy
    under ``a b/``: the first commit said version 1, then the store did not exist."""
    pytest.importorskip("boto3")
    uri = _uri(request, "pct%20b")
    s = Store(uri, lease_s=5, notify=None)
    assert s.commit(validate(make_rows(3, ds_tasks=("a",))).table).version == 1
    assert Store(uri).version == 1 and len(Store(uri).read()) == 3
    assert Store(uri, notify=None).commit(validate(make_rows(2, ds_tasks=("a",), seed=1, run_prefix="y")).table).version == 2
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="lab", Prefix="review2-pct")["Contents"]]
    assert keys and all(k.startswith("review2-pct b/") for k in keys), keys
    assert "review2-pct b/_meta/manifests/0000000002.json" in keys and Store(uri).check().ok


@pytest.mark.slow(10)
def test_a_released_s3_lease_of_a_huge_length_lets_writers_and_unlock_go_on(request, s3, s3env, tmp_path):
    pytest.importorskip("boto3")
    uri = _uri(request)
    prefix = uri.split("/", 3)[3]
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/_meta/LEASE.json",
                           Body=json.dumps({"pid": 1, "host": "h", "lease_s": 1e300, "released": True}).encode())
    assert Store(uri, lease_s=5, notify=None).commit(validate(make_rows(1)).table).version == 1
    r = run_cli("store", "unlock", uri)
    assert r.returncode == 0 and "not locked" in r.stdout, r.stdout + r.stderr
    r = run_cli("store", "info", uri, env={"META_STUDY_LEASE_S": "inf"})
    assert r.returncode == 0, r.stderr   # reading needs no lease
    csv = tmp_path / "x.csv"
    make_rows(1, run_prefix="c").drop(columns=["extra"]).to_csv(csv, index=False)
    one_error_line(run_cli("ingest", str(csv), "--store", uri, "--quiet", env={"META_STUDY_LEASE_S": "inf"}),
                   "META_STUDY_LEASE_S='inf'")


@pytest.mark.slow(15)
def test_opening_an_s3_store_costs_no_request_per_partition(request, s3, s3env, monkeypatch):
    """Deciding whether the last commit was finished asked S3 about every live file (a HEAD and
    a LIST each): 2.6 s for 300 partitions on the local server, minutes against AWS."""
    pytest.importorskip("boto3")
    from meta_study.store._files import _Files

    calls = {"n": 0}
    real = {name: getattr(_Files, name) for name in ("exists", "kind", "file_size") if hasattr(_Files, name)}

    def counting(name: str):   # noqa: ANN202
        def call(self, rel):   # noqa: ANN001, ANN202
            calls["n"] += 1
            return real[name](self, rel)
        return call

    per_size = {}
    for n in (4, 16):
        uri = _uri(request, f"open-{n}")
        Store(uri, lease_s=5, notify=None).commit(
            validate(make_rows(1, ds_tasks=tuple(f"t{i}" for i in range(n)))).table)
        Store(uri, lease_s=5, notify=None).commit(
            validate(make_rows(1, ds_tasks=tuple(f"t{i}" for i in range(n)), seed=3)).table)   # supersedes every file
        for name in real:
            monkeypatch.setattr(_Files, name, counting(name))
        calls["n"] = 0
        s = Store(uri, notify=None).require()
        assert not s.summary().pending_finalize
        per_size[n] = calls["n"]
        for name, fn in real.items():
            monkeypatch.setattr(_Files, name, fn)
    assert per_size[16] == per_size[4], per_size


def test_an_s3_body_cut_off_while_read_is_one_line_oserror():
    """The body of a GET is read after the call returned, outside its error handling: a cut
    connection was a botocore traceback from the CLI, and killed the lease's heartbeat thread
    silently (the lease then lapsed under a live writer)."""
    botocore = pytest.importorskip("botocore")
    import datetime as dt

    from meta_study.store._s3 import S3Objects

    class Body:
        def read(self) -> bytes:
            raise botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2)

    class Client:
        def get_object(self, **kw):   # noqa: ANN003, ANN201
            return {"Body": Body(), "ETag": '"e"', "LastModified": dt.datetime.now(dt.timezone.utc)}

    objects = S3Objects("s3://lab/x", "s3://lab/x")
    objects._client = Client()
    with pytest.raises(OSError, match="s3://lab/x/_meta/LEASE.json: GET failed while reading"):
        objects.get("_meta/LEASE.json")
