"""MLflow's SQL tracking database read directly, read-only: the REST source's rows, ~10x faster.

Spec: ``mlflow-sql:`` before an SQLAlchemy URL (``mlflow-sql:sqlite:////abs/mlflow.db``,
``mlflow-sql:postgresql://db:5432/mlflow``, ``mlflow-sql:mysql+pymysql://db/mlflow``). A plain
``sqlite:///...`` spec still goes through MLflow's client (:mod:`.mlflow_source`).

What it reads, with plain SELECTs on MLflow's own tables: ``experiments`` (active ones of the
default workspace, as the server lists them), ``runs`` (active ones: id, experiment, status, times,
user), ``latest_metrics``, ``params`` and ``tags``, and ``metrics`` only with ``history="max"``.
From there on, the rows, state, watermark, overlap and fingerprints are the REST source's
(:mod:`.mlflow_runs`): the same runs give the same rows. One page of ``page_size`` runs is four
queries (runs by keyset on end time, then their metrics, params and tags in chunks of 5,000 ids),
~0.4 s of CPU per 10,000 runs on sqlite (a whole ingest of them ~1.7 s, see BENCHMARKS.md); its
transaction ends before the page is committed to the store, so the tracking DB is never locked
while the store writes.

Read-only: sqlite is opened with ``mode=ro`` (and ``PRAGMA query_only``), PostgreSQL and MySQL
sessions with ``SET ... TRANSACTION READ ONLY``; no table is created and no migration run. The
schema is checked first: the tables and columns read must exist and ``alembic_version`` must be a
revision the installed MLflow knows, or the source fails in one line. A PostgreSQL session gets a
``statement_timeout`` of :data:`STATEMENT_TIMEOUT_S` (30 minutes) unless one is set already.

Credentials: never in the spec (refused). ``META_STUDY_DB_USER`` / ``META_STUDY_DB_PASSWORD``
are set on the URL object at connect time, and the driver's own environment works too (libpq's
``PGUSER``/``PGPASSWORD``/``PGPASSFILE``). Labels, the ``source`` column, the state's name,
quarantine payloads and errors carry only the URL without user info or query (:func:`safe_uri`),
and error messages have the password replaced by ``***`` (:func:`redact`).

This bypasses the tracking server's own auth and permissions: give it a read-only DB role.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import pandas as pd

from ..errors import UserError
from ..mlflow_client import has_credentials, safe_uri, without_user_info
from ..store import Store
from .mapping import IngestMapping
from .mlflow_runs import (FILTER_STATE, LIBPQ_DRIVERS, RunExpander, RunQuery, RunRecord, RunState, adopt_legacy_digest,
                          check_same_database, db_connect_args, driver_hint, drop_deleted, expand_page, expand_pages,
                          fragment_cut_source, full_reads, gave_rows, load_state, merged_no_end, mlflow_mapping,
                          plan_queries, refuse_bad_port, refuse_password_cut_names, refuse_stored_credentials, restamp,
                          runs_of_deleted_experiments, select_experiments, sqlite_source, state_table, stored_runs_of)
from .sources import Progress, SourceBatch, SourceOptions, register_source

PREFIX = "mlflow-sql:"
DIALECTS = ("sqlite", "postgresql", "mysql")
USER_ENV, PASSWORD_ENV = "META_STUDY_DB_USER", "META_STUDY_DB_PASSWORD"
#: What to install when SQLAlchemy's default driver of a dialect is missing.
DRIVER_HINTS = {"sqlite": "sqlite3 is part of Python",
                "postgresql": "pip install 'psycopg[binary]' (or name another driver: postgresql+psycopg2://...)",
                "mysql": "pip install mysqlclient (or pip install pymysql and use mysql+pymysql://...)"}
#: ids per IN list: under sqlite's 32,766 bound variables, and a few ms of SQL text each.
CHUNK = 5_000
#: table -> columns this source reads (``metrics`` only with history="max").
REQUIRED = {"experiments": ("experiment_id", "name", "lifecycle_stage"),
            "runs": ("run_uuid", "experiment_id", "status", "start_time", "end_time", "user_id", "lifecycle_stage"),
            "latest_metrics": ("run_uuid", "key", "value", "is_nan"),
            "params": ("run_uuid", "key", "value"),
            "tags": ("run_uuid", "key", "value")}
HISTORY_REQUIRED = {"metrics": ("run_uuid", "key", "value", "is_nan")}


#: Seconds one statement may run on PostgreSQL (the session's ``statement_timeout``), where the
#: session has none from elsewhere (the role's or the database's setting, libpq's
#: ``PGOPTIONS='-c statement_timeout=...'``, which win; ``0``, no limit, reads as none set):
#: PostgreSQL has none by default, and a read waiting on a lock (``mlflow db upgrade``'s ALTER
#: TABLE, a ``VACUUM FULL``) hung the ingest for good. The server enforces it: a network gone dead
#: is TCP keepalive's. Generous: the slowest read, ``--history max`` over 5,000 runs' whole metric
#: histories, takes seconds to minutes on a large server.
STATEMENT_TIMEOUT_S = 1800

#: Each server dialect's default port: ``postgresql://db/mlflow`` is ``postgresql://db:5432/mlflow``.
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def db_source(url: str) -> str:
    """The database a URL (without the prefix) names, to compare source names: the URL without
    credentials, query or fragment in one spelling per database: the dialect without its
    ``+driver``, lowercased, the host lowercased and without the dialect's default port, a relative
    sqlite path made absolute (:func:`sqlite_source`). As typed, ``postgresql://db/mlflow`` and
    ``postgresql+psycopg2://db:5432/mlflow`` (the driver the docs name when psycopg is missing) were
    two sources of one database, and every run was stored twice (:func:`stored_db_source`). A URL
    it cannot parse is :func:`safe_uri`'s."""
    from urllib.parse import urlsplit, urlunsplit

    m = re.match(r"([A-Za-z][A-Za-z0-9]*)(?:\+[^:/]*)?:", url)
    if not m:
        return safe_uri(url)
    dialect = m.group(1).lower()
    url = dialect + url[m.end() - 1:]
    if dialect == "sqlite":
        return sqlite_source(safe_uri(url))
    try:
        # a password holding '/' (a name older versions stored): urllib's host was the user
        p = urlsplit(without_user_info(url))
        port = p.port
    except ValueError:
        return safe_uri(url)
    if not p.netloc:
        return safe_uri(url)
    host = p.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if port and port != DEFAULT_PORTS.get(dialect):
        host = f"{host}:{port}"
    return urlunsplit((dialect, host, p.path, "", ""))


def stored_db_source(store: Store, source: str) -> str:
    """The name the store already gives the database ``source`` names: that of a stored state
    ``mlflow-sql:<name>`` whose :func:`db_source` is ``source``'s (the first, sorted), else
    ``source``. Its rows keep their name, so the runs are replaced, not stored a second time."""
    if not store.exists():
        return source
    mine = db_source(source)
    cut = fragment_cut_source(mine)    # a sqlite path holding '#', as older versions named it
    olds = [name[len(PREFIX):].split(FILTER_STATE, 1)[0] for name in sorted(store.state_names(f"{PREFIX}*"))]
    for old in olds:
        if old != source and (db_source(old) == mine or old == cut):
            refuse_stored_credentials(old)
            return old
    refuse_password_cut_names(olds, source)   # a name cut at a password's '#': it matches no database
    return source


def claims(spec: str) -> bool:
    return spec.lower().startswith(PREFIX)


def _inner(spec: str) -> str:
    return spec[len(PREFIX):]


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """The alembic revisions of the installed MLflow's tracking-store migrations, read from its
    migration scripts (~70 small files: a few ms; importing mlflow to ask would cost ~1 s)."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    root = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    rx = re.compile(r"^revision\s*=\s*['\"](\w+)['\"]", re.MULTILINE)
    out: set[str] = set()
    for f in (root / "store" / "db_migrations" / "versions").glob("*.py") if root else ():
        out.update(rx.findall(f.read_text(encoding="utf-8")))
    return frozenset(out)


@dataclass(frozen=True)
class DbTarget:
    """A parsed ``mlflow-sql:`` spec: the SQLAlchemy URL (never with credentials) and its label."""

    url: Any           # sqlalchemy.engine.URL, without user or password
    dialect: str       # sqlite | postgresql | mysql
    shown: str         # what messages and the store may show


def parse_target(spec: str) -> DbTarget:
    """Parse and vet a spec; :class:`UserError` (one line, credentials redacted) if it is refused."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    inner = _inner(spec)
    shown = PREFIX + safe_uri(inner)
    # credentials first: a password with '/' in it (u:12/34@h) was a port to urllib
    if has_credentials(inner):
        raise UserError(f"{shown}: credentials in the database URL are refused; set {USER_ENV} and "
                        f"{PASSWORD_ENV} (or the driver's own, e.g. PGPASSWORD)")
    refuse_bad_port(inner, PREFIX)
    try:
        url = make_url(inner)
    except ArgumentError:
        raise UserError(f"{shown}: not an SQLAlchemy database URL (e.g. {PREFIX}sqlite:////abs/mlflow.db)") from None
    dialect = url.get_backend_name()
    if dialect not in DIALECTS:
        hint = "; PostgreSQL is postgresql://" if dialect == "postgres" else ""
        raise UserError(f"{shown}: unsupported database {dialect!r} (expected {', '.join(DIALECTS)}{hint})")
    if dialect == "sqlite":
        if not url.database or url.database == ":memory:":
            raise UserError(f"{shown}: give the database file, e.g. {PREFIX}sqlite:////abs/mlflow.db")
        url = url.set(database=os.path.abspath(url.database), query={})
    return DbTarget(url=url, dialect=dialect, shown=shown)


#: A password at least this long is blanked wherever it stands in an error line, one of at least
#: :data:`REDACT_ALONE` characters where it stands alone (not inside a word), any where it stands
#: as a value: quoted, ``password=``, a URL's user info (:func:`redact`). Blanking every occurrence
#: of a short one garbled the line and told the password: with the password ``a``, "p***ssword
#: ***uthentic***tion f***iled" was no longer read as a refused password.
REDACT_ANYWHERE, REDACT_ALONE = 8, 3
#: A connection parameter's value as drivers print them: ``password=x``, ``password='x y'``,
#: ``'password': 'x'`` (a dict's repr), also as ``passwd``, ``pass`` or ``pwd``.
_PASSWORD_FIELD = re.compile(r"""(\b(?:pass(?:word|wd)?|pwd)\s*=\s*|['"](?:pass(?:word|wd)?|pwd)['"]\s*:\s*)"""
                             r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,;&)}\]]+)""", re.IGNORECASE)
#: A URL's user info in free text: to the last ``@`` before a space or quote.
_TEXT_USER_INFO = re.compile(r"""(?<=://)[^\s'"]*@""")


def redact(text: str, password: str | None) -> str:
    """``text`` (a driver's error line) with no password in it: URLs' user info and every
    ``password=...`` value blanked, and ``password`` itself where it is quoted whole, where it
    stands alone with :data:`REDACT_ALONE` characters or more, and anywhere with
    :data:`REDACT_ANYWHERE` or more (one or two letters alone are words: "is not a number")."""
    text = _TEXT_USER_INFO.sub("***@", _PASSWORD_FIELD.sub(r"\1***", text))
    if password:
        pw = re.escape(password)
        text = re.sub(rf"""(['"]){pw}\1""", r"\1***\1", text)
        if len(password) >= REDACT_ANYWHERE:
            text = re.sub(pw, "***", text)
        elif len(password) >= REDACT_ALONE:
            text = re.sub(rf"(?<![A-Za-z0-9]){pw}(?![A-Za-z0-9])", "***", text)
    return text


def _short(e: BaseException, password: str | None) -> str:
    """One line of a driver error, without the password (:func:`redact`). The kind of failure is
    read from the line as the driver wrote it, the line shown is the redacted one."""
    msg = str(getattr(e, "orig", None) or e).strip()
    raw = msg.splitlines()[0] if msg else type(e).__name__
    first = redact(raw, password)
    low = raw.lower()
    if "connection refused" in low:
        return "connection refused"
    if any(s in low for s in ("password authentication failed", "access denied", "no password supplied")):
        return f"authentication failed ({first[:200]})"
    if "could not translate host name" in low or "name or service not known" in low:
        return "unknown host"
    if "statement timeout" in low:
        return statement_timeout_line(first)
    return first[:300]


def statement_timeout_line(first: str) -> str:
    """One line for PostgreSQL's "canceling statement due to statement timeout" (``first``, the
    error's first line), which named neither the limit nor why: the SQL source's and the MLflow
    client's (``postgresql://``) reads say the same."""
    return (f"{first[:200]} (a query ran past the session's statement_timeout, {STATEMENT_TIMEOUT_S} s unless "
            "set otherwise: a table locked by a migration or VACUUM FULL? PGOPTIONS='-c statement_timeout=...' "
            "sets another)")


def limit_mysql_session(cur: Any) -> None:
    """PostgreSQL's ``statement_timeout`` for a MySQL or MariaDB session (``cur``, a DB-API cursor):
    a statement limit of :data:`STATEMENT_TIMEOUT_S` (MySQL's ``max_execution_time``, milliseconds,
    for SELECTs; MariaDB's ``max_statement_time``, seconds) where none is set (``0``), and a
    metadata-lock wait (``lock_wait_timeout``, seconds) of at most as long. Both servers default to
    no statement limit and a one-year lock wait: a read behind ``mlflow db upgrade``'s ALTER TABLE
    hung the ingest for good. A limit the session has already (the user's, the server's) that is
    shorter is kept. A server without the variable (MySQL before 5.7.8 has no ``max_execution_time``,
    MariaDB before 10.1 no ``max_statement_time``) keeps its sessions as they were: every connection
    to it failed on the SELECT."""
    cur.execute("SELECT @@version, @@lock_wait_timeout")
    version, lock_wait = cur.fetchone()
    if float(lock_wait) > STATEMENT_TIMEOUT_S:
        cur.execute(f"SET SESSION lock_wait_timeout = {int(STATEMENT_TIMEOUT_S)}")
    if "mariadb" in str(version).lower():
        if _session_var(cur, "max_statement_time") == 0:
            cur.execute(f"SET SESSION max_statement_time = {int(STATEMENT_TIMEOUT_S)}")
    elif _session_var(cur, "max_execution_time") == 0:
        cur.execute(f"SET SESSION max_execution_time = {int(STATEMENT_TIMEOUT_S * 1000)}")


def _session_var(cur: Any, name: str) -> float | None:
    """The session's ``@@name`` (a number), or None where the server has no such variable (MySQL's
    error 1193, "Unknown system variable"; any other error is raised)."""
    try:
        cur.execute(f"SELECT @@{name}")
    except Exception as e:  # noqa: BLE001 - each driver has its own error classes; 1193 is MySQL's
        if "1193" in str(getattr(e, "args", ())) or "unknown system variable" in str(e).lower():
            return None
        raise
    return float(cur.fetchone()[0])


def mysql_read_timeout(url: Any) -> dict[str, Any]:
    """``connect_args`` giving a MySQL driver (PyMySQL, mysqlclient) a ``read_timeout`` (seconds one
    socket read waits) a minute past :data:`STATEMENT_TIMEOUT_S`, unless the URL sets one; nothing
    for other drivers. A server gone silent mid-query (no RST: its host down, a route dropped) hung
    the read for good, which no server-side limit ends; a statement the server stops says so first."""
    if url.get_backend_name() != "mysql" or url.get_driver_name() not in ("mysqldb", "pymysql"):
        return {}
    return {} if "read_timeout" in url.query else {"read_timeout": STATEMENT_TIMEOUT_S + 60}


def arm_connect_timeout(engine: Any) -> None:
    """Give ``postgresql+pg8000://`` connections of ``engine`` a connect timeout of
    :data:`~.mlflow_runs.DB_CONNECT_TIMEOUT_S` (for the connect only): pg8000 has no
    ``connect_timeout``, and a port that takes the connection and never answers hung the ingest for
    good. Its own ``timeout`` is the socket's for the connection's whole life (every query longer
    than it failed), so the socket is made here (its TCP connect bounded) and handed to pg8000 as
    the ``sock`` argument of its connection class; a timer shuts it down if the start-up (SSL
    request, authentication) has no answer in time either, and reads after it have no limit (the
    session's ``statement_timeout`` bounds queries). Nothing for other drivers, nor where the URL names its
    own ``sock``, ``unix_sock`` or ``timeout``."""
    import sqlalchemy

    if engine.dialect.driver == "pg8000" and not sqlalchemy.event.contains(engine, "do_connect", _pg8000_connect):
        sqlalchemy.event.listen(engine, "do_connect", _pg8000_connect)


def arm_pg8000_connect_timeout() -> None:
    """:func:`arm_connect_timeout` for every ``postgresql+pg8000://`` engine of this process, made
    before or after (a listener on SQLAlchemy's pg8000 dialect class): MLflow's client makes its
    engine and connects in its constructor (up to 10 tries), before a caller can arm that engine,
    and reconnects through it whenever its pool drops a connection. The user's own socket settings
    are kept (:func:`_pg8000_connect`)."""
    import sqlalchemy
    from sqlalchemy.dialects.postgresql.pg8000 import PGDialect_pg8000

    if not sqlalchemy.event.contains(PGDialect_pg8000, "do_connect", _pg8000_connect):
        sqlalchemy.event.listen(PGDialect_pg8000, "do_connect", _pg8000_connect)


def _pg8000_connect(dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
    """SQLAlchemy ``do_connect`` listener: pg8000's connection within the connect timeout
    (:func:`arm_connect_timeout`); None (SQLAlchemy connects as usual) where the user chose."""
    import socket
    import threading

    from .mlflow_runs import DB_CONNECT_TIMEOUT_S

    if cargs or any(k in cparams for k in ("sock", "unix_sock", "timeout")) or cparams.get("user") is None:
        return None    # the user's own socket settings; no user: pg8000's own error, before any network
    dbapi, params = dialect.loaded_dbapi, dict(cparams)
    seconds: float | None = DB_CONNECT_TIMEOUT_S
    if "connect_timeout" in params:    # the URL's ?connect_timeout=N, which pg8000 refused as an argument
        given = params.pop("connect_timeout")
        try:
            seconds = float(given)
        except (TypeError, ValueError):
            raise dbapi.InterfaceError(f"connect_timeout={given!r} is not a number of seconds") from None
        seconds = seconds if seconds > 0 else None    # 0: no limit, as libpq reads it
    host, port = params.get("host") or "localhost", int(params.get("port") or 5432)
    try:
        sock = socket.create_connection((host, port), seconds, params.get("source_address"))
    except OSError as e:      # pg8000's words, with the reason ("Connection refused", "timed out")
        raise dbapi.InterfaceError(f"Can't create a connection to host {host} and port {port}: {e}") from None
    sock.settimeout(None)
    if params.get("tcp_keepalive", True):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)   # as pg8000 does for its own
    guard = sock.dup()        # the same connection: pg8000's SSL upgrade detaches `sock`
    lock, state = threading.Lock(), {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                try:
                    guard.shutdown(socket.SHUT_RDWR)   # the blocked read returns: pg8000 raises
                except OSError:
                    pass

    timer = threading.Timer(seconds, expire) if seconds is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    conn = None
    try:
        # what pg8000.connect() makes (its legacy Connection), on this socket: its connect()
        # function passes no `sock` on, the class takes it (pg8000 >= 1.29; older ones: as before)
        conn = dbapi.Connection(sock=sock, **params)
    except TypeError as e:
        sock.close()
        if "'sock'" in str(e) and not state["fired"]:
            return None
        raise
    except Exception:
        if not state["fired"]:
            sock.close()
            raise
    finally:
        with lock:
            state["done"] = True
        if timer is not None:
            timer.cancel()
        guard.close()
    if state["fired"]:
        try:
            if conn is not None:
                conn.close()
        except Exception:  # noqa: BLE001 - shut down already: nothing to say goodbye on
            pass
        sock.close()
        raise dbapi.OperationalError(f"timeout expired: {host}:{port} took the connection and did not answer "
                                     f"within {seconds} s")
    return conn


def fetch(conn: Any, sql: str, params: dict[str, Any]) -> list[tuple]:
    """All rows of ``sql`` as tuples. SQLAlchemy writes the dialect's SQL (list parameters become
    ``IN (?, ?, ...)``) and the driver's cursor runs it inside the connection's transaction:
    SQLAlchemy's own result rows would cost ~2 us each, 0.4 s of 300,000 rows (a page of 10,000 runs)."""
    import sqlalchemy

    stmt = sqlalchemy.text(sql)
    lists = [k for k, v in params.items() if isinstance(v, list)]
    if lists:
        stmt = stmt.bindparams(*(sqlalchemy.bindparam(k, expanding=True) for k in lists))
    compiled = stmt.bindparams(**params).compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.params
    args = [values[k] for k in compiled.positiontup] if compiled.positional else values
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(compiled.string, args)
        return list(cur.fetchall())   # tuples from sqlite3, psycopg2 and pymysql alike
    finally:
        cur.close()


@dataclass
class MlflowSqlSource:
    """One MLflow tracking database, read directly, with its experiment selection and mapping."""

    uses_run_options: ClassVar[bool] = True    # SourceOptions' run options apply (see Source)

    spec: str
    mapping: IngestMapping
    options: SourceOptions = field(default_factory=SourceOptions)
    name: str | None = None

    def __post_init__(self) -> None:
        self.target = parse_target(self.spec)
        self._workspaces = False   # whether experiments has MLflow 3's workspace column (set by check_schema)
        if self.options.filter_string:
            raise UserError(f"{self.target.shown}: --filter (an MLflow search filter) is not supported by the SQL "
                            "source; select with --experiment, or read through the tracking server")
        given = self.name or self.options.source_name or self.mapping.source
        self._named = given is not None
        # a relative sqlite path is made absolute: the same file has one name from any directory
        self.source = given or sqlite_source(safe_uri(_inner(self.spec)))

    @property
    def label(self) -> str:
        sel = f" [{', '.join(self.options.experiments)}]" if self.options.experiments else ""
        return f"{self.target.shown}{sel}"

    @property
    def state_name(self) -> str:
        return f"mlflow-sql:{self.source}"

    # ---- the database -----------------------------------------------------------------------------

    def _engine(self) -> tuple[Any, str | None]:
        """A read-only engine, and the password it got from the environment (for redaction)."""
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        t = self.target
        url, password = t.url, None
        if t.dialect == "sqlite":
            if not os.path.isfile(url.database):
                raise UserError(f"{t.shown}: no such database file")
            # file: URI, read-only: sqlite refuses every write, and never creates the file
            from urllib.parse import quote

            url = url.set(database=f"file:{quote(url.database)}", query={"mode": "ro", "uri": "true"})
        else:
            user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
            url = url.set(username=user or url.username, password=password or None)
        try:
            # a connect timeout: a port that takes the connection and never answers hung for good
            engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                              connect_args={**db_connect_args(url), **mysql_read_timeout(url)})
        except ImportError as e:  # the dialect's driver
            # a driver the URL names (postgresql+pg8000://) is the one to install: the dialect's
            # hint sent a user who named pg8000 to install psycopg
            hint = driver_hint(e.name) if "+" in url.drivername else DRIVER_HINTS[t.dialect]
            raise UserError(f"{t.shown}: the database driver is not installed ({e}); {hint}") from None
        except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as e:  # postgresql+nodriver://
            raise UserError(f"{t.shown}: no such database driver ({str(e).splitlines()[0][:200]}); "
                            f"{DRIVER_HINTS[t.dialect]}") from None

        arm_connect_timeout(engine)

        @sqlalchemy.event.listens_for(engine, "connect")
        def _read_only(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute({"sqlite": "PRAGMA query_only = ON",
                         "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                         "mysql": "SET SESSION TRANSACTION READ ONLY"}[t.dialect])
            if t.dialect == "postgresql":
                cur.execute("SHOW statement_timeout")
                if str(cur.fetchone()[0]).strip() in ("0", "0ms"):    # none set: ours (STATEMENT_TIMEOUT_S)
                    cur.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_S * 1000)}")
            elif t.dialect == "mysql":
                limit_mysql_session(cur)
            cur.close()
            if t.dialect == "postgresql":
                dbapi_conn.commit()  # psycopg opens a transaction for the SET: end it, keep the setting

        return engine, password

    def connect(self) -> tuple[Any, Any, str | None]:
        """(engine, an open read-only connection, the password used): close both when done."""
        from sqlalchemy.exc import SQLAlchemyError

        t = self.target
        engine, password = self._engine()
        try:
            return engine, engine.connect(), password
        except (TypeError, AttributeError) as e:
            # a driver that reads no credentials from its environment (pg8000: no PGUSER, PGPASSWORD
            # or ~/.pgpass) given none: "connect() missing 1 required positional argument: 'user'",
            # or with no password "'NoneType' object has no attribute 'decode'", was a traceback
            engine.dispose()
            if t.dialect != "postgresql" or engine.dialect.driver in LIBPQ_DRIVERS:
                raise
            raise UserError(f"{t.shown}: cannot connect ({_short(e, password)}); the driver "
                            f"{engine.dialect.driver} reads no credentials of its own: set {USER_ENV} and "
                            f"{PASSWORD_ENV}") from None
        except SQLAlchemyError as e:
            why = _short(e, password)
            # the server answered and said no: which variables give the credentials (docs/ingest.md)
            fix = (f"; the database refused the credentials: set {USER_ENV} and {PASSWORD_ENV} (or the driver's own, "
                   "e.g. PGUSER and PGPASSWORD, ~/.pgpass)") if why.startswith("authentication failed") else ""
            raise UserError(f"{self.target.shown}: cannot connect ({why}){fix}") from None

    def check_schema(self, conn: Any) -> None:
        """:class:`UserError` unless the database is an MLflow tracking DB this source can read."""
        import sqlalchemy

        shown = self.target.shown
        insp = sqlalchemy.inspect(conn)
        tables = set(insp.get_table_names())
        if not {"runs", "experiments", "alembic_version"} <= tables:
            raise UserError(f"{shown}: not an MLflow tracking database (no runs/experiments/alembic_version tables)")
        rev = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
        # the revision first: every revision of an older MLflow is one the installed MLflow knows, so
        # an unknown one is a newer MLflow's database, and a column it lacks was renamed or dropped
        # since; "too old; upgrade it with `mlflow db upgrade`" sent the user to migrate it backwards
        # (and an empty alembic_version was "unknown MLflow schema revision None; upgrade mlflow")
        if rev is None:
            raise UserError(f"{shown}: no MLflow schema revision (alembic_version is empty): not a database MLflow "
                            "has set up; point it at the tracking server's database, or start the server on it once")
        if rev not in known_revisions():
            from importlib.metadata import version

            raise UserError(f"{shown}: unknown MLflow schema revision {rev!r} (not one of MLflow "
                            f"{version('mlflow')}'s); upgrade mlflow, or read through the tracking server")
        need = {**REQUIRED, **(HISTORY_REQUIRED if self.options.history == "max" else {})}
        for table, cols in need.items():
            have = {c["name"] for c in insp.get_columns(table)} if table in tables else set()
            missing = [c for c in cols if c not in have]
            if missing:
                raise UserError(f"{shown}: MLflow schema revision {rev} is too old for the SQL source "
                                f"({table} lacks {', '.join(missing)}); upgrade it with `mlflow db upgrade` "
                                "or read through the tracking server")
        self._workspaces = "workspace" in {c["name"] for c in insp.get_columns("experiments")}

    def experiments(self, conn: Any, state: RunState | None = None) -> list[tuple[str, str]]:
        """(id, name) of the selected active experiments, as the tracking server would list them.
        With ``--drop-deleted``, an id of the ``state`` that is no experiment any more (``mlflow
        gc``) is a deleted experiment, selected by that id."""
        import sqlalchemy

        ws = " AND workspace = 'default'" if self._workspaces else ""
        rows = conn.execute(sqlalchemy.text(
            f"SELECT experiment_id, name, lifecycle_stage FROM experiments WHERE 1 = 1{ws} ORDER BY experiment_id")).all()
        active = [(str(i), n) for i, n, stage in rows if stage == "active"]
        self._active_ids = [i for i, _ in active]
        self._deleted_exps = [(str(i), n) for i, n, stage in rows if stage == "deleted"] if self.options.drop_deleted else []
        known = {str(i) for i, _, _ in rows}
        self._known_ids = sorted(known)    # active and deleted (check_same_database)
        gone = sorted({(v.experiment_id, "") for v in (state or {}).values() if v.experiment_id not in known})
        return select_experiments(active, self.options.experiments, self.target.shown,
                                  self._deleted_exps + (gone if self.options.drop_deleted else []))

    def _runs(self, conn: Any, q: RunQuery) -> Iterator[list[tuple]]:
        """Pages of (run_uuid, experiment_id, status, start_time, end_time, user_id), by end time.

        Keyset pagination on (end time, run id): a page costs the same wherever it starts.
        """
        where = ["lifecycle_stage = 'active'", "status = :status", "experiment_id IN :exps"]
        params: dict[str, Any] = {"status": q.status, "exps": [int(e) for e in q.experiment_ids],
                                  "n": self.options.page_size}
        if q.no_end:              # every finished run without an end time (RunQuery.no_end)
            where.append("end_time IS NULL")
        elif q.end_min is not None:
            where.append("end_time >= :end_min")
            params["end_min"] = q.end_min
        if q.run_ids is not None:
            where.append("run_uuid IN :ids")
            params["ids"] = list(q.run_ids)
        last: tuple[int, str] | None = None
        while True:
            page_where = list(where)
            if last is not None:
                page_where.append("(COALESCE(end_time, 0) > :k_end OR (COALESCE(end_time, 0) = :k_end "
                                  "AND run_uuid > :k_id))")
                params["k_end"], params["k_id"] = last
            rows = fetch(conn, "SELECT run_uuid, experiment_id, status, start_time, end_time, user_id FROM runs "
                         "WHERE " + " AND ".join(page_where) + " ORDER BY COALESCE(end_time, 0), run_uuid LIMIT :n",
                         params)
            if rows:
                yield rows
            if len(rows) < self.options.page_size:
                return
            last = (int(rows[-1][4] or 0), rows[-1][0])

    def _by_run(self, conn: Any, sql: str, ids: Sequence[str], **params: Any) -> list[tuple]:
        """Rows of ``sql`` (with ``:ids`` and ``params``) for runs ``ids``, in chunks of :data:`CHUNK`."""
        out: list[tuple] = []
        for i in range(0, len(ids), CHUNK):
            out.extend(fetch(conn, sql, {**params, "ids": list(ids[i:i + CHUNK])}))
        return out

    def records(self, conn: Any, runs: list[tuple]) -> list[RunRecord]:
        """Records of one page of runs: three queries (latest metrics, params, tags)."""
        ids = [r[0] for r in runs]
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        nan = float("nan")
        for rid, key, value, is_nan in self._by_run(
                conn, "SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN :ids", ids):
            metrics[rid][key] = nan if is_nan else float(value)   # MLflow stores NaN as 0 with is_nan
        for rid, key, value in self._by_run(conn, "SELECT run_uuid, key, value FROM params WHERE run_uuid IN :ids", ids):
            params[rid][key] = value
        for rid, key, value in self._by_run(conn, "SELECT run_uuid, key, value FROM tags WHERE run_uuid IN :ids", ids):
            tags[rid][key] = "" if value is None else value   # a NULL value (nullable column): REST's "" (run_record)
        return [RunRecord(run_id=rid, experiment_id=str(exp), status=status, start_time=start, end_time=end,
                          user_id=user, metrics=metrics[rid], params=params[rid], tags=tags[rid])
                for rid, exp, status, start, end, user in runs]

    def _history_max(self, conn: Any, expander: RunExpander, records: Sequence[RunRecord]
                     ) -> dict[str, dict[str, float]]:
        """The best finite value over each matched metric's history (the highest, or the lowest
        of an error rate: :meth:`RunExpander.best`): one grouped query per page. ``is_nan`` is bound
        as a boolean: PostgreSQL's column is one, and refused ``is_nan = 0`` (boolean = integer).
        An infinite step is stored as the largest float (:func:`.mlflow_runs.is_logged_finite`): left out, as
        the REST reader leaves it out, or one ``inf`` step was the run's best "accuracy"."""
        big = sys.float_info.max
        best: dict[tuple[str, str], float] = {
            (rid, key): expander.best(key, [float(lo), float(hi)]) for rid, key, lo, hi in self._by_run(
                conn, "SELECT run_uuid, key, MIN(value), MAX(value) FROM metrics WHERE run_uuid IN :ids "
                      "AND is_nan = :no AND value > :lo AND value < :hi GROUP BY run_uuid, key",
                [r.run_id for r in records], no=False, lo=-big, hi=big) if hi is not None}
        out = {}
        for rec in records:
            values = dict(rec.metrics)
            for key in rec.metrics:
                if expander.matches(key) and (rec.run_id, key) in best:
                    values[key] = best[(rec.run_id, key)]
            out[rec.run_id] = values
        return out

    # ---- batches ------------------------------------------------------------------------------------

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        from sqlalchemy.exc import SQLAlchemyError

        engine, conn, password = self.connect()
        # fetch() runs the driver's cursor: its errors are the driver's own, not SQLAlchemy's
        driver_error = getattr(engine.dialect.loaded_dbapi, "Error", SQLAlchemyError)
        try:
            yield from self._batches(conn, store, progress)
        except (SQLAlchemyError, driver_error) as e:
            raise UserError(f"{self.target.shown}: {_short(e, password)}") from None
        finally:
            conn.close()
            engine.dispose()

    def _batches(self, conn: Any, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        import time

        read_ms = int(time.time() * 1000)   # before any query: caps the end times the state keeps
        progress(f"{self.label}: checking the schema", 0, None)
        self.check_schema(conn)
        if not self._named:     # a store that named the database otherwise (a relative path, a driver) keeps that name
            self.source = stored_db_source(store, self.source)
        state = load_state(store, self.state_name)
        exps = self.experiments(conn, state)
        # one query: run ids are unique in the database, whichever experiment holds them
        check_same_database(state, self._known_ids, lambda ids, _exps: {r for (r,) in fetch(
            conn, "SELECT run_uuid FROM runs WHERE run_uuid IN :ids", {"ids": list(ids)})},
            self.options, where=self.label, source=self.source)
        conn.rollback()
        names = dict(exps)
        before = gave_rows(state)   # before this ingest changes it
        expander = RunExpander(self.mapping, self.source, self.options.history)
        adopt_legacy_digest(state, expander)   # an older ingest's fingerprints of this mapping: unchanged
        history = (lambda recs: self._history_max(conn, expander, recs)) if self.options.history == "max" else None
        seen: set[str] = set()
        # the finished runs without an end time in one query (`end_time IS NULL` reads them all)
        queries = merged_no_end(plan_queries([e for e, _ in exps], state, self.options, mapping_digest=expander.digest,
                                             now_ms=read_ms, names=names)) if exps else []
        def pages() -> Iterator[list[RunRecord]]:
            for q in queries:
                for runs in self._runs(conn, q):
                    recs = self.records(conn, runs)
                    seen.update(r.run_id for r in recs)
                    progress(f"{self.label}: runs", len(seen), None)
                    yield recs

        def expand(recs: list[RunRecord]) -> SourceBatch:
            return expand_page(recs, experiments=names, state=state, expander=expander, state_name=self.state_name,
                               history=history, store=store, stored_before=before, read_ms=read_ms)

        # a first page the percent check refuses alone is judged again with the next ones, as the
        # REST source's (expand_pages)
        for batch in expand_pages(pages(), expand):
            conn.rollback()   # end the read transaction: no lock on the DB while the store commits
            yield batch
        if restamp(state, full_reads(queries), seen, expander.digest, names):
            yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: state_table(state)})
        if self.options.drop_deleted:
            ids = [int(e) for e, _ in exps]
            deleted: list[str] = []
            if exps:
                listed = fetch(conn, "SELECT run_uuid, lifecycle_stage FROM runs WHERE experiment_id IN :exps",
                               {"exps": ids})
                deleted = [r for r, stage in listed if stage == "deleted"]
                there = {r for r, _ in listed}    # runs purged by `mlflow gc` are in neither list
                deleted += [r for r in stored_runs_of(state, [e for e, _ in exps]) if r not in there]
            conn.rollback()
            deleted += runs_of_deleted_experiments(state, self._active_ids, self._deleted_exps, self.options.experiments)
            gone = drop_deleted(state, deleted, self.source)
            if gone:
                yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: state_table(state)},
                                  delete_runs=gone, stats={"runs_deleted": len(gone)})


@register_source("mlflow-sql", claims)
def _make(specs: Sequence[str], mapping: IngestMapping | None, options: SourceOptions) -> list[MlflowSqlSource]:
    m = mlflow_mapping(mapping)
    return [MlflowSqlSource(spec=s, mapping=m, options=options) for s in specs]
