"""Benchmark: the sweep writer's hand-written REST client against one long-lived ``MlflowClient``.

    python benchmarks/bench_tracking_client.py [--runs 500] [--reps 3] [--pin] [--server gunicorn]
                                               [--server-workers 2] [--server-db-dir /dev/shm]

Both clients log ``--runs`` runs the way a sweep's writer does, through the writer itself
(``meta_study.tune._shards.MlflowWriter``: 4 threads, trials sharded by id, each trial's queued
operations merged into 3 requests): create the run with its tags, one log_batch (11 params, the
``arch_family`` tag and 20 metrics), set it FINISHED, to the same real ``mlflow server`` on
127.0.0.1 (sqlite), in one process run:

- ``rest``: the writer as it is (``http.client`` on keep-alive connections, ``meta_study/tune/_rest.py``);
- ``mlflow``: the same writer with its REST path off, so that every call goes through its one
  long-lived ``MlflowClient`` (``create_run``, ``log_batch``, ``set_terminated``): the path it
  takes for tracking URIs that are not http(s).

Each client gets a warm-up (connections, MLflow's lazy imports), then the two alternate for
``--reps`` repetitions and the best of each counts. Reported per client: runs/s (wall, from the
first operation to the flush that confirms the last), the client's CPU per run (this process, all
threads: what the writer process costs the driver's machine), the server's CPU per run, and the
ratios. Every run is checked to be FINISHED with all its params and metrics.

On a 2-core machine runs/s is bound by the server (17-35 ms of server CPU per run against 1-8 ms
of client CPU), so it hardly tells the clients apart; the client's CPU per run is the overhead a
sweep pays for its client (BENCHMARKS.md has both, and what it costs a sweep). ``--pin`` gives the
server CPU 1 and this process CPU 0, as if the server ran on another machine; ``--server``,
``--server-workers`` and ``--server-db-dir`` are those of ``bench_sweep_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")   # no get_run per set_terminated

from mlflow_server import MlflowServer  # noqa: E402

from meta_study.tune.writer import MlflowWriter, Op, SweepTarget  # noqa: E402

N_METRICS = 20
CONFIG = {"model_name": "vit_tiny_cpu", "arch_family": "vit", "param_count": 5_500_000, "lr": 1e-3, "wd": 1e-4,
          "head_lr": 1e-2, "head_wd": 0.0, "epochs": 3, "data_fraction": 0.5, "batch_size": 256, "seed": 0}


class _ViaMlflowClient(MlflowWriter):
    """The writer with its REST path off: every call goes through its one MlflowClient."""

    def _rest_client(self) -> None:
        return None


@dataclass(frozen=True)
class Timing:
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float


def log_runs(w: MlflowWriter, server: MlflowServer, prefix: str, n: int) -> Timing:
    """Log ``n`` trials through ``w`` and wait for all of them."""
    now_ms = int(time.time() * 1000)
    metrics = {f"ds/task{i // 4}/{(1, 5, 10, 25)[i % 4]}shot/top1": 0.01 * i for i in range(N_METRICS - 1)}
    cpu0, srv0, t0 = time.process_time(), server.cpu_seconds(), time.perf_counter()
    for i in range(n):
        trial = f"{prefix}-{i:05d}"
        w.put(Op("run", trial, {"name": f"t_{trial}", "config": {**CONFIG, "seed": i}}))
        w.put(Op("metrics", trial, {"metrics": {**metrics, "final": 1.0}, "step": 1, "time": now_ms}))
        w.put(Op("end", trial, {"status": "FINISHED"}))
    if not w.flush(timeout_s=600):
        raise SystemExit(f"{prefix}: the server did not take every run ({w.errors} failed calls)")
    return Timing(time.perf_counter() - t0, time.process_time() - cpu0, server.cpu_seconds() - srv0)


def check_runs(uri: str, experiment_id: str, prefix: str, n: int) -> None:
    """Every run of ``prefix`` FINISHED, with all its params and metrics."""
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([experiment_id], filter_string=f"tags.trial_id LIKE '{prefix}-%'",
                                         max_results=n + 1)
    bad = [r.info.run_id for r in runs if r.info.status != "FINISHED" or len(r.data.metrics) != N_METRICS
           or len(r.data.params) != len(CONFIG)]
    if len(runs) != n or bad:
        raise SystemExit(f"{prefix}: {len(runs)} runs of {n}, {len(bad)} incomplete")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500, help="runs per repetition and client (default 500)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per client, alternating; best counts (default 3)")
    ap.add_argument("--server", choices=("uvicorn", "gunicorn"), default="uvicorn",
                    help="how the MLflow server runs its app (default: MLflow's own default, uvicorn)")
    ap.add_argument("--server-workers", type=int, default=1, help="MLflow server worker processes (default 1)")
    ap.add_argument("--server-db-dir", default=None, help="where the server's sqlite file goes (e.g. /dev/shm)")
    ap.add_argument("--pin", action="store_true", help="the server on CPU 1 alone and this process on CPU 0")
    args = ap.parse_args()
    if args.server_db_dir and not os.path.isdir(args.server_db_dir):
        ap.error(f"--server-db-dir {args.server_db_dir}: not a directory")
    if min(args.runs, args.reps, args.server_workers) < 1:
        ap.error("--runs, --reps and --server-workers must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench-client-"))
    db_dir = Path(tempfile.mkdtemp(prefix="bench-client-db-", dir=args.server_db_dir)) if args.server_db_dir else None
    try:
        _bench(args, work, db_dir / "mlflow.db" if db_dir else None)
    finally:
        for d in (work, db_dir):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path, db: Path | None) -> None:
    from mlflow.tracking import MlflowClient

    if args.pin:
        os.sched_setaffinity(0, {0})
    server_args = ("--workers", str(args.server_workers),
                   *(("--gunicorn-opts", "--log-level warning") if args.server == "gunicorn" else ()))
    with MlflowServer(work / "mlflow", cpus="1" if args.pin else None, args=server_args, db=db) as server:
        client = MlflowClient(server.uri)
        exp = client.create_experiment("bench-tracking-client")
        parent = client.create_run(exp, run_name="parent", tags={"sweep": "bench"}).info.run_id
        writers: dict[str, MlflowWriter] = {}
        for kind, cls in (("rest", MlflowWriter), ("mlflow", _ViaMlflowClient)):
            state = work / f"writer-{kind}"
            state.mkdir()
            w = writers[kind] = cls(SweepTarget(server.uri, exp, parent, str(state), tags={"sweep": "bench"}))
            w.setup()
            log_runs(w, server, f"{kind}-warmup", 40)
        seen: dict[str, list[Timing]] = {"rest": [], "mlflow": []}
        for rep in range(args.reps):
            # alternate which client goes first, so that neither always follows the other
            for kind in (("rest", "mlflow") if rep % 2 == 0 else ("mlflow", "rest")):
                t = log_runs(writers[kind], server, f"{kind}-{rep}", args.runs)
                check_runs(server.uri, exp, f"{kind}-{rep}", args.runs)
                seen[kind].append(t)
                print(f"  rep {rep} {kind:6s} {_line(t, args.runs)}", flush=True)
        for w in writers.values():
            w.flush()
    where = ("this process on CPU 0, MLflow server on CPU 1" if args.pin
             else "this process and the server sharing the CPUs")
    print(f"{args.runs} runs x {args.reps} reps per client, best of each ({where}; server: {args.server}, "
          f"{args.server_workers} worker(s), sqlite in {db.parent if db else 'the work dir'}); 3 requests per run")
    best = {k: Timing(min(t.wall_s for t in ts), min(t.client_cpu_s for t in ts), min(t.server_cpu_s for t in ts))
            for k, ts in seen.items()}
    for kind, t in best.items():
        print(f"{kind:6s}  {_line(t, args.runs)}")
    r, m = best["rest"], best["mlflow"]
    print(f"MlflowClient / REST: runs/s {r.wall_s / m.wall_s:.2f}x, client CPU per run {m.client_cpu_s / r.client_cpu_s:.2f}x")


def _line(t: Timing, n: int) -> str:
    return (f"{n / t.wall_s:7.1f} runs/s   client {1000 * t.client_cpu_s / n:5.2f} ms CPU/run   "
            f"server {1000 * t.server_cpu_s / n:5.1f} ms CPU/run")

if __name__ == "__main__":
    main()
