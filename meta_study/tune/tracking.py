"""MLflow tracking for sweeps, from the Tune driver.

Why on the driver: trial workers never talk to MLflow, so they can never fall back to a local file
store (ray-project/ray #36257), and a tracking server that is down never slows or kills a trial.
The callback turns Tune events into MLflow operations and hands them to a writer process
(:mod:`meta_study.tune.writer`); Tune's event loop never waits on the network, and the writer's
work never competes with it for the driver's GIL.

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
import time
from pathlib import Path
from typing import Any, Mapping

from ray.tune import Callback

from ..mlflow_client import get_or_create_experiment
from .writer import (MAX_PARAMS_PER_BATCH, RUNS_FILE, SPOOL_FILE, MlflowWriter, SweepTarget,  # noqa: F401
                     WriterProcess, Op, plan_ops, flatten)

PARENT_FILE = "mlflow_parent.json"
#: Result keys that are Tune bookkeeping, not metrics.
TUNE_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
             "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "experiment_tag",
             "checkpoint_dir_name", "should_checkpoint", "step"}


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


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
        self.target = SweepTarget(tracking_uri, experiment_id, parent_run_id, state_dir, dict(tags or {}),
                                  flush_timeout_s)
        self._init_runtime()

    # Tune pickles the run config (callbacks included) for Tuner.restore: keep threads out of it.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._writer: WriterProcess | None = None
        self._resolved_sent: set[str] = set()
        self._train_checkpoints: dict[str, str] = {}
        self.errors = 0          # calls that failed at least once (for tests and the summary)
        self.writer_cpu_s = 0.0  # CPU seconds its writer processes used (for the overhead benchmark)

    # ---- Tune events (driver thread: never block) ------------------------------------------------

    def setup(self, **info: Any) -> None:
        # the writer process loads the trial -> run map and replays the spool as it starts
        self._put(Op("noop", ""))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put(Op("run", trial.trial_id, {"name": str(trial), "config": _clean_config(trial.config)}))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if isinstance(result.get("checkpoint_path"), str):  # a Ray Train trial's checkpoint (TuneReportCallback)
            self._train_checkpoints[trial.trial_id] = result["checkpoint_path"]
        resolved = _resolved(result)
        if resolved and trial.trial_id not in self._resolved_sent:
            self._resolved_sent.add(trial.trial_id)
            self._put(Op("run", trial.trial_id, {"name": str(trial), "config": resolved}))
        metrics = {k: float(v) for k, v in result.items()
                   if k not in TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        step = int(result.get("step", result.get("training_iteration", 0)) or 0)
        if metrics:
            self._put(Op("metrics", trial.trial_id, {"metrics": metrics, "step": step,
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
        self._put(Op("metrics", trial_id, {"metrics": dict(metrics), "step": 0, "time": int(time.time() * 1000)}))
        if checkpoint_dir:
            self._put(Op("artifacts", trial_id, {"dir": checkpoint_dir}))
        self._put(Op("end", trial_id, {"status": "FINISHED"}))

    def _finish(self, trial: Any, status: str) -> None:
        ckpt = getattr(trial, "checkpoint", None)
        path = getattr(ckpt, "path", None) if ckpt is not None else self._train_checkpoints.get(trial.trial_id)
        if path and os.path.isdir(path):
            self._put(Op("artifacts", trial.trial_id, {"dir": path}))
        elif path:
            self._put(Op("tag", trial.trial_id, {"key": "checkpoint_uri", "value": str(path)}))
        self._put(Op("end", trial.trial_id, {"status": status}))

    # ---- the writer process ----------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        if self._writer is None:
            self._writer = WriterProcess(self.target)
        self._writer.put(op)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every operation is sent; spool the rest after the timeout. True if all went.
        The writer process exits (a later operation starts a new one)."""
        if self._writer is None:
            return True
        ok = self._writer.close(timeout_s)
        self.errors += self._writer.errors
        self.writer_cpu_s += self._writer.cpu_s
        self._writer = None
        return ok


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

