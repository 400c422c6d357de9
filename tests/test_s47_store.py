"""Review s47 of the store (``meta_study/store/``) and of ``validation.conform``: rows committed
by any path get the times ``validate`` would store (the unknown-time placeholders
``0001-01-01T00:00:00`` and the Unix epoch are null, rows that end before they start are said);
``store check`` with a FIFO where the lock file goes is one line; releasing an S3 lease whose
renewal hangs is bounded and never leaves the lease both "released" and renewed. A real S3 API on
127.0.0.1 (``tests/s3_server.py``)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading

import pandas as pd
import pyarrow as pa
import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study.store import Store
from meta_study.validation import conform, ends_before_start_note, validate

UTC = dt.timezone.utc
GO_ZERO = dt.datetime(1, 1, 1, tzinfo=UTC)          # Go's zero time.Time, .NET's DateTime.MinValue
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)         # Unix time 0


def _hand_built(starts: list, ends: list, ingested: list | None = None) -> pa.Table:
    """Canonical rows built without validate(): times as given."""
    n = len(starts)
    cols = {"source": ["s"] * n, "run_id": [f"r{i}" for i in range(n)], "us_task": ["in"] * n, "ds_task": ["c"] * n,
            "eval_protocol": ["linear"] * n, "us_accuracy": [0.5] * n, "ds_accuracy": [0.5] * n,
            "started_at": pa.array(starts, pa.timestamp("us", tz="UTC")),
            "ended_at": pa.array(ends, pa.timestamp("us", tz="UTC"))}
    if ingested is not None:
        cols["ingested_at"] = pa.array(ingested, pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


# ---- 1, 2: the unknown-time placeholders, and runs that end before they start, on every path -----


def test_conform_nulls_the_unknown_time_placeholders_as_validate_does():
    """``conform`` (``Store.commit``'s check of any table) stored 0001-01-01T00:00:00 as a time:
    a run of 2,023 years, which ``validate`` stores as null. The Unix epoch exactly is unknown too
    (the MLflow reader already maps a time of 0 to null); a second after it is a time."""
    real = dt.datetime(2024, 1, 1, tzinfo=UTC)
    t = conform(_hand_built([GO_ZERO, EPOCH, real, EPOCH + dt.timedelta(seconds=1)], [real, GO_ZERO, EPOCH, real]))
    assert t.column("started_at").to_pylist() == [None, None, real, EPOCH + dt.timedelta(seconds=1)]
    assert t.column("ended_at").to_pylist() == [real, None, None, real]


def test_conform_fills_a_placeholder_ingested_at_with_now():
    now = dt.datetime(2026, 12, 6, tzinfo=UTC)
    real = dt.datetime(2024, 1, 1, tzinfo=UTC)
    t = conform(_hand_built([real] * 3, [real] * 3, [GO_ZERO, EPOCH, real]), ingested_at=now)
    assert t.column("ingested_at").to_pylist() == [now, now, real]


@pytest.mark.parametrize("epoch", ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00", "1970-01-01",
                                   "1970-01-01T01:00:00+01:00", EPOCH, pd.Timestamp(0, tz="UTC")])
def test_validate_takes_the_unix_epoch_as_an_unknown_time(epoch):
    """A file exported by a tool that writes 0 for an unset time (C, Java, JavaScript; MLflow's
    own ``end_time`` of a run not ended) stored 1970-01-01T00:00:00Z: a run 54 years long, or one
    that "ends before it starts". The MLflow reader maps 0 to null; a file now does too."""
    f = pd.DataFrame({"source": ["s"] * 2, "run_id": ["r0", "r1"], "us_task": ["in"] * 2, "ds_task": ["c"] * 2,
                      "eval_protocol": ["linear"] * 2, "us_accuracy": [0.5] * 2, "ds_accuracy": [0.5] * 2,
                      "started_at": ["2024-01-02T00:00:00Z", "1970-01-01T00:00:01Z"], "ended_at": [epoch, None]})
    v = validate(f)
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    assert v.table.column("ended_at").to_pylist() == [None, None]
    assert v.table.column("started_at").to_pylist()[1] == EPOCH + dt.timedelta(seconds=1)
    assert v.ends_before_start is None


def test_commit_stores_hand_built_rows_as_validate_would_and_says_which_end_before_they_start(tmp_path):
    """``Store.commit`` of a table that did not go through ``validate`` stored the placeholder as a
    time, and said nothing of rows whose ``ended_at`` is before their ``started_at`` (ingest's note
    comes from ``validate`` only). The rows are kept as given, and the ``CommitResult`` says how
    many and the first, in the words ``validate`` gives ingest's note."""
    a, b = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)
    store = Store(tmp_path / "st", notify=None)
    res = store.commit(_hand_built([GO_ZERO, b, b, a], [a, a, GO_ZERO, b]))
    assert res.version == 1
    assert res.ends_before_start == (1, "run 'r1': ended_at 2024-01-01T00:00:00Z, started_at 2024-01-02T00:00:00Z")
    assert "1 row(s) end before they start (e.g. run 'r1'" in ends_before_start_note(*res.ends_before_start)
    got = store.read().sort_by("run_id")
    assert got.column("started_at").to_pylist() == [None, b, b, a]
    assert got.column("ended_at").to_pylist() == [a, a, None, b]
    assert store.commit(_hand_built([a], [b])).ends_before_start is None


def test_commit_stream_says_which_rows_end_before_they_start_over_its_batches(tmp_path):
    a, b = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)
    first = _hand_built([b, a], [a, b])
    second = _hand_built([b, b, EPOCH], [a, a, a]).set_column(1, "run_id", pa.array(["x0", "x1", "x2"]))
    res = Store(tmp_path / "st", notify=None).commit_stream(iter([(first, None), (None, None), (second, None)]))
    assert res.inserted == 5
    assert res.ends_before_start == (3, "run 'r0': ended_at 2024-01-01T00:00:00Z, started_at 2024-01-02T00:00:00Z")


# ---- 3: a FIFO where the lock file goes -----------------------------------------------------------


@pytest.mark.parametrize("repair", [False, True])
def test_store_check_with_a_fifo_for_its_lock_file_is_one_line(tmp_path, repair):
    """``store check`` could not take the lock (a FIFO in the lock file's place), took the store
    for one it may only read, and said "no damage" with exit 0, while every commit to it failed.
    It says what is wrong in one line (exit 2), as every writer does; it never opens the FIFO."""
    store = tmp_path / "st"
    Store(store, notify=None).commit(validate(make_rows(2)).table)
    lock = store / "_meta" / "LOCK"
    lock.unlink()
    os.mkfifo(lock)
    try:
        r = run_cli("store", "check", *(["--repair"] if repair else []), str(store), subprocess_=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("'store check' blocked on a FIFO")
    one_error_line(r, "_meta/LOCK", "is a FIFO, not the store's lock file", "remove it")
    assert lock.is_fifo()
    lock.unlink()
    assert run_cli("store", "check", str(store)).returncode == 0


# ---- 4: a lease renewal that never answers ---------------------------------------------------------


def test_releasing_a_lease_whose_renewal_hangs_is_bounded_and_never_releases_it(request, s3env, monkeypatch):
    """The heartbeat's renewal hung (an endpoint that accepts the request and never answers): the
    writer's release joined the heartbeat without a bound, and the command hung after its commit.
    Now the release waits a bounded time, takes the lease for lost (whether that renewal landed
    cannot be known) and does not release it: another writer can take it only once it expires,
    never beside a renewal of ours, and the late renewal is the heartbeat's last request."""
    from meta_study.store import _lock

    uri = f"s3://lab/s47-{request.node.name}"
    store = Store(uri, notify=None)
    objects = store._f.objects()
    hung, entered = threading.Event(), threading.Event()
    real_replace = objects.replace
    beats: list[str] = []

    def replace(rel, data, etag):
        if threading.current_thread().name == "meta-study-lease":
            beats.append(etag)
            entered.set()
            hung.wait(120)   # the hung request; the test ends it below
        return real_replace(rel, data, etag)

    monkeypatch.setattr(objects, "replace", replace)
    monkeypatch.setattr(_lock, "STOP_WAIT_S", 0.2)
    notices: list[str] = []
    holder: dict = {}

    def writer() -> None:
        with _lock._lease_lock(objects, 5, uri, 1.0, notices.append) as beat:   # a beat every 0.25 s
            holder["beat"] = beat
            assert entered.wait(60), "the heartbeat never renewed"

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t.join(60)
    try:
        assert not t.is_alive(), "releasing the lease waited for a renewal that never answers"
        beat = holder["beat"]
        assert beat.lost and beat.is_alive()
        assert any("did not answer the renewal" in n and "left to expire" in n for n in notices), notices
        obj = objects.get(_lock.LEASE)
        assert _lock._ours(obj, _record_of(beat)) is not None, "released while a renewal of it was in flight"
    finally:
        hung.set()
    beat.join(60)
    assert not beat.is_alive()
    assert len(beats) == 1, "the heartbeat renewed again after it was stopped"


def _record_of(beat) -> bytes:
    import json

    return json.dumps(beat.record).encode()
