"""A writer killed with SIGKILL at any moment leaves a readable, consistent store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from meta_study.schema import KEY
from meta_study.store import Store
from conftest import run_cli
from store_writer import batch_rows

HERE = Path(__file__).parent


def _writer(store: str, name: str, n: int, runs: int, *extra: str, env: dict | None = None) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    return subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), store, name, str(n), str(runs), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"writer exited ({proc.returncode}) before {marker!r}")
    raise AssertionError(f"writer never reached {marker!r}")


def _keys(df: pd.DataFrame) -> set:
    return set(map(tuple, df[list(KEY)].astype(object).where(df[list(KEY)].notna(), None).itertuples(index=False)))


def _snapshot(s: Store) -> pd.DataFrame:
    return s.to_pandas().sort_values(["run_id", "ds_task"]).reset_index(drop=True)


def _assert_consistent(s: Store, root: str) -> pd.DataFrame:
    # a writer killed before its first commit began leaves no store at all (which Store.read refuses)
    df = s.to_pandas() if os.path.exists(root) else pd.DataFrame(columns=list(KEY))
    assert not df.duplicated(list(KEY)).any(), "duplicate keys after a crash"
    return df


def _plain_agrees(root: str, s: Store) -> bool:
    """True if ``pandas.read_parquet(root)`` holds exactly Store.read's rows, values included."""
    cols = ["source", "run_id", "ds_task", "ds_accuracy"]
    plain = pd.read_parquet(root)
    plain["ds_task"] = plain["ds_task"].astype(str)
    a = plain[cols].sort_values(cols).reset_index(drop=True)
    b = s.to_pandas()[cols].sort_values(cols).reset_index(drop=True)
    return len(a) == len(b) and a.equals(b)


@pytest.mark.parametrize("point", ["after_stage", "before_publish", "after_publish", "mid_finalize"])
def test_sigkill_at_each_commit_phase(tmp_path, point):
    root = str(tmp_path / "st")
    s = Store(root)
    s.commit(batch_rows("w", 0, 10))              # version 1: the previous state
    before = _snapshot(s)
    # the killed commit rewrites batch 0 (update) and adds batch 1: it touches old and new files
    p = _writer(root, "w", 2, 10, "--update", env={"META_STUDY_FAILPOINT": point})
    # the writer's first commit (batch 0 again) is a no-op, so the failpoint fires in batch 1's commit
    _wait_for(p, f"failpoint {point}")
    p.send_signal(signal.SIGKILL)
    p.wait()

    after = _assert_consistent(s, root)
    committed = point in ("after_publish", "mid_finalize")
    if committed:
        # past the commit point: the new version is complete for Store.read, even before finalize,
        # while a plain reader sees the old files (after_publish) or old beside new (mid_finalize)
        assert s.version == 2 and len(after) == 40
        assert not _plain_agrees(root, s)
        # the first command that opens the store finishes the commit, a read-only one included
        r = run_cli("store", "info", root)
        assert r.returncode == 0 and "interrupted" not in r.stdout, r.stdout + r.stderr
    else:
        assert s.version == 1
        pd.testing.assert_frame_equal(_snapshot(s), before)
    assert _plain_agrees(root, s), "a plain Parquet reader sees another table than Store.read"

    # the next writer rolls forward / cleans up, and the plain reader agrees with the store
    s.commit(batch_rows("z", 0, 1))
    final = _assert_consistent(s, root)
    assert not s.summary().pending_finalize
    plain = pd.read_parquet(root)
    assert len(plain) == len(final) == (40 if committed else 20) + 2
    assert not any((Path(root) / "_staging").iterdir())


def test_random_sigkills_never_corrupt(tmp_path):
    root = str(tmp_path / "st")
    s = Store(root)
    # one version before any writer: under load (8 on 2 cores) every writer could be killed
    # before its first commit, and the recover() below found "no such store"
    s.commit(batch_rows("seed", 0, 1), operation="test")
    rng = random.Random(7)
    valid_sizes = {0}
    for b in range(1, 31):   # up to all 30 batches: a fast writer finishes before the kill
        valid_sizes.add(40 * b)  # batches of 20 runs x 2 tasks
    for trial in range(8):
        p = _writer(root, f"w{trial}", 30, 20, "--update")
        time.sleep(rng.uniform(0.5, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        df = _assert_consistent(s, root)
        mine = df[df["source"] == f"w{trial}"]
        assert len(mine) in valid_sizes, len(mine)
        # an updated batch is rewritten whole or not at all
        for _, g in mine.groupby(mine["run_id"].str.split("-").str[1]):
            assert len(g) == 40
    s.recover()
    assert len(pd.read_parquet(root)) == len(s.to_pandas())


def test_the_consistency_check_holds_for_an_empty_store(tmp_path):
    # a writer killed before its first commit leaves an empty store, which the random-kill test
    # allows: the duplicate check must pass on it (a groupby-size check gave NaN there, and failed)
    s = Store(str(tmp_path / "st"))
    assert len(_assert_consistent(s, str(tmp_path / "st"))) == 0


def test_staged_names_are_durable_before_the_manifest_names_them(tmp_path, monkeypatch):
    """Each staged file is fsynced, but a new name lives in its directory: before the manifest
    (whose directory is fsynced) is linked into place, every directory of the transaction's
    staging tree, and the one it was created in, must have been fsynced too, or a power loss
    could leave a committed version whose files are gone."""
    import meta_study.store._files as files

    synced: list[str] = []
    linked: list[tuple[str, list[str]]] = []
    real_sync, real_link = files._fsync_dir, os.link
    monkeypatch.setattr(files, "_fsync_dir", lambda p: (synced.append(os.path.realpath(p)), real_sync(p))[1])

    def link(src, dst, *a, **k):
        linked.append((str(dst), list(synced)))
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    root = tmp_path / "st"
    s = Store(str(root))
    s.commit(batch_rows("w", 0, 4), operation="test")
    staged_dirs: set[str] = set()
    real_write = files._Files.write_bytes

    def write(self, rel, data):
        if rel.startswith("_staging/"):
            d = os.path.dirname(os.path.realpath(self.p(rel)))
            while d != os.path.realpath(self.p("_staging")):
                staged_dirs.add(d)
                d = os.path.dirname(d)
            staged_dirs.add(d)
        return real_write(self, rel, data)

    monkeypatch.setattr(files._Files, "write_bytes", write)
    linked.clear()
    r = s.commit(batch_rows("w", 1, 4), operation="test")
    assert r.version == 2 and staged_dirs
    manifest_links = [(d, before) for d, before in linked if "/_meta/manifests/" in d]
    assert manifest_links, linked
    before = set(manifest_links[0][1])
    assert staged_dirs <= before, sorted(staged_dirs - before)
    assert len(_assert_consistent(Store(str(root)), str(root))) == 2 * len(batch_rows("w", 0, 4))
