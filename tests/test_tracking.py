"""The driver-side MLflow writer on its own: merging, spool on an unreachable server, replay."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune.tracking import SPOOL_FILE, MlflowSweepCallback, _Op, _plan, flatten, parent_run


class Trial:
    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.checkpoint = trial_id, config, None

    def __str__(self) -> str:
        return f"t_{self.trial_id}"


def test_plan_merges_a_trials_operations():
    ops = [_Op("run", "t", {"config": {"lr": 0.1, "head_lr": None, "cfg": {"a": 1}}, "name": "x"}),
           _Op("metrics", "t", {"metrics": {"us/u/top1": 0.5}, "step": 1, "time": 5}),
           _Op("tag", "t", {"key": "k", "value": "v"}),
           _Op("artifacts", "t", {"dir": "/x"}),
           _Op("metrics", "t", {"metrics": {"final": 1.0}, "step": 2, "time": 6}),
           _Op("end", "t", {"status": "FINISHED"})]
    steps = _plan(ops)
    assert [k for k, _ in steps] == ["batch", "artifacts", "batch", "end"]
    assert steps[0][1]["params"] == {"lr": "0.1", "cfg.a": "1"}          # None values are not params
    assert steps[0][1]["tags"] == {"k": "v"} and steps[0][1]["metrics"] == [("us/u/top1", 0.5, 5, 1)]


def test_flatten():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_unreachable_server_spools_then_replays(mlflow_server, tmp_path):
    exp = f"spool-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={"a": 1}, tags={})
    # the same server, through a port where nothing listens: every call fails
    dead = MlflowSweepCallback("http://127.0.0.1:9", exp_id, parent, str(state), tags={"sweep": "s"})
    dead.setup()
    t = Trial("abc", {"lr": 0.001, "model_name": "m"})
    dead.on_trial_start(0, [], t)
    dead.on_trial_result(0, [], t, {"us/up/top1": 0.25, "resolved": {"head_lr": 0.001}, "training_iteration": 1})
    dead.on_trial_complete(0, [], t)
    assert dead.flush(timeout_s=2) is False and dead.errors > 0
    spooled = [json.loads(x) for x in (state / SPOOL_FILE).read_text().splitlines()]
    assert spooled and all(x["trial"] == "abc" for x in spooled)
    # the next sweep process (--resume) replays the spool against the reachable server
    live = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, str(state), tags={"sweep": "s"})
    live.setup()
    assert live.flush(timeout_s=60) is True and not (state / SPOOL_FILE).exists()
    client = MlflowClient(mlflow_server.uri)
    runs = [r for r in client.search_runs([exp_id]) if r.data.tags.get("trial_id") == "abc"]
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.data.metrics["us/up/top1"] == 0.25
    assert r.data.params["lr"] == "0.001" and r.data.params["head_lr"] == "0.001"
    assert r.data.tags["mlflow.parentRunId"] == parent and r.data.tags["sweep"] == "s"


def test_restarted_trial_reuses_its_run_and_never_relogs_params(mlflow_server, tmp_path):
    exp = f"reuse-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={}, tags={})
    t = Trial("t1", {"lr": 0.5})
    for _ in range(2):   # a driver, then a resumed driver (new callback, same state dir)
        cb = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, str(state))
        cb.setup()
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, {"us/up/top1": 0.5, "resolved": {"lr": 0.5, "wd": 0.1}})
        cb.on_trial_complete(0, [], t)
        assert cb.flush(timeout_s=60)
    runs = [r for r in MlflowClient(mlflow_server.uri).search_runs([exp_id]) if r.data.tags.get("trial_id") == "t1"]
    assert len(runs) == 1 and runs[0].data.params == {"lr": "0.5", "wd": "0.1"}


def test_writer_outlives_a_killed_driver_and_holds_the_lock_until_done(mlflow_server, tmp_path):
    """The driver dies with operations queued: its writer process sends them, then exits and
    frees the experiment directory's lock (which a resumed sweep's writer waits for)."""
    import fcntl
    import subprocess
    import sys

    from meta_study.tune.writer import LOCK_FILE

    exp = f"orphan-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", str(state), params={}, tags={})
    driver = f"""
import os, time
from meta_study.tune.writer import SweepTarget, WriterProcess, _Op
w = WriterProcess(SweepTarget({mlflow_server.uri!r}, {exp_id!r}, {parent!r}, {str(state)!r}))
w.put(_Op("run", "dead1", {{"name": "t_dead1", "config": {{"lr": 0.1}}}}))
w.put(_Op("metrics", "dead1", {{"metrics": {{"final": 1.0}}, "step": 1, "time": 1}}))
w.put(_Op("end", "dead1", {{"status": "FINISHED"}}))
time.sleep(1.0)      # the feeder thread has handed the lines to the pipe
os._exit(0)          # killed: no flush, no close
"""
    subprocess.run([sys.executable, "-c", driver], check=True, timeout=120)
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 90
    runs: list = []
    while time.monotonic() < deadline:
        runs = [r for r in client.search_runs([exp_id]) if r.data.tags.get("trial_id") == "dead1"]
        if runs and runs[0].info.status == "FINISHED":
            break
        time.sleep(0.5)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.metrics["final"] == 1.0
    with open(state / LOCK_FILE, "a") as f:       # released once the orphaned writer is done
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                assert time.monotonic() < deadline, "the orphaned writer never released its lock"
                time.sleep(0.2)
