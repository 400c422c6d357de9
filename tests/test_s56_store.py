"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: opening a store
(``Store.require``, every command's first step) lists its manifests once, not twice; a
DeleteObjects that failed once (no answer, a 5xx) is asked again by the next partition and the
next commit, and only an endpoint that refuses the call itself (400, 405, 501) is asked it no
more; a DeleteObjects or DELETE answered 409 is a failed delete, never one taken as done."""

from __future__ import annotations

import pytest

from conftest import run_cli
from meta_study.store import Store

boto3 = pytest.importorskip("boto3")

# the server's request log, as test_s51_store_s3 counts it; the proxy of test_s52_s3
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402
from test_s52_s3 import _Relay, relay  # noqa: E402,F401 - the proxy fixture


def _keys(c, prefix: str) -> set[str]:  # noqa: ANN001 - a boto3 client
    return {o["Key"][len(prefix) + 1:] for o in c.list_objects_v2(Bucket="lab", Prefix=f"{prefix}/").get("Contents", [])}


def _via(hostport: str, prefix: str) -> str:
    return f"s3://lab/{prefix}?endpoint_override={hostport}&scheme=http&region=us-east-1"


def _manifest_lists(reqs, prefix: str) -> list:  # noqa: ANN001
    return [r for r in reqs if r[0] == "GET" and r[1] == "/lab" and r[2].get("prefix") == f"{prefix}/_meta/manifests/"]


def _xml_error(code: str, message: str) -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error>").encode()


def _is_batch(method: str, path: str) -> bool:
    return method == "POST" and "delete" in path.partition("?")[2]


# ---- 1: opening a store lists its manifests once ------------------------------------------------


def test_require_lists_the_manifests_once(request, s3, s3env):
    """``require`` listed them to see a store is there, then again to read the latest manifest
    (whether a commit is left to finish): a LIST more for every command opening a store."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    Store(uri, notify=None).commit(_rows(0.2, ("a",)))
    mark = _log_mark(s3)
    Store(uri, notify=None).require()
    reqs = _requests(s3, mark)
    assert len(_manifest_lists(reqs, prefix)) == 1, reqs
    # the latest manifest is what was read (not a version before it)
    assert [r[1] for r in reqs if r[0] == "GET" and "/_meta/manifests/" in r[1]] == [
        f"/lab/{prefix}/_meta/manifests/0000000002.json"], reqs


def test_commands_opening_a_store_list_its_manifests_once_less(request, s3, s3env):
    """``store quarantine`` (its read opens the store and reads by the manifest that read): 1 LIST of
    the manifests, 3 before (2 while open_store and the read each listed them); ``store
    info`` (its summary's require, then a read of the manifest that read): 1, 3 before (2 while
    the read listed them again); their output is as before."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    for cmd, lists in (("quarantine", 1), ("info", 1)):
        mark = _log_mark(s3)
        r = run_cli("store", cmd, uri)
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(_manifest_lists(_requests(s3, mark), prefix)) == lists, (cmd, _requests(s3, mark))
    assert run_cli("store", "info", uri).stdout.splitlines()[:3] == [f"store      {uri}", "version    1", "rows       3"]


def test_require_still_finishes_an_interrupted_commit_and_refuses_no_store(request, s3, s3env):
    """What ``require`` did with its second listing, it does with the first: a commit whose
    finalize never ran (its files still staged) is finished; no store is one line."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a",)))
    s = Store(uri, notify=None)

    real = s._finalize

    def died(m):  # noqa: ANN001, ANN202 - version 2's finalize failed past its commit point: files left staged
        if m.version == 2:
            raise OSError(5, "simulated failure")
        return real(m)

    s._finalize = died
    s.commit(_rows(0.2, ("a",)))
    assert [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]
    Store(uri, notify=None).require()
    assert not [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2} and Store(uri).check().ok
    r = run_cli("store", "quarantine", f"s3://lab/{prefix}-none")
    assert (r.returncode, r.stderr) == (2, f"meta-study: error: s3://lab/{prefix}-none: no such store\n"), r.stderr


# ---- 2: a DeleteObjects that failed once is asked again -----------------------------------------


class _BatchFailsFor(_Relay):
    """The next ``fail`` DeleteObjects requests fail: answered ``answer`` (status, body), or, for
    None, the connection closed unanswered (a reset, a proxy's idle cut)."""

    fail = 0
    answer: tuple[int, bytes] | None = None

    def refuse(self) -> tuple[int, bytes] | None:
        if not _is_batch(self.command, self.path) or type(self).fail <= 0:
            return None
        type(self).fail -= 1
        if type(self).answer is None:
            raise ConnectionResetError("closed unanswered")   # the server drops the connection
        return type(self).answer


@pytest.mark.parametrize("answer", [(500, _xml_error("InternalError", "We encountered an internal error.")),
                                    (503, _xml_error("SlowDown", "Please reduce your request rate.")), None],
                         ids=["500", "503", "closed"])
def test_a_transient_batch_failure_falls_back_for_that_partition_only(request, s3, s3env, relay, answer):  # noqa: F811
    """Every attempt of the first partition's DeleteObjects fails (the client retries it): that
    partition's two files are deleted one by one, and the next 4 partitions, and each partition
    of the next commit by the same store, go in one DeleteObjects again. It was one DELETE per
    object for the rest of the store's life (10 requests a commit where 5 do)."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    old = {e["path"] for e in Store(uri)._load().data}
    handler = type("Handler", (_BatchFailsFor,), {"answer": answer})
    s = Store(_via(relay(handler), prefix), notify=(said := []).append)
    handler.fail = s._f.objects().client.meta.config.retries["total_max_attempts"]   # every attempt of one call
    attempts = handler.fail
    assert s.commit(_rows(0.2)).version == 2
    seen = list(handler.seen)
    assert handler.fail == 0
    batches = [p for m, p, h in seen if _is_batch(m, p)]
    singles = [p for m, p, h in seen if m == "DELETE" and (f"/{prefix}/up/" in p or f"/{prefix}/_staging/" in p)]
    assert len(batches) == attempts + 4 and len(singles) == 2, seen
    assert not said, said
    assert not old & _keys(s3.client(), prefix)
    del handler.seen[:]
    assert s.commit(_rows(0.3)).version == 3   # the same store: its batch is not given up
    batches = [p for m, p, h in handler.seen if _is_batch(m, p)]
    assert len(batches) == 5 and not [m for m, p, h in handler.seen if m == "DELETE"], handler.seen
    left = _keys(s3.client(), prefix)
    assert not [k for k in left if k.startswith("_staging/")] and not said, (left, said)
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.3} and Store(uri).check().ok


class _RefusesBatch(_Relay):
    """An endpoint that refuses DeleteObjects itself, for every request: ``answer``."""

    answer: tuple[int, bytes] = (501, b"")

    def refuse(self) -> tuple[int, bytes] | None:
        return type(self).answer if _is_batch(self.command, self.path) else None


@pytest.mark.parametrize("answer", [
    (501, _xml_error("NotImplemented", "A header you provided implies functionality that is not implemented")),
    (405, _xml_error("MethodNotAllowed", "The specified method is not allowed against this resource.")),
    (400, _xml_error("MalformedXML", "The XML you provided was not well-formed")),
    # GCS's XML API takes a POST for a form upload
    (400, _xml_error("InvalidArgument", "POST object expects Content-Type multipart/form-data")),
], ids=["501", "405", "malformed", "gcs"])
def test_an_endpoint_refusing_the_batch_itself_is_asked_it_once(request, s3, s3env, relay, answer):  # noqa: F811
    """Refused, the batch is asked no more by that store, in this commit or the next: one DELETE
    per object (the staged and superseded file of each of 5 partitions, in each of 2 commits). A
    501 was read as "no conditional writes" (a user error) before the fallback caught it."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    handler = type("Handler", (_RefusesBatch,), {"answer": answer})
    s = Store(_via(relay(handler), prefix), notify=(said := []).append)
    assert s.commit(_rows(0.2)).version == 2 and s.commit(_rows(0.3)).version == 3
    seen = handler.seen
    assert len([p for m, p, h in seen if _is_batch(m, p)]) == 1, seen
    assert len([p for m, p, h in seen if m == "DELETE" and f"/{prefix}/up/" in p]) == 10, seen
    assert len([p for m, p, h in seen if m == "DELETE" and f"/{prefix}/_staging/" in p]) == 10, seen
    assert not said, said
    assert not [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.3} and Store(uri).check().ok


# ---- 3: a 409 is a failed delete, never one done ------------------------------------------------


class _Conflict(_Relay):
    """S3's "OperationAborted" (409: a conflicting operation in progress) for every DeleteObjects,
    and for each DELETE of a superseded data file while ``deletes`` is set."""

    deletes = False

    def refuse(self) -> tuple[int, bytes] | None:
        if _is_batch(self.command, self.path) or (type(self).deletes and self.command == "DELETE"
                                                  and "/up/" in self.path):
            return 409, _xml_error("OperationAborted", "A conflicting conditional operation is currently "
                                   "in progress against this resource. Please try again.")
        return None


def test_a_conflict_answered_to_a_delete_is_no_delete_done(request, s3, s3env, relay):  # noqa: F811
    """A 409 was read as "a conditional write lost its race" (None), which a delete sends no
    condition for: the DeleteObjects of each partition was taken as done, its staged and
    superseded files left behind, unsaid. Now the files are deleted one by one; a DELETE answered
    409 is said (the commit stands, past its commit point) and the next commit finishes it."""
    prefix = "s56-409"   # short: the notice's reason is cut to its first 200 characters, the URI's included
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, ("a", "b")))
    old = {e["path"] for e in Store(uri)._load().data}
    handler = type("Handler", (_Conflict,), {})
    assert Store(_via(relay(handler), prefix), notify=(said := []).append).commit(_rows(0.2, ("a", "b"))).version == 2
    assert not said and not old & _keys(s3.client(), prefix), said
    assert not [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]
    old = {e["path"] for e in Store(uri)._load().data}
    handler.deletes = True
    assert Store(_via(relay(handler), prefix), notify=said.append).commit(_rows(0.3, ("a", "b"))).version == 3
    assert said and "DELETE failed: OperationAborted" in said[0], said
    assert old <= _keys(s3.client(), prefix)   # not deleted, and not said to be
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.3}
    assert Store(uri, notify=None).commit(_rows(0.4, ("c",))).version == 4
    assert not old & _keys(s3.client(), prefix) and Store(uri).check().ok
