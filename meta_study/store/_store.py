"""The meta-study store: :class:`Store` reads, commits to and checks one store (the package's
docstring gives its layout).

Commit protocol (under the writers' lock; what keeps the store correct does *not* depend on
the lock, so two writers that both believe they hold it still cannot damage it):

1. *Recover*: finish the latest version if its writer died after its commit point (roll forward,
   see 5), then collect garbage (below). Refuse to go on if a live file of the latest version is
   damaged. A store of format 1 is first upgraded to the current layout, as its own version.
2. Merge: for each partition touched, read its live file, replace rows whose key is written again
   (upsert), add new rows. Rows whose content is unchanged are not rewritten; if nothing changed,
   nothing is written at all.
3. Stage every new file under ``_staging/<txn>/``, where ``txn = <version+1>-<random>`` is this
   transaction's own name (no other writer ever writes there); fsync it (local).
4. **Commit point**: create manifest ``<version+1>.json``, *only if no file has that name*: a
   hard link locally (``link`` fails if the name exists; on a mount without hard links, the name
   created with ``O_EXCL`` and the whole manifest renamed over it, readers reading again while it
   is empty), a PUT with ``If-None-Match: *`` on S3. Of any writers racing for one version,
   exactly one creates it, whatever their timing.
   A writer that finds the name taken has lost: it deletes its own staging directory (nothing
   else) and either starts again from 1 on top of the winner's version (:meth:`Store.commit`)
   or fails in one line (:meth:`Store.commit_stream`, whose input was consumed).
5. Write the manifest's copy ``<version+1>.copy.json`` (so a damaged manifest can be restored),
   finalize: move staged files into place, delete the superseded files and the staging directory.

A writer killed before 4 leaves the previous version fully intact. A writer killed after 4 leaves
a committed version whose files are either in place or still staged; :meth:`Store.read` follows
the manifest and reads them wherever they are, and the next writer (or the next command that can
take the lock) finishes step 5. Readers never take the lock.

Garbage: a staging directory ``_staging/<w>-<random>`` is deleted only once version ``w`` is
decided, i.e. ``w`` <= the version just finalized: its transaction either *is* that version (its
files were just moved out) or lost the race for ``w`` and can never publish. A writer therefore
never deletes the files of a commit that may still succeed, however long that writer stalls.
Locally, under ``flock``, every other staging directory whose writer is gone is deleted at once,
freeing the disk: each writer holds an ``flock`` on its own staging directory while its
transaction runs (the kernel releases it when the writer dies), so a writer that also believes it
holds the store's lock (its lock file deleted or replaced meanwhile, an NFS mount without working
locks) never has its staged files deleted under it.

Locks: ``flock`` locally; on S3 a lease with conditional writes, renewed by a heartbeat, whose
holder is named to a waiting writer and which ``meta-study store unlock`` can break (see
:mod:`._lock`). Other object stores (``gs://``, ...) can be read but not written: pyarrow's
filesystems have no conditional writes.

Damage: every file's size and sha256 are in the manifest and are checked on every read, so a
damaged file fails the command that reads it in one line (:class:`StoreDamagedError`). Every
manifest carries a checksum and has a copy; a damaged latest manifest is read from its copy, and
``store check --repair`` restores it, or, without an intact copy, rolls the store back to the
newest intact manifest; when none is intact it refuses and moves nothing. A FIFO, device or
directory where a file should be is damage too, never opened (see :meth:`._Files.read_bytes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import hashlib
import json
import os
import sys
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..dirs import missing_dirs, remove_made_dirs
from ..errors import StoreBusyError, StoreConflictError, StoreDamagedError, StoreLockedError, UserError
from ..schema import FILE_SCHEMA, GROUP, KEY, PARTITION, SCHEMA
from ..validation import canonical_name, conform, dedupe_keys, ends_before_start
from ..failpoints import failpoint as _failpoint
from ._files import (CredentialsRefusedError, NotAFileError, WrongSizeError, _Files, _first_line, _now, _parse_parquet, _resolve, _table_bytes, display_path,
                     display_uri,
                     kind_of_mode)
from ._lock import LEASE, LockFileError, LockHolder, Notify, _Heartbeat, _lease_lock, _local_lock, break_lease, lease_holder, lease_seconds, local_holder
from ._manifest import (FORMAT_VERSION, KEEP_LOG, KEEP_MANIFESTS, QUARANTINE_SCHEMA, CheckResult, CommitResult,
                        Damage, StoreSummary, _CorruptManifest, _Manifest, _quarantine_table)
from ._merge import _by_partition, _Plan, _Verified, require_partitions
from ._s3 import NoCredentialsError

Filter = Mapping[str, Any]

#: How often :meth:`Store.commit` merges again after losing the race for a version.
COMMIT_ATTEMPTS = 5


def _stderr_notice(msg: str) -> None:
    print(f"meta-study: {msg}", file=sys.stderr, flush=True)


#: The largest manifest read (one is ~0.5 KB per live file plus its log: ~50 MB for 100k
#: partitions); a larger file in a manifest's place is damage, not read into memory.
MAX_MANIFEST_BYTES = 1 << 30


def _mrel(v: int) -> str:
    return f"_meta/manifests/{v:010d}.json"


def _copy_rel(v: int) -> str:
    return f"_meta/manifests/{v:010d}.copy.json"


def _txn_version(name: str) -> int | None:
    """The version a staging directory ``<version>-<random>`` was staged for, or None. ASCII
    digits only: ``str.isdigit`` takes '²' too (``int`` then raised, failing every commit's
    garbage collection) and Arabic-Indic digits, which ``int`` reads."""
    head = name.split("-", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else None


def _manifest_version(name: str, suffix: str) -> int | None:
    """The version of a manifest (``suffix`` ".json") or copy (".copy.json") named as the store
    names them (:func:`_mrel`: ten ASCII digits), or None for any other name, which is not the
    store's and is ignored. A name that merely parsed as a number (``5.json``, ``٠٠٠٠٠٠٠٠٠٣.json``,
    which ``isdigit`` and ``int`` accept) was taken as the latest version, whose manifest
    ``0000000005.json`` did not exist: every command then failed, "replaced under each of 50
    reads" (or with a traceback for '²')."""
    head = name[:-len(suffix)] if name.endswith(suffix) else ""
    if len(head) != 10 or not (head.isascii() and head.isdigit()):
        return None
    return int(head)



def _without_location(e: BaseException) -> BaseException:
    """``e`` without the object's location its message starts with (``s3://…/_meta/manifests?…:
    LIST failed: …``), where the line that reports it names the store already: with a long
    ``?endpoint_override=`` the 200 characters of the reason ended inside the repeated URI."""
    text = str(e).strip()
    head, sep, rest = text.partition(": ")
    return RuntimeError(rest) if sep and "://" in head and " " not in head else e


def _inside(e: BaseException, uri: str) -> BaseException:
    """``e`` with the object's location its message starts with (``s3://lab/x/up/…?endpoint_override=…:
    DELETE failed: …``) as the path inside the store ``uri`` (``up/…``; one elsewhere less its
    query), where the line that reports it names the store already: with a long query the 200
    characters of the reason ended inside the repeated URI ("… : D)"), the file and the code lost."""
    head, sep, rest = str(e).strip().partition(": ")
    if not (sep and "://" in head and " " not in head):
        return e
    path, base = head.split("?", 1)[0], uri.split("?", 1)[0].rstrip("/") + "/"
    return RuntimeError(f"{path.removeprefix(base) or path}: {rest}")


class Store:
    """A meta-study store at a local path or URI.

    Args:
        uri: ``/path`` (a str or a ``pathlib.Path``), ``file:///path``, ``s3://bucket/prefix`` (read and
            write), ``gs://...`` and other pyarrow filesystems (read only).
        lock_timeout_s: how long a writer waits for another writer before giving up.
        lease_s: object stores: the lease a writer holds (renewed every quarter of it while it
            runs); None: ``META_STUDY_LEASE_S`` or 60 s. Bounds how long a dead writer blocks others.
        notify: where one-line notices go (waiting for another writer, retrying a commit);
            stderr by default, None for silence.
    """

    def __init__(self, uri: str | os.PathLike[str], *, lock_timeout_s: float = 900.0, lease_s: float | None = None,
                 notify: Notify | None = _stderr_notice) -> None:
        uri = os.fspath(uri)   # a pathlib.Path too ("argument of type 'PosixPath' is not iterable")
        self.uri = display_uri(uri)   # what messages and provenance show; never holds a secret
        fs, root, local = _resolve(uri)
        self._f = _Files(fs, root, local, uri, self.uri)
        self._v = _Verified(self._f, self.uri)
        self.lock_timeout_s = lock_timeout_s
        self.lease_s = lease_s
        self.notify = notify
        self._beat: _Heartbeat | None = None   # the S3 lease's heartbeat while this store holds it
        # (version, txn) whose manifest copy this store's _publish wrote or found: its finalize
        # asks nothing more of it (a HEAD per commit on object stores)
        self._copy_known: tuple[int, str] | None = None
        # (version, versions listed) as _refuse_a_pruned_name listed them after publishing that version,
        # or as _begin's load listed them (under the lock): _collect_garbage prunes by it, once
        self._versions_seen: tuple[int, list[int]] | None = None
        # (version, versions listed) of the manifest _load read last
        self._loaded_by: tuple[int, list[int]] | None = None

    # ---- inspection ------------------------------------------------------------------------

    def exists(self) -> bool:
        """True if ``uri`` holds a store (at least one committed version)."""
        return bool(self._manifest_versions())

    def _manifest_versions(self) -> list[int]:
        """The versions that have a manifest, and the newest version if only its copy is left.

        A latest manifest deleted (a partial backup restore, a sync tool) while its copy survived
        is damage read from the copy: without it every command took the version before as the
        latest, whose files were gone, and ``--repair`` dropped every row and overwrote the intact
        copy. Only a copy newer than every manifest counts: older lone copies are those of pruned
        versions (a writer died between deleting a manifest and its copy). One listing."""
        out, copies = set(), set()
        try:
            names = self._f.listdir("_meta/manifests")
        except (OSError, pa.ArrowException) as e:
            # refused credentials: one line (exit 2) for every command that opens the store, where
            # 'refit' said "LIST failed: InvalidAccessKeyId: …" (exit 1)
            self._f.raise_if_refused(e, "LIST", "_meta/manifests")
            raise
        for name in names:
            if (v := _manifest_version(name, ".copy.json")) is not None:
                copies.add(v)
            elif (v := _manifest_version(name, ".json")) is not None:
                out.add(v)
        newest = max(out, default=0)
        return sorted(out | {v for v in copies if v > newest})

    def _load(self, version: int | None = None, *, listed: list[int] | None = None) -> _Manifest:
        """The latest manifest (or ``version``); a damaged one is read from its copy, and without
        an intact copy it is a one-line :class:`StoreDamagedError` saying how to roll back.
        ``listed``: the versions a listing of the manifests found just before (non-empty), read
        by instead of listing again (a LIST on S3); a later attempt lists anew."""
        # A writer may prune the manifest we listed before we read it (only old ones are pruned,
        # so a newer one exists): list again.
        for attempt in range(50):
            versions = listed if attempt == 0 and listed else self._manifest_versions()
            if not versions:
                return _Manifest()
            v = versions[-1] if version is None else version
            try:
                m, problem = self._read_manifest(v)
            except FileNotFoundError:
                if version is not None:
                    raise
                time.sleep(0.01)
                continue
            if m is None:
                if version is None and attempt < 49 and self._name_claimed(v):
                    time.sleep(0.01)    # a commit on a mount without hard links, mid-way: read again
                    continue
                raise self._unreadable(v, problem or "damaged")
            self._loaded_by = (m.version, versions)   # the listing m was read by (see _begin)
            return m
        raise StoreBusyError(f"{self.uri}: the store's latest manifest was replaced under each of 50 reads (other "
                             "processes committing and pruning faster than this one reads); run the command again")

    def _name_claimed(self, v: int) -> bool:
        """Manifest ``v`` is an empty file without a copy: on a mount without hard links a commit
        claims the name with an empty file and renames the whole manifest over it next
        (:meth:`_Files.create_exclusive`), so a reader in between read "damaged manifest: does not
        parse (0 bytes)". One that stays empty (a crash between the two) is damage after ~0.5 s."""
        if not self._f.local:
            return False
        try:
            return os.stat(self._f.p(_mrel(v))).st_size == 0 and self._f.kind(_copy_rel(v)) is None
        except OSError:
            return False

    def _unreadable(self, v: int, problem: str) -> StoreDamagedError:
        """The one line for a latest manifest ``v`` that is damaged and has no intact copy: what
        ``--repair`` would roll back to, or, when no manifest is intact, that nothing can be and
        what to do (reads the older manifests: on this error path only)."""
        where = f"{display_path(self.uri, _mrel(v))}: damaged manifest: {problem}"
        base = self._newest_intact(v)
        if base is not None:
            return StoreDamagedError(
                f"{where}, and it has no intact copy; 'meta-study store check --repair {self.uri}' rolls the store "
                f"back to version {base.version}, its newest intact version (re-ingest to restore what that drops)")
        n = sum(1 for rel in self._f.sizes() if _plain(rel))
        return StoreDamagedError(
            f"{where}; neither its copy nor any older manifest is intact, so there is no version to read or to roll "
            f"back to ('--repair' changes nothing; the {n} data file(s) are kept untouched): restore "
            f"{display_path(self.uri, '_meta/manifests')} from a backup")

    def _read_manifest(self, v: int) -> tuple[_Manifest | None, str | None]:
        """(manifest, problem): the manifest of version ``v`` and None if it is intact; its copy
        and the problem if only the copy is; None and the problem if neither is. A FIFO, device
        or directory in a manifest's place is damage, never opened, and so is another version's
        manifest under its name (a stale file restored there verifies: the store went back a
        version, to files that were gone)."""
        rel = _mrel(v)
        newer = None
        try:
            raw = self._f.read_bytes(rel, limit=MAX_MANIFEST_BYTES)   # FileNotFoundError: pruned meanwhile
            m = _Manifest.from_json(raw, f"{display_path(self.uri, rel)}")
            if m.version != v:
                raise _CorruptManifest(f"holds version {m.version}, not {v}")
            return m, None
        except (_CorruptManifest, NotAFileError, WrongSizeError) as e:
            problem = str(e)
            newer = getattr(e, "newer", None)
        except FileNotFoundError:
            if self._f.kind(_copy_rel(v)) is None:
                raise   # pruned meanwhile (its copy goes right after it), or never there
            problem = "missing"
        try:
            raw = self._f.read_bytes(_copy_rel(v), limit=MAX_MANIFEST_BYTES)
            copy = _Manifest.from_json(raw, f"{display_path(self.uri, _copy_rel(v))}")
            if copy.version == v:
                return copy, problem
        except _CorruptManifest as e:
            if newer is not None and e.newer == newer:   # both written by a newer meta-study
                raise _Manifest.newer_error(f"{display_path(self.uri, rel)}", newer) from None
        except (FileNotFoundError, NotAFileError, WrongSizeError):
            pass
        return None, problem

    def probe(self) -> pafs.FileInfo:
        """What is at the store's location; a :class:`UserError` if it cannot be reached
        (network, credentials, permissions), so that no command starts work it cannot store."""
        try:
            return self._f.fs.get_file_info(self._f.root)
        except (pa.ArrowException, OSError) as e:
            self._f.raise_if_refused(e, "LIST", "")   # the endpoint answered: refused, not unreachable
            raise UserError(f"{self.uri}: cannot reach store location ({_first_line(e)})") from None

    def _require_directory(self, info: pafs.FileInfo) -> None:
        """A :class:`UserError` if the store's location holds something other than a directory
        (a file, a FIFO, a device): never opened, never listed into."""
        if info.type not in (pafs.FileType.Directory, pafs.FileType.NotFound):
            raise UserError(f"{self.uri}: is {self._f.kind('') or 'not a directory'}, not a store directory")

    def _require_exists(self, half_made: bool = False) -> list[int]:
        """A :class:`UserError` unless the location is a store; with ``half_made``, a store whose
        first commit never landed (only ``_meta``: it may hold a lock to break) passes too.
        Returns the versions the listing of the manifests found ([] for such a half-made store),
        for :meth:`require` to read the latest manifest by (a LIST less on S3)."""
        listed = self._listed_as_store()
        if listed:
            return listed
        info = self.probe()
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"{self.uri}: no such store")
        self._require_directory(info)
        listed = self._manifest_versions()   # a UserError if _meta/manifests is not a directory
        if listed:
            return listed
        self._refuse_lost_manifests()
        if not half_made:
            # _meta without a manifest: a first ingest killed (SIGKILL) before its commit, or one
            # running now; "not a meta-study store" read as a mistyped path (a look more, here only)
            if self._f.exists("_meta"):
                raise UserError(f"{self.uri}: {HALF_MADE}")
            raise UserError(f"{self.uri}: not a meta-study store (no _meta/manifests)")
        if not self._f.exists("_meta"):
            raise UserError(f"{self.uri}: not a meta-study store (no _meta)")
        return []

    def _listed_as_store(self) -> list[int]:
        """On S3, the versions one LIST of the manifests finds, where it finds a store (else []):
        then nothing more is asked (every command opening the store, ``store info`` and ``store
        unlock`` among them). They asked pyarrow what is at the root first (:meth:`probe`: a HEAD
        of the prefix as a key, a LIST of ``prefix/``; a HEAD of the bucket for a store at its
        root): 2 requests more, each time, though the LIST of the manifests followed anyway, and
        where it finds a manifest the root is a store's directory (as :meth:`_check_writable_s3`
        takes it). Where it finds none, or fails (a missing bucket, no network, refused
        credentials), []: the root is looked at as before, and the command refuses in the same
        words (only an unsigned request refused is said at once, in :class:`NoCredentialsError`'s).
        [] on other filesystems."""
        if self._f.scheme != "s3":
            return []
        try:
            return self._manifest_versions()
        except (NoCredentialsError, CredentialsRefusedError):
            raise
        except (OSError, pa.ArrowException, UserError):
            return []

    def _refuse_lost_manifests(self) -> None:
        """A :class:`StoreDamagedError` if the location holds a store's files (data, quarantine or
        state) but no manifest: every manifest was lost (deleted, a partial backup restore, a sync
        tool). ``Store.read`` read such a store as empty, silently, and ``store check`` called it
        "not a meta-study store". One listing, only when no manifest is there."""
        if not self._f.exists("_meta"):
            return   # not a store at all (a directory of someone's Parquet files): said elsewhere
        n = sum(1 for rel in self._f.sizes() if rel.endswith(".parquet")
                and (_plain(rel) or rel.split("/")[0] in ("_quarantine", "_state")))
        if n and not self.exists():   # (a first commit's files are placed after its manifest: listed again)
            raise StoreDamagedError(
                f"{self.uri}: damaged store: {display_path(self.uri, '_meta/manifests')} holds no manifest, but {n} file(s) of the "
                "store are here: no version can be read, repaired or committed to (the files are kept untouched); "
                f"restore {display_path(self.uri, '_meta/manifests')} from a backup")

    def require_location(self) -> "Store":
        """Raise a :class:`UserError` unless the location holds a store, or at least its
        ``_meta`` (a store whose first commit never landed: it may hold a lock to break)."""
        self._require_exists(half_made=True)
        return self

    def require(self) -> "Store":
        """Raise a :class:`UserError` unless this is a store; returns self. One listing of the
        manifests: the check's finds the latest manifest too (on S3 the finish listed them again
        at once, a LIST more for every command that opened a store)."""
        self._open()
        return self

    def _open(self) -> _Manifest | None:
        """:meth:`require`, returning the latest manifest it read where that commit was finished
        already (a reader may read by it instead of listing and reading it again: a LIST and a
        GET on S3), None where it was left to finish (finished now, or not: read anew)."""
        return self._finish_interrupted(self._require_exists())

    def _finish_interrupted(self, listed: list[int] | None = None) -> _Manifest | None:
        """Finish a commit whose writer died between the commit point and the end of finalize.

        Until then a plain Parquet reader sees a torn layout (new files beside superseded ones,
        or the old files only); ``Store.read`` does not, it follows the manifest. Every command
        opens the store through :meth:`require`, so the first command after a crash repairs what
        plain readers see. Only when no writer holds the lock (a live writer finalizes itself)
        and the store is writable; otherwise nothing happens. ``listed``: the versions a listing
        of the manifests just found (:meth:`_load`'s first read goes by it). Returns the manifest
        read when its commit had nothing left to finish (it never has again: finishing only
        moves and deletes files), else None."""
        m = self._load(listed=listed)
        if not self._pending(m):
            return m
        try:
            with self._lock(timeout_s=0.0):
                m = self._load()
                self._finalize(m)
                self._collect_garbage(m)
        except (UserError, OSError):  # a live writer, a read-only store, or one we cannot write
            pass
        return None

    def local_path(self, rel: str) -> str | None:
        """The local filesystem path of ``rel`` inside the store, or None for object stores
        (for locks of other writers, e.g. the refit's ``_meta/REFIT.lock``)."""
        return self._f.p(rel) if self._f.local else None

    @property
    def version(self) -> int:
        return self._load().version

    @property
    def snapshot_id(self) -> str:
        """The latest committed version as ``"<version>:<transaction>"``: unique to this store and
        version (the transaction id is random per commit), so a results directory made from
        another store, or from a store deleted and made again (both at version 1), is never taken
        for this one. ``"0:"`` for a store without a commit."""
        m = self._load()
        return f"{m.version}:{m.txn}"

    def history(self) -> list[dict[str, Any]]:
        """The commit log, oldest first: version, time, operation and what it did."""
        return list(self._load_existing().log)

    def _load_existing(self) -> _Manifest:
        """:meth:`_load` for the reading methods: a location that holds no store (nothing there: a
        mistyped path; a file; a directory that is not a store) is a one-line :class:`UserError`,
        never read as an empty store. A store whose first commit wrote nothing (only ``_meta``)
        is empty. Costs a probe and a listing more, only when no version is committed."""
        m = self._load()
        if not m.version:
            self._require_exists(half_made=True)
        return m

    # ---- reading ---------------------------------------------------------------------------

    def _damaged(self, rel: str, problem: str, more: int = 0) -> StoreDamagedError:
        return self._v.damaged(rel, problem, more)

    def _read_file(self, entry: Mapping[str, Any], schema: pa.Schema | None) -> pa.Table:
        return self._v.read_file(entry, schema)

    def _with_retry(self, fn: Callable[[_Manifest], Any], first: _Manifest | None = None) -> Any:
        # A concurrent writer may delete a file of the manifest we loaded after we loaded it;
        # the newer manifest then describes a complete snapshot. A file that is still missing
        # after three tries at the *same* version was lost, not superseded: the store is damaged.
        # ``first``: a manifest just read (by :meth:`_open`), the first try's; later ones load.
        last: Exception | None = None
        seen: dict[int, int] = {}
        for attempt in range(20):
            m = first if attempt == 0 and first is not None else self._load_existing()
            try:
                return fn(m)
            except FileNotFoundError as e:
                last = e
                seen[m.version] = seen.get(m.version, 0) + 1
                if seen[m.version] >= 3:
                    raise self._damaged(str(e.args[0]) if e.args else "?", "missing") from None
                time.sleep(0.05)
        raise StoreBusyError(f"{self.uri}: files of the store's latest version were collected under each of 20 "
                             f"reads (other processes committing faster than this one reads; last: {_first_line(last) if last else '?'}); "
                             "run the command again")

    def _read_data(self, entry: Mapping[str, Any], file_schema: pa.Schema) -> pa.Table:
        return self._v.read_data(entry, file_schema)

    def read(self, filters: Filter | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Read rows of the latest committed version, as an Arrow table with :data:`SCHEMA`.
        A location that holds no store (a mistyped path) is a :class:`UserError`, not an empty table.

        Args:
            filters: ``{column: value or values}`` (a list, set, array or Series). ``us_task`` / ``ds_task`` prune
                partitions without reading them; other columns filter rows. None (or NaN, NA, NaT)
                matches nulls; a value not of the column's type is a :class:`UserError`.
            columns: a subset of columns (default all), in schema order.
        """
        return self.snapshot(filters, columns)[0]

    def snapshot(self, filters: Filter | None = None, columns: Sequence[str] | None = None) -> tuple[pa.Table, str]:
        """:meth:`read`, and the :attr:`snapshot_id` of the version the rows are from: one manifest for
        both, so an ingest that commits meanwhile can never give rows of one version labelled
        with another."""
        table, m = self._snapshot(filters, columns)
        return table, f"{m.version}:{m.txn}"

    def _snapshot(self, filters: Filter | None, columns: Sequence[str] | None,
                  first: _Manifest | None = None) -> tuple[pa.Table, _Manifest]:
        """:meth:`snapshot`, with the manifest the rows are from; ``first``: see :meth:`_with_retry`."""
        if filters is not None and not isinstance(filters, Mapping):   # s.read("imagenet"): an AttributeError
            raise UserError(f"filters: {filters!r:.80} is not a mapping of columns to values; give e.g. "
                            f"{{'us_task': {filters!r:.40}}}" if isinstance(filters, str) else
                            f"filters: a {type(filters).__name__} is not a mapping of columns to values "
                            "(e.g. {'us_task': 'imagenet'})")
        # read once (a generator too); names as a commit stores them (NFC, trimmed, no zero-width
        # characters): a run id or a task given as its caller holds it ("a ", a decomposed "café")
        # matched nothing, silently
        filters = {c: _filter_values(v, named=c in _NAME_COLUMNS) for c, v in (filters or {}).items()}
        if isinstance(columns, str):   # one column: list("run_id") was "unknown column(s) r, u, n, _, i, d"
            columns = [columns]
        cols = list(columns) if columns else list(SCHEMA.names)
        unknown = [c for c in list(cols) + list(filters) if c not in SCHEMA.names]
        if unknown:
            raise UserError(f"unknown column(s) {', '.join(unknown)}")
        for c in PARTITION:   # checked as other columns' values are: {"us_task": 7} matched nothing, silently
            if c in filters:
                _value_set(c, [x for x in filters[c] if x is not None])

        def want(entry: Mapping[str, Any]) -> bool:
            for c in PARTITION:
                if c in filters and entry[c] not in filters[c]:
                    return False
            return True

        file_cols = [c for c in dict.fromkeys(cols + [c for c in filters if c not in PARTITION])
                     if c not in PARTITION]
        file_schema = pa.schema([FILE_SCHEMA.field(c) for c in file_cols])
        out_schema = pa.schema([SCHEMA.field(c) for c in dict.fromkeys(cols + list(filters))])

        def run(m: _Manifest) -> tuple[pa.Table, _Manifest]:
            parts = [self._read_data(e, file_schema).select(out_schema.names) for e in m.data if want(e)]
            return (pa.concat_tables(parts) if parts else out_schema.empty_table()), m

        table, m = self._with_retry(run, first)
        for c, values in filters.items():
            if c in PARTITION:
                continue
            has_null = any(x is None for x in values)
            col, value_set = table.column(c), _value_set(c, [x for x in values if x is not None])
            if pa.types.is_floating(col.type):
                # -0.0 is 0.0 (is_in hashes the bits): {"wd": 0.0} missed the -0.0 rows older
                # versions stored, and {"wd": -0.0} every 0.0 row a commit stores now
                col, value_set = pc.add(col, pa.scalar(0.0, col.type)), pc.add(value_set, pa.scalar(0.0, col.type))
            mask = pc.is_in(col, value_set=value_set)
            if has_null:
                mask = pc.or_(pc.fill_null(mask, False), pc.is_null(table.column(c)))
            table = table.filter(pc.fill_null(mask, False))
        return table.select(cols), m

    def to_pandas(self, filters: Filter | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """:meth:`read` as a pandas DataFrame."""
        # on this thread: no Arrow pool workers to abort the process at exit (see _parse_parquet)
        return self.read(filters, columns).to_pandas(use_threads=False)

    def quarantine(self) -> pa.Table:
        """All quarantined rows: source, run_id, reason, raw, payload_hash, quarantined_at. Opens
        the store (:meth:`require`'s refusals) and reads by the manifest that read, as
        :meth:`summary` does: ``store quarantine`` opened it and then listed and read the
        manifests again (a LIST and a GET more on S3)."""
        def run(m: _Manifest) -> pa.Table:
            parts = [self._read_file(e, QUARANTINE_SCHEMA) for e in m.quarantine]
            return pa.concat_tables(parts) if parts else QUARANTINE_SCHEMA.empty_table()
        return self._with_retry(run, self._open())

    def read_state(self, name: str) -> pa.Table | None:
        """A state table written with ``commit(state={name: table})``, or None."""
        def run(m: _Manifest) -> pa.Table | None:
            e = m.state.get(name)
            return None if e is None else self._read_file(e, None)
        return self._with_retry(run)

    def state_names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._load().state if fnmatch.fnmatch(n, pattern))

    def summary(self) -> StoreSummary:
        """Rows per (US task, DS task, protocol, shots), sources, last ingest time."""
        # the manifest opening the store read, where its commit was finished (else read anew):
        # reading it again cost a LIST and a GET more on S3 (the version it read is as good as
        # a later one; a commit landing in between is the next info's)
        opened = self._open()
        # one manifest for the rows, the version, the quarantine and the last commit: a commit
        # between two loads gave one version's number with another's rows
        rows, m = self._snapshot(None, ["source", "run_id", "model_name", *GROUP, "ingested_at"], opened)
        t = rows.to_pandas(use_threads=False)
        if len(t):
            g = (t.assign(shots=t["shots"].astype("Int64"))
                   .groupby(list(GROUP), dropna=False)
                   .agg(rows=("run_id", "size"), runs=("run_id", "nunique"),
                        model_names=("model_name", "nunique")).reset_index())
            s = t.groupby("source").agg(rows=("run_id", "size"), runs=("run_id", "nunique"),
                                        last_ingested_at=("ingested_at", "max")).reset_index()
            last = str(t["ingested_at"].max())
        else:
            g = pd.DataFrame(columns=[*GROUP, "rows", "runs", "model_names"])
            s = pd.DataFrame(columns=["source", "rows", "runs", "last_ingested_at"])
            last = None
        q = sum(int(e.get("rows", 0)) for e in m.quarantine)
        # finished when opened: finished still (finishing never undoes); asked again otherwise
        pending = m is not opened and self._pending(m)
        return StoreSummary(uri=self.uri, version=m.version, rows=len(t), quarantined=q, groups=g, sources=s,
                            last_ingest=last, last_commit=m.log[-1] if m.log else None, pending_finalize=pending)

    # ---- the writers' lock -----------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, timeout_s: float | None = None) -> Iterator[None]:
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        if self._f.local:
            self._f.mkdirs("_meta")
            with _local_lock(self._f.p("_meta/LOCK"), timeout_s, self.uri, self.notify):
                yield
        else:
            lease_s = self.lease_s if self.lease_s is not None else lease_seconds()
            with _lease_lock(self._f.objects(), timeout_s, self.uri, lease_s, self.notify) as beat:
                outer, self._beat = self._beat, beat
                try:
                    yield
                finally:
                    self._beat = outer

    @contextlib.contextmanager
    def removed_unless_committed(self) -> Iterator[None]:
        """While the body runs (an ingest): where the location holds nothing of a store yet (it is
        absent, or a directory without ``_meta`` and ``_staging``), a body that ends without a
        committed version (Ctrl-C, SIGTERM, every source failed) leaves nothing it made: the
        lock file, ``_staging``, ``_meta`` and the directories it had to create for the store
        (:func:`~meta_study.dirs.remove_made_dirs`, the analysis commands' rule for ``--out``).
        They stayed, and ``store info`` called the directory "not a meta-study store".

        Never removed: a file other than the lock file, a directory that was there before or
        holds a file, anything once a version is committed, anything while another writer holds
        the lock. Local stores only (a killed writer's leftovers, and an object store's lease,
        are said by :data:`HALF_MADE`)."""
        made = self._made_if_new()
        try:
            yield
        finally:
            if made is not None:
                self._take_back(made)

    def _made_if_new(self) -> list[str] | None:
        """The directories a first commit here will have made (:func:`missing_dirs`; [] for an
        empty directory that is there), or None where something of a store is there already."""
        if not self._f.local:
            return None
        made = missing_dirs(self._f.root)
        if made:
            return made
        if os.path.isdir(self._f.root) and not os.path.islink(self._f.root) and not any(
                os.path.lexists(self._f.p(rel)) for rel in ("_meta", "_staging")):
            return []
        return None

    def _take_back(self, made: list[str]) -> None:
        """What :meth:`removed_unless_committed` removes, under the lock (not waited for: a writer
        holding it keeps all of it). Its lock file is unlinked while held, last of the files: a
        writer waiting on it then holds an unlinked file's lock, which the commit protocol
        tolerates (two writers believing they hold it cannot damage a store)."""
        try:
            if not os.path.isdir(self._f.p("_meta")):   # no commit began: its empty directories only
                remove_made_dirs(made)
                return
            if self.exists():
                return   # a version committed: every file stays
            with self._lock(timeout_s=0.0):
                if self.exists():
                    return
                for txn in self._f.listdir("_staging"):
                    self._collect_local_staging(txn)   # a staged file of a live writer's stays
                lock = self._f.p("_meta/LOCK")
                for rel in ("_meta", "_staging"):
                    for d, _dirs, files in os.walk(self._f.p(rel)):
                        if any(os.path.join(d, f) != lock for f in files):
                            return   # a file we did not make (a refit's lock, a writer's)
                os.unlink(lock)
                for rel in ("_staging", "_meta"):
                    remove_made_dirs([self._f.p(rel)])
                remove_made_dirs(made)
        except (UserError, OSError):   # another writer holds the lock, or the disk said no: kept
            pass

    def lock_holder(self) -> LockHolder | None:
        """Who holds the writers' lock now (an expired lease included, marked so), or None."""
        if self._f.local:
            return local_holder(self._f.p("_meta/LOCK"))
        return lease_holder(self._f.objects())

    def unlock(self) -> LockHolder | None:
        """Break the writers' lease of an object store (``meta-study store unlock``): returns the
        holder it was taken from, or None if it was free. Safe even if that writer is alive (its
        commit then loses the race for its version and is retried or refused, see the protocol).
        A local store's ``flock`` cannot be stale: the kernel frees it when its holder dies, so
        a held one is a :class:`UserError` naming the live process."""
        if self._f.local:
            holder = local_holder(self._f.p("_meta/LOCK"))
            if holder is not None:
                raise UserError(f"{self.uri}: its lock is held by {holder.describe()}, a live process (a local "
                                "store's lock is freed by the kernel when its holder exits or dies); stop that "
                                "process if it is stuck")
            return None
        return break_lease(self._f.objects())

    # ---- damage ----------------------------------------------------------------------------

    def _inspect(self, m: _Manifest, *, deep: bool, sizes: Mapping[str, int] | None = None) -> list[Damage]:
        """Damaged files of manifest ``m``.

        Shallow (every commit): one listing; each file must exist with the size the manifest
        records. Entries written before sizes were recorded get their Parquet footer read once and
        their size recorded in the next manifest. Deep (``store check``): every file is read
        whole, its sha256 and row count compared, and files that plain readers would read but no
        manifest lists are reported too. ``sizes``: the store's listing, if one was just taken
        (see :meth:`_finalize`)."""
        sizes = self._f.sizes() if sizes is None else sizes
        entries = ([("data", e) for e in m.data] + [("quarantine", e) for e in m.quarantine]
                   + [("state", e) for e in m.state.values()])
        out = []
        for kind, e in entries:
            rel = next((r for r in (e["path"], e.get("staged")) if r and r in sizes), None)
            if rel is None:
                out.append(Damage(e["path"], kind, self._not_a_file(e["path"]) or "missing", int(e.get("rows", 0))))
                continue
            problem = None
            if "bytes" in e and sizes[rel] != e["bytes"]:
                problem = self._not_a_file(rel) or f"{sizes[rel]} bytes, the manifest says {e['bytes']}"
            elif deep or "bytes" not in e:
                problem = self._verify_file(rel, kind, e, deep)
                if problem is None and "bytes" not in e:
                    e["bytes"] = sizes[rel]   # checked once; the next manifest records it
            if problem:
                out.append(Damage(rel, kind, problem, int(e.get("rows", 0))))
        if deep:
            tracked = {r for _, e in entries for r in (e["path"], e.get("staged")) if r}
            tracked.update(m.pending_delete)
            live_dirs, links = _parents(m), {}
            # S3: an object whose key ends in '/' and holds bytes ('up/a/'): pyarrow lists it as a file
            # 'up/a', the name of the partition directory too, so it was "up/a (untracked)", which
            # '--repair' said it set aside and left, the live directory being there (each repair again)
            keys = self._f.object_sizes()
            # (one at a file's path, 'up/a/part-1.parquet/', is that file's damage, "is a directory",
            # while no object has the file's own key; beside the file's object it is a stray object
            # of its own, named and set aside by its key: the intact file is no damage)
            markers = {k for k, n in keys.items() if len(k) > 1 and k.endswith("/") and n > 0 and _plain(k[:-1])
                       and (k[:-1] not in tracked or k[:-1] in keys)}
            for rel in sorted(sizes):
                if f"{rel}/" in markers and rel not in keys:
                    continue   # that object, reported below under its own key
                if rel not in tracked and _plain(rel):
                    link = self._link_above(rel, live_dirs)
                    if link is None:
                        out.append(Damage(rel, "untracked", "not part of the store, but plain readers read it", 0))
                    else:
                        links[link] = links.get(link, 0) + 1
            for link, n in sorted(links.items()):
                # the link is what is set aside, never the files behind it: '--repair' moved a
                # linked directory's files (a user's own, outside the store) into _damaged/
                try:
                    to = f" to {os.readlink(self._f.p(link))}"
                except OSError:   # replaced meanwhile
                    to = ""
                out.append(Damage(link, "untracked", f"a symbolic link{to}, a directory no file of the store is "
                                  f"in; plain readers read its {n} file(s)", 0))
            for rel in sorted(markers):   # '--repair' keeps its bytes at '_damaged/<version>/up/a'
                out.append(Damage(rel, "untracked", f"an object of {keys[rel]} bytes whose key ends in '/': not part "
                                  f"of the store; pyarrow lists it as a file {rel[:-1]!r} and plain readers fail on it", 0))
        return out

    def _link_above(self, rel: str, live_dirs: set[str]) -> str | None:
        """The topmost directory above ``rel`` that is a symbolic link and holds no live file (a
        link to a directory elsewhere: what ``--repair`` sets aside is the link, never the files it
        leads to, which are not the store's); None if there is none (local only; an lstat per level)."""
        if not self._f.local:
            return None
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in live_dirs and os.path.islink(self._f.p(sub)):
                return sub
        return None

    def _not_a_file(self, rel: str) -> str | None:
        """"is a FIFO, not a file" (or a directory, a device) if that is at ``rel``; else None.
        Only for damage already found: it costs a stat."""
        kind = self._f.kind(rel)
        return f"is {kind}, not a file" if kind not in (None, "a file") else None

    def _verify_file(self, rel: str, kind: str, e: Mapping[str, Any], deep: bool) -> str | None:
        schema = {"data": FILE_SCHEMA, "quarantine": QUARANTINE_SCHEMA}.get(kind) if deep else None
        try:
            data = self._f.read_bytes(rel)
            if deep and "sha256" in e and hashlib.sha256(data).hexdigest() != e["sha256"]:
                return "its contents differ from what was written (sha256)"
            if deep:   # whole, with its columns' types and required values
                n = _parse_parquet(data, schema).num_rows
            else:
                n = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        except (NotAFileError, WrongSizeError) as err:
            return _first_line(err)
        except PermissionError:
            raise   # not damage: the OS's one line (as a commit's read says it); '--repair' set sound files aside
        except OSError as err:
            if not self._f.local:
                raise   # an endpoint gone, throttled or refusing the credentials says nothing of the file
            return _first_line(err)   # EIO: a bad sector
        except (pa.ArrowException, ValueError) as err:
            return _first_line(err)
        if n != int(e.get("rows", n)):
            return f"{n} rows, the manifest says {e['rows']}"
        return None

    def _refuse_damage(self, m: _Manifest, sizes: Mapping[str, int] | None = None) -> None:
        """A :class:`StoreDamagedError` if a live file of ``m`` is missing or of another size;
        ``sizes``: a listing of the store taken after ``m`` was finalized, else one is taken."""
        damage = self._inspect(m, deep=False, sizes=sizes)
        if damage:
            raise self._damaged(damage[0].path, damage[0].problem, len(damage) - 1)

    def check(self, *, repair: bool = False) -> CheckResult:
        """Check every file against the manifest (``meta-study store check``).

        With ``repair``, commit a version without the damaged files: they are moved, never
        deleted, to ``_damaged/<version>/``, their rows leave the store, and if rows (data or
        quarantine) were lost every ingest state is dropped so that the next ingest of each source
        reads it whole and restores them. A damaged latest manifest is rewritten from its copy,
        or, without an intact copy, the store goes back to its newest intact manifest (and the
        files that one lacks are repaired as above). Takes the writers' lock; a store that cannot
        be written here is checked without it, and a commit it cannot finish is reported."""
        self._require_exists()
        lock: Any = self._lock()
        try:
            lock.__enter__()
        except (StoreLockedError, LockFileError):
            # a FIFO or a directory where the lock file goes: checked without the lock, the store
            # was "no damage" (exit 0) while every commit to it failed; one line, as each writer says
            raise
        except (OSError, UserError) as e:   # read-only, or a store this install cannot write
            if repair:   # a UserError is one line already (_first_line cut the lock's advice mid-quote)
                why = str(e) if isinstance(e, UserError) else _first_line(e)
                raise UserError(f"{self.uri}: cannot repair the store here: {why}") from None
            lock = None
        try:
            latest = self._manifest_versions()[-1]
            m, problem = self._read_manifest(latest)
            base = m if m is not None else self._newest_intact(latest)
            if base is None:   # nothing to roll back to: a rollback to version 0 would set every file aside
                raise self._unreadable(latest, problem or "damaged")
            damage = [Damage(_mrel(latest), "manifest", f"{problem}; " + ("its copy is intact" if m is not None else
                             f"no intact copy: the newest intact manifest is version {base.version}"), 0)] \
                if problem else []
            blocked, set_aside = None, ()
            if lock is not None and m is not None:
                blocked, set_aside = self._finish(m, set_aside=repair)   # writes a missing copy
                if blocked is not None:
                    damage.append(blocked)
            copy_problem = self._copy_problem(m) if m is not None and not problem else None
            if copy_problem:   # the redundancy a damaged manifest is restored from, lost silently
                damage.append(Damage(_copy_rel(latest), "manifest", f"{copy_problem}; the manifest itself is intact", 0))
            unfinished = lock is None and m is not None and self._pending(m)
            damage += [d for d in self._inspect(base, deep=True) if blocked is None or d.path != blocked.path]
            n_files = len(base.live_files())
            if not repair or not damage:
                return CheckResult(self.uri, latest, n_files, tuple(damage), unfinished=unfinished)
            return self._repair(base, tuple(damage), n_files, latest, restore=m is not None and problem is not None,
                                moved=set_aside)
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)

    def _finish(self, m: _Manifest, *, set_aside: bool) -> tuple[Damage | None, tuple[str, ...]]:
        """Finalize ``m`` and collect garbage, under the lock; if something that is not a directory
        stands where its files go (a file at ``up/a``), the :class:`Damage` naming it: with
        ``set_aside`` it is first moved to ``_damaged/<version>/`` and ``m`` finalized, else ``m``
        stays unfinished (its files still staged, where every read finds them). Set aside under
        ``_damaged/<version + 1>/``, where the repair that follows (it commits that version to
        record it) says it moved it: the second value is where it went (the repair's report said
        "nothing to move" of it)."""
        try:
            self._finalize(m)
            self._collect_garbage(m)
            return None, ()
        except OSError:
            found = self._blocker(m)
            if found is None:
                raise
        rel, kind = found
        d = Damage(rel, "untracked", f"is {kind}, not a directory, where files of version {m.version} go "
                   "(its commit cannot be finished until it is moved aside)", 0)
        if not set_aside:
            return d, ()
        to = self._f.move(rel, f"_damaged/{m.version + 1:010d}/{rel}")
        self._finalize(m)
        self._collect_garbage(m)
        return d, (to,)

    def _blocker(self, m: _Manifest) -> tuple[str, str] | None:
        """(path, what it is) of the first non-directory standing in a directory's place on the
        way of a still-staged file of ``m`` to its place; None if there is none (a stat per
        level, on this error path only)."""
        for e in m.live_files():
            if e.get("staged") and self._f.exists(e["staged"]):
                found = self._f.first_non_directory(os.path.dirname(e["path"]))
                if found is not None and found[0]:
                    return found
        return None

    def _finalize_or_refuse(self, m: _Manifest) -> dict[str, int] | None:
        """:meth:`_finalize` and :meth:`_collect_garbage` of ``m`` before building on it (the
        listing :meth:`_finalize` returns); a path in the way of its files is a one-line
        :class:`StoreDamagedError` naming it (it was an ``[Errno 17] File exists`` from every
        ingest, and nothing said what to do)."""
        try:
            listed = self._finalize(m)
            self._collect_garbage(m)
            return listed
        except OSError:
            found = self._blocker(m)
            if found is None:
                raise
            raise self._damaged(found[0], f"is {found[1]}, not a directory, where files of version {m.version} go "
                                "(its commit cannot be finished)") from None

    def _copy_problem(self, m: _Manifest) -> str | None:
        """What is wrong with the copy of intact manifest ``m`` (damaged, not a file, another
        version's or another commit's), or None if it is sound or absent (a format-1 manifest has
        none; a writer that died before writing it left none, and the next writer writes it)."""
        rel = _copy_rel(m.version)
        try:
            copy = _Manifest.from_json(self._f.read_bytes(rel, limit=MAX_MANIFEST_BYTES), f"{display_path(self.uri, rel)}")
        except FileNotFoundError:
            return None
        except (_CorruptManifest, NotAFileError, WrongSizeError, UserError) as e:
            return f"its copy is damaged: {e}"
        if (copy.version, copy.txn) != (m.version, m.txn):
            return f"its copy is that of another commit (version {copy.version})"
        return None

    def _newest_intact(self, below: int) -> _Manifest | None:
        """The newest intact manifest (or intact copy) older than ``below``; None if there is none."""
        for v in reversed([v for v in self._manifest_versions() if v < below]):
            with contextlib.suppress(FileNotFoundError):
                m, _ = self._read_manifest(v)
                if m is not None:
                    return m
        return None

    def _repair(self, m: _Manifest, damage: tuple[Damage, ...], n_files: int, latest: int, *,
                restore: bool, moved: Sequence[str] = ()) -> CheckResult:
        """Repair under the lock: ``m`` is the manifest to build on (the latest, its copy, or
        the newest intact one when ``m.version < latest``); ``moved``: what was set aside already."""
        rolled_back = m.version < latest
        moved = list(moved)
        for v in (latest, latest + 1):   # before anything changes: it committed, then failed to set aside
            self._f.require_room_aside(f"_damaged/{v:010d}")

        def move(rel: str, to: str) -> None:
            moved.append(self._f.move(rel, to))   # where it went: '<to>.2' if '<to>' was taken

        if not restore and not rolled_back and any(d.path == _copy_rel(latest) for d in damage):
            # the manifest is intact, its copy is not: the copy is written again from it
            rel = _copy_rel(latest)
            if self._f.kind(rel) is not None:
                move(rel, f"_damaged/{latest:010d}/{rel}")   # the bad bytes kept, as everywhere
            self._f.replace_bytes(rel, self._f.read_bytes(_mrel(latest)))
            if all(d.kind == "manifest" for d in damage):
                return CheckResult(self.uri, latest, n_files, damage, repaired_version=latest, moved=tuple(moved))
        reported, damage = damage, tuple(d for d in damage if d.kind != "manifest")
        if restore:   # the latest manifest is damaged, its copy intact: write it back, keep the bad bytes
            aside = f"_damaged/{latest:010d}/{_mrel(latest)}"
            there = self._f.kind(_mrel(latest))
            if there == "a file":   # kept in place until replaced: readers never miss it
                self._f.keep_copy(_mrel(latest), aside)
                moved.append(aside)
            elif there is not None:   # a FIFO, a device or a directory: never opened, moved aside whole
                move(_mrel(latest), aside)
            self._f.replace_bytes(_mrel(latest), self._f.read_bytes(_copy_rel(latest)))
            if not damage:
                return CheckResult(self.uri, latest, n_files, reported, repaired_version=latest, manifest_restored=True,
                                   moved=tuple(moved))
        bad = {d.path for d in damage}
        keep = lambda e: e["path"] not in bad and e.get("staged") not in bad  # noqa: E731
        # rows lost (data or quarantine, or a rollback): drop every ingest state, so that each
        # source's next ingest reads it whole instead of skipping what it believes is stored
        lost_rows = rolled_back or any(d.kind in ("data", "quarantine") for d in damage)
        state = {} if lost_rows else {n: e for n, e in m.state.items() if keep(e)}
        dropped_state = [e["path"] for n, e in m.state.items() if n not in state and keep(e)]
        rows = sum(d.rows for d in damage if d.kind in ("data", "quarantine"))
        now = _now()
        version = latest + 1
        txn = f"{version:010d}-{uuid.uuid4().hex[:12]}"
        # an S3 object 'up/a/' is moved below but not named here: a manifest naming a path that ends in '/'
        # reads as garbled; a repair killed before moving it leaves it, and the next 'store check' says so
        entry = {"version": version, "time": now.isoformat(), "operation": "repair",
                 "set_aside": sorted(r for r in bad if not r.endswith("/")),
                 "rows_dropped": rows, "state_dropped": len(m.state) - len(state)}
        if rolled_back:
            entry.update(rolled_back_from=latest, rolled_back_to=m.version)
        m2 = _Manifest(version=version, data=[e for e in m.data if keep(e)],
                       quarantine=[e for e in m.quarantine if keep(e)], state=state,
                       pending_delete=dropped_state, log=(m.log + [entry])[-KEEP_LOG:], created_at=now.isoformat(),
                       format_version=m.format_version, txn=txn)
        self._publish(m2, txn)
        aside = f"_damaged/{version:010d}"
        live_dirs = _parents(m2)
        for d in damage:
            # (a file in a partition directory's place, set aside by check: the directory there now is the store's;
            # on S3 an object `up/c` can sit beside the directory `up/c/`: it goes, or every repair fixed nothing)
            there = self._f.kind(d.path)   # a link to nothing too
            if d.kind != "manifest" and there is not None and (d.path not in live_dirs or there != "a directory"):
                move(d.path, f"{aside}/{d.path}")
                self._f.prune_empty_dirs(os.path.dirname(d.path))
        if rolled_back:   # the damaged manifests, and files only they listed, go aside too
            # ... and the staging directories of the versions rolled back over: a damaged version whose
            # writer died past its commit point still had its files there (the only copy of its rows),
            # and the next commit's garbage collection deleted them (w <= its version), while the same
            # files already moved into place were kept here, as untracked. Killed meanwhile, whoever
            # finalizes m2 moves the rest (_rolled_over).
            files, txns = self._rolled_over(m2)
            for rel in files:
                move(rel, f"{aside}/{rel}")
            for txn_dir in txns:
                self._f.rmtree(txn_dir)   # empty now
        self._finalize(m2)
        return CheckResult(self.uri, latest, n_files, reported, repaired_version=version, rows_dropped=rows,
                           rolled_back_to=m.version if rolled_back else None, manifest_restored=restore,
                           moved=tuple(moved))

    def check_writable(self) -> None:
        """A one-line :class:`UserError` unless a commit can go here: a store, or an empty or
        absent directory, that can be reached, on a local filesystem or on s3:// with boto3
        installed (other object stores are read only). Ingest calls it before reading sources."""
        if not self._f.local:
            self._check_writable_s3()
            return
        info = self.probe()                # a location that cannot be reached: said here, in its words
        self._require_directory(info)
        if info.type == pafs.FileType.NotFound:
            parent = os.path.dirname(self._f.root)   # the nearest existing parent must be a directory
            while not os.path.lexists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise UserError(f"{self.uri}: cannot create a store there: {parent} is "
                                f"{kind_of_mode(os.lstat(parent).st_mode)}, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):   # else a bare "[Errno 13]", blamed on the input
                raise UserError(f"{self.uri}: cannot create a store there: no write permission on {parent}")
            _refuse_unmakeable(self.uri, parent)
        if info.type == pafs.FileType.Directory and not self.exists():
            self._refuse_lost_manifests()   # a store that lost its manifests is no empty directory
            # (another writer's probe of the same empty directory, or one a killed probe left, is
            # no content: it read "not empty" to the other first ingest, and to every one after)
            others = [n for n in self._f.listdir("") if n not in ("_meta", "_staging") and not n.startswith(PROBE_PREFIX)]
            if others:
                raise UserError(f"{self.uri}: directory is not empty and is not a meta-study store "
                                f"(found {', '.join(others[:3])})")
            if not os.access(self._f.root, os.W_OK | os.X_OK):
                raise UserError(f"{self.uri}: cannot create a store there: no write permission on {self._f.root}")
            _refuse_unmakeable(self.uri, self._f.root)
        elif info.type == pafs.FileType.Directory:
            # a store read-only to this user, refused here, once, before any source is read (the lock
            # refused it after each source had been read): what every commit writes is the lock file
            # (or its directory), a manifest and a staging directory
            lock = "_meta/LOCK" if os.path.lexists(self._f.p("_meta/LOCK")) else "_meta"
            staging = "_staging" if os.path.isdir(self._f.p("_staging")) else ""
            for rel in (lock, "_meta/manifests", staging):
                path = self._f.p(rel)
                mode = os.W_OK if rel == "_meta/LOCK" else os.W_OK | os.X_OK
                # (a symbolic link there is refused by the lock, in its own words)
                if os.path.lexists(path) and not os.path.islink(path) and not os.access(path, mode):
                    raise UserError(f"{self.uri}: cannot write to this store: no write permission on {path} (a "
                                    f"store shared by a group: 'chmod g+w {path}', and a umask such as 002 for "
                                    "every writer)")

    def _check_writable_s3(self) -> None:
        """:meth:`check_writable` on S3 (other object stores: the one-line refusal of
        :meth:`._Files.objects`). One LIST of the manifests where a store is there, plus the
        conditional-write probe once per :class:`Store` (4 requests: the probe's PUTs are what
        refuse credentials that cannot write, and an endpoint that ignores conditional writes).

        It asked pyarrow what is at the root first (:meth:`probe`: a HEAD of the prefix as a key,
        and a LIST of ``prefix/``): 2 requests more per commit. The LIST of the manifests reaches
        the endpoint as well (a missing bucket, refused credentials, no network: one line here,
        in its words, before any source is read), and where it finds a manifest the root is a
        store's directory. Only where none is (a new store) is the root looked at as before: an
        object at the prefix itself (a URI naming a file, mistyped) is refused, and so is a
        non-empty directory that is no store. An object at the key of an existing store's prefix
        is not looked for: no key of the store is that key (its keys all start ``prefix/``)."""
        objs = self._f.objects()
        _ = objs.client   # a store we cannot commit to safely (no boto3) is refused before any work
        try:
            is_store = self.exists()
        except (OSError, pa.ArrowException) as e:
            if isinstance(e, UserError):   # a missing bucket, no credentials: one line already
                raise
            self._f.raise_if_refused(e, "LIST", "_meta/manifests")
            raise UserError(f"{self.uri}: cannot reach store location ({_first_line(_without_location(e))})") from None
        info = None
        if not is_store:
            info = self.probe()
            self._require_directory(info)
        # an endpoint that ignores conditional writes, or credentials that cannot write: refused
        # before any source is read, not at the lease (4 small requests, once)
        objs.require_conditional_writes(LEASE)
        if info is not None and info.type == pafs.FileType.Directory:
            self._refuse_lost_manifests()   # a store that lost its manifests is no empty directory
            others = [n for n in self._f.listdir("") if n not in ("_meta", "_staging")]
            if others:
                raise UserError(f"{self.uri}: directory is not empty and is not a meta-study store "
                                f"(found {', '.join(others[:3])})")

    # ---- committing ------------------------------------------------------------------------

    def _pending(self, m: _Manifest) -> bool:
        """True if ``m``'s commit has not been finalized (files still staged or superseded, or
        files its repair set aside still in place)."""
        return bool(self._still_staged(m) or self._superseded_left(m) or self._not_yet_aside(m))

    def _still_staged(self, m: _Manifest) -> set[str]:
        """The staged paths of ``m``'s live files that are still staged.

        Every command opens the store through this (:meth:`require`): it lists ``_staging`` once,
        and then only the staging directories ``m`` names that are still there (none once a
        commit is finished). Asking for each live file cost 1-2 requests per partition on S3
        (a HEAD and a LIST each: 8 s for 300 partitions on a local S3 server, minutes for
        thousands against AWS)."""
        staged = {e["staged"] for e in m.live_files() if e.get("staged")}
        txns = {rel.split("/")[1] for rel in staged if rel.startswith("_staging/") and rel.count("/") >= 2}
        if not txns:
            return set()
        out: set[str] = set()
        # one LIST of that directory on object stores where one is named (a commit finishing its own
        # version): listing '_staging' first cost a request more, and found the same
        there = txns if len(txns) == 1 and not self._f.local else txns & set(self._f.listdir("_staging"))
        for txn in sorted(there):
            out.update(rel for rel in self._f.sizes(f"_staging/{txn}") if rel in staged)
        return out

    def _superseded_left(self, m: _Manifest, among: Iterable[str] | None = None) -> list[str]:
        """The files ``m``'s commit superseded (or those of them in ``among``) that are still
        there: a ``stat`` each locally, one listing of the store on object stores once there are
        more than a few (a HEAD and a LIST each otherwise); nothing asked, no request."""
        return self._left_of(list(m.pending_delete if among is None else among))[0]

    def _left_of(self, rels: list[str]) -> tuple[list[str], dict[str, int] | None]:
        """:meth:`_superseded_left` of ``rels``, and the listing of the whole store it took (object
        stores, past 3 files; None where it took none), which the damage check that follows reuses."""
        if self._f.local:
            return [rel for rel in rels if os.path.lexists(self._f.p(rel))], None
        if len(rels) <= 3 and self._f.scheme == "s3":
            # an object at the key, as the listing below counts: keys below it ('<file>/x') are no
            # file of the store, and its DELETE leaves them ('store check' names them). Counted, the
            # commit stayed pending: every command after it took the lease to finish it (~23 requests)
            return [rel for rel, size in ((r, self._f.file_size(r)) for r in rels) if size is not None and size >= 0], None
        if len(rels) <= 3:
            return [rel for rel in rels if self._f.exists(rel)], None
        listed = self._f.sizes()
        return [rel for rel in rels if rel in listed], listed

    def _unplaced(self, m: _Manifest) -> set[str]:
        """Staging directories (``_staging/<txn>``) holding a live file of ``m`` that is not also
        in its place (a regular file of the recorded size there): the only copy of its rows, which
        garbage collection must never delete."""
        out = set()
        still = self._still_staged(m)
        for e in m.live_files():
            if e.get("staged") in still:
                size = self._f.file_size(e["path"])
                if size is None or size < 0 or size != e.get("bytes", size):
                    out.add("/".join(e["staged"].split("/")[:2]))
        return out

    def _not_yet_aside(self, m: _Manifest) -> list[str]:
        """Files a repair committed as ``m`` set aside that are still where they were: its writer
        died after the commit point, before moving them to ``_damaged/`` (a damaged data file left
        in its partition is read by plain readers, beside the rows that replaced it)."""
        last = m.log[-1] if m.log else {}
        if last.get("operation") != "repair" or last.get("version") != m.version:
            return []
        live = {r for e in m.live_files() for r in (e["path"], e.get("staged")) if r} | _parents(m)
        out = [rel for rel in last.get("set_aside", ()) if rel not in live and self._f.kind(rel) is not None]
        return out + [rel for rel in self._rolled_over(m)[0] if rel not in out]

    def _rolled_over(self, m: _Manifest) -> tuple[list[str], list[str]]:
        """For a repair committed as ``m`` that rolled back (its log entry says from and to which
        version): the files of the versions it rolled back over that are still in the store (their
        damaged manifests and copies, and the files in their staging directories, the only copy
        of a version whose writer died past its commit point), and those staging directories.
        The repair moves them to ``_damaged/`` after its commit point; a repair killed before it
        had, left them to the next commit, whose garbage collection deleted the staging
        directories (decided versions) and which pruned the manifests later: so whoever finishes
        ``m`` (:meth:`_finalize`) sets them aside first; so are the quarantine and state files no
        manifest lists any more. Four listings, while ``m`` is the latest."""
        last = m.log[-1] if m.log else {}
        lo, hi = last.get("rolled_back_to"), last.get("rolled_back_from")
        if last.get("operation") != "repair" or last.get("version") != m.version or not (
                isinstance(lo, int) and isinstance(hi, int)):
            return [], []
        files = [f"_meta/manifests/{name}" for name in self._f.listdir("_meta/manifests")
                 if lo < ((_manifest_version(name, ".json") or _manifest_version(name, ".copy.json") or 0)) < m.version]
        # decided versions (at most `hi`): no live writer stages in them
        txns = [f"_staging/{t}" for t in self._f.listdir("_staging") if lo < (_txn_version(t) or 0) <= hi]
        for d in txns:
            files += sorted(self._f.sizes(d))   # file by file: the repair's report lists files
        # the quarantine and state files only the rolled-back versions listed (in no manifest now):
        # a repair killed before moving them left them in _quarantine/ and _state/ for good, and
        # no command, 'store check' included, ever said so (plain readers skip them)
        live = {r for e in m.live_files() for r in (e["path"], e.get("staged")) if r} | set(m.pending_delete)
        for d in ("_quarantine", "_state"):
            files += [f"{d}/{name}" for name in self._f.listdir(d) if f"{d}/{name}" not in live]
        return files, txns

    def _finalize(self, m: _Manifest) -> dict[str, int] | None:
        """Roll a committed manifest forward: staged files into place, superseded files away.
        Returns the listing of the whole store it took once its files were in place (object stores,
        more than 3 superseded files left to look for), else None: :meth:`_begin`'s damage check
        reuses it (it listed the whole store again, ceil(objects / 1,000) LIST requests, at once).

        Partition by partition: a new file is moved in and the file it supersedes (same
        partition) is unlinked right after, so a plain reader listing the store meanwhile sees
        each partition old or new (both for the microseconds between the rename and the unlink),
        never both for the whole finalize. Two writers may finalize one version at once (object
        stores, a lease that expired under a paused writer): each step is idempotent.

        On S3 a move is a copy, then the staged key's delete: that delete and the superseded
        files' go in one DeleteObjects per partition, after the copy landed (each key is one the
        protocol may delete from then on: the staged file has its copy in place, the superseded
        ones are replaced), and those the loop left in one more: 5 requests less for a commit
        rewriting 5 partitions (a DELETE of each staged and of each superseded file before)."""
        from ._files import partition_key

        superseded: dict[str, list[str]] = {}
        for rel in m.pending_delete:
            superseded.setdefault(partition_key(rel), []).append(rel)
        still = self._still_staged(m)
        batch = self._f.scheme == "s3"   # see above; elsewhere a rename and an unlink each
        first = True
        for e in m.live_files():
            staged = e.get("staged")
            if staged not in still:
                continue   # moved already (or never staged)
            size = self._f.file_size(e["path"])   # None: nothing there, the usual case
            if size is not None and size == e.get("bytes", size) and size >= 0:
                continue   # its copy landed (S3: copy, then delete) and the staged one is a duplicate
            if size is not None:
                # a directory, a FIFO or a file of another size in its place: set aside, never
                # deleted and never counted as the file (garbage collection then deleted the only
                # copy of its rows, staged)
                self._f.move(e["path"], f"_damaged/{m.version:010d}/{e['path']}")
            if isinstance(e.get("bytes"), int):
                self._f.expect_size(staged, e["bytes"])   # on S3 no HEAD of the staged file before its copy
            gone: list[str] = []   # S3: the staged key, once its copy is in place
            if batch:
                self._f.move(staged, e["path"], delete_later=gone)
            else:
                self._f.move(staged, e["path"])
            if first:
                _failpoint("mid_finalize")   # the new file in place, the one it supersedes still there
                first = False
            self._discard_all(gone + superseded.pop(partition_key(e["path"]), []), m.version)
        # only those the loop left: asking again for files it just deleted cost a HEAD and a LIST
        # each on S3 (a listing of the whole store past 3 partitions) in every commit. Their names
        # are never written again (part-<version>-<random>), so none can be back meanwhile.
        left, listed = self._left_of([r for rels in superseded.values() for r in rels])
        self._discard_all(left, m.version)
        for rel in self._not_yet_aside(m):   # a repair whose writer died after its commit point
            self._f.move(rel, f"_damaged/{m.version:010d}/{rel}")
            self._f.prune_empty_dirs(os.path.dirname(rel))
        if m.version and m.format_version >= 2 and not self._copy_there(m, listed):
            self._f.replace_bytes(_copy_rel(m.version), m.to_json())   # its writer died before writing it
        return listed

    def _copy_there(self, m: _Manifest, listed: Mapping[str, int] | None) -> bool:
        """Whether ``m``'s manifest copy exists: known without a request where this store's
        :meth:`_publish` wrote it (or found it there) or the listing of the whole store that
        :meth:`_finalize` just took (under the lock) holds it; else one ``stat`` or HEAD."""
        if self._copy_known == (m.version, m.txn):
            return True
        if listed is not None:
            return _copy_rel(m.version) in listed
        return self._f.exists(_copy_rel(m.version))

    def _discard_all(self, rels: list[str], version: int) -> None:
        """:meth:`_discard` each of ``rels`` (and prune the directories they leave empty, local);
        on S3 in one DeleteObjects per 1,000 keys (a DELETE for a single one)."""
        if self._f.scheme == "s3":
            self._f.delete_files(rels)
            return
        for rel in rels:
            self._discard(rel, version)
            self._f.prune_empty_dirs(os.path.dirname(rel))

    def _discard(self, rel: str, version: int) -> None:
        """Delete a file the store no longer needs (superseded, or a pruned manifest). A directory
        at its name is set aside under ``_damaged/<version>/``, never deleted (it is no file of
        the store's): ``unlink`` failed on it (EISDIR), and so did every later commit, and the
        repair, each finishing the same version first. On S3 a DELETE never fails for keys below
        ``rel/`` (it leaves them): any failure is the request's own."""
        try:
            self._f.delete(rel)
        except OSError:
            if self._f.scheme == "s3" or self._f.kind(rel) != "a directory":
                raise
            self._f.move(rel, f"_damaged/{version:010d}/{rel}")

    @contextlib.contextmanager
    def _claimed(self, m: _Manifest, txn: str) -> Iterator[None]:
        """Hold this transaction's staging directory, locally, with an ``flock`` of its own while
        the transaction runs (the kernel frees it when this process dies), so that a garbage
        collection deletes it only once its writer is gone, even when another process believes it
        holds the store's lock too (the lock file deleted or replaced while held, an NFS mount
        without working locks): it deleted every staging directory, and this writer then published
        a version naming files that were gone, deleting the files they superseded. Nothing on
        object stores (their garbage rule needs no liveness)."""
        if not self._f.local:
            yield
            return
        import fcntl

        rel = f"_staging/{txn}"
        fd = None
        try:
            for _ in range(10):   # a collection that took it between our mkdir and our flock: again
                self._f.mkdirs(rel)
                fd = os.open(self._f.p(rel), os.O_RDONLY | os.O_DIRECTORY)
                fcntl.flock(fd, fcntl.LOCK_EX)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(self._f.p(rel)).st_ino == os.fstat(fd).st_ino:
                        break
                os.close(fd)
                fd = None
            else:
                raise OSError(f"{display_path(self.uri, rel)}: its staging directory kept being deleted by another process")
        except BaseException as e:
            if fd is not None:
                os.close(fd)
            raise self._roll_back(m, txn, e) from None
        try:
            yield
        finally:
            os.close(fd)

    def _collect_local_staging(self, txn: str) -> None:
        """Delete a local staging directory unless its writer still holds it (:meth:`_claimed`);
        the probing ``flock`` is held while deleting, so its writer cannot claim it meanwhile."""
        import fcntl

        try:
            fd = os.open(self._f.p(f"_staging/{txn}"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:   # gone, or nothing we can open: no writer holds it
            self._f.rmtree(f"_staging/{txn}")
            if self._f.kind(f"_staging/{txn}") not in (None, "a directory"):
                self._f.delete(f"_staging/{txn}")   # a socket someone put there (a directory we may not
            return                                  # read stays: unlinking it failed every commit, EISDIR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return   # a live writer's transaction
            except OSError:
                pass
            self._f.rmtree(f"_staging/{txn}")
            if self._f.kind(f"_staging/{txn}") not in (None, "a directory"):
                self._f.delete(f"_staging/{txn}")   # a file or FIFO someone put there
        finally:
            os.close(fd)

    def _collect_garbage(self, m: _Manifest, keep_txn: str | None = None) -> None:
        """Delete leftovers, never the files of a commit that may still succeed (module docstring):
        staging directories of decided versions (locally, under ``flock``, also those whose writer is gone), manifests
        older than the last :data:`KEEP_MANIFESTS`, temporary manifests (local)."""
        exclusive = self._f.local
        unplaced: set[str] | None = None
        for txn in self._f.listdir("_staging"):
            w = _txn_version(txn)
            if txn == keep_txn:
                continue
            if w is not None and w <= m.version:
                if unplaced is None:   # only while staging directories of decided versions are left
                    unplaced = self._unplaced(m)
                if f"_staging/{txn}" in unplaced:
                    continue   # holds the only copy of a live file: finalizing it failed, and is retried
                self._f.rmtree(f"_staging/{txn}")
            elif exclusive:   # under flock: every one whose writer is gone (a live one holds its own)
                self._collect_local_staging(txn)
        # the listing _publish took of the version it just published (under the lock, moments ago;
        # a LIST per commit on object stores): a manifest published since is newer, so an older
        # listing never prunes more than a fresh one would
        seen, self._versions_seen = self._versions_seen, None
        versions = seen[1] if seen is not None and seen[0] == m.version else self._manifest_versions()
        if self._f.scheme == "s3" and versions[:-KEEP_MANIFESTS]:
            # one DeleteObjects for every pruned manifest and copy (2 DELETEs a commit, a HEAD before
            # each). Its order does not matter: a copy left without its manifest (a writer that died
            # meanwhile) is older than the manifests kept, and taken for none (_manifest_versions)
            self._f.objects().delete_many([r for v in versions[:-KEEP_MANIFESTS] for r in (_mrel(v), _copy_rel(v))])
            versions = []
        for v in versions[:-KEEP_MANIFESTS]:
            self._discard(_mrel(v), m.version)
            self._discard(_copy_rel(v), m.version)
        if exclusive:
            for name in self._f.listdir("_meta/manifests"):
                if name.startswith(".tmp-"):   # a directory there is set aside (unlink failed every commit)
                    self._discard(f"_meta/manifests/{name}", m.version)

    def recover(self) -> None:
        """Finish an interrupted commit and clear leftovers of aborted ones. Takes the lock. A
        location without a store is a one-line :class:`UserError`."""
        # before the lock, which creates _meta/LOCK: a mistyped path was made into directories
        self._require_exists(half_made=True)
        with self._lock():
            self._finalize_or_refuse(self._load())

    def _begin(self, now: _dt.datetime) -> _Manifest:
        """Step 1 of every commit, under the lock: the manifest to build on."""
        self._loaded_by = None
        m = self._load()
        # garbage collection's pruning (in _finalize_or_refuse) reads the listing m was loaded by,
        # taken under the lock moments before: it listed the manifests again (a LIST per commit on
        # S3). A manifest published since by a writer past its lease is newer, so this listing
        # never prunes more than a fresh one would (see _collect_garbage); unless finalizing m
        # moves manifests aside itself (a repair that rolled back, see _rolled_over): listed again
        listed, self._loaded_by = self._loaded_by, None
        if listed is not None and listed[1][-1:] == [m.version] and "rolled_back_from" not in (m.log[-1] if m.log else {}):
            self._versions_seen = listed
        # roll forward an interrupted commit before building on it, and never build on a damaged
        # version: the listing finalizing took (its files in place; garbage collection deletes no
        # live file's only copy) is the one the damage check reads, not a second of the whole store
        try:
            self._refuse_damage(m, self._finalize_or_refuse(m))
        finally:
            self._versions_seen = None   # read by this collection only (a failed finalize skips it)
        if m.version and m.format_version < FORMAT_VERSION:
            txn = f"{m.version + 1:010d}-{uuid.uuid4().hex[:12]}"
            with self._claimed(m, txn):
                try:
                    plan = _Plan(self._v, m, txn, now)
                    n = plan.upgrade_layout()
                except BaseException as e:
                    raise self._roll_back(m, txn, e) from None
                self._commit_plan(m, txn, plan, {"rewritten": n}, 0, "upgrade", {"format_version": FORMAT_VERSION},
                                  now)
            m = self._load()
        return m

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
        settle_quarantine: Iterable[tuple[str, str]] = (),
    ) -> CommitResult:
        """Upsert rows, delete runs, add quarantined rows and replace state tables, atomically.

        Args:
            upserts: canonical rows (see :func:`meta_study.validation.validate`). Keys must be unique
                within the batch. A row whose key exists replaces the stored row if any value
                other than ``ingested_at`` differs, and is skipped otherwise.
            delete_runs: ``(source, run_id)`` pairs whose rows are removed.
            quarantine: rows with ``source, run_id, reason, raw``; already-quarantined payloads
                (same source, reason and raw) are not added again.
            state: named tables that replace the previous table of that name.
            operation, info: recorded in the commit log.
            settle_quarantine: ``(source, run_id)`` of runs read again: their quarantined rows
                that ``quarantine`` does not hold again are dropped (deleted runs' too).

        Returns:
            A :class:`CommitResult`; ``version`` is None if nothing changed (nothing written).
            If another writer published the version this commit was built for first (possible
            on object stores only, when a lease expired under a paused writer or was broken),
            the commit is merged again on top of it, up to :data:`COMMIT_ATTEMPTS` times.
            Rows are stored as :func:`~meta_study.validation.conform` makes them (an unknown-time
            placeholder is null); rows that end before they start are stored as given and counted
            in ``ends_before_start``.
        """
        now = now or _now()
        _require_types(upserts, quarantine, state)
        new = conform(upserts, ingested_at=now) if upserts is not None and upserts.num_rows else None
        ends = ends_before_start(new) if new is not None else None
        if new is not None:
            require_partitions(new)
            # distinct keys counted in Arrow, on this thread (nulls equal nulls, as key strings have
            # them): a Python string per row and a set of them cost ~0.3 s per 500k rows, this ~0.1 s
            if new.select(list(KEY)).group_by(list(KEY), use_threads=False).aggregate([]).num_rows != new.num_rows:
                raise ValueError("duplicate keys within one commit; deduplicate first (see validation.dedupe_keys)")
        q_new = _quarantine_table(quarantine, now) if quarantine is not None and len(quarantine) else None
        # read once: a commit merged again after losing its version (below) reads them again, and a
        # generator was empty then (the runs read again kept their quarantined rows)
        delete_runs = _run_pairs("delete_runs", delete_runs)
        settle = _run_pairs("settle_quarantine", settle_quarantine) + delete_runs

        self.check_writable()
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self._lock():
                    m = self._begin(now)
                    txn = f"{m.version + 1:010d}-{uuid.uuid4().hex[:12]}"
                    with self._claimed(m, txn):
                        try:
                            plan = _Plan(self._v, m, txn, now)
                            counts = plan.merge_data(new, delete_runs)
                            plan.settle_quarantine(settle, q_new)
                            n_q = plan.add_quarantine(q_new)
                            plan.replace_state(state or {})
                        except BaseException as e:
                            raise self._roll_back(m, txn, e) from None
                        return dataclasses.replace(self._commit_plan(m, txn, plan, counts, n_q, operation, info, now),
                                                   ends_before_start=ends)
            except StoreConflictError as e:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                if self.notify is not None:
                    self.notify(f"{e}; merging again on top of it (attempt {attempt + 1} of {COMMIT_ATTEMPTS})")
        raise AssertionError("unreachable")

    def commit_stream(
        self,
        batches: Iterable[tuple[pa.Table | None, pd.DataFrame | None]],
        *,
        quarantine: pd.DataFrame | None = None,
        state: Mapping[str, pa.Table] | None = None,
        operation: str = "write",
        info: Mapping[str, Any] | None = None,
        now: _dt.datetime | None = None,
        settle_quarantine: Callable[[], Iterable[tuple[str, str]]] | Iterable[tuple[str, str]] = (),
    ) -> CommitResult:
        """:meth:`commit` of any number of batches as **one** transaction, in bounded memory.

        Each batch is ``(validated rows, rejected rows)``. While the batches arrive, each one's
        rows are split by partition and spilled to Parquet under the commit's staging directory
        (invisible to every reader, removed on any failure); then each touched partition is
        merged on its own: its spilled rows are read back, :func:`~meta_study.validation.dedupe_keys`
        collapses keys repeated across batches (conflicts go to the quarantine), and the partition is upserted as
        :meth:`commit` does. Peak memory is one batch plus one partition, whatever the total.
        The batches are consumed once, so losing the race for a version (see :meth:`commit`)
        is a one-line :class:`StoreConflictError`: nothing was committed, run it again.
        ``settle_quarantine`` as :meth:`commit`'s, or a callable giving it once the batches are read.
        """
        now = now or _now()
        self.check_writable()
        with self._lock():
            m = self._begin(now)
            txn = f"{m.version + 1:010d}-{uuid.uuid4().hex[:12]}"
            with self._claimed(m, txn):
                return self._commit_batches(m, txn, batches, quarantine, state, operation, info, now,
                                            settle_quarantine)

    def _commit_batches(self, m: _Manifest, txn: str, batches: Iterable[tuple[pa.Table | None, pd.DataFrame | None]],
                        quarantine: pd.DataFrame | None, state: Mapping[str, pa.Table] | None, operation: str,
                        info: Mapping[str, Any] | None, now: _dt.datetime,
                        settle_quarantine: Callable[[], Iterable[tuple[str, str]]] | Iterable[tuple[str, str]] = (),
                        ) -> CommitResult:
        """:meth:`commit_stream` under the lock, in its claimed transaction ``txn``."""
        try:
            spilled: dict[tuple[str, str], list[str]] = {}
            rejected = [quarantine] if quarantine is not None and len(quarantine) else []
            ends: tuple[int, str] | None = None   # rows that end before they start, over the batches
            for i, (table, rej) in enumerate(batches):
                if rej is not None and len(rej):
                    rejected.append(rej)
                if table is None or not table.num_rows:
                    continue
                table = conform(table, ingested_at=now)
                here = ends_before_start(table)
                if here is not None:
                    ends = (here[0] + (ends[0] if ends else 0), ends[1] if ends else here[1])
                for part, rows in _by_partition(table):
                    rel = f"_staging/{txn}/spill/{hashlib.sha1(repr(part).encode()).hexdigest()[:16]}-{i:06d}.parquet"
                    self._f.write_bytes(rel, _table_bytes(rows))
                    spilled.setdefault(part, []).append(rel)
            plan = _Plan(self._v, m, txn, now)
            counts = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "rewritten": 0}
            collapsed = 0
            for part in sorted(spilled):
                new = pa.concat_tables([_parse_parquet(self._f.read_bytes(r), SCHEMA) for r in spilled[part]])
                before = new.num_rows
                new, conflicts = dedupe_keys(new)
                collapsed += before - new.num_rows - len(conflicts)
                if len(conflicts):
                    rejected.append(conflicts)
                for k, v in plan.merge_data(new, ()).items():
                    counts[k] += v
                for r in spilled.pop(part):
                    self._f.delete(r)   # staged data only: the disk holds one copy at a time
            q = pd.concat(rejected, ignore_index=True) if rejected else None
            q_new = _quarantine_table(q, now) if q is not None and len(q) else None
            plan.settle_quarantine(settle_quarantine() if callable(settle_quarantine) else settle_quarantine, q_new)
            n_q = plan.add_quarantine(q_new)
            plan.replace_state(state or {})
        except BaseException as e:
            raise self._roll_back(m, txn, e) from None
        return dataclasses.replace(self._commit_plan(m, txn, plan, counts, n_q, operation, info, now), collapsed=collapsed,
                                   ends_before_start=ends)

    def _commit_plan(self, m: _Manifest, txn: str, plan: _Plan, counts: Mapping[str, int], n_q: int, operation: str,
                     info: Mapping[str, Any] | None, now: _dt.datetime) -> CommitResult:
        """The end every commit shares, under the lock: no version when nothing changed; else
        publish the next manifest (the commit point; a failure before it rolls back), then
        finalize and drop the staging directory."""
        try:
            if not plan.changed:
                self._f.rmtree(f"_staging/{txn}")
                return CommitResult(version=None, unchanged=counts.get("unchanged", 0))
            entry = {"version": m.version + 1, "time": now.isoformat(), "operation": operation,
                     **counts, "quarantined": n_q, **dict(info or {})}
            m2 = plan.manifest(entry)
            self._f.sync_dirs([f"_staging/{txn}"], tree=True)   # the staged names, before a manifest names them
            _failpoint("before_publish")   # also META_STUDY_FAILPOINT=stall_before_publish
            self._publish(m2, txn)
        except BaseException as e:
            raise self._roll_back(m, txn, e) from None
        _failpoint("after_publish")
        try:
            self._finalize(m2)
            self._f.rmtree(f"_staging/{txn}")
            self._collect_garbage(m2)   # object stores: staging dirs of writers that lost this version
        except (OSError, pa.ArrowException) as e:
            # past the commit point the version is stored: reporting the commit as failed would make
            # its caller say "FAILED" of rows that are in the store (and retry them as new). What is
            # left is what a writer killed here leaves, and the next command finishes it.
            if self.notify is not None:
                self.notify(f"{self.uri}: version {m2.version} is committed, but moving its files into place "
                            f"failed ({_first_line(_inside(e, self.uri))}); the next command that opens the store finishes it")
        return CommitResult(version=m2.version, inserted=counts.get("inserted", 0), updated=counts.get("updated", 0),
                            unchanged=counts.get("unchanged", 0), deleted=counts.get("deleted", 0), quarantined=n_q,
                            partitions_written=plan.partitions_written, rewritten=counts.get("rewritten", 0))

    def _published_by(self, version: int) -> str | None:
        """The transaction that published ``version``, "" if unknown, None if it is not published."""
        if version not in self._manifest_versions():
            return None
        try:
            m, _ = self._read_manifest(version)
        except FileNotFoundError:
            return None
        return m.txn if m is not None else ""

    def _roll_back(self, m: _Manifest, txn: str, e: BaseException) -> BaseException:
        """What a commit that failed before its commit point raises, after removing its own
        staged files at once (a full disk must not stay full of them until the next writer
        comes). Only this transaction's files: never another writer's."""
        try:
            by = self._published_by(m.version + 1)
        except (OSError, UserError, pa.ArrowException):
            # cannot tell (the store is unreachable): the conditional write may have landed with
            # its reply lost, and then the staged files are the new version's data. Kept: the next
            # writer finalizes that version if it is published, and its garbage collection removes
            # them if it is not (staging of versions at or below the latest).
            return e
        if by == txn:
            return e  # committed after all (a reply lost after the write): its staged files are the new version's data
        if isinstance(e, _Withdrawn):
            return e  # staged files kept: a writer that took over may be moving them (collected once decided)
        self._f.rmtree(f"_staging/{txn}")
        self._f.delete(f"_meta/manifests/.tmp-{txn}")
        if by is not None:   # another writer won the race for this version
            return StoreConflictError(f"{self.uri}: version {m.version + 1} was committed by another writer while this "
                                      "commit was being prepared (this writer's lease expired or was broken); nothing "
                                      "of this commit was stored")
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
        """The commit point: create ``m``'s manifest only if no writer has (module docstring),
        then its copy. A :class:`StoreConflictError` if another writer published that version.

        On S3, first the lease: a writer whose lease was lost (broken by ``store unlock``, or
        taken over while it was stalled past it) published a version while another writer held
        the lease, since ``beat.lost`` was never read and a beat comes only every quarter lease.
        :meth:`~._lock._Heartbeat.confirm` (one GET) raises :class:`~._lock.LeaseLostError`, a
        conflict: :meth:`commit` takes the lease again and merges again."""
        if self._beat is not None:
            self._beat.confirm(self.uri)
        try:
            created = self._f.create_exclusive(_mrel(m.version), m.to_json(), f"_meta/manifests/.tmp-{txn}")
        except OSError:
            # the write may have landed with its reply lost (a read timeout or a 5xx on the last
            # of the client's retries): then the version is stored, and is ours to finish
            try:
                ours = self._published_by(m.version) == txn
            except (OSError, UserError, pa.ArrowException):
                ours = False
            if not ours:
                raise
            created = True
        if (not created
                # the name is taken, by this very write if its reply was lost and the client's
                # retry got 412 (S3 clients retry a PUT whose reply timed out): then it is ours
                and self._published_by(m.version) != txn):
            raise StoreConflictError(f"{self.uri}: version {m.version} was committed by another writer first")
        self._refuse_a_pruned_name(m)
        with contextlib.suppress(OSError):   # redundancy only: finalize writes it if this fails
            # only if absent: a copy already there may be the one record of a version whose
            # manifest was lost (it is never overwritten; 'store check' compares the two)
            self._f.create_exclusive(_copy_rel(m.version), m.to_json(), f"_meta/manifests/.tmp-copy-{txn}")
            self._copy_known = (m.version, m.txn)   # written, or there already


    def _refuse_a_pruned_name(self, m: _Manifest) -> None:
        """Undo a manifest whose name was free only because pruning had freed it, before it is
        finalized.

        The commit point refuses a version name another writer has taken, but pruning deletes
        manifests older than the last :data:`KEEP_MANIFESTS`. A writer that stalled past its S3
        lease (a paused VM, a sleeping laptop) while another made 21 commits found its version's
        name free again and published it; finalizing it then deleted files it replaced, which
        the latest version still used: every read failed until a repair dropped those rows.
        A newer manifest that is a successor of this one (another writer took over the lease and
        built on it, within this very moment) records this commit's log entry; a pruned name's
        successors record another. Cost: one listing and, only when a newer version exists, one
        manifest read.

        When the listing or the read fails, nothing says the name was not a pruned one, and
        finalizing would then delete files the latest version uses: the commit is withdrawn
        (fail closed). Withdrawing a commit that was in fact the latest loses nothing: its rows
        are merged again (:meth:`commit`) or the one line says to run it again. The staged files
        stay either way (a writer that took over may be finalizing them); garbage collection
        removes them once the version is decided."""
        newer: list[int] = []
        latest: _Manifest | None = None
        doubt: str | None = None
        for _ in range(3):   # the newest pruned between the listing and the read: list again
            try:
                versions = self._manifest_versions()
                newer = [v for v in versions if v > m.version]
                if not newer:
                    self._versions_seen = (m.version, versions)   # garbage collection's pruning reads it
                    return
                latest, _ = self._read_manifest(newer[-1])
                break
            except FileNotFoundError:
                continue
            except (OSError, UserError, pa.ArrowException) as e:
                doubt = _first_line(e)
                break
        else:
            doubt = "the newest manifest was pruned under each of 3 reads"
        if doubt is None:
            ours = json.loads(json.dumps(m.log[-1], default=str)) if m.log else None
            theirs = next((e for e in (latest.log if latest is not None else []) if e.get("version") == m.version), None)
            if theirs == ours:
                return
        try:
            self._f.delete(_mrel(m.version))
            withdrawn = True
        except OSError:
            withdrawn = False
        if doubt is None:
            why = (f"this writer stalled past its lease while others committed up to version {newer[-1]}; its "
                   f"version {m.version}")
        else:
            why = (f"after publishing version {m.version}, listing the store's manifests failed ({doubt}), so "
                   "nothing showed that its name had not been freed by pruning (a writer stalled past its lease); "
                   "it")
        if withdrawn:
            raise _Withdrawn(f"{self.uri}: {why} was withdrawn before taking effect, and nothing of this commit "
                             "was stored (run it again)")
        raise _Withdrawn(f"{self.uri}: {why} could not be withdrawn either ({display_path(self.uri, _mrel(m.version))}); it was "
                         "not finalized: the next command that opens the store finishes it if it is the latest "
                         "version (run this one again: rows stored twice are stored once)")


class _Withdrawn(StoreConflictError):
    """A commit this writer published and then withdrew before finalizing it, because its version's
    name may have been one that pruning freed (:meth:`Store._refuse_a_pruned_name`)."""


def _parents(m: _Manifest) -> set[str]:
    """Every directory above a live file of ``m`` (``up``, ``up/a``, ``_staging/<txn>``, ...)."""
    out = set()
    for e in m.live_files():
        for rel in (e["path"], e.get("staged")):
            parts = rel.split("/")[:-1] if rel else []
            out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _require_types(upserts: Any, quarantine: Any, state: Any) -> None:
    """A ``TypeError`` naming the argument of :meth:`Store.commit` given as another type (rows as a
    pandas DataFrame were "'DataFrame' object has no attribute 'num_rows'")."""
    if upserts is not None and not isinstance(upserts, pa.Table):
        raise TypeError(f"upserts: a pyarrow Table of validated rows (meta_study.validation.validate(df).table), "
                        f"not a {type(upserts).__name__}")
    if quarantine is not None and not isinstance(quarantine, (pd.DataFrame, pa.Table)):
        raise TypeError(f"quarantine: a pandas DataFrame or pyarrow Table with source, run_id, reason, raw, "
                        f"not a {type(quarantine).__name__}")
    if state is not None:
        bad = next((n for n, t in dict(state).items() if not isinstance(t, pa.Table)), None)
        if bad is not None:
            raise TypeError(f"state[{bad!r}]: a pyarrow Table, not a {type(state[bad]).__name__}")


def _run_pairs(name: str, pairs: Iterable[Any]) -> list[tuple[Any, Any]]:
    """``delete_runs`` (or ``settle_quarantine``) as a list of ``(source, run_id)`` pairs; a
    ``ValueError`` naming the argument for anything else. One pair given bare
    (``delete_runs=("s1", "r1")``) was unpacked string by string: run "1" of sources "s" and "r"
    were deleted, silently, and the run meant kept its rows."""
    if isinstance(pairs, (str, bytes)):
        raise ValueError(f"{name}: {pairs!r} is not a list of (source, run_id) pairs")
    out = []
    for p in pairs:
        if isinstance(p, (str, bytes, Mapping)) or not isinstance(p, Iterable) or len(p := tuple(p)) != 2:
            raise ValueError(f"{name}: {p!r} is not a (source, run_id) pair; give a list of such pairs, "
                             "e.g. [(\"src\", \"run-1\")]")
        # keys are compared as text (keys.key_of): a run id 7.0 (a column read through pandas) or
        # True was keyed "7.0" / "True" and matched nothing, silently
        bad = next((v for v in p if v is not None and (isinstance(v, (bool, np.bool_))
                                                       or not isinstance(v, (str, int, np.integer)))), None)
        if bad is not None:
            raise ValueError(f"{name}: {p!r}: {bad!r} is {type(bad).__name__}; sources and run ids are text "
                             "(or integers)")
        out.append(p)
    return out


#: The text columns, whose values a commit stores as :func:`~meta_study.validation.canonical_name` makes them.
_NAME_COLUMNS = frozenset(f.name for f in SCHEMA if pa.types.is_string(f.type))


def _filter_values(v: Any, named: bool = False) -> list[Any]:
    """A filter's values: any collection but a string (a list, a set, a NumPy array, a pandas
    Series: only lists, tuples and sets were, and an array of run ids failed in Arrow or, for a
    task, matched by NumPy's truth rules), else the one value. pandas' missing values (NaN, NA,
    NaT: a column read back with ``to_pandas`` holds them for nulls, e.g. ``shots``) are None,
    which matches nulls; they failed in Arrow ("Could not convert nan ... to int32")."""
    values = [v] if isinstance(v, (str, bytes)) or not isinstance(v, Iterable) else list(v)
    if named:   # ``named``: a name column's filter, its text as a commit stores it
        values = [canonical_name(x) if isinstance(x, str) else x for x in values]
    # a datetime64[ns]'s .item() is an int (nanoseconds), which Arrow took for microseconds
    return [None if _is_missing(x) else pd.Timestamp(x) if isinstance(x, np.datetime64) else
            x.item() if isinstance(x, np.generic) else x for x in values]


def _is_missing(x: Any) -> bool:
    """None, NaN, NA or NaT (a few type checks per value)."""
    if x is None or x is pd.NA or x is pd.NaT:
        return True
    if isinstance(x, (float, np.floating)):
        return bool(x != x)
    return isinstance(x, (np.datetime64, np.timedelta64)) and bool(np.isnat(x))


def _value_set(column: str, values: list[Any]) -> pa.Array:
    """A filter's values as an array of ``column``'s type. A value that is not one of that type
    (``"five"`` or ``5.5`` for ``shots``) is a one-line :class:`UserError`: pyarrow truncates a
    float converted to an integer type, so ``{"shots": 5.5}`` read the 5-shot rows."""
    typ = SCHEMA.field(column).type
    if pa.types.is_map(typ):   # Arrow has no is_in for maps: it escaped as ArrowNotImplementedError
        raise UserError(f"filter on {column}: a {typ} column cannot be filtered on; read it and select the rows")
    if pa.types.is_integer(typ):   # one isinstance per value
        bad = next((x for x in values if isinstance(x, float) and not x.is_integer()), None)
        if bad is not None:
            raise UserError(f"filter on {column}: {bad!r} is not an integer, as every value of {column} is ({typ})")
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise UserError(f"filter on {column}: {_first_line(e)} ({column} holds {typ})") from None


def _plain(rel: str) -> bool:
    """True for a path plain Parquet readers read: none of its components starts with '_' or '.'."""
    return not any(c.startswith(("_", ".")) for c in rel.split("/"))


#: What a location is whose first commit never landed (``_meta`` without a manifest), said by every
#: command that opens it: "not a meta-study store" read as a mistyped path.
HALF_MADE = "a store whose first ingest did not finish (no version committed): ingest into it again, or delete it"


#: The name :func:`_refuse_unmakeable` gives the directory it makes and removes at once.
PROBE_PREFIX = ".meta-study-probe-"


def _refuse_unmakeable(uri: str, parent: str) -> None:
    """A one-line :class:`UserError` unless a directory can be made in ``parent`` (one made and
    removed at once, a ``.meta-study-probe-*`` name). ``os.access`` says yes to root everywhere:
    on /sys or /proc, or in an immutable directory, ingest then failed at the first source,
    "glue.csv: FAILED: PermissionError: [Errno 1] Operation not permitted: '/sys/kernel/foo'", which
    blamed the input, and refit exited 1 with a bare "[Errno 2]" naming no option."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=parent))
    except OSError as e:
        raise UserError(f"{uri}: cannot create a store there: {parent} refuses a new directory "
                        f"({e.strerror or type(e).__name__})") from None


def open_store(uri: str | os.PathLike[str], *, must_exist: bool = True) -> Store:
    """Open a store; with ``must_exist`` raise a :class:`UserError` if ``uri`` holds none."""
    s = Store(uri)
    return s.require() if must_exist else s
