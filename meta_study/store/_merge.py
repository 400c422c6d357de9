"""One commit's plan: which partitions it rewrites, how their rows merge (upsert), and the files
it stages and the manifest it publishes (see the commit protocol in :mod:`._store`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StoreDamagedError
from ..schema import FILE_SCHEMA, KEY, PARTITION, SCHEMA

from ..keys import key_array, key_of
from ..validation import canonical_name
from ..failpoints import failpoint as _failpoint
from ._files import NotAFileError, WrongSizeError, _Files, _first_line, _parse_parquet, _table_bytes, display_path, partition_dir
from ._manifest import FORMAT_VERSION, KEEP_LOG, QUARANTINE_SCHEMA, _Manifest


def require_partitions(table: pa.Table) -> None:
    """A :class:`ValueError` if a partition column holds a null or an empty name: such a row has no
    partition directory (a grouping by partition dropped a null's row without a word; an empty
    name published a version whose file was lost, and every later command called it damaged).
    Validated rows never do."""
    for c in PARTITION:
        col = table.column(c)
        for n, what in ((col.null_count, "null"), (pc.sum(pc.equal(col, "")).as_py() or 0, "empty")):
            if n:
                raise ValueError(f"{c}: {n} {what} value(s), and every row needs a name there (its partition); "
                                 "validate the rows first (see validation.validate)")


def _by_partition(table: pa.Table) -> Iterator[tuple[tuple[str, str], pa.Table]]:
    """``table``'s rows per (us_task, ds_task), in Arrow (no Python string per row)."""
    require_partitions(table)
    pair = pc.binary_join_element_wise(table.column("us_task"), table.column("ds_task"), "\x00").combine_chunks()
    enc = pc.dictionary_encode(pair)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    names = enc.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for idx in np.split(order, bounds):
        us, ds = names[codes[idx[0]]].split("\x00", 1)
        yield (us, ds), table.take(pa.array(idx, pa.int64()))


def _content_equal(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Row-wise equality of two aligned tables (nulls equal nulls), ignoring ``ingested_at``."""
    eq = np.ones(a.num_rows, bool)
    for name in a.column_names:
        if name == "ingested_at":
            continue
        x, y = a.column(name), b.column(name)
        if pa.types.is_map(x.type):
            eq &= np.array([p == q for p, q in zip(x.to_pylist(), y.to_pylist())], bool)
            continue
        same = pc.equal(x, y)
        both_null = pc.and_(pc.is_null(x), pc.is_null(y))
        if pa.types.is_floating(x.type):   # NaN equals NaN here: else every commit rewrote its rows
            both_null = pc.or_kleene(both_null, pc.and_(pc.is_nan(x), pc.is_nan(y)))
        eq &= pc.fill_null(pc.or_kleene(same, both_null), False).to_numpy(zero_copy_only=False)
    return eq


class _Verified:
    """The store's files as the manifest describes them: reads verified against the size and
    sha256 the manifest records (a flipped bit is named damage, never read as data), and writes.
    What a commit plan needs of a store, and no more."""

    def __init__(self, files: _Files, uri: str) -> None:
        self.files, self.uri = files, uri

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.files.write_bytes(rel, data)

    def damaged(self, rel: str, problem: str, more: int = 0) -> StoreDamagedError:
        also = f" (and {more} more)" if more else ""
        return StoreDamagedError(
            f"{display_path(self.uri, rel)}: damaged store file: {problem}{also}; 'meta-study store check {self.uri}' "
            "lists the damage, '--repair' sets the files aside and drops their rows (re-ingest to restore them)")

    def read_file(self, entry: Mapping[str, Any], schema: pa.Schema | None) -> pa.Table:
        """A file of the manifest, verified and parsed with ``schema``."""
        blocked = None
        for rel in (entry["path"], entry.get("staged")):
            if not rel:
                continue
            try:   # a file of another size is refused before it is read (it may be huge)
                data = self.files.read_bytes(rel, entry.get("bytes"))
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                # a file where its partition's directory belongs: the file may still be staged
                # (a commit its writer could not finish), and is read from there
                blocked = blocked or self.files.first_non_directory(rel)
                continue
            except (NotAFileError, WrongSizeError) as e:
                raise self.damaged(rel, _first_line(e)) from None
            except PermissionError:
                raise   # not damage: the OS's one line names the file ('--repair' would set it aside)
            except OSError as e:
                if not self.files.local:
                    # an endpoint gone, throttled or refusing our credentials says nothing of the file:
                    # it was "damaged store file" (exit 2) with advice to '--repair'; now exit 1
                    raise
                raise self.damaged(rel, _first_line(e)) from None   # EIO: a bad sector
            except pa.ArrowException as e:
                raise self.damaged(rel, _first_line(e)) from None
            if "bytes" in entry and len(data) != entry["bytes"]:
                raise self.damaged(rel, f"{len(data)} bytes, the manifest says {entry['bytes']}")
            if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise self.damaged(rel, "its contents differ from what was written (sha256)")
            try:
                return _parse_parquet(data, schema)
            except (pa.ArrowException, OSError, ValueError) as e:  # truncated, overwritten, not Parquet
                raise self.damaged(rel, _first_line(e)) from None
        if blocked is not None:
            raise self.damaged(entry["path"], f"{blocked[0]} is {blocked[1]}, not a directory")
        raise FileNotFoundError(entry["path"])

    def read_data(self, entry: Mapping[str, Any], file_schema: pa.Schema) -> pa.Table:
        """A partition's rows: ``file_schema``'s columns, then the partition columns from the
        manifest (files of format 2 hold them too, those of format 1 do not)."""
        if not len(file_schema):
            # no file column wanted (only the partition columns): a file read for no column has no
            # rows either, and every partition read back empty; its row count comes with run_id
            t = self.read_file(entry, pa.schema([FILE_SCHEMA.field("run_id")])).select([])
        else:
            t = self.read_file(entry, file_schema)
        for c in PARTITION:
            t = t.append_column(SCHEMA.field(c), pa.array([entry[c]] * t.num_rows, pa.string()))
        return t


class _Plan:
    """The files one commit writes and the manifest it publishes."""

    def __init__(self, files: _Verified, m: _Manifest, txn: str, now: _dt.datetime) -> None:
        self.s, self.m, self.txn, self.now = files, m, txn, now
        self.data = {(e["us_task"], e["ds_task"]): e for e in m.data}
        self.quarantine = list(m.quarantine)
        self.state = dict(m.state)
        self.superseded: list[str] = []
        self.changed = False
        self.partitions_written = 0
        self.format_version = m.format_version
        self._uids: set[str] = set()   # the file names' uids this commit has given out

    def _stage(self, final_rel: str, table: pa.Table) -> dict[str, Any]:
        staged = f"_staging/{self.txn}/{final_rel}"
        data = _table_bytes(table)
        self.s.write_bytes(staged, data)
        _failpoint("after_stage")
        # size: checked against one listing at every commit; sha256: by 'store check'
        return {"path": final_rel, "staged": staged, "rows": table.num_rows, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}

    def _uid(self) -> str:
        # unique within this commit: quarantine files share one directory, and two of a commit with
        # one name (32 random bits: ~1 in 2,000 for a re-ingest restaging 2,000 of them) made the
        # second's staged bytes overwrite the first's, a version published damaged and rows lost
        while True:
            uid = f"{self.m.version + 1:010d}-{uuid.uuid4().hex[:8]}"
            if uid not in self._uids:
                self._uids.add(uid)
                return uid

    def merge_data(self, new: pa.Table | None, delete_runs: Sequence[tuple[str, str]]) -> dict[str, int]:
        counts = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "rewritten": 0}
        touched: dict[tuple[str, str], pa.Table | None] = {}
        if new is not None:
            us = new.column("us_task").to_numpy(zero_copy_only=False)
            ds = new.column("ds_task").to_numpy(zero_copy_only=False)
            parts = pd.DataFrame({"us": us, "ds": ds}).groupby(["us", "ds"], sort=True).indices
            for (u, d), idx in parts.items():
                touched[(u, d)] = new.take(pa.array(idx, pa.int64()))
        if delete_runs:
            for p in self.data:
                touched.setdefault(p, None)
        # the names as the rows were stored (conform: NFC, trimmed): a run id given as its caller
        # holds it (" r1", a decomposed "café" from a macOS file name) deleted nothing, and a run
        # upserted with fewer tasks kept its stale rows of the others
        dels = {key_of((_stored_name(s), _stored_name(r))) for s, r in delete_runs}
        for part, rows in touched.items():
            old_e = self.data.get(part)
            old = None
            if old_e is not None:
                old = self.s.read_data(old_e, FILE_SCHEMA).select(SCHEMA.names).cast(SCHEMA)
            merged, c = self._merge_partition(old, rows, dels)
            for k in counts:
                counts[k] += c[k]
            if c["inserted"] == c["updated"] == c["deleted"] == 0:
                continue
            self.changed = True
            self.partitions_written += 1
            if old_e is not None:
                self.superseded.append(old_e["path"])
                del self.data[part]
            if merged.num_rows:
                self.data[part] = self._stage_partition(part, merged)
        return counts

    def _stage_partition(self, part: tuple[str, str], rows: pa.Table) -> dict[str, Any]:
        # the partition columns stay in the file (format 2): plain readers read them as strings
        e = self._stage(f"{partition_dir(*part)}/part-{self._uid()}.parquet", rows)
        e.update(us_task=part[0], ds_task=part[1])
        return e

    def upgrade_layout(self) -> int:
        """Rewrite every partition of a format-1 store in the current layout (its rows unchanged);
        the number of partitions rewritten. One commit, so plain readers never see a mix."""
        for part, old_e in sorted(self.data.items()):
            rows = self.s.read_data(old_e, FILE_SCHEMA).select(SCHEMA.names).cast(SCHEMA)
            self.superseded.append(old_e["path"])
            self.data[part] = self._stage_partition(part, rows)
            self.partitions_written += 1
        self.format_version = FORMAT_VERSION
        self.changed = True
        return self.partitions_written

    @staticmethod
    def _merge_partition(old: pa.Table | None, new: pa.Table | None, dels: set[str]) -> tuple[pa.Table, dict[str, int]]:
        c = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "rewritten": 0}
        if old is None:
            old = SCHEMA.empty_table()
        keep = np.ones(old.num_rows, bool)
        if dels and old.num_rows:
            gone = pc.fill_null(pc.is_in(key_array(old, ("source", "run_id")), value_set=pa.array(sorted(dels), pa.string())),
                                False).to_numpy(zero_copy_only=False)
            c["deleted"] = int(gone.sum())
            keep &= ~gone
        add = None
        if new is not None and new.num_rows and not old.num_rows:  # a new partition: every row is new
            c["inserted"] = new.num_rows
            add = new
        elif new is not None and new.num_rows:
            # exact key strings matched in Arrow (a hash table in C++; no Python string per row:
            # ~5x faster at 40,000 rows a partition); a store's keys are unique, so at most one match
            pos = pc.index_in(key_array(new), value_set=key_array(old).combine_chunks())
            pos = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
            match_new = pos >= 0
            match_old = pos[match_new].astype(np.int64)
            same = np.zeros(new.num_rows, bool)
            if match_new.any():
                content = _content_equal(old.take(pa.array(match_old)), new.filter(pa.array(match_new)))
                # a row of a deleted run written again (an ingest re-reading a run with a stale
                # row) is stored anew, but it never left the store: not "deleted", and "updated"
                # or "unchanged" by its content, as any other row; "rewritten" says how many
                back = ~keep[match_old]
                eq = content & ~back
                same[np.flatnonzero(match_new)] = eq
                c["rewritten"] = int(back.sum())
                c["deleted"] -= c["rewritten"]
                c["updated"] = int((~content).sum())
                c["unchanged"] = int(content.sum())
                keep[match_old[~eq]] = False
            c["inserted"] = int((~match_new).sum())
            add = new.filter(pa.array(~same))
        merged = old.filter(pa.array(keep))
        if add is not None and add.num_rows:
            merged = pa.concat_tables([merged, add])
        if merged.num_rows:
            order = pc.sort_indices(merged, sort_keys=[(k, "ascending") for k in KEY])
            merged = merged.take(order)
        return merged, c

    def settle_quarantine(self, runs: Iterable[tuple[str, str]], fresh: pa.Table | None) -> int:
        """Drop the quarantined rows of ``runs`` ((source, run_id) read again, or deleted) that
        this commit does not quarantine again (``fresh``, by payload hash): the quarantine holds
        what each run's latest read rejected. A fixed file's rows stayed quarantined for good,
        and the user took the fix for failed. A run read again and rejected again changes
        nothing. Returns the rows dropped; cost: one read of three quarantine columns."""
        # pairs as tuples: given as lists ('df[["source", "run_id"]].values.tolist()') they failed
        # with "unhashable type: 'list'", and only in a store with a quarantine
        # and as text, as the quarantine stores them and delete_runs matches data rows (key_of):
        # delete_runs=[("src", 7)] deleted run "7"'s rows but kept its quarantined ones
        runs = {tuple(v if v is None else str(v) for v in (s, r)) for s, r in runs}
        runs |= {(_stored_name(s), _stored_name(r)) for s, r in runs}   # as data rows are stored too
        if not runs or not self.quarantine:
            return 0
        again = set(fresh.column("payload_hash").to_pylist()) if fresh is not None else set()
        cols = pa.schema([QUARANTINE_SCHEMA.field(c) for c in ("source", "run_id", "payload_hash")])
        kept, dropped = [], 0
        for e in self.quarantine:
            t = self.s.read_file(e, cols)
            gone = np.array([(a, b) in runs and h not in again for a, b, h in zip(
                t.column("source").to_pylist(), t.column("run_id").to_pylist(),
                t.column("payload_hash").to_pylist())], dtype=bool)
            if not gone.any():
                kept.append(e)
                continue
            dropped += int(gone.sum())
            self.superseded.append(e["path"])
            if not gone.all():
                rest = self.s.read_file(e, QUARANTINE_SCHEMA).filter(pa.array(~gone))
                kept.append(self._stage(f"_quarantine/part-{self._uid()}.parquet", rest))
        if dropped:
            self.changed = True
            self.quarantine = kept
        return dropped

    def add_quarantine(self, q: pa.Table | None) -> int:
        if q is None or not q.num_rows:
            return 0
        seen: set[str] = set()
        for e in self.quarantine:
            seen.update(self.s.read_file(e, pa.schema([QUARANTINE_SCHEMA.field("payload_hash")]))
                        .column("payload_hash").to_pylist())
        fresh = q.filter(pa.array([h not in seen for h in q.column("payload_hash").to_pylist()]))
        if not fresh.num_rows:
            return 0
        self.changed = True
        self.quarantine.append(self._stage(f"_quarantine/part-{self._uid()}.parquet", fresh))
        return fresh.num_rows

    def replace_state(self, state: Mapping[str, pa.Table]) -> None:
        for name, table in state.items():
            safe = hashlib.sha1(name.encode()).hexdigest()[:16]  # names may hold URIs: never a path
            old = self.state.get(name)
            if old is not None:
                prev = self.s.read_file(old, None)  # type: ignore[arg-type]
                # the same names and types, then the same values (the cast: nullability only). Values
                # alone, cast to the old types, kept a state whose column became strings ("1", "2")
                # or floats (1.0) as the old int64 one: the new types were never stored
                try:
                    same = (prev.schema.names == table.schema.names
                            and [f.type for f in prev.schema] == [f.type for f in table.schema]
                            and prev.equals(table.cast(prev.schema)))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    same = False   # a column of another type whose values do not fit the old one
                if same:
                    continue
                self.superseded.append(old["path"])
            e = self._stage(f"_state/{safe}-{self._uid()}.parquet", table)
            e["name"] = name
            self.state[name] = e
            self.changed = True

    def manifest(self, log_entry: Mapping[str, Any]) -> _Manifest:
        return _Manifest(
            version=self.m.version + 1,
            data=sorted(self.data.values(), key=lambda e: e["path"]),
            quarantine=self.quarantine,
            state=self.state,
            pending_delete=self.superseded,
            log=(self.m.log + [dict(log_entry)])[-KEEP_LOG:],
            created_at=self.now.isoformat(),
            format_version=self.format_version,
            txn=self.txn,
        )


def _stored_name(v: Any) -> Any:
    """A source or run id as a commit stores it (:func:`~meta_study.validation.canonical_name`);
    an integer or None as it is."""
    return canonical_name(v) if isinstance(v, str) else v
