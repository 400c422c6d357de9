"""Benchmark: the SQL source (``mlflow-sql:``) against the REST source and ``mlflow.search_runs``,
on the 10,000-run database of ``bench_ingest_mlflow.py`` (issue #14 item 3, "MLflow at lab scale").

    python benchmarks/bench_ingest_mlflow_sql.py [--runs 10000] [--db benchmarks/_out/mlflow-10000.db] [--repeat 3]

Measured in one run, against the same copy of the database (a local ``mlflow server`` on it for the
REST side; building the database the first time takes ~4 minutes, it is cached in benchmarks/_out):
- ``mlflow.search_runs()`` of the whole experiment into pandas (the raw REST read; best of two);
- the REST source and the SQL source, each: ingest into an empty store, then again with nothing
  changed. After one untimed SQL ingest (the process's first ingest pays its imports), the two
  alternate ``--repeat`` times, each time into a fresh store, and the best of each counts (a REST
  ingest of 10,000 runs takes ~17 s: ``--repeat 5`` takes ~70 s more than one REST ingest did).
Target: the SQL source's full ingest >= 5,000 runs/s (160,000 rows validated and committed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_ingest_mlflow import build_db, search_runs_seconds  # noqa: E402
from mlflow_server import MlflowServer  # noqa: E402


def timed_ingest(spec: str, store_dir: Path, runs: int) -> tuple[float, float, str, float]:
    """(full ingest s, no-op re-ingest s, the no-op's summary line, the full ingest's CPU s in this
    process) of one source into a new store."""
    from meta_study.ingest import SourceOptions, ingest_sources, open_sources
    from meta_study.store import Store

    store = Store(str(store_dir))
    opts = SourceOptions(experiments=("bench-10k",))
    t0, c0 = time.perf_counter(), time.process_time()
    (rep,) = ingest_sources(open_sources([spec], None, opts), store)
    t_full, c_full = time.perf_counter() - t0, time.process_time() - c0
    assert rep.ok and rep.new == runs * 16, rep.line()
    t0 = time.perf_counter()
    (rep2,) = ingest_sources(open_sources([spec], None, opts), store)
    t_noop = time.perf_counter() - t0
    assert rep2.ok and rep2.new == rep2.updated == rep2.commits == 0, rep2.line()
    return t_full, t_noop, rep2.line(), c_full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3,
                    help="ingests per source, REST and SQL alternately, each into a fresh store; the best of each counts")
    args = ap.parse_args()
    for flag, v in (("--runs", args.runs), ("--repeat", args.repeat)):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")   # one line, exit 2
    db = args.db or HERE / "_out" / f"mlflow-{args.runs}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        print(f"building {db} ...", flush=True)
        build_db(db, args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-sql-"))
    shutil.copy(db, work / "mlflow.db")  # the server may migrate or write: keep the cache pristine

    import mlflow

    sql_spec = f"mlflow-sql:sqlite:///{work / 'mlflow.db'}"
    with MlflowServer(work, db=work / "mlflow.db") as server:
        mlflow.set_tracking_uri(server.uri)
        exp = mlflow.get_experiment_by_name("bench-10k").experiment_id

        def raw() -> float:
            return search_runs_seconds(exp, args.runs)

        t_raw1 = raw()
        # Best of --repeat on both sides, alternating which goes first: the SQL side alone was the
        # best of 5 against one REST ingest, and that one REST ingest was the process's first
        # (cold imports). One untimed SQL ingest (~2 s) warms the code both sources share.
        timed_ingest(sql_spec, work / "store-warmup", args.runs)
        rest: list[tuple[float, float, str, float]] = []
        sql: list[tuple[float, float, str, float]] = []
        for i in range(args.repeat):
            pair = [(rest, server.uri, "rest"), (sql, sql_spec, "sql")]
            for seen, spec, kind in (pair if i % 2 == 0 else pair[::-1]):
                seen.append(timed_ingest(spec, work / f"store-{kind}-{i}", args.runs))
        t_raw2 = raw()
    t_raw = min(t_raw1, t_raw2)
    rest_full, rest_noop = min(s[0] for s in rest), min(s[1] for s in rest)
    sql_full, sql_noop = min(s[0] for s in sql), min(s[1] for s in sql)
    n = args.runs

    def rate(t: float) -> str:
        return f"{t:7.2f} s  {n / t:8.0f} runs/s"

    print(f"runs                           {n} (1 US + 16 DS metrics, 10 params each; {16 * n:,} rows)")
    print(f"mlflow.search_runs -> pandas   {rate(t_raw)}  (best of {t_raw1:.2f}, {t_raw2:.2f})")
    print(f"REST source, full ingest       {rate(rest_full)}  (best of {', '.join(f'{s[0]:.2f}' for s in rest)}) "
          f"= {rest_full / t_raw:.2f}x the raw read")
    print(f"REST source, no-op re-ingest   {rate(rest_noop)}")
    print(f"SQL source, full ingest        {rate(sql_full)}  (best of {', '.join(f'{s[0]:.2f}' for s in sql)}) "
          f"= {rest_full / sql_full:.1f}x faster than REST, {t_raw / sql_full:.1f}x faster than search_runs "
          f"(target >= 5000 runs/s)")
    cpu = min(s[3] for s in sql)
    print(f"  its CPU time                 {cpu:7.2f} s  {n / cpu:8.0f} runs/s  (all of its work runs in this process: "
          "what a quiet machine would give)")
    print(f"SQL source, no-op re-ingest    {rate(sql_noop)}  = {100 * sql_noop / sql_full:.1f}% of its full ingest, "
          f"{rest_noop / sql_noop:.1f}x faster than REST's")
    print(f"  {sql[-1][2]}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
