"""Review s47 of where Ray comes from (meta_study/ray_session.py) and the local cluster scripts:
a Ray of our own leaves no temp directory behind, a stale RAY_AUTH_TOKEN_PATH does not break it,
and a cluster address whose name does not resolve is one line within the connect timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import REPO


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


DRIVER = textwrap.dedent("""
    import os, sys, time
    from meta_study.ray_session import start_or_connect
    ray = start_or_connect("local", num_cpus=1, quiet=True)
    first = ray._private.worker._global_node.get_temp_dir_path()
    first_session = ray._private.worker._global_node.get_session_dir_path()
    ray.shutdown()
    ray = start_or_connect("local", num_cpus=1, quiet=True)
    node = ray._private.worker._global_node

    @ray.remote
    def pid():
        return os.getpid()

    ray.get(pid.remote())
    print(first, first_session, os.path.exists(first), node.get_temp_dir_path(), node.get_session_dir_path(),
          oct(os.stat(node.get_temp_dir_path()).st_mode & 0o777), flush=True)
    time.sleep(600)
""")


@pytest.mark.slow(60)
def test_own_ray_leaves_no_temp_directory_behind():
    # Every Ray of our own left its session directory in Ray's shared /tmp/ray (403 of them, 195 MB
    # after a day of tests): now each has a temp directory of its own, removed by the next one in
    # the same process and by the watchdog when the driver is gone (here: SIGKILLed).
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline().split()
        assert len(line) == 6, driver.stderr.read()[-3000:] if driver.stderr else ""
        first, first_session, first_kept, second, second_session, mode = line
    finally:
        driver.kill()
        driver.wait(timeout=60)
    ray_shared = os.path.join(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp", "ray")
    for temp, session in ((first, first_session), (second, second_session)):
        assert not temp.startswith(ray_shared + os.sep), temp     # not Ray's shared /tmp/ray
        assert session.startswith(temp + os.sep), (temp, session)
    assert first != second
    assert first_kept == "False"            # removed when the second Ray of our own started
    assert mode == "0o700"                  # Ray made it 0777
    deadline = time.monotonic() + 60        # the watchdog removes the second once its processes are gone
    while os.path.exists(second) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(second), os.listdir(second)


def test_a_token_path_without_a_token_gets_a_fresh_token(tmp_path, monkeypatch):
    # `. env.sh` of a state directory deleted since: ray.init of a Ray of our own failed with Ray's
    # AuthenticationError ("RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty"), a traceback
    from meta_study import ray_session

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    for path in (tmp_path / "gone" / "ray-auth-token", empty):
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
        env = ray_session._private_token_env()
        assert env["RAY_AUTH_MODE"] == "token" and len(env.get("RAY_AUTH_TOKEN", "")) == 64, (path, env)
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert ray_session._private_token_env() == {"RAY_AUTH_MODE": "token"}     # the user's token is kept


def test_a_name_that_does_not_resolve_in_time_is_one_line(monkeypatch):
    # A DNS server that does not answer: the name's resolution was not bounded by the connect
    # timeout (glibc: 5 s per try, server and search domain), only the connect was.
    from meta_study import ray_session
    from meta_study.errors import UserError

    release = threading.Event()
    real = socket.getaddrinfo

    def stuck(host, *a, **kw):
        if host == "head.invalid-s47":
            release.wait(20)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    try:
        with pytest.raises(UserError) as e:
            ray_session.check_address("head.invalid-s47:6379", timeout_s=0.2)
    finally:
        release.set()
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("--address head.invalid-s47:6379: no Ray cluster (GCS) answers there")
    assert "did not resolve within 0.2 s" in msg, msg


def test_a_name_that_does_not_exist_still_says_so(monkeypatch):
    from meta_study import ray_session
    from meta_study.errors import UserError

    def unknown(host, *a, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(UserError, match=r"no Ray cluster \(GCS\) answers there \(name or service not known\)$"):
        ray_session.check_address("headnode:6379", timeout_s=1)


def test_connect_within_reaches_a_loopback_listener():
    from meta_study import ray_session

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with ray_session._connect_within("127.0.0.1", server.getsockname()[1], 5) as sock:
            assert sock.getpeername()[0] == "127.0.0.1"
    # a closed port: the OS's refusal, as before
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        ray_session._connect_within("127.0.0.1", port, 5).close()




ORPHAN_LEADER = textwrap.dedent("""
    import os, subprocess, sys
    os.setsid()                   # a session leader, as local-up.sh starts `ray start --block`
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "--temp-dir=" + sys.argv[1]],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(os.getpid(), child.pid, flush=True)
""")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow(30)
def test_local_up_stops_what_a_dead_heads_session_left(tmp_path):
    # The head's leader (`ray start --block`) SIGKILLed: its GCS and raylet lived on in its session.
    # local-up.sh started a new head beside them and overwrote ray.pid, so they ran for good.
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    ray_tmp = str((state / "ray").resolve())
    leader = subprocess.run([sys.executable, "-c", ORPHAN_LEADER, ray_tmp], capture_output=True, text=True,
                            timeout=60, check=True)
    leader_pid, orphan = map(int, leader.stdout.split())
    try:
        assert not _alive(leader_pid) and _alive(orphan)
        (state / "ray.pid").write_text(f"{leader_pid}\n")
        # stopped by a bad setting, after the leftovers are dealt with and before anything starts
        env = {**os.environ, "PYTHON": sys.executable, "META_STUDY_RAY_PORT": "notaport"}
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 1 and "META_STUDY_RAY_PORT=notaport: not a port number" in r.stderr, r.stderr
        assert "stopping what is left of an earlier start" in r.stderr, r.stderr
        deadline = time.monotonic() + 30
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(orphan), r.stderr
        assert not (state / "ray.pid").exists()
    finally:
        if _alive(orphan):
            os.kill(orphan, 9)


@pytest.mark.slow(30)
def test_local_up_leaves_a_session_that_is_not_its_own_alone(tmp_path):
    # a stale ray.pid whose PID now leads another program's session: nothing of it is signalled
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    other = str(tmp_path / "elsewhere")
    leader = subprocess.run([sys.executable, "-c", ORPHAN_LEADER, other], capture_output=True, text=True,
                            timeout=60, check=True)
    leader_pid, stranger = map(int, leader.stdout.split())
    try:
        (state / "ray.pid").write_text(f"{leader_pid}\n")
        env = {**os.environ, "PYTHON": sys.executable, "META_STUDY_RAY_PORT": "notaport"}
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-up.sh"), str(state)], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 1 and "not a port number" in r.stderr, r.stderr
        assert _alive(stranger), r.stderr
    finally:
        if _alive(stranger):
            os.kill(stranger, 9)


def test_own_temp_dir_is_fresh_private_short_and_replaces_the_last(tmp_path, monkeypatch):
    import shutil
    import tempfile

    from meta_study import ray_session

    monkeypatch.setattr(ray_session, "_own_temp_dirs", [])
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))   # pytest's tmp_path: too long for Ray's sockets below it
    short = tempfile.mkdtemp(prefix="s47-", dir="/tmp")
    made = []
    try:
        made.append(ray_session._own_temp_dir())
        first = made[0]
        assert os.path.dirname(first) == "/tmp" and os.path.basename(first).startswith("ms-ray-")
        assert os.stat(first).st_mode & 0o777 == 0o700
        # a short $RAY_TMPDIR is where Ray itself would go: taken; the one before is removed
        monkeypatch.setenv("RAY_TMPDIR", short)
        made.append(ray_session._own_temp_dir())
        assert os.path.dirname(made[1]) == short and not os.path.exists(first)
        assert ray_session._own_temp_dirs == [made[1]]
    finally:
        for d in made + [short]:
            shutil.rmtree(d, ignore_errors=True)


def test_a_token_file_that_cannot_be_read_is_one_line_before_joining(tmp_path, monkeypatch):
    # a refit run as another user than local-up.sh's (its token file is 0600), or a deleted state
    # directory: Ray's error was cut at 200 characters under a hint "is it this cluster's token?"
    from meta_study import ray_session
    from meta_study.errors import UserError

    calls = []

    class FakeRay:
        def init(self, **kw):
            calls.append(kw)

    monkeypatch.setattr(ray_session, "check_address", lambda *a, **kw: None)   # a cluster answers there
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, why in ((tmp_path / "gone" / "ray-auth-token", "no such file or directory"), (empty, "empty")):
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
        for check in (lambda: ray_session._connect(FakeRay(), "127.0.0.1:6379", {}),
                      lambda: ray_session.check_target("127.0.0.1:6379")):
            with pytest.raises(UserError) as e:
                check()
            msg = str(e.value)
            assert msg.startswith(f"--address 127.0.0.1:6379: RAY_AUTH_TOKEN_PATH {path}: no Ray token can be read "
                                  f"there ({why})"), msg
            assert "\n" not in msg
    assert calls == []
    # a token there, or RAY_AUTH_TOKEN (which Ray prefers), or no token mode: Ray is asked as before
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    ray_session._connect(FakeRay(), "127.0.0.1:6379", {})
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(empty))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "cd" * 32)
    ray_session._connect(FakeRay(), "127.0.0.1:6379", {})
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_session._connect(FakeRay(), "127.0.0.1:6379", {})
    assert len(calls) == 3


AGENT_LEADER = textwrap.dedent("""
    import os, subprocess, sys
    os.setsid()
    logs = os.path.join(sys.argv[1], "session_x", "logs")
    os.makedirs(logs, exist_ok=True)
    # Ray's agent: its command line is its setproctitle, naming no directory of the state
    agent = subprocess.Popen(["ray::DashboardAgent", "-c", "import os, time; f = open(os.environ['LOG'], 'w'); "
                              "print(flush=True); time.sleep(600)"], executable=sys.executable,
                             env={**os.environ, "LOG": os.path.join(logs, "dashboard_agent.log")},
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    agent.stdout.readline()     # its log is open
    # another program's process in that session, holding nothing of the state's: left alone
    stranger = subprocess.Popen(["ray::Other", "-c", "import time; time.sleep(600)"], executable=sys.executable,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    print(os.getpid(), agent.pid, stranger.pid, flush=True)
""")


@pytest.mark.slow(20)
def test_local_down_stops_the_agents_of_a_head_whose_leader_died(tmp_path):
    # With the head's `ray start --block` gone, Ray's dashboard and runtime-env agents (whose
    # command line names no directory of the state) were "left alone (not ours)", listening for minutes.
    state = tmp_path / "st"
    (state / "ray").mkdir(parents=True)
    ray_tmp = str((state / "ray").resolve())
    leader = subprocess.run([sys.executable, "-c", AGENT_LEADER, ray_tmp], capture_output=True, text=True,
                            timeout=60, check=True)
    leader_pid, agent, stranger = map(int, leader.stdout.split())
    try:
        (state / "ray.pid").write_text(f"{leader_pid}\n")
        r = subprocess.run(["bash", str(REPO / "cluster" / "local-down.sh"), str(state)], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
        assert r.returncode == 0, r.stderr
        assert f"ray: leaving pid {stranger} alone (not ours)" in r.stderr, r.stderr
        deadline = time.monotonic() + 30
        while _alive(agent) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(agent), r.stderr
        assert _alive(stranger)
    finally:
        for pid in (agent, stranger):
            if _alive(pid):
                os.kill(pid, 9)
