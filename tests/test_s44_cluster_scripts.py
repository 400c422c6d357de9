"""Defects found in a review of cluster/local-up.sh, local-down.sh and local-add-node.sh, each with
the test that failed before its fix. No Ray or MLflow starts: their CLIs are faked by an interpreter
that runs stand-in processes (named as the real ones are, so local-down.sh stops them)."""

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


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "META_STUDY_", "MLFLOW_"))}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def _script(name, *args, timeout=120, **env):
    return subprocess.run(["bash", str(CLUSTER / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env))


# An interpreter for local-up.sh with Ray's and MLflow's CLIs faked: `ray start` and `mlflow server`
# are sleeping Pythons that carry the real arguments (so local-down.sh knows them for ours), `ray
# status` shows the head's resources and MLflow's health check passes when HEALTHY is 1; `ray start`
# records its arguments in ARGS. Everything else is the real interpreter.
FAKE_UP_PYTHON = """#!/bin/bash
case "$1 $2 $3" in
  "-c import ray, mlflow"*|"-c import sys, ray._private"*) exit 0 ;;
  "-c import grpc"*) exit 1 ;;
  "-m ray.scripts.scripts status") [ {healthy} = 1 ] || exit 1; printf 'Node status\\nResources\\n 1.0 CPU\\n'; exit 0 ;;
  "-m ray.scripts.scripts start") printf '%s\\n' "$@" > {args}; exec {python} -c 'import time; time.sleep(300)' "$@" ;;
  "-m mlflow server") exec {python} -c 'import time; time.sleep(300)' "$@" ;;
esac
if [ "$1" = - ] && [[ "$2" == http://* ]] && [ {healthy} = 1 ]; then cat > /dev/null; exit 0; fi
exec {python} "$@"
"""


def _fake_up_python(where: Path, healthy: bool) -> tuple[Path, Path]:
    fake, args = where / "fakepython", where / "ray-start-args"
    fake.write_text(FAKE_UP_PYTHON.format(python=sys.executable, args=args, healthy=int(healthy)))
    fake.chmod(0o755)
    return fake, args


def _forget_stand_in(state: Path) -> None:
    """local-down.sh keeps Ray's short stand-in under /tmp (its session logs); a test removes it."""
    if (state / "ray").is_symlink():
        shutil.rmtree(os.path.realpath(state / "ray"), ignore_errors=True)


# --- local-down.sh: a directory that is no state directory -------------------------------------------

def test_local_down_leaves_a_directory_that_is_no_state_directory_alone(tmp_path):
    """`local-down.sh DIR` of a directory local-up.sh never ran in (a mistyped argument,
    META_STUDY_LOCAL_DIR set to a project) deleted its env.sh, took every *.pid file there for a Ray
    node's and deleted another program's PID file as "stale", left a .lock, and exited 0 saying
    "ray: not running"."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "env.sh").write_text("export DATABASE_URL=postgres://db/app\n")
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (project / "daemon.pid").write_text(f"{daemon.pid}\n")
        r = _script("local-down.sh", project)
        assert r.returncode == 0, r.stderr
        assert r.stderr == (f"local-down: nothing to stop: {project.resolve()} is no state directory of "
                            "cluster/local-up.sh (no ray-auth-token, ray.pid or mlflow.pid); left as it is\n")
        assert sorted(p.name for p in project.iterdir()) == ["daemon.pid", "env.sh"]   # no .lock either
        assert daemon.poll() is None
    finally:
        daemon.kill()
        daemon.wait()


def test_local_down_still_stops_a_state_whose_startup_failed(tmp_path):
    """What local-up.sh leaves for local-down.sh to stop always holds its token: the check above
    does not make local-down.sh skip a real state directory (here only the token and env.sh)."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "ray-auth-token").write_text("0" * 64)
    (state / "env.sh").write_text("export RAY_ADDRESS=127.0.0.1:9\n")
    r = _script("local-down.sh", state)
    assert r.returncode == 0 and "ray: not running" in r.stderr and "mlflow: not running" in r.stderr, r.stderr
    assert not (state / "env.sh").exists()


# --- local-up.sh: quoting for /bin/sh --------------------------------------------------------------------

def _posix_sh() -> str:
    return shutil.which("dash") or "/bin/sh"


def test_local_up_writes_a_python_wrapper_that_sh_runs_for_a_non_ascii_path(tmp_path):
    """STATE_DIR/bin/python is a /bin/sh script, written with bash's `printf %q`: under the C locale
    (cron, ssh or a container without LANG) a path with a non-ASCII letter became $'...\\303\\251...',
    which dash does not know, so `python` failed ("not found") in every job of the cluster."""
    pydir = tmp_path / "py é"
    pydir.mkdir()
    python = pydir / "python3"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    state = tmp_path / "st"
    # stops at the bad port, after the wrapper is written and before anything starts
    r = _script("local-up.sh", state, PYTHON=str(python), LC_ALL="C", META_STUDY_RAY_PORT="abc")
    assert r.returncode == 1 and "META_STUDY_RAY_PORT=abc: not a port number" in r.stderr, r.stderr
    for name in ("python", "python3"):
        ran = subprocess.run([_posix_sh(), str(state / "bin" / name), "-c", "print(6 * 7)"], capture_output=True,
                             text=True, timeout=60, env=_env(LC_ALL="C"))
        assert ran.returncode == 0 and ran.stdout == "42\n", (ran.stderr, (state / "bin" / name).read_text())


def test_local_up_writes_an_env_sh_that_sh_reads_for_a_non_ascii_path(tmp_path):
    """env.sh's RAY_AUTH_TOKEN_PATH was written with `printf %q`: $'...' under the C locale for a
    state directory with a non-ASCII letter, which `. env.sh` in sh (and a systemd environment file,
    where docs/cluster.md copies the line) took for a path that names no file."""
    fake, _ = _fake_up_python(tmp_path, healthy=True)
    state = tmp_path / "stäte"
    try:
        r = _script("local-up.sh", state, PYTHON=str(fake), LC_ALL="C", META_STUDY_UP_TIMEOUT="60")
        assert r.returncode == 0, r.stderr
        read = subprocess.run([_posix_sh(), "-c", '. "$1" && printf %s "$RAY_AUTH_TOKEN_PATH"', "sh",
                               str(state / "env.sh")], capture_output=True, text=True, timeout=60,
                              env=_env(LC_ALL="C"))
        assert read.returncode == 0 and read.stdout == str((state / "ray-auth-token").resolve()), read
        assert r.stdout == (state / "env.sh").read_text()
    finally:
        down = _script("local-down.sh", state)
        _forget_stand_in(state)
    assert down.returncode == 0 and "ray: stopped" in down.stderr and "mlflow: stopped" in down.stderr, down.stderr


# --- local-up.sh: Ray's stand-in under /tmp ----------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_local_up_does_not_run_ray_in_a_stand_in_another_user_made(tmp_path):
    """STATE_DIR/ray links a deep state directory to a short one under /tmp. After /tmp was cleaned
    (a reboot), another user could make a directory of that name: local-up.sh started Ray in it (its
    sockets and session logs in a directory that user controls)."""
    fake, args = _fake_up_python(tmp_path, healthy=False)
    state = tmp_path / "a-state-directory-deep-enough-for-a-stand-in"
    state.mkdir()
    foreign = Path(tempfile.mkdtemp(prefix="msfo", dir="/tmp"))
    os.chown(foreign, 65534, 65534)   # nobody's
    os.chmod(foreign, 0o777)
    (state / "ray").symlink_to(foreign)
    try:
        r = _script("local-up.sh", state, PYTHON=str(fake), META_STUDY_UP_TIMEOUT="1")
        assert r.returncode == 1 and "not healthy after 1 s" in r.stderr, r.stderr
        assert f"{state}/ray links to {foreign}, which is not yours; making a new one" in r.stderr, r.stderr
        temp_dir = next(a for a in args.read_text().splitlines() if a.startswith("--temp-dir="))
        ours = Path(os.path.realpath(state / "ray"))
        assert temp_dir == f"--temp-dir={ours}" and ours != foreign and ours.stat().st_uid == os.geteuid()
        assert not (state / "ray.pid").exists() and not (state / "mlflow.pid").exists()   # stopped again
    finally:
        _script("local-down.sh", state)
        _forget_stand_in(state)
        shutil.rmtree(foreign, ignore_errors=True)


def test_local_up_replaces_a_stand_in_link_whose_target_is_gone_in_a_short_state(tmp_path):
    """A state directory moved from a deep path to a short one after /tmp was cleaned kept its link
    STATE_DIR/ray to a stand-in that was gone: local-up.sh died in `mkdir -p` ("File exists")."""
    fake, args = _fake_up_python(tmp_path, healthy=False)
    short = Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))
    state = short / "st"
    state.mkdir()
    (state / "ray").symlink_to(short / "gone")
    try:
        r = _script("local-up.sh", state, PYTHON=str(fake), META_STUDY_UP_TIMEOUT="1")
        assert r.returncode == 1 and "not healthy after 1 s" in r.stderr, r.stderr   # it started, then gave up
        assert (state / "ray").is_dir() and not (state / "ray").is_symlink()
        assert f"--temp-dir={state.resolve()}/ray\n" in args.read_text()
    finally:
        _script("local-down.sh", state)
        shutil.rmtree(short, ignore_errors=True)


# --- local-add-node.sh -----------------------------------------------------------------------------------

# The head's interpreter with Ray's CLI faked: a head that lists one node, and a node that never joins.
FAKE_HEAD_PYTHON = """#!/bin/bash
case "$1 $2 $3" in
  "-c import ray "*) exit 0 ;;
  "-m ray.scripts.scripts status") printf 'Active:\\n 1 node_abc\\nPending:\\n (no pending nodes)\\n'; exit 0 ;;
  "-m ray.scripts.scripts start") exec sleep 300 ;;
esac
exec {python} "$@"
"""


def test_local_add_node_leaves_no_status_file_behind(tmp_path):
    """Every run left STATE_DIR/NAME.status-err (`ray status`'s stderr, kept to quote in errors)."""
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
    try:
        (state / "ray.pid").write_text(f"{head.pid}\n")
        r = _script("local-add-node.sh", state, "n2", META_STUDY_UP_TIMEOUT="2")
        assert r.returncode == 1 and "error: n2 did not join in 2 s" in r.stderr, r.stderr
        assert not (state / "n2.status-err").exists()
        assert not (state / "n2.pid").exists()
    finally:
        head.kill()
        head.wait()
        if (state / "n2.pid").exists():
            try:
                os.killpg(int((state / "n2.pid").read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


# --- docs: the documented start of a local cluster -------------------------------------------------------

def test_the_documented_start_stops_a_script_when_local_up_fails():
    """`eval "$(cluster/local-up.sh)"` is status 0 when local-up.sh fails (eval of nothing): a script
    under `set -e` went on without RAY_ADDRESS, and its sweep started a Ray of its own and logged to
    ./mlruns. The docs and the script's usage show forms whose status is local-up.sh's."""
    failed = subprocess.run(["bash", "-ec", 'eval "$(exit 3)"; echo went-on'], capture_output=True, text=True)
    assert failed.stdout == "went-on\n"   # why that form is not shown
    for text in ((REPO / "docs" / "cluster.md").read_text(), (CLUSTER / "local-up.sh").read_text()):
        assert 'eval "$(cluster/local-up.sh)"   ' not in text and 'eval "$(cluster/local-up.sh)"\n' not in text
    assert "cluster/local-up.sh && . meta-study-local/env.sh" in (REPO / "docs" / "cluster.md").read_text()
    assert 'lines="$(cluster/local-up.sh)" && eval "$lines"' in (CLUSTER / "local-up.sh").read_text()


# --- cluster/kuberay/submit_refit.py ---------------------------------------------------------------------

TEMPLATE = (CLUSTER / "kuberay" / "rayjob-refit.yaml").read_text()


@pytest.fixture
def submit_refit(monkeypatch):
    import importlib.util

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    spec = importlib.util.spec_from_file_location("submit_refit_s44", CLUSTER / "kuberay" / "submit_refit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(module, tmp_path, *extra, template_text=TEMPLATE):
    template = tmp_path / "rayjob.yaml"
    template.write_text(template_text)
    return module.main(["--template", str(template), "--api", "http://127.0.0.1:9", "--poll", "0.01", *extra])


@pytest.mark.parametrize("text, says", [
    # a RayJob and the volume it needs in one file, as `kubectl apply -f` takes them
    (TEMPLATE + "---\n" + (CLUSTER / "kuberay" / "refit-volume.yaml").read_text(),
     f"line {len(TEMPLATE.splitlines()) + 1}: expected a single document in the stream"),   # at the `---`
    (TEMPLATE.replace("  namespace: meta-study\n", "  namespace: meta-study: x\n"),
     "line 18: mapping values are not allowed here"),
])
def test_submit_refit_says_why_a_template_is_not_yaml(submit_refit, tmp_path, capsys, text, says):
    """Any YAML error was "--template FILE: not YAML", with neither the line nor the reason: a
    template of two documents (a `---` and the volume appended) looked like a file of another kind."""
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, tmp_path, template_text=text)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"submit_refit: --template {tmp_path / 'rayjob.yaml'}: not YAML ({says})\n"


def test_submit_refit_names_the_api_error_it_gave_up_on(submit_refit, monkeypatch, tmp_path):
    """API errors while waiting are retried without a word (an API server restart must not fail a
    refit); giving up said "N API errors in a row while waiting for NAME" and nothing of what they
    were: an expired or revoked token's HTTP 401 looked like a flaky network."""
    import urllib.error

    def unauthorized(api, name):
        raise urllib.error.HTTPError(api.root + "/" + name, 401, "Unauthorized", {}, None)

    monkeypatch.setattr(submit_refit.KubeApi, "list_refits", lambda api: [])
    monkeypatch.setattr(submit_refit.KubeApi, "create", lambda api, rayjob: {"metadata": {"name": "meta-study-refit-1"}})
    monkeypatch.setattr(submit_refit.KubeApi, "get", unauthorized)
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, tmp_path, "--max-api-errors", "2")
    assert e.value.code == ("submit_refit: 3 API errors in a row while waiting for meta-study-refit-1 at "
                            "http://127.0.0.1:9/apis/ray.io/v1/namespaces/meta-study/rayjobs "
                            "(the last: HTTP 401 Unauthorized)")


def test_submit_refit_names_a_ca_file_that_holds_no_certificate(submit_refit, tmp_path):
    """A --ca-file that is no CA bundle, given outside a pod, was said as "cannot read the pod's
    ServiceAccount files": files the user had not named, and that do not exist there."""
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate\n")
    with pytest.raises(SystemExit) as e:
        _main(submit_refit, tmp_path, "--ca-file", str(ca))
    assert str(e.value.code).startswith(f"submit_refit: cannot read --ca-file {ca}: "), e.value.code
    assert "\n" not in str(e.value.code)


# --- render.sh -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--help", "-h", "-x"])
def test_render_takes_help_and_refuses_other_options(tmp_path, option):
    """With BUCKET and REGISTRY set, `render.sh --help` was taken for OUT_DIR: it printed mkdir's help
    and exited 2; `-x` was mkdir's "invalid option". Now its usage, or one line, as its siblings do."""
    r = subprocess.run(["bash", str(CLUSTER / "render.sh"), option], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path, env=_env(BUCKET="my-lab-bucket", REGISTRY="ghcr.io/my-lab"))
    if option == "-x":
        assert r.returncode == 2 and r.stderr == ("render: unknown option -x; usage: BUCKET=... REGISTRY=... "
                                                  "cluster/render.sh OUT_DIR (--help)\n"), r.stderr
    else:
        assert r.returncode == 0 and r.stdout.startswith("Fill in the two site-specific names"), r.stdout
        assert "mkdir" not in r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []
