"""Review fixes of the sweep writer and its state (meta_study/tune/state.py, _shards.py): which of
two run-map entries of a trial a later session takes, the order in which spooled operations come
back, and operations in flight when a flush gives up on a server that never answers."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow_server import refused_port

from meta_study.tune.state import RUNS, StateDir


def test_a_trials_latest_map_entry_wins_not_the_larger_run_id(tmp_path: Path) -> None:
    """reconcile adopts a second run for a trial the writer had mapped (finalize.reconcile:
    ``callback.adopt``): the map then holds two entries, and runs() took the one whose run id sorts
    last (random), so a resumed writer logged half the time into the run that was given up."""
    state = StateDir(str(tmp_path / "sweep"))
    state.add_run("t1", "ffff0000", "k")
    state.add_run("t1", "0000ffff")                  # adopted later
    state.add_run("t2", "0000aaaa")
    state.add_run("t2", "ffffbbbb")                  # adopted later, larger id too
    assert StateDir(str(tmp_path / "sweep")).runs() == {"t1": "0000ffff", "t2": "ffffbbbb"}
    state.add_run("t1", "ffff0000", "k")             # the first run adopted back: the same entry, rewritten
    assert StateDir(str(tmp_path / "sweep")).runs()["t1"] == "ffff0000"
    assert sorted(state.run_entries()) == [("t1", "0000ffff", None), ("t1", "ffff0000", "k"),
                                           ("t2", "0000aaaa", None), ("t2", "ffffbbbb", None)]


def test_empty_map_entries_of_earlier_versions_count_by_their_time(tmp_path: Path) -> None:
    """Entries written before the map held times are empty files: the newer file wins."""
    state = StateDir(str(tmp_path / "sweep"))
    runs = tmp_path / "sweep" / "meta_study" / RUNS
    runs.mkdir(parents=True)
    (runs / "t1.ffff0000").touch()
    os.utime(runs / "t1.ffff0000", ns=(1_700_000_000_000_000_000,) * 2)
    (runs / "t1.0000ffff.k").touch()
    assert state.runs() == {"t1": "0000ffff"}


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


def _writer(s: SimpleNamespace, *, resumed: bool = False) -> Any:
    from meta_study.tune._shards import MlflowWriter, SweepTarget

    w = MlflowWriter(SweepTarget(s.uri, s.exp, s.parent, s.state_dir, {"sweep": "s"}, 10.0, resumed))
    w.setup()
    return w


@pytest.mark.slow(5)
def test_a_resumed_writer_logs_into_the_trials_latest_run(store) -> None:
    """The same through the writer: the run adopted last gets the next session's metrics."""
    first, later = sorted((store.client.create_run(store.exp).info.run_id for _ in range(2)), reverse=True)
    state = StateDir(store.state_dir)
    state.add_run("t1", first, "k")
    state.add_run("t1", later)                       # its run id sorts first
    from meta_study.tune._shards import Op

    w = _writer(store, resumed=True)
    w.put(Op("metrics", "t1", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
    assert w.flush(10)
    assert store.client.get_run(later).data.metrics == {"m": 0.5}
    assert store.client.get_run(first).data.metrics == {}


class _Slow:
    """A tracking server that answers every call with an error after ``delay_s`` (a timeout)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.called = threading.Event()              # a call is in flight: its batch was taken

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            self.called.set()
            time.sleep(self.delay_s)
            raise ConnectionError("read timed out")
        return call


@pytest.mark.slow(5)
def test_ops_in_flight_when_a_flush_gives_up_replay_before_the_queued_ones(store) -> None:
    """A flush that gave up spooled the queued ops at once and a trial's ops in flight when their
    call came back, in a later object: the next session replayed the trial's later ops first (here
    a tag's newer value, then its older one: the older stayed; an "end" before its "reopen" left
    the run RUNNING)."""
    from meta_study.tune._shards import Op

    w = _writer(store)
    w._client = slow = _Slow(1.0)
    w.put(Op("tag", "t1", {"key": "phase", "value": "first"}))
    assert slow.called.wait(30)                      # in flight: its create call takes 1 s
    w.put(Op("tag", "t1", {"key": "phase", "value": "second"}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(0.3) is False
    assert sum(q.unfinished_tasks for q in w._queues) == 0
    lines = [json.loads(x) for _, ls in StateDir(store.state_dir).spooled() for x in ls]
    phases = [o["payload"].get("tags", {}).get("phase") if o["kind"] == "batch" else o["payload"].get("value")
              for o in lines]
    assert [(o["kind"], p) for o, p in zip(lines, phases)] == [
        ("batch", "first"), ("tag", "second"), ("end", None)]
    w2 = _writer(store, resumed=True)                # the next session, the server back
    assert w2.flush(10)
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.data.tags["phase"] == "second" and run.info.status == "FINISHED"
    assert not StateDir(store.state_dir).spooled()


def _one_shard(n: int, shards: int = 4) -> list[str]:
    """``n`` trial ids that the writer puts on the same thread (crc32 % shards)."""
    import zlib

    out, i = [], 0
    while len(out) < n:
        t = f"t{i}"
        if zlib.crc32(t.encode()) % shards == 0:
            out.append(t)
        i += 1
    return out


@pytest.mark.slow(10)
def test_a_server_that_never_answers_loses_no_operation_in_flight(tmp_path: Path, monkeypatch) -> None:
    """A server that accepts connections and never answers: a flush that gave up waited 30 s for
    the calls in flight (their HTTP timeout is 60 s), and each later trial of the thread's batch
    first made a call of its own (60 s each) before spooling; the flush returned with them neither
    sent nor spooled, and the writer process exited (or the driver killed it) with them."""
    from meta_study.tune._rest import _RestRuns
    from meta_study.tune._shards import MlflowWriter, Op, SweepTarget

    monkeypatch.setattr(_RestRuns, "TIMEOUT_S", 1.0, raising=False)
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(64)                                  # the kernel accepts; nobody answers
    uri = f"http://127.0.0.1:{mute.getsockname()[1]}"
    try:
        w = MlflowWriter(SweepTarget(uri, "1", "p", str(tmp_path / "exp"), {}, 10.0, False))
        w.creds = {"host": uri, **{f: None for f in _RestRuns.CRED_FIELDS if f != "host"}}
        w.setup()
        trials = _one_shard(40)
        for t in trials:
            w.put(Op("run", t, {"name": f"s_{t}", "config": {"lr": 0.1}}))
            w.put(Op("end", t, {"status": "FINISHED"}))
        # the thread took its batch (trials in flight): all 80 operations, or, on a loaded machine
        # where it woke between two puts, the first few, with its first call then failing (at
        # most 60 s)
        end = time.monotonic() + 60
        while any(q.qsize() for q in w._queues) and not w.errors and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.05)
        t0 = time.monotonic()
        assert w.flush(0.2) is False
        assert time.monotonic() - t0 < 20
        assert sum(q.unfinished_tasks for q in w._queues) == 0
        lines = [json.loads(x) for _, ls in StateDir(str(tmp_path / "exp")).spooled() for x in ls]
        by_trial: dict[str, list[str]] = {}
        for o in lines:
            by_trial.setdefault(o["trial"], []).append(o["kind"])
        # every trial's two operations, in order: those in flight as the batch they were planned
        # into, those still queued as they were put
        assert set(by_trial) == set(trials)
        assert all(by_trial[t] in (["batch", "end"], ["run", "end"]) for t in trials), by_trial
        taken = [t for t in trials if by_trial[t][0] == "batch"]
        assert taken and taken == trials[:len(taken)]      # the thread's batch: the first ones put
    finally:
        mute.close()


@pytest.mark.slow(15)
def test_a_spool_object_cut_short_costs_its_bad_line_not_the_session(store, capfd) -> None:
    """A spool object whose last line was cut short (a crash before its data reached the disk):
    replay raised out of the writer process's setup, so every session's writer died at start and
    took all of its operations with it. Now the readable lines replay, the object is kept aside as
    ``<name>.damaged`` (never replayed), and stderr says so in one line."""
    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    spool = Path(store.state_dir) / "meta_study" / "spool"
    spool.mkdir(parents=True)
    good = {"kind": "run", "trial": "t0", "payload": {"name": "s_t0", "config": {"lr": 0.1}}}
    (spool / "1700000000000000000-1-abc.jsonl").write_text(json.dumps(good) + '\n{"kind": "end", "trial": "t0", "pa')
    w = WriterProcess(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {}, 20.0, True))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.2}}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.close(20) is True
    (t1,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    (t0,) = store.client.search_runs([store.exp], "tags.trial_id = 't0'")
    assert t1.info.status == "FINISHED" and t0.data.params == {"lr": "0.1"}
    assert sorted(p.name for p in spool.iterdir()) == ["1700000000000000000-1-abc.jsonl.damaged"]
    err = [line for line in capfd.readouterr().err.splitlines() if "meta-study writer" in line]
    assert len(err) == 1 and "1 of 2 line(s) unreadable" in err[0] and "Traceback" not in err[0], err


@pytest.mark.slow(15)
def test_a_resumed_writer_spools_in_time_while_the_server_is_down(tmp_path: Path) -> None:
    """A resumed trial's first batch reads its run's params through MLflow's client, whose own
    retries (7, backing off to 120 s) held the writer thread ~4 minutes against a server that
    refuses connections: the flush that gave up waited 30 s, the driver killed the child 60 s
    after closing it, and the trial's operations were neither sent nor spooled. The writer
    process retries itself, so MLflow's retries are off in it (a user's setting wins)."""
    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    uri = f"http://127.0.0.1:{refused_port()}"       # a port nobody listens on (held bound): refused at once
    state_dir = str(tmp_path / "exp")
    StateDir(state_dir).add_run("t1", "0123abcd", "k1")     # an earlier session's run
    w = WriterProcess(SweepTarget(uri, "1", "p", state_dir, {}, 1.0, True))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}, "config_key": "k1"}))
    w.put(Op("metrics", "t1", {"metrics": {"m": 0.5}, "step": 3, "time": 1000}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    time.sleep(2)                                    # the child is up; the thread is in its first call
    # no wall-clock bound (the close includes the child's start-up: 15-18 s on a loaded 2-core
    # machine): held by MLflow's retries, the child was killed 60 s after the close, and the
    # spool below was empty
    assert w.close(1.0) is False
    lines = [json.loads(x) for _, ls in StateDir(state_dir).spooled() for x in ls]
    assert [(o["trial"], o["kind"]) for o in lines] == [("t1", "batch"), ("t1", "end")]
    assert lines[0]["payload"]["metrics"] == [["m", 0.5, 1000, 3]]


@pytest.mark.slow(15)
def test_a_writer_whose_heartbeat_cannot_be_read_or_written_still_logs(store, capfd) -> None:
    """A storage failing as the writer process started (here ``writer.json`` is unreadable and
    unwritable: a directory): the heartbeat's read, then its first beat, raised out of the
    process's start, and every operation of the session died with it (each next one started a
    writer that died again). Now it is said on stderr and the writer goes on."""
    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    (Path(store.state_dir) / "meta_study" / "writer.json").mkdir(parents=True)
    w = WriterProcess(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {}, 20.0, False))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.2}, "config_key": "k1"}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.close(20) is True
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED" and StateDir(store.state_dir).runs() == {"t1": run.info.run_id}
    err = capfd.readouterr().err
    assert "could not read the previous writer's heartbeat" in err and "Traceback" not in err


@pytest.mark.slow(5)
def test_a_run_map_or_spool_that_cannot_be_read_at_start_is_said_not_raised(store, monkeypatch, capfd) -> None:
    """The same for the run map's LIST and the spool's: setup raised. Without the map, a trial's
    run is looked up by its tag before one is created (no second run); the spool stays."""
    from meta_study.tune._shards import Op

    first = _writer(store)
    first.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.2}}))
    assert first.flush(10)
    StateDir(store.state_dir).spool([json.dumps({"kind": "tag", "trial": "t2", "payload": {"key": "a", "value": "b"}})])
    real_runs, real_spooled = StateDir.runs, StateDir.spooled

    def down(self: StateDir) -> Any:
        raise OSError("s3://lab/tune/x: LIST failed: 503 SlowDown")

    monkeypatch.setattr(StateDir, "runs", down)
    monkeypatch.setattr(StateDir, "spooled", down)
    w = _writer(store)                               # a later session, the map unreadable
    monkeypatch.setattr(StateDir, "runs", real_runs)
    monkeypatch.setattr(StateDir, "spooled", real_spooled)
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(10)
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED"
    assert len(StateDir(store.state_dir).spooled()) == 1
    err = capfd.readouterr().err
    assert "could not read the run map" in err and "could not read the spool" in err


class _Down:
    """A tracking server that refuses every call."""

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise ConnectionError("tracking server unreachable")
        return call


@pytest.mark.slow(5)
def test_a_spool_named_by_a_clock_ahead_replays_before_what_spooled_it_again(store) -> None:
    """A spool object named by a machine whose clock is an hour ahead, replayed by a session whose
    server is down too: that session spooled its operations again, with its own newer ones, under
    an earlier name, and a writer stopped before it dropped the old object (killed, or its flush
    still waiting) left the next session replaying the old operations last: the tag's older value
    won. Now a writer names its objects after every one it replayed."""
    from meta_study.tune._shards import Op

    ahead = time.time_ns() + 3600 * 10**9
    spool = Path(store.state_dir) / "meta_study" / "spool"
    spool.mkdir(parents=True)
    (spool / f"{ahead}-1-abcdef.jsonl").write_text(
        json.dumps({"kind": "tag", "trial": "t1", "payload": {"key": "phase", "value": "old"}}) + "\n")
    w = _writer(store, resumed=True)                 # replays it; the server is down
    w._client = _Down()
    w.put(Op("tag", "t1", {"key": "phase", "value": "new"}))
    assert w.flush(0.3) is False                     # spooled again, in one new object; the replayed one dropped
    assert len(StateDir(store.state_dir).spooled()) == 1
    w2 = _writer(store, resumed=True)                # the next session, the server back
    assert w2.flush(10)
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.data.tags["phase"] == "new"
    assert not StateDir(store.state_dir).spooled()


def test_recovering_the_run_map_leaves_a_mapped_trial_its_run(store) -> None:
    """A resume adds the runs the map lacks (created just before a driver died). A second run of
    a trial the map already gives a run (a duplicate) was added too, and, now that a trial's
    latest entry wins, would have taken the trial's logging from the run it had."""
    from meta_study.tune.state import StateDir
    from meta_study.tune.tracking import recover_run_map

    def child(trial: str) -> str:
        return store.client.create_run(store.exp, tags={"mlflow.parentRunId": store.parent,
                                                        "trial_id": trial}).info.run_id

    mapped, duplicate, lost = child("t1"), child("t1"), child("t2")
    state = StateDir(store.state_dir)
    state.add_run("t1", mapped)
    assert recover_run_map(store.uri, store.exp, store.parent, state) == 1
    assert StateDir(store.state_dir).runs() == {"t1": mapped, "t2": lost}
    assert duplicate not in {r for _, r, _ in StateDir(store.state_dir).run_entries()}


@pytest.mark.slow(15)
def test_a_writer_process_that_dies_mid_sweep_is_said(store, capfd) -> None:
    """A writer child killed between flushes (the OOM killer) took the operations in its pipe with
    it, and the next operation started a new child without a word: the sweep ended "ok" with runs
    missing their metrics. The restart is said on stderr in one line."""
    import signal

    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    w = WriterProcess(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {}, 20.0, False))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.2}, "config_key": "k1"}))
    assert w.flush(20)
    assert w._proc is not None
    os.kill(w._proc.pid, signal.SIGKILL)
    w._proc.wait(10)
    w.put(Op("end", "t1", {"status": "FINISHED"}))     # a new child
    assert w.close(20) is True and w.died == 1
    err = [line for line in capfd.readouterr().err.splitlines() if "writer process" in line]
    assert len(err) == 1 and "exited with code -9 mid-sweep" in err[0], err
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED"
