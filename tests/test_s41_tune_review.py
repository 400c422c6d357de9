"""Review of meta_study/tune/runner.py, trial.py and finalize.py (session 41): a trial's second
RUNNING run after its driver died, and refusals of bad input that were tracebacks, misleading, or
came after the sweep's parent run was made."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepSpec, grid, parse_options

SPEC = SweepSpec(name="s41_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


@pytest.mark.slow(15)
def test_a_second_running_run_of_a_trial_an_earlier_session_ended_is_closed_as_a_duplicate(tmp_path):
    """A trial whose run was created twice (a create whose reply was lost) and whose driver died
    after the trial's own run ended, before the end of the sweep closed the second one: the
    resume's reconcile adopted the second run, settled it FINISHED and pointed the run map at it.
    The trial was two FINISHED runs, two data points to ``meta-study ingest``."""
    from ray.tune.result_grid import Result

    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.finalize import reconcile
    from meta_study.tune.state import StateDir
    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    state = str(tmp_path / "ray" / "s")
    exp_id, parent = parent_run(uri, "dup", "s", state, params={}, tags={})
    client = mlflow_client(uri)
    tags = {"mlflow.parentRunId": parent, "trial_id": "t1", "meta_study.role": "trial"}
    own = client.create_run(exp_id, tags=tags).info.run_id
    second = client.create_run(exp_id, tags=tags).info.run_id
    client.log_metric(own, "us/up/top1", 0.5, step=10)
    client.set_terminated(own, "FINISHED")             # ended by the session whose driver then died
    StateDir(state).add_run("t1", own, None)
    final = {"trial_id": "t1", "final": 1.0, "us/up/top1": 0.5, "config": {"lr": 0.1}}
    results = [Result(metrics=final, checkpoint=None, error=None, path=f"{state}/t1")]
    cb = MlflowSweepCallback(uri, exp_id, parent, state, resumed=True)   # the resume: t1 not run again
    rc = reconcile(results, cb, tracking_uri=uri, experiment_id=exp_id, parent_run_id=parent,
                   runs_map=StateDir(state).runs(), name_of=lambda t: f"s_{t}")
    assert cb.flush(timeout_s=60)
    assert rc.settled == () and rc.orphaned == (), rc
    assert StateDir(state).runs()["t1"] == own                         # the trial keeps its run
    dup = client.get_run(second)
    assert dup.info.status == "KILLED" and dup.data.tags["meta_study.status"] == "duplicate", dup.info.status
    assert own in dup.data.tags["meta_study.reason"]
    assert "us/up/top1" not in dup.data.metrics
    assert client.get_run(own).info.status == "FINISHED"


def test_a_storage_uri_without_a_bucket_is_refused_in_one_line(monkeypatch):
    """``--storage-path s3://`` was pyarrow's ArrowInvalid traceback ("Missing bucket name in S3
    URI") out of Tune's ``can_restore``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError) as e:
        runner.plan_sweep(SPEC, SweepOptions(smoke=True, storage_path="s3://", tracking_uri="http://127.0.0.1:1"))
    says = str(e.value)
    assert says.startswith("--storage-path s3://: not a storage URI") and "bucket" in says and "\n" not in says, says


def test_an_empty_tracking_uri_is_refused(monkeypatch):
    """``--tracking-uri "$MLFLOW_URI"`` with the variable unset logged the sweep to a sqlite file
    beside the storage, not to the server, without a word (an empty ``--storage-path``,
    ``--experiment`` or ``--researcher`` is refused alike). An empty $MLFLOW_TRACKING_URI is unset."""
    with pytest.raises(UserError, match=r"^--tracking-uri '': empty"):
        parse_options(SPEC, ["--smoke", "--tracking-uri", ""])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert parse_options(SPEC, ["--smoke"]).tracking_uri is None


def test_a_sqlite_tracking_uri_under_a_file_is_refused_in_one_line(tmp_path, monkeypatch):
    """A sqlite path whose directory is a file: "error: [Errno 17] File exists: ..." (exit 1), as
    if the machine had failed."""
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "afile").write_text("x")
    uri = f"sqlite:///{tmp_path}/afile/mlflow.db"
    with pytest.raises(UserError) as e:
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "out" / "ray"),
                                            tracking_uri=uri))
    assert str(e.value).startswith(f"--tracking-uri {uri}: its directory {tmp_path / 'afile'} cannot be made"), e.value


def test_a_name_longer_than_a_directory_name_is_refused():
    """A ``--name`` over 255 bytes passed every check while the storage path did not exist yet; the
    sweep record then could not be written (File name too long, exit 1), after the sweep's MLflow
    parent run had been made, which stayed RUNNING for good."""
    with pytest.raises(UserError, match=r"is 256 bytes long, more than a directory name's 255"):
        parse_options(SPEC, ["--smoke", "--name", "x" * 256])
    with pytest.raises(UserError, match=r"is 300 bytes long"):
        SweepOptions(name="é" * 150)
    assert parse_options(SPEC, ["--smoke", "--name", "x" * 255]).name == "x" * 255


@pytest.mark.parametrize("kw", [{"scheduler": "ASHA"}, {"scheduler": "hyperband"}, {"search": "bayes"},
                                {"search": "Optuna"}])
def test_a_search_or_scheduler_the_runner_does_not_know_is_refused(kw):
    """``scheduler="ASHA"`` (or any word but ``"asha"``) ran every trial to its end without early
    stopping, and ``search="bayes"`` ran the space as a grid, both without a word: the Tuner is
    made from ``spec.search == "optuna"`` and ``spec.scheduler == "asha"`` only."""
    with pytest.raises(ValueError, match=r"^SweepSpec t: (search|scheduler)="):
        SweepSpec(name="t", doc="x\n", space=lambda o: {}, **kw)
    SweepSpec(name="t", doc="x\n", space=lambda o: {}, search="random", scheduler=None)
    SweepSpec(name="t", doc="x\n", space=lambda o: {}, search="optuna", scheduler="asha")


def test_a_restarted_trial_whose_checkpoints_are_gone_says_so_without_pyarrows_object(tmp_path):
    """A restarted trial whose checkpoints were deleted from the storage: its error (error.txt, the
    run's reason tag) read "Path not found: (<pyarrow._fs.LocalFileSystem object at 0x7f...>,
    PATH)", as the evaluation of such a checkpoint once did."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from meta_study.train.loop import UnreadableCheckpoint
    from meta_study.tune.trial import resume_copy

    gone = f"{tmp_path}/trial/checkpoint_000003"
    with pytest.raises(UnreadableCheckpoint) as e:
        resume_copy(Checkpoint(gone, filesystem=pafs.LocalFileSystem()), str(tmp_path / "work"))
    says = str(e.value)
    assert says.startswith(f"{gone}: not on the sweep's storage (deleted?); no earlier readable checkpoint"), says
    assert "object at 0x" not in says


@pytest.mark.parametrize("argv", [["--dataset", "pets/v2=imagefolder:/data/pets"],
                                  ["--dataset", "in/21k=imagefolder:/data/in21k", "--us-task", "in/21k"]])
def test_a_task_name_with_a_slash_is_refused_before_the_sweep_trains(argv):
    """``--dataset pets/v2=...``: MLflow takes ``ds/pets/v2/10shot/top1``, so the sweep trained and
    logged, but the schema's keys hold a task name as one segment and ingest's default mapping
    matches none of that task's keys: its accuracies (an upstream one: every run's) never reached
    the store."""
    from meta_study.ingest.mapping import MetricPattern

    assert MetricPattern("ds/{ds_task}/{shots}shot/top1", "ds").match("ds/pets/v2/10shot/top1") is None
    assert MetricPattern("us/{us_task}/top1", "us").match("us/in/21k/top1") is None
    o = parse_options(SPEC, ["--smoke", *argv])
    with pytest.raises(UserError) as e:
        runner.check_fixed_config(SPEC, o)
    says = str(e.value)
    assert says.startswith(f"--dataset {argv[1].split('=')[0]!r}: holds '/'") and "meta-study ingest" in says, says


class _Ref:
    def __init__(self, n: int) -> None:
        self.n = n


class _Ray:
    """The part of Ray ``evaluate_stopped`` uses: ``wait`` follows a script (None: a timeout, "r":
    the first pending evaluation is done)."""

    def __init__(self, script: list) -> None:
        self.script, self.made = list(script), 0

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **kw):
                return self

            def remote(self, *a):
                ray.made += 1
                return _Ref(ray.made)
        return Task()

    def wait(self, pending, num_returns, timeout):
        step = self.script.pop(0)
        return ([], pending) if step is None else ([pending[0]], pending[1:])

    def get(self, ref):
        return {"us/up/top1": 0.5, "final": 1.0}

    def available_resources(self):
        return {"CPU": 0.0}


class _Callback:
    def __init__(self) -> None:
        self.evaluated: list[str] = []

    def log_evaluation(self, tid, metrics, **kw):
        self.evaluated.append(tid)

    def on_trial_result(self, *a, **kw):
        pass

    def train_checkpoint(self, tid):
        return None


@pytest.mark.parametrize("script,notes", [([None, None, "r", "r"], 1), ([None, "r", None, "r"], 0)])
def test_the_note_on_slow_evaluations_does_not_say_they_wait_for_resources(monkeypatch, capsys, script, notes):
    """Every WAIT_NOTE_S without an evaluation finishing, a line said "N still waiting for
    resources", also of evaluations that were running (a big model's probes take minutes), and its
    count of seconds went on across evaluations that finished."""
    import ray
    from ray.tune.result_grid import Result

    import meta_study.ray_session as ray_session
    from meta_study.tune import finalize
    from meta_study.tune.trial import TrialHooks

    fake = _Ray(script)
    for name in ("remote", "wait", "get", "available_resources"):
        monkeypatch.setattr(ray, name, getattr(fake, name))
    monkeypatch.setattr(ray_session, "free_orphaned_placement_groups", lambda: None)
    monkeypatch.setattr(finalize, "evaluated_trials", lambda callback: set())
    monkeypatch.setattr(finalize, "FREE_EVERY_S", 1.0)
    monkeypatch.setattr(finalize, "WAIT_NOTE_S", 2.0)
    results = [Result(metrics={"trial_id": t, "training_iteration": 1}, checkpoint=object(), error=None,
                      path=f"/x/{t}") for t in ("a", "b")]
    cb = _Callback()
    ev = finalize.evaluate_stopped(results, cb, resources=lambda config: {"cpu": 1.0}, hooks=TrialHooks())
    assert ev.done == ("a", "b") and cb.evaluated == ["a", "b"], ev
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("evaluating early-stopped trials")]
    assert len(lines) == notes, err
    assert "waiting for resources after" not in err
    if notes:
        assert lines[0].startswith("evaluating early-stopped trials: 2 not done, none finished in the last 2 s "
                                   "(each running, or waiting for resources; free now: "), lines[0]


def test_an_empty_us_task_is_refused():
    """``--us-task "$TASK"`` with the variable unset: every trial pre-trained on the sweep's own
    upstream task without a word (an empty ``--ds-task`` is refused as no such task)."""
    with pytest.raises(UserError, match=r"^--us-task '': empty"):
        parse_options(SPEC, ["--smoke", "--us-task", ""])
    assert parse_options(SPEC, ["--smoke", "--us-task", "synth_us"]).us_task == "synth_us"
