"""A real ``mlflow server`` subprocess on 127.0.0.1 for tests and benchmarks.

    with MlflowServer(tmp_path) as server:
        client = MlflowClient(server.uri)

A free port is picked at random; the backend is sqlite in the given directory (or the SQLAlchemy
URL ``backend``) and artifacts are served from it. With ``auth=True`` the server runs MLflow's basic-auth app (admin credentials in
``server.username`` / ``server.password``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_REFUSING: list[socket.socket] = []


def refused_port() -> int:
    """A port on 127.0.0.1 that refuses connections for the rest of this process: bound, never
    listening. A port picked free and closed could be taken meanwhile by another test's server."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _REFUSING.append(s)
    return s.getsockname()[1]


def listens(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` or one of its children listens on ``port`` (not another test's server
    that took the port first)."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for p in procs for c in p.net_connections("inet"))
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:   # cannot tell: as before, the answer is trusted
        return True


class MlflowServer:
    def __init__(self, root: Path, *, auth: bool = False, db: Path | None = None, cpus: str | None = None,
                 args: tuple[str, ...] = (), backend: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = db or (self.root / "mlflow.db")
        self.backend = backend or f"sqlite:///{self.db}"   # or e.g. postgresql+psycopg://user:pw@host/db
        self.auth = auth
        self.cpus = cpus  # e.g. "1": pin the server to CPU 1 (taskset), as if it ran on another machine
        self.username, self.password = "admin", "s3cret-Pa55word-for-tests"
        self.args = tuple(args)  # extra `mlflow server` arguments, e.g. ("--gunicorn-opts", "...")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", self.backend, "--artifacts-destination", str(self.root / "artifacts"),
               "--workers", "1", *self.args]
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        env = dict(os.environ)
        # The tracking server as cluster/ runs it: without MLflow 3's job runner (GenAI jobs), whose
        # 8 huey consumer processes poll their queues and cost ~80 ms of CPU per tracking request
        # on this 2-core machine (measured: runs/create 114 ms -> 16 ms of server CPU).
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        if self.auth:
            ini = self.root / "basic_auth.ini"
            ini.write_text("[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
                           f"admin_username = {self.username}\nadmin_password = {self.password}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "test-only-csrf-key"
            cmd += ["--app-name", "basic-auth"]
        # The port was free when picked, but the server binds it seconds later: another test's
        # server (or any connection's ephemeral port) may take it meanwhile. Then this server
        # exits with "address already in use" (tried again on a new port), and until it does the
        # health check must not take the other server's answer for its own.
        for attempt in range(3):
            if attempt:
                self.port = free_port()
                self.uri = f"http://127.0.0.1:{self.port}"
                cmd[cmd.index("--port") + 1] = str(self.port)
            self.log = open(self.root / "server.log", "w")
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.log.close()
                    out = (self.root / "server.log").read_text()
                    if "ddress already in use" in out and attempt < 2:
                        break
                    raise RuntimeError(f"mlflow server exited: {out[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                        if r.status == 200 and listens(self.proc, self.port):
                            return self
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                self.__exit__()
                raise RuntimeError("mlflow server did not become healthy in 120 s")
        raise AssertionError("unreachable")

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server and its workers (user + system)."""
        import psutil

        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            import signal

            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
