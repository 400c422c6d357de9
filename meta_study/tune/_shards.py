"""The writer's threads: a sweep's MLflow operations, sharded by trial, merged, retried and spooled.

:class:`MlflowWriter` runs inside the writer process (see :mod:`.writer`). Operations of one trial
always go to the same one of its threads, in order; each thread drains its queue in batches and
merges each trial's pending operations (:func:`plan_ops`) into as few MLflow calls as possible,
typically create_run, one log_batch and set_terminated, sent through :mod:`._rest` to http(s)
servers and through MLflow's client otherwise. A failed call is retried with back-off; what a
flush cannot send in time goes to the spool (one object per flush that gave up, under
``meta_study/spool/``: :meth:`.state.StateDir.spool`), which the next run of the sweep replays first.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import queue
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..failpoints import failpoint
from ._rest import RestError, _RestRuns, _say, server_error, transient
from .finalize import without_user_info   # the writer's and finalize's error lines cut alike
from .state import DAMAGED, RUNS, SPOOL, StateDir

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
RUNS_FILE = f"meta_study/{RUNS}"     # the trial -> run map under the experiment dir (see .state)
SPOOL_FILE = f"meta_study/{SPOOL}"   # spooled operations under the experiment dir


@dataclass(frozen=True)
class SweepTarget:
    """Where a sweep's child runs go, and where its writer keeps its state.

    Attributes:
        tracking_uri, experiment_id, parent_run_id: the MLflow side.
        state_dir: the Tune experiment directory, a path or a URI (its ``meta_study/`` holds the
            trial -> run map, the spool and the writer's heartbeat: :mod:`.state`).
        tags: tags of every child run.
        flush_timeout_s: how long a flush waits for an unreachable server before spooling.
        resumed: a later session of the sweep: a trial missing from the run map is looked up by
            its tag before a run is created for it.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    state_dir: str
    tags: Mapping[str, str] = field(default_factory=dict)
    flush_timeout_s: float = 300.0
    resumed: bool = False


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


@dataclass
class Op:
    """One MLflow operation for the writer (JSON-serializable: it crosses the pipe and the spool)."""

    kind: str                       # "run", "metrics", "tag", "artifacts", "end", "map", "reopen"; "batch" (spooled); "noop", "retry"
    trial: str
    payload: dict[str, Any] = field(default_factory=dict)
    #: the writer's order of this operation among all it took (replayed, then put): no field (never
    #: piped, sent or spooled); a trial's operations from its queue, the spool and memory are merged by it
    seq = 0


class MlflowWriter:
    """Sends a sweep's MLflow operations: child runs under the parent run, batched and retried."""

    WRITERS = 4  # HTTP calls overlap; more threads only add GIL contention on small machines
    #: seconds a writer thread's calls fail in a row before the writer says so on stderr (once, and
    #: once again when a call goes through): a server down mid-sweep went unsaid until the
    #: end-of-sweep flush gave up, after the whole flush timeout
    SAY_DOWN_AFTER_S = 30.0

    def __init__(self, target: SweepTarget) -> None:
        self.target = target
        self._queues: list[queue.Queue[Op | None]] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._spool_lock = threading.Lock()
        # the counters below (errors, dropped): the four writer threads add to them at once, and an
        # unlocked ``+= 1`` loses counts (two threads read the same value): a dropped operation
        # missing from the count could end a sweep FINISHED, exit 0, with MLflow lacking it
        self._count_lock = threading.Lock()
        self._runs: dict[str, str] = {}
        self._created: set[str] = set()          # runs created by this process: no lookups needed
        self._create_failed: set[str] = set()    # trials whose create raised: it may have created the run
        # params each run holds (what this process sent or read back): MLflow refuses a param sent
        # again with another value (INVALID_PARAMETER_VALUE, for good), and with it the whole batch:
        # a trial's start-time 64.0 and its resolved 64 lost its first metrics and tags
        self._params_sent: dict[str, dict[str, str]] = {}
        self._params_read: set[str] = set()      # runs whose params were read from the server
        self._params_unsure: set[str] = set()    # trials whose batch was refused: read the run's params again
        self._params_said: set[tuple[str, str]] = set()   # (run, param) held with another value: said once
        self._held: dict[str, list[Op]] = {}     # trial -> ops neither sent nor spooled (the storage failed too)
        # trial -> ops spooled (replayed, or spooled by this process), sent first with the trial's next
        # operations and at each flush; an object goes once each of its trials' ops is sent or spooled
        # again (``_objects``). This process's own were left to the next session, which replayed them
        # after the trial's later operations this session had sent: a tag's older value won, a
        # spooled "reopen" left a run that had ended RUNNING
        self._spooled: dict[str, list[Op]] = {}
        self._objects: dict[str, set[str]] = {}  # spool object -> trials whose ops from it are in _spooled
        # trial -> config key of a run not in the stored map yet (created or adopted, its entry not
        # written: the storage failed). Written again at the trial's next operation; the MLflow
        # operations go on meanwhile: a map write that raised held every operation of the trial
        # (a full disk on the storage path: no metrics, the run RUNNING, all of it lost at exit)
        self._unmapped: dict[str, str | None] = {}
        self._map_said = False                   # a failed map write was said on stderr
        self._unread_said = False                # a run's params read that a server error failed was said
        self._resumed = target.resumed           # trials may already have runs (map or tag)
        self.state = StateDir(target.state_dir)
        self._replayed: list[str] = []           # spool objects to drop once a flush has sent everything
        self._client: Any = None
        self._rest: _RestRuns | None = None
        self.creds: dict[str, Any] | None = None     # resolved by the driver; None: resolve here
        self._stop = threading.Event()
        self._seq = itertools.count(1)           # Op.seq
        # held by a thread while it takes its batch from its queue and by a flush that gives up while
        # it empties the queues: both taking at once split a trial's operations between the two
        # (the thread A1 and A3, the flush A2), and replay sent A3 before A2
        self._take_lock = threading.Lock()
        # while a flush that gave up runs: the time (ns) its spool names operations in flight by, so
        # they replay before the queued ones it spooled first (a trial's later operations)
        self._in_flight_ns: int | None = None
        # the newest spool name's time (ns) this writer read or wrote: each new object is named
        # later, whatever this machine's clock says (another machine's, ahead, named a replayed
        # object after the one that spooled its operations again with this session's)
        self._spool_ns = 0
        # MLflow's file store (``file:`` mlruns) appends a metric point it already holds, where SQL
        # stores skip it: points that may have been logged already (replayed, or sent again after a
        # failed call) are checked against the run's history there first
        self._file_store = is_file_store(target.tracking_uri)
        self.errors = 0          # calls that failed at least once (for tests and the summary)
        self._bad_names: set[tuple[str, str]] = set()   # (kind, name) MLflow takes no entity by: said once
        self.dropped = 0         # steps MLflow refused for good, dropped (said on stderr)
        # the last failed call's error, one line without credentials: the end-of-sweep line that
        # said "not every MLflow operation ... reached" gave no reason (a 503? refused? a 401?)
        self.last_error: str | None = None
        self._down_said = False  # "calls have failed for SAY_DOWN_AFTER_S" said, its recovery not yet
        # whether the last call went through (or none failed yet): only then does a flush send spooled
        # operations again; against a server still down each flush (the child's last one too: up to
        # an HTTP timeout more before it exits) would only spool them once more
        self._last_call_ok = True
        # the last flush gave up and calls were still in flight at the end of its wait (an artifact
        # upload that takes minutes): their operations are neither sent nor spooled, and were
        # reported as neither (0 held): the sweep said it had spooled what the writer exited with
        self._stuck = False

    def setup(self) -> None:
        """Load the trial -> run map of earlier runs of the sweep, start, replay the spool. A storage
        that fails here is said on stderr, never raised: it killed the writer process at start,
        and every operation of the session with it (each next one started a writer that died
        again)."""
        try:
            self._runs.update(self.state.runs())
            self._resumed = self._resumed or bool(self._runs)
        except Exception as e:  # noqa: BLE001 - without the map, a trial's run is looked up by its tag first
            self._resumed = True
            _say(f"meta-study writer: could not read the run map ({type(e).__name__}: {e}); each trial's run "
                  "is looked up by its tag before one is created")
        self._start()
        try:
            self._replay_spool()
        except Exception as e:  # noqa: BLE001 - the spool stays for the next session
            _say(f"meta-study writer: could not read the spool ({type(e).__name__}: {e}); it stays for the next "
                  "session")

    # ---- the writer threads ---------------------------------------------------------------------
    # Operations of one trial always go to the same thread (in order); threads drain their queue in
    # batches and merge each trial's pending operations into as few MLflow calls as possible:
    # typically create_run, one log_batch (params, tags, metrics) and set_terminated per trial.

    def put(self, op: Op) -> None:
        self._start()
        if op.kind == "noop":      # the driver's "start now" (setup): nothing to send
            return
        op.seq = next(self._seq)
        self._queues[zlib.crc32(op.trial.encode()) % self.WRITERS].put(op)

    def _start(self) -> None:
        with self._lock:
            if len(self._threads) == self.WRITERS and all(t.is_alive() for t in self._threads):
                return
            # mlflow imported here, once, before the threads: four threads importing it at once (a
            # resume replaying its spool) got "partially initialized module 'mlflow'" errors, taken
            # for a server that is down, and the replay hung in flush for good
            import mlflow  # noqa: F401
            import mlflow.entities  # noqa: F401
            import mlflow.tracking  # noqa: F401

            from ..mlflow_client import mlflow_client  # noqa: F401

            if not any(t.is_alive() for t in self._threads):
                self._stop.clear()   # a fresh start; never while a live thread may be spooling for a flush
            if not self._queues:
                self._queues = [queue.Queue() for _ in range(self.WRITERS)]
            # only a dead thread is replaced: a second consumer of a live thread's queue would
            # split one trial's operations between two threads, and their order with them
            threads: list[threading.Thread | None] = [*self._threads] if self._threads else [None] * self.WRITERS
            for i, q in enumerate(self._queues):
                old = threads[i]
                if old is None or not old.is_alive():
                    t = threading.Thread(target=self._work, args=(q,), name=f"mlflow-sweep-writer-{i}", daemon=True)
                    t.start()
                    threads[i] = t
            self._threads = [t for t in threads if t is not None]

    def _work(self, q: "queue.Queue[Op | None]") -> None:
        while True:
            first = q.get()
            batch = [first]
            with self._take_lock:
                while len(batch) < 256:
                    try:
                        batch.append(q.get_nowait())
                    except queue.Empty:
                        break
            ops = [o for o in batch if o is not None]
            by_trial: dict[str, list[Op]] = {}
            for o in ops:
                by_trial.setdefault(o.trial, []).append(o)
            try:
                for trial, trial_ops in by_trial.items():
                    # what was spooled and what a failed spool kept, merged with the batch in the order
                    # they were put: a flush that gave up while this batch waited spooled the trial's
                    # later operations from the queue, and those went ahead of the batch (an "end"
                    # before the metrics it followed, a tag's older value last)
                    taken, objects = self._take_held(trial)
                    trial_ops = sorted(taken + trial_ops, key=_seq_of)
                    try:
                        self._apply(trial, trial_ops)
                    except Exception as e:  # noqa: BLE001 - a bug, not the server: keep the thread and the ops
                        _say(f"meta-study writer: trial {trial}: {type(e).__name__}: {e}; spooling its operations")
                        self._spool(trial_ops, keep=False)
                    self._settle(trial, objects)
            finally:
                # always: a batch never marked done makes every later flush wait its whole timeout
                for _ in batch:
                    q.task_done()
            if first is None or any(o is None for o in batch):
                return

    def _apply(self, trial: str, ops: list[Op]) -> None:
        """Carry out one trial's pending operations, retrying with back-off (0.5 s doubling to 30 s).
        Each step is done once: a retry resumes at the step that failed, so nothing is logged twice.
        A step MLflow refuses for good (:func:`permanent`) three times in a row is dropped, said on
        stderr: retried forever, it held every flush to its timeout, turned reconciliation off and
        was spooled and replayed by every later session."""
        steps = plan_ops(ops)
        done = 0
        delay = 0.5
        refused = 0
        failing_since: float | None = None   # monotonic time of this streak's first failed call
        if not steps:
            return
        while done < len(steps):
            if self._stop.is_set():   # a flush gave up: spool, without a call that may hang for minutes
                self._spool([_step_op(trial, s_, ops[0].seq) for s_ in steps[done:]], in_flight=True)
                return
            try:
                self._do_step(trial, steps[done])
                done += 1
                delay = 0.5
                refused = 0
                failing_since = None
                self._last_call_ok = True
                if self._down_said:
                    self._say_down(None)
            except Exception as e:  # noqa: BLE001 - the server is down or flaky: retry, never raise
                with self._count_lock:
                    self.errors += 1
                self.last_error = error_line(e)
                refused = refused + 1 if permanent(e) else 0
                self._last_call_ok = bool(refused)     # refused for good: the server answers
                if not refused:   # the server is down or flaky (a refusal for good is said below)
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    if now - failing_since >= self.SAY_DOWN_AFTER_S and not self._down_said:
                        self._say_down(now - failing_since)
                if steps[done][0] == "batch":   # part of it may be logged: never twice (file store)
                    steps[done][1]["resent"] = True
                # a param the run holds with another value? MLflow's file store (a ``file:`` store, or a
                # server on one) answers that INTERNAL_ERROR (HTTP 500), not INVALID_PARAMETER_VALUE:
                # retried without a read, it failed every try until the flush spooled it
                if steps[done][0] == "batch" and (refused or getattr(e, "error_code", None) == "INTERNAL_ERROR"):
                    self._params_unsure.add(trial)
                    # only a refusal that speaks of a param may end in its params left out unread
                    # (_do_step's one round): a full disk's INTERNAL_ERROR is retried as before
                    steps[done][1]["param_refusal"] = "param" in str(e).lower()
                # one entity too large for the server (413): the rest of the step was logged (see
                # _do_step), and no retry sends it; retried, each try sent the whole step again
                too_large = steps[done][0] == "batch" and getattr(e, "status", None) == 413 and bool(refused)
                if refused >= 3 or too_large:
                    with self._count_lock:
                        self.dropped += 1
                    what = ("part of its batch" if too_large else f"its {steps[done][0]}")
                    _say(f"meta-study writer: trial {trial}: MLflow refuses {what} for good "
                          f"({str(e).splitlines()[0][:300] if str(e) else type(e).__name__}); "
                          + ("that part is left out, the rest of the batch is logged" if too_large else "dropped"))
                    done, delay, refused = done + 1, 0.5, 0
                    continue
                if self._stop.wait(delay):   # flush gave up: the loop's check spools the rest
                    continue
                delay = min(delay * 2, 30.0)

    def _say_down(self, failed_s: float | None) -> None:
        """Say on stderr, once, that calls have failed for ``failed_s`` seconds; with None, that a
        call went through again (only after the first was said)."""
        from ..mlflow_client import safe_uri

        with self._lock:
            if self._down_said == (failed_s is not None):   # said already, by another thread
                return
            self._down_said = failed_s is not None
        where = safe_uri(self.target.tracking_uri)
        if failed_s is not None:
            _say(f"meta-study writer: MLflow calls to {where} have failed for {failed_s:.0f} s ({self.last_error}); "
                  "the trials' operations are kept and retried, and whatever is left at the end of the sweep is "
                  "spooled for --resume to send")
        else:
            _say(f"meta-study writer: MLflow calls to {where} go through again; the operations kept meanwhile are "
                  "being sent")

    @property
    def held_ops(self) -> int:
        """Operations neither sent nor spooled (the storage failed too, or their call was still in flight
        when the last flush had waited for it; at most, counting their threads' whole batches): they
        live only in this process."""
        with self._spool_lock:
            held = sum(len(v) for v in self._held.values())
        return held + (sum(q.unfinished_tasks for q in self._queues) if self._stuck else 0)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued call is done; spool the rest after the timeout. True if all went."""
        self._stuck = False
        with self._spool_lock:    # what an earlier flush could not send (spooled too while the server answers)
            held = list({**self._held, **(self._spooled if self._last_call_ok else {})})
        for trial in held:
            self.put(Op(kind="retry", trial=trial))
        deadline = time.monotonic() + (self.target.flush_timeout_s if timeout_s is None else timeout_s)
        pending = lambda: sum(q.unfinished_tasks for q in self._queues)  # noqa: E731
        while pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pending() and not self._held and not self._spooled:
            with self._spool_lock:      # everything a spool held went out: drop those objects
                names, self._replayed = self._replayed, []
            if names:
                try:
                    self.state.drop_spooled(names)
                except Exception as e:  # noqa: BLE001 - all was sent: said, never raised (it killed the writer)
                    _say(f"meta-study writer: everything was sent, but could not remove the replayed spool "
                          f"object(s) {', '.join(names)} from {self.state.uri} ({type(e).__name__}: {e}); the next "
                          "session replays them again (remove them to avoid that)")
            return True
        # ops in flight wake from their back-off and spool themselves, under a name that sorts
        # before the queued ops spooled below: replay reads spool objects in name order, and a
        # trial's queued ops are later than its ops in flight (an "end" replayed before the
        # "reopen" it followed left the run RUNNING; a tag's older value won)
        self._in_flight_ns = self._next_spool_ns()
        self._stop.set()
        left: list[Op] = []
        with self._take_lock:
            for q in self._queues:
                while True:
                    try:
                        op = q.get_nowait()
                    except queue.Empty:
                        break
                    if op is not None:
                        left.append(op)
                    q.task_done()
        # now, not after the calls in flight (up to an HTTP timeout): a writer killed meanwhile
        # keeps them; a trial's ops in flight that cannot be spooled either go ahead of these
        self._spool(left)
        # a call in flight has at most its HTTP timeout left (a server that accepts and never
        # answers: 60 s on the REST path, MLflow's 120 s on its client's, without its retries in
        # the writer process); returning sooner, the child exited (or the driver killed it) with
        # that trial's operations, and those of the trials after it in the batch, unsent, unspooled
        wait_s = call_limit_s() + 5
        end = time.monotonic() + wait_s
        while pending() and time.monotonic() < end:
            time.sleep(0.02)
        if pending():
            self._stuck = True
            _say(f"meta-study writer: {pending()} operation(s) were still in MLflow calls {wait_s:.0f} s after the "
                 "flush gave up (a large artifact upload?); they are neither sent nor spooled, and are lost if "
                 "this process exits now")
        self._stop.clear()
        self._in_flight_ns = None
        return False

    def _spool(self, ops: list[Op], *, in_flight: bool = False, keep: bool = True) -> bool:
        """Spool ``ops`` (with whatever an earlier failed spool kept); True if they are stored. Never
        raises: when the storage fails too (an OSError from the store), the operations are kept in
        memory, per trial, and go again at the trial's next operations and at every later flush
        (sent if the server is back, else spooled again), so a writer thread never dies of it and
        nothing is lost while the process lives. Each trial's operations, the kept ones too, go in the
        order they were put (:attr:`Op.seq`). ``in_flight``: ``ops`` were in flight when a flush gave
        up; their object is named by the time the flush gave up, before the queued ops it spooled
        then (and every object after the ones this writer replayed: :meth:`_next_spool_ns`).
        ``keep``: stored, they are kept in memory too, to go again ahead of their trials' later
        operations (see ``_spooled``); False for operations whose step raised (a bug: they would
        raise again), left to the next session."""
        with self._spool_lock:   # one object per call: object stores have no appends
            held = [o for trial_ops in self._held.values() for o in trial_ops]
            ops = [o for o in ops if o.kind != "retry"]
            if not ops and not held:
                return True
            # each trial's ops in the order they were queued: replay and a retry keep it
            by_trial: dict[str, list[Op]] = {}
            for o in sorted(held + ops, key=_seq_of):
                by_trial.setdefault(o.trial, []).append(o)
            try:
                name = self.state.spool([json.dumps({"kind": o.kind, "trial": o.trial, "payload": o.payload})
                                         for trial_ops in by_trial.values() for o in trial_ops],
                                        at_ns=(self._in_flight_ns if in_flight and self._in_flight_ns is not None
                                               else self._next_spool_ns()))
            except Exception as e:  # noqa: BLE001 - the storage is down too: keep them for the next try
                self._held = by_trial
                _say(f"meta-study writer: could not spool {sum(map(len, by_trial.values()))} operation(s), "
                      f"kept to send or spool again: {type(e).__name__}: {e}")
                return False
            self._held = {}
            if keep:
                for trial, trial_ops in by_trial.items():
                    self._spooled[trial] = sorted(self._spooled.get(trial, []) + trial_ops, key=_seq_of)
                self._objects[name] = set(by_trial)
            return True

    def _next_spool_ns(self) -> int:
        """A spool object's time: now, or just after the newest one this writer read or wrote."""
        with self._lock:
            self._spool_ns = max(time.time_ns(), self._spool_ns + 1)
            return self._spool_ns

    def _take_held(self, trial: str) -> tuple[list[Op], list[str]]:
        """The trial's spooled operations and those a spool could not store (each older than the
        trial's queued ones, or spooled from its queue by a flush that gave up: :attr:`Op.seq` orders
        them), and the spool objects the first came from (:meth:`_settle` them once carried out)."""
        with self._spool_lock:
            objects = [n for n, trials in self._objects.items() if trial in trials]
            return self._spooled.pop(trial, []) + self._held.pop(trial, []), objects

    def _settle(self, trial: str, objects: list[str]) -> None:
        """The trial's operations taken from spool ``objects`` were sent, or spooled again: an object
        none of whose trials' operations are left to carry out is dropped now (left, a later session
        replayed it over what this one sent after it). Not while the trial has operations that no
        spool could store (they live only in memory)."""
        done = []
        with self._spool_lock:
            if not objects or trial in self._held:
                return
            for name in objects:
                trials = self._objects.get(name)
                if trials is not None:
                    trials.discard(trial)
                    if not trials:
                        del self._objects[name]
                        done.append(name)
        if done:
            try:
                self.state.drop_spooled(done)
            except Exception as e:  # noqa: BLE001 - tried again after a flush that sent everything
                with self._spool_lock:
                    self._replayed += done
                _say(f"meta-study writer: could not remove the sent spool object(s) {', '.join(done)} from "
                      f"{self.state.uri} ({type(e).__name__}: {e}); tried again at the next flush")

    def _replay_spool(self) -> None:
        """Queue what earlier sessions spooled (each trial's thread takes its share first, ahead of
        the trial's new operations). An object goes once its operations are sent or spooled again
        (:meth:`_settle`; a writer killed before then leaves it for the next session: a replayed
        operation is idempotent, the run map keeps its run). A line that holds no operation
        (:func:`spooled_op`: an object cut short) is skipped, said on stderr, and the object kept
        aside as ``<name>.damaged``."""
        for name, lines in self.state.spooled():
            stamp = name.split("-", 1)[0]
            if stamp.isdigit():
                with self._lock:
                    self._spool_ns = max(self._spool_ns, int(stamp))
            ops: list[Op] = []
            for line in lines:
                try:
                    ops.append(spooled_op(line))
                except ValueError:   # cut short (a crash before the data was on disk), or of another shape
                    pass
            replayed = True
            if len(ops) < len(lines):
                # said, and kept aside for a person (never replayed): it raised out of setup, and
                # every session's writer died at start with all of its operations
                kept = f"{name}{DAMAGED}"
                try:
                    self.state.write_bytes(f"{SPOOL}/{kept}", ("\n".join(lines) + "\n").encode(), durable=True)
                except Exception as e:  # noqa: BLE001 - the storage failed: leave the object in place
                    kept, replayed = f"{name} (could not copy it: {type(e).__name__}: {e})", False
                _say(f"meta-study writer: spool object {name}: {len(lines) - len(ops)} of {len(lines)} line(s) "
                      f"unreadable, skipped; the rest replayed; the object kept as {kept}")
            for op in ops:
                if op.kind in ("metrics", "batch"):   # sent already if a writer died before dropping the object
                    op.payload["resent"] = True
            with self._spool_lock:
                for op in ops:
                    op.seq = next(self._seq)       # older than anything this session puts
                    self._spooled.setdefault(op.trial, []).append(op)
                if replayed and ops:
                    self._objects[name] = {op.trial for op in ops}
                elif replayed:           # nothing in it to send
                    self._replayed.append(name)
        with self._spool_lock:
            trials = list(self._spooled)
        for trial in trials:       # wakes the trial's thread, which takes them (:meth:`_take_held`)
            self.put(Op(kind="retry", trial=trial))

    # ---- MLflow calls ---------------------------------------------------------------------------

    def _mlflow(self) -> Any:
        with self._lock:          # one client for the writer threads, made once
            if self._client is None:
                from ..mlflow_client import mlflow_client

                self._client = mlflow_client(self.target.tracking_uri)
            return self._client

    def _rest_client(self) -> _RestRuns | None:
        """The lean REST path for http(s) tracking servers (not Databricks); None otherwise."""
        if self._rest is None and self.target.tracking_uri.lower().startswith(("http://", "https://")):
            # made once: threads that each made one at the start (a replay wakes all four at once)
            # said a refusal of the credentials once each ("said once" per client), and the
            # connections of the clients dropped were left to the collector
            with self._lock:
                if self._rest is None:
                    self._rest = _RestRuns(self.target.tracking_uri, self.creds)
        return self._rest

    def run_id(self, trial_id: str, name: str | None = None, config_key: str | None = None) -> str:
        """The trial's child run: from the map, else (only on resume) found by tag, else created."""
        rid = self._runs.get(trial_id)
        if rid:
            if trial_id in self._unmapped:      # created, but its map entry failed to write
                self._map_run(trial_id, rid, self._unmapped.get(trial_id) or config_key)
            return rid
        found: list[str] = []
        # a resume: the map may lack a run created just before the driver died; a create of this
        # process that raised: its request may have reached the server and only the reply was lost
        if self._resumed or trial_id in self._create_failed:
            t = self.target
            where = f"tags.`mlflow.parentRunId` = '{t.parent_run_id}' and tags.trial_id = '{trial_id}'"
            rest = self._rest_client()
            if rest is not None and trial_id in self._create_failed:
                # the REST path, as the create took: MLflow's client retries a down server for
                # minutes, which held a flush that gave up (and its spool) for as long
                found = [r["info"]["run_id"] for r in rest.post("runs/search", {
                    "experiment_ids": [t.experiment_id], "filter": where, "max_results": 1}).get("runs", [])]
            else:
                found = [r.info.run_id for r in self._mlflow().search_runs([t.experiment_id], filter_string=where,
                                                                           max_results=1)]
        if found:
            rid = found[0]
        else:
            tags = {**self.target.tags, "mlflow.parentRunId": self.target.parent_run_id, "trial_id": trial_id,
                    "meta_study.role": "trial", "mlflow.runName": name or trial_id,
                    **({"config_key": config_key} if config_key else {})}
            rest = self._rest_client()
            try:
                if rest is not None:
                    rid = rest.post("runs/create", {"experiment_id": self.target.experiment_id,
                                                    "run_name": name or trial_id,
                                                    "start_time": int(time.time() * 1000),
                                                    "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
                                    )["run"]["info"]["run_id"]
                else:
                    rid = self._mlflow().create_run(self.target.experiment_id, run_name=name or trial_id,
                                                    tags=tags).info.run_id
            except Exception:
                self._create_failed.add(trial_id)   # outcome unknown: the retry searches before creating
                raise
            self._created.add(rid)
            failpoint("run_created")     # a test kills the driver here: a run the map does not know
        with self._lock:       # before the map write: a retry must never create a second run
            self._runs[trial_id] = rid
            self._unmapped[trial_id] = config_key
        # one object per run (O(1) per trial, no appends on an object store); an entry lost to a
        # crash between create and this write is recovered on resume by the tag search above
        self._map_run(trial_id, rid, config_key)
        return rid

    def _map_run(self, trial_id: str, rid: str, config_key: str | None) -> None:
        """Write the trial's run map entry. A storage that fails is said on stderr (once per writer),
        never raised: the entry stays in ``_unmapped`` and is written again at the trial's next
        operation, and a resume finds the run meanwhile by its tags (the tag search of
        :meth:`run_id`, ``recover_run_map``)."""
        try:
            self.state.add_run(trial_id, rid, config_key)
        except Exception as e:  # noqa: BLE001 - the storage failed, MLflow may not have
            with self._lock:
                said, self._map_said = self._map_said, True
            if not said:
                _say(f"meta-study writer: could not write trial {trial_id}'s run to the run map in "
                      f"{self.state.uri} ({type(e).__name__}: {e}); its MLflow operations go on, the entry is "
                      "written again at its next operation (a --resume finds the run by its tags meanwhile)")
            return
        with self._lock:
            self._unmapped.pop(trial_id, None)

    def _name_ok(self, kind: str, name: str) -> bool:
        """Whether MLflow takes a ``kind`` (metric, param, tag) by this name; one that it does not is
        said on stderr, once per writer."""
        why = refused_name(name)
        if why is None:
            return True
        with self._lock:
            said, _ = (kind, name) in self._bad_names, self._bad_names.add((kind, name))
        if not said:
            _say(f"meta-study writer: MLflow takes no {kind} named {name[:300]!r} ({why}); it is left out of every "
                  "run, the rest is logged")
        return False

    #: tries of a run's params read (runs/get) that fails for now (:func:`~._rest.transient`), 0.5 s
    #: then 1 s apart, before the failure goes to the step's own retries
    READ_TRIES = 3

    def _run_params(self, rid: str) -> dict[str, str] | None:
        """The params run ``rid`` holds, read from the server: through the REST path for http(s)
        servers, else through MLflow's client (which retries a 500 for minutes).

        The read only spares the batch a param the run holds with another value, so a server error
        (a 500: MLflow's INTERNAL_ERROR, a proxy's page) is said once and the batch goes unread
        (None): retried as if the server were down, it held the trial's metrics, and every trial
        queued behind them on the writer thread, until the end-of-sweep flush spooled them, and
        each --resume again. A network error or a busy server (502/503/504, 429) is tried again,
        :data:`READ_TRIES` times in all, then raised: the server is unreachable, and the step is
        retried as every other call is."""
        rest = self._rest_client()
        if rest is None:
            return dict(self._mlflow().get_run(rid).data.params)
        import urllib.parse

        delay = 0.5
        for attempt in range(1, self.READ_TRIES + 1):
            try:
                answer = rest.get(f"runs/get?run_id={urllib.parse.quote(rid)}")
                break
            except Exception as e:  # noqa: BLE001 - sorted below: retried, raised, or read as none
                if server_error(e):
                    self._say_params_unread(rid, e)
                    return None
                if not transient(e) or attempt == self.READ_TRIES or self._stop.wait(delay):
                    raise
                delay *= 2
        if not isinstance(answer, dict) or not isinstance(answer.get("run"), dict):
            raise RestError(f"MLflow runs/get: no run in the answer: {' '.join(str(answer)[:300].split())}", 200, None)
        return {p["key"]: p.get("value", "") for p in answer["run"].get("data", {}).get("params", [])}

    def _say_params_unread(self, rid: str, e: BaseException) -> None:
        """Say on stderr, once per writer, that a run's params could not be read (a server error)."""
        with self._lock:
            said, self._unread_said = self._unread_said, True
        if not said:
            _say(f"meta-study writer: MLflow could not give run {rid}'s params ({error_line(e)}); its batch is sent "
                 "without that check (a param the run holds with another value refuses the batch); said once, "
                 "for every run whose read fails so")

    def _refuse_unchecked(self, trial: str, rid: str, keys: list[str]) -> None:
        """Say, once per run, that the batch's params ``keys`` are left out for good: MLflow refused
        the batch sent without the read of run ``rid``'s params, and the read failed again (the
        rest of the step is logged). Counted as dropped."""
        with self._count_lock:
            self.dropped += 1
        with self._lock:
            said, _ = (rid, "") in self._params_said, self._params_said.add((rid, ""))
        if not said:
            names = ", ".join(repr(k[:100]) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            _say(f"meta-study writer: trial {trial}: MLflow refused its batch to run {rid} ({self.last_error}), and "
                 f"could not give the run's params to find the one it holds with another value; param(s) {names} "
                 "are left out for good, the rest is logged")

    def _keep_held(self, trial: str, rid: str, held: Mapping[str, str], sent: Mapping[str, str]) -> None:
        """Record that run ``rid`` holds the ``held`` params (key -> value) with other values than
        ``sent``: each later batch leaves them out, and each is said once (:meth:`_say_param_kept`)."""
        self._params_sent.setdefault(rid, {}).update(held)
        for key, value in held.items():
            self._say_param_kept(trial, rid, key, value, sent[key])

    def _say_param_kept(self, trial: str, rid: str, key: str, held: str, value: str) -> None:
        """Say on stderr, once per run and param, that the run holds ``key`` with another value than
        ``value``, which is left out (MLflow never changes a param). Not for the same number written
        otherwise (a trial's start config's ``64.0``, its resolved ``64``)."""
        try:
            if float(held) == float(value):
                return
        except ValueError:
            pass
        with self._lock:
            said, _ = (rid, key) in self._params_said, self._params_said.add((rid, key))
        if not said:
            _say(f"meta-study writer: trial {trial}: its run {rid} holds param {key[:300]!r} = {held[:200]!r}; the "
                 f"value {value[:200]!r} is left out (MLflow never changes a param's value), the rest is logged")

    def _not_logged(self, rid: str, ms: list[Any]) -> list[Any]:
        """The metric points (key, value, time, step) of ``ms`` that run ``rid`` does not hold yet,
        each once (one history read per key: a file store's local file). Each once: two spool
        objects holding the same point (a later session's flush that gave up spooled it again) were
        merged into one batch, and the file store appended it twice."""
        client = self._mlflow()
        have: set[tuple[Any, ...]] = set()
        for key in {m[0] for m in ms}:
            have.update((key, _point_value(h.value), int(h.timestamp), int(h.step))
                        for h in client.get_metric_history(rid, key))
        out = []
        for m in ms:
            point = (m[0], _point_value(m[1]), int(m[2]), int(m[3]))
            if point not in have:
                have.add(point)
                out.append(m)
        return out

    def _do_step(self, trial: str, step: tuple[str, dict[str, Any]]) -> None:
        # MLflow's client (and its import) only off the REST path: artifacts, a restarted trial's
        # params, servers that are not http(s)
        kind, p = step
        if kind == "map":          # a run found by the driver (a dead driver's run): adopt it
            with self._lock:
                self._runs[trial] = p["run"]
                self._unmapped[trial] = p.get("config_key")
            self._map_run(trial, p["run"], p.get("config_key"))
            return
        rid = self.run_id(trial, p.get("name"), p.get("config_key"))
        if kind == "batch":
            params = p.get("params", {})
            # each param once per run, its first value kept: a later one (the resolved config's 64
            # after the start's 64.0) is refused by MLflow, and the whole batch with it. A run this
            # process did not create (a restarted trial's), or one whose batch was refused, is read
            unchecked = False    # sent unread and refused, and the read failed again
            if params and ((rid not in self._created and rid not in self._params_read) or trial in self._params_unsure):
                held = self._run_params(rid)
                unchecked = (held is None and bool(p.get("unread")) and trial in self._params_unsure
                             and bool(p.get("param_refusal")))
                p["unread"] = held is None
                self._params_sent.setdefault(rid, {}).update(held or {})
                self._params_read.add(rid)
                self._params_unsure.discard(trial)
            sent = self._params_sent.get(rid, {})
            for k in [k for k, v in params.items() if k in sent and sent[k] != v]:
                self._say_param_kept(trial, rid, k, sent[k], params[k])
            params = {k: v for k, v in params.items() if k not in sent}
            if unchecked and params:
                # one round only (read failed, sent, refused in words held_params does not know):
                # the read -> send -> refusal cycle had no end on a file store (INTERNAL_ERROR)
                self._refuse_unchecked(trial, rid, list(params))
                params = {}
            # a name MLflow refuses refuses the whole batch: only that entity is left out
            ps = [(k, v) for k, v in params.items() if self._name_ok("param", k)]
            ts = [(k, v) for k, v in p.get("tags", {}).items() if self._name_ok("tag", k)]
            ms = [m for m in p.get("metrics", []) if self._name_ok("metric", m[0])]
            rest = self._rest_client()
            # a resend to a store that appends a point sent again (a local file store, or a server
            # on one): what the first try may have logged is read back, not logged twice
            if ms and p.get("resent") and (self._file_store or (rest is not None and rest.appends_metrics())):
                ms = self._not_logged(rid, ms)
            # MLflow limits: 100 params, 100 tags and 1,000 entities in all per log_batch
            too_large: RestError | None = None
            while ps or ts or ms:
                bp, ps = ps[:MAX_PARAMS_PER_BATCH], ps[MAX_PARAMS_PER_BATCH:]
                bt, ts = ts[:MAX_TAGS_PER_BATCH], ts[MAX_TAGS_PER_BATCH:]
                room = MAX_METRICS_PER_BATCH - len(bp) - len(bt)
                bm, ms = ms[:room], ms[room:]
                if rest is not None:
                    try:
                        rest.post("runs/log-batch", {
                            "run_id": rid, "params": [{"key": k, "value": v} for k, v in bp],
                            "tags": [{"key": k, "value": v} for k, v in bt],
                            "metrics": [{"key": k, "value": rest.num(v), "timestamp": t, "step": s_}
                                        for k, v, t, s_ in bm]})
                    except RestError as e:
                        held = held_params(e, rid, dict(bp))
                        if held:
                            # a param the run holds with another value, named by the refusal (the
                            # read failed, a 500, so the batch went unread): left out for good,
                            # said, and the chunk sent again without it, here. Retried as a failed
                            # step, the read failed again and the file store refused again
                            # (INTERNAL_ERROR), with no end. One param fewer each time: at most
                            # len(bp) sends, one call each
                            self._keep_held(trial, rid, held, dict(bp))
                            ps, ts, ms = [(k, v) for k, v in bp if k not in held] + ps, bt + ts, bm + ms
                            continue
                        if e.status != 413:
                            raise
                        # an entity too large for the server, the rest of its chunk logged: the
                        # step's later chunks still go (they were dropped with it), then it is raised
                        too_large = too_large or e
                        continue
                else:
                    from mlflow.entities import Metric, Param, RunTag

                    self._mlflow().log_batch(rid, metrics=[Metric(k, v, t, s_) for k, v, t, s_ in bm],
                                     params=[Param(k, v) for k, v in bp], tags=[RunTag(k, v) for k, v in bt])
                if bp:
                    self._params_sent.setdefault(rid, {}).update(bp)
            if too_large is not None:
                raise too_large
        elif kind == "artifacts":
            if not os.path.isdir(p["dir"]):
                # gone (deleted, or a spooled operation replayed on another machine): MLflow's
                # log_artifacts copies nothing from a missing directory, without an error, and
                # checkpoint_uri then named an empty artifact directory as the run's checkpoint
                _say(f"meta-study writer: trial {trial}: its checkpoint directory {p['dir']} is gone; not copied "
                      "to its run, which gets no checkpoint_uri")
                return
            client = self._mlflow()
            client.log_artifacts(rid, p["dir"], artifact_path="checkpoint")
            client.set_tag(rid, "checkpoint_uri", f"{client.get_run(rid).info.artifact_uri}/checkpoint")
        elif kind == "reopen":   # a later session continues the run: RUNNING again, an earlier session's tags off
            client = self._mlflow()
            present = set(client.get_run(rid).data.tags)
            for key in p.get("untag", []):
                if key in present:         # deleting an absent tag is an error (RESOURCE_DOES_NOT_EXIST)
                    client.delete_tag(rid, key)
            client.update_run(rid, status="RUNNING")
        elif kind == "end":
            rest = self._rest_client()
            if rest is not None:
                rest.post("runs/update", {"run_id": rid, "status": p["status"], "end_time": int(time.time() * 1000)})
            else:
                self._mlflow().set_terminated(rid, status=p["status"])


#: The names MLflow takes for metrics, params and tags (mlflow.utils.validation, MLflow 2-3).
_NAME = re.compile(r"[/\w.\- :]*")
MAX_NAME_LENGTH = 250


def refused_name(name: str) -> str | None:
    """Why MLflow refuses a metric, param or tag named ``name`` (and with it the whole batch), or None."""
    if not name or len(name) > MAX_NAME_LENGTH:
        return f"a name is 1 to {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return "only letters, digits, spaces and _ - . : / are allowed"
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(("..", "/")):
        return f"as a path it resolves to {norm!r}"
    return None


def is_file_store(uri: str) -> bool:
    """Whether ``uri`` is MLflow's file store: a plain path or a ``file:`` URI."""
    if uri in ("databricks", "databricks-uc", "uc"):    # MLflow's names without a scheme
        return False
    scheme = uri.partition(":")[0].lower() if ":" in uri else ""
    return scheme in ("", "file") or len(scheme) == 1    # one letter: a Windows drive


def error_line(e: BaseException) -> str:
    """``e`` as one line of at most 300 characters (its type and its message's first line), with any
    URL's user info cut: for the writer's stderr and the driver's end-of-sweep line."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return without_user_info(f"{type(e).__name__}: {first}" if first else type(e).__name__)[:300]


def _point_value(v: Any) -> Any:
    """A metric value as a set member: NaN equals NaN."""
    v = float(v)
    return "nan" if v != v else v


def call_limit_s() -> float:
    """Seconds one MLflow call of the writer may wait for an answer: the REST path's timeout, or
    MLflow client's (``MLFLOW_HTTP_REQUEST_TIMEOUT``, 120 s by default), whichever is longer."""
    try:
        mlflow_s = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 120)
    except ValueError:
        mlflow_s = 120.0
    return max(_RestRuns.TIMEOUT_S, mlflow_s)


#: MLflow's answers that no retry changes: the run is gone (deleted in the UI), a value or a state
#: it will never accept. Not credentials (401/403: fixed by the user, then sent) nor 429/5xx.
PERMANENT_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "INVALID_STATE"})


#: How MLflow refuses a param sent again with another value (its file store answers INTERNAL_ERROR,
#: its SQL store INVALID_PARAMETER_VALUE; MLflow 1.x to 3.x): one param, with its held value, or
#: (the SQL store's log_batch) a list of ``{'key', 'old_value', 'new_value'}``
_PARAM_HELD = re.compile(r"Changing param values is not allowed\. Param with key='([^']*)' was already logged "
                         r"with value='")
_PARAMS_HELD = "Changing param values is not allowed. Params were already logged='"


def held_params(e: BaseException, rid: str, sent: Mapping[str, str]) -> dict[str, str]:
    """The params of ``sent`` (key -> value, a log-batch's) that MLflow's refusal ``e`` says run
    ``rid`` holds with another value: key -> the value held. Read from MLflow's whole message
    (:attr:`~._rest.RestError.detail`), whose ends hold the run and the value sent, so a value
    holding quotes reads whole; {} for any other error."""
    import ast

    text = getattr(e, "detail", None)
    held: dict[str, str] = {}
    if not isinstance(text, str):
        return held
    m = _PARAM_HELD.match(text)
    if m and m.group(1) in sent:
        end = f"' for run ID='{rid}'. Attempted logging new value '{sent[m.group(1)]}'."
        if text.endswith(end) and len(text) >= m.end() + len(end):
            held[m.group(1)] = text[m.end():len(text) - len(end)]
    elif text.startswith(_PARAMS_HELD) and text.endswith(end := f"' for run ID='{rid}'."):
        try:
            listed = ast.literal_eval(text[len(_PARAMS_HELD):len(text) - len(end)])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return held
        if isinstance(listed, list):
            held = {d["key"]: d["old_value"] for d in listed if isinstance(d, dict) and
                    isinstance(d.get("key"), str) and isinstance(d.get("old_value"), str)
                    and d["key"] in sent and d.get("new_value") == sent[d["key"]]}
    return {k: v for k, v in held.items() if v != sent[k]}


def permanent(e: BaseException) -> bool:
    """True when ``e`` is an MLflow refusal that a retry cannot change (:data:`PERMANENT_CODES`)."""
    code = getattr(e, "error_code", None)
    return isinstance(code, str) and code in PERMANENT_CODES


#: The payload keys each kind of spooled operation needs (the writer's steps read them).
_SPOOLED_NEEDS: dict[str, tuple[str, ...]] = {
    "run": ("config",), "metrics": ("metrics", "step", "time"), "tag": ("key", "value"), "batch": (),
    "artifacts": ("dir",), "end": ("status",), "map": ("run",), "reopen": ()}


def spooled_op(line: str) -> Op:
    """A spool line as the operation it holds. Raises ValueError if it holds none: not JSON (a write
    cut short), or JSON of another shape. Such a line was replayed: a trial that is not a string
    raised out of the replay (the spool objects after it never replayed, in any session), and an
    operation without what its step reads failed every retry, held each flush to its timeout and
    was spooled again, with its trial's other operations, by every later session."""
    d = json.loads(line)
    if (not isinstance(d, dict) or set(d) - {"kind", "trial", "payload"} or d.get("kind") not in _SPOOLED_NEEDS
            or not isinstance(d.get("trial"), str) or not isinstance(d.get("payload"), dict)
            or any(k not in d["payload"] for k in _SPOOLED_NEEDS[d["kind"]])):
        raise ValueError("not a spooled operation")
    op = Op(**d)
    try:
        steps = plan_ops([op])
        if any(len(m) != 4 for kind, p in steps if kind == "batch" for m in p["metrics"]):
            raise ValueError("a metric is not (key, value, time, step)")
        # a value that is no number (null, a string) failed every retry on the REST path (a
        # TypeError, never a refusal: held each flush to its timeout, spooled again every session)
        if any(not isinstance(m[0], str) or not all(_is_number(x) for x in m[1:])
               for kind, p in steps if kind == "batch" for m in p["metrics"]):
            raise ValueError("a metric's value, time or step is not a number")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"not a spooled operation ({type(e).__name__}: {e})") from None
    return op


def _seq_of(op: Op) -> int:
    return op.seq


def _step_op(trial: str, step: tuple[str, dict[str, Any]], seq: int) -> Op:
    """A planned step as the operation it is spooled as, in its trial's order at ``seq``."""
    op = Op(kind=step[0], trial=trial, payload=step[1])
    op.seq = seq
    return op


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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
                if p.get("config_key"):
                    cur.setdefault("config_key", p["config_key"])
                if cfg.get("arch_family") is not None:
                    cur["tags"]["arch_family"] = str(cfg["arch_family"])
            elif op.kind == "metrics":
                cur["metrics"] += [(k, v, p["time"], p["step"]) for k, v in p["metrics"].items()]
                if p.get("resent"):
                    cur["resent"] = True
            elif op.kind == "tag":
                cur["tags"][p["key"]] = str(p["value"])
            else:  # a spooled batch: its run's name and config key too (a run created on replay needs them)
                if p.get("name") and not cur.get("name"):
                    cur["name"] = p["name"]
                if p.get("config_key") and not cur.get("config_key"):
                    cur["config_key"] = p["config_key"]
                cur["params"].update(p.get("params", {}))
                cur["tags"].update(p.get("tags", {}))
                cur["metrics"] += [tuple(m) for m in p.get("metrics", [])]
                if p.get("resent"):
                    cur["resent"] = True
        elif op.kind != "retry":   # "retry": only wakes a trial's held operations (see MlflowWriter._spool)
            steps.append((op.kind, dict(p)))
            cur = None
    return steps
