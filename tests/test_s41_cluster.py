"""Session 41: cluster/local-up.sh keeps MLflow's port across a restart though the last run's
connections are in TIME_WAIT (a local CI run failed test_local_up_and_down's last line on it)."""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_cluster import run_script, state_dir  # noqa: E402,F401 - state_dir is the fixture


def time_wait_port() -> int:
    """A free port with a connection in TIME_WAIT on it, as a stopped MLflow leaves when it closed a
    client's connection first: a bind without SO_REUSEADDR is refused there for ~60 s."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first: its end goes to TIME_WAIT
    client.close()
    listener.close()
    plain = socket.socket()
    try:
        with pytest.raises(OSError):  # the state the test needs, or it proves nothing
            plain.bind(("127.0.0.1", port))
    finally:
        plain.close()
    return port


@pytest.mark.slow(60)
def test_a_restart_keeps_mlflows_port_though_its_connections_linger(state_dir):  # noqa: F811
    state_dir.mkdir(parents=True)
    port = time_wait_port()
    (state_dir / "mlflow.port").write_text(f"{port}\n")
    up = run_script("local-up.sh", state_dir)
    assert up.returncode == 0, up.stderr[-2000:]
    uri = re.search(r"^export MLFLOW_TRACKING_URI=(\S+)$", up.stdout, re.M).group(1)
    assert uri == f"http://127.0.0.1:{port}", (uri, port)
