"""Benchmark: per-trial overhead of the sweep machinery against bare Ray Tune.

    python benchmarks/bench_sweep_overhead.py [--trials 200] [--rounds 3] [--pin] [--server gunicorn]
                                              [--server-workers 2] [--server-db-dir /dev/shm]

Three sweeps run ``--trials`` trials of the same trivial body (no training) on the same local Ray
(1 CPU per trial, reuse_actors, the same storage settings):
- bare: a function trainable that reports one result;
- machinery: the same body inside meta-study's trial machinery (completion record, config split,
  resolved-config report), no MLflow;
- ours: the machinery with the driver-side MLflow callback logging a child run per trial
  (params, metrics, status) under a parent run, to a real ``mlflow server`` on 127.0.0.1 (sqlite).
They run ``--rounds`` times in rotating order. Reported: wall time per trial for each, including
the MLflow writer's final flush, and the median over rounds of each round's ratio ours / bare.
Target: ours <= 1.25x bare.

On a 2-core machine the tracking server's own CPU (a sqlite commit per request, 3 requests per
trial) competes with Ray for the same cores. ``--pin`` gives the server one core and Ray the
other, for both sweeps alike: the situation of a lab, whose tracking server is another machine.
Its sqlite database still shares the disk with Ray's experiment files unless ``--server-db-dir``
puts it elsewhere (``/dev/shm``): each request commits with an fsync, and on this VM those fsyncs
make the server's throughput, not its CPU, the limit (and slow Ray's own writes).
``--server`` picks how ``mlflow server`` serves its Flask app: uvicorn (MLflow 3's default, through
a FastAPI/ASGI bridge) or gunicorn (``--gunicorn-opts``, sync workers, no bridge: ~25% less server
CPU per request here). Both serve the tracking REST API and the UI that meta-study uses.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow_server import MlflowServer  # noqa: E402

METRICS = {"us/synth_us/top1": 0.5, **{f"ds/task{d}/{k}shot/top1": 0.3 for d in range(4) for k in (1, 10)}}


def bare(config: dict) -> None:
    from ray import tune

    tune.report({**METRICS, "final": 1.0})


def trivial_body(cfg: dict, hooks: dict) -> dict:
    from meta_study.tune.trial import FINAL_KEY, RESOLVED_KEY

    return {**METRICS, RESOLVED_KEY: {"model_name": "vit_tiny_cpu", "lr": 1e-3, "seed": cfg["seed"]}, FINAL_KEY: 1.0}


def ours(config: dict) -> None:
    from meta_study.tune.trial import run_with_machinery

    run_with_machinery(config, trivial_body)


def run(trainable, n: int, storage: str, name: str, callbacks=()) -> tuple[float, float]:
    """(wall seconds including the MLflow flush, seconds of that flush)."""
    from ray import tune

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"seed": tune.grid_search(list(range(n))), "model_name": "vit_tiny_cpu"},
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=list(callbacks), verbose=0))
    flushing = [0.0]
    for cb in callbacks:   # the end of the sweep waits for the writer: time that wait
        end = cb.on_experiment_end

        def timed_end(*a, _end=end, **kw):
            t = time.perf_counter()
            _end(*a, **kw)
            flushing[0] += time.perf_counter() - t
        cb.on_experiment_end = timed_end
    t0 = time.perf_counter()
    grid = tuner.fit()
    for cb in callbacks:
        cb.flush()
    t2 = time.perf_counter()
    assert len(grid) == n and not grid.errors
    return t2 - t0, flushing[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three sweeps (the median ratio counts)")
    ap.add_argument("--server", choices=("uvicorn", "gunicorn"), default="uvicorn",
                    help="how the MLflow server runs its app (default: MLflow's own default, uvicorn)")
    ap.add_argument("--server-workers", type=int, default=1, help="MLflow server worker processes (default 1)")
    ap.add_argument("--server-db-dir", default=None,
                    help="where the server's sqlite file goes (default: beside Ray's files, on the same disk); "
                         "e.g. /dev/shm: its commits' fsyncs then stay off the disk that Ray writes to")
    ap.add_argument("--pin", action="store_true",
                    help="the MLflow server on CPU 1 alone and Ray on CPU 0 (for both sweeps), as if the server "
                         "ran on another machine, as it does in a lab")
    args = ap.parse_args()
    if args.server_db_dir and not os.path.isdir(args.server_db_dir):
        ap.error(f"--server-db-dir {args.server_db_dir}: not a directory")   # one line, exit 2
    if args.server_workers < 1 or args.rounds < 1 or args.trials < 1:
        ap.error("--trials, --rounds and --server-workers must be at least 1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    db_dir = Path(tempfile.mkdtemp(prefix="bench-sweep-db-", dir=args.server_db_dir)) if args.server_db_dir else None
    try:
        _bench(args, work, db_dir / "mlflow.db" if db_dir else None)
    finally:   # Ray's files and the sqlite file (in RAM when under /dev/shm)
        for d in (work, db_dir):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path, db: Path | None) -> None:
    import ray

    from meta_study.tune.tracking import MlflowSweepCallback, parent_run

    if args.pin:
        os.sched_setaffinity(0, {0})    # this driver and every Ray process it starts
    # address="local": our own Ray, never a cluster that `ray start` recorded in Ray's temp dir
    ray.init(address="local", num_cpus=1 if args.pin else 2, include_dashboard=False, log_to_driver=False)
    server_args = ("--workers", str(args.server_workers),
                   *(("--gunicorn-opts", "--log-level warning") if args.server == "gunicorn" else ()))
    with MlflowServer(work / "mlflow", cpus="1" if args.pin else None, args=server_args, db=db) as server:
        run(bare, 4, str(work / "ray"), "warmup")                      # workers and imports warm
        run(ours, 4, str(work / "ray"), "warmup-ours")
        from mlflow.tracking import MlflowClient

        # bare, machinery-only and machinery+MLflow, --rounds times, the order rotating from round
        # to round (no variant always comes first, or right after another). Each round gives a
        # paired ratio (ours / bare of that round: slow drift of the machine cancels); the median
        # over rounds is the result. Single sweeps vary by +-20% here (machinery alone, which adds
        # nothing measurable, came out at 0.76-1.14x of bare in single rounds).
        times: dict[str, list[float]] = {"bare": [], "machinery": [], "ours": []}
        flushes, server_ms, writer_ms = [], [], []

        def sweep_ours(r: int) -> float:
            state = work / "ray" / f"ours{r}"
            state.mkdir(parents=True)
            exp, parent = parent_run(server.uri, "bench-overhead", f"ours{r}", str(state),
                                     params={"n": args.trials}, tags={})
            cb = MlflowSweepCallback(server.uri, exp, parent, str(state), tags={"sweep": f"ours{r}"})
            cpu0 = server.cpu_seconds()
            wall, flush = run(ours, args.trials, str(work / "ray"), f"ours{r}", callbacks=[cb])
            server_ms.append(1000 * (server.cpu_seconds() - cpu0) / args.trials)
            writer_ms.append(1000 * cb.writer_cpu_s / args.trials)
            flushes.append(flush)
            runs = MlflowClient(server.uri).search_runs(
                [exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=args.trials + 10)
            assert len(runs) == args.trials, f"{len(runs)} child runs, want {args.trials}"
            assert all(r_.info.status == "FINISHED" and r_.data.metrics.get("final") == 1.0 for r_ in runs)
            return wall

        variants = {"bare": lambda r: run(bare, args.trials, str(work / "ray"), f"bare{r}")[0],
                    "machinery": lambda r: run(ours, args.trials, str(work / "ray"), f"machinery{r}")[0],
                    "ours": sweep_ours}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % 3:] + names[:r % 3]:
                times[name].append(variants[name](r))
    n = args.trials
    med = statistics.median
    ratio = med(o / b for o, b in zip(times["ours"], times["bare"]))
    ratio_mach = med(m / b for m, b in zip(times["machinery"], times["bare"]))
    where = ("Ray on CPU 0, MLflow server on CPU 1" if args.pin else "Ray and the MLflow server sharing 2 CPUs") \
        + f"; server: {args.server}, {args.server_workers} worker(s), sqlite in {db.parent if db else 'the work dir'}"
    print(f"trials                       {n} x {args.rounds} rounds (trivial body, 1 CPU each, reuse_actors; {where})")
    print("                             median     (all rounds, ms per trial)")
    for label, key in (("bare Ray Tune", "bare"), ("machinery, no MLflow", "machinery"),
                       ("meta-study machinery+MLflow", "ours")):
        ts = times[key]
        print(f"{label:28s} {1000 * med(ts) / n:6.0f} ms   ({', '.join(f'{1000 * t / n:.0f}' for t in ts)})")
    print(f"  waiting for the MLflow writer at the end: {med(flushes):.1f} s median of the sweep's wall time")
    print(f"MLflow server CPU            {med(server_ms):6.0f} ms per trial (3 requests: create, log-batch, update)")
    print(f"MLflow writer process CPU    {med(writer_ms):6.1f} ms per trial (on Ray's CPU)")
    print(f"ratio (median of rounds)     {ratio:6.2f}x   (target <= 1.25x; machinery alone {ratio_mach:.2f}x; "
          f"per round: {', '.join(f'{o / b:.2f}' for o, b in zip(times['ours'], times['bare']))})")


if __name__ == "__main__":
    main()
