"""Store commands exit with their own code, also under load.

``meta-study store check`` exited -6 ("terminate called without an active exception") now and
then after printing the right report: an Arrow thread-pool worker, started by ``pq.read_table``,
torn down at interpreter exit while the CPU was busy (apache/arrow#34314, #39862). The store now
parses Parquet on the calling thread and starts no Arrow pool (``_files._parse_parquet``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import make_rows
from meta_study.validation import validate
from meta_study.store import Store


def _pool_threads_after(code: str) -> int:
    """Threads of a fresh interpreter after ``code`` that Arrow's thread pools started."""
    probe = f"""
import os, pyarrow
before = set(os.listdir('/proc/self/task'))
{code}
print(len(set(os.listdir('/proc/self/task')) - before))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_store_reads_and_checks_start_no_arrow_thread_pool(tmp_path):
    root = str(tmp_path / "st")
    Store(root).commit(validate(make_rows(4, ds_tasks=("a", "b", "c"))).table)
    code = f"""
from meta_study.store import Store
s = Store({root!r})
s.to_pandas(); s.summary(); s.quarantine(); assert s.check().ok
"""
    assert _pool_threads_after(code) == 0


@pytest.mark.slow(40)
def test_store_commands_exit_cleanly_twenty_times_under_load(tmp_path):
    root = str(tmp_path / "st")
    Store(root).commit(validate(make_rows(6, ds_tasks=("a", "b", "c", "d"))).table)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(1)]  # a busy CPU, as in CI
    bad = []
    try:
        for i in range(20):
            cmd = ("check", "info")[i % 2]
            r = subprocess.run([sys.executable, "-m", "meta_study.cli", "store", cmd, root],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                bad.append((cmd, r.returncode, r.stderr[-300:]))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert not bad, bad
