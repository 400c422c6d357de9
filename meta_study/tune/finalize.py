"""The end of a sweep, after the Tuner: evaluate early-stopped trials, then make MLflow agree with
Tune's record of every trial.

**Evaluations.** A trial an early-stopping scheduler (ASHA) stopped is a meta-study point too: its
last checkpoint gets the same evaluation a finished trial reports (few-shot probes, diagnostics),
in a Ray task per trial. Each task is independent: it reads the checkpoint from the sweep's
storage (which every node reaches, :func:`~.preflight.check_storage_on_nodes`), is retried up to
``retries`` times on whatever node the scheduler picks (a crashed node, a flaky read), and records
its result next to the trial's checkpoints, so a retry or a later ``--resume`` reads it back
instead of evaluating again. A failure is data: the trial's run gets
``meta_study.eval_status=failed`` and the reason in ``meta_study.eval_error``; the other trials go on.
A trial stopped before its first checkpoint has nothing to evaluate, in this session or any later
one: its run gets the same tags (:data:`UNEVALUABLE_REASON`) once, and it is counted apart
(``Evaluations.unevaluable``), not among the failed evaluations that ``--resume`` retries.

**Reconciliation.** A driver that died (a head node lost) can leave runs behind: a trial Tune
recorded as ended whose run was never ended (or never created), and runs of trials that Tune's
last saved state does not know (the state is saved every ``TUNE_GLOBAL_CHECKPOINT_S``; a trial
started after the last save is created again, under the same id for grid and random searches,
which then finds its run in the run map). After the evaluations, every run of the sweep still
RUNNING in MLflow is either settled from Tune's result for its trial (its last metrics and end
status) or, if no trial of the sweep owns it, ended KILLED with ``meta_study.status=orphaned``
and the reason. Nothing is left RUNNING, nothing is created twice.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .trial import FINAL_KEY, TrialHooks

#: The metric in which Ray's TuneReportCallback forwards a Train checkpoint's path to Tune
#: (ray.tune.integration.ray_train.CHECKPOINT_PATH_KEY; not imported: Ray is imported lazily).
CHECKPOINT_PATH_KEY = "checkpoint_path"

#: Seconds between two lines saying that early-stopped trials' evaluations still wait.
WAIT_NOTE_S = 300.0
#: Seconds between two looks for placement groups that stopped data-parallel trials left reserved
#: while evaluations wait (one GCS call each).
FREE_EVERY_S = 5.0

#: Since a resumed trial that draws a lost trial's configuration again takes over its run
#: (tracking.MlflowSweepCallback._adopt_lost), an orphan is a lost trial whose configuration the
#: resumed search never drew again.
ORPHAN_REASON = ("no trial of the sweep owns this run: its trial was started after Tune's last saved state "
                 "and lost with the driver, and the resumed sweep never drew its configuration again (a trial "
                 "that draws it takes over this run)")


@dataclass(frozen=True)
class TrialRef:
    """The part of a Tune Trial the callback and the trial namer read, for trials handled after
    the Tuner."""

    trial_id: str

    def __str__(self) -> str:
        return self.trial_id


#: The ``meta_study.eval_error`` of an early-stopped trial that has no checkpoint: no session can
#: evaluate it (its trial is over, Tune never restarts it), so it is not a failure ``--resume`` retries.
UNEVALUABLE_REASON = "stopped before its first checkpoint: nothing to evaluate"


@dataclass(frozen=True)
class Evaluations:
    """What the end-of-sweep evaluation did: trial ids evaluated, those whose evaluation failed
    (with why; ``--resume`` tries them again), those an earlier session had evaluated and logged
    (left alone), and those with nothing to evaluate (stopped before their first checkpoint: no
    resume can evaluate them; their runs are tagged once, ``meta_study.eval_status=failed`` and
    :data:`UNEVALUABLE_REASON`). Every trial given is in exactly one of them."""

    done: tuple[str, ...]
    failed: Mapping[str, str]
    logged: tuple[str, ...] = ()
    unevaluable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reconciled:
    """Runs brought in line with Tune: settled (trial known), orphaned (closed KILLED)."""

    settled: tuple[str, ...]
    orphaned: tuple[str, ...]


def trial_id_of(result: Any) -> str:
    """A Tune ``Result``'s trial id (its directory is named after it: runner's ``_trial_dir``)."""
    tid = (result.metrics or {}).get("trial_id")
    return str(tid) if tid else os.path.basename(str(result.path).rstrip("/"))


def is_stopped_early(result: Any) -> bool:
    """Ended without error and without its final report: an early-stopping scheduler stopped it.
    A trial that never started (Tune ends it TERMINATED, its metrics only ``trial_id``) is not."""
    m = result.metrics or {}
    return result.error is None and m.get(FINAL_KEY) != 1.0 and "training_iteration" in m


def checkpoint_of(result: Any, callback: Any = None) -> Any:
    """A trial's last checkpoint: Tune's, or for a data-parallel trial (``--workers-per-trial``)
    its Ray Train run's last one. Ray's TuneReportCallback forwards a Train checkpoint to Tune only
    as the metric ``checkpoint_path`` (a path on the sweep's storage filesystem, ``<trial>/train/``),
    never as a Tune checkpoint, so ``Result.checkpoint`` of such a trial is None: it is rebuilt
    from the trial's last result (kept in Tune's experiment state, so a ``--resume`` has it too),
    else from what the MLflow callback saw in this session. None if the trial had none."""
    if result.checkpoint is not None:
        return result.checkpoint
    path = (result.metrics or {}).get(CHECKPOINT_PATH_KEY)
    if not isinstance(path, str) or not path:
        path = callback.train_checkpoint(trial_id_of(result)) if callback is not None else None
    if not isinstance(path, str) or not path:
        return None
    from ray.train import Checkpoint

    # on the sweep's storage filesystem (Tune's), which the Train run writes to (trial.py)
    return Checkpoint(path, filesystem=getattr(result, "filesystem", None))


def error_line(e: BaseException) -> str:
    """An error as one line: the type and last line of its cause (a Ray task's or trial's error
    wraps the exception the code raised), without any URL's user info (:func:`without_user_info`)."""
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return without_user_info(f"{type(cause).__name__}: {text[-1] if text else ''}")[:2000]


#: A URL's user info (``user:password@`` after ``scheme://``, up to its last ``@`` before a path: a
#: password may hold one unencoded), as the writer cuts it from its own error lines.
_USER_INFO = re.compile(r"(?<=://)[^\s'\"<>]*@")   # to the token's last @ (a password may hold / ? # @)


def without_user_info(text: str) -> str:
    """``text`` with the user info of every URL in it cut (``http://bob:pw@db/x`` -> ``http://db/x``).
    A trial's or an evaluation's error becomes a tag of its run (``meta_study.reason``,
    ``meta_study.eval_error``) and a line of the sweep's summary: an error naming a URL with a
    password in it put the password into MLflow, for anyone who reads the experiment."""
    return _USER_INFO.sub("", text)


def eval_task_resources(res: Mapping[str, Any], hooks: TrialHooks) -> dict[str, Any]:
    """The Ray task options (``num_cpus``, ``num_gpus``, ``memory``, ``resources``) of one
    early-stopped trial's evaluation, from the trial's Tune resource dict ``res``: what the trial
    had (at least half a CPU). A data-parallel trial's dict is only its own actor's (0.1 CPU, no
    GPU: its workers asked for theirs), so its evaluation, one process, asks for one worker's
    (``--cpus-per-trial`` CPUs and a GPU with ``--gpus-per-trial``): it ran on half a CPU and no
    GPU, a ViT's few-shot probes on the CPU of whatever node had half a core free."""
    res = dict(res)
    if hooks.torch_trainer:
        res.update(cpu=hooks.worker_cpus, gpu=1.0 if hooks.use_gpu else 0.0)
        res.pop("CPU", None)
        res.pop("GPU", None)
    custom = {k: float(v) for k, v in res.items() if k not in ("cpu", "gpu", "memory", "CPU", "GPU")}
    return {"num_cpus": max(float(res.get("cpu", res.get("CPU", 1.0))), 0.5),
            "num_gpus": float(res.get("gpu", res.get("GPU", 0.0))),
            "memory": float(res.get("memory", 0.0)) or None, "resources": custom or None}


def evaluate_stopped(results: Sequence[Any], callback: Any, *, resources: Callable[[Mapping[str, Any]], Mapping],
                     hooks: TrialHooks, retries: int = 2) -> Evaluations:
    """Evaluate every early-stopped trial of ``results`` from its last checkpoint (Ray tasks) and
    log the outcome to its run (:meth:`~.tracking.MlflowSweepCallback.log_evaluation`).

    Args:
        results: Tune ``Result`` objects of the early-stopped trials.
        callback: the sweep's MLflow callback.
        resources: a trial config -> Tune resource dict (``cpu``, ``gpu``, ``memory``, custom).
        hooks: what every trial gets besides its config.
        retries: task retries on any failure, on any node.
    """
    import ray

    from ..ray_session import free_orphaned_placement_groups
    from .trial import EVAL_TIME_KEY, evaluate_stopped_trial

    done: list[str] = []
    failed: dict[str, str] = {}
    refs: dict[Any, Any] = {}
    task = ray.remote(evaluate_stopped_trial)
    logged = evaluated_trials(callback)
    todo = [(r, checkpoint_of(r, callback)) for r in results   # a data-parallel trial's is its Train run's
            if trial_id_of(r) not in logged]
    unevaluable = {trial_id_of(r): UNEVALUABLE_REASON for r, ckpt in todo if ckpt is None}
    # tagged once: every --resume reopened such a run and ended it again, for nothing
    tagged = unevaluable_trials(callback) if unevaluable else set()
    for tid in unevaluable:
        if tid not in tagged:
            callback.log_evaluation(tid, None, error=UNEVALUABLE_REASON)
    for r, ckpt in todo:
        if ckpt is None:
            continue
        ref = task.options(**eval_task_resources(resources(r.config), hooks),
                           max_retries=retries, retry_exceptions=True,
                           ).remote(r.config, ckpt, hooks)
        refs[ref] = (r, ckpt)
    pending = list(refs)
    waited = 0.0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=FREE_EVERY_S)
        if not ready:
            # a data-parallel trial stopped early leaves its Ray Train placement group reserved
            # (ray-project/ray#54305, meta_study/tune/groups.py): freed here too, since the last
            # trial's may outlive the sweep's Tune loop by a moment
            free_orphaned_placement_groups()
            waited += FREE_EVERY_S
            if waited >= WAIT_NOTE_S:
                # said, not waited on in silence: an evaluation that cannot get its resources
                # (taken by something else on a shared cluster) waits for as long as they stay taken
                # (a ViT-B's probes can also just take longer: "still waiting for resources" was
                # said of evaluations that were running, which Ray does not tell apart cheaply)
                waited = 0.0
                print(f"evaluating early-stopped trials: {len(pending)} not done, none finished in the last "
                      f"{WAIT_NOTE_S:g} s (each running, or waiting for resources; free now: "
                      f"{ray.available_resources()})", file=sys.stderr, flush=True)
            continue
        waited = 0.0       # the note counts the time since the last evaluation finished
        r, ckpt = refs[ready[0]]
        tid = trial_id_of(r)
        try:
            metrics = ray.get(ready[0])
        except Exception as e:  # noqa: BLE001 - one trial's failure is recorded on its run, the rest go on
            failed[tid] = error_line(e)
            callback.log_evaluation(tid, None, error=failed[tid], checkpoint=ckpt)
            continue
        when = metrics.pop(EVAL_TIME_KEY, None)   # the evaluation's own time: logged again, the same point
        callback.on_trial_result(0, [], TrialRef(tid), metrics, time_ms=when)
        callback.log_evaluation(tid, {"early_stopped": 1.0}, checkpoint=ckpt, time_ms=when)
        done.append(tid)
    return Evaluations(done=tuple(done), failed=failed,
                       logged=tuple(t for t in map(trial_id_of, results) if t in logged), unevaluable=unevaluable)


def evaluated_trials(callback: Any) -> set[str]:
    """Trials of the sweep whose run an earlier session ended with its evaluation logged
    (FINISHED, ``meta_study.eval_status=ok``). ``Tuner.restore().fit()`` returns every trial of
    the experiment, so each ``--resume`` evaluated every early-stopped trial again: the record read
    back, but its run reopened (RUNNING until the end), its metrics logged a second time (the
    history grew by one point per resume) and its checkpoint uploaded again. One paged search per
    sweep end; on any failure none are known, and all are evaluated as before. After this session's
    operations are flushed, the trials this session evaluated are among them too."""
    from .tracking import EVAL_STATUS_TAG

    return _finished_trials(callback, f"tags.`{EVAL_STATUS_TAG}` = 'ok'")


def unevaluable_trials(callback: Any) -> set[str]:
    """Trials of the sweep whose run an earlier session (or this one, once flushed) ended FINISHED
    tagged as having nothing to evaluate (``meta_study.eval_status=failed`` with
    :data:`UNEVALUABLE_REASON`): a ``--resume`` leaves them alone (it reopened each and ended it
    FINISHED again, at every resume). One paged search, made only when the sweep has such trials;
    on any failure none are known, and their runs are tagged again (harmless)."""
    from .tracking import EVAL_ERROR_TAG, EVAL_STATUS_TAG

    return _finished_trials(callback, f"tags.`{EVAL_STATUS_TAG}` = 'failed' and "
                                      f"tags.`{EVAL_ERROR_TAG}` = '{UNEVALUABLE_REASON}'")


def _finished_trials(callback: Any, tags_filter: str) -> set[str]:
    """The ``trial_id`` tags of the sweep's FINISHED child runs matching ``tags_filter`` (MLflow
    search syntax), less the trials whose run this session holds open; empty on any failure."""
    from ..mlflow_client import mlflow_client

    t = callback.target
    found: set[str] = set()
    try:
        client, token = mlflow_client(t.tracking_uri), None
        while True:
            page = client.search_runs([t.experiment_id], filter_string=(
                f"tags.`mlflow.parentRunId` = '{t.parent_run_id}' and {tags_filter} "
                "and attributes.status = 'FINISHED'"), max_results=1000, page_token=token)
            found.update(r.data.tags["trial_id"] for r in page if r.data.tags.get("trial_id"))
            token = page.token
            if not token:
                return found - set(callback.open)
    except Exception:  # noqa: BLE001 - logging again is safe (the record is read back), only wasteful
        return set()


#: Why a second RUNNING run of a trial was closed (a run created twice: a create whose reply was
#: lost, say); the trial's own run is named in the tag too.
DUPLICATE_REASON = "a second run of trial {trial} of this sweep; the trial's run is {run}"


def _close_duplicates(client: Any, trial: str, run_ids: Sequence[str], kept: str | None) -> None:
    """End each run of ``run_ids`` KILLED, tagged ``meta_study.status=duplicate`` with the reason: the
    trial keeps its own run. Said on stderr if MLflow refuses (the sweep's end goes on)."""
    from .tracking import REASON_TAG, STATUS_TAG

    for rid in run_ids:
        try:
            client.set_tag(rid, STATUS_TAG, "duplicate")
            client.set_tag(rid, REASON_TAG, DUPLICATE_REASON.format(trial=trial, run=kept or "unknown"))
            client.set_terminated(rid, status="KILLED")
        except Exception as e:  # noqa: BLE001 - one run left RUNNING is said, not the sweep's failure
            print(f"warning: could not close run {rid}, a second RUNNING run of trial {trial}: {error_line(e)}",
                  file=sys.stderr)


def _run_kept(client: Any, run_id: str) -> bool:
    """Whether ``run_id`` is a run MLflow still holds (not deleted): one request, made only for a
    trial whose RUNNING run is not its mapped one. False where MLflow cannot say (the RUNNING run
    is then adopted, as before)."""
    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except Exception:  # noqa: BLE001 - not found, or the server failed: not known to be kept
        return False


def reconcile(results: Sequence[Any], callback: Any, *, tracking_uri: str, experiment_id: str, parent_run_id: str,
              runs_map: Mapping[str, str], name_of: Callable[[str], str]) -> Reconciled:
    """Settle or close every run of the sweep that is still RUNNING, and create the run of a
    trial Tune recorded but whose run was never created (see the module doc). Call after the
    callback's operations are flushed; flush again after."""
    from ..mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    running: dict[str, str] = {}
    extra: dict[str, list[str]] = {}    # trial -> its further RUNNING runs (one trial, one run)
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"),
            max_results=1000, page_token=token)
        for run in page:
            tid, rid = run.data.tags.get("trial_id", run.info.run_id), run.info.run_id
            if tid in running and rid == runs_map.get(tid):    # the trial's own run goes first
                running[tid], rid = rid, running[tid]
            if tid in running:
                extra.setdefault(tid, []).append(rid)
            else:
                running[tid] = rid
        token = page.token
        if not token:
            break
    for tid in list(running):
        rids = extra.get(tid, [])
        mapped = runs_map.get(tid)
        if mapped not in (None, running[tid]) and (tid in callback.ended or _run_kept(client, mapped)):
            # the trial's own run was ended (by this session, or by an earlier one whose driver died
            # before it closed this second run): these are others. The second run was adopted and
            # settled FINISHED instead, the trial two data points and its map on the duplicate
            rids = [*rids, running.pop(tid)]
        if rids:
            _close_duplicates(client, tid, rids, runs_map.get(tid) or running.get(tid))
    by_trial = {trial_id_of(r): r for r in results}
    settled, orphaned = [], []
    for tid, r in by_trial.items():
        if tid in callback.ended:
            continue                       # this session ended it (or is evaluating it)
        if tid in running or tid not in runs_map:
            if tid in running and runs_map.get(tid) != running[tid]:
                callback.adopt(tid, running[tid])
            status = "FAILED" if r.error is not None else "FINISHED"
            callback.settle(tid, name_of(tid), r.config, r.metrics or {}, status, checkpoint_of(r, callback))
            settled.append(tid)
    for tid, run_id in running.items():
        if tid not in by_trial:
            if runs_map.get(tid) != run_id:
                callback.adopt(tid, run_id)
            callback.close_orphan(tid, ORPHAN_REASON)
            orphaned.append(tid)
    return Reconciled(settled=tuple(settled), orphaned=tuple(orphaned))
