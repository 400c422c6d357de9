"""A first ingest into a new store, stopped before its first version is committed (Ctrl-C, SIGTERM),
leaves no store directory it made: it left ``_meta/LOCK`` and ``_staging``, and then ``store
info`` said "not a meta-study store (no _meta/manifests)", as if the path were mistyped. Where
nothing can take them back (SIGKILL), commands opening such a half-made store say what it is.
Once a version is committed, everything stays. ``store quarantine`` reads by the manifest that
opening the store read (one LIST and one GET of the manifests on S3, 2 and 2 before).

Real ``meta-study ingest`` processes; a failpoint (``META_STUDY_FAILPOINT``) holds the commit
just before or after its commit point, and the test signals once the process says it is there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from meta_study.store import Store

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
HALF_MADE = "a store whose first ingest did not finish (no version committed): ingest into it again, or delete it"


def _start(store: Path, *sources: Path, failpoint: str | None, err: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("META_STUDY_FAILPOINT", None)
    if failpoint:
        env["META_STUDY_FAILPOINT"] = failpoint
    return subprocess.Popen([sys.executable, "-m", "meta_study.cli", "ingest", *map(str, sources), "--store", str(store)],
                            env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"))


def _wait_for(p: subprocess.Popen, ready, what: str) -> None:  # noqa: ANN001 - a predicate
    """Until ``ready()``; fails (never passes) if the process ends first. The 600 s bound is
    a hang's, not a timing."""
    deadline = time.monotonic() + 600
    while not ready():
        assert p.poll() is None, f"ingest ended (rc {p.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} in 600 s"
        time.sleep(0.05)


def _said(err: Path, line: str):  # noqa: ANN202
    return lambda: line in err.read_text()


def _csv(path: Path, n_runs: int = 40) -> Path:
    """A small valid export: ``n_runs`` runs of one US task, 3 DS tasks each."""
    rows = [{"run_id": f"r{i}", "us_task": "up", "us_accuracy": 0.3 + i / (2 * n_runs), "ds_task": f"d{j}",
             "ds_accuracy": 0.2 + i / (3 * n_runs), "eval_protocol": "fewshot", "shots": 10}
            for i in range(n_runs) for j in range(3)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ---- 1: stopped before its commit point: nothing of the store stays ------------------------------


@pytest.mark.parametrize("sig, rc, line", [(signal.SIGINT, 130, "meta-study: aborted"),
                                           (signal.SIGTERM, 143, "meta-study: terminated by SIGTERM")])
def test_a_first_ingest_stopped_before_its_commit_leaves_no_store_it_made(tmp_path, sig, rc, line):
    """Held just before its commit point (its files staged), then signalled: the store's directory
    and the parents it had to make are gone; the directory above them stays."""
    store = tmp_path / "new" / "deep" / "st"
    err = tmp_path / "err.txt"
    p = _start(store, _csv(tmp_path / "runs.csv"), failpoint="before_publish", err=err)
    try:
        _wait_for(p, _said(err, "failpoint before_publish"), "commit point")
        assert list((store / "_staging").rglob("*.parquet")) and (store / "_meta" / "LOCK").exists()
        p.send_signal(sig)
        assert p.wait(timeout=300) == rc, err.read_text()
    finally:
        p.kill()
    assert err.read_text().splitlines()[-1] == line, err.read_text()
    assert not (tmp_path / "new").exists(), sorted(map(str, (tmp_path / "new").rglob("*")))
    assert tmp_path.is_dir()
    r = run_cli("store", "info", str(store))
    assert (r.returncode, r.stderr) == (2, f"meta-study: error: {store}: no such store\n"), r.stderr


def test_an_empty_directory_given_as_the_store_stays_and_is_empty_again(tmp_path):
    """A directory that was there before the ingest (empty) is never removed: only what the ingest
    made in it (``_meta``, ``_staging``) is."""
    store = tmp_path / "st"
    store.mkdir()
    err = tmp_path / "err.txt"
    p = _start(store, _csv(tmp_path / "runs.csv"), failpoint="before_publish", err=err)
    try:
        _wait_for(p, _said(err, "failpoint before_publish"), "commit point")
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=300) == 130, err.read_text()
    finally:
        p.kill()
    assert store.is_dir() and list(store.iterdir()) == []


def test_ctrl_c_of_the_walkthroughs_first_ingest_leaves_no_half_made_store(tmp_path):
    """The walkthrough's two example tables into a new store, Ctrl-C once the store's directory
    appears (a commit under way): either no directory is left, or, where a version had committed
    by then, the store is whole and reads."""
    store = tmp_path / "intst"
    err = tmp_path / "err.txt"
    p = _start(store, DATA / "imagenet_testbed" / "us_ds.csv", DATA / "dclm" / "us_ds.csv", failpoint=None, err=err)
    try:
        _wait_for(p, lambda: (store / "_meta").exists(), "store directory")
        p.send_signal(signal.SIGINT)
        code = p.wait(timeout=300)
    finally:
        p.kill()
    if not store.exists():
        assert code == 130, err.read_text()
        return
    r = run_cli("store", "info", str(store), "--json")   # a version committed: kept, whole
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] >= 1 and Store(store).check().ok


# ---- 2: stopped after its commit point: everything stays -------------------------------------------


def test_a_first_ingest_stopped_after_its_commit_point_keeps_the_store(tmp_path):
    store = tmp_path / "st"
    err = tmp_path / "err.txt"
    p = _start(store, _csv(tmp_path / "runs.csv"), failpoint="after_publish", err=err)
    try:
        _wait_for(p, _said(err, "failpoint after_publish"), "commit point")
        p.send_signal(signal.SIGINT)
        p.wait(timeout=300)
    finally:
        p.kill()
    r = run_cli("store", "info", str(store), "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["version"], json.loads(r.stdout)["rows"]) == (1, 120), r.stdout
    assert Store(store).check().ok


# ---- 3: what SIGKILL leaves is said to be what it is ---------------------------------------------


def _half_made(store: Path) -> None:
    """What a first ingest SIGKILLed while staging leaves: the lock file and staged files."""
    staged = store / "_staging" / "0000000001-0123456789ab" / "up" / "d0"
    staged.mkdir(parents=True)
    (staged / "part-0000000001-deadbeef.parquet").write_bytes(b"PAR1 half-written")
    (store / "_meta").mkdir()
    (store / "_meta" / "LOCK").write_text('{"pid": 1}')


def test_a_half_made_store_is_said_to_be_one_and_the_next_ingest_makes_it(tmp_path):
    store = tmp_path / "st"
    _half_made(store)
    for cmd in (("store", "info"), ("store", "quarantine"), ("store", "check")):
        r = run_cli(*cmd, str(store))
        assert (r.returncode, r.stderr) == (2, f"meta-study: error: {store}: {HALF_MADE}\n"), (cmd, r.stderr)
    assert run_cli("ingest", str(_csv(tmp_path / "runs.csv")), "--store", str(store)).returncode == 0
    r = run_cli("store", "info", str(store), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["rows"] == 120, r.stdout + r.stderr


def test_a_first_ingest_killed_leaves_a_store_said_to_be_half_made(tmp_path):
    """SIGKILL: nothing can take the files back; every command opening it says what it is."""
    store = tmp_path / "st"
    err = tmp_path / "err.txt"
    p = _start(store, _csv(tmp_path / "runs.csv"), failpoint="before_publish", err=err)
    try:
        _wait_for(p, _said(err, "failpoint before_publish"), "commit point")
        p.kill()
        p.wait(timeout=300)
    finally:
        p.kill()
    r = run_cli("store", "info", str(store))
    assert (r.returncode, r.stderr) == (2, f"meta-study: error: {store}: {HALF_MADE}\n"), r.stderr


# ---- 4: store quarantine reads by the manifest opening the store read -----------------------------


def test_store_quarantine_lists_and_reads_the_manifests_once(request, s3, s3env):
    boto3 = pytest.importorskip("boto3")  # noqa: F841
    from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows
    from test_s56_store import _manifest_lists

    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    q = pd.DataFrame({"source": ["s"], "run_id": ["bad1"], "reason": ["us_accuracy: not a number"], "raw": ["{}"]})
    Store(uri, notify=None).commit(_rows(0.1, ("a",)), quarantine=q)
    Store(uri, notify=None).commit(_rows(0.2, ("a",)))
    mark = _log_mark(s3)
    r = run_cli("store", "quarantine", uri)
    assert r.returncode == 0, r.stdout + r.stderr
    reqs = _requests(s3, mark)
    assert len(_manifest_lists(reqs, prefix)) == 1, reqs
    assert [x[1] for x in reqs if x[0] == "GET" and "/_meta/manifests/" in x[1]] == [
        f"/lab/{prefix}/_meta/manifests/0000000002.json"], reqs
    assert r.stdout == "1 quarantined row(s)\n- [s] bad1: us_accuracy: not a number\n", r.stdout
