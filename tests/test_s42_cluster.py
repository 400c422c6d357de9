"""Defects found in a review of cluster/local-down.sh, local-add-node.sh, kuberay/submit_refit.py and
docs/cluster.md, each with the test that failed before its fix. No Ray or MLflow starts: the
services are stand-in processes (for local-down.sh) or a fake API server (for submit_refit.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

CLUSTER = REPO / "cluster"

# A stand-in for `mlflow server` as local-up.sh starts it: the leader of its own session, naming the
# state's database on its command line, with a worker whose command line names nothing of the state
# and whose environment does (as MLflow 3.17's `python -m uvicorn ... mlflow.server.fastapi_app:app`,
# with _MLFLOW_SERVER_FILE_STORE=sqlite:///STATE/mlflow/mlflow.db). It prints the worker's PID.
FAKE_MLFLOW = """
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                          env={**os.environ, "_MLFLOW_SERVER_FILE_STORE": sys.argv[1]})
print(worker.pid, flush=True)
time.sleep(300)
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_", "MLFLOW_"))}
    return {**env, **extra}


def _hangup_default() -> None:
    """SIGHUP as a terminal's session has it, in the script about to run: under `nohup` (a CI run
    started so) it is ignored, a script cannot trap a signal ignored when it started, and a test of
    its hangup waited out its timeout."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    r = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return r.returncode == 0 and not r.stdout.strip().startswith("Z")


def _start_fake_mlflow(state):
    db = f"sqlite:///{state}/mlflow/mlflow.db"
    leader = subprocess.Popen([sys.executable, "-c", FAKE_MLFLOW, db], start_new_session=True,
                              stdout=subprocess.PIPE, text=True)
    worker = int(leader.stdout.readline())
    (state / "mlflow.pid").write_text(f"{leader.pid}\n")
    return leader, worker


def _cleanup(leader):
    """Whatever is left of the stand-in: its process group (the leader's PID, which Linux does not
    reuse while the group has members; the worker, reparented once the leader died, is one of them)."""
    try:
        os.killpg(leader.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    leader.wait()


@pytest.mark.parametrize("reaped", [False, True])
def test_local_down_stops_the_mlflow_worker_of_a_leader_that_died(tmp_path, reaped):
    """MLflow's leader killed (`kill -9`, the OOM killer) left its uvicorn worker running: local-down.sh
    said "stale pid file (pid N is another process now)" while the dead leader was a zombie not yet
    reaped (its parent init takes seconds in a container, or never), and once reaped, "leaving pid W
    alone (not ours)" (the worker's command line names no path of the state; its environment does),
    then deleted mlflow.pid: the worker kept MLflow's port and database, and nothing found it again."""
    state = tmp_path / "state dir"   # a space: every path is quoted
    (state / "mlflow").mkdir(parents=True)
    state = state.resolve()
    leader, worker = _start_fake_mlflow(state)
    try:
        leader.kill()
        if reaped:
            leader.wait()
        r = subprocess.run(["bash", str(CLUSTER / "local-down.sh"), str(state)], capture_output=True, text=True,
                           timeout=120, env=_env())
        assert r.returncode == 0, r.stderr
        assert "stale pid file" not in r.stderr and "not ours" not in r.stderr, r.stderr
        assert f"mlflow: terminating leftover processes: {worker}" in r.stderr, r.stderr
        assert not _running(worker)
        assert not (state / "mlflow.pid").exists()
    finally:
        _cleanup(leader)


def test_local_down_does_not_wait_on_a_leader_that_exited_but_is_not_reaped(tmp_path):
    """A leader that exits on SIGTERM and is left a zombie by its parent still answered kill -0:
    local-down.sh waited out the whole grace period (30 s for MLflow), said "still running after 30 s",
    then SIGKILLed the zombie and said "could not kill all of: PID" (exit 0 all the same)."""
    state = tmp_path / "st"
    (state / "mlflow").mkdir(parents=True)
    state = state.resolve()
    leader, worker = _start_fake_mlflow(state)   # its parent (this test) reaps it only at the end
    try:
        r = subprocess.run(["bash", str(CLUSTER / "local-down.sh"), str(state)], capture_output=True, text=True,
                           timeout=120, env=_env())
        assert r.returncode == 0, r.stderr
        assert f"mlflow: stopping (pid {leader.pid})" in r.stderr, r.stderr
        assert "still running" not in r.stderr and "could not kill" not in r.stderr, r.stderr
        assert f"terminating leftover processes: {worker}" in r.stderr, r.stderr   # TERM stops the leader only
        assert not _running(worker)
    finally:
        _cleanup(leader)


# --- cluster/kuberay/submit_refit.py ---------------------------------------------------------------

TEMPLATE = (CLUSTER / "kuberay" / "rayjob-refit.yaml").read_text()


@pytest.fixture
def submit_refit(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    spec = importlib.util.spec_from_file_location("submit_refit_s42", CLUSTER / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Recorder:
    """KubeApi's calls, answered at once: no refit running, the created RayJob SUCCEEDED."""

    def __init__(self, module, monkeypatch, items=(), got=None):
        self.created: list[dict] = []
        self.roots: list[str] = []
        rec = self

        def list_refits(api):
            rec.roots.append(api.root)
            return list(items)

        def create(api, rayjob):
            rec.created.append(rayjob)
            return {"metadata": {"name": "meta-study-refit-00001"}}

        monkeypatch.setattr(module.KubeApi, "list_refits", list_refits)
        monkeypatch.setattr(module.KubeApi, "create", create)
        monkeypatch.setattr(module.KubeApi, "get", lambda api, name: got or {
            "metadata": {"name": name}, "status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}})


def _main(module, template_text, tmp_path, *extra):
    template = tmp_path / "rayjob.yaml"
    template.write_text(template_text)
    return module.main(["--template", str(template), "--api", "http://127.0.0.1:9", "--poll", "0.01", *extra])


def test_submit_refit_takes_a_template_with_empty_labels_or_namespace(submit_refit, monkeypatch, tmp_path):
    """`labels:` left empty (its entries commented out) was a traceback ('NoneType' object has no
    attribute 'update'), and `namespace:` left empty sent every call to the namespace "None"."""
    rec = _Recorder(submit_refit, monkeypatch)
    empty = TEMPLATE.replace("  labels:\n    app.kubernetes.io/name: meta-study-refit\n"
                             "    app.kubernetes.io/part-of: meta-study\n", "  labels:\n")
    empty = empty.replace("  namespace: meta-study\n", "  namespace:\n")
    assert "  labels:\n  annotations" in empty or "  labels:\nspec:" in empty, empty[:1500]
    assert "  namespace:\n" in empty
    assert _main(submit_refit, empty, tmp_path) == 0
    assert rec.created[0]["metadata"]["labels"] == {"app.kubernetes.io/name": "meta-study-refit"}
    assert rec.roots == ["http://127.0.0.1:9/apis/ray.io/v1/namespaces/default/rayjobs"]
    assert rec.created[0]["metadata"]["namespace"] == "default"


@pytest.mark.parametrize("edit, says", [
    # metadata.name wins over generateName: the first refit took it, every later one failed (409)
    (lambda t: t.replace("  generateName: meta-study-refit-\n",
                         "  generateName: meta-study-refit-\n  name: meta-study-refit\n"),
     "metadata.name is set (meta-study-refit); remove it"),
    (lambda t: t.replace("  labels:\n    app.kubernetes.io/name: meta-study-refit\n",
                         "  labels:\n    - app.kubernetes.io/name=meta-study-refit\n").replace(
                             "    app.kubernetes.io/part-of: meta-study\n", ""),
     "metadata.labels is not a mapping"),
    (lambda t: "kind: RayJob\nmetadata: generateName\n", "not a RayJob with metadata.generateName"),
])
def test_submit_refit_refuses_a_template_it_cannot_use_in_one_line(submit_refit, monkeypatch, tmp_path, capsys,
                                                                    edit, says):
    """Each was a traceback (AttributeError: list / str has no setdefault) or, for metadata.name, a
    refit that worked once and then failed every night."""
    rec = _Recorder(submit_refit, monkeypatch)
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, edit(TEMPLATE), tmp_path)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("submit_refit: --template ") and says in err, err
    assert err.count("\n") == 1 and not rec.created and not rec.roots


def _stamp(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


def test_submit_refit_fails_on_a_refit_the_operator_never_took_up(submit_refit, monkeypatch, tmp_path, capsys):
    """A RayJob that KubeRay never gives a status (no operator, or one that refuses the RayJob: KubeRay
    1.x leaves an invalid spec or metadata with an event only) counted as running for good: every
    later schedule said "not submitting: refit X is still running" and exited 0, so nightly refits
    stopped with nothing failing. A fresh one (the operator takes seconds) is still waited for."""
    old = {"metadata": {"name": "meta-study-refit-stuck", "creationTimestamp": "2026-01-01T03:17:00Z"}}
    rec = _Recorder(submit_refit, monkeypatch, items=[old])
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, TEMPLATE, tmp_path)
    assert isinstance(e.value.code, str) and e.value.code.startswith(
        "submit_refit: RayJob meta-study-refit-stuck (created 2026-01-01T03:17:00Z) has no status from the KubeRay "
        "operator after 15 min: is the operator running"), e.value.code
    assert e.value.code.endswith("not submitting another") and not rec.created

    fresh = {"metadata": {"name": "meta-study-refit-new", "creationTimestamp": _stamp(60)}, "status": {}}
    rec = _Recorder(submit_refit, monkeypatch, items=[fresh])
    assert _main(submit_refit, TEMPLATE, tmp_path) == 0 and not rec.created
    assert "not submitting: refit meta-study-refit-new is still running" in capsys.readouterr().out

    # the one this pod created, never taken up: its wait ends in the same line, not at the pod's deadline
    got = {"metadata": {"name": "meta-study-refit-00001", "creationTimestamp": _stamp(3600)}}
    rec = _Recorder(submit_refit, monkeypatch, got=got)
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, TEMPLATE, tmp_path)
    assert "RayJob meta-study-refit-00001 (created " in e.value.code and e.value.code.endswith("stopped waiting for it")
    assert len(rec.created) == 1


def test_submit_refit_says_that_the_api_servers_port_is_missing(submit_refit, monkeypatch, tmp_path, capsys):
    """KUBERNETES_SERVICE_HOST without KUBERNETES_SERVICE_PORT (and no --api) was a KeyError traceback."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    template = tmp_path / "rayjob.yaml"
    template.write_text(TEMPLATE)
    with pytest.raises(SystemExit) as e:
        submit_refit.main(["--template", str(template)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == ("submit_refit: KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT "
                                         "is not: set it, or pass --api and --token-file\n")


# --- cluster/local-add-node.sh -----------------------------------------------------------------------

# The head's interpreter with Ray's CLI faked: a head that lists one node, and a node that never joins.
FAKE_HEAD_PYTHON = """#!/bin/bash
case "$1 $2 $3" in
  "-c import ray "*) exit 0 ;;
  "-m ray.scripts.scripts status") printf 'Active:\\n 1 node_abc\\nPending:\\n (no pending nodes)\\n'; exit 0 ;;
  "-m ray.scripts.scripts start") exec sleep 300 ;;
esac
exec {python} "$@"
"""


@pytest.fixture
def fake_head(tmp_path):
    """A state directory whose head "runs" (a process naming its --temp-dir) with Ray's CLI faked."""
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    (state / "bin").mkdir()
    fake = state / "bin" / "python"
    fake.write_text(FAKE_HEAD_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\nexport RAY_AUTH_MODE=token\n"
                                  "export RAY_AUTH_TOKEN_PATH=/dev/null\n")
    head = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             f"--temp-dir={os.path.realpath(state / 'ray')}"])
    (state / "ray.pid").write_text(f"{head.pid}\n")
    yield state
    head.kill()
    head.wait()
    for pidfile in state.glob("n*.pid"):   # a fake node left behind: a `sleep 300` leading its session
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.mark.parametrize("value", ["2m", "abc", "-5", "0"])
def test_local_add_node_refuses_a_timeout_that_is_not_a_number_of_seconds(fake_head, value):
    """META_STUDY_UP_TIMEOUT=2m was bash's "value too great for base" (three times) around a node
    started and stopped again; "abc" an "unbound variable"; "-5" and "0" a node started only to be
    stopped at once ("did not join in -5 s")."""
    r = subprocess.run(["bash", str(CLUSTER / "local-add-node.sh"), str(fake_head), "n2"], capture_output=True,
                       text=True, timeout=60, env=_env(META_STUDY_UP_TIMEOUT=value))
    assert r.returncode == 1 and r.stderr == (f"local-add-node: error: META_STUDY_UP_TIMEOUT={value}: not a whole "
                                              "number of seconds > 0\n"), r.stderr
    assert not (fake_head / "n2.log").exists()   # nothing was started


def test_local_add_node_stops_its_node_when_its_terminal_hangs_up(fake_head):
    """SIGHUP (the terminal or SSH session closed while the node joined) ran the exit trap with
    status 0: the node (its own session, which the hangup never reaches) was left running with its
    NAME.pid, free to join after the script had gone, though the script promises to stop a node
    that has not joined when it is interrupted."""
    script = subprocess.Popen(["bash", str(CLUSTER / "local-add-node.sh"), str(fake_head), "n3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(META_STUDY_UP_TIMEOUT="120"), preexec_fn=_hangup_default)
    try:
        pidfile = fake_head / "n3.pid"
        for _ in range(600):   # until the node is started (under load: seconds)
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        node = int(pidfile.read_text())
        script.send_signal(signal.SIGHUP)
        _, err = script.communicate(timeout=60)
        assert script.returncode == 129, err
        assert f"stopping n3 (pid {node}), which did not join" in err, err
        assert not pidfile.exists() and not _running(node)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()


# --- docs/cluster.md ---------------------------------------------------------------------------------

def test_cluster_doc_says_how_local_up_tells_that_mlflow_is_up():
    """The doc said local-up.sh waits until "MLflow's `/health` answers"; it waits for MLflow's REST
    API (its Default experiment), because a /health that answered was once another server on the port."""
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert "MLflow's `/health` answers" not in doc
    assert "MLflow's REST API answers as MLflow does (its `Default` experiment" in doc
    assert "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default" in (CLUSTER / "local-up.sh").read_text()


@pytest.mark.slow(15)
def test_local_down_says_so_when_a_process_outlives_sigkill(tmp_path):
    """A process that SIGKILL does not end (stuck in the kernel: a hung GPU driver or NFS call) was
    reported as "could not kill all of: PID", then "mlflow: stopped", its PID file deleted and exit 0:
    nothing knew of it any more. `ps` is faked to report the worker alive whatever happens to it."""
    state = tmp_path / "st"
    (state / "mlflow").mkdir(parents=True)
    state = state.resolve()
    leader, worker = _start_fake_mlflow(state)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ps").write_text(f"""#!/bin/bash
[ "$*" = "-o stat= -p {worker}" ] && {{ echo D; exit 0; }}
exec {shutil.which("ps")} "$@"
""")
    (bin_dir / "ps").chmod(0o755)
    try:
        r = subprocess.run(["bash", str(CLUSTER / "local-down.sh"), str(state)], capture_output=True, text=True,
                           timeout=120, env=_env(PATH=f"{bin_dir}:{os.environ['PATH']}"))
        assert r.returncode == 1, r.stderr
        assert (f"mlflow: error: still running after SIGKILL: {worker}; kept {state}/mlflow.pid (run "
                "local-down.sh again once they are gone)") in r.stderr, r.stderr
        assert "mlflow: stopped" not in r.stderr and (state / "mlflow.pid").exists()
    finally:
        _cleanup(leader)


# --- local-up.sh ---------------------------------------------------------------------------------

UP_FAKE_PYTHON = """#!/bin/bash
d={argv_dir}
case "$1 $2 $3" in
  "-c import ray"*|"-c import sys, ray._private"*) exit 0 ;;
  "-c import grpc"*) exit 1 ;;
  "-m ray.scripts.scripts status") exit 1 ;;                     # the head is never healthy
  "-m ray.scripts.scripts start") echo $$ > "$d/ray.started"; exec sleep 300 ;;
  "-m mlflow server") echo $$ > "$d/mlflow.started"; exec sleep 300 ;;
esac
exec {python} "$@"
"""


@pytest.mark.parametrize("value", ["2m", "abc", "-5", "0"])
def test_local_up_refuses_a_timeout_that_is_not_a_number_of_seconds(tmp_path, value):
    """META_STUDY_UP_TIMEOUT=2m failed wait_healthy's arithmetic: local-up printed "up" and env.sh
    for services whose health was never checked. Now one line before anything starts."""
    state = tmp_path / "st"
    r = subprocess.run(["bash", str(CLUSTER / "local-up.sh"), str(state)], capture_output=True, text=True,
                       # an interpreter that has nothing: should the check not come first, nothing starts
                       timeout=60, env=_env(META_STUDY_UP_TIMEOUT=value, PYTHON="false"))
    assert r.returncode == 1 and r.stderr == (f"local-up: error: META_STUDY_UP_TIMEOUT={value}: not a whole "
                                              "number of seconds > 0\n"), r.stderr
    assert not state.exists()      # nothing was made, nothing started


def test_local_up_stops_what_it_started_when_its_terminal_hangs_up(tmp_path):
    """SIGHUP (the terminal or SSH session closed while local-up waited for the services) ran the
    exit trap with status 0: Ray and MLflow were left running with their PID files and no env.sh.
    Now it exits 129 and stops what it started, as on Ctrl-C."""
    fake = tmp_path / "python"
    fake.write_text(UP_FAKE_PYTHON.format(argv_dir=tmp_path, python=sys.executable))
    fake.chmod(0o755)
    state = tmp_path / "st"
    script = subprocess.Popen(["bash", str(CLUSTER / "local-up.sh"), str(state)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=_env(PYTHON=str(fake), META_STUDY_UP_TIMEOUT="300"), preexec_fn=_hangup_default)
    started = [tmp_path / "ray.started", tmp_path / "mlflow.started"]
    try:
        for _ in range(1200):   # until both fakes run (under load: seconds)
            if all(p.exists() and p.read_text().strip() for p in started):
                break
            assert script.poll() is None, script.communicate()
            time.sleep(0.1)
        time.sleep(0.5)         # local-up is in its health wait now
        script.send_signal(signal.SIGHUP)
        _, err = script.communicate(timeout=120)
        assert script.returncode == 129, err
        assert "failed; stopping what was started" in err, err
        assert not (state / "env.sh").exists()
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        for p in started:       # the fakes (a `sleep` names no state directory: local-down leaves it)
            if p.exists() and p.read_text().strip():
                try:
                    os.kill(int(p.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if (state / "ray").is_symlink():   # Ray's short temp dir under /tmp
            shutil.rmtree(os.path.realpath(state / "ray"), ignore_errors=True)
