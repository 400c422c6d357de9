"""Review s48 of the store's internals (``meta_study/store/``): damage that ``store check --repair``
could not repair, on small real stores in tmp dirs."""

from __future__ import annotations

import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study.store import Store
from meta_study.validation import validate


def _two_versions(root) -> Store:
    s = Store(str(root))
    s.commit(validate(make_rows(4)).table)
    s.commit(validate(make_rows(4, seed=1)).table)
    return s


# ---- 1: a latest manifest overwritten with a JSON object that is not ours -----------------------


@pytest.mark.parametrize("body", ["{}", '{"version": 2}', '{"format": "other", "version": 2}'])
def test_a_latest_manifest_overwritten_with_other_json_is_read_from_its_copy_and_repaired(tmp_path, body):
    """A manifest with no checksum and no ``format`` of ours (a sync tool or an editor left "{}" in
    its place) was "not a meta-study manifest", exit 2, from every command, ``store check --repair``
    too, with its intact copy beside it: a store nothing could repair. It is damage: read from the
    copy, reported, and written back by ``--repair``."""
    root = tmp_path / "st"
    s = _two_versions(root)
    want = s.to_pandas().sort_values(["run_id", "ds_task"]).reset_index(drop=True)
    (root / "_meta/manifests/0000000002.json").write_text(body)
    got = Store(str(root)).to_pandas().sort_values(["run_id", "ds_task"]).reset_index(drop=True)
    assert got.equals(want)
    r = run_cli("store", "check", str(root))
    assert r.returncode == 1 and "_meta/manifests/0000000002.json (manifest)" in r.stdout + r.stderr, r.stderr
    r = run_cli("store", "check", "--repair", str(root))
    assert r.returncode == 0, r.stderr
    assert run_cli("store", "check", str(root)).returncode == 0
    assert (root / "_damaged/0000000002/_meta/manifests/0000000002.json").read_text() == body
    assert Store(str(root)).version == 2


def test_a_lone_newest_manifest_of_other_json_is_rolled_back_by_repair(tmp_path):
    """Without a copy, such a manifest is rolled back by ``--repair`` to the newest intact version,
    as a truncated one is; every other command says so in one line (it named no way out)."""
    root = tmp_path / "st"
    _two_versions(root)
    (root / "_meta/manifests/0000000003.json").write_text("{}")
    one_error_line(run_cli("store", "info", str(root)), "0000000003.json: damaged manifest", "rolls the store back to version 2")
    r = run_cli("store", "check", "--repair", str(root))
    assert r.returncode == 0, r.stderr
    assert run_cli("store", "check", str(root)).returncode == 0
    assert len(Store(str(root)).to_pandas()) == 8


# ---- 2: names given as their caller holds them (not as a commit stores them) --------------------


def _nfd_run(tmp_path):
    """A store holding one run, on tasks a and b, committed from the caller's own table whose run
    id is decomposed ("café" as a macOS file name gives it); the commit stores it in NFC."""
    import unicodedata

    import pyarrow as pa

    rid = unicodedata.normalize("NFD", "café-1")
    t = validate(make_rows(1, ds_tasks=("a", "b"))).table
    t = t.set_column(t.schema.get_field_index("run_id"), "run_id", pa.array([rid] * t.num_rows))
    s = Store(str(tmp_path / "st"))
    s.commit(t)
    return s, t, rid


def test_delete_runs_names_a_run_as_its_caller_holds_it(tmp_path):
    """``commit(rows, delete_runs=...)`` of a run read again with fewer tasks: the run id named as
    the caller's rows hold it matched no stored key (stored in NFC, trimmed), so the rows of the
    task it no longer has stayed in the store, stale, and ``deleted`` said 0."""
    import pyarrow.compute as pc

    s, t, rid = _nfd_run(tmp_path)
    r = s.commit(t.filter(pc.equal(t.column("ds_task"), "a")), delete_runs=[("src", rid)])
    assert r.deleted == 1 and r.version == 2
    assert s.to_pandas().ds_task.tolist() == ["a"]
    r = s.commit(None, delete_runs=[(" src ", " " + rid)])
    assert r.deleted == 1 and s.to_pandas().empty


def test_read_filters_match_names_as_the_store_holds_them(tmp_path):
    """``Store.read({"run_id": rid})`` with the id as the caller committed it, or a task with a
    space at an end, read nothing, silently: the store holds the names as a commit conforms them."""
    s, _, rid = _nfd_run(tmp_path)
    assert s.read({"run_id": rid}).num_rows == 2
    assert s.read({"run_id": [rid], "ds_task": "a "}).num_rows == 1
    assert s.read({"ds_task": ["b\u200b"], "source": "src"}).num_rows == 1
