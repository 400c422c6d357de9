"""Review of the sweep's writer end (stop 46): meta_study/tune/writer.py, _child.py, and the
runner's end of a sweep. Operations MLflow refused for good were dropped, counted in the writer
child only, and its flush answered ok: a sweep whose every trial run was refused ended its parent
FINISHED and exited 0. MLflow is a real sqlite store."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from meta_study.mlflow_client import mlflow_client
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepResult


def _result(**kw) -> SweepResult:
    base = dict(name="s46_dr", experiment_dir="/x/ray/s46_dr", tracking_uri="sqlite:///x.db", parent_run_id="p",
                trials=2, finished=2, errored=0, early_stopped=0, seconds=1.0, experiment="s46_dr")
    return SweepResult(**{**base, **kw})


@pytest.mark.slow(20)
def test_the_writers_flush_reply_carries_the_operations_mlflow_refused_for_good(tmp_path: Path):
    """A trial run whose runs/create MLflow refuses for good (its experiment deleted): the writer
    drops it after three refusals and its flush answers ok (nothing left to send or spool); the
    driver's handle now knows how many were dropped, after the flush and after the child exits."""
    from meta_study.tune.writer import Op, SweepTarget, WriterProcess

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("s46_dropped")
    parent = client.create_run(exp).info.run_id
    client.delete_experiment(exp)                 # takes no runs any more: refused for good
    w = WriterProcess(SweepTarget(uri, exp, parent, str(tmp_path / "exp"), {"sweep": "s"}, 60.0))
    try:
        w.put(Op("run", "t1", {"name": "s_t1", "config": {"lr": 0.1}}))
        assert w.flush() is True                  # nothing left: ok, as before
        assert w.dropped >= 1, w.dropped
        seen = w.dropped
    finally:
        assert w.close() is True
    assert w.dropped == seen                      # the child's last word keeps the count


def test_the_child_takes_the_drivers_workspace_into_its_environment(monkeypatch):
    """The writer child's own MLflow client reads the workspace from ``MLFLOW_WORKSPACE`` only: a
    driver that chose it with ``mlflow.set_workspace`` sent it in the credentials, and that client
    worked in the default workspace."""
    from meta_study.tune import _child

    # set, then deleted: delenv(raising=False) of an absent variable records nothing to restore, so
    # the later delenv's "lab-a" was put back at teardown, and every later test of the worker ran in
    # workspace lab-a (a sweep against a plain server: "Active workspace 'lab-a' cannot be used")
    monkeypatch.setenv("MLFLOW_WORKSPACE", "-")
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    w = SimpleNamespace(creds=None)
    _child._take_creds(w, json.dumps({"creds": {"token": None, "workspace": "lab-a"}}) + "\n")
    assert w.creds == {"token": None, "workspace": "lab-a"}
    import os

    assert os.environ.get("MLFLOW_WORKSPACE") == "lab-a"
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    for first in (json.dumps({"creds": {"workspace": None}}) + "\n", json.dumps({"creds": None}) + "\n", '{"cr'):
        _child._take_creds(w, first)
        assert "MLFLOW_WORKSPACE" not in os.environ, first


def test_a_sweep_with_dropped_operations_ends_its_parent_failed_with_the_count(tmp_path: Path):
    """The parent's end status and ``sweep/dropped`` (real MLflow): FINISHED with 0, FAILED with
    operations dropped (no --resume sends them)."""
    from meta_study.tune.runner import _end_parent, sweep_end
    from meta_study.tune.state import SweepRecord

    out = {"eval_done": 0, "eval_failed": 0, "unevaluable": 0, "settled": 0, "orphaned": 0}
    status, counts = sweep_end(2, 2, 0, out, unsent=False)
    assert status == "FINISHED" and counts["dropped"] == 0
    status, counts = sweep_end(2, 2, 0, out, unsent=False, dropped=3)
    assert status == "FAILED" and counts["dropped"] == 3

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    exp = client.create_experiment("s46_dropped_end")
    parent = client.create_run(exp).info.run_id
    rec = SweepRecord(sweep="s", experiment="s46_dropped_end", experiment_id=exp, parent_run_id=parent,
                      tracking_uri=uri, sessions=())
    _end_parent(uri, rec, status, counts)
    run = client.get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.metrics["sweep/dropped"] == 3.0


def test_sweep_main_exits_1_with_a_line_when_mlflow_dropped_operations(monkeypatch, capsys):
    """A sweep with operations dropped exited 0 (only the writer's stderr lines said so)."""
    from meta_study.tune.runner import SweepSpec, grid

    spec = SweepSpec(name="s46_dr", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])})
    monkeypatch.setattr(runner, "parse_options", lambda spec, argv: SweepOptions())
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: _result(dropped=4))
    monkeypatch.setattr(runner, "browse_line", lambda *a: "browse: -")
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(spec, [])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "s46_dr: MLflow refused 4 operation(s) of this sweep for good" in err, err
    assert "send what was spooled" not in err, err


class _Refusing:
    def __getattr__(self, name):
        def refuse(*a, **k):
            raise RuntimeError("INVALID_STATE: refused\n  details: line two\nline three")
        return refuse


def test_the_parent_runs_warnings_are_one_line_each(monkeypatch, capsys):
    """A multi-line MLflow error in the end-of-sweep and session warnings printed every line of it."""
    import meta_study.mlflow_client as mc
    from meta_study.tune import tracking
    from meta_study.tune.state import SweepRecord

    monkeypatch.setattr(mc, "mlflow_client", lambda *a, **k: _Refusing())
    monkeypatch.setattr(tracking, "log_sweep_summary", lambda *a, **k: _Refusing().x())
    rec = SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id="p1", tracking_uri="sqlite:///x",
                      sessions=())
    runner._end_parent("sqlite:///x", rec, "FINISHED", {"trials": 1})
    p = SimpleNamespace(record=rec, state=SimpleNamespace(write_record=lambda r: r), tracking="sqlite:///x",
                        code="c", code_changed=False, resume=True)
    runner._record_session(None, p, SimpleNamespace(researcher="r"), {}, {"git_sha": "g"})
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 3, err
    assert all(ln.startswith("warning:") and ln.endswith("RuntimeError: line three") for ln in err), err


def test_the_callback_adds_up_the_dropped_count_of_every_writer_it_flushes(monkeypatch):
    """The runner reads the callback's `dropped`: the callback makes a new writer after each flush,
    so it must add up each writer's count (it had none: a sweep with every trial run refused ended
    FINISHED, exit 0)."""
    from meta_study.tune import tracking as T

    class _W:
        def __init__(self, dropped):
            self.dropped, self.errors, self.cpu_s, self.unanswered, self.held, self.died = dropped, 0, 0.0, False, 0, 0

        def flush(self, *a, **k):
            return True

        def close(self, *a, **k):
            return True

    cb = T.MlflowSweepCallback.__new__(T.MlflowSweepCallback)
    cb._init_runtime()
    cb.lost = False
    for n in (2, 3):
        cb._writer = _W(n)
        assert cb.flush() is True
    assert cb.dropped == 5
