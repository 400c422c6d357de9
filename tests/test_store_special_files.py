"""Something other than a regular file where the store expects one: a store path that is a file,
a FIFO or a device; a manifest or a data file replaced by a directory or a FIFO; every manifest
damaged. Each is one line naming the path (exit 2), nothing blocks, nothing stored is lost.

Real files, FIFOs (``os.mkfifo``) and directories; commands that could block on a FIFO run in a
subprocess with a timeout, so that a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import MAPPINGS, REPO, make_rows, one_error_line, run_cli

TIMM = REPO / "examples" / "data" / "timm"
V2 = "_meta/manifests/0000000002.json"
V2_COPY = "_meta/manifests/0000000002.copy.json"


def _csv(path: Path, *, scale: float = 1.0) -> Path:
    df = make_rows(3, ds_tasks=("a",)).drop(columns=["extra"])
    df["ds_accuracy"] *= scale
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """S: the timm results ingested (version 1); S2: S plus a small CSV (version 2, its own partition up/a)."""
    d = tmp_path_factory.mktemp("stores")
    s = d / "S"
    r = run_cli("ingest", str(TIMM), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", str(s), "--quiet")
    assert r.returncode == 0, r.stderr
    s2 = d / "S2"
    shutil.copytree(s, s2)
    csv = _csv(d / "more.csv")
    assert run_cli("ingest", str(csv), "--store", str(s2), "--quiet").returncode == 0
    return {"S": s, "S2": s2, "csv": csv}


def _copy(built: dict[str, Path], name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(built[name], dst)
    return dst


def _cli(*args: str, hang_safe: bool = False):
    """``run_cli``; with ``hang_safe`` in a subprocess that may take 60 s at most (a command that
    opens a FIFO blocks forever: the test fails instead of hanging)."""
    if not hang_safe:
        return run_cli(*args)
    try:
        return run_cli(*args, subprocess_=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"meta-study {' '.join(args)} blocked (still running after 60 s)")



def _rows(store: Path) -> pd.DataFrame:
    """What plain readers see, in a stable order."""
    df = pd.read_parquet(store)
    cols = ["source", "run_id", "us_task", "ds_task", "eval_protocol", "shots"]
    return df.sort_values(cols).reset_index(drop=True)[cols + ["ds_accuracy"]]


def _files(store: Path) -> dict[str, bytes]:
    """Every regular file of the store but the lock, with its bytes."""
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*")
            if p.is_file() and p.name != "LOCK"}


def _replace(path: Path, by: str) -> None:
    path.unlink()
    os.mkfifo(path) if by == "fifo" else path.mkdir()


def _reading_commands(store: Path, tmp_path: Path, csv: Path) -> list[tuple[str, ...]]:
    return [("store", "info", str(store)), ("store", "quarantine", str(store)),
            ("fit", str(store), "--out", str(tmp_path / "fit")),
            ("correlations", str(store), "--out", str(tmp_path / "corr")),
            ("ingest", str(csv), "--store", str(store), "--quiet")]


@pytest.mark.parametrize("what", ["file", "fifo", "device", "manifests-file"])
def test_store_path_that_is_not_a_directory_is_one_line(built, tmp_path, what):
    csv = _csv(tmp_path / "good.csv")
    if what == "file":
        store, needle = tmp_path / "regfile", "is a file, not a store directory"
        store.write_bytes(b"keep me")
    elif what == "fifo":
        store, needle = tmp_path / "fifo", "is a FIFO, not a store directory"
        os.mkfifo(store)
    elif what == "device":
        store, needle = Path(os.devnull), "is a character device, not a store directory"
    else:   # a store whose manifest directory was replaced by a file
        store = _copy(built, "S", tmp_path)
        shutil.rmtree(store / "_meta" / "manifests")
        (store / "_meta" / "manifests").write_bytes(b"not a directory")
        needle = "_meta/manifests: is a file, not a directory"
    before = _files(store) if store.is_dir() else None
    for args in _reading_commands(store, tmp_path, csv) + [("store", "check", str(store)),
                                                           ("store", "check", "--repair", str(store))]:
        line = one_error_line(_cli(*args), str(store), needle)
        assert "good.csv" not in line, f"{args}: the store's problem blames the source: {line}"
    if what == "file":
        assert store.read_bytes() == b"keep me"
    if before is not None:
        assert _files(store) == before, "a refused command changed the store"


def test_store_below_a_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "regfile").write_bytes(b"")
    csv = _csv(tmp_path / "good.csv")
    store = tmp_path / "regfile" / "sub"
    one_error_line(_cli("ingest", str(csv), "--store", str(store), "--quiet"),
              str(store), f"{tmp_path / 'regfile'} is a file, not a directory")
    one_error_line(_cli("store", "info", str(store)), str(store), "no such store")


@pytest.mark.parametrize("by", ["directory", "fifo"])
def test_latest_manifest_and_copy_replaced_are_damage_and_roll_back(built, tmp_path, by):
    store = _copy(built, "S2", tmp_path)
    v1_rows = _rows(built["S"])
    for rel in (V2, V2_COPY):
        _replace(store / rel, by)
    problem = {"fifo": "is a FIFO, not a file", "directory": "is a directory, not a file"}[by]
    hang_safe = by == "fifo"
    for args in _reading_commands(store, tmp_path, built["csv"]):
        one_error_line(_cli(*args, hang_safe=hang_safe), f"{store}/{V2}", "damaged manifest", problem,
                  "rolls the store back to version 1")
    r = _cli("store", "check", str(store), hang_safe=hang_safe)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"damaged: {V2} (manifest): {problem}" in r.stderr, r.stderr

    r = _cli("store", "check", "--repair", str(store), hang_safe=hang_safe)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "rolled back from damaged version 2 to version 1" in r.stdout, r.stdout
    pd.testing.assert_frame_equal(_rows(store), v1_rows)        # version 1's rows, all of them
    aside = store / "_damaged" / "0000000003" / V2
    assert aside.is_fifo() if by == "fifo" else aside.is_dir(), "the damaged manifest is kept, set aside"
    assert _cli("store", "check", str(store), hang_safe=hang_safe).returncode == 0
    # the rollback reset ingest state: re-ingesting the CSV restores version 2's rows
    assert _cli("ingest", str(built["csv"]), "--store", str(store), "--quiet").returncode == 0
    pd.testing.assert_frame_equal(_rows(store), _rows(built["S2"]))


@pytest.mark.parametrize("by", ["directory", "fifo"])
def test_latest_manifest_replaced_is_read_from_its_copy_and_restored(built, tmp_path, by):
    store = _copy(built, "S2", tmp_path)
    _replace(store / V2, by)
    hang_safe = by == "fifo"
    r = _cli("store", "info", str(store), hang_safe=hang_safe)
    assert r.returncode == 0 and "rows       7782" in r.stdout, r.stdout + r.stderr
    r = _cli("store", "check", "--repair", str(store), hang_safe=hang_safe)
    assert r.returncode == 0 and "restored from its intact copy" in r.stdout, r.stdout + r.stderr
    assert (store / V2).read_bytes() == (store / V2_COPY).read_bytes()
    assert _cli("store", "check", str(store)).returncode == 0
    pd.testing.assert_frame_equal(_rows(store), _rows(built["S2"]))


def test_data_file_replaced_by_a_fifo_is_damage_not_a_hang(built, tmp_path):
    store = _copy(built, "S2", tmp_path)
    (part,) = (store / "up" / "a").glob("part-*.parquet")
    rel = part.relative_to(store).as_posix()
    _replace(part, "fifo")
    # rows of task a from another file (a file of the same name from elsewhere is refused before
    # the store is read): the ingest merges into up/a, so it reads the FIFO
    changed = _csv(tmp_path / "other.csv", scale=0.9)
    for args in (("store", "info", str(store)), ("fit", str(store), "--out", str(tmp_path / "fit")),
                 ("ingest", str(changed), "--store", str(store), "--quiet")):
        one_error_line(_cli(*args, hang_safe=True), f"{store}/{rel}", "damaged store file", "is a FIFO, not a file")
    r = _cli("store", "check", str(store), hang_safe=True)
    assert r.returncode == 1 and f"damaged: {rel} (data, 3 rows): is a FIFO, not a file" in r.stderr, r.stderr
    r = _cli("store", "check", "--repair", str(store), hang_safe=True)
    assert r.returncode == 0 and "3 rows dropped" in r.stdout, r.stdout + r.stderr
    assert (store / "_damaged" / "0000000003" / rel).is_fifo()
    pd.testing.assert_frame_equal(_rows(store), _rows(built["S"]))   # every other row is kept
    assert _cli("store", "check", str(store)).returncode == 0


def test_every_manifest_damaged_refuses_repair_and_moves_nothing(built, tmp_path):
    store = _copy(built, "S2", tmp_path)
    manifests = sorted((store / "_meta" / "manifests").glob("*.json"))
    assert {p.name for p in manifests} >= {"0000000001.json", "0000000001.copy.json", "0000000002.json",
                                           "0000000002.copy.json"}
    for p in manifests:    # every version and every copy
        os.truncate(p, 50)
    before = _files(store)
    rows = _rows(store)
    assert len(rows) == 7782
    for args in _reading_commands(store, tmp_path, built["csv"]) + [("store", "check", str(store)),
                                                                      ("store", "check", "--repair", str(store))]:
        line = one_error_line(_cli(*args), f"{store}/{V2}", "damaged manifest", "no version to read or to roll back to",
                         "6 data file(s) are kept untouched", f"restore {store}/_meta/manifests from a backup")
        assert "rolls the store back" not in line, line
    assert _files(store) == before, "a refused repair moved or changed files"
    assert not (store / "_damaged").exists()
    pd.testing.assert_frame_equal(_rows(store), rows)
