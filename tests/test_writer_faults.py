"""The sweep writer under faults (meta_study/tune/_shards.py, state.py, tracking.py): a storage that
fails while the tracking server is down, a create whose reply was lost, a spooled batch replayed,
a settled trial's final metrics, an S3 record whose PUT reply was lost. The writer runs in this
process against a real MLflow store (a sqlite file); faults are injected by replacing one method."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from meta_study.tune._shards import MlflowWriter, Op, SweepTarget, plan_ops
from meta_study.tune.state import StateDir


@pytest.fixture
def store(tmp_path: Path) -> SimpleNamespace:
    """A sqlite MLflow store with an experiment and a sweep's parent run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    return SimpleNamespace(uri=uri, client=client, exp=exp, parent=parent, state_dir=str(tmp_path / "exp"))


def _writer(s: SimpleNamespace, *, flush_timeout_s: float = 10.0, resumed: bool = False) -> MlflowWriter:
    w = MlflowWriter(SweepTarget(s.uri, s.exp, s.parent, s.state_dir, {"sweep": "s"}, flush_timeout_s, resumed))
    w.setup()
    return w


def _runs(s: SimpleNamespace, trial: str) -> list[Any]:
    return s.client.search_runs([s.exp], f"tags.trial_id = '{trial}'")


class _Down:
    """A tracking server that refuses every call."""

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise ConnectionError("tracking server unreachable")
        return call


@pytest.mark.parametrize("queued", [False, True], ids=["in-flight", "in-flight-and-queued"])
def test_a_failed_spool_keeps_the_writer_threads_and_the_operations(store, monkeypatch, queued):
    """Server down and storage down: a spool that raised killed its writer thread (its batch never
    marked done, so every later flush waited its whole timeout, and the next put started four
    threads beside three live ones), and flush's own spool of the queued ops raised out of flush
    (the writer child's loop). Now nothing dies, nothing is lost: once the server is back, the kept
    operations go out, in order."""
    w = _writer(store)
    real = w._mlflow()
    w._client = _Down()

    def no_storage(self: StateDir, lines: list[str]) -> str:
        raise OSError("s3://lab/tune/x: PUT failed: network unreachable")

    monkeypatch.setattr(StateDir, "spool", no_storage)
    threads = list(w._threads)
    writer_threads = lambda: sum(t.name.startswith("mlflow-sweep-writer") for t in threading.enumerate())  # noqa: E731
    started = writer_threads()
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}, "config_key": "ka"}))
    deadline = time.monotonic() + 60         # its thread is in back-off once its call failed: the next ops
    while w.errors == 0:                     # wait in the queue (polled, not a fixed sleep: load)
        assert time.monotonic() < deadline, "the writer thread never made its call"
        time.sleep(0.01)
    if queued:
        w.put(Op("metrics", "a", {"metrics": {"m": 1.0}, "step": 3, "time": 1000}))
        w.put(Op("end", "a", {"status": "FINISHED"}))
    assert w.flush(1.0) is False             # neither sent nor spooled: said, not raised
    time.sleep(0.5)
    assert [t.is_alive() for t in w._threads] == [True] * 4 and w._threads == threads
    assert sum(q.unfinished_tasks for q in w._queues) == 0

    w._client = real                         # the server is back; the storage still fails
    w.put(Op("run", "b", {"name": "s_b", "config": {"lr": 2}}))
    assert writer_threads() == started and w._threads == threads    # no second consumer of a live thread's queue
    assert w.flush(10) is True               # a dead thread made every later flush wait its whole timeout: False
    (run,) = _runs(store, "a")               # the kept operations went out, in order
    assert run.data.params == {"lr": "1"}
    assert (run.info.status, run.data.metrics) == (("FINISHED", {"m": 1.0}) if queued else ("RUNNING", {}))
    assert run.info.run_name == "s_a" and run.data.tags["config_key"] == "ka"
    assert len(_runs(store, "b")) == 1 and not w._held


def test_a_kept_operation_is_spooled_once_the_storage_is_back(store, monkeypatch):
    """What a failed spool kept goes into the next spool that works (the next session replays it)."""
    w = _writer(store)
    w._client = _Down()
    real_spool = StateDir.spool
    monkeypatch.setattr(StateDir, "spool", lambda self, lines: (_ for _ in ()).throw(OSError("storage down")))
    w.put(Op("run", "a", {"name": "s_a", "config": {"lr": 1}}))
    assert w.flush(0.5) is False
    monkeypatch.setattr(StateDir, "spool", real_spool)
    assert w.flush(0.5) is False             # still no server: spooled this time
    lines = [json.loads(x) for _, ls in StateDir(store.state_dir).spooled() for x in ls]
    assert [(o["kind"], o["trial"]) for o in lines] == [("batch", "a")] and not w._held


def test_a_create_whose_reply_was_lost_is_found_not_created_again(store):
    """The server created the run but the reply was lost: the retry created a second run for the
    trial (a new sweep, not resumed, never searched). Now it searches by the trial's tag first."""
    w = _writer(store)
    real = w._mlflow()

    class LostReply:
        def __init__(self) -> None:
            self.creates = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def create_run(self, *a: Any, **k: Any) -> Any:
            run = real.create_run(*a, **k)
            self.creates += 1
            if self.creates == 1:
                raise ConnectionError("read timed out (after the server committed)")
            return run

    w._client = LostReply()
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}, "config_key": "abc"}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(10)
    runs = _runs(store, "t1")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.run_id, r.info.status) for r in runs]
    assert StateDir(store.state_dir).run_entries() == [("t1", runs[0].info.run_id, "abc")]


def test_a_create_whose_reply_was_lost_is_found_over_rest(mlflow_server, tmp_path, monkeypatch):
    """The same on an http(s) server, whose calls go through the REST path (runs/search too)."""
    from meta_study.tune._rest import _RestRuns

    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"lost-{uuid.uuid4().hex[:6]}")
    s = SimpleNamespace(uri=mlflow_server.uri, client=client, exp=exp, parent=client.create_run(exp).info.run_id,
                        state_dir=str(tmp_path / "exp"))
    real_post = _RestRuns.post
    creates: list[str] = []

    def lost_reply(self: _RestRuns, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = real_post(self, endpoint, body)
        if endpoint == "runs/create":
            creates.append(reply["run"]["info"]["run_id"])
            if len(creates) == 1:
                raise ConnectionError("read timed out (after the server committed)")
        return reply

    monkeypatch.setattr(_RestRuns, "post", lost_reply)
    w = _writer(s)
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}, "config_key": "abc"}))
    w.put(Op("end", "t1", {"status": "FINISHED"}))
    assert w.flush(30)
    runs = _runs(s, "t1")
    assert len(creates) == 1 and [r.info.run_id for r in runs] == creates and runs[0].info.status == "FINISHED"


def test_a_replayed_spooled_batch_keeps_the_runs_name_and_config_key(store):
    """A spooled batch whose run was never created: replayed, the run got the trial id for a name,
    no config_key tag and a map entry without the key (a later resume could not adopt it)."""
    steps = plan_ops([Op("run", "t2", {"name": "s_t2", "config": {"lr": 0.1}, "config_key": "k2"}),
                      Op("metrics", "t2", {"metrics": {"m": 1.0}, "step": 5, "time": 1})])
    spooled = [json.loads(json.dumps({"kind": k, "trial": "t2", "payload": p})) for k, p in steps]
    replayed = plan_ops([Op(**o) for o in spooled])
    assert replayed[0][1]["name"] == "s_t2" and replayed[0][1]["config_key"] == "k2"
    StateDir(store.state_dir).spool([json.dumps(o) for o in spooled])
    w = _writer(store, resumed=True)         # the next session replays the spool as it starts
    assert w.flush(10)
    (run,) = _runs(store, "t2")
    assert run.info.run_name == "s_t2" and run.data.tags["config_key"] == "k2" and run.data.params == {"lr": "0.1"}
    assert StateDir(store.state_dir).run_entries() == [("t2", run.info.run_id, "k2")]
    assert not StateDir(store.state_dir).spooled()


def test_a_settled_trials_final_metrics_go_at_its_last_step(store):
    """settle logged a final result (which has no "step") at step 0, under the training values, so
    MLflow's latest value of the metric stayed the last training one."""
    from meta_study.tune.tracking import MlflowSweepCallback

    w = _writer(store)
    cb = MlflowSweepCallback(store.uri, store.exp, store.parent, store.state_dir)
    cb._put = w.put                          # the writer in this process, not a child
    trial = SimpleNamespace(trial_id="t3", config={"lr": 0.1})
    cb.on_trial_result(0, [], trial, {"us/u/top1": 0.4, "step": 690, "training_iteration": 8})
    # the driver died; Tune's record of the trial: its final result (no step)
    cb.settle("t3", "s_t3", {"lr": 0.1}, {"us/u/top1": 0.7, "training_iteration": 9}, "FINISHED")
    # another session's settle (nothing reported in it): the result's own train/steps
    cb.settle("t4", "s_t4", {"lr": 0.2}, {"us/u/top1": 0.8, "train/steps": 500, "training_iteration": 9},
              "FINISHED")
    assert w.flush(10)
    for trial_id, step, value in (("t3", 690, 0.7), ("t4", 500, 0.8)):
        (run,) = _runs(store, trial_id)
        assert run.data.metrics["us/u/top1"] == value
        hist = store.client.get_metric_history(run.info.run_id, "us/u/top1")
        assert [m.step for m in hist if m.value == value] == [step] == [max(m.step for m in hist)]


@pytest.mark.slow(10)
def test_an_s3_sweep_record_whose_put_reply_was_lost_is_this_drivers(tmp_path_factory, monkeypatch):
    """The conditional PUT of the sweep record landed but its reply was lost; botocore's retry got
    412. create_record said False, and the runner killed its own parent run and refused the sweep."""
    pytest.importorskip("boto3")
    from s3_server import S3Server

    from meta_study.store._s3 import S3Objects
    from meta_study.tune.state import Session, SweepRecord

    real_create = S3Objects.create

    def landed_reply_lost(self: S3Objects, rel: str, data: bytes) -> str | None:
        real_create(self, rel, data)
        return None                          # what the retried PUT answered: 412

    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        server.make_bucket("lab")
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(S3Objects, "create", landed_reply_lost)
        state = StateDir("s3://lab/tune/sweep-lost")

        def rec(parent: str) -> SweepRecord:
            return SweepRecord(sweep="a", experiment="e", experiment_id="1", parent_run_id=parent,
                               tracking_uri="http://mlflow", sessions=(Session("t", "c", "g", "r"),))

        assert state.create_record(rec("mine")) is True
        assert state.create_record(rec("other")) is False      # a real loser still loses
        assert StateDir("s3://lab/tune/sweep-lost").read_record().parent_run_id == "mine"


@pytest.mark.slow(20)
def test_a_resume_waits_for_the_old_writer_and_refuses_while_it_still_beats(tmp_path):
    """A resume read the run map while a dead driver's writer still sent its queue (a run it made
    after the read was closed as an orphan, its configuration run again), and a --resume of a live
    sweep started a second driver on the same runs."""
    import time

    from meta_study.errors import UserError
    from meta_study.tune.preflight import wait_for_previous_writer
    from meta_study.tune.state import WRITER, Heartbeat, StateDir

    state = StateDir(str(tmp_path / "sweep"))
    assert wait_for_previous_writer(state, "s", max_wait_s=1) == "none"
    live = Heartbeat(state, every_s=0.2)
    live.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"sweep s: its writer .* still logs after 2 s: another driver"):
            wait_for_previous_writer(state, "s", max_wait_s=2)
        assert time.monotonic() - t0 >= 2
    finally:
        live.stop()
    assert wait_for_previous_writer(state, "s", max_wait_s=1) == "none"      # it ended: its file is gone
    state.write_json(WRITER, {"owner": "host:1:dead", "beat": 7})           # a writer killed mid-beat
    assert wait_for_previous_writer(state, "s", max_wait_s=30) == "stale"


def test_an_operation_mlflow_refuses_for_good_is_dropped_not_retried_forever(store, capfd):
    """A run deleted in the UI mid-sweep: its metrics and end were retried until the flush gave up,
    spooled, and replayed (and spooled again) by every later session; the sweep's end never
    reconciled. Now the step is dropped after three refusals, said on stderr, and the flush is
    clean; the other trials' operations go out."""
    w = _writer(store, flush_timeout_s=30)
    w.put(Op("run", "bad", {"name": "s_bad", "config": {"lr": 0.1}, "config_key": "k"}))
    w.put(Op("run", "ok", {"name": "s_ok", "config": {"lr": 0.2}, "config_key": "k1"}))
    assert w.flush(10)
    store.client.delete_run(StateDir(store.state_dir).runs()["bad"])
    for trial in ("bad", "ok"):
        w.put(Op("metrics", trial, {"metrics": {"m": 1.0}, "step": 1, "time": 1}))
        w.put(Op("end", trial, {"status": "FINISHED"}))
    assert w.flush(20)                       # retried until the flush gave up: False (no wall clock: load)
    assert w.dropped >= 1 and not StateDir(store.state_dir).spooled()
    assert "meta-study writer: trial bad: MLflow refuses its" in capfd.readouterr().err
    [ok] = _runs(store, "ok")
    assert ok.info.status == "FINISHED" and ok.data.metrics["m"] == 1.0


def test_a_param_sent_again_with_another_value_loses_nothing(mlflow_server, tmp_path, capfd):
    """A trial's params went at its start ("batch_size": "64.0", as tune.quniform or --set gave it)
    and again from its resolved config ("64"): MLflow refuses a changed param for good
    (INVALID_PARAMETER_VALUE), and after three tries the whole batch was dropped: the first metrics,
    the resolved lr, param_count and the arch_family tag. Now a param goes once per run (its first
    value stays), and a run whose params this writer did not send is read back after a refusal."""
    client = MlflowClient(mlflow_server.uri)
    exp = client.create_experiment(f"params-{uuid.uuid4().hex[:6]}")
    s = SimpleNamespace(uri=mlflow_server.uri, client=client, exp=exp, parent=client.create_run(exp).info.run_id,
                        state_dir=str(tmp_path / "exp"))
    w = _writer(s, flush_timeout_s=30)
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"batch_size": 64.0, "lr": None}, "config_key": "k"}))
    assert w.flush(20)
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"batch_size": 64, "lr": 0.1, "param_count": 1234,
                                                       "arch_family": "vit"}}))
    w.put(Op("metrics", "t1", {"metrics": {"us_acc": 0.5}, "step": 1, "time": 1000}))
    assert w.flush(20)
    [run] = _runs(s, "t1")
    assert run.data.params["batch_size"] == "64.0" and run.data.params["lr"] == "0.1"
    assert run.data.params["param_count"] == "1234" and run.data.tags["arch_family"] == "vit"
    assert run.data.metrics["us_acc"] == 0.5 and w.dropped == 0 and w.errors == 0
    # a param this writer never sent (another process's): refused once, read back, the rest goes
    client.log_param(run.info.run_id, "img_size", "32")
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"img_size": 32.0, "wd": 0.05}}))
    w.put(Op("metrics", "t1", {"metrics": {"us_acc": 0.7}, "step": 2, "time": 2000}))
    assert w.flush(20)
    run = client.get_run(run.info.run_id)
    assert run.data.params["img_size"] == "32" and run.data.params["wd"] == "0.05"
    assert run.data.metrics["us_acc"] == 0.7 and w.dropped == 0
    assert "dropped" not in capfd.readouterr().err
