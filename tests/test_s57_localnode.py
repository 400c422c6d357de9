"""A node that cluster/local-add-node.sh adds runs in a Ray temp dir of its own, never the head's.

With the head's ``--temp-dir``, the added node's raylet joined the head's session directory, and its
runtime-env agent unpacked and garbage-collected the same
``runtime_resources/working_dir_files/_ray_pkg_*`` that a job's driver on the head ran in: the
driver's working directory was deleted under it (Tune's ExperimentAnalysis then failed in
``os.getcwd()``: "[Errno 2] No such file or directory"). Real local Ray, real mlflow server
(local-up.sh), all on 127.0.0.1; stopped by cluster/local-down.sh on the test's own state directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO

CLUSTER = REPO / "cluster"
NODE_ARGS = '--num-cpus=1 --resources=\'{"n2": 1}\''


def script_env(**extra: str) -> dict[str, str]:
    """This process's environment for the cluster scripts: the venv's interpreter as PYTHON, and no
    cluster of the caller's (RAY_ADDRESS and the like) leaking in."""
    e = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO), **extra)
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "META_STUDY_LOCAL_DIR",
                "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        e.pop(var, None)
    return e


def run(script: str, state: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / script), str(state), *args], env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def session_of(state: Path, name: str) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes in the session that ``name``.pid leads."""
    sid = (state / f"{name}.pid").read_text().strip()
    ps = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True,
                        check=True).stdout
    out = []
    for line in ps.splitlines():
        pid, s, stat, args = (line.split(None, 3) + [""])[:4]
        if s == sid and not stat.startswith("Z"):
            out.append((int(pid), args))
    return out


def raylet_session_dir(state: Path, name: str) -> str:
    """The session directory of the raylet in ``name``'s session, from its command line (its socket)."""
    for _, args in session_of(state, name):
        m = re.search(r"--raylet_socket_name=(\S+)/sockets/raylet", args)
        if m:
            return os.path.realpath(m.group(1))
    raise AssertionError(f"no raylet in {name}'s session: {session_of(state, name)}")


def processes_naming(*paths: str) -> list[str]:
    ps = subprocess.run(["ps", "-e", "-ww", "-o", "stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines()
            if not line.lstrip().startswith("Z") and any(p in line for p in paths)]


def exports(stdout: str) -> dict[str, str]:
    return {k: v.strip("'\"") for k, v in re.findall(r"^export (\w+)=(\S+)$", stdout, re.M)}


@pytest.fixture
def cluster(tmp_path):
    """A head (1 CPU) and node2 (1 CPU, resource n2) on a state directory of this test's; yields
    (state, the head's env.sh exports). local-down.sh stops both whatever happens; the /tmp
    stand-ins (this path is too long for Ray's sockets) are removed after it."""
    state = tmp_path / "st"
    try:
        up = run("local-up.sh", state, META_STUDY_RAY_START_ARGS="--num-cpus=1")
        assert up.returncode == 0, up.stderr[-3000:]
        add = run("local-add-node.sh", state, "node2", META_STUDY_NODE_ARGS=NODE_ARGS)
        log = state / "node2.log"
        assert add.returncode == 0, add.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
        yield state, exports(up.stdout)
    finally:
        run("local-down.sh", state, timeout=180)
        for link in state.glob("ray*"):
            if link.is_symlink():
                subprocess.run(["rm", "-rf", os.path.realpath(link)], check=False)


def driver(code: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def as_it_was(script: str) -> str:
    """local-add-node.sh as it was before nodes had temp dirs of their own: the node started with the
    head's --temp-dir, and no NAME.temp_dir written."""
    for old, new in (('--temp-dir="$node_tmp"', '--temp-dir="$ray_tmp"'),
                     ('printf \'%s\\n\' "$node_tmp" > "$state/$name.temp_dir"', ':')):
        assert script.count(old) == 1, old
        script = script.replace(old, new)
    return script


SESSION_DIRS = textwrap.dedent("""
    import json, ray
    ray.init(address="auto", log_to_driver=False)

    @ray.remote(num_cpus=0, resources={"n2": 1})
    def on_node2():
        return ray._private.worker.global_worker.node.get_session_dir_path()

    print("RESULT " + json.dumps({"driver": ray._private.worker.global_worker.node.get_session_dir_path(),
                                  "node2": ray.get(on_node2.remote())}))
""")


@pytest.mark.slow(150)
def test_added_node_has_its_own_temp_dir_and_session(cluster, tmp_path):
    state, env_sh = cluster
    head_tmp = os.path.realpath(state / "ray")
    node_tmp = os.path.realpath(state / "ray-node-node2")
    assert node_tmp != head_tmp and os.path.isdir(node_tmp)
    assert (state / "node2.temp_dir").read_text().strip() == node_tmp
    assert oct(os.stat(node_tmp).st_mode & 0o777) == "0o700"     # Ray opens it (0777) at every start
    assert oct(os.stat(head_tmp).st_mode & 0o777) == "0o700"

    # the node's raylet runs in its own temp dir, in a session directory of its own
    head_session, node_session = raylet_session_dir(state, "ray"), raylet_session_dir(state, "node2")
    assert head_session.startswith(head_tmp + "/session_"), head_session
    assert node_session.startswith(node_tmp + "/session_"), node_session
    node_leader = dict(session_of(state, "node2"))[int((state / "node2.pid").read_text())]
    assert f"--temp-dir={node_tmp}" in node_leader and f"--temp-dir={head_tmp}" not in node_leader

    # a task placed on node2 (its custom resource) runs in node2's session, a driver on the head in the head's
    env = {**script_env(), **env_sh}
    r = driver(SESSION_DIRS, env, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    dirs = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert os.path.realpath(dirs["driver"]) == head_session
    assert os.path.realpath(dirs["node2"]) == node_session

    # node2's log is its own raylet's, never the head's
    head_ids = {pid for pid, _ in session_of(state, "ray")}
    node_ids = {pid for pid, _ in session_of(state, "node2")}
    assert head_ids and node_ids and not head_ids & node_ids

    # a node added by local-add-node.sh as it was (with the head's temp dir) is stopped as well
    old_cluster = tmp_path / "old-cluster"
    old_cluster.mkdir()
    (old_cluster / "local-add-node.sh").write_text(as_it_was((CLUSTER / "local-add-node.sh").read_text()))
    (old_cluster / "local-down.sh").write_text((CLUSTER / "local-down.sh").read_text())
    add = subprocess.run(["bash", str(old_cluster / "local-add-node.sh"), str(state), "node3"],
                         env=script_env(META_STUDY_NODE_ARGS="--num-cpus=1"), capture_output=True, text=True,
                         timeout=300)
    assert add.returncode == 0, add.stderr[-3000:]
    legacy_ids = {pid for pid, _ in session_of(state, "node3")}
    assert legacy_ids

    # local-down.sh stops all, leaves nothing naming either temp dir, and keeps both directories
    down = run("local-down.sh", state, timeout=180)
    assert down.returncode == 0, down.stderr
    for service in ("ray node node2", "ray node node3", "ray"):
        assert f"{service}: stopped" in down.stderr, down.stderr
    deadline = time.monotonic() + 20    # init reaps the last workers' zombies
    while processes_naming(head_tmp, node_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_naming(head_tmp, node_tmp) == []
    for pid in head_ids | node_ids | legacy_ids:
        ps = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
        assert ps.returncode != 0 or ps.stdout.strip().startswith("Z"), (pid, ps.stdout)
    assert not (state / "node2.pid").exists() and os.path.isdir(node_tmp) and os.path.isdir(head_tmp)


JOB = textwrap.dedent("""
    import os, sys, time, ray
    ray.init(log_to_driver=False)
    here = os.getcwd()      # the job's working_dir, unpacked by the head's runtime-env agent

    @ray.remote(num_cpus=0, resources={"n2": 1})
    class OnNode2:
        def cwd(self):
            return os.getcwd()

    a = OnNode2.remote()
    print("node2 worker in", ray.get(a.cwd.remote()), flush=True)
    ray.kill(a)             # its worker exits: node2's agent releases (and deletes) its copy
    time.sleep(15)
    try:
        print("driver cwd", os.getcwd(), os.path.isdir(here), flush=True)
    except OSError as e:
        print("driver cwd lost:", e, flush=True)
        sys.exit(3)
    sys.exit(0 if os.path.isdir(here) else 4)
""")


@pytest.mark.slow(150)
def test_a_job_drivers_working_dir_survives_a_task_on_the_added_node(cluster, tmp_path):
    """The reviewer's repro, small: a job with a working_dir whose driver (on the head) runs an actor
    on node2; after node2's worker is gone, the driver's working directory is still there."""
    state, env_sh = cluster
    assert "RAY_API_SERVER_ADDRESS" in env_sh, "local-up.sh started no dashboard (ray[default] missing)"
    wd = tmp_path / "job"
    wd.mkdir()
    (wd / "job.py").write_text(JOB)
    env = {**script_env(), **env_sh}
    r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address",
                        env_sh["RAY_API_SERVER_ADDRESS"], "--working-dir", str(wd), "--", "python", "job.py"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "node2 worker in" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0 and "driver cwd lost" not in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
