"""Review fixes (session 36) of how sweep trials reach MLflow: the writer's replay on a file store,
an experiment deleted in MLflow, and what a fresh sqlite store prints."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from meta_study.errors import UserError
from meta_study.tune.state import SPOOL, StateDir


def test_a_deleted_experiment_is_one_line_not_its_id(tmp_path: Path) -> None:
    """MLflow keeps a deleted experiment by name: get_or_create_experiment returned its id, and the
    first create_run failed ("must be in the 'active' state") as a traceback (the demo's synthetic
    runs, after a user deleted their experiment in the UI)."""
    from meta_study.mlflow_client import get_or_create_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow_client(uri)
    exp = get_or_create_experiment(client, uri, "gone")
    client.delete_experiment(exp)
    with pytest.raises(UserError) as e:
        get_or_create_experiment(client, uri, "gone")
    msg = str(e.value)
    assert "\n" not in msg and "gone" in msg and "deleted" in msg and f"--experiment-id {exp}" in msg
    assert client.get_experiment(exp).lifecycle_stage == "deleted"    # left as the user left it


def test_a_fresh_sqlite_store_prints_nothing(tmp_path: Path) -> None:
    """A quiet sweep (or refit) on a new sqlite database printed MLflow's "Creating initial MLflow
    database tables..." / "Updating database tables" INFO lines, from the driver and again from the
    writer process."""
    code = ("import sys; from meta_study.mlflow_client import mlflow_client; "
            "mlflow_client(sys.argv[1]).search_experiments()")
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path}/fresh.db"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fresh.db").exists()
    assert out.stdout == "" and out.stderr == ""


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A file-store MLflow (``file:`` mlruns, allowed as MLFLOW_ALLOW_FILE_STORE allows it) with a
    sweep's parent run."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from meta_study.mlflow_client import mlflow_client

    uri = (tmp_path / "mlruns").as_uri()
    client = mlflow_client(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


def _writer(s: SimpleNamespace, *, resumed: bool = True) -> Any:
    from meta_study.tune._shards import MlflowWriter, SweepTarget

    w = MlflowWriter(SweepTarget(s.uri, s.exp, s.parent, s.state_dir, {"sweep": "s"}, 10.0, resumed))
    w.setup()
    return w


@pytest.mark.slow(5)
def test_a_spool_replayed_twice_on_a_file_store_logs_each_point_once(file_store: SimpleNamespace) -> None:
    """A writer that replays the spool, sends it and is killed before the flush drops the spool
    object (a driver lost, a kill -9) leaves the object for the next session, which replays it
    again. A sqlite or SQL-backed store skips a metric point it already has; MLflow's file store
    appends it: every spooled point was in the run's history twice (measured: [(0.5, 3), (0.5, 3)])."""
    s = file_store
    rid = s.client.create_run(s.exp, tags={"mlflow.parentRunId": s.parent, "trial_id": "t1"}).info.run_id
    state = StateDir(s.state_dir)
    state.add_run("t1", rid, None)
    line = json.dumps({"kind": "metrics", "trial": "t1",
                       "payload": {"metrics": {"m": 0.5, "nan": float("nan")}, "step": 3, "time": 1000}})
    name = state.spool([line])
    kept = (Path(s.state_dir) / "meta_study" / SPOOL / name).read_bytes()
    w = _writer(s)
    assert w.flush(10)
    assert not (Path(s.state_dir) / "meta_study" / SPOOL / name).exists()
    # the object as a writer killed between the send and the drop left it
    (Path(s.state_dir) / "meta_study" / SPOOL / name).write_bytes(kept)
    w2 = _writer(s)
    assert w2.flush(10)
    assert [(m.value, m.step) for m in s.client.get_metric_history(rid, "m")] == [(0.5, 3)]
    assert len(s.client.get_metric_history(rid, "nan")) == 1
    # a new point of the same key (another step, or another time) is logged as before
    from meta_study.tune._shards import Op

    w2.put(Op("metrics", "t1", {"metrics": {"m": 0.5}, "step": 4, "time": 1000}))
    w2.put(Op("metrics", "t1", {"metrics": {"m": 0.5}, "step": 3, "time": 2000}))
    assert w2.flush(10)
    assert sorted((m.step, m.timestamp) for m in s.client.get_metric_history(rid, "m")) == [(3, 1000), (3, 2000),
                                                                                            (4, 1000)]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    from meta_study.mlflow_client import mlflow_client

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow_client(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


@pytest.mark.slow(5)
def test_a_spool_object_that_cannot_be_removed_is_said_not_raised(sqlite_store: SimpleNamespace, capsys) -> None:
    """Once a replayed spool is sent, the flush removes its objects. Storage that refuses the
    removal (a bucket policy without DeleteObject, a read-only mount) raised out of the flush: the
    writer process died with a traceback, the driver's flush got no reply (False: "not everything
    was sent", after it all was), and every later operation started a writer that replayed it all
    again. Here the object's name is taken by a directory, which no delete_file removes."""
    s = sqlite_store
    rid = s.client.create_run(s.exp, tags={"mlflow.parentRunId": s.parent, "trial_id": "t1"}).info.run_id
    state = StateDir(s.state_dir)
    state.add_run("t1", rid, None)
    name = state.spool([json.dumps({"kind": "metrics", "trial": "t1",
                                    "payload": {"metrics": {"m": 0.5}, "step": 3, "time": 1000}})])
    w = _writer(s)
    obj = Path(s.state_dir) / "meta_study" / SPOOL / name
    obj.unlink()
    obj.mkdir()
    (obj / "x").write_text("x")
    assert w.flush(10)
    assert [(m.value, m.step) for m in s.client.get_metric_history(rid, "m")] == [(0.5, 3)]
    err = capsys.readouterr().err
    assert name in err and "could not remove" in err


@pytest.mark.slow(30)
def test_reconcile_leaves_no_second_running_run_of_a_trial(tmp_path: Path) -> None:
    """Two RUNNING runs of one trial under the sweep's parent (a run created twice, say: a create
    whose reply was lost, or a run of the trial found and mapped again): reconcile kept one per
    trial id in a dict, settled that one (adopting it over the mapped run when the search gave it
    last) and left the other RUNNING for good, a live sweep to the UI and to ingest ("nothing is
    left RUNNING", finalize's doc). Another sweep's run of the same trial id is left alone."""
    from ray.tune.result_grid import Result

    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.finalize import reconcile
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(uri, "dup", "s", state, params={}, tags={})
    _, other_parent = parent_run(uri, "dup", "s2", str(tmp_path / "ray" / "s2"), params={}, tags={})
    client = mlflow_client(uri)
    tags = {"mlflow.parentRunId": parent, "trial_id": "t1", "meta_study.role": "trial"}
    mapped = client.create_run(exp_id, tags=tags).info.run_id
    second = client.create_run(exp_id, tags=tags).info.run_id
    other = client.create_run(exp_id, tags={**tags, "mlflow.parentRunId": other_parent}).info.run_id
    StateDir(state).add_run("t1", mapped, None)
    final = {"trial_id": "t1", "final": 1.0, "us/up/top1": 0.5, "config": {"lr": 0.1}}
    results = [Result(metrics=final, checkpoint=None, error=None, path=f"{state}/t1")]
    cb = MlflowSweepCallback(uri, exp_id, parent, state, resumed=True)
    rc = reconcile(results, cb, tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent,
                   runs_map=StateDir(state).runs(), name_of=lambda t: f"s_{t}")
    assert cb.flush(timeout_s=60)
    assert rc.settled == ("t1",)
    assert StateDir(state).runs()["t1"] == mapped                      # the trial keeps its run
    assert client.get_run(mapped).info.status == "FINISHED"
    assert client.get_run(mapped).data.metrics["us/up/top1"] == 0.5
    dup = client.get_run(second)
    assert dup.info.status == "KILLED" and dup.data.tags["meta_study.status"] == "duplicate"
    assert "us/up/top1" not in dup.data.metrics
    assert client.get_run(other).info.status == "RUNNING"              # not this sweep's


class _Trial:
    """The part of a Tune Trial the callback reads."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.checkpoint, self.last_result = trial_id, config, None, {}

    def __str__(self) -> str:
        return f"s_{self.trial_id}"


@pytest.mark.slow(10)
def test_numpy_metrics_reach_the_run(tmp_path: Path) -> None:
    """A result's numpy numbers (np.float32 from a model's loss or accuracy, np.int64 counts) are
    not ``float``/``int`` instances: the callback dropped them without a word, and the run lacked
    the metric. Booleans stay out, numpy's too."""
    import numpy as np

    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(uri, "np", "s", state, params={}, tags={})
    cb = MlflowSweepCallback(uri, exp_id, parent, state)
    cb.on_trial_start(0, [], _Trial("t1", {"lr": 0.1}))
    cb.on_trial_result(0, [], _Trial("t1", {"lr": 0.1}), {
        "step": np.int64(7), "us/synth_us/top1": np.float32(0.5), "train/images": np.int64(3),
        "train/loss": np.float64(1.25), "flag": np.bool_(True), "other_flag": True})
    assert cb.flush(timeout_s=60)
    run = mlflow_client(uri).get_run(StateDir(state).runs()["t1"])
    assert run.data.metrics == {"us/synth_us/top1": 0.5, "train/images": 3.0, "train/loss": 1.25}
    hist = mlflow_client(uri).get_metric_history(run.info.run_id, "us/synth_us/top1")
    assert [m.step for m in hist] == [7]


@pytest.mark.slow(5)
def test_a_name_mlflow_refuses_loses_only_itself(sqlite_store: SimpleNamespace, capsys) -> None:
    """MLflow refuses a whole log_batch for one metric, param or tag name it does not take (only
    alphanumerics, ``_ - . : /`` and spaces; 250 characters at most): a task named ``pets+aug``
    (``--dataset pets+aug=...``) made every batch of every trial refused, and after three tries
    dropped: the trial's params, tags and every other metric with it. The names it refuses are
    left out, said once on stderr; the rest is logged."""
    from meta_study.tune._shards import Op

    s = sqlite_store
    w = _writer(s, resumed=False)
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1, "bad%key": 1}}))
    w.put(Op("tag", "t1", {"key": "resources", "value": "{}"}))
    for step in (1, 2):
        w.put(Op("metrics", "t1", {"metrics": {"ds/pets+aug/5shot/top1": 0.3, "us/synth_us/top1": 0.5,
                                               "x" * 251: 1.0}, "step": step, "time": 1000 + step}))
    assert w.flush(20)
    run = s.client.get_run(StateDir(s.state_dir).runs()["t1"])
    assert run.data.metrics == {"us/synth_us/top1": 0.5}
    assert run.data.params == {"lr": "0.1"} and run.data.tags["resources"] == "{}"
    assert [m.step for m in s.client.get_metric_history(run.info.run_id, "us/synth_us/top1")] == [1, 2]
    err = capsys.readouterr().err
    assert err.count("ds/pets+aug/5shot/top1") == 1 and "bad%key" in err and "refuses" not in err


@pytest.mark.slow(10)
def test_a_flush_that_gives_up_says_so(tmp_path: Path, capsys) -> None:
    """A tracking server down at the sweep's end: the writer retried for the flush timeout, spooled
    everything and the sweep printed its summary and exited 0 without a word, while MLflow held
    none of its trials until a --resume that nothing asked for."""
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(uri, "down", "s", state, params={}, tags={})
    dead = MlflowSweepCallback("http://127.0.0.1:9", exp_id, parent, state)   # nothing listens there
    dead.on_trial_start(0, [], _Trial("t1", {"lr": 0.1}))
    capsys.readouterr()
    assert dead.flush(timeout_s=2) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "http://127.0.0.1:9" in err[0] and "--resume" in err[0]
    assert f"{state}/meta_study/spool" in err[0] and StateDir(state).spooled()


@pytest.mark.slow(10)
def test_a_writer_that_died_before_the_flush_is_said(tmp_path: Path, capsys) -> None:
    """The writer process killed (the OOM killer) after the sweep's last operation: the flush got
    no answer and returned False without a word; nothing was spooled, so no --resume brings it back."""
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(uri, "died", "s", state, params={}, tags={})
    cb = MlflowSweepCallback(uri, exp_id, parent, state)
    cb.on_trial_start(0, [], _Trial("t1", {"lr": 0.1}))
    proc = cb._writer._proc
    proc.kill()
    proc.wait(30)
    capsys.readouterr()
    assert cb.flush(timeout_s=10) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writer process exited" in err[0] and "--resume" not in err[0]
