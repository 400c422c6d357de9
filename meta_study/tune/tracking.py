"""MLflow tracking for sweeps, from the Tune driver.

Why on the driver: trial workers never talk to MLflow, so they can never fall back to a local file
store (ray-project/ray #36257), and a tracking server that is down never slows or kills a trial.
The callback turns Tune events into MLflow calls and hands them to one background writer thread;
Tune's event loop never waits on the network.

- **One parent run per sweep**, created once by :func:`parent_run` and remembered in the Tune
  experiment directory, so ``--resume`` reuses it (ray #19909/#19978: children are nested under it).
- **One child run per trial**, tagged with the sweep's parent run and the trial id. The trial ->
  run map is persisted in the experiment directory, and a restarted or restored trial finds its run
  there (or by tag), so no duplicate runs appear.
- **Params** are the flattened resolved config, logged once per run (a trial's config never changes,
  so re-logging them after a restart is a no-op and never conflicts: ray #30649).
- **Metrics** follow docs/tracking.md and go out in batches of at most 1,000 (MLflow's limit);
  params in batches of at most 100.
- **Failures**: every call is retried with exponential back-off (0.5 s doubling to 30 s). At the end
  of the sweep the writer keeps retrying for ``flush_timeout_s``, then spools what is left to
  ``mlflow_spool.jsonl`` in the experiment directory; the next run of the sweep (``--resume``)
  replays it first.
"""

from __future__ import annotations

import json
import os
import queue
import zlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ray.tune import Callback

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
PARENT_FILE = "mlflow_parent.json"
RUNS_FILE = "mlflow_runs.jsonl"   # append-only: one {"trial": ..., "run": ...} line per run
SPOOL_FILE = "mlflow_spool.jsonl"
#: Result keys that are Tune bookkeeping, not metrics.
TUNE_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
             "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "experiment_tag",
             "checkpoint_dir_name", "should_checkpoint", "step"}


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


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    from ..refit import _artifact_location as loc

    return loc(tracking_uri, experiment)


def get_or_create_experiment(client: Any, tracking_uri: str, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri, name))
    except Exception:  # noqa: BLE001 - another driver created it between the two calls
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def parent_run(tracking_uri: str, experiment: str, sweep: str, state_dir: str, *, params: Mapping[str, Any],
               tags: Mapping[str, str]) -> tuple[str, str]:
    """The sweep's parent run: created once, reused on resume. Returns (experiment_id, run_id)."""
    from mlflow.entities import Param

    from ..mlflow_client import mlflow_client

    path = Path(state_dir) / PARENT_FILE
    if path.exists():
        d = json.loads(path.read_text())
        return d["experiment_id"], d["run_id"]
    client = mlflow_client(tracking_uri)
    exp_id = get_or_create_experiment(client, tracking_uri, experiment)
    run = client.create_run(exp_id, run_name=f"sweep {sweep}", tags={"sweep": sweep, "meta_study.role": "sweep",
                                                                      **tags})
    flat = flatten(params)
    items = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run.info.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
    client.set_tag(run.info.run_id, "n_params", str(len(items)))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_json(path, {"experiment_id": exp_id, "run_id": run.info.run_id, "tracking_uri": tracking_uri})
    return exp_id, run.info.run_id


class _RestRuns:
    """The three calls every trial makes (runs/create, runs/log-batch, runs/update) over plain
    keep-alive HTTP sessions, one per writer thread: ~2 ms of client CPU per call against ~5 ms
    through MlflowClient, which on a small driver machine is CPU that Ray's own scheduling needs.
    Credentials and TLS settings come from MLflow's own resolution of the environment."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.utils.credentials import get_default_host_creds

        self.creds = get_default_host_creds(tracking_uri)
        self.base = self.creds.host.rstrip("/") + "/api/2.0/mlflow/"
        self.local = threading.local()

    def _session(self) -> Any:
        s = getattr(self.local, "session", None)
        if s is None:
            import requests

            c = self.creds
            s = requests.Session()
            if c.token:
                s.headers["Authorization"] = f"Bearer {c.token}"
            elif c.username:
                s.auth = (c.username, c.password or "")
            s.verify = False if c.ignore_tls_verification else (c.server_cert_path or True)
            if c.client_cert_path:
                s.cert = c.client_cert_path
            self.local.session = s
        return s

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._session().post(self.base + endpoint, data=json.dumps(body, allow_nan=False, default=str),
                                 headers={"Content-Type": "application/json"}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"MLflow {endpoint}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    @staticmethod
    def num(v: float) -> Any:
        """JSON has no NaN or infinities; MLflow's protobuf JSON takes them as strings."""
        return v if v == v and abs(v) != float("inf") else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))


@dataclass
class _Op:
    """One MLflow operation for the writer thread (JSON-serializable, for the spool)."""

    kind: str                       # "run", "params", "metrics", "artifacts", "tag", "end"
    trial: str
    payload: dict[str, Any] = field(default_factory=dict)


class MlflowSweepCallback(Callback):
    """Driver-side Tune callback: a child MLflow run per trial under the sweep's parent run.

    Args:
        tracking_uri: where to log (never a worker's default).
        experiment_id, parent_run_id: from :func:`parent_run`.
        state_dir: the Tune experiment directory (trial -> run map and spool live there).
        tags: tags of every child run (sweep, git SHA, researcher, ...).
        flush_timeout_s: how long the end of the sweep waits for an unreachable server before
            spooling what is left.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, state_dir: str, *,
                 tags: Mapping[str, str] | None = None, flush_timeout_s: float = 300.0) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.state_dir = state_dir
        self.tags = dict(tags or {})
        self.flush_timeout_s = flush_timeout_s
        self._init_runtime()

    # Tune pickles the run config (callbacks included) for Tuner.restore: keep threads out of it.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._queues: list[queue.Queue[_Op | None]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()
        self._runs: dict[str, str] = {}
        self._created: set[str] = set()          # runs created by this process: no lookups needed
        self._resumed = False                    # a runs file existed: trials may already have runs
        self._resolved_sent: set[str] = set()
        self._train_checkpoints: dict[str, str] = {}
        self._client: Any = None
        self._rest: _RestRuns | None = None
        self._stop = threading.Event()
        self.errors = 0          # calls that failed at least once (for tests and the summary)

    # ---- Tune events (driver thread: never block) ------------------------------------------------

    def setup(self, **info: Any) -> None:
        path = Path(self.state_dir) / RUNS_FILE
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

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(_Op("run", trial.trial_id, {"name": str(trial), "config": _clean_config(trial.config)}))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if isinstance(result.get("checkpoint_path"), str):  # a Ray Train trial's checkpoint (TuneReportCallback)
            self._train_checkpoints[trial.trial_id] = result["checkpoint_path"]
        resolved = _resolved(result)
        if resolved and trial.trial_id not in self._resolved_sent:
            self._resolved_sent.add(trial.trial_id)
            self._put(_Op("run", trial.trial_id, {"name": str(trial), "config": resolved}))
        metrics = {k: float(v) for k, v in result.items()
                   if k not in TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        step = int(result.get("step", result.get("training_iteration", 0)) or 0)
        if metrics:
            self._put(_Op("metrics", trial.trial_id, {"metrics": metrics, "step": step,
                                                      "time": int(time.time() * 1000)}))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    def log_final(self, trial_id: str, metrics: Mapping[str, float], checkpoint_dir: str | None) -> None:
        """Final metrics of a trial evaluated after the sweep (an early-stopped trial's last
        checkpoint), then its checkpoint artifact and FINISHED status."""
        self._put(_Op("metrics", trial_id, {"metrics": dict(metrics), "step": 0, "time": int(time.time() * 1000)}))
        if checkpoint_dir:
            self._put(_Op("artifacts", trial_id, {"dir": checkpoint_dir}))
        self._put(_Op("end", trial_id, {"status": "FINISHED"}))

    def _finish(self, trial: Any, status: str) -> None:
        ckpt = getattr(trial, "checkpoint", None)
        path = getattr(ckpt, "path", None) if ckpt is not None else self._train_checkpoints.get(trial.trial_id)
        if path and os.path.isdir(path):
            self._put(_Op("artifacts", trial.trial_id, {"dir": path}))
        elif path:
            self._put(_Op("tag", trial.trial_id, {"key": "checkpoint_uri", "value": str(path)}))
        self._put(_Op("end", trial.trial_id, {"status": status}))

    # ---- the writer threads ---------------------------------------------------------------------
    # Operations of one trial always go to the same thread (in order); threads drain their queue in
    # batches and merge each trial's pending operations into as few MLflow calls as possible:
    # typically create_run, one log_batch (params, tags, metrics) and set_terminated per trial.

    WRITERS = 4  # HTTP calls overlap; more threads only add GIL contention on small machines

    def _put(self, op: _Op) -> None:
        self._start()
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

    def _work(self, q: "queue.Queue[_Op | None]") -> None:
        # Background work: below the driver's priority, so that on a busy driver machine Ray's own
        # scheduling goes first and the writers catch up in idle time (Linux: per-thread nice).
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            first = q.get()
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            ops = [o for o in batch if o is not None]
            by_trial: dict[str, list[_Op]] = {}
            for o in ops:
                by_trial.setdefault(o.trial, []).append(o)
            for trial, trial_ops in by_trial.items():
                self._apply(trial, trial_ops)
            for _ in batch:
                q.task_done()
            if first is None or any(o is None for o in batch):
                return

    def _apply(self, trial: str, ops: list[_Op]) -> None:
        """Carry out one trial's pending operations, retrying with back-off (0.5 s doubling to 30 s).
        Each step is done once: a retry resumes at the step that failed, so nothing is logged twice."""
        steps = _plan(ops)
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
                    self._spool([_Op(kind=s_[0], trial=trial, payload=s_[1]) for s_ in steps[done:]])
                    return
                delay = min(delay * 2, 30.0)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued call is done; spool the rest after the timeout. True if all went."""
        deadline = time.monotonic() + (self.flush_timeout_s if timeout_s is None else timeout_s)
        pending = lambda: sum(q.unfinished_tasks for q in self._queues)  # noqa: E731
        while pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pending():
            return True
        self._stop.set()   # ops in flight wake from their back-off and spool themselves
        left: list[_Op] = []
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

    def _spool(self, ops: list[_Op]) -> None:
        if not ops:
            return
        with self._spool_lock, open(Path(self.state_dir) / SPOOL_FILE, "a") as f:
            for op in ops:
                f.write(json.dumps({"kind": op.kind, "trial": op.trial, "payload": op.payload}) + "\n")

    def _replay_spool(self) -> None:
        path = Path(self.state_dir) / SPOOL_FILE
        if not path.exists():
            return
        ops = [_Op(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        path.unlink()
        for op in ops:
            self._put(op)

    # ---- MLflow calls ---------------------------------------------------------------------------

    def _mlflow(self) -> Any:
        if self._client is None:
            from ..mlflow_client import mlflow_client

            self._client = mlflow_client(self.tracking_uri)
        return self._client

    def _rest_client(self) -> _RestRuns | None:
        """The lean REST path for http(s) tracking servers (not Databricks); None otherwise."""
        if self._rest is None and self.tracking_uri.startswith(("http://", "https://")):
            self._rest = _RestRuns(self.tracking_uri)
        return self._rest

    def run_id(self, trial_id: str, name: str | None = None) -> str:
        """The trial's child run: from the map, else (only on resume) found by tag, else created."""
        rid = self._runs.get(trial_id)
        if rid:
            return rid
        client = self._mlflow()
        found = []
        if self._resumed:  # the map may lack a run created just before the driver died
            found = client.search_runs([self.experiment_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.trial_id = '{trial_id}'"), max_results=1)
        if found:
            rid = found[0].info.run_id
        else:
            tags = {**self.tags, "mlflow.parentRunId": self.parent_run_id, "trial_id": trial_id,
                    "meta_study.role": "trial", "mlflow.runName": name or trial_id}
            rest = self._rest_client()
            if rest is not None:
                rid = rest.post("runs/create", {"experiment_id": self.experiment_id, "run_name": name or trial_id,
                                                "start_time": int(time.time() * 1000),
                                                "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
                                )["run"]["info"]["run_id"]
            else:
                rid = client.create_run(self.experiment_id, run_name=name or trial_id, tags=tags).info.run_id
            self._created.add(rid)
        with self._lock:
            self._runs[trial_id] = rid
            # O(1) per trial (a whole-map rewrite would be quadratic over thousands of trials); a
            # line lost to a crash is recovered on resume by the tag search above
            with open(Path(self.state_dir) / RUNS_FILE, "a") as f:
                f.write(json.dumps({"trial": trial_id, "run": rid}) + "\n")
        return rid

    def _do_step(self, trial: str, step: tuple[str, dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind, p = step
        client = self._mlflow()
        rid = self.run_id(trial, p.get("name"))
        if kind == "batch":
            params = p.get("params", {})
            if params and rid not in self._created:   # a restarted trial's run: log each param once
                existing = set(client.get_run(rid).data.params)
                params = {k: v for k, v in params.items() if k not in existing}
            ps = list(params.items())
            ts = list(p.get("tags", {}).items())
            ms = list(p.get("metrics", []))
            rest = self._rest_client()
            # MLflow limits: 100 params, 100 tags and 1,000 entities in all per log_batch
            while ps or ts or ms:
                bp, ps = ps[:MAX_PARAMS_PER_BATCH], ps[MAX_PARAMS_PER_BATCH:]
                bt, ts = ts[:100], ts[100:]
                room = MAX_METRICS_PER_BATCH - len(bp) - len(bt)
                bm, ms = ms[:room], ms[room:]
                if rest is not None:
                    rest.post("runs/log-batch", {
                        "run_id": rid, "params": [{"key": k, "value": v} for k, v in bp],
                        "tags": [{"key": k, "value": v} for k, v in bt],
                        "metrics": [{"key": k, "value": rest.num(v), "timestamp": t, "step": s_} for k, v, t, s_ in bm]})
                else:
                    client.log_batch(rid, metrics=[Metric(k, v, t, s_) for k, v, t, s_ in bm],
                                     params=[Param(k, v) for k, v in bp], tags=[RunTag(k, v) for k, v in bt])
        elif kind == "artifacts":
            client.log_artifacts(rid, p["dir"], artifact_path="checkpoint")
            client.set_tag(rid, "checkpoint_uri", f"{client.get_run(rid).info.artifact_uri}/checkpoint")
        elif kind == "end":
            rest = self._rest_client()
            if rest is not None:
                rest.post("runs/update", {"run_id": rid, "status": p["status"], "end_time": int(time.time() * 1000)})
            else:
                client.set_terminated(rid, status=p["status"])


def _plan(ops: list[_Op]) -> list[tuple[str, dict[str, Any]]]:
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


def _resolved(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``resolved`` config a trial reports (nested, or flattened by Tune as ``resolved/...``)."""
    r = result.get("resolved")
    if isinstance(r, Mapping):
        return dict(r) or None
    flat = {k.split("/", 1)[1]: v for k, v in result.items() if isinstance(k, str) and k.startswith("resolved/")}
    return flat or None


def _clean_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved trial config without Tune internals and test hooks (keys starting with '_')."""
    return {k: v for k, v in config.items() if not str(k).startswith("_")}

