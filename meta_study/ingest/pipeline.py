"""``meta-study ingest``: sources -> validation -> quarantine / upsert, one commit per batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from ..errors import StoreDamagedError, StoreLockedError, UserError
from ..schema import validate
from ..store import Store
from .sources import Progress, Source, dedupe_keys, no_progress


def _stat_hints() -> dict[str, str]:
    from .mlflow_runs import NO_DS_HINT, NO_DS_STAT

    return {NO_DS_STAT: NO_DS_HINT}


#: stat -> what the summary line adds when the stat is not zero (what it means, what to do).
STAT_HINTS = _stat_hints()


@dataclass
class SourceReport:
    """What ingest did with one source: the per-source summary line."""

    label: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    commits: int = 0
    seconds: float = 0.0
    error: str | None = None
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if self.error:
            # errors name their input ("URI: problem"); the label already does
            head, sep, rest = self.error.partition(": ")
            err = rest if sep and head and self.label.startswith(head) else self.error
            return f"{self.label}: FAILED: {err}"
        if self.stats.get("unchanged_files") and not (self.new or self.updated or self.unchanged or self.quarantined
                                                       or self.deleted):
            return (f"{self.label}: unchanged since its last ingest (same content, mapping and schema), "
                    f"not read again ({self.seconds:.1f} s)")
        extra = "".join(f", {v} {k.replace('_', ' ')}" for k, v in sorted(self.stats.items()) if v)
        dele = f", {self.deleted} deleted" if self.deleted else ""
        hints = "".join(f"; {h}" for k, h in STAT_HINTS.items() if self.stats.get(k))
        return (f"{self.label}: {self.new} new, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.quarantined} quarantined{dele}{extra}{hints} ({self.seconds:.1f} s)")


def ingest_sources(sources: Sequence[Source], store: Store, *, progress: Progress = no_progress) -> list[SourceReport]:
    """Ingest every source into ``store``; a failing source is reported and the others go on.

    Each batch a source yields is validated, deduplicated and committed atomically with the
    source's state, so an interrupted ingest resumes where it stopped.

    Returns:
        One :class:`SourceReport` per source, in order.
    """
    reports = []
    for src in sources:
        rep = SourceReport(label=src.label)
        t0 = time.perf_counter()
        try:
            for batch in src.batches(store, progress):
                _commit_batch(store, src, batch, rep)
        except (StoreLockedError, StoreDamagedError):
            raise  # the store, not the source, is the problem: stop everything
        except UserError as e:
            rep.error = str(e)
        except (OSError, ConnectionError) as e:  # unreachable servers, permissions, broken pipes
            rep.error = f"{type(e).__name__}: {e}".splitlines()[0]
        rep.seconds = time.perf_counter() - t0
        reports.append(rep)
    return reports


def _commit_batch(store: Store, src: Source, batch, rep: SourceReport) -> None:
    if batch.chunks is not None:
        _commit_chunks(store, src, batch, rep)
        return
    v = validate(batch.rows, raw=batch.raw)
    # The raw rows are done with: let them go before the commit, whose merge is the other half of
    # an ingest's peak memory (the caller's loop still holds the batch object itself).
    batch.rows, batch.raw = pd.DataFrame(), None
    table, conflicts = dedupe_keys(v.table)
    parts = [p for p in (batch.rejected, v.rejected.drop(columns=["row"]), conflicts) if p is not None and len(p)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else None
    res = store.commit(table, quarantine=quarantine, state=batch.state, delete_runs=batch.delete_runs,
                       operation="ingest", info={"source": src.label})
    _count(rep, res, batch)


def _commit_chunks(store: Store, src: Source, batch, rep: SourceReport) -> None:
    """A large input in pieces, validated piece by piece and committed once (bounded memory)."""
    def pieces():
        for rows, raw in batch.chunks:
            v = validate(rows, raw=raw)
            yield v.table, v.rejected.drop(columns=["row"])
    res = store.commit_stream(pieces(), dedupe=dedupe_keys, quarantine=batch.rejected, state=batch.state,
                              operation="ingest", info={"source": src.label})
    _count(rep, res, batch)


def _count(rep: SourceReport, res, batch) -> None:
    rep.new += res.inserted
    rep.updated += res.updated
    rep.unchanged += res.unchanged
    rep.quarantined += res.quarantined
    rep.deleted += res.deleted
    rep.commits += int(res.wrote)
    for k, n in batch.stats.items():
        rep.stats[k] = rep.stats.get(k, 0) + n
