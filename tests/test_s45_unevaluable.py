"""Review of meta_study/tune/finalize.py and runner.py (session 45): an early-stopped trial with no
checkpoint was a failed evaluation that every ``--resume`` "retried" (its run reopened and ended
again, the parent FAILED, exit 1) though none could ever evaluate it; and a Ray address's password
in the CLI's and the analysis layer's one-line errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from meta_study.errors import UserError
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepResult, SweepSpec, grid

SPEC = SweepSpec(name="s45_u", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))
PASSWORD = "s3cretPW"


class Trial:
    """The part of a Tune Trial the MLflow callback reads."""

    def __init__(self, trial_id: str, config: dict, last_result: dict) -> None:
        self.trial_id, self.config, self.checkpoint, self.last_result = trial_id, config, None, last_result

    def __str__(self) -> str:
        return f"s45_u_{self.trial_id}"


# ---- 1. a trial stopped before its first checkpoint ---------------------------------------------------


@pytest.mark.slow(60)
def test_a_trial_stopped_before_its_first_checkpoint_is_unevaluable_and_tagged_once(tmp_path):
    """Recorded in ``failed``, so each --resume reopened its run, ended it FINISHED again and the
    sweep exited 1 with "--resume retries them". Now counted apart, tagged as before, and left alone
    by a resume (one search finds it)."""
    from ray.tune.result_grid import Result

    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.finalize import UNEVALUABLE_REASON, evaluate_stopped, evaluated_trials, is_stopped_early
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run
    from meta_study.tune.trial import TrialHooks

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s45_u")
    exp_id, parent = parent_run(uri, "s45-unevaluable", "s45_u", state, params={}, tags={})
    cfg = {"lr": 0.1, "seed": 0}
    metrics = {"trial_id": "early", "us/synth_us/top1": 0.1, "training_iteration": 1, "config": cfg}
    stopped = Result(metrics=metrics, checkpoint=None, error=None, path=f"{state}/early")
    assert is_stopped_early(stopped)
    cb = MlflowSweepCallback(uri, exp_id, parent, state, tags={"sweep": "s45_u"})
    t = Trial("early", cfg, metrics)
    cb.on_trial_start(0, [], t)
    cb.on_trial_result(0, [], t, metrics)
    cb.on_trial_complete(0, [], t)          # stopped early: its run waits for the evaluation

    def no_resources(config):
        raise AssertionError("a trial without a checkpoint was given an evaluation task")

    ev = evaluate_stopped([stopped], cb, resources=no_resources, hooks=TrialHooks())
    assert ev.unevaluable == {"early": UNEVALUABLE_REASON} and not ev.failed and ev.done == () and ev.logged == ()
    assert cb.flush(timeout_s=60)
    client = mlflow_client(uri)
    (run,) = client.search_runs([exp_id], "tags.`meta_study.role` = 'trial'")
    # the tags ingest and the docs rely on are kept
    assert run.info.status == "FINISHED" and run.data.tags["meta_study.eval_status"] == "failed"
    assert run.data.tags["meta_study.eval_error"] == UNEVALUABLE_REASON
    assert "early" not in evaluated_trials(cb)     # not an evaluated trial either

    # the resume: Tune returns the trial again; its run is not reopened nor ended again
    resumed = MlflowSweepCallback(uri, exp_id, parent, state, tags={"sweep": "s45_u"}, resumed=True)
    logged: list[str] = []
    real = resumed.log_evaluation
    resumed.log_evaluation = lambda tid, *a, **k: (logged.append(tid), real(tid, *a, **k))
    again = evaluate_stopped([stopped], resumed, resources=no_resources, hooks=TrialHooks())
    assert again.unevaluable == {"early": UNEVALUABLE_REASON} and not again.failed and again.done == ()
    assert logged == [], "the resume logged the unevaluable trial's run again"
    assert resumed.flush(timeout_s=60)
    same = client.get_run(run.info.run_id)
    assert same.info.status == "FINISHED" and same.info.end_time == run.info.end_time
    assert same.data.tags["meta_study.eval_error"] == UNEVALUABLE_REASON

    # a run whose tags never reached MLflow's FINISHED state (a driver that died after tagging it,
    # say: still RUNNING) is logged again, and ends FINISHED
    client.update_run(run.info.run_id, status="RUNNING")
    later = MlflowSweepCallback(uri, exp_id, parent, state, tags={"sweep": "s45_u"}, resumed=True)
    assert evaluate_stopped([stopped], later, resources=no_resources, hooks=TrialHooks()).unevaluable
    assert later.flush(timeout_s=60)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_finish_counts_unevaluable_trials_apart(monkeypatch):
    """_finish counted them in eval_failed: the parent ended FAILED, the sweep exited 1."""
    import meta_study.tune.finalize as finalize
    from meta_study.tune.runner import _finish

    monkeypatch.setattr(finalize, "is_stopped_early", lambda r: True)
    monkeypatch.setattr(finalize, "evaluate_stopped", lambda stopped, callback, **kw: finalize.Evaluations(
        done=("a",), failed={"c": "OSError: read failed"}, logged=("b",),
        unevaluable={"d": finalize.UNEVALUABLE_REASON, "e": finalize.UNEVALUABLE_REASON}))
    out = _finish(SPEC, [object()] * 5, SimpleNamespace(flush=lambda: False), None, None, None, None)
    assert (out["eval_done"], out["eval_failed"], out["unevaluable"]) == (2, 1, 2)


@pytest.mark.slow(15)
@pytest.mark.parametrize("eval_failed, status", [(0, "FINISHED"), (1, "FAILED")])
def test_unevaluable_trials_alone_fail_neither_the_parent_run_nor_its_counts(tmp_path, eval_failed, status):
    """The parent's end status and sweep/* metrics (real MLflow): trials == finished + errored +
    eval_failed + unevaluable, early_stopped counting every early-stopped trial."""
    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.runner import _end_parent, sweep_end
    from meta_study.tune.tracking import parent_run

    out = {"eval_done": 1, "eval_failed": eval_failed, "unevaluable": 2, "settled": 0, "orphaned": 0}
    trials = 3 + 1 + eval_failed + 2           # 3 finished training, 1 evaluated, the rest
    got, counts = sweep_end(trials, 3, 0, out, unsent=False)
    assert got == status
    assert counts["trials"] == counts["finished"] + counts["errored"] + counts["eval_failed"] + counts["unevaluable"]
    assert counts["early_stopped"] == 1 + eval_failed + 2 and counts["unevaluable"] == 2
    assert sweep_end(trials, 3, 0, out, unsent=True)[0] == "FAILED"
    assert sweep_end(trials, 3, 1, out, unsent=False)[0] == "FAILED"

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = parent_run(uri, "s45-parent", "s45_u", str(tmp_path / "ray" / "s45_u"), params={}, tags={})
    _end_parent(uri, SimpleNamespace(experiment_id=exp_id, parent_run_id=parent), got, counts)
    run = mlflow_client(uri).get_run(parent)
    assert run.info.status == status
    m = run.data.metrics
    assert m["sweep/unevaluable"] == 2 and m["sweep/eval_failed"] == eval_failed and m["sweep/early_stopped"] == 3 + eval_failed


def _result(**kw) -> SweepResult:
    base = dict(name="s45_u", experiment_dir="/x/ray/s45_u", tracking_uri="sqlite:///x.db", parent_run_id="p",
                trials=3, finished=1, errored=0, early_stopped=2, seconds=1.0, experiment="s45_u")
    return SweepResult(**{**base, **kw})


@pytest.mark.parametrize("eval_failed", [0, 1])
def test_the_sweep_says_unevaluable_trials_plainly_and_exits_0_for_them(monkeypatch, capsys, eval_failed):
    """They exited 1 with "could not be evaluated ...; --resume retries them": a script resuming
    until exit 0 never stopped."""
    monkeypatch.setattr(runner, "parse_options", lambda spec, argv: SweepOptions())
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(
        trials=3 + eval_failed, early_stopped=2 + eval_failed, unevaluable=2, eval_failed=eval_failed))
    monkeypatch.setattr(runner, "browse_line", lambda *a: "browse: -")
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, [])
    assert e.value.code == eval_failed
    out, err = capsys.readouterr()
    summary = json.loads(out[:out.index("\n}") + 2])
    assert summary["unevaluable"] == 2 and summary["eval_failed"] == eval_failed
    lines = err.splitlines()
    said = [ln for ln in lines if "stopped before their first checkpoint" in ln]
    assert said == ["2 early-stopped trial(s) stopped before their first checkpoint: nothing to evaluate, on this or "
                    "any resume (tag meta_study.eval_error on their runs)"], err
    retried = [ln for ln in lines if "--resume retries them" in ln]
    assert len(retried) == eval_failed and all(ln.startswith(f"{eval_failed} early-stopped") for ln in retried), err


# ---- 2. a Ray address's password in one-line errors ---------------------------------------------------


@pytest.mark.parametrize("given", ["flag", "env"])
def test_workers_beside_a_cluster_does_not_repeat_the_addresss_password(monkeypatch, given):
    """safe_uri left ``user:password@host:port`` (no scheme) whole in the --workers refusal."""
    from meta_study.cli import check_ray

    address = f"admin:{PASSWORD}@10.0.0.7:6379"
    monkeypatch.setenv("RAY_ADDRESS", address) if given == "env" else monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError) as e:
        check_ray(address if given == "flag" else None, workers=2)
    says = str(e.value)
    assert says.startswith("--workers 2:") and "10.0.0.7:6379" in says, says
    assert PASSWORD not in says and "admin" not in says, says


def test_the_analysis_layer_names_its_cluster_without_the_password(monkeypatch):
    """parallel._cluster, in the one-line errors of sensitivity and bootstrap on a cluster."""
    from meta_study.analysis.parallel import _cluster

    address = f"admin:{PASSWORD}@10.0.0.7:6379"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _cluster(address) == "--address 10.0.0.7:6379"
    assert _cluster(f"ray://admin:{PASSWORD}@10.0.0.7:10001") == "--address ray://10.0.0.7:10001"
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert _cluster(None) == "RAY_ADDRESS 10.0.0.7:6379"
