"""A store writer run as a subprocess by the crash and concurrency tests.

    python store_writer.py STORE NAME N_BATCHES RUNS_PER_BATCH [--update]

Each batch upserts RUNS_PER_BATCH new runs (source NAME, run ids NAME-b{batch}-{i}) over two
DS tasks into STORE. With --update, every batch also rewrites the previous batch's rows with a
new ds_accuracy, so a commit touches existing files (supersede + delete) as well as new ones.
Prints "committed VERSION" after each commit.
"""

from __future__ import annotations

import sys

from conftest import make_rows
from meta_study.validation import validate
from meta_study.store import Store


def batch_rows(name: str, b: int, runs: int, bump: float = 0.0):
    df = make_rows(runs, source=name, run_prefix=f"{name}-b{b}-", ds_tasks=("a", "b"), seed=b)
    df["ds_accuracy"] = (df["ds_accuracy"] * (1 - bump)).clip(0, 1)
    return validate(df).table


def main() -> None:
    store, name, n, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    update = "--update" in sys.argv
    s = Store(store, lock_timeout_s=120)
    for b in range(n):
        t = batch_rows(name, b, runs)
        if update and b > 0:
            import pyarrow as pa
            t = pa.concat_tables([t, batch_rows(name, b - 1, runs, bump=0.5)])
        r = s.commit(t, operation="test-writer", info={"writer": name, "batch": b})
        print(f"committed {r.version}", flush=True)


if __name__ == "__main__":
    main()
