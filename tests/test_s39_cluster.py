"""Defects found in a review of cluster/local-up.sh and cluster/local-add-node.sh, each with the
test that failed before its fix. Ray's and MLflow's CLIs are faked (no services start): seconds each."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

from conftest import REPO

# The scripts' interpreter with the CLIs faked. `ray start` and `mlflow server` write their argv
# (NUL-separated) to ARGV_DIR/<ray|mlflow>.argv; a started node opens --temp-dir to every user as
# Ray does (0777), says it joined (`ray status` then lists 2 nodes) and stays up (`sleep`).
FAKE_PYTHON = """#!/bin/bash
argv_dir={argv_dir}
case "$1 $2 $3" in
  "-c import ray"*|"-c import sys, ray._private"*) exit 0 ;;   # Ray, MLflow and the dashboard's deps are there
  "-c import grpc"*) exit 1 ;;
  "-m ray.scripts.scripts status")
    [ "{head_status}" = yes ] || exit 1
    n=1; [ -e "$argv_dir/joined" ] && n=2
    printf 'Active:\\n'; for i in $(seq $n); do printf ' 1 node_%s\\n' $i; done; printf 'Pending:\\n'; exit 0 ;;
  "-m ray.scripts.scripts start")
    shift 3; printf '%s\\0' "$@" > "$argv_dir/ray.argv"
    # a head that fails does so once MLflow was started (its argv written): failing at once raced
    # local-up's start of the fake MLflow under load, which was then stopped before it wrote it
    if [ "{node}" != yes ]; then
      for i in $(seq 600); do [ -e "$argv_dir/mlflow.argv" ] && break; sleep 0.1; done; exit 1
    fi
    for a in "$@"; do case "$a" in --temp-dir=*) chmod 777 "${{a#--temp-dir=}}" ;; esac; done
    touch "$argv_dir/joined"; exec sleep 300 ;;
  "-m mlflow server") shift 3; printf '%s\\0' "$@" > "$argv_dir/mlflow.argv"; exit 1 ;;
esac
exec {python} "$@"
"""


def _fake_python(path, argv_dir, *, node: bool):
    path.write_text(FAKE_PYTHON.format(python=sys.executable, argv_dir=argv_dir, node="yes" if node else "no",
                                       head_status="yes" if node else "no"))
    path.chmod(0o755)
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_", "MLFLOW_"))}
    return {**env, **extra}


def _argv(path):
    return path.read_text().split("\0")[:-1]


def test_local_up_passes_quoted_extra_arguments_as_one_word(tmp_path):
    """META_STUDY_RAY_START_ARGS and META_STUDY_MLFLOW_ARGS were split at spaces only, quotes kept:
    --resources='{"big": 1}' reached `ray start` as three words (its "Got unexpected extra
    argument (1}')"). An unclosed quote is now said at once, before anything starts."""
    fake = _fake_python(tmp_path / "python", tmp_path, node=False)
    state = tmp_path / "st"
    r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True, text=True,
                       timeout=120, env=_env(PYTHON=str(fake), META_STUDY_UP_TIMEOUT="30",
                                             META_STUDY_RAY_START_ARGS="--num-cpus=1 --resources='{\"big\": 1}'",
                                             META_STUDY_MLFLOW_ARGS="--gunicorn-opts '--timeout 60'"))
    assert r.returncode == 1 and "ray exited during startup" in r.stderr, r.stderr   # the fake `ray start` fails
    ray_argv = _argv(tmp_path / "ray.argv")
    assert ray_argv[-2:] == ["--num-cpus=1", '--resources={"big": 1}'], ray_argv
    assert _argv(tmp_path / "mlflow.argv")[-2:] == ["--gunicorn-opts", "--timeout 60"]
    if (state / "ray").is_symlink():   # Ray's short temp dir under /tmp (tmp_path is too deep for sockets)
        shutil.rmtree(os.path.realpath(state / "ray"), ignore_errors=True)

    (tmp_path / "ray.argv").unlink()
    r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True, text=True,
                       timeout=120, env=_env(PYTHON=str(fake), META_STUDY_RAY_START_ARGS="--resources='{"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "local-up: error: META_STUDY_RAY_START_ARGS=--resources='{: a quote is not closed\n"
    assert not (tmp_path / "ray.argv").exists()   # nothing was started


def test_local_add_node_takes_its_documented_arguments_and_closes_the_temp_dir_again(tmp_path):
    """Two defects of local-add-node.sh: its own usage's
    META_STUDY_NODE_ARGS="--num-cpus=2 --resources='{\\"big\\": 1}'" failed (split at spaces, quotes
    kept: "Got unexpected extra argument (1}')"), and the node's `ray start` made Ray's --temp-dir
    world-writable again (0777) after local-up.sh had closed it (0700): measured with a real head
    and node, any user could then write into the cluster's session directories."""
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    (state / "ray").chmod(0o700)   # as local-up.sh leaves it
    (state / "bin").mkdir()
    _fake_python(state / "bin" / "python", tmp_path, node=True)
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\nexport RAY_AUTH_MODE=token\n"
                                  "export RAY_AUTH_TOKEN_PATH=/dev/null\n")
    head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             f"--temp-dir={os.path.realpath(state / 'ray')}"])
    try:
        (state / "ray.pid").write_text(f"{head.pid}\n")
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-add-node.sh"), str(state), "n2"],
                           capture_output=True, text=True, timeout=120,
                           env=_env(META_STUDY_UP_TIMEOUT="60",
                                    META_STUDY_NODE_ARGS="--num-cpus=2 --resources='{\"big\": 1}'"))
        assert r.returncode == 0 and "n2 joined (2 nodes)" in r.stderr, r.stderr
        assert _argv(tmp_path / "ray.argv")[-2:] == ["--num-cpus=2", '--resources={"big": 1}']
        assert (state / "ray").stat().st_mode & 0o777 == 0o700
    finally:
        head.kill()
        head.wait()
        if (state / "n2.pid").exists():   # the fake node: a `sleep 300` of ours, leader of its session
            try:
                os.killpg(int((state / "n2.pid").read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_local_up_says_at_once_that_ray_and_mlflow_were_given_one_port(tmp_path):
    """META_STUDY_RAY_PORT = META_STUDY_MLFLOW_PORT started Ray on it, then MLflow failed to bind it,
    said ~40 s later as "a port was taken during startup"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    fake = _fake_python(tmp_path / "python", tmp_path, node=False)
    r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(tmp_path / "st")], capture_output=True,
                       text=True, timeout=120,
                       env=_env(PYTHON=str(fake), META_STUDY_RAY_PORT=port, META_STUDY_MLFLOW_PORT=port))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"local-up: error: META_STUDY_RAY_PORT and META_STUDY_MLFLOW_PORT are both {port}: "
                        "give them different ports\n")
    assert not (tmp_path / "ray.argv").exists()   # nothing was started


def test_render_refuses_to_write_over_its_own_sources(tmp_path):
    """`cluster/render.sh .` run from cluster/ (OUT_DIR the source directory) truncated every
    manifest and IAM policy to 0 bytes, exit 0 and "render: wrote ..."."""
    shutil.copytree(REPO / "cluster", tmp_path / "cluster")
    before = (tmp_path / "cluster" / "kuberay" / "raycluster.yaml").read_text()
    r = subprocess.run(["bash", "render.sh", "."], cwd=tmp_path / "cluster", capture_output=True, text=True,
                       timeout=60, env=_env(BUCKET="my-lab-bucket", REGISTRY="ghcr.io/my-lab"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is cluster/ itself" in r.stderr, r.stderr
    assert (tmp_path / "cluster" / "kuberay" / "raycluster.yaml").read_text() == before
    r = subprocess.run(["bash", "render.sh", str(tmp_path / "out")], cwd=tmp_path / "cluster", capture_output=True,
                       text=True, timeout=60, env=_env(BUCKET="my-lab-bucket", REGISTRY="ghcr.io/my-lab"))
    assert r.returncode == 0 and "s3://my-lab-bucket/" in (tmp_path / "out" / "kuberay" / "rayjob-refit.yaml").read_text()
