"""The writers' lock of a store and its manifest (``meta_study/store/_lock.py``, ``_s3.py``,
``_manifest.py``), reviewed again: an S3 endpoint that ignores conditional writes is refused
before two writers can both hold the lease or both "create" a version's manifest; a child
forked under the lease does not release its parent's; a commit's log entry with values JSON
lacks is stored, not a traceback. A real S3 API on 127.0.0.1 (``tests/s3_server.py``)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from conftest import make_rows
from meta_study.errors import UserError
from meta_study.store import Store
from meta_study.validation import validate


def _uri(request) -> str:
    return f"s3://lab/s41-{request.node.name.replace('[', '-').replace(']', '')}"


def s3_keys(store: Store, under: str) -> list[str]:
    objects = store._f.objects()
    r = objects.client.list_objects_v2(Bucket=objects.bucket, Prefix=objects.key(under))
    return [o["Key"] for o in r.get("Contents", [])]


def _ignoring_preconditions(store: Store) -> Store:
    """``store``'s S3 client as an endpoint that ignores If-None-Match/If-Match would serve it:
    the headers never reach the server, which then overwrites (S3 before 2024, some S3-compatible
    stores)."""
    def strip(params, **_):   # noqa: ANN001, ANN003
        params.pop("IfNoneMatch", None)
        params.pop("IfMatch", None)

    store._f.objects().client.meta.events.register("provide-client-params.s3.PutObject", strip)
    return store


def test_an_endpoint_ignoring_conditional_writes_is_refused_before_two_writers_hold_the_lease(request, s3env):
    """Every conditional PUT "succeeded" there: a second writer took the lease the first held,
    and both would have created the same version's manifest, the later silently replacing the
    earlier's commit. Now the first conditional write says so in one line, and nothing is
    written."""
    pytest.importorskip("boto3")
    from meta_study.store._lock import LEASE, _lease_lock

    uri = _uri(request)
    a, b = _ignoring_preconditions(Store(uri)), _ignoring_preconditions(Store(uri))
    with pytest.raises(UserError) as e:
        with _lease_lock(a._f.objects(), 3, uri, 30):
            with _lease_lock(b._f.objects(), 3, uri, 30):
                pytest.fail("two writers held the lease at once")
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{uri}: the S3 endpoint ignores conditional writes"), line
    assert a._f.objects().get(LEASE) is None and not s3_keys(a, "_meta/")   # nothing taken, no probe left
    with pytest.raises(UserError, match="ignores conditional writes"):
        _ignoring_preconditions(Store(uri)).commit(validate(make_rows(1)).table)
    assert not s3_keys(a, "_meta/manifests/")   # no version "created"
    # an endpoint that honours them: probed once per store object, then commits as before
    s = Store(uri, lease_s=5)
    assert s.commit(validate(make_rows(1)).table).version == 1
    assert s._f.objects()._conditional_checked and s.lock_holder() is None


def test_a_commit_log_entry_with_values_json_lacks_is_stored(tmp_path):
    """``info`` (recorded in the commit log) holding a numpy int or a path was a TypeError
    traceback at the commit point, and the commit was rolled back."""
    s = Store(str(tmp_path / "st"))
    r = s.commit(validate(make_rows(2)).table, info={"source": pathlib.Path("/x/runs.csv"), "n": np.int64(3)})
    assert r.version == 1
    again = Store(str(tmp_path / "st"))
    entry = again.history()[-1]
    assert entry["source"] == "/x/runs.csv" and entry["n"] == "3"
    assert again.check().ok and len(again.read()) == 4


def test_an_unreachable_endpoint_names_the_key_written_not_the_probe():
    """The check of conditional writes is the first request a writer sends: its failure (an
    endpoint refusing connections, here) is the one line it was, naming the lease."""
    pytest.importorskip("boto3")
    from meta_study.store._s3 import S3Objects

    objects = S3Objects("s3://k:s@lab/x?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1", "s3://lab/x")
    with pytest.raises(OSError) as e:
        objects.create("_meta/LEASE.json", b"{}")
    line = str(e.value)
    assert line.startswith("s3://lab/x/_meta/LEASE.json: conditional PUT failed: "), line
    assert "probe" not in line and "\n" not in line and not objects._conditional_checked


_FORKS_UNDER_THE_LEASE = """
import os, sys
from meta_study.store import Store

with Store(sys.argv[1], lease_s=30, notify=None)._lock():
    child = os.fork()
    if child == 0:
        sys.exit(0)   # a batch generator's forked child that ends so: its stack unwinds this block
    os.waitpid(child, 0)
    h = Store(sys.argv[1]).lock_holder()
    print(None if h is None else h.pid, os.getpid(), flush=True)
"""


def test_a_child_forked_under_the_lease_does_not_release_it(request, s3env):
    """A child forked inside the lease's block whose stack unwound through it (``sys.exit``, an
    exception) released the lease its parent still held and worked under: the next writer went
    in beside the parent. The parent releases it when it leaves the block."""
    import subprocess
    import sys

    pytest.importorskip("boto3")
    uri = _uri(request)
    r = subprocess.run([sys.executable, "-c", _FORKS_UNDER_THE_LEASE, uri], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    holder, parent = r.stdout.split()
    assert holder == parent   # still the parent's after its child exited
    assert Store(uri).lock_holder() is None   # released by the parent on leaving


def test_ingest_refuses_an_endpoint_ignoring_conditional_writes_before_reading_sources(request, s3env):
    """check_writable (what ingest calls before reading any source) probes the endpoint: there,
    not after every source was read, at the lease."""
    pytest.importorskip("boto3")
    uri = _uri(request)
    with pytest.raises(UserError, match="ignores conditional writes"):
        _ignoring_preconditions(Store(uri)).check_writable()
    ok = Store(uri)
    ok.check_writable()
    assert ok._f.objects()._conditional_checked and not s3_keys(ok, "_meta/")   # the probe left nothing
