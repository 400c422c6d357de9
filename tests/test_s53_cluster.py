"""Session 53: cluster/local-add-node.sh run from inside a Ray task or job leaves out the GPUs Ray
gave its caller (CUDA_VISIBLE_DEVICES) and a job driver's RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES,
while a shell outside the cluster keeps its own CUDA_VISIBLE_DEVICES; and a sweep's sizing lines are
said once per sweep (a second sweep in the same process says them again), not once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from test_cluster import run_script

ADD_NODE = REPO / "cluster" / "local-add-node.sh"


def _exports(up: subprocess.CompletedProcess) -> dict[str, str]:
    """The variables local-up.sh prints (``export NAME=VALUE``)."""
    return dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                if line.startswith("export ") and "$" not in line)


def _node_args(name: str) -> str:
    """META_STUDY_NODE_ARGS of a small node with 2 (pretended) GPUs and a resource naming it."""
    return f"--num-cpus=1 --num-gpus=2 --resources='{{\"{name}\": 1}}'"


# A driver: a task holding one of the head's GPUs adds node2; then tasks on node2, node3 (added by
# a job, below) and node4 (added from this test's shell) say what CUDA_VISIBLE_DEVICES they see.
TASK_ADDS_A_NODE = textwrap.dedent("""
    import os, subprocess, sys, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=0, num_gpus=1)
    def add(script, state, args):
        env = dict(os.environ, META_STUDY_NODE_ARGS=args, META_STUDY_UP_TIMEOUT="200")
        r = subprocess.run(["bash", script, state, "node2"], capture_output=True, text=True, timeout=300, env=env)
        return r.returncode, os.environ.get("CUDA_VISIBLE_DEVICES"), r.stderr

    rc, mine, err = ray.get(add.remote(*sys.argv[1:4]), timeout=360)
    print(rc, mine)
    print(err, end="")
""")

SEEN_ON = textwrap.dedent("""
    import json, os, sys, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=0)
    def seen(gpus):   # what a task of GPUS GPUs sees (0: the node's own environment, Ray sets nothing)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    print(json.dumps({f"{node}/{g}": ray.get(seen.options(num_gpus=g, resources={node: 0.01}).remote(g), timeout=120)
                      for node in sys.argv[1:] for g in (0, 1)}))
""")


def _job(api: str, entrypoint: list[str], env: dict[str, str], runtime_env: dict) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``entrypoint`` to the job API at ``api`` (waits for it; its logs on stdout)."""
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", api,
                           "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint],
                          env=env, capture_output=True, text=True, timeout=420)


@pytest.mark.slow(200)
def test_a_node_added_inside_the_cluster_leaves_out_the_callers_gpus(tmp_path):
    """A node added from a 1-GPU task had that task's CUDA_VISIBLE_DEVICES ("0"): its raylet saw GPU
    0 only, and a task there without GPUs still saw "0". A node added by a job's driver had Ray's
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1 (meant for the job's supervisor): Ray set no
    CUDA_VISIBLE_DEVICES for its GPU tasks, each saw every GPU. Both are left out now; a shell
    outside the cluster that sets CUDA_VISIBLE_DEVICES=1 for a node keeps it (its tasks see "1")."""
    state = tmp_path / "st"
    try:
        up = run_script("local-up.sh", state, META_STUDY_RAY_START_ARGS="--num-cpus=1 --num-gpus=2")
        assert up.returncode == 0, up.stderr[-3000:]
        exports = _exports(up)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **exports}
        env.pop("CUDA_VISIBLE_DEVICES", None)

        task = subprocess.run([sys.executable, "-c", TASK_ADDS_A_NODE, str(ADD_NODE), str(state), _node_args("node2")],
                              env=env, capture_output=True, text=True, timeout=480)
        assert task.returncode == 0, task.stderr[-3000:]
        rc, said = task.stdout.split("\n", 1)
        assert rc == "0 0" and "node2 joined (2 nodes)" in said, task.stdout   # the task itself had Ray's "0"

        # a job's driver (no entrypoint resources: Ray gives its supervisor NOSET=1) adds node3
        assert "RAY_API_SERVER_ADDRESS" in exports, up.stdout
        job = _job(exports["RAY_API_SERVER_ADDRESS"], ["bash", str(ADD_NODE), str(state), "node3"], env,
                   {"env_vars": {"META_STUDY_NODE_ARGS": _node_args("node3"), "META_STUDY_UP_TIMEOUT": "200"}})
        assert job.returncode == 0 and "node3 joined (3 nodes)" in job.stdout, job.stdout[-3000:] + job.stderr[-2000:]

        # from a shell outside the cluster, CUDA_VISIBLE_DEVICES picks the node's GPU
        shell = subprocess.run(["bash", str(ADD_NODE), str(state), "node4"], capture_output=True, text=True,
                               timeout=300, env={**env, "CUDA_VISIBLE_DEVICES": "1", "PYTHON": sys.executable,
                                                 "META_STUDY_NODE_ARGS": "--num-cpus=1 --num-gpus=1 "
                                                                         "--resources='{\"node4\": 1}'"})
        assert shell.returncode == 0 and "node4 joined (4 nodes)" in shell.stderr, shell.stderr[-3000:]

        seen = subprocess.run([sys.executable, "-c", SEEN_ON, "node2", "node3", "node4"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert seen.returncode == 0, seen.stderr[-3000:]
        gpus = json.loads(seen.stdout.strip().splitlines()[-1])
        assert gpus["node2/0"] is None, gpus          # was "0": the adding task's GPU
        assert gpus["node2/1"] in ("0", "1"), gpus    # Ray's pick of the node's two
        assert gpus["node3/1"] in ("0", "1"), gpus    # was None: NOSET=1 inherited, Ray set nothing
        assert gpus["node4/0"] == "1" and gpus["node4/1"] == "1", gpus   # the shell's GPU 1, kept
    finally:
        down = run_script("local-down.sh", state, timeout=240)
        assert down.returncode == 0, down.stderr[-3000:]


# -------------------------------------------------------------------------------------------------
# The sizing line: once per sweep, not once per process nor once per trial
# -------------------------------------------------------------------------------------------------

def test_sizing_lines_are_said_once_per_sweep(capsys):
    """sizing.resources said each line once per process: a second sweep in a notebook, a test or a
    driver of two sweeps did not say its sizes. Now once per sweep (runner.start_sweep, which
    run_sweep calls first), however often its trials ask."""
    from meta_study.tune import runner, sizing

    options = runner.SweepOptions(gpus_per_trial=0.5)
    config = {"model_name": "vit_tiny_cpu"}

    def said() -> list[str]:
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("sizing: ")]

    capsys.readouterr()
    runner.start_sweep()
    for _ in range(3):   # the driver's sizing, then Tune's ask for each trial
        sizing.resources(config, options)
    first = said()
    assert len(first) == 1 and first[0].startswith("sizing: vit_tiny_cpu trials ask 0.5 GPU"), first
    runner.start_sweep()
    for _ in range(3):
        sizing.resources(config, options)
    assert said() == first


TWO_SWEEPS = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import head_wd
    from meta_study.errors import UserError
    from meta_study.tune.runner import parse_options, run_sweep

    for i in (1, 2):
        try:
            run_sweep(head_wd.SPEC, parse_options(head_wd.SPEC, ["--smoke", "--storage-path", f"{sys.argv[2]}/{i}",
                                                                 "--gpus-per-trial", "0.5"]))
        except UserError as e:   # no GPU here: refused after the sizing, before any trial
            print(f"sweep {i}: {e}", file=sys.stderr)
""")


@pytest.mark.slow(40)
def test_two_sweeps_in_one_process_each_say_their_sizes(tmp_path):
    """Two smoke sweeps of head_wd in one process (a Ray of their own, refused on this GPU-less
    machine after sizing their trials): the second said no sizing line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    r = subprocess.run([sys.executable, "-c", TWO_SWEEPS, str(REPO / "sweeps"), str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.splitlines()
    ends = [i for i, line in enumerate(lines) if line.startswith("sweep ")]
    assert len(ends) == 2 and all("no Ray node can hold it" in lines[i] for i in ends), r.stderr[-3000:]
    sizing = [i for i, line in enumerate(lines) if line.startswith("sizing: vit_tiny_cpu trials ask 0.5 GPU")]
    assert len(sizing) == 2 and sizing[0] < ends[0] < sizing[1] < ends[1], r.stderr[-3000:]
