"""The end of a sweep (meta_study/tune/finalize.py) on a local Ray with a real ``mlflow server``:
early-stopped trials evaluated independently and retried, a failure recorded on its run and
reported by ingest; runs a dead driver left open settled or closed."""

from __future__ import annotations

import os
import uuid

import pytest
from mlflow.tracking import MlflowClient

from meta_study.schema import ds_metric_key
from meta_study.store import Store
from conftest import run_cli

pytestmark = pytest.mark.slow(30)


class Trial:
    """The part of a Tune Trial the callback reads."""

    def __init__(self, trial_id: str, config: dict, last_result: dict | None = None) -> None:
        self.trial_id, self.config, self.checkpoint = trial_id, config, None
        self.last_result = last_result or {}

    def __str__(self) -> str:
        return f"zoo_{self.trial_id}"


def _config() -> dict:
    from meta_study.tune.runner import SMOKE

    return {**SMOKE, "model_name": "vit_tiny_cpu", "epochs": 1, "lr": 2e-3, "eval_every": 4,
            "us_task_kwargs": {"n_train": 600, "n_test": 200}}


def _stopped_trial(tmp_path, trial_id: str, config: dict, *, with_checkpoint: bool):
    """A Tune Result as an early-stopping scheduler leaves it: training metrics without the final
    report, and its last checkpoint in the sweep's storage (or a checkpoint path that is gone)."""
    from ray.tune import Checkpoint
    from ray.tune.result_grid import Result

    from meta_study.train import run_trial

    trial_dir = tmp_path / "ray" / "zoo" / trial_id
    ckpt_dir = trial_dir / "checkpoint_000000"
    if with_checkpoint:
        work = tmp_path / f"work-{trial_id}"
        run_trial({**config, "steps": 4}, checkpoint_dir=str(work))
        ckpt_dir.mkdir(parents=True)
        os.replace(work / "checkpoint.pt", ckpt_dir / "checkpoint.pt")
    ckpt = Checkpoint(str(ckpt_dir))       # a missing one: its node's disk, say, is gone
    return Result(metrics={"trial_id": trial_id, "us/synth_us/top1": 0.1, "training_iteration": 1, "config": config},
                  checkpoint=ckpt, error=None, path=str(trial_dir))


@pytest.mark.slow(70)
def test_each_stopped_trials_evaluation_is_retried_and_a_failure_is_recorded(local_ray, mlflow_server, tmp_path):
    from meta_study.tune.finalize import evaluate_stopped, is_stopped_early
    from meta_study.tune.runner import PerTrialResources, SweepOptions
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run
    from meta_study.tune.trial import EVAL_ATTEMPT_FILE, EVAL_FILE, FINAL_FILE, TrialHooks

    exp = f"finalize-{uuid.uuid4().hex[:6]}"
    state = str(tmp_path / "ray" / "zoo")
    exp_id, parent = parent_run(mlflow_server.uri, exp, "zoo", state, params={}, tags={})
    cb = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state, tags={"sweep": "zoo"})
    cfg = _config()
    good = _stopped_trial(tmp_path, "good", cfg, with_checkpoint=True)
    gone = _stopped_trial(tmp_path, "gone", cfg, with_checkpoint=False)
    assert is_stopped_early(good) and is_stopped_early(gone)
    for r in (good, gone):
        t = Trial(r.metrics["trial_id"], cfg, last_result=r.metrics)
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, r.metrics)
        cb.on_trial_complete(0, [], t)     # stopped early: its run stays open for the evaluation
    assert cb.flush(timeout_s=60)
    client = MlflowClient(mlflow_server.uri)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([exp_id], "tags.`meta_study.role` = 'trial'")}
    assert {t: r.info.status for t, r in runs.items()} == {"good": "RUNNING", "gone": "RUNNING"}
    assert all(r.data.tags["meta_study.eval_status"] == "pending" for r in runs.values())

    # every evaluation fails on its first attempt (test hook): the good one is retried and succeeds,
    # the one whose checkpoint is gone fails for good, and neither stops the other
    ev = evaluate_stopped([gone, good], cb, resources=PerTrialResources(None, SweepOptions()),
                          hooks=TrialHooks(fail_eval_once=True), retries=2)
    assert ev.done == ("good",) and set(ev.failed) == {"gone"}
    assert (tmp_path / "ray" / "zoo" / "good" / EVAL_ATTEMPT_FILE).exists()    # it did fail once first
    assert (tmp_path / "ray" / "zoo" / "good" / EVAL_FILE).exists()            # recorded: never evaluated twice
    assert not (tmp_path / "ray" / "zoo" / "good" / FINAL_FILE).exists()       # not a training completion record
    assert cb.flush(timeout_s=60)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([exp_id], "tags.`meta_study.role` = 'trial'")}
    ok, bad = runs["good"], runs["gone"]
    assert ok.info.status == "FINISHED" and ok.data.tags["meta_study.eval_status"] == "ok"
    assert ok.data.metrics["early_stopped"] == 1.0 and 0 <= ok.data.metrics[ds_metric_key("synth_combo", 10)] <= 1
    assert bad.info.status == "FINISHED" and bad.data.tags["meta_study.eval_status"] == "failed"
    assert "checkpoint_000000" in bad.data.tags["meta_study.eval_error"]
    assert not any(k.startswith("ds/") for k in bad.data.metrics)

    # a resumed sweep (Tune returns every trial again) leaves an evaluation an earlier session
    # logged alone: it reopened the run, logged its metrics a second time and uploaded its
    # checkpoint again, at every --resume
    key = ds_metric_key("synth_combo", 10)
    history = len(client.get_metric_history(ok.info.run_id, key))
    resumed = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state, tags={"sweep": "zoo"}, resumed=True)
    again = evaluate_stopped([good], resumed, resources=PerTrialResources(None, SweepOptions()), hooks=TrialHooks())
    assert again.done == () and again.logged == ("good",) and not again.failed
    assert resumed.flush(timeout_s=60)
    same = client.get_run(ok.info.run_id)
    assert same.info.status == "FINISHED" and same.info.end_time == ok.info.end_time
    assert len(client.get_metric_history(ok.info.run_id, key)) == history
    # a trial this session stopped early (its run open here) is evaluated as before
    pending = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state, tags={"sweep": "zoo"}, resumed=True)
    pending.open.add("good")          # this session's own (still open) run: evaluated as before
    assert evaluate_stopped([good], pending, resources=PerTrialResources(None, SweepOptions()),
                            hooks=TrialHooks()).done == ("good",)
    assert pending.flush(timeout_s=60)
    # its evaluation read back from the record is logged at the time it was made: the same points,
    # not a second copy of each at the resume's time (an "ok" tag lost in a crash did that)
    assert len(client.get_metric_history(ok.info.run_id, key)) == history

    # ingest: the good run's rows; the failed one counted with a hint, not skipped silently
    store = tmp_path / "store"
    r = run_cli("ingest", mlflow_server.uri, "--experiment", exp, "--store", str(store), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "1 finished run without downstream metrics" in r.stdout and "meta_study.eval_status=failed" in r.stdout
    df = Store(str(store)).to_pandas()
    assert set(df["run_id"]) == {ok.info.run_id}

    # a later session (--resume) whose evaluation of the failed trial succeeds (its checkpoint back):
    # the earlier session's error does not stay on the run beside eval_status=ok
    later = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state, tags={"sweep": "zoo"}, resumed=True)
    later.log_evaluation("gone", {ds_metric_key("synth_combo", 10): 0.5, "early_stopped": 1.0})
    assert later.flush(timeout_s=60)
    fixed = client.get_run(bad.info.run_id)
    assert fixed.info.status == "FINISHED" and fixed.data.tags["meta_study.eval_status"] == "ok"
    assert "meta_study.eval_error" not in fixed.data.tags


def test_runs_a_dead_driver_left_open_are_settled_or_closed(mlflow_server, tmp_path):
    """A resumed sweep's end: a trial Tune recorded as finished whose run the dead driver never
    ended is settled from Tune's result; one whose run was never created gets one; a run no trial
    owns (a trial lost with the driver's unsaved state) is closed KILLED with the reason."""
    from ray.tune.result_grid import Result

    from meta_study.tune.finalize import reconcile
    from meta_study.tune.state import StateDir
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    exp = f"settle-{uuid.uuid4().hex[:6]}"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(mlflow_server.uri, exp, "s", state, params={}, tags={})
    dead = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state)
    for tid in ("open", "lost"):          # the dead driver's session: runs started, never ended
        dead.on_trial_start(0, [], Trial(tid, {"lr": 0.1}))
    assert dead.flush(timeout_s=60)
    final = {"trial_id": "open", "final": 1.0, "us/up/top1": 0.5, "ds/a/5shot/top1": 0.4, "config": {"lr": 0.1}}
    results = [Result(metrics=final, checkpoint=None, error=None, path=f"{state}/open"),
               Result(metrics={**final, "trial_id": "never"}, checkpoint=None, error=None, path=f"{state}/never")]
    cb = MlflowSweepCallback(mlflow_server.uri, exp_id, parent, state, resumed=True)
    rc = reconcile(results, cb, tracking_uri=mlflow_server.uri, experiment_id=exp_id, parent_run_id=parent,
                   runs_map=StateDir(state).runs(), name_of=lambda t: f"s_{t}")
    assert sorted(rc.settled) == ["never", "open"] and rc.orphaned == ("lost",)
    assert cb.flush(timeout_s=60)
    runs = {r.data.tags["trial_id"]: r for r in MlflowClient(mlflow_server.uri).search_runs([exp_id])
            if r.data.tags.get("meta_study.role") == "trial"}
    assert sorted(runs) == ["lost", "never", "open"]                        # one run each, none twice
    assert runs["open"].info.status == "FINISHED" and runs["open"].data.metrics["ds/a/5shot/top1"] == 0.4
    assert runs["never"].info.status == "FINISHED"
    assert runs["lost"].info.status == "KILLED" and runs["lost"].data.tags["meta_study.status"] == "orphaned"
    assert "RUNNING" not in {r.info.status for r in runs.values()}
