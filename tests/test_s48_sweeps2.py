"""Review s48 (second pass) of the sweep path's leftovers: the end-of-sweep reconcile when MLflow
fails, ``--quiet``'s process settings, the ``browse:`` line's quoting, and a resume in another
trial mode (``--workers-per-trial`` / ``--torch-trainer``). No Ray cluster is started."""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from types import SimpleNamespace

import pytest

from meta_study.errors import UserError
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepSpec, grid, parse_options, plan_sweep, sweep_settings
from meta_study.tune.state import Session, SweepRecord

SPEC = SweepSpec(name="s48b", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


# ---- 3. the browse: line ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/tmp/my sweeps/mlflow.db", "/tmp/bob's/mlflow.db"])
def test_the_browse_line_quotes_a_sqlite_uri_a_shell_would_split(path):
    """``mlflow ui --backend-store-uri sqlite:////tmp/my sweeps/mlflow.db`` pasted into a shell
    gave mlflow two arguments (or an unterminated quote for ``bob's``)."""
    uri = f"sqlite:///{path}"
    line = runner.browse_line(uri, "3")
    command = line.removeprefix("browse: ").split(", then ")[0]
    assert shlex.split(command) == ["mlflow", "ui", "--backend-store-uri", uri], line
    assert line.endswith(", then http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"), line
    # a plain path stays as it was (no quotes a user has to read past)
    assert runner.browse_line("sqlite:////tmp/sweeps/mlflow.db", "3").startswith(
        "browse: mlflow ui --backend-store-uri sqlite:////tmp/sweeps/mlflow.db, then ")


# ---- 2. --quiet's process settings ------------------------------------------------------------------


class _Stop(RuntimeError):
    """Raised where Ray would start: the sweep goes no further."""


def test_a_quiet_sweep_puts_the_loggers_and_the_environment_back(tmp_path, monkeypatch):
    """``--quiet`` set Tune's loggers to CRITICAL and TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 for the
    rest of the process: a program's next sweep without --quiet showed no errored trial's
    traceback and wrote no per-trial result files. Set while the sweep runs, put back after it
    (here it ends with an error where Ray would start)."""
    import meta_study.ray_session as ray_session

    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"):
        monkeypatch.delenv(k, raising=False)
    names = ("ray.tune", "ray.train", "ray.air")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.INFO)
    seen = {}

    def at_ray_start(*a, **k):
        seen.update({n: logging.getLogger(n).level for n in names},
                    env=runner.os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"))
        raise _Stop("no Ray here")

    monkeypatch.setattr(ray_session, "start_or_connect", at_ray_start)
    monkeypatch.setattr(runner, "check_fixed_config", lambda *a, **k: None)      # no model built: not tested here
    monkeypatch.setattr(runner, "check_experiment_active", lambda *a, **k: None)
    try:
        with pytest.raises(_Stop):
            runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray"),
                                                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
        assert seen == {**{n: logging.CRITICAL for n in names}, "env": "1"}, seen     # quiet while it ran
        assert {n: logging.getLogger(n).level for n in names} == {n: logging.INFO for n in names}
        assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in runner.os.environ
    finally:
        for n, level in before.items():
            logging.getLogger(n).setLevel(level)


def test_kept_settings_put_back_a_value_that_was_set_before():
    kept = runner._KeptSettings()
    key = "S48B_TEST_VARIABLE"
    runner.os.environ[key] = "was"
    try:
        kept.set_env(key, "1")
        kept.set_env(key, "2")          # the first value before any change is the one put back
        assert runner.os.environ[key] == "2"
        kept.restore()
        assert runner.os.environ[key] == "was"
    finally:
        runner.os.environ.pop(key, None)


# ---- 4. a resume in another trial mode ----------------------------------------------------------


def _started(tmp_path, argv: list[str]) -> tuple[list[str], runner._Plan]:
    """A sweep started with ``argv`` (its record written as run_sweep writes it), nothing run."""
    base = ["--smoke", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    o = parse_options(SPEC, [*base, *argv])
    p = plan_sweep(SPEC, o)
    rec = SweepRecord(sweep=p.name, experiment=p.experiment, experiment_id="1", parent_run_id="p1",
                      tracking_uri=f"sqlite:///{tmp_path}/m.db", settings=sweep_settings(SPEC, o),
                      sessions=(Session(started="t", code=p.code, git_sha="g", researcher="r"),))
    assert p.state.create_record(rec)
    return base, p


@pytest.mark.parametrize("started, resumed, says", [
    ([], ["--workers-per-trial", "2"],
     "was started with neither --workers-per-trial nor --torch-trainer (one process per trial), this command gives "
     "--workers-per-trial 2: its unfinished trials would restart from scratch"),
    ([], ["--torch-trainer"], "this command gives --torch-trainer (one worker): its unfinished trials would restart"),
    (["--workers-per-trial", "2"], [], "was started with --workers-per-trial 2, this command gives neither"),
    (["--workers-per-trial", "2"], ["--workers-per-trial", "4"],
     "was started with --workers-per-trial 2, this command gives --workers-per-trial 4: its trials train with 2 "
     "data-parallel workers each"),
])
def test_a_resume_with_another_trial_mode_is_refused_in_one_line(tmp_path, started, resumed, says):
    """A resume with another --workers-per-trial or --torch-trainer went on: a single-process
    trial's checkpoints are Tune's, a data-parallel one's Ray Train's, so each unfinished trial
    trained again from its first step in the other mode."""
    base, _ = _started(tmp_path, started)
    with pytest.raises(UserError) as e:
        plan_sweep(SPEC, parse_options(SPEC, [*base, "--resume", *resumed]))
    msg = str(e.value)
    assert says in msg and msg.startswith("--resume: sweep s48b-smoke ") and "\n" not in msg, msg
    assert msg.endswith("; pass the same --workers-per-trial and --torch-trainer, or start a new sweep with --name")


def test_a_resume_in_the_same_trial_mode_goes_on(tmp_path):
    base, _ = _started(tmp_path, ["--workers-per-trial", "2"])
    assert plan_sweep(SPEC, parse_options(SPEC, [*base, "--resume", "--workers-per-trial", "2"])).resume
    # --torch-trainer is what 2 workers run anyway: the same mode
    assert plan_sweep(SPEC, parse_options(SPEC, [*base, "--resume", "--workers-per-trial", "2",
                                                 "--torch-trainer"])).resume


def test_a_record_from_before_the_mode_was_kept_is_not_compared(tmp_path):
    from pathlib import Path

    from meta_study.tune.state import RECORD

    base, p = _started(tmp_path, [])
    rec = p.state.read_record()
    assert (rec.settings["workers_per_trial"], rec.settings["torch_trainer"]) == (1, False)
    Path(p.state.path(RECORD)).unlink()
    old = {k: v for k, v in rec.settings.items() if k not in runner.MODE_KEYS}
    assert p.state.create_record(replace(rec, settings=old))
    assert plan_sweep(SPEC, parse_options(SPEC, [*base, "--resume", "--workers-per-trial", "2"])).resume


# ---- 1. the reconcile step when MLflow fails at the end ---------------------------------------------


class _Callback:
    """What _finish asks of the sweep's MLflow callback."""

    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> bool:
        self.flushes += 1
        return True


def _finish_with(monkeypatch, tmp_path, reconcile):
    from meta_study.tune import finalize

    monkeypatch.setattr(finalize, "evaluate_stopped", lambda *a, **k: finalize.Evaluations(done=(), failed={}))
    monkeypatch.setattr(finalize, "reconcile", reconcile)
    cb = _Callback()
    p = SimpleNamespace(tracking=f"sqlite:///{tmp_path}/m.db", state=SimpleNamespace(runs=lambda: {}))
    rec = SimpleNamespace(experiment_id="1", parent_run_id="p1")
    out = runner._finish(SPEC, [], cb, p, rec, resources=None, hooks=None)
    return out, cb


def test_a_reconcile_mlflow_fails_is_data_not_the_sweeps_end(tmp_path, monkeypatch):
    """The end-of-sweep reconcile's MLflow search failing (the server gone at the end) raised out
    of the sweep: no summary (the trials were done and logged), the parent run FAILED, one line of
    MLflow's words. Now _finish returns why, the parent ends FAILED and the exit status is 1."""
    from mlflow.exceptions import MlflowException

    def down(*a, **k):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/search failed: Connection refused")

    out, cb = _finish_with(monkeypatch, tmp_path, down)
    assert out["reconcile_error"].startswith("MlflowException: API request to endpoint /api/2.0/mlflow/runs/search")
    assert (out["settled"], out["orphaned"]) == (0, 0) and cb.flushes == 2      # what it queued is sent too
    status, counts = runner.sweep_end(2, 2, 0, out, unsent=False)
    assert status == "FAILED" and counts["finished"] == 2
    ok, _ = _finish_with(monkeypatch, tmp_path, lambda *a, **k: SimpleNamespace(settled=("t1",), orphaned=()))
    assert ok["reconcile_error"] is None and ok["settled"] == 1
    assert runner.sweep_end(2, 2, 0, ok, unsent=False)[0] == "FINISHED"


def test_a_bug_in_reconcile_keeps_its_traceback(tmp_path, monkeypatch):
    def bug(*a, **k):
        raise TypeError("a bug of ours")

    with pytest.raises(TypeError):
        _finish_with(monkeypatch, tmp_path, bug)


def test_the_summary_is_printed_with_one_line_saying_reconcile_did_not_run(monkeypatch, capsys):
    res = runner.SweepResult(name="s48b", experiment_dir="/x/s48b", tracking_uri="http://127.0.0.1:9",
                             parent_run_id="p1", trials=2, finished=2, errored=0, early_stopped=0, seconds=1.0,
                             experiment_id="1", experiment="s48b",
                             unreconciled="MlflowException: Connection refused")
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: res)
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke"])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert '"finished": 2' in out and "next: meta-study ingest" in out
    assert err.splitlines() == [
        "s48b: the end-of-sweep check of MLflow's runs against Tune's record could not run (MlflowException: "
        "Connection refused): a run an earlier driver left open may still be RUNNING, or a trial's run missing "
        "(ingest reads FINISHED runs only); the counts above are the driver's. Once MLflow answers, run the same "
        "command with --resume to run the check (finished trials are not trained again)"], err
