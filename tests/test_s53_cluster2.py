"""Session 53: cluster/local-add-node.sh run from a Ray task on a worker node (not the head) leaves
out what Ray set for that task's worker, as from the head: the "inside the cluster" check looked
for the head's leader among the caller's ancestors only, so a task on node2 that added node3 gave
node3's `ray start` (its raylet, and every worker there) the task's OMP_NUM_THREADS=1, Ray's
internal RAY_JOB_ID and RAY_RAYLET_PID, PYTHONBREAKPOINT and SPT_NOENV. A caller a task left running (init's child, in its
node's session) is told too. A value set in the shell that started a node (outside the cluster)
is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from test_cluster import run_script

ADD_NODE = REPO / "cluster" / "local-add-node.sh"

#: what Ray 2.60 sets in a task's worker (os.environ; probed on node2: none of these is in its
#: raylet's environment), each passed on to node3 before
RAY_PER_WORKER = ("OMP_NUM_THREADS", "RAY_JOB_ID", "RAY_RAYLET_PID", "PYTHONBREAKPOINT", "SPT_NOENV")

# A task pinned to node2 (its resource) adds node3; it reports its exit status, what Ray set for
# it (the variables above) and the script's stderr.
TASK_ON_NODE2_ADDS_NODE3 = textwrap.dedent("""
    import json, os, subprocess, sys, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=1, resources={"node2": 1})
    def add(script, state, names):
        env = dict(os.environ, META_STUDY_NODE_ARGS="--num-cpus=1 --resources='{\\"node3\\": 1}'",
                   META_STUDY_UP_TIMEOUT="200")
        r = subprocess.run(["bash", script, state, "node3"], capture_output=True, text=True, timeout=300, env=env)
        return r.returncode, {v: os.environ.get(v) for v in names}, r.stderr

    rc, mine, err = ray.get(add.remote(sys.argv[1], sys.argv[2], sys.argv[3:]), timeout=360)
    print(rc, json.dumps(mine))
    print(err, end="")
""")

# A task pinned to node3 leaves local-add-node.sh running on its own (init's child now, in node3's
# session: no raylet among its ancestors) to add node4; the driver waits for its last line (the
# job's end would stop it).
TASK_ON_NODE3_LEAVES_NODE4 = textwrap.dedent("""
    import os, subprocess, sys, time, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=1, resources={"node3": 1})
    def leave(script, state, out):
        env = dict(os.environ, META_STUDY_NODE_ARGS="--num-cpus=1 --resources='{\\"node4\\": 1}'",
                   META_STUDY_UP_TIMEOUT="200")
        subprocess.run(["bash", "-c", '(bash "$0" "$1" node4 > "$2.part" 2>&1; mv "$2.part" "$2") &', script, state, out],
                       env=env, check=True)
        return os.getpid()

    ray.get(leave.remote(*sys.argv[1:4]), timeout=120)
    for _ in range(300):   # seconds
        if os.path.exists(sys.argv[3]):
            break
        time.sleep(1)
    print(open(sys.argv[3]).read(), end="")
""")


def _raylet_env(state: Path, name: str) -> dict[str, str]:
    """The environment node NAME's raylet was started with: the raylet in the session its
    `ray start` leads (STATE/NAME.pid), read from /proc/PID/environ."""
    leader = (state / f"{name}.pid").read_text().strip()
    ps = subprocess.run(["ps", "-e", "-o", "pid=", "-o", "sid=", "-o", "comm="], capture_output=True, text=True,
                        check=True).stdout
    pids = [pid for pid, sid, comm in (line.split(None, 2) for line in ps.splitlines())
            if sid == leader and comm.strip() == "raylet"]
    assert len(pids) == 1, ps
    raw = Path(f"/proc/{pids[0]}/environ").read_bytes()
    return dict(e.decode().split("=", 1) for e in raw.split(b"\0") if b"=" in e)


@pytest.mark.slow(150)
def test_a_node_added_from_a_task_on_a_worker_node_leaves_out_rays_per_worker_variables(tmp_path):
    """node2 (added from this test's shell, with a PYTHONBREAKPOINT and a variable of the user's)
    keeps both; node3, added from a task on node2, keeps the user's variable (node2's, the task's
    too) and leaves out every variable Ray set for that task (it had OMP_NUM_THREADS=1, RAY_JOB_ID,
    RAY_RAYLET_PID, Ray's PYTHONBREAKPOINT and SPT_NOENV: the head's leader is no ancestor there);
    so does node4, added by a script a task on node3 left running (no raylet among its ancestors)."""
    state = tmp_path / "st"
    try:
        up = run_script("local-up.sh", state, META_STUDY_RAY_START_ARGS="--num-cpus=1")
        assert up.returncode == 0, up.stderr[-3000:]
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                       if line.startswith("export ") and "$" not in line)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in RAY_PER_WORKER},
               **exports}

        # from a shell outside the cluster: nothing is left out, a PYTHONBREAKPOINT of the user's too
        shell = subprocess.run(["bash", str(ADD_NODE), str(state), "node2"], capture_output=True, text=True,
                               timeout=300, env={**env, "PYTHON": sys.executable, "PYTHONBREAKPOINT": "0",
                                                 "META_STUDY_S53_MARK": "the user's",
                                                 "META_STUDY_NODE_ARGS": "--num-cpus=1 --resources='{\"node2\": 1}'"})
        assert shell.returncode == 0 and "node2 joined (2 nodes)" in shell.stderr, shell.stderr[-3000:]
        node2 = _raylet_env(state, "node2")
        assert node2.get("PYTHONBREAKPOINT") == "0" and node2.get("META_STUDY_S53_MARK") == "the user's", node2
        assert not {"OMP_NUM_THREADS", "RAY_JOB_ID", "RAY_RAYLET_PID"} & node2.keys(), node2

        task = subprocess.run([sys.executable, "-c", TASK_ON_NODE2_ADDS_NODE3, str(ADD_NODE), str(state),
                               *RAY_PER_WORKER], env=env, capture_output=True, text=True, timeout=480)
        assert task.returncode == 0, task.stderr[-3000:]
        said, err = task.stdout.split("\n", 1)
        rc, mine = said.split(" ", 1)
        assert rc == "0" and "node3 joined (3 nodes)" in err, task.stdout[-3000:]
        # the task had each of them (Ray's, not its raylet's): a test of what the fix is about
        assert all(v is not None for v in json.loads(mine).values()), mine

        node3 = _raylet_env(state, "node3")
        assert not set(RAY_PER_WORKER) & node3.keys(), {v: node3[v] for v in RAY_PER_WORKER if v in node3}
        assert node3.get("META_STUDY_S53_MARK") == "the user's", node3   # node2's, through its task

        # a caller left running by a task (its parent gone): told by its session, node3's
        out = tmp_path / "node4.out"
        left = subprocess.run([sys.executable, "-c", TASK_ON_NODE3_LEAVES_NODE4, str(ADD_NODE), str(state), str(out)],
                              env=env, capture_output=True, text=True, timeout=480)
        assert left.returncode == 0 and "node4 joined (4 nodes)" in left.stdout, left.stdout[-3000:] + left.stderr[-3000:]
        node4 = _raylet_env(state, "node4")
        assert not set(RAY_PER_WORKER) & node4.keys(), {v: node4[v] for v in RAY_PER_WORKER if v in node4}
    finally:
        down = run_script("local-down.sh", state, timeout=240)
        assert down.returncode == 0, down.stderr[-3000:]
