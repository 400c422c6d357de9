"""File ingest against pyarrow's own read + hive-partitioned write, in the same run.

    python benchmarks/bench_ingest_files.py                       # 1M rows: 10k models x 25 tasks x 4 shots
    python benchmarks/bench_ingest_files.py --models 100000       # 10M rows (bounded memory check)

The input is one canonical long CSV (every column of docs/schema.md that an export carries), built
once under benchmarks/_out/ and reused. Each contender runs in a fresh subprocess, so its peak RSS
(``ru_maxrss`` of that child) is its own:

- baseline: ``pyarrow.csv.read_csv`` + ``pyarrow.dataset.write_dataset`` partitioned by
  ``us_task``/``ds_task`` (hive), zstd: what the formats cost, with no validation or upsert;
- ``meta-study ingest FILE --store S`` into an empty store: read, validate, quarantine, commit;
- the same command again: an unchanged file, which must stay a cheap no-op (its sha256 and
  mapping match the store's state, so it is not read);
- the same rows in a file whose bytes differ: read, validated and compared row by row.

Targets (issue 14.2): ingest <= 10x the baseline's wall time and <= 2x its peak memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "_out"

BASELINE = """
import sys, pyarrow.csv as pc, pyarrow.dataset as ds
t = pc.read_csv(sys.argv[1])
ds.write_dataset(t, sys.argv[2], format="parquet", partitioning=["us_task", "ds_task"],
                 partitioning_flavor="hive", file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"))
print(t.num_rows)
"""


def make_csv(path: Path, models: int, tasks: int, shots: tuple[int, ...], seed: int = 0) -> None:
    """``models x tasks x len(shots)`` canonical rows, written in chunks of 1,000 models."""
    rng = np.random.default_rng(seed)
    cols = ["source", "run_id", "experiment", "model_name", "arch_family", "param_count", "us_task", "us_accuracy",
            "ds_task", "eval_protocol", "shots", "ds_accuracy", "seed", "lr", "wd", "epochs", "batch_size"]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(",".join(cols) + "\n")
        for start in range(0, models, 1000):
            n = min(1000, models - start)
            m = np.arange(start, start + n)
            us = rng.uniform(0.3, 0.9, n)
            lines = []
            for t in range(tasks):
                for k in shots:
                    ds = np.clip(us * rng.uniform(0.4, 1.0, n), 0, 1)
                    lines.extend(
                        f"bench,run-{i},zoo,vit_{i % 7},vit,{1_000_000 + i * 13},imagenet,{u:.6f},"
                        f"task{t:02d},fewshot,{k},{d:.6f},{i % 5},0.001,0.1,7,256"
                        for i, u, d in zip(m, us, ds))
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def run(argv: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS in MiB, result) of one fresh subprocess."""
    # Output to files, not pipes: wait4 reads nothing until the child exits, so a child that wrote
    # more than a pipe holds (64 KiB: a long traceback, a flood of warnings) blocked for ever.
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=fo, stderr=fe, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    r = subprocess.CompletedProcess(argv, p.returncode, out, err)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=25)
    ap.add_argument("--shots", default="1,5,10,25")
    args = ap.parse_args()
    try:
        shots = tuple(int(s) for s in args.shots.split(","))
    except ValueError:
        ap.error(f"--shots {args.shots}: not a comma list of integers")
    for flag, v in (("--models", args.models), ("--tasks", args.tasks), ("--shots", min(shots, default=0))):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")   # one line, exit 2
    rows = args.models * args.tasks * len(shots)
    OUT.mkdir(exist_ok=True)
    csv = OUT / f"ingest_{args.models}x{args.tasks}x{len(shots)}.csv"
    if not csv.exists():
        t = time.perf_counter()
        make_csv(csv, args.models, args.tasks, shots)
        print(f"built {csv.name} ({csv.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
    print(f"input: {rows:,} rows, {csv.stat().st_size / 2**20:.0f} MiB CSV")

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=OUT))
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    try:
        base_t, base_m, r = run([sys.executable, "-c", BASELINE, str(csv), str(work / "pa")], env)
        assert int(r.stdout.strip()) == rows
        store = work / "store"
        cmd = [sys.executable, "-m", "meta_study.cli", "ingest", str(csv), "--store", str(store), "--quiet"]
        ing_t, ing_m, r = run(cmd, env)
        assert f"{rows} new" in r.stdout, r.stdout
        noop_t, noop_m, r = run(cmd, env)
        assert "unchanged since its last ingest" in r.stdout, r.stdout
        # the same rows in a file whose bytes differ (one more newline): read, validated, compared
        same = work / csv.name
        shutil.copyfile(csv, same)
        with open(same, "a") as f:
            f.write("\n")
        # a new export of the same file, elsewhere: said so (ingest refuses another file of the same
        # name as a new source that would replace the first's rows)
        cmd2 = [sys.executable, "-m", "meta_study.cli", "ingest", str(same), "--store", str(store), "--quiet",
                "--source", "bench"]
        same_t, same_m, r = run(cmd2, env)
        assert f"{rows} unchanged" in r.stdout, r.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'':28s} {'wall s':>8s} {'peak MiB':>9s}")
    print(f"{'pyarrow read + write':28s} {base_t:8.2f} {base_m:9.0f}")
    print(f"{'meta-study ingest':28s} {ing_t:8.2f} {ing_m:9.0f}")
    print(f"{'meta-study ingest, same file':28s} {noop_t:8.2f} {noop_m:9.0f}")
    print(f"{'  same rows, other bytes':28s} {same_t:8.2f} {same_m:9.0f}")
    print(f"ingest / pyarrow: time {ing_t / base_t:.1f}x (target <= 10x), peak memory {ing_m / base_m:.2f}x "
          f"(target <= 2x); re-ingest of the same file {noop_t / ing_t:.1%} of the ingest, of the same rows "
          f"in a changed file {same_t / ing_t:.0%}")


if __name__ == "__main__":
    main()
