"""Two writers at once end with the union of their rows, and readers never see a torn state."""

from __future__ import annotations

import threading

import pandas as pd

from meta_study.schema import KEY
from meta_study.store import Store
from test_store_crash import _writer


def test_two_concurrent_writers_union(tmp_path):
    root = str(tmp_path / "st")
    n, runs = 12, 15
    procs = [_writer(root, name, n, runs, "--update") for name in ("alice", "bob")]
    s = Store(root)
    seen_versions = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_while_writing():
        try:
            while not stop.is_set():
                if s.exists():
                    df = s.to_pandas()
                    # every snapshot is whole batches of whole writers: no torn commits, no duplicates
                    assert df.groupby(list(KEY), dropna=False).size().max() == 1
                    assert len(df) % (2 * runs) == 0
                    seen_versions.append(s.version)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread below
            errors.append(e)

    t = threading.Thread(target=read_while_writing)
    t.start()
    outs = [p.communicate(timeout=300) for p in procs]
    stop.set()
    t.join()
    assert not errors, errors[0]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.count("committed") == n
    df = s.to_pandas()
    assert len(df) == 2 * n * runs * 2
    assert set(df["source"]) == {"alice", "bob"}
    assert df.groupby(list(KEY), dropna=False).size().max() == 1
    # each writer's first commit adds its batch, later ones add a batch and update the previous one
    assert s.version == 2 * n
    versions = [h["version"] for h in s.history()]
    assert versions == list(range(1, 2 * n + 1))
    assert len(pd.read_parquet(root)) == len(df)
    assert len(seen_versions) > 0
