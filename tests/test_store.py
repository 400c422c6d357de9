from __future__ import annotations

import datetime as dt
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from meta_study.errors import UserError
from meta_study.schema import KEY, SCHEMA
from meta_study.validation import validate
from meta_study.store import Store, open_store
from conftest import make_rows


def _table(n=5, **kw) -> pa.Table:
    v = validate(make_rows(n, **kw))
    assert v.n_rejected == 0
    return v.table


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["run_id", "ds_task", "shots"]).reset_index(drop=True)


def test_round_trip_keeps_every_column_and_type(tmp_path):
    s = Store(str(tmp_path / "st"))
    t = _table(4, shots=(1, 5))
    r = s.commit(t)
    assert r.version == 1 and r.inserted == 16 and r.partitions_written == 2
    back = s.read()
    assert back.schema == SCHEMA
    a = _sorted(back.to_pandas().drop(columns=["ingested_at", "schema_version"]))
    b = _sorted(t.to_pandas().drop(columns=["ingested_at", "schema_version"]))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert back.column("schema_version").to_pylist() == [1] * 16
    assert back.column("ingested_at").null_count == 0


def test_plain_pandas_and_pyarrow_read_the_store(tmp_path):
    root = str(tmp_path / "st")
    s = Store(root)
    s.commit(_table(3, ds_tasks=("cifar 100", "a/b", "..")))
    s.commit(_table(3, ds_tasks=("cifar 100",), run_prefix="x"))
    df = pd.read_parquet(root)
    assert len(df) == 12
    assert set(df["ds_task"].astype(str)) == {"cifar 100", "a/b", ".."}
    ds = pads.dataset(root, format="parquet", partitioning="hive")
    assert ds.count_rows() == 12
    # every partition directory is one level below its parent: no path escapes the store
    for dirpath, _, files in os.walk(root):
        for f in files:
            assert os.path.realpath(os.path.join(dirpath, f)).startswith(os.path.realpath(root))
    assert not (tmp_path / "b").exists()


def test_upsert_is_idempotent_and_replaces_changed_rows(tmp_path):
    s = Store(str(tmp_path / "st"))
    t = _table(5)
    assert s.commit(t).inserted == 10
    again = s.commit(t)
    assert again.version is None and again.unchanged == 10 and again.inserted == 0
    assert s.version == 1
    df = t.to_pandas()
    df.loc[df["run_id"] == "r2", "ds_accuracy"] = 0.123
    r = s.commit(validate(df.drop(columns=["ingested_at", "schema_version"])).table)
    assert (r.inserted, r.updated, r.unchanged) == (0, 2, 8)
    back = s.to_pandas()
    assert len(back) == 10
    assert set(back.loc[back["run_id"] == "r2", "ds_accuracy"]) == {0.123}
    assert back.groupby(list(KEY), dropna=False).size().max() == 1


def test_null_key_parts_compare_equal(tmp_path):
    s = Store(str(tmp_path / "st"))
    df = make_rows(2, ds_tasks=("a",))
    df["eval_protocol"], df["shots"] = "shift", None
    s.commit(validate(df).table)
    assert s.commit(validate(df).table).version is None
    assert len(s.to_pandas()) == 2


def test_duplicate_keys_in_one_commit_are_refused(tmp_path):
    t = _table(2)
    with pytest.raises(ValueError, match="duplicate keys"):
        Store(str(tmp_path / "st")).commit(pa.concat_tables([t, t]))


def test_filters_prune_partitions_and_rows(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.commit(_table(4, ds_tasks=("a", "b", "c"), shots=(1, 5)))
    assert s.read({"ds_task": "a"}).num_rows == 8
    assert s.read({"ds_task": ["a", "b"], "shots": 5}).num_rows == 8
    assert s.read({"run_id": "r1"}, columns=["run_id", "ds_accuracy"]).column_names == ["run_id", "ds_accuracy"]
    with pytest.raises(UserError, match="unknown column"):
        s.read({"nope": 1})


def test_delete_runs(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.commit(_table(3))
    r = s.commit(delete_runs=[("src", "r1")])
    assert r.deleted == 2
    assert sorted(set(s.to_pandas()["run_id"])) == ["r0", "r2"]


def test_quarantine_is_idempotent(tmp_path):
    s = Store(str(tmp_path / "st"))
    q = pd.DataFrame({"source": ["s", "s"], "run_id": ["a", None], "reason": ["x: NaN", "y: missing"],
                      "raw": ['{"x": "NaN"}', "{}"]})
    assert s.commit(quarantine=q).quarantined == 2
    assert s.commit(quarantine=q).version is None
    qt = s.quarantine().to_pandas()
    assert len(qt) == 2 and set(qt["reason"]) == {"x: NaN", "y: missing"}
    assert qt["quarantined_at"].notna().all()


def test_state_tables_replace_and_survive_data_commits(tmp_path):
    s = Store(str(tmp_path / "st"))
    st = pa.table({"run_id": ["a"], "updated": [1]})
    s.commit(state={"mlflow:http://x": st})
    assert s.read_state("mlflow:http://x").equals(st)
    assert s.commit(state={"mlflow:http://x": st}).version is None
    s.commit(_table(1))
    assert s.read_state("mlflow:http://x").equals(st)
    st2 = pa.table({"run_id": ["a", "b"], "updated": [1, 2]})
    s.commit(state={"mlflow:http://x": st2})
    assert s.read_state("mlflow:http://x").num_rows == 2
    assert s.read_state("other") is None
    assert s.state_names("mlflow:*") == ["mlflow:http://x"]


def test_superseded_files_are_removed(tmp_path):
    root = tmp_path / "st"
    s = Store(str(root))
    s.commit(_table(3))
    for i in range(3):
        df = make_rows(3)
        df["ds_accuracy"] = 0.1 * (i + 1)
        s.commit(validate(df).table)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert len(files) == 2, files
    assert not list((root / "_staging").iterdir()) if (root / "_staging").exists() else True
    assert s.version == 4 and [h["version"] for h in s.history()] == [1, 2, 3, 4]


def test_file_uri_and_summary(tmp_path):
    s = Store(f"file://{tmp_path}/st")
    s.commit(_table(3, shots=(1, 5)), quarantine=pd.DataFrame({"source": ["src"], "reason": ["bad"], "raw": ["{}"]}))
    summ = s.summary()
    assert summ.rows == 12 and summ.quarantined == 1 and summ.version == 1
    assert set(summ.groups["rows"]) == {3}
    assert summ.sources.iloc[0]["runs"] == 3
    assert not summ.pending_finalize


def test_not_a_store_errors(tmp_path):
    with pytest.raises(UserError, match="no such store"):
        open_store(str(tmp_path / "missing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="not a meta-study store"):
        open_store(str(tmp_path / "junk"))
    with pytest.raises(UserError, match="not empty and is not a meta-study store"):
        Store(str(tmp_path / "junk")).commit(_table(1))
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Store(str(tmp_path / "f")).commit(_table(1))


def test_newer_format_is_refused(tmp_path):
    """A newer meta-study writes the manifest and its copy; it may checksum them otherwise (the
    checksum below is stale), yet both claiming the newer format are its, not damage. A claim in
    one of the two only is a flipped bit: test_store_review2 reads such a manifest from its copy."""
    s = Store(str(tmp_path / "st"))
    s.commit(_table(1))
    for name in ("0000000001.json", "0000000001.copy.json"):
        m = tmp_path / "st" / "_meta" / "manifests" / name
        d = json.loads(m.read_text())
        d["format_version"] = 99
        m.write_text(json.dumps(d))
    with pytest.raises(UserError, match="newer than this meta-study"):
        s.read()


def test_commit_time_is_recorded(tmp_path):
    s = Store(str(tmp_path / "st"))
    when = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    s.commit(_table(1), now=when)
    assert set(s.read().column("ingested_at").to_pylist()) == {when}


def test_delete_runs_is_exact_whatever_the_ids_hold(tmp_path):
    # source 's\x1fx' with run 'y' and source 's' with run 'x\x1fy' are different runs
    s = Store(str(tmp_path / "st"))
    a = make_rows(1, ds_tasks=("a",))
    b = a.copy()
    a["source"], a["run_id"] = "s\x1fx", "y"
    b["source"], b["run_id"] = "s", "x\x1fy"
    s.commit(validate(pd.concat([a, b])).table)
    assert len(s.to_pandas()) == 2
    assert s.commit(delete_runs=[("s", "x\x1fy")]).deleted == 1
    assert s.to_pandas()["source"].tolist() == ["s\x1fx"]


def test_unlock_of_a_local_store_names_a_live_holder(tmp_path):
    """A local store's flock is freed by the kernel when its holder dies: 'store unlock' has
    nothing to break, and names a live holder in one line."""
    import signal

    from conftest import run_cli
    from test_store_crash import _wait_for, _writer

    root = str(tmp_path / "st")
    Store(root).commit(_table(1))
    r = run_cli("store", "unlock", root)
    assert r.returncode == 0 and r.stdout.strip().endswith("not locked"), r.stderr
    p = _writer(root, "w", 1, 2, env={"META_STUDY_FAILPOINT": "before_publish"})
    try:
        _wait_for(p, "failpoint before_publish")
        r = run_cli("store", "unlock", root)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and f"held by pid {p.pid} on " in lines[0], r.stderr
        assert Store(root).lock_holder().pid == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert Store(root).lock_holder() is None                 # released by the kernel


def test_a_snapshot_names_the_version_its_rows_are_from_and_no_other_store_shares_it(tmp_path):
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    assert a.snapshot_id == "0:"
    rows = validate(make_rows(10, ds_tasks=("x",))).table
    a.commit(rows)
    b.commit(rows)
    table, sid = a.snapshot(columns=["run_id"])
    assert table.num_rows == 10 and sid == a.snapshot_id and sid.startswith("1:")
    assert b.snapshot_id.startswith("1:") and b.snapshot_id != sid      # same version, same rows: another store
    a.commit(validate(make_rows(5, ds_tasks=("y",), run_prefix="more")).table)
    table2, sid2 = a.snapshot({"ds_task": "y"})
    assert sid2.startswith("2:") and table2.num_rows == 5 and a.read({"ds_task": "y"}).equals(table2)


def test_a_writer_that_stalled_past_pruning_cannot_publish_a_freed_version_name(tmp_path):
    """A writer paused past its S3 lease while another made 21 commits found its version's
    manifest name free again (pruned) and published it; finalizing it deleted a file the latest
    version still used, and every read failed. Replayed here in that order on a local store."""
    import datetime as _dt

    from meta_study.errors import StoreConflictError
    from meta_study.store._merge import _Plan
    from meta_study.validation import conform

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(2, ds_tasks=("x", "y"))).table)              # v1: partitions x and y
    now = _dt.datetime.now(_dt.timezone.utc)
    m = s._begin(now)
    txn = f"{m.version + 1:010d}-stalled"
    plan = _Plan(s._v, m, txn, now)                 # writer A replaces partition x's file, then stalls
    counts = plan.merge_data(conform(validate(make_rows(1, ds_tasks=("x",), seed=7)).table), ())
    assert plan.superseded
    for i in range(21):                             # writer B: 21 commits to partition y; v2 is pruned
        s.commit(validate(make_rows(1, ds_tasks=("y",), seed=100 + i, run_prefix=f"b{i}")).table)
    assert 2 not in s._manifest_versions()
    before = s.read()
    with pytest.raises(StoreConflictError, match="stalled past its lease"):
        s._commit_plan(m, txn, plan, counts, 0, "write", None, _dt.datetime.now(_dt.timezone.utc))
    assert s.version == 22 and 2 not in s._manifest_versions()
    assert s.read().equals(before) and s.check().ok       # every file of the latest version is there


def test_a_successor_of_this_very_commit_is_not_taken_for_a_pruned_name(tmp_path):
    """The guard's other side: a newer manifest that records this commit's own log entry (a
    writer that built on it at once) leaves the commit published."""
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(2, ds_tasks=("x",))).table)
    m = s._load()
    s._refuse_a_pruned_name(m)                      # nothing newer: nothing to do
    s.commit(validate(make_rows(1, ds_tasks=("x",), seed=3, run_prefix="n")).table)
    s._refuse_a_pruned_name(m)                      # v2 built on v1: v1's entry is in v2's log
    assert s._manifest_versions() == [1, 2]


def test_a_commit_whose_fate_cannot_be_told_keeps_its_staged_files(tmp_path, monkeypatch):
    """The conditional write landed, its reply was lost and the listing that would tell failed:
    the roll-back removed the staged files the published manifest points at, losing the rows."""
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(3, ds_tasks=("x",))).table)
    publish = Store._publish

    def landed_then_lost(self, m, txn):
        publish(self, m, txn)
        raise OSError("connection reset (the reply of the write that landed)")

    def unreachable(self, version):
        raise OSError("connection reset")

    with monkeypatch.context() as mp:
        mp.setattr(Store, "_publish", landed_then_lost)
        mp.setattr(Store, "_published_by", unreachable)
        with pytest.raises(OSError):
            s.commit(validate(make_rows(2, ds_tasks=("x",), seed=4, run_prefix="new")).table)
    s.recover()                                     # the next writer finishes the published version
    assert s.version == 2 and s.check().ok
    assert s.read({"ds_task": "x"}).num_rows == 5
