"""``meta-study ingest``: sources -> validation -> quarantine / upsert, one commit per batch.

Three rules keep a source from storing wrong data quietly:

- *Stale rows*: a batch that holds every row of the runs it contains (a file, ``replace_runs``)
  replaces that source's stored rows of those runs: a stored row whose key the file no longer
  has (``shots`` corrected from 1 to 10) is removed in the same commit. Stored runs the file lacks
  are kept and counted, or removed with ``drop_missing`` (``--drop-missing``).
- *Percent*: when most values of an accuracy column (or data_fraction) lie in (1, 100] (or, in a
  file, are written with a % sign), the column is in percent, and the batch is refused whole
  (nothing stored) with the unit to set (data_fraction has none: its values are to be fractions),
  instead of storing the few values that happen to be <= 1 as fractions. Its mirror, a column declared in percent that holds
  fractions, is refused by the source before validation, from the raw values
  (:class:`~meta_study.ingest.mapping.PercentTally`).
- *All quarantined*: a source that read rows and stored none of them has failed (exit code), and
  every summary line names the most common quarantine reason with its count.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StoreDamagedError, StoreLockedError, UserError
from ..schema import KEY, SCHEMA
from ..validation import (SOURCE_UNIT, Validated, WholeInput, dedupe_keys, ends_before_start_note,
                          payloads_of, printable, validate)
from ..keys import key_array, key_of
from ..store import Store
from .mapping import NOTHING_STORED, TASK_OF, PercentTally, unit_numbers
from .sources import STORED_BEFORE, Progress, Source, SourceBatch, no_progress

#: Fraction columns whose values, when most of them lie in (1, 100], are taken to be percents.
#: data_fraction too, in a whole input (a file): validation quarantines its values <= 1 among
#: percents, but one piece of a large file at a time, so a piece of 0.5 and 1 (0.5 % and 1 % runs)
#: was stored as fractions.
PERCENT_SUSPECTS = ("us_accuracy", "ds_accuracy", "data_fraction")
#: Of those, the columns a mapping can give a percent unit (``units:``, ``accuracy_unit:``).
_UNIT_SETTABLE = ("us_accuracy", "ds_accuracy")


def _stat_hints() -> dict[str, str]:
    from .mlflow_runs import NO_DS_HINT, NO_DS_STAT

    return {NO_DS_STAT: NO_DS_HINT}


#: stat -> what the summary line adds when the stat is not zero (what it means, what to do).
STAT_HINTS = _stat_hints()


def stat_words(key: str, n: int) -> str:
    """A count's name in the ingest line: ``runs_unchanged`` as "runs unchanged", and its first
    "runs" or "files" in the singular for one ("1 refit result runs not read" read as a typo)."""
    words = key.split("_")
    if n == 1:
        i = next((j for j, w in enumerate(words) if w in ("runs", "files")), None)
        if i is not None:
            words[i] = words[i][:-1]
    return " ".join(words)


@dataclass
class SourceReport:
    """What ingest did with one source: the per-source summary line."""

    label: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0         # rows added to the quarantine (a payload already there is not added again)
    deleted: int = 0             # stale rows of the source's runs, and runs dropped with --drop-missing
    commits: int = 0
    seconds: float = 0.0
    error: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    valid: int = 0               # rows read that passed validation
    rejected: int = 0            # rows read that were rejected (quarantined now or before)
    reasons: dict[str, int] = field(default_factory=dict)   # reason kind -> rejected rows
    kept_runs: int = 0           # stored runs of the source that its file lacks, kept (no --drop-missing)
    notes: list[str] = field(default_factory=list)
    #: input files the source passed over unread (a join's files that no table names): file as
    #: shown -> why; the line names a few of them and says why (a bare count did not say whether data was lost)
    skipped: dict[str, str] = field(default_factory=dict)
    #: stale rows removed that other inputs of the source stored (``SourceBatch.earlier_inputs``):
    #: (rows, runs, sources, those inputs); said in the line, never in silence
    replaced: tuple[int, int, tuple[str, ...], tuple[str, ...]] | None = None

    @property
    def all_quarantined(self) -> bool:
        """Rows were read and every one of them was rejected, and nothing of the source was
        stored before: the source failed. (An incremental MLflow ingest whose one new run was
        rejected, beside stored, unchanged runs, said "FAILED ... nothing stored" and exited 2.)"""
        return (self.error is None and self.rejected > 0 and self.valid == 0
                and not self.stats.get(STORED_BEFORE))

    @property
    def ok(self) -> bool:
        return self.error is None and not self.all_quarantined

    def top_reason(self) -> tuple[str, int] | None:
        if not self.reasons:
            return None
        kind = max(sorted(self.reasons), key=lambda k: self.reasons[k])
        return kind, self.reasons[kind]

    def line(self) -> str:
        """One line; values from the source (labels, reasons) with control characters escaped."""
        if self.error:
            # errors name their input ("URI: problem"); the label already does. The label is that
            # input, or it with its selection after a space (an MLflow URI [experiments]): a head
            # that only begins it is no input ("ds_task: ..." of a file ds_task_x.csv lost its column)
            head, sep, rest = self.error.partition(": ")
            named = head.rstrip("/") == self.label.rstrip("/") or self.label.startswith(head + " ")
            err = rest if sep and head and named else self.error
            return printable(f"{self.label}: FAILED: {err}")
        if self.stats.get("unchanged_files") and not (self.new or self.updated or self.unchanged or self.quarantined
                                                       or self.deleted or self.rejected):
            return printable(f"{self.label}: unchanged since its last ingest (same content, mapping and schema), "
                             f"not read again ({self.seconds:.1f} s)")
        top = self.top_reason()
        if self.all_quarantined and top is not None:
            return printable(f"{self.label}: FAILED: all {self.rejected} rows quarantined, nothing stored; "
                             f"{top[1]} for: {top[0]} (meta-study store quarantine lists them)")
        extra = "".join(f", {v} {stat_words(k, v)}" for k, v in sorted(self.stats.items())
                        if v and not k.startswith("_") and not (k == "skipped_files" and self.skipped))
        dele = f", {self.deleted} deleted" if self.deleted else ""
        kept = (f", {self.kept_runs} stored runs not in the file kept (--drop-missing removes them)"
                if self.kept_runs else "")
        hints = "".join(f"; {h}" for k, h in STAT_HINTS.items() if self.stats.get(k))
        if self.replaced is not None:
            rows, runs, srcs, files = self.replaced
            hints += (f"; {rows} deleted rows ({runs} runs of source {', '.join(map(repr, srcs))}) were stored "
                      f"from {', '.join(files)} and are not in this file: a file replaces every row of the runs it "
                      "holds (files of other tasks of the same runs: one 'join:' mapping, or a source per file)")
        # "1 of 1 rejected for: ..." read as every row rejected: say of how many rows read, then why
        total = self.new + self.updated + self.unchanged + self.rejected
        why = ("" if top is None else f"; {self.rejected} of {total} rows rejected: {top[0]}" if top[1] == self.rejected
               else f"; {self.rejected} of {total} rows rejected, {top[1]} of them for: {top[0]}")
        # "0 quarantined ...; 2 of 2 rejected" read as a contradiction: the rest were there already
        before = self.rejected - self.quarantined
        was = (f" ({before} of them already in the quarantine)" if before > 0 and top is not None else "")
        return printable(f"{self.label}: {self.new} new, {self.updated} updated, {self.unchanged} unchanged, "
                         f"{self.quarantined} quarantined{dele}{kept}{extra}{hints} ({self.seconds:.1f} s){why}{was}"
                         f"{_skipped_clause(self.skipped)}")


#: How many skipped files a summary line names before "and N more".
_SKIPPED_SHOWN = 3


def _skipped_clause(skipped: dict[str, str]) -> str:
    """``"; 3 files skipped (why): a.csv, b.csv, c.csv"``, one clause per reason, naming
    :data:`_SKIPPED_SHOWN` files and then "and N more"; empty when none was skipped."""
    by_why: dict[str, list[str]] = {}
    for name, why in skipped.items():
        by_why.setdefault(why, []).append(name)
    out = ""
    for why, names in by_why.items():
        shown = ", ".join(names[:_SKIPPED_SHOWN])
        more = f" and {len(names) - _SKIPPED_SHOWN} more" if len(names) > _SKIPPED_SHOWN else ""
        out += f"; {len(names)} file{'s' if len(names) > 1 else ''} skipped ({why}): {shown}{more}"
    return out


def ingest_sources(sources: Sequence[Source], store: Store, *, progress: Progress = no_progress) -> list[SourceReport]:
    """Ingest every source into ``store``; a failing source is reported and the others go on.

    Each batch a source yields is validated, deduplicated and committed atomically with the
    source's state, so an interrupted ingest resumes where it stopped.

    A first ingest into a new location that ends without a committed version (Ctrl-C, SIGTERM,
    every source failed) leaves nothing of a store there (:meth:`Store.removed_unless_committed`).

    Returns:
        One :class:`SourceReport` per source, in order.
    """
    with store.removed_unless_committed():
        return _ingest_each(sources, store, progress)


def _ingest_each(sources: Sequence[Source], store: Store, progress: Progress) -> list[SourceReport]:
    """:func:`ingest_sources`, source after source."""
    reports = []
    for src in sources:
        rep = SourceReport(label=src.label)
        rep.notes.extend(getattr(src, "notes", ()))   # known before reading: shown whether or not it fails
        t0 = time.perf_counter()
        try:
            for batch in src.batches(store, progress):
                rep.notes.extend(batch.notes)
                rep.skipped.update(batch.skipped)
                _commit_batch(store, src, batch, rep)
        except (StoreLockedError, StoreDamagedError) as e:
            # the store, not the source, is the problem: stop everything. The command then shows
            # this one line, not the lines of what was committed before it (the sources done, the
            # pages of this one), which stay: it said nothing of them, as if nothing was stored
            done = [r for r in (*reports, rep) if r.commits]
            if not done:
                raise
            raise type(e)(f"{e}; {_stored_before(done)}") from e
        except UserError as e:
            rep.error = _after_commits(str(e), rep)
        except (OSError, ConnectionError) as e:  # unreachable servers, permissions, broken pipes
            rep.error = _after_commits(f"{type(e).__name__}: {e}".splitlines()[0], rep)
        rep.seconds = time.perf_counter() - t0
        reports.append(rep)
    return reports




def _stored_before(done: Sequence[SourceReport]) -> str:
    """What the sources in ``done`` committed before the store stopped the ingest, in one clause."""
    said = "; ".join(f"{r.label}: {r.new} new, {r.updated} updated" + (f", {r.deleted} deleted" if r.deleted else "")
                     + f", {r.quarantined} quarantined" for r in done)
    return f"this ingest stored before it (and keeps): {said}"


def _after_commits(error: str, rep: SourceReport) -> str:
    """``error`` as the source's line says it: when batches of the source were committed before
    the one refused (the earlier pages of an MLflow ingest, the earlier files of a directory),
    "nothing of this source was stored" was false, and the line showed nothing of what they stored.
    Any other error after such commits (the server gone at page 3: "FAILED: ConnectionError: ...")
    said nothing of them either, read as "nothing stored": it says what they stored."""
    if not (rep.new or rep.updated or rep.deleted or rep.quarantined):
        return error
    done = (f"{rep.new} new, {rep.updated} updated" + (f", {rep.deleted} deleted" if rep.deleted else "")
            + f" and {rep.quarantined} quarantined rows")
    if NOTHING_STORED not in error:
        return f"{error} (this ingest stored {done} of this source before the failure, and they stay)"
    return error.replace(NOTHING_STORED, f"nothing more of this source was stored (this ingest stored {done} of it "
                                         "before this part, and they stay)", 1)


# --------------------------------------------------------------------------------------------
# What one batch read: counts, reasons, the percent check, and its runs and keys
# --------------------------------------------------------------------------------------------


@dataclass
class _Seen:
    """What the validated pieces of one batch held (one piece, or many for a large file)."""

    valid: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    above_one: dict[str, list[int]] = field(default_factory=dict)   # column -> [in (1, 100], finite]
    #: column -> [percents written with their sign, zeros] of a file (:meth:`add_evidence`)
    evidence: dict[str, list[int]] = field(default_factory=dict)
    runs: set[tuple[str, str]] = field(default_factory=set)        # (source, run_id) of every row (with keys)
    read: set[tuple[str, str]] = field(default_factory=set)        # the same, always: their quarantine settles
    hashes: list[np.ndarray] = field(default_factory=list)         # 64-bit hashes of the valid rows' keys
    sources: set[str] = field(default_factory=set)                 # the source of every row read
    conflicts: int = 0     # valid rows a large input's commit quarantined as conflicting duplicate keys
    #: a file's raw accuracies counted as a percent unit would read them (:meth:`add_raw`)
    as_percent: PercentTally = field(default_factory=PercentTally)

    def add(self, v: Validated, *, keys: bool) -> None:
        for kind, n in v.reason_kinds.items():
            self.reasons[kind] = self.reasons.get(kind, 0) + n
        for col, (k, n) in v.above_one.items():
            acc = self.above_one.setdefault(col, [0, 0])
            acc[0] += k
            acc[1] += n
        self.rejected += v.n_rejected
        # distinct (source, run_id) pairs in Arrow: a few thousand tuples, not one per row
        pairs = v.table.select(["source", "run_id"]).group_by(["source", "run_id"]).aggregate([])
        piece: set[tuple[str, str]] = set()
        self._add_runs(piece, pairs.column("source").to_pylist(), pairs.column("run_id").to_pylist())
        self._add_runs(piece, v.rejected["source"].tolist(), v.rejected["run_id"].tolist())
        self.read |= piece
        if keys:
            self.runs |= piece
            self.hashes.append(_key_hashes(v.table))

    def add_evidence(self, v: Validated) -> None:
        """Count a file's percents written with their sign, and its zeros (validation's
        ``percent_evidence``): percents with their sign are quarantined and counted among no values,
        so a column of "85%", "90%", "70%" and one "0.5" (0.5 %) stored the 0.5 as 50 %; zeros are
        0 in either unit, and 85 and 90 beside 0.5 and three crashed runs' 0 were not "most values
        in (1, 100]"."""
        for col, (signed, zeros) in v.percent_evidence.items():
            if signed or zeros:
                acc = self.evidence.setdefault(col, [0, 0])
                acc[0] += signed
                acc[1] += zeros

    def add_rejected(self, frame: pd.DataFrame | None) -> None:
        """Rows rejected outside validation: by the source (a join), or as conflicting duplicates."""
        if frame is None or not len(frame):
            return
        self.rejected += len(frame)
        # their runs were read too: their earlier quarantine entries settle (a run an MLflow source
        # rejected whole gathered one entry per change, where the quarantine keeps the latest read)
        self._add_runs(self.read, frame["source"].tolist(), frame["run_id"].tolist())
        for reason, n in frame["reason"].map(_reason_kind).value_counts().items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(n)

    def _add_runs(self, into: set[tuple[str, str]], sources: Iterable[Any], runs: Iterable[Any]) -> None:
        sources = list(sources)
        self.sources.update(s for s in sources if isinstance(s, str))
        into.update((s, r) for s, r in zip(sources, runs) if isinstance(s, str) and isinstance(r, str))

    def add_raw(self, rows: pd.DataFrame) -> None:
        """Count a file's raw accuracies (``rows``, before validation) per task as a ``percent``
        unit would read them (:meth:`PercentTally.add`), so that :meth:`refuse_percent` can tell a
        column that a percent unit stores from one that mixes fractions with percents, which the
        unit would then refuse (:meth:`PercentTally.refuse_fractions`): told to set the unit, the
        user met that refusal next. Values a source converted from a unit already are left out."""
        for col in _UNIT_SETTABLE:
            if col not in rows.columns:
                continue
            plain = rows[SOURCE_UNIT[col]].isna().to_numpy() if SOURCE_UNIT[col] in rows.columns else slice(None)
            v, signed = _raw_percent_numbers(rows[col])
            task = TASK_OF[col]
            tasks = rows[task].to_numpy(dtype=object) if task in rows.columns else None
            self.as_percent.add(col, "percent", v[plain], None if tasks is None else tasks[plain], signed=signed[plain])

    def _mixes(self, col: str) -> int | None:
        """The values in (0, 1] of ``col`` when a ``percent`` unit on it would be
        refused as a mix of fractions with percents (the rules of
        :meth:`PercentTally.refuse_fractions`, per task), else None."""
        by_task = self.as_percent.counts.get((col, "percent"))
        if not by_task:
            return None
        try:
            PercentTally(counts={(col, "percent"): by_task}).refuse_fractions()
        except UserError:
            return sum(c[0] for c in by_task.values())
        return None

    def refuse_percent(self, stored: Callable[[], dict[str, int]] | None = None) -> None:
        """A :class:`UserError` when most values of an accuracy column (or, in a whole input,
        data_fraction) are in (1, 100]: one line naming every such column, with one fix for all
        of them (a second ingest told to set one column's unit failed on the next column).

        ``stored``: called when a column would be refused, for the number of values of each
        column the batch's sources already store (of other runs: an MLflow page, whose runs are
        read incrementally). They are fractions, and count with the batch's: a page of one new
        run logged in percent was "the column is in percent" on every ingest, though a read of
        every run quarantines that run's rows and stores the others.

        In a whole input, a column whose percent unit would be refused too (fractions mixed with
        percents: 0.92 beside 92.1 in one task, :meth:`_mixes`) is named as such, with the counts,
        instead of being told to set that unit."""
        before: dict[str, int] | None = None
        found: list[_InPercent] = []
        # data_fraction only in a whole input (a file, ``stored`` None): it has no unit to set, and
        # an MLflow run's params cannot be rewritten, so a refused page would block its source for
        # good; validation quarantines a page's data_fraction percents (and its values <= 1) instead
        for col in (PERCENT_SUSPECTS if stored is None else _UNIT_SETTABLE):
            k, n = self.above_one.get(col, (0, 0))
            m, zeros = self.evidence.get(col, (0, 0))
            signed, nonzero = "", ""
            if zeros and k and 2 * k <= n and 2 * k > n - zeros:
                n, nonzero = n - zeros, " nonzero"      # zeros are 0 in either unit
            if m and n > k and 2 * (k + m) > n + m:
                # percents with their sign count as percents, once a value would be stored beside
                # them (a column of signed percents alone is quarantined, each row saying what to do)
                k, n, signed = k + m, n + m, f" or written with a % sign ({m} of them)"
            if n and 2 * k > n and stored is not None:
                before = stored() if before is None else before
                n += before.get(col, 0)
            if n and 2 * k > n:
                had = (before or {}).get(col, 0)
                mixed = self._mixes(col) if stored is None and col in _UNIT_SETTABLE else None
                found.append(_InPercent(col, k, n, nonzero, had, signed, mixed))
        if found:
            raise UserError(_percent_refusal(found))

    @property
    def failed(self) -> bool:
        """Rows were read and none was valid: the source failed, and its batch changes nothing
        but the quarantine (no stale rows removed, no state recorded: the next ingest reads the
        file again)."""
        return self.valid == 0 and self.rejected > 0

    def key_hashes(self) -> np.ndarray:
        return np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)


@dataclass(frozen=True)
class _InPercent:
    """A column :meth:`_Seen.refuse_percent` refuses: ``k`` of its ``n`` values in (1, 100]."""

    col: str
    k: int
    n: int
    nonzero: str = ""     # " nonzero" when zeros were not counted
    had: int = 0          # of the n, values stored before (an MLflow page)
    signed: str = ""      # " or written with a % sign (m of them)"
    mixed: int | None = None   # values in (0, 1] when a percent unit would be refused too (a mix)

    def counts(self) -> str:
        had = f" ({self.had} of them stored before)" if self.had else ""
        return f"{self.k} of {self.n}{self.nonzero} values{had} are in (1, 100]{self.signed}"


def _percent_refusal(found: Sequence[_InPercent]) -> str:
    """The one line refusing the columns in ``found``, with one fix for all of them: the first
    column in the words a line for one column always had (``us_accuracy is in percent, not a
    fraction: ...``), the others after it, then the columns whose values in (0, 1] a percent unit
    would refuse too (a mix), and the fixes: one unit for a mixed column, one ``units:`` setting
    naming every column in percent, fractions in the input for data_fraction (it has no unit)."""
    first, rest = found[0], found[1:]
    said = [f"{first.col} is in percent, not a fraction: {first.counts()}, so {NOTHING_STORED}"]
    said += [f"{c.col} is in percent too: {c.counts()}" for c in rest]
    mixed = [c for c in found if c.mixed is not None]
    for c in mixed:
        said.append(f"but {c.col} also has {c.mixed} value{'s' if c.mixed != 1 else ''} in (0, 1]: it mixes fractions "
                    "with percents (or holds near-chance percents, which no unit tells from fractions), which a "
                    "percent unit refuses too")
    fixes: list[str] = []
    for c in mixed:
        fixes.append(f"write every value of {c.col} as a fraction (92.1 % as 0.921, 0.5 % as 0.005), or every value "
                     f"as a percent (0.921 as 92.1) with 'units: {{{c.col}: percent}}'")
    settable = [c.col for c in found if c.col in _UNIT_SETTABLE and c.mixed is None]
    if settable:
        units = ", ".join(f"{col}: percent" for col in settable)
        # accuracy_unit sets both columns: right only when both are in percent (on a column of
        # fractions it is refused in turn, "declared percent but holds fractions")
        both = " (or 'accuracy_unit: percent')" if set(settable) == set(_UNIT_SETTABLE) else ""
        fixes.append(f"set 'units: {{{units}}}'{both} in a --mapping")
    for c in found:
        if c.col not in _UNIT_SETTABLE:
            # a mapping gives data_fraction no unit ("unknown unit 'percent'"): told to set one,
            # the user met that refusal next
            fixes.append(f"{c.col} has no unit setting: write its values as fractions in the input (50 % as 0.5)")
    return "; ".join(said + fixes)


#: A plain decimal number as text ("0.5", "-1e-3", ".5"): what :func:`_raw_percent_numbers`
#: parses with Arrow; other text (commas, words) is no value to the percent rules.
_PLAIN_NUMBER = r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"


def _raw_percent_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Raw values as a ``percent`` unit reads them (float64, NaN where not a number), and which
    were written with a % sign ("0.5%": a percent, whatever its size). A column of text (a CSV's)
    is parsed with Arrow, ~0.1 s per 1M values (~0.3 s with text that is no plain number; one
    Python call per value took ~3 s); a column of mixed objects value by value."""
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(n, np.nan), np.zeros(n, bool)
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype("float64").to_numpy(), np.zeros(n, bool)
    try:
        text = pa.array(s, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):   # numbers beside text, or other objects
        return _object_percent_numbers(s)
    try:      # every cell a number (or empty): one cast, ~0.05 s per 1M values
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), np.zeros(n, bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pc.utf8_trim_whitespace(text)
    signed = pc.fill_null(pc.ends_with(text, "%"), False)
    text = pc.utf8_rtrim_whitespace(pc.replace_substring_regex(text, "%$", ""))
    ok = pc.fill_null(pc.match_substring_regex(text, _PLAIN_NUMBER), False)
    v = np.full(n, np.nan)
    v[ok.to_numpy(zero_copy_only=False)] = pc.cast(pc.filter(text, ok), pa.float64()).to_numpy()
    return v, signed.to_numpy(zero_copy_only=False)


def _object_percent_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_raw_percent_numbers` of a column of mixed objects: the mapping's own reading of a
    percent column (:func:`~.mapping.unit_numbers`), and which values carry the sign."""
    signed = np.array([isinstance(x, str) and x.strip().endswith("%") for x in s.astype(object).tolist()], bool)
    return unit_numbers(s, percent_sign=True).to_numpy(dtype="float64"), signed


@dataclass(frozen=True)
class _Keyless:
    """Quarantined rows without a run id (a join's duplicate key or missing upstream row, a row
    with no run_id) of a batch that holds whole files: the store settles a quarantine by
    ``(source, run_id)``, so these stayed listed for good after the file was fixed. A file read again
    settles them, ``(source, None)``, but only its own: the rows of other files under the same
    ``source:`` (by the payload's ``_file``) are passed with the batch's quarantine again, which
    keeps them as they are (same payload hash: not settled, not added twice, their time kept).
    Rows without a source (a blank cell of a file's ``source`` column) are settled the same way,
    by their file: no read of a run settles ``(None, run_id)``, and they too stayed for good."""

    files: frozenset[str] = frozenset()   # real paths of the batch's files; empty: nothing to settle
    others: pd.DataFrame | None = None    # keyless quarantined rows of other files
    sourceless: frozenset[tuple[Any, Any]] = frozenset()   # (None, run_id) of this batch's files' rows

    @classmethod
    def of(cls, store: Store, src: Source, batch: SourceBatch) -> "_Keyless":
        paths = [str(p) for p in getattr(src, "paths", ())]
        files = frozenset(os.path.realpath(p) for p in paths)
        names = frozenset(os.path.basename(p) for p in paths)
        if not (batch.replace_runs and files and store.exists()):
            return cls()
        q = store.quarantine()     # ~the size of the quarantine; read only for file batches
        q = q.filter(pc.or_(pc.is_null(q.column("run_id")), pc.is_null(q.column("source"))))
        # a payload names its file by real path (a bare name only before FILE_STATE_VERSION 8:
        # two res.csv in two directories were one file)
        of = [_file_of(raw) for raw in q.column("raw").to_pylist()]
        # a dataset directory's payloads name their part (dir.parquet/part-0.parquet): it is this
        # batch's file too (they were never settled, and listed for good after the row was fixed)
        dirs = tuple(f + os.sep for f in files if os.path.isdir(f))
        others = [i for i, (name, path) in enumerate(of)
                  if (not (path in files or (dirs and str(path).startswith(dirs))) if path is not None
                      else name not in names)]
        keep = q.take(others).select(["source", "run_id", "reason", "raw"]).to_pandas() if others else None
        mine = sorted(set(range(q.num_rows)) - set(others))
        srcs, runs = q.column("source").to_pylist(), q.column("run_id").to_pylist()
        sourceless = frozenset((None, runs[i]) for i in mine if srcs[i] is None)
        return cls(files=files, others=keep, sourceless=sourceless)

    def settle(self, seen: _Seen) -> set[tuple[Any, Any]]:
        return ({(s, None) for s in seen.sources} | self.sourceless) if self.files else set()

    def keep(self, quarantine: pd.DataFrame | None) -> pd.DataFrame | None:
        if self.others is None:
            return quarantine
        parts = [p for p in (quarantine, self.others) if p is not None and len(p)]
        return pd.concat(parts, ignore_index=True)


def _file_of(raw: Any) -> tuple[Any, Any]:
    """The ``(_file, _path)`` of a file source's quarantine payload (``_path`` None before it was
    written); ``(None, None)`` for any other payload."""
    try:
        d = json.loads(raw)
    except (TypeError, ValueError):
        return None, None
    return (d.get("_file"), d.get("_path")) if isinstance(d, dict) else (None, None)


def _reason_kind(reason: str) -> str:
    """A source's reason without its row's value: the text before the first ': '
    (``"missing US metric: no row for model=x ..."`` -> ``"missing US metric"``)."""
    head, sep, _ = str(reason).partition(": ")
    return head if sep else str(reason)


def _key_hashes(table: pa.Table) -> np.ndarray:
    """A 64-bit hash of each row's key (8 bytes a row, where the key strings take ~100). Two keys
    may collide with a chance of ~n²/2⁶⁵; a collision can only keep a stale row, never remove one
    that the file has."""
    if not table.num_rows:
        return np.zeros(0, np.uint64)
    # column by column, mixed FNV-style (wrapping uint64 arithmetic): ~5x cheaper than hashing one
    # joined string per row (4 s for 1M stored keys). Each column is hashed in a form that does not
    # depend on which rows hold nulls (pandas makes an int32 column with a null float64, and 5 and
    # 5.0 hash apart): numbers as float64 with NaN for null, strings as objects with None.
    h = np.zeros(table.num_rows, np.uint64)
    for name in KEY:
        col = table.column(name)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            vals = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            hashed = pd.util.hash_array(vals)
        else:   # each distinct string hashed once (few per column but run_id), nulls as None
            enc = pc.dictionary_encode(pc.cast(col, pa.string()).combine_chunks())
            words = np.append(np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), dtype=object), None)
            idx = pc.fill_null(enc.indices, len(words) - 1).to_numpy(zero_copy_only=False)
            hashed = pd.util.hash_array(words, categorize=False)[idx]
        h = (h * np.uint64(0x100000001B3)) ^ hashed
    return h


def _member(hashes: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Which ``hashes`` are among ``of``: a hash table (pandas), not numpy's sort (1.3 s, not
    0.16 s, for 1M keys against 1M)."""
    return pd.Series(hashes).isin(of).to_numpy()


# --------------------------------------------------------------------------------------------
# Stale rows and missing runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Replacement:
    """What a batch that holds whole runs changes beyond its own rows.

    Attributes:
        delete_runs: ``(source, run_id)`` to delete in the commit (the store deletes whole runs):
            runs with a stale row, whose current rows the commit writes again, and with
            ``drop_missing`` the runs the batch lacks.
        rerun: of those, the runs with a stale row (their current rows are written again).
        stale: stored rows of the batch's runs whose key the batch does not have.
        missing_runs, missing_rows: stored runs (and their rows) of the batch's sources that the
            batch does not contain; deleted only when ``dropped``.
    """

    delete_runs: tuple[tuple[str, str], ...] = ()
    rerun: tuple[tuple[str, str], ...] = ()
    stale: int = 0
    missing_runs: int = 0
    missing_rows: int = 0
    dropped: bool = False


def _plan_replacement(store: Store, runs: set[tuple[str, str]], new_hashes: np.ndarray,
                      drop_missing: bool) -> _Replacement:
    """Compare the store's rows of the batch's sources with the batch's runs and keys.

    Cost: one read and hash of the key columns of every stored row of those sources (~0.6 s per
    100,000 rows on 2 cores); nothing when the store does not exist yet.
    """
    if not runs or not store.exists():
        return _Replacement()
    stored = store.read(filters={"source": sorted({s for s, _ in runs})}, columns=list(KEY))
    if not stored.num_rows:
        return _Replacement()
    run_keys = key_array(stored, ("source", "run_id"))
    in_batch = pc.fill_null(pc.is_in(run_keys, value_set=pa.array([key_of(r) for r in runs], pa.string())),
                            False).to_numpy(zero_copy_only=False)
    have = _member(_key_hashes(stored), new_hashes)
    stale = in_batch & ~have
    src = stored.column("source").to_numpy(zero_copy_only=False)
    rid = stored.column("run_id").to_numpy(zero_copy_only=False)
    rerun = sorted({(src[i], rid[i]) for i in np.flatnonzero(stale).tolist()})
    missing = sorted({(src[i], rid[i]) for i in np.flatnonzero(~in_batch).tolist()})
    return _Replacement(delete_runs=tuple(rerun) + (tuple(missing) if drop_missing else ()), rerun=tuple(rerun),
                        stale=int(stale.sum()),
                        missing_runs=len(missing), missing_rows=int((~in_batch).sum()), dropped=drop_missing)


def _note_earlier(rep: SourceReport, repl: _Replacement, batch: SourceBatch) -> None:
    """Stale rows removed while the source's last ingest was another file: they may be that
    file's other tasks of the same runs (a per-task file under a shared ``source:``), which the
    store loses by design. The line says how many, of which source, and from which file."""
    if not repl.stale or batch.earlier_inputs is None:
        return
    inputs = batch.earlier_inputs()
    if not inputs:       # this very file (a corrected one) stored them: the documented replacement
        return
    rows, runs = repl.stale, len(repl.rerun)
    srcs = tuple(sorted({s for s, _ in repl.rerun}))
    if rep.replaced is not None:
        rows, runs = rows + rep.replaced[0], runs + rep.replaced[1]
        srcs = tuple(sorted({*srcs, *rep.replaced[2]}))
    rep.replaced = (rows, runs, srcs, inputs)


def _count_replacement(rep: SourceReport, repl: _Replacement) -> None:
    """Runs of the batch's sources that the batch lacks are kept (and counted) unless dropped.
    (The store counts a deleted run's rows written again in the same commit as updated or
    unchanged, not deleted: ``deleted`` is what left the store.)"""
    if not repl.dropped:
        rep.kept_runs += repl.missing_runs


def _stored_values(store: Store, seen: _Seen) -> dict[str, int]:
    """Values of each accuracy column that ``store`` holds of ``seen``'s sources, but of the runs
    ``seen`` read (whose rows the batch replaces): one read of three columns of those sources."""
    if not seen.sources or not store.exists():
        return {}
    rows = store.read(filters={"source": sorted(seen.sources)}, columns=["source", "run_id", *_UNIT_SETTABLE])
    if seen.read and rows.num_rows:
        mine = pc.is_in(key_array(rows, ("source", "run_id")),
                        value_set=pa.array([key_of(r) for r in seen.read], pa.string()))
        rows = rows.filter(pc.invert(pc.fill_null(mine, False)))
    return {col: rows.num_rows - rows.column(col).null_count for col in _UNIT_SETTABLE}   # a page's columns


# --------------------------------------------------------------------------------------------
# Commits
# --------------------------------------------------------------------------------------------


def _commit_batch(store: Store, src: Source, batch: SourceBatch, rep: SourceReport) -> None:
    if batch.chunks is not None:
        _commit_chunks(store, src, batch, rep)
        return
    seen = _Seen()
    v = validate(batch.rows, raw=batch.raw)
    if batch.replace_runs:     # a file's (an MLflow page is weighed with its source's stored rows)
        seen.add_evidence(v)
        seen.add_raw(batch.rows)
    seen.add(v, keys=batch.replace_runs and store.exists())   # a new store has no stale rows
    # a batch of some runs (an MLflow page) is weighed with the rows of its sources stored before
    seen.refuse_percent(None if batch.replace_runs else (lambda: _stored_values(store, seen)))
    # a conflicting row's payload is its input row as written (a file's _file and _line), as every
    # other quarantined row's is: it was the canonical row, which named neither file nor line
    at = np.setdiff1d(np.arange(len(batch.rows)), v.rejected["row"].to_numpy(np.int64))   # v.table's rows in the input
    table, conflicts = dedupe_keys(v.table, payloads=_payloads_at(batch, at))
    # The raw rows are done with: let them go before the commit, whose merge is the other half of
    # an ingest's peak memory (the caller's loop still holds the batch object itself).
    batch.rows, batch.raw = pd.DataFrame(), None
    if len(conflicts) and seen.hashes:
        # a key the file gives twice with different values is quarantined, so the file no longer
        # says its value: its stored row is stale, as a row quarantined for a bad value is (the
        # keys were hashed before the dedupe, and the stored 0.5 stayed beside 0.6 and 0.7)
        seen.hashes = [_key_hashes(table)]
    rep.notes.extend(_data_notes(v.table.num_rows - table.num_rows - len(conflicts), _us_ranges(table)))
    if v.ends_before_start is not None:      # kept: the times are provenance (validation.Validated)
        rep.notes.append(ends_before_start_note(*v.ends_before_start))
    seen.add_rejected(batch.rejected)
    seen.add_rejected(conflicts)
    seen.valid = table.num_rows
    parts = [p for p in (batch.rejected, v.rejected.drop(columns=["row"]), conflicts) if p is not None and len(p)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else None
    whole_runs = batch.replace_runs and not seen.failed
    repl = _plan_replacement(store, seen.runs, seen.key_hashes(), batch.drop_missing) if whole_runs else _Replacement()
    keyless = _Keyless.of(store, src, batch)
    res = store.commit(table, quarantine=keyless.keep(quarantine),
                       state=_read_again(store, batch) if batch.replace_runs and seen.failed else batch.state,
                       delete_runs=list(batch.delete_runs) + list(repl.delete_runs),
                       settle_quarantine=seen.read | keyless.settle(seen), operation="ingest",
                       info={"source": src.label})
    _count(rep, res, batch, seen)
    _count_replacement(rep, repl)
    _note_earlier(rep, repl, batch)


#: What a file's state says once a read of it quarantined every row: it matches no file.
READ_AGAIN = "every row quarantined: read it again"


def _read_again(store: Store, batch: SourceBatch) -> dict[str, pa.Table]:
    """The states of a file batch whose every row was quarantined: the state of the file's last
    good read (what the store's rows came from: its path and content still tell another file of
    that name, or a copy, from it), marked so that no file's fingerprint equals it. The old state
    was kept as it was, so the file put back as it was then was "unchanged since its last ingest,
    not read again", and the quarantine listed the rejected version's rows for good."""
    out = {}
    for name in batch.state:
        old = store.read_state(name) if store.exists() else None
        try:
            fp = json.loads(old.column("fingerprint")[0].as_py()) if old is not None else None
        except (KeyError, IndexError, TypeError, ValueError, pa.ArrowException):
            fp = None
        if isinstance(fp, dict):
            marked = json.dumps({**fp, "read_again": READ_AGAIN}, sort_keys=True)
            out[name] = old.set_column(old.column_names.index("fingerprint"), "fingerprint", pa.array([marked]))
        else:
            out[name] = pa.table({"fingerprint": [READ_AGAIN]})
    return out


def _payloads_at(batch: SourceBatch, at: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    """The quarantine payloads of a batch's validated rows by their position among them (``at``:
    their positions in the batch's rows)."""
    rows, raw = batch.rows, batch.raw
    return lambda idx: payloads_of(rows, at[idx], raw)


#: (source, run_id, us_task) -> (lowest, highest) US accuracy among a batch's valid rows
UsRanges = dict[tuple[str, str, str], tuple[float, float]]


def _us_ranges(table: pa.Table, into: UsRanges | None = None) -> UsRanges:
    """The US accuracies of each run and US task in ``table`` (one grouped pass), merged into
    ``into`` (the pieces of one large file)."""
    out: UsRanges = {} if into is None else into
    if not table.num_rows:
        return out
    g = table.select(["source", "run_id", "us_task", "us_accuracy"]).group_by(
        ["source", "run_id", "us_task"]).aggregate([("us_accuracy", "min"), ("us_accuracy", "max")])
    for s, r, u, lo, hi in zip(*(g.column(c).to_pylist() for c in
                                 ("source", "run_id", "us_task", "us_accuracy_min", "us_accuracy_max"))):
        a, b = out.get((s, r, u), (lo, hi))
        out[(s, r, u)] = (min(a, lo), max(b, hi))
    return out


def _data_notes(collapsed: int, us: UsRanges) -> list[str]:
    """What a batch's valid rows say that is legal but likely a mistake, in words for the
    source's line: rows that repeated another exactly (stored once: the count said nothing of
    them), and runs with two US accuracies for one US task (every row of a run carries its US
    accuracy; two values are two models under one run id, or a copy error)."""
    notes = []
    if collapsed > 0:
        notes.append(f"{collapsed} row(s) repeated another row exactly (key and values) and were stored once")
    bad = [(k, v) for k, v in us.items() if v[1] - v[0] > 1e-12]
    if bad:
        (_, run, task), (lo, hi) = bad[0]
        notes.append(f"{len(bad)} run(s) have two or more US accuracies for one US task (e.g. {printable(str(run))} "
                     f"on {printable(str(task))}: {lo:g} and {hi:g}): two models under one run id?")
    return notes


def _commit_chunks(store: Store, src: Source, batch: SourceBatch, rep: SourceReport) -> None:
    """A large input in pieces, validated piece by piece and committed once (bounded memory).

    A batch that replaces runs in a store that already exists needs a second commit: the stale
    rows are known only once every piece was read. The first commit then holds the rows without
    the source's state, so that a kill between the two leaves a file that the next ingest reads
    again (and finishes); the second removes the stale rows and records the state."""
    seen = _Seen()
    two_step = batch.replace_runs and store.exists()

    us: UsRanges = {}
    whole = WholeInput()   # decisions about the whole input (a day/month order), not one per piece
    ends: list = [0, ""]   # rows that end before they start, over the pieces, and the first of them

    def pieces():
        for rows, raw in batch.chunks:
            v = validate(rows, raw=raw, whole=whole)
            seen.add_evidence(v)
            seen.add_raw(rows)
            seen.add(v, keys=two_step)
            _us_ranges(v.table, us)
            seen.valid += v.table.num_rows
            if v.ends_before_start is not None:
                ends[0] += v.ends_before_start[0]
                ends[1] = ends[1] or v.ends_before_start[1]
            yield v.table, v.rejected.drop(columns=["row"])
        # raised inside the commit: it rolls back, nothing is stored
        seen.refuse_percent()
        why = whole.problem()
        if why is not None:
            raise UserError(f"{why}; {NOTHING_STORED}")
    seen.add_rejected(batch.rejected)
    keyless = _Keyless.of(store, src, batch)
    res = store.commit_stream(pieces(), quarantine=keyless.keep(batch.rejected),
                              settle_quarantine=lambda: seen.read | keyless.settle(seen),
                              state={} if two_step else batch.state, operation="ingest", info={"source": src.label})
    _count_conflicts(seen, res)
    _count(rep, res, batch, seen)
    rep.notes.extend(_data_notes(res.collapsed, us))
    if ends[0]:
        rep.notes.append(ends_before_start_note(ends[0], ends[1]))
    if batch.replace_runs and seen.failed:
        # the old state is still there (two steps: marked so that it never matches), or this file's
        # went in with the rows (a new store: replaced by one that never matches, and names no file)
        store.commit(state=_read_again(store, batch) if two_step else {
            name: pa.table({"fingerprint": [READ_AGAIN]}) for name in batch.state},
            operation="ingest", info={"source": src.label})
        return
    if two_step:
        _finish_replacement(store, src, batch, rep, seen)


def _count_conflicts(seen: _Seen, res: Any) -> None:
    """Keys repeated with different values across the pieces of a large input are found by the
    store, in the commit, and quarantined there: they were counted valid, so a dataset whose every
    row conflicted stored nothing and said "0 new ... 4 quarantined", exit 0, its state recorded
    (the one-batch path says "FAILED: all 4 rows quarantined"). Every valid row the store did not
    collapse (an exact repeat) is inserted, updated or unchanged, or it conflicted."""
    stored = res.inserted + res.updated + res.unchanged
    conflicts = seen.valid - res.collapsed - stored
    seen.valid = stored
    if conflicts > 0:
        seen.conflicts += conflicts
        seen.rejected += conflicts
        seen.reasons["conflicting duplicate key"] = seen.reasons.get("conflicting duplicate key", 0) + conflicts


def _finish_replacement(store: Store, src: Source, batch: SourceBatch, rep: SourceReport, seen: _Seen) -> None:
    """The second commit of :func:`_commit_chunks`: delete the runs with stale rows, write their
    current rows (read back from the store) again, and record the batch's state."""
    new_hashes = seen.key_hashes()
    if seen.conflicts:
        # keys the file gives twice with different values were quarantined by the first commit:
        # the file no longer says their value, so their stored rows are stale (as in one batch)
        new_hashes = new_hashes[~_member(new_hashes, _conflicted(store, seen))]
    repl = _plan_replacement(store, seen.runs, new_hashes, batch.drop_missing)
    keep = None
    if repl.rerun:
        rows = store.read(filters={"source": sorted({s for s, _ in repl.rerun}),
                                   "run_id": sorted({r for _, r in repl.rerun})})
        in_rerun = pc.is_in(key_array(rows, ("source", "run_id")),
                            value_set=pa.array([key_of(r) for r in repl.rerun], pa.string()))
        rows = rows.filter(pc.fill_null(in_rerun, False))
        keep = rows.filter(pa.array(_member(_key_hashes(rows), new_hashes)))
    res = store.commit(keep, delete_runs=list(repl.delete_runs), state=batch.state, operation="ingest",
                       info={"source": src.label, "step": "stale rows"})
    rep.commits += int(res.wrote)
    rep.deleted += res.deleted
    _count_replacement(rep, repl)
    _note_earlier(rep, repl, batch)


def _conflicted(store: Store, seen: _Seen) -> np.ndarray:
    """Key hashes of the rows of ``seen``'s runs that the store's quarantine holds as conflicting
    duplicate keys: after the first commit of :func:`_commit_chunks`, which settled the earlier
    entries of every run it read, those are the keys its pieces gave twice with different values.
    Cost: one read of the quarantine, only when the commit found such keys."""
    q = store.quarantine()
    q = q.filter(pc.fill_null(pc.starts_with(q.column("reason"), "conflicting duplicate key"), False))
    mine = pc.fill_null(pc.is_in(key_array(q, ("source", "run_id")),
                                 value_set=pa.array([key_of(r) for r in seen.runs], pa.string())), False)
    rows = []
    for raw in q.filter(mine).column("raw").to_pylist():   # the canonical row as JSON (dedupe_keys)
        try:
            d = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(d, dict):
            rows.append(d)
    if not rows:
        return np.zeros(0, np.uint64)
    try:
        keys = pa.table({k: pa.array([d.get(k) for d in rows], SCHEMA.field(k).type) for k in KEY})
    except (pa.ArrowException, TypeError, ValueError):   # a payload of another shape: keep the rows, as before
        return np.zeros(0, np.uint64)
    return _key_hashes(keys)


def _count(rep: SourceReport, res: Any, batch: SourceBatch, seen: _Seen) -> None:
    rep.new += res.inserted
    rep.updated += res.updated
    rep.unchanged += res.unchanged
    rep.quarantined += res.quarantined
    rep.deleted += res.deleted
    rep.commits += int(res.wrote)
    rep.valid += seen.valid
    rep.rejected += seen.rejected
    for k, n in seen.reasons.items():
        rep.reasons[k] = rep.reasons.get(k, 0) + n
    for k, n in batch.stats.items():
        rep.stats[k] = rep.stats.get(k, 0) + n

