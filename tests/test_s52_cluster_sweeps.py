"""Session 52: cluster/local-add-node.sh run from inside the cluster (a Ray task or job) adds its
node (only local-down.sh, which would stop its own caller, refuses there), and the sweeps say at
run time how each trial size shares a GPU and what host memory it reserves (one function of
meta_study/tune/sizing.py, whatever the sweep), and whether a size is the table's or estimated
from the model's parameter count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from test_cluster import run_script


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    r = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return r.returncode == 0 and not r.stdout.strip().startswith("Z")


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# A Ray task that runs local-add-node.sh on the cluster it runs in, and reports its exit status and stderr.
TASK_ADDS_A_NODE = textwrap.dedent("""
    import os, subprocess, sys, ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote
    def add(script, state):
        env = dict(os.environ, META_STUDY_NODE_ARGS="--num-cpus=2 --resources='{\\"node2\\": 2}'",
                   META_STUDY_UP_TIMEOUT="200")
        r = subprocess.run(["bash", script, state, "node2"], capture_output=True, text=True, timeout=300, env=env)
        return r.returncode, r.stderr

    @ray.remote(num_cpus=2, resources={"node2": 1})
    def threads():   # what a 2-CPU task on the new node gets
        return os.environ.get("OMP_NUM_THREADS")

    rc, err = ray.get(add.remote(sys.argv[1], sys.argv[2]), timeout=360)
    print(rc, *(ray.get(threads.remote(), timeout=120) if rc == 0 else ()))
    print(err, end="")
""")


@pytest.mark.slow(120)
def test_local_add_node_run_inside_the_cluster_adds_its_node(tmp_path):
    """A job (or task) that adds a node runs below the head's leader, in its session: local-add-node.sh
    stopping what an earlier start of NAME left (a NAME.pid whose leader died) ran local-down.sh,
    whose inside-the-cluster check looked at every PID file, the head's too, and refused ("this runs
    inside what it would stop (ray.pid's ..."): the node was never added. Only NAME's own PID file
    counts there now; local-down.sh of the whole setup still refuses from inside (test_s51_cluster)."""
    state = tmp_path / "st"
    try:
        up = run_script("local-up.sh", state, META_STUDY_RAY_START_ARGS="--num-cpus=1")
        assert up.returncode == 0, up.stderr[-3000:]
        (state / "node2.pid").write_text(f"{_dead_pid()}\n")   # an earlier node2 whose `ray start` died
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
               **dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                      if line.startswith("export ") and "$" not in line)}
        task = subprocess.run([sys.executable, "-c", TASK_ADDS_A_NODE, str(REPO / "cluster" / "local-add-node.sh"),
                               str(state)], env=env, capture_output=True, text=True, timeout=480)
        assert task.returncode == 0, task.stderr[-3000:]
        rc, said = task.stdout.split("\n", 1)
        assert rc.startswith("0") and "node2 joined (2 nodes)" in said, said
        # Ray's OMP_NUM_THREADS of the task that started it (1) was every one of the node's workers'
        # (Ray sets it only where it is unset): a 2-CPU trial ran PyTorch on one thread
        assert rc == "0 2", rc
        assert "runs inside what it would stop" not in said, said
        node = int((state / "node2.pid").read_text())
        assert _running(node)
        down = run_script("local-down.sh", state, timeout=240)
        assert down.returncode == 0 and "ray node node2: stopping" in down.stderr, down.stderr
        assert not _running(node) and not (state / "node2.pid").exists()
    finally:
        run_script("local-down.sh", state, timeout=240)


def _down_in_a_session_of_its_own(state: Path, leads: str, **env: str) -> subprocess.CompletedProcess:
    """local-down.sh run as the leader of a new session whose PID is STATE/LEADS.pid (a stand-in for
    the head's or a node's `ray start`, writing STATE/LEADS.log), as a Ray worker below it runs it."""
    script = 'echo $$ > "$1/$2.pid"; exec bash "$3" "$1" > "$1/$2.log"'
    return subprocess.run(["setsid", "bash", "-c", script, "sh", str(state), leads,
                           str(REPO / "cluster" / "local-down.sh")],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_stopping_a_nodes_leftovers_is_refused_only_inside_that_node(tmp_path):
    """local-add-node.sh's stop of NAME's leftovers (META_STUDY_DOWN_ONLY_NODE) from inside the head's
    session goes on (it was refused: every PID file counted, the head's too); from inside NAME's own
    leftovers it is refused, and the line names local-add-node.sh, the script to run from outside."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "ray-auth-token").write_text("x")   # a state directory of local-up.sh's
    (state / "node2.pid").write_text(f"{_dead_pid()}\n")
    r = _down_in_a_session_of_its_own(state, "ray", META_STUDY_DOWN_ONLY_NODE="node2")
    assert r.returncode == 0 and "runs inside" not in r.stderr, r.stderr
    assert not (state / "node2.pid").exists() and (state / "ray.pid").exists()

    r = _down_in_a_session_of_its_own(state, "node2", META_STUDY_DOWN_ONLY_NODE="node2")
    assert r.returncode == 2 and r.stderr.rstrip().endswith(
        "(node2.pid's " + (state / "node2.pid").read_text().strip() + " is this script's session or one of its "
        "callers: a Ray task or job, or a shell started from one); run cluster/local-add-node.sh from outside it"), r.stderr
    r = _down_in_a_session_of_its_own(state, "ray")   # the whole setup, from inside the head: refused as before
    assert r.returncode == 2 and r.stderr.rstrip().endswith("run cluster/local-down.sh from outside it"), r.stderr


# -------------------------------------------------------------------------------------------------
# The sweeps' run-time line: how a trial shares a GPU, the host memory it reserves, and its basis
# -------------------------------------------------------------------------------------------------

TINY_HALF_GPU = ("sizing: {model} trials ask 0.5 GPU (2 trials per GPU, which share its memory: Ray does not divide "
                 "it), 1 CPU and 0.25 GiB of host memory (reserved) each; sized by the sizing table ({model}: a 1 "
                 "share, 0.25 GiB)")
SWEEP_LINES = {
    "head_wd": [TINY_HALF_GPU.format(model="vit_tiny_cpu")],
    "head_lr": [TINY_HALF_GPU.format(model="vit_tiny_cpu")],
    "scaling": [TINY_HALF_GPU.format(model=m) for m in ("vit_tiny_cpu", "vit_small_cpu")],
    "zoo": [TINY_HALF_GPU.format(model=m) for m in ("vit_tiny_cpu", "mixer_tiny_cpu")]
           + ["sizing: resnet_tiny_cpu trials ask 0.25 GPU (4 trials per GPU, which share its memory: Ray does not "
              "divide it), 1 CPU and 0.25 GiB of host memory (reserved) each; sized by the sizing table "
              "(resnet_tiny_cpu: a 0.5 share, 0.25 GiB)"],
}


def _sweep(name: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``sweeps/NAME.py --smoke ARGS`` on a Ray of its own (no RAY_ADDRESS), its state under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    return subprocess.run([sys.executable, str(REPO / "sweeps" / f"{name}.py"), "--smoke", "--storage-path",
                           str(tmp_path / "tune"), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow(15)
@pytest.mark.parametrize("sweep", sorted(SWEEP_LINES))
def test_every_sweep_says_how_its_trials_share_a_gpu(sweep, tmp_path):
    """With a fractional --gpus-per-trial nothing said how many trials share a GPU nor what memory
    each reserves (head_wd, head_lr, scaling and zoo alike). Each trial size is now said once, in the
    same words for every sweep (sizing.resources, which all four use), before any trial runs: here
    before the refusal of a machine without a GPU, the smoke path's cheapest real run."""
    r = _sweep(sweep, tmp_path, "--gpus-per-trial", "0.5")
    assert r.returncode == 2 and "no Ray node can hold it" in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if line.startswith("sizing: ")]
    assert sorted(said) == sorted(SWEEP_LINES[sweep]), r.stderr[-3000:]
    assert r.stderr.index(said[-1]) < r.stderr.index("no Ray node can hold it")


@pytest.mark.slow(15)
def test_a_model_outside_the_table_is_said_to_be_estimated_from_its_parameters(tmp_path):
    """ViT-L is not in the sizing table: its size is a 4 GiB process floor plus 8 GiB per 86M
    parameters, and what the sweep says names that estimate and the count, not the table."""
    r = _sweep("head_lr", tmp_path, "--gpus-per-trial", "1", "--set", "model_name=vit_l")
    assert r.returncode == 2 and "no Ray node can hold it" in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if line.startswith("sizing: ")]
    assert len(said) == 1 and said[0].startswith("sizing: vit_l trials ask 1 GPU (a GPU to itself), 1 CPU and "), said
    assert ("; sized by an estimate from its parameter count (vit_l is not in the sizing table): 30" in said[0]
            and "M with a " in said[0] and ", 4 GiB for the process + 8 GiB per 86M parameters, a quarter share per "
            "21.5M (0.25 to 1)" in said[0]), said


def test_the_basis_of_each_kind_of_size(tmp_path):
    """The words beside each size (no Ray, no sweep): the table's entry, the entry grown for a
    larger head, an estimate from the parameter count, and the default for a model not built here."""
    from meta_study.tune import sizing
    from meta_study.tune.runner import SweepOptions, TrialResources

    assert sizing.trial_size({"model_name": "vit_s"}) == sizing.TrialSize(0.5, 6, "the sizing table (vit_s: a 0.5 share, 6 GiB)")
    for i in range(3000):   # an imagefolder of 3,000 classes (empty class folders: listed, never read)
        (tmp_path / "big" / "train" / f"n{i:05d}").mkdir(parents=True)
    grown = sizing.trial_size({"model_name": "vit_b", "img_size": 32, "us_task": "big"},
                              {"big": f"imagefolder:{tmp_path / 'big'}"})
    assert grown.memory_gb > 12 and grown.basis.startswith(
        "the sizing table (vit_b: a 1 share, 12 GiB), grown for a 3,000-class head's 2.1M more parameters than at "
        "240 classes, at 8 GiB per 86M"), grown
    vit_l = sizing.trial_size({"model_name": "vit_l", "img_size": 32})
    params = sizing.param_count({"model_name": "vit_l", "img_size": 32}, 240)
    assert (vit_l.share, vit_l.memory_gb) == sizing.size_from_params(params) == (1.0, 32.5)
    assert vit_l.basis.startswith(f"an estimate from its parameter count (vit_l is not in the sizing table): "
                                  f"{params / 1e6:.1f}M with a 240-class head, 4 GiB for the process"), vit_l
    unknown = sizing.trial_size({"model_name": "no_such_model"})
    assert (unknown.share, unknown.memory_gb) == sizing.UNKNOWN_SIZE and "the default for an unknown size" in unknown.basis
    assert "sizing table (" not in unknown.basis and "sizing table (" not in vit_l.basis
    assert sizing.sharing_line("m", TrialResources(cpu=2, gpu=0.3, memory_gb=4), "b") == (
        "sizing: m trials ask 0.3 GPU (3 trials per GPU, which share its memory: Ray does not divide it), 2 CPUs "
        "and 4 GiB of host memory (reserved) each; sized by b")
    assert sizing.sharing_line("m", sizing.request(1.0, 12, SweepOptions(gpus_per_trial=2.0)), "b").startswith(
        "sizing: m trials ask 2 GPUs (GPUs of its own), 1 CPU and 12 GiB")


def test_the_documented_sizing_lines_are_what_the_sweeps_say():
    """docs/sweeps.md quotes the line for a tabled ViT-S at half a GPU and an estimated ViT-L."""
    from meta_study.tune import sizing
    from meta_study.tune.runner import SweepOptions

    doc = (REPO / "docs" / "sweeps.md").read_text()
    for model, gpus in (("vit_s", 1.0), ("vit_l", 1.0)):
        size = sizing.trial_size({"model_name": model, "img_size": 32})
        line = sizing.sharing_line(model, sizing.request(size.share, size.memory_gb,
                                                         SweepOptions(gpus_per_trial=gpus)), size.basis)
        assert f"\n{line}\n" in doc, line
