"""MLflow tracking servers as an ingest source: runs -> canonical rows, incrementally.

Reading (the slow part at scale, see mlflow/mlflow #2730, #8277, #23253):

- Runs are listed with ``MlflowClient.search_runs`` in pages of ``page_size`` (10,000 by default,
  as ``mlflow.search_runs`` does); each run arrives with its latest metric values, params and
  tags, so there is never one call per run. Metric history is only read with ``history="max"``.
- Per source a state table remembers every run seen: experiment, status, end time and a
  fingerprint of its metrics, params and tags. It is committed with the rows of each page, in the
  same store transaction, so an ingest killed at any moment resumes where it stopped.
- Finished runs are fetched per experiment with ``end_time >= watermark - overlap``, ordered by end
  time; the watermark is the latest end time already ingested. The overlap (5 minutes by default)
  absorbs clock skew between the machines that log runs. Runs whose fingerprint is unchanged are
  skipped without producing rows, so a re-run with no changes writes nothing.
- A run changed after it finished (metrics logged to it later) is not newer than the watermark:
  ``full=True`` (``--full``) rescans every run, still writing only what changed.

Credentials come only from the environment MLflow already reads (``MLFLOW_TRACKING_USERNAME`` /
``PASSWORD`` / ``TOKEN``). A URI with embedded credentials is refused, and labels, quarantine
payloads and errors only ever carry the URI without them. Nothing from a run is loaded or
executed: values are read as numbers and strings, and artifact URIs are stored as strings.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterator, Sequence

import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..schema import COLUMN_BY_NAME, row_json
from ..store import Store
from .mapping import IngestMapping, MetricPattern, infer_arch_family, parse_mapping
from .sources import Progress, SourceBatch, SourceOptions, register_source, rejected_frame

SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")
#: MLflow system tags kept in ``extra`` under a short name.
SYSTEM_TAGS = {"mlflow.runName": "run_name", "mlflow.parentRunId": "parent_run_id", "mlflow.user": "user",
               "mlflow.source.git.commit": "git_commit", "mlflow.source.name": "source_name"}
STATE_SCHEMA = pa.schema([("run_id", pa.string()), ("experiment_id", pa.string()), ("status", pa.string()),
                          ("end_time", pa.int64()), ("fingerprint", pa.string()), ("rows", pa.int64())])


def safe_uri(uri: str) -> str:
    """The URI without user info, query or fragment: what may appear in the store and in messages.

    ``sqlite:////abs/path.db`` and ``file:///x`` have no host and stay as they are (an empty netloc
    must not swallow a slash of the path).
    """
    p = urllib.parse.urlsplit(uri)
    if not p.netloc:
        return uri.split("?", 1)[0].split("#", 1)[0]
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))


def has_credentials(uri: str) -> bool:
    p = urllib.parse.urlsplit(uri)
    return bool(p.username or p.password) or "token=" in (p.query or "").lower() or "password=" in (p.query or "").lower()


def default_mapping() -> IngestMapping:
    """The mapping of meta-study's own tracking convention (docs/tracking.md)."""
    import yaml

    text = resources.files("meta_study").joinpath("data/mlflow_default.yaml").read_text()
    return parse_mapping(yaml.safe_load(text), "meta_study/data/mlflow_default.yaml")


def mlflow_mapping(user: IngestMapping | None) -> IngestMapping:
    """A user's MLflow mapping over the defaults: each section it sets replaces the default's."""
    base = default_mapping()
    if user is None:
        return base
    if user.join is not None or user.rename:
        raise UserError(f"{user.name}: 'join' and 'rename' are for file exports; an MLflow mapping uses "
                        "'metrics', 'params' and 'tags'")
    from dataclasses import replace

    return replace(base, name=user.name, source=user.source, constants=user.constants or base.constants,
                   units=user.units or base.units, extra=user.extra,
                   arch_family=user.arch_family, metrics=user.metrics or base.metrics,
                   params=user.params or base.params, tags=user.tags or base.tags,
                   accuracy_unit=user.accuracy_unit)


def _to_fraction(v: float, unit: str) -> float:
    if unit == "percent":
        return round(v / 100.0, 12)
    if unit == "error":
        return round(1.0 - v, 12)
    if unit == "error_percent":
        return round(1.0 - v / 100.0, 12)
    return v


def _fingerprint(run: Any) -> str:
    d = run.data
    payload = json.dumps([run.info.status, run.info.end_time, sorted(d.metrics.items()), sorted(d.params.items()),
                          sorted(d.tags.items())], default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


@dataclass
class RunExpander:
    """Turns one MLflow run into canonical rows with a mapping (one row per DS metric x US metric)."""

    mapping: IngestMapping
    source: str

    def __post_init__(self) -> None:
        self._param_cols = dict(self.mapping.params)
        self._tag_cols = dict(self.mapping.tags)
        self._cache: dict[str, tuple[MetricPattern, dict[str, str]] | None] = {}

    def _match(self, key: str) -> tuple[MetricPattern, dict[str, str]] | None:
        if key not in self._cache:  # metric names repeat across runs: match each name once
            hit = None
            for pat in self.mapping.metrics:
                caps = pat.match(key)
                if caps is not None:
                    hit = (pat, caps)
                    break
            self._cache[key] = hit
        return self._cache[key]

    def payload(self, run: Any, experiment: str) -> str:
        """The run as the quarantine stores it: identity, metrics, params and user tags."""
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k in SYSTEM_TAGS}
        return row_json({"source": self.source, "experiment": experiment, "run_id": run.info.run_id,
                         "status": run.info.status, "metrics": dict(run.data.metrics),
                         "params": dict(run.data.params), "tags": tags})

    def expand(self, run: Any, experiment: str, metric_values: dict[str, float] | None = None
               ) -> tuple[list[dict[str, Any]], str | None]:
        """(rows, problem): problem is a quarantine reason for the whole run, or None.

        A run with no metric matching any pattern gives no rows and no problem (a sweep's parent
        run, a run still without evaluations).
        """
        metrics = metric_values if metric_values is not None else run.data.metrics
        us: dict[str, float] = {}
        ds: list[tuple[dict[str, Any], float]] = []
        extra: dict[str, str] = {}
        for key, value in metrics.items():
            hit = self._match(key)
            if hit is None:
                extra[f"metric:{key}"] = repr(value)
                continue
            pat, caps = hit
            unit = pat.unit or self.mapping.accuracy_unit
            v = _to_fraction(float(value), unit) if isinstance(value, (int, float)) else value
            fields: dict[str, Any] = {**pat.constants, **caps}
            if pat.role == "us":
                us[str(fields["us_task"])] = v
            else:
                fields["eval_protocol"] = pat.eval_protocol or fields.get("eval_protocol") or (
                    "fewshot" if "shots" in fields else "other")
                ds.append((fields, v))
        if not ds and not us:
            return [], None
        if not ds:
            return [], None  # an upstream-only run (still training, or never evaluated downstream)
        if not us:
            names = ", ".join(sorted({str(f.get("ds_task")) for f, _ in ds}))
            return [], f"missing US metric: the run has downstream metrics ({names}) but none matching " + \
                " or ".join(p.pattern for p in self.mapping.metrics if p.role == "us")
        base = self._base(run, experiment, extra)
        rows = []
        for us_task, us_v in us.items():
            for fields, v in ds:
                rows.append({**base, **{k: fields[k] for k in fields if k in COLUMN_BY_NAME},
                             "us_task": us_task, "us_accuracy": us_v, "ds_accuracy": v})
        return rows, None

    def _base(self, run: Any, experiment: str, extra: dict[str, str]) -> dict[str, Any]:
        info, data = run.info, run.data
        row: dict[str, Any] = {"source": self.source, "run_id": info.run_id, "experiment": experiment}
        for p, v in data.params.items():
            col = self._param_cols.get(p)
            if col is not None:
                row[col] = v
            else:
                extra[f"param:{p}"] = v
        for t, v in data.tags.items():
            col = self._tag_cols.get(t)
            if col is not None:
                row[col] = v
            elif t in SYSTEM_TAGS:
                extra[SYSTEM_TAGS[t]] = v
            elif not t.startswith("mlflow."):
                extra[f"tag:{t}"] = v
        row.setdefault("researcher", data.tags.get("mlflow.user") or info.user_id or None)
        if "arch_family" not in row and row.get("model_name"):
            row["arch_family"] = infer_arch_family(pd.Series([row["model_name"]]), self.mapping.arch_family).iloc[0]
        row["started_at"] = pd.Timestamp(info.start_time, unit="ms", tz="UTC") if info.start_time else None
        row["ended_at"] = pd.Timestamp(info.end_time, unit="ms", tz="UTC") if info.end_time else None
        for col, v in self.mapping.constants.items():
            row[col] = v
        row["extra"] = extra
        return row


@dataclass
class MlflowSource:
    """One MLflow tracking URI with its experiment selection and mapping."""

    uri: str
    mapping: IngestMapping
    options: SourceOptions = field(default_factory=SourceOptions)
    name: str | None = None

    def __post_init__(self) -> None:
        if has_credentials(self.uri):
            raise UserError(f"{safe_uri(self.uri)}: credentials in the tracking URI are refused; set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        self.source = self.name or self.options.source_name or self.mapping.source or safe_uri(self.uri)

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

        found: list[Any] = []
        token = None
        while True:
            page = self._call(client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                              page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        if not self.options.experiments:
            return [(e.experiment_id, e.name) for e in found]
        out: dict[str, str] = {}
        for spec in self.options.experiments:
            hits = [e for e in found if e.experiment_id == spec or e.name == spec or
                    (any(c in spec for c in "*?[") and fnmatch.fnmatchcase(e.name, spec))]
            if not hits:
                raise UserError(f"{safe_uri(self.uri)}: no experiment matches {spec!r}")
            out.update({e.experiment_id: e.name for e in hits})
        return sorted(out.items())

    def _search(self, client: Any, exp_ids: list[str], extra_filter: str, view: int,
                order: list[str] | None) -> Iterator[list[Any]]:
        clauses = [c for c in (self.options.filter_string, extra_filter) if c]
        flt = " and ".join(f"({c})" if " or " in c.lower() else c for c in clauses)
        token = None
        while True:
            page = self._call(client.search_runs, exp_ids, filter_string=flt, run_view_type=view,
                              max_results=self.options.page_size, order_by=order, page_token=token)
            yield list(page)
            token = page.token
            if not token:
                return

    # ---- batches --------------------------------------------------------------------------------

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        from mlflow.entities import ViewType

        client = self._client()
        progress(f"{self.label}: listing experiments", 0, None)
        exps = self.experiments(client)
        names = dict(exps)
        state = self._load_state(store)
        expander = RunExpander(self.mapping, self.source)
        overlap_ms = int(self.options.overlap_s * 1000)

        # Finished runs, per experiment from its watermark (all at once for new experiments).
        fresh = [e for e, _ in exps if self.options.full or not _watermark(state, e)]
        queries = [(fresh, "attributes.status = 'FINISHED'")] if fresh else []
        for e, _ in exps:
            wm = None if self.options.full else _watermark(state, e)
            if wm:
                queries.append(([e], f"attributes.status = 'FINISHED' and attributes.end_time >= {wm - overlap_ms}"))
        if self.options.include_running:
            queries.append(([e for e, _ in exps], "attributes.status = 'RUNNING'"))
        seen = 0
        for exp_ids, flt in queries:
            for runs in self._search(client, exp_ids, flt, ViewType.ACTIVE_ONLY,
                                     ["attributes.end_time ASC"] if "FINISHED" in flt else None):
                seen += len(runs)
                progress(f"{self.label}: runs", seen, None)
                yield self._page(client, runs, names, state, expander)

        if self.options.drop_deleted:
            gone: list[tuple[str, str]] = []
            for runs in self._search(client, [e for e, _ in exps], "", ViewType.DELETED_ONLY, None):
                for r in runs:
                    if r.info.run_id in state:
                        gone.append((self.source, r.info.run_id))
                        del state[r.info.run_id]
            if gone:
                yield SourceBatch(rows=pd.DataFrame(), state={self.state_name: _state_table(state)},
                                  delete_runs=gone, stats={"runs_deleted": len(gone)})

    def _page(self, client: Any, runs: list[Any], names: dict[str, str], state: dict[str, tuple],
              expander: RunExpander) -> SourceBatch:
        rows: list[dict[str, Any]] = []
        raws: list[str] = []
        rejected: list[dict[str, Any]] = []
        stats = {"runs_new": 0, "runs_changed": 0, "runs_unchanged": 0, "runs_without_metrics": 0}
        for run in runs:
            info = run.info
            fp = _fingerprint(run)
            prev = state.get(info.run_id)
            if prev is not None and prev[3] == fp:
                stats["runs_unchanged"] += 1
                continue
            stats["runs_new" if prev is None else "runs_changed"] += 1
            exp = names.get(info.experiment_id, info.experiment_id)
            values = self._history_max(client, run) if self.options.history == "max" else None
            run_rows, problem = expander.expand(run, exp, values)
            if problem is not None:
                rejected.append({"source": self.source, "run_id": info.run_id, "reason": problem,
                                 "raw": expander.payload(run, exp)})
            elif not run_rows:
                stats["runs_without_metrics"] += 1
            payload = expander.payload(run, exp) if run_rows else ""
            rows.extend(run_rows)
            raws.extend([payload] * len(run_rows))
            state[info.run_id] = (info.experiment_id, info.status, int(info.end_time or 0), fp, len(run_rows))
        frame = pd.DataFrame(rows) if rows else pd.DataFrame()
        return SourceBatch(rows=frame, raw=raws, rejected=rejected_frame(rejected),
                           state={self.state_name: _state_table(state)}, stats=stats)

    def _history_max(self, client: Any, run: Any) -> dict[str, float]:
        """The best value over each accuracy metric's history (one call per matched metric)."""
        out = dict(run.data.metrics)
        for key in run.data.metrics:
            if any(p.match(key) is not None for p in self.mapping.metrics):
                hist = self._call(client.get_metric_history, run.info.run_id, key)
                vals = [m.value for m in hist if m.value is not None and not math.isnan(m.value)]
                if vals:
                    out[key] = max(vals)
        return out

    def _load_state(self, store: Store) -> dict[str, tuple]:
        t = store.read_state(self.state_name) if store.exists() else None
        if t is None:
            return {}
        d = t.to_pydict()
        return {r: (e, s, int(t_), f, int(n)) for r, e, s, t_, f, n in
                zip(d["run_id"], d["experiment_id"], d["status"], d["end_time"], d["fingerprint"], d["rows"])}


def _watermark(state: dict[str, tuple], experiment_id: str) -> int | None:
    ends = [v[2] for v in state.values() if v[0] == experiment_id and v[1] == "FINISHED" and v[2]]
    return max(ends) if ends else None


def _state_table(state: dict[str, tuple]) -> pa.Table:
    ids = sorted(state)
    cols = list(zip(*(state[r] for r in ids))) if ids else [[], [], [], [], []]
    return pa.table({"run_id": ids, "experiment_id": list(cols[0]), "status": list(cols[1]),
                     "end_time": pa.array(cols[2], pa.int64()), "fingerprint": list(cols[3]),
                     "rows": pa.array(cols[4], pa.int64())}, schema=STATE_SCHEMA)


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
