"""One source name, two MLflow databases, in two commands.

An MLflow source keeps one incremental state per name, whose watermarks are per experiment id.
``--source lab`` given to database A today and to database B tomorrow took A's experiment ids for
B's: B's runs that ended before A's latest run of the same experiment id were never read (exit 0,
"0 new"), and ``--drop-deleted`` dropped every stored row of A as deleted or purged. Ingest now
looks a few of the state's latest runs up in the database first (check_same_database). Real MLflow
sqlite databases, made by MLflow's own client, read by both readers (MLflow's client and
``mlflow-sql:``). Each test failed before the check."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from conftest import one_error_line, run_cli
from meta_study.store import Store

READERS = ("rest", "sql")
DAY = 86_400_000


def _db(path: Path, experiment: str, ends: list[int]) -> tuple[str, list[str]]:
    """An MLflow sqlite database at ``path`` with one experiment and a finished run per end time
    (ms); its URI and run ids."""
    uri = f"sqlite:///{path}"
    c = MlflowClient(uri)
    exp = c.create_experiment(experiment)
    ids = []
    for i, end in enumerate(ends):
        rid = c.create_run(exp, start_time=end - 1000).info.run_id
        c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.4 + 0.01 * i, end, 0),
                                  Metric("ds/pets/10shot/top1", 0.3 + 0.01 * i, end, 0)],
                    params=[Param("model_name", f"vit_tiny_{i}")])
        c.set_terminated(rid, end_time=end)
        ids.append(rid)
    return uri, ids


def _spec(uri: str, reader: str) -> str:
    return uri if reader == "rest" else f"mlflow-sql:{uri}"


def _ingest(uri: str, reader: str, store: Path, *args: str):
    return run_cli("ingest", _spec(uri, reader), "--store", str(store), "--source", "lab", "--quiet", *args)


def _runs(store: Path) -> set[str]:
    return set(Store(str(store)).to_pandas()["run_id"])


@pytest.fixture(scope="module")
def two_databases(tmp_path_factory):
    """A: runs that ended today; B: other runs of an experiment with the same id (1) and name,
    all ended before A's (a week ago)."""
    root = tmp_path_factory.mktemp("dbs")
    now = int(time.time() * 1000)
    a = _db(root / "a.db", "sweep", [now - 3000, now - 2000])
    b = _db(root / "b.db", "sweep", [now - 7 * DAY, now - 7 * DAY + 1000, now - 7 * DAY + 2000])
    return a, b


@pytest.mark.slow(30)
@pytest.mark.parametrize("reader", READERS)
def test_another_database_under_the_same_source_name_is_refused(two_databases, reader, tmp_path):
    (a, a_runs), (b, b_runs) = two_databases
    store = tmp_path / "store"
    r = _ingest(a, reader, store)
    assert r.returncode == 0, r.stderr
    assert _runs(store) == set(a_runs)
    # before: exit 0, "0 new": B's runs ended before A's watermark of experiment 1
    r = _ingest(b, reader, store)
    line = one_error_line(r, "'lab'", "another database under the same source name", "--full")
    assert "sqlite" in line, line
    assert _runs(store) == set(a_runs)            # nothing stored, nothing dropped
    # the escape: read B as this source's database; later ingests of B are incremental again
    r = _ingest(b, reader, store, "--full")
    assert r.returncode == 0, r.stderr
    assert _runs(store) == set(a_runs) | set(b_runs)
    r = _ingest(b, reader, store)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow(30)
@pytest.mark.parametrize("reader", READERS)
def test_drop_deleted_on_another_database_keeps_the_rows(two_databases, reader, tmp_path):
    """Before: every row of A was dropped as purged (B has experiment 1, not A's runs)."""
    (a, a_runs), (b, _) = two_databases
    store = tmp_path / "store"
    assert _ingest(a, reader, store).returncode == 0
    r = _ingest(b, reader, store, "--drop-deleted")
    one_error_line(r, "another database under the same source name")
    assert _runs(store) == set(a_runs)


@pytest.mark.slow(30)
@pytest.mark.parametrize("reader", READERS)
def test_drop_deleted_on_a_database_without_the_states_experiments_keeps_the_rows(tmp_path, reader):
    """B has none of the experiments whose runs the state holds: before, --drop-deleted dropped
    them all as experiments gone for good (exit 0, "2 runs deleted")."""
    now = int(time.time() * 1000)
    a, a_runs = _db(tmp_path / "a.db", "first", [now - 2000])
    c = MlflowClient(a)
    second = c.create_experiment("second")          # A's runs in experiment 2
    rid = c.create_run(second).info.run_id
    c.log_batch(rid, metrics=[Metric("us/jft/top1", 0.5, now, 0), Metric("ds/pets/10shot/top1", 0.4, now, 0)],
                params=[Param("model_name", "vit_tiny_x")])
    c.set_terminated(rid)
    b = f"sqlite:///{tmp_path / 'b.db'}"
    MlflowClient(b).search_experiments()             # B: only MLflow's Default experiment (id 0)
    store = tmp_path / "store"
    r = run_cli("ingest", _spec(a, reader), "--store", str(store), "--source", "lab", "--quiet",
                "--experiment", "first", "--experiment", "second")
    assert r.returncode == 0, r.stderr
    assert _runs(store) == {*a_runs, rid}
    r = _ingest(b, reader, store, "--drop-deleted")
    one_error_line(r, "none of the 2 experiment(s)", "'lab'", "--drop-deleted would drop them all")
    assert _runs(store) == {*a_runs, rid}
    # without --drop-deleted nothing of A is at stake: B's (no) runs are read as new
    assert _ingest(b, reader, store).returncode == 0
    assert _runs(store) == {*a_runs, rid}


@pytest.mark.slow(30)
@pytest.mark.parametrize("reader", READERS)
def test_the_same_database_with_some_runs_purged_is_not_refused(tmp_path, reader):
    """No false alarm: a state whose latest runs are partly gone from the database (deleted and
    purged) is still this database's."""
    import subprocess
    import sys

    now = int(time.time() * 1000)
    a, ids = _db(tmp_path / "a.db", "sweep", [now - 4000, now - 3000, now - 2000])
    store = tmp_path / "store"
    assert _ingest(a, reader, store).returncode == 0
    MlflowClient(a).delete_run(ids[-1])
    g = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", a, "--tracking-uri", a,
                        "--run-ids", ids[-1]],
                       capture_output=True, text=True, timeout=120)
    assert g.returncode == 0, g.stderr[-2000:]
    r = _ingest(a, reader, store, "--drop-deleted")
    assert r.returncode == 0, r.stderr
    assert _runs(store) == set(ids[:-1])


def test_identity_sample_takes_the_latest_runs_of_each_experiment():
    from meta_study.ingest.mlflow_runs import (DELETED, IDENTITY_MAX, IDENTITY_PER_EXPERIMENT, RunEntry,
                                               identity_sample)

    state = {f"r{e}-{i}": RunEntry(str(e), "FINISHED", 1000 * e + i, "d:x", 1) for e in range(30) for i in range(5)}
    state["gone"] = RunEntry("29", DELETED, 10 ** 9, DELETED, 0)       # a tombstone is never looked up
    sample = identity_sample(state, [str(e) for e in range(30)])
    assert len(sample) == IDENTITY_MAX and "gone" not in sample
    # the experiments with the latest runs first, each its latest runs
    assert sample[:IDENTITY_PER_EXPERIMENT] == ["r29-4", "r29-3", "r29-2"]
    assert identity_sample(state, ["3"]) == ["r3-4", "r3-3", "r3-2"]
    assert identity_sample(state, ["nope"]) == []


def test_a_full_read_or_an_empty_state_looks_nothing_up():
    from meta_study.ingest.mlflow_runs import RunEntry, check_same_database
    from meta_study.ingest.sources import SourceOptions

    def never(ids, exps):
        raise AssertionError("looked up")

    state = {"r": RunEntry("1", "FINISHED", 5, "d:x", 1)}
    check_same_database({}, ["1"], never, SourceOptions(), where="w", source="s")
    check_same_database(state, ["1"], never, SourceOptions(full=True), where="w", source="s")
    check_same_database(state, ["1"], lambda ids, exps: {"r"}, SourceOptions(), where="w", source="s")
    with pytest.raises(Exception, match="another database under the same source name"):
        check_same_database(state, ["1"], lambda ids, exps: set(), SourceOptions(), where="w", source="s")
