"""Review of MLflow ingest (mlflow_runs.py, mlflow_source.py, mlflow_sql.py, sources.py, pipeline.py), stop 49.

- The mapping digest in every run's fingerprint hashed the mapping's ``repr`` as written: the same
  MLflow mapping with its ``params:`` (or ``constants:``, ``tags:``, a pattern's constants) in another
  order read every run again. It hashes the canonical order now, and a store's fingerprints of the
  same mapping under the old digest count as unchanged (an upgrade reads no run again).
- A ``postgresql://`` source read through MLflow's client had no statement timeout: a read waiting
  on a lock hung the ingest for good. Its sessions get the SQL source's, and its error is the same
  one line (it said "timed out", which sent the user to the network).
"""

from __future__ import annotations

import threading

import pytest

from conftest import run_cli
from meta_study.ingest import mlflow_runs
from meta_study.ingest.mapping import parse_mapping
from meta_study.ingest.mlflow_runs import (RunEntry, RunExpander, RunRecord, default_mapping, expand_page,
                                           mlflow_mapping, mapping_digest, plan_queries)
from meta_study.ingest.sources import SourceOptions
import test_ingest_mlflow_sql_postgres as pg_tests
from test_s44_mlflow_runs import Lab, empty_db  # noqa: F401 - a fixture

# --------------------------------------------------------------------------------------------
# 1. the mapping digest: canonical order, the old digest still counts
# --------------------------------------------------------------------------------------------

MAPPING = {"name": "m", "params": {"model_name": "model_name", "seed": "seed", "lr": "lr"},
           "tags": {"who": "researcher", "arch": "arch_family"},
           "constants": {"data_fraction": 1.0, "eval_protocol": "linear"},
           "metrics": [{"pattern": "up/acc", "constants": {"us_task": "in1k", "epochs": 90}},
                       {"pattern": "eval/{ds_task}/acc"}]}


def _reordered(doc: dict) -> dict:
    out = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in doc.items()}
    out["metrics"] = [{**m, "constants": dict(reversed(list(m["constants"].items())))} if "constants" in m else m
                      for m in doc["metrics"]]
    return out


def _mlflow(doc: dict):
    return mlflow_mapping(parse_mapping(doc, "m.yaml"))


def test_an_mlflow_mapping_written_in_another_order_or_renamed_has_the_same_digest():
    a, b = _mlflow(MAPPING), _mlflow(_reordered(MAPPING))
    assert repr(a) != repr(b)
    assert mapping_digest(a) == mapping_digest(b)
    assert mapping_digest(_mlflow({**MAPPING, "name": "another"})) == mapping_digest(a)   # the name reads nothing
    # what changes the rows still changes the digest
    assert mapping_digest(_mlflow({**MAPPING, "params": {"model_name": "model_name"}})) != mapping_digest(a)
    assert mapping_digest(a, "max") != mapping_digest(a)
    swapped = {**MAPPING, "metrics": list(reversed(MAPPING["metrics"]))}   # the first pattern that matches wins
    assert mapping_digest(_mlflow(swapped)) != mapping_digest(a)


def _record(i: int) -> RunRecord:
    return RunRecord(run_id=f"r{i}", experiment_id="1", status="FINISHED", start_time=1_000, end_time=2_000 + i,
                     user_id="u", metrics={"up/acc": 0.5, "eval/pets/acc": 0.4}, params={"model_name": f"m{i}"},
                     tags={})


def test_a_reordered_mapping_reads_no_run_again():
    recs = [_record(i) for i in range(3)]
    state: dict = {}
    expand_page(recs, experiments={"1": "e"}, state=state, expander=RunExpander(_mlflow(MAPPING), "s"),
                state_name="mlflow:s", read_ms=10_000)
    other = RunExpander(_mlflow(_reordered(MAPPING)), "s")
    q = plan_queries(["1"], state, SourceOptions(overlap_s=0), mapping_digest=other.digest, now_ms=10_000)
    assert q[0].end_min is not None, q          # from the watermark, not a full read
    batch = expand_page(recs, experiments={"1": "e"}, state=state, expander=other, state_name="mlflow:s",
                        read_ms=10_000)
    assert batch.stats["runs_unchanged"] == 3 and batch.stats["runs_changed"] == 0, batch.stats


def test_a_state_of_the_legacy_digest_counts_as_unchanged_for_the_same_mapping_only():
    from meta_study.ingest.mlflow_runs import adopt_legacy_digest, legacy_mapping_digest

    m = default_mapping()       # its params are not in sorted order: the two digests differ
    exp = RunExpander(m, "s")
    legacy = legacy_mapping_digest(m)
    assert legacy != exp.digest
    rec = _record(0)
    fp = exp.fingerprint(rec, "e")
    old = legacy + fp[len(exp.digest):]
    state = {"r0": RunEntry("1", "FINISHED", 2_000, old, 1),
             "x": RunEntry("1", "FINISHED", 2_000, "0123456789ab:fp:mark", 1)}   # another mapping's
    assert adopt_legacy_digest(state, exp) == 1
    assert state["r0"].fingerprint == fp and state["x"].fingerprint == "0123456789ab:fp:mark"
    # a mapping already in canonical order has one digest: nothing to adopt
    canon = RunExpander(m.canonical(), "s")
    assert legacy_mapping_digest(canon.mapping) == canon.digest


def test_a_store_ingested_before_the_canonical_digest_reads_no_run_again(tmp_path, empty_db, monkeypatch):  # noqa: F811 - the fixture
    lab = Lab(tmp_path, empty_db)
    for i in range(3):
        lab.run({"us/in1k/top1": 0.5, "ds/pets/10shot/top1": 0.4 + i / 100}, params={"model_name": f"m{i}"})
    with monkeypatch.context() as m:     # an older version's digest: the default mapping's repr as written
        m.setattr(mlflow_runs, "mapping_digest", mlflow_runs.legacy_mapping_digest)
        assert "3 runs new" in lab.ingest().stdout
    lab.run({"us/in1k/top1": 0.5, "ds/pets/10shot/top1": 0.3}, params={"model_name": "m3"})
    out = lab.ingest("--full").stdout
    assert "1 run new" in out and "3 runs unchanged" in out, out
    assert len(lab.rows()) == 4


# --------------------------------------------------------------------------------------------
# 2. postgresql:// through MLflow's client: a statement timeout
# --------------------------------------------------------------------------------------------

ADMIN_PW = pg_tests.ADMIN_PW
postgres = pg_tests.postgres     # the fixture: a throwaway PostgreSQL cluster, skipped without one


def test_a_postgres_uri_for_mlflows_client_gets_a_statement_timeout_only_where_none_is_set(monkeypatch):
    from meta_study.ingest.mlflow_source import with_statement_timeout

    monkeypatch.delenv("PGOPTIONS", raising=False)
    uri = "postgresql://db:5432/mlflow"
    assert with_statement_timeout(uri, "0") == "postgresql://db:5432/mlflow?options=-c+statement_timeout%3D1800000"
    assert with_statement_timeout(uri, "7s") == uri            # the role's, database's or PGOPTIONS' own
    assert with_statement_timeout(uri, None) == uri            # not PostgreSQL
    assert with_statement_timeout("postgresql+pg8000://db/mlflow", "0") == "postgresql+pg8000://db/mlflow"
    # a URI's options replace PGOPTIONS in libpq: both kept
    monkeypatch.setenv("PGOPTIONS", "-c search_path=ml")
    assert "search_path%3Dml+-c+statement_timeout" in with_statement_timeout(uri, "0")
    own = with_statement_timeout("postgresql+psycopg://db/mlflow?options=-c%20work_mem%3D8MB&sslmode=require", "0")
    assert "options=-c+work_mem%3D8MB+-c+statement_timeout%3D1800000" in own and "sslmode=require" in own, own


def _admin(postgres) -> str:
    return f"postgresql+{postgres['driver']}://admin:{ADMIN_PW}@127.0.0.1:{postgres['port']}"


def _mlflow_db(postgres, name: str) -> None:
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    with sqlalchemy.create_engine(f"{_admin(postgres)}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    client = MlflowClient(tracking_uri=f"{_admin(postgres)}/{name}")       # MLflow's tables
    client.create_experiment("e")
    client._tracking_client.store.engine.dispose()


@pytest.mark.slow(30)
def test_mlflows_client_on_postgres_has_a_statement_timeout_unless_one_is_set(postgres, monkeypatch):
    import sqlalchemy

    from meta_study.ingest.mlflow_source import MlflowSource

    _mlflow_db(postgres, "plain_timeout")
    monkeypatch.setenv("PGUSER", "admin")
    monkeypatch.setenv("PGPASSWORD", ADMIN_PW)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    uri = f"postgresql+{postgres['driver']}://127.0.0.1:{postgres['port']}/plain_timeout"

    def shown() -> str:
        engine = MlflowSource(uri, default_mapping())._client()._tracking_client.store.engine
        try:
            with engine.connect() as c:
                return c.execute(sqlalchemy.text("SHOW statement_timeout")).scalar()
        finally:
            engine.dispose()

    assert shown() == "30min"
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=7s")     # the user's own wins
    assert shown() == "7s"


@pytest.mark.slow(60)
def test_a_postgres_read_through_mlflows_client_waiting_on_a_lock_fails_in_one_line(postgres, tmp_path,
                                                                                     monkeypatch):
    import sqlalchemy

    from meta_study.ingest import mlflow_sql

    _mlflow_db(postgres, "plain_locked")
    admin = f"{_admin(postgres)}/plain_locked"
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:     # a migration's lock on runs, released when the test is done (or after 120 s)
        engine = sqlalchemy.create_engine(admin)
        with engine.connect() as c:
            c.execute(sqlalchemy.text("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(120)
            c.rollback()
        engine.dispose()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert locked.wait(60)
        monkeypatch.setattr(mlflow_sql, "STATEMENT_TIMEOUT_S", 1)
        monkeypatch.setenv("PGUSER", "admin")
        monkeypatch.setenv("PGPASSWORD", ADMIN_PW)
        monkeypatch.delenv("PGOPTIONS", raising=False)
        spec = f"postgresql+{postgres['driver']}://127.0.0.1:{postgres['port']}/plain_locked"
        r = run_cli("ingest", spec, "--store", str(tmp_path / "st"))
    finally:
        release.set()
        holder.join(60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [x for x in r.stderr.splitlines() if "FAILED" in x]
    assert len(lines) == 1 and "statement timeout" in lines[0] and "PGOPTIONS" in lines[0], r.stderr
    assert "timed out" not in lines[0] and "unreachable" not in lines[0], lines
    assert ADMIN_PW not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "SQLAlchemy database error" not in r.stderr, r.stderr


# --------------------------------------------------------------------------------------------
# 3. a stored name an older version cut at a password's '#' or '?'
# --------------------------------------------------------------------------------------------

def _store_with(tmp_path, *names: str):
    from meta_study.ingest.mlflow_runs import state_table
    from meta_study.store import Store

    store = Store(str(tmp_path / "st"))
    store.commit(state={n: state_table({}) for n in names})
    return store


def _lookups(store, source: str):
    from meta_study.ingest.mlflow_runs import sqlite_source, stored_source
    from meta_study.ingest.mlflow_sql import stored_db_source
    from meta_study.mlflow_client import source_uri

    return [lambda: stored_source(store, "mlflow:", source, canonical=lambda o: sqlite_source(source_uri(o))),
            lambda: stored_db_source(store, source)]


@pytest.mark.parametrize("cut,source", [("mysql+pymysql://u:a", "mysql+pymysql://db.lab/mlflow"),
                                        ("postgresql://u:p", "postgresql+psycopg://db.lab:5432/mlflow")])
def test_a_stored_name_cut_at_a_passwords_hash_is_said_not_passed_by(tmp_path, cut, source):
    """An older version named ``mysql+pymysql://u:a#b@h/db`` ``mysql+pymysql://u:a`` (urllib's fragment):
    no source matches that name, so the database's runs were stored again under their new name, without a
    word, beside the name that holds the password's first characters."""
    from meta_study.errors import UserError

    store = _store_with(tmp_path, f"mlflow:{cut}", f"mlflow-sql:{cut}")
    for lookup in _lookups(store, source):
        with pytest.raises(UserError) as e:
            lookup()
        msg = str(e.value)
        assert "older meta-study" in msg and "new store" in msg and "--source" in msg, msg
        assert cut not in msg and "u:" not in msg and "://***" in msg, msg


def test_a_cut_name_of_another_dialect_or_a_store_that_holds_the_new_name_goes_on(tmp_path):
    # a MySQL cut name and a PostgreSQL source: another database
    store = _store_with(tmp_path / "a", "mlflow:mysql+pymysql://u:a", "mlflow-sql:mysql+pymysql://u:a")
    for lookup in _lookups(store, "postgresql://db.lab/mlflow"):
        assert lookup() == "postgresql://db.lab/mlflow"
    # the store already holds the database under its own name: ingested since, it goes on
    src = "mysql+pymysql://db.lab/mlflow"
    store = _store_with(tmp_path / "b", "mlflow:mysql+pymysql://u:a", f"mlflow:{src}",
                        "mlflow-sql:mysql+pymysql://u:a", f"mlflow-sql:{src}")
    for lookup in _lookups(store, src):
        assert lookup() == src
    # `postgresql://u:12` is as well host u, port 12: a name like any other
    store = _store_with(tmp_path / "c", "mlflow:postgresql://u:12", "mlflow-sql:postgresql://u:12")
    for lookup in _lookups(store, "postgresql://db.lab/mlflow"):
        assert lookup() == "postgresql://db.lab/mlflow"
