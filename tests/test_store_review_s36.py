"""Defects of the store's commit path found by a review, each reproduced here on a real store:
a state table whose column changed type between commits, NaN values that made every re-commit
of the same rows a new version, rows with a null or empty partition name lost, ``store info``
mixing two versions, reads of the partition columns alone that gave no rows, filters given as
arrays, a commit merged again that forgot the runs whose quarantine it settles, and another
version's manifest under the latest one's name."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import make_rows
from meta_study.store import Store
from meta_study.validation import validate


def _table(n: int = 2, **kw) -> pa.Table:
    v = validate(make_rows(n, **kw))
    assert v.n_rejected == 0
    return v.table


def _with(t: pa.Table, column: str, values: list) -> pa.Table:
    i = t.schema.get_field_index(column)
    return t.set_column(i, t.schema.field(column), pa.array(values, t.schema.field(column).type))


@pytest.mark.parametrize("new", [pa.array(["p", "q"]), pa.array([1.5, 2.0])], ids=["string", "float"])
def test_a_state_column_that_changed_type_replaces_the_state(tmp_path, new):
    # the comparison with the stored state cast the new table to the old types: a column of
    # int64 that became strings (or floats with a fraction) failed every commit with ArrowInvalid
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(state={"src": pa.table({"a": pa.array([1, 2], pa.int64())})})
    r = s.commit(state={"src": pa.table({"a": new})})
    assert r.version == 2
    assert s.read_state("src").column("a").to_pylist() == new.to_pylist()
    assert s.commit(state={"src": pa.table({"a": new})}).version is None   # the same again: no version


def test_rows_holding_nan_committed_again_are_unchanged(tmp_path):
    # NaN != NaN: every commit of the same rows counted them updated and wrote a new version
    s = Store(str(tmp_path / "st"), notify=None)
    t = _with(_table(2, ds_tasks=("a",)), "lr", [float("nan"), 0.1])
    assert s.commit(t).inserted == 2
    again = s.commit(t)
    assert (again.version, again.updated, again.unchanged) == (None, 0, 2)
    assert s.version == 1
    changed = s.commit(_with(t, "lr", [0.5, 0.1]))    # NaN -> a number is a change
    assert (changed.updated, changed.unchanged) == (1, 1)
    back = s.commit(t)                                 # and a number -> NaN too
    assert (back.updated, back.unchanged) == (1, 1)


@pytest.mark.parametrize("column", ["us_task", "ds_task"])
@pytest.mark.parametrize("how", ["commit", "commit_stream"])
@pytest.mark.parametrize("value", [None, ""], ids=["null", "empty"])
def test_rows_without_a_partition_name_are_refused_not_lost(tmp_path, column, how, value):
    # a null: commit() stored 1 of 2 rows and said "1 inserted" (pandas' groupby drops null keys),
    # commit_stream() failed with "TypeError: list indices must be integers"; an empty name:
    # version 1 was published naming "/a/part-...", its file was lost, and every command after
    # it failed with "damaged store file: missing"
    s = Store(str(tmp_path / "st"), notify=None)
    t = _table(2, ds_tasks=("a",))
    bad = _with(t, column, [value, t.column(column)[1].as_py()])
    with pytest.raises(ValueError, match=f"{column}: 1 {'null' if value is None else 'empty'} value"):
        s.commit(bad) if how == "commit" else s.commit_stream([(bad, None)])
    assert not s.exists()
    assert s.commit(t).inserted == 2 and s.read().num_rows == 2   # the store is fine


def test_store_info_counts_rows_of_the_version_it_names(tmp_path):
    # summary() loaded the manifest, then read the rows through another load: a commit between
    # the two gave "version 1" with the rows (and last ingest) of version 2
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(_table(2, ds_tasks=("a",)))
    read_data = s._v.read_data
    fired = []

    def another_writer_commits_first(entry, schema):   # a real commit by another Store, mid-read
        if not fired:
            fired.append(Store(root, notify=None).commit(_table(5, ds_tasks=("a",), run_prefix="w")))
        return read_data(entry, schema)

    s._v.read_data = another_writer_commits_first
    info = s.summary()
    assert fired and fired[0].version == 2
    assert (info.version, info.rows) in {(1, 2), (2, 7)}
    assert info.last_commit is not None and info.last_commit["version"] == info.version


@pytest.mark.parametrize("columns", [["us_task", "ds_task"], ["ds_task"]])
def test_reading_only_partition_columns_gives_every_row(tmp_path, columns):
    # no file column to read: each file was read for no column, gave 0 rows, and read() an empty table
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(_table(3, ds_tasks=("a", "b")))
    assert s.read(columns=columns).num_rows == 6
    assert s.read({"ds_task": "a"}, columns=columns).column("ds_task").to_pylist() == ["a"] * 3
    assert s.read({"ds_task": "a", "run_id": "r1"}, columns=columns).num_rows == 1


def test_filters_take_any_collection_of_values(tmp_path):
    # only list/tuple/set were values: an array of run ids failed in Arrow ("Expected bytes, got a
    # 'numpy.ndarray'"), and an array of tasks was matched by NumPy's truth rules (one task: all
    # its rows; two: "truth value of an array is ambiguous")
    import numpy as np
    import pandas as pd

    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(_table(3, ds_tasks=("a", "b", "c")))
    runs = {"r0", "r2"}
    for given in (np.array(sorted(runs)), np.array(sorted(runs), object), pd.Series(sorted(runs)), frozenset(runs),
                  {r: 1 for r in runs}.keys(), (r for r in runs)):
        assert set(s.read({"run_id": given}).column("run_id").to_pylist()) == runs
    assert s.read({"ds_task": np.array(["a", "b"])}).num_rows == 6
    assert s.read({"ds_task": (t for t in "ab")}).num_rows == 6   # read once, not once per partition
    assert s.read({"ds_task": pd.Series(["c"]), "shots": np.array([5], np.int64)}).num_rows == 3
    assert s.read({"ds_task": np.array(["zzz"])}).num_rows == 0
    assert s.read({"run_id": "r1"}).num_rows == 3     # one value, as before


def test_a_commit_merged_again_after_losing_its_version_still_settles_the_quarantine(tmp_path, monkeypatch):
    # commit() read ``settle_quarantine`` (any iterable) anew at each attempt: a generator was
    # empty at the second, and the runs read again kept their quarantined rows for good
    from pathlib import Path

    from meta_study.store import _store as store_module

    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(quarantine=pa.table({"source": ["src"], "run_id": ["r0"], "reason": ["bad"], "raw": ["{}"]}))
    assert s.quarantine().num_rows == 1
    real, seen = store_module._failpoint, []

    def another_writer_publishes_first(name: str) -> None:
        if name == "before_publish" and not seen:
            seen.append(name)
            Path(root, "_meta/LOCK").unlink()   # a second writer takes a new lock and this version
            seen.append(Store(root, notify=None).commit(_table(1, ds_tasks=("z",), run_prefix="other")))
        real(name)

    monkeypatch.setattr(store_module, "_failpoint", another_writer_publishes_first)
    r = s.commit(_table(1, ds_tasks=("a",)), settle_quarantine=(run for run in [("src", "r0")]))
    assert seen[1].version == 2 and r.version == 3 and r.inserted == 1
    assert s.quarantine().num_rows == 0


def test_a_manifest_holding_another_version_is_damage_read_from_its_copy(tmp_path):
    # an older manifest's bytes under the latest one's name (a backup or sync tool restoring a
    # stale file, a hand-made "rollback") verify: the store took version 1 for the latest, read
    # rows whose files version 2 had deleted ("damaged store file: missing"), and 'store check'
    # called it sound
    from pathlib import Path

    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(_table(2, ds_tasks=("a",)))
    df = make_rows(3, ds_tasks=("a",))
    df["ds_accuracy"] = 0.25
    s.commit(validate(df).table)
    man = root / "_meta" / "manifests"
    (man / "0000000002.json").write_bytes((man / "0000000001.json").read_bytes())
    assert s.version == 2
    assert s.read().column("ds_accuracy").to_pylist() == [0.25] * 3
    found = s.check()
    assert not found.ok and "holds version 1" in found.damage[0].problem
    fixed = s.check(repair=True)
    assert fixed.manifest_restored and s.check().ok
    assert Path(man / "0000000002.json").read_bytes() == (man / "0000000002.copy.json").read_bytes()
    assert s.commit(_table(4, ds_tasks=("a",), run_prefix="n")).version == 3
