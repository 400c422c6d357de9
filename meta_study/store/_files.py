"""The filesystem behind a store: a local path or any URI pyarrow filesystems accept.

:class:`_Files` is every byte the store reads or writes, relative to the store's root: fsynced
writes locally, an exclusive create (a hard link locally, or ``O_EXCL`` and a rename on a mount
without hard links; a conditional PUT on S3) that fails if the name exists, moves and deletes;
locally, nothing but a regular file is ever opened for reading (a FIFO would block:
:class:`NotAFileError`). Also here: URIs as messages may show them, partition directory names,
and Parquet bytes to and from tables (parsed on the calling thread: see :func:`_parse_parquet`).
The crash tests' fault-injection points are in :mod:`meta_study.failpoints`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import io
import os
import re
import stat
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import StoreDamagedError, UserError
from . import _s3
from ._s3 import NoCredentialsError, NoSuchBucketError, S3Objects


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """Return (filesystem, root path within it, is_local)."""
    if not uri.strip():   # "" was the working directory: `--store ""` (an unset variable) wrote a store there
        raise UserError(f"store path {uri!r}: empty; give a directory or s3://BUCKET/PREFIX")
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)), True
    try:   # before pyarrow, whose parse of 's3://[lab/x' says less
        urllib.parse.urlsplit(uri)
    except ValueError as e:
        raise UserError(f"{display_uri(uri)}: not a valid store URI ({e})") from None
    try:
        fs, path = pafs.FileSystem.from_uri(bounded_uri(uri))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{display_uri(uri)}: cannot open store location ({_first_line(e)})") from None
    local = isinstance(fs, pafs.LocalFileSystem)
    if not local and not path.strip("/"):
        # 's3://' or 'gs://': the root of an object store is no directory a store can live in
        scheme = uri.split("://", 1)[0]
        raise UserError(f"{display_uri(uri)}: a store on an object store needs a bucket: {scheme}://BUCKET/PREFIX")
    return fs, path.rstrip("/") or "/", local


#: GCS retries a failing call for this long (seconds) unless the URI says otherwise: the client's
#: own policy retried without end, and a store on gs:// without network or credentials hung every
#: command (measured: still waiting after 120 s; with this bound, one line after ~37 s)
GCS_RETRY_LIMIT_S = 30


def bounded_uri(uri: str) -> str:
    """``uri`` with ``retry_limit_seconds`` for gs:// (pyarrow's GCS option) unless given."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in ("gs", "gcs") or "retry_limit_seconds=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}retry_limit_seconds={GCS_RETRY_LIMIT_S}"


_SECRET_PARAMS = ("key", "secret", "token", "password", "credential", "session")


def display_uri(uri: str) -> str:
    """The store URI as it may appear in messages, reports and MLflow: secrets given in the query
    (``?access_key=..&secret_key=..``) or as user info are replaced by ``***``; the rest stays,
    since ``endpoint_override`` or ``region`` say where the store is."""
    if "://" not in uri:
        return uri
    try:
        p = urllib.parse.urlsplit(uri)
    except ValueError:   # 's3://[lab/x' ("Invalid IPv6 URL"): shown as given, less user info and query
        head = re.sub(r"^([^:/?#]+://)[^/?#]*@", r"\1***@", uri)
        return head.split("?", 1)[0] + ("?***" if "?" in head else "")
    query = "&".join(
        f"{k}={'***' if any(w in k.lower() for w in _SECRET_PARAMS) else v}"
        for k, v in urllib.parse.parse_qsl(p.query, keep_blank_values=True))
    netloc = p.netloc
    if p.password is not None:
        netloc = f"{p.username}:***@{netloc.rsplit('@', 1)[1]}"
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query, p.fragment))


def display_path(uri: str, rel: str) -> str:
    """``rel`` inside the store ``uri`` as messages show it: the path joined before the URI's query
    (``s3://lab/x/_meta/manifests?endpoint_override=...``). ``f"{uri}/{rel}"`` put it after the
    query, where it read as part of the last parameter's value ("...&scheme=http/_meta/manifests")."""
    if not rel:
        return uri
    base, sep, query = uri.partition("?")
    return f"{base.rstrip('/')}/{rel}{sep}{query}"


def _dir_name(value: str) -> str:
    """A task name as one directory name: percent-encoded (a name may hold '/', spaces, '..' or
    '='), and a leading '_' or '.' encoded too, since plain readers skip such directories."""
    q = urllib.parse.quote(value, safe="")
    return {"_": "%5F", ".": "%2E"}.get(q[:1], q[:1]) + q[1:]


def partition_dir(us_task: str, ds_task: str) -> str:
    """The directory of a partition's file: ``<us_task>/<ds_task>``, each name encoded.

    Not ``us_task=<name>`` (hive style): readers infer a hive partition's type from its values, so
    tasks ``007`` and ``7`` became the integer 7 in pyarrow and polars, and pandas failed on the
    duplicate category. The partition columns are stored in the files instead, as strings,
    and no reader derives a column from these names."""
    return f"{_dir_name(us_task)}/{_dir_name(ds_task)}"


def partition_key(rel: str) -> str:
    """The partition a data file's path belongs to, in either layout (``us_task=A/ds_task=B/f``
    of format 1, ``A/B/f`` of format 2), as its format-2 directory."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0].startswith("us_task=") and parts[1].startswith("ds_task="):
        return partition_dir(urllib.parse.unquote(parts[0][8:]), urllib.parse.unquote(parts[1][8:]))
    return "/".join(parts[:-1])


#: What a local path is, as messages say it (``S_IFMT`` bits of its mode).
_KINDS = {stat.S_IFREG: "a file", stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
          stat.S_IFLNK: "a symbolic link"}


def kind_of_mode(mode: int) -> str:
    """``os.stat``'s mode as "a file", "a directory", "a FIFO", ..."""
    return _KINDS.get(stat.S_IFMT(mode), "not a file")


class CredentialsRefusedError(UserError, PermissionError):
    """The S3 endpoint answered and refused the credentials that signed the request (a key it
    does not know, a secret that does not match, access denied): a one-line user error (exit 2)
    naming what to check, never "cannot reach" (the endpoint was reached) nor a bare
    "AWS Error ACCESS_DENIED ..." (exit 1); a :class:`PermissionError` still for callers that
    take it as a failed request. Unsigned requests refused are :class:`NoCredentialsError`."""


#: S3's error codes for a signed request refused for who sent it or what they may do: none
#: passes on a retry. Left out, as not about the credentials or transient: RequestTimeTooSkewed (a
#: 403 too: the clock), ExpiredToken (refreshed credentials pass), 5xx, no answer at all.
CREDENTIALS_REFUSED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                       "InvalidToken", "AllAccessDisabled", "InvalidSecurity"})

#: pyarrow's (the AWS SDK's) names for those codes, as its messages give them
#: ("AWS Error ACCESS_DENIED during HeadObject operation: No response body.").
_SDK_CODES = {"ACCESS_DENIED": "AccessDenied", "INVALID_ACCESS_KEY_ID": "InvalidAccessKeyId",
              "SIGNATURE_DOES_NOT_MATCH": "SignatureDoesNotMatch", "INVALID_TOKEN": "InvalidToken"}


def credentials_refused(e: BaseException) -> str | None:
    """S3's code ("InvalidAccessKeyId") if ``e`` is an endpoint's refusal of the request's
    credentials, from boto3 (:class:`S3RequestError`, its code and HTTP status, or its one line
    "…: LIST failed: InvalidAccessKeyId: …") or pyarrow ("AWS Error ACCESS_DENIED during …",
    "AWS Error UNKNOWN (HTTP status 403) …"); None for any other failure (network, 5xx, a 403 for
    the clock), which stays what it was."""
    code, status = getattr(e, "code", None), getattr(e, "status", None)
    if isinstance(e, _s3.S3RequestError):
        if code in CREDENTIALS_REFUSED_CODES:
            return str(code)
        # a 403 without an error body (a HEAD's) gives only the status as its code
        return "AccessDenied" if status == 403 and code in ("", "403") else None
    text = str(e)
    if m := re.search(r"AWS Error ([A-Z_]+)", text):   # pyarrow's
        if m.group(1) in _SDK_CODES:
            return _SDK_CODES[m.group(1)]
        if m.group(1) != "UNKNOWN" or "HTTP status 403" not in text:
            return None
        named = sorted(c for c in CREDENTIALS_REFUSED_CODES if re.search(rf"\b{c}\b", text))
        if named:
            return named[0]
        return None if "RequestTimeTooSkewed" in text or "Expired" in text else "HTTP 403 Forbidden"
    if m := re.search(r"\b[A-Z]+ failed: (\w+)(?::|$)", text):   # boto3's, in S3Objects' one line
        if m.group(1) in CREDENTIALS_REFUSED_CODES:
            return m.group(1)
        return "AccessDenied" if m.group(1) == "403" else None
    return None


def credentials_refused_error(shown: str, why: str) -> CredentialsRefusedError:
    """The one line for credentials the S3 endpoint refused (``why``: S3's code), ``shown``
    naming the input ("--storage-path s3://lab/tune", or a store's URI)."""
    return CredentialsRefusedError(
        f"{shown}: the S3 endpoint refused the credentials ({why}): check AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, this node's instance role) on this machine, and that they may "
        "read and write this bucket")


def missing_bucket(e: BaseException) -> str | None:
    """The bucket's name if ``e`` is pyarrow's or boto3's word that the bucket does not exist
    ("Bucket 'b' not found. To create buckets, enable the allow_bucket_creation option.", "AWS
    Error NO_SUCH_BUCKET … in bucket 'b'", :class:`NoSuchBucketError`); else None."""
    text = str(e)
    if not (isinstance(e, NoSuchBucketError) or "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text
            or re.search(r"\bBucket '[^']*' not found", text)):
        return None
    m = re.search(r"[Bb]ucket '([^']*)'", text)
    return m.group(1) if m else ""




class NotAFileError(OSError):
    """A store file's name holds a FIFO, a device, a socket or a directory: never opened (a FIFO
    would block the reader forever), reported as damage like a corrupt file. The message is the
    problem, without the path (the caller names it): "is a FIFO, not a file"."""


class WrongSizeError(OSError):
    """A store file whose size is not the one its manifest records: refused before it is read.
    The message is the problem, without the path: "3221225472 bytes, the manifest says 8943"."""


class NoRoomAsideError(StoreDamagedError, NotADirectoryError):
    """Something that is not a directory stands where the store sets damaged files aside (a file
    named ``_damaged`` in the store's root, or one at ``_damaged/<version>``): one line naming it.
    ``store check --repair`` committed its version, then failed with a traceback on "[Errno 20]
    Not a directory", the damaged files left in place and every later command failing the same
    way. An :class:`OSError` too, for the callers that take a failure to move a file as one (a
    commit past its commit point says its version is stored)."""


def _check_size(actual: int, expected: int | None, limit: int | None = None) -> None:
    if expected is not None and actual != expected:
        raise WrongSizeError(f"{actual} bytes, the manifest says {expected}")
    if limit is not None and actual > limit:
        raise WrongSizeError(f"{actual} bytes, more than any such file holds ({limit})")


def _unstattable(e: OSError) -> str:
    """What a name whose ``stat`` fails (not for being absent) is, as messages say it."""
    import errno

    if e.errno == errno.ELOOP:
        return "a symbolic link loop"
    return f"unreadable ({e.strerror or type(e).__name__})"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass
class _Files:
    fs: pafs.FileSystem
    root: str
    local: bool
    uri: str = ""        # the store URI as given (may hold secrets: never shown)
    shown: str = ""      # the store URI as messages show it
    _objects: S3Objects | None = None
    _sizes_known: dict[str, int] = field(default_factory=dict)   # see expect_size

    @property
    def scheme(self) -> str:
        return "file" if self.local else self.uri.split("://", 1)[0].lower()

    def objects(self) -> S3Objects:
        """The conditional-write calls of an s3:// store; a :class:`UserError` for other object
        stores, whose commits meta-study cannot make safe (no conditional writes through pyarrow)."""
        if self.scheme != "s3":
            raise UserError(f"{self.shown}: meta-study writes stores on local or shared filesystems and on s3:// "
                            f"only (a commit needs conditional writes); {self.scheme}:// stores can be read, not "
                            "written. Use s3:// (AWS S3, MinIO, Ceph RGW: an endpoint that honours If-None-Match and If-Match on PUT) or a path")
        if self._objects is None:
            self._objects = S3Objects(self.uri, self.shown, self.root)
        return self._objects

    def raise_if_unsigned_refused(self, e: BaseException, what: str, rel: str) -> None:
        """The one-line :class:`NoCredentialsError` for pyarrow's ``e`` if it is S3's refusal of an
        unsigned request (no credentials were found: see :attr:`S3Objects.unsigned`). pyarrow sends
        requests unsigned then, as boto3 does; its refusal read "When reading information for key
        ...: AWS Error ACCESS_DENIED during HeadObject operation: No response body." (exit 1)."""
        if self._objects is not None and self._objects.unsigned and "ACCESS_DENIED" in str(e):
            raise self._objects.refused_unsigned(what, rel, "AccessDenied") from None

    def raise_if_refused(self, e: BaseException, what: str, rel: str) -> None:
        """:meth:`raise_if_unsigned_refused`, then the one-line :class:`CredentialsRefusedError`
        if ``e`` (pyarrow's or boto3's) is the endpoint refusing the credentials that signed it."""
        self.raise_if_unsigned_refused(e, what, rel)
        if not self.local and not isinstance(e, UserError) and (why := credentials_refused(e)):
            raise credentials_refused_error(self.shown, why) from None

    def p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def kind(self, rel: str) -> str | None:
        """What is at ``rel``: "a file", "a directory", "a FIFO", ... (local; a symbolic link is
        what it points to), "a file" or "a directory" (object stores; on S3 ``up/a/`` is the object
        with that key, "a file" or None), None if nothing is."""
        if self.local:
            try:
                return kind_of_mode(os.stat(self.p(rel)).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                # a symbolic link to nothing is something (plain readers list it and fail on it)
                return "a symbolic link to nothing" if os.path.islink(self.p(rel)) else None
            except OSError as e:   # a symbolic link loop (ELOOP), a directory we may not search
                return _unstattable(e)
        if rel.endswith("/") and self.scheme == "s3":   # the object 'up/a/' itself (one HEAD), not the directory
            return "a file" if self.objects().exists(rel) else None
        t = self.fs.get_file_info(self.p(rel)).type
        return {pafs.FileType.NotFound: None, pafs.FileType.File: "a file",
                pafs.FileType.Directory: "a directory"}.get(t, "not a file")

    def first_non_directory(self, rel: str) -> tuple[str, str] | None:
        """(path, what it is) of the first of the root, ``rel``'s parents and ``rel`` itself that
        exists and is not a directory; None if there is none. One ``stat`` per level."""
        parts = [c for c in rel.split("/") if c]
        for i in range(len(parts) + 1):
            sub = "/".join(parts[:i])
            kind = self.kind(sub)
            if kind is None:
                return None
            if kind != "a directory":
                return sub, kind
        return None

    def not_a_directory(self, rel: str) -> str | None:
        """The first of the root, ``rel``'s parents and ``rel`` itself (local) that exists and is
        not a directory, as "PATH: is a file, not a directory"; None if there is none."""
        found = self.first_non_directory(rel)
        if found is None:
            return None
        sub, kind = found
        return f"{self.shown}{'/' + sub if sub else ''}: is {kind}, not a directory"

    def file_size(self, rel: str) -> int | None:
        """The size in bytes of the regular file at ``rel`` (locally not through a symbolic
        link); None if nothing is there, -1 if something else is (a directory, a FIFO, a link).
        One ``lstat``; on S3 one LIST (:meth:`S3Objects.entry`), elsewhere a HEAD and, where
        nothing is at the key (the usual case: finalize asks it of every new file's place), a
        LIST of ``rel/`` (pyarrow's two requests)."""
        if self.local:
            try:
                st = os.lstat(self.p(rel))
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError:
                return -1
            return st.st_size if stat.S_ISREG(st.st_mode) else -1
        if self.scheme == "s3":
            try:
                import boto3  # noqa: F401

                return self.objects().entry(rel)
            except ImportError:
                pass
            except NoCredentialsError:
                raise
            except UserError:   # boto3 cannot be set up (see _s3_names): pyarrow's two requests
                pass
        info = self.fs.get_file_info(self.p(rel))
        if info.type == pafs.FileType.NotFound:
            return None
        return int(info.size or 0) if info.type == pafs.FileType.File else -1

    def exists(self, rel: str) -> bool:
        """Whether a file or directory is at ``rel``: a ``stat``; on S3 one LIST (a file's place
        asked after its delete: pyarrow asked a HEAD, then a LIST of ``rel/`` after its 404)."""
        if self.local:
            return os.path.exists(self.p(rel))
        if rel.strip("/") and not rel.endswith("/") and self.scheme == "s3":
            return self.file_size(rel) is not None
        return self.fs.get_file_info(self.p(rel)).type != pafs.FileType.NotFound

    def mkdirs(self, rel: str) -> None:
        """Create the directory ``rel`` and its parents (local). Nothing on object stores: a key
        needs no parent, and pyarrow's ``create_dir`` PUTs an empty ``<dir>/`` marker for the
        directory and each parent without looking first, so an object someone stored under such a
        key (``up/a/``, which ``--repair`` sets aside with its bytes) was emptied by the next
        write below it, its bytes lost."""
        if self.local:
            os.makedirs(self.p(rel), exist_ok=True)

    def listdir(self, rel: str) -> list[str]:
        if self.local:
            # names only: pyarrow's listing stats every entry and fails if a writer unlinks its
            # temporary manifest between the readdir and the stat
            try:
                return sorted(os.listdir(self.p(rel)))
            except FileNotFoundError:
                return []
            except NotADirectoryError:   # the root, or a directory of the store, is a file
                raise UserError(self.not_a_directory(rel) or f"{display_path(self.shown, rel)}: not a directory") from None
        if self.scheme == "s3":
            names = self._s3_names(rel)
            if names is not None:
                return names
        sel = pafs.FileSelector(self.p(rel), allow_not_found=True, recursive=False)
        for _ in range(10):
            try:
                return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(sel))
            except FileNotFoundError:
                time.sleep(0.05)
        return sorted(os.path.basename(i.path) for i in self.fs.get_file_info(sel))

    def _s3_names(self, rel: str) -> list[str] | None:
        """:meth:`listdir` of an s3:// store as its keys say (:meth:`S3Objects.names`), the view
        its writes and deletes through boto3 act on; None without boto3 or where boto3 cannot be set
        up or refuses the URI (an ``AWS_PROFILE`` naming no profile, a missing bucket): reading a
        store needs only pyarrow, whose listing is then used as before. A failed request is an
        ``OSError``, as pyarrow's was."""
        try:
            import boto3  # noqa: F401
        except ImportError:
            return None
        try:
            return self.objects().names(rel)
        except NoCredentialsError:
            raise   # pyarrow's unsigned listing would be refused too, in more words
        except UserError:
            return None

    def sizes(self, under: str = "") -> dict[str, int]:
        """Size in bytes of every file under the root (or its directory ``under``), by path
        relative to the root (one listing).

        Costs one ``readdir`` per directory locally (a few ms for thousands of partitions) and a
        few LIST requests on object stores (1,000 keys each). Call it under the lock: a
        concurrent writer may unlink files between the listing and the stat.

        Locally, a directory that cannot be listed (EACCES, EIO, ESTALE) or a file that cannot be
        stat'ed for lack of permission is an ``OSError`` naming it, never left out: its files were
        "missing", and ``store check --repair`` dropped their rows, setting intact files aside
        (and a commit's garbage collection took a staging directory it could not list for
        finalized, deleting the only copy of a version's files)."""
        out: dict[str, int] = {}
        if self.local:
            # The real directories first, then those reached through a symbolic link, as every reader
            # goes (a partition moved to another disk and linked back: its files were "missing", and
            # '--repair' dropped their rows). A directory met again (a link loop, a second name of a
            # real directory) is not listed again: its files are listed by their first path. A link to
            # the store or a directory above it (`up/x -> /`, `-> ../..`) is never followed: every
            # commit listed the whole filesystem through it (a hang); it is listed as a name no size
            # matches (-1), which 'store check' reports and '--repair' moves aside, as a link loop.
            seen: set[tuple[int, int]] = set()
            tops = [self.p(under)]
            above = os.path.realpath(self.root).rstrip("/") + "/"
            while tops:
                for d, dirs, names in os.walk(tops.pop(0), onerror=self._unlistable):
                    try:
                        st = os.stat(d)
                    except OSError:
                        dirs[:] = []
                        continue
                    if (st.st_dev, st.st_ino) in seen:
                        dirs[:] = []
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    for n in dirs:
                        link = os.path.join(d, n)
                        if not os.path.islink(link):
                            continue
                        if above.startswith(os.path.realpath(link).rstrip("/") + "/"):
                            out[os.path.relpath(link, self.root)] = -1   # the store or above it
                        else:
                            tops.append(link)
                    self._sizes_of(d, names, out)
            return out
        if self.scheme == "s3":
            listed = self._s3_sizes(under)
            if listed is not None:
                return listed
        sel = pafs.FileSelector(self.p(under), allow_not_found=True, recursive=True)
        for i in self.fs.get_file_info(sel):
            if i.type == pafs.FileType.File:
                out[i.path[len(self.root):].lstrip("/")] = int(i.size or 0)
        return out

    def _s3_sizes(self, under: str) -> dict[str, int] | None:
        """:meth:`sizes` of an s3:// store as its keys say (:meth:`S3Objects.sizes`), in the shape
        pyarrow's listing had: an object ``x/`` holding bytes is a file ``x`` (plain readers see
        it so; ``store check`` names it by its key, see :meth:`object_sizes`) *unless an object
        ``x`` exists*, whose own size it is; an empty ``x/`` (a console's "folder") and the marker
        of ``under`` itself are no files. pyarrow gave ``x`` the marker's size: an intact data
        file beside a stray ``x/`` object was "3 bytes, the manifest says 9000", every commit was
        refused and ``--repair`` set the intact file aside, dropping its rows. Keys with an empty
        component (``a//b``) keep it, as the objects' keys do (pyarrow listed ``a/b``, a key no
        object has). None without boto3 or where boto3 cannot be set up (see :meth:`_s3_names`)."""
        try:
            import boto3  # noqa: F401
        except ImportError:
            return None
        try:
            keys = self.objects().sizes(under)
        except NoCredentialsError:
            raise
        except UserError:
            return None
        own = under.strip("/")
        out = {k: n for k, n in keys.items() if k and not k.endswith("/")}
        for k, n in keys.items():
            if k.endswith("/") and n > 0 and k[:-1] and k[:-1] != own and k[:-1] not in out:
                out[k[:-1]] = n
        return out

    def _sizes_of(self, d: str, names: list[str], out: dict[str, int]) -> None:
        """:meth:`sizes` of the files ``names`` in the local directory ``d``."""
        for n in names:
            path = os.path.join(d, n)
            try:
                out[os.path.relpath(path, self.root)] = os.stat(path).st_size
            except FileNotFoundError:
                if os.path.islink(path):   # a symbolic link to nothing: listed, never a size
                    out[os.path.relpath(path, self.root)] = -1
            except OSError as e:   # a symbolic link loop, ...: a name no size matches (-1)
                if isinstance(e, PermissionError) and self._holds_store_files(d):
                    raise   # a directory we may not search says nothing of its files (see sizes)
                out[os.path.relpath(path, self.root)] = -1

    def _unlistable(self, e: OSError) -> None:
        """``os.walk``'s ``onerror`` in :meth:`sizes`: raise ``e`` unless its directory is gone
        (a writer finishing its commit), is no directory, or holds no file the store reads."""
        if not isinstance(e, (FileNotFoundError, NotADirectoryError)) and self._holds_store_files(e.filename):
            raise e

    def _holds_store_files(self, path: str | None) -> bool:
        """False for a local directory where the store keeps no file it reads: under ``_damaged``,
        ``_meta`` or a name starting with '.' or '_' of someone else's (a ``.snapshot`` of NFS);
        there a listing error changes nothing, as before."""
        rel = os.path.relpath(path, self.root) if path else "."
        top = rel.split(os.sep)[0]
        return rel == "." or not top.startswith((".", "_")) or top in ("_quarantine", "_state", "_staging")

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
        elif self.scheme == "s3" and len(data) < _s3.MULTIPART_COPY_BYTES:
            # one PUT through boto3 (a commit has it: its conditional writes need it) below the size
            # where copies go in parts: pyarrow's stream was a multipart upload whatever the size
            # (create, part, complete: 3 requests per staged file)
            self.objects().put(rel, data)
        else:
            with self.fs.open_output_stream(self.p(rel)) as f:
                f.write(data)

    def replace_bytes(self, rel: str, data: bytes) -> None:
        """Overwrite ``rel`` atomically (a reader sees the old bytes or the new, never a mix)."""
        if not self.local:
            self.write_bytes(rel, data)   # an object PUT is atomic
            return
        tmp = f"{os.path.dirname(rel)}/.tmp-{os.getpid()}-{os.path.basename(rel)}".lstrip("/")
        self.write_bytes(tmp, data)
        os.replace(self.p(tmp), self.p(rel))
        _fsync_dir(os.path.dirname(self.p(rel)))

    def read_bytes(self, rel: str, size: int | None = None, limit: int | None = None) -> bytes:
        """The whole file. Locally a :class:`NotAFileError` if ``rel`` is no regular file: it is
        never opened (opening a FIFO blocks until a writer comes, reading a device never ends).
        Costs one ``stat`` more than the read; the ``fstat`` after the non-blocking open closes the
        race with a file replaced between the two.

        ``size``: the size the manifest records; a file of another size is a
        :class:`WrongSizeError` before a byte is read (a 50 GB file in a partition's place would
        otherwise be read whole into memory, only to be refused). ``limit``: the most bytes a
        file of its kind can hold (a manifest); a larger one is a :class:`WrongSizeError` too."""
        if not self.local:   # an object is a file, or a "directory" (a prefix)
            if self.scheme == "s3":
                data = self._s3_read(rel, size, limit)
                if data is not None:
                    return data
            try:
                with self.fs.open_input_file(self.p(rel)) as f:   # its size from the same HEAD
                    _check_size(f.size(), size, limit)
                    return f.read()
            except WrongSizeError:
                raise
            except OSError as e:
                self.raise_if_unsigned_refused(e, "GET", rel)
                there = self.fs.get_file_info(self.p(rel)).type
                if there == pafs.FileType.Directory:
                    raise NotAFileError("is a directory, not a file") from None
                if there == pafs.FileType.NotFound and not isinstance(e, FileNotFoundError):
                    # deleted between the HEAD of the open and the GET of the read (a writer superseded
                    # it): pyarrow says "NO_SUCH_KEY during GetObject", a bare OSError, and a reader
                    # racing a commit failed with it instead of reading the newer version
                    raise FileNotFoundError(errno.ENOENT, "no such file", self.p(rel)) from None
                raise
        path = self.p(rel)
        try:
            mode = os.stat(path).st_mode   # FileNotFoundError: absent
        except FileNotFoundError:
            if os.path.islink(path):
                raise NotAFileError("is a symbolic link to nothing, not a file") from None
            raise
        except NotADirectoryError:
            raise
        except OSError as e:   # a symbolic link loop: damage, as a FIFO is (not a traceback)
            raise NotAFileError(f"is {_unstattable(e)}, not a file") from None
        if not stat.S_ISREG(mode):
            raise NotAFileError(f"is {kind_of_mode(mode)}, not a file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAFileError(f"is {kind_of_mode(st.st_mode)}, not a file")
            _check_size(st.st_size, size, limit)
            return f.read()

    def _s3_read(self, rel: str, size: int | None, limit: int | None) -> bytes | None:
        """:meth:`read_bytes` of an s3:// store in one GET (:meth:`S3Objects.read`, the size checked
        from its Content-Length before the body is read), where pyarrow's read asked a HEAD and
        then a GET: a read of a store with N partitions cost 2N + 3 requests, N + 2 now. None
        without boto3 or where boto3 cannot be set up (see :meth:`_s3_names`): pyarrow reads then.

        No object at the key: a :class:`NotAFileError` if keys lie below ``rel/`` (a "directory",
        as pyarrow's listing says it; one LIST, on this error path only), else a
        :class:`FileNotFoundError` (a file a writer superseded since the manifest was read: the
        reader reads the newer version)."""
        try:
            import boto3  # noqa: F401
        except ImportError:
            return None
        try:
            return self.objects().read(rel, lambda n: _check_size(n, size, limit))
        except NoCredentialsError:
            raise
        except UserError:   # no client here, or no such bucket (a FileNotFoundError too): as pyarrow says it
            return None
        except FileNotFoundError:
            if self.file_size(rel) == -1:
                raise NotAFileError("is a directory, not a file") from None
            raise FileNotFoundError(errno.ENOENT, "no such file", self.p(rel)) from None

    def create_exclusive(self, rel: str, data: bytes, tmp_rel: str) -> bool:
        """Create ``rel`` holding ``data`` whole, atomically, only if no file has that name:
        True if we created it, False if it existed. Of any number of writers racing to create one
        name, exactly one gets True, whatever their timing (the commit point).

        Locally: write and fsync ``tmp_rel``, hard-link it to ``rel`` (``link`` fails if the name
        exists), drop the temporary name. On a mount without hard links, see
        :meth:`_claim_and_rename`. On S3: one PUT with ``If-None-Match: *``."""
        if self.local:
            try:
                # in the try: a write cut short (ENOSPC) leaves no temporary file behind
                self.write_bytes(tmp_rel, data)
                try:
                    os.link(self.p(tmp_rel), self.p(rel))
                except FileExistsError:
                    return False
                except OSError as e:
                    # a mount without hard links (gcsfuse, some SMB, FUSE and container volumes):
                    # every commit failed, on EPERM as "permission denied" of a writable store
                    if e.errno not in _NO_LINK:
                        raise
                    return self._claim_and_rename(rel, tmp_rel)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.p(tmp_rel))
            _fsync_dir(os.path.dirname(self.p(rel)))
            return True
        return self.objects().create(rel, data) is not None

    def _claim_and_rename(self, rel: str, tmp_rel: str) -> bool:
        """:meth:`create_exclusive` without hard links (local): claim ``rel`` with an empty file
        (``O_CREAT | O_EXCL``: of racing writers, and writers that hard-link, exactly one creates
        it), then rename the whole, fsynced ``tmp_rel`` over the claim. A reader sees no file, the
        empty claim (for the one ``rename`` in between: a manifest that does not parse) or the whole
        file, never part of it. If the rename fails, the claim is removed (the name is free again)."""
        path = self.p(rel)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        try:
            os.replace(self.p(tmp_rel), path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        _fsync_dir(os.path.dirname(path))
        return True

    def sync_dirs(self, rels: Iterable[str], tree: bool = False) -> None:
        """Make new names in these directories durable (local; object stores have no directories).

        A file's own fsync does not persist its name: after a power loss, a manifest whose
        directory was fsynced could name staged files that are gone. With ``tree``, every
        directory below each of ``rels`` too, deepest first, then the parent of each (where
        ``rels`` itself was created). One ``fsync`` per directory (~0.1-5 ms each)."""
        if not self.local:
            return
        done: set[str] = set()
        for rel in rels:
            top = self.p(rel)
            dirs = [top]
            if tree:
                dirs = [d for d, _, _ in os.walk(top)][::-1] + [os.path.dirname(top)]
            for d in dirs:
                if d not in done:
                    done.add(d)
                    _fsync_dir(d)

    def expect_size(self, rel: str, size: int) -> None:
        """Record the size in bytes the caller knows ``rel`` has (its manifest records it): the next
        :meth:`move` of ``rel`` on S3 then asks no HEAD of it before its copy (:meth:`S3Objects.copy`)."""
        self._sizes_known[rel] = size

    def move(self, src_rel: str, dst_rel: str, *, delete_later: list[str] | None = None) -> str:
        """Move a file (locally a directory too); returns where it went (``dst_rel``, or the free
        name :meth:`_aside_name` chose for a set-aside). If another process moved it first (two writers
        finishing one commit, object stores only), that is not an error: the file is where it
        belongs. On object stores a "directory" (objects under ``src_rel/``, set aside as damage)
        is moved object by object: pyarrow moves single objects only, and its failure on one
        ("NO_SUCH_KEY during CopyObject") left a published repair that every later command,
        ``store check`` included, failed to finish. On S3 an object whose key ends in '/'
        (``src_rel`` ``up/a/``: see :meth:`object_sizes`) keeps its bytes at ``dst_rel``
        less the '/', where any reader sees them (see also :meth:`expect_size`).

        ``delete_later`` (S3): once the copy landed, the source's key is appended there instead of
        deleted, for the caller to delete with others in one request (:meth:`delete_files`); the
        copy at ``dst_rel`` is then complete, so deleting the source is safe whenever it happens
        (a source never deleted is a duplicate: garbage). Elsewhere the move is whole, as without."""
        known = self._sizes_known.pop(src_rel, None)
        target = self._aside_name(dst_rel.rstrip("/") if src_rel.endswith("/") and not self.local else dst_rel)
        self._mkdirs_aside(os.path.dirname(target))
        if self.local:
            try:
                os.replace(self.p(src_rel), self.p(target))
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                _move_across(self.p(src_rel), self.p(target), e)
            return target
        if self.scheme == "s3":
            return self._move_s3(src_rel, dst_rel, target, known, delete_later)
        try:
            self.fs.move(self.p(src_rel), self.p(target))
        except (OSError, pa.ArrowException):
            if self.exists(src_rel) or not (self.exists(target) or self.exists(dst_rel)):
                raise
        return target

    def _move_s3(self, src_rel: str, dst_rel: str, target: str, size: int | None = None,
                 delete_later: list[str] | None = None) -> str:
        """:meth:`move` on S3: a copy, then a delete (or the source's key added to ``delete_later``),
        both through boto3. pyarrow's ``move`` then
        PUT an empty ``<parent>/`` marker of the source without looking, and an object stored
        under that key (``up/a/``, or ``_staging/``) lost its bytes whenever a file was moved out
        of its directory (a damaged file set aside, a staged file moved into place)."""
        objs = self.objects()
        try:
            objs.copy(src_rel, target, size)
        except NoSuchBucketError:
            raise
        except FileNotFoundError:
            kind = self.kind(src_rel)
            if kind == "a directory" and not src_rel.endswith("/"):
                self._move_tree(src_rel, target)
                return target
            if kind is None and (self.exists(target) or self.exists(dst_rel)):
                return target   # another writer finishing the same commit moved it first
            raise
        if delete_later is not None:
            delete_later.append(src_rel)
        else:
            objs.delete(src_rel)
        return target

    def _move_tree(self, src_rel: str, dst_rel: str) -> None:
        """Move every object under ``src_rel/`` to the same key under ``dst_rel/`` (S3). The object
        ``src_rel/`` itself, if it holds bytes, goes to ``dst_rel``: pyarrow takes such a key for a
        directory, so a data file written under a key ending in '/' was damage that ``--repair``
        "moved to _damaged/" while the delete of the "empty directory" deleted it, bytes and all.
        One LIST, then a copy per object and one batched DELETE."""
        objs = self.objects()
        keys = objs.sizes(src_rel)
        marker = f"{src_rel}/"
        for rel in sorted(keys):
            if rel == marker:
                if keys[rel] > 0:
                    objs.copy(rel, dst_rel, keys[rel])
            else:
                objs.copy(rel, f"{dst_rel}/{rel[len(marker):]}", keys[rel])
        objs.delete_many(keys)

    def object_sizes(self) -> dict[str, int]:
        """Every object of an s3:// store with its size, by key relative to the root, keys ending
        in '/' included as such ({} on other filesystems). pyarrow's listing (:meth:`sizes`) shows
        an object ``up/a/`` holding bytes as a file ``up/a``, which is also the name of the
        directory: only the keys say which it is. One LIST per 1,000 keys. {} without boto3 too,
        or where boto3 cannot list what pyarrow could (an ``AWS_PROFILE`` naming no profile, which
        pyarrow passes over): reading a store needs only pyarrow, and ``store check`` then sees
        what pyarrow shows."""
        if self.scheme != "s3":
            return {}
        try:
            import boto3  # noqa: F401
        except ImportError:
            return {}
        try:
            return self.objects().sizes("")
        except NoCredentialsError:
            raise
        except (OSError, UserError):
            return {}

    def keep_copy(self, src_rel: str, dst_rel: str) -> None:
        """Keep ``src_rel``'s bytes also at ``dst_rel`` without reading them into memory (the
        file may be huge): a hard link locally, a server-side copy on object stores; on S3 the
        managed copy moves use (:meth:`S3Objects.copy`: in parts from
        :data:`~meta_study.store._s3.MULTIPART_COPY_BYTES` on). pyarrow's ``copy_file`` is one
        CopyObject, which S3 refuses above 5 GB."""
        dst_rel = self._aside_name(dst_rel)
        self._mkdirs_aside(os.path.dirname(dst_rel))
        if self.local:
            try:
                os.link(self.p(src_rel), self.p(dst_rel))
            except OSError:   # no hard links here (some network filesystems): a streamed copy
                import shutil

                shutil.copyfile(self.p(src_rel), self.p(dst_rel))
            return
        if self.scheme == "s3":
            self.objects().copy(src_rel, dst_rel)
            return
        self.fs.copy_file(self.p(src_rel), self.p(dst_rel))

    def require_room_aside(self, rel: str) -> None:
        """A :class:`NoRoomAsideError` if something that is not a directory stands at ``rel`` (a
        directory under ``_damaged/``) or a parent of it, so that nothing can be set aside there
        (local: on object stores a key ``_damaged`` and keys under ``_damaged/`` coexist). A
        ``stat`` per level; called before a repair changes anything."""
        if not self.local:
            return
        found = self.first_non_directory(rel)
        if found is not None and found[0]:
            sub, kind = found
            raise NoRoomAsideError(f"{display_path(self.shown, sub)}: is {kind}, not a directory, where the store sets damaged "
                                   f"files aside; move it out of the store (it is not the store's) and run the "
                                   "command again")

    def _mkdirs_aside(self, rel: str) -> None:
        """:meth:`mkdirs`, and for a directory under ``_damaged/`` whose way is blocked by
        something that is not a directory, the one-line :class:`NoRoomAsideError` naming it."""
        try:
            self.mkdirs(rel)
        except (NotADirectoryError, FileExistsError):
            if rel.split("/")[0] == "_damaged":
                self.require_room_aside(rel)
            raise

    def _aside_name(self, dst_rel: str) -> str:
        """``dst_rel``, or for a set-aside (under ``_damaged/``) whose name is taken, the first free
        of ``dst_rel.2``, ``dst_rel.3``, ...: a set-aside never replaces an earlier one (a copy or
        manifest of one version damaged and repaired twice kept only the second bad bytes)."""
        if not dst_rel.startswith("_damaged/"):
            return dst_rel
        taken = (lambda rel: os.path.lexists(self.p(rel))) if self.local else self.exists
        name, n = dst_rel, 1
        while taken(name):
            n += 1
            name = f"{dst_rel}.{n}"
        return name

    def delete(self, rel: str) -> None:
        """Delete the file ``rel`` (nothing there is no error; a directory is an ``OSError``,
        except on S3: see below)."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(self.p(rel))
            elif self.scheme == "s3":
                # One DELETE of the key ``rel``, nothing asked first: S3 answers a DELETE of a missing
                # key 204, and it never touches keys below ``rel/``. It asked pyarrow what was there
                # first (a HEAD, and a LIST of ``rel/`` where no object was): a request more per
                # superseded file of every commit (5 in a 5-partition commit). Keys below ``rel/`` (a
                # "directory" there) are left as they are, never deleted: on S3 they block nothing
                # (no EISDIR), and 'store check' names stray keys, '--repair' sets them aside.
                # Not pyarrow's delete_file: it PUT an empty marker for the parent after each delete,
                # and an object stored under that key ('up/a/') lost its bytes at every commit
                self.objects().delete(rel)
            else:
                self.fs.delete_file(self.p(rel))

    def delete_files(self, rels: list[str]) -> None:
        """Delete these files (nothing there is no error), as :meth:`delete` does each. On S3 in
        one request per 1,000 keys where there are 2 or more (:meth:`S3Objects.delete_many`: a
        DeleteObjects, whose keys are deleted in no particular order), else one DELETE."""
        if self.scheme == "s3" and len(rels) > 1:
            self.objects().delete_many(rels)
            return
        for rel in rels:
            self.delete(rel)

    def rmtree(self, rel: str) -> None:
        """Delete the directory ``rel`` and all below it; failures are ignored (garbage, collected
        again later). On S3 its objects through boto3: pyarrow's ``delete_dir`` then PUT an empty
        ``<parent>/`` marker, replacing the bytes of an object stored at ``_staging/``."""
        with contextlib.suppress(FileNotFoundError, OSError):
            if self.scheme == "s3":
                objs = self.objects()
                objs.delete_many(objs.sizes(rel))
            else:
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


#: ``link(2)``'s errors on a filesystem without hard links (EPERM on Linux, ENOTSUP or ENOSYS on
#: FUSE, EXDEV where a volume maps directories to devices); not EACCES, a real permission error.
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV})


def _move_across(src: str, dst: str, err: OSError) -> None:
    """:meth:`_Files.move` of a regular file or a symbolic link to another filesystem (EXDEV: a
    partition directory moved to another disk and linked back, as :meth:`_Files.sizes` reads it):
    ``rename`` cannot, and the commit whose file went there stayed unfinished for good, every later
    commit and ``store check`` failing with "Invalid cross-device link". The bytes are copied to a
    hidden name beside ``dst`` (plain readers skip names starting with '.'), fsynced and renamed
    into place, so ``dst`` appears whole or not at all; then ``src`` is removed. Anything else (a
    directory, a FIFO) is ``err``: it is never opened."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        os.unlink(src)
        return
    if not stat.S_ISREG(st.st_mode):
        raise err
    import shutil

    tmp = os.path.join(os.path.dirname(dst), f".tmp-{os.getpid()}-{os.path.basename(dst)}")
    try:
        shutil.copyfile(src, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(dst))
    os.unlink(src)


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


def _parse_parquet(data: bytes, schema: pa.Schema | None = None) -> pa.Table:
    """Parquet bytes as a table, on this thread.

    With ``schema``: its columns in its order, a column the file lacks as nulls, cast to its types
    and nullability (a null in a required column raises, so a corrupt file that still decodes
    fails here, on its own). ``ParquetFile`` over a buffer with ``use_threads=False`` starts no
    Arrow thread pool worker: ``pq.read_table`` (and a read by path) does, and such a worker torn
    down at interpreter exit aborted ``meta-study store check`` under load with "terminate called
    without an active exception" (exit -6; apache/arrow#34314, #39862). Costs nothing here: a
    store file is one partition, parsed in milliseconds."""
    f = pq.ParquetFile(pa.BufferReader(data))
    if schema is None:
        return f.read(use_threads=False)
    have = set(f.schema_arrow.names)
    t = f.read(columns=[n for n in schema.names if n in have], use_threads=False)
    cols = [t.column(n) if n in have else pa.nulls(t.num_rows, schema.field(n).type) for n in schema.names]
    return pa.Table.from_arrays(cols, names=schema.names).cast(schema)



def _first_line(e: BaseException) -> str:
    """A reader's error as a short phrase: first line, first sentence, without the path that
    pyarrow repeats (the caller names the file)."""
    lines = str(e).strip().splitlines()
    text = re.sub(r"Could not open Parquet input source '[^']*': ", "", lines[0] if lines else type(e).__name__)
    return _shortened(text.split(". ")[0].rstrip("."))


#: The most characters of an error's phrase shown (~6 terminal lines). It was 200, cut from the
#: end: "Could not resolve host: lab.s3.us-east-1.amazonaws.c", "Failed to connect to 1".
FIRST_LINE_CHARS = 500


def _shortened(text: str, limit: int = FIRST_LINE_CHARS) -> str:
    """``text`` whole up to ``limit`` characters, else its start and its end with " … " between:
    the host, port or code a network error names comes at its end, and stays."""
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return f"{text[:keep]} … {text[-keep:]}"
