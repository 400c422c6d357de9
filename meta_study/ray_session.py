"""Where meta-study's Ray comes from: a cluster the user names, or a private one of its own.

Every entry point (the analysis fan-out, sweeps, the demo) starts Ray through :func:`start_or_connect`.
The rule, the same for every command (``--help`` and docs/cluster.md say it too):

- ``address`` (``auto``, ``host:6379``, ``ray://host:10001``), else ``$RAY_ADDRESS`` (what
  ``ray job submit`` and ``cluster/local-up.sh`` export): join that cluster; its CPUs and its
  authentication are its own. An address nothing answers at, or whose cluster refuses the Ray token
  this environment sends, fails in one line within seconds (:func:`check_address`), never Ray's
  minutes of "Failed to connect to GCS" retries.
- ``address="local"`` (or ``RAY_ADDRESS=local``), or neither given: start a Ray of our own. Never a
  plain ``ray.init()``, which would join a cluster that ``ray start`` recorded in Ray's temp
  directory (and then refuse ``num_cpus``).

The Ray we start is private to this process and dies with it:

- **Loopback only.** Its node address is 127.0.0.1, so every server it runs (GCS, raylet, workers,
  agents, the dashboard's API server) listens on 127.0.0.1 alone (measured with ``ss -ltnp``).
  With Ray's default node address (the machine's outgoing IP) the gRPC servers listened on all
  interfaces and the per-node agent served an unauthenticated Prometheus ``/metrics`` on 0.0.0.0.
  Ray turns ``127.0.0.1`` given as ``_node_ip_address`` back into the outgoing IP unless its
  "single-machine" switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at import) is off,
  so :func:`_loopback_node` sets both the variable and the constant.
- **Nothing the analysis does not use.** Metrics collection (the agents' Prometheus exporter) and
  usage statistics are off, the dashboard is not included. Two loopback-only Prometheus endpoints
  remain, which Ray offers no switch for: the dashboard head's (port 44227) and the autoscaler
  monitor's (44217).
- **A token.** It takes only clients that hold a fresh random token (256 bits, in the environment
  only: ``/proc/<pid>/environ`` is readable by its owner alone), which Ray's processes inherit.
  Ray's own default token file (``~/.ray/auth_token``) is created world-readable (0644). A token
  the user set (``RAY_AUTH_TOKEN``, or a ``RAY_AUTH_TOKEN_PATH`` whose file holds one) is used instead. The driver's own
  environment holds the token only while Ray starts, so processes it starts later do not inherit
  it, and a named cluster joined after ``ray.shutdown()`` gets the environment's token, not ours.
- **It dies with the driver.** Ray's own fate sharing ends GCS, raylet and workers within seconds
  of a SIGKILLed driver, but its dashboard and runtime-env agents kept listening for 60 s and more
  (measured: they wait on a GCS that is gone). Every process this Ray starts carries a marker in
  its environment (``META_STUDY_RAY_SESSION``); a watchdog process waits on a pipe from the driver,
  and when the pipe closes (the driver exited or was killed) it SIGKILLs every process that carries
  the marker. It costs one idle Python process (~10 MB) and no CPU while the driver lives.
- **It leaves no files behind.** Its temp directory (sockets, session logs, Tune's staging) is a
  fresh ``ms-ray-*`` directory of its own (mode 0700), under ``$RAY_TMPDIR``, ``$TMPDIR`` or /tmp
  as Ray picks one, not Ray's shared ``/tmp/ray``, where every command left a session directory
  (~0.2-6 MB each: 403 of them, 195 MB, after a day of tests). The watchdog removes it once the
  driver is gone; a later Ray of our own in the same process removes the one before it. The
  processes' output goes with it: ``log_to_driver`` (``META_STUDY_TRIAL_LOGS=1``) keeps it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Mapping

from .errors import UserError

#: The environment variable that marks every process of the Ray this process started.
SESSION_MARK = "META_STUDY_RAY_SESSION"
#: Seconds to wait for a TCP connection to a named cluster before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0

# The watchdog: reads its stdin (a pipe whose only writer is the driver: the temp directories
# of the Rays it started, one a line) until EOF, then kills every process of those Rays until none
# is left (a raylet may start a worker between two scans), then removes those directories. A
# process is one of them if its environment holds the marker, or, for Ray's agents (whose
# setproctitle overwrites their environment), if its name starts with "ray::" and it holds a file
# open in one of the directories.
# Zombies have an empty environment and no files, and are skipped. Plain Python, no imports of
# ours: it runs with -I, so nothing on PYTHONPATH is loaded.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
needle = b"\0" + sys.argv[1].encode() + b"\0"
try:
    sessions = tuple(line.rstrip("/") + "/" for line in sys.stdin.buffer.read().decode().split("\n") if line)
except BaseException:
    sessions = ()
me = os.getpid()

def ours(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            if needle in b"\0" + f.read():
                return True
        with open("/proc/%d/comm" % pid) as f:
            if not sessions or not f.read().startswith("ray::"):
                return False
        for fd in os.listdir("/proc/%d/fd" % pid):
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith(sessions):
                return True
    except OSError:
        pass
    return False

deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    pids = [int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) != me and ours(int(d))]
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
for d in sessions:
    shutil.rmtree(d, ignore_errors=True)
"""

_watchdog: dict[str, Any] = {}   # "mark": the marker value, "pipe": the write end, "proc": the Popen
#: The temp directories of the Rays of our own this process started (the last one may be in use).
_own_temp_dirs: list[str] = []


def own_ray_requested(address: str | None) -> bool:
    """Whether :func:`start_or_connect` would start a Ray of its own for ``address``.
    ``RAY_ADDRESS=local`` (Ray's own spelling for "start one here") counts as ``--address local``:
    it was taken for a cluster ("ray: the cluster at local"), and ``ray.init()`` then started a
    plain Ray, without the token, the loopback address or the watchdog of a Ray of our own."""
    target = address or os.environ.get("RAY_ADDRESS")
    return not target or target.strip() == "local"


def describe_target(address: str | None) -> str:
    """One line saying which Ray a command uses (for the CLI to print when it is not obvious)."""
    if own_ray_requested(address):
        return "ray: a Ray of its own on this machine"
    if address:
        return f"ray: the cluster at {shown_address(address)} (--address)"
    # RAY_ADDRESS=local, not "--address local": fit and report have no --address, and following
    # the hint there ended in click's "No such option: --address" (own_ray_requested takes both)
    return (f"ray: the cluster at {shown_address(os.environ['RAY_ADDRESS'])} (from $RAY_ADDRESS; RAY_ADDRESS=local "
            "starts a Ray of its own)")


def shown_address(address: str) -> str:
    """A Ray address for a message: without user info (up to the last ``@`` of its host part), query
    or fragment, the rest as given. ``safe_uri`` left a ``host:port`` without a scheme whole
    (``user:password@host:6379`` was repeated in the "no Ray cluster answers" line), and wrote
    ``ray://[::1]:10001`` without its brackets."""
    scheme, sep, rest = address.partition("://") if "://" in address else ("", "", address)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    head, slash, tail = rest.partition("/")
    return scheme + sep + head.rpartition("@")[2] + slash + tail


def mask_user_info(text: str, address: str) -> str:
    """``text`` (an error about ``address``: Ray's, the OS's, urllib's) with the address's user info,
    and its password alone, masked: Ray repeats the address it was given ("Failed to connect to GCS
    at address user:password@host:6379"), urllib a part ("nonnumeric port: 'password@host'")."""
    rest = address.split("://", 1)[1] if "://" in address else address
    user = rest.split("/", 1)[0].rpartition("@")[0]
    for secret in sorted({user, user.partition(":")[2]}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


#: The cluster addresses whose "ray: the cluster at ..." line was printed (said once per command).
_announced: set[str] = set()


def refuse_empty_address(address: str | None) -> None:
    """UserError, in one line, for an empty ``--address`` (``--address "$HEAD"`` with the variable
    unset): it meant "not given", and a Ray of its own started in silence where the user believed
    a cluster did the work."""
    if address is not None and not address.strip():
        raise UserError(f"--address {address!r}: an empty address; give host:port, ray://host:port, auto, or local "
                        "for a Ray of its own (or leave it out: $RAY_ADDRESS, else a Ray of its own)")


def check_target(address: str | None) -> None:
    """Before a command's work: UserError, in one line, if the Ray it would use (:func:`start_or_connect`'s
    rule) cannot be: an empty ``address``, or a cluster (``address``, else ``$RAY_ADDRESS``) that
    :func:`check_address` refuses. Nothing for a Ray of its own. A refit fitted every group before
    its address was checked (then left its new ``--out`` behind), and a command that reused
    every output never checked it at all (``--address foo`` exited 0)."""
    refuse_empty_address(address)
    if own_ray_requested(address):
        return
    target = address or os.environ["RAY_ADDRESS"]
    if not address and target not in _announced:   # joining a cluster nobody named on the command line: say so
        _announced.add(target)
        print(describe_target(None), file=sys.stderr)
    check_address(target, source="--address" if address else "RAY_ADDRESS")
    _check_token_file("--address" if address else "RAY_ADDRESS", target)


def check_address(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S, source: str = "--address") -> None:
    """UserError, in one line, if nothing accepts a TCP connection at a cluster address
    (``host:port``, ``ray://host:port``, or ``auto``: the cluster Ray finds on this machine), or
    what answers is of the wrong kind: no gRPC server, a gRPC server that is no GCS at a
    ``host:port`` (a raylet's port), a GCS or another gRPC server at a ``ray://`` (:func:`ask_gcs`,
    :func:`_ping_client_server`); or if the cluster refuses the Ray token this environment sends
    (:func:`sent_token_header`). Other forms (a client plugin's ``scheme://``) are left to Ray."""
    from urllib.parse import urlsplit

    text = address.strip()
    shown = shown_address(address)
    if re.match(r"https?://", text, re.I):
        # the dashboard's job API (what `ray job submit` takes, often left in RAY_ADDRESS): Ray's
        # error was cut at "To fix this, either:", then a hint about tokens that did not apply
        raise UserError(f"{source} {shown}: an HTTP address (Ray's dashboard and job API), not a cluster "
                        "to join: give its GCS address host:6379, ray://host:10001 or auto")
    if text == "auto":
        # Ray retried the cluster it found (a stale `ray start` record, or another user's Ray) for
        # over 10 minutes when nothing answered there: checked like a named address
        found = _resolve_auto(source)
        if found is None:
            return
        text, shown = found, f"auto (found {shown_address(found)} on this machine)"
    if text == "local" or "://" in text and not text.startswith("ray://"):
        return
    try:
        p = urlsplit(text if "://" in text else f"gcs://{text}")
        host, port = p.hostname, p.port
    except ValueError:
        raise UserError(f"{source} {shown}: not a Ray address (host:port, ray://host:port or auto)") from None
    if not host or not port:
        raise UserError(f"{source} {shown}: not a Ray address (host:port, ray://host:port or auto)")
    what = "Ray client server" if text.startswith("ray://") else "Ray cluster (GCS)"
    try:
        with _connect_within(host, port, timeout_s) as sock:
            speaks = _speaks_grpc(sock, timeout_s)
    except _NameTimeout:
        raise UserError(f"{source} {shown}: no {what} answers there (the name {host} did not resolve within "
                        f"{timeout_s:g} s: is DNS reachable from here?)") from None
    except OSError as e:
        why = (f"no answer within {timeout_s:g} s" if isinstance(e, socket.timeout)
               else (e.strerror or type(e).__name__).lower())
        raise UserError(f"{source} {shown}: no {what} answers there ({why})") from None
    if not speaks:
        # Ray's own connect retries such a port for ~13 minutes (20 tries of ~40 s)
        raise UserError(f"{source} {shown}: a server answers there, but not a {what} (it does not "
                        "speak gRPC: another service's port, or an address from before the cluster restarted?)")
    # a gRPC server of the wrong kind: ray.init gave up after ~20 s (a raylet's port, or the client
    # server's without ray://: "Failed to connect", under a C++ log line) or ~30 s (a GCS given
    # with ray://: "ray client connection timeout"), saying neither what answered nor what to give
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    header = sent_token_header()   # asked with the token Ray will send: a refused one is said now (below)
    code = (ask_gcs(target, timeout_s, header) or ("", ""))[0]
    if text.startswith("ray://") and code in ("OK", "UNAUTHENTICATED"):
        raise UserError(f"{source} {shown}: a Ray cluster's GCS answers there, not its client server: give the GCS "
                        f"without ray:// ({target})")
    if not text.startswith("ray://") and code == "UNIMPLEMENTED":
        raise UserError(f"{source} {shown}: a gRPC server answers there, but not a Ray cluster's GCS (a raylet's port? "
                        f"a client server's is given as ray://{target})")
    if text.startswith("ray://") and code == "UNIMPLEMENTED":
        code = _ping_client_server(target, timeout_s, header or {}) or ""
        if code == "UNIMPLEMENTED":
            # a gRPC server that knows neither the GCS's calls nor the client server's (a raylet's or an
            # agent's port): ray.init retried it for ~30 s, then said "ray client connection timeout"
            raise UserError(f"{source} {shown}: a gRPC server answers there, but not a Ray client server (a raylet's "
                            "port? the client server's is 10001 by default)")
    # A token the cluster refuses (another cluster's, none set, RAY_AUTH_MODE missing): ray.init found
    # out after ~20 s of retries (a GCS), or said "ray client connection timeout" after ~30 s with no
    # word of the token (a client server); a refit or a sweep had done its work before that. One call
    # with the token Ray will send (~20 ms) says it before any work. Not asked where that token cannot
    # be told (a RAY_AUTH_TOKEN_PATH this user cannot read: _check_token_file says so).
    # (A client server is asked its own first call, ClusterInfo PING, above.)
    if header is not None and code == "UNAUTHENTICATED":
        raise UserError(f"{source} {shown}: could not join the Ray cluster there (it refused the connection: "
                        f"UNAUTHENTICATED){_auth_hint(True, '')}")


def sent_token_header() -> dict[str, str] | None:
    """The Ray token header a client of this environment sends (``{"authorization": "Bearer ..."}``),
    ``{}`` for none, as Ray 2.60 picks it: only with ``RAY_AUTH_MODE=token``, from ``RAY_AUTH_TOKEN``,
    else the file ``RAY_AUTH_TOKEN_PATH`` names, else Ray's default file ``~/.ray/auth_token``, its
    whitespace trimmed. None where it cannot be told (a ``RAY_AUTH_TOKEN_PATH`` with no token to
    read: :func:`_check_token_file`'s to say)."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        if _token_file_problem(path):
            return None
        with open(path, "rb") as f:
            token = f.read().decode("utf-8", "replace").strip()
    elif not token:
        default = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
        try:
            with open(default, "rb") as f:
                token = f.read().decode("utf-8", "replace").strip()
        except OSError:
            token = ""
    return {"authorization": f"Bearer {token}"} if token else {}


def _ping_client_server(target: str, timeout: float, token: Mapping[str, str]) -> str | None:
    """Ping the Ray client server at ``target`` as ``ray.init("ray://...")`` first does (ClusterInfo
    PING, with the token as gRPC metadata): the gRPC status's name (``"OK"``, ``"UNAUTHENTICATED"``
    for a refused or missing token: measured with Ray 2.60), or None where it cannot be asked as
    Ray would (TLS, a Ray without grpcio)."""
    if os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true"):
        return None
    try:
        import grpc
        from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc
    except ImportError:
        return None
    request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(request, timeout=timeout,
                                                                      metadata=list(token.items()))
        except grpc.RpcError as e:
            return e.code().name
    return "OK"


class _NameTimeout(Exception):
    """A host name that did not resolve within the connect timeout."""


def _connect_within(host: str, port: int, timeout_s: float) -> socket.socket:
    """A TCP connection to ``host:port``, its name resolved within ``timeout_s`` too
    (:class:`_NameTimeout` if not): ``socket.create_connection`` bounds the connect only, and a
    resolver whose DNS server does not answer took 5 s per try, per server and per search domain
    (glibc's defaults; a minute and more) before "no answer" could be said."""
    box: dict[str, Any] = {}

    def resolve() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=resolve, name="meta-study-resolve", daemon=True)   # left to finish alone
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise _NameTimeout(host)
    if "error" in box:
        raise box["error"]
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, addr in box["infos"]:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout_s)
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


def _resolve_auto(source: str) -> str | None:
    """The host:port Ray joins for ``auto`` (the last ``ray start`` recorded in Ray's temp
    directory, or a GCS process running here), as Ray itself resolves it; None if Ray's private
    resolver moved (then Ray is left to it). UserError if there is none."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    import logging

    log = logging.getLogger(canonicalize_bootstrap_address.__module__)
    level = log.level
    log.setLevel(logging.ERROR)   # its "Found multiple active Ray instances" made the error two lines
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise UserError(f"{source} auto: no Ray cluster found on this machine (none started here with 'ray start'); "
                        "give the cluster's address host:6379, or local for a Ray of its own") from None
    except Exception:  # noqa: BLE001 - an address Ray cannot parse: its own error says so
        return None
    finally:
        log.setLevel(level)


#: The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, its client
#: server) answers with a SETTINGS frame of its own; an HTTP/1 server (MLflow, a dashboard)
#: answers "400 Bad Request" or closes.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _speaks_grpc(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server on ``sock`` speaks HTTP/2 (gRPC): its first frame is SETTINGS (type 4).
    True without a probe under TLS (``RAY_USE_TLS``), where the preface would be refused."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    sock.settimeout(timeout_s)
    sock.sendall(_H2_PREFACE)
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            return False
        head += chunk
    return head[3] == 0x04


def ask_gcs(target: str, timeout: float, token: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """Ask ``target`` (``HOST:PORT``, ``[V6]:PORT``) for the job API's address as ``ray job submit``
    asks a GCS (one InternalKVGet, with Ray's ``token`` header as gRPC metadata; ~20 ms): the gRPC
    status's name and details (``("OK", "")`` for an answer). A GCS answers OK, or UNAUTHENTICATED
    without its token; a raylet and a Ray client server answer UNIMPLEMENTED (measured with Ray
    2.60, token or none); an HTTP server UNAVAILABLE ("http1"). None where it cannot be asked as
    Ray would (TLS: ``RAY_USE_TLS``; a Ray without grpcio): Ray is then left to it."""
    if os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true"):
        return None
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return None
    # Ray's own channels leave http_proxy alone: a GCS address goes straight to the GCS
    request = gcs_service_pb2.InternalKVGetRequest(key=b"dashboard", namespace=b"dashboard")
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel).InternalKVGet(
                request, timeout=timeout, metadata=list((token or {}).items()))
        except grpc.RpcError as e:
            return e.code().name, str(e.details() or "")
    return "OK", ""


#: Whether this process started a Ray of its own: Ray's loader then still holds that Ray's token.
_own: dict[str, bool] = {"started": False}


def own_ray_started() -> bool:
    """Whether this process started a Ray of its own (:func:`init_ray`, not a program's ``ray.init``)."""
    return _own["started"]


def _private_token_env() -> dict[str, str]:
    """Token authentication, with a fresh random token (256 bits) unless the user set one.
    Setting ``RAY_AUTH_MODE`` also silences Ray's token banner."""
    env = {"RAY_AUTH_MODE": "token"}
    if not os.environ.get("RAY_AUTH_TOKEN") and not _readable_token(os.environ.get("RAY_AUTH_TOKEN_PATH")):
        # a RAY_AUTH_TOKEN_PATH that names no token (a deleted state directory's, left in the shell
        # by `. env.sh`) failed ray.init with Ray's multi-line AuthenticationError, a traceback;
        # RAY_AUTH_TOKEN wins over it in Ray's loader
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


def _readable_token(path: str | None) -> bool:
    """Whether ``path`` is a file this process can read a token from (as Ray requires: not empty)."""
    return bool(path) and _token_file_problem(str(path)) is None


def _token_file_problem(path: str) -> str | None:
    """Why Ray cannot read a token from ``path`` (the OS's words, or "empty"); None if it can."""
    try:
        with open(path, "rb") as f:   # as Ray opens it: no ~ expanded
            return None if f.read(4096).strip() else "empty"
    except OSError as e:
        return (e.strerror or type(e).__name__).lower()


def _check_token_file(source: str, target: str) -> None:
    """UserError, in one line, where Ray would send the token of ``RAY_AUTH_TOKEN_PATH`` (with
    ``RAY_AUTH_MODE=token`` and no ``RAY_AUTH_TOKEN``) and cannot read one there: Ray's own error
    ("RAY_AUTH_TOKEN_PATH is set but file cannot be opened or is empty", then five sentences) was
    cut at 200 characters, without the OS's reason, under a hint that asked whether it was "this
    cluster's token" (a refit run as another user than local-up.sh's, whose token file is 0600)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if (os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token" or os.environ.get("RAY_AUTH_TOKEN")
            or not path):
        return
    why = _token_file_problem(path)
    if why:
        raise UserError(f"{source} {shown_address(target)}: RAY_AUTH_TOKEN_PATH {path}: no Ray token can be read "
                        f"there ({why}); it must name the cluster's token file, readable by this user "
                        "(local-up.sh's STATE_DIR/ray-auth-token is its user's only)")


def _reload_auth() -> None:
    """Make Ray's C++ config and token loader read the environment again: both read it once and
    keep it (as Ray's own ``_enable_token_auth`` refreshes them)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def scoped_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for what runs inside (and the processes it starts), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Make Ray take 127.0.0.1 as this node's address (see the module doc)."""
    from ray._private import ray_constants

    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


def _start_watchdog() -> str:
    """Start the watchdog once per process; returns the marker value Ray's processes carry."""
    if _watchdog.get("proc") is not None and _watchdog["proc"].poll() is None:
        return _watchdog["mark"]
    mark = secrets.token_hex(16)
    r, w = os.pipe()            # both ends non-inheritable: Ray's processes never hold the write end
    env = {k: v for k, v in os.environ.items() if k != SESSION_MARK}
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-c", _WATCHDOG, f"{SESSION_MARK}={mark}"], stdin=r,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)   # no Ctrl-C from the terminal's process group
    finally:
        os.close(r)
    _watchdog.update(mark=mark, pipe=w, proc=proc)
    return mark


@contextlib.contextmanager
def _keep_sigterm() -> Iterator[None]:
    """Keep a SIGTERM handler of the caller's across ``ray.init``, which installs its own
    (``sys.exit(15)``): the CLI's (``cli.stop_signals_unwind``) then ended a Ray command with exit
    15 instead of 143, and a ``refit --every`` stopped between rounds failed instead of ending. It
    stays in place while Ray starts too: Ray's installer is made a no-op meanwhile (a SIGTERM in the
    first seconds of a command, inside ``ray.init``, exited 15 with no line). A process with
    SIGTERM at its default gets Ray's, as before."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    keep = main and callable(before)
    utils = _ray_utils() if keep else None
    install = getattr(utils, "set_sigterm_handler", None)
    if install is not None:       # ray.init looks it up at its call (ray._private.utils.set_sigterm_handler)
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if install is not None:
            utils.set_sigterm_handler = install
        if keep:
            signal.signal(signal.SIGTERM, before)


def _ray_utils() -> Any:
    """Ray's ``ray._private.utils`` (where ``ray.init`` installs its SIGTERM handler), or None if a
    Ray of another layout has none: its handler is then put back after ``ray.init`` only."""
    try:
        import ray._private.utils as utils
    except ImportError:
        return None
    return utils


def _own_temp_dir() -> str:
    """A fresh temp directory (0700) for a Ray of our own, under the directory Ray would put its
    ``ray/`` in (``$RAY_TMPDIR``, else ``$TMPDIR``, else /tmp); /tmp where that path is too long
    for the Unix sockets Ray makes ~62 bytes below it (a socket path has 107 bytes at most). The
    Rays of our own started before it (shut down since: :func:`start_or_connect` starts one only
    when none is running) are removed first."""
    import shutil
    import tempfile

    while _own_temp_dirs:
        shutil.rmtree(_own_temp_dirs.pop(), ignore_errors=True)
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if len(os.path.abspath(base)) > 28 or not os.path.isdir(base):   # 28 + 16 <= 44: local-up.sh's limit
        base = "/tmp"
    try:
        path = tempfile.mkdtemp(prefix="ms-ray-", dir=base)
    except OSError:     # a $TMPDIR this user cannot write: where Ray's own default would be
        path = tempfile.mkdtemp(prefix="ms-ray-", dir="/tmp")
    _own_temp_dirs.append(path)
    return path


def _start_own(ray: Any, num_cpus: int | None, kwargs: dict[str, Any]) -> None:
    mark = _start_watchdog()
    temp_dir = _own_temp_dir()
    try:   # said before Ray starts: a driver killed while Ray starts leaves nothing either
        os.write(_watchdog["pipe"], os.fsencode(temp_dir) + b"\n")
    except OSError:         # the watchdog is gone (killed by someone): Ray's own fate sharing remains
        pass
    env = {**_private_token_env(), SESSION_MARK: mark,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",      # its processes take 127.0.0.1 too
           "RAY_enable_metrics_collection": "0",          # no Prometheus exporter in the agents
           "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    # The token is in the environment only while Ray starts: its processes (GCS, raylet, and the
    # workers the raylet starts later) inherit it, this driver keeps it in Ray's loader, and
    # nothing this process starts afterwards (a cluster's scripts, another driver) inherits it.
    with scoped_environment(env), _loopback_node(), _keep_sigterm():
        _reload_auth()
        _own["started"] = True
        # num_cpus None: Ray's own count, which honours a container's CPU quota (a Kubernetes limit,
        # docker --cpus); os.cpu_count() is the host's, and a 4-CPU pod on a 64-core host ran 64 trials
        ray.init(address="local", num_cpus=num_cpus or None, include_dashboard=False, _temp_dir=temp_dir,
                 _node_ip_address="127.0.0.1", _system_config={"enable_metrics_collection": False}, **kwargs)
    with contextlib.suppress(OSError):   # Ray makes its temp dir world-writable (0777): ours only
        os.chmod(temp_dir, 0o700)


def _connect(ray: Any, address: str | None, kwargs: dict[str, Any]) -> None:
    source = "--address" if address else "RAY_ADDRESS"
    target = address or os.environ["RAY_ADDRESS"]
    if not address and target not in _announced:   # joining a cluster nobody named on the command line: say so
        _announced.add(target)
        print(describe_target(None), file=sys.stderr)
    check_address(target, source=source)
    _check_token_file(source, target)
    if _own["started"]:   # after a Ray of our own (shut down since): not its token, the environment's
        _reload_auth()
    # RAY_AUTH_MODE=token with no token anywhere: Ray's AuthenticationError (no ConnectionError) was a traceback
    refused_auth = getattr(getattr(ray, "exceptions", None), "AuthenticationError", RuntimeError)
    t0 = time.monotonic()
    try:
        with _keep_sigterm():
            ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError, refused_auth) as e:
        first = mask_user_info(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, target)
        versions = re.findall(r"Ray: (\S+)\s+Python: (\S+)", str(e))
        if str(e).lstrip().startswith("Version mismatch") and len(versions) == 2:
            # Ray's first line ends at "The cluster was started with:", the versions cut off, and the
            # token hint below sent users to their token
            (ray_c, py_c), (ray_m, py_m) = versions
            raise UserError(f"{source} {shown_address(target)}: the Ray cluster there runs Ray {ray_c} with Python "
                            f"{py_c}, this command Ray {ray_m} with Python {py_m}; Ray joins only the same "
                            "versions: run meta-study in an environment with the cluster's, or use "
                            "--address local") from None
        # Ray 2.60 clusters want a token: without one Ray's error names neither it nor the
        # address typed (20 lines of InvalidAuthToken, then "Failed to connect")
        # (not for an address Ray refused before connecting: a client plugin's scheme, "Module:
        # anyscale does not exist", where the token hint sent users to the wrong place)
        plugin = "://" in target and not target.strip().startswith("ray://")
        hint = ("" if isinstance(e, ValueError) or plugin else _token_hint(e))
        raise UserError(f"{source} {shown_address(target)}: could not join the Ray cluster there after "
                        f"{time.monotonic() - t0:.0f} s ({first[:200]}){hint}") from None


def _token_hint(e: BaseException) -> str:
    """What to tell about the Ray token when joining a cluster failed. Ray's error is "Failed to
    connect to Ray cluster at ..." whatever the cause; its cause chain says "InvalidAuthToken" when
    the cluster refused the token (measured with Ray 2.60: a token of another cluster, or a
    RAY_AUTH_TOKEN_PATH without RAY_AUTH_MODE=token, which Ray then does not send, got no hint)."""
    chain, seen, cur = [], set(), e
    while cur is not None and id(cur) not in seen:   # __cause__ / __context__: Ray wraps twice
        seen.add(id(cur))
        chain.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    return _auth_hint("InvalidAuthToken" in "\n".join(chain), str(e))


def _auth_hint(refused: bool, error: str) -> str:
    """The token hint (``"; ..."``, or ``""``) for a join that failed with ``error``; ``refused``:
    the cluster refused the token sent, or that none was sent."""
    token, path = os.environ.get("RAY_AUTH_TOKEN"), os.environ.get("RAY_AUTH_TOKEN_PATH")
    mode_token = os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"
    if not (token or path) and mode_token:
        # RAY_AUTH_MODE=token alone: Ray sends ~/.ray/auth_token (its default file) if there is one;
        # "export RAY_AUTH_MODE=token" told a user who had done so, and the file Ray sent went unnamed
        default = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
        if os.path.isfile(default):
            return (f"; the cluster refused the Ray token of {default} (Ray's default file: neither RAY_AUTH_TOKEN "
                    "nor RAY_AUTH_TOKEN_PATH is set): export RAY_AUTH_TOKEN_PATH (the lines of the cluster's env.sh)"
                    if refused else "")
        return ("; RAY_AUTH_MODE is token but no Ray token is set here: export RAY_AUTH_TOKEN_PATH (the lines of "
                "the cluster's env.sh)")
    if not (token or path):
        return ("; no Ray token is set here: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (the lines of "
                "the cluster's env.sh)")
    if refused and not mode_token:
        return ("; the cluster wants a Ray token, and without RAY_AUTH_MODE=token here Ray sends none: "
                "export RAY_AUTH_MODE=token (the lines of the cluster's env.sh)")
    if refused:
        which = ("RAY_AUTH_TOKEN" + (" (it wins over RAY_AUTH_TOKEN_PATH)" if path else "") if token
                 else f"RAY_AUTH_TOKEN_PATH ({path})")
        return f"; the cluster refused the Ray token of {which}: is it this cluster's?"
    if re.search(r"auth|token", error, re.I):
        return "; is RAY_AUTH_TOKEN_PATH this cluster's token?"
    return ""


def start_or_connect(address: str | None = None, *, num_cpus: int | None = None,
                     runtime_env: Mapping[str, Any] | None = None, log_to_driver: bool = False,
                     quiet: bool = False) -> Any:
    """Initialize Ray unless it is (see the module doc); returns the ``ray`` module. ``quiet``:
    the driver's "ray" logger at WARNING (Ray's INFO lines, "Started a local Ray instance." and
    "Connecting to existing Ray cluster", are not shown; its warnings and errors are).

    Raises:
        UserError: one line, within seconds, if a named cluster does not answer, or for an empty
            ``address``.
    """
    import ray

    if ray.is_initialized():
        return ray
    refuse_empty_address(address)
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if quiet:
        import logging

        kwargs["logging_level"] = logging.WARNING
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    if own_ray_requested(address):
        _start_own(ray, num_cpus, kwargs)
    else:
        _connect(ray, address, kwargs)
    return ray


def free_orphaned_placement_groups() -> tuple[str, ...]:
    """Remove the placement groups of this job whose creating actor is dead; return their ids (hex).

    Why: a data-parallel trial's Ray Train V2 controller (an actor inside the trial) creates its
    workers' placement group. Ray ties a placement group's life to its creator actor *and* its
    job, so when Tune stops the trial (ASHA, a failure) and the controller dies with it, the group
    stays reserved until the driver exits (ray-project/ray#54305). Train's own cleaner (a
    detached actor) asks the State API, which runs with the dashboard only: on a Ray of our own
    (no dashboard) it never frees anything, and the sweep's next trials or its end-of-sweep
    evaluations wait for CPUs that nothing will give back (measured: 0 of 2 CPUs free after an
    actor that held a 2-CPU group was killed).

    Only groups that nobody can use any more are removed: created by an actor (never the
    driver's own, which is how Tune reserves a trial's resources) of this job, that actor dead,
    not detached, not already removed. One GCS call (the placement group table), milliseconds.
    The table is read through Ray's private GCS accessor (the public ``placement_group_table``
    leaves out the creator): if a Ray release changes it, nothing is removed and the waits say so
    (meta_study/tune/finalize.py).
    """
    import ray

    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        job = ray.get_runtime_context().get_job_id()
        rows = [gcs_pb2.PlacementGroupTableData.FromString(b)
                for b in state._connect_and_get_accessor().get_placement_group_table()]
    except Exception:  # noqa: BLE001 - private API moved: free nothing (see above)
        return ()
    alive = (gcs_pb2.PlacementGroupTableData.PENDING, gcs_pb2.PlacementGroupTableData.PREPARED,
             gcs_pb2.PlacementGroupTableData.CREATED, gcs_pb2.PlacementGroupTableData.RESCHEDULING)
    freed = []
    for row in rows:
        by_actor = bool(row.creator_actor_id) and set(row.creator_actor_id) != {0xFF}   # nil: the driver
        if (row.state in alive and by_actor and row.creator_actor_dead and not row.is_detached
                and row.creator_job_id.hex() == job):
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(row.placement_group_id)))
            except Exception:  # noqa: BLE001 - removed meanwhile (Train's cleaner, a race): nothing to do
                continue
            freed.append(row.placement_group_id.hex())
    return tuple(freed)
