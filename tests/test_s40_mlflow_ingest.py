"""Review of the MLflow sources (mlflow_runs.py, mlflow_source.py, mlflow_sql.py), stop 40.

- ``--drop-deleted`` with ``--filter`` asked MLflow which stored runs still exist through the
  filter: a live run that no longer matched it (a tag changed) was "purged by mlflow gc" and its
  rows deleted, rows an unfiltered ingest of the same source had stored and then skipped as
  unchanged.

Each test logs runs to an MLflow sqlite file (MLflow's tables copied from one made per module) and
runs ``meta-study ingest`` on it through MLflow's client (``sqlite:///``), or through a real
``mlflow server`` on 127.0.0.1 where the REST path itself is the point.
"""

from __future__ import annotations

import re

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


class Lab:
    """An MLflow sqlite file with one experiment, and ingests of it into one store."""

    def __init__(self, tmp: Path, empty: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.tmp, self.db = tmp, tmp / "mlflow.db"
        shutil.copyfile(empty, self.db)     # MLflow's tables made once: ~5 s of migrations a file
        self.client = MlflowClient(tracking_uri=f"sqlite:///{self.db}")
        self.exp = self.client.create_experiment("bob")
        self.spec = f"sqlite:///{self.db}"

    def run(self, us: float = 0.5, ds: float = 0.4, tags: dict[str, str] | None = None) -> str:
        rid = self.client.create_run(self.exp, tags=tags or {}).info.run_id
        self.client.log_metric(rid, "us/in1k/top1", us)
        self.client.log_metric(rid, "ds/pets/10shot/top1", ds)
        self.client.set_terminated(rid)
        return rid

    def ingest(self, *args: str, spec: str | None = None):
        r = run_cli("ingest", spec or self.spec, "--store", str(self.tmp / "st"), *args, cwd=self.tmp)
        assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        return r

    def runs(self) -> set[str]:
        return set(pd.read_parquet(self.tmp / "st", columns=["run_id"])["run_id"])


@pytest.fixture
def lab(tmp_path, empty_db) -> Lab:
    return Lab(tmp_path, empty_db)


def test_drop_deleted_with_a_filter_keeps_a_live_run_that_no_longer_matches_it(lab):
    """A stored run that no longer matched ``--filter`` was not found by the filtered existence
    check of ``--drop-deleted``, taken for a run ``mlflow gc`` purged, and its rows deleted, though
    the run is alive in MLflow. A deleted run is still dropped, whether it matches or not."""
    a, b, c = (lab.run(tags={"keep": "yes"}) for _ in range(3))
    lab.ingest()                                    # every run, unfiltered
    flt = ("--filter", "tags.keep = 'yes'", "--drop-deleted")
    lab.ingest(*flt)
    lab.client.set_tag(a, "keep", "no")             # alive, out of the filter
    r = lab.ingest(*flt)
    assert not re.search(r"\bruns? deleted", r.stdout), r.stdout
    assert lab.runs() == {a, b, c}
    lab.client.set_tag(b, "keep", "no")             # out of the filter, then deleted: dropped
    lab.client.delete_run(b)
    lab.client.delete_run(c)                        # in the filter, deleted: dropped
    r = lab.ingest(*flt)
    assert "2 runs deleted" in r.stdout, r.stdout
    assert lab.runs() == {a}


@pytest.fixture
def html_server():
    """A web server on 127.0.0.1 that is no MLflow: every request gets an HTML page with the
    status the test sets (``server.code``), as another service on the port or the UI's path would."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<!doctype html>\n<html><body>a web app</body></html>\n"
            self.send_response(server.code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.code = 404
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("code, says", [(404, "HTTP 404 for /api/2.0/mlflow/experiments/search"),
                                        (200, "a page that is not JSON")])
def test_a_url_where_no_mlflow_answers_says_so_in_one_line(html_server, code, says, tmp_path):
    """A URL where another web service answers (a wrong port, the UI's page) failed with MLflow's
    words cut at the page's first line (``Response body: '<!doctype html>``): now one line that
    names the URL as the fault and says what to give."""
    html_server.code = code
    uri = f"http://127.0.0.1:{html_server.server_port}"
    r = run_cli("ingest", uri, "--store", str(tmp_path / "st"))
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and not ln.startswith("  ")]
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{uri}: FAILED: no MLflow tracking API at this URL"), lines
    assert says in lines[0] and "doctype" not in lines[0].lower(), lines[0]


def test_a_stale_experiment_does_not_make_every_ingest_list_every_newer_run(lab, monkeypatch):
    """Finished runs without an end time were looked for with one query over every experiment, from
    the earliest watermark: beside an experiment whose last run ended a year ago, every ingest
    listed every run started in that year (a no-op re-ingest as costly as --full). One query per
    experiment from its own watermark lists a few; such runs still come in, through both readers."""
    import time

    import mlflow.tracking.client as mc

    now, day = int(time.time() * 1000), 86_400_000
    old = lab.client.create_experiment("old")

    def run(exp: str, start: int, end: int | None) -> str:
        rid = lab.client.create_run(exp, start_time=start).info.run_id
        lab.client.log_metric(rid, "us/in1k/top1", 0.5)
        lab.client.log_metric(rid, "ds/pets/10shot/top1", 0.4)
        if end is None:
            lab.client.update_run(rid, "FINISHED")        # finished without an end time
        else:
            lab.client.set_terminated(rid, end_time=end)
        return rid

    run(old, now - 365 * day, now - 365 * day + 1000)
    for i in range(30):
        run(lab.exp, now - 300 * day + i * day, now - 300 * day + i * day + 1000)
    listed: list[int] = []
    search = mc.MlflowClient.search_runs

    def counting(self, *args, **kw):
        page = search(self, *args, **kw)
        # not the lookup of a few of the state's runs by id (check_same_database: at most 3 per
        # experiment, one request) that every ingest with a state makes first
        if "attributes.run_id IN" not in (kw.get("filter_string") or ""):
            listed.append(len(page))
        return page

    monkeypatch.setattr(mc.MlflowClient, "search_runs", counting)
    lab.ingest()
    listed.clear()
    lab.ingest()
    assert sum(listed) <= 4, listed          # was 33: every run started since the old experiment's last
    late = {run(old, now - 1000, None), run(lab.exp, now - 1000, None)}
    lab.ingest()
    assert late <= lab.runs()
    before = lab.runs()
    lab.ingest(spec=f"mlflow-sql:{lab.spec}")   # the SQL source: the same runs (one source name)
    assert lab.runs() == before


def test_the_sql_source_reads_runs_without_an_end_time_in_one_query():
    from meta_study.ingest.mlflow_runs import RunEntry, merged_no_end, plan_queries
    from meta_study.ingest.sources import SourceOptions

    state = {"a": RunEntry("1", "FINISHED", 5_000, "d:x", 1), "b": RunEntry("2", "FINISHED", 9_000, "d:y", 1)}
    q = plan_queries(["1", "2"], state, SourceOptions(overlap_s=1), mapping_digest="d", now_ms=10_000)
    assert [(x.experiment_ids, x.end_min) for x in q if x.no_end] == [(("1",), 4_000), (("2",), 8_000)]
    m = merged_no_end(q)
    assert [(x.experiment_ids, x.end_min) for x in m if x.no_end] == [(("1", "2"), 4_000)]
    assert [x for x in m if not x.no_end] == [x for x in q if not x.no_end]
