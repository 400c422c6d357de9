"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: moves copy large
objects in parts (one CopyObject is refused above 5 GB), a commit lists the whole store once and
asks nothing more of files it deleted, and the store's listings agree with the objects' keys
where some keys end in '/' (directory markers)."""

from __future__ import annotations

import os
import re
import urllib.parse

import pytest

from conftest import make_rows
from meta_study import errors
from meta_study.store import Store
from meta_study.store import _s3
from meta_study.validation import validate

boto3 = pytest.importorskip("boto3")

_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+"')


def _prefix(request) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def _log_mark(s3) -> int:
    """Where the server's request log ends now (bytes): what it logs next is what came after."""
    return (s3.root / "moto.log").stat().st_size


def _requests(s3, since: int) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, query) of each request the server logged after ``since``. The server logs a
    request before it answers it, so every request whose answer a call got is there."""
    text = (s3.root / "moto.log").read_bytes()[since:].decode("utf-8", "replace")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)   # the log's colours
    out = []
    for m in _REQUEST.finditer(text):
        path, _, query = m["path"].partition("?")
        out.append((m["method"], urllib.parse.unquote(path), dict(urllib.parse.parse_qsl(query, keep_blank_values=True))))
    return out


def _rows(acc: float, ds_tasks=("a", "b", "c", "d", "e")):
    df = make_rows(3, ds_tasks=ds_tasks)
    df["ds_accuracy"] = acc
    return validate(df).table


def _whole_store_lists(reqs, prefix: str) -> int:
    """LIST requests of every key of the store (no delimiter), one per 1,000 keys."""
    return sum(1 for method, path, q in reqs if method == "GET" and path == "/lab" and q.get("list-type") == "2"
               and q.get("prefix") == f"{prefix}/" and "delimiter" not in q)


# ---- 1: moves copy in parts past the multipart size ----------------------------------------------


def test_a_move_past_the_multipart_size_copies_in_parts_keeping_bytes_and_metadata(request, s3, s3env, monkeypatch):
    """Past :data:`~meta_study.store._s3.MULTIPART_COPY_BYTES` (lowered here to S3's 5 MiB minimum part) a
    move is a multipart copy on the server (UploadPartCopy: the client never reads the bytes); bytes,
    content type and user metadata arrive whole, the source is gone. One CopyObject, as before, is
    refused by S3 above 5 GB: a large partition file could never be moved into place."""
    monkeypatch.setattr(_s3, "MULTIPART_COPY_BYTES", 5 * 1024 * 1024, raising=False)
    prefix = _prefix(request)
    c = s3.client()
    data = os.urandom(12 * 1024 * 1024 + 3)   # 3 parts: 5 MiB, 5 MiB, 2 MiB + 3 bytes
    src, dst = "_staging/0000000001-abc/up/a/big.parquet", "up/a/big.parquet"
    c.put_object(Bucket="lab", Key=f"{prefix}/{src}", Body=data, ContentType="application/vnd.apache.parquet",
                 Metadata={"writer": "s51"})
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    mark = _log_mark(s3)
    assert f.move(src, dst) == dst
    reqs = _requests(s3, mark)
    on_dst = [(m, q) for m, path, q in reqs if path == f"/lab/{prefix}/{dst}"]
    assert ("POST", {"uploads": ""}) in on_dst, reqs                      # a multipart upload at the target
    assert sorted(q["partNumber"] for m, q in on_dst if m == "PUT" and "partNumber" in q) == ["1", "2", "3"], reqs
    assert not [r for r in reqs if r[0] == "GET" and r[1] == f"/lab/{prefix}/{src}"]   # copied on the server
    head = c.head_object(Bucket="lab", Key=f"{prefix}/{dst}")
    assert head["ContentLength"] == len(data) and head["ContentType"] == "application/vnd.apache.parquet"
    assert head["Metadata"] == {"writer": "s51"}
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{dst}")["Body"].read() == data
    with pytest.raises(c.exceptions.ClientError):
        c.head_object(Bucket="lab", Key=f"{prefix}/{src}")


def test_a_commit_moves_its_files_into_place_by_the_managed_copy(request, s3, s3env, monkeypatch):
    """The threshold lowered to 1 byte: every staged file of a commit is moved into place by a
    multipart copy (one part), and the store reads back whole and checks clean."""
    monkeypatch.setattr(_s3, "MULTIPART_COPY_BYTES", 1, raising=False)
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    mark = _log_mark(s3)
    r = Store(uri, notify=None).commit(_rows(0.5, ("a", "b")))
    assert r.version == 1 and r.inserted == 6
    placed = {path for m, path, q in _requests(s3, mark) if m == "POST" and "uploads" in q
              and path.startswith(f"/lab/{prefix}/up/")}
    live = {f"/lab/{prefix}/{e['path']}" for e in Store(uri)._load().data}
    assert placed == live and len(live) == 2
    assert len(Store(uri).read()) == 6 and Store(uri).check().ok


# ---- 2: a commit lists the store once, and asks nothing of files it deleted ----------------------


def test_a_commit_lists_the_whole_store_once(request, s3, s3env):
    """A commit on top of one that replaced 5 partitions listed every key of the store three times:
    finishing the previous version (its superseded files), its damage check, and after its own
    files were in place, for the files it had just deleted. Once now (ceil(keys / 1,000) LISTs each)."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(_rows(0.1))
    s.commit(_rows(0.2))   # supersedes 5 files: the next commit looks for what is left of them
    mark = _log_mark(s3)
    assert s.commit(_rows(0.3)).updated == 15
    assert _whole_store_lists(_requests(s3, mark), prefix) == 1
    assert set(s.read().column("ds_accuracy").to_pylist()) == {0.3} and s.check().ok


def test_a_commit_asks_nothing_of_the_files_it_deleted(request, s3, s3env):
    """After deleting a superseded file, finalize asked again whether it was there (a HEAD and a
    LIST of '<file>/' each): names of the form part-<version>-<random> are never written again."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(_rows(0.1, ("a", "b")))
    old = {f"/lab/{prefix}/{e['path']}" for e in s._load().data}
    mark = _log_mark(s3)
    s.commit(_rows(0.2, ("a", "b")))
    reqs = _requests(s3, mark)
    # each partition's superseded file goes with its staged one in one DeleteObjects (session 55)
    batches = [i for i, (m, path, q) in enumerate(reqs) if m == "POST" and "delete" in q]
    assert len(batches) == 2 and not [r for r in reqs if r[0] == "DELETE" and r[1] in old], reqs
    after = [(m, path, q) for i, (m, path, q) in enumerate(reqs)
             if i > batches[0] and any(path == f or q.get("prefix", "").startswith(f[len("/lab/"):]) for f in old)]
    assert after == [], after
    assert set(s.read().column("ds_accuracy").to_pylist()) == {0.2} and s.check().ok


def test_a_missing_live_file_is_refused_with_the_listing_reused(request, s3, s3env):
    """The damage check reads the listing finalizing took: a live file deleted behind the store's
    back is still refused, in one line naming it."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(_rows(0.1))
    s.commit(_rows(0.2))
    gone = sorted(e["path"] for e in s._load().data)[2]
    s3.client().delete_object(Bucket="lab", Key=f"{prefix}/{gone}")
    with pytest.raises(errors.StoreDamagedError, match=re.escape(f"{gone}: damaged store file: missing")):
        s.commit(_rows(0.3))


# ---- 3: listings agree with the keys where keys end in '/' ---------------------------------------


def _key_names(c, pre: str) -> list[str]:
    """The names directly under ``pre`` as the keys say (boto3, Delimiter '/')."""
    r = c.list_objects_v2(Bucket="lab", Prefix=pre, Delimiter="/")
    names = {o["Key"][len(pre):] for o in r.get("Contents", [])}
    names |= {p["Prefix"][len(pre):].rstrip("/") for p in r.get("CommonPrefixes", [])}
    return sorted(names - {""})


def test_every_listing_the_store_uses_agrees_with_the_keys(request, s3, s3env):
    """pyarrow named a name twice where both ``x`` and keys under ``x/`` exist, named keys
    ``d//x`` by the listed directory's own name, and gave an object ``x`` the size of an object
    ``x/`` beside it."""
    prefix = _prefix(request)
    c = s3.client()
    keys = {"_staging/": b"kept", "_staging/0000000005-ee": b"file", "_staging/0000000005-ee/up/a/f.parquet": b"p",
            "_staging/0000000006-ff/": b"", "_staging//0000000007-gg/g": b"q",
            "_meta/manifests/": b"", "_meta/manifests/0000000001.json": b"{}",
            "_meta/manifests/0000000001.json/": b"marker",
            "_quarantine/q.parquet": b"12345", "_quarantine/r.parquet/": b"abc",
            "up/": b"", "up/a/": b"notes", "up/a/part-1.parquet": b"123456789", "up/a/part-1.parquet/": b"xyz"}
    for k, body in keys.items():
        c.put_object(Bucket="lab", Key=f"{prefix}/{k}", Body=body)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    for d in ("", "_staging", "_meta/manifests", "_quarantine", "up", "up/a"):
        assert f.listdir(d) == _key_names(c, f"{prefix}/{d}/" if d else f"{prefix}/"), d
    sizes = f.sizes()
    for k, body in keys.items():   # every object's own size, as its key says
        if not k.endswith("/"):
            assert sizes[k] == len(body), k
    # a key 'x/' holding bytes where no object 'x' is: a file 'x' to plain readers, as before
    assert sizes["_quarantine/r.parquet"] == 3 and sizes["up/a"] == 5
    assert not {k for k in sizes if k.endswith("/") or k.startswith("_staging/0000000006-ff")}   # empty: a folder
    assert f.sizes("_staging") == {"_staging/0000000005-ee": 4, "_staging/0000000005-ee/up/a/f.parquet": 1,
                                   "_staging//0000000007-gg/g": 1}


def test_an_intact_file_beside_an_object_at_its_key_and_slash_is_not_damaged(request, s3, s3env):
    """An object ``<live file>/`` holding 3 bytes: the intact live file was "3 bytes, the manifest
    says N" (pyarrow's listing), every commit was refused and '--repair' set the intact file aside,
    dropping its rows. The stray object is named by its key now, and '--repair' sets it aside."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a", "b")))
    live = sorted(e["path"] for e in Store(uri)._load().data)[0]
    c = s3.client()
    size = c.head_object(Bucket="lab", Key=f"{prefix}/{live}")["ContentLength"]
    c.put_object(Bucket="lab", Key=f"{prefix}/{live}/", Body=b"abc")
    assert [(d.path, d.kind) for d in Store(uri).check().damage] == [(f"{live}/", "untracked")]
    rep = Store(uri, notify=None).check(repair=True)
    assert rep.rows_dropped == 0 and rep.moved == (f"_damaged/{rep.repaired_version:010d}/{live}",)
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{rep.moved[0]}")["Body"].read() == b"abc"
    assert c.head_object(Bucket="lab", Key=f"{prefix}/{live}")["ContentLength"] == size
    assert len(Store(uri).read()) == 6 and Store(uri).check().ok


def test_a_commit_beside_an_object_at_a_live_file_key_and_slash_goes_ahead(request, s3, s3env):
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(_rows(0.1, ("a", "b")))
    live = sorted(e["path"] for e in s._load().data)[0]
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/{live}/", Body=b"abc")
    assert s.commit(_rows(0.2, ("a", "b"))).version == 2
    df = s.to_pandas()
    assert len(df) == 6 and set(df["ds_accuracy"]) == {0.2}
