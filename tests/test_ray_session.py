"""The Ray that meta-study starts for itself: only clients with its private token, loopback
listeners only, and every process gone soon after its driver is SIGKILLed; a named cluster that
does not answer fails in one line within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO

SERVER = textwrap.dedent("""
    import os, sys
    from meta_study.analysis.parallel import init_ray
    ray = init_ray("local", 1)
    print(ray.get_runtime_context().gcs_address, flush=True)

    @ray.remote
    def auth():               # a worker the raylet started: it holds the token
        return os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"]

    print(*ray.get(auth.remote()), flush=True)
    sys.stdin.read()          # keep Ray up until the test closes stdin
""")
CLIENT = "import ray, sys; ray.init(address=sys.argv[1]); print('CONNECTED', ray.cluster_resources()['CPU'])"


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


@pytest.mark.slow(40)
def test_own_ray_refuses_clients_without_its_token():
    # the user's environment asks for no authentication: our own Ray uses a token anyway
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=_env(RAY_AUTH_MODE="disabled"))
    try:
        assert server.stdout is not None
        gcs = server.stdout.readline().strip()
        mode, token = server.stdout.readline().split()
        assert gcs and mode == "token" and len(token) == 64
        # a client without the token, on the address Ray advertises (a loopback one: the client
        # must not turn 127.0.0.1 into this machine's outgoing IP, as Ray does by default)
        assert gcs.startswith("127.0.0.1:"), gcs
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=120,
                           env=_env(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
        assert r.returncode != 0 and "CONNECTED" not in r.stdout
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=120,
                           env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
        assert r.returncode == 0 and "CONNECTED 1.0" in r.stdout, r.stderr[-2000:]
        # the token is in no file another user could read (Ray's default ~/.ray/auth_token is 0644)
        home_token = os.path.expanduser("~/.ray/auth_token")
        if os.path.exists(home_token):
            assert open(home_token).read().strip() != token
    finally:
        server.stdin.close()
        server.wait(timeout=60)


DRIVER = textwrap.dedent("""
    import os, sys, time
    from meta_study.analysis.parallel import init_ray
    ray = init_ray("local", 1)

    @ray.remote
    def pid():
        return os.getpid()

    print(ray.get(pid.remote()), flush=True)   # a worker exists
    time.sleep(600)
""")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    import psutil

    return [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _alive(pids: set[int]) -> set[int]:
    import psutil

    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow(40)
def test_own_ray_listens_on_loopback_only_and_dies_with_a_killed_driver():
    import psutil

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=_env())
    try:
        assert driver.stdout is not None
        worker = int(driver.stdout.readline())
        procs = {p.pid for p in psutil.Process(driver.pid).children(recursive=True)}
        assert worker in procs and len(procs) >= 5     # gcs, raylet, agents, a worker, ...
        names = {psutil.Process(p).name() for p in procs}
        assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, names
        listeners = _listening(procs | {driver.pid})
        assert listeners and all(ip in LOOPBACK for _, ip, _ in listeners), listeners   # no 0.0.0.0, no ::
        ports = {port for _, _, port in listeners}
    finally:
        driver.kill()
        driver.wait(timeout=60)
    # Ray's agents alone outlived a SIGKILLed driver by 60 s and more; the watchdog ends them all
    deadline = time.monotonic() + 30
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(procs)
    assert not left, [(p, psutil.Process(p).name()) for p in left]
    still = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
             and c.pid in procs]
    assert not still, still


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9", "no-port-here"])
def test_an_address_nothing_answers_at_fails_in_one_line(address, tmp_path):
    from conftest import run_cli
    from meta_study.validation import validate
    from meta_study.store import Store
    from conftest import make_rows

    store = Store(str(tmp_path / "st"))
    store.commit(validate(make_rows(12, ds_tasks=("a",))).table)
    for how in ({"args": ("--address", address), "env": {}}, {"args": (), "env": {"RAY_ADDRESS": address}}):
        t0 = time.monotonic()
        r = run_cli("bootstrap", store.uri, "--out", str(tmp_path / "out"), "--samples", "10", *how["args"],
                    env=how["env"], timeout=120)
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and address in errors[0] and "Traceback" not in r.stderr, r.stderr
        assert ("--address" if how["args"] else "RAY_ADDRESS") in errors[0]
        assert time.monotonic() - t0 < 60      # Ray alone retried for over 300 s ("within ~15 s" measured)


LEAK = textwrap.dedent("""
    import os, subprocess, sys
    from meta_study.ray_session import start_or_connect
    before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    ray = start_or_connect("local", num_cpus=1)
    assert {k: os.environ.get(k) for k in before} == before, "the token stayed in the driver's environment"

    @ray.remote
    class Worker:             # a new worker process, started after ray.init returned
        def token(self):
            return os.environ.get("RAY_AUTH_TOKEN")

    mine = ray.get(Worker.remote().token.remote())
    assert mine and len(mine) == 64
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('RAY_AUTH_TOKEN'))"],
                           capture_output=True, text=True).stdout.strip()
    assert child == "None", "a process started afterwards inherited the token"
    ray.shutdown()
    # then a cluster with another token, named by the environment as a user would name it
    gcs, token = sys.argv[1], sys.argv[2]
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    ray = start_or_connect(gcs)
    print(f"JOINED {ray.cluster_resources()['CPU']}", flush=True)   # one string: a Ray log line cannot land inside it
""")


@pytest.mark.slow(60)
def test_own_ray_leaves_no_token_behind():
    """The driver's environment holds our token only while our Ray starts: workers started later
    have it, a process the driver starts afterwards does not, and after ``ray.shutdown()`` the
    driver joins another cluster with that cluster's token (not ours, which Ray's loader kept)."""
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=_env())
    try:
        assert server.stdout is not None
        gcs = server.stdout.readline().strip()
        _, token = server.stdout.readline().split()
        r = subprocess.run([sys.executable, "-c", LEAK, gcs, token], capture_output=True, text=True, timeout=300,
                           env=_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
        assert r.returncode == 0 and "JOINED 1.0" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    finally:
        server.stdin.close()
        server.wait(timeout=60)


ORPHANED = textwrap.dedent("""
    import os, sys, time
    from meta_study.ray_session import start_or_connect
    from meta_study.tune.groups import FreeOrphanedGroups
    ray = start_or_connect("local", num_cpus=3)
    from ray.util.placement_group import placement_group

    def cpus():
        return ray.available_resources().get("CPU", 0.0)

    def wait_for(cond, what, s=150):     # generous: a loaded 2-core machine starts Train's workers slowly
        t = time.monotonic()
        while not cond():
            assert time.monotonic() - t < s, f"{what}: {ray.available_resources()}"
            time.sleep(0.25)

    @ray.remote(num_cpus=0)
    class Owner:              # an actor that keeps a group of its own: in use, never freed
        def make(self):
            self.pg = placement_group([{"CPU": 0.5}])
            ray.get(self.pg.ready())

    @ray.remote(num_cpus=0)
    class Trial:              # what Tune's function trainable is: an actor with a Train run inside
        def run(self, storage):
            os.environ["RAY_TRAIN_V2_ENABLED"] = "1"
            from ray.train import RunConfig, ScalingConfig
            from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

            def loop(config):
                time.sleep(3600)

            DataParallelTrainer(loop, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                                run_config=RunConfig(storage_path=storage, name="t")).fit()

    driver_pg = placement_group([{"CPU": 0.5}])       # the driver's own (how Tune reserves a trial)
    ray.get(driver_pg.ready())
    owner = Owner.remote()
    ray.get(owner.make.remote())
    trial = Trial.remote()
    trial.run.remote(sys.argv[1])
    wait_for(lambda: cpus() == 0.0, "the Train run's 2 workers never started")
    ray.kill(trial)           # Tune stopping the trial (ASHA, a failure)
    time.sleep(5)
    print(f"AFTER KILL {cpus()}", flush=True)   # one string: a Ray log line cannot land inside it
    cb = FreeOrphanedGroups()
    cb.on_step_begin(0, [])
    wait_for(lambda: cpus() == 2.0, "not freed", s=60)   # ~1 s; Ray alone never frees it while we live
    print(f"FREED {len(cb.freed)} {cpus()}", flush=True)   # one string: a Ray log line cannot land inside it
    cb.on_step_begin(1, [])   # within EVERY_S: not even looked at
    time.sleep(0.5)
    print(f"KEPT {cpus()} {len(cb.freed)}", flush=True)   # one string: a Ray log line cannot land inside it
""")


@pytest.mark.slow(30)
def test_a_stopped_data_parallel_trials_placement_group_is_freed(tmp_path):
    """Ray 2.60 keeps a Ray Train V2 run's placement group reserved after the actor that ran it
    (a Tune trial stopped by ASHA, or failed) is killed, until the driver exits; Train's cleaner
    needs the State API, which our own Ray (no dashboard) lacks. Unfreed, the sweep's later trials
    and evaluations waited for those CPUs forever. The sweep's callback frees exactly the groups
    whose creator is dead: the driver's own group and a live actor's stay."""
    r = subprocess.run([sys.executable, "-c", ORPHANED, str(tmp_path / "train")], capture_output=True, text=True,
                       timeout=420, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line.split(" ")[0] in ("AFTER", "FREED", "KEPT"))
    assert lines["AFTER"] == "KILL 0.0", r.stdout          # what Ray alone leaves: nothing free
    assert lines["FREED"] == "1 2.0" and lines["KEPT"] == "2.0 1", r.stdout
    assert "freed 1 placement group(s) left reserved by stopped data-parallel trials" in r.stderr
