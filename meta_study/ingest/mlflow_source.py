"""MLflow tracking servers as an ingest source: runs -> canonical rows, incrementally.

Reading (the slow part at scale, see mlflow/mlflow #2730, #8277, #23253):

- Runs are listed with ``MlflowClient.search_runs`` in pages of ``page_size`` (10,000 by default,
  as ``mlflow.search_runs`` does); each run arrives with its latest metric values, params and
  tags, so there is never one call per run. Metric history is only read with ``history="max"``.
- Per source a state table remembers every run seen: experiment, status, end time and a
  fingerprint of its metrics, params and tags. It is committed with the rows of each page, in the
  same store transaction, so an ingest killed at any moment resumes where it stopped.
- Finished runs are fetched per experiment with ``end_time >= watermark - overlap``, ordered by end
  time and paged by end time (keyset), not by MLflow's offset tokens; the watermark is the latest
  end time already ingested, never later than the start of the ingest that read it. A ``--filter``
  has a state of its own, and finished runs without an end time get a query of their own (a full
  read of more than one page lists the runs after those it read for them). The overlap (5 minutes by default)
  absorbs clock skew between the machines that log runs. Runs whose fingerprint is unchanged are
  skipped without producing rows, so a re-run with no changes writes nothing.
- A run changed after it finished (metrics logged to it later) is not newer than the watermark:
  ``full=True`` (``--full``) rescans every run, still writing only what changed.

The mapping of runs to rows, the state and the query plan are shared with the SQL source
(:mod:`.mlflow_runs`, :mod:`.mlflow_sql`). Credentials come only from the environment MLflow
already reads (``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` / ``TOKEN``), for a database URI from
its driver's (libpq's ``PGUSER`` / ``PGPASSWORD``). A URI with embedded
credentials is refused, and labels, quarantine payloads and errors only ever carry the URI without
them. Nothing from a run is loaded or executed: values are read as numbers and strings, and
artifact URIs are stored as strings.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import pandas as pd

from ..errors import UserError
from ..mlflow_client import PROBE_TIMEOUT_S, has_credentials, refuse_credentials, safe_uri, source_uri, unanswered
from ..store import Store
from .mapping import NOTHING_STORED, IngestMapping
from .mlflow_runs import (LIBPQ_DRIVERS, RESTORED_CHUNK, RunExpander, RunQuery, RunRecord, RunState,
                          adopt_legacy_digest, check_same_database, db_connect_args, default_mapping, driver_hint,
                          drop_deleted, expand_page, expand_pages, filter_state_suffix, full_reads, gave_rows,
                          is_logged_finite, load_state, mlflow_mapping, plan_queries, refuse_bad_port, restamp,
                          run_record, runs_of_deleted_experiments, select_experiments, sqlite_source, state_table,
                          stored_runs_of, stored_source)
from .sources import Progress, SourceBatch, SourceOptions, register_source

__all__ = ["MlflowSource", "default_mapping", "mlflow_mapping"]

SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")
#: MLflow's HTTP settings for an ingest's requests where the user set none (MLflow reads them at each
#: request): its defaults (7 retries, back-off factor 2, 120 s a request) retried a dead server
#: for minutes. A server that takes the connection and never answers fails in ~3 minutes (3 x 60 s).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


@dataclass
class MlflowSource:
    """One MLflow tracking URI with its experiment selection and mapping."""

    uses_run_options: ClassVar[bool] = True    # SourceOptions' run options apply (see Source)

    uri: str
    mapping: IngestMapping
    options: SourceOptions = field(default_factory=SourceOptions)
    name: str | None = None

    def __post_init__(self) -> None:
        if _is_database(self.uri) and has_credentials(self.uri):
            # MLFLOW_TRACKING_USERNAME/PASSWORD, which refuse_credentials names, are HTTP auth:
            # a database driver never reads them
            raise UserError(f"{safe_uri(self.uri)}: credentials in the database URI are refused; give them to the "
                            "driver (PostgreSQL: PGUSER and PGPASSWORD, or ~/.pgpass; MySQL: an option file, "
                            "?read_default_file=~/.my.cnf)")
        refuse_credentials(self.uri, where="")
        if not self.uri.lower().startswith("databricks:"):
            # databricks://<scope>:<key prefix> (MLflow's secret-scope profile) has no port
            refuse_bad_port(self.uri)
        given = self.name or self.options.source_name or self.mapping.source
        self._named = given is not None
        self.source = given or sqlite_source(source_uri(self.uri))

    @property
    def label(self) -> str:
        sel = f" [{', '.join(self.options.experiments)}]" if self.options.experiments else ""
        flt = f" (filter: {self.options.filter_string})" if self.options.filter_string else ""
        return f"{safe_uri(self.uri)}{sel}{flt}"

    @property
    def state_name(self) -> str:
        """``mlflow:<source>``, and with ``--filter`` a state of its own (:func:`filter_state_suffix`):
        a shared watermark moved past every run the filter left out, and they were never read."""
        return f"mlflow:{self.source}{filter_state_suffix(self.options.filter_string)}"

    # ---- MLflow access ---------------------------------------------------------------------------

    def _client(self) -> Any:
        """MLflow's client of the URI: call it through :meth:`_call` (a database client connects,
        and may fail, as it is made). A ``sqlite:`` file that does not exist is refused: MLflow
        would create it (and its directories) and report an empty server for ever."""
        from sqlalchemy.engine import make_url

        if self.uri.lower().startswith("sqlite:"):
            db = make_url(self.uri).database
            if not db or db == ":memory:" or not os.path.isfile(db):
                raise UserError(f"{safe_uri(self.uri)}: no such database file"
                                + (f" ({os.path.abspath(db)})" if db and db != ":memory:" else ""))
            _refuse_foreign_sqlite(safe_uri(self.uri), db)
        from ..mlflow_client import mlflow_client

        if _is_database(self.uri):
            # a PostgreSQL session without a statement timeout gets the SQL source's: a read waiting
            # on a lock (a migration's ALTER TABLE, VACUUM FULL) hung the ingest for good
            return database_client(self.uri, _probe_database(self.uri))
        # a relative sqlite path made absolute: MLflow caches its stores by URI, so in one process
        # `sqlite:///mlflow.db` read from another directory was the first directory's file
        return mlflow_client(sqlite_source(self.uri))

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kw)
        except UserError:
            raise
        except ModuleNotFoundError as e:  # a database URI whose SQLAlchemy driver is not installed
            raise UserError(f"{safe_uri(self.uri)}: the database driver is not installed (no module {e.name!r}); "
                            f"{driver_hint(e.name)}, or read through the tracking server (http://...)") from None
        except MlflowException as e:
            status = getattr(e, "get_http_status_code", lambda: None)()
            if status == 401:
                # MLflow's words ("You are not authenticated. Please see <docs>") were the same for a
                # wrong password as for none, and named no variable that ingest reads
                given = any(os.environ.get(v) for v in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN"))
                why = "refused the credentials given" if given else "wants credentials and none were given"
                raise UserError(f"{safe_uri(self.uri)}: the server {why} (HTTP 401); set MLFLOW_TRACKING_USERNAME "
                                "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)") from None
            raise UserError(f"{safe_uri(self.uri)}: {_no_api(str(e)) or _short(e)}") from None
        except Exception as e:  # noqa: BLE001 - requests/sqlalchemy errors: the source is unusable
            why = _short(e)
            if "statement_timeout" in why:   # it answered: a lock held the read, not the network
                raise UserError(f"{safe_uri(self.uri)}: {why}") from None
            raise UserError(f"{safe_uri(self.uri)}: unreachable ({why})") from None

    def experiments(self, client: Any, state: RunState | None = None) -> list[tuple[str, str]]:
        """(id, name) of the selected experiments: names, ids or globs; all active ones if none.
        With ``--drop-deleted``, an id of the ``state`` that is no experiment any more (``mlflow
        gc``) is a deleted experiment, selected by that id."""
        from mlflow.entities import ViewType

        def listed(view: int) -> list[tuple[str, str]]:
            found: list[Any] = []
            token = None
            while True:
                page = self._call(client.search_experiments, view_type=view, max_results=1000, page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    return [(e.experiment_id, e.name) for e in found]

        active = listed(ViewType.ACTIVE_ONLY)
        self._active_ids = [i for i, _ in active]
        self._deleted_exps = listed(ViewType.DELETED_ONLY) if self.options.drop_deleted else []
        known = {i for i, _ in active} | {i for i, _ in self._deleted_exps}
        gone = sorted({(v.experiment_id, "") for v in (state or {}).values() if v.experiment_id not in known})
        return select_experiments(active, self.options.experiments, safe_uri(self.uri),
                                  self._deleted_exps + (gone if self.options.drop_deleted else []))

    def _search(self, client: Any, exp_ids: Sequence[str], extra_filter: str, view: int,
                order: list[str] | None, user_filter: bool = True, start: int = 0) -> Iterator[list[Any]]:
        # MLflow's filters have neither OR nor parentheses (it refuses an OR in its own words);
        # parenthesizing a clause with " or " inside a quoted value broke a valid filter.
        # ``user_filter=False``: whether runs exist at all (--drop-deleted), whatever --filter says.
        # ``start``: the offset of the first run (see _finished); a server that refuses the token
        # made for it is read from the first run instead
        flt = " and ".join(c for c in (self.options.filter_string if user_filter else None, extra_filter) if c)
        token = _offset_token(start)
        while True:
            try:
                page = self._call(client.search_runs, list(exp_ids), filter_string=flt, run_view_type=view,
                                  max_results=self.options.page_size, order_by=order, page_token=token)
            except UserError:
                if token is None or token != _offset_token(start):
                    raise
                token = start = None     # the offset token refused: every run from the first, as before
                continue
            yield list(page)
            token = page.token
            if not token:
                return

    def _finished(self, client: Any, exp_ids: Sequence[str], flt: str, unbounded: bool = False
                  ) -> Iterator[list[Any]]:
        """Pages of finished runs by end time, each read from the end time where the last one
        stopped (keyset), not with MLflow's page tokens: a token is an offset, so a run of an earlier
        page deleted or resumed meanwhile shifted a later run out of every page, and past the
        watermark for good. The runs that end at a page's last end time are read whole with it (by
        tokens: one millisecond's runs), so a page may hold a few more than ``page_size``.

        ``unbounded`` (``flt`` has no end-time bound: a full read): finished runs without an end
        time come too. MLflow sorts them last and ``end_time > t`` leaves them out, so a read of
        more than one page lists them after the runs read (by tokens, keeping only those): MLflow's
        filters have no ``IS NULL``. Without it they were lost for good, ``--full`` included."""
        from mlflow.entities import ViewType

        order = ["attributes.end_time ASC"]
        after: int | None = None
        with_end = 0     # runs read with an end time: MLflow lists them before those without one
        while True:
            page_flt = flt if after is None else f"{flt} and attributes.end_time > {after}"
            pages = self._search(client, exp_ids, page_flt, ViewType.ACTIVE_ONLY, order)
            page = next(pages, [])
            # a short page is the last one only when no page token follows it: a server that caps
            # max_results below --page-size (a proxy, a plug-in store) gave short pages with a token,
            # and every run after the first page was lost without a word. The next page is asked for
            # only then (_search stops without a request when there is no token).
            capped = 0 < len(page) < self.options.page_size and next(pages, None) is not None
            pages.close()
            if len(page) < self.options.page_size and not capped:
                if page:
                    with_end += len(page)
                    yield page
                break
            last = page[-1].info.end_time
            if last is None:    # finished without an end time (sorted last): the rest by offset
                yield from self._search(client, exp_ids, page_flt, ViewType.ACTIVE_ONLY, order)
                return
            head = [r for r in page if r.info.end_time != last]
            ties = [r for p in self._search(client, exp_ids, f"{flt} and attributes.end_time = {last}",
                                             ViewType.ACTIVE_ONLY, order) for r in p]
            with_end += len(head) + len(ties)
            yield head + ties
            after = last
        if unbounded and after is not None:    # the first page held no run without an end time
            # they sort after the `with_end` runs read above: listed from the last of those, not from
            # the first run (listing every run again doubled a full read: 10,000 runs, 32 s against
            # search_runs' 16 s). The run there must still have an end time; if not, runs were
            # deleted meanwhile and the block starts earlier: every run is listed again, as before
            start = max(0, with_end - 1)
            listing = self._search(client, exp_ids, flt, ViewType.ACTIVE_ONLY, order, start=start)
            first = next(listing, [])
            if start and first and not first[0].info.end_time:
                listing.close()
                listing = self._search(client, exp_ids, flt, ViewType.ACTIVE_ONLY, order)
                first = next(listing, [])
            for runs in itertools.chain([first], listing):
                runs = [r for r in runs if not r.info.end_time]
                if runs:
                    yield runs

    # ---- batches --------------------------------------------------------------------------------

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        self._check_answers()
        # HTTP_DEFAULTS for this ingest's requests, where the user set none, then taken away: left in
        # the environment, they were the "user's own" settings to what the process did next (a
        # refit's 10 s reachability check of its tracking server waited 60 s, 3 times)
        unset = {k: v for k, v in HTTP_DEFAULTS.items() if k not in os.environ}
        os.environ.update(unset)
        # MLflow's SQL store logs a database error with its traceback before it raises it, and
        # _call reports it in one line: a statement timeout printed 30 lines of traceback above it
        db_log = logging.getLogger("mlflow.store.db.utils")
        db_log.addFilter(_no_db_error_traceback)
        try:
            yield from self._batches(store, progress)
        finally:
            db_log.removeFilter(_no_db_error_traceback)
            for k in unset:
                os.environ.pop(k, None)

    def _check_answers(self) -> None:
        """One short request to an http(s) server before the ingest's own (refit's check,
        :func:`~meta_study.mlflow_client.unanswered`): a port that took the connection and never
        answered was ~3 minutes of silence (HTTP_DEFAULTS' 60 s reads, retried), then "timed out".
        A refused connection or an unknown host fails in seconds anyway, and is left to the
        ingest's own words ("connection refused"). Asked before HTTP_DEFAULTS are set: the user's
        own settings win, ours do not."""
        if unanswered(self.uri) == "no answer in time":
            # the wait the probe had: the user's own MLFLOW_HTTP_REQUEST_TIMEOUT where set (it wins),
            # which is also the way to wait longer for a live server slow to answer (a cold start)
            waited = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or f"{PROBE_TIMEOUT_S}"
            raise UserError(f"{safe_uri(self.uri)}: no MLflow tracking server answers there (no answer within "
                            f"{waited} s), so {NOTHING_STORED}; is it running, and is the address right? (one slow "
                            "to answer: MLFLOW_HTTP_REQUEST_TIMEOUT=60 waits longer)")

    def _batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        from mlflow.entities import ViewType

        read_ms = int(time.time() * 1000)   # before any query: caps the end times the state keeps
        client = self._call(self._client)
        progress(f"{self.label}: listing experiments", 0, None)
        if not self._named:
            self.source = stored_source(store, "mlflow:", self.source,
                                        canonical=lambda old: sqlite_source(source_uri(old)))
        state = load_state(store, self.state_name)
        exps = self.experiments(client, state)
        check_same_database(state, self._active_ids + [i for i, _ in self._deleted_exps],
                            lambda ids, in_exps: self._existing(client, ids, in_exps), self.options,
                            where=self.label, source=self.source)
        names = dict(exps)
        before = gave_rows(state)   # before this ingest changes it
        expander = RunExpander(self.mapping, self.source, self.options.history)
        adopt_legacy_digest(state, expander)   # an older ingest's fingerprints of this mapping: unchanged
        history = (lambda recs: self._history_max(client, expander, recs)) if self.options.history == "max" else None
        seen: set[str] = set()
        queries = plan_queries([e for e, _ in exps], state, self.options, mapping_digest=expander.digest,
                               now_ms=read_ms, names=names) if exps else []
        if not queries and self.options.filter_string:
            # the filter goes to MLflow with each search: with none (no active experiment) a filter
            # MLflow refuses passed unseen, exit code 0. MLflow's own parser says what is wrong.
            from mlflow.utils.search_utils import SearchUtils

            self._call(SearchUtils.parse_search_filter, self.options.filter_string)

        def pages() -> Iterator[list[RunRecord]]:
            for q in queries:
                found = (self._finished(client, q.experiment_ids, _filter_of(q), unbounded=q.end_min is None)
                         if q.status == "FINISHED" and q.run_ids is None and not q.no_end
                         else self._search(client, q.experiment_ids, _filter_of(q), ViewType.ACTIVE_ONLY, None))
                for runs in found:
                    if q.no_end:   # the dated ones are the other queries'
                        runs = [r for r in runs if not r.info.end_time]
                    if not runs:
                        continue
                    seen.update(r.info.run_id for r in runs)
                    progress(f"{self.label}: runs", len(seen), None)
                    yield [run_record(r) for r in runs]

        # a first page the percent check refuses alone is judged with the pages after it
        yield from expand_pages(pages(), lambda recs: expand_page(
            recs, experiments=names, state=state, expander=expander, state_name=self.state_name, history=history,
            store=store, stored_before=before, read_ms=read_ms))
        if restamp(state, full_reads(queries), seen, expander.digest, names):
            yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: state_table(state)})

        if self.options.drop_deleted:
            gone: list[tuple[str, str]] = []
            if exps:
                ids = [e for e, _ in exps]
                # deleted runs and purged ones whatever --filter says: a stored run that no longer
                # matched it (a tag changed) was "purged", and the rows of a live run deleted
                for runs in self._search(client, ids, "", ViewType.DELETED_ONLY, None, user_filter=False):
                    gone += drop_deleted(state, [r.info.run_id for r in runs], self.source)
                gone += drop_deleted(state, self._purged(client, ids, state, seen), self.source)
            gone += drop_deleted(state, runs_of_deleted_experiments(
                state, self._active_ids, self._deleted_exps, self.options.experiments), self.source)
            if gone:
                yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: state_table(state)},
                                  delete_runs=gone, stats={"runs_deleted": len(gone)})

    def _existing(self, client: Any, run_ids: Sequence[str], exp_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` (at most :data:`RESTORED_CHUNK`) MLflow has in ``exp_ids``, active or
        deleted, whatever --filter says: one search request."""
        from mlflow.entities import ViewType

        flt = "attributes.run_id IN (" + ", ".join(f"'{r}'" for r in run_ids) + ")"
        return {r.info.run_id for runs in self._search(client, exp_ids, flt, ViewType.ALL, None, user_filter=False)
                for r in runs}

    def _purged(self, client: Any, exp_ids: Sequence[str], state: RunState, seen: set[str]) -> list[str]:
        """Runs the state holds of ``exp_ids`` that MLflow has no more, neither active nor deleted
        (``mlflow gc`` purged them): one search per :data:`RESTORED_CHUNK` run ids not read by this
        ingest (~500 requests for a state of 100,000 runs; only with ``--drop-deleted``)."""
        todo = [r for r in stored_runs_of(state, exp_ids) if r not in seen]
        out: list[str] = []
        for i in range(0, len(todo), RESTORED_CHUNK):
            chunk = todo[i:i + RESTORED_CHUNK]
            there = self._existing(client, chunk, exp_ids)
            out += [r for r in chunk if r not in there]
        return out

    def _history_max(self, client: Any, expander: RunExpander, records: Sequence[RunRecord]
                     ) -> dict[str, dict[str, float]]:
        """The best value over each accuracy metric's history (one call per matched metric and run):
        the highest, or the lowest of an error rate (:meth:`RunExpander.best`), of its finite values
        (:func:`is_logged_finite`: one ``inf`` step made the best value infinite, and the run was
        quarantined though its other values were accuracies)."""
        out = {}
        for rec in records:
            values = dict(rec.metrics)
            for key in rec.metrics:
                if expander.matches(key):
                    hist = self._call(client.get_metric_history, rec.run_id, key)
                    vals = [m.value for m in hist if m.value is not None and is_logged_finite(m.value)]
                    if vals:
                        values[key] = expander.best(key, vals)
            out[rec.run_id] = values
        return out


def _no_db_error_traceback(record: logging.LogRecord) -> bool:
    """A logging filter: not MLflow's "SQLAlchemy database error" record (its traceback), whose
    error MLflow raises and :meth:`MlflowSource._call` reports in one line."""
    return not str(record.msg).startswith("SQLAlchemy database error")


def _refuse_foreign_sqlite(shown: str, db: str) -> None:
    """:class:`UserError` unless the sqlite file ``db`` holds MLflow's tables (read-only look):
    MLflow creates its ~200 tables and indexes in any file without them (an empty file, another
    program's database) and the ingest reported an empty server, having written into the file."""
    import sqlite3
    from urllib.parse import quote

    try:
        with sqlite3.connect(f"file:{quote(os.path.abspath(db))}?mode=ro", uri=True, timeout=30) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        conn.close()
    except sqlite3.Error as e:
        raise UserError(f"{shown}: cannot read the database ({str(e).splitlines()[0][:200]})") from None
    _refuse_without_mlflow_tables(shown, tables, "the file")


def _refuse_without_mlflow_tables(shown: str, tables: set[str], what: str) -> None:
    if not {"runs", "experiments", "alembic_version"} <= tables:
        raise UserError(f"{shown}: not an MLflow tracking database (no runs/experiments/alembic_version tables); "
                        f"give {what} the tracking server writes (mlflow server --backend-store-uri)")


def _probe_database(uri: str) -> str | None:
    """Connect once to a database URI, raising the driver's error, and refuse a database without
    MLflow's tables. MLflow's client retries a failed connection 10 times with backoff
    (``mlflow.store.db.utils.MAX_RETRY_COUNT``, no setting), so a wrong host or port took ~110 s
    and nine warnings to fail; and it creates its tables in a database that lacks them (another
    application's), where the ingest then reported an empty server. Returns PostgreSQL's
    ``statement_timeout`` of the session (the role's, database's, ``PGOPTIONS``' or the URI's own),
    None for other databases."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from .mlflow_sql import arm_connect_timeout, mysql_read_timeout

    try:
        # a connect timeout: a port that takes the connection and never answers hung for good
        url = sqlalchemy.engine.make_url(uri)
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool,
                                          connect_args={**db_connect_args(url), **mysql_read_timeout(url)})
    except sqlalchemy.exc.NoSuchModuleError as e:    # postgresql+nodriver://
        raise UserError(f"{safe_uri(uri)}: no such database driver ({str(e).splitlines()[0][:200]})") from None
    arm_connect_timeout(engine)     # pg8000 takes no connect_timeout (db_connect_args)
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            timeout = (str(conn.execute(sqlalchemy.text("SHOW statement_timeout")).scalar())
                       if conn.dialect.name == "postgresql" else None)
    except (TypeError, AttributeError) as e:
        # a driver that reads no credentials from its environment (pg8000: no PGUSER, PGPASSWORD or
        # ~/.pgpass), and the URI may carry none: "unreachable (connect() missing 1 required
        # positional argument: 'user')", or "('NoneType' object has no attribute 'decode')" for no
        # password, sent the user to the network
        if engine.dialect.name != "postgresql" or engine.dialect.driver in LIBPQ_DRIVERS:
            raise
        from .mlflow_sql import PASSWORD_ENV, USER_ENV

        raise UserError(f"{safe_uri(uri)}: cannot connect ({_short(e)}): the driver {engine.dialect.driver} reads "
                        "no credentials from the environment, and the URI may not carry them; name one that does "
                        "(postgresql+psycopg://, which reads PGUSER and PGPASSWORD or ~/.pgpass), or read the "
                        f"database with mlflow-sql: and {USER_ENV} and {PASSWORD_ENV}") from None
    except sqlalchemy.exc.DBAPIError as e:
        # the server answered: "unreachable" sent the user to the network, not the password
        why = _short(e.orig if e.orig is not None else e)
        low = why.lower()
        if any(s in low for s in ("authentication failed", "access denied", "no password supplied",
                                  "login failed")):
            raise UserError(f"{safe_uri(uri)}: the database refused the credentials ({why}); the driver reads "
                            "them from its own settings (PostgreSQL: PGUSER and PGPASSWORD, or ~/.pgpass)") from None
        if why not in ("connection refused", "timed out", "unknown host"):
            raise UserError(f"{safe_uri(uri)}: cannot connect ({why})") from None
        raise
    finally:
        engine.dispose()
    _refuse_without_mlflow_tables(safe_uri(uri), tables, "the database")
    return timeout


def database_client(uri: str, current: str | None) -> Any:
    """MLflow's client of a database ``uri`` whose sessions get the SQL source's limits: the
    statement timeout where the probed session's ``current`` one is none
    (:func:`with_statement_timeout`, :func:`arm_statement_timeout`), MySQL's statement and
    lock-wait limits (:func:`arm_mysql_limits`), and a connect timeout (:func:`with_connect_timeouts`;
    pg8000's: :func:`~.mlflow_sql.arm_pg8000_connect_timeout`): MLflow's engine connects in the
    client's constructor and again whenever its pool reconnects, and a port that took the
    connection and never answered hung it for good (the probe's connect has its own timeout)."""
    from ..mlflow_client import mlflow_client
    from .mlflow_sql import arm_pg8000_connect_timeout

    if _driver_of(uri) == "pg8000":
        arm_pg8000_connect_timeout()    # before the client: its constructor connects
    client = mlflow_client(with_connect_timeouts(with_statement_timeout(uri, current)))
    # a driver without libpq (pg8000) reads no `options` from the URI: its engine sets it
    # (MLflow's SqlAlchemyStore keeps its engine as `engine`; another store has none to arm)
    engine = getattr(getattr(getattr(client, "_tracking_client", None), "store", None), "engine", None)
    if engine is not None:
        arm_statement_timeout(engine, current)
        arm_mysql_limits(engine)
    return client


def with_connect_timeouts(uri: str) -> str:
    """A database URI for MLflow's client whose driver gets the SQL source's connect timeout
    (:func:`~.mlflow_runs.db_connect_args`: 20 s for psycopg, psycopg2, mysqlclient and PyMySQL)
    and, for MySQL, its read timeout (:func:`~.mlflow_sql.mysql_read_timeout`, a minute past the
    statement limit) in its query, where the URI (or ``PGCONNECT_TIMEOUT``) sets none: MLflow's
    engine takes no ``connect_args`` from a caller, and connects in the client's constructor and
    whenever its pool reconnects; a port that took the connection and never answered, or a MySQL
    server gone silent mid-query, hung the ingest for good. ``uri`` as given for other drivers
    (pg8000: :func:`~.mlflow_sql.arm_pg8000_connect_timeout`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .mlflow_sql import mysql_read_timeout

    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        return uri
    extra = {**db_connect_args(url), **mysql_read_timeout(url)}
    if not extra:
        return uri
    return url.update_query_dict({k: str(int(v)) for k, v in extra.items()}).render_as_string(hide_password=False)


def arm_mysql_limits(engine: Any) -> None:
    """Give each new MySQL or MariaDB session of MLflow's ``engine`` the SQL source's statement
    and lock-wait limits (:func:`~.mlflow_sql.limit_mysql_session`, as it connects; a shorter
    limit the session has is kept): a read behind ``mlflow db upgrade``'s ALTER TABLE waited a
    year. Connections MLflow pooled before are closed. Nothing for other databases."""
    if engine.dialect.name in ("mysql", "mariadb"):
        _on_connect(engine, _limit_mysql_session)


def _on_connect(engine: Any, listener: Any) -> None:
    """``listener`` on each new connection of MLflow's ``engine`` (once), and the connections its
    pool keeps closed: MLflow checked the schema through them, before the listener."""
    import sqlalchemy

    if not sqlalchemy.event.contains(engine, "connect", listener):
        sqlalchemy.event.listen(engine, "connect", listener)
        engine.dispose()


def _limit_mysql_session(dbapi_conn: Any, _rec: Any) -> None:
    """SQLAlchemy ``connect`` listener: :func:`~.mlflow_sql.limit_mysql_session` for the session."""
    from .mlflow_sql import limit_mysql_session

    cur = dbapi_conn.cursor()
    try:
        limit_mysql_session(cur)
    finally:
        cur.close()
    dbapi_conn.commit()     # end the transaction a SELECT of the variables may have opened; SETs stay


def _driver_of(uri: str) -> str | None:
    """The SQLAlchemy driver a database URI names (``pg8000`` of ``postgresql+pg8000://``), or
    None where SQLAlchemy cannot parse it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).get_driver_name()
    except (ArgumentError, ValueError):
        return None


def with_statement_timeout(uri: str, current: str | None) -> str:
    """A PostgreSQL URI for MLflow's client whose sessions get the SQL source's statement timeout
    (:data:`~meta_study.ingest.mlflow_sql.STATEMENT_TIMEOUT_S`), where the probed session's
    ``current`` one is none (``0``): libpq's ``options`` in the URI (``-c statement_timeout=``),
    after the URI's own ``options`` or else ``PGOPTIONS``, which a URI's ``options`` replaces. A
    timeout set elsewhere (a role's, a database's, ``PGOPTIONS``') is kept: ``uri`` as given, as
    for other databases and drivers that are not libpq's."""
    from sqlalchemy.engine import make_url

    from .mlflow_sql import STATEMENT_TIMEOUT_S

    if current is None or current.strip() not in ("0", "0ms"):
        return uri
    url = make_url(uri)
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in LIBPQ_DRIVERS:
        return uri
    own = url.query.get("options")
    own = own[-1] if isinstance(own, tuple) else own
    base = own if own is not None else os.environ.get("PGOPTIONS", "")
    options = f"{base} -c statement_timeout={int(STATEMENT_TIMEOUT_S * 1000)}".strip()
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def arm_statement_timeout(engine: Any, current: str | None) -> None:
    """Give each new session of MLflow's ``engine`` the SQL source's statement timeout
    (:data:`~meta_study.ingest.mlflow_sql.STATEMENT_TIMEOUT_S`, a ``SET`` as it connects) where
    the probed session's ``current`` one is none and the driver is not libpq's
    (:func:`with_statement_timeout` gives those theirs in the URI): ``postgresql+pg8000://`` reads
    no ``options`` and its reads waiting on a lock hung for good. Connections MLflow pooled before
    are closed, so every session MLflow reads through has it. Nothing for other databases."""
    if current is None or current.strip() not in ("0", "0ms"):
        return
    if engine.dialect.name != "postgresql" or engine.dialect.driver in LIBPQ_DRIVERS:
        return
    _on_connect(engine, _set_statement_timeout)


def _set_statement_timeout(dbapi_conn: Any, _rec: Any) -> None:
    """SQLAlchemy ``connect`` listener: ``SET statement_timeout`` (milliseconds) for the session."""
    from .mlflow_sql import STATEMENT_TIMEOUT_S

    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_S * 1000)}")
    finally:
        cur.close()
    dbapi_conn.commit()     # a driver that opened a transaction for the SET: end it, keep the setting


def _filter_of(q: RunQuery) -> str:
    flt = f"attributes.status = '{q.status}'"
    if q.run_ids is not None:   # MLflow run ids are hex: nothing to quote
        flt += " and attributes.run_id IN (" + ", ".join(f"'{r}'" for r in q.run_ids) + ")"
    if q.end_min is None:
        return flt
    # no IS NULL in MLflow's filters: runs without an end time by their start (RunQuery.no_end)
    return f"{flt} and attributes.{'start_time' if q.no_end else 'end_time'} >= {q.end_min}"


#: MLflow's words for an answer that is not its API's JSON: another web service on the port, the UI
#: behind a path, a tracking server too old for the endpoint.
_NOT_JSON = re.compile(r"API request to endpoint (\S*) ?(?:failed with error code (\d+) != \d+|was successful "
                       r"but the response body was not in a valid JSON format)")


def _no_api(msg: str) -> str | None:
    """The problem in words when no MLflow tracking API answered (HTTP 404, 405 or 501, or a 200 that is
    not JSON), else None. MLflow's own words end in the page it got (``Response body: '<!doctype
    html>``), cut at its first line: they named neither the URL as the likely fault nor the fix."""
    m = _NOT_JSON.search(msg)
    if m is None or (m.group(2) is not None and m.group(2) not in ("404", "405", "501")):
        return None
    what = f"HTTP {m.group(2)} for {m.group(1)}" if m.group(2) else "its API answered with a page that is not JSON"
    return (f"no MLflow tracking API at this URL ({what}); give the tracking server's "
            "address as `mlflow server` prints it (e.g. http://host:5000), or upgrade a server older than MLflow 2")


def _short(e: BaseException) -> str:
    msg = str(e)
    low = msg.lower()
    if "connection refused" in low or "failed to establish a new connection" in low:
        return "connection refused"
    if "statement timeout" in low:   # PostgreSQL's: "timed out" sent the user to the network
        from .mlflow_sql import statement_timeout_line

        return statement_timeout_line(next(x for x in msg.strip().splitlines() if "statement timeout" in x.lower()))
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return first[:300]


#: Database schemes MLflow's SQL store takes, also with a driver after a ``+``
#: (``mysql+pymysql://``, as MLflow's docs write them): those were refused as an unsupported
#: source scheme.
DB_SCHEMES = ("postgresql", "mysql", "mssql")


def _is_database(uri: str) -> bool:
    """Whether ``uri`` names a database server MLflow's SQL store reads (not sqlite, not HTTP)."""
    return "://" in uri and uri.split("://", 1)[0].partition("+")[0].lower() in DB_SCHEMES


def claims(spec: str) -> bool:
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ("databricks" if spec == "databricks" else "")
    base, plus, _ = scheme.partition("+")
    return scheme in SCHEMES or (bool(plus) and base in DB_SCHEMES)


@register_source("mlflow", claims)
def _make(specs: Sequence[str], mapping: IngestMapping | None, options: SourceOptions) -> list[MlflowSource]:
    m = mlflow_mapping(mapping)
    return [MlflowSource(uri=s, mapping=m, options=options) for s in specs]


def _offset_token(start: int | None) -> str | None:
    """A search page token that starts at run ``start`` (None for the first): MLflow's own format
    (``SearchUtils.create_page_token``: base64 of ``{"offset": N}``), which every MLflow server
    since 1.x reads; one that refuses it is read from the first run (:meth:`_search`)."""
    if not start:
        return None
    try:
        from mlflow.utils.search_utils import SearchUtils

        token = SearchUtils.create_page_token(int(start))
    except Exception:  # noqa: BLE001 - no such helper in this MLflow: read from the first run
        return None
    return token.decode() if isinstance(token, bytes) else str(token)
