"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: a commit deletes
the files it superseded with one DELETE each and no HEAD first, prunes old manifests with one
DeleteObjects, and ``check_writable`` asks one LIST of the manifests of an existing store (it
asked pyarrow what is at the root first: a HEAD and a LIST), still refusing in one line what it
refused before."""

from __future__ import annotations

import errno

import pytest

from meta_study.errors import UserError
from meta_study.store import Store, _store

boto3 = pytest.importorskip("boto3")

# the server's request log, as test_s51_store_s3 and test_s53_s3 count it
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402


def _superseded(uri: str) -> list[str]:
    return sorted(e["path"] for e in Store(uri)._load().data)


# ---- 1: the deletes of a commit ask nothing first --------------------------------------------------


def test_a_commit_deletes_the_files_it_superseded_without_a_head(request, s3, s3env):
    """5 partitions rewritten: 5 superseded files, each one DELETE. Each was a HEAD (pyarrow's
    "what is there?") and then the DELETE: 5 requests more, though S3 deletes a missing key
    without complaint (204)."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    old = _superseded(uri)
    s = Store(uri, notify=None)
    mark = _log_mark(s3)
    assert s.commit(_rows(0.2)).version == 2
    reqs = _requests(s3, mark)
    assert not [r for r in reqs if r[0] == "HEAD"], reqs
    # each with its partition's staged file, in one DeleteObjects per partition (session 55)
    assert not [r for r in reqs if r[0] == "DELETE" and "/up/" in r[1]], reqs
    assert [(m, p) for m, p, q in reqs if "delete" in q] == [("POST", "/lab")] * 5, reqs
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket="lab", Prefix=f"{prefix}/up/")["Contents"]}
    assert not {f"{prefix}/{rel}" for rel in old} & keys
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2} and Store(uri).check().ok


def test_old_manifests_are_pruned_with_one_delete_objects(request, s3, s3env, monkeypatch):
    """The manifest and copy of a version past KEEP_MANIFESTS: one DeleteObjects (a POST ?delete)
    where it was a HEAD and a DELETE of each (4 requests)."""
    monkeypatch.setattr(_store, "KEEP_MANIFESTS", 2)
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    for acc in (0.1, 0.2):
        s.commit(_rows(acc, ("a",)))
    mark = _log_mark(s3)
    assert s.commit(_rows(0.3, ("a",))).version == 3
    reqs = _requests(s3, mark)
    assert not [r for r in reqs if r[0] == "HEAD" or (r[0] == "DELETE" and "/_meta/manifests/" in r[1])], reqs
    # the partition's staged and superseded file (session 55), then the pruned manifests and copies
    assert [(m, p) for m, p, q in reqs if "delete" in q] == [("POST", "/lab")] * 2, reqs
    keys = {o["Key"][len(prefix) + 1:] for o in s3.client().list_objects_v2(
        Bucket="lab", Prefix=f"{prefix}/_meta/manifests/")["Contents"]}
    assert keys == {f"_meta/manifests/{v:010d}{ext}" for v in (2, 3) for ext in (".json", ".copy.json")}
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.3} and Store(uri).check().ok


def keys_below_an_unfinished_commit(request, s3, monkeypatch):  # noqa: ANN001, ANN201 - fixtures
    """A store whose version 2 committed with its finishing left to the next writer (its finalize failed
    past the commit point), and keys below the name of the file it superseded (``<file>/keep``, the
    object itself gone). Returns (prefix, uri, that file's name, a boto3 client)."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(_rows(0.1, ("a",)))
    (old,) = _superseded(uri)
    real, calls = Store._finalize, []

    def finalize(self, m):  # noqa: ANN001, ANN202 - the second call: the new version's own finalize
        calls.append(m.version)
        if len(calls) == 2:
            raise OSError(errno.EIO, "simulated failure")
        return real(self, m)

    monkeypatch.setattr(Store, "_finalize", finalize)
    assert s.commit(_rows(0.2, ("a",))).version == 2   # committed, its finishing left to the next writer
    monkeypatch.setattr(Store, "_finalize", real)   # (undo() would take s3env's variables too)
    c = s3.client()
    c.delete_object(Bucket="lab", Key=f"{prefix}/{old}")
    c.put_object(Bucket="lab", Key=f"{prefix}/{old}/keep", Body=b"someone's")
    return prefix, uri, old, c


def test_keys_below_a_superseded_files_name_are_left_for_check_to_name(request, s3, s3env, monkeypatch):
    """A commit whose finalize failed past its commit point, and keys below one of the files it
    superseded (``<file>/keep``, the object itself gone): the next commit finishes it, its DELETE of
    the file's key leaves those keys, bytes and all (on S3 they block nothing), and 'store check'
    names them, '--repair' sets them aside. pyarrow's HEAD and LIST there set them aside at once."""
    prefix, uri, old, c = keys_below_an_unfinished_commit(request, s3, monkeypatch)
    assert Store(uri, notify=None).commit(_rows(0.3, ("b",))).version == 3
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{old}/keep")["Body"].read() == b"someone's"
    assert [(d.path, d.kind) for d in Store(uri).check().damage] == [(f"{old}/keep", "untracked")]
    rep = Store(uri, notify=None).check(repair=True)
    assert rep.moved == (f"_damaged/0000000004/{old}/keep",) and rep.rows_dropped == 0
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{rep.moved[0]}")["Body"].read() == b"someone's"
    assert sorted(Store(uri).read().column("ds_accuracy").to_pylist()) == [0.2] * 3 + [0.3] * 3


# ---- 2: check_writable asks one LIST of an existing store ------------------------------------------


def test_check_writable_of_an_existing_store_is_one_list_of_its_manifests(request, s3, s3env):
    """A fresh Store: the LIST of the manifests, then the conditional-write probe (3 PUTs and the
    DELETE of the probe), 5 requests; asked again of the same Store, the LIST alone. It asked
    pyarrow what is at the root first (a HEAD of the prefix as a key, a LIST of ``prefix/``):
    7 and 3 requests."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    s = Store(uri, notify=None)
    manifests = ("GET", "/lab", f"{prefix}/_meta/manifests/")
    mark = _log_mark(s3)
    s.check_writable()
    reqs = [(m, p, q.get("prefix")) for m, p, q in _requests(s3, mark)]
    assert reqs[0] == manifests and len(reqs) == 5, reqs
    assert [m for m, _, _ in reqs[1:]] == ["PUT", "PUT", "PUT", "DELETE"], reqs
    mark = _log_mark(s3)
    s.check_writable()
    assert [(m, p, q.get("prefix")) for m, p, q in _requests(s3, mark)] == [manifests]
    mark = _log_mark(s3)
    assert s.commit(_rows(0.2, ("a",))).version == 2   # the commit asks it too, then takes the lease
    reqs = _requests(s3, mark)
    assert not [r for r in reqs if r[0] == "HEAD"], reqs
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2}


def test_check_writable_of_a_new_store_still_refuses_what_is_no_store(request, s3, s3env):
    """Where no manifest is, the root is looked at as before: an object at the prefix itself (a
    URI naming a file) and a directory of someone else's files are refused in one line, nothing
    written; an empty place is fine, and a missing bucket is named."""
    prefix = _prefix(request)
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{prefix}-file", Body=b"a file")
    with pytest.raises(UserError, match="is a file, not a store directory"):
        Store(f"s3://lab/{prefix}-file", notify=None).check_writable()
    c.put_object(Bucket="lab", Key=f"{prefix}-dir/notes.txt", Body=b"x")
    with pytest.raises(UserError, match="directory is not empty and is not a meta-study store .found notes.txt"):
        Store(f"s3://lab/{prefix}-dir", notify=None).check_writable()
    for p, keys in ((f"{prefix}-file", []), (f"{prefix}-dir", [f"{prefix}-dir/notes.txt"])):
        assert [o["Key"] for o in c.list_objects_v2(Bucket="lab", Prefix=f"{p}/").get("Contents", [])] == keys
    Store(f"s3://lab/{prefix}-new", notify=None).check_writable()
    with pytest.raises(UserError, match="the bucket 'nobucket54' does not exist"):
        Store(f"s3://nobucket54/{prefix}", notify=None).check_writable()


def test_check_writable_of_an_unreachable_endpoint_is_one_line(request, s3env):
    """The LIST of the manifests is its first request now: a refused connection is the same one
    line the root's HEAD gave ("cannot reach store location"), secrets left out."""
    uri = "s3://AKX:SKX@lab/st?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    with pytest.raises(UserError) as e:
        Store(uri, notify=None).check_writable()
    msg = str(e.value)
    assert "cannot reach store location" in msg and "AKX:***@lab" in msg and "SKX" not in msg, msg
    assert "\n" not in msg
