"""Defects found in a review of the sweep's MLflow writer (meta_study/tune/_shards.py, writer.py,
_rest.py, mlflow_client.py): a run map that cannot be written held every MLflow operation of a
trial, a checkpoint directory that was gone became an empty checkpoint, a dead writer child left
its pipe and feeder thread behind. The writer runs in this process against a sqlite MLflow store."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune._shards import MlflowWriter, Op, SweepTarget
from meta_study.tune.state import StateDir


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    # artifacts under tmp_path: a sqlite store's default is ./mlruns in the working directory
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


def _writer(s: SimpleNamespace, *, flush_timeout_s: float = 20.0) -> MlflowWriter:
    w = MlflowWriter(SweepTarget(s.uri, s.exp, s.parent, s.state_dir, {}, flush_timeout_s, False))
    w.setup()
    return w


def _full_disk(w: MlflowWriter) -> list[bool]:
    """``[True]``: the run map of ``w`` cannot be written (a full disk on the storage path)."""
    full, real = [True], w.state.add_run

    def add_run(*a: Any, **k: Any) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*a, **k)

    w.state.add_run = add_run  # type: ignore[method-assign]
    return full


def test_a_run_map_that_cannot_be_written_holds_no_mlflow_operation(store, capfd) -> None:
    """A map write that raised failed the trial's step as if MLflow had: retried, every later
    operation of the trial held behind it (no metrics, the run RUNNING, "MLflow calls ... have
    failed"), then spooled to the same full storage and lost at exit. Now the operations go to
    MLflow, the failure is said once, and the entry is written once the storage takes it."""
    w = _writer(store)
    full = _full_disk(w)
    for t in ("t1", "t2"):
        w.put(Op("run", t, {"name": t, "config": {"lr": 0.1}, "config_key": f"k{t}"}))
        w.put(Op("metrics", t, {"metrics": {"loss": 0.5}, "step": 1, "time": 1000}))
        w.put(Op("end", t, {"status": "FINISHED"}))
    assert w.flush(timeout_s=60)
    for t in ("t1", "t2"):
        [run] = store.client.search_runs([store.exp], f"tags.trial_id = '{t}'")
        assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.5}
    err = capfd.readouterr().err
    assert err.count("could not write trial") == 1 and "No space left on device" in err
    assert "have failed" not in err
    assert StateDir(store.state_dir).runs() == {}

    full[0] = False                 # space again: the entry goes with the trial's next operation
    w.put(Op("tag", "t1", {"key": "note", "value": "x"}))
    assert w.flush(timeout_s=60)
    [(trial, rid, key)] = StateDir(store.state_dir).run_entries()
    assert (trial, key) == ("t1", "kt1")
    assert rid == store.client.search_runs([store.exp], "tags.trial_id = 't1'")[0].info.run_id


def test_an_adopted_run_gets_its_operations_while_the_map_cannot_be_written(store) -> None:
    """The "map" step (a resumed sweep's trial taking over a lost trial's run) raised the same way,
    and held the adopting trial's operations."""
    old = store.client.create_run(store.exp, tags={"mlflow.parentRunId": store.parent, "trial_id": "old"})
    w = _writer(store)
    _full_disk(w)
    w.put(Op("map", "new", {"run": old.info.run_id, "config_key": "k"}))
    w.put(Op("metrics", "new", {"metrics": {"loss": 0.25}, "step": 3, "time": 2000}))
    w.put(Op("end", "new", {"status": "FINISHED"}))
    assert w.flush(timeout_s=60)
    run = store.client.get_run(old.info.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.25}


def test_a_checkpoint_directory_that_is_gone_names_no_empty_checkpoint(store, tmp_path, capfd) -> None:
    """MLflow's log_artifacts copies nothing from a directory that does not exist, without an
    error, and the run's checkpoint_uri then named an empty artifact directory (a spooled operation
    replayed on another machine, a checkpoint deleted since). Now it is said, and no tag is set; a
    directory that is there is still copied."""
    w = _writer(store)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model.pt").write_bytes(b"weights")
    for t, d in (("gone", tmp_path / "missing"), ("kept", kept)):
        w.put(Op("run", t, {"name": t, "config": {"lr": 0.1}}))
        w.put(Op("artifacts", t, {"dir": str(d)}))
        w.put(Op("end", t, {"status": "FINISHED"}))
    assert w.flush(timeout_s=60)
    [gone] = store.client.search_runs([store.exp], "tags.trial_id = 'gone'")
    assert gone.info.status == "FINISHED" and "checkpoint_uri" not in gone.data.tags
    assert store.client.list_artifacts(gone.info.run_id) == []
    [ok] = store.client.search_runs([store.exp], "tags.trial_id = 'kept'")
    assert ok.data.tags["checkpoint_uri"].endswith("/checkpoint")
    assert [a.path for a in store.client.list_artifacts(ok.info.run_id, "checkpoint")] == ["checkpoint/model.pt"]
    assert f"its checkpoint directory {tmp_path / 'missing'} is gone" in capfd.readouterr().err


@pytest.mark.slow(45)
def test_a_writer_child_that_died_leaves_no_pipe_or_thread_behind(store) -> None:
    """The driver's handle on a writer child that died mid-sweep (the OOM killer) started a new
    child and left the old one's feeder thread waiting for a line for good, holding the dead
    child's stdin open, and its stdout open until collected: a thread and two descriptors per
    death. ``close`` left the last child's stdout open the same way."""
    import os
    import signal
    import time

    from meta_study.tune.writer import WriterProcess

    w = WriterProcess(SweepTarget(store.uri, store.exp, store.parent, store.state_dir, {}, 20.0, False))
    w.put(Op("run", "t1", {"name": "t1", "config": {"lr": 0.2}}))
    assert w.flush(20)
    old_proc, old_pipe = w._proc, w._pipe
    assert old_proc is not None and old_pipe is not None
    os.kill(old_proc.pid, signal.SIGKILL)
    old_proc.wait(10)
    w.put(Op("end", "t1", {"status": "FINISHED"}))     # a new child
    assert w.died == 1 and w._proc is not old_proc
    assert old_proc.stdout is not None and old_proc.stdout.closed
    end = time.monotonic() + 20                         # the feeder thread closes it, at once
    while not old_pipe.stdin.closed and time.monotonic() < end:
        time.sleep(0.05)
    assert old_pipe.stdin.closed
    last = w._proc
    assert w.close(30) is True
    assert last is not None and last.stdout is not None and last.stdout.closed
    (run,) = store.client.search_runs([store.exp], "tags.trial_id = 't1'")
    assert run.info.status == "FINISHED"


def test_the_writer_threads_share_one_rest_client(tmp_path, monkeypatch) -> None:
    """Four writer threads that asked for the REST client at once (a replay wakes them all) each
    made one: a refused credential was said once per client, not once, and the connections of
    the clients dropped were left open until collected."""
    import threading

    from meta_study.tune import _shards

    made: list[object] = []
    gate = threading.Barrier(4)

    class Rest:
        def __init__(self, uri: str, creds: Any) -> None:
            made.append(self)
            try:           # the other threads' calls arrive while this one is being made
                gate.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass

    monkeypatch.setattr(_shards, "_RestRuns", Rest)
    w = MlflowWriter(SweepTarget("http://127.0.0.1:9", "1", "p", str(tmp_path / "exp"), {}, 20.0, False))
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(w._rest_client())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(made) == 1 and got == made * 4


def test_an_error_line_cuts_a_password_that_holds_an_at_sign() -> None:
    """The writer's error lines (its stderr, the end-of-sweep line) cut a URL's user info only up
    to its first ``@``: a password with one unencoded (which urllib reads up to the last) kept
    its tail, ``http://ss@proxy``."""
    from meta_study.tune._shards import error_line

    line = error_line(OSError("no route: http://u:p@ss@proxy:3128/x, s3://AK:se@cr@t@bucket/k for user x@y"))
    assert line == "OSError: no route: http://proxy:3128/x, s3://bucket/k for user x@y"
