"""Sweeps on a local Ray (2 CPUs) with a real ``mlflow server``: every script's smoke run, ingest
with the default mapping, a crashing trial, a killed driver resumed, a flaky tracking server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from meta_study.schema import ds_metric_key, us_metric_key
from meta_study.store import Store
from conftest import REPO, run_cli, sweep_module

# each test runs a whole sweep (Ray started, models trained, MLflow checked): ~40 s unless marked
pytestmark = pytest.mark.slow(40)

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.py"))
SMOKE_DS = ("synth_combo", "synth_count", "synth_texture")
SMOKE_SHOTS = (1, 10)


def sweep(name: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 900,
          background: bool = False, script: Path | None = None):
    cmd = [sys.executable, str(script or REPO / "sweeps" / f"{name}.py"), "--smoke", *args]
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    e.pop("RAY_ADDRESS", None)
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def summary(stdout: str) -> dict:
    start = stdout.index('{\n "sweep"')
    return json.loads(stdout[start:stdout.index("}", start) + 1])


def child_runs(uri: str, experiment: str) -> list:
    c = MlflowClient(uri)
    e = c.get_experiment_by_name(experiment)
    runs = c.search_runs([e.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("meta_study.role") == "trial"]


def check_trial_run(client: MlflowClient, run, us_task: str = "synth_us") -> None:
    m, p = run.data.metrics, run.data.params
    assert run.info.status == "FINISHED"
    assert 0 <= m[us_metric_key(us_task)] <= 1
    # the final US accuracy is the last point of its history, at the last training step (it was
    # logged at Tune's iteration count: step 8 after step 690, first on the UI's plot)
    hist = sorted(client.get_metric_history(run.info.run_id, us_metric_key(us_task)), key=lambda h: h.timestamp)
    steps = [h.step for h in hist]
    assert steps == sorted(steps) and steps[-1] == m["train/steps"], [(h.step, h.timestamp, h.value) for h in hist]
    for ds in SMOKE_DS:
        for k in SMOKE_SHOTS:
            assert 0 <= m[ds_metric_key(ds, k)] <= 1
    assert {"model_name", "lr", "head_lr", "head_wd", "wd", "epochs", "batch_size", "seed", "param_count"} <= set(p)
    assert run.data.tags["sweep"] and run.data.tags["git_sha"] and run.data.tags["researcher"]
    # where it ran and with what, read in the trial's process (a worker, not the driver)
    env = json.loads(run.data.tags["environment"])
    assert env["torch"] and env["timm"] and env["ray"] and env["devices"] and env["host"]
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
    assert "checkpoint/checkpoint.pt" in arts
    assert run.data.tags["checkpoint_uri"].endswith("/checkpoint")


@pytest.mark.parametrize("name", SWEEPS)
def test_smoke_run_of_each_sweep(name, mlflow_server, tmp_path):
    exp = f"{name}-{uuid.uuid4().hex[:6]}"
    r = sweep(name, "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--storage-path", str(tmp_path / "ray"),
              cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(r.stdout)
    assert s["trials"] >= 2 and s["finished"] == s["trials"] and s["errored"] == 0
    client = MlflowClient(mlflow_server.uri)
    runs = child_runs(mlflow_server.uri, exp)
    assert len(runs) == s["trials"]
    for run in runs:
        check_trial_run(client, run)
        assert run.data.tags["mlflow.parentRunId"] == s["mlflow_parent_run"]
    parent = client.get_run(s["mlflow_parent_run"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == s["sweep"]
    # the parent carries the sweep's summary (the MLflow UI's runs table shows it), and the
    # address printed opens the UI's model-training view of the experiment (tests/test_mlflow_ui.py)
    pm = parent.data.metrics
    assert pm["sweep/trials"] == s["trials"] and pm["sweep/finished"] == s["finished"] and pm["sweep/errored"] == 0
    us = us_metric_key("synth_us")
    assert pm[f"best/{us}"] == max(run.data.metrics[us] for run in runs)
    exp_id = client.get_experiment_by_name(exp).experiment_id
    assert f"browse: {mlflow_server.uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning" in r.stdout
    assert s["experiment"] == exp                  # what to ingest next, copy-paste ready
    assert f"next: meta-study ingest {mlflow_server.uri} --experiment {exp} --store STORE" in r.stdout
    if name == "zoo":
        # each trial asked Ray for what its model needs (zoo.py: meta_study.tune.sizing.resources)
        from meta_study.tune.runner import PerTrialResources, SweepOptions
        ZOO = sweep_module("zoo").SPEC

        per_trial = PerTrialResources(ZOO.resources, SweepOptions(smoke=True))
        for run in runs:
            want = per_trial({"model_name": run.data.params["model_name"]})
            got = json.loads(run.data.tags["resources"])
            assert got["CPU"] == want["cpu"] and got["memory"] == want["memory"], (run.data.params["model_name"], got)
    if name == "head_wd":
        # the default mapping ingests the sweep with no mapping file
        store = tmp_path / "store"
        ing = run_cli("ingest", mlflow_server.uri, "--experiment", exp, "--store", str(store), "--quiet")
        assert ing.returncode == 0, ing.stderr
        df = Store(str(store)).to_pandas()
        assert len(df) == s["trials"] * len(SMOKE_DS) * len(SMOKE_SHOTS)
        assert set(df["head_wd"]) == {0.0, 0.1} and set(df["us_task"]) == {"synth_us"}
        assert (df["eval_protocol"] == "fewshot").all() and df["checkpoint_uri"].notna().all()
        assert set(df["arch_family"]) == {"vit"} and (df["param_count"] > 0).all()
        assert len(Store(str(store)).quarantine()) == 0


def test_a_crashing_trial_is_retried_from_its_checkpoint(mlflow_server, tmp_path):
    exp = f"crash-{uuid.uuid4().hex[:6]}"
    r = sweep("head_wd", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--fail-once",
              "--storage-path", str(tmp_path / "ray"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(r.stdout)
    assert s["finished"] == s["trials"] == 2
    runs = child_runs(mlflow_server.uri, exp)
    assert len(runs) == 2                      # the restart reused its run: no duplicates
    client = MlflowClient(mlflow_server.uri)
    for run in runs:
        check_trial_run(client, run)
    errors = list((tmp_path / "ray").rglob("error.txt"))
    assert len(errors) == 2 and all("injected failure" in e.read_text() for e in errors)


def test_errored_trials_are_one_line_each_and_quiet_means_no_tracebacks(mlflow_server, tmp_path):
    """--quiet kept every errored trial's traceback (Tune logs them at ERROR), and without it the
    summary never said which trials errored or why."""
    exp = f"err-{uuid.uuid4().hex[:6]}"
    r = sweep("head_wd", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--fail-once", "--max-failures", "0",
              "--quiet", "--storage-path", str(tmp_path / "ray"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(r.stdout)
    assert s["errored"] == s["trials"] == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("trial ")]
    assert len(lines) == 2, r.stderr[-3000:]
    for ln in lines:
        assert "errored: RuntimeError: injected failure (fail_once)" in ln and ln.endswith("/error.txt)")
        assert Path(ln.rsplit("(traceback: ", 1)[1][:-1]).is_file()
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    runs = child_runs(mlflow_server.uri, exp)
    assert sorted(x.info.status for x in runs) == ["FAILED", "FAILED"]
    # why, on the run itself (the MLflow UI showed FAILED and nothing else)
    assert all("RuntimeError: injected failure (fail_once)" in x.data.tags.get("meta_study.reason", "") for x in runs), \
        [x.data.tags for x in runs]


def _kill_after_two_trials(mlflow_server, tmp_path: Path, attempt: int):
    """Start a 3-trial Optuna sweep, one trial at a time, with Tune saving its experiment state
    only at the start, and SIGKILL its driver once two trials have finished: Tune's saved state
    knows the first trial only, as after a crash within TUNE_GLOBAL_CHECKPOINT_S of a save.
    The writer stalls between creating the third trial's run and writing its map entry, so the
    kill also leaves a run the map does not know. Returns (args, experiment, finished runs at the
    kill); the caller tries again if the third trial finished inside the polling gap."""
    exp = f"resume-{uuid.uuid4().hex[:6]}"
    args = ("--tracking-uri", mlflow_server.uri, "--experiment", exp, "--storage-path", str(tmp_path / f"ray{attempt}"),
            "--max-concurrent", "1")      # (the zoo searches epochs: --set epochs=1 was ignored, now refused)
    # the writer stops just after creating the third trial's run, before its map entry: a driver
    # killed in that window left a run only MLflow knew, closed as an orphan on resume while the
    # configuration got a second run (CI, 2026-12-03)
    p = sweep("optuna_zoo", *args, cwd=tmp_path, background=True,
              env={"TUNE_GLOBAL_CHECKPOINT_S": "3600", "META_STUDY_FAILPOINT": "run_created:3"},
              script=REPO / "tests" / "optuna_sweep.py")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if p.poll() is not None:
            pytest.fail("the sweep finished before it could be killed: " + p.stdout.read()[-2000:])
        runs = child_runs(mlflow_server.uri, exp) if MlflowClient(mlflow_server.uri).get_experiment_by_name(exp) else []
        if sum(r.info.status == "FINISHED" for r in runs) >= 2 and len(runs) == 3:
            break
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)            # the driver, its writer and the local Ray it started
    p.wait()
    return args, exp, [r for r in child_runs(mlflow_server.uri, exp) if r.info.status == "FINISHED"]


@pytest.mark.slow(150)
def test_killed_driver_resumes_without_duplicates(mlflow_server, tmp_path):
    """A resume after a crash that Tune's saved state does not cover: the second trial finished
    after the last save, so the restored Optuna search draws its configuration again under a new
    trial id. That trial takes over the old run and its result (no second run, no retraining), the
    third continues under its run, and a code change in between is refused, then allowed and
    recorded."""
    for attempt in range(3):
        args, exp, first = _kill_after_two_trials(mlflow_server, tmp_path, attempt)
        if len(first) == 2:
            break
    assert len(first) == 2, "all three trials finished before every kill"
    # the code changed between the kill and the resume: refused with the reason, nothing started
    from dataclasses import replace

    from meta_study.tune.state import StateDir

    st = StateDir(args[args.index("--storage-path") + 1] + "/optuna_zoo-smoke")
    rec = st.read_record()
    old_code = rec.sessions[-1].code
    st.write_record(replace(rec, sessions=(replace(rec.sessions[-1], code="0123456789abcdef"),)))
    script = REPO / "tests" / "optuna_sweep.py"
    r = sweep("optuna_zoo", *args, "--resume", cwd=tmp_path, script=script)
    assert r.returncode == 2 and "code changed since sweep optuna_zoo-smoke last ran" in r.stderr, r.stderr[-2000:]
    assert "--allow-code-change" in r.stderr.strip().splitlines()[-1]
    r = sweep("optuna_zoo", *args, "--resume", "--allow-code-change", cwd=tmp_path, script=script)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = summary(r.stdout)
    assert s["trials"] == s["finished"] == 3 and s["orphaned"] == 0
    runs = child_runs(mlflow_server.uri, exp)
    assert sorted(x.info.status for x in runs) == ["FINISHED"] * 3, [(x.data.tags["trial_id"], x.info.status) for x in runs]
    assert len({x.data.tags["trial_id"] for x in runs}) == 3 and len({x.data.tags["config_key"] for x in runs}) == 3
    before = {x.info.run_id: x.data.metrics for x in first}
    for x in runs:
        if x.info.run_id in before:                # finished before the kill: not trained again
            assert x.data.metrics == before[x.info.run_id]
    assert set(before) <= {x.info.run_id for x in runs}
    assert any("meta_study.adopted_from" in x.data.tags for x in runs)   # a lost trial's run, taken over
    assert len({x.data.tags["mlflow.parentRunId"] for x in runs}) == 1
    sessions = st.read_record().sessions
    assert [x.code_changed for x in sessions] == [False, True] and sessions[-1].code == old_code
    parent_tags = MlflowClient(mlflow_server.uri).get_run(s["mlflow_parent_run"]).data.tags
    assert parent_tags["session.2.code_changed"] == "1" and parent_tags["session.2.code_version"] == old_code
    store = tmp_path / "store"
    ing = run_cli("ingest", mlflow_server.uri, "--experiment", exp, "--store", str(store), "--quiet")
    assert ing.returncode == 0, ing.stderr
    assert Store(str(store)).to_pandas()["run_id"].nunique() == 3             # each point once


def _both_past_checkpoint(experiment: Path, k: int, trials: int = 2) -> bool:
    """Whether each of ``trials`` trials has written checkpoint ``k`` or a later one. Tune keeps two
    checkpoints per trial (num_to_keep=2) and deletes checkpoint_000002 once checkpoint_000004 is
    written: waiting for both trials to hold checkpoint_000002 at once missed the window on a loaded
    machine when one trial ran ahead, and the sweep ended before it could be interrupted."""
    latest: dict[Path, int] = {}
    for c in experiment.glob("*/checkpoint_*"):
        suffix = c.name.rsplit("_", 1)[-1]
        if suffix.isdigit():
            latest[c.parent] = max(latest.get(c.parent, -1), int(suffix))
    return len(latest) == trials and min(latest.values()) >= k


def test_waiting_for_checkpoints_reads_past_the_ones_tune_deleted(tmp_path):
    for name in ("t0/checkpoint_000003", "t0/checkpoint_000004", "t1/checkpoint_000001", "t1/checkpoint_000002"):
        (tmp_path / name).mkdir(parents=True)
    assert _both_past_checkpoint(tmp_path, 2)          # t0 no longer holds checkpoint_000002
    assert not _both_past_checkpoint(tmp_path, 3)
    (tmp_path / "t1" / "checkpoint_000001").rename(tmp_path / "t1" / "checkpoint_tmp")
    assert _both_past_checkpoint(tmp_path, 2) and not _both_past_checkpoint(tmp_path, 2, trials=3)


@pytest.mark.slow(120)
def test_ctrl_c_leaves_unfinished_runs_for_resume(mlflow_server, tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) while both trials train: Tune stops and
    returns normally, and its stopped trials look early-stopped. They are not evaluated as if
    finished (a half-trained model recorded as a final point, and its completion record then
    stopped --resume from training it), the writer process survives the keystroke, every open run
    ends KILLED with meta_study.status=interrupted, the parent KILLED, exit 130 with what to do.
    --resume then trains both to the end under the same runs, with the stale tags gone."""
    exp = f"intr-{uuid.uuid4().hex[:6]}"
    storage = tmp_path / "ray"
    args = ("--tracking-uri", mlflow_server.uri, "--experiment", exp, "--storage-path", str(storage),
            "--set", "epochs=30")
    p = sweep("head_wd", *args, cwd=tmp_path, background=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:   # both trials past their second checkpoint
        if _both_past_checkpoint(storage / "head_wd-smoke", 2):
            break
        time.sleep(0.2)
    assert p.poll() is None, "the sweep ended before it could be interrupted: " + p.stdout.read()[-3000:]
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 130, out[-4000:]
    assert "KeyboardInterrupt" not in out, out[-4000:]            # the writer process ignored it
    s = summary(out)
    assert s["interrupted"] == 2 and s["finished"] == 0 and s["early_stopped"] == 0, s
    assert "interrupted (SIGINT)" in out and "--resume" in out.strip().splitlines()[-1]
    client = MlflowClient(mlflow_server.uri)
    runs = child_runs(mlflow_server.uri, exp)
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]
    for r in runs:
        assert r.data.tags["meta_study.status"] == "interrupted" and "--resume" in r.data.tags["meta_study.reason"]
        assert "meta_study.eval_status" not in r.data.tags and "early_stopped" not in r.data.metrics
    assert not list(storage.glob("head_wd-smoke/*/meta_study_final.json"))   # nothing recorded as done
    assert client.get_run(s["mlflow_parent_run"]).info.status == "KILLED"
    before = {r.info.run_id for r in runs}

    r2 = sweep("head_wd", *args, "--resume", cwd=tmp_path)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    s2 = summary(r2.stdout)
    assert s2["finished"] == s2["trials"] == 2 and s2["interrupted"] == 0
    runs = child_runs(mlflow_server.uri, exp)
    assert {r.info.run_id for r in runs} == before                  # the same runs, continued
    for r in runs:
        check_trial_run(client, r)
        assert r.data.metrics["train/epochs"] == 30 and "early_stopped" not in r.data.metrics   # trained to the end
        assert not {"meta_study.status", "meta_study.reason", "meta_study.eval_status"} & set(r.data.tags)
    assert client.get_run(s["mlflow_parent_run"]).info.status == "FINISHED"


@pytest.mark.slow(60)
def test_ctrl_c_during_the_end_of_sweep_evaluations_is_an_interrupt_not_a_traceback(mlflow_server, tmp_path):
    """Ctrl-C once Tune had returned (its handler gone), during the evaluations of early-stopped
    trials: a KeyboardInterrupt traceback, with the parent run (and any run waiting for its
    evaluation) left RUNNING. Now as a Ctrl-C during training: open runs and the parent KILLED,
    exit 130 with what to do."""
    exp = f"intr-eval-{uuid.uuid4().hex[:6]}"
    p = sweep("head_wd", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--storage-path",
              str(tmp_path / "ray"), cwd=tmp_path, background=True,
              env={"META_STUDY_FAILPOINT": "before_evaluations"})
    seen, deadline = [], time.monotonic() + 600
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("failpoint before_evaluations"):
            break
    assert p.poll() is None and seen and seen[-1].startswith("failpoint"), "".join(seen)[-3000:]
    os.killpg(p.pid, signal.SIGINT)
    out = "".join(seen) + p.communicate(timeout=300)[0]
    assert p.returncode == 130, out[-4000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    s = summary(out)
    assert s["trials"] == 2 and "interrupted (SIGINT)" in out and "--resume" in out.strip().splitlines()[-1]
    assert MlflowClient(mlflow_server.uri).get_run(s["mlflow_parent_run"]).info.status == "KILLED"


class Proxy:
    """A TCP proxy to the MLflow server that the test can switch off (connections refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.on = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if not self.on:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.slow(60)
def test_a_briefly_unreachable_tracking_server_does_not_kill_trials(mlflow_server, tmp_path):
    proxy = Proxy(mlflow_server.port)
    uri = f"http://127.0.0.1:{proxy.port}"
    exp = f"flaky-{uuid.uuid4().hex[:6]}"
    p = sweep("head_wd", "--tracking-uri", uri, "--experiment", exp, "--storage-path", str(tmp_path / "ray"),
              cwd=tmp_path, background=True)
    # switch the server off once the parent run exists, for most of the sweep
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and client.get_experiment_by_name(exp) is None:
        time.sleep(0.5)
    proxy.on = False
    time.sleep(25)
    proxy.on = True
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    s = summary(out)
    assert s["finished"] == s["trials"] == 2
    runs = child_runs(mlflow_server.uri, exp)
    assert len(runs) == 2
    for run in runs:
        check_trial_run(client, run)


def train_checkpoints(storage: Path, name: str, trial_id: str) -> tuple[list[Path], list[Path]]:
    """A data-parallel trial's Ray Train checkpoints: (those on the sweep's storage, those in its
    local staging directories under /tmp/ray, where they landed before 2026-12-04)."""
    on_storage = sorted(p for p in storage.glob(f"{name}/{trial_id}/train/checkpoint_*") if p.is_dir())
    staging = sorted(p for p in Path(tempfile.gettempdir(), "ray").glob(
        f"session_*/artifacts/*/{name}/working_dirs/{trial_id}/train/checkpoint_*") if p.is_dir())
    return on_storage, staging


@pytest.mark.slow(100)
def test_data_parallel_trials_run_a_torch_trainer(mlflow_server, tmp_path):
    """--workers-per-trial 2: each trial is a Ray Train TorchTrainer with 2 gloo workers (on CPU
    here; one GPU each with --gpus-per-trial), started inside the trial function. Its Train run's
    checkpoints are on the sweep's storage, under the trial's directory, the last 2 of them (they
    were in the node's /tmp/ray staging directory, every one kept)."""
    exp, name = f"ddp-{uuid.uuid4().hex[:6]}", f"ddp-{uuid.uuid4().hex[:8]}"
    storage = tmp_path / "ray"
    r = sweep("head_wd", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--workers-per-trial", "2",
              "--cpus-per-trial", "0.9", "--storage-path", str(storage), "--name", name,
              "--set", "eval_every=10", cwd=tmp_path)        # ~4 checkpointed reports per trial
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert summary(r.stdout)["finished"] == 2
    client = MlflowClient(mlflow_server.uri)
    runs = child_runs(mlflow_server.uri, exp)
    assert len(runs) == 2
    for run in runs:
        check_trial_run(client, run)
        assert run.data.params["batch_size"] == "128"        # the global batch, split over 2 workers
        on_storage, staging = train_checkpoints(storage, name, run.data.tags["trial_id"])
        assert 1 <= len(on_storage) <= 2 and not staging, (on_storage, staging)


@pytest.mark.slow(150)
def test_an_asha_sweep_of_data_parallel_trials_runs_to_its_end(mlflow_server, tmp_path):
    """The zoo (Optuna + ASHA) with 2-worker trials on 2 CPUs. It waited for good three ways:
    four trial actors at 0.1 CPU each left 1.6 CPUs where each trial's workers need 1.8 (now at
    most as many trials at a time as the cluster places); the third trial, given the second's
    actor to reuse, failed ("Trainable runner reuse requires reset_config()"; no reuse for
    data-parallel trials); a trial ASHA stopped kept its workers' placement group reserved (freed
    by the sweep's callback). Whether ASHA stops one here depends on the draws: every trial ends,
    finished or evaluated."""
    exp = f"ddp-asha-{uuid.uuid4().hex[:6]}"
    r = sweep("zoo", "--tracking-uri", mlflow_server.uri, "--experiment", exp, "--num-samples", "4",
              "--workers-per-trial", "2", "--cpus-per-trial", "0.9", "--storage-path", str(tmp_path / "ray"),
              "--quiet", cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "data-parallel trials: at most 1 at a time: each needs 1.9 CPUs for its 2 workers" in r.stderr
    s = summary(r.stdout)
    assert s["trials"] == s["finished"] == 4 and s["errored"] == 0 and s["eval_failed"] == 0, s
    runs = child_runs(mlflow_server.uri, exp)
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)
    assert sum("early_stopped" in run.data.metrics for run in runs) == s["early_stopped"]


def test_an_early_stopped_data_parallel_trials_train_checkpoint_is_evaluated(tmp_path):
    """An early-stopped data-parallel trial has no Tune checkpoint (TuneReportCallback forwards a
    Train checkpoint only as the metric checkpoint_path): it was recorded as failed, "stopped before
    its first checkpoint". Its Train run's last checkpoint (<trial>/train/checkpoint_*) is evaluated
    instead, and the records are looked up and written in the trial's directory, where a finished
    trial's completion record is (not in <trial>/train/)."""
    from ray.tune.result_grid import Result

    from meta_study.train import run_trial
    from meta_study.tune.finalize import checkpoint_of
    from meta_study.tune.runner import SMOKE
    from meta_study.tune.trial import EVAL_FILE, FINAL_FILE, evaluate_stopped_trial, trial_dir_of

    cfg = {**SMOKE, "model_name": "vit_tiny_cpu", "epochs": 1, "lr": 2e-3, "eval_every": 4,
           "us_task_kwargs": {"n_train": 600, "n_test": 200}}
    trial = tmp_path / "ray" / "sweep" / "abc12_00001"
    ckpt_dir = trial / "train" / "checkpoint_2026-12-04_12-00-00.000000"
    run_trial({**cfg, "steps": 4}, checkpoint_dir=str(ckpt_dir))
    r = Result(metrics={"trial_id": "abc12_00001", "training_iteration": 1, "checkpoint_path": str(ckpt_dir)},
               checkpoint=None, error=None, path=str(trial))
    ckpt = checkpoint_of(r)
    assert ckpt is not None and ckpt.path == str(ckpt_dir)
    assert trial_dir_of(ckpt.path) == str(trial) and trial_dir_of(str(trial / "checkpoint_000003")) == str(trial)
    metrics = evaluate_stopped_trial(cfg, ckpt)
    assert metrics["early_stopped"] == 1.0 and 0 <= metrics[ds_metric_key("synth_combo", 10)] <= 1
    assert (trial / EVAL_FILE).exists() and not (trial / "train" / EVAL_FILE).exists()
    (trial / EVAL_FILE).unlink()
    (trial / FINAL_FILE).write_text(json.dumps({"final": 1.0, "x": 7}))   # finished after all: read back
    assert evaluate_stopped_trial(cfg, ckpt) == {"final": 1.0, "x": 7}
    # without a forwarded path there is nothing to evaluate, as before
    assert checkpoint_of(Result(metrics={"trial_id": "t"}, checkpoint=None, error=None, path=str(trial))) is None


@pytest.mark.slow(100)
def test_ray_job_submit_the_real_way(tmp_path):
    """A Ray head started with `ray start --head` (cluster/local-up.sh: random ports, a real
    mlflow server) from a shell without the virtualenv on its PATH, the sweep submitted with
    `python -m meta_study.tune.submit` (`ray job submit --working-dir .` plus the commit and the
    submitting person), then both stopped. Jobs that carry secrets in their runtime_env, or that
    give no storage path, are refused in one line."""
    state = tmp_path / "local"
    # no venv active: PYTHON alone says which interpreter Ray, MLflow and the jobs' `python` are
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d != venv_bin)
    env = {**os.environ, "PYTHON": sys.executable, "META_STUDY_RAY_START_ARGS": "--num-cpus=2", "PATH": path}
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "VIRTUAL_ENV", "PYTHONPATH", "META_STUDY_RESEARCHER", "META_STUDY_GIT_SHA"):
        env.pop(var, None)
    up = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], env=env, capture_output=True,
                        text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        exports = dict(line[len("export "):].split("=", 1) for line in up.stdout.splitlines()
                       if line.startswith("export "))
        job_env = {**env, **{k: v.strip("'\"") for k, v in exports.items()}}
        assert "RAY_API_SERVER_ADDRESS" in job_env, up.stdout
        exp = f"job-{uuid.uuid4().hex[:6]}"
        sweep_args = ["--", "python", "sweeps/head_wd.py", "--smoke", "--tracking-uri", job_env["MLFLOW_TRACKING_URI"],
                      "--experiment", exp]
        r = subprocess.run([sys.executable, "-m", "meta_study.tune.submit", "--address", job_env["RAY_API_SERVER_ADDRESS"],
                            "--working-dir", str(REPO), "--researcher", "ada", *sweep_args,
                            "--storage-path", str(tmp_path / "ray")],
                           env=job_env, capture_output=True, text=True, timeout=900, cwd=REPO)
        assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
        s = summary(r.stdout)
        assert s["finished"] == s["trials"] == 2
        client = MlflowClient(job_env["MLFLOW_TRACKING_URI"])
        runs = child_runs(job_env["MLFLOW_TRACKING_URI"], exp)
        assert len(runs) == 2
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        for run in runs:
            check_trial_run(client, run)
            # the job's working dir has no .git: the commit came from the submitting machine
            assert run.data.tags["git_sha"].removesuffix("-dirty") == head and run.data.tags["researcher"] == "ada"
            assert len(run.data.tags["code_version"]) == 16

        # refused in one line, before Ray or MLflow are touched by the sweep
        bin_dir = Path(sys.executable).parent
        submit = [str(bin_dir / "ray"), "job", "submit", "--address", job_env["RAY_API_SERVER_ADDRESS"],
                  "--working-dir", str(REPO)]
        r = subprocess.run([*submit, "--runtime-env-json", '{"env_vars": {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}}',
                            *sweep_args, "--storage-path", str(tmp_path / "ray")],
                           env=job_env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert r.returncode != 0 and "the job's runtime_env sets AWS_SECRET_ACCESS_KEY" in r.stdout, r.stdout[-3000:]
        r = subprocess.run([*submit, *sweep_args], env=job_env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert r.returncode != 0 and "no --storage-path: under `ray job submit`" in r.stdout, r.stdout[-3000:]
        assert len(child_runs(job_env["MLFLOW_TRACKING_URI"], exp)) == 2
    finally:
        down = subprocess.run(["bash", str(REPO / "cluster" / "local-down.sh"), str(state)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]


@pytest.mark.slow(20)
def test_a_sweep_whose_trials_no_node_can_hold_is_refused_not_left_waiting(tmp_path):
    """``--gpus-per-trial 1`` on a machine without a GPU: Tune waited for good (its only word a
    warning every 60 s, hidden by --quiet). On a Ray of the sweep's own it is one line, exit 2,
    before any trial or MLflow run."""
    r = sweep("head_wd", "--gpus-per-trial", "1", "--storage-path", str(tmp_path / "sw"), "--quiet", cwd=tmp_path,
              timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "a trial needs" in r.stderr and "GPU" in r.stderr and "no Ray node can hold it" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
