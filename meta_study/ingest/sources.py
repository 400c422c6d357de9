"""The source interface and registry: anything that yields raw canonical rows for the store.

A source is looked up by name (``files``, ``mlflow``) from a spec string: an existing local path
is a file export; a URI with a tracking-store scheme is an MLflow server. A source yields
:class:`SourceBatch` es; each batch is validated and committed on its own, so a long ingest
that is killed keeps every batch committed before the kill and the next run resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import pandas as pd
import pyarrow as pa

from ..errors import UserError
from ..schema import key_strings, row_json
from ..store import Store
from .mapping import IngestMapping

#: progress(description, completed, total): total may be None when unknown.
Progress = Callable[[str, int, int | None], None]


def no_progress(description: str, completed: int, total: int | None) -> None:  # noqa: ARG001
    """A progress callback that shows nothing."""


@dataclass
class SourceBatch:
    """Raw rows from one source, committed to the store as one transaction.

    Attributes:
        rows: rows with canonical column names, raw (not yet validated) values.
        raw: one payload per row for the quarantine (JSON), or None to use the row itself.
        rejected: rows the source rejected before validation: source, run_id, reason, raw.
        state: state tables to commit with the rows (e.g. which MLflow runs were seen).
        delete_runs: (source, run_id) pairs to remove.
        stats: counters for the summary line (e.g. ``runs``, ``skipped_files``).
    """

    rows: pd.DataFrame
    raw: list[str] | None = None
    rejected: pd.DataFrame | None = None
    state: dict[str, pa.Table] = field(default_factory=dict)
    delete_runs: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


class Source(Protocol):
    """What ingest needs from a source."""

    #: How the source is named in messages: never contains credentials.
    label: str

    def batches(self, store: Store, progress: Progress) -> Iterator[SourceBatch]:
        """Yield batches of raw rows; may read the store's state to fetch only what changed."""
        ...


@dataclass(frozen=True)
class SourceOptions:
    """Options that apply to every source of one ``meta-study ingest`` call."""

    experiments: tuple[str, ...] = ()   # MLflow experiment names, ids or globs
    filter_string: str | None = None    # MLflow search filter
    include_running: bool = False
    drop_deleted: bool = False
    metric_history: bool = False
    page_size: int = 1000


SourceFactory = Callable[[Sequence[str], "IngestMapping | None", SourceOptions], list[Source]]

#: name -> (claims(spec) -> bool, factory). A factory takes every spec its kind claimed and
#: returns the sources they make (a join mapping makes one source of many files).
_REGISTRY: dict[str, tuple[Callable[[str], bool], SourceFactory]] = {}


def register_source(name: str, claims: Callable[[str], bool]) -> Callable[[SourceFactory], SourceFactory]:
    """Register a source kind: ``claims(spec)`` says whether a spec string belongs to it."""
    def deco(factory: SourceFactory) -> SourceFactory:
        _REGISTRY[name] = (claims, factory)
        return factory
    return deco


def source_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Importing registers them; kept lazy so `import meta_study.ingest` stays cheap.
    from . import files  # noqa: F401
    try:
        from . import mlflow_source  # noqa: F401
    except ImportError:  # pragma: no cover - mlflow is a hard dependency; guard for slim installs
        pass


def kind_of(spec: str) -> str:
    """The registered source kind that claims ``spec``; :class:`UserError` if none does."""
    _load_builtin()
    for name, (claims, _) in _REGISTRY.items():
        if claims(spec):
            return name
    if "://" in spec:
        raise UserError(f"{spec.split('://')[0]}://...: unsupported source scheme")
    raise UserError(f"{spec}: no such file or directory")


def open_sources(specs: Sequence[str], mapping: IngestMapping | None,
                 options: SourceOptions = SourceOptions()) -> list[Source]:
    """Build sources for spec strings, in order of kinds first seen. Each file is a source of its
    own, except that a join mapping makes one source of all its files; each MLflow URI is one."""
    by_kind: dict[str, list[str]] = {}
    for spec in specs:
        by_kind.setdefault(kind_of(spec), []).append(spec)
    out: list[Source] = []
    for kind, kind_specs in by_kind.items():
        out.extend(_REGISTRY[kind][1](kind_specs, mapping, options))
    return out


def is_local_path(spec: str) -> bool:
    return "://" not in spec and os.path.exists(spec)


def dedupe_keys(table: pa.Table) -> tuple[pa.Table, pd.DataFrame]:
    """Collapse rows that repeat a key with identical values; quarantine keys with conflicting ones.

    Returns:
        (rows with unique keys, rejected rows with source, run_id, reason, raw).
    """
    empty = pd.DataFrame(columns=["source", "run_id", "reason", "raw"])
    if table.num_rows < 2:
        return table, empty
    keys = key_strings(table)
    codes, uniques = pd.factorize(keys)
    counts = pd.Series(codes).value_counts()
    dup_codes = set(counts[counts > 1].index)
    if not dup_codes:
        return table, empty
    keep = []
    rejected = []
    seen: dict[int, list[int]] = {}
    for i, c in enumerate(codes):
        if c in dup_codes:
            seen.setdefault(c, []).append(i)
        else:
            keep.append(i)
    content_cols = [c for c in table.column_names if c != "ingested_at"]
    for c, idx in seen.items():
        rows = table.select(content_cols).take(pa.array(idx)).to_pylist()
        if all(r == rows[0] for r in rows[1:]):
            keep.append(idx[0])
        else:
            for r in rows:
                rejected.append({"source": r["source"], "run_id": r["run_id"],
                                 "reason": f"conflicting duplicate key: {len(idx)} rows share this key with "
                                           "different values", "raw": row_json(r)})
    keep.sort()
    return table.take(pa.array(keep, pa.int64())), pd.DataFrame(rejected, columns=["source", "run_id", "reason", "raw"])


def rejected_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows rejected by a source: each record has source, run_id, reason, raw."""
    return pd.DataFrame(list(records), columns=["source", "run_id", "reason", "raw"])
