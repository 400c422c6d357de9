"""MLflow ingest defects found in the third review, against a real ``mlflow server`` (both readers,
REST and ``mlflow-sql:``, where both apply): runs lost behind a watermark (a future end time, a
``--filter``, a FINISHED run without an end time), wrong values (``--history max`` of error rates,
a switched history mode, a constant over a param), tracebacks and a created database instead of
one line, one database under two names, runs of experiments and runs purged by ``mlflow gc``
kept, a quarantine that grew, a filter with " or " in a value, and full reads for ever after a
mapping change. Each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from meta_study.store import Store
from conftest import MAPPINGS, one_error_line, run_cli
from test_ingest_mlflow_review import READERS, _ingest, _rows, _run

HOUR = 3600 * 1000


@pytest.fixture()
def exp(mlflow_server, tmp_path):
    """A fresh experiment of the session's server, and a store of this test (as test_ingest_mlflow_review's)."""
    c = MlflowClient(mlflow_server.uri)
    name = f"review3-{uuid.uuid4().hex[:8]}"
    return {"client": c, "id": c.create_experiment(name), "name": name, "store": str(tmp_path / "store"),
            "uri": mlflow_server.uri, "db": mlflow_server.db, "tmp": tmp_path}


def _now() -> int:
    return int(time.time() * 1000)


def _gc(e: dict, *args: str) -> None:
    """``mlflow gc`` on the server's database: deleted experiments or runs gone for good."""
    r = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", f"sqlite:///{e['db']}",
                        "--tracking-uri", e["uri"], *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# 1. A future end time: the watermark never passes the ingest that read the run
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_a_future_end_time_does_not_hide_a_run_ending_between_two_ingests(exp, reader):
    """Run X ends tomorrow (its clock is ahead); Y ends after the first ingest: the second ingest
    read only runs ending after its own start minus the overlap, and Y was lost."""
    _run(exp["client"], exp["id"], 0, end=_now() + 24 * HOUR)
    _ingest(exp, reader, "--overlap", "0")
    later = _run(exp["client"], exp["id"], 1)
    time.sleep(1.5)
    r = _ingest(exp, reader, "--overlap", "0")
    assert "1 new" in r.stdout, r.stdout
    assert later in set(_rows(exp)["run_id"])


def test_an_end_time_kept_in_the_future_by_an_older_ingest_is_no_watermark():
    from meta_study.ingest.mlflow_runs import RunEntry, RunRecord, plan_queries
    from meta_study.ingest.sources import SourceOptions

    # a state written before the cap: the future end time does not count, the older run's does
    state = {"x": RunEntry("1", "FINISHED", 10 ** 13, "d:a:b", 1), "o": RunEntry("1", "FINISHED", 5_000, "d:c:e", 1)}
    q = plan_queries(["1"], state, SourceOptions(overlap_s=0), mapping_digest="d", now_ms=9_000)
    assert q[0].end_min == 5_000, q
    from meta_study.ingest.mlflow_runs import watermark_end

    rec = RunRecord("x", "1", "FINISHED", 1, 10 ** 13, None, {}, {}, {})
    assert watermark_end(rec, 9_000) == 9_000     # kept as at most the time of the read
    assert watermark_end(RunRecord("x", "1", "FINISHED", 1, None, None, {}, {}, {}), 9_000) == 0


# --------------------------------------------------------------------------------------------
# 2. --filter: a state of its own
# --------------------------------------------------------------------------------------------

def _dataset_run(e: dict, i: int, dataset: str, end: int) -> str:
    rid = _run(e["client"], e["id"], i, end=end)
    e["client"].log_param(rid, "dataset", dataset)
    return rid


def test_runs_a_filter_left_out_are_read_by_a_later_ingest_without_it(exp):
    old = _dataset_run(exp, 0, "i21k", _now() - HOUR)
    new = _dataset_run(exp, 1, "jft", _now() - 60_000)
    first = _ingest(exp, "rest", "--filter", "params.dataset = 'jft'")
    r = _ingest(exp, "rest")
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout
    assert set(_rows(exp)["run_id"]) == {old, new}
    assert "1 new" in first.stdout and "(filter: params.dataset = 'jft')" in first.stdout, first.stdout


def test_two_filters_of_one_server_in_a_sources_file_each_read_their_runs(exp):
    old = _dataset_run(exp, 0, "i21k", _now() - HOUR)
    new = _dataset_run(exp, 1, "jft", _now() - 60_000)
    f = exp["tmp"] / "sources.yaml"
    f.write_text("sources:\n" + "".join(f"  - uri: {exp['uri']}\n    experiments: [\"{exp['name']}\"]\n"
                                        f"    filter: \"params.dataset = '{d}'\"\n" for d in ("jft", "i21k")))
    r = run_cli("ingest", "--sources-file", str(f), "--store", exp["store"], "--quiet")
    assert r.returncode == 0 and r.stdout.count("1 new") == 2, r.stdout + r.stderr
    assert set(_rows(exp)["run_id"]) == {old, new}


def test_a_store_whose_plain_state_a_filtered_ingest_advanced_reads_the_rest_once(exp, monkeypatch):
    """A store of the version before: a filtered ingest kept the source's plain state, with the
    older digest. The first ingest without the filter reads every run once: the run the filter
    left out comes in, and the one stored is not stored twice."""
    from meta_study.ingest import mlflow_runs, mlflow_source

    old = _dataset_run(exp, 0, "i21k", _now() - HOUR)
    new = _dataset_run(exp, 1, "jft", _now() - 60_000)
    with monkeypatch.context() as m:
        m.setattr(mlflow_runs, "EXPANSION_VERSION", 2)
        m.setattr(mlflow_source, "filter_state_suffix", lambda f: "", raising=False)
        _ingest(exp, "rest", "--filter", "params.dataset = 'jft'")
    r = _ingest(exp, "rest")
    assert "1 new, 0 updated, 1 unchanged" in r.stdout, r.stdout
    df = _rows(exp)
    assert sorted(df["run_id"]) == sorted([old, new]) and len(df) == 2


# --------------------------------------------------------------------------------------------
# 3, 4. --history max: error rates, and switching the mode
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_history_max_of_an_error_rate_is_its_lowest_error(exp, reader):
    c, now = exp["client"], _now()
    rid = c.create_run(exp["id"]).info.run_id
    c.log_batch(rid, metrics=[Metric("jft_err", 0.5, now, 0), Metric("linear_pets_err", 0.6, now, 0),
                              Metric("linear_pets_err", 0.2, now + 1, 1), Metric("linear_pets_err", 0.3, now + 2, 2)],
                params=[Param("model", "vit")])
    c.set_terminated(rid)
    _ingest(exp, reader, "--history", "max", "--mapping", str(MAPPINGS / "mlflow_error_rates.yaml"))
    assert _rows(exp)["ds_accuracy"].tolist() == [pytest.approx(0.8)]


@pytest.mark.parametrize("reader", READERS)
def test_switching_history_mode_reads_the_runs_again(exp, reader):
    c, now = exp["client"], _now()
    rid = c.create_run(exp["id"]).info.run_id
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, now, 0), Metric("ds/pets/10shot/top1", 0.9, now, 0),
                              Metric("ds/pets/10shot/top1", 0.5, now + 1, 1)])
    c.set_terminated(rid)
    _ingest(exp, reader)
    assert _rows(exp)["ds_accuracy"].tolist() == [0.5]
    r = _ingest(exp, reader, "--history", "max")
    assert "1 updated" in r.stdout, r.stdout
    assert _rows(exp)["ds_accuracy"].tolist() == [0.9]


# --------------------------------------------------------------------------------------------
# 5, 6. One line, exit 2, nothing created
# --------------------------------------------------------------------------------------------

def test_a_sqlite_tracking_file_that_does_not_exist_is_refused_not_created(tmp_path):
    db = tmp_path / "none" / "x.db"
    r = run_cli("ingest", f"sqlite:///{db}", "--store", str(tmp_path / "st"))
    one_error_line(r, f"sqlite:///{db}", "no such database file")
    assert not db.exists() and not db.parent.exists()


@pytest.mark.parametrize("spec, needle", [
    ("mysql://127.0.0.1:1/x", "the database driver is not installed"),
    ("mssql://127.0.0.1:1/x", "the database driver is not installed"),
    ("file:///{tmp}/mlruns", "mlflow"),
    ("http://127.0.0.1:notaport", "the port 'notaport' is not a number"),
    ("mlflow-sql:postgresql://127.0.0.1:notaport/db", "the port 'notaport' is not a number"),
    ("mlflow-sql:postgresql+nodriver://127.0.0.1/db", "no such database driver"),
])
def test_unusable_tracking_uris_fail_in_one_line(tmp_path, spec, needle):
    spec = spec.format(tmp=tmp_path)
    r = run_cli("ingest", spec, "--store", str(tmp_path / "st"))
    assert needle.lower() in one_error_line(r).lower(), r.stderr


def test_an_unusable_tracking_uri_beside_a_csv_leaves_the_csv_ingested(tmp_path):
    csv = tmp_path / "export.csv"
    csv.write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\nm1,up,0.5,pets,0.4,linear\n")
    r = run_cli("ingest", "mysql://127.0.0.1:1/x", str(csv), "--store", str(tmp_path / "st"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "mysql://127.0.0.1:1/x: FAILED: the database driver is not installed" in r.stdout + r.stderr
    assert len(Store(str(tmp_path / "st")).to_pandas()) == 1


# --------------------------------------------------------------------------------------------
# 7. A relative sqlite path: one file, one name
# --------------------------------------------------------------------------------------------

def _lab_db(d: Path, end: int) -> str:
    """A tracking database ``d/mlflow.db`` with experiment 'lab' and one run ending at ``end``."""
    d.mkdir()
    c = MlflowClient(f"sqlite:///{d / 'mlflow.db'}")
    e = c.create_experiment("lab")
    rid = c.create_run(e).info.run_id
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, end, 0), Metric("ds/pets/10shot/top1", 0.5, end, 0)])
    c.set_terminated(rid, end_time=end)
    return rid


def test_a_relative_sqlite_path_names_the_file_not_the_text(tmp_path):
    a, b = _lab_db(tmp_path / "A", _now() - 60_000), _lab_db(tmp_path / "B", _now() - 2 * HOUR)
    st = str(tmp_path / "st")

    def ingest(cwd: str, spec: str, *args: str) -> str:
        r = run_cli("ingest", spec, "--store", st, "--quiet", *args, cwd=tmp_path / cwd)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert "1 new" in ingest("A", "mlflow-sql:sqlite:///mlflow.db")
    # the same file by its absolute path, or through MLflow's client (the same default name as
    # the SQL reader's now): the same source, not a second copy of its runs
    for spec in (f"mlflow-sql:sqlite:///{tmp_path / 'A' / 'mlflow.db'}", "sqlite:///mlflow.db",
                 f"sqlite:///{tmp_path / 'A' / 'mlflow.db'}"):
        assert "0 new" in ingest("A", spec), spec
    # another lab's file of the same relative name: its own source and state, its run read
    assert "1 new" in ingest("B", "mlflow-sql:sqlite:///mlflow.db")
    df = Store(st).to_pandas()
    assert sorted(df["run_id"]) == sorted([a, b]), df[["source", "run_id"]]
    assert set(df["source"]) == {f"sqlite:///{tmp_path / d / 'mlflow.db'}" for d in "AB"}


def test_a_store_that_named_a_sqlite_file_by_its_relative_path_keeps_that_name(tmp_path):
    """A store ingested before: its rows and state carry ``sqlite:///mlflow.db``. The same file,
    from the same directory, adopts that name: its runs are not stored a second time."""
    _lab_db(tmp_path / "A", _now() - 60_000)
    st = str(tmp_path / "st")
    for spec in ("mlflow-sql:sqlite:///mlflow.db", "sqlite:///mlflow.db"):
        r = run_cli("ingest", spec, "--store", st, "--quiet", "--source", "sqlite:///mlflow.db", cwd=tmp_path / "A")
        assert r.returncode == 0, r.stderr
        r = run_cli("ingest", spec, "--store", st, "--quiet", cwd=tmp_path / "A")
        assert r.returncode == 0 and "0 new" in r.stdout, r.stdout
    df = Store(st).to_pandas()
    assert len(df) == 1 and set(df["source"]) == {"sqlite:///mlflow.db"}


# --------------------------------------------------------------------------------------------
# 8. A FINISHED run without an end time
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_a_run_set_finished_without_an_end_time_is_read_incrementally(exp, reader):
    c = exp["client"]
    _run(c, exp["id"], 0)
    _ingest(exp, reader)
    rid = c.create_run(exp["id"]).info.run_id
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4, _now(), 0), Metric("ds/pets/10shot/top1", 0.6, _now(), 0)])
    c.update_run(rid, "FINISHED")
    assert c.get_run(rid).info.end_time is None
    r = _ingest(exp, reader)
    assert "1 new" in r.stdout, r.stdout
    assert rid in set(_rows(exp)["run_id"])
    assert "0 new" in _ingest(exp, reader).stdout


# --------------------------------------------------------------------------------------------
# 9, 10. --drop-deleted after `mlflow gc`
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_drop_deleted_by_the_id_of_an_experiment_gone_for_good(exp, reader):
    c = exp["client"]
    _run(c, exp["id"], 0), _run(c, exp["id"], 1)
    e = dict(exp, name=exp["id"])      # selected by its ID
    _ingest(e, reader)
    assert len(_rows(exp)) == 2
    c.delete_experiment(exp["id"])
    _gc(exp, "--experiment-ids", exp["id"])
    r = _ingest(e, reader, "--drop-deleted")
    assert r.returncode == 0 and "2 runs deleted" in r.stdout, r.stdout + r.stderr
    assert len(_rows(exp)) == 0


@pytest.mark.parametrize("reader", READERS)
def test_drop_deleted_drops_runs_purged_by_gc(exp, reader):
    c = exp["client"]
    gone, kept = _run(c, exp["id"], 0), _run(c, exp["id"], 1)
    _ingest(exp, reader)
    c.delete_run(gone)
    _gc(exp, "--run-ids", gone)
    r = _ingest(exp, reader, "--drop-deleted")
    assert r.returncode == 0 and "1 run deleted" in r.stdout, r.stdout + r.stderr
    assert set(_rows(exp)["run_id"]) == {kept}


# --------------------------------------------------------------------------------------------
# 11. A constant of the mapping over a run's param
# --------------------------------------------------------------------------------------------

def test_a_constant_that_disagrees_with_a_runs_param_quarantines_the_run():
    from meta_study.ingest.mapping import parse_mapping
    from meta_study.ingest.mlflow_runs import RunExpander, RunRecord, mlflow_mapping

    m = mlflow_mapping(parse_mapping({"name": "x", "constants": {"data_fraction": 1.0}}, "x.yaml"))
    metrics = {"us/jft/top1": 0.4, "ds/pets/10shot/top1": 0.3}
    recs = [RunRecord(f"r{i}", "1", "FINISHED", 1, 2, None, metrics, {"data_fraction": v}, {})
            for i, v in enumerate(("0.1", "1", ""))]
    out = RunExpander(m, "s").expand_runs(recs, {"1": "e"})
    assert [i for i, _ in out.problems] == [0], out.problems
    assert "data_fraction" in out.problems[0][1] and "'0.1'" in out.problems[0][1], out.problems
    assert out.rows["data_fraction"].tolist() == [1.0, 1.0] and out.rows["run_id"].tolist() == ["r1", "r2"]


# --------------------------------------------------------------------------------------------
# 12. The quarantine of a run rejected whole keeps its latest read only
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_a_run_rejected_by_the_source_keeps_one_quarantine_entry(exp, reader):
    c = exp["client"]
    _run(c, exp["id"], 0)
    rid = c.create_run(exp["id"]).info.run_id
    c.log_batch(rid, metrics=[Metric("ds/pets/10shot/top1", 0.5, _now(), 0)])
    c.set_terminated(rid)
    _ingest(exp, reader)
    c.set_tag(rid, "note", "retried")
    _ingest(exp, reader, "--full")
    q = Store(exp["store"]).quarantine().to_pandas()
    assert (q["run_id"] == rid).sum() == 1, q[["run_id", "reason"]]
    assert "retried" in q.loc[q["run_id"] == rid, "raw"].iloc[0]


# --------------------------------------------------------------------------------------------
# 13. " or " inside a quoted value of --filter
# --------------------------------------------------------------------------------------------

def test_a_filter_value_holding_or_is_passed_as_written(exp):
    rid = _run(exp["client"], exp["id"], 0)
    exp["client"].log_param(rid, "note", "this or that")
    r = _ingest(exp, "rest", "--filter", "params.note = 'this or that'")
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# 14. After a mapping change, a run the full read cannot return does not force a full read for ever
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_a_deleted_run_does_not_make_every_later_ingest_a_full_read(exp, reader):
    from meta_study.ingest.mapping import load_mapping
    from meta_study.ingest.mlflow_runs import RunExpander, load_state, mlflow_mapping, plan_queries
    from meta_study.ingest.sources import SourceOptions

    c = exp["client"]
    ids = [_run(c, exp["id"], i) for i in range(3)]
    _ingest(exp, reader)
    c.delete_run(ids[0])                       # without --drop-deleted: its rows stay, it is never read again
    mapping = exp["tmp"] / "m.yaml"
    mapping.write_text("name: m\nparams: {model_name: model_name, seed: seed}\n")
    for _ in range(2):                         # another mapping: read in full once, then from the watermark
        assert _ingest(exp, reader, "--mapping", str(mapping)).returncode == 0
    st = Store(exp["store"])
    name = next(iter(st.state_names("mlflow*")))
    digest = RunExpander(mlflow_mapping(load_mapping(str(mapping))), "s").digest
    q = plan_queries([exp["id"]], load_state(st, name), SourceOptions(), mapping_digest=digest)
    assert q[0].end_min is not None, q
    assert len(_rows(exp)) == 3
