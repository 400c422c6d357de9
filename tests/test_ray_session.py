"""The Ray that meta-study starts for itself takes only clients with its private token."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

SERVER = textwrap.dedent("""
    import os, sys
    from meta_study.analysis.parallel import init_ray
    ray = init_ray("local", 1)
    print(ray.get_runtime_context().gcs_address, flush=True)
    print(os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"], flush=True)
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
        # a client without the token, on the address Ray advertises (not loopback here)
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=120,
                           env=_env(RAY_AUTH_MODE="disabled"))
        assert r.returncode != 0 and "CONNECTED" not in r.stdout
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], capture_output=True, text=True, timeout=120,
                           env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
        assert r.returncode == 0 and "CONNECTED 1.0" in r.stdout, r.stderr[-2000:]
        # the token is in no file another user could read (Ray's default ~/.ray/auth_token is 0644)
        home_token = os.path.expanduser("~/.ray/auth_token")
        if os.path.exists(home_token):
            assert open(home_token).read().strip() != token
    finally:
        server.stdin.close()
        server.wait(timeout=60)
