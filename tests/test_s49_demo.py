"""Review s49 of `meta-study demo`: defects reproduced, each with its test (none starts Ray or trains)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conftest import one_error_line, run_cli
from meta_study.errors import UserError


def test_an_existing_workdir_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """A workdir that exists but cannot be written (another user's, a read-only mount) said
    "meta-study: error: [Errno 13] Permission denied: '.../.demo.lock' (META_STUDY_TRACEBACK=1 shows
    where)", exit 1, where one that cannot be created names --workdir and exits 2. (Simulated: the
    tests run as root, for whom a mode of 0o555 does not stop a write.)"""
    from meta_study import demo

    wd = tmp_path / "wd"
    wd.mkdir()
    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).endswith(demo.DEMO_LOCK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(demo.os, "open", read_only)
    r = run_cli("demo", "--synthetic", "--serial", "--workdir", str(wd), subprocess_=False)
    line = one_error_line(r, f"--workdir {wd}: cannot be written (Permission denied: {wd / demo.DEMO_LOCK})")
    assert "META_STUDY_TRACEBACK" not in line
    assert sorted(p.name for p in wd.iterdir()) == []          # nothing was made there


def test_a_workdir_lock_that_fails_for_another_reason_is_still_the_machines_failure(tmp_path, monkeypatch):
    """Only a permission or a read-only file system is the user's input (exit 2): a full disk
    stays an OSError (exit 1, as every command says a machine's failure)."""
    from meta_study import demo

    def full(path, flags, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(demo.os, "open", full)
    with pytest.raises(OSError) as info:
        with demo.workdir_lock(tmp_path, str(tmp_path)):
            pass
    assert not isinstance(info.value, UserError) and info.value.errno == errno.ENOSPC


def _stopped_sweep(wd: Path, *, max_concurrent: int | None, keep_key: bool = True) -> str:
    """The sweep state a demo leaves when it is stopped while it trains (Ctrl-C, exit 130): its
    record, started with ``max_concurrent`` (None: the demo without --serial), its parent run not
    FINISHED (here: not in MLflow at all). Returns the tracking URI."""
    from meta_study import demo
    from meta_study.mlflow_client import safe_uri
    from meta_study.tune.runner import SweepOptions, sweep_settings
    from meta_study.tune.state import StateDir, SweepRecord

    (wd / "ray" / "demo").mkdir(parents=True)
    tracking = f"sqlite:///{wd / 'mlflow.db'}"
    opts = SweepOptions(smoke=True, tracking_uri=tracking, experiment=demo.EXPERIMENT, storage_path=str(wd / "ray"),
                        name="demo", cpus_per_trial=1.0, quiet=True, address="local", max_concurrent=max_concurrent)
    settings = sweep_settings(demo._sweep_spec(), opts)
    if not keep_key:                      # a record from before the setting was kept
        settings.pop("max_concurrent")
    StateDir(str(wd / "ray" / "demo")).create_record(SweepRecord(
        sweep="demo", experiment=demo.EXPERIMENT, experiment_id="1", parent_run_id="p",
        tracking_uri=safe_uri(tracking), settings=settings))
    return tracking


def test_demo_serial_after_a_stopped_demo_without_it_is_refused_in_the_demos_words(tmp_path, monkeypatch):
    """`meta-study demo`, Ctrl-C while it trained ("run the demo again to go on"), then
    `meta-study demo --serial`: the runner refused the resume with "--resume: sweep demo was started
    with max_concurrent unset, this command gives 1 ...; pass the same --max-concurrent and options,
    or start a new sweep with --name", three options the demo does not have."""
    from meta_study import demo
    from meta_study.tune import runner
    from meta_study.tune.preflight import plan_session

    wd = tmp_path / "wd"
    tracking = _stopped_sweep(wd, max_concurrent=None)
    swept = []

    def run_sweep(spec, options):           # the runner's own decision, without starting Ray
        from meta_study.tune.state import StateDir

        swept.append(options)
        record = StateDir(options.storage_path + "/demo").read_record()
        plan_session(record=record, tune_state=False, resume=options.resume, experiment=options.experiment,
                     default_experiment=demo.EXPERIMENT, code="c", allow_code_change=True,
                     experiment_dir=options.storage_path + "/demo", tracking_uri=record.tracking_uri,
                     settings=runner.sweep_settings(spec, options, given_only=True))
        raise AssertionError("resumed")

    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    with pytest.raises(UserError, match=r"^--workdir .*/wd: its sweep was stopped before its end and was started "
                                        r"without --serial; .* run the demo again without --serial, or give another "
                                        r"--workdir to train one trial at a time$") as info:
        demo._train(wd, tracking, serial=True, log=lambda m: None)
    assert "--max-concurrent" not in str(info.value) and "--name" not in str(info.value)
    assert swept == []                      # refused before the runner was asked
    # without --serial it resumes as it was started
    with pytest.raises(AssertionError, match="resumed"):
        demo._train(wd, tracking, serial=False, log=lambda m: None)
    assert len(swept) == 1


@pytest.mark.parametrize("max_concurrent, keep_key", [(1, True), (None, False)])
def test_demo_serial_resumes_a_sweep_started_one_trial_at_a_time_or_an_older_record(tmp_path, monkeypatch,
                                                                                    max_concurrent, keep_key):
    """What is not refused: a sweep started with --serial, and a record that does not say."""
    from meta_study import demo
    from meta_study.tune import runner

    wd = tmp_path / "wd"
    tracking = _stopped_sweep(wd, max_concurrent=max_concurrent, keep_key=keep_key)

    def run_sweep(spec, options):
        raise AssertionError("resumed")

    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    with pytest.raises(AssertionError, match="resumed"):
        demo._train(wd, tracking, serial=True, log=lambda m: None)
