"""Review s50 of the MLflow ingest: defects found and fixed, each with a test that failed before."""

from __future__ import annotations

import types

import pytest

import test_ingest_mlflow_sql_postgres as pg_tests
from meta_study.ingest import mlflow_source
from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S


def _fake_dbapi(name: str, version: str = "1.31.2") -> types.ModuleType:
    """A DB-API module SQLAlchemy's dialect accepts (``create_engine(module=...)``); it never connects."""
    mod = types.ModuleType(name)
    mod.paramstyle = "format"
    mod.__version__ = version

    class Error(Exception):
        pass

    for n in ("Error", "DatabaseError", "InterfaceError", "OperationalError", "ProgrammingError", "IntegrityError",
              "DataError", "NotSupportedError", "InternalError", "Warning"):
        setattr(mod, n, Error)
    return mod


class _Conn:
    """A DB-API connection that records what it is sent."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.commits = 0

    def cursor(self) -> "_Conn":
        return self

    def execute(self, sql: str) -> None:
        self.sql.append(sql)

    def close(self) -> None:
        pass

    def commit(self) -> None:
        self.commits += 1


def _engine(url: str):
    import sqlalchemy

    return sqlalchemy.create_engine(url, module=_fake_dbapi("pg8000"))


def _client_of(engine):
    return types.SimpleNamespace(_tracking_client=types.SimpleNamespace(store=types.SimpleNamespace(engine=engine)))


# 1. postgresql+pg8000:// through MLflow's client: no statement timeout (pg8000 reads no libpq `options`),
#    so a read waiting on a lock (a migration's ALTER TABLE, VACUUM FULL) hung the ingest for good.

@pytest.mark.parametrize("current", ["0", "0ms"])
def test_a_pg8000_tracking_uri_gets_a_statement_timeout_on_each_session(monkeypatch, current):
    engine = _engine("postgresql+pg8000://db/mlflow")
    made: list[str] = []
    monkeypatch.setattr(mlflow_source, "_probe_database", lambda uri: current)
    monkeypatch.setattr("meta_study.mlflow_client.mlflow_client", lambda uri: made.append(uri) or _client_of(engine))
    src = mlflow_source.MlflowSource(uri="postgresql+pg8000://db/mlflow", mapping=mlflow_source.default_mapping())
    src._client()
    assert made == ["postgresql+pg8000://db/mlflow"]        # no libpq options for pg8000
    import sqlalchemy

    assert sqlalchemy.event.contains(engine, "connect", mlflow_source._set_statement_timeout)
    listeners = [f for f in engine.pool.dispatch.connect if f is mlflow_source._set_statement_timeout]
    assert len(listeners) == 1                               # on the pool MLflow reads through
    src._client()                                            # armed once per engine
    assert len([f for f in engine.pool.dispatch.connect if f is mlflow_source._set_statement_timeout]) == 1
    conn = _Conn()
    mlflow_source._set_statement_timeout(conn, None)         # what the pool runs on each new session
    assert conn.sql == [f"SET statement_timeout = {int(STATEMENT_TIMEOUT_S * 1000)}"] and conn.commits == 1


@pytest.mark.parametrize("current", ["7s", None])    # the role's, database's own: kept; not PostgreSQL
def test_a_statement_timeout_is_armed_only_where_none_is_set(current):
    import sqlalchemy

    engine = _engine("postgresql+pg8000://db/mlflow")
    mlflow_source.arm_statement_timeout(engine, current)
    assert not sqlalchemy.event.contains(engine, "connect", mlflow_source._set_statement_timeout)


def test_a_libpq_driver_is_left_to_the_uris_options():
    libpq = types.SimpleNamespace(dialect=types.SimpleNamespace(name="postgresql", driver="psycopg2"))
    mlflow_source.arm_statement_timeout(libpq, "0")     # neither listened on nor disposed: no such methods


# 2. databricks://<scope>:<key prefix>, MLflow's secret-scope profile URI, was refused as "the port
#    'prefix' is not a number".

def test_a_databricks_secret_scope_uri_is_not_refused_as_a_bad_port():
    from meta_study.ingest.sources import open_sources

    (src,) = open_sources(["databricks://scope:prefix"], None)
    assert src.source == "databricks://scope:prefix" and src.label == "databricks://scope:prefix"


# 1b. the same against a real PostgreSQL through pg8000 (skipped without the server binaries or pg8000)

postgres = pg_tests.postgres     # the fixture: a throwaway PostgreSQL cluster, skipped without one


@pytest.mark.slow(30)
def test_a_pg8000_session_of_mlflows_engine_gets_the_timeout_on_postgres(request):
    pytest.importorskip("pg8000")
    postgres = request.getfixturevalue("postgres")     # the cluster only where pg8000 is there
    import sqlalchemy

    url = f"postgresql+pg8000://admin:{pg_tests.ADMIN_PW}@127.0.0.1:{postgres['port']}/postgres"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as c:          # a session MLflow's pool made before: closed by the arming
            assert c.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "0"
        mlflow_source.arm_statement_timeout(engine, "0")
        with engine.connect() as c:
            assert c.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "30min"
            c.rollback()
        with engine.connect() as c:          # kept past the transaction the SET opened
            assert c.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "30min"
    finally:
        engine.dispose()


# 3. postgresql+pg8000:// without a user: pg8000 reads no PGUSER / PGPASSWORD / ~/.pgpass, and its
#    "connect() missing 1 required positional argument: 'user'" was a traceback (mlflow-sql:) or
#    "unreachable (...)" (MLflow's client), which sent the user to the network.

@pytest.fixture
def pg8000_without_user(monkeypatch):
    import sys

    fake = _fake_dbapi("pg8000")

    def connect(user, **kw):    # pg8000's own signature: the user is required
        raise AssertionError("not reached")

    fake.connect = lambda **kw: connect(**kw)
    monkeypatch.setitem(sys.modules, "pg8000", fake)
    monkeypatch.delenv("META_STUDY_DB_USER", raising=False)
    monkeypatch.delenv("META_STUDY_DB_PASSWORD", raising=False)


def test_the_sql_source_says_pg8000_needs_the_user_from_meta_study_variables(pg8000_without_user):
    from meta_study.errors import UserError
    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    src = MlflowSqlSource(spec="mlflow-sql:postgresql+pg8000://127.0.0.1:9/mlflow",
                          mapping=mlflow_source.default_mapping())
    with pytest.raises(UserError) as e:
        src.connect()
    msg = str(e.value)
    assert msg.startswith("mlflow-sql:postgresql+pg8000://127.0.0.1:9/mlflow: cannot connect (")
    assert "'user'" in msg and "META_STUDY_DB_USER" in msg and "\n" not in msg, msg


def test_mlflows_client_says_pg8000_reads_no_credentials_not_unreachable(pg8000_without_user):
    from meta_study.errors import UserError

    with pytest.raises(UserError) as e:
        mlflow_source._probe_database("postgresql+pg8000://127.0.0.1:9/mlflow")
    msg = str(e.value)
    assert msg.startswith("postgresql+pg8000://127.0.0.1:9/mlflow: cannot connect (")
    assert "unreachable" not in msg and "reads no credentials" in msg and "postgresql+psycopg://" in msg, msg


# 4. mlflow-sql:postgresql+pg8000:// without pg8000 installed said "pip install 'psycopg[binary]'":
#    the dialect's hint, not the driver the URL names (mysql+pymysql:// likewise said mysqlclient).

@pytest.mark.parametrize("spec,module,package", [
    ("mlflow-sql:postgresql+pg8000://127.0.0.1:9/mlflow", "pg8000", "pip install pg8000"),
    ("mlflow-sql:mysql+pymysql://127.0.0.1:9/mlflow", "pymysql", "pip install PyMySQL"),
])
def test_a_missing_driver_the_url_names_is_the_one_to_install(monkeypatch, spec, module, package):
    import sys

    from meta_study.errors import UserError
    from meta_study.ingest.mlflow_sql import MlflowSqlSource

    monkeypatch.setitem(sys.modules, module, None)     # not installed
    src = MlflowSqlSource(spec=spec, mapping=mlflow_source.default_mapping())
    with pytest.raises(UserError) as e:
        src.connect()
    assert "driver is not installed" in str(e.value) and package in str(e.value), str(e.value)
    assert "psycopg" not in str(e.value) and "mysqlclient" not in str(e.value), str(e.value)
    # MLflow's client names it too
    src = mlflow_source.MlflowSource(uri=spec.removeprefix("mlflow-sql:"), mapping=mlflow_source.default_mapping())
    with pytest.raises(UserError) as e:
        src._call(src._client)
    assert package in str(e.value), str(e.value)
