"""Defects found in a review of cluster/local-up.sh, local-down.sh and local-add-node.sh, each with
the test that failed before its fix. No Ray or MLflow starts: their CLIs are faked by an interpreter
whose `ray start` and `mlflow server` are sleeping Pythons carrying the real arguments."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

CLUSTER = REPO / "cluster"

FAKE_UP_PYTHON = """#!/bin/bash
case "$1 $2 $3" in
  "-c import ray, mlflow"*|"-c import sys, ray._private"*) exit 0 ;;
  "-c import grpc"*) exit 1 ;;
  "-m ray.scripts.scripts status") printf 'Node status\\nResources\\n 1.0 CPU\\n'; exit 0 ;;
  "-m ray.scripts.scripts start"|"-m mlflow server") exec {python} -c 'import time; time.sleep(300)' "$@" ;;
esac
if [ "$1" = - ] && [[ "$2" == http://* ]]; then cat > /dev/null; exit 0; fi
exec {python} "$@"
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_", "MLFLOW_"))}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def _script(name, *args, timeout=180, **env):
    return subprocess.run(["bash", str(CLUSTER / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env))


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    r = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return r.returncode == 0 and not r.stdout.strip().startswith("Z")


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def fake_python(tmp_path):
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE_UP_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    return fake


def _up(fake, state: Path) -> list[int]:
    r = _script("local-up.sh", state, PYTHON=str(fake))
    assert r.returncode == 0, r.stderr
    return [int((state / f"{s}.pid").read_text()) for s in ("ray", "mlflow")]


def _states(kind: str, tmp_path: Path) -> tuple[Path, Path]:
    """Two sibling state directories: short ones (Ray's temp dir inside, `STATE/ray`) or deep ones
    (Ray's temp dir a stand-in under /tmp that `STATE/ray` links to)."""
    if kind == "short":
        root = Path(tempfile.mkdtemp(prefix="s50c", dir="/tmp"))
    else:
        root = tmp_path / ("deep-" + "d" * 40)
        root.mkdir()
    return root / "a", root / "b"


def _cleanup(root: Path, pids) -> None:
    _kill(pids)
    for d in root.iterdir():
        if (d / "ray").is_symlink():
            shutil.rmtree(os.path.realpath(d / "ray"), ignore_errors=True)
    if str(root).startswith("/tmp/s50c"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow(20)
@pytest.mark.parametrize("kind", ["short", "deep"])
def test_local_down_stops_the_services_of_a_state_directory_moved_while_they_ran(fake_python, tmp_path, kind):
    """A state directory renamed (or moved) while its services ran: their command lines name the old
    paths, so local-down.sh took them for reused PIDs ("stale pid file (pid N is another process
    now)"), deleted the PID files, and left Ray and MLflow running for good, holding their ports."""
    a, b = _states(kind, tmp_path)
    pids = []
    try:
        pids = _up(fake_python, a)
        a.rename(b)
        r = _script("local-down.sh", b)
        assert r.returncode == 0, r.stderr
        assert "stale pid file" not in r.stderr, r.stderr
        assert f"mlflow: started in {a.resolve()} (this directory was moved since)" in r.stderr, r.stderr
        assert not any(_running(p) for p in pids), r.stderr
        assert not (b / "ray.pid").exists() and not (b / "mlflow.pid").exists()
    finally:
        _cleanup(a.parent, pids)


@pytest.mark.slow(30)
def test_local_up_in_a_moved_state_directory_starts_its_services_again_there(fake_python, tmp_path):
    """local-up.sh in a directory moved while its services ran said "a half-running setup" (Ray's
    stand-in link still matched, MLflow's paths did not) and sent the user to local-down.sh, which
    then left them running. Now it stops them and starts new ones naming the new paths;
    local-add-node.sh asks for that instead of saying the head is not running."""
    a, b = _states("deep", tmp_path)
    pids, new = [], []
    try:
        pids = _up(fake_python, a)
        a.rename(b)
        r = _script("local-add-node.sh", b, PYTHON=str(fake_python))
        assert r.returncode == 1 and r.stderr == (
            f"local-add-node: error: {b.resolve()} was {a.resolve()} when its head was started; start it "
            f"again here first: cluster/local-up.sh {b.resolve()}\n"), r.stderr
        new = _up(fake_python, b)
        assert not any(_running(p) for p in pids)
        assert all(_running(p) for p in new)
        assert (b / "started_in").read_text().splitlines()[0] == str(b.resolve())
        assert _script("local-down.sh", b).returncode == 0
        assert not any(_running(p) for p in new)
    finally:
        _cleanup(a.parent, pids + new)


@pytest.mark.slow(20)
@pytest.mark.parametrize("kind", ["short", "deep"])
def test_local_down_of_a_copy_leaves_the_originals_services_running(fake_python, tmp_path, kind):
    """A copy (`cp -a`) of a running state directory records the same PIDs (and a deep one's link
    names the same Ray temp dir): it must not stop the services of the directory it was copied
    from, and says which directory to stop instead."""
    a, b = _states(kind, tmp_path)
    pids = []
    try:
        pids = _up(fake_python, a)
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


FAKE_MLFLOW = "import time; time.sleep(300)"


def test_local_down_leaves_a_process_whose_path_only_ends_in_the_states(tmp_path):
    """A PID file whose PID is now another state directory's MLflow, where that directory's path ends
    in this one's (`/srv/x/ms` and `/x/ms`): its command line contained `/x/ms/mlflow/` as a
    substring, and local-down.sh stopped it (and its whole session) as its own."""
    mine = tmp_path / "ms"
    mine.mkdir()
    (mine / "ray-auth-token").write_text("t")
    other = tmp_path / "srv" / str(mine).lstrip("/")
    (other / "mlflow").mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", FAKE_MLFLOW, "--backend-store-uri",
                                 f"sqlite:///{other}/mlflow/mlflow.db"], start_new_session=True)
    try:
        (mine / "mlflow.pid").write_text(f"{stranger.pid}\n")
        r = _script("local-down.sh", mine)
        assert r.returncode == 0, r.stderr
        assert f"mlflow: stale pid file (pid {stranger.pid} is another process now)" in r.stderr, r.stderr
        assert stranger.poll() is None and _running(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_local_down_still_stops_its_own_mlflow_by_its_database(tmp_path):
    """The whole-path match still knows local-up's MLflow (its database and artifacts under
    STATE/mlflow) for ours."""
    state = tmp_path / "ms"
    (state / "mlflow").mkdir(parents=True)
    leader = subprocess.Popen([sys.executable, "-c", FAKE_MLFLOW, "--backend-store-uri",
                               f"sqlite:///{state}/mlflow/mlflow.db"], start_new_session=True)
    try:
        (state / "mlflow.pid").write_text(f"{leader.pid}\n")
        r = _script("local-down.sh", state)
        assert r.returncode == 0 and f"mlflow: stopping (pid {leader.pid})" in r.stderr, r.stderr
        leader.wait(timeout=60)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


@pytest.mark.parametrize("script", ["local-up.sh", "local-add-node.sh", "local-down.sh"])
def test_a_lock_wait_that_is_not_a_number_of_seconds_is_said_as_such(tmp_path, script):
    """META_STUDY_LOCK_WAIT (undocumented) of "2m": flock refused it, and the script said "another
    local-up, local-add-node or local-down holds STATE/.lock (waited 2m s)" with nobody holding it."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "ray-auth-token").write_text("t")
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\n")
    name = script.removesuffix(".sh")
    r = _script(script, state, META_STUDY_LOCK_WAIT="2m", PYTHON="false")
    assert r.returncode == 1 and r.stderr == (
        f"{name}: error: META_STUDY_LOCK_WAIT=2m: not a whole number of seconds\n"), r.stderr


def test_the_lock_wait_is_documented_where_the_scripts_settings_are():
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert "| `META_STUDY_LOCK_WAIT` | 300 |" in doc
    for script in ("local-up.sh", "local-add-node.sh", "local-down.sh"):
        r = _script(script, "--help")
        assert r.returncode == 0 and "META_STUDY_LOCK_WAIT" in r.stdout, (script, r.stdout)


@pytest.mark.slow(30)
def test_local_up_in_a_copy_of_a_deep_state_gets_a_ray_temp_dir_of_its_own(fake_python, tmp_path):
    """A deep state's copy (`cp -a`) kept the link to the original's Ray temp dir under /tmp: its
    local-up took the original's running head for its own ("a half-running setup"), and once
    started, both clusters shared one temp dir (its session_latest, the paths local-down.sh knows
    processes by). Now the copy starts its own services in a temp dir of its own."""
    a, b = _states("deep", tmp_path)
    pids, new = [], []
    try:
        pids = _up(fake_python, a)
        shutil.copytree(a, b, symlinks=True)
        new = _up(fake_python, b)
        assert os.path.realpath(b / "ray") != os.path.realpath(a / "ray")
        assert all(_running(p) for p in pids + new) and not set(pids) & set(new)
        assert _script("local-down.sh", b).returncode == 0
        assert all(_running(p) for p in pids) and not any(_running(p) for p in new)
    finally:
        _cleanup(a.parent, pids + new)


# The head's interpreter with Ray's CLI faked for local-add-node.sh: a head that lists one node, and
# a node that never joins.
FAKE_HEAD_PYTHON = """#!/bin/bash
case "$1 $2 $3" in
  "-c import ray "*) exit 0 ;;
  "-m ray.scripts.scripts status") printf 'Active:\\n 1 node_abc\\nPending:\\n (no pending nodes)\\n'; exit 0 ;;
  "-m ray.scripts.scripts start") exec sleep 300 ;;
esac
exec {python} "$@"
"""

# A node's `ray start --block` that was SIGKILLed: gone, while a process of its session (its raylet)
# lives on, naming the node's --temp-dir. Prints the leader's PID and the survivor's.
ORPHAN_LEADER = """
import os, subprocess, sys
os.setsid()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "--temp-dir=" + sys.argv[1]],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(os.getpid(), child.pid, flush=True)
"""


def test_local_add_node_stops_what_a_dead_node_of_its_name_left_before_starting_it_again(tmp_path):
    """A node whose `ray start --block` was killed left its raylet running; `local-add-node.sh` of
    the same name overwrote NAME.pid, so local-down.sh never knew the raylet again and it ran for
    good. (local-up.sh has stopped such leftovers of the head since; a node's were not.)"""
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    (state / "bin").mkdir()
    fake = state / "bin" / "python"
    fake.write_text(FAKE_HEAD_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\nexport RAY_AUTH_MODE=token\n"
                                  "export RAY_AUTH_TOKEN_PATH=/dev/null\n")
    ray_tmp = os.path.realpath(state / "ray")
    head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", f"--temp-dir={ray_tmp}"])
    out = subprocess.run([sys.executable, "-c", ORPHAN_LEADER, ray_tmp], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    dead, raylet = map(int, out.split())
    try:
        (state / "ray.pid").write_text(f"{head.pid}\n")
        (state / "node2.pid").write_text(f"{dead}\n")
        r = _script("local-add-node.sh", state, "node2", META_STUDY_UP_TIMEOUT="1")
        assert "local-add-node: stopping what is left of an earlier start of node2" in r.stderr, r.stderr
        assert f"ray node node2: terminating leftover processes: {raylet}" in r.stderr, r.stderr
        assert not _running(raylet), r.stderr
        assert _running(head.pid) and (state / "env.sh").exists(), r.stderr   # the rest of the cluster runs on
    finally:
        _kill([raylet])
        head.kill()
        head.wait()
        if (state / "node2.pid").exists():
            try:
                os.killpg(int((state / "node2.pid").read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


@pytest.mark.slow(15)
def test_local_down_stops_a_head_whose_temp_dir_under_tmp_was_deleted(fake_python, tmp_path):
    """A deep state's Ray temp dir is a stand-in under /tmp; deleted under a running head (a /tmp
    cleaner), `STATE/ray` named no directory, the head's `--temp-dir=` was taken for another
    process's ("stale pid file"), and it ran on for good."""
    a, _ = _states("deep", tmp_path)
    pids = []
    try:
        pids = _up(fake_python, a)
        stand_in = os.path.realpath(a / "ray")
        shutil.rmtree(stand_in)
        r = _script("local-down.sh", a)
        assert r.returncode == 0 and "stale pid file" not in r.stderr, r.stderr
        assert f"ray: started with Ray's temp dir {stand_in}, which {a.resolve()}/ray no longer names" in r.stderr
        assert not any(_running(p) for p in pids), r.stderr
    finally:
        _cleanup(a.parent, pids)
