"""Review of the store's file and object layer and its lock (session 36): what a demanding user
hit there. S3 tests use the real S3 API server of ``tests/s3_server.py`` (moto) on 127.0.0.1."""

from __future__ import annotations

import pytest

from conftest import make_rows
from meta_study.store import Store
from meta_study.validation import validate


def _uri(request) -> str:
    return f"s3://lab/{request.node.name.replace('[', '-').replace(']', '')}"


@pytest.mark.slow
def test_s3_directory_at_a_data_path_is_set_aside_and_the_store_stays_usable(request, s3, s3env):
    """A "directory" (objects under ``<data file>/``) where a data file belongs on S3: repair
    moved it with pyarrow's single-object move, which failed ("NO_SUCH_KEY during CopyObject")
    after the repair's version was published, and every later command, ``store check``
    included, failed on finishing that version."""
    pytest.importorskip("boto3")
    uri = _uri(request)
    prefix = uri.split("lab/", 1)[1]
    Store(uri, lease_s=5).commit(validate(make_rows(3)).table)
    c = s3.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="lab", Prefix=prefix + "/")["Contents"]]
    data = sorted(k for k in keys if k.endswith(".parquet"))[0]
    c.delete_object(Bucket="lab", Key=data)
    c.put_object(Bucket="lab", Key=f"{data}/inner.bin", Body=b"kept")
    rel = data[len(prefix) + 1:]
    assert any(d.path == rel and "directory" in d.problem for d in Store(uri).check().damage)

    r = Store(uri).check(repair=True)
    assert r.repaired_version == 2 and r.rows_dropped == 3
    kept = c.get_object(Bucket="lab", Key=f"{prefix}/_damaged/0000000002/{rel}/inner.bin")["Body"].read()
    assert kept == b"kept"                                      # set aside, never deleted
    assert not c.list_objects_v2(Bucket="lab", Prefix=data).get("Contents")   # nothing left in its place
    after = Store(uri)
    assert after.check().ok and after.version == 2 and len(after.read()) == 3


def test_a_second_set_aside_under_one_version_keeps_the_first(tmp_path):
    """The copy (or the manifest) of one version damaged and repaired twice: both repairs set
    the bad bytes aside at ``_damaged/<version>/<path>`` (no new version is committed), and the
    second replaced the first (os.replace; keep_copy's fallback copy overwrote too)."""
    d = tmp_path / "S"
    Store(str(d)).commit(validate(make_rows(2)).table)
    manifests = d / "_meta" / "manifests"
    for name in ("0000000001.copy.json", "0000000001.json"):
        for junk in (b"first bad bytes", b"second bad bytes"):
            (manifests / name).write_bytes(junk)
            r = Store(str(d)).check(repair=True)
            assert r.repaired_version == 1 and [x.path for x in r.damage] == [f"_meta/manifests/{name}"]
        aside = d / "_damaged" / "0000000001" / "_meta" / "manifests"
        kept = sorted(p.read_bytes() for p in aside.iterdir() if p.name.startswith(name))
        assert kept == [b"first bad bytes", b"second bad bytes"], kept
    s = Store(str(d))
    assert s.check().ok and len(s.read()) == 4


def _commit_as_another_user(store: str, table) -> str:
    """Commit ``table`` to ``store`` from a forked child running as user nobody (umask 0); what
    it says: "ok VERSION" or "TYPE: message"."""
    import os

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.umask(0)
            out = f"ok {Store(store).commit(table).version}"
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = f"{type(e).__name__}: {e}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.slow
def test_a_store_shared_by_a_group_takes_commits_from_every_user():
    """The lock file was created 0o644 whatever the umask: in a store whose directories are
    group- (here world-) writable, the user who wrote first kept every other user out with a
    bare "[Errno 13] Permission denied: '.../_meta/LOCK'". A lock file that is still not
    writable (made by an older meta-study) is one line saying what to change."""
    import os
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root, to commit as a second user")
    top = tempfile.mkdtemp(prefix="meta-study-shared-")   # not under pytest's 0700 tmp_path
    try:
        os.chmod(top, 0o777)
        store = os.path.join(top, "S")
        old = os.umask(0)
        try:
            Store(store).commit(validate(make_rows(2)).table)
        finally:
            os.umask(old)
        assert _commit_as_another_user(store, validate(make_rows(2, run_prefix="b")).table) == "ok 2"
        s = Store(store)
        assert s.version == 2 and len(s.read()) == 8 and s.check().ok

        lock = os.path.join(store, "_meta", "LOCK")
        os.chmod(lock, 0o644)
        said = _commit_as_another_user(store, validate(make_rows(2, run_prefix="c")).table)
        assert said.startswith("UserError: ") and f"'chmod g+w {lock}'" in said and "\n" not in said, said
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow
def test_s3_store_in_a_missing_bucket_says_so(s3env):
    """A store URI naming a bucket the endpoint lacks: the commit failed with
    "FileNotFoundError: s3://nobucket/st/_meta/LEASE.json", a file the user never named."""
    pytest.importorskip("boto3")
    from meta_study.errors import UserError

    with pytest.raises(UserError) as e:
        Store("s3://no-such-bucket-s36/st", lease_s=5).commit(validate(make_rows(1)).table)
    assert "the bucket 'no-such-bucket-s36' does not exist" in str(e.value) and "LEASE" not in str(e.value)


@pytest.mark.slow
def test_s3_lease_object_of_junk_too_deep_for_json_is_no_traceback(request, s3, s3env):
    """``_meta/LEASE.json`` replaced by junk ("[[[[..."): json's RecursionError escaped the
    lease's parse, a traceback from every writer, ``store info`` of the holder and ``store unlock``."""
    pytest.importorskip("boto3")
    uri = _uri(request)
    Store(uri, lease_s=5).commit(validate(make_rows(1)).table)
    s3.client().put_object(Bucket="lab", Key=f"{uri.split('lab/', 1)[1]}/_meta/LEASE.json", Body=b"[" * 100_000)
    holder = Store(uri).lock_holder()
    assert holder is not None and holder.pid is None and holder.host.startswith("[[[") and len(holder.host) <= 200
    assert Store(uri).unlock() is not None                     # broken like any other lease
    s = Store(uri, lease_s=5)
    assert s.commit(validate(make_rows(1, run_prefix="b")).table).version == 2 and s.lock_holder() is None


@pytest.mark.slow
def test_s3_object_beside_a_live_partition_directory_is_repaired_once(request, s3, s3env):
    """An object ``up/c`` beside the partition directory ``up/c/`` on S3: ``store check`` reported
    it, and every ``--repair`` skipped it (the path was a live directory), so each repair committed
    a version that fixed nothing and ``check`` kept failing."""
    pytest.importorskip("boto3")
    uri = _uri(request)
    prefix = uri.split("lab/", 1)[1]
    Store(uri, lease_s=5).commit(validate(make_rows(3)).table)
    c = s3.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="lab", Prefix=prefix + "/")["Contents"]]
    data = sorted(k for k in keys if k.endswith(".parquet"))[0]
    beside = data.rsplit("/", 1)[0]            # the live partition directory's own name, as an object
    c.put_object(Bucket="lab", Key=beside, Body=b"stray")
    rows = len(Store(uri).read())
    assert not Store(uri).check().ok
    r = Store(uri).check(repair=True)
    assert r.repaired_version == 2
    after = Store(uri)
    assert after.check().ok and len(after.read()) == rows, after.check().damage
