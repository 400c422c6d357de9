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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ray.tune import Callback

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
PARENT_FILE = "mlflow_parent.json"
RUNS_FILE = "mlflow_runs.json"
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
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, str] = {}
        self._resolved_sent: set[str] = set()
        self._train_checkpoints: dict[str, str] = {}
        self._client: Any = None
        self._stop = threading.Event()
        self.errors = 0          # calls that failed at least once (for tests and the summary)

    # ---- Tune events (driver thread: never block) ------------------------------------------------

    def setup(self, **info: Any) -> None:
        path = Path(self.state_dir) / RUNS_FILE
        if path.exists():
            self._runs = json.loads(path.read_text())
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

    # ---- the writer thread ----------------------------------------------------------------------

    def _put(self, op: _Op) -> None:
        self._start()
        self._queue.put(op)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._work, name="mlflow-sweep-writer", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            op = self._queue.get()
            if op is None:
                return
            delay = 0.5
            while True:
                try:
                    self._do(op)
                    break
                except Exception:  # noqa: BLE001 - the server is down or flaky: retry, never raise
                    self.errors += 1
                    if self._stop.is_set():
                        self._spool([op])
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self._queue.task_done()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued call is done; spool the rest after the timeout. True if all went."""
        deadline = time.monotonic() + (self.flush_timeout_s if timeout_s is None else timeout_s)
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._queue.unfinished_tasks:
            return True
        self._stop.set()   # the op in flight spools itself; spool what is still queued
        left: list[_Op] = []
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is not None:
                left.append(op)
            self._queue.task_done()
        self._spool(left)
        return False

    def _spool(self, ops: list[_Op]) -> None:
        if not ops:
            return
        with self._lock, open(Path(self.state_dir) / SPOOL_FILE, "a") as f:
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

    def run_id(self, trial_id: str, name: str | None = None) -> str:
        """The trial's child run: from the map, else found by tag, else created."""
        rid = self._runs.get(trial_id)
        if rid:
            return rid
        client = self._mlflow()
        found = client.search_runs([self.experiment_id],
                                   filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                                                 f"tags.trial_id = '{trial_id}'", max_results=1)
        if found:
            rid = found[0].info.run_id
        else:
            run = client.create_run(self.experiment_id, run_name=name or trial_id, tags={
                **self.tags, "mlflow.parentRunId": self.parent_run_id, "trial_id": trial_id,
                "meta_study.role": "trial"})
            rid = run.info.run_id
        with self._lock:
            self._runs[trial_id] = rid
            _atomic_json(Path(self.state_dir) / RUNS_FILE, self._runs)
        return rid

    def _do(self, op: _Op) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self._mlflow()
        p = op.payload
        if op.kind == "run":
            # Params: the trial's config at start (unset values skipped), then the resolved config
            # from its first report. Each key is logged once, so a restarted trial never conflicts.
            rid = self.run_id(op.trial, p.get("name"))
            existing = set(client.get_run(rid).data.params)
            cfg = {k: v for k, v in p["config"].items() if v is not None}
            params = [Param(k, v) for k, v in flatten(cfg).items() if k not in existing]
            for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
                client.log_batch(rid, params=params[i:i + MAX_PARAMS_PER_BATCH])
            tags = [RunTag(t, str(cfg[t])) for t in ("arch_family",) if cfg.get(t) is not None]
            if tags:
                client.log_batch(rid, tags=tags)
        elif op.kind == "metrics":
            rid = self.run_id(op.trial)
            ms = [Metric(k, v, p["time"], p["step"]) for k, v in p["metrics"].items()]
            for i in range(0, len(ms), MAX_METRICS_PER_BATCH):
                client.log_batch(rid, metrics=ms[i:i + MAX_METRICS_PER_BATCH])
        elif op.kind == "artifacts":
            rid = self.run_id(op.trial)
            client.log_artifacts(rid, p["dir"], artifact_path="checkpoint")
            client.set_tag(rid, "checkpoint_uri", f"{client.get_run(rid).info.artifact_uri}/checkpoint")
        elif op.kind == "tag":
            client.set_tag(self.run_id(op.trial), p["key"], p["value"])
        elif op.kind == "end":
            client.set_terminated(self.run_id(op.trial), status=p["status"])


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

