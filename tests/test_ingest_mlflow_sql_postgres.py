"""The SQL source against a real PostgreSQL (a throwaway cluster from ``initdb``) behind a real
``mlflow server``: same rows as REST, a SELECT-only role, credentials only from the environment,
a read-only session, and one line for a wrong password.

Runs when PostgreSQL's server binaries (``initdb``, ``pg_ctl``) and a driver (``psycopg`` or
``psycopg2``) are installed, and skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from mlflow_server import MlflowServer, free_port
from test_ingest_mlflow import alice_run, bob_run
from test_ingest_mlflow_sql import _quarantine, _rows, errors

ADMIN_PW, READER_PW = "Adm1n-pg-secret", "Read3r-pg-secret"


def _driver() -> str | None:
    return next((m for m in ("psycopg", "psycopg2") if importlib.util.find_spec(m)), None)


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    driver = _driver()
    if driver is None:
        pytest.skip("no PostgreSQL driver for SQLAlchemy (pip install 'psycopg[binary]')")
    # initdb refuses to run as root: run the cluster as the postgres user, in a directory it can reach
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="meta-study-pg-"))
    pwfile = root / "pw"
    pwfile.write_text(ADMIN_PW + "\n")
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    data = root / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "admin", "--pwfile", str(pwfile),
                        "-A", "scram-sha-256"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL cluster: {e}")
    try:
        yield {"port": port, "driver": driver, "root": root}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], check=False, capture_output=True,
                       timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow(40)
def test_postgres_same_rows_as_rest_with_a_read_only_role(postgres, tmp_path):
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    port, drv = postgres["port"], postgres["driver"]
    admin = f"postgresql+{drv}://admin:{ADMIN_PW}@127.0.0.1:{port}"
    with sqlalchemy.create_engine(f"{admin}/postgres", isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(sqlalchemy.text("CREATE DATABASE mlflow"))
    with MlflowServer(tmp_path / "server", backend=f"{admin}/mlflow") as srv:
        client = MlflowClient(srv.uri)
        a, b = client.create_experiment("pg-alice"), client.create_experiment("pg-bob")
        for i in range(3):
            alice_run(client, a, i)
        nan = alice_run(client, a, 4, metrics={"ds/pets/10shot/top1": float("nan")})
        bob_run(client, b, 0)
        engine = sqlalchemy.create_engine(f"{admin}/mlflow")
        with engine.begin() as c:   # the role the docs recommend: SELECT on MLflow's tables, nothing else
            c.execute(sqlalchemy.text(f"CREATE ROLE reader LOGIN PASSWORD '{READER_PW}'"))
            c.execute(sqlalchemy.text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader"))
        engine.dispose()
        spec = f"mlflow-sql:postgresql+{drv}://127.0.0.1:{port}/mlflow"
        stores = {k: str(tmp_path / f"store-{k}") for k in ("rest", "sql", "pgpass")}
        common = ["--experiment", "pg-alice", "--quiet"]
        rest = run_cli("ingest", srv.uri, "--store", stores["rest"], *common)
        assert rest.returncode == 0, rest.stderr
        env = {"META_STUDY_DB_USER": "reader", "META_STUDY_DB_PASSWORD": READER_PW}
        sql = run_cli("ingest", spec, "--store", stores["sql"], *common, env=env)
        assert sql.returncode == 0, sql.stderr
        # libpq's own variables work too
        pgpass = run_cli("ingest", spec, "--store", stores["pgpass"], *common,
                         env={"PGUSER": "reader", "PGPASSWORD": READER_PW})
        assert pgpass.returncode == 0, pgpass.stderr
        wrong = run_cli("ingest", spec, "--store", str(tmp_path / "store-wrong"),
                        env={"META_STUDY_DB_USER": "reader", "META_STUDY_DB_PASSWORD": "not-" + READER_PW})
        engine = sqlalchemy.create_engine(f"{admin}/mlflow")
        with engine.begin() as c:   # a role that may not read a table the source needs
            c.execute(sqlalchemy.text("REVOKE SELECT ON params FROM reader"))
        engine.dispose()
        denied = run_cli("ingest", spec, "--store", str(tmp_path / "store-denied"), "--full", env=env)

    r, s = _rows(stores["rest"]), _rows(stores["sql"])
    assert len(r) == 3 * 6 + 5 and nan in set(_quarantine(stores["rest"])["run_id"])
    # the source column is each source's own URL; everything else is the same
    assert set(r["source"]) == {srv.uri} and set(s["source"]) == {spec.removeprefix("mlflow-sql:")}
    r["source"] = s["source"] = "x"
    pd.testing.assert_frame_equal(s, r)
    pd.testing.assert_frame_equal(_rows(stores["pgpass"]).assign(source="x"), r)
    q_r, q_s = _quarantine(stores["rest"]), _quarantine(stores["sql"])
    assert list(q_s["reason"]) == list(q_r["reason"]) and list(q_s["run_id"]) == list(q_r["run_id"])
    for p in Path(stores["sql"]).rglob("*"):
        if p.is_file():
            assert READER_PW.encode() not in p.read_bytes(), p
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    (line,) = errors(wrong.stderr)
    assert line.startswith(f"{spec}: FAILED: cannot connect (authentication failed") and READER_PW not in line, line
    assert denied.returncode == 2 and "Traceback" not in denied.stderr
    (line,) = errors(denied.stderr)
    assert line.startswith(f"{spec}: FAILED: ") and "permission denied for table params" in line, line


def test_postgres_session_is_read_only(postgres, monkeypatch):
    import sqlalchemy

    from meta_study.ingest.mlflow_runs import default_mapping
    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    port, drv = postgres["port"], postgres["driver"]
    monkeypatch.setenv("META_STUDY_DB_USER", "admin")       # even the owner's session refuses writes
    monkeypatch.setenv("META_STUDY_DB_PASSWORD", ADMIN_PW)
    src = MlflowSqlSource(f"mlflow-sql:postgresql+{drv}://127.0.0.1:{port}/postgres", default_mapping())
    engine, conn, _ = src.connect()
    try:
        with pytest.raises(sqlalchemy.exc.SQLAlchemyError, match="read-only transaction"):
            conn.execute(sqlalchemy.text("CREATE TEMP TABLE intruder (a integer)"))
    finally:
        conn.close()
        engine.dispose()
