"""The MLflow writer of a sweep: its own process, fed by the Tune driver's callback.

Why a process: the writer's HTTP calls, JSON and retries cost the Tune driver little CPU, but as
threads of the driver they contend for its GIL, and Tune's event loop, which gives up and retakes
the GIL at every gRPC wait, then loses up to a switch interval (5 ms) each time: measured 20-30 ms
per trial on a busy 2-core driver, for ~6 ms of actual work. As a child process (``python -m
meta_study.tune.writer``) it shares nothing with the driver but a pipe:

- the driver writes one JSON line per operation to the child's stdin, without blocking (a line
  that does not fit in the pipe waits for a feeder thread, so a slow child never blocks Tune's
  loop), and ``flush`` asks for a one-line reply;
- the child runs :class:`MlflowWriter`: sharded writer threads that merge each trial's pending
  operations into as few MLflow calls as possible, retry with back-off, and spool what cannot be
  sent to ``mlflow_spool.jsonl`` for the next run of the sweep to replay;
- if the driver dies, the child sees end-of-file on stdin, sends what it has (up to the flush
  timeout), spools the rest and exits. It holds ``mlflow_writer.lock`` in the experiment
  directory while it runs, and a resumed sweep's writer waits for that lock before reading the
  trial -> run map, so a run being created by the old writer is never created twice.

Nothing here imports Ray (the child starts in ~1 s, most of it importing MLflow's credentials).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
RUNS_FILE = "mlflow_runs.jsonl"   # append-only: one {"trial": ..., "run": ...} line per run
SPOOL_FILE = "mlflow_spool.jsonl"
LOCK_FILE = "mlflow_writer.lock"
LOCK_WAIT_S = 120.0               # a dead driver's writer gets this long to finish its queue


@dataclass(frozen=True)
class SweepTarget:
    """Where a sweep's child runs go, and where its writer keeps its state.

    Attributes:
        tracking_uri, experiment_id, parent_run_id: the MLflow side.
        state_dir: the Tune experiment directory (trial -> run map, spool and lock live there).
        tags: tags of every child run.
        flush_timeout_s: how long a flush waits for an unreachable server before spooling.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    state_dir: str
    tags: Mapping[str, str] = field(default_factory=dict)
    flush_timeout_s: float = 300.0


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings, as MLflow params (values cut at 6,000 chars)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if isinstance(v, (list, tuple)) else str(v))[:6000]
    return out


class _RestRuns:
    """The three calls every trial makes (runs/create, runs/log-batch, runs/update) over keep-alive
    HTTP connections, one per writer thread.

    Cost, measured against a local server: ~1.1 ms of client CPU per call with ``http.client``,
    ~2.8 ms with a ``requests`` session and ~5 ms through ``MlflowClient``; at three calls per
    trial that is CPU the Tune driver's machine needs for scheduling. ``requests`` is kept for
    what ``http.client`` lacks: a proxy from the environment (HTTP(S)_PROXY, NO_PROXY) and
    redirects (a server that answers with one is talked to through ``requests`` from then on).

    Credentials and TLS settings come from MLflow's own resolution of the environment, done by the
    driver (which has MLflow imported already) and handed to the writer process over its stdin:
    importing MLflow costs ~3 s of CPU that a writer process should not spend."""

    CRED_FIELDS = ("host", "username", "password", "token", "ignore_tls_verification", "client_cert_path",
                   "server_cert_path")

    def __init__(self, tracking_uri: str, creds: Mapping[str, Any] | None = None) -> None:
        import base64
        import types
        import urllib.parse
        import urllib.request

        self.creds = c = types.SimpleNamespace(**(dict(creds) if creds is not None else resolve_creds(tracking_uri)))
        self.base = c.host.rstrip("/") + "/api/2.0/mlflow/"
        url = urllib.parse.urlsplit(self.base)
        self.https = url.scheme == "https"
        self.netloc, self.path = url.netloc, url.path
        self.headers = {"Content-Type": "application/json"}
        if c.token:
            self.headers["Authorization"] = f"Bearer {c.token}"
        elif c.username:
            basic = base64.b64encode(f"{c.username}:{c.password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        proxies = urllib.request.getproxies()
        self.via_requests = bool(proxies.get(url.scheme)) and not urllib.request.proxy_bypass(url.hostname or "")
        self.local = threading.local()

    def _ssl_context(self) -> Any:
        import ssl

        c = self.creds
        if c.ignore_tls_verification:
            ctx = ssl._create_unverified_context()  # noqa: S323 - asked for by MLFLOW_TRACKING_INSECURE_TLS
        else:
            ctx = ssl.create_default_context(cafile=c.server_cert_path or None)
        if c.client_cert_path:
            ctx.load_cert_chain(c.client_cert_path)
        return ctx

    def _connection(self) -> Any:
        """This thread's connection, reopened when the server has closed it while idle (a server
        may drop keep-alive connections at any time; a request on one would fail)."""
        import http.client
        import select

        conn = getattr(self.local, "conn", None)
        if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()   # readable while idle: closed by the server (or stray bytes): start afresh
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.netloc, timeout=60, context=self._ssl_context())
            else:
                conn = http.client.HTTPConnection(self.netloc, timeout=60)
            self.local.conn = conn
        return conn

    def _session(self) -> Any:
        s = getattr(self.local, "session", None)
        if s is None:
            import requests

            c = self.creds
            s = requests.Session()
            s.headers.update(self.headers)
            s.verify = False if c.ignore_tls_verification else (c.server_cert_path or True)
            if c.client_cert_path:
                s.cert = c.client_cert_path
            self.local.session = s
        return s

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body, allow_nan=False, default=str).encode()
        if self.via_requests:
            r = self._session().post(self.base + endpoint, data=data, timeout=60)
            status, text = r.status_code, r.text
        else:
            conn = self._connection()
            try:
                conn.request("POST", self.path + endpoint, body=data, headers=self.headers)
                resp = conn.getresponse()
                status, text = resp.status, resp.read().decode("utf-8", "replace")
            except BaseException:
                conn.close()   # a half-done exchange leaves the connection unusable
                raise
            if status in (301, 302, 303, 307, 308):   # a redirecting server: requests follows those
                self.via_requests = True
                return self.post(endpoint, body)
        if status != 200:
            raise RuntimeError(f"MLflow {endpoint}: HTTP {status}: {text[:300]}")
        return json.loads(text)

    @staticmethod
    def num(v: float) -> Any:
        """JSON has no NaN or infinities; MLflow's protobuf JSON takes them as strings."""
        return v if v == v and abs(v) != float("inf") else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))


def resolve_creds(tracking_uri: str) -> dict[str, Any]:
    """MLflow's credentials and TLS settings for an http(s) tracking URI, as a plain dict."""
    from mlflow.utils.credentials import get_default_host_creds

    c = get_default_host_creds(tracking_uri)
    return {f: getattr(c, f, None) for f in _RestRuns.CRED_FIELDS}


@dataclass
class Op:
    """One MLflow operation for the writer (JSON-serializable: it crosses the pipe and the spool)."""

    kind: str                       # "run", "metrics", "tag", "artifacts", "end"; "batch" (spooled); "noop"
    trial: str
    payload: dict[str, Any] = field(default_factory=dict)


class MlflowWriter:
    """Sends a sweep's MLflow operations: child runs under the parent run, batched and retried."""

    WRITERS = 4  # HTTP calls overlap; more threads only add GIL contention on small machines

    def __init__(self, target: SweepTarget) -> None:
        self.target = target
        self._queues: list[queue.Queue[Op | None]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()
        self._runs: dict[str, str] = {}
        self._created: set[str] = set()          # runs created by this process: no lookups needed
        self._resumed = False                    # a runs file existed: trials may already have runs
        self._client: Any = None
        self._rest: _RestRuns | None = None
        self.creds: dict[str, Any] | None = None     # resolved by the driver; None: resolve here
        self._stop = threading.Event()
        self.errors = 0          # calls that failed at least once (for tests and the summary)

    def setup(self) -> None:
        """Load the trial -> run map of earlier runs of the sweep, start, replay the spool."""
        path = Path(self.target.state_dir) / RUNS_FILE
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:  # a line cut short by a killed driver
                    continue
                self._runs[d["trial"]] = d["run"]
            self._resumed = True
        self._start()
        self._replay_spool()

    # ---- the writer threads ---------------------------------------------------------------------
    # Operations of one trial always go to the same thread (in order); threads drain their queue in
    # batches and merge each trial's pending operations into as few MLflow calls as possible:
    # typically create_run, one log_batch (params, tags, metrics) and set_terminated per trial.

    def put(self, op: Op) -> None:
        self._start()
        if op.kind == "noop":      # the driver's "start now" (setup): nothing to send
            return
        self._queues[zlib.crc32(op.trial.encode()) % self.WRITERS].put(op)

    def _start(self) -> None:
        with self._lock:
            if self._threads and all(t.is_alive() for t in self._threads):
                return
            self._stop.clear()
            if not self._queues:
                self._queues = [queue.Queue() for _ in range(self.WRITERS)]
            self._threads = [threading.Thread(target=self._work, args=(q,), name=f"mlflow-sweep-writer-{i}",
                                              daemon=True) for i, q in enumerate(self._queues)]
            for t in self._threads:
                t.start()

    def _work(self, q: "queue.Queue[Op | None]") -> None:
        while True:
            first = q.get()
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            ops = [o for o in batch if o is not None]
            by_trial: dict[str, list[Op]] = {}
            for o in ops:
                by_trial.setdefault(o.trial, []).append(o)
            for trial, trial_ops in by_trial.items():
                self._apply(trial, trial_ops)
            for _ in batch:
                q.task_done()
            if first is None or any(o is None for o in batch):
                return

    def _apply(self, trial: str, ops: list[Op]) -> None:
        """Carry out one trial's pending operations, retrying with back-off (0.5 s doubling to 30 s).
        Each step is done once: a retry resumes at the step that failed, so nothing is logged twice."""
        steps = plan_ops(ops)
        done = 0
        delay = 0.5
        while done < len(steps):
            try:
                self._do_step(trial, steps[done])
                done += 1
                delay = 0.5
            except Exception:  # noqa: BLE001 - the server is down or flaky: retry, never raise
                self.errors += 1
                if self._stop.is_set() or self._stop.wait(delay):   # flush gave up: spool the rest
                    self._spool([Op(kind=s_[0], trial=trial, payload=s_[1]) for s_ in steps[done:]])
                    return
                delay = min(delay * 2, 30.0)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued call is done; spool the rest after the timeout. True if all went."""
        deadline = time.monotonic() + (self.target.flush_timeout_s if timeout_s is None else timeout_s)
        pending = lambda: sum(q.unfinished_tasks for q in self._queues)  # noqa: E731
        while pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pending():
            return True
        self._stop.set()   # ops in flight wake from their back-off and spool themselves
        left: list[Op] = []
        for q in self._queues:
            while True:
                try:
                    op = q.get_nowait()
                except queue.Empty:
                    break
                if op is not None:
                    left.append(op)
                q.task_done()
        self._spool(left)
        end = time.monotonic() + 30   # a call in flight has at most its HTTP timeout left
        while pending() and time.monotonic() < end:
            time.sleep(0.02)
        self._stop.clear()
        return False

    def _spool(self, ops: list[Op]) -> None:
        if not ops:
            return
        with self._spool_lock, open(Path(self.target.state_dir) / SPOOL_FILE, "a") as f:
            for op in ops:
                f.write(json.dumps({"kind": op.kind, "trial": op.trial, "payload": op.payload}) + "\n")

    def _replay_spool(self) -> None:
        path = Path(self.target.state_dir) / SPOOL_FILE
        if not path.exists():
            return
        ops = [Op(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        path.unlink()
        for op in ops:
            self.put(op)

    # ---- MLflow calls ---------------------------------------------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            from ..mlflow_client import mlflow_client

            self._client = mlflow_client(self.target.tracking_uri)
        return self._client

    def _rest_client(self) -> _RestRuns | None:
        """The lean REST path for http(s) tracking servers (not Databricks); None otherwise."""
        if self._rest is None and self.target.tracking_uri.startswith(("http://", "https://")):
            self._rest = _RestRuns(self.target.tracking_uri, self.creds)
        return self._rest

    def run_id(self, trial_id: str, name: str | None = None) -> str:
        """The trial's child run: from the map, else (only on resume) found by tag, else created."""
        rid = self._runs.get(trial_id)
        if rid:
            return rid
        found = []
        if self._resumed:  # the map may lack a run created just before the driver died
            t = self.target
            found = self._mlflow().search_runs([t.experiment_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{t.parent_run_id}' and tags.trial_id = '{trial_id}'"), max_results=1)
        if found:
            rid = found[0].info.run_id
        else:
            tags = {**self.target.tags, "mlflow.parentRunId": self.target.parent_run_id, "trial_id": trial_id,
                    "meta_study.role": "trial", "mlflow.runName": name or trial_id}
            rest = self._rest_client()
            if rest is not None:
                rid = rest.post("runs/create", {"experiment_id": self.target.experiment_id,
                                                "run_name": name or trial_id,
                                                "start_time": int(time.time() * 1000),
                                                "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
                                )["run"]["info"]["run_id"]
            else:
                rid = self._mlflow().create_run(self.target.experiment_id, run_name=name or trial_id,
                                                tags=tags).info.run_id
            self._created.add(rid)
        with self._lock:
            self._runs[trial_id] = rid
            # O(1) per trial (a whole-map rewrite would be quadratic over thousands of trials); a
            # line lost to a crash is recovered on resume by the tag search above
            with open(Path(self.target.state_dir) / RUNS_FILE, "a") as f:
                f.write(json.dumps({"trial": trial_id, "run": rid}) + "\n")
        return rid

    def _do_step(self, trial: str, step: tuple[str, dict[str, Any]]) -> None:
        # MLflow's client (and its import) only off the REST path: artifacts, a restarted trial's
        # params, servers that are not http(s)
        kind, p = step
        rid = self.run_id(trial, p.get("name"))
        if kind == "batch":
            params = p.get("params", {})
            if params and rid not in self._created:   # a restarted trial's run: log each param once
                existing = set(self._mlflow().get_run(rid).data.params)
                params = {k: v for k, v in params.items() if k not in existing}
            ps = list(params.items())
            ts = list(p.get("tags", {}).items())
            ms = list(p.get("metrics", []))
            rest = self._rest_client()
            # MLflow limits: 100 params, 100 tags and 1,000 entities in all per log_batch
            while ps or ts or ms:
                bp, ps = ps[:MAX_PARAMS_PER_BATCH], ps[MAX_PARAMS_PER_BATCH:]
                bt, ts = ts[:MAX_TAGS_PER_BATCH], ts[MAX_TAGS_PER_BATCH:]
                room = MAX_METRICS_PER_BATCH - len(bp) - len(bt)
                bm, ms = ms[:room], ms[room:]
                if rest is not None:
                    rest.post("runs/log-batch", {
                        "run_id": rid, "params": [{"key": k, "value": v} for k, v in bp],
                        "tags": [{"key": k, "value": v} for k, v in bt],
                        "metrics": [{"key": k, "value": rest.num(v), "timestamp": t, "step": s_} for k, v, t, s_ in bm]})
                else:
                    from mlflow.entities import Metric, Param, RunTag

                    self._mlflow().log_batch(rid, metrics=[Metric(k, v, t, s_) for k, v, t, s_ in bm],
                                     params=[Param(k, v) for k, v in bp], tags=[RunTag(k, v) for k, v in bt])
        elif kind == "artifacts":
            client = self._mlflow()
            client.log_artifacts(rid, p["dir"], artifact_path="checkpoint")
            client.set_tag(rid, "checkpoint_uri", f"{client.get_run(rid).info.artifact_uri}/checkpoint")
        elif kind == "end":
            rest = self._rest_client()
            if rest is not None:
                rest.post("runs/update", {"run_id": rid, "status": p["status"], "end_time": int(time.time() * 1000)})
            else:
                self._mlflow().set_terminated(rid, status=p["status"])


def plan_ops(ops: list[Op]) -> list[tuple[str, dict[str, Any]]]:
    """One trial's queued operations as MLflow steps: consecutive params / tags / metrics are merged
    into one "batch" step; artifacts and the end status keep their place in the order."""
    steps: list[tuple[str, dict[str, Any]]] = []
    cur: dict[str, Any] | None = None
    for op in ops:
        p = op.payload
        if op.kind in ("run", "metrics", "tag", "batch"):
            if cur is None:
                cur = {"params": {}, "tags": {}, "metrics": []}
                steps.append(("batch", cur))
            if op.kind == "run":
                cfg = {k: v for k, v in p["config"].items() if v is not None}
                cur["params"].update(flatten(cfg))
                cur.setdefault("name", p.get("name"))
                if cfg.get("arch_family") is not None:
                    cur["tags"]["arch_family"] = str(cfg["arch_family"])
            elif op.kind == "metrics":
                cur["metrics"] += [(k, v, p["time"], p["step"]) for k, v in p["metrics"].items()]
            elif op.kind == "tag":
                cur["tags"][p["key"]] = str(p["value"])
            else:  # a spooled batch
                cur["params"].update(p.get("params", {}))
                cur["tags"].update(p.get("tags", {}))
                cur["metrics"] += [tuple(m) for m in p.get("metrics", [])]
        else:
            steps.append((op.kind, dict(p)))
            cur = None
    return steps


# ---- the writer process ---------------------------------------------------------------------------


class _Pipe:
    """The write end of a child's stdin, fed without blocking: a line goes straight into the pipe
    (~10 us) from the caller's thread; only when the pipe is full (64 KiB: the child is behind) do
    lines queue up for a feeder thread, which waits until the pipe drains. In the common case no
    second thread of the driver wakes up to compete with Tune's event loop for the GIL."""

    def __init__(self, stdin: IO[bytes]) -> None:
        self.stdin = stdin
        self.fd = stdin.fileno()
        os.set_blocking(self.fd, False)
        self.backlog: collections.deque[bytes] = collections.deque()   # not yet in the pipe; guarded by cond
        self.closing = False
        self.cond = threading.Condition()
        threading.Thread(target=self._feed, name="mlflow-writer-feeder", daemon=True).start()

    def send(self, line: str) -> None:
        data = (line + "\n").encode()
        with self.cond:
            if not self.backlog:           # nothing ahead of it: straight into the pipe
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:
                    pass
                except OSError:            # the child died: flush() reports it
                    return
                if not data:
                    return
            self.backlog.append(data)
            self.cond.notify()

    def close(self) -> None:
        """Close the child's stdin once everything queued is in the pipe."""
        with self.cond:
            self.closing = True
            self.cond.notify()

    def _feed(self) -> None:
        import select

        while True:
            with self.cond:
                while not self.backlog and not self.closing:
                    self.cond.wait()
                if not self.backlog:       # closing, and everything is in the pipe
                    self.stdin.close()
                    return
                data = self.backlog[0]
            select.select([], [self.fd], [], 1.0)
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                continue
            except OSError:                # the child died
                with self.cond:
                    self.backlog.clear()
                return
            with self.cond:                # only this thread shortens or pops the head
                if n < len(data):
                    self.backlog[0] = data[n:]
                else:
                    self.backlog.popleft()


class WriterProcess:
    """The driver's handle on a writer child process: ``put`` never blocks, ``flush`` waits."""

    def __init__(self, target: SweepTarget) -> None:
        self.target = target
        self.errors = 0
        self.cpu_s = 0.0    # the child's CPU seconds, as of its last flush reply
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: _Pipe | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            # stdout carries the replies; the child's logs go to the driver's stderr
            self._proc = subprocess.Popen([sys.executable, "-m", "meta_study.tune.writer",
                                           json.dumps({**asdict(self.target), "tags": dict(self.target.tags)})],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            assert self._proc.stdin is not None
            self._pipe = _Pipe(self._proc.stdin)
            uri = self.target.tracking_uri
            # first line: the driver-resolved credentials (never on the command line, which `ps` shows)
            self._pipe.send(json.dumps({"creds": resolve_creds(uri) if uri.startswith(("http://", "https://"))
                                        else None}))

    def put(self, op: Op) -> None:
        self._ensure()
        assert self._pipe is not None
        self._pipe.send(json.dumps(asdict(op), default=str))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the child has sent every operation (True), or spooled the rest after the
        timeout (False)."""
        if self._proc is None:
            return True
        timeout = self.target.flush_timeout_s if timeout_s is None else timeout_s
        assert self._pipe is not None
        self._pipe.send(json.dumps({"flush": timeout}))
        assert self._proc.stdout is not None
        reply = self._proc.stdout.readline()      # the child answers within timeout + one HTTP timeout
        if not reply:
            return False
        d = json.loads(reply)
        self.errors = int(d.get("errors", 0))
        self.cpu_s = float(d.get("cpu_s", 0.0))
        return bool(d["ok"])

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush, then let the child exit (it releases the writer lock)."""
        if self._proc is None:
            return True
        ok = self.flush(timeout_s)
        assert self._pipe is not None
        self._pipe.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._proc = None
        return ok


def _lock_state_dir(state_dir: str) -> Any:
    """Hold the experiment directory's writer lock (waiting up to LOCK_WAIT_S for an orphaned
    writer of a killed driver to finish). The lock goes with the process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    f = open(Path(state_dir) / LOCK_FILE, "a")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError:
            if time.monotonic() > deadline:
                print(f"meta-study writer: {state_dir}: another writer still holds {LOCK_FILE}; going on",
                      file=sys.stderr)
                return f
            time.sleep(0.2)


def _serve(args: dict[str, Any]) -> None:
    """The child: read operations from stdin, answer flushes on (the original) stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything a library prints goes to stderr, not the replies
    try:
        os.nice(10)                    # background work: the driver's scheduling goes first
    except OSError:
        pass
    target = SweepTarget(**args)
    lock = _lock_state_dir(target.state_dir)
    w = MlflowWriter(target)
    first = sys.stdin.readline()
    w.creds = json.loads(first)["creds"] if first else None
    w.setup()
    for line in sys.stdin:
        d = json.loads(line)
        if "flush" in d:
            ok = w.flush(timeout_s=float(d["flush"]))
            # cpu_s: this process's CPU seconds so far (all threads), for the overhead benchmark
            reply.write(json.dumps({"ok": ok, "errors": w.errors, "cpu_s": time.process_time()}) + "\n")
        else:
            w.put(Op(**d))
    w.flush()                          # end of input: a normal close, or the driver died
    del lock


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
