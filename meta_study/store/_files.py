"""The filesystem behind a store: a local path or any URI pyarrow filesystems accept.

:class:`_Files` is every byte the store reads or writes, relative to the store's root: fsynced
writes locally, an atomic publish (hard link) that fails if the name exists, moves and deletes.
Also here: URIs as messages may show them, partition directory names, the fault-injection points
of the crash tests, and a table as the Parquet bytes the store writes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import re
import time
import urllib.parse
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import UserError


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """Return (filesystem, root path within it, is_local)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)), True
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{display_uri(uri)}: cannot open store location ({_first_line(e)})") from None
    local = isinstance(fs, pafs.LocalFileSystem)
    if not local and not path.strip("/"):
        # 's3://' or 'gs://': the root of an object store is no directory a store can live in
        scheme = uri.split("://", 1)[0]
        raise UserError(f"{display_uri(uri)}: a store on an object store needs a bucket: {scheme}://BUCKET/PREFIX")
    return fs, path.rstrip("/") or "/", local


_SECRET_PARAMS = ("key", "secret", "token", "password", "credential", "session")


def display_uri(uri: str) -> str:
    """The store URI as it may appear in messages, reports and MLflow: secrets given in the query
    (``?access_key=..&secret_key=..``) or as user info are replaced by ``***``; the rest stays,
    since ``endpoint_override`` or ``region`` say where the store is."""
    if "://" not in uri:
        return uri
    p = urllib.parse.urlsplit(uri)
    query = "&".join(
        f"{k}={'***' if any(w in k.lower() for w in _SECRET_PARAMS) else v}"
        for k, v in urllib.parse.parse_qsl(p.query, keep_blank_values=True))
    netloc = p.netloc
    if p.password is not None:
        netloc = f"{p.username}:***@{netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query, p.fragment))


def _quote(value: str) -> str:
    # Task names may hold '/', spaces or '..'; percent-encode so a partition is always one
    # directory level below its parent. pyarrow's hive partitioning decodes this ("uri" encoding).
    return urllib.parse.quote(value, safe="")


def partition_dir(us_task: str, ds_task: str) -> str:
    return f"us_task={_quote(us_task)}/ds_task={_quote(ds_task)}"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass
class _Files:
    fs: pafs.FileSystem
    root: str
    local: bool

    def p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self.p(rel))
        return self.fs.get_file_info(self.p(rel)).type != pafs.FileType.NotFound

    def mkdirs(self, rel: str) -> None:
        if self.local:
            os.makedirs(self.p(rel), exist_ok=True)
        else:
            self.fs.create_dir(self.p(rel), recursive=True)

    def listdir(self, rel: str) -> list[str]:
        if self.local:
            # names only: pyarrow's listing stats every entry and fails if a writer unlinks its
            # temporary manifest between the readdir and the stat
            try:
                return sorted(os.listdir(self.p(rel)))
            except FileNotFoundError:
                return []
        sel = pafs.FileSelector(self.p(rel), allow_not_found=True, recursive=False)
        for _ in range(10):
            try:
                return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(sel))
            except FileNotFoundError:
                time.sleep(0.05)
        return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(sel))

    def sizes(self) -> dict[str, int]:
        """Size in bytes of every file under the root, by relative path (one listing).

        Costs one ``readdir`` per directory locally (a few ms for thousands of partitions) and a
        few LIST requests on object stores. Call it under the lock: a concurrent writer may
        unlink files between the listing and the stat."""
        out: dict[str, int] = {}
        if self.local:
            for d, _, names in os.walk(self.root):
                for n in names:
                    with contextlib.suppress(FileNotFoundError):
                        out[os.path.relpath(os.path.join(d, n), self.root)] = os.stat(os.path.join(d, n)).st_size
            return out
        sel = pafs.FileSelector(self.root, allow_not_found=True, recursive=True)
        for i in self.fs.get_file_info(sel):
            if i.type == pafs.FileType.File:
                out[i.path[len(self.root):].lstrip("/")] = int(i.size or 0)
        return out

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write and (locally) fsync a file; the parent directory is created."""
        self.mkdirs(os.path.dirname(rel))
        if self.local:
            fd = os.open(self.p(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:  # os.write's ENOSPC names no file: name it
                raise OSError(e.errno, e.strerror, self.p(rel)) from None
            finally:
                os.close(fd)
        else:
            with self.fs.open_output_stream(self.p(rel)) as f:
                f.write(data)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.p(rel)) as f:
            return f.read()

    def publish(self, tmp_rel: str, final_rel: str) -> bool:
        """Atomically give ``tmp`` the name ``final``; False if ``final`` already exists."""
        if self.local:
            try:
                os.link(self.p(tmp_rel), self.p(final_rel))
            except FileExistsError:
                os.unlink(self.p(tmp_rel))
                return False
            os.unlink(self.p(tmp_rel))
            _fsync_dir(os.path.dirname(self.p(final_rel)))
            return True
        if self.exists(final_rel):  # object stores: guarded by the lease lock
            self.fs.delete_file(self.p(tmp_rel))
            return False
        self.fs.move(self.p(tmp_rel), self.p(final_rel))
        return True

    def move(self, src_rel: str, dst_rel: str) -> None:
        self.mkdirs(os.path.dirname(dst_rel))
        if self.local:
            os.replace(self.p(src_rel), self.p(dst_rel))
        else:
            self.fs.move(self.p(src_rel), self.p(dst_rel))

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(self.p(rel))
            else:
                self.fs.delete_file(self.p(rel))

    def rmtree(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_dir(self.p(rel))

    def prune_empty_dirs(self, rel: str) -> None:
        """Remove ``rel`` and its parents up to the root while they are empty (local only)."""
        if not self.local:
            return
        d = self.p(rel)
        while d.startswith(self.root + "/") and d != self.root:
            try:
                os.rmdir(d)
            except OSError:
                return
            d = os.path.dirname(d)


_FAILPOINT_HITS: dict[str, int] = {}


def _failpoint(name: str) -> None:
    """Fault injection for the crash tests: with ``META_STUDY_FAILPOINT=name`` (or ``name:N`` for
    the N-th time this point is reached) the writer stops here, announcing it on stderr, until it
    is killed. One environment lookup when unset."""
    spec = os.environ.get("META_STUDY_FAILPOINT")
    if not spec or spec.split(":")[0] != name:
        return
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] == int(spec.split(":")[1]) if ":" in spec else True:
        import sys
        print(f"failpoint {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    # zstd: ~3x smaller than snappy on this record (many repeated strings), still fast to read.
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()



def _first_line(e: BaseException) -> str:
    """A reader's error as a short phrase: first line, first sentence, without the path that
    pyarrow repeats (the caller names the file)."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"Could not open Parquet input source '[^']*': ", "", lines[0] if lines else type(e).__name__)
    return text.split(". ")[0].rstrip(".")[:200]
