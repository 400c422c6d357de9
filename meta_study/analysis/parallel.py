"""A thin Ray fan-out over the pure per-group functions of sensitivity and bootstrap
(:mod:`sensitivity`, :mod:`bootstrap`).

Each group's data goes into the object store once, with its chunk: a task receives its own
groups only (not every group's, which each task deserialized whole) and runs
:func:`sensitivity_group` / :func:`bootstrap_group` on them. Groups are chunked by estimated cost
so that every task does at least tens of milliseconds (Ray's per-task overhead is ~1 ms).
Because each group's draws are seeded from the group key, the result equals the serial path's bit
for bit, whichever worker computes which group.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import UserError
from .bootstrap import BOOTSTRAP_COLUMNS, BootstrapOptions, bootstrap_group
from .fitting import holdout_threshold
from .sensitivity import SENSITIVITY_COLUMNS, SensitivityOptions, default_sizes, sensitivity_group

Progress = Callable[[str, int, int | None], None]

#: Seconds without a finished task between two lines saying what still waits (a cluster short of
#: CPUs waited in ray.wait without a word).
WAIT_NOTE_S = 300.0
# after an error: how long the other tasks' cancels are checked, and how often a lost one is
# cancelled again (see _cancel), in seconds
CANCEL_WITHIN_S = 15.0
RECANCEL_S = 1.0

#: Target work per task, in "point-fits" (points summed over every fit a task performs);
#: ~0.3 us each, so 2e5 is ~60 ms: well above Ray's ~1 ms task overhead.
TARGET_TASK_COST = 2e5
#: Per draw and frontier, the fixed work (the frontier of the draw, its fit's setup), in point-fits,
#: beside ~1/2 per point drawn; measured on 2 cores (2026-12-06): a sensitivity draw of 10 models on
#: the 6 frontiers ~2,400, of 1,000 ~4,700; a bootstrap resample on (vertices, all) ~350 at 20
#: fitting points, ~2,500 at 2,000. Counted as 50 per draw (not per frontier), a 60-model group's
#: sensitivity was estimated at 1/12 of a 5,000-model group's, and took 1/2 of its time: a chunk
#: of twelve small groups ran ~6x as long as one of a large group, balanced on paper.
SENSITIVITY_DRAW_COST = 400
BOOTSTRAP_DRAW_COST = 250


def init_ray(address: str | None = None, workers: int | None = None) -> Any:
    """Connect to ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), else to
    ``$RAY_ADDRESS`` if set, else (or with ``address="local"``) start a token-protected Ray of our
    own with ``workers`` CPUs (default: all); see :mod:`meta_study.ray_session`. Workers run
    numpy single-threaded. A Ray this process has initialized already (an earlier call, a
    program's own ``ray.init``) is used as it is, whatever ``address`` and ``workers`` say; the
    Ray this starts is not shut down here: it serves the next call and dies with this process.
    """
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a dependency
        raise ImportError("the parallel analysis needs Ray: pip install 'ray[tune,train]'") from e
    from ..ray_session import start_or_connect

    env = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    start_or_connect(address, num_cpus=workers, runtime_env=env, quiet=True)   # no "Started a local Ray instance." line
    return ray


def _chunks(costs: Sequence[float], n_workers: int) -> list[list[int]]:
    """Consecutive groups packed into chunks of about TARGET_TASK_COST, at least 2 per worker
    when there is enough work (load balance), never splitting a group.

    Each group goes to the chunk in which the midpoint of its cost falls on the cumulative cost
    axis, so chunks are balanced to within one group (a greedy "fill up to the mean" packing can
    leave a last chunk many times the mean, which then runs alone at the end).
    """
    c = np.maximum(np.asarray(costs, dtype=float), 0.0)
    if c.size == 0:
        return []
    total = float(c.sum())
    n_chunks = max(1, min(c.size, max(2 * n_workers, int(total // TARGET_TASK_COST))))
    if total <= 0:
        c, total = np.ones(c.size), float(c.size)
    mid = np.cumsum(c) - c / 2
    ids = np.minimum((mid / (total / n_chunks)).astype(np.int64), n_chunks - 1)
    return [np.flatnonzero(ids == k).tolist() for k in np.unique(ids)]


class RayFailure(OSError):
    """Ray lost the work of an analysis: a worker or a node died (killed for memory, a spot node
    taken back), an object was lost, the object store or the disk was full. The machine failed,
    not the input, so a command says it in one line and exits 1, as for a full disk; it printed
    Ray's traceback. An exception our code raised inside a task is a bug and keeps its own."""


OWN = "the Ray of its own"


def _cluster(address: str | None) -> str:
    """The Ray the analysis ran on, as the flag that named it (for a one-line error)."""
    from ..ray_session import own_ray_requested, own_ray_started, shown_address

    if own_ray_requested(address):
        # a Ray this process had started itself (a program's own ray.init) is not ours
        return OWN if own_ray_started() else "the Ray this process had started"
    # shown_address: safe_uri left a user:password@host:port without a scheme whole in the line
    if address:
        return f"--address {shown_address(address)}"
    return f"RAY_ADDRESS {shown_address(os.environ.get('RAY_ADDRESS', ''))}"


def _run(kind: str, groups: Sequence[Any], options: Any, costs: Sequence[float], *, address: str | None,
         workers: int | None, progress: Progress | None, columns: Sequence[str]) -> pd.DataFrame:
    ray = init_ray(address, workers)
    try:
        return _fan_out(ray, kind, groups, options, costs, workers=workers, progress=progress, columns=columns,
                        where=_cluster(address))
    except ray.exceptions.RayError as e:
        if isinstance(e, ray.exceptions.RayTaskError):
            missing = re.search(r"No module named '(meta_study[\w.]*)'", str(e))
            if missing:
                # a cluster whose nodes have no meta-study (or not this one): Ray's traceback of
                # the workers' failed unpickling said nothing of what to do
                raise UserError(f"{kind} on Ray: the workers of {_cluster(address)} cannot import meta_study "
                                f"(no module named {missing.group(1)!r}): install meta-study {__version__} on "
                                "the cluster's nodes, or run with --address local or --serial") from None
            raise     # raised by our code inside a task: its traceback says where
        why = " ".join(str(e).split())[:200] or "no detail"
        raise RayFailure(f"{kind} on Ray failed: {type(e).__name__}: {why}; run it again, or with --serial") from e


def _fan_out(ray: Any, kind: str, groups: Sequence[Any], options: Any, costs: Sequence[float], *,
             workers: int | None, progress: Progress | None, columns: Sequence[str],
             where: str = "the Ray cluster") -> pd.DataFrame:
    """The tasks of :func:`_run` on ``ray``: groups in chunks, results in group order.

    Each task returns, beside its tables, the version and code (:func:`~.results.analysis_code`)
    of the meta-study its worker imported: a cluster whose nodes have another one installed
    computed with that code, and the results were recorded as this code's, without a word."""
    from .results import analysis_code

    payload = [(g.key, np.asarray(g.us_accuracy, float), np.asarray(g.ds_accuracy, float)) for g in groups]
    fn = sensitivity_group if kind == "sensitivity" else bootstrap_group

    @ray.remote(num_cpus=1)
    def task(part: list[tuple[Any, np.ndarray, np.ndarray]], opts: Any) -> tuple[str, str, list[pd.DataFrame]]:
        # one CPU per task: BLAS thread pools held to one thread even in workers of a Ray that
        # was started without our runtime_env (else N tasks x N BLAS threads thrash N cores)
        from threadpoolctl import threadpool_limits

        from meta_study import __version__ as version
        from meta_study.analysis.results import analysis_code as code

        with threadpool_limits(limits=1):
            return version, code(), [fn(key, us, ds, opts) for key, us, ds in part]

    mine = analysis_code()

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if cpus < 1:
        # a KubeRay head started with num-cpus 0, its workers still to come: the tasks wait in
        # ray.wait below, which said nothing for as long as that took
        print(f"{kind}: the Ray cluster has no CPU yet ({cpus:g}): its tasks wait for a node with one "
              "(workers still starting, or none that take tasks)", file=sys.stderr, flush=True)
    workers = workers or max(1, int(cpus))
    chunks = _chunks(costs, workers)
    pending: dict[Any, list[int]] = {}
    results: dict[int, pd.DataFrame] = {}
    done = 0
    if progress:
        progress(kind, 0, len(groups))
    last = time.monotonic()
    try:
        opts_ref = ray.put(options)          # once, not serialized again with every task
        for c in chunks:   # inside the try: a Ctrl-C while submitting cancels those submitted
            # each chunk's groups put once, as that task's own argument (the whole list was put once
            # and deserialized whole by every task: work that grew with the store, not the task)
            pending[task.remote(ray.put([payload[i] for i in c]), opts_ref)] = c
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_NOTE_S)
            if not ready and time.monotonic() - last >= WAIT_NOTE_S:
                last = time.monotonic()
                print(f"{kind}: {done} of {len(groups)} groups done; {len(pending)} Ray tasks still wait or run "
                      f"(the cluster has {float(ray.cluster_resources().get('CPU', 0.0)):g} CPUs)", file=sys.stderr,
                      flush=True)
            for ref in ready:
                last = time.monotonic()
                idx = pending.pop(ref)
                version, code, frames = ray.get(ref)
                if code != mine:
                    what = (f"{kind} on Ray: the workers of {where} run other meta-study code (meta-study {version}, "
                            f"code {code}; this command: {__version__}, code {mine})")
                    if where == OWN:
                        # workers started since meta-study was upgraded or edited under a running command
                        # (a `refit --every` loop): they import the files on disk, this process has older ones
                        raise UserError(f"{what}: meta-study changed on disk since this command started; start it "
                                        "again")
                    raise UserError(f"{what}: install this version on the cluster's nodes, or run with --address "
                                    "local or --serial")
                for i, frame in zip(idx, frames):
                    results[i] = frame
                done += len(idx)
                if progress:
                    progress(kind, done, len(groups))
    except BaseException:
        # one task failed (or Ctrl-C): the others ran to their end on a Ray that outlives the error
        # (an outside cluster, the Ray of a `refit --every` loop); measured, both CPUs of a 2-CPU Ray
        # busy 4 minutes more with work no one reads. Cancelled, queued ones never start and running
        # ones are stopped; the error is raised once, as it was. force=True kills the worker process of
        # a running task: a plain cancel only raises KeyboardInterrupt in it, which Ray loses when the
        # cancel meets a task that is just being started (measured in CI under load: one CPU still busy
        # 15 s after the error). The tasks are pure functions of their arguments, nothing to clean up;
        # Ray starts a fresh worker for the next task (~1 s)
        left = _cancel(ray, list(pending))
        if left:
            print(f"{kind}: {len(left)} Ray tasks did not stop within {CANCEL_WITHIN_S:g} s of being cancelled; "
                  "they may hold their CPUs until they end", file=sys.stderr, flush=True)
        raise
    frames = [results[i] for i in range(len(groups))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))


def _cancel(ray: Any, refs: list[Any], *, within_s: float = CANCEL_WITHIN_S) -> list[Any]:
    """Cancel `refs` (force: their workers are killed) and see that they end; returns those that did
    not end within `within_s` seconds.

    A cancel that meets a task pushed to its worker but not yet started is lost: the worker drops it
    from its queue, answers "not running", then runs it anyway (Ray 2.60's log: `attempt_succeeded:
    0 requested_task_running: 0`; measured, on a loaded 2-core machine, one CPU still busy 30 s and
    then 14 min after the error). A cancelled task's result is ready at once (a TaskCancelledError);
    those not ready a moment later are cancelled again, once per RECANCEL_S, until all are ready or
    `within_s` has passed. Cost: one ray.wait when every cancel held (the usual case, ~1 ms)."""
    deadline = time.monotonic() + within_s
    left = list(refs)
    while left:
        for ref in left:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        wait = min(RECANCEL_S, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            _, left = ray.wait(left, num_returns=len(left), timeout=wait, fetch_local=False)
        except Exception:  # Ray itself gone (shut down, the cluster lost): nothing left to stop
            return []
    return left


def sensitivity_ray(groups: Sequence[Any], options: SensitivityOptions = SensitivityOptions(), *,
                    address: str | None = None, workers: int | None = None,
                    progress: Progress | None = None) -> pd.DataFrame:
    """:func:`meta_study.analysis.sensitivity.sensitivity` on Ray; same rows, same order."""
    def cost(g: Any) -> float:
        # the draws sensitivity_group makes: its fitting points (prepare's split), its sizes
        us, ds = np.asarray(g.us_accuracy, float).ravel(), np.asarray(g.ds_accuracy, float).ravel()
        n_fit = (int(np.sum(np.isfinite(us) & np.isfinite(ds) & (us <= holdout_threshold(us, options.fit, ds))))
                 if us.size == ds.size else 0)
        sizes = list(options.sizes) if options.sizes else default_sizes(n_fit, options.n_sizes, options.min_size)
        sizes = [] if n_fit == 0 else sorted({min(int(n), n_fit) if not options.replace else int(n) for n in sizes})
        return options.trials * len(options.frontiers) * sum(SENSITIVITY_DRAW_COST + n / 2 for n in sizes)
    return _run("sensitivity", groups, options, [cost(g) for g in groups], address=address,
                workers=workers, progress=progress, columns=SENSITIVITY_COLUMNS)


def bootstrap_ray(groups: Sequence[Any], options: BootstrapOptions = BootstrapOptions(), *,
                  address: str | None = None, workers: int | None = None,
                  progress: Progress | None = None) -> pd.DataFrame:
    """:func:`meta_study.analysis.bootstrap.bootstrap` on Ray; same rows, same order."""
    m = len(options.frontiers)
    return _run("bootstrap", groups, options, [options.samples * m * (BOOTSTRAP_DRAW_COST + len(g.us_accuracy) / 2)
                                               for g in groups],
                address=address, workers=workers, progress=progress, columns=BOOTSTRAP_COLUMNS)
