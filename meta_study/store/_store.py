"""The meta-study store: :class:`Store` reads, commits to and checks one store (the package's
docstring gives its layout).

Commit protocol (under the writers' lock):

1. *Recover*: finish the previous commit if it was interrupted (roll forward, see 5) and delete
   staging directories of commits that never reached their commit point.
2. Merge: for each partition touched, read its live file, replace rows whose key is written again
   (upsert), add new rows. Rows whose content is unchanged are not rewritten; if nothing changed,
   nothing is written at all.
3. Write every new file under ``_staging/<txn>/`` (invisible to plain readers), fsync it.
4. **Commit point**: publish manifest ``<version+1>.json`` atomically (write a temp file, then
   hard-link it to its final name, which fails if that version exists). It lists the live files,
   where each new one is staged, and the superseded files to delete.
5. Finalize: move staged files into place, delete superseded files and the staging directory.

A writer killed before 4 leaves the previous version fully intact (its staged files are garbage
collected by the next writer). A writer killed after 4 leaves a committed version whose files are
either in place or still staged; :meth:`Store.read` follows the manifest and reads them wherever
they are, and the next writer finishes step 5. Readers never take the lock.

Two writers: on a local filesystem ``fcntl.flock`` serializes them (released by the kernel if a
writer dies). On object stores, which have no locks, a lease file is used; it is best effort, so
run one writer per object-store store (the refit job) or keep the store on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import hashlib
import os
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import StoreDamagedError, StoreLockedError, UserError
from ..schema import FILE_SCHEMA, GROUP, PARTITION, SCHEMA, conform, key_strings
from ._files import _Files, _failpoint, _first_line, _now, _resolve, _table_bytes, display_uri
from ._lock import _lease_lock, _local_lock
from ._manifest import (KEEP_LOG, KEEP_MANIFESTS, QUARANTINE_SCHEMA, CheckResult, CommitResult, Damage,
                        StoreSummary, _Manifest, _quarantine_table)
from ._merge import _by_partition, _Plan

Filter = Mapping[str, Any]


class Store:
    """A meta-study store at a local path or URI.

    Args:
        uri: ``/path``, ``file:///path``, ``s3://bucket/prefix``, ``gs://...``.
        lock_timeout_s: how long a writer waits for another writer before giving up.
    """

    def __init__(self, uri: str, *, lock_timeout_s: float = 900.0) -> None:
        self.uri = display_uri(uri)   # what messages and provenance show; never holds a secret
        fs, root, local = _resolve(uri)
        self._f = _Files(fs, root, local)
        self.lock_timeout_s = lock_timeout_s

    # ---- inspection ------------------------------------------------------------------------

    def exists(self) -> bool:
        """True if ``uri`` holds a store (at least one committed version)."""
        return bool(self._manifest_versions())

    def _manifest_versions(self) -> list[int]:
        out = []
        for name in self._f.listdir("_meta/manifests"):
            stem = name[:-5] if name.endswith(".json") else ""
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def _load(self, version: int | None = None) -> _Manifest:
        # A writer may prune the manifest we listed before we read it (only old ones are pruned,
        # so a newer one exists): list again.
        for _ in range(50):
            versions = self._manifest_versions()
            if not versions:
                return _Manifest()
            v = versions[-1] if version is None else version
            rel = f"_meta/manifests/{v:010d}.json"
            try:
                return _Manifest.from_json(self._f.read_bytes(rel), f"{self.uri}/{rel}")
            except FileNotFoundError:
                if version is not None:
                    raise
                time.sleep(0.01)
        raise RuntimeError(f"{self.uri}: manifests kept disappearing while reading")

    def probe(self) -> pafs.FileInfo:
        """What is at the store's location; a :class:`UserError` if it cannot be reached
        (network, credentials, permissions), so that no command starts work it cannot store."""
        try:
            return self._f.fs.get_file_info(self._f.root)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{self.uri}: cannot reach store location ({_first_line(e)})") from None

    def require(self) -> "Store":
        """Raise a :class:`UserError` unless this is a store; returns self."""
        info = self.probe()
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"{self.uri}: no such store")
        if not self.exists():
            raise UserError(f"{self.uri}: not a meta-study store (no _meta/manifests)")
        self._finish_interrupted()
        return self

    def _finish_interrupted(self) -> None:
        """Finish a commit whose writer died between the commit point and the end of finalize.

        Until then a plain Parquet reader sees a torn layout (new files beside superseded ones,
        or the old files only); ``Store.read`` does not, it follows the manifest. Every command
        opens the store through :meth:`require`, so the first command after a crash repairs what
        plain readers see. Only when no writer holds the lock (a live writer finalizes itself)
        and the store is writable; otherwise nothing happens."""
        if not self._pending(self._load()):
            return
        try:
            with self._lock(timeout_s=0.0):
                m = self._load()
                self._finalize(m)
                self._collect_garbage(m)
        except (StoreLockedError, OSError):  # a live writer, or a read-only store
            return

    def local_path(self, rel: str) -> str | None:
        """The local filesystem path of ``rel`` inside the store, or None for object stores
        (for locks of other writers, e.g. the refit's ``_meta/REFIT.lock``)."""
        return self._f.p(rel) if self._f.local else None

    @property
    def version(self) -> int:
        return self._load().version

    def history(self) -> list[dict[str, Any]]:
        """The commit log, oldest first: version, time, operation and what it did."""
        return list(self._load().log)

    # ---- reading ---------------------------------------------------------------------------

    def _damaged(self, rel: str, problem: str, more: int = 0) -> StoreDamagedError:
        also = f" (and {more} more)" if more else ""
        return StoreDamagedError(
            f"{self.uri}/{rel}: damaged store file: {problem}{also}; 'meta-study store check {self.uri}' "
            "lists the damage, '--repair' sets the files aside and drops their rows (re-ingest to restore them)")

    def _read_file(self, entry: Mapping[str, Any], schema: pa.Schema) -> pa.Table:
        for rel in (entry["path"], entry.get("staged")):
            if rel and self._f.exists(rel):
                try:
                    return pq.read_table(self._f.p(rel), filesystem=self._f.fs, schema=schema)
                except FileNotFoundError:
                    continue
                except (pa.ArrowException, OSError) as e:  # truncated, overwritten, not Parquet
                    raise self._damaged(rel, _first_line(e)) from None
        raise FileNotFoundError(entry["path"])

    def _with_retry(self, fn: Callable[[_Manifest], Any]) -> Any:
        # A concurrent writer may delete a file of the manifest we loaded after we loaded it;
        # the newer manifest then describes a complete snapshot. A file that is still missing
        # after three tries at the *same* version was lost, not superseded: the store is damaged.
        last: Exception | None = None
        seen: dict[int, int] = {}
        for _ in range(20):
            m = self._load()
            try:
                return fn(m)
            except FileNotFoundError as e:
                last = e
                seen[m.version] = seen.get(m.version, 0) + 1
                if seen[m.version] >= 3:
                    raise self._damaged(str(e.args[0]) if e.args else "?", "missing") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.uri}: files kept disappearing while reading ({last})")

    def read(self, filters: Filter | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Read rows of the latest committed version, as an Arrow table with :data:`SCHEMA`.

        Args:
            filters: ``{column: value or list of values}``. ``us_task`` / ``ds_task`` prune
                partitions without reading them; other columns filter rows.
            columns: a subset of columns (default all), in schema order.
        """
        filters = dict(filters or {})
        cols = list(columns) if columns else list(SCHEMA.names)
        unknown = [c for c in list(cols) + list(filters) if c not in SCHEMA.names]
        if unknown:
            raise UserError(f"unknown column(s) {', '.join(unknown)}")

        def want(entry: Mapping[str, Any]) -> bool:
            for c in PARTITION:
                if c in filters:
                    allowed = filters[c] if isinstance(filters[c], (list, tuple, set)) else [filters[c]]
                    if entry[c] not in allowed:
                        return False
            return True

        file_cols = [c for c in dict.fromkeys(cols + [c for c in filters if c not in PARTITION])
                     if c not in PARTITION]
        file_schema = pa.schema([FILE_SCHEMA.field(c) for c in file_cols])

        def run(m: _Manifest) -> pa.Table:
            parts = []
            for e in m.data:
                if not want(e):
                    continue
                t = self._read_file(e, file_schema)
                for c in PARTITION:
                    t = t.append_column(c, pa.array([e[c]] * t.num_rows, pa.string()))
                parts.append(t)
            out_schema = pa.schema([SCHEMA.field(c) for c in dict.fromkeys(cols + list(filters))])
            if not parts:
                return out_schema.empty_table()
            t = pa.concat_tables([p.select(out_schema.names) for p in parts])
            return t.cast(out_schema)

        table = self._with_retry(run)
        for c, v in filters.items():
            if c in PARTITION:
                continue
            values = list(v) if isinstance(v, (list, tuple, set)) else [v]
            has_null = any(x is None for x in values)
            mask = pc.is_in(table.column(c), value_set=pa.array([x for x in values if x is not None],
                                                                 type=SCHEMA.field(c).type))
            if has_null:
                mask = pc.or_(pc.fill_null(mask, False), pc.is_null(table.column(c)))
            table = table.filter(pc.fill_null(mask, False))
        return table.select(cols)

    def to_pandas(self, filters: Filter | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """:meth:`read` as a pandas DataFrame."""
        return self.read(filters, columns).to_pandas()

    def quarantine(self) -> pa.Table:
        """All quarantined rows: source, run_id, reason, raw, payload_hash, quarantined_at."""
        def run(m: _Manifest) -> pa.Table:
            parts = [self._read_file(e, QUARANTINE_SCHEMA) for e in m.quarantine]
            return pa.concat_tables(parts) if parts else QUARANTINE_SCHEMA.empty_table()
        return self._with_retry(run)

    def read_state(self, name: str) -> pa.Table | None:
        """A state table written with ``commit(state={name: table})``, or None."""
        def run(m: _Manifest) -> pa.Table | None:
            e = m.state.get(name)
            return None if e is None else self._read_file(e, None)  # type: ignore[arg-type]
        return self._with_retry(run)

    def state_names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._load().state if fnmatch.fnmatch(n, pattern))

    def summary(self) -> StoreSummary:
        """Rows per (US task, DS task, protocol, shots), sources, last ingest time."""
        self.require()
        m = self._load()
        t = self.read(columns=["source", "run_id", "model_name", *GROUP, "ingested_at"]).to_pandas()
        if len(t):
            g = (t.assign(shots=t["shots"].astype("Int64"))
                   .groupby(list(GROUP), dropna=False)
                   .agg(rows=("run_id", "size"), models=("run_id", "nunique")).reset_index())
            s = t.groupby("source").agg(rows=("run_id", "size"), runs=("run_id", "nunique"),
                                        last_ingested_at=("ingested_at", "max")).reset_index()
            last = str(t["ingested_at"].max())
        else:
            g = pd.DataFrame(columns=[*GROUP, "rows", "models"])
            s = pd.DataFrame(columns=["source", "rows", "runs", "last_ingested_at"])
            last = None
        q = sum(int(e.get("rows", 0)) for e in m.quarantine)
        pending = self._pending(m)
        return StoreSummary(uri=self.uri, version=m.version, rows=len(t), quarantined=q, groups=g, sources=s,
                            last_ingest=last, last_commit=m.log[-1] if m.log else None, pending_finalize=pending)

    # ---- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, timeout_s: float | None = None) -> Iterator[None]:
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        if self._f.local:
            self._f.mkdirs("_meta")
            with _local_lock(self._f.p("_meta/LOCK"), timeout_s, self.uri):
                yield
        else:
            with _lease_lock(self._f, timeout_s, self.uri):
                yield

    # ---- damage ----------------------------------------------------------------------------

    def _inspect(self, m: _Manifest, *, deep: bool) -> list[Damage]:
        """Damaged files of manifest ``m``.

        Shallow (every commit): one listing; each file must exist with the size the manifest
        records. Entries written before sizes were recorded get their Parquet footer read once and
        their size recorded in the next manifest. Deep (``store check``): every file is read
        whole, its sha256 and row count compared, and files that plain readers would read but no
        manifest lists are reported too."""
        sizes = self._f.sizes()
        entries = ([("data", e) for e in m.data] + [("quarantine", e) for e in m.quarantine]
                   + [("state", e) for e in m.state.values()])
        out = []
        for kind, e in entries:
            rel = next((r for r in (e["path"], e.get("staged")) if r and r in sizes), None)
            if rel is None:
                out.append(Damage(e["path"], kind, "missing", int(e.get("rows", 0))))
                continue
            problem = None
            if "bytes" in e and sizes[rel] != e["bytes"]:
                problem = f"{sizes[rel]} bytes, the manifest says {e['bytes']}"
            elif deep or "bytes" not in e:
                problem = self._verify_file(rel, e, deep)
                if problem is None and "bytes" not in e:
                    e["bytes"] = sizes[rel]   # checked once; the next manifest records it
            if problem:
                out.append(Damage(rel, kind, problem, int(e.get("rows", 0))))
        if deep:
            tracked = {r for _, e in entries for r in (e["path"], e.get("staged")) if r}
            tracked.update(m.pending_delete)
            for rel in sorted(sizes):
                # plain readers skip every path with a component starting with '_' or '.'
                if rel not in tracked and not any(c.startswith(("_", ".")) for c in rel.split("/")):
                    out.append(Damage(rel, "untracked", "not part of the store, but plain readers read it", 0))
        return out

    def _verify_file(self, rel: str, e: Mapping[str, Any], deep: bool) -> str | None:
        try:
            if deep:
                data = self._f.read_bytes(rel)
                if "sha256" in e and hashlib.sha256(data).hexdigest() != e["sha256"]:
                    return "its contents differ from what was written (sha256)"
                # one thread: a check is not worth Arrow's pool, whose threads were seen to abort
                # the process at exit ("terminate called without an active exception") under load
                n = pq.read_table(pa.BufferReader(data), use_threads=False).num_rows
            else:
                n = pq.read_metadata(self._f.p(rel), filesystem=self._f.fs).num_rows
        except (pa.ArrowException, OSError) as err:
            return _first_line(err)
        if n != int(e.get("rows", n)):
            return f"{n} rows, the manifest says {e['rows']}"
        return None

    def _refuse_damage(self, m: _Manifest) -> None:
        damage = self._inspect(m, deep=False)
        if damage:
            raise self._damaged(damage[0].path, damage[0].problem, len(damage) - 1)

    def check(self, *, repair: bool = False) -> CheckResult:
        """Check every file against the manifest (``meta-study store check``).

        With ``repair``, commit a version without the damaged files: they are moved, never
        deleted, to ``_damaged/<version>/``, their rows leave the store, and if rows (data or
        quarantine) were lost every ingest state is dropped so that the next ingest of each source
        reads it whole and restores them. Takes the writers' lock (a read-only store is checked without it)."""
        self.require()
        try:
            lock = self._lock()
            lock.__enter__()
        except OSError:
            if repair:
                raise UserError(f"{self.uri}: store is read-only; cannot repair it") from None
            lock = None
        try:
            m = self._load()
            if lock is not None:
                self._finalize(m)
                self._collect_garbage(m)
            damage = tuple(self._inspect(m, deep=True))
            n_files = len(m.live_files())
            if not repair or not damage:
                return CheckResult(self.uri, m.version, n_files, damage)
            return self._repair(m, damage, n_files)
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)

    def _repair(self, m: _Manifest, damage: tuple[Damage, ...], n_files: int) -> CheckResult:
        bad = {d.path for d in damage}
        keep = lambda e: e["path"] not in bad and e.get("staged") not in bad  # noqa: E731
        # rows lost (data or quarantine): drop every ingest state, so that each source's next
        # ingest reads it whole instead of skipping what it believes is already stored
        lost_rows = any(d.kind in ("data", "quarantine") for d in damage)
        state = {} if lost_rows else {n: e for n, e in m.state.items() if keep(e)}
        dropped_state = [e["path"] for n, e in m.state.items() if n not in state and keep(e)]
        rows = sum(d.rows for d in damage if d.kind in ("data", "quarantine"))
        now = _now()
        entry = {"version": m.version + 1, "time": now.isoformat(), "operation": "repair",
                 "set_aside": sorted(bad), "rows_dropped": rows, "state_dropped": len(m.state) - len(state)}
        m2 = _Manifest(version=m.version + 1, data=[e for e in m.data if keep(e)],
                       quarantine=[e for e in m.quarantine if keep(e)], state=state,
                       pending_delete=dropped_state, log=(m.log + [entry])[-KEEP_LOG:], created_at=now.isoformat())
        self._publish(m2, f"{m2.version:010d}-{uuid.uuid4().hex[:8]}")
        for d in damage:
            if self._f.exists(d.path):
                self._f.move(d.path, f"_damaged/{m2.version:010d}/{d.path}")
                self._f.prune_empty_dirs(os.path.dirname(d.path))
        self._finalize(m2)
        return CheckResult(self.uri, m.version, n_files, damage, repaired_version=m2.version, rows_dropped=rows)

    def _check_writable_location(self) -> None:
        info = self.probe()
        if info.type == pafs.FileType.File:
            raise UserError(f"{self.uri}: is a file, not a store directory")
        if info.type == pafs.FileType.Directory and not self.exists():
            others = [n for n in self._f.listdir("") if n not in ("_meta", "_staging")]
            if others:
                raise UserError(f"{self.uri}: directory is not empty and is not a meta-study store "
                                f"(found {', '.join(others[:3])})")

    def _pending(self, m: _Manifest) -> bool:
        """True if ``m``'s commit has not been finalized (files still staged or superseded)."""
        return (any(self._f.exists(p) for p in m.pending_delete)
                or any(e.get("staged") and self._f.exists(e["staged"]) for e in m.live_files()))

    def _finalize(self, m: _Manifest) -> None:
        """Roll a committed manifest forward: staged files into place, superseded files away.

        Partition by partition: a new file is moved in and the file it supersedes (same
        directory) is unlinked right after, so a plain reader listing the store meanwhile sees
        each partition old or new (both for the microseconds between the rename and the unlink),
        never both for the whole finalize."""
        superseded: dict[str, list[str]] = {}
        for rel in m.pending_delete:
            superseded.setdefault(os.path.dirname(rel), []).append(rel)
        for i, e in enumerate(m.live_files()):
            staged = e.get("staged")
            if staged and not self._f.exists(e["path"]) and self._f.exists(staged):
                self._f.move(staged, e["path"])
                if i == 0:
                    _failpoint("mid_finalize")
                for rel in superseded.pop(os.path.dirname(e["path"]), []):
                    self._f.delete(rel)
        for rel in m.pending_delete:
            self._f.delete(rel)
            self._f.prune_empty_dirs(os.path.dirname(rel))

    def _collect_garbage(self, m: _Manifest) -> None:
        for txn in self._f.listdir("_staging"):
            self._f.rmtree(f"_staging/{txn}")
        versions = self._manifest_versions()
        for v in versions[:-KEEP_MANIFESTS]:
            self._f.delete(f"_meta/manifests/{v:010d}.json")
        for name in self._f.listdir("_meta/manifests"):
            if name.startswith(".tmp-"):
                self._f.delete(f"_meta/manifests/{name}")

    def recover(self) -> None:
        """Finish an interrupted commit and clear leftovers of aborted ones. Takes the lock."""
        with self._lock():
            m = self._load()
            self._finalize(m)
            self._collect_garbage(m)

    def commit(
        self,
        upserts: pa.Table | None = None,
        *,
        delete_runs: Sequence[tuple[str, str]] = (),
        quarantine: pd.DataFrame | pa.Table | None = None,
        state: Mapping[str, pa.Table] | None = None,
        operation: str = "write",
        info: Mapping[str, Any] | None = None,
        now: _dt.datetime | None = None,
    ) -> CommitResult:
        """Upsert rows, delete runs, add quarantined rows and replace state tables, atomically.

        Args:
            upserts: canonical rows (see :func:`meta_study.schema.validate`). Keys must be unique
                within the batch. A row whose key exists replaces the stored row if any value
                other than ``ingested_at`` differs, and is skipped otherwise.
            delete_runs: ``(source, run_id)`` pairs whose rows are removed.
            quarantine: rows with ``source, run_id, reason, raw``; already-quarantined payloads
                (same source, reason and raw) are not added again.
            state: named tables that replace the previous table of that name.
            operation, info: recorded in the commit log.

        Returns:
            A :class:`CommitResult`; ``version`` is None if nothing changed (nothing written).
        """
        now = now or _now()
        new = conform(upserts, ingested_at=now) if upserts is not None and upserts.num_rows else None
        if new is not None:
            keys = key_strings(new)
            if len(set(keys)) != len(keys):
                raise ValueError("duplicate keys within one commit; deduplicate first (see ingest.dedupe_keys)")
        q_new = _quarantine_table(quarantine, now) if quarantine is not None and len(quarantine) else None

        self._check_writable_location()
        with self._lock():
            m = self._load()
            self._finalize(m)        # roll forward an interrupted commit before building on it
            self._collect_garbage(m)
            self._refuse_damage(m)   # never build a new version on a damaged one
            txn = f"{m.version + 1:010d}-{uuid.uuid4().hex[:8]}"
            try:
                plan = _Plan(self, m, txn, now)
                counts = plan.merge_data(new, delete_runs)
                n_q = plan.add_quarantine(q_new)
                plan.replace_state(state or {})
            except BaseException as e:
                raise self._roll_back(m, txn, e) from None
            return self._commit_plan(m, txn, plan, counts, n_q, operation, info, now)

    def commit_stream(
        self,
        batches: Iterable[tuple[pa.Table | None, pd.DataFrame | None]],
        *,
        dedupe: Callable[[pa.Table], tuple[pa.Table, pd.DataFrame]],
        quarantine: pd.DataFrame | None = None,
        state: Mapping[str, pa.Table] | None = None,
        operation: str = "write",
        info: Mapping[str, Any] | None = None,
        now: _dt.datetime | None = None,
    ) -> CommitResult:
        """:meth:`commit` of any number of batches as **one** transaction, in bounded memory.

        Each batch is ``(validated rows, rejected rows)``. While the batches arrive, each one's
        rows are split by partition and spilled to Parquet under the commit's staging directory
        (invisible to every reader, removed on any failure); then each touched partition is
        merged on its own: its spilled rows are read back, ``dedupe`` collapses keys repeated
        across batches (conflicts go to the quarantine), and the partition is upserted as
        :meth:`commit` does. Peak memory is one batch plus one partition, whatever the total.
        """
        now = now or _now()
        self._check_writable_location()
        with self._lock():
            m = self._load()
            self._finalize(m)
            self._collect_garbage(m)
            self._refuse_damage(m)
            txn = f"{m.version + 1:010d}-{uuid.uuid4().hex[:8]}"
            try:
                spilled: dict[tuple[str, str], list[str]] = {}
                rejected = [quarantine] if quarantine is not None and len(quarantine) else []
                for i, (table, rej) in enumerate(batches):
                    if rej is not None and len(rej):
                        rejected.append(rej)
                    if table is None or not table.num_rows:
                        continue
                    for part, rows in _by_partition(conform(table, ingested_at=now)):
                        rel = f"_staging/{txn}/spill/{hashlib.sha1(repr(part).encode()).hexdigest()[:16]}-{i:06d}.parquet"
                        self._f.write_bytes(rel, _table_bytes(rows))
                        spilled.setdefault(part, []).append(rel)
                plan = _Plan(self, m, txn, now)
                counts = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0}
                for part in sorted(spilled):
                    new = pa.concat_tables([pq.read_table(self._f.p(r), filesystem=self._f.fs, schema=SCHEMA)
                                            for r in spilled[part]])
                    new, conflicts = dedupe(new)
                    if len(conflicts):
                        rejected.append(conflicts)
                    for k, v in plan.merge_data(new, ()).items():
                        counts[k] += v
                    for r in spilled.pop(part):
                        self._f.delete(r)   # staged data only: the disk holds one copy at a time
                q = pd.concat(rejected, ignore_index=True) if rejected else None
                n_q = plan.add_quarantine(_quarantine_table(q, now) if q is not None and len(q) else None)
                plan.replace_state(state or {})
            except BaseException as e:
                raise self._roll_back(m, txn, e) from None
            return self._commit_plan(m, txn, plan, counts, n_q, operation, info, now)

    def _commit_plan(self, m: _Manifest, txn: str, plan: _Plan, counts: Mapping[str, int], n_q: int, operation: str,
                     info: Mapping[str, Any] | None, now: _dt.datetime) -> CommitResult:
        """The end every commit shares, under the lock: no version when nothing changed; else
        publish the next manifest (the commit point; a failure before it rolls back), then
        finalize and drop the staging directory."""
        try:
            if not plan.changed:
                self._f.rmtree(f"_staging/{txn}")
                return CommitResult(version=None, unchanged=counts["unchanged"])
            entry = {"version": m.version + 1, "time": now.isoformat(), "operation": operation,
                     **counts, "quarantined": n_q, **dict(info or {})}
            m2 = plan.manifest(entry)
            _failpoint("before_publish")
            self._publish(m2, txn)
        except BaseException as e:
            raise self._roll_back(m, txn, e) from None
        _failpoint("after_publish")
        self._finalize(m2)
        self._f.rmtree(f"_staging/{txn}")
        return CommitResult(version=m2.version, inserted=counts["inserted"], updated=counts["updated"],
                            unchanged=counts["unchanged"], deleted=counts["deleted"], quarantined=n_q,
                            partitions_written=plan.partitions_written)

    def _roll_back(self, m: _Manifest, txn: str, e: BaseException) -> BaseException:
        """What a commit that failed before its commit point raises, after removing its staged
        files at once (a full disk must not stay full of them until the next writer comes)."""
        if m.version + 1 in self._manifest_versions():
            return e  # committed after all: its staged files are the new version's data
        self._f.rmtree(f"_staging/{txn}")
        self._f.delete(f"_meta/manifests/.tmp-{txn}")
        return self._write_error(e) if isinstance(e, OSError) else e

    def _write_error(self, e: OSError) -> Exception:
        import errno

        where = e.filename or self.uri
        why = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.EFBIG: "file too large"}.get(e.errno or 0)
        if why is None:
            return e
        return UserError(f"{where}: {why}; the commit was rolled back (the store keeps version "
                         f"{self.version}) and its staged files were removed")

    def _publish(self, m: _Manifest, txn: str) -> None:
        tmp = f"_meta/manifests/.tmp-{txn}"
        self._f.write_bytes(tmp, m.to_json())
        if not self._f.publish(tmp, f"_meta/manifests/{m.version:010d}.json"):
            raise RuntimeError(f"{self.uri}: version {m.version} was committed by another writer "
                               "despite the lock; refusing to overwrite it")


def open_store(uri: str, *, must_exist: bool = True) -> Store:
    """Open a store; with ``must_exist`` raise a :class:`UserError` if ``uri`` holds none."""
    s = Store(uri)
    return s.require() if must_exist else s
