"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests and its notices show:
``store info`` reads the manifest that opening the store read (one LIST and one GET of the
manifests, and no second look at whether its commit is finished), and reports a commit left
unfinished as before; the notice of a commit whose files could not be moved into place names the
file inside the store, not the whole URI again, so a long ``?endpoint_override=`` query leaves
the endpoint's reason readable."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from meta_study.store import Store

boto3 = pytest.importorskip("boto3")

# the server's request log, as test_s51_store_s3 counts it; the proxy of test_s52_s3; the 409 relay
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402
from test_s52_s3 import relay  # noqa: E402,F401 - the proxy fixture
from test_s56_store import _Conflict, _keys, _manifest_lists  # noqa: E402


def _manifest_gets(reqs, prefix: str) -> list[str]:  # noqa: ANN001
    return [r[1] for r in reqs if r[0] == "GET" and r[1].startswith(f"/lab/{prefix}/_meta/manifests/")]


def _interrupted(uri: str) -> None:
    """Version 2 committed, its finalize failed past the commit point: its files left staged."""
    s = Store(uri, notify=None)
    s.commit(_rows(0.1, ("a",)))
    real = s._finalize

    def died(m):  # noqa: ANN001, ANN202
        if m.version == 2:
            raise OSError(5, "simulated failure")
        return real(m)

    s._finalize = died
    s.commit(_rows(0.2, ("a",)))


# ---- 1: store info reads the manifest opening the store read ------------------------------------


def test_info_reads_the_manifest_that_opening_the_store_read(request, s3, s3env):
    """One LIST of the manifests and one GET of the latest (2 and 2 before: the summary listed and
    read it again), and no second look at ``_staging`` for a commit already finished; the output,
    text and JSON, is the store's version 2 as a fresh read of it gives it."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1))
    Store(uri, notify=None).commit(_rows(0.2))
    for args in ((), ("--json",)):
        mark = _log_mark(s3)
        r = run_cli("store", "info", uri, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        reqs = _requests(s3, mark)
        assert len(_manifest_lists(reqs, prefix)) == 1, reqs
        assert _manifest_gets(reqs, prefix) == [f"/lab/{prefix}/_meta/manifests/0000000002.json"], reqs
        assert len([q for m, p, q in reqs if q.get("prefix", "").startswith(f"{prefix}/_staging")]) <= 1, reqs
    out = json.loads(r.stdout)
    fresh = Store(uri, notify=None)
    rows = fresh.to_pandas()
    assert (out["version"], out["rows"], out["pending_finalize"]) == (2, len(rows), False), out
    assert {g["ds_task"]: g["rows"] for g in out["groups"]} == rows.groupby("ds_task").size().to_dict(), out
    assert out["last_ingest"] == str(rows["ingested_at"].max()) and fresh.check().ok


def test_info_of_a_commit_left_unfinished_finishes_it(request, s3, s3env):
    """Opening the store finishes the commit (the summary then reads the manifest anew and asks
    again): no note, the new rows, nothing left staged."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    _interrupted(uri)
    assert [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]
    r = run_cli("store", "info", uri, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert (out["version"], out["rows"], out["pending_finalize"]) == (2, 3, False), out
    assert not [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]


def test_info_of_a_commit_it_cannot_finish_says_so(request, s3, s3env):
    """Another writer holds the lease: opening the store cannot finish the commit, and the summary
    says it is left unfinished (the note), of version 2 with its rows."""
    prefix = _prefix(request)
    uri = f"s3://lab/{prefix}"
    _interrupted(uri)
    with Store(uri, notify=None)._lock():
        r = run_cli("store", "info", uri)
        j = run_cli("store", "info", uri, "--json")
    assert r.returncode == 0 and r.stdout.splitlines()[1:3] == ["version    2", "rows       3"], r.stdout
    assert "note: the last commit was interrupted after its commit point" in r.stdout, r.stdout
    assert json.loads(j.stdout)["pending_finalize"] is True, j.stdout
    assert [k for k in _keys(s3.client(), prefix) if k.startswith("_staging/")]


# ---- 2: the notice of a move that failed keeps its reason ---------------------------------------


def test_a_failed_move_under_a_long_query_names_the_file_and_the_reason(request, s3, s3env, relay):  # noqa: F811
    """Each DELETE of a superseded file answered 409 (OperationAborted), through a URI with a long
    query: the notice cut its reason to 200 characters, the URI (query and all) repeated in them,
    and ended before the endpoint's code. Now it names the file inside the store."""
    prefix = f"{_prefix(request)}/a-lab/with/a-deep-prefix"
    task = "imagenet_1k_linear_probe_10_shot"
    uri = f"s3://lab/{prefix}"
    Store(uri, notify=None).commit(_rows(0.1, (task,)))
    old = {e["path"] for e in Store(uri)._load().data}
    handler = type("Handler", (_Conflict,), {"deletes": True})
    via = (f"s3://lab/{prefix}?endpoint_override=http://{relay(handler)}&scheme=http&region=us-east-1"
           "&allow_bucket_creation=false&allow_bucket_deletion=false")
    assert Store(via, notify=(said := []).append).commit(_rows(0.2, (task,))).version == 2
    assert len(said) == 1, said
    notice = said[0]
    assert notice.startswith(f"{via}: version 2 is committed, but moving its files into place failed ("), notice
    assert "DELETE failed: OperationAborted" in notice, notice
    assert notice.count("endpoint_override=") == 1, notice   # the store's URI, not each file's again
    # the file (a staged one, moved by a copy and a DELETE) as a path inside the store
    assert re.search(rf"failed \((_staging/[^/ ]+/)?up/{task}/part-[0-9]+-[0-9a-f]+\.parquet: DELETE failed: "
                     "OperationAborted: ", notice), notice
    assert old <= _keys(s3.client(), prefix)   # not deleted, and not said to be
    assert Store(uri, notify=None).commit(_rows(0.3, (task,))).version == 3   # the next commit finishes it
    assert not old & _keys(s3.client(), prefix) and Store(uri).check().ok
