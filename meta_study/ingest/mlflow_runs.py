"""MLflow runs as plain data -> canonical rows: what the REST and the SQL source share.

Both sources read the same things (a run's identity, times, latest metric values, params and
tags) in different ways; from a :class:`RunRecord` on, everything is this module's:

- :class:`RunExpander` maps a page of records to canonical rows with an :class:`IngestMapping`.
  The per-run work is one pass over the run's metrics, params and tags in Python (~15 us for 17
  metrics and 10 params); the rows (one per US metric x DS metric, 16 per run in our convention)
  are assembled column by column with ``take``, never as one dict per row (that cost ~5 us per
  row, a second per 160,000 rows, plus 0.7 s to make a frame of the dicts).
- :func:`expand_page` skips runs whose fingerprint the source's state already holds, expands the
  rest and returns the page's :class:`SourceBatch`, with the advanced state in it, so the rows and
  the state are committed in one store transaction.
- :func:`plan_queries` says which runs to read: finished runs per experiment from its watermark
  (the latest end time already ingested) minus the overlap, all of them for new experiments or
  with ``full``, and running runs with ``include_running``.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..keys import key_strings
from ..schema import COLUMN_BY_NAME, KEY, SCHEMA_VERSION, TRAINED_BATCH_SIZE_KEY, TRAINED_EPOCHS_KEY
from ..validation import SOURCE_UNIT, row_json, validate
from ..store import Store
from .mapping import PERCENT_UNITS, IngestMapping, PercentTally, infer_arch_family, parse_mapping
from .sources import STORED_BEFORE, SourceBatch, SourceOptions, rejected_frame

#: MLflow system tags kept in ``extra`` under a short name.
SYSTEM_TAGS = {"mlflow.runName": "run_name", "mlflow.parentRunId": "parent_run_id", "mlflow.user": "user",
               "mlflow.source.git.commit": "git_commit", "mlflow.source.name": "source_name"}
STATE_SCHEMA = pa.schema([("run_id", pa.string()), ("experiment_id", pa.string()), ("status", pa.string()),
                          ("end_time", pa.int64()), ("fingerprint", pa.string()), ("rows", pa.int64())])
class RunEntry(NamedTuple):
    """What ingest remembers of one MLflow run (one row of the source's state table)."""

    experiment_id: str
    status: str
    end_time: int          # ms since the epoch (0: none)
    fingerprint: str       # run_fingerprint: a changed run is read again
    rows: int              # canonical rows it gave


#: run_id -> what ingest remembers of it.
RunState = dict[str, RunEntry]

#: The status of a run ingest dropped because it was deleted in MLflow (``--drop-deleted``): kept
#: in the state so that a run restored in the UI is read again, whatever its end time.
DELETED = "DELETED"
#: Tombstoned run ids per query of restored runs (an ``IN`` list: short SQL and REST filters).
RESTORED_CHUNK = 200


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
    if user.join is not None or user.rename or user.drop:   # drop: ignored without a word, its columns kept
        raise UserError(f"{user.name}: 'join', 'rename' and 'drop' are for file exports; an MLflow mapping uses "
                        "'metrics', 'params' and 'tags'")
    if user.extra != "rest":
        # every param and tag a mapping does not name is kept in `extra` already (param:NAME, tag:NAME)
        raise UserError(f"{user.name}: 'extra' is for file exports; an MLflow ingest keeps every param and tag "
                        "the mapping does not name in extra (as param:NAME and tag:NAME)")
    other = sorted(c for c in user.units if c not in ("us_accuracy", "ds_accuracy"))
    if other:
        # they were ignored: a param logged in millions was stored as a count of parameters
        raise UserError(f"{user.name}: units of {', '.join(other)}: an MLflow ingest converts only the accuracy "
                        "metrics (units of us_accuracy / ds_accuracy, accuracy_unit, or a metric pattern's unit); "
                        "params and tags are stored as logged")
    return replace(base, name=user.name, source=user.source, constants=user.constants or base.constants,
                   units=user.units or base.units,
                   arch_family=user.arch_family, metrics=user.metrics or base.metrics,
                   params=user.params or base.params, tags=user.tags or base.tags,
                   accuracy_unit=user.accuracy_unit)


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain data, however it was read.

    Times are milliseconds since the epoch (None or 0: not set). ``metrics`` holds each metric's
    latest value (NaN as ``float('nan')``), ``params`` and ``tags`` their string values.
    """

    run_id: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    user_id: str | None
    metrics: Mapping[str, float]
    params: Mapping[str, str]
    tags: Mapping[str, str]


def run_record(run: Any) -> RunRecord:
    """A :class:`RunRecord` of an ``mlflow.entities.Run``.

    A tag whose value is NULL in MLflow's database (its column is nullable; a tool writing the
    database directly, an import) is ``""``, as a tracking server sends it (protobuf has no null
    string): MLflow's client on a ``sqlite:`` file and the SQL source gave ``None``, and the same
    run's quarantine payload and fingerprint differed with the path that read it."""
    info, data = run.info, run.data
    tags = data.tags if None not in data.tags.values() else {k: "" if v is None else v for k, v in data.tags.items()}
    return RunRecord(run_id=info.run_id, experiment_id=str(info.experiment_id), status=info.status,
                     start_time=info.start_time, end_time=info.end_time, user_id=info.user_id,
                     metrics=data.metrics, params=data.params, tags=tags)


#: What the expander makes of a run besides its mapping; a new one reads every run again, once.
#: 2: ``epochs`` from the trained epochs (:data:`~meta_study.schema.TRAINED_EPOCHS_KEY`).
#: 3: the history mode is part of the digest, a constant of the mapping no longer overwrites a
#: run's param or tag, and a filtered ingest has a state of its own: a state that a filtered
#: ingest advanced under the source's plain name (before 3) is read in full once, so the runs its
#: filter left out come in (each run read again is upserted by key: nothing is stored twice).
#: 4: ``batch_size`` from the batch trained with (:data:`~meta_study.schema.TRAINED_BATCH_SIZE_KEY`).
#: 5: a DS pattern without a protocol or ``{shots}`` takes ``eval_protocol`` from the run's param
#: or tag, or the mapping's constant (it was ``other`` whatever they said).
EXPANSION_VERSION = 5


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def mapping_digest(mapping: IngestMapping, history: str = "latest") -> str:
    """12 hex digits naming what turns a run into rows (the mapping without its name or source,
    its maps in :meth:`~IngestMapping.canonical` order, a pattern's constants sorted too; the
    ``history`` mode, the schema version and :data:`EXPANSION_VERSION`): part of every run's
    fingerprint, so a changed mapping, or ``--history max`` after ``latest``, reads every run again,
    and the same mapping written in another order, or renamed, reads none."""
    canon = mapping.canonical()
    metrics = tuple(replace(p, constants=dict(sorted(p.constants.items(), key=lambda kv: str(kv[0]))))
                    for p in canon.metrics)
    return legacy_mapping_digest(replace(canon, metrics=metrics), history)


def legacy_mapping_digest(mapping: IngestMapping, history: str = "latest") -> str:
    """:func:`mapping_digest` as it was before it took the canonical order (the mapping's ``repr``
    as written): the state's fingerprints of an older ingest with this same mapping carry it, and
    :func:`adopt_legacy_digest` counts them as unchanged. A mapping already in canonical order
    (most) has the same digest either way."""
    text = repr((replace(mapping, name="", source=None), history, SCHEMA_VERSION, EXPANSION_VERSION))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def adopt_legacy_digest(state: RunState, expander: RunExpander) -> int:
    """Fingerprints in ``state`` written with the expander's mapping under its legacy digest
    (:func:`legacy_mapping_digest`: an ingest before the digest took the canonical order) get the
    current digest, so the runs they name count as unchanged: an upgrade reads no run again. Only
    the same mapping's legacy digest is rewritten: a run read with another mapping is still read
    again. Returns how many entries changed (``state`` is changed in place)."""
    old, new = legacy_mapping_digest(expander.mapping, expander.history), expander.digest
    if old == new:
        return 0
    prefix, n = old + ":", 0
    for r, v in list(state.items()):
        if v.fingerprint.startswith(prefix):
            state[r] = v._replace(fingerprint=new + v.fingerprint[len(old):])
            n += 1
    return n


def experiment_mark(name: str) -> str:
    """The last part of a run's fingerprint (:meth:`RunExpander.fingerprint`): 8 hex digits of its
    experiment's name, which its rows carry."""
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def run_fingerprint(rec: RunRecord) -> str:
    """sha1 of a run's status, end time, metrics, params and tags (~20 us): unchanged runs are skipped."""
    payload = json.dumps([rec.status, rec.end_time, sorted(rec.metrics.items()), sorted(rec.params.items()),
                          sorted(rec.tags.items())], default=str)
    return hashlib.sha1(payload.encode()).hexdigest()


#: The protocol of a DS metric whose pattern, run and mapping name none.
OTHER_PROTOCOL = "other"

#: Units of error rates: lower raw values are better accuracies.
ERROR_UNITS = ("error", "error_percent")


def _to_fraction(v: float, unit: str) -> float:
    if unit == "percent":
        return round(v / 100.0, 12)
    if unit == "error":
        return round(1.0 - v, 12)
    if unit == "error_percent":
        return round(1.0 - v / 100.0, 12)
    return v


@dataclass(frozen=True)
class KeySpec:
    """What a matched metric key means: its role, its unit and (DS keys) its index among the DS specs."""

    role: str            # "us" or "ds"
    unit: str
    us_task: str = ""    # US keys
    ds_index: int = -1   # DS keys: row of the expander's DS field table
    ds_task: str = ""    # DS keys, for messages


@dataclass(frozen=True)
class ExpandedRuns:
    """Canonical rows of a list of runs.

    Attributes:
        rows: raw canonical rows (validated later), one per US metric x DS metric of each run.
        row_run: for each row, the position of its run in the input list.
        counts: rows per input run.
        problems: (position, quarantine reason) of runs rejected as a whole.
        slashed: positions of runs with a metric key that a pattern matches only when a capture
            holds a ``/`` (:meth:`RunExpander.slashed`): those metrics give no row.
    """

    rows: pd.DataFrame
    row_run: np.ndarray
    counts: np.ndarray
    problems: tuple[tuple[int, str], ...]
    slashed: tuple[int, ...] = ()


@dataclass
class RunExpander:
    """Turns MLflow runs into canonical rows with a mapping (one row per DS metric x US metric)."""

    mapping: IngestMapping
    source: str
    history: str = "latest"    # "latest" or "max" (SourceOptions.history): part of the digest
    _keys: dict[str, KeySpec | None] = field(default_factory=dict, init=False, repr=False)
    _ds_fields: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _slashed: dict[str, bool] = field(default_factory=dict, init=False, repr=False)
    _digest: str = field(default="", init=False, repr=False)
    #: what the percent check weighs pages against, read once per ingest (an expander serves one)
    stored_values: StoredValues | None = field(default=None, init=False, repr=False)

    @property
    def digest(self) -> str:
        """:func:`mapping_digest` of the mapping: the prefix of the fingerprints this expander writes."""
        if not self._digest:
            self._digest = mapping_digest(self.mapping, self.history)
        return self._digest

    def fingerprint(self, rec: RunRecord, experiment: str) -> str:
        """The state's fingerprint of a run read with this mapping: ``digest:run_fingerprint``, the
        run's experiment name included (an experiment renamed in the UI is the rows' ``experiment``)."""
        return f"{self.digest}:{run_fingerprint(rec)}:{experiment_mark(experiment)}"

    def spec(self, key: str) -> KeySpec | None:
        """The key's meaning, or None when no pattern matches (the first matching pattern wins)."""
        if key in self._keys:  # metric names repeat across runs: match each name once
            return self._keys[key]
        hit = None
        for pat in self.mapping.metrics:
            caps = pat.match(key)
            if caps is None:
                continue
            fields: dict[str, Any] = {**pat.constants, **caps}
            # the pattern's unit, else the mapping's for the column (`units:`, else accuracy_unit):
            # `units: {ds_accuracy: error}` was ignored, and every error rate stored as an accuracy
            unit = pat.unit or self.mapping.unit_of(f"{pat.role}_accuracy")
            if pat.role == "us":
                hit = KeySpec("us", unit, us_task=str(fields["us_task"]))
            else:
                # no protocol from the pattern nor {shots}: the run's own (a param or tag mapped to
                # it, the mapping's constant), else "other" (expand_runs). Set here, "other" won
                # over them all: `constants: {eval_protocol: linear}` was stored as "other"
                proto = pat.eval_protocol or fields.get("eval_protocol") or ("fewshot" if "shots" in fields else None)
                if proto:
                    fields["eval_protocol"] = proto
                self._ds_fields.append({k: v for k, v in fields.items() if k in COLUMN_BY_NAME})
                hit = KeySpec("ds", unit, ds_index=len(self._ds_fields) - 1, ds_task=str(fields.get("ds_task")))
            break
        self._keys[key] = hit
        return hit

    def slashed(self, key: str) -> bool:
        """Whether ``key``, which no pattern matches, would match one if a task capture could hold
        a ``/`` (``ds/vtab/dtd/10shot/top1`` against ``ds/{ds_task}/{shots}shot/top1``): a task
        whose name holds one. Its accuracies went to ``extra`` without a word, and the run's other
        tasks were stored, so the task was missing from the store unseen."""
        hit = self._slashed.get(key)
        if hit is None:
            hit = self._slashed[key] = any(_with_slashes(p.regex.pattern).fullmatch(key) for p in self.mapping.metrics)
        return hit

    def payload(self, rec: RunRecord, experiment: str) -> str:
        """The run as the quarantine stores it: identity, metrics, params and user tags."""
        tags = {k: v for k, v in rec.tags.items() if not k.startswith("mlflow.") or k in SYSTEM_TAGS}
        return row_json({"source": self.source, "experiment": experiment, "run_id": rec.run_id,
                         "status": rec.status, "metrics": dict(rec.metrics),
                         "params": dict(rec.params), "tags": tags})

    def expand_runs(self, records: Sequence[RunRecord], experiments: Mapping[str, str],
                    metric_values: Mapping[str, Mapping[str, float]] | None = None, *,
                    stored: Callable[[], PercentTally] | None = None) -> ExpandedRuns:
        """Rows of ``records``; ``experiments`` maps ids to names, ``metric_values`` replaces the
        latest values of some runs (``history="max"``).

        A run with no metric matching a DS pattern gives no rows and no problem (a sweep's parent
        run, a run still training); one with DS metrics but no US metric is a problem.

        ``stored``: called (once, only when a value in a percent unit was read) for a tally that
        holds the accuracies the source already stores (:meth:`StoredValues.tally`); the percent
        check then weighs ``records`` against them, as a read of every run at once would.

        Raises:
            PercentRefusal: the raw values of a column declared in percent, over the runs that
                give rows (and ``stored``), are fractions
                (:meth:`~meta_study.ingest.mapping.PercentTally.refuse_fractions`).
        """
        bases: list[dict[str, Any]] = []
        base_run: list[int] = []                       # per base: position of its run
        row_base: list[int] = []                       # per row: its base
        us_tasks: list[str] = []
        us_vals: list[float] = []
        ds_idx: list[int] = []
        ds_vals: list[float] = []
        us_units: list[str | None] = []     # per row: the unit each accuracy was logged in (None: a fraction)
        ds_units: list[str | None] = []
        counts = np.zeros(len(records), np.int64)
        problems: list[tuple[int, str]] = []
        starts: list[int | None] = []
        ends: list[int | None] = []
        values = metric_values or {}
        slashed: list[int] = []
        declared: dict[tuple[str, str], list[tuple[str, float]]] = {}   # (column, percent unit) -> (task, raw value)
        for i, rec in enumerate(records):
            us: dict[str, float] = {}
            us_u: dict[str, str | None] = {}
            ds_i: list[int] = []
            ds_v: list[float] = []
            ds_u: list[str | None] = []
            extra: dict[str, str] = {}
            pct: list[tuple[tuple[str, str], str, float]] = []   # this run's, kept if it gives rows
            # sorted: the same rows whatever order a source reads the metrics in
            for key, value in sorted(values.get(rec.run_id, rec.metrics).items()):
                spec = self._keys[key] if key in self._keys else self.spec(key)
                if spec is None:
                    extra[f"metric:{key}"] = repr(value)
                    if self.slashed(key) and (not slashed or slashed[-1] != i):
                        slashed.append(i)
                    continue
                v = value
                if spec.unit != "fraction" and isinstance(value, (int, float)):
                    v = _to_fraction(float(value), spec.unit)
                    if spec.unit in PERCENT_UNITS:
                        pct.append(((f"{spec.role}_accuracy", spec.unit),
                                    spec.us_task if spec.role == "us" else spec.ds_task, float(value)))
                unit = None if spec.unit == "fraction" else spec.unit
                if spec.role == "us":
                    us[spec.us_task] = v
                    us_u[spec.us_task] = unit
                else:
                    ds_i.append(spec.ds_index)
                    ds_v.append(v)
                    ds_u.append(unit)
            if not ds_i:
                continue  # no rows, no problem: upstream-only or metric-less
            if not us:
                names = ", ".join(sorted({self._keys_ds_task(j) for j in ds_i}))
                problems.append((i, f"missing US metric: the run has downstream metrics ({names}) but none matching "
                                    + " or ".join(p.pattern for p in self.mapping.metrics if p.role == "us")))
                continue
            clash = self._constant_clash(rec) or self._mapped_clash(rec)
            if clash:
                problems.append((i, clash))
                continue
            base = self._base(rec, experiments.get(rec.experiment_id, rec.experiment_id), extra)
            for col_unit, task, raw_v in pct:
                declared.setdefault(col_unit, []).append((task, raw_v))
            b = len(bases)
            bases.append(base)
            base_run.append(i)
            starts.append(rec.start_time or None)
            ends.append(rec.end_time or None)
            n = len(ds_i)
            for us_task, us_v in us.items():   # rows: every US metric x every DS metric
                row_base.extend([b] * n)
                us_tasks.extend([us_task] * n)
                us_vals.extend([us_v] * n)
                us_units.extend([us_u[us_task]] * n)
                ds_idx.extend(ds_i)
                ds_vals.extend(ds_v)
                ds_units.extend(ds_u)
            counts[i] = len(us) * n
        # the stored values too: alone, a page of one new run (pets 81 %, a near-chance task at
        # 0.9 %) was "fractions among percents", refused on every ingest, though a read of all
        # the runs stores it
        tally = stored() if stored is not None and declared else PercentTally()
        for (col, unit), raw in declared.items():
            tally.add(col, unit, np.asarray([v for _, v in raw], np.float64), [t for t, _ in raw])
        try:
            tally.refuse_fractions()
        except UserError as e:   # alone: no stored value weighed (expand_pages judges it with the next pages)
            raise PercentRefusal(str(e), alone=not any(n for d in tally.stored.values() for n in d.values())
                                 ) from None
        if not bases:
            return ExpandedRuns(pd.DataFrame(), np.zeros(0, np.int64), counts, tuple(problems), tuple(slashed))
        frame = self._frame(bases, starts, ends)
        take = np.asarray(row_base, np.int64)
        rows = frame.take(take).reset_index(drop=True)
        ds_frame, ds_has = self._ds_frames(np.asarray(ds_idx, np.int64))
        for col in ds_frame.columns:  # a DS key's fields win over params, tags and constants
            if col in rows.columns:
                rows[col] = rows[col].where(~ds_has[col].to_numpy(), ds_frame[col])
            else:
                rows[col] = ds_frame[col]
        proto = rows["eval_protocol"] if "eval_protocol" in rows else pd.Series([None] * len(rows), dtype=object)
        unset = proto.isna() | proto.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
        rows["eval_protocol"] = proto.where(~unset, OTHER_PROTOCOL)
        rows["us_task"] = us_tasks
        rows["us_accuracy"] = us_vals
        rows["ds_accuracy"] = ds_vals
        # as for files (mapping.finish_rows): validation names a value out of range as it was
        # logged, in its unit ("100.5 out of range [0, 100] (unit percent)", not "1.005 ... [0, 1]")
        for col, units in (("us_accuracy", us_units), ("ds_accuracy", ds_units)):
            if any(u is not None for u in units):
                rows[SOURCE_UNIT[col]] = pd.Series(units, dtype=object)
        return ExpandedRuns(rows, np.asarray(base_run, np.int64)[take], counts, tuple(problems), tuple(slashed))

    def _constant_clash(self, rec: RunRecord) -> str | None:
        """The quarantine reason when a constant of the mapping disagrees with the value of a param
        or tag the mapping maps to the same column (``constants: {data_fraction: 1.0}`` beside a
        run that logged ``data_fraction=0.1``): refused, as for files, never overwritten. Numbers
        compare as numbers (the param ``"1"`` is the constant ``1.0``); an empty value is no value."""
        for col, want in self.mapping.constants.items():
            for kind, names, values in (("param", self.mapping.params, rec.params), ("tag", self.mapping.tags, rec.tags)):
                for name, mapped in names.items():
                    have = values.get(name) if mapped == col else None
                    if have is None or str(have).strip() == "":
                        continue
                    a, b = _number(have), _number(want)
                    if (a == b) if a is not None and b is not None else str(have).strip() == str(want).strip():
                        continue
                    return (f"{col}: the mapping's constant {want!r} disagrees with the run's {kind} {name}={have!r}; "
                            "a constant is never written over a run's value (drop it from the mapping's constants, "
                            f"or map the {kind} to another column)")
        return None

    def _mapped_clash(self, rec: RunRecord) -> str | None:
        """The quarantine reason when two params or tags of one run that the mapping maps to the
        same column hold different values (``params: {lr: lr, learning_rate: lr}``, a run that
        logged both): one of them was the row's, by the order the database returned them, and
        the other was lost, not even kept in ``extra``. Aliases of one column (an old and a new
        param name) are fine where a run logs one, or both alike (numbers compare as numbers)."""
        seen: dict[str, tuple[str, str, str]] = {}      # column -> (kind, name, value) first met
        for kind, names, values in (("param", self.mapping.params, rec.params), ("tag", self.mapping.tags, rec.tags)):
            for name, col in names.items():
                have = values.get(name)
                if have is None or str(have).strip() == "":
                    continue
                if col not in seen:
                    seen[col] = (kind, name, have)
                    continue
                k0, n0, v0 = seen[col]
                a, b = _number(have), _number(v0)
                if (a == b) if a is not None and b is not None else str(have).strip() == str(v0).strip():
                    continue
                return (f"{col}: the run's {k0} {n0}={v0!r} and its {kind} {name}={have!r} both map to it and "
                        "disagree; neither is written over the other (map one of them to another column)")
        return None

    def best(self, key: str, values: Sequence[float]) -> float:
        """The best of a metric's logged ``values`` (``history="max"``): the lowest when the key's
        unit is an error rate (``error``, ``error_percent``: 0.2 is accuracy 0.8), else the highest."""
        spec = self.spec(key)
        return min(values) if spec is not None and spec.unit in ERROR_UNITS else max(values)

    def _keys_ds_task(self, ds_index: int) -> str:
        return str(self._ds_fields[ds_index].get("ds_task"))

    def _base(self, rec: RunRecord, experiment: str, extra: dict[str, str]) -> dict[str, Any]:
        """The columns every row of one run shares, before constants and inferred ones."""
        params, tags = self.mapping.params, self.mapping.tags
        row: dict[str, Any] = {"source": self.source, "run_id": rec.run_id, "experiment": experiment}
        for p, v in rec.params.items():
            col = params.get(p)
            if col is not None:
                row[col] = v
            else:
                extra[f"param:{p}"] = v
        # the epochs and batch size trained, not the params (configured: more epochs than trained
        # for a trial ASHA stopped early, a larger batch than a small training split holds); the
        # configured value stays in extra
        for col, key in (("epochs", TRAINED_EPOCHS_KEY), ("batch_size", TRAINED_BATCH_SIZE_KEY)):
            trained = rec.metrics.get(key)
            if col in params.values() and isinstance(trained, float) and np.isfinite(trained):
                value = int(trained) if col == "batch_size" and trained.is_integer() else trained
                if col in row and _number(row[col]) != trained:
                    extra[f"{col}_configured"] = row[col]
                row[col] = value
        for t, v in rec.tags.items():
            col = tags.get(t)
            if col is not None:
                row[col] = v
            elif t in SYSTEM_TAGS:
                extra[SYSTEM_TAGS[t]] = v
            elif not t.startswith("mlflow."):
                extra[f"tag:{t}"] = v
        row.setdefault("researcher", rec.tags.get("mlflow.user") or rec.user_id or None)
        row["extra"] = extra
        return row

    def _frame(self, bases: list[dict[str, Any]], starts: list[int | None], ends: list[int | None]) -> pd.DataFrame:
        """One row per run: the bases, the inferred architecture family, times and constants.

        In this order: constants fill their columns (a run whose param or tag disagrees with one
        was quarantined before, :meth:`_constant_clash`), and ``extra`` comes last.
        """
        frame = pd.DataFrame(bases)
        extra = frame.pop("extra")
        model = frame["model_name"] if "model_name" in frame else pd.Series([None] * len(frame), dtype=object)
        named = model.map(lambda v: isinstance(v, str) and v != "").to_numpy(bool)
        need = named & (frame["arch_family"].isna().to_numpy() if "arch_family" in frame else True)
        if need.any():
            fam = infer_arch_family(model[need], self.mapping.arch_family)
            if "arch_family" not in frame:
                frame["arch_family"] = pd.Series([None] * len(frame), dtype=object)
            frame.loc[need, "arch_family"] = fam
        frame["started_at"] = pd.to_datetime(pd.Series(starts, dtype="float64"), unit="ms", utc=True)
        frame["ended_at"] = pd.to_datetime(pd.Series(ends, dtype="float64"), unit="ms", utc=True)
        for col, v in self.mapping.constants.items():
            frame[col] = [v] * len(frame)
        frame["extra"] = extra
        return frame

    def _ds_frames(self, idx: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(fields of each row's DS key, whether the key sets each field)."""
        specs = pd.DataFrame(self._ds_fields)
        has = pd.DataFrame({c: [c in f for f in self._ds_fields] for c in specs.columns})
        return specs.take(idx).reset_index(drop=True), has.take(idx).reset_index(drop=True)

    def matches(self, key: str) -> bool:
        """Whether a metric key matches any pattern of the mapping."""
        return self.spec(key) is not None


#: The summary's count of finished runs without a downstream metric (so without rows); the ingest
#: summary adds :data:`NO_DS_HINT` when it is not zero.
NO_DS_STAT = "finished_runs_without_downstream_metrics"
NO_DS_HINT = ("a finished run without downstream metrics gives no rows: a sweep trial whose end-of-sweep evaluation "
              "failed has the tag meta_study.eval_status=failed and the reason in meta_study.eval_error (resume the "
              "sweep with --resume to retry, then ingest again with --full); other runs need a mapping whose metric "
              "patterns match their keys")

#: Runs with a metric that a pattern matches but for a ``/`` in a task name (:meth:`RunExpander.slashed`):
#: its accuracies give no row (they are kept in ``extra``), and the summary counts them.
SLASH_STAT = "runs_with_a_task_name_holding_a_slash_not_read"

#: Runs a refit published (tag ``meta_study.role = refit``): results, never read as data.
REFIT_STAT = "refit_result_runs_not_read"

#: Runs read while RUNNING (``--include-running``) that then ended FAILED or KILLED: their rows are
#: removed, as such a run is never read as data.
ENDED_STAT = "runs_ended_failed_or_killed"

#: history(records) -> run_id -> metric values replacing the latest ones (``history="max"``).
History = Callable[[Sequence[RunRecord]], Mapping[str, Mapping[str, float]]]


def expand_page(records: Sequence[RunRecord], *, experiments: Mapping[str, str], state: RunState,
                expander: RunExpander, state_name: str, history: History | None = None,
                store: Store | None = None, stored_before: bool = False, read_ms: int | None = None) -> SourceBatch:
    """One page of runs as a batch: rows of new and changed runs, their quarantine, the new state.

    ``state`` is updated in place; the batch carries a copy of it as a table, committed with the
    rows. Runs whose fingerprint is unchanged cost only the fingerprint. A changed run whose
    stored rows (in ``store``) include a key its rows no longer give as valid rows (a metric whose
    latest value is now NaN, a key the mapping now names otherwise) is deleted and written again in
    the batch's commit, so the store keeps nothing the run no longer says. ``stored_before``: an
    earlier ingest of the source gave rows (:func:`gave_rows`), so a page whose every row is
    rejected is a bad update, not a failed source.

    ``read_ms`` (ms since the epoch; default: now) is when this ingest started reading: the state
    keeps a run's end time as at most that (:func:`watermark_end`), so that a run whose end time
    lies in the future (its machine's clock is ahead) never moves the watermark past the runs
    that end after this read.
    """
    read = int(time.time() * 1000) if read_ms is None else read_ms
    stats = {"runs_new": 0, "runs_changed": 0, "runs_unchanged": 0, NO_DS_STAT: 0, REFIT_STAT: 0, ENDED_STAT: 0,
             SLASH_STAT: 0, STORED_BEFORE: int(stored_before)}
    todo: list[RunRecord] = []
    fps: list[str] = []
    prev_rows: dict[str, int] = {}      # changed runs: rows they gave before
    ended: list[tuple[str, str]] = []   # runs read while RUNNING that ended FAILED or KILLED
    finished: dict[str, RunEntry] = {}  # their new state, set once the page is expanded (not refused)
    for rec in records:
        if rec.status not in ("FINISHED", "RUNNING"):
            prev = state.get(rec.run_id)
            if prev is not None and prev.status == "RUNNING":
                # not in `state` yet: a page the percent check refuses is judged again with the
                # next (expand_pages), and these runs were then no longer RUNNING, their rows kept
                finished[rec.run_id] = RunEntry(rec.experiment_id, rec.status, int(rec.end_time or 0), "", 0)
                if prev.rows:
                    ended.append((expander.source, rec.run_id))
                    stats[ENDED_STAT] += 1
            continue
        if rec.tags.get("meta_study.role") == "refit" or "meta_study.refit" in rec.tags:
            stats[REFIT_STAT] += 1       # a refit's published results, never its input
            continue
        if rec.tags.get("meta_study.role") == "sweep":
            continue                     # a sweep's parent: its summary metrics (best/...) are not points
        fp = expander.fingerprint(rec, experiments.get(rec.experiment_id, rec.experiment_id))
        prev = state.get(rec.run_id)
        if prev is not None and prev.fingerprint == fp:
            stats["runs_unchanged"] += 1
            if prev.end_time > read:     # kept by an ingest before the cap: capped now
                state[rec.run_id] = prev._replace(end_time=watermark_end(rec, read))
            continue
        stats["runs_new" if prev is None or prev.status == DELETED else "runs_changed"] += 1
        if prev is not None:
            prev_rows[rec.run_id] = prev.rows
        todo.append(rec)
        fps.append(fp)
    values = history(todo) if history is not None and todo else None
    ids = {rec.run_id for rec in todo}     # their stored rows are what these runs replace

    def stored() -> PercentTally:
        assert store is not None
        if expander.stored_values is None:
            expander.stored_values = StoredValues.read(store, expander)
        return expander.stored_values.tally(ids)

    out = expander.expand_runs(todo, experiments, values, stored=stored if store is not None else None)
    state.update(finished)
    if expander.stored_values is not None:   # this page is committed before the next is expanded
        expander.stored_values.add_page(list(ids) + [r for _, r in ended], out.rows)
    problems = dict(out.problems)
    stats[SLASH_STAT] = len(out.slashed)
    rejected = []
    for i, rec in enumerate(todo):
        state[rec.run_id] = RunEntry(rec.experiment_id, rec.status, watermark_end(rec, read), fps[i], int(out.counts[i]))
        if i in problems:
            exp = experiments.get(rec.experiment_id, rec.experiment_id)
            rejected.append({"source": expander.source, "run_id": rec.run_id, "reason": problems[i],
                             "raw": expander.payload(rec, exp)})
        elif not out.counts[i] and rec.status == "FINISHED" and rec.tags.get("meta_study.role") != "sweep":
            # a finished run that gives no rows: never skipped silently (a sweep's parent run has
            # no metrics by design, a run still RUNNING is not done yet)
            stats[NO_DS_STAT] += 1

    def payloads(positions: np.ndarray) -> list[str]:  # only rejected rows need one (~50 us each)
        runs = out.row_run[positions]
        return [expander.payload(todo[r], experiments.get(todo[r].experiment_id, todo[r].experiment_id))
                for r in runs.tolist()]

    stored = [i for i, rec in enumerate(todo) if prev_rows.get(rec.run_id, 0) > 0]
    stale = _stale_runs(store, expander.source, todo, stored, out) if store is not None and stored else []
    return SourceBatch(rows=out.rows, raw=payloads, rejected=rejected_frame(rejected),
                       state={state_name: state_table(state)}, stats=stats, delete_runs=stale + ended)


class PercentRefusal(UserError):
    """The percent check's refusal of a page (:meth:`RunExpander.expand_runs`); ``alone``: no value
    the source stores was weighed with the page's (the first page an ingest commits of a source)."""

    def __init__(self, message: str, alone: bool = False) -> None:   # a default: pickled, args are (message,)
        super().__init__(message)
        self.alone = alone


#: Runs a page refused alone (:class:`PercentRefusal`) is judged with at most, with the pages after
#: it (:func:`expand_pages`): the default page size of the REST source.
JUDGED_TOGETHER = 10_000


def expand_pages(pages: Iterable[Sequence[RunRecord]], expand: Callable[[list[RunRecord]], SourceBatch]
                 ) -> Iterator[SourceBatch]:
    """``expand`` (:func:`expand_page`) of each page, but a page the percent check refuses alone,
    with nothing of the source stored to weigh it against (the first page), is judged again with the
    pages after it, up to :data:`JUDGED_TOGETHER` runs, before the refusal stands: the earliest runs
    of a source (a smoke test at near chance, 0.4 % beside later 2.5 % and 60 %) came first, alone,
    and a page of a few of them was refused on every ingest, though a read of every run stores
    them. Judged again each time the runs held have doubled (in all, ~2 expansions per run).
    Lazy: a batch is committed by the caller before the next page is expanded."""
    pending: dict[str, RunRecord] = {}   # a run listed twice (offset paging) counts once, as last read
    tried = 0                            # runs of the last refused judgement
    for page in pages:
        pending.update((r.run_id, r) for r in page)
        if not pending or len(pending) < 2 * tried:
            continue
        try:
            batch = expand(list(pending.values()))
        except PercentRefusal as e:
            if not e.alone or len(pending) >= JUDGED_TOGETHER:
                raise
            tried = len(pending)
            continue
        pending, tried = {}, 0
        yield batch
    if pending:   # refused before: the last judgement, with every run after it
        yield expand(list(pending.values()))


@dataclass
class StoredValues:
    """The accuracies the percent check weighs a page against, for one ingest of a source: those
    the store held when first asked (:meth:`read`), but of the runs this ingest read again, and
    those of the pages this ingest expanded since (:meth:`add_page`; each is committed before the
    next page is expanded). Read from the store for every page, they cost ~1 s per 20,000 stored
    runs a page (~50 s a page beside 1M stored runs); kept here, a page costs its own runs and a
    vectorized look-up of them. Counts are additive (:meth:`PercentTally.add_stored`), so a run
    read again is taken out of :attr:`total` and put back with its new values.

    One value per run and US task (``us_accuracy``) or DS key (``ds_accuracy``), the largest, as
    the store's rows of a run hold them; a page's values count before validation (a value it
    quarantines too, as in a read of every run at once)."""

    units: dict[str, list[str]]               # accuracy column -> its percent units in the mapping
    frames: list[dict[str, pd.DataFrame]]     # [0]: the store's; then one per page: column -> run_id, task, acc
    moved: dict[str, int] = field(default_factory=dict)      # run id -> the page frame with its values
    total: PercentTally = field(default_factory=PercentTally)

    #: the columns of the key of one accuracy (one value per run and key)
    KEYS: ClassVar[dict[str, list[str]]] = {
        "us_accuracy": ["run_id", "us_task"],
        "ds_accuracy": ["run_id", "ds_task", "eval_protocol", "shots", "representation_layer"]}

    @classmethod
    def read(cls, store: Store, expander: RunExpander) -> StoredValues:
        """The store's accuracies of ``expander``'s source, in each accuracy column with a percent
        unit in its mapping: one read of up to eight columns of the source's rows and a group-by
        (~1 s for 20,000 stored runs of 16 rows, measured), once per ingest."""
        units = {col: sorted({p.unit or expander.mapping.unit_of(col) for p in expander.mapping.metrics
                              if f"{p.role}_accuracy" == col} & set(PERCENT_UNITS))
                 for col in ("us_accuracy", "ds_accuracy")}
        units = {c: u for c, u in units.items() if u}
        base: dict[str, pd.DataFrame] = {}
        if units and store.exists():
            cols = sorted({c for col in units for c in cls.KEYS[col] + [col]})
            rows = store.read(filters={"source": [expander.source]}, columns=cols)
            for col in units:
                one = rows.select(cls.KEYS[col] + [col]).group_by(cls.KEYS[col]).aggregate([(col, "max")])
                base[col] = pd.DataFrame({"run_id": one.column("run_id").to_numpy(zero_copy_only=False),
                                          "task": one.column(cls.KEYS[col][1]).to_numpy(zero_copy_only=False),
                                          "acc": one.column(f"{col}_max").to_numpy(zero_copy_only=False)})
        out = cls(units, [base])
        out._count(out.total, base, 1)
        return out

    def tally(self, skip_runs: set[str]) -> PercentTally:
        """A tally of the values held, but of ``skip_runs`` (those a page reads again)."""
        t = PercentTally(counts={k: {task: list(c) for task, c in d.items()} for k, d in self.total.counts.items()},
                         stored={k: dict(d) for k, d in self.total.stored.items()})
        self._count(t, self._values(skip_runs), -1)
        return t

    def add_page(self, runs: Sequence[str], rows: pd.DataFrame) -> None:
        """A page expanded: ``runs`` (read again, or whose rows were removed) hold ``rows`` now."""
        self._count(self.total, self._values(runs), -1)
        page: dict[str, pd.DataFrame] = {}
        for col in self.units:
            if not len(rows) or col not in rows:
                continue
            keys = pd.DataFrame({k: rows[k] if k in rows else None for k in self.KEYS[col]})
            keys["acc"] = pd.to_numeric(rows[col], errors="coerce")
            one = keys.groupby(self.KEYS[col], dropna=False, sort=False)["acc"].max().reset_index()
            page[col] = pd.DataFrame({"run_id": one["run_id"], "task": one[self.KEYS[col][1]], "acc": one["acc"]})
        self.frames.append(page)
        self.moved.update((r, len(self.frames) - 1) for r in runs)
        self._count(self.total, page, 1)

    def _values(self, runs: Iterable[str]) -> dict[str, pd.DataFrame]:
        """The values held of ``runs``: the store's, or those of the page that read them last."""
        where: dict[int, list[str]] = {}
        for r in runs:
            where.setdefault(self.moved.get(r, 0), []).append(r)
        out: dict[str, pd.DataFrame] = {}
        for col in self.units:
            parts = [f[col][f[col]["run_id"].isin(rs)] for i, rs in where.items()
                     if col in (f := self.frames[i])]
            parts = [p for p in parts if len(p)]
            if parts:
                out[col] = pd.concat(parts, ignore_index=True)
        return out

    def _count(self, into: PercentTally, values: Mapping[str, pd.DataFrame], sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) the counts of ``values`` in ``into``; none left: none kept."""
        part = PercentTally()
        for col, df in values.items():
            for unit in self.units[col]:   # a column with two percent units (per pattern) is weighed in each
                part.add_stored(col, unit, df["acc"].to_numpy(dtype="float64", na_value=np.nan),
                                df["task"].to_numpy(dtype=object))
        for key, by_task in part.counts.items():
            have, mine = into.counts.setdefault(key, {}), into.stored.setdefault(key, {})
            for task, c in by_task.items():
                acc = have.setdefault(task, [0, 0, 0])
                for j in range(3):
                    acc[j] += sign * c[j]
                mine[task] = mine.get(task, 0) + sign * part.stored[key].get(task, 0)
                if not acc[2]:
                    del have[task]
                if not mine[task]:
                    del mine[task]
            if not have:
                del into.counts[key]
            if not mine:
                del into.stored[key]


@functools.lru_cache(maxsize=256)
def _with_slashes(regex: str) -> re.Pattern[str]:
    """A pattern's regex (:func:`~meta_study.ingest.mapping.compile_pattern`) whose one-segment
    captures (``[^/]+``) take ``/`` too; escaped literal text never reads ``[^/]+``."""
    return re.compile(regex.replace("[^/]+", ".+"))


def is_logged_finite(value: float) -> bool:
    """Whether a metric value MLflow returns was logged finite: not NaN, and not the largest float,
    which MLflow's SQL store writes for an infinite value (``log_metric(k, inf)`` reads back as
    1.797e308)."""
    return math.isfinite(value) and abs(value) < sys.float_info.max


def watermark_end(rec: RunRecord, read_ms: int) -> int:
    """The end time (ms) the state keeps of a run read at ``read_ms``: its own, but never later
    than the read (0: none). A finished run's end time from a machine whose clock is a day ahead
    would otherwise be the watermark, and every run ending before then was never read."""
    end = int(rec.end_time or 0)
    return min(end, read_ms) if end > 0 else 0


def _stale_runs(store: Store, source: str, todo: Sequence[RunRecord], positions: Sequence[int],
                out: ExpandedRuns) -> list[tuple[str, str]]:
    """(source, run_id) of the runs at ``positions`` that have a stored row whose key their rows
    no longer give as a valid row. Costs one validation of those runs' rows and one store read of
    their keys: only changed runs that gave rows before get here."""
    if not store.exists():
        return []
    ids = sorted({todo[i].run_id for i in positions})
    old = store.read(filters={"source": [source], "run_id": ids}, columns=list(KEY))
    if not old.num_rows:
        return []
    have: set[str] = set()
    if len(out.rows):
        mine = np.isin(out.row_run, np.asarray(positions, np.int64))
        if mine.any():
            have = set(key_strings(validate(out.rows[mine].reset_index(drop=True)).table).tolist())
    old_keys = key_strings(old)
    gone = [k not in have for k in old_keys.tolist()]
    runs = old.column("run_id").to_numpy(zero_copy_only=False)[np.asarray(gone, bool)]
    return [(source, r) for r in sorted(set(runs.tolist()))]


@dataclass(frozen=True)
class RunQuery:
    """Runs to read from some experiments: finished ones that ended at or after ``end_min`` (ms;
    None: all of them), or running ones; with ``run_ids``, only those runs (whatever their end time).
    With ``no_end``: finished runs without an end time (``update_run(id, "FINISHED")`` sets none),
    which no end-time filter selects; the SQL source reads all of them (``end_time IS NULL``), the
    REST source, whose filters have no ``IS NULL``, those that started at or after ``end_min``."""

    experiment_ids: tuple[str, ...]
    status: str                      # "FINISHED" or "RUNNING" (with run_ids also "FAILED", "KILLED")
    end_min: int | None = None
    run_ids: tuple[str, ...] | None = None
    no_end: bool = False


def plan_queries(experiment_ids: Sequence[str], state: RunState, options: SourceOptions, *,
                 mapping_digest: str | None = None, now_ms: int | None = None,
                 names: Mapping[str, str] | None = None) -> list[RunQuery]:
    """Finished runs per experiment from its watermark (all at once for new experiments, with
    ``full``, or when the state holds runs read with another mapping than ``mapping_digest``, or,
    given the experiments' ``names`` (id -> name), under another name: renamed in the UI),
    then the running ones with ``include_running``, then runs dropped as deleted (``DELETED`` in
    the state) that are active again: restored in the UI, their end time is behind the watermark;
    and the runs the state holds as RUNNING that have ended since (any end time).

    The watermark is never later than ``now_ms`` (this machine's clock, ms; default: now), nor than
    the ingest that read its run (:func:`watermark_end`): a run whose end time lies in the future
    (logged from a machine whose clock is ahead) would otherwise hide every run that ends before
    that time. Experiments read from a watermark also get one query for finished runs without an
    end time (:attr:`RunQuery.no_end`).
    """
    overlap_ms = int(options.overlap_s * 1000)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    remapped = _remapped(state, mapping_digest) if mapping_digest else set()
    if mapping_digest and names:
        # the rows' `experiment` is the name: read from the watermark, a renamed experiment's
        # earlier runs kept the old name beside the new runs' (one experiment, two names)
        remapped |= _renamed(state, mapping_digest, names)
    marks = {e: None if options.full or e in remapped else watermark(state, e, now) for e in experiment_ids}
    marks = {e: None if m is None else min(m, now) for e, m in marks.items()}
    fresh = tuple(e for e in experiment_ids if not marks[e])
    out = [RunQuery(fresh, "FINISHED")] if fresh else []
    out += [RunQuery((e,), "FINISHED", marks[e] - overlap_ms) for e in experiment_ids if marks[e]]
    # one per experiment, each from its own watermark: one query of them all, from the earliest,
    # listed on every ingest every run started since an experiment last had a new run (a year-old
    # experiment beside an active one: each no-op ingest listed the year's runs; the REST source's
    # filters have no IS NULL). The SQL source reads them all in one (merged_no_end).
    out += [RunQuery((e,), "FINISHED", marks[e] - overlap_ms, no_end=True) for e in experiment_ids if marks[e]]
    if options.include_running:
        out.append(RunQuery(tuple(experiment_ids), "RUNNING"))
    selected = set(experiment_ids)
    dropped = sorted(r for r, v in state.items() if v.status == DELETED and v.experiment_id in selected)
    for i in range(0, len(dropped), RESTORED_CHUNK):
        out.append(RunQuery(tuple(experiment_ids), "FINISHED", run_ids=tuple(dropped[i:i + RESTORED_CHUNK])))
    # runs read while RUNNING: finished behind the watermark (their end time is the logging
    # machine's), or ended FAILED / KILLED, whose rows are then removed (expand_page)
    running = sorted(r for r, v in state.items() if v.status == "RUNNING" and v.experiment_id in selected)
    for i in range(0, len(running), RESTORED_CHUNK):
        for status in ("FINISHED", "FAILED", "KILLED"):
            out.append(RunQuery(tuple(experiment_ids), status, run_ids=tuple(running[i:i + RESTORED_CHUNK])))
    return out


def merged_no_end(queries: Sequence[RunQuery]) -> list[RunQuery]:
    """``queries`` with their :attr:`RunQuery.no_end` queries as one, in the place of the first (from
    the earliest ``end_min``): for a reader that selects every finished run without an end time
    whatever its start (the SQL source's ``end_time IS NULL``), one query instead of one per experiment."""
    no_end = [q for q in queries if q.no_end]
    if len(no_end) < 2:
        return list(queries)
    one = RunQuery(tuple(e for q in no_end for e in q.experiment_ids), "FINISHED",
                   min(q.end_min for q in no_end if q.end_min is not None), no_end=True)
    first = queries.index(no_end[0])
    rest = [q for q in queries if not q.no_end]
    return rest[:first] + [one] + rest[first:]


def _remapped(state: RunState, digest: str) -> set[str]:
    """Experiments with a run in the state read with another mapping (or before fingerprints named
    it). Runs dropped as deleted or ended FAILED / KILLED gave no rows and are not counted."""
    prefix = digest + ":"
    return {v.experiment_id for v in state.values()
            if v.status in ("FINISHED", "RUNNING") and not v.fingerprint.startswith(prefix)}


def _renamed(state: RunState, digest: str, names: Mapping[str, str]) -> set[str]:
    """Experiments of ``names`` with a run in the state read with the mapping ``digest`` under
    another experiment name (:func:`experiment_mark`)."""
    return {state[r].experiment_id for r in _renamed_runs(state, digest, names)}


def _renamed_runs(state: RunState, digest: str, names: Mapping[str, str]) -> set[str]:
    """Runs of the experiments of ``names`` that the state holds as read with the mapping
    ``digest`` under another experiment name. Entries that :func:`restamp` marked carry no name
    and are not counted."""
    prefix, marks, out = digest + ":", {e: experiment_mark(n) for e, n in names.items()}, set()
    for r, v in state.items():
        mark = marks.get(v.experiment_id)
        if mark is None or v.status not in ("FINISHED", "RUNNING") or not v.fingerprint.startswith(prefix):
            continue
        parts = v.fingerprint.split(":")
        if len(parts) == 3 and parts[2] != mark:
            out.add(r)
    return out


def full_reads(queries: Sequence[RunQuery]) -> set[str]:
    """Experiments that ``queries`` read in full (every finished run, whatever its end time)."""
    return {e for q in queries if q.status == "FINISHED" and q.end_min is None and q.run_ids is None
            for e in q.experiment_ids}


def restamp(state: RunState, experiment_ids: Iterable[str], seen: set[str], digest: str,
            names: Mapping[str, str] | None = None) -> int:
    """After a full read of ``experiment_ids`` with the mapping ``digest``: runs of them the read
    did not return (deleted without ``--drop-deleted``, running again, or no longer matching the
    filter) get a fingerprint with the new digest that matches no run, so that :func:`_remapped`
    (and :func:`_renamed`, given the experiments' ``names``) does not read those experiments in
    full again on every ingest, and the run, should it be read again, is expanded anew. Returns
    how many entries changed (``state`` is changed in place)."""
    exps, prefix, n = set(experiment_ids), digest + ":", 0
    stale = _renamed_runs(state, digest, names or {})
    for r, v in list(state.items()):
        if (v.experiment_id in exps and r not in seen and v.status in ("FINISHED", "RUNNING")
                and (not v.fingerprint.startswith(prefix) or r in stale)):
            state[r] = v._replace(fingerprint=f"{prefix}not read by the full read of its experiment")
            n += 1
    return n


def _matches(found: Sequence[tuple[str, str]], spec: str) -> list[tuple[str, str]]:
    # an experiment named or numbered exactly so is the one meant: "ablation[1]" is a name,
    # and as a glob it also took "ablation1"
    hits = [(i, n) for i, n in found if i == spec or n == spec]
    if not hits and any(c in spec for c in "*?["):
        hits = [(i, n) for i, n in found if fnmatch.fnmatchcase(n, spec)]
    return hits


def select_experiments(found: Iterable[tuple[str, str]], specs: Sequence[str], where: str,
                       deleted: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(id, name) of the experiments that ``specs`` (names, ids or globs) select among ``found``;
    all of them when there are no specs. :class:`UserError` naming ``where`` if a spec selects none
    of them nor of ``deleted`` (experiments in MLflow's trash, listed for ``--drop-deleted``)."""
    found, deleted = list(found), list(deleted)
    if not specs:
        return found
    out: dict[str, str] = {}
    for spec in specs:
        hits = _matches(found, spec)
        by_id = [n for i, n in hits if i == spec]
        by_name = [i for i, n in hits if n == spec and i != spec]
        if by_id and by_name:
            # both were read, silently: the ID's experiment, and another whose name is that number
            raise UserError(f"{where}: {spec!r} is both the ID of experiment {by_id[0]!r} and the name of the "
                            f"experiment with ID {by_name[0]}; give the name {by_id[0]!r} for the first, or the glob "
                            f"'[{spec[0]}]{spec[1:]}' for the second")
        if not hits and not _matches(deleted, spec):
            raise UserError(f"{where}: no experiment matches {spec!r}")
        out.update(hits)
    return sorted(out.items())


def runs_of_deleted_experiments(state: RunState, active: Iterable[str], deleted: Sequence[tuple[str, str]],
                                specs: Sequence[str]) -> list[str]:
    """Runs the state holds of experiments deleted in MLflow, for ``--drop-deleted``: a deleted
    experiment's runs are not listed as deleted runs (they stay active in a deleted experiment),
    and its rows stayed in the store. ``deleted`` are the experiments in the trash (id, name);
    one gone for good (``mlflow gc``) is in neither it nor ``active`` (ids). Without ``specs``
    every such experiment counts; with them, those the specs select (one gone for good: by its
    ID, its name being gone with it)."""
    active = set(active)
    if specs:
        chosen = {i for spec in specs for i, _ in _matches(deleted, spec)}
        chosen |= {s for s in specs if s not in active}
    else:
        chosen = {i for i, _ in deleted} | ({v.experiment_id for v in state.values()} - active)
    return sorted(r for r, v in state.items() if v.experiment_id in chosen and v.status != DELETED)


def stored_runs_of(state: RunState, experiment_ids: Iterable[str]) -> list[str]:
    """Run ids the state holds as FINISHED or RUNNING in ``experiment_ids``, sorted: the runs whose
    existence ``--drop-deleted`` checks (a deleted run purged by ``mlflow gc`` is listed neither as
    active nor as deleted, and its rows stayed in the store for ever)."""
    exps = set(experiment_ids)
    return sorted(r for r, v in state.items() if v.experiment_id in exps and v.status in ("FINISHED", "RUNNING"))


def drop_deleted(state: RunState, run_ids: Iterable[str], source: str) -> list[tuple[str, str]]:
    """Mark runs deleted in MLflow as ``DELETED`` in the state (a tombstone: a restored run is read
    again) and return the (source, run_id) pairs whose rows to delete: those not dropped before."""
    gone = []
    for r in run_ids:
        prev = state.get(r)
        if prev is not None and prev.status != DELETED:
            state[r] = prev._replace(status=DELETED, fingerprint=DELETED, rows=0)
            gone.append((source, r))
    return gone


#: Runs of a source's state looked up in the MLflow database before it is read
#: (:func:`check_same_database`): the latest few of each experiment, a bounded number in all (one
#: query of run ids; a no-op ingest of a REST source costs one request more).
IDENTITY_PER_EXPERIMENT = 3
IDENTITY_MAX = 60


def identity_sample(state: RunState, experiment_ids: Iterable[str]) -> list[str]:
    """Run ids the state holds of ``experiment_ids`` (not dropped as deleted) to look up in the
    database: the :data:`IDENTITY_PER_EXPERIMENT` latest by end time of each experiment, the
    experiments with the latest runs first, :data:`IDENTITY_MAX` in all. The latest runs are the
    least likely to have been deleted and purged (``mlflow gc``) since."""
    exps = set(experiment_ids)
    by_exp: dict[str, list[tuple[int, str]]] = {}
    for r, v in state.items():
        if v.experiment_id in exps and v.status != DELETED:
            by_exp.setdefault(v.experiment_id, []).append((v.end_time, r))
    picked = [sorted(runs, reverse=True)[:IDENTITY_PER_EXPERIMENT] for runs in by_exp.values()]
    picked.sort(key=lambda runs: runs[0], reverse=True)
    return [r for runs in picked for _, r in runs][:IDENTITY_MAX]


def check_same_database(state: RunState, existing: Iterable[str], lookup: Callable[[list[str], list[str]], set[str]],
                        options: SourceOptions, *, where: str, source: str) -> None:
    """Refuse to read a database that is not the one the source's state was made from.

    The state (run ids, and per experiment id a watermark) is kept per source *name*; the same
    name given to another MLflow database in a later command (``--source lab`` for server A today,
    B tomorrow; or one URI, ``http://localhost:5000``, serving another database) took A's experiment
    ids for B's: B's runs that ended before A's latest in the same experiment id were never read
    (exit 0, "0 new"), and ``--drop-deleted`` dropped every row of A as deleted or purged.

    ``existing`` are the ids of the state's experiments the database has (active, and deleted
    ones where listed); ``lookup(run_ids, experiment_ids)`` returns the run ids of
    :func:`identity_sample` that the database holds (any lifecycle stage). When none of them is
    there, the database is another. When none of the state's experiments is there either, nothing
    is at stake unless ``--drop-deleted`` would drop them all: refused then too, unless experiments
    were named (``--experiment ID`` selects an experiment gone for good by its id). ``--full`` reads
    the database as this source's whatever the state holds (and, with ``--drop-deleted``, drops
    the runs it does not have), for a database whose sampled runs were all purged."""
    if options.full:
        return
    live = {v.experiment_id for v in state.values() if v.status != DELETED}
    if not live:
        return
    exps = sorted(live & set(existing))
    if not exps:
        if options.drop_deleted and not options.experiments:
            raise UserError(f"{where}: none of the {len(live)} experiment(s) whose runs the store's source {source!r} "
                            "holds is in this MLflow database, and --drop-deleted would drop them all: is it another "
                            "database under the same source name? Give it its own name (--source, or 'name:' in a "
                            "sources file), or add --full to read it as this source's database")
        return
    sample = identity_sample(state, exps)
    if sample and not lookup(sample, exps):
        raise UserError(f"{where}: none of the {len(sample)} latest runs that the store's source {source!r} holds "
                        f"of experiment(s) {', '.join(exps[:5])}{' ...' if len(exps) > 5 else ''} is in this MLflow "
                        "database: another database under the same source name (its runs would be taken for the "
                        "other's, or dropped as deleted)? Give it its own name (--source, or 'name:' in a sources "
                        "file), or add --full to read it as this source's database")


def gave_rows(state: RunState) -> bool:
    """Whether an earlier ingest of the source, as its loaded state says, gave rows: call it before
    this ingest changes the state."""
    return any(v.rows > 0 and v.status in ("FINISHED", "RUNNING") for v in state.values())


def watermark(state: RunState, experiment_id: str, now_ms: int | None = None) -> int | None:
    """The latest end time (ms) of a finished run of the experiment already ingested. An end time
    later than ``now_ms`` (default: now) was kept by an ingest before :func:`watermark_end` capped
    them, at a read time unknown: it does not count (its run is read again, and capped then)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    ends = [v.end_time for v in state.values()
            if v.experiment_id == experiment_id and v.status == "FINISHED" and 0 < v.end_time <= now]
    return max(ends) if ends else None


def load_state(store: Store, name: str) -> RunState:
    """The state table ``name`` of the store as a dict (empty for a new store or source)."""
    t = store.read_state(name) if store.exists() else None
    if t is None:
        return {}
    d = t.to_pydict()
    return {r: RunEntry(e, s, int(t_), f, int(n)) for r, e, s, t_, f, n in
            zip(d["run_id"], d["experiment_id"], d["status"], d["end_time"], d["fingerprint"], d["rows"])}


#: What a filtered ingest's state name adds to its source's (``mlflow:<source>#filter=<sha1, 12
#: hex>``): the watermark of runs a filter selected is not that of the others.
FILTER_STATE = "#filter="


def filter_state_suffix(filter_string: str | None) -> str:
    """The state name's suffix of an ingest with ``filter_string`` ("" without one)."""
    if not filter_string or not filter_string.strip():
        return ""
    return FILTER_STATE + hashlib.sha1(filter_string.strip().encode()).hexdigest()[:12]


def sqlite_source(uri: str) -> str:
    """``sqlite:///rel/mlflow.db`` with its path made absolute against the working directory (where
    MLflow and SQLAlchemy open it), and an absolute one normalised (``sqlite:////d/x/../mlflow.db``
    is ``sqlite:////d/mlflow.db``), other URIs as they are: as typed, one database had two names
    (doubled rows), and two databases in two directories one name and one state (runs lost). A
    store's older spelling keeps its name (:func:`stored_source`, ``stored_db_source``)."""
    head = "sqlite:///"
    path = uri[len(head):] if uri.lower().startswith(head) else ""
    if not path or path == ":memory:":
        return uri
    if path.startswith("/"):
        # (normpath keeps POSIX's two leading slashes, which name another root: left as typed)
        return uri if path.startswith("//") else head + os.path.normpath(path)
    return head + os.path.abspath(path)


def fragment_cut_source(source: str) -> str | None:
    """The name meta-study gave a path URI's source (``sqlite:``, ``file:``) holding ``#`` before
    names kept it (:func:`~meta_study.mlflow_client.safe_uri`): cut there (``sqlite:////data/run``
    for ``sqlite:////data/run#1/mlflow.db``); None for any other source. A store that holds that
    name keeps it (:func:`stored_source`): its runs were stored under it. Two databases that shared
    it still share it there, and the second is refused as another database (``check_same_database``)."""
    import urllib.parse

    if "#" not in source:
        return None
    try:
        p = urllib.parse.urlsplit(source)
    except ValueError:
        return None
    if p.netloc or not p.scheme or "://" not in source:
        return None
    return sqlite_source(source.split("#", 1)[0])


def stored_source(store: Store, prefix: str, source: str, canonical: Callable[[str], str] | None = None) -> str:
    """The name the store already gives ``source``: a stored state ``prefix + name`` (a filtered
    one's too) whose name is spelt differently but ``canonical`` (default:
    :func:`~meta_study.mlflow_client.source_uri`) makes ``source``: ``http://h:5000/`` stored before
    names were canonical, ``sqlite:///mlflow.db`` before relative paths were made absolute, a path
    cut at its ``#`` (:func:`fragment_cut_source`). Its rows keep their name, so the runs are
    replaced, not stored a second time. ``source`` when none is, or the store is new."""
    from ..mlflow_client import source_uri

    same = canonical or source_uri
    if not store.exists():
        return source
    cut = fragment_cut_source(source)
    olds = [name[len(prefix):].split(FILTER_STATE, 1)[0] for name in sorted(store.state_names(f"{prefix}*"))]
    for old in olds:
        if old != source and (same(old) == source or old == cut):
            refuse_stored_credentials(old)
            return old
    refuse_password_cut_names(olds, source)
    return source


#: A database URL's name as an older meta-study stored it when its password held ``#`` or ``?``:
#: cut there, host and database lost, the user and the password's first characters kept
#: (``mysql+pymysql://u:a`` for ``mysql+pymysql://u:a#b@h/db``; a ``/`` kept the whole URL, which
#: :func:`refuse_stored_credentials` says). Group 1: the scheme, 2: what urllib read as the port.
_PASSWORD_CUT_NAME = re.compile(r"^((?:postgres(?:ql)?|mysql|mssql|mariadb|oracle)(?:\+[^:/@?#]*)?)://"
                                r"[^:/@?#]*:([^/@?#]*)$", re.IGNORECASE)


def password_cut_dialect(name: str) -> str | None:
    """The database dialect (``postgresql``, ``mysql``, ...) of a stored source name that an older
    meta-study cut at a ``#`` or ``?`` of the URL's password (:data:`_PASSWORD_CUT_NAME`); None for
    any other name. Only a "port" that is no port tells it (``mysql+pymysql://u:a``, ``postgresql://u:``):
    ``postgresql://u:12`` is as well host ``u``, port 12."""
    m = _PASSWORD_CUT_NAME.match(name)
    if m is None or (m.group(2).isdigit() and 0 < int(m.group(2)) < 65536):
        return None
    dialect = m.group(1).partition("+")[0].lower()
    return "postgresql" if dialect == "postgres" else dialect


def refuse_password_cut_names(stored: Sequence[str], source: str) -> None:
    """:class:`UserError` for a database ``source`` not yet in the store (none of the ``stored``
    names) beside a stored name of its dialect that an older meta-study cut at its password
    (:func:`password_cut_dialect`). That name lost the host and database, so it matches no source:
    if its runs were this database's, every run was stored a second time under the new name,
    without a word, and the store keeps part of a password in every row and in ``store info``, as
    a name with the whole password does (:func:`refuse_stored_credentials`). ``--source NAME`` goes on."""
    scheme = source.split("://", 1)[0] if "://" in source else ""
    dialect = scheme.partition("+")[0].lower()
    dialect = "postgresql" if dialect == "postgres" else dialect
    if not dialect or source in stored:
        return
    for old in stored:
        if password_cut_dialect(old) == dialect:
            raise UserError(f"the store holds a {dialect} database's runs under a name an older meta-study cut at a "
                            f"'#' or '?' of its password ({old.split('://', 1)[0]}://***, the first characters of "
                            f"the password in every row and in `store info`): if they are this database's, each "
                            f"run would be stored again under {source}; ingest into a new store (and delete this "
                            "one), or give --source NAME to store the runs under that name")


def refuse_stored_credentials(name: str) -> None:
    """:class:`UserError` for a stored source name that holds credentials: one an older meta-study
    stored from a URI whose password held ``/`` (``postgresql://u:12/34@h/db``: urllib read no user
    info there). Taken as this source's name, every new row carried the password too, without a
    word; a name of its own stored every run a second time. The store cannot rename a source."""
    from ..mlflow_client import has_credentials, shown_uri

    if has_credentials(name):
        raise UserError(f"the store holds this source's runs under a name with its credentials in it "
                        f"({shown_uri(name).replace('://', '://***@', 1)}, from an older meta-study): every row "
                        "and `store info` show the password; ingest into a new store (and delete this one), or "
                        "give --source NAME to store the runs again under that name")


#: Seconds a database connection may take to be made (libpq's and the MySQL drivers'
#: ``connect_timeout``). They have none by default: a host or port that takes the connection and
#: never answers (a firewall dropping packets, another service on the port) hung the ingest for
#: good. The URL's own ``?connect_timeout=`` and libpq's ``PGCONNECT_TIMEOUT`` win.
DB_CONNECT_TIMEOUT_S = 20


#: SQLAlchemy's PostgreSQL drivers on libpq, which read a URI's ``options`` (a session's settings
#: at start-up) and libpq's environment (``PGUSER``, ``PGPASSWORD``, ``~/.pgpass``, ``PGOPTIONS``);
#: ``postgresql://`` is psycopg. Others (pg8000) read none of them.
LIBPQ_DRIVERS = ("psycopg", "psycopg2", "psycopg2cffi")


#: SQLAlchemy driver module -> what installs it (pip)
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
                   "MySQLdb": "mysqlclient", "pymysql": "PyMySQL", "pyodbc": "pyodbc", "pymssql": "pymssql",
                   "mysql": "mysql-connector-python"}


def driver_hint(module: str | None) -> str:
    """What to install for a missing driver module: SQLAlchemy picks the module from the URI
    (``postgresql://`` is psycopg, version 3, since SQLAlchemy 2.1; ``postgresql+psycopg2://``
    psycopg2), so the hint names the module that was missing, not a fixed one per scheme."""
    top = (module or "").partition(".")[0]
    package = DRIVER_PACKAGES.get(top)
    return f"install it (pip install {package})" if package else "install the driver the URI names"


def db_connect_args(url: Any) -> dict[str, Any]:
    """SQLAlchemy ``connect_args`` for a database URL (a ``sqlalchemy.engine.URL``): a connect
    timeout of :data:`DB_CONNECT_TIMEOUT_S` for the drivers known to take one by that name
    (psycopg, psycopg2, mysqlclient, PyMySQL), unless the user set one; nothing for the others."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if "connect_timeout" in url.query:
        return {}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2") and not os.environ.get("PGCONNECT_TIMEOUT"):
        return {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    if backend == "mysql" and driver in ("mysqldb", "pymysql"):
        return {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    return {}


def refuse_bad_port(uri: str, prefix: str = "") -> None:
    """:class:`UserError` for a URL whose port is not a number (``http://h:notaport``), in one
    line naming it without user info; Python's URL parser raised ``ValueError`` (a traceback)."""
    import urllib.parse

    try:
        p = urllib.parse.urlsplit(uri)
    except ValueError as e:     # "http://[::1": Invalid IPv6 URL, a traceback
        from ..mlflow_client import safe_uri

        raise UserError(f"{prefix}{safe_uri(uri)}: not a URL ({e})") from None
    try:
        _ = p.port
    except ValueError:
        if "@" in uri.partition("://")[2][len(p.netloc):]:
            # a password holding '/', '?' or '#' (http://u:pa/ss@h): urllib took "pa" for the port,
            # and the line printed the password
            raise UserError(f"{prefix}{p.scheme}://{uri.rpartition('@')[2]}: not a URL urllib reads (user info "
                            "with '/', '?' or '#' in it?); credentials in the URI are refused: give them through "
                            "the environment") from None
        host = p.netloc.rpartition("@")[2]
        raise UserError(f"{prefix}{p.scheme}://{host}{p.path}: the port {host.rpartition(':')[2]!r} is not a "
                        "number in 0-65535") from None


def state_table(state: RunState) -> pa.Table:
    """The state as the store keeps it, sorted by run id."""
    ids = sorted(state)
    cols = list(zip(*(state[r] for r in ids))) if ids else [[], [], [], [], []]
    return pa.table({"run_id": ids, "experiment_id": list(cols[0]), "status": list(cols[1]),
                     "end_time": pa.array(cols[2], pa.int64()), "fingerprint": list(cols[3]),
                     "rows": pa.array(cols[4], pa.int64())}, schema=STATE_SCHEMA)
