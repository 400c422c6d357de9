"""Review s50b of the store on S3: moving a file out of a directory, and deleting a staging
directory, never empty an object stored under a directory's key (``up/a/``, ``_staging/``), and
``store check`` reports such an object (pyarrow lists it as a directory) instead of never seeing
it. A real S3 API on 127.0.0.1 (``tests/s3_server.py``)."""

from __future__ import annotations

import pytest

from conftest import make_rows, run_cli
from meta_study.store import Store
from meta_study.validation import validate

boto3 = pytest.importorskip("boto3")


def _prefix(request) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def _objects(s3, prefix: str) -> dict[str, bytes]:
    c = s3.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="lab", Prefix=f"{prefix}/").get("Contents", [])]
    return {k[len(prefix) + 1:]: c.get_object(Bucket="lab", Key=k)["Body"].read() for k in keys}


# ---- 1: moves and staging deletes keep the bytes under a directory's key ------------------------------


def test_a_move_out_of_a_directory_keeps_the_bytes_stored_under_its_key(request, s3, s3env):
    """pyarrow's ``move`` (copy, delete) then PUT an empty ``<parent>/`` marker of the source: an
    object stored at ``up/a/`` lost its bytes when a damaged file was set aside from ``up/a``."""
    prefix = _prefix(request)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{prefix}/up/a/", Body=b"notes under up/a/")
    c.put_object(Bucket="lab", Key=f"{prefix}/up/a/f.parquet", Body=b"bad bytes")
    assert f.move("up/a/f.parquet", "_damaged/0000000002/up/a/f.parquet") == "_damaged/0000000002/up/a/f.parquet"
    assert _objects(s3, prefix) == {"up/a/": b"notes under up/a/", "_damaged/0000000002/up/a/f.parquet": b"bad bytes"}


def test_a_move_another_writer_finished_first_is_no_error(request, s3, s3env):
    """Two writers finishing one commit: the second finds the source gone and the file in place."""
    prefix = _prefix(request)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/up/a/f.parquet", Body=b"rows")
    assert f.move("_staging/t/up/a/f.parquet", "up/a/f.parquet") == "up/a/f.parquet"
    with pytest.raises(OSError):
        f.move("_staging/t/up/b/f.parquet", "up/b/f.parquet")   # nowhere at all: still an error


def test_an_s3_commit_keeps_bytes_stored_at_the_staging_key_and_leaves_no_markers(request, s3, s3env):
    """Moving staged files into place re-created ``_staging/<txn>/up/a/`` markers, and the garbage
    collection's ``delete_dir`` of ``_staging/<txn>`` then PUT an empty ``_staging/``: an object
    stored there lost its bytes at every commit. Now nothing of the staging directory is left."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(validate(make_rows(2)).table)
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/_staging/", Body=b"kept at _staging/")
    r = Store(uri, notify=None).commit(validate(make_rows(3, seed=1)).table)
    assert r.version == 2
    staging = {k: v for k, v in _objects(s3, prefix).items() if k.startswith("_staging/")}
    assert staging == {"_staging/": b"kept at _staging/"}
    assert len(Store(uri).read()) == 6 and Store(uri).check().ok   # nothing plain readers read


def test_an_aborted_staging_directory_is_deleted_without_touching_its_parent_key(request, s3, s3env):
    prefix = _prefix(request)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{prefix}/_staging/", Body=b"kept")
    for i in range(3):
        c.put_object(Bucket="lab", Key=f"{prefix}/_staging/0000000009-abc/up/{i}/f.parquet", Body=b"x")
    c.put_object(Bucket="lab", Key=f"{prefix}/_staging/0000000009-abcd/f.parquet", Body=b"other txn")
    f.rmtree("_staging/0000000009-abc")
    assert _objects(s3, prefix) == {"_staging/": b"kept", "_staging/0000000009-abcd/f.parquet": b"other txn"}


def test_a_directory_set_aside_keeps_every_object_and_the_bytes_of_its_own_key(request, s3, s3env):
    """A "directory" where a data file belongs: every object under it, and the bytes of the object
    at its own key, go to ``_damaged/``; its parent's key keeps its bytes."""
    prefix = _prefix(request)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    c = s3.client()
    for key, body in {"up/a/": b"parent notes", "up/a/f.parquet/": b"written under a '/' key",
                      "up/a/f.parquet/x/inner.bin": b"inner", "up/a/f.parquet/x/": b""}.items():
        c.put_object(Bucket="lab", Key=f"{prefix}/{key}", Body=body)
    f.move("up/a/f.parquet", "_damaged/0000000002/up/a/f.parquet")
    assert _objects(s3, prefix) == {
        "up/a/": b"parent notes", "_damaged/0000000002/up/a/f.parquet": b"written under a '/' key",
        "_damaged/0000000002/up/a/f.parquet/x/inner.bin": b"inner", "_damaged/0000000002/up/a/f.parquet/x/": b""}


# ---- 2: store check reports an object under a directory's key -----------------------------------------


def test_store_check_names_an_object_under_a_directory_key_and_repair_sets_it_aside(request, s3, s3env):
    """pyarrow lists an object ``up/a/`` holding bytes as a file ``up/a``, the name of the live
    partition directory too: ``store check`` said "up/a (untracked)", and every ``--repair`` said
    it set it aside, committed a version and left it (the live directory is never moved). It is
    named by its key now, and ``--repair`` keeps its bytes under ``_damaged/``; an empty one (a
    console's "folder") and one under ``_staging/`` (plain readers skip it) are not reported."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(validate(make_rows(2)).table)
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{prefix}/up/a/", Body=b"notes kept under up/a/")
    c.put_object(Bucket="lab", Key=f"{prefix}/up/z/", Body=b"notes under up/z/")      # no partition there
    c.put_object(Bucket="lab", Key=f"{prefix}/up/b/", Body=b"")   # an S3 console's folder: nothing to say
    c.put_object(Bucket="lab", Key=f"{prefix}/_staging/", Body=b"not read by plain readers")
    r = run_cli("store", "check", uri, env=s3env)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("damaged: ")]
    assert lines == ["damaged: up/a/ (untracked): an object of 22 bytes whose key ends in '/': not part of the "
                     "store; pyarrow lists it as a file 'up/a' and plain readers fail on it",
                     "damaged: up/z/ (untracked): an object of 17 bytes whose key ends in '/': not part of the "
                     "store; pyarrow lists it as a file 'up/z' and plain readers fail on it"], r.stderr
    assert _objects(s3, prefix)["up/a/"] == b"notes kept under up/a/"   # reported, never touched

    rep = Store(uri, notify=None).check(repair=True)
    assert rep.repaired_version == 2 and rep.rows_dropped == 0
    assert rep.moved == ("_damaged/0000000002/up/a", "_damaged/0000000002/up/z")
    objs = _objects(s3, prefix)
    assert objs["_damaged/0000000002/up/a"] == b"notes kept under up/a/" and "up/a/" not in objs
    assert objs["_damaged/0000000002/up/z"] == b"notes under up/z/" and "up/z/" not in objs
    assert objs["up/b/"] == b"" and objs["_staging/"] == b"not read by plain readers"
    after = Store(uri)
    assert after.check().damage == () and len(after.read()) == 4


def test_a_staging_directory_is_deleted_where_the_endpoint_refuses_batch_deletes(request, s3, s3env, monkeypatch):
    """Some S3-compatible stores refuse DeleteObjects without a Content-MD5 (botocore >= 1.36 sends
    a CRC32 instead): the objects are then deleted one by one, never left behind."""
    from botocore.exceptions import ClientError

    prefix = _prefix(request)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    c = s3.client()
    for i in range(3):
        c.put_object(Bucket="lab", Key=f"{prefix}/_staging/0000000009-abc/up/{i}/f.parquet", Body=b"x")

    refused = []

    def refuse(**kw):  # noqa: ANN003
        refused.append(len(kw["Delete"]["Objects"]))
        raise ClientError({"Error": {"Code": "MissingContentMD5", "Message": "Missing required header"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "DeleteObjects")

    monkeypatch.setattr(f.objects().client, "delete_objects", refuse)
    f.rmtree("_staging/0000000009-abc")
    assert _objects(s3, prefix) == {} and refused == [3]


def test_store_check_reads_on_where_boto3_cannot_list(request, s3, s3env, monkeypatch):
    """The keys that end in '/' are listed with boto3, which reads the AWS configuration pyarrow
    does not (``AWS_PROFILE`` naming no profile: pyarrow reads on with the keys in the environment):
    ``store check``, which checks a store it cannot lock without the lock, then reads on with what
    pyarrow lists instead of failing on that listing."""
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(validate(make_rows(2)).table)
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    r = Store(f"s3://lab/{prefix}", notify=None).check()
    assert r.damage == () and r.files == 2
