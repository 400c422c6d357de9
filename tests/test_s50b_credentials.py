"""Review of credentials in MLflow and database URIs (mlflow_client.py, mlflow_sql.py), stop 50.

- A password holding an unencoded ``@`` and a ``#``, ``/`` or ``?`` (``postgresql://u:p@ss#x@h/db``)
  was refused, but the refusal, the source's name and every line naming the URI showed a part of
  the password as the host (``postgresql://ss``): the user info was cut at its first ``@``. It runs
  to the last ``@`` now.
- A driver error's line had every occurrence of the password text replaced: with a short password
  (``a``) the line was garbled ("p***ssword ***uthentic***tion f***iled", which also told the
  password) and a refused password was no longer said to be one. A short password is blanked where
  it stands alone or as a value, and the failure is read from the driver's own words.
"""

from __future__ import annotations

import socket
import struct
import threading

import pytest

import test_ingest_mlflow_sql_postgres as pg_tests
from conftest import one_error_line, run_cli
from meta_study.errors import UserError
from meta_study.ingest.mlflow_runs import default_mapping
from meta_study.ingest.mlflow_source import MlflowSource
from meta_study.ingest.mlflow_sql import MlflowSqlSource, _short, db_source, parse_target
from meta_study.mlflow_client import (has_credentials, refuse_credentials, safe_uri, shown_uri, source_uri,
                                      without_user_info)

# (URL, the parts of its password that must never be shown, what it names without credentials)
AT_SIGNED = [("postgresql://u:pw@SEGA#SEGB@db.lab/mlflow", ("SEGA", "SEGB"), "postgresql://db.lab/mlflow"),
             ("postgresql://u:pw@SEGA/SEGB@db.lab:5433/mlflow", ("SEGA", "SEGB"), "postgresql://db.lab:5433/mlflow"),
             ("mysql+pymysql://u:pw@SEGA?SEGB@db.lab/mlflow", ("SEGA", "SEGB"), "mysql+pymysql://db.lab/mlflow"),
             ("http://u:pw@SEGA#SEGB@127.0.0.1:5000", ("SEGA", "SEGB"), "http://127.0.0.1:5000"),
             ("https://u:pw@SEGA@SEGB/x@mlflow.lab/p", ("SEGA", "SEGB"), "https://mlflow.lab/p"),
             ("postgresql://u@SEGA#SEGB@db.lab/mlflow", ("SEGA", "SEGB"), "postgresql://db.lab/mlflow"),
             ("postgresql://u@SEGA/SEGB@db.lab/mlflow", ("SEGA", "SEGB"), "postgresql://db.lab/mlflow")]
#: another scheme: urllib took ``SEGA/SEGB`` for a port and a path, and it was shown whole
OTHER = [("ftp://u:SEGA/SEGB@files.lab/x", ("SEGA", "SEGB"), "ftp://files.lab/x"),
         ("ftp://u:pw@SEGA#SEGB@files.lab/x", ("SEGA", "SEGB"), "ftp://files.lab/x")]


@pytest.mark.parametrize("url,secrets,bare", AT_SIGNED + OTHER)
def test_a_password_holding_an_at_sign_is_cut_to_the_last_at(url, secrets, bare):
    assert has_credentials(url) or (url, secrets, bare) in OTHER
    for f in (safe_uri, shown_uri, source_uri, db_source):
        for u in (url, "mlflow-sql:" + url):
            shown = f(u)
            assert not any(s.lower() in shown.lower() for s in secrets) and "u:" not in shown, (f, u, shown)
    assert safe_uri(url) == shown_uri(url) == bare
    assert safe_uri("mlflow-sql:" + url) == "mlflow-sql:" + bare
    assert without_user_info(url) == bare


@pytest.mark.parametrize("url,secrets,bare", AT_SIGNED)
def test_its_refusal_shows_no_part_of_the_password(url, secrets, bare):
    for call in (lambda: refuse_credentials(url), lambda: parse_target("mlflow-sql:" + url),
                 lambda: MlflowSource(url, default_mapping())):
        with pytest.raises(UserError) as e:
            call()
        msg = str(e.value)
        assert "credentials" in msg and not any(s.lower() in msg.lower() for s in secrets), msg


def test_the_cli_refuses_it_naming_the_server_not_the_password(tmp_path):
    # nothing is contacted: refused before any connection
    for spec in ("mlflow-sql:postgresql://u:pw@SEGA#SEGB@127.0.0.1:1/mlflow", "postgresql://u:pw@SEGA#SEGB@127.0.0.1:1/db"):
        r = run_cli("ingest", spec, "--store", str(tmp_path / "st"))
        line = one_error_line(r, "127.0.0.1:1", "credentials")
        assert "sega" not in line.lower() and "segb" not in line.lower(), line


def test_uris_without_credentials_keep_their_names():
    for url in ("postgresql://db.lab:5432/mlflow", "postgresql://db.lab/mlflow?connect_timeout=3",
                "sqlite:////data/a@b/mlflow.db", "mlflow-sql:sqlite:////data/a@b/mlflow.db", "file:///data/a@b",
                "s3://bucket/runs/a@b", "http://127.0.0.1:5000", "databricks://profile:prefix"):
        assert safe_uri(url) == without_user_info(url).split("?")[0] == url.split("?")[0], url
    assert not has_credentials("s3://bucket/runs/a@b") and not has_credentials("sqlite:////data/a@b/mlflow.db")
    assert not has_credentials("https://mlflow.lab/@team") and safe_uri("https://mlflow.lab/@team") == "https://mlflow.lab/@team"


# ---- a driver's error line with a short password -----------------------------------------------

AUTH = 'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "ann"'


def test_a_short_password_does_not_garble_the_error_line():
    line = _short(Exception(AUTH), "a")
    assert line == f"authentication failed ({AUTH})", line
    assert _short(Exception("connect_timeout='x' is not a number"), "a") == "connect_timeout='x' is not a number"


@pytest.mark.parametrize("text,password,shown", [
    ("invalid dsn: user=ann password=a host=h", "a", "invalid dsn: user=ann password=*** host=h"),
    ("invalid dsn: user=ann password='s 3' host=h", "s 3", "invalid dsn: user=ann password=*** host=h"),
    ("bad {'user': 'ann', 'password': 'xy'}", "xy", "bad {'user': 'ann', 'password': ***}"),
    ("at postgresql://ann:p@ss#x@h/db now", "p@ss#x", "at postgresql://***@h/db now"),
    ("token abc is bad", "abc", "token *** is bad"),
    ("token ab is bad", "ab", "token ab is bad"),           # a word: only where it stands as a value
    ("bad value 'ab' given", "ab", "bad value '***' given"),
    ("a longpassword1 inside", "longpassword1", "a *** inside"),
    ("in_longpassword1_side", "longpassword1", "in_***_side"),
    ("failed for user ann", "a", "failed for user ann"),
])
def test_a_password_is_blanked_where_it_stands_as_one(text, password, shown):
    from meta_study.ingest.mlflow_sql import redact

    assert redact(text, password) == shown


class _RefusingPostgres:
    """A PostgreSQL server on 127.0.0.1 that answers SSL and GSS requests with "N" and every
    startup with a FATAL "password authentication failed" (the libpq client's view of a wrong
    password), then closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except OSError:
                    pass

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            if not chunk:
                raise OSError("closed")
            out += chunk
        return out

    def _one(self, conn: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", self._read(conn, 8))
            if code in (80877103, 80877104):      # SSLRequest, GSSENCRequest: not here
                conn.sendall(b"N")
                continue
            self._read(conn, length - 8)          # the rest of the startup message
            fields = b"".join(k + v.encode() + b"\0" for k, v in (
                (b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28P01"),
                (b"M", 'password authentication failed for user "ann"'))) + b"\0"
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            return

    def close(self) -> None:
        self.sock.close()


def test_a_refused_short_password_is_said_to_be_refused(monkeypatch):
    pytest.importorskip("psycopg")
    server = _RefusingPostgres()
    try:
        monkeypatch.setenv("META_STUDY_DB_USER", "ann")
        monkeypatch.setenv("META_STUDY_DB_PASSWORD", "a")
        for var in ("PGPASSFILE", "PGSERVICE", "PGSSLMODE", "PGGSSENCMODE", "PGHOST", "PGPORT"):
            monkeypatch.delenv(var, raising=False)
        src = MlflowSqlSource(f"mlflow-sql:postgresql://127.0.0.1:{server.port}/mlflow", default_mapping())
        with pytest.raises(UserError) as e:
            src.connect()
        msg = str(e.value)
        assert "password authentication failed for user" in msg and "***" not in msg, msg
        assert "the database refused the credentials" in msg and "META_STUDY_DB_PASSWORD" in msg, msg
    finally:
        server.close()


# ---- pg8000: a connect timeout, for the connect only ----------------------------------------------


class _Silent:
    """A server on 127.0.0.1 that takes every connection and never answers (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def _fake_pg8000():
    """A stand-in for pg8000 (not installed here) as far as a connect goes: ``connect()`` takes no
    ``sock``, its ``Connection`` class does (pg8000 >= 1.29); without one it opens its own socket
    with ``timeout`` for its life; then it sends the SSL request and reads the answer."""
    import types

    mod = types.ModuleType("pg8000")
    mod.__version__ = "1.31.6"
    mod.paramstyle = "format"
    mod.apilevel, mod.threadsafety = "2.0", 1

    class Error(Exception):
        pass

    class InterfaceError(Error):
        pass

    class DatabaseError(Error):
        pass

    class OperationalError(DatabaseError):
        pass

    for cls in (Error, InterfaceError, DatabaseError, OperationalError):
        setattr(mod, cls.__name__, cls)
    for name in ("Warning", "DataError", "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        setattr(mod, name, type(name, (DatabaseError,), {}))

    class Connection:
        def __init__(self, user, host="localhost", database=None, port=5432, password=None, timeout=None,
                     tcp_keepalive=True, sock=None, **_kw):
            self.sock = sock if sock is not None else socket.create_connection((host, port), timeout)
            self.sock.sendall(struct.pack("!ii", 8, 80877103))
            if self.sock.recv(1) != b"N":
                raise InterfaceError("network error")

        def close(self) -> None:
            self.sock.close()

    mod.Connection = Connection
    mod.connect = lambda user, **kw: Connection(user, **kw)
    return mod


def test_a_pg8000_connect_to_a_port_that_never_answers_times_out(monkeypatch):
    """pg8000 has no connect_timeout: a port that took the connection and never answered hung the
    ingest for good (the connect below never returned)."""
    import sys

    from meta_study.ingest import mlflow_runs

    monkeypatch.setitem(sys.modules, "pg8000", _fake_pg8000())
    monkeypatch.setattr(mlflow_runs, "DB_CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setenv("META_STUDY_DB_USER", "ann")
    monkeypatch.setenv("META_STUDY_DB_PASSWORD", "pw")
    server, out = _Silent(), []

    def connect() -> None:
        src = MlflowSqlSource(f"mlflow-sql:postgresql+pg8000://127.0.0.1:{server.port}/mlflow", default_mapping())
        try:
            src.connect()
        except UserError as e:
            out.append(str(e))

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(60)           # far past the 0.3 s: only a hang gets here unfinished
    hung = t.is_alive()
    server.close()       # unblocks a hung connect
    t.join(10)
    assert not hung and out, "the connect hung"
    assert "cannot connect (timeout expired" in out[0] and "did not answer within 0.3 s" in out[0], out[0]


def test_the_pg8000_timeout_is_the_connects_only():
    """The connection pg8000 gets has no timeout left on its socket: its ``timeout`` would have
    failed every query longer than it."""
    import types

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer() -> None:
        c, _ = srv.accept()
        c.recv(8)
        c.sendall(b"N")
        c.recv(1)          # held open until the client closes

    threading.Thread(target=answer, daemon=True).start()
    from meta_study.ingest.mlflow_sql import _pg8000_connect

    dialect = types.SimpleNamespace(loaded_dbapi=_fake_pg8000())
    conn = _pg8000_connect(dialect, None, [], {"user": "ann", "host": "127.0.0.1", "port": srv.getsockname()[1]})
    try:
        assert conn.sock.gettimeout() is None
    finally:
        conn.close()
        srv.close()
    # the user's own socket settings are theirs: SQLAlchemy connects as it would
    assert _pg8000_connect(dialect, None, [], {"user": "ann", "unix_sock": "/x"}) is None


postgres = pg_tests.postgres     # the fixture: a throwaway PostgreSQL cluster, skipped without one


@pytest.mark.slow(30)
def test_a_pg8000_session_connects_and_reads_past_the_connect_timeout_on_postgres(request, monkeypatch):
    """Against a real PostgreSQL through the real pg8000 (skipped without either): the connection
    is made on the socket given to pg8000, and a query longer than the connect timeout runs."""
    pytest.importorskip("pg8000")
    postgres = request.getfixturevalue("postgres")     # the cluster only where pg8000 is there
    from meta_study.ingest import mlflow_runs

    monkeypatch.setattr(mlflow_runs, "DB_CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setenv("META_STUDY_DB_USER", "admin")
    monkeypatch.setenv("META_STUDY_DB_PASSWORD", pg_tests.ADMIN_PW)
    src = MlflowSqlSource(f"mlflow-sql:postgresql+pg8000://127.0.0.1:{postgres['port']}/postgres", default_mapping())
    engine, conn, _ = src.connect()
    try:
        import sqlalchemy

        assert conn.execute(sqlalchemy.text("SELECT pg_sleep(1.5), 1")).all()[0][1] == 1
    finally:
        conn.close()
        engine.dispose()
    monkeypatch.setenv("META_STUDY_DB_PASSWORD", "wrong")
    with pytest.raises(UserError, match="the database refused the credentials"):
        src.connect()

