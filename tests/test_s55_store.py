"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: a commit deletes
each partition's staged file and the files it superseded in one DeleteObjects, after the copy
landed; ``store info`` and ``store unlock`` (every command opening a store) ask no HEAD and no
LIST of the root where the LIST of the manifests finds a store, and refuse what they refused
before in the same one line, exit 2."""

from __future__ import annotations

import pytest

from conftest import run_cli
from meta_study.store import Store

boto3 = pytest.importorskip("boto3")

# the server's request log, as test_s51_store_s3 and test_s54_store count it; the proxy of test_s52_s3
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402
from test_s52_s3 import _no_credentials_env, _Relay, _run, relay  # noqa: E402,F401 - the proxy fixture


def _keys(c, prefix: str) -> set[str]:  # noqa: ANN001 - a boto3 client
    return {o["Key"][len(prefix) + 1:] for o in c.list_objects_v2(Bucket="lab", Prefix=f"{prefix}/").get("Contents", [])}


def _is_batch(q: dict[str, str]) -> bool:
    return "delete" in q


# ---- 1: a partition's deletes share one DeleteObjects, after its copy ------------------------------


def test_a_partitions_staged_and_superseded_files_go_in_one_delete_objects(request, s3, s3env):
    """5 partitions rewritten: per partition, the copy of its staged file into place, then one
    DeleteObjects of the staged key and the file it superseded (a DELETE of each before: 10
    requests, 5 now). The batch follows the copy it may delete the source of: no key is deleted
    before the protocol allows it."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    old = {e["path"] for e in Store(uri)._load().data}
    s = Store(uri, notify=None)
    mark = _log_mark(s3)
    assert s.commit(_rows(0.2)).version == 2
    reqs = _requests(s3, mark)
    up, staging = f"/lab/{prefix}/up/", f"/lab/{prefix}/_staging/"
    assert not [r for r in reqs if r[0] == "DELETE" and r[1].startswith((up, staging))], reqs
    # the finalize's steps, in order: each copy into a partition, each batch delete
    steps = ["copy" if m == "PUT" and p.startswith(up) else "batch" for m, p, q in reqs
             if (m == "PUT" and p.startswith(up)) or (m == "POST" and _is_batch(q))]
    assert steps == ["copy", "batch"] * 5, reqs
    left = _keys(s3.client(), prefix)
    assert not old & left and not [k for k in left if k.startswith("_staging/")], left
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2} and Store(uri).check().ok


class _NoBatchDelete(_Relay):
    """An S3-compatible store that refuses DeleteObjects (some want a Content-MD5)."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "POST" and "delete" in self.path.partition("?")[2]:
            return 400, (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidRequest</Code>"
                         b"<Message>Missing required header for this request: Content-MD5</Message></Error>")
        return None


def _via(hostport: str, prefix: str) -> str:
    return f"s3://lab/{prefix}?endpoint_override={hostport}&scheme=http&region=us-east-1"


def test_an_endpoint_refusing_delete_objects_is_asked_once(request, s3, s3env, relay):  # noqa: F811
    """Refused once, the batch is not asked again by that store: one DELETE per key after it
    (the staged and superseded file of each of 5 partitions), not a refused POST before each pair."""
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.1))
    old = {e["path"] for e in Store(f"s3://lab/{prefix}")._load().data}
    said: list[str] = []
    hostport = relay(_NoBatchDelete)
    assert Store(_via(hostport, prefix), notify=said.append).commit(_rows(0.2)).version == 2
    seen = _NoBatchDelete.seen
    assert len([m for m, p, h in seen if m == "POST"]) == 1, seen
    assert len([m for m, p, h in seen if m == "DELETE" and f"/{prefix}/up/" in p]) == 5, seen
    assert len([m for m, p, h in seen if m == "DELETE" and f"/{prefix}/_staging/" in p]) == 5, seen
    assert not said, said
    assert not old & _keys(s3.client(), prefix)
    assert set(Store(f"s3://lab/{prefix}").read().column("ds_accuracy").to_pylist()) == {0.2}


class _BatchDeleteOfDataFails(_Relay):
    """A DeleteObjects of a partition's files answered 200 with an error for a key (S3's partial
    failure: a bucket policy denying s3:DeleteObject there); nothing deleted."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "POST" and "delete" in self.path.partition("?")[2]:
            return 200, (b"<?xml version='1.0' encoding='UTF-8'?><DeleteResult><Error><Key>x/up/a/part.parquet</Key>"
                         b"<Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>")
        return None


def test_a_failed_batch_delete_is_said_and_finished_by_the_next_commit(request, s3, s3env, relay):  # noqa: F811
    """Past the commit point a failed delete is said, never the commit undone; the version's copies
    are in place, its staged and superseded files still there: the next writer finishes it."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a", "b")))
    old = {e["path"] for e in Store(uri)._load().data}
    said: list[str] = []
    assert Store(_via(relay(_BatchDeleteOfDataFails), prefix), notify=said.append).commit(
        _rows(0.2, ("a", "b"))).version == 2
    assert said and "DELETE failed: AccessDenied" in said[0], said
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2}
    assert Store(uri, notify=None).commit(_rows(0.3, ("c",))).version == 3
    left = _keys(s3.client(), prefix)
    assert not old & left and not [k for k in left if k.startswith("_staging/")], left
    assert sorted(Store(uri).read().column("ds_accuracy").to_pylist()) == [0.2] * 6 + [0.3] * 3
    assert Store(uri).check().ok


# ---- 2: info and unlock ask nothing of the root of a store ---------------------------------------


def _root_probes(reqs, bucket: str, prefix: str) -> list:  # noqa: ANN001
    """pyarrow's "what is at the root?": a HEAD of the prefix as a key (of the bucket for a store
    at its root) and a LIST of ``prefix/`` with a delimiter."""
    return [r for r in reqs if r[0] == "HEAD" or (r[1] == f"/{bucket}" and r[2].get("prefix") == (
        f"{prefix}/" if prefix else "") and r[2].get("delimiter") == "/")]


def test_unlock_of_a_store_is_a_list_of_its_manifests_and_a_get_of_its_lease(request, s3, s3env):
    """Two requests where there were four (a HEAD of the prefix and a LIST of ``prefix/`` first)."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    mark = _log_mark(s3)
    r = run_cli("store", "unlock", uri)
    assert r.returncode == 0 and r.stdout.strip() == f"{uri}: not locked", r.stdout + r.stderr
    reqs = [(m, p, q.get("prefix")) for m, p, q in _requests(s3, mark)]
    assert reqs == [("GET", "/lab", f"{prefix}/_meta/manifests/"), ("GET", f"/lab/{prefix}/_meta/LEASE.json", None)], reqs


def test_info_of_a_store_asks_nothing_of_its_root(request, s3, s3env):
    """``store info`` opened the store twice (the command, then the summary), each time asking the
    root first: 4 requests less of 23 (5 partitions, a commit superseding them) without the root
    probes, 5 less again opening it once. Its output is as before."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    Store(uri, notify=None).commit(_rows(0.2))
    mark = _log_mark(s3)
    r = run_cli("store", "info", uri)
    assert r.returncode == 0 and r.stdout.splitlines()[:3] == [f"store      {uri}", "version    2", "rows       15"], r.stdout
    reqs = _requests(s3, mark)
    assert not _root_probes(reqs, "lab", prefix), reqs
    # 19 while the command opened the store before its summary did it again; 14 while opening it
    # listed the manifests twice; 13 while the summary read the manifest opening it had read, and
    # asked again whether its commit was finished (session 56)
    assert len(reqs) == 9, reqs


def test_a_store_at_a_buckets_root_is_not_asked_its_bucket(s3, s3env):
    """A store at the bucket's root: the HEAD of the bucket is gone too."""
    s3.make_bucket("root55")
    Store("s3://root55", notify=None).commit(_rows(0.1, ("a",)))
    for cmd in ("info", "unlock"):
        mark = _log_mark(s3)
        r = run_cli("store", cmd, "s3://root55")
        assert r.returncode == 0, r.stdout + r.stderr
        reqs = _requests(s3, mark)
        assert not _root_probes(reqs, "root55", ""), (cmd, reqs)


def test_an_object_at_the_prefix_beside_a_store_is_read_as_check_writable_takes_it(request, s3, s3env):
    """An object whose key is the prefix itself ('st', beside the store's 'st/...' keys): ``store
    info`` and ``unlock`` said "is a file, not a store directory" while ``check_writable`` and the
    commits went on (no key of the store is that key); they agree now, and the object is left."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    s3.client().put_object(Bucket="lab", Key=prefix, Body=b"someone's")
    Store(uri, notify=None).check_writable()
    assert run_cli("store", "info", uri).returncode == 0
    assert run_cli("store", "unlock", uri).stdout.strip() == f"{uri}: not locked"
    assert s3.client().get_object(Bucket="lab", Key=prefix)["Body"].read() == b"someone's"


# ---- 2: ... and refuse what they refused, in the same line -------------------------------------


@pytest.fixture
def not_stores(request, s3, s3env):  # noqa: ANN001, ANN201 - fixtures
    """Places that hold no store, by name: (URI, what ``info`` says, what ``unlock`` says, None where
    it breaks the lease). The lines are those the root's probe gave (session 54's code)."""
    p = _prefix(request)
    c = s3.client()
    c.put_object(Bucket="lab", Key=f"{p}-file", Body=b"a file")
    c.put_object(Bucket="lab", Key=f"{p}-dir/notes.txt", Body=b"x")
    c.put_object(Bucket="lab", Key=f"{p}-half/_meta/x", Body=b"{}")
    lost = f"s3://lab/{p}-lost"
    Store(lost, notify=None).commit(_rows(0.1, ("a",)))
    for o in c.list_objects_v2(Bucket="lab", Prefix=f"{p}-lost/_meta/manifests/")["Contents"]:
        c.delete_object(Bucket="lab", Key=o["Key"])
    damaged = (f"{lost}: damaged store: {lost}/_meta/manifests holds no manifest, but 1 file(s) of the store are "
               "here: no version can be read, repaired or committed to (the files are kept untouched); restore "
               f"{lost}/_meta/manifests from a backup")
    return {
        "no bucket": (f"s3://nobucket55/{p}", "no such store", "no such store"),
        "no store": (f"s3://lab/{p}-none", "no such store", "no such store"),
        "a file": (f"s3://lab/{p}-file", "is a file, not a store directory", "is a file, not a store directory"),
        "a directory": (f"s3://lab/{p}-dir", "not a meta-study store (no _meta/manifests)",
                        "not a meta-study store (no _meta)"),
        # (session 56: said to be a store whose first ingest did not finish, not "not a store")
        "only _meta": (f"s3://lab/{p}-half", "a store whose first ingest did not finish (no version committed): "
                       "ingest into it again, or delete it", None),
        "lost manifests": (lost, damaged[len(lost) + 2:], damaged[len(lost) + 2:]),
        "a bad bucket name": (f"s3://lab%5Ex/{p}", "no such store", "no such store"),
    }


def test_info_and_unlock_refuse_what_is_no_store_in_the_same_line(not_stores):
    for name, (uri, info, unlock) in not_stores.items():
        for cmd, said in (("info", info), ("unlock", unlock)):
            r = run_cli("store", cmd, uri)
            if said is None:
                assert r.returncode == 0 and r.stdout.strip() == f"{uri}: not locked", (name, r.stdout, r.stderr)
                continue
            assert (r.returncode, r.stderr) == (2, f"meta-study: error: {uri}: {said}\n"), (name, cmd, r.stderr)


def test_info_and_unlock_of_an_unreachable_endpoint_are_one_line(s3env):
    """The LIST of the manifests fails first now; the line is still the root probe's (pyarrow's
    words), secrets left out."""
    uri = "s3://AKX:SKX@lab/st?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    shown = "s3://AKX:***@lab/st?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    for cmd in ("info", "unlock"):
        r = run_cli("store", cmd, uri)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SKX" not in r.stderr, r.stderr
        assert r.stderr.startswith(f"meta-study: error: {shown}: cannot reach store location (When getting "
                                   "information for key 'st' in bucket 'lab'"), r.stderr


class _PrivateToAnonymous(_Relay):
    """AWS's private bucket: every unsigned request refused, its LIST too (moto lists to anyone)."""

    def refuse(self) -> tuple[int, bytes] | None:
        if "authorization" not in {k.lower() for k in self.headers}:
            return 403, (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                         b"<Message>Access Denied</Message></Error>")
        return None


def test_info_and_unlock_without_credentials_say_so_at_the_first_request(request, s3, s3env, relay, tmp_path):  # noqa: F811
    """No credentials, a bucket closed to anonymous requests: the first request, the LIST of the
    manifests, is refused, and the line says no credentials were found (exit 2), as every other
    refused unsigned request does. The root's HEAD came first before, through pyarrow, whose
    refusal read "cannot reach store location (... ACCESS_DENIED during HeadObject ...)"."""
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.5, ("a",)))
    uri = _via(relay(_PrivateToAnonymous), prefix)
    for cmd in ("info", "unlock"):
        r = _run(["-m", "meta_study.cli", "store", cmd, uri], _no_credentials_env(tmp_path))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"meta-study: error: {uri}: no AWS credentials were found"), r.stderr
        assert "the LIST of _meta/manifests was sent unsigned" in r.stderr, r.stderr
