"""Review s36 of the MLflow ingest paths (REST/client, direct SQL): each test failed before its fix."""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from meta_study.errors import UserError
from meta_study.ingest.sources import SourceOptions, kind_of
from conftest import run_cli
from mlflow_server import refused_port
from test_ingest_mlflow import alice_run
from test_ingest_mlflow_sql import _rows, errors
from test_ingest_mlflow_sql_postgres import ADMIN_PW, postgres  # noqa: F401 - the fixture


@pytest.mark.slow(40)
def test_postgres_history_max_same_as_the_client(postgres, tmp_path):  # noqa: F811
    """``--history max`` on PostgreSQL: ``is_nan`` is a boolean there, and ``is_nan = 0`` was refused
    (operator does not exist: boolean = integer), so the SQL source failed where the client read."""
    import sqlalchemy

    port, drv = postgres["port"], postgres["driver"]
    admin = f"postgresql+{drv}://admin:{ADMIN_PW}@127.0.0.1:{port}"
    with sqlalchemy.create_engine(f"{admin}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text("CREATE DATABASE mlflow_hist"))
    client = MlflowClient(f"{admin}/mlflow_hist")
    exp = client.create_experiment("pg-hist")
    runs = [alice_run(client, exp, i) for i in range(2)]
    client.log_metric(runs[0], "ds/pets/1shot/top1", 0.95, step=1)
    client.log_metric(runs[0], "ds/pets/1shot/top1", float("nan"), step=2)
    client.log_metric(runs[0], "ds/pets/1shot/top1", 0.11, step=3)
    stores = {k: str(tmp_path / f"store-{k}") for k in ("client", "sql")}
    common = ["--experiment", "pg-hist", "--history", "max", "--quiet", "--source", "pg"]
    env = {"PGUSER": "admin", "PGPASSWORD": ADMIN_PW}   # libpq's: both paths
    spec = f"mlflow-sql:postgresql+{drv}://127.0.0.1:{port}/mlflow_hist"
    sql = run_cli("ingest", spec, "--store", stores["sql"], *common, env=env)
    assert sql.returncode == 0, errors(sql.stderr)
    via = run_cli("ingest", spec.removeprefix("mlflow-sql:"), "--store", stores["client"], *common, env=env)
    assert via.returncode == 0, errors(via.stderr)
    s, c = _rows(stores["sql"]), _rows(stores["client"])
    pd.testing.assert_frame_equal(s, c)
    got = s[(s["run_id"] == runs[0]) & (s["ds_task"] == "pets") & (s["shots"] == 1)]["ds_accuracy"]
    assert got.tolist() == [0.95]


@pytest.mark.parametrize("uri", ["postgresql+psycopg2://db.lab:5432/mlflow", "mysql+pymysql://db.lab/mlflow",
                                 "mssql+pyodbc://db.lab/mlflow", "POSTGRESQL+psycopg://db.lab/mlflow"])
def test_database_uris_with_a_driver_are_mlflow_sources(uri):
    """MLflow's docs write ``mysql+pymysql://``: such a URI was "unsupported source scheme"."""
    assert kind_of(uri) == "mlflow"
    assert kind_of("mlflow-sql:" + uri) == "mlflow-sql"
    with pytest.raises(UserError, match="unsupported source scheme"):
        kind_of("foo+bar://db.lab/mlflow")


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["other-program", "empty-file", "no-tables", "text"])
def test_client_path_refuses_a_sqlite_file_that_is_not_mlflow_and_leaves_it_untouched(kind, tmp_path):
    """``sqlite:///other.db`` of a file without MLflow's tables: MLflow created its ~220 tables and
    indexes in the user's file and the ingest said "0 new" (exit 0)."""
    db = tmp_path / "other.db"
    if kind == "other-program":
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE results (run TEXT, acc REAL)")
            c.execute("INSERT INTO results VALUES ('a', 0.5)")
        c.close()
    elif kind == "empty-file":
        db.write_bytes(b"")
    elif kind == "no-tables":
        c = sqlite3.connect(db)
        c.execute("PRAGMA user_version = 3")
        c.close()
    else:
        db.write_text("run,acc\na,0.5\n")
    before = _digest(db)
    r = run_cli("ingest", f"sqlite:///{db}", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = errors(r.stderr)
    want = "cannot read the database (file is not a database)" if kind == "text" else "not an MLflow tracking database"
    assert line.startswith(f"sqlite:///{db}: FAILED: {want}"), line
    assert _digest(db) == before


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None,
                    reason="no PostgreSQL driver")
def test_client_path_to_a_database_that_refuses_fails_at_once(tmp_path):
    """MLflow's client retries a failed connection 10 times with backoff: a wrong port took ~110 s
    and nine warnings before the one line."""
    drv = "psycopg" if importlib.util.find_spec("psycopg") else "psycopg2"
    uri = f"postgresql+{drv}://127.0.0.1:{refused_port()}/mlflow"
    t0 = time.monotonic()
    r = run_cli("ingest", uri, "--store", str(tmp_path / "store"))
    took = time.monotonic() - t0
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert errors(r.stderr) == [f"{uri}: FAILED: unreachable (connection refused)"]
    assert took < 20, took


def test_postgres_spelling_of_heroku_is_refused_with_the_right_scheme(tmp_path):
    """``postgres://`` (Heroku's spelling; SQLAlchemy and MLflow refuse it) said only "unsupported"."""
    for spec, want in (("postgres://db.lab/mlflow", "postgres://...: unsupported source scheme (PostgreSQL is "
                                                    "postgresql://)"),
                       ("mlflow-sql:postgres://db.lab/mlflow", "mlflow-sql:postgres://db.lab/mlflow: unsupported "
                                                               "database 'postgres' (expected sqlite, postgresql, "
                                                               "mysql; PostgreSQL is postgresql://)")):
        r = run_cli("ingest", spec, "--store", str(tmp_path / "store"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert errors(r.stderr) == [want]


def test_client_path_names_a_missing_driver_plugin(tmp_path):
    r = run_cli("ingest", "postgresql+nodriver://db.lab/mlflow", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = errors(r.stderr)
    assert line.startswith("postgresql+nodriver://db.lab/mlflow: FAILED: no such database driver ("), line


@pytest.mark.parametrize("overlap", [float("nan"), float("inf"), -1.0])
def test_source_options_refuse_an_overlap_that_is_no_finite_number(overlap):
    """The CLI checks --overlap, the library did not: NaN passed and failed as a traceback
    (int(NaN)) in plan_queries at the first incremental read."""
    with pytest.raises(UserError, match="overlap must be a finite number >= 0 seconds"):
        SourceOptions(overlap_s=overlap)


def test_mlflow_sources_that_cannot_be_imported_are_not_an_unsupported_scheme(monkeypatch):
    """An ImportError in the MLflow sources (a broken install) was swallowed, and every MLflow URI
    was "http://...: unsupported source scheme"."""
    import sys

    import meta_study.ingest as pkg
    from meta_study.ingest import sources

    for name in ("mlflow", "mlflow-sql"):
        monkeypatch.delitem(sources._REGISTRY, name, raising=False)
    for mod in ("mlflow_source", "mlflow_sql"):
        monkeypatch.delattr(pkg, mod, raising=False)
        monkeypatch.setitem(sys.modules, f"meta_study.ingest.{mod}", None)   # import raises ImportError
    with pytest.raises(UserError, match=r"^http://\.\.\.: the MLflow sources cannot be loaded \((ModuleNotFound|Import)Error: "):
        kind_of("http://mlflow.lab:5000")
    monkeypatch.undo()
    assert kind_of("http://mlflow.lab:5000") == "mlflow"


@pytest.mark.slow(15)
def test_client_path_refuses_a_postgres_database_that_is_not_mlflow(postgres, tmp_path):  # noqa: F811
    """``postgresql://host/appdb`` of another application: MLflow created its tables in it, and the
    ingest said "0 new" (exit 0)."""
    import sqlalchemy

    port, drv = postgres["port"], postgres["driver"]
    admin = f"postgresql+{drv}://admin:{ADMIN_PW}@127.0.0.1:{port}"
    with sqlalchemy.create_engine(f"{admin}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text("CREATE DATABASE appdb"))
    engine = sqlalchemy.create_engine(f"{admin}/appdb")
    with engine.begin() as c:
        c.execute(sqlalchemy.text("CREATE TABLE orders (id int)"))
    uri = f"postgresql+{drv}://127.0.0.1:{port}/appdb"
    r = run_cli("ingest", uri, "--store", str(tmp_path / "store"), env={"PGUSER": "admin", "PGPASSWORD": ADMIN_PW})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert errors(r.stderr) == [f"{uri}: FAILED: not an MLflow tracking database (no runs/experiments/alembic_version "
                                "tables); give the database the tracking server writes (mlflow server "
                                "--backend-store-uri)"]
    with engine.connect() as c:
        assert set(sqlalchemy.inspect(c).get_table_names()) == {"orders"}
    engine.dispose()


@pytest.mark.parametrize("uri", ["postgresql://reader:s3cret-pw@db.lab:5432/mlflow",
                                 "mysql+pymysql://reader:s3cret-pw@db.lab/mlflow"])
def test_credentials_in_a_database_uri_name_the_drivers_variables(uri, tmp_path):
    """The refusal said to set MLFLOW_TRACKING_USERNAME / PASSWORD, which only HTTP servers read:
    a database driver never sees them, and the ingest then failed to log in."""
    r = run_cli("ingest", uri, "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = errors(r.stderr)
    assert "credentials in the database URI are refused" in line and "PGPASSWORD" in line, line
    assert "MLFLOW_TRACKING" not in line and "s3cret-pw" not in line and "reader" not in line, line
