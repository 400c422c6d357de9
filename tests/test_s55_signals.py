"""A Ray command stopped by SIGTERM or SIGHUP ends as README promises: exit 143 (129) and the one
line ``meta-study: terminated by SIGTERM``, its out dir not half-written and no Ray process left.

The CLI's handler raises :class:`~meta_study.errors.Terminated` where the signal meets the main
thread. Met inside ``ray.wait`` (a sensitivity or bootstrap waiting for its tasks), Ray turned it
into a plain ``SystemExit(1)``: the command exited 1 with nothing printed. Met inside ``ray.init``
(the first seconds), Ray's own SIGTERM handler ran instead: exit 15, nothing printed."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, error_lines, make_rows
from test_s40_cli import HUP_DEFAULT
from meta_study.store import Store
from meta_study.validation import validate

#: A plain progress line of an operation part done (``  sensitivity: 7/24 (16 s)``): printed from the
#: loop that waits for Ray's tasks, right before it waits again with tasks pending.
_PART_DONE = re.compile(r"^  (sensitivity|bootstrap): (\d+)/(\d+) \(\d+ s\)$")


def _store(path: Path) -> str:
    """24 groups (one per ds task) of 40 runs: 24 Ray tasks of one worker, one after the other."""
    Store(str(path)).commit(validate(make_rows(40, ds_tasks=tuple(f"t{i:02d}" for i in range(24)))).table)
    return str(path)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)                  # a Ray of its own
    return env


def _descendants(root: int) -> set[tuple[int, str]]:
    """The processes below ``root`` (Ray's GCS, raylet, workers, the watchdog), as (pid, start
    time) so that a pid used again is not taken for one left."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(d))
        started[int(d)] = fields[19]
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add((c, started[c]))
            todo.append(c)
    return out


def _alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    left = set()
    for pid, start in procs:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            left.add((pid, start))
    return left


def _stop_while_waiting(args: list[str], signum: int, cwd: Path) -> tuple[int, str, str, set[tuple[int, str]]]:
    """Run ``meta-study ARGS``, send ``signum`` once stderr shows a progress line of a part done
    (the driver back in ``ray.wait`` with tasks pending), and return its exit code, stdout,
    stderr and the processes it had started."""
    # HUP_DEFAULT: SIGHUP at its default whatever this process inherited (a CI under nohup ignores
    # it, and so did the command: it finished, exit 0, before the SIGHUP case could be checked)
    p = subprocess.Popen([sys.executable, "-c", HUP_DEFAULT, *args], cwd=cwd, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []
    out: list[str] = []

    def read_err() -> None:
        for line in p.stderr:
            err.append(line)
            lines.put(line)
        lines.put(None)

    # both pipes read by threads: a process that outlived the driver with a pipe of its kept would
    # hang a read here, and the test with it, rather than fail it
    readers = [threading.Thread(target=read_err, daemon=True),
               threading.Thread(target=lambda: out.extend(p.stdout), daemon=True)]
    for r in readers:
        r.start()
    try:
        deadline = time.monotonic() + 300       # a generous bound for a loaded machine, not a timing
        while True:
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            assert line is not None, "ended before it was signalled:\n" + "".join(err)[-3000:]
            m = _PART_DONE.match(line.rstrip("\n"))
            if m and 0 < int(m.group(2)) < int(m.group(3)):
                break
        procs = _descendants(p.pid)
        assert procs, "no Ray processes under the driver"
        p.send_signal(signum)
        p.wait(timeout=180)
        for r in readers:
            r.join(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, "".join(out), "".join(err), procs


def _gone(procs: set[tuple[int, str]], within_s: float = 120) -> set[tuple[int, str]]:
    """Those of ``procs`` still alive after up to ``within_s`` seconds (Ray's processes end
    after their driver, the watchdog's sweep among them)."""
    deadline = time.monotonic() + within_s
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _alive(procs)


@pytest.mark.slow(60)     # a Ray of its own (~5 s), signalled ~10 s into its tasks
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_ray_command_signalled_in_ray_wait_exits_128_plus_the_signal(tmp_path, signum):
    """``sensitivity`` on a Ray of its own, signalled while its driver waits for tasks: exit 143
    (129), the one line, no file in its out dir, no Ray process left. (--trials 1000: 24 tasks of
    ~7 s on one worker of 2 busy cores, signalled after ~10 s of them: a machine several times
    faster still signals it mid-way. Bootstrap's wait did not always lose the signal.)"""
    store, out = _store(tmp_path / "store"), tmp_path / "out"
    rc, stdout, stderr, procs = _stop_while_waiting(["sensitivity", store, "--out", str(out), "--workers", "1",
                                                     "--trials", "1000", "--no-figures"], signum, tmp_path)
    sig = signal.Signals(signum).name
    assert rc == 128 + signum, (rc, stdout[-1000:], stderr[-3000:])
    assert error_lines(stderr) == [f"meta-study: terminated by {sig}"], stderr[-3000:]
    assert not (out.exists() and [f for f in out.rglob("*") if f.is_file()]), sorted(out.rglob("*"))
    assert not _gone(procs), "Ray processes left after the driver ended"


_SIGTERM_IN_RAY_INIT = r"""
import os, signal, sys
import ray._private.node as node
from meta_study.cli import main

real = node.Node.__init__

def signalled(self, *a, **kw):
    # Ray starting its head node, inside ray.init: the signal is handled at the next bytecode
    os.kill(os.getpid(), signal.SIGTERM)
    return real(self, *a, **kw)

node.Node.__init__ = signalled
main(sys.argv[1:])
"""


@pytest.mark.slow(30)
def test_a_ray_command_signalled_in_ray_init_exits_143(tmp_path):
    """SIGTERM while ``ray.init`` starts the Ray of its own: Ray's own handler (``sys.exit(15)``)
    ended the command with exit 15 and no line."""
    store, out = _store(tmp_path / "store"), tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _SIGTERM_IN_RAY_INIT, "sensitivity", store, "--out", str(out),
                        "--trials", "2", "--workers", "1", "--no-figures"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, (r.returncode, r.stdout[-1000:], r.stderr[-3000:])
    assert error_lines(r.stderr) == ["meta-study: terminated by SIGTERM"], r.stderr[-3000:]
    assert not out.exists() or not [f for f in out.rglob("*") if f.is_file()]


def test_after_a_signal_any_end_but_a_clean_exit_is_the_signals():
    """What a command that took a signal ends with: a SystemExit(1) Ray made of it, an error of the
    unwinding, are the signal's end; a clean exit (``refit --every`` stopped between rounds, exit 0)
    stays one, and without a signal nothing changes."""
    from meta_study.cli import stop_signal_of
    from meta_study.errors import Terminated

    hup, term = int(signal.SIGHUP), int(signal.SIGTERM)
    assert stop_signal_of(Terminated(hup), []) == hup
    assert stop_signal_of(SystemExit(1), [term]) == term
    assert stop_signal_of(OSError("broken pipe"), [hup]) == hup
    assert stop_signal_of(SystemExit(0), [term]) is None
    assert stop_signal_of(SystemExit(None), [term]) is None
    assert stop_signal_of(SystemExit(1), []) is None
