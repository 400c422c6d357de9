"""The writers' lock of a store (``meta_study/store/_lock.py``, ``_s3.py``), reviewed again: a
lease renewal or release of ours that landed while its call failed (every retry of the client
timed out or was answered 5xx) is still ours; a child forked under a local lock does not keep
it; an AWS configuration boto3 cannot read is one line. A real S3 API on 127.0.0.1
(``tests/s3_server.py``) and real processes."""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import threading

import pytest

from meta_study.store import Store

pytest.importorskip("boto3")


def _uri(request) -> str:
    return f"s3://lab/s39-{request.node.name.replace('[', '-').replace(']', '')}"


@pytest.mark.slow(10)
def test_a_renewal_that_landed_while_its_call_failed_keeps_the_lease(request, s3env, monkeypatch):
    """A renewal PUT landed but its call raised (the client's retries all timed out): the next
    beat, with its etag now stale, got 412 and compared the object with its *new* record (another
    ``renewed_at``): the heartbeat took its own lease for broken and stopped, so the lease expired
    under a live writer, and was never released (the next writer waited a whole lease, 60 s by
    default, and was told the holder "died or stalled")."""
    from meta_study.store import _lock
    from meta_study.store._lock import _lease_lock, lease_holder
    from meta_study.store._s3 import S3Objects

    # each record a second later than the one before: a renewal's record always differs from
    # the one that landed unanswered (renewed_at has 1 s resolution)
    tick = itertools.count()
    start = _dt.datetime.now(_dt.timezone.utc)
    monkeypatch.setattr(_lock, "_now", lambda: start + _dt.timedelta(seconds=next(tick)))
    real_replace = S3Objects.replace
    renewals = {"n": 0}
    renewed_after = threading.Event()

    def replace(self, rel, data, etag):   # noqa: ANN001
        new = real_replace(self, rel, data, etag)
        if rel.endswith("LEASE.json") and new is not None and b"renewed_at" in data:
            renewals["n"] += 1
            if renewals["n"] == 1:
                raise OSError("s3://lab/x/_meta/LEASE.json: conditional PUT failed: Read timeout")   # landed
            if renewals["n"] >= 3:
                renewed_after.set()
        return new

    monkeypatch.setattr(S3Objects, "replace", replace)
    objects = Store(_uri(request))._f.objects()
    with _lease_lock(objects, 5, "x", lease_s=1.0, notify=None) as beat:
        for _ in range(600):   # until two renewals after the unanswered one, or the lease is lost
            if renewed_after.wait(0.1) or beat.lost:
                break
        assert not beat.lost and renewed_after.is_set()
    assert lease_holder(objects) is None   # released, not left to expire


@pytest.mark.slow(10)
def test_a_release_after_a_renewal_that_landed_unanswered_releases_the_lease(request, s3env):
    """The last renewal landed unanswered just before the writer finished (its heartbeat's etag
    stale): the release PUT got 412 and the lease was left held by a writer that had exited, so
    the next writer waited the whole lease (a day at most) for nobody."""
    from meta_study.store._lock import LEASE, _lease_lock, lease_holder

    objects = Store(_uri(request))._f.objects()
    with _lease_lock(objects, 5, "x", lease_s=600, notify=None) as beat:
        obj = objects.get(LEASE)
        assert obj is not None and obj.etag == beat.etag
        # our heartbeat's renewal, landed, its reply lost: beat.etag not updated
        renewed = {**json.loads(obj.data), "renewed_at": "2026-01-01T00:00:00+00:00"}
        assert objects.replace(LEASE, json.dumps(renewed).encode(), beat.etag) is not None
    assert lease_holder(objects) is None


@pytest.mark.slow(10)
def test_another_writers_record_is_never_taken_for_ours(request, s3env):
    """What the owner check must not do: a lease taken over by another writer (or broken, or
    released) is lost, whatever the renewals of ours that failed."""
    from meta_study.store._lock import LEASE, _ours, break_lease

    objects = Store(_uri(request))._f.objects()
    mine = {"pid": 1, "owner": "a" * 32, "lease_s": 60.0}
    body = json.dumps(mine).encode()
    assert objects.create(LEASE, body) is not None
    assert _ours(objects.get(LEASE), body) is not None
    assert _ours(objects.get(LEASE), json.dumps({**mine, "owner": "b" * 32}).encode()) is None
    released = json.dumps({**mine, "released": True}).encode()
    assert objects.replace(LEASE, released, objects.get(LEASE).etag) is not None
    assert _ours(objects.get(LEASE), body) is None
    assert break_lease(objects) is None   # released: nothing to break
    assert _ours(objects.get(LEASE), json.dumps({"pid": 2}).encode()) is None   # no owner id: never ours


_FORKS_UNDER_THE_LOCK = """
import os, sys, time
from meta_study.store import Store

with Store(sys.argv[1])._lock():
    child = os.fork()   # a batch generator's multiprocessing pool, say
    if child == 0:
        null = os.open(os.devnull, os.O_RDWR)   # the test's pipes close when the writer exits
        os.dup2(null, 1), os.dup2(null, 2)
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
"""


def test_a_child_forked_under_a_local_lock_does_not_keep_it(tmp_path):
    """A writer that forked while it held a local store's lock (its child inherits the lock
    file's descriptor, so the flock) left the lock held by the child after it finished: every
    later writer waited its whole timeout (900 s), told to wait for the writer that had exited,
    and 'store unlock' called that dead process live."""
    import os
    import signal
    import subprocess
    import sys

    store = Store(tmp_path / "st")
    r = subprocess.run([sys.executable, "-c", _FORKS_UNDER_THE_LOCK, str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    child = int(r.stdout.strip())
    try:
        os.kill(child, 0)   # the child lives on (the writer has exited)
        assert store.lock_holder() is None
        with Store(tmp_path / "st", lock_timeout_s=0, notify=None)._lock():
            pass
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.slow(20)
def test_an_aws_profile_that_does_not_exist_is_one_line(request, s3env):
    """AWS_PROFILE naming no profile: boto3 raises while the client is made, outside the S3
    calls' error handling, and every writer and 'store unlock' ended in a traceback."""
    from conftest import make_rows, one_error_line, run_cli
    from meta_study.validation import validate

    uri = _uri(request)
    Store(uri, notify=None).commit(validate(make_rows(2)).table)
    r = run_cli("store", "unlock", uri, env={**s3env, "AWS_PROFILE": "no-such-profile"})
    one_error_line(r, uri, "could not be found", "no-such-profile")


@pytest.mark.slow(10)
def test_an_endpoint_refusing_every_conditional_write_is_told_not_hammered(request, s3env, monkeypatch):
    """An S3 endpoint that answers 412 to every conditional PUT (a proxy or an S3-compatible
    server without them): the writer retried the free lease every 0.05 s (three requests each)
    and said nothing until its timeout, 15 minutes by default."""
    from meta_study.errors import StoreLockedError
    from meta_study.store._lock import _lease_lock
    from meta_study.store._s3 import S3Objects

    writes = []

    def refused(self, rel, data, etag=None):   # noqa: ANN001 - what S3Objects makes of a 412
        writes.append(rel)
        return None

    monkeypatch.setattr(S3Objects, "create", refused)
    monkeypatch.setattr(S3Objects, "replace", refused)
    notes: list[str] = []
    with pytest.raises(StoreLockedError, match="could not take the store's lease in 4 s"):
        with _lease_lock(Store(_uri(request))._f.objects(), 4, "s3://lab/x", 60.0, notes.append):
            pass
    assert len(notes) == 1 and "every conditional write of its lease has failed" in notes[0], notes
    assert "refuses conditional writes" in notes[0] and len(writes) < 40, len(writes)
