"""docs/store.md, checked against the store: what ``store check --repair`` says it moved.

A repair of a file that is *missing* (deleted, a partial restore) or of a manifest that is gone
while its copy survives moves nothing, yet the command said "1 file(s) moved to
_damaged/<version>/" (and "the damaged one is in _damaged/<version>/"): there is no such
directory, and a user looking for the file there finds nothing.
"""

from __future__ import annotations

from pathlib import Path

from conftest import committed_store, run_cli
from meta_study.store import partition_dir


def _moved_claims(out: str) -> list[str]:
    return [line for line in out.splitlines() if "_damaged/" in line]


def test_repair_of_a_missing_data_file_claims_no_move(tmp_path: Path) -> None:
    store = tmp_path / "st"
    committed_store(store, runs=6, tasks=("a", "b"))
    (f,) = (store / partition_dir("up", "a")).glob("part-*.parquet")
    f.unlink()
    r = run_cli("store", "check", "--repair", str(store))
    assert r.returncode == 0, r.stderr
    assert not (store / "_damaged").exists()          # nothing could be moved: the file is gone
    # what the command says must not send the user to a directory that does not exist
    assert not _moved_claims(r.stdout), r.stdout


def test_repair_of_a_gone_manifest_claims_no_move(tmp_path: Path) -> None:
    store = tmp_path / "st"
    committed_store(store, runs=6, tasks=("a", "b"))
    (store / "_meta" / "manifests" / "0000000001.json").unlink()   # its copy survives
    r = run_cli("store", "check", "--repair", str(store))
    assert r.returncode == 0, r.stderr
    assert (store / "_meta" / "manifests" / "0000000001.json").exists()   # written back from the copy
    assert not (store / "_damaged").exists()
    assert not _moved_claims(r.stdout), r.stdout
