"""Review of meta_study/tune/runner.py and meta_study/tune/_child.py (session 39): task names that
are not names, a resume that starts a new Tuner, and a writer child whose driver went away."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meta_study.errors import UserError
from meta_study.tune import runner
from meta_study.tune.runner import SweepOptions, SweepSpec, check_fixed_config, grid, parse_options

SPEC = SweepSpec(name="s39_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))


@pytest.mark.parametrize("value", ["['synth_combo', None]", "[['synth_combo']]", "[{}]"])
def test_a_ds_task_that_is_not_a_name_is_refused_in_one_line(value):
    """``None`` in ds_tasks passed the check (every trial then failed: KeyError unknown task
    None); a list or dict in it was a TypeError traceback (unhashable) instead of a UserError."""
    o = parse_options(SPEC, ["--smoke", "--set", f"ds_tasks={value}"])
    with pytest.raises(UserError, match=r"^ds_tasks .*: no such task"):
        check_fixed_config(SPEC, o)


def test_an_unset_us_task_is_still_not_checked_as_a_task():
    check_fixed_config(SPEC, parse_options(SPEC, ["--smoke"]))     # no us_task in the fixed config: fine


class _Stop(RuntimeError):
    """What the patched ``_new_tuner`` raises: the driver "dies" before Tune saves any state."""


@pytest.mark.slow(35)
def test_a_resume_without_tune_state_keeps_the_sweeps_own_flags(tmp_path, monkeypatch):
    """A sweep whose first driver failed before Tune first saved its state (``_new_tuner`` or
    ``fit`` raised at once: a broken define-by-run space) is resumed with a new Tuner. That Tuner
    took ``--max-failures`` and ``--max-concurrent`` from the defaults when the resume left them
    out (2 restarts, no limit), while a resume is said to go on with the sweep's own."""
    import ray

    import meta_study.ray_session as ray_session

    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(ray_session, "start_or_connect", lambda *a, **k: None)    # no Ray: the Tuner is not made
    monkeypatch.setattr(ray, "nodes", lambda: [])
    monkeypatch.setattr(runner, "check_trials_fit", lambda *a, **k: None)
    monkeypatch.setattr(runner.provenance, "code_version", lambda *a, **k: "c1")   # the same code throughout
    seen: list[SweepOptions] = []

    def new_tuner(spec, options, *a, **k):
        seen.append(options)
        raise _Stop("no Tune state")

    monkeypatch.setattr(runner, "_new_tuner", new_tuner)
    o = SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "ray"),
                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", max_failures=0, max_concurrent=1)
    with pytest.raises(_Stop):
        runner.run_sweep(SPEC, o)
    with pytest.raises(_Stop):
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=o.storage_path,
                                            tracking_uri=o.tracking_uri, resume=True))
    assert [(s.resume, s.max_failures, s.max_concurrent) for s in seen] == [(False, 0, 1), (True, 0, 1)]
    with pytest.raises(_Stop):   # a flag the resume gives is its own (the same value: settings compare)
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=o.storage_path,
                                            tracking_uri=o.tracking_uri, resume=True, max_failures=0))
    assert (seen[-1].max_failures, seen[-1].max_concurrent) == (0, 1)


@pytest.mark.slow(20)
def test_a_writer_child_whose_driver_is_gone_reads_its_input_to_the_end(tmp_path):
    """The driver gone before a flush's reply (its end of the reply pipe closed): a BrokenPipeError
    traceback, exit 1, and the operation lines still in stdin were never read (lost, unspooled)."""
    args = {"tracking_uri": "http://127.0.0.1:1", "experiment_id": "1", "parent_run_id": "p",
            "state_dir": str(tmp_path / "exp"), "flush_timeout_s": 1.0}

    def op(step: int) -> str:
        return json.dumps({"kind": "metrics", "trial": "t1", "payload": {"metrics": {"a": 1.0}, "step": step,
                                                                          "time": 1}}) + "\n"

    p = subprocess.Popen([sys.executable, "-m", "meta_study.tune.writer", json.dumps(args)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        p.stdout.close()                       # nobody reads the reply
        p.stdout = None
        err = p.communicate(json.dumps({"creds": None}) + "\n" + op(1) + json.dumps({"flush": 1.0}) + "\n" + op(2),
                            timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
    spool = tmp_path / "exp" / "meta_study" / "spool"
    steps = sorted(m[3] for f in spool.iterdir() for x in f.read_text().splitlines()
                   for m in json.loads(x)["payload"]["metrics"])    # [key, value, time, step]
    assert steps == [1, 2], steps


@pytest.mark.slow(35)
def test_a_hung_up_writer_child_spools_what_it_holds(tmp_path):
    """A terminal or SSH session that closes sends SIGHUP to the sweep's process group: it killed
    the writer child with its queue (exit -1, nothing spooled) against a server that failed, as
    SIGTERM once did. It now sends for a short while, spools the rest and exits 0."""
    import signal
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    called = threading.Event()

    def refuse() -> None:     # a server that drops every call: the operation stays in the writer's retries
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            called.set()
            conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    args = {"tracking_uri": f"http://127.0.0.1:{srv.getsockname()[1]}", "experiment_id": "1", "parent_run_id": "p",
            "state_dir": str(tmp_path / "exp"), "flush_timeout_s": 600.0}
    op = {"kind": "metrics", "trial": "t1", "payload": {"metrics": {"a": 1.0}, "step": 1, "time": 1}}
    # SIGHUP at its default in the child, as in a terminal: a test run under nohup (CI started with
    # it) hands SIG_IGN down, and the child then keeps it ignored, as it should (it never exited)
    launch = ("import runpy, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
              "sys.argv = ['writer', sys.argv[1]]; runpy.run_module('meta_study.tune.writer', run_name='__main__')")
    p = subprocess.Popen([sys.executable, "-c", launch, json.dumps(args)], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdin is not None
        p.stdin.write(json.dumps({"creds": None}) + "\n" + json.dumps(op) + "\n")
        p.stdin.flush()
        assert called.wait(120), "the writer never tried to send the operation"
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        srv.close()
    assert p.returncode == 0 and "Traceback" not in err, (p.returncode, err[-3000:])
    spool = tmp_path / "exp" / "meta_study" / "spool"
    lines = [json.loads(x) for f in sorted(spool.iterdir()) for x in f.read_text().splitlines()]
    assert [(x["trial"], x["payload"]["metrics"]) for x in lines] == [("t1", [["a", 1.0, 1, 1]])], lines


@pytest.mark.parametrize("address", ["", "127.0.0.1:1"])
def test_a_ray_address_that_cannot_be_used_is_refused_before_anything_is_written(tmp_path, monkeypatch, address):
    """``--address ''`` (an unset variable) and a cluster that does not answer were refused only
    when Ray started: after the sweep's default sqlite file had been made beside the storage."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match=r"^--address "):
        runner.run_sweep(SPEC, SweepOptions(smoke=True, quiet=True, storage_path=str(tmp_path / "out" / "ray"),
                                            address=address))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
