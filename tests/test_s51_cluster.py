"""Review s51 of cluster/local-up.sh and local-down.sh: a state directory from before `started_in`
(a setup running through an upgrade) moved or copied, and local-down.sh run inside the setup it
stops. The fast tests fake Ray's and MLflow's CLIs (tests/test_s50_cluster.py's interpreter); one
test starts a real Ray head and MLflow server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from test_cluster import run_script
import test_s50_cluster
from test_s50_cluster import _cleanup, _running, _script, _states, _up

fake_python = test_s50_cluster.fake_python   # the fixture: an interpreter whose `ray start` / `mlflow server` sleep


def _up_before_started_in(fake: Path, state: Path) -> list[int]:
    """A running setup as local-up.sh left it before it wrote STATE/started_in: the leaders' PIDs."""
    pids = _up(fake, state)
    (state / "started_in").unlink()
    return pids


@pytest.mark.slow(20)
@pytest.mark.parametrize("kind", ["short", "deep"])
def test_a_setup_from_before_started_in_moved_while_it_ran_is_stopped(fake_python, tmp_path, kind):
    """Without started_in, a renamed state's services name only the old paths: local-down.sh called
    them "stale pid file (pid N is another process now)", deleted the PID files and left them running
    for good (a deep state's Ray, found through its link, alone was stopped). Their logs are open in
    the moved directory, which says they are its own."""
    a, b = _states(kind, tmp_path)
    pids = []
    try:
        pids = _up_before_started_in(fake_python, a)
        a.rename(b)
        r = _script("local-down.sh", b)
        assert r.returncode == 0 and "stale pid file" not in r.stderr, r.stderr
        assert (f"mlflow: started before this directory was moved here (pid {pids[1]} writes "
                f"{b.resolve()}/mlflow.log)") in r.stderr, r.stderr
        assert not any(_running(p) for p in pids), r.stderr
        assert not (b / "ray.pid").exists() and not (b / "mlflow.pid").exists()
    finally:
        _cleanup(a.parent, pids)


@pytest.mark.slow(20)
@pytest.mark.parametrize("kind", ["short", "deep"])
def test_local_down_of_a_copy_from_before_started_in_leaves_the_originals_services(fake_python, tmp_path, kind):
    """A copy (`cp -a`) of such a running state records the original's PIDs: a deep copy's link names
    the same Ray temp dir, and its local-down.sh stopped the original's Ray as its own (a short
    copy's called them stale)."""
    a, b = _states(kind, tmp_path)
    pids = []
    try:
        pids = _up_before_started_in(fake_python, a)
        shutil.copytree(a, b, symlinks=True)
        r = _script("local-down.sh", b)
        assert r.returncode == 0, r.stderr
        assert all(_running(p) for p in pids), r.stderr
        for name, pid in zip(("ray", "mlflow"), pids):
            assert (f"{name}: pid {pid} is {a.resolve()}'s (this directory is a copy of it): left running; "
                    f"stop it with cluster/local-down.sh {a.resolve()}") in r.stderr, r.stderr
        assert _script("local-down.sh", a).returncode == 0
        assert not any(_running(p) for p in pids)
    finally:
        _cleanup(a.parent, pids)


@pytest.mark.slow(40)
def test_local_up_of_a_setup_from_before_started_in_records_it_moved_and_copied(fake_python, tmp_path):
    """local-up.sh of a running setup without started_in says it runs and now records where it was
    started (a later move is then stopped as any other). Moved, such a setup said "a half-running
    setup" (a deep state's Ray matched through its link, MLflow did not); copied, the copy took the
    original's head for its own and then shared its Ray temp dir. Now the moved one is started again
    in its new place, and the copy starts its own beside the original's, which run on."""
    a, b = _states("deep", tmp_path)
    c = a.parent / "c"
    pids, new, copies = [], [], []
    try:
        pids = _up_before_started_in(fake_python, a)
        r = _script("local-up.sh", a, PYTHON=str(fake_python))
        assert r.returncode == 0 and "already running" in r.stderr, r.stderr
        assert (a / "started_in").read_text().splitlines() == [str(a.resolve()), os.path.realpath(a / "ray")]
        (a / "started_in").unlink()

        shutil.copytree(a, c, symlinks=True)
        copies = _up(fake_python, c)
        assert os.path.realpath(c / "ray") != os.path.realpath(a / "ray")
        assert all(_running(p) for p in pids + copies) and not set(pids) & set(copies)

        a.rename(b)
        r = _script("local-up.sh", b, PYTHON=str(fake_python))
        assert r.returncode == 0, r.stderr
        assert f"{b.resolve()} was moved (or renamed) since its services were started" in r.stderr, r.stderr
        new = [int((b / f"{s}.pid").read_text()) for s in ("ray", "mlflow")]
        assert not any(_running(p) for p in pids) and all(_running(p) for p in new + copies)
        assert _script("local-down.sh", b).returncode == 0 and _script("local-down.sh", c).returncode == 0
        assert not any(_running(p) for p in new + copies)
    finally:
        _cleanup(a.parent, pids + new + copies)


# A Ray task that runs local-down.sh on the cluster it runs in, and reports whether it came back.
TASK_RUNS_LOCAL_DOWN = textwrap.dedent("""
    import os, subprocess, sys, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote
    def down(script, state):
        r = subprocess.run(["bash", script, state], capture_output=True, text=True, timeout=240)
        return r.returncode, r.stderr

    rc, err = ray.get(down.remote(sys.argv[1], sys.argv[2]), timeout=300)
    print(rc)
    print(err, end="")
""")


@pytest.mark.slow(90)
def test_local_down_run_inside_the_cluster_it_stops_signals_nothing(tmp_path):
    """A Ray task's worker is in the head's session and below its leader: local-down.sh run from it
    (a task, or a shell started from one) killed its own session with the head, its caller with it
    ("The task's local raylet died"), and itself half-way: MLflow ran on, ray.pid and env.sh stayed.
    Now it refuses in one line and signals nothing; run from outside, it stops everything, and the
    shell that runs it lives on."""
    state = tmp_path / "st"
    try:
        up = run_script("local-up.sh", state, META_STUDY_RAY_START_ARGS="--num-cpus=1")
        assert up.returncode == 0, up.stderr[-3000:]
        leaders = [int((state / f"{s}.pid").read_text()) for s in ("ray", "mlflow")]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
               **dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                      if line.startswith("export ") and "$" not in line)}
        down = str(REPO / "cluster" / "local-down.sh")
        task = subprocess.run([sys.executable, "-c", TASK_RUNS_LOCAL_DOWN, down, str(state)], env=env,
                              capture_output=True, text=True, timeout=400)
        assert task.returncode == 0, task.stderr[-3000:]
        rc, said = task.stdout.split("\n", 1)
        assert rc == "2" and said.startswith(f"local-down: error: {state.resolve()}: this runs inside what it would stop (ray.pid's ")
        assert said.rstrip().endswith("run cluster/local-down.sh from outside it"), said
        assert all(_running(p) for p in leaders) and (state / "env.sh").exists()

        # from outside, in a shell of its own session that goes on after it
        shell = subprocess.run(
            ["setsid", "bash", "-c", 'bash "$1" "$2" 2> "$3"; echo "rc=$? shell $$ alive"', "sh", down, str(state),
             str(tmp_path / "down.err")],
            env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=240)
        assert shell.stdout.startswith("rc=0 shell ") and shell.stdout.rstrip().endswith(" alive"), \
            shell.stdout + (tmp_path / "down.err").read_text()
        assert not any(_running(p) for p in leaders)
        assert not (state / "ray.pid").exists() and not (state / "mlflow.pid").exists()
    finally:
        run_script("local-down.sh", state, timeout=180)
