"""Review of meta_study/tune/runner.py, finalize.py and _child.py (session 44)."""

from __future__ import annotations

import pytest

from meta_study.mlflow_client import mlflow_client
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepSpec, grid

SPEC = SweepSpec(name="s44_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


@pytest.fixture
def no_ray(monkeypatch):
    """run_sweep up to its Tuner without a Ray (nothing of Ray is started)."""
    import ray

    import meta_study.ray_session as ray_session

    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(ray_session, "start_or_connect", lambda *a, **k: None)
    monkeypatch.setattr(ray, "nodes", lambda: [])
    monkeypatch.setattr(runner, "check_trials_fit", lambda *a, **k: None)
    monkeypatch.setattr(runner.provenance, "code_version", lambda *a, **k: "c1")


def options(tmp_path, **kw) -> SweepOptions:
    return SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray"),
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", **kw)


def parent_statuses(tmp_path) -> list[str]:
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(SPEC.name)
    return [r.info.status for r in client.search_runs([exp.experiment_id], "tags.`meta_study.role` = 'sweep'")]


def ctrl_c(*a, **k):
    raise KeyboardInterrupt


@pytest.mark.slow(90)
def test_ctrl_c_between_the_parent_run_and_the_tuner_ends_the_parent_killed(tmp_path, no_ray, monkeypatch):
    """A Ctrl-C (or an error) after the parent run was created but before the Tuner's try block
    (making the trainable: ``tune.with_parameters`` puts the hooks in Ray's object store; on a
    resume, the paged search of ``recover_run_map``) left the parent RUNNING for good."""
    from ray import tune

    monkeypatch.setattr(tune, "with_parameters", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(SPEC, options(tmp_path))
    assert parent_statuses(tmp_path) == ["KILLED"]


@pytest.mark.slow(60)
def test_a_failure_there_ends_it_failed(tmp_path, no_ray, monkeypatch):
    from ray import tune

    def broken(*a, **k):
        raise ConnectionError("the object store is gone")

    monkeypatch.setattr(tune, "with_parameters", broken)
    with pytest.raises(ConnectionError):
        runner.run_sweep(SPEC, options(tmp_path))
    assert parent_statuses(tmp_path) == ["FAILED"]


@pytest.mark.slow(60)
def test_ctrl_c_before_tune_is_one_line_and_exit_130(tmp_path, no_ray, monkeypatch, capsys):
    """Ctrl-C while Ray started (seconds) or before Tune took SIGINT over was a KeyboardInterrupt
    traceback out of the sweep script (docs/sweeps.md: 130 when interrupted, one line)."""
    import meta_study.ray_session as ray_session

    monkeypatch.setattr(ray_session, "start_or_connect", ctrl_c)
    try:
        with pytest.raises(SystemExit) as e:
            runner.sweep_main(SPEC, ["--smoke", "--quiet", "--storage-path", str(tmp_path / "ray"),
                                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    except KeyboardInterrupt:     # escaped: a regression fails this test, not the whole run
        pytest.fail("a KeyboardInterrupt escaped sweep_main (a traceback)")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 130 and len(err) == 1, err
    assert err[0].startswith("s44_t: aborted (SIGINT); run the same command again"), err


class _Stop(RuntimeError):
    """The first session's driver "dies" once its sweep is recorded."""


@pytest.mark.slow(60)
def test_a_resume_whose_experiment_is_gone_is_refused_in_one_line(tmp_path, no_ray, monkeypatch):
    """A resume after ``mlflow gc`` (or with the default sqlite file removed): "error: No
    Experiment with id=1 exists", exit 1, naming neither the sweep nor what to do."""
    from ray import tune

    from meta_study.errors import UserError

    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(tune, "with_parameters", stop)
    with pytest.raises(_Stop):
        runner.run_sweep(SPEC, options(tmp_path))
    # the record's experiment is not in the database (gc'd, or a new file): as if it had been removed
    import dataclasses

    from meta_study.tune.state import StateDir

    state = StateDir(str(tmp_path / "ray" / "s44_t-smoke"))
    state.write_record(dataclasses.replace(state.read_record(), experiment_id="999"))
    with pytest.raises(UserError) as e:
        runner.run_sweep(SPEC, options(tmp_path, resume=True))
    says = str(e.value)
    assert says.startswith("--resume: sweep s44_t-smoke logs to MLflow experiment 's44_t' (id 999), which "), says
    assert "no longer has" in says and "another --name" in says and "\n" not in says, says


class _Trial:
    def __init__(self, tid: str, last: dict) -> None:
        self.trial_id, self.config, self.last_result, self.checkpoint = tid, {"seed": 0, "lr": 1e-3}, last, None

    def __str__(self) -> str:
        return f"s44_t_{self.trial_id}"


class _Result:
    def __init__(self, trial: _Trial, tmp_path) -> None:
        self.metrics, self.config, self.error = {**trial.last_result, "trial_id": trial.trial_id}, trial.config, None
        self.path, self.checkpoint, self.filesystem = str(tmp_path / trial.trial_id), None, None


class _Tuner:
    """Tune's part, played out: trial a finishes, ASHA stops trial b after its first report."""

    def __init__(self, callbacks, tmp_path) -> None:
        self.cb, self.tmp_path = callbacks[0], tmp_path

    def fit(self):
        cb = self.cb
        cb.setup()
        a = _Trial("a_00000", {"training_iteration": 3, "final": 1.0, "us/synth_us/top1": 0.5})
        b = _Trial("a_00001", {"training_iteration": 1, "us/synth_us/top1": 0.1, "step": 10})
        for t in (a, b):
            cb.on_trial_start(0, [], t)
            cb.on_trial_result(0, [], t, dict(t.last_result))
            cb.on_trial_complete(0, [], t)
        cb.on_experiment_end([])
        return [_Result(a, self.tmp_path), _Result(b, self.tmp_path)]


@pytest.mark.slow(120)
def test_ctrl_c_after_an_early_stopped_trial_was_evaluated_counts_it_finished(tmp_path, no_ray, monkeypatch):
    """Ctrl-C during the end-of-sweep evaluations, after one had been logged: its run is a
    FINISHED data point, but the summary (and the parent's ``sweep/finished``) counted it in
    neither ``finished`` nor ``interrupted``; a sweep's normal end counts it in ``finished``."""
    from ray import tune

    from meta_study.tune import finalize

    monkeypatch.setattr(tune, "with_parameters", lambda fn, **k: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, res: fn)
    monkeypatch.setattr(runner, "_new_tuner", lambda spec, o, trainable, fixed, name, storage, callbacks:
                        _Tuner(callbacks, tmp_path))

    def evaluate_then_ctrl_c(stopped, callback, **k):
        assert [runner.trial_id_of(r) for r in stopped] == ["a_00001"]
        callback.log_evaluation("a_00001", {"early_stopped": 1.0, "ds/synth_combo/1shot/top1": 0.3})
        raise KeyboardInterrupt

    monkeypatch.setattr(finalize, "evaluate_stopped", evaluate_then_ctrl_c)
    res = runner.run_sweep(SPEC, options(tmp_path))
    assert res.stop_signal == "SIGINT", res
    assert (res.trials, res.finished, res.errored, res.early_stopped, res.interrupted) == (2, 2, 0, 1, 0), res
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "KILLED" and parent.data.metrics["sweep/finished"] == 2.0, parent.data.metrics
    runs = client.search_runs([res.experiment_id], f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]


class _Terminated(_Tuner):
    """Tune's part until a SIGTERM: ray.init's handler raises SystemExit(15) in the main thread."""

    def fit(self):
        self.cb.setup()
        t = _Trial("a_00000", {"training_iteration": 1, "us/synth_us/top1": 0.1, "step": 10})
        self.cb.on_trial_start(0, [], t)
        self.cb.on_trial_result(0, [], t, dict(t.last_result))
        raise SystemExit(15)


def runs_of(tmp_path) -> tuple[object, list]:
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(SPEC.name)
    [parent] = client.search_runs([exp.experiment_id], "tags.`meta_study.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


@pytest.mark.slow(90)
def test_a_sigterm_while_trials_train_ends_the_parent_killed_in_one_line(tmp_path, no_ray, monkeypatch, capsys):
    """SIGTERM to the driver (``ray job stop``, scancel): ray.init's handler raises SystemExit(15).
    The parent ended FAILED, its runs "interrupted (SystemExit)", and the script exited 15 without
    a word. Now the parent is KILLED, the runs say SIGTERM, and one line says what to do (143)."""
    from ray import tune

    monkeypatch.setattr(tune, "with_parameters", lambda fn, **k: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, res: fn)
    monkeypatch.setattr(runner, "_new_tuner", lambda spec, o, trainable, fixed, name, storage, callbacks:
                        _Terminated(callbacks, tmp_path))
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke", "--quiet", "--storage-path", str(tmp_path / "ray"),
                                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("s44_t:")]
    assert e.value.code == 143 and len(err) == 1 and err[0].startswith("s44_t: terminated (SIGTERM)"), err
    parent, [run] = runs_of(tmp_path)
    assert parent.info.status == "KILLED", parent.info.status
    assert run.info.status == "KILLED" and run.data.tags["meta_study.status"] == "interrupted"
    assert "(SIGTERM)" in run.data.tags["meta_study.reason"], run.data.tags["meta_study.reason"]


@pytest.mark.slow(90)
def test_a_sigterm_during_the_evaluations_closes_the_parent_and_the_waiting_runs(tmp_path, no_ray, monkeypatch):
    """SIGTERM once Tune had returned, while early-stopped trials were evaluated: the SystemExit
    went past the runner's Ctrl-C handling, and the parent and the runs waiting for their
    evaluation stayed RUNNING for good."""
    from ray import tune

    from meta_study.tune import finalize

    monkeypatch.setattr(tune, "with_parameters", lambda fn, **k: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, res: fn)
    monkeypatch.setattr(runner, "_new_tuner", lambda spec, o, trainable, fixed, name, storage, callbacks:
                        _Tuner(callbacks, tmp_path))

    def sigterm(stopped, callback, **k):
        raise SystemExit(15)

    monkeypatch.setattr(finalize, "evaluate_stopped", sigterm)
    with pytest.raises(SystemExit) as e:
        runner.run_sweep(SPEC, options(tmp_path))
    assert e.value.code == 15                      # the process still exits as it was asked to
    parent, runs = runs_of(tmp_path)
    assert parent.info.status == "KILLED", parent.info.status
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert by_trial["a_00000"].info.status == "FINISHED"
    waiting = by_trial["a_00001"]
    assert waiting.info.status == "KILLED" and waiting.data.tags["meta_study.status"] == "interrupted"


@pytest.mark.slow(60)
def test_a_writer_signalled_before_its_read_loop_still_sends_the_drivers_last_operations(tmp_path, monkeypatch):
    """SIGTERM to the process group while the writer child started (its heartbeat awaited, the run
    map and spool read: seconds on an object store, at every writer's start) killed the child at
    once: every line the driver had queued, and its last operations (its open runs ended KILLED),
    were lost. Now the signal is noted and the child reads on as after a SIGTERM in its loop."""
    import os
    import signal
    import time
    import uuid

    from mlflow.tracking import MlflowClient

    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    go = tmp_path / "go"
    monkeypatch.setenv("META_STUDY_FAILPOINT", "stall_writer_setup")    # the child waits there for `go`
    monkeypatch.setenv("META_STUDY_STALL_UNTIL", str(go))
    monkeypatch.setenv("META_STUDY_STALL_S", "300")
    state_dir = tmp_path / "exp"
    w = WriterProcess(SweepTarget(uri, exp, parent, str(state_dir), {"sweep": "s"}, 60.0))
    w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}}))
    beat = state_dir / "meta_study" / "writer.json"          # written before the failpoint
    deadline = time.monotonic() + 120
    while not beat.exists() and time.monotonic() < deadline and w._proc.poll() is None:
        time.sleep(0.05)
    assert beat.exists(), "the writer child never reached its set-up"
    os.kill(w._proc.pid, signal.SIGTERM)
    go.touch()
    w.put(Op("tag", "t1", {"key": "meta_study.status", "value": "interrupted"}))
    w.put(Op("end", "t1", {"status": "KILLED"}))
    ok = w.close(60.0)
    runs = client.search_runs([exp], "tags.trial_id = 't1'")
    assert ok and [(r.info.status, r.data.tags.get("meta_study.status")) for r in runs] == [("KILLED", "interrupted")]
