"""Review of the MLflow sources and client helpers (mlflow_source.py, mlflow_sql.py, mlflow_runs.py,
mlflow_client.py), stop 48.

- An http(s) tracking URI whose password holds ``/``, ``?`` or ``#`` (``http://u:12/34@h:5000``)
  was no credentials to urllib (host ``u``, port 12): it was not refused, and every line naming the
  server printed the password (``http://u:12/34@h:5000: FAILED: unknown host``).
- A tag whose value is NULL in MLflow's database was ``None`` read through MLflow's client on a
  ``sqlite:`` file and through ``mlflow-sql:``, ``""`` through a tracking server: one run's
  quarantine payload differed with the path that read it.
- A PostgreSQL read had no statement timeout: a query waiting on a lock (``mlflow db upgrade``,
  ``VACUUM FULL``) hung the ingest for good.
- A sqlite path holding ``#`` (``.../run#1/mlflow.db``) was named cut there (``.../run``): two
  databases had one source name, their rows were stored under it, and the second was refused as
  "another database under the same source name". A store's older cut name is kept.
- A source name with a password in it, stored by an older version (``postgresql://u:12/34@h/db``),
  was taken as the clean URI's name without a word (every new row carried the password), and for
  ``mlflow-sql:`` not matched at all (every run stored twice): one line now says so.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from conftest import one_error_line, run_cli
from meta_study.errors import UserError
from meta_study.ingest.mlflow_runs import default_mapping
from meta_study.ingest.mlflow_source import MlflowSource
from meta_study.mlflow_client import has_credentials, refuse_credentials, safe_uri, shown_uri, source_uri
import test_ingest_mlflow_sql_postgres as pg_tests
from mlflow_server import MlflowServer, refused_port
from test_s44_mlflow_runs import Lab, empty_db  # noqa: F401 - a fixture

# --------------------------------------------------------------------------------------------
# http(s) user info with '/', '?' or '#' in its password
# --------------------------------------------------------------------------------------------

# (URL, the secret part that must never be shown, what it names without credentials)
HIDDEN = [("http://u:12/34@127.0.0.1:5000", "12/34", "http://127.0.0.1:5000"),
          ("https://u:pa/ss@mlflow.lab", "pa/ss", "https://mlflow.lab"),
          ("http://u:p#ss@127.0.0.1:5000", "p#ss", "http://127.0.0.1:5000"),
          ("HTTP://u:a?b@127.0.0.1:5000/x", "a?b", "http://127.0.0.1:5000/x")]


@pytest.mark.parametrize("url,secret,bare", HIDDEN)
def test_an_http_password_with_a_slash_is_credentials(url, secret, bare):
    assert has_credentials(url)
    for f in (safe_uri, shown_uri, source_uri):
        assert secret not in f(url) and "u:" not in f(url), f
        assert f(url).lower() == bare.lower(), f


@pytest.mark.parametrize("url,secret,bare", HIDDEN)
def test_such_an_http_url_is_refused_in_one_line_without_the_password(url, secret, bare):
    for call in (lambda: MlflowSource(url, default_mapping()), lambda: refuse_credentials(url)):
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "credentials" in msg and secret not in msg and "u:" not in msg and "%40" in msg, msg


def test_the_cli_refuses_it_naming_the_server_not_the_password(tmp_path):
    port = refused_port()    # nothing is contacted: refused before any request
    r = run_cli("ingest", f"http://u:12/34@127.0.0.1:{port}", "--store", str(tmp_path / "st"))
    line = one_error_line(r, f"http://***@127.0.0.1:{port}", "credentials")
    assert "12/34" not in line and "34@" not in line and "u:12" not in line, line


def test_plain_http_urls_are_as_before():
    for url in ("http://127.0.0.1:5000", "https://mlflow.lab/prefix", "http://[::1]:5000", "http://h:5000/a/b"):
        assert not has_credentials(url), url
    assert has_credentials("http://u:p@h:5000") and safe_uri("http://u:p@h:5000") == "http://h:5000"
    assert safe_uri("http://h:5000/x?token=1#f") == "http://h:5000/x"


# --------------------------------------------------------------------------------------------
# a NULL tag value: "" whichever path reads the run
# --------------------------------------------------------------------------------------------

@pytest.fixture
def lab(tmp_path, empty_db) -> Lab:  # noqa: F811 - empty_db is the fixture imported above
    return Lab(tmp_path, empty_db)


def _quarantined(store: Path) -> list[dict]:
    from meta_study.store import Store

    out = []
    for raw in Store(str(store)).quarantine().column("raw").to_pylist():
        d = json.loads(raw)
        d.pop("source")
        out.append(d)
    return out


@pytest.mark.slow(45)
def test_a_null_tag_value_reads_alike_through_rest_client_and_sql(lab):
    import sqlite3

    import pandas as pd

    good = lab.run({"us/in1k/top1": 0.5, "ds/pets/10shot/top1": 0.4}, tags={"note": "x", "researcher": "r"})
    bad = lab.run({"ds/pets/10shot/top1": 0.4}, tags={"note": "x"})     # no US metric: quarantined
    with sqlite3.connect(lab.db) as con:       # what a tool writing the database directly leaves
        con.execute("UPDATE tags SET value = NULL WHERE key IN ('note', 'researcher')")
    con.close()
    stores = {}
    with MlflowServer(lab.tmp / "server", db=lab.db) as srv:
        for name, spec in (("rest", srv.uri), ("client", lab.spec), ("sql", f"mlflow-sql:sqlite:///{lab.db}")):
            stores[name] = lab.tmp / f"st-{name}"
            r = run_cli("ingest", spec, "--store", str(stores[name]), cwd=lab.tmp)
            assert r.returncode == 0 and "1 quarantined" in r.stdout, r.stdout + r.stderr
    rest = _quarantined(stores["rest"])
    assert [q["run_id"] for q in rest] == [bad] and rest[0]["tags"]["note"] == "", rest
    rows = {k: pd.read_parquet(v).drop(columns=["source", "ingested_at"]) for k, v in stores.items()}
    assert list(rows["rest"]["run_id"]) == [good]
    for name in ("client", "sql"):
        assert _quarantined(stores[name]) == rest, name
        pd.testing.assert_frame_equal(rows[name], rows["rest"])


# --------------------------------------------------------------------------------------------
# PostgreSQL: a statement timeout
# --------------------------------------------------------------------------------------------

ADMIN_PW = pg_tests.ADMIN_PW
postgres = pg_tests.postgres     # the fixture: a throwaway PostgreSQL cluster, skipped without one


def _show_timeout(postgres, monkeypatch) -> str:
    import sqlalchemy

    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    monkeypatch.setenv("META_STUDY_DB_USER", "admin")
    monkeypatch.setenv("META_STUDY_DB_PASSWORD", ADMIN_PW)
    src = MlflowSqlSource(f"mlflow-sql:postgresql+{postgres['driver']}://127.0.0.1:{postgres['port']}/postgres",
                          default_mapping())
    engine, conn, _ = src.connect()
    try:
        return conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar()
    finally:
        conn.close()
        engine.dispose()


@pytest.mark.slow(20)
def test_a_postgres_session_has_a_statement_timeout_unless_one_is_set(postgres, monkeypatch):
    from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S

    assert STATEMENT_TIMEOUT_S == 1800
    assert _show_timeout(postgres, monkeypatch) == "30min"
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=7s")     # the user's own wins
    assert _show_timeout(postgres, monkeypatch) == "7s"


@pytest.mark.slow(60)
def test_a_postgres_read_waiting_on_a_lock_fails_in_one_line(postgres, tmp_path, monkeypatch):
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    from meta_study.ingest import mlflow_sql

    port, drv = postgres["port"], postgres["driver"]
    admin = f"postgresql+{drv}://admin:{ADMIN_PW}@127.0.0.1:{port}"
    with sqlalchemy.create_engine(f"{admin}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text("CREATE DATABASE locked"))
    client = MlflowClient(tracking_uri=f"{admin}/locked")       # MLflow's tables
    client.create_experiment("e")
    client._tracking_client.store.engine.dispose()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:     # a migration's lock on runs, released when the test is done (or after 300 s)
        engine = sqlalchemy.create_engine(f"{admin}/locked")
        with engine.connect() as c:
            c.execute(sqlalchemy.text("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(300)
            c.rollback()
        engine.dispose()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert locked.wait(60)
        monkeypatch.setattr(mlflow_sql, "STATEMENT_TIMEOUT_S", 1)
        monkeypatch.setenv("META_STUDY_DB_USER", "admin")
        monkeypatch.setenv("META_STUDY_DB_PASSWORD", ADMIN_PW)
        spec = f"mlflow-sql:postgresql+{drv}://127.0.0.1:{port}/locked"
        r = run_cli("ingest", spec, "--store", str(tmp_path / "st"))
    finally:
        release.set()
        holder.join(60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    lines = [x for x in r.stderr.splitlines() if "FAILED" in x]
    assert len(lines) == 1 and "statement timeout" in lines[0] and "PGOPTIONS" in lines[0], r.stderr
    assert ADMIN_PW not in r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# a sqlite path holding '#'
# --------------------------------------------------------------------------------------------

def _hashed_db(tmp: Path, empty: Path, sub: str, acc: float) -> Path:
    import shutil

    from mlflow.tracking import MlflowClient

    db = tmp / sub / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty, db)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    rid = client.create_run(client.create_experiment("bob")).info.run_id
    client.log_metric(rid, "us/in1k/top1", 0.5)
    client.log_metric(rid, "ds/pets/10shot/top1", acc)
    client.set_terminated(rid)
    client._tracking_client.store.engine.dispose()
    return db


@pytest.mark.slow(40)
def test_two_sqlite_files_in_directories_with_a_hash_are_two_sources(tmp_path, empty_db):  # noqa: F811
    import pandas as pd

    from meta_study.mlflow_client import shown_uri

    one, two = _hashed_db(tmp_path, empty_db, "run#1", 0.4), _hashed_db(tmp_path, empty_db, "run#2", 0.3)
    assert safe_uri(f"sqlite:///{one}") == shown_uri(f"sqlite:///{one}") == f"sqlite:///{one}"
    assert safe_uri(f"mlflow-sql:sqlite:///{one}?mode=ro") == f"mlflow-sql:sqlite:///{one}"
    store = str(tmp_path / "st")
    for db in (one, two):
        r = run_cli("ingest", f"sqlite:///{db}", "--store", store)
        assert r.returncode == 0 and f"sqlite:///{db}: 1 new" in r.stdout, r.stdout + r.stderr
    r = run_cli("ingest", f"mlflow-sql:sqlite:///{two}", "--store", store)    # the same database: the same rows
    assert r.returncode == 0 and "0 new, 0 updated, 1 unchanged" in r.stdout, r.stdout + r.stderr
    df = pd.read_parquet(store)
    assert sorted(df["source"]) == [f"sqlite:///{one}", f"sqlite:///{two}"], df["source"]


@pytest.mark.slow(30)
def test_a_stores_name_cut_at_the_hash_is_kept(tmp_path, empty_db):  # noqa: F811
    import pandas as pd

    one = _hashed_db(tmp_path, empty_db, "run#1", 0.4)
    old = f"sqlite:///{tmp_path}/run"     # what an older meta-study named it
    store = str(tmp_path / "st")
    for spec in (f"sqlite:///{one}", f"mlflow-sql:sqlite:///{one}"):
        r = run_cli("ingest", spec, "--store", store, "--source", old)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli("ingest", spec, "--store", store, "--full")
        assert r.returncode == 0 and "0 new" in r.stdout, r.stdout + r.stderr
    assert list(pd.read_parquet(store)["source"]) == [old]


# --------------------------------------------------------------------------------------------
# a stored source name holding credentials
# --------------------------------------------------------------------------------------------

def test_a_stored_name_with_a_password_is_said_not_taken(tmp_path):
    from meta_study.ingest.mlflow_runs import sqlite_source, state_table, stored_source
    from meta_study.ingest.mlflow_sql import stored_db_source
    from meta_study.store import Store

    store = Store(str(tmp_path / "st"))
    secret = "12/34"
    store.commit(state={f"mlflow:postgresql://u:{secret}@db.lab/mlflow": state_table({}),
                        f"mlflow-sql:postgresql://u:{secret}@db.lab:5432/mlflow": state_table({}),
                        "mlflow:http://127.0.0.1:5000/": state_table({})})
    calls = [lambda: stored_source(store, "mlflow:", "postgresql://db.lab/mlflow",
                                   canonical=lambda o: sqlite_source(source_uri(o))),
             lambda: stored_db_source(store, "postgresql+psycopg://db.lab/mlflow")]
    for call in calls:
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "credentials" in msg and "new store" in msg and "--source" in msg, msg
        assert secret not in msg and "u:" not in msg and "postgresql://***@db.lab" in msg, msg
    # a stored name without credentials is taken as before
    assert stored_source(store, "mlflow:", "http://127.0.0.1:5000") == "http://127.0.0.1:5000/"
