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
  end time already ingested, never later than this machine's clock. The overlap (5 minutes by default)
  absorbs clock skew between the machines that log runs. Runs whose fingerprint is unchanged are
  skipped without producing rows, so a re-run with no changes writes nothing.
- A run changed after it finished (metrics logged to it later) is not newer than the watermark:
  ``full=True`` (``--full``) rescans every run, still writing only what changed.

The mapping of runs to rows, the state and the query plan are shared with the SQL source
(:mod:`.mlflow_runs`, :mod:`.mlflow_sql`). Credentials come only from the environment MLflow
already reads (``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` / ``TOKEN``). A URI with embedded
credentials is refused, and labels, quarantine payloads and errors only ever carry the URI without
them. Nothing from a run is loaded or executed: values are read as numbers and strings, and
artifact URIs are stored as strings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import pandas as pd

from ..errors import UserError
from ..mlflow_client import refuse_credentials, safe_uri, source_uri
from ..store import Store
from .mapping import IngestMapping
from .mlflow_runs import (RunExpander, RunQuery, RunRecord, default_mapping, drop_deleted, expand_page, gave_rows, load_state,
                          mlflow_mapping, plan_queries, run_record, runs_of_deleted_experiments, select_experiments,
                          state_table, stored_source)
from .sources import Progress, SourceBatch, SourceOptions, register_source

__all__ = ["MlflowSource", "default_mapping", "mlflow_mapping"]

SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


@dataclass
class MlflowSource:
    """One MLflow tracking URI with its experiment selection and mapping."""

    uses_run_options: ClassVar[bool] = True    # SourceOptions' run options apply (see Source)

    uri: str
    mapping: IngestMapping
    options: SourceOptions = field(default_factory=SourceOptions)
    name: str | None = None

    def __post_init__(self) -> None:
        refuse_credentials(self.uri, where="")
        given = self.name or self.options.source_name or self.mapping.source
        self._named = given is not None
        self.source = given or source_uri(self.uri)

    @property
    def label(self) -> str:
        sel = f" [{', '.join(self.options.experiments)}]" if self.options.experiments else ""
        return f"{safe_uri(self.uri)}{sel}"

    @property
    def state_name(self) -> str:
        return f"mlflow:{self.source}"

    # ---- MLflow access ---------------------------------------------------------------------------

    def _client(self) -> Any:
        # Fail fast on an unreachable server: MLflow's defaults retry for minutes. The user's own
        # settings of these variables win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        from ..mlflow_client import mlflow_client

        return mlflow_client(self.uri)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kw)
        except MlflowException as e:
            raise UserError(f"{safe_uri(self.uri)}: {_short(e)}") from None
        except Exception as e:  # noqa: BLE001 - requests/sqlalchemy errors: the source is unusable
            raise UserError(f"{safe_uri(self.uri)}: unreachable ({_short(e)})") from None

    def experiments(self, client: Any) -> list[tuple[str, str]]:
        """(id, name) of the selected experiments: names, ids or globs; all active ones if none."""
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
        return select_experiments(active, self.options.experiments, safe_uri(self.uri), self._deleted_exps)

    def _search(self, client: Any, exp_ids: Sequence[str], extra_filter: str, view: int,
                order: list[str] | None) -> Iterator[list[Any]]:
        clauses = [c for c in (self.options.filter_string, extra_filter) if c]
        flt = " and ".join(f"({c})" if " or " in c.lower() else c for c in clauses)
        token = None
        while True:
            page = self._call(client.search_runs, list(exp_ids), filter_string=flt, run_view_type=view,
                              max_results=self.options.page_size, order_by=order, page_token=token)
            yield list(page)
            token = page.token
            if not token:
                return

    def _finished(self, client: Any, exp_ids: Sequence[str], flt: str) -> Iterator[list[Any]]:
        """Pages of finished runs by end time, each read from the end time where the last one
        stopped (keyset), not with MLflow's page tokens: a token is an offset, so a run of an earlier
        page deleted or resumed meanwhile shifted a later run out of every page, and past the
        watermark for good. The runs that end at a page's last end time are read whole with it (by
        tokens: one millisecond's runs), so a page may hold a few more than ``page_size``."""
        from mlflow.entities import ViewType

        order = ["attributes.end_time ASC"]
        after: int | None = None
        while True:
            page_flt = flt if after is None else f"{flt} and attributes.end_time > {after}"
            page = next(self._search(client, exp_ids, page_flt, ViewType.ACTIVE_ONLY, order), [])
            if len(page) < self.options.page_size:
                if page:
                    yield page
                return
            last = page[-1].info.end_time
            if last is None:    # finished without an end time (sorted last): the rest by offset
                yield from self._search(client, exp_ids, page_flt, ViewType.ACTIVE_ONLY, order)
                return
            head = [r for r in page if r.info.end_time != last]
            ties = [r for p in self._search(client, exp_ids, f"{flt} and attributes.end_time = {last}",
                                             ViewType.ACTIVE_ONLY, order) for r in p]
            yield head + ties
            after = last

    # ---- batches --------------------------------------------------------------------------------

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        from mlflow.entities import ViewType

        client = self._client()
        progress(f"{self.label}: listing experiments", 0, None)
        exps = self.experiments(client)
        names = dict(exps)
        if not self._named:
            self.source = stored_source(store, "mlflow:", self.source)
        state = load_state(store, self.state_name)
        before = gave_rows(state)   # before this ingest changes it
        expander = RunExpander(self.mapping, self.source)
        history = (lambda recs: self._history_max(client, expander, recs)) if self.options.history == "max" else None
        seen = 0
        for q in plan_queries([e for e, _ in exps], state, self.options, mapping_digest=expander.digest) if exps else []:
            pages = (self._finished(client, q.experiment_ids, _filter_of(q)) if q.status == "FINISHED" and q.run_ids is None
                     else self._search(client, q.experiment_ids, _filter_of(q), ViewType.ACTIVE_ONLY, None))
            for runs in pages:
                seen += len(runs)
                progress(f"{self.label}: runs", seen, None)
                yield expand_page([run_record(r) for r in runs], experiments=names, state=state,
                                  expander=expander, state_name=self.state_name, history=history, store=store,
                                  stored_before=before)

        if self.options.drop_deleted:
            gone: list[tuple[str, str]] = []
            if exps:
                for runs in self._search(client, [e for e, _ in exps], "", ViewType.DELETED_ONLY, None):
                    gone += drop_deleted(state, [r.info.run_id for r in runs], self.source)
            gone += drop_deleted(state, runs_of_deleted_experiments(
                state, self._active_ids, self._deleted_exps, self.options.experiments), self.source)
            if gone:
                yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: state_table(state)},
                                  delete_runs=gone, stats={"runs_deleted": len(gone)})

    def _history_max(self, client: Any, expander: RunExpander, records: Sequence[RunRecord]
                     ) -> dict[str, dict[str, float]]:
        """The best value over each accuracy metric's history (one call per matched metric and run)."""
        out = {}
        for rec in records:
            values = dict(rec.metrics)
            for key in rec.metrics:
                if expander.matches(key):
                    hist = self._call(client.get_metric_history, rec.run_id, key)
                    vals = [m.value for m in hist if m.value is not None and not math.isnan(m.value)]
                    if vals:
                        values[key] = max(vals)
            out[rec.run_id] = values
        return out


def _filter_of(q: RunQuery) -> str:
    flt = f"attributes.status = '{q.status}'"
    if q.run_ids is not None:   # MLflow run ids are hex: nothing to quote
        flt += " and attributes.run_id IN (" + ", ".join(f"'{r}'" for r in q.run_ids) + ")"
    return flt if q.end_min is None else f"{flt} and attributes.end_time >= {q.end_min}"


def _short(e: BaseException) -> str:
    msg = str(e)
    low = msg.lower()
    if "connection refused" in low or "failed to establish a new connection" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return first[:300]


def claims(spec: str) -> bool:
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ("databricks" if spec == "databricks" else "")
    return scheme in SCHEMES


@register_source("mlflow", claims)
def _make(specs: Sequence[str], mapping: IngestMapping | None, options: SourceOptions) -> list[MlflowSource]:
    m = mlflow_mapping(mapping)
    return [MlflowSource(uri=s, mapping=m, options=options) for s in specs]
