"""Review of the store's merge, lock, S3 calls and manifest (session 38): each defect reproduced
here first. S3 tests use the real S3 API server of ``tests/s3_server.py`` (moto) on 127.0.0.1."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study.store import Store
from meta_study.validation import validate


def _uri(request) -> str:
    return f"s3://lab/s38-{request.node.name.replace('[', '-').replace(']', '')}"


@pytest.mark.parametrize("junk", [b"[" * 100_000, b'{"version": 1, "data": ' + b"[" * 100_000 + b"}"],
                         ids=["array", "inside-an-object"])
def test_a_manifest_nested_too_deep_for_json_is_damage_read_from_its_copy(tmp_path, junk):
    """A manifest damaged into "[[[[..." (deeper than json's recursion limit): RecursionError is
    not a ValueError, so it escaped as a traceback from every command, ``store check`` included,
    instead of being read from the copy like any other damaged manifest."""
    d = tmp_path / "st"
    Store(str(d)).commit(validate(make_rows(2)).table)
    (d / "_meta" / "manifests" / "0000000001.json").write_bytes(junk)
    assert len(Store(str(d)).read()) == 4                       # read from the copy
    r = run_cli("store", "check", str(d))
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout, (r.stdout, r.stderr)
    assert "0000000001.json" in r.stdout + r.stderr
    fixed = Store(str(d)).check(repair=True)
    assert fixed.manifest_restored and Store(str(d)).check().ok


def test_a_manifest_too_deep_without_a_copy_is_one_line(tmp_path):
    d = tmp_path / "st"
    Store(str(d)).commit(validate(make_rows(2)).table)
    for name in ("0000000001.json", "0000000001.copy.json"):
        (d / "_meta" / "manifests" / name).write_bytes(b"[" * 100_000)
    one_error_line(run_cli("store", "info", str(d)), "damaged")


def test_a_store_file_that_cannot_be_read_for_permission_is_not_called_damaged(tmp_path, monkeypatch):
    """A data file this user may not read (another user's umask 077 in a shared store) was
    "damaged store file: Permission denied; ... '--repair' sets the files aside and drops their
    rows": wrong, and following it would drop the rows of a sound file. It is the OS's error."""
    from meta_study.errors import StoreDamagedError
    from meta_study.store._files import _Files

    d = tmp_path / "st"
    Store(str(d)).commit(validate(make_rows(2)).table)
    real = _Files.read_bytes

    def denied(self, rel, *a, **kw):
        if rel.endswith(".parquet") and not rel.startswith("_"):
            raise PermissionError(13, "Permission denied", self.p(rel))
        return real(self, rel, *a, **kw)

    monkeypatch.setattr(_Files, "read_bytes", denied)
    with pytest.raises(PermissionError) as e:
        Store(str(d)).read()
    assert not isinstance(e.value, StoreDamagedError)


def test_an_object_store_read_that_fails_is_not_called_damaged(tmp_path, monkeypatch):
    """On an object store, a GET that fails (an endpoint gone, throttling, credentials refused)
    says nothing about the file: it was "damaged store file", exit 2, with advice to repair."""
    from meta_study.errors import StoreDamagedError
    from meta_study.store._merge import _Verified

    class Remote:
        local = False

        def read_bytes(self, rel, size=None, limit=None):
            raise OSError("When reading information for key 'up/a/part.parquet' in bucket 'lab': AWS Error "
                          "NETWORK_CONNECTION during GetObject operation: curlCode: 7, Couldn't connect to server")

    v = _Verified(Remote(), "s3://lab/st")   # type: ignore[arg-type]
    with pytest.raises(OSError) as e:
        v.read_file({"path": "up/a/part.parquet", "bytes": 10}, None)
    assert not isinstance(e.value, StoreDamagedError) and "NETWORK_CONNECTION" in str(e.value)


def test_a_local_file_of_another_size_is_still_damage(tmp_path):
    from meta_study.errors import StoreDamagedError

    d = tmp_path / "st"
    Store(str(d)).commit(validate(make_rows(2, ds_tasks=("a",))).table)
    f = next((d / "up" / "a").glob("*.parquet"))
    f.write_bytes(f.read_bytes() + b"x")
    with pytest.raises(StoreDamagedError, match="bytes, the manifest says"):
        Store(str(d)).read()


@pytest.mark.slow
def test_s3_if_match_on_a_missing_object_is_a_failed_precondition(request, s3env):
    """S3 answers ``If-Match`` on a key that is gone with 404 NoSuchKey, not 412: ``replace``
    raised FileNotFoundError naming the key instead of returning None."""
    pytest.importorskip("boto3")
    from meta_study.store._s3 import S3Objects

    uri = _uri(request)
    o = S3Objects(uri, uri)
    assert o.replace("_meta/LEASE.json", b"{}", '"0123456789abcdef0123456789abcdef"') is None
    etag = o.create("x.json", b"1")
    assert etag is not None and o.replace("x.json", b"2", etag) is not None


@pytest.mark.slow
def test_s3_a_lease_deleted_while_a_writer_takes_it_over_is_taken_again(request, s3, s3env, monkeypatch):
    """The expired lease deleted (by a person, a lifecycle rule) between a waiting writer's GET
    and its conditional takeover: the writer failed with "s3://lab/.../_meta/LEASE.json", exit 1,
    where the code means to look again and create it."""
    pytest.importorskip("boto3")
    import json

    from meta_study.store import _lock

    uri = _uri(request)
    prefix = uri.split("lab/", 1)[1]
    Store(uri, lease_s=5).commit(validate(make_rows(1)).table)
    dead = {"pid": 1, "host": "gone", "user": "u", "since": "x", "owner": "o", "lease_s": 1}
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/_meta/LEASE.json", Body=json.dumps(dead).encode())
    real = _lock._state_of
    deleted = []

    def then_deleted(obj):
        out = real(obj)
        if out[2] and out[0] is not None and not deleted:   # expired: delete it before the takeover
            s3.client().delete_object(Bucket="lab", Key=f"{prefix}/_meta/LEASE.json")
            deleted.append(True)
        return out

    monkeypatch.setattr(_lock, "_state_of", then_deleted)
    s = Store(uri, lease_s=5, lock_timeout_s=30)
    assert s.commit(validate(make_rows(1, run_prefix="b")).table).version == 2
    assert deleted and s.lock_holder() is None


@pytest.mark.parametrize("as_", ["lists", "arrays"])
def test_delete_runs_given_as_lists_or_array_rows_delete_them(tmp_path, as_):
    """``delete_runs`` as ``df[["source", "run_id"]].values.tolist()`` (or NumPy rows): a store
    with a quarantine failed the commit with "TypeError: unhashable type: 'list'" (without one,
    the same call worked), and the run's quarantined rows are settled like a tuple's."""
    import pandas as pd

    s = Store(str(tmp_path / "st"), notify=None)
    q = pd.DataFrame({"source": ["src"], "run_id": ["r0"], "reason": ["bad"], "raw": ["{}"]})
    s.commit(validate(make_rows(3)).table, quarantine=q)
    pairs = s.to_pandas()[["source", "run_id"]].drop_duplicates().sort_values("run_id").head(1).to_numpy()
    runs = pairs.tolist() if as_ == "lists" else list(pairs)
    r = s.commit(delete_runs=runs)
    assert r.deleted == 2 and sorted(s.to_pandas().run_id.unique()) == ["r1", "r2"]
    assert len(s.quarantine()) == 0          # r0's quarantined row settled with it


@pytest.mark.parametrize("new", [pa.array(["1", "2"]), pa.array([1.0, 2.0])], ids=["strings", "floats"])
def test_a_state_column_whose_type_changed_with_equal_values_is_stored(tmp_path, new):
    """A state table whose column changed type but whose values cast to the old type equal the
    old ones (int64 1, 2 -> strings "1", "2" or floats 1.0, 2.0) was taken for unchanged: no
    version, and ``read_state`` kept giving the old int64 column."""
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(state={"src": pa.table({"a": pa.array([1, 2], pa.int64())})})
    assert s.commit(state={"src": pa.table({"a": new})}).version == 2
    back = s.read_state("src").column("a")
    assert back.type == new.type and back.to_pylist() == new.to_pylist()
    assert s.commit(state={"src": pa.table({"a": new})}).version is None   # the same again: no version


def test_a_store_of_a_newer_schema_is_refused_not_rewritten(tmp_path):
    """The manifest records the schema its rows were written with, and nothing read it: a store
    written by a newer meta-study (rows with columns this one does not know) was merged by this
    one, rewriting the partitions with its own columns and dropping the others without a word."""
    import hashlib
    import json

    from meta_study.errors import UserError
    from meta_study.schema import SCHEMA_VERSION
    from meta_study.store import Store
    from meta_study.store._manifest import _dumps
    from meta_study.validation import validate

    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(validate(make_rows(2)).table)
    for name in ("0000000001.json", "0000000001.copy.json"):
        m = tmp_path / "st" / "_meta" / "manifests" / name
        d = json.loads(m.read_text())
        d.pop("checksum")
        d["schema_version"] = SCHEMA_VERSION + 1
        d["checksum"] = hashlib.sha256(_dumps(d)).hexdigest()
        m.write_bytes(_dumps(d))
    with pytest.raises(UserError, match=f"store schema {SCHEMA_VERSION + 1} is newer than this meta-study"):
        s.commit(validate(make_rows(1, run_prefix="new")).table)
    with pytest.raises(UserError, match="upgrade meta-study"):
        s.read()
