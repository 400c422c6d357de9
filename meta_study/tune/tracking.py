"""MLflow tracking for sweeps, from the Tune driver.

Why on the driver: trial workers never talk to MLflow, so they can never fall back to a local file
store (ray-project/ray #36257), and a tracking server that is down never slows or kills a trial.
The callback turns Tune events into MLflow operations and hands them to a writer process
(:mod:`meta_study.tune.writer`); Tune's event loop never waits on the network, and the writer's
work never competes with it for the driver's GIL.

- **One parent run per sweep**, created once (:func:`create_parent_run`) and remembered in the
  sweep record in the sweep's storage (:mod:`.state`), so ``--resume`` reuses it from any machine
  (ray #19909/#19978: children are nested under it). At the end of each session it gets the
  sweep's summary as metrics (:func:`log_sweep_summary`: trial counts, best accuracies).
- **One child run per trial**, tagged with the sweep's parent run and the trial id. The trial ->
  run map is kept in the sweep's storage, and a restarted or restored trial finds its run there
  (or by tag), so no duplicate runs appear.
- **Params** are the flattened resolved config, logged once per run (a trial's config never changes,
  so re-logging them after a restart is a no-op and never conflicts: ray #30649).
- **Metrics** follow docs/tracking.md and go out in batches of at most 1,000 (MLflow's limit);
  params in batches of at most 100.
- **A trial stopped early** (ASHA) keeps its run open, tagged ``meta_study.eval_status=pending``,
  until the end-of-sweep evaluation logs its final metrics (or the reason it failed).
- **An interrupted sweep** (Ctrl-C: Tune's stop signal, SIGINT or SIGUSR1) is not an early stop:
  the callback notes the signal (:attr:`MlflowSweepCallback.stop_signal`), the runner evaluates
  nothing, and every run still open ends KILLED with ``meta_study.status=interrupted``. When
  ``--resume`` restarts such a trial its run is set RUNNING again and the stale tags
  (``meta_study.status``/``reason``/``eval_status``/``eval_error``) are deleted; an evaluation that
  succeeds in a later session deletes an earlier session's error the same way.
- **Failures**: every call is retried with exponential back-off (0.5 s doubling to 30 s). At the end
  of the sweep the writer keeps retrying for ``flush_timeout_s``, then spools what is left to the
  sweep's storage; the next run of the sweep (``--resume``) replays it first. The callback keeps
  that answer (:attr:`MlflowSweepCallback.incomplete`): the sweep ends its parent run FAILED and
  exits 1.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
import time
from typing import Any, Iterable, Mapping

from ray.tune import Callback

from ..mlflow_client import get_or_create_experiment
from ..schema import ACCURACY_KEY_PATTERN
from .provenance import full_uri
from .state import RECORD, StateDir, SweepRecord, is_remote
from .trial import ENV_KEY, config_key
from .writer import (MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, RUNS_FILE, SPOOL_FILE, MlflowWriter, SweepTarget,  # noqa: F401
                     WriterProcess, Op, plan_ops, flatten, refused_name)

PARENT_FILE = f"meta_study/{RECORD}"    # the sweep record, under the experiment dir
#: Tags a trial's run carries about its end-of-sweep evaluation (an early-stopped trial).
EVAL_STATUS_TAG = "meta_study.eval_status"     # pending, ok, failed
EVAL_ERROR_TAG = "meta_study.eval_error"       # why it failed (one line)
#: Where a trial ran and with what (host, package versions, devices; JSON): ``trial.ENV_KEY``'s value.
ENV_TAG = "environment"
STATUS_TAG = "meta_study.status"               # orphaned (no trial of the sweep owns it), interrupted
REASON_TAG = "meta_study.reason"
#: What an earlier session may have left on a run that a later session continues or evaluates.
STALE_TAGS = (STATUS_TAG, REASON_TAG, EVAL_STATUS_TAG, EVAL_ERROR_TAG)
INTERRUPTED_REASON = ("the sweep was interrupted ({signal}) before this trial finished; run the sweep's command again "
                      "with --resume to continue it from its last checkpoint")
#: Result keys that are Tune bookkeeping, not metrics.
TUNE_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s", "pid",
             "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "experiment_tag",
             "checkpoint_dir_name", "should_checkpoint", "step"}


def create_parent_run(tracking_uri: str, experiment: str, sweep: str, *, params: Mapping[str, Any],
                      tags: Mapping[str, str]) -> tuple[str, str]:
    """Create the sweep's parent run (and its experiment if needed). Returns (experiment_id, run_id)."""
    from mlflow.entities import Param

    from ..mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    exp_id = get_or_create_experiment(client, tracking_uri, experiment)
    run = client.create_run(exp_id, run_name=f"sweep {sweep}", tags={"sweep": sweep, "meta_study.role": "sweep",
                                                                      **tags})
    flat = flatten(params)
    # a name MLflow refuses refused the whole batch: the sweep did not start, with MLflow's
    # traceback and a parent run left RUNNING; left out and said, as the writer does for trials
    for k, why in [(k, why) for k in flat if (why := refused_name(k)) is not None]:
        print(f"meta-study: MLflow takes no param named {k[:300]!r} ({why}); it is left out of the sweep's parent "
              "run, the rest is logged", file=sys.stderr, flush=True)
        del flat[k]
    items = [Param(k, v) for k, v in flat.items()]
    try:
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            client.log_batch(run.info.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
        client.set_tag(run.info.run_id, "n_params", str(len(items)))
    except BaseException:
        # no sweep record names this run yet, so nothing would ever close it: it stayed RUNNING for
        # good (a live sweep in the UI and to ingest) and the next attempt made another parent run
        # one try, at most one HTTP timeout (60 s) for a server: MLflow's client retries a down one
        # for ~4 minutes, which would double the wait before the error is said
        try:
            if tracking_uri.lower().startswith(("http://", "https://")):
                from ._rest import _RestRuns

                _RestRuns(tracking_uri).post("runs/update", {"run_id": run.info.run_id, "status": "FAILED",
                                                             "end_time": int(time.time() * 1000)})
            else:
                client.set_terminated(run.info.run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - the server is down: the error raised below is the one to say
            pass
        raise
    return exp_id, run.info.run_id


def recover_run_map(tracking_uri: str, experiment_id: str, parent_run_id: str, state: StateDir) -> int:
    """Add to a resumed sweep's trial -> run map every child run MLflow has that the map lacks.

    The writer creates a trial's run, then writes its map entry: a driver killed between the two
    left a run the map does not know. A trial that keeps its id finds it by its ``trial_id`` tag
    (the writer's ``run_id``), but a restored Optuna search draws that configuration again under a
    new id, and only map entries are offered for adoption (by ``config_key``): the run was closed
    as an orphan and the configuration got a second run. One paged search of the parent's
    children per resume (~10 ms per 1,000 runs). Returns the number of entries added."""
    from ..mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    entries = state.run_entries()
    known = {run for _, run, _ in entries}
    # a trial the map already gives a run keeps it: a second run of the same trial is a duplicate
    # (an entry added for it would now be the trial's latest, StateDir.runs, and take its logging)
    mapped = {trial for trial, _, _ in entries}
    added, token = 0, None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        for run in page:
            trial = run.data.tags.get("trial_id")
            if run.info.run_id in known or not trial or "." in trial or trial in mapped:
                continue
            key = run.data.tags.get("config_key") or None
            state.add_run(trial, run.info.run_id, key if key and "." not in key else None)
            known.add(run.info.run_id)
            mapped.add(trial)
            added += 1
        token = page.token
        if not token:
            return added


#: Child-run metrics whose best value over the sweep the parent run carries as ``best/<key>``:
#: the accuracies of docs/tracking.md (fractions, higher is better).
ACCURACY_KEY = re.compile(ACCURACY_KEY_PATTERN)


def best_accuracies(child_metrics: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """``best/<key>``: the highest value of each accuracy key over the children (NaN ignored)."""
    best: dict[str, float] = {}
    for metrics in child_metrics:
        for k, v in metrics.items():
            if ACCURACY_KEY.fullmatch(k) and math.isfinite(v) and v > best.get(f"best/{k}", -math.inf):
                best[f"best/{k}"] = float(v)
    return dict(sorted(best.items()))


def log_sweep_summary(tracking_uri: str, experiment_id: str, parent_run_id: str,
                      counts: Mapping[str, int]) -> dict[str, float]:
    """Give the sweep's parent run its summary as metrics, so the MLflow UI's runs table shows
    it: ``sweep/<count>`` (trials, finished, errored, ...) and ``best/<accuracy key>`` over the
    sweep's FINISHED child runs of every session (one paged search of the children, 1,000 a
    page): the runs ingest reads. An errored, interrupted or orphaned run's last accuracy is a
    model part-trained, which the parent gave as the sweep's best. Returns what it logged."""
    from mlflow.entities import Metric

    from ..mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    children: list[Mapping[str, float]] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                                  "and attributes.status = 'FINISHED'", max_results=1000, page_token=token)
        children += [r.data.metrics for r in page]
        token = page.token
        if not token:
            break
    if "interrupted" not in counts and client.get_run(parent_run_id).data.metrics.get("sweep/interrupted"):
        # a session that ended without a stop after one that was stopped (Ctrl-C, then --resume):
        # the earlier session's count stayed the parent's latest, "3 interrupted" on a sweep whose
        # every trial had finished since
        counts = {**counts, "interrupted": 0}
    summary = {f"sweep/{k}": float(v) for k, v in counts.items()} | best_accuracies(children)
    # "best/" can push a child's key (up to 250 characters) past MLflow's 250, and a server refuses
    # a batch of over 1,000 metrics: either refused the whole summary, and the parent run was left
    # RUNNING (a sweep with 30 tasks x 40 probed layers has 1,200 accuracy keys)
    summary = {k: v for k, v in summary.items() if refused_name(k) is None}
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in summary.items()]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(parent_run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])
    return summary


def parent_run(tracking_uri: str, experiment: str, sweep: str, state_dir: str, *, params: Mapping[str, Any],
               tags: Mapping[str, str]) -> tuple[str, str]:
    """The sweep's parent run: created once and recorded in the sweep record under ``state_dir``
    (the experiment dir, a path or a URI), reused after. Returns (experiment_id, run_id)."""
    from ..mlflow_client import safe_uri

    state = StateDir(state_dir)
    rec = state.read_record()
    if rec is not None:
        return rec.experiment_id, rec.parent_run_id
    exp_id, run_id = create_parent_run(tracking_uri, experiment, sweep, params=params, tags=tags)
    if state.create_record(SweepRecord(sweep=sweep, experiment=experiment, experiment_id=exp_id, parent_run_id=run_id,
                                       tracking_uri=safe_uri(tracking_uri))):
        return exp_id, run_id
    # another process created the sweep meanwhile: its parent run is the sweep's, ours is closed
    from ..mlflow_client import mlflow_client

    mlflow_client(tracking_uri).set_terminated(run_id, status="KILLED")
    winner = state.read_record()
    assert winner is not None
    return winner.experiment_id, winner.parent_run_id


class MlflowSweepCallback(Callback):
    """Driver-side Tune callback: a child MLflow run per trial under the sweep's parent run.

    Args:
        tracking_uri: where to log (never a worker's default).
        experiment_id, parent_run_id: from :func:`create_parent_run`.
        state_dir: the Tune experiment directory, a path or a URI (the run map and spool live in
            its ``meta_study/``).
        tags: tags of every child run (sweep, git SHA, researcher, ...).
        flush_timeout_s: how long the end of the sweep waits for an unreachable server before
            spooling what is left.
        resumed: a later session of the sweep (trials may already have runs).
        storage_uri: Tune's storage path, for full checkpoint URIs (default: ``state_dir``'s).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, state_dir: str, *,
                 tags: Mapping[str, str] | None = None, flush_timeout_s: float = 300.0, resumed: bool = False,
                 storage_uri: str | None = None) -> None:
        self.target = SweepTarget(tracking_uri, experiment_id, parent_run_id, state_dir, dict(tags or {}),
                                  flush_timeout_s, resumed)
        self.storage_uri = storage_uri or state_dir
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
        self._env_sent: set[str] = set()     # trials whose environment tag this session set
        self._train_checkpoints: dict[str, str] = {}
        self._last_step: dict[str, int] = {}   # trial -> the training step of its last report
        self.ended: set[str] = set()   # trials whose run this session ended (or left for evaluation)
        self.open: set[str] = set()    # trials whose run this session started or left pending, not ended
        self.stop_signal: str | None = None   # "SIGINT" once Tune's stop signal arrived (see setup)
        self._mapped: set[str] = set()  # trials with a run in the stored map (a resumed sweep)
        self._by_key: dict[str, list[tuple[str, str]]] = {}   # config key -> (trial, run) of earlier sessions
        self._adopted: set[str] = set()
        # the last flush gave up: MLflow lacks operations of this session (spooled for --resume, or
        # lost); a later flush that sends everything (a new writer replays the spool first) clears it
        self.unsent = False
        self.lost = False        # operations neither sent nor spooled (a writer died, a spool unwritable)
        self.errors = 0          # calls that failed at least once (for tests and the summary)
        #: operations MLflow refused for good (a run deleted, a create refused), over every writer
        #: of this session: not spooled, so no --resume sends them; the sweep ends FAILED with the count
        self.dropped = 0
        self.writer_cpu_s = 0.0  # CPU seconds its writer processes used (for the overhead benchmark)

    # ---- Tune events (driver thread: never block) ------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._watch_stop_signals()
        # the writer process loads the trial -> run map and replays the spool as it starts
        self._put(Op("noop", ""))
        if self.target.resumed:   # runs of earlier sessions, by what their trials train
            for trial, run, key in StateDir(self.target.state_dir).run_entries():
                self._mapped.add(trial)
                if key:
                    self._by_key.setdefault(key, []).append((trial, run))

    def _watch_stop_signals(self) -> None:
        """Note Tune's stop signal. ``Tuner.fit`` installs its own SIGINT and SIGUSR1 handlers
        before it sets callbacks up (ray/tune/tune.py ``_setup_signal_catching``): on the first
        Ctrl-C it ends the run, saves the experiment state and returns normally, and the trials it
        stopped look like early-stopped ones. Each of its handlers is wrapped to record the signal
        first; the runner restores the handlers after ``fit``. Only in the main thread (where Tune
        installs them at all); a handler that is not Tune's (``TUNE_DISABLE_SIGINT_HANDLER=1``:
        Python's KeyboardInterrupt ends the driver) is left alone."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, getattr(signal, "SIGUSR1", None)):
            prev = signal.getsignal(sig) if sig is not None else None
            if sig is None or not callable(prev) or prev is signal.default_int_handler:
                continue

            def noted(signum: int, frame: Any, _prev: Any = prev) -> None:
                self.stop_signal = signal.Signals(signum).name
                _prev(signum, frame)
            signal.signal(sig, noted)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = config_key(trial.config)
        if self._by_key.get(key) and trial.trial_id not in self._mapped:
            self._adopt_lost(trial.trial_id, key, trials)
        self.open.add(trial.trial_id)
        if trial.trial_id in self._mapped:   # an earlier session's run, continued: running again, stale tags off
            self._put(Op("reopen", trial.trial_id, {"untag": list(STALE_TAGS)}))
        self._put(Op("run", trial.trial_id, {"name": str(trial), "config": _clean_config(trial.config),
                                             "config_key": key}))
        res = _resources(trial)
        if res:   # what Ray reserved for this trial (a spec's per-config resources)
            self._put(Op("tag", trial.trial_id, {"key": "resources", "value": res}))

    def _adopt_lost(self, trial_id: str, key: str, trials: list) -> None:
        """A new trial of a resumed sweep whose configuration an earlier trial ran, and that trial is
        unknown to Tune now (started after Tune's last saved state, lost with the driver; a restored
        Optuna search draws the configuration again under a new id): the new trial takes over that
        trial's run, never a second run for the same model (its result too: see ``TrialHooks.resumed``)."""
        known = {t.trial_id for t in trials}
        for old, run in self._by_key[key]:
            if old not in known and run not in self._adopted:
                self._adopted.add(run)
                self._mapped.add(trial_id)
                self._put(Op("map", trial_id, {"run": run, "config_key": key}))
                self._put(Op("tag", trial_id, {"key": "trial_id", "value": trial_id}))
                self._put(Op("tag", trial_id, {"key": "meta_study.adopted_from", "value": old}))
                return

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if isinstance(result.get("checkpoint_path"), str):  # a Ray Train trial's checkpoint (TuneReportCallback)
            self._train_checkpoints[trial.trial_id] = result["checkpoint_path"]
        resolved = _resolved(result)
        if resolved and trial.trial_id not in self._resolved_sent:
            self._resolved_sent.add(trial.trial_id)
            self._put(Op("run", trial.trial_id, {"name": str(trial), "config": resolved}))
        self._environment(trial.trial_id, result)
        metrics = _metrics(result)
        step = self._step_of(trial.trial_id, result)
        if "step" in result:
            self._last_step[trial.trial_id] = step
        if metrics:
            # an end-of-sweep evaluation comes with its own time (info["time_ms"]): logged again by a
            # resumed sweep, it is the same point, not a second one
            when = info.get("time_ms") or int(time.time() * 1000)
            self._put(Op("metrics", trial.trial_id, {"metrics": metrics, "step": step, "time": when}))

    def _environment(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """The run's ``environment`` tag from the first result of this session that carries it (a
        trial restarted on another node says where it runs now; what it ran on before is in the
        run's tag history only as far as MLflow keeps one)."""
        env = result.get(ENV_KEY)
        if isinstance(env, str) and env and trial_id not in self._env_sent:
            self._env_sent.add(trial_id)
            self._put(Op("tag", trial_id, {"key": ENV_TAG, "value": env[:5000]}))

    def train_checkpoint(self, trial_id: str) -> str | None:
        """The last checkpoint path a data-parallel trial's Ray Train run forwarded in this session
        (the metric ``checkpoint_path``: a path on the sweep's storage filesystem), or None."""
        return self._train_checkpoints.get(trial_id)

    def _step_of(self, trial_id: str, result: Mapping[str, Any]) -> int:
        """The step a result's metrics go at: its training step; the final report has none (its
        metrics are the trained model's): it goes at the trial's last step, not at Tune's iteration
        count (8 after step 690), which put the final accuracy at the start of the run's metric
        history."""
        if "step" in result:
            return int(result["step"] or 0)
        return int(result.get("train/steps") or self._last_step.get(trial_id)
                   or result.get("training_iteration", 0) or 0)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = getattr(trial, "last_result", None) or {}
        if last.get("final") == 1.0 or not last:
            self._finish(trial, "FINISHED")
            return
        # stopped early (ASHA): the run stays open until the end-of-sweep evaluation logs its
        # final metrics, so no reader takes its training-time numbers for a finished point
        self.ended.add(trial.trial_id)
        self.open.add(trial.trial_id)
        self._put(Op("tag", trial.trial_id, {"key": EVAL_STATUS_TAG, "value": "pending"}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # the reason on the run itself: a FAILED run in the MLflow UI said nothing of why (only the
        # driver's summary did); Tune wrote the trial's error files before calling this
        reason = _trial_error_reason(trial)
        if reason:
            self._put(Op("tag", trial.trial_id, {"key": REASON_TAG, "value": reason[:4000]}))
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()   # its answer stays in ``unsent`` (a spooled end read as a sweep MLflow held in full)

    @property
    def incomplete(self) -> bool:
        """Whether MLflow lacks operations of this session: the last flush gave up (they are
        spooled; the sweep's ``--resume`` sends them), or some were lost on the way (said on
        stderr). The runner's sweep then ends its parent run FAILED and exits 1."""
        return self.unsent or self.lost

    # ---- after the Tuner: evaluations, and runs a dead driver left behind --------------------------

    def log_evaluation(self, trial_id: str, metrics: Mapping[str, float] | None, *, error: str | None = None,
                       checkpoint: Any = None, time_ms: int | None = None) -> None:
        """The end-of-sweep evaluation of an early-stopped trial: its final metrics, or the reason
        it failed (``meta_study.eval_status`` / ``meta_study.eval_error`` tags). The run ends
        FINISHED either way: training did finish, and ingest reports a run without downstream
        metrics (docs/tracking.md). ``time_ms``: the evaluation's own time (its record's), so that
        a resumed sweep logging it again logs the same point."""
        if metrics:
            self._put(Op("metrics", trial_id, {"metrics": dict(metrics), "step": 0,
                                               "time": time_ms or int(time.time() * 1000)}))
        status = "ok" if error is None else "failed"
        if self.target.resumed:   # an earlier session's interruption or failed evaluation is not true any more
            stale = [STATUS_TAG, REASON_TAG] + ([EVAL_ERROR_TAG] if error is None else [])
            self._put(Op("reopen", trial_id, {"untag": stale}))
        self._put(Op("tag", trial_id, {"key": EVAL_STATUS_TAG, "value": status}))
        if error is not None:
            self._put(Op("tag", trial_id, {"key": EVAL_ERROR_TAG, "value": error[:4000]}))
        self._checkpoint_ops(trial_id, checkpoint)
        self._end(trial_id, "FINISHED")

    def log_final(self, trial_id: str, metrics: Mapping[str, float], checkpoint_dir: str | None) -> None:
        """Final metrics of a trial evaluated after the sweep, then its checkpoint and FINISHED."""
        self._put(Op("metrics", trial_id, {"metrics": dict(metrics), "step": 0, "time": int(time.time() * 1000)}))
        if checkpoint_dir:
            self._put(Op("artifacts", trial_id, {"dir": checkpoint_dir}))
        self._end(trial_id, "FINISHED")

    def settle(self, trial_id: str, name: str, config: Mapping[str, Any], result: Mapping[str, Any], status: str,
               checkpoint: Any = None) -> None:
        """Bring a trial's run in line with Tune's record of it: a trial that ended while its
        driver died (its run left RUNNING, or never created) gets its config, its last result and
        its end status. Idempotent: what is already there is logged again with the same values."""
        self._put(Op("run", trial_id, {"name": name, "config": _clean_config(config),
                                       "config_key": config_key(config)}))
        resolved = _resolved(result)
        if resolved:
            self._put(Op("run", trial_id, {"name": name, "config": resolved}))
        self._environment(trial_id, result)
        metrics = _metrics(result)
        if metrics:
            # a settled trial's last result is usually its final one, which has no "step": at step 0
            # it sat under the last training value, which MLflow (latest = highest step) then showed
            self._put(Op("metrics", trial_id, {"metrics": metrics, "step": self._step_of(trial_id, result),
                                                "time": int(time.time() * 1000)}))
        self._checkpoint_ops(trial_id, checkpoint)
        self._end(trial_id, status)

    def adopt(self, trial_id: str, run_id: str) -> None:
        """Make ``run_id`` the trial's run (a run found in MLflow that the run map lacks)."""
        self._put(Op("map", trial_id, {"run": run_id}))

    def close_interrupted(self, signal_name: str) -> list[str]:
        """End every run this session left open (a trial training, or stopped early and waiting for
        its evaluation) KILLED, tagged ``meta_study.status=interrupted`` with what to do; returns
        their trial ids. Ingest reads FINISHED runs only, so none of them becomes a data point until
        ``--resume`` finishes it."""
        left = sorted(self.open)
        for tid in left:
            self._put(Op("tag", tid, {"key": STATUS_TAG, "value": "interrupted"}))
            self._put(Op("tag", tid, {"key": REASON_TAG, "value": INTERRUPTED_REASON.format(signal=signal_name)}))
            self._end(tid, "KILLED")
        return left

    def close_orphan(self, trial_id: str, reason: str) -> None:
        """End a run that no trial of the sweep owns any more (KILLED, with the reason)."""
        self._put(Op("tag", trial_id, {"key": STATUS_TAG, "value": "orphaned"}))
        self._put(Op("tag", trial_id, {"key": REASON_TAG, "value": reason[:4000]}))
        self._end(trial_id, "KILLED")

    def _finish(self, trial: Any, status: str) -> None:
        ckpt = getattr(trial, "checkpoint", None)
        self._checkpoint_ops(trial.trial_id, ckpt if ckpt is not None else self._train_checkpoints.get(trial.trial_id))
        self._end(trial.trial_id, status)

    def _end(self, trial_id: str, status: str) -> None:
        self.ended.add(trial_id)
        self.open.discard(trial_id)
        self._put(Op("end", trial_id, {"status": status}))

    def _checkpoint_ops(self, trial_id: str, ckpt: Any) -> None:
        """A local checkpoint directory is copied into the run's artifacts (``checkpoint_uri`` then
        names the artifact); one on remote storage stays there and ``checkpoint_uri`` is its full
        URI (scheme, bucket, and the endpoint when it is not AWS's)."""
        if ckpt is None:
            return
        path = getattr(ckpt, "path", ckpt)
        if not path:
            return
        fs = getattr(ckpt, "filesystem", None)
        fs_type = getattr(fs, "type_name", None) or ("local" if not is_remote(self.storage_uri) else "remote")
        if fs_type == "local" and os.path.isdir(str(path)):
            self._put(Op("artifacts", trial_id, {"dir": str(path)}))
        else:
            self._put(Op("tag", trial_id, {"key": "checkpoint_uri",
                                           "value": full_uri(str(path), fs_type, self.storage_uri)}))

    # ---- the writer process ----------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        if self._writer is None:
            self._writer = WriterProcess(self.target)
        self._writer.put(op)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every operation is sent; spool the rest after the timeout. True if all went:
        with no operation since the last flush, that flush's answer (:attr:`unsent`; it was True,
        and the runner took a sweep whose end was spooled for one MLflow held in full). The writer
        process exits (a later operation starts a new one, which replays the spool first)."""
        if self._writer is None:
            return not self.unsent
        ok = self._writer.close(timeout_s)
        self.unsent = not ok
        self.errors += self._writer.errors
        self.dropped += self._writer.dropped
        self.writer_cpu_s += self._writer.cpu_s
        w, died, self._writer = self._writer, self._writer.unanswered, None
        self.lost = self.lost or (not ok and died) or w.held > 0 or w.died > 0
        if not ok and died:
            import sys

            print("meta-study: the MLflow writer process exited before it finished; the operations it had not sent "
                  "(metrics, params, run ends) may be missing from MLflow", file=sys.stderr, flush=True)
        elif not ok:
            # said: the sweep's summary and exit code were those of a sweep MLflow holds in full
            import sys

            from ..mlflow_client import shown_uri

            wait = self.target.flush_timeout_s if timeout_s is None else timeout_s
            spool = f"{self.target.state_dir.rstrip('/')}/{SPOOL_FILE}"
            # the reason (the writer's last failed call, no credentials in it), and the truth about
            # the spool: operations it could not store either (the storage failed too) died with the
            # writer process, while this line said they were kept
            why = f" (last error: {w.last_error})" if w.last_error else ""
            kept = (f"{w.held} operation(s) could not be spooled to {spool} either (see the writer's lines above) and "
                    "are lost; what was spooled is sent" if w.held else f"what was left is kept in {spool} and sent")
            print(f"meta-study: not every MLflow operation of this sweep reached {shown_uri(self.target.tracking_uri)} "
                  f"within {wait:g} s{why}; {kept} when the sweep's command runs again with --resume",
                  file=sys.stderr, flush=True)
        return ok


def _resources(trial: Any) -> str | None:
    """A trial's reserved resources as compact JSON (``{"CPU": 0.5, "GPU": 0.25, "memory": ...}``)."""
    import json

    try:
        req = trial.placement_group_factory.required_resources
    except Exception:  # noqa: BLE001 - not a Tune Trial (tests, TrialRef)
        return None
    return json.dumps({k: (int(v) if float(v).is_integer() else float(v)) for k, v in sorted(req.items()) if v},
                      separators=(",", ":"))


def _metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of a Tune result (Tune's bookkeeping left out). numpy numbers count
    (np.float32 and np.int64 are no ``float`` or ``int``: they were dropped without a word);
    booleans, Python's or numpy's, do not."""
    return {k: _real(v) for k, v in result.items()
            if k not in TUNE_KEYS and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _real(v: numbers.Real) -> float:
    """``float(v)``, and +-inf for an int (or Fraction) beyond a double's range: its OverflowError
    ("int too large to convert to float") was raised inside Tune's callback, which stops the sweep."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


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


def _trial_error_reason(trial: Any) -> str:
    """One line of why a Tune trial errored, from the error files Tune wrote in its local trial
    directory (the pickled exception, else the last line of ``error.txt``); "" when none is
    readable. Never raises: a callback that raised would stop the sweep."""
    from .finalize import error_line, without_user_info

    try:
        pickled = getattr(trial, "pickled_error_file", None)
        if pickled and os.path.isfile(pickled):
            import cloudpickle

            with open(pickled, "rb") as f:
                return error_line(cloudpickle.load(f))
        text = getattr(trial, "error_file", None)
        if text and os.path.isfile(text):
            with open(text, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("Failure # ")]
            return without_user_info(lines[-1])[:2000] if lines else ""
    except Exception:   # noqa: BLE001 - a reason is a courtesy; the run still ends FAILED
        return ""
    return ""

