"""Incremental MLflow ingest against a real ``mlflow server``, both readers (REST and ``mlflow-sql:``):
a run ending in the future, a changed mapping, a metric whose latest value became NaN, a key that
moved, and a run restored in the UI after ``--drop-deleted``. Each case once left the store with
missing, stale or doubled rows."""

from __future__ import annotations

import re

import time
import uuid

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from meta_study.store import Store
from conftest import run_cli

READERS = ("rest", "sql")


def _run(client: MlflowClient, exp: str, i: int, *, end: int | None = None) -> str:
    rid = client.create_run(exp).info.run_id
    now = int(time.time() * 1000)
    metrics = {"us/jft/top1": 0.4, "ds/pets/10shot/top1": round(0.3 + 0.01 * i, 6)}
    client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     params=[Param("model_name", "vit_tiny_cpu")])
    client.set_terminated(rid, end_time=end)
    return rid


@pytest.fixture()
def exp(mlflow_server, tmp_path):
    c = MlflowClient(mlflow_server.uri)
    name = f"review-{uuid.uuid4().hex[:8]}"
    return {"client": c, "id": c.create_experiment(name), "name": name, "store": str(tmp_path / "store"),
            "uri": mlflow_server.uri, "db": mlflow_server.db, "tmp": tmp_path}


def _ingest(e: dict, reader: str, *args: str):
    spec = e["uri"] if reader == "rest" else f"mlflow-sql:sqlite:///{e['db']}"
    r = run_cli("ingest", spec, "--experiment", e["name"], "--store", e["store"], "--quiet", *args)
    assert r.returncode in (0, 2), r.stderr
    return r


def _rows(e: dict):
    return Store(e["store"]).to_pandas()


@pytest.mark.parametrize("reader", READERS)
def test_a_run_ending_in_the_future_does_not_hide_later_runs(exp, reader):
    # a run logged from a machine whose clock is a day ahead: its end time was the watermark, and
    # every run ending before tomorrow was never read
    _run(exp["client"], exp["id"], 0, end=int(time.time() * 1000) + 24 * 3600 * 1000)
    _ingest(exp, reader)
    later = _run(exp["client"], exp["id"], 1)
    r = _ingest(exp, reader)
    assert "1 new" in r.stdout, r.stdout
    assert later in set(_rows(exp)["run_id"])


@pytest.mark.parametrize("reader", READERS)
def test_a_run_restored_after_drop_deleted_comes_back(exp, reader):
    c = exp["client"]
    old = _run(c, exp["id"], 0, end=int(time.time() * 1000) - 3600 * 1000)   # behind the watermark
    _run(c, exp["id"], 1)
    _ingest(exp, reader, "--overlap", "0")
    c.delete_run(old)
    r = _ingest(exp, reader, "--overlap", "0", "--drop-deleted")
    assert "1 run deleted" in r.stdout and old not in set(_rows(exp)["run_id"])
    r = _ingest(exp, reader, "--overlap", "0", "--drop-deleted")
    assert not re.search(r"\bruns? deleted", r.stdout), r.stdout        # dropped once, not on every ingest
    c.restore_run(old)
    r = _ingest(exp, reader, "--overlap", "0", "--drop-deleted")
    assert "1 new" in r.stdout, r.stdout
    assert old in set(_rows(exp)["run_id"])
    r = _ingest(exp, reader, "--overlap", "0", "--drop-deleted")
    assert "0 new, 0 updated" in r.stdout and not re.search(r"\bruns? deleted", r.stdout), r.stdout


@pytest.mark.parametrize("reader", READERS)
def test_a_changed_mapping_replaces_the_rows_it_made(exp, reader):
    _run(exp["client"], exp["id"], 0)
    (exp["tmp"] / "m1.yaml").write_text("name: m\nconstants: {data_fraction: 1.0}\n")
    # the same metric key, now read as a linear probe: another key of the same run
    (exp["tmp"] / "m2.yaml").write_text(
        "name: m\nconstants: {data_fraction: 0.5}\nmetrics:\n"
        "  - pattern: 'us/{us_task}/top1'\n"
        "  - pattern: 'ds/{ds_task}/{shots}shot/top1'\n    eval_protocol: linear\n")
    _ingest(exp, reader, "--mapping", str(exp["tmp"] / "m1.yaml"))
    assert list(_rows(exp)["data_fraction"]) == [1.0]
    # no --full: the runs read with another mapping are read again
    r = _ingest(exp, reader, "--mapping", str(exp["tmp"] / "m2.yaml"))
    assert "1 run changed" in r.stdout, r.stdout
    df = _rows(exp)
    assert list(df["eval_protocol"]) == ["linear"] and list(df["data_fraction"]) == [0.5]   # replaced, not doubled
    r = _ingest(exp, reader, "--mapping", str(exp["tmp"] / "m2.yaml"))
    assert "0 new, 0 updated" in r.stdout and "1 run unchanged" in r.stdout, r.stdout


@pytest.mark.parametrize("reader", READERS)
def test_a_metric_whose_latest_value_is_now_nan_leaves_no_stale_row(exp, reader):
    c = exp["client"]
    rid = _run(c, exp["id"], 0)
    keep = _run(c, exp["id"], 1)
    _ingest(exp, reader)
    c.log_metric(rid, "ds/pets/10shot/top1", float("nan"), step=1)   # the run diverged
    _ingest(exp, reader, "--full")
    assert set(_rows(exp)["run_id"]) == {keep}     # MLflow's latest value is NaN: not the old 0.3
    q = Store(exp["store"]).quarantine().to_pandas()
    assert list(q["run_id"]) == [rid] and list(q["reason"]) == ["ds_accuracy: NaN"]


@pytest.mark.parametrize("reader", READERS)
def test_a_renamed_experiment_is_the_rows_experiment_after_full(exp, reader):
    _run(exp["client"], exp["id"], 0)
    _ingest(exp, reader)
    new = exp["name"] + "-renamed"
    exp["client"].rename_experiment(exp["id"], new)
    exp["name"] = new
    r = _ingest(exp, reader, "--full")
    assert "0 new, 1 updated" in r.stdout, r.stdout
    assert list(_rows(exp)["experiment"]) == [new]


@pytest.mark.parametrize("reader", READERS)
def test_a_running_run_that_is_killed_leaves_no_rows(exp, reader):
    c = exp["client"]
    rid = c.create_run(exp["id"]).info.run_id
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, 0, 0), Metric("ds/pets/10shot/top1", 0.3, 0, 0)])
    _ingest(exp, reader, "--include-running")
    assert rid in set(_rows(exp)["run_id"])
    c.set_terminated(rid, status="KILLED")     # only FINISHED runs are data
    r = _ingest(exp, reader, "--include-running")
    assert "1 deleted" in r.stdout and "1 run ended failed or killed" in r.stdout, r.stdout
    assert rid not in set(_rows(exp)["run_id"])
    r = _ingest(exp, reader, "--include-running")
    assert "deleted" not in r.stdout, r.stdout


def test_plan_queries_watermark_mapping_and_ended_runs():
    from meta_study.ingest.mlflow_runs import DELETED, RunEntry, plan_queries
    from meta_study.ingest.sources import SourceOptions

    opts = SourceOptions(overlap_s=1)
    state = {"a": RunEntry("1", "FINISHED", 5_000, "d:x:y", 1), "k": RunEntry("1", "KILLED", 6_000, "", 0),
             "g": RunEntry("1", DELETED, 4_000, DELETED, 0)}
    q = plan_queries(["1"], state, opts, mapping_digest="d", now_ms=10_000)
    assert q[0].end_min == 4_000 and q[0].run_ids is None     # a killed or dropped run is no other mapping
    assert (q[1].no_end, q[1].end_min) == (True, 4_000)          # finished runs without an end time
    assert [x.run_ids for x in q[2:]] == [("g",)]
    # an end time past now was kept before end times were capped at the read: no watermark
    assert plan_queries(["1"], state, opts, mapping_digest="d", now_ms=3_000)[0].end_min is None
    assert plan_queries(["1"], state, opts, mapping_digest="e", now_ms=10_000)[0].end_min is None  # remapped: all
    state["r"] = RunEntry("1", "RUNNING", 0, "d:z:w", 2)
    q = plan_queries(["1"], state, opts, mapping_digest="d", now_ms=10_000)
    assert [(x.status, x.run_ids) for x in q[3:]] == [("FINISHED", ("r",)), ("FAILED", ("r",)), ("KILLED", ("r",))]


class _DeletingProxy:
    """An HTTP proxy before the real server that deletes a run (as a researcher in the UI would)
    just before it forwards the ``nth`` runs/search call: between two pages of one ingest."""

    def __init__(self, upstream: str, victim: str, nth: int = 2) -> None:
        import threading
        import urllib.error
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        calls = {"search": 0}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # noqa: ANN002
                pass

            def _forward(self, body: bytes | None = None) -> None:
                if "runs/search" in self.path:
                    calls["search"] += 1
                    if calls["search"] == nth:
                        MlflowClient(upstream).delete_run(victim)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                req = urllib.request.Request(upstream + self.path, data=body, method=self.command, headers=headers)
                try:
                    resp = urllib.request.urlopen(req, timeout=60)
                except urllib.error.HTTPError as e:
                    resp = e
                data = resp.read()
                self.send_response(resp.getcode())
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_DeletingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_run_deleted_between_pages_does_not_hide_a_later_run(exp):
    # MLflow's page tokens are offsets: a run of page 1 deleted before page 2 is read shifted run 2
    # out of every page, and the watermark then moved past it for good
    c, hour = exp["client"], 3600 * 1000
    t0 = int(time.time() * 1000) - 4 * hour
    ids = [_run(c, exp["id"], i, end=t0 + i * hour // 4) for i in range(5)]    # 15 minutes apart
    base = ["--experiment", exp["name"], "--store", exp["store"], "--quiet", "--page-size", "2", "--source", "lab"]
    with _DeletingProxy(exp["uri"], ids[0]) as proxy:
        r = run_cli("ingest", proxy.uri, *base)
    assert r.returncode == 0, r.stderr
    assert c.get_run(ids[0]).info.lifecycle_stage == "deleted"     # between two pages, as the case needs
    assert run_cli("ingest", exp["uri"], *base).returncode == 0
    assert set(_rows(exp)["run_id"]) >= set(ids[1:])


@pytest.mark.parametrize("reader", READERS)
def test_runs_with_one_end_time_across_pages_all_come_in(exp, reader):
    end = int(time.time() * 1000) - 1000
    ids = [_run(exp["client"], exp["id"], i, end=end) for i in range(7)]
    _ingest(exp, reader, "--page-size", "2", "--overlap", "0")
    more = [_run(exp["client"], exp["id"], 10 + i, end=end) for i in range(3)]
    r = _ingest(exp, reader, "--page-size", "2", "--overlap", "0")
    assert "3 new" in r.stdout, r.stdout
    df = _rows(exp)
    assert set(df["run_id"]) == set(ids + more) and len(df) == 10


@pytest.mark.parametrize("reader", READERS)
def test_one_bad_new_run_beside_stored_ones_is_no_failed_source(exp, reader):
    """An incremental ingest whose only new run was wholly rejected said "FAILED: all 2 rows
    quarantined, nothing stored" and exited 2, of a source whose other runs are stored and
    unchanged: the bad run is quarantined and said, the source did not fail."""
    _run(exp["client"], exp["id"], 0)
    r = _ingest(exp, reader)
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout
    bad = exp["client"].create_run(exp["id"]).info.run_id
    exp["client"].log_batch(bad, metrics=[Metric("us/jft/top1", -0.2, 0, 0), Metric("ds/pets/10shot/top1", 0.3, 0, 0)])
    exp["client"].set_terminated(bad)
    r = _ingest(exp, reader)
    assert r.returncode == 0 and "FAILED" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "1 quarantined" in r.stdout and "1 of 1 rows rejected: us_accuracy: out of range" in r.stdout, r.stdout
    # a source whose every row is rejected, with nothing of it stored, still fails
    name = f"bad-{uuid.uuid4().hex[:8]}"
    only_bad = exp["client"].create_experiment(name)
    rid = exp["client"].create_run(only_bad).info.run_id
    exp["client"].log_batch(rid, metrics=[Metric("us/jft/top1", -0.2, 0, 0), Metric("ds/pets/10shot/top1", 0.3, 0, 0)])
    exp["client"].set_terminated(rid)
    r = _ingest(dict(exp, name=name, store=str(exp["tmp"] / "other")), reader)
    assert r.returncode == 2 and "FAILED: all" in r.stdout + r.stderr, r.stdout + r.stderr


def test_one_server_has_one_source_name_however_its_uri_is_typed():
    from meta_study.mlflow_client import source_uri

    for typed in ("http://h:5000/", "HTTP://h:5000", "http://h:5000//", "http://u@h:5000/?x=1#f"):
        assert source_uri(typed) == "http://h:5000", typed
    assert source_uri("http://h:80/") == source_uri("http://h") == "http://h"
    assert source_uri("https://h:443/mlflow/") == "https://h/mlflow"
    assert source_uri("https://h:8443/mlflow") == "https://h:8443/mlflow"
    assert source_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"      # not a server: as typed


def test_a_trailing_slash_is_the_same_server_not_a_second_copy_of_its_runs(exp):
    # ``http://h:5000/`` and ``http://h:5000`` were two sources: every run was stored twice
    for i in range(2):
        _run(exp["client"], exp["id"], i)
    _ingest(exp, "rest")
    e2 = dict(exp, uri=exp["uri"].rstrip("/") + "/")
    r = _ingest(e2, "rest")
    assert r.returncode == 0 and "0 new" in r.stdout, r.stdout
    rows = _rows(exp)
    assert len(rows) == 2 and set(rows["source"]) == {exp["uri"].rstrip("/")}


def test_a_store_that_holds_a_server_under_an_older_spelling_keeps_that_name(exp):
    # stores written before names were canonical hold ``http://h:5000/``: the plain URI adopts it
    # (its runs are replaced, not stored a second time under the new spelling)
    old = exp["uri"].rstrip("/") + "/"
    _run(exp["client"], exp["id"], 0)
    _ingest(exp, "rest", "--source", old)
    _run(exp["client"], exp["id"], 1)
    r = _ingest(exp, "rest")
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout
    rows = _rows(exp)
    assert len(rows) == 2 and set(rows["source"]) == {old}


def test_an_experiment_named_like_a_glob_selects_itself_only():
    from meta_study.ingest.mlflow_runs import select_experiments

    found = [("1", "ablation[1]"), ("2", "ablation1"), ("3", "ablation2")]
    assert select_experiments(found, ["ablation[1]"], "x") == [("1", "ablation[1]")]
    assert select_experiments(found, ["ablation[12]"], "x") == [("2", "ablation1"), ("3", "ablation2")]
    assert select_experiments(found, ["3"], "x") == [("3", "ablation2")]


@pytest.mark.parametrize("reader", READERS)
def test_drop_deleted_drops_the_runs_of_a_deleted_experiment_and_a_restore_brings_them_back(exp, reader):
    # a deleted experiment's runs stay "active" in MLflow's trash: --drop-deleted listed only
    # deleted runs of active experiments, so the rows of a deleted experiment stayed in the store
    c = exp["client"]
    other = c.create_experiment(f"{exp['name']}-kept")
    _run(c, exp["id"], 0), _run(c, exp["id"], 1), _run(c, other, 2)
    e = dict(exp, name=f"{exp['name']}*")          # both experiments, by a glob
    _ingest(e, reader)
    assert len(_rows(exp)) == 3
    c.delete_experiment(exp["id"])
    r = _ingest(e, reader)
    assert r.returncode == 0 and len(_rows(exp)) == 3, r.stdout     # without the flag, rows stay
    r = _ingest(e, reader, "--drop-deleted")
    assert r.returncode == 0 and "2 runs deleted" in r.stdout, r.stdout + r.stderr
    assert len(_rows(exp)) == 1
    # the deleted experiment named alone: nothing active matches, but it is no error with the flag
    r = _ingest(exp, reader, "--drop-deleted")
    assert r.returncode == 0 and not re.search(r"\bruns? deleted", r.stdout), r.stdout + r.stderr
    assert _ingest(exp, reader).returncode == 2                     # without it, nothing matches
    c.restore_experiment(exp["id"])
    r = _ingest(e, reader, "--drop-deleted")
    assert r.returncode == 0 and "2 new" in r.stdout, r.stdout
    assert len(_rows(exp)) == 3


def test_epochs_are_the_epochs_trained_not_the_configured_param(exp):
    # a trial ASHA stopped at its second epoch logged epochs=10 (its config) as a param when it
    # started, and train/epochs=2 with its final metrics: the store said 10
    c, now = exp["client"], int(time.time() * 1000)
    stopped = c.create_run(exp["id"]).info.run_id
    c.log_batch(stopped, metrics=[Metric("us/jft/top1", 0.4, now, 0), Metric("ds/pets/10shot/top1", 0.3, now, 0),
                                  Metric("train/epochs", 2.0, now, 0)],
                params=[Param("model_name", "vit_tiny_cpu"), Param("epochs", "10.0")])
    c.set_terminated(stopped)
    plain = _run(c, exp["id"], 1)
    c.log_param(plain, "epochs", "7")
    _ingest(exp, "rest")
    rows = _rows(exp).set_index("run_id")
    assert rows.loc[stopped, "epochs"] == 2.0 and rows.loc[plain, "epochs"] == 7.0
    assert dict(rows.loc[stopped, "extra"]).get("epochs_configured") == "10.0", rows.loc[stopped, "extra"]
    assert "epochs_configured" not in dict(rows.loc[plain, "extra"])
