"""Review fixes of the sweep's MLflow writer (meta_study/tune/_shards.py, _rest.py): the order of a
trial's operations when a flush gives up while a writer thread holds some of them, and a stderr that
cannot be written (a closed SSH session's terminal) killing a writer thread with its batch."""

from __future__ import annotations

import json
import queue
import sys
import threading
import uuid
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from meta_study.tune._shards import MlflowWriter, Op, SweepTarget
from meta_study.tune.state import StateDir

WAIT_S = 120.0     # a generous limit for a condition that holds at once on an idle machine


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


def _writer(s: SimpleNamespace, *, resumed: bool = False, setup: bool = True) -> MlflowWriter:
    w = MlflowWriter(SweepTarget(s.uri, s.exp, s.parent, s.state_dir, {"sweep": "s"}, 10.0, resumed))
    if setup:
        w.setup()
    return w


def _one_shard(n: int) -> list[str]:
    """``n`` trial ids that the writer puts on the same thread."""
    out, i = [], 0
    while len(out) < n:
        if zlib.crc32(f"t{i}".encode()) % MlflowWriter.WRITERS == 0:
            out.append(f"t{i}")
        i += 1
    return out


def _wait(cond: Any, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if cond():
            return
        done.wait(0.01)
    raise AssertionError(f"not within {WAIT_S} s: {what}")


class _Gated:
    """MLflow's client, except a log_batch with a tag named ``gate0`` or ``gate1``: it waits until
    the test opens that gate, then goes through (gate0) or fails as a timed-out call (gate1)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = {g: threading.Event() for g in ("gate0", "gate1")}
        self.open = {g: threading.Event() for g in ("gate0", "gate1")}

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> Any:
        for gate in ("gate0", "gate1"):
            if any(t.key == gate for t in tags):
                self.entered[gate].set()
                assert self.open[gate].wait(WAIT_S)
                if gate == "gate1":
                    raise ConnectionError("read timed out")
        return self.real.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.slow(10)
def test_a_flush_that_gives_up_keeps_a_waiting_trials_order(store) -> None:
    """A thread's batch held trial Y's first tag behind trial X's call in flight; Y's later tag and
    its end were still queued. The flush that gave up spooled the queued ones; the thread then took
    them as Y's older operations, ahead of its batch, and spooled [tag second, end, tag first]: the
    next session ended the run, then set the tag's older value. Now a trial's operations keep the
    order they were put in."""
    x, y = _one_shard(2)
    w = _writer(store)
    w._client = gated = _Gated(w._mlflow())
    w.put(Op("tag", x, {"key": "gate0", "value": "1"}))
    assert gated.entered["gate0"].wait(WAIT_S)          # the thread is busy with X's first batch
    w.put(Op("tag", x, {"key": "gate1", "value": "1"}))
    w.put(Op("tag", y, {"key": "phase", "value": "first"}))
    gated.open["gate0"].set()                           # its next batch: X's gate1, then Y's first tag
    assert gated.entered["gate1"].wait(WAIT_S)          # X's call in flight, Y's tag waits behind it
    w.put(Op("tag", y, {"key": "phase", "value": "second"}))
    w.put(Op("end", y, {"status": "FINISHED"}))
    result: list[bool] = []
    flusher = threading.Thread(target=lambda: result.append(w.flush(0.2)))
    flusher.start()
    state = StateDir(store.state_dir)
    _wait(lambda: any('"second"' in line for _, ls in state.spooled() for line in ls), "the queued operations spooled")
    gated.open["gate1"].set()                           # X's call comes back, failed: the thread spools
    flusher.join(WAIT_S)
    assert result == [False]
    # one object (the queued ones' went once the thread had spooled them again): the two tags merged,
    # the later value kept, then the end
    kinds = [(o["kind"], (o["payload"].get("tags") or {}).get("phase") or o["payload"].get("value"))
             for _, ls in state.spooled() for o in map(json.loads, ls) if o["trial"] == y]
    assert kinds == [("batch", "second"), ("end", None)], kinds
    w2 = _writer(store, resumed=True)                   # the next session, the server back
    assert w2.flush(30)
    (run,) = store.client.search_runs([store.exp], f"tags.trial_id = '{y}'")
    assert run.data.tags["phase"] == "second" and run.info.status == "FINISHED"
    assert not state.spooled()


class _Interleaved(queue.Queue):
    """A writer thread's queue where the thread, taking its batch, and a flush that gives up, emptying
    the queue, take turns: the thread's second op, the flush's first, then the thread's next."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.thread_hooked = False
        self.flush_calls = 0
        self.flush_took, self.thread_took, self.held_taken = threading.Event(), threading.Event(), threading.Event()

    def get_nowait(self) -> Any:
        worker = threading.current_thread().name.startswith("mlflow-sweep-writer")
        if self.armed and worker and not self.thread_hooked:
            self.thread_hooked = True
            self.flush_took.wait(5)          # with the fix the flush cannot take now: 5 s, then on
            item = super().get_nowait()
            self.thread_took.set()
            return item
        if self.armed and not worker:
            self.flush_calls += 1
            if self.flush_calls == 1:
                item = super().get_nowait()
                self.flush_took.set()
                self.thread_took.wait(5)
                return item
            if self.flush_calls == 2:
                self.held_taken.wait(5)      # the thread merges what was spooled before the flush spools
        return super().get_nowait()


@pytest.mark.slow(10)
def test_a_thread_and_a_flush_taking_at_once_keep_a_trials_order(store) -> None:
    """A flush that gave up emptied the queues while a thread took its batch from one: the thread got
    the trial's first and third operations, the flush its second, spooled after the thread's (an
    object named later), and the next session set the tag's second value last."""
    (z,) = _one_shard(1)
    w = _writer(store, setup=False)
    q = _Interleaved()
    w._queues = [q] + [queue.Queue() for _ in range(MlflowWriter.WRITERS - 1)]
    w.setup()
    take = w._take_held

    def taken(trial: str) -> Any:
        out = take(trial)
        q.held_taken.set()
        return out

    w._take_held = taken  # type: ignore[method-assign]
    q.armed = True
    for v in ("1", "2", "3"):
        w.put(Op("tag", z, {"key": "k", "value": v}))
    assert w.flush(0.2) is False
    w2 = _writer(store, resumed=True)
    assert w2.flush(30)
    (run,) = store.client.search_runs([store.exp], f"tags.trial_id = '{z}'")
    assert run.data.tags["k"] == "3"


class _EIO:
    """A stderr that cannot be written: a closed SSH session's terminal."""

    def write(self, s: str) -> int:
        raise OSError(5, "Input/output error")

    def flush(self) -> None:
        raise OSError(5, "Input/output error")


class _Down:
    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise ConnectionRefusedError(111, "Connection refused")
        return call


def test_a_stderr_that_cannot_be_written_loses_no_operation(store, monkeypatch) -> None:
    """The server down and stderr unwritable: the writer's "calls have failed" line raised in its
    thread, which died with its batch marked done; the flush then found nothing pending and said
    everything was sent, with nothing sent or spooled. Now the line is lost, not the operations."""
    monkeypatch.setattr(MlflowWriter, "SAY_DOWN_AFTER_S", 0.0)
    w = _writer(store)
    w._client = _Down()
    monkeypatch.setattr(sys, "stderr", _EIO())
    w.put(Op("tag", "t1", {"key": "k", "value": "v"}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(0.5) is False
    monkeypatch.undo()
    lines = [json.loads(x) for _, ls in StateDir(store.state_dir).spooled() for x in ls]
    assert [o["kind"] for o in lines] == ["batch", "end"], lines
    assert all(t.is_alive() for t in w._threads)


class _Hanging:
    """MLflow's client, except create_run: it waits until the test lets it go (a call that outlives
    the flush's wait for calls in flight, as a large artifact upload does)."""

    def __init__(self, real: Any) -> None:
        self.real, self.entered, self.go = real, threading.Event(), threading.Event()

    def create_run(self, *a: Any, **k: Any) -> Any:
        self.entered.set()
        assert self.go.wait(WAIT_S)
        return self.real.create_run(*a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_operations_still_in_flight_after_a_flush_gave_up_are_reported_held(store, monkeypatch, capfd) -> None:
    """A call still in flight when a flush that gave up had waited its HTTP timeout for it: the flush
    returned with the trial's operations neither sent nor spooled and reported none held, so the
    sweep said what was left was kept in the spool, and the writer then exited with them."""
    from meta_study.tune import _shards

    monkeypatch.setattr(_shards, "call_limit_s", lambda: -4.9)     # the wait for calls in flight: 0.1 s
    w = _writer(store)
    w._client = hanging = _Hanging(w._mlflow())
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert hanging.entered.wait(WAIT_S)
    try:
        assert w.flush(0.1) is False
        assert w.held_ops >= 1                        # the run (and its end, if in the same batch)
        assert "still in MLflow calls" in capfd.readouterr().err
    finally:
        hanging.go.set()
    assert w.flush(30) is True and w.held_ops == 0    # the call came back: sent after all
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED"
