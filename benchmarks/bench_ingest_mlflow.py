"""Benchmark: MLflow ingest of 10,000 runs against a local ``mlflow server`` (sqlite backend).

    python benchmarks/bench_ingest_mlflow.py [--runs 10000] [--db benchmarks/_out/mlflow-10000.db]

Each run has 1 US metric, 8 DS tasks x 2 shots (16 DS metrics) and 10 params, in our default
convention. The runs are historic: they ended over the ~3 hours before a day ago, as a lab's
backlog does when meta-study first ingests it. The database is built once through MLflow's own
SqlAlchemyStore (~4 minutes) and reused.

Measured in one run, against the same server:
- ``mlflow.search_runs()`` of the whole experiment into pandas (the raw read; best of two);
- ``meta-study ingest`` into an empty store (read, expand to 160,000 rows, validate, commit);
- the same ingest again, with nothing changed.
Targets: full ingest <= 1.5x the raw read; the no-op re-ingest < 10% of the full ingest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from mlflow_server import MlflowServer  # noqa: E402

PARAMS = ("model_name", "lr", "wd", "head_lr", "head_wd", "epochs", "data_fraction", "batch_size", "optimizer", "seed")


def search_runs_seconds(experiment_id: str, runs: int) -> float:
    """``mlflow.search_runs`` of the whole experiment into pandas (the raw read), in seconds."""
    import mlflow

    t0 = time.perf_counter()
    df = mlflow.search_runs([experiment_id], max_results=runs + 1)
    assert len(df) == runs, len(df)
    return time.perf_counter() - t0


def build_db(path: Path, runs: int) -> None:
    import sqlalchemy
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{tmp}", str(path.parent / "artifacts"))

    @sqlalchemy.event.listens_for(store.engine, "connect")
    def _fast(conn, _rec):  # benchmark setup only: no fsync per transaction
        cur = conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()

    store.engine.dispose()
    exp = store.create_experiment("bench-10k")
    base = int(time.time() * 1000) - 86_400_000 - runs * 1000
    t0 = time.perf_counter()
    for i in range(runs):
        r = store.create_run(exp, user_id="bench", start_time=base + i * 1000, run_name=f"trial-{i:05d}",
                             tags=[RunTag("researcher", f"r{i % 7}"), RunTag("arch_family", "vit")])
        acc = 0.3 + 0.6 * (i % 1000) / 1000
        metrics = [Metric("us/jft/top1", acc, base, 0)] + [
            Metric(f"ds/task{d}/{k}shot/top1", round(acc * (0.5 + 0.05 * d) + 0.001 * k, 6), base, 0)
            for d in range(8) for k in (5, 25)]
        params = [Param(p, str(v)) for p, v in zip(PARAMS, ("vit_b16", 8e-4, 0.1, 8e-4, 0.01 * (i % 10), 7, 1.0, 4096,
                                                            "adam", i))]
        store.log_batch(r.info.run_id, metrics=metrics, params=params, tags=[])
        store.update_run_info(r.info.run_id, RunStatus.FINISHED, base + i * 1000 + 900, None)
        if i % 1000 == 999:
            print(f"  built {i + 1} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    store.engine.dispose()
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()
    if args.runs < 1:
        ap.error(f"--runs {args.runs}: must be at least 1")   # one line, exit 2
    db = args.db or HERE / "_out" / f"mlflow-{args.runs}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        print(f"building {db} ...", flush=True)
        build_db(db, args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    shutil.copy(db, work / "mlflow.db")  # the server may migrate or write: keep the cache pristine

    import mlflow

    from meta_study.ingest import SourceOptions, ingest_sources, open_sources
    from meta_study.store import Store

    with MlflowServer(work, db=work / "mlflow.db") as server:
        mlflow.set_tracking_uri(server.uri)
        exp = mlflow.get_experiment_by_name("bench-10k").experiment_id

        def raw() -> float:
            return search_runs_seconds(exp, args.runs)

        t_raw1 = raw()
        store = Store(str(work / "store"))
        opts = SourceOptions(experiments=("bench-10k",))
        t0 = time.perf_counter()
        (rep,) = ingest_sources(open_sources([server.uri], None, opts), store)
        t_full = time.perf_counter() - t0
        assert rep.ok and rep.new == args.runs * 16, rep.line()
        t0 = time.perf_counter()
        (rep2,) = ingest_sources(open_sources([server.uri], None, opts), store)
        t_noop = time.perf_counter() - t0
        assert rep2.ok and rep2.new == rep2.updated == rep2.commits == 0, rep2.line()
        t_raw2 = raw()
    t_raw = min(t_raw1, t_raw2)
    print(f"runs                          {args.runs} (1 US + 16 DS metrics, 10 params each)")
    print(f"mlflow.search_runs -> pandas  {t_raw:7.2f} s  (best of {t_raw1:.2f}, {t_raw2:.2f})")
    print(f"meta-study ingest, full       {t_full:7.2f} s  = {t_full / t_raw:.2f}x the raw read (target <= 1.5x); "
          f"{rep.new} rows")
    print(f"meta-study ingest, no-op      {t_noop:7.2f} s  = {100 * t_noop / t_full:.1f}% of the full ingest (target < 10%)")
    print(f"  {rep2.line()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
