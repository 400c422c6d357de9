"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: a read is one GET
per file (pyarrow's read asked a HEAD first, for the size), a commit lists the manifests once
less, and a failed server-side copy says what failed instead of "the object changed"."""

from __future__ import annotations

import re

import pytest

from meta_study import errors
from meta_study.store import Store
from meta_study.store import _s3, _store
from meta_study.store._files import display_path

boto3 = pytest.importorskip("boto3")

# the server's request log and the recording proxy, as test_s51_store_s3 and test_s52_s3 have them
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402
from test_s52_s3 import _Relay, _RefuseCopyParts, relay  # noqa: E402,F401 - relay is the fixture


# ---- 1: a read is one GET per file ---------------------------------------------------------------


def test_a_read_of_five_partitions_is_one_get_per_file(request, s3, s3env):
    """A LIST of the manifests, then one GET per file: the manifest and 5 partitions, 7 requests.
    pyarrow's read asked a HEAD of each before its GET (13), though the GET's Content-Length
    gives the size that refuses a file of the wrong size before its bytes are read."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    Store(uri, notify=None).commit(_rows(0.2))
    mark = _log_mark(s3)
    t = Store(uri).read()
    reqs = _requests(s3, mark)
    assert len(t) == 15 and set(t.column("ds_accuracy").to_pylist()) == {0.2}
    assert len(reqs) <= 7 and not [r for r in reqs if r[0] == "HEAD"], reqs
    gets = sorted(p for m, p, q in reqs if m == "GET" and p != "/lab")
    assert gets == sorted(f"/lab/{prefix}/{rel}" for rel in
                          ["_meta/manifests/0000000002.json", *(e["path"] for e in Store(uri)._load().data)])


def test_an_s3_read_racing_a_commit_that_deletes_its_file_reads_the_new_version(request, s3, s3env, monkeypatch):
    """Another writer's commit lands between the reader's manifest and its GET of a data file
    (the file superseded and deleted): the GET's 404 sends the reader to the newer version, as
    when pyarrow's HEAD found it gone; never an error, never rows of two versions."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    writer = Store(uri, notify=None)
    writer.commit(_rows(0.1, ("a", "b")))
    real = _s3.S3Objects.read
    hook = [lambda: writer.commit(_rows(0.3, ("a", "b")))]

    def read(self, rel, check=None):  # noqa: ANN001, ANN202
        if hook and rel.endswith(".parquet"):
            hook.pop()()   # the commit, once (its own reads come here too)
        return real(self, rel, check)

    monkeypatch.setattr(_s3.S3Objects, "read", read)
    t = Store(uri, notify=None).read()
    assert not hook and writer.version == 2
    assert len(t) == 6 and set(t.column("ds_accuracy").to_pylist()) == {0.3}


def test_a_file_of_another_size_or_a_directory_in_its_place_is_damage(request, s3, s3env):
    """The size comes from the GET now: an object of another size is refused in the same words
    (before its body is read), and keys below a file's name with no object at it are "a directory"."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a", "b")))
    first, second = sorted(e["path"] for e in Store(uri)._load().data)
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{prefix}/{first}", Body=b"x" * 100_000)
    with pytest.raises(errors.StoreDamagedError, match=re.escape(f"{first}: damaged store file: 100000 bytes, the manifest says")):
        Store(uri).read({"ds_task": "a"})
    c.delete_object(Bucket="lab", Key=f"{prefix}/{second}")
    c.put_object(Bucket="lab", Key=f"{prefix}/{second}/x", Body=b"1")
    with pytest.raises(errors.StoreDamagedError, match=re.escape(f"{second}: damaged store file: is a directory, not a file")):
        Store(uri).read({"ds_task": "b"})


# ---- 2: a commit lists the manifests once less ---------------------------------------------------


def test_a_commit_lists_the_manifests_three_times_and_still_prunes(request, s3, s3env, monkeypatch):
    """Before the lock (is this a store?), under it (the version to build on) and after its commit
    point (was the name freed by pruning?). Garbage collection before building listed them a 4th
    time, moments after the 2nd, under the same lock: it prunes by that listing now."""
    monkeypatch.setattr(_store, "KEEP_MANIFESTS", 2)
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    for acc in (0.1, 0.2, 0.3):
        s.commit(_rows(acc, ("a",)))
    mark = _log_mark(s3)
    assert s.commit(_rows(0.4, ("a",))).version == 4
    lists = [q for m, p, q in _requests(s3, mark) if m == "GET" and p == "/lab"
             and q.get("prefix") == f"{prefix}/_meta/manifests/"]
    assert len(lists) <= 3, lists
    keys = {o["Key"][len(prefix) + 1:] for o in s3.client().list_objects_v2(
        Bucket="lab", Prefix=f"{prefix}/_meta/manifests/")["Contents"]}
    assert keys == {f"_meta/manifests/{v:010d}{ext}" for v in (3, 4) for ext in (".json", ".copy.json")}
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.4} and Store(uri).check().ok


# ---- 3: a failed copy says what failed -----------------------------------------------------------


class _ConflictOnCopy(_Relay):
    """S3's 409 to a CopyObject while another conditional write to the target is in flight: the
    source did not change."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "PUT" and "x-amz-copy-source" in self.headers and "partNumber=" not in self.path:
            return 409, (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ConditionalRequestConflict</Code>"
                         b"<Message>A conflicting conditional operation is currently in progress against this "
                         b"resource.</Message></Error>")
        return None


def test_a_copy_refused_for_another_reason_says_so_in_one_line(request, s3, s3env, relay):  # noqa: F811
    """keep_copy (boto3's managed copy) and a move of a file of known size (one CopyObject),
    both answered 409: it read "copy failed: the object changed while it was copied" of a source
    that never changed. One line naming the object and the endpoint's code and reason now; the
    source is kept and the target never made."""
    prefix = _prefix(request)
    c = s3.client()
    src = "_meta/manifests/0000000002.json"
    c.put_object(Bucket="lab", Key=f"{prefix}/{src}", Body=b"{}")
    f = Store(f"s3://lab/{prefix}?endpoint_override={relay(_ConflictOnCopy)}&scheme=http", notify=None)._f
    aside = "_damaged/0000000003/_meta/manifests/0000000002.json"
    with pytest.raises(OSError) as e:
        f.keep_copy(src, aside)
    msg = str(e.value)
    assert "\n" not in msg and "changed" not in msg, msg
    # the object's path inside the store, then the URI's query (it read "...&scheme=http/_meta/...")
    assert msg.startswith(f"{display_path(f.shown, src)}: copy failed: ConditionalRequestConflict: A conflicting"), msg
    assert f"s3://lab/{prefix}/{src}?endpoint_override=" in msg, msg
    f.expect_size(src, 2)   # the size the manifest records: one CopyObject, no HEAD
    with pytest.raises(OSError, match=re.escape(f"{src}?endpoint_override=") + r"\S*: copy failed: ConditionalRequestConflict"):
        f.move(src, "up/a/x.json")
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{src}")["Body"].read() == b"{}"
    for dst in (aside, "up/a/x.json"):
        with pytest.raises(c.exceptions.ClientError):
            c.head_object(Bucket="lab", Key=f"{prefix}/{dst}")


def test_a_part_copy_whose_source_changed_still_says_so(request, s3, s3env, relay, monkeypatch):  # noqa: F811
    """A part's source ETag condition failed (412): that one is the object changing mid-copy."""
    monkeypatch.setattr(_s3, "MULTIPART_COPY_BYTES", 5 * 1024 * 1024)
    prefix = _prefix(request)
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/_meta/manifests/0000000002.json", Body=b"x" * (6 << 20))
    f = Store(f"s3://lab/{prefix}?endpoint_override={relay(_RefuseCopyParts)}&scheme=http", notify=None)._f
    with pytest.raises(OSError, match=r"0000000002\.json\?endpoint_override=\S*: copy failed: the object changed while it "
                                      r"was copied \(its ETag"):
        f.keep_copy("_meta/manifests/0000000002.json", "_damaged/0000000003/_meta/manifests/0000000002.json")


def test_a_managed_copy_that_fails_otherwise_is_named_by_its_reason():
    """s3transfer raises the same error class for annotations it could not copy to the target:
    its reason, on one line, never "the object changed"."""
    from s3transfer.exceptions import S3CopyFailedError

    e = S3CopyFailedError("Failed to copy annotations to s3://lab/st/_damaged/x. Succeeded: [].\n"
                          "Failed: ['a1']. Errors: {'a1': ClientError('AccessDenied')}")
    why = _s3.copy_failure(e)
    assert "\n" not in why and "changed" not in why and why.startswith("Failed to copy annotations to s3://lab/st/")
    assert "'a1'" in why
