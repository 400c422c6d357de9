"""Review s50 of the store (``meta_study/store/``): a commit on S3 never empties an object someone
stored under a directory's key (``up/a/``); a rollback repair killed after its commit point leaves no
quarantine or state file of the rolled-back versions behind unreported; a -0.0 written by an older
version reads as the same content as 0.0 (a re-ingest counts it unchanged, never doubled). Small real
stores in tmp dirs, and a real S3 API on 127.0.0.1 (``tests/s3_server.py``)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import make_rows
from meta_study.store import Store
from meta_study.validation import validate


class _Killed(BaseException):
    """A writer killed at this point (in-process: nothing after it runs, no handler catches it)."""


# ---- 1: S3: a commit writing below a directory's key keeps that key's bytes --------------------------


def test_an_s3_commit_keeps_the_bytes_of_an_object_under_a_directory_key(s3, s3env, request):
    """pyarrow's ``create_dir`` PUT an empty ``<dir>/`` marker for a file's directory and each parent
    before every write and move, without looking: an object stored under such a key (``up/`` or
    ``up/a/``: a sync tool's, a user's upload) had its bytes replaced by nothing at the next commit.
    Object stores need no directories: nothing is PUT there now."""
    prefix = request.node.name
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(validate(make_rows(2)).table)
    c = s3.client()
    precious = {f"{prefix}/up/": b"notes kept under up/", f"{prefix}/up/a/": b"notes kept under up/a/"}
    for key, body in precious.items():
        c.put_object(Bucket="lab", Key=key, Body=body)
    r = Store(uri, notify=None).commit(validate(make_rows(3, seed=1)).table)   # rewrites up/a and up/b
    assert r.version == 2 and r.partitions_written == 2
    for key, body in precious.items():
        assert c.get_object(Bucket="lab", Key=key)["Body"].read() == body, key
    assert len(Store(uri).read()) == 6


# ---- 2: a rollback repair killed after its commit point ----------------------------------------------


def _state(v: int) -> pa.Table:
    return pa.table({"file": ["x.csv"], "mtime": [v]})


def test_a_killed_rollback_repair_leaves_no_quarantine_or_state_file_of_the_rolled_back_version(tmp_path, monkeypatch):
    """A repair rolling back over a damaged version moves that version's quarantine and state files
    (listed by no manifest any more) to ``_damaged/`` after its commit point. Killed in between,
    they stayed in ``_quarantine/`` and ``_state/`` for good: no later command moved them, and
    ``store check`` never reported them (plain readers skip those directories). Now whoever
    finishes the repair's version sets them aside with the rest."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    bad1 = make_rows(1, run_prefix="q").assign(reason="bad", raw="{}")
    s.commit(validate(make_rows(2)).table, quarantine=bad1[["source", "run_id", "reason", "raw"]],
             state={"src": _state(1)})
    v1 = {p.relative_to(root) for d in ("_quarantine", "_state") for p in (root / d).iterdir()}
    bad2 = make_rows(1, run_prefix="q2").assign(reason="worse", raw="{1}")
    s.commit(validate(make_rows(3)).table, quarantine=bad2[["source", "run_id", "reason", "raw"]],
             state={"src": _state(2)})
    v2 = {p.relative_to(root) for d in ("_quarantine", "_state") for p in (root / d).iterdir()} - v1
    assert len(v2) == 2   # one quarantine file, one state file, only version 2 lists them
    for rel in ("_meta/manifests/0000000002.json", "_meta/manifests/0000000002.copy.json"):
        (root / rel).write_bytes(b"{")   # both damaged: the repair rolls back to version 1
    real_publish = Store._publish

    def publish_then_die(self, m, txn):  # noqa: ANN001
        real_publish(self, m, txn)
        raise _Killed

    monkeypatch.setattr(Store, "_publish", publish_then_die)
    with pytest.raises(_Killed):
        Store(str(root), notify=None).check(repair=True)
    monkeypatch.setattr(Store, "_publish", real_publish)
    again = Store(str(root), notify=None)
    assert again.version == 3 and again._pending(again._load())
    again.recover()
    assert not again._pending(again._load())
    for rel in v2:
        assert not (root / rel).exists(), rel
        assert (root / "_damaged/0000000003" / rel).is_file(), sorted((root / "_damaged").rglob("*"))
    assert Store(str(root)).check().ok


def test_an_uninterrupted_rollback_repair_sets_the_same_files_aside(tmp_path):
    """The repair that runs to its end moves them itself (as before), and drops the ingest state."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(validate(make_rows(2)).table, state={"src": _state(1)})
    s.commit(validate(make_rows(3)).table, state={"src": _state(2)})
    v2 = sorted((root / "_state").iterdir())[-1].relative_to(root)
    for rel in ("_meta/manifests/0000000002.json", "_meta/manifests/0000000002.copy.json"):
        (root / rel).write_bytes(b"{")
    r = Store(str(root), notify=None).check(repair=True)
    assert r.rolled_back_to == 1 and r.repaired_version == 3
    assert (root / "_damaged/0000000003" / v2).is_file() and not (root / v2).exists()
    assert Store(str(root)).read_state("src") is None and Store(str(root)).check().ok


# ---- 3: -0.0 of an older version ---------------------------------------------------------------------


def test_a_stored_negative_zero_is_the_same_content_as_zero(tmp_path, monkeypatch):
    """Older versions stored a -0.0 as given (a commit stores 0.0 now). Content compares as numbers:
    re-ingesting the same rows counts them unchanged, never updated, and keeps one row per key."""
    import meta_study.store._store as store_mod

    root = tmp_path / "st"
    t = validate(make_rows(3)).table
    i = t.schema.get_field_index("ds_accuracy")
    real = store_mod.conform

    def old_conform(table, **kw):  # noqa: ANN001
        out = real(table, **kw)
        return out.set_column(i, out.schema.field(i), pa.array([-0.0] * out.num_rows, out.schema.field(i).type))

    monkeypatch.setattr(store_mod, "conform", old_conform)
    Store(str(root), notify=None).commit(t)
    monkeypatch.setattr(store_mod, "conform", real)
    zero = t.set_column(i, t.schema.field(i), pa.array([0.0] * t.num_rows, t.schema.field(i).type))
    r = Store(str(root), notify=None).commit(zero)
    assert r.version is None and r.unchanged == 6 and r.updated == 0
    assert len(Store(str(root)).read()) == 6


# ---- 4: duplicate keys within one commit, counted in Arrow -------------------------------------------


def test_duplicate_keys_within_a_commit_are_found_with_nulls_in_the_key(tmp_path):
    """Keys are compared with nulls equal (``shots`` and ``representation_layer`` may be null): two
    rows alike but for a value outside the key are refused; rows that differ only in a nullable key
    column, null in one and a value in the other, are two keys."""
    df = make_rows(2)
    df["shots"] = None
    df["eval_protocol"] = "linear"
    t = validate(df).table
    assert t.column("shots").null_count == t.num_rows
    s = Store(str(tmp_path / "st"), notify=None)
    with pytest.raises(ValueError, match="duplicate keys"):
        s.commit(pa.concat_tables([t, t.slice(0, 1)]))
    other = validate(make_rows(2).assign(eval_protocol="linear")).table   # shots 5: other keys
    r = s.commit(pa.concat_tables([t, other]))
    assert r.inserted == 8


def test_a_filter_on_zero_matches_a_stored_negative_zero_and_back(tmp_path, monkeypatch):
    """Arrow's ``is_in`` hashes a float's bits: ``read({"ds_accuracy": 0.0})`` missed the rows an
    older version stored as -0.0, and a filter of -0.0 (``-1 * 0.0`` in a caller's code) missed
    every 0.0 a commit stores now. Both match now, as equal numbers."""
    import meta_study.store._store as store_mod

    t = validate(make_rows(3)).table
    i = t.schema.get_field_index("ds_accuracy")
    real = store_mod.conform

    def old_conform(table, **kw):  # noqa: ANN001
        out = real(table, **kw)
        return out.set_column(i, out.schema.field(i), pa.array([-0.0] * out.num_rows, out.schema.field(i).type))

    monkeypatch.setattr(store_mod, "conform", old_conform)
    old = Store(str(tmp_path / "old"), notify=None)
    old.commit(t)
    monkeypatch.setattr(store_mod, "conform", real)
    new = Store(str(tmp_path / "new"), notify=None)
    new.commit(t.set_column(i, t.schema.field(i), pa.array([0.0] * t.num_rows, t.schema.field(i).type)))
    for s in (old, new):
        for v in (0.0, -0.0, [0.0, 0.5], [-0.0, None]):
            assert s.read({"ds_accuracy": v}).num_rows == 6, (s.uri, v)
    assert old.read({"ds_accuracy": 0.5}).num_rows == 0
