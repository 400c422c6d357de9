"""Defects found in a review of the sweep's MLflow writer (meta_study/tune/_shards.py, _rest.py,
finalize.py, provenance.py, mlflow_client.py): the order of spooled operations, points logged twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from meta_study.tune._shards import MlflowWriter, Op, SweepTarget
from meta_study.tune.state import StateDir


def _target(uri: str, exp: str, parent: str, state_dir: str, *, resumed: bool = False) -> SweepTarget:
    return SweepTarget(uri, exp, parent, state_dir, {}, 30.0, resumed)


@pytest.fixture
def server_exp(mlflow_server: Any, tmp_path: Path) -> SimpleNamespace:
    """An experiment of its own, with a sweep's parent run, on the session's real ``mlflow server``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"s40-{uuid.uuid4().hex[:8]}")
    return SimpleNamespace(uri=mlflow_server.uri, client=client, exp=exp, parent=client.create_run(exp).info.run_id,
                           state_dir=str(tmp_path / "exp"))


def _down_switch(w: MlflowWriter) -> list[bool]:
    """``[True]``: every MLflow call of ``w`` fails as against a server that is down."""
    down, real = [False], w._do_step

    def step(trial: str, s: Any) -> None:
        if down[0]:
            raise ConnectionRefusedError(111, "Connection refused")
        real(trial, s)

    w._do_step = step  # type: ignore[method-assign]
    return down


def test_what_a_flush_spooled_never_replays_over_what_the_session_sent_after_it(server_exp) -> None:
    """A flush that gave up spooled a trial's tag (``eval_status=pending``); the server came back and
    the same session sent the trial's newer tag (``ok``) and its end. The spool object stayed for
    the next session, which replayed ``pending`` over ``ok``. A session now sends what it spooled
    ahead of the trial's later operations, and drops the object once sent."""
    s = server_exp
    w = MlflowWriter(_target(s.uri, s.exp, s.parent, s.state_dir))
    w.setup()
    down = _down_switch(w)
    w.put(Op("run", "T", {"name": "T", "config": {"lr": 0.1}}))
    assert w.flush(30) is True
    down[0] = True
    w.put(Op("tag", "T", {"key": "eval", "value": "pending"}))
    assert w.flush(0.5) is False                  # spooled
    assert StateDir(s.state_dir).spooled()
    down[0] = False
    w.put(Op("tag", "T", {"key": "eval", "value": "ok"}))
    w.put(Op("end", "T", {"status": "FINISHED"}))
    assert w.flush(30) is True
    assert StateDir(s.state_dir).spooled() == []  # all it held was sent, in order
    (run,) = s.client.search_runs([s.exp], "tags.trial_id = 'T'")
    assert run.data.tags["eval"] == "ok" and run.info.status == "FINISHED"
    w2 = MlflowWriter(_target(s.uri, s.exp, s.parent, s.state_dir, resumed=True))   # the next session
    w2.setup()
    assert w2.flush(30) is True
    (run,) = s.client.search_runs([s.exp], "tags.trial_id = 'T'")
    assert run.data.tags["eval"] == "ok" and run.info.status == "FINISHED"


def test_a_replayed_spool_that_the_server_refuses_again_is_not_copied_at_each_flush(server_exp) -> None:
    """Replayed while the server is still down, a spool object's operations are spooled again, and
    the object they came from goes: each session (and each flush) that gave up added a copy, and
    the next session replayed every copy."""
    s = server_exp
    sd = StateDir(s.state_dir)
    sd.spool([json.dumps({"kind": "tag", "trial": "T", "payload": {"key": "k", "value": "v"}})], at_ns=1)
    w = MlflowWriter(_target(s.uri, s.exp, s.parent, s.state_dir, resumed=True))
    down = _down_switch(w)
    down[0] = True
    w.setup()
    for _ in range(3):
        assert w.flush(0.5) is False
    lines = [x for _, ls in sd.spooled() for x in ls]
    assert len(lines) == 1 and "\"k\"" in lines[0], lines     # one copy (as a tag, or a batch step)
    down[0] = False                        # the server is back: the trial's next operation carries them
    w.put(Op("tag", "T", {"key": "k2", "value": "w"}))
    assert w.flush(30) is True
    assert sd.spooled() == []
    (run,) = s.client.search_runs([s.exp], "tags.trial_id = 'T'")
    assert run.data.tags["k"] == "v" and run.data.tags["k2"] == "w"


def test_a_point_held_by_two_spool_objects_is_logged_once_on_a_file_store(tmp_path, monkeypatch) -> None:
    """Two spool objects holding the same metric point (a later session's flush that gave up had
    spooled it again) were merged into one batch on replay, and MLflow's file store, which appends
    what it is sent, logged the point twice."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from meta_study.mlflow_client import mlflow_client

    uri = (tmp_path / "mlruns").as_uri()
    client = mlflow_client(uri)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    state_dir = str(tmp_path / "exp")
    run = json.dumps({"kind": "run", "trial": "T", "payload": {"name": "T", "config": {"lr": 0.1}}})
    point = json.dumps({"kind": "metrics", "trial": "T", "payload": {"metrics": {"acc": 0.5}, "step": 1,
                                                                      "time": 1000}})
    StateDir(state_dir).spool([run, point], at_ns=1)
    StateDir(state_dir).spool([run, point], at_ns=2)
    w = MlflowWriter(_target(uri, exp, parent, state_dir, resumed=True))
    w.setup()
    assert w.flush(30) is True
    (r,) = client.search_runs([exp], "tags.trial_id = 'T'")
    assert [(m.value, m.step) for m in client.get_metric_history(r.info.run_id, "acc")] == [(0.5, 1)]


def test_a_spooled_metric_that_is_no_number_is_kept_aside_not_retried_for_good(server_exp, capfd) -> None:
    """A spool line whose metric value is no number (``null``: an object edited, or of another
    version) passed as an operation; on the REST path each try raised a TypeError, which is no
    refusal, so the trial's batch, and its end behind it, were retried until every flush gave up
    and spooled again by every session. Now the line is kept aside as damaged; the rest is sent."""
    s = server_exp
    ops = [{"kind": "run", "trial": "T", "payload": {"name": "T", "config": {"lr": 0.1}}},
           {"kind": "metrics", "trial": "T", "payload": {"metrics": {"bad": None}, "step": 1, "time": 1000}},
           {"kind": "metrics", "trial": "T", "payload": {"metrics": {"acc": 0.5}, "step": 1, "time": 1000}},
           {"kind": "end", "trial": "T", "payload": {"status": "FINISHED"}}]
    StateDir(s.state_dir).spool([json.dumps(o) for o in ops], at_ns=1)
    w = MlflowWriter(_target(s.uri, s.exp, s.parent, s.state_dir, resumed=True))
    w.setup()
    assert w.flush(5) is True
    (run,) = s.client.search_runs([s.exp], "tags.trial_id = 'T'")
    assert run.info.status == "FINISHED" and run.data.metrics == {"acc": 0.5}
    assert "1 of 4 line(s) unreadable" in capfd.readouterr().err
