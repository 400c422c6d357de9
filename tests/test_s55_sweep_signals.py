"""A sweep's driver stopped by SIGTERM (``ray job stop``, ``scancel``, a service's stop) while it
waits in ``ray.wait`` ends as docs/sweeps.md promises: one line ``NAME: terminated (SIGTERM); ...``,
exit 143, its open runs and its parent ended KILLED (tagged interrupted, ``--resume`` goes on).

``ray.init`` installs a SIGTERM handler (``sys.exit(15)``); the runner took ``SystemExit(15)`` for
the SIGTERM. Met inside ``ray.wait`` (Tune's loop waits there for its trials' results, the
end-of-sweep evaluations for their tasks), Ray's check of signals turns the handler's exception
into ``SystemExit(1)``, whose exit then aborted the driver (SIGABRT: -6, a shell's 134) with no
line, its runs "interrupted (SystemExit)". Measured on Ray 2.60 before the fix: 4 of 4 runs so."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from test_sweeps import _both_past_checkpoint, child_runs, summary, sweep  # noqa: F401 - helpers only


def _main_thread_waits(pid: int) -> bool:
    """Whether the driver's main thread sleeps in the kernel (state S: ``ray.wait`` blocks there with
    the GIL released, Tune's loop most of the time while its trials train), not running Python: a
    signal sent then most likely meets it inside the wait, as in production."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


@pytest.mark.slow(120)
def test_a_sigterm_while_tune_waits_for_its_trials_ends_143_with_its_line_and_runs_killed(mlflow_server, tmp_path):
    exp = f"term-{uuid.uuid4().hex[:6]}"
    storage = tmp_path / "ray"
    p = sweep("head_wd", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--storage-path", str(storage),
              "--set", "epochs=30", cwd=tmp_path, background=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:   # both trials training, Tune's loop waiting
        if _both_past_checkpoint(storage / "head_wd-smoke", 2) and _main_thread_waits(p.pid):
            break
        time.sleep(0.2)
    assert p.poll() is None, "the sweep ended before it could be signalled: " + p.stdout.read()[-3000:]
    os.kill(p.pid, signal.SIGTERM)              # the driver only, as `ray job stop` signals it
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, out[-4000:])
    lines = [ln for ln in out.splitlines() if ln.startswith("head_wd: terminated (SIGTERM)")]
    assert len(lines) == 1 and "--resume" in lines[0], out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    runs = child_runs(mlflow_server.uri, exp)
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.status, r.data.tags) for r in runs]
    for r in runs:
        assert r.data.tags["meta_study.status"] == "interrupted"
        assert "(SIGTERM)" in r.data.tags["meta_study.reason"], r.data.tags["meta_study.reason"]
    client = MlflowClient(mlflow_server.uri)
    [parent] = [r for r in client.search_runs([client.get_experiment_by_name(exp).experiment_id])
                if r.data.tags.get("meta_study.role") == "sweep"]
    assert parent.info.status == "KILLED", parent.info.status


def test_a_noted_sigterm_makes_the_systemexit_that_follows_a_sigterm_and_the_handler_is_put_back():
    """The handler goes on as the one it found (here the default: ``SystemExit(15)``, as
    ``ray.init``'s), and once it ran any SystemExit (Ray's ``SystemExit(1)``) is the SIGTERM's; on
    leaving, the handler and the record are as before. A real signal to this process."""
    from meta_study.tune import runner

    before = signal.getsignal(signal.SIGTERM)
    with runner._sigterm_noted():
        assert runner._stop_signal_of(SystemExit(1)) == "SystemExit"     # none taken yet: an exit
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):        # the handler runs between bytecodes of the main thread
                time.sleep(0.01)
        assert e.value.code == signal.SIGTERM
        assert runner._stop_signal_of(SystemExit(1)) == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert runner._stop_signal_of(SystemExit(1)) == "SystemExit"


def test_a_noted_sigterm_calls_the_handler_it_found():
    from meta_study.tune import runner

    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with runner._sigterm_noted():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                if seen:
                    break
                time.sleep(0.01)
            assert seen == [signal.SIGTERM] and runner._term_taken() == signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
