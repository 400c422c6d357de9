"""Review of meta_study/demo.py and meta_study/tune/tracking.py (session 44)."""

from __future__ import annotations

import dataclasses
import signal
import socket
from pathlib import Path

import pytest

from meta_study.mlflow_client import mlflow_client
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepResult, SweepSpec, grid


def _result(**kw) -> SweepResult:
    base = dict(name="demo", experiment_dir="/x/ray/demo", tracking_uri="sqlite:///x.db", parent_run_id="p",
                trials=18, finished=5, errored=0, early_stopped=0, seconds=1.0)
    return SweepResult(**{**base, **kw})


def _no_ingest(*a, **k):
    raise AssertionError("the demo ingested a sweep that did not end")


# ---- 1. the demo goes on after its sweep was stopped ------------------------------------------------


@pytest.mark.parametrize("sig, raised", [("SIGINT", KeyboardInterrupt), ("SIGUSR1", SystemExit)])
def test_a_demo_sweep_stopped_by_a_signal_stops_the_demo(tmp_path, monkeypatch, sig, raised):
    """Ctrl-C while the demo's trials trained: Tune stops them and ``run_sweep`` returns (its
    ``stop_signal`` set); the demo went on to ingest, refit and report 5 of its 18 models, exit 0."""
    from meta_study import demo
    from meta_study.errors import Terminated

    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(stop_signal=sig, interrupted=2))
    lines: list[str] = []
    with pytest.raises(raised) as e:
        demo._train(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True, log=lines.append)
    if raised is SystemExit:
        assert isinstance(e.value, Terminated) and e.value.code == 128 + signal.SIGUSR1
    assert len(lines) == 1 and f"interrupted ({sig}) with 5 of 18 models trained" in lines[0], lines
    assert "run the demo again" in lines[0]


@pytest.mark.parametrize("sig, code, line", [("SIGINT", 130, "meta-study: aborted"),
                                             ("SIGUSR1", 138, "meta-study: terminated by SIGUSR1")])
def test_ctrl_c_in_the_demos_sweep_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys, sig, code, line):
    """The command's end: one line on stderr, exit 130 (128 + the signal), nothing ingested."""
    from meta_study import cli, ingest

    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(stop_signal=sig, interrupted=2))
    monkeypatch.setattr(ingest, "ingest_sources", _no_ingest)
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--workdir", str(tmp_path / "wd"), "--serial"])
    out, err = capsys.readouterr()
    assert e.value.code == code, (out, err)
    assert [ln for ln in err.splitlines() if ln.strip()] == [line], err
    assert f"interrupted ({sig}) with 5 of 18 models trained" in out and "ingest:" not in out, out


def test_a_demo_sweep_whose_mlflow_logging_was_spooled_is_not_ingested(tmp_path, monkeypatch):
    """A sweep whose last flush gave up (its runs' final metrics and ends spooled, not in MLflow):
    the demo ingested the runs MLflow held and reported on them."""
    from meta_study import demo

    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(finished=18, unsent=True))
    with pytest.raises(demo.DemoStepFailed, match=r"could not log all of its runs .* run the demo again"):
        demo._train(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True, log=lambda m: None)


# ---- 2. the callback forgot that its end-of-sweep flush gave up -------------------------------------


class _Writer:
    """A writer process whose flushes answer from a script (True: all sent)."""

    answers: list[bool] = []

    def __init__(self, target) -> None:
        self.errors, self.cpu_s, self.unanswered, self.last_error, self.held, self.died = 0, 0.0, False, None, 0, 0
        self.dropped = 0     # operations MLflow refused for good (WriterProcess.dropped)

    def put(self, op) -> None:
        pass

    def close(self, timeout_s=None) -> bool:
        return _Writer.answers.pop(0)


def test_the_callback_remembers_a_flush_that_gave_up(tmp_path, monkeypatch):
    """``on_experiment_end`` threw the flush's answer away: the runner's next flush (no operation
    since, so no writer) said True, and a sweep whose end was spooled was taken for one MLflow held
    in full. A later flush that sends everything (a new writer replays the spool) clears it."""
    from meta_study.tune import tracking
    from meta_study.tune.tracking import MlflowSweepCallback, Op

    monkeypatch.setattr(tracking, "WriterProcess", _Writer)
    _Writer.answers = [False, True]
    cb = MlflowSweepCallback("sqlite:///x.db", "1", "p", str(tmp_path), flush_timeout_s=0.1)
    cb._put(Op("noop", ""))
    cb.on_experiment_end([])
    assert cb.incomplete and cb.flush() is False and cb.flush() is False
    cb._put(Op("noop", ""))          # a new writer sends everything, the spool first
    assert cb.flush() is True and not cb.incomplete and cb.flush() is True


def test_operations_a_writer_lost_keep_the_sweep_incomplete(tmp_path, monkeypatch):
    from meta_study.tune import tracking
    from meta_study.tune.tracking import MlflowSweepCallback, Op

    monkeypatch.setattr(tracking, "WriterProcess", _Writer)
    _Writer.answers = [True]
    cb = MlflowSweepCallback("sqlite:///x.db", "1", "p", str(tmp_path), flush_timeout_s=0.1)
    cb._put(Op("noop", ""))
    cb._writer.died = 1               # a child died between flushes: what it had not sent is gone
    assert cb.flush() is True and cb.incomplete


SPEC = SweepSpec(name="s44_dt", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Trial:
    def __init__(self, tid: str, last: dict) -> None:
        self.trial_id, self.config, self.last_result, self.checkpoint = tid, {"seed": 0, "lr": 1e-3}, last, None

    def __str__(self) -> str:
        return f"s44_dt_{self.trial_id}"


class _Result:
    def __init__(self, trial: _Trial, tmp_path) -> None:
        self.metrics, self.config, self.error = {**trial.last_result, "trial_id": trial.trial_id}, trial.config, None
        self.path, self.checkpoint, self.filesystem = str(tmp_path / trial.trial_id), None, None


class _UnreachableTuner:
    """Tune's part, with MLflow out of the writer's reach until the sweep's end: one trial
    finishes, and the end-of-sweep flush gives up after 1 s and spools what is left; then the
    server is back (the runner's own calls go through)."""

    def __init__(self, callbacks, tmp_path) -> None:
        self.cb, self.tmp_path = callbacks[0], tmp_path

    def fit(self):
        cb = self.cb
        target = cb.target
        cb.target = dataclasses.replace(target, tracking_uri=f"http://127.0.0.1:{_closed_port()}", flush_timeout_s=1.0)
        cb.setup()
        a = _Trial("a_00000", {"training_iteration": 3, "final": 1.0, "us/synth_us/top1": 0.5})
        cb.on_trial_start(0, [], a)
        cb.on_trial_result(0, [], a, dict(a.last_result))
        cb.on_trial_complete(0, [], a)
        cb.on_experiment_end([])
        cb.target = target
        return [_Result(a, self.tmp_path)]


@pytest.fixture
def no_ray(monkeypatch):
    """run_sweep without a Ray or a Tuner (nothing of Ray is started)."""
    import ray
    from ray import tune

    import meta_study.ray_session as ray_session

    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(ray_session, "start_or_connect", lambda *a, **k: None)
    monkeypatch.setattr(ray, "nodes", lambda: [])
    monkeypatch.setattr(runner, "check_trials_fit", lambda *a, **k: None)
    monkeypatch.setattr(runner.provenance, "code_version", lambda *a, **k: "c1")
    monkeypatch.setattr(tune, "with_parameters", lambda fn, **k: fn)
    monkeypatch.setattr(tune, "with_resources", lambda fn, res: fn)


@pytest.mark.slow(90)
def test_a_sweep_whose_end_was_spooled_ends_failed_and_says_so(tmp_path, no_ray, monkeypatch, capsys):
    """MLflow unreachable at the sweep's end: the operations were spooled, but the runner saw
    ``sent`` True (settled runs against a server that lacked them), ended the parent FINISHED and
    the sweep exited 0, with only the writer's line on stderr."""
    monkeypatch.setattr(runner, "_new_tuner", lambda spec, o, trainable, fixed, name, storage, callbacks:
                        _UnreachableTuner(callbacks, tmp_path))
    from meta_study.tune import finalize

    reconciled = []
    monkeypatch.setattr(finalize, "reconcile", lambda *a, **k: reconciled.append(1))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray"),
                                              tracking_uri=tracking))
    assert res.unsent and not reconciled, res
    assert mlflow_client(tracking).get_run(res.parent_run_id).info.status == "FAILED"
    assert list((Path(res.experiment_dir) / "meta_study" / "spool").glob("*.jsonl")), "nothing spooled"
    err = capsys.readouterr().err
    assert "not every MLflow operation of this sweep reached" in err, err


def test_sweep_main_exits_1_with_a_line_when_mlflow_lacks_part_of_the_sweep(monkeypatch, capsys):
    monkeypatch.setattr(runner, "parse_options", lambda spec, argv: SweepOptions())
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(name="s44_dt", finished=1, trials=1,
                                                                           unsent=True, experiment="s44_dt"))
    monkeypatch.setattr(runner, "browse_line", lambda *a: "browse: -")
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, [])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "s44_dt: MLflow lacks part of what this sweep logged" in err and "--resume" in err, err


# ---- 3. a workdir moved before its first ingest -----------------------------------------------------


def test_a_workdir_moved_while_its_sweep_had_not_ended_is_refused_in_the_demos_words(tmp_path):
    """A demo stopped while it trained ingests nothing, so a workdir moved (or copied) after it held
    no store to show the move: the runner refused the resume with "pass --tracking-uri ...", an
    option the demo does not have."""
    from meta_study import demo
    from meta_study.errors import UserError
    from meta_study.tune.state import StateDir, SweepRecord

    old, wd = tmp_path / "old", tmp_path / "new"
    (wd / "ray" / "demo").mkdir(parents=True)
    StateDir(str(wd / "ray" / "demo")).create_record(SweepRecord(
        sweep="demo", experiment=demo.EXPERIMENT, experiment_id="1", parent_run_id="p",
        tracking_uri=f"sqlite:///{old / 'mlflow.db'}"))
    with pytest.raises(UserError, match=r"^--workdir W: its sweep state .* logs to another MLflow database "
                                        r"\(sqlite:///.*/old/mlflow.db: a workdir moved or copied from there\?\); "
                                        r"give another --workdir, or remove .* to start again$"):
        demo.refuse_mixed_workdir(wd, "W", f"sqlite:///{wd / 'mlflow.db'}", synthetic=False)
    (old / "ray" / "demo").mkdir(parents=True)          # where it was: resumed as before
    StateDir(str(old / "ray" / "demo")).create_record(SweepRecord(
        sweep="demo", experiment=demo.EXPERIMENT, experiment_id="1", parent_run_id="p",
        tracking_uri=f"sqlite:///{old / 'mlflow.db'}"))
    assert demo.refuse_mixed_workdir(old, "W", f"sqlite:///{old / 'mlflow.db'}", synthetic=False) is None
