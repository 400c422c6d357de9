"""Review (session 39): readers of a store on a mount without hard links."""

from __future__ import annotations

import os
import threading

import pytest


def _two_versions(tmp_path):
    from conftest import committed_store, make_rows
    from meta_study.validation import validate

    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    s.commit(validate(make_rows(30, ds_tasks=("a",), seed=1)).table)
    mdir = tmp_path / "st" / "_meta" / "manifests"
    newest = max(p for p in mdir.iterdir() if p.name[:-5].isdigit() and p.suffix == ".json")
    return s, mdir, newest


def test_a_reader_during_a_claim_waits_for_the_rename(tmp_path):
    """A commit without hard links claims the manifest's name with an empty file, then renames the
    whole manifest over it: a reader in between said "damaged manifest: does not parse (0 bytes)"
    and told the user to roll the store back. It reads again and gets the new version."""
    from meta_study.store import Store

    s, mdir, newest = _two_versions(tmp_path)
    want = len(Store(s.uri).read())
    data = newest.read_bytes()
    (mdir / newest.name.replace(".json", ".copy.json")).unlink()
    newest.write_bytes(b"")                       # the claim
    tmp = mdir / ".tmp-test"
    tmp.write_bytes(data)
    t = threading.Timer(0.1, os.replace, (tmp, newest))    # the rename, 0.1 s later
    t.start()
    try:
        assert len(Store(s.uri).read()) == want
    finally:
        t.join()


def test_a_claim_left_by_a_crash_is_damage_with_its_repair(tmp_path):
    """A crash between the claim and the rename leaves the empty file: damage, naming --repair."""
    from meta_study.errors import StoreDamagedError
    from meta_study.store import Store

    s, mdir, newest = _two_versions(tmp_path)
    (mdir / newest.name.replace(".json", ".copy.json")).unlink()
    newest.write_bytes(b"")
    with pytest.raises(StoreDamagedError, match="--repair"):
        Store(s.uri).read()
