"""Sweeps on a two-node Ray cluster on this machine, with a real S3 API server as storage.

The head is ``cluster/local-up.sh`` (1 CPU, a real ``mlflow server``); the second node joins with
``cluster/local-add-node.sh`` and the cluster's token. Where the machine allows it (root and
``unshare``), the second node runs in its own mount namespace with a private tmpfs over a
directory of the head's disk: a separate host that cannot see the head's files. The storage is
``s3://`` on ``tests/s3_server.py`` (moto's server on 127.0.0.1); nodes get its credentials and
endpoint through their environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL_S3``), as a Kubernetes Secret or an env file would give them.

- refusals up front: a storage path on the head's disk, and an object store a node cannot reach
  (no endpoint in its environment), each in one line that says what to pass;
- a driver killed mid-sweep, its working directory deleted (a lost head's local state), then
  ``--resume``: exactly one FINISHED run per trial, nothing RUNNING, the parent closed, one
  parent, no duplicate store rows;
- the second node's raylet SIGKILLed mid-trial: the sweep finishes, nothing duplicated or RUNNING;
- a node with its own disk that joins after the driver checked every node (an autoscaler's): the
  trial it gets stops in one line before training, and nothing finishes there.
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from meta_study.store import Store
from conftest import REPO, run_cli
from s3_server import S3Server

CLUSTER = REPO / "cluster"
SMOKE_ROWS_PER_TRIAL = 3 * 2      # runner.SMOKE: 3 DS tasks x 2 shot counts


def can_unshare(scratch: Path) -> bool:
    """Root, ``unshare -m`` and a tmpfs mount in it: a node can get its own view of a directory.
    Without them (no root, a container without CAP_SYS_ADMIN) the second node shares the head's
    disk, and only what does not need a separate disk is tested."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    scratch.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {shlex.quote(str(scratch))}"],
                       capture_output=True)
    return r.returncode == 0


class LocalCluster:
    """A head (local-up.sh) and nodes (local-add-node.sh) under ``root``; stopped by local-down.sh."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.state = root / "st"
        self.env = {**env, "PYTHON": sys.executable}
        for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "META_STUDY_LOCAL_DIR",
                    "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
            self.env.pop(var, None)
        self.exports: dict[str, str] = {}
        self.unsets: list[str] = []
        self.up_stderr = ""

    def up(self) -> None:
        r = subprocess.run(["bash", str(CLUSTER / "local-up.sh"), str(self.state)], capture_output=True, text=True,
                           timeout=300, env={**self.env, "META_STUDY_RAY_START_ARGS": "--num-cpus=1"})
        assert r.returncode == 0, r.stderr[-3000:]
        self.exports = {k: v.strip("'\"") for k, v in (line[len("export "):].split("=", 1) for line in
                                                      r.stdout.splitlines() if line.startswith("export "))}
        self.unsets = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("unset ")]
        self.up_stderr = r.stderr

    def add_node(self, name: str, env: dict[str, str], private_dir: Path | None = None) -> None:
        """Start a 1-CPU node; with ``private_dir``, in its own mount namespace with a fresh tmpfs
        over that directory (the node cannot see what the head has there)."""
        script = f"bash {shlex.quote(str(CLUSTER / 'local-add-node.sh'))} {shlex.quote(str(self.state))} {name}"
        cmd = (["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {shlex.quote(str(private_dir))} && exec {script}"]
               if private_dir is not None else ["sh", "-c", script])
        e = {**{k: v for k, v in self.env.items() if k in ("PATH", "HOME", "PYTHON", "LANG", "TMPDIR")}, **env,
             "PYTHON": sys.executable, "META_STUDY_NODE_ARGS": "--num-cpus=1"}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e)
        log = self.state / f"{name}.log"
        assert r.returncode == 0, (f"exit {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}\n"
                                   + (log.read_text()[-3000:] if log.exists() else "(no node log)"))

    def node_processes(self, name: str) -> list[tuple[int, str]]:
        """(pid, command line) of the processes of a node added as ``name`` (its session)."""
        sid = (self.state / f"{name}.pid").read_text().strip()
        ps = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
        out = []
        for line in ps.splitlines():
            pid, s, stat, args = (line.split(None, 3) + [""])[:4]
            if s == sid and not stat.startswith("Z"):
                out.append((int(pid), args))
        return out

    def client_env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` after ``. env.sh``: its unsets, then its exports."""
        return {**{k: v for k, v in base.items() if k not in self.unsets}, **self.exports}

    def down(self) -> None:
        subprocess.run(["bash", str(CLUSTER / "local-down.sh"), str(self.state)], capture_output=True, text=True,
                       timeout=300, env=self.env)


@pytest.fixture
def s3(tmp_path):
    with S3Server(tmp_path / "s3") as server:
        server.make_bucket("lab")
        yield server


def base_env(s3: S3Server | None) -> dict[str, str]:
    """This process's environment for the cluster and drivers: the worktree's code, and the
    object store's credentials and endpoint (the standard AWS variables) when given."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e["PYTHONPATH"] = str(REPO)    # every node runs this checkout's code, as `pip install -e` on a node would
    if s3 is not None:
        e.update({k: v for k, v in s3.env.items() if k != "AWS_ENDPOINT_URL"})   # AWS_ENDPOINT_URL_S3 is enough
    return e


def sweep(*args: str, cwd: Path, env: dict[str, str], background: bool = False, timeout: float = 900):
    cmd = [sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke", "--quiet", "--set", "epochs=1", *args]
    cwd.mkdir(parents=True, exist_ok=True)
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def trial_runs(uri: str, experiment: str) -> list:
    c = MlflowClient(uri)
    e = c.get_experiment_by_name(experiment)
    if e is None:
        return []
    return c.search_runs([e.experiment_id], max_results=1000)


def check_one_finished_run_per_trial(uri: str, experiment: str, trials: int) -> list:
    runs = trial_runs(uri, experiment)
    parents = [r for r in runs if r.data.tags.get("meta_study.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("meta_study.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(r.info.status) for r in parents]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * trials, \
        [(r.data.tags.get("trial_id"), r.info.status) for r in children]
    assert len({r.data.tags["trial_id"] for r in children}) == trials             # one run per trial
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    return children


@pytest.mark.slow(60)
def test_storage_that_some_node_cannot_use_is_refused_up_front(tmp_path, s3):
    """The second node has neither the head's disk (its own mount namespace, where possible) nor
    the object store's endpoint in its environment: both storage paths are refused before any
    trial starts, each in one line that says what to pass."""
    head_disk = tmp_path / "head-disk"
    private = can_unshare(head_disk)
    # another cluster's token left in the shell that starts this one: Ray would prefer it to the
    # token file, and every client of env.sh and this node (which gets no copy of it) would be
    # refused; local-up.sh ignores it, says so, and env.sh unsets it
    env = {**base_env(s3), "RAY_AUTH_TOKEN": "f" * 64}
    cl = LocalCluster(tmp_path, env)
    try:
        cl.up()
        assert "ignoring RAY_AUTH_TOKEN from this shell" in cl.up_stderr and cl.unsets == ["RAY_AUTH_TOKEN"]
        cl.add_node("node2", {"PYTHONPATH": str(REPO)}, private_dir=head_disk if private else None)
        drv = cl.client_env(env)
        exp = f"refuse-{uuid.uuid4().hex[:6]}"
        if private:
            r = sweep("--storage-path", str(head_disk / "ray"), "--experiment", exp, cwd=tmp_path / "work", env=drv,
                      timeout=300)
            err = r.stderr.strip().splitlines()
            assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
            assert "1 of 2 Ray nodes cannot use it" in err[-1] and "s3://BUCKET/PATH" in err[-1], err[-1]
            assert "Traceback" not in r.stderr
        r = sweep("--storage-path", "s3://lab/tune", "--experiment", exp, cwd=tmp_path / "work", env=drv, timeout=300)
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
        line = r.stderr.strip().splitlines()[-1]
        assert "s3://lab/tune: 1 of 2 Ray nodes cannot use it" in line and "AWS_ENDPOINT_URL_S3" in line, line
        assert trial_runs(cl.exports["MLFLOW_TRACKING_URI"], exp) == []          # nothing was started
    finally:
        cl.down()


def _kill_driver_after_one_trial(cl: LocalCluster, env: dict, work: Path, exp: str, name: str) -> list:
    """Start a 2-trial sweep (one trial at a time) and SIGKILL its driver and writer once the first
    trial's run is FINISHED. Returns the trial runs at the kill."""
    uri = cl.exports["MLFLOW_TRACKING_URI"]
    p = sweep("--storage-path", "s3://lab/tune", "--name", name, "--experiment", exp, "--max-concurrent", "1",
              cwd=work, env=env, background=True)
    deadline = time.monotonic() + 600
    runs: list = []
    while time.monotonic() < deadline:
        if p.poll() is not None:
            pytest.fail("the sweep ended before it could be killed: " + p.stdout.read()[-3000:])
        runs = [r for r in trial_runs(uri, exp) if r.data.tags.get("meta_study.role") == "trial"]
        if any(r.info.status == "FINISHED" for r in runs):
            break
        time.sleep(0.3)
    os.killpg(p.pid, signal.SIGKILL)            # the driver and its MLflow writer: nothing flushes
    p.wait()
    return runs


@pytest.mark.slow(200)
def test_driver_and_worker_node_killed_with_s3_storage(tmp_path, s3):
    """(b) The driver is SIGKILLed with one trial finished, its working directory deleted, then the
    sweep is resumed from a fresh directory: nothing the driver kept locally is needed. (a) The
    second node's raylet is SIGKILLed while it runs a trial: Tune restarts that trial on the head."""
    head_disk = tmp_path / "head-disk"
    private = can_unshare(head_disk)
    env = base_env(s3)
    cl = LocalCluster(tmp_path, env)
    try:
        cl.up()
        cl.add_node("node2", env, private_dir=head_disk if private else None)
        drv = {**cl.client_env(env), "META_STUDY_RESEARCHER": "ada"}
        uri = cl.exports["MLFLOW_TRACKING_URI"]

        # (b) driver killed, head state lost, --resume
        exp = f"resume-{uuid.uuid4().hex[:6]}"
        work = tmp_path / "head-work"
        at_kill = _kill_driver_after_one_trial(cl, drv, work, exp, "killed")
        assert any(r.info.status == "FINISHED" for r in at_kill)
        shutil.rmtree(work)                      # the head's working directory and anything in it
        r = sweep("--storage-path", "s3://lab/tune", "--name", "killed", "--resume", cwd=tmp_path / "new-head",
                  env=drv)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs = check_one_finished_run_per_trial(uri, exp, 2)
        finished_before = {x.info.run_id: x.data.metrics for x in at_kill if x.info.status == "FINISHED"}
        for x in runs:
            if x.info.run_id in finished_before:   # the finished trial did not run again
                assert x.data.metrics == finished_before[x.info.run_id]
            assert x.data.tags["researcher"] == "ada"
            assert x.data.tags["checkpoint_uri"].startswith("s3://lab/tune/killed/")
            assert "endpoint_override=" in x.data.tags["checkpoint_uri"]     # MinIO / Ceph: the endpoint is in it
        store = tmp_path / "store"
        ing = run_cli("ingest", uri, "--experiment", exp, "--store", str(store), "--quiet")
        assert ing.returncode == 0, ing.stderr
        df = Store(str(store)).to_pandas()
        assert len(df) == 2 * SMOKE_ROWS_PER_TRIAL and df["run_id"].nunique() == 2   # no duplicate rows
        assert df["checkpoint_uri"].str.startswith("s3://lab/tune/killed/").all()

        # (a) the second node's raylet killed mid-trial
        exp = f"nodekill-{uuid.uuid4().hex[:6]}"
        p = sweep("--storage-path", "s3://lab/tune", "--name", "nodekill", "--experiment", exp, cwd=tmp_path / "w2",
                  env=drv, background=True)
        deadline = time.monotonic() + 600
        while not any("ray::ImplicitFunc.train" in a for _, a in cl.node_processes("node2")):
            assert p.poll() is None, "the sweep ended before a trial ran on node2: " + p.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no trial ever ran on node2"
            time.sleep(0.3)
        raylet = [pid for pid, a in cl.node_processes("node2") if "/raylet/raylet" in a]
        assert len(raylet) == 1
        os.kill(raylet[0], signal.SIGKILL)
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-4000:]
        check_one_finished_run_per_trial(uri, exp, 2)
    finally:
        cl.down()


def _wait_for_output(p: subprocess.Popen, text: str, timeout: float) -> str:
    """The background sweep's output up to the line holding ``text`` (fails on exit or timeout)."""
    out: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=1.0):
            line = p.stdout.readline()
            if not line:
                pytest.fail(f"the sweep ended before {text!r}: " + "".join(out)[-3000:])
            out.append(line)
            if text in line:
                return "".join(out)
    pytest.fail(f"no {text!r} within {timeout:.0f} s: " + "".join(out)[-3000:])


@pytest.mark.slow(120)
def test_a_node_that_joins_after_the_storage_check_runs_no_trial_on_its_own_disk(tmp_path):
    """The storage path is on the head's disk; the driver checks the cluster's only node (the
    head), then waits at its ``after_node_check`` failpoint while a second node joins in its own
    mount namespace (another disk, as an autoscaler's node would be). Of the two trials (one CPU
    on each node), the one on the new node stops at once, in one line naming the node and the
    sweep record it cannot see; the other finishes on the head."""
    head_disk = tmp_path / "head-disk"
    if not can_unshare(head_disk):
        pytest.skip("needs root and unshare -m for a node with its own disk")
    env = base_env(None)
    cl = LocalCluster(tmp_path, env)
    try:
        cl.up()
        go = tmp_path / "go"
        drv = {**cl.client_env(env), "META_STUDY_FAILPOINT": "stall_after_node_check",
               "META_STUDY_STALL_UNTIL": str(go), "META_STUDY_STALL_S": "600"}
        exp = f"late-{uuid.uuid4().hex[:6]}"
        p = sweep("--storage-path", str(head_disk / "ray"), "--experiment", exp, "--max-failures", "0",
                  cwd=tmp_path / "work", env=drv, background=True)
        try:
            early = _wait_for_output(p, "failpoint stall_after_node_check", 300)
            cl.add_node("node2", {"PYTHONPATH": str(REPO)}, private_dir=head_disk)
            go.touch()
            rest, _ = p.communicate(timeout=900)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        out = early + rest
        assert p.returncode == 1, out[-4000:]                     # a trial errored
        assert "StorageNotShared: node " in out and "cannot see this sweep's storage" in out, out[-4000:]
        assert f"{head_disk}/ray/head_wd-smoke/meta_study/sweep.json" in out, out[-4000:]
        runs = [r for r in trial_runs(cl.exports["MLFLOW_TRACKING_URI"], exp)
                if r.data.tags.get("meta_study.role") == "trial"]
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"], [r.info.status for r in runs]
    finally:
        cl.down()
