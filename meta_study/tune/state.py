"""A sweep's own state, next to Tune's experiment state in the storage path, never only on the
head node's disk.

    <storage>/<name>/                                 Tune's experiment directory
    <storage>/<name>/meta_study/sweep.json            the sweep record (:class:`SweepRecord`)
    <storage>/<name>/meta_study/runs/<trial>.<run>.<config key>   the trial -> MLflow run map: one object per run
    <storage>/<name>/meta_study/done/<config key>/<trial>.json   a finished trial's final metrics (trial.py)
    <storage>/<name>/meta_study/spool/<id>.jsonl      MLflow operations a writer could not send
    <storage>/<name>/meta_study/writer.json           the live writer's heartbeat
    <storage>/<name>/meta_study/driver.json           a resuming driver's claim, until its writer beats

``<storage>`` is a local or shared path, or any URI pyarrow reads (``s3://``, ``gs://``): a new
head node, or a laptop, resumes the sweep from it alone (with the MLflow server, which holds the
runs). Why these shapes:

- **Every write is atomic** but a local run-map entry's (:meth:`StateDir.add_run`, written in
  place: an entry left empty by a crash counts by its modification time). A local file is written
  to a temporary name and renamed; an object appears whole when its upload completes, or not at
  all. A reader never sees half a record.
  What the sweep cannot do without (the sweep record, the spool) is also fsynced, file and
  directory: a rename alone may reach the disk before the file's data, empty after a power loss.
- **No appends.** Object stores have none, so the run map is one object per run, its name holding
  the trial and the run id (its content only the time it was written, which decides between two
  entries of one trial): one LIST reads the whole map (1,000 names per request: 2 requests for
  2,000 trials), and adding a run is one PUT that never rewrites the others.
- **The spool** is one object per flush that gave up, deleted once its operations went out.
- **The writer's heartbeat** replaces a file lock, which object stores lack: a killed driver's
  writer still sending its queue beats every ``HEARTBEAT_S``; a resumed sweep's writer waits while
  the beat advances, and goes on once it stops (the writer died) or the file is gone (it finished).
  No clocks are compared, so skew between machines cannot fool it.

Nothing here imports Ray or MLflow (the writer process uses it).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Callable, Mapping

from ..errors import UserError

SUBDIR = "meta_study"
RECORD = "sweep.json"
RUNS = "runs"
SPOOL = "spool"
DAMAGED = ".damaged"       # a spool object with unreadable lines, kept aside under its name + this
WRITER = "writer.json"
HEARTBEAT_S = 5.0          # a live writer rewrites writer.json this often (one small PUT)
STALE_BEATS = 3            # unchanged for this many beats: the writer is dead
WRITER_WAIT_S = 120.0      # the longest a new writer waits for a live old one to finish its queue
DRIVER = "driver.json"     # a resuming driver's claim, from its check until its writer beats (DriverClaim)
CLAIM_SETTLE_S = 1.0       # a claim is read back this long after it is written: the later of two wins
CLAIM_MAX_S = 600.0        # a claim whose writer never beats (a driver that failed, its process alive) ends
#: seconds a reader waits for an empty sweep record to be written (create_record without hard
#: links creates it empty, then writes it: microseconds locally, seconds on a loaded machine or a
#: network mount such as gcsfuse or SMB, where 2 s refused a losing driver; a record left empty
#: by a writer that died is refused after this wait)
EMPTY_RECORD_WAIT_S = 15.0
#: errno of a filesystem without hard links (create_record falls back to O_EXCL)
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV})


def is_remote(uri: str) -> bool:
    """Whether a storage path is a URI of another filesystem than this machine's (``s3://``...)."""
    return "://" in uri and not uri.startswith("file://")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a path or a URI (a URI's query, such as ``?endpoint_override=``, stays
    at the end)."""
    head, sep, query = base.partition("?")
    return "/".join([head.rstrip("/"), *[p.strip("/") for p in parts]]) + (sep + query if sep else "")


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a local path or a URI."""
    import pyarrow.fs as pafs

    if is_remote(uri):
        from ..store._files import bounded_uri

        return pafs.FileSystem.from_uri(bounded_uri(uri))   # gs:// retried without end: a bound
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(path)


@dataclass(frozen=True)
class Session:
    """One start or resume of a sweep: what ran, and who ran it."""

    started: str                 # ISO time, UTC
    code: str                    # provenance.code_version()
    git_sha: str
    researcher: str
    resume: bool = False
    code_changed: bool = False   # resumed with other code than the previous session's (allowed)


@dataclass(frozen=True)
class SweepRecord:
    """What a sweep is: its MLflow home and its sessions.

    Attributes:
        sweep: the sweep's name (Tune's experiment name).
        experiment, experiment_id, parent_run_id: where its runs are in MLflow.
        tracking_uri: the tracking URI without credentials.
        sessions: every start and resume, oldest first.
        settings: what the sweep was started with that a resume cannot change (``Tuner.restore``
            keeps the first session's search space and sample count): every trial's fixed config
            (``--set``, ``--us-task``, ``--ds-task``, ``--smoke``), ``num_samples``, and
            ``max_concurrent`` and ``max_failures`` (since 2026-12-04; a record without them
            compares neither), and ``search_space``, a fingerprint of a search space that is a
            plain mapping (since 2026-12-05; ``runner.space_fingerprint``). Empty in records
            written before 2026-12-03 (nothing to compare).
    """

    sweep: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    sessions: tuple[Session, ...] = field(default_factory=tuple)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> "SweepRecord":
        """The record in ``d`` (sweep.json's content). Raises ValueError saying why ``d`` is none: not
        an object, a field missing, or fields this version does not know (a newer one wrote it)."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        need = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        # every version wrote them as strings: a null (a hand edit) was a TypeError traceback later
        # (``--resume``'s "pass --tracking-uri " + None), or a search for runs of parent 'None'
        not_str = [k for k in need if not isinstance(d[k], str)]
        if not_str:
            raise ValueError(f"{', '.join(not_str)}: not a string")
        sessions = d.get("sessions", [])
        if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
            raise ValueError("its sessions are not a list of objects")
        if not isinstance(d.get("settings", {}), dict):
            raise ValueError("its settings are not an object")
        known, known_s = {f.name for f in fields(cls)}, {f.name for f in fields(Session)}
        unknown = [k for k in d if k not in known] + [f"sessions[{i}].{k}" for i, s in enumerate(sessions)
                                                      for k in s if k not in known_s]
        if unknown:
            raise ValueError(f"fields this meta-study does not know: {', '.join(unknown)} (written by a newer "
                             "meta-study? resume with that version)")
        try:
            return cls(**{**d, "sessions": tuple(Session(**s) for s in sessions)})
        except TypeError as e:      # a session without a field Session needs
            raise ValueError(f"a session is incomplete ({e})") from None

    def with_session(self, s: Session) -> "SweepRecord":
        return replace(self, sessions=(*self.sessions, s))


def _json_bytes(obj: Any) -> bytes:
    """A state file's bytes: indented, sorted keys (diffable by eye)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def write_file_durably(tmp: str, path: str, data: bytes) -> None:
    """``data`` into ``tmp``, fsynced, renamed to ``path``, and the directory fsynced (the rename
    itself durable)."""
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def _create_file(path: str, data: bytes, *, durable: bool = False) -> bool:
    """``data`` as a new file ``path``, whole when it appears (a temporary file hard-linked to the
    name; ``O_EXCL`` where there are no hard links: a mount without hard links, gcsfuse, some SMB
    and FUSE filesystems, where ``link`` was the sweep's first error): False if the name exists.
    ``durable``: the data fsynced before the link, and the new name after it."""
    parent = os.path.dirname(path)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}"
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        # O_EXCL still creates the name only if it is absent; the file is whole once this
        # returns (a reader between open and write is the losing driver, which reads nothing)
        return StateDir._create_exclusive(path, data)
    finally:
        os.unlink(tmp)
    if durable:
        fsync_dir(parent)          # the new name itself durable
    return True


def fsync_dir(path: str) -> None:
    """fsync a directory: the names renamed or linked into it last survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:      # a filesystem whose directories take no fsync (some network mounts)
        pass
    finally:
        os.close(fd)


class StateDir:
    """The ``meta_study/`` directory of a sweep, on a local path or an object store."""

    def __init__(self, experiment_dir: str) -> None:
        self.experiment_dir = experiment_dir
        self.uri = join(experiment_dir, SUBDIR)
        self._runs_dir_made = False
        # beat file -> what the last wait on it saw as it ended (Heartbeat.wait_for_previous: None
        # when there was none): the stale claim a DriverClaim may take over, and no other
        self.seen: dict[str, dict[str, Any] | None] = {}

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.uri)

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    def path(self, name: str) -> str:
        return self._fs[1].rstrip("/") + "/" + name

    # ---- files ------------------------------------------------------------------------------

    def read_bytes(self, name: str) -> bytes | None:
        fs = self._fs[0]
        try:
            with fs.open_input_stream(self.path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:   # pyarrow's S3 says "Path does not exist" as an OSError
            if "does not exist" in str(e) or "NoSuchKey" in str(e):
                return None
            self._raise_if_refused(e)
            raise

    def _raise_if_refused(self, e: OSError) -> None:
        """The one-line :class:`UserError` (exit 2) for credentials the object store refused: it
        was "When reading information for key '…/sweep.json' in bucket 'lab': AWS Error
        ACCESS_DENIED during HeadObject operation: No response body." (exit 1)."""
        if not self.remote:
            return
        from ..store._files import credentials_refused, credentials_refused_error, display_uri

        if why := credentials_refused(e):
            raise credentials_refused_error(display_uri(self.uri), why) from None

    def write_bytes(self, name: str, data: bytes, *, durable: bool = False) -> None:
        """Write atomically: a temporary file renamed locally, one object upload remotely.

        ``durable`` (locally): the file is fsynced before the rename and its directory after it,
        so that a power loss leaves the old content or the new, never an empty file (ext4 and XFS
        may write a renamed file's data after the rename itself); ~2 ms more on a disk. For what
        the sweep cannot do without (the sweep record, the spool), not for the heartbeats."""
        fs, _ = self._fs
        path = self.path(name)
        parent = path.rsplit("/", 1)[0]
        if not self.remote:
            fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}"
            if durable:
                write_file_durably(tmp, path, data)
                return
            try:
                with fs.open_output_stream(tmp) as f:
                    f.write(data)
                fs.move(tmp, path)            # rename(2): atomic on POSIX filesystems
            except BaseException:
                # a full disk: the writer's heartbeat failed every 5 s and left one empty .tmp-
                # file each time (720 an hour), none ever removed
                with contextlib.suppress(OSError):
                    fs.delete_file(tmp)
                raise
        else:
            with fs.open_output_stream(path) as f:    # the object exists once the upload completes
                f.write(data)

    def read_json(self, name: str) -> Any | None:
        data = self.read_bytes(name)
        return None if data is None else json.loads(data)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, _json_bytes(obj))

    def delete(self, name: str) -> None:
        try:
            self._fs[0].delete_file(self.path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            if "does not exist" not in str(e) and "NoSuchKey" not in str(e):
                raise

    def names(self, sub: str) -> list[str]:
        """The file names directly under ``sub`` (none if it does not exist)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.path(sub), allow_not_found=True, recursive=False)
        infos = self._fs[0].get_file_info(sel)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File
                      and not i.base_name.startswith(".tmp-"))

    # ---- the sweep record ---------------------------------------------------------------------

    def read_record(self) -> SweepRecord | None:
        """The sweep record, or None if there is none.

        Raises:
            UserError: one line naming the file: it is no sweep record (cut short, another
                program's, a newer meta-study's), or a file stands where the sweep's directory goes.
        """
        shown = join(self.uri.partition("?")[0], RECORD) if self.remote else self.path(RECORD)
        try:
            data = self.read_bytes(RECORD)
        except NotADirectoryError:        # STORAGE/NAME (or its meta_study/) is a file
            raise UserError(f"{self.experiment_dir}: not a sweep directory (a file is where {shown} needs a "
                            "directory): pass another --name or --storage-path") from None
        # an empty record is one being created on a mount without hard links (create_record's
        # O_EXCL fallback: created empty, then written): read again for up to EMPTY_RECORD_WAIT_S
        # before judging it; a losing driver read it there at once and was told "not JSON"
        if data is not None and not data:
            deadline = time.monotonic() + EMPTY_RECORD_WAIT_S
            while data is not None and not data and time.monotonic() < deadline:
                time.sleep(0.05)
                data = self.read_bytes(RECORD)
        if data is None:
            return None
        try:
            d = json.loads(data)
        except ValueError:                # UnicodeDecodeError is one too
            raise UserError(f"{shown}: not a sweep record (not JSON: a write cut short?); restore it, or pass "
                            "another --name for a new sweep") from None
        try:
            return SweepRecord.from_json(d)
        except ValueError as e:
            raise UserError(f"{shown}: not a sweep record ({e})") from None

    def write_record(self, rec: SweepRecord) -> SweepRecord:
        """Replace the sweep record (each resume adds its session), durably: without it the
        sweep's parent run, experiment and settings are lost. Returns the record written.

        A resume's record is the one it read, plus its session (``rec.sessions[-1]``); read before
        the resume waited out the sweep's previous driver (which wrote its own session meanwhile),
        the whole record replaced that driver's session: the stored record's later sessions are
        kept, and this one goes after them. One GET more per resume."""
        new = rec.sessions[-1] if rec.sessions else None
        if new is not None and new.resume:
            try:
                stored = self.read_record()
            except (UserError, OSError):    # damaged, or not read: replaced, as before
                stored = None
            base = rec.sessions[:-1]
            if (stored is not None and stored.parent_run_id == rec.parent_run_id and new not in stored.sessions
                    and len(stored.sessions) > len(base) and stored.sessions[:len(base)] == base):
                rec = replace(rec, sessions=(*stored.sessions, new))
        self.write_bytes(RECORD, _json_bytes(asdict(rec)), durable=True)
        return rec

    def create_record(self, rec: SweepRecord) -> bool:
        """Write a new sweep's record only if there is none: False if another driver's record is
        there (two drivers started the same sweep at once; exactly one of them wins).

        Locally: the record is written to a temporary name and hard-linked to ``sweep.json``
        (``link(2)`` fails if the name exists, atomically). On ``s3://``: one PUT with
        ``If-None-Match: *`` (S3, MinIO and Ceph RGW speak it); a 412 is read back, since a retried
        PUT whose first reply was lost gets one for its own record. Other object stores (``gs://``)
        have no create-if-absent that pyarrow exposes: the record is read back
        :data:`CLAIM_SETTLE_S` after writing (as :class:`DriverClaim` is), and a record of another
        parent run means this driver lost.
        """
        data = _json_bytes(asdict(rec))
        if not self.remote:
            fs, _ = self._fs
            path = self.path(RECORD)
            parent = path.rsplit("/", 1)[0]
            fs.create_dir(parent, recursive=True)
            return _create_file(path, data, durable=True)
        if self.uri.startswith("s3://"):
            from ..store._files import display_uri
            from ..store._s3 import S3Objects

            shown = display_uri(self.uri)   # secrets masked: s3://KEY:SECRET@... named SECRET in this line
            try:
                if S3Objects(self.uri, shown).create(RECORD, data) is not None:
                    return True
                # the name is taken; by this very PUT when its reply was lost and botocore's retry
                # got 412: the record then names this driver's parent run, and this driver won
                back = self.read_record()
                return back is not None and back.parent_run_id == rec.parent_run_id
            except FileNotFoundError:     # S3 answered 404: no such bucket
                raise UserError(f"{shown}: cannot write the sweep record: no such bucket "
                                "at this endpoint") from None
            except OSError as e:              # one line already (S3Objects), without secrets
                raise UserError(f"cannot write the sweep record: {e}") from None
        if self.read_bytes(RECORD) is not None:
            return False
        self.write_bytes(RECORD, data)
        # read back at once, each of two drivers that both found no record read its own and won:
        # both ran the sweep, the first one's record overwritten. After the settle, the later
        # write is what both read (GCS reads after writes are consistent); 1 s at a sweep's start
        time.sleep(CLAIM_SETTLE_S)
        back = self.read_record()
        return back is not None and back.parent_run_id == rec.parent_run_id

    @staticmethod
    def _create_exclusive(path: str, data: bytes) -> bool:
        """``data`` as a new file ``path`` (``O_CREAT | O_EXCL``), fsynced with its directory: False
        if the name exists."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)      # no record cut short for a later --resume to refuse
            raise
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(path))
        return True

    # ---- the run map --------------------------------------------------------------------------

    def _run_files(self) -> list[tuple[str, int]]:
        """(name, modification time in ns) of every entry of the run map, by name (one LIST)."""
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.path(RUNS), allow_not_found=True, recursive=False)
        return sorted((i.base_name, i.mtime_ns or 0) for i in self._fs[0].get_file_info(sel)
                      if i.type == pafs.FileType.File and not i.base_name.startswith(".tmp-")
                      and len(i.base_name.split(".")) in (2, 3) and all(i.base_name.split(".")))

    def run_entries(self) -> list[tuple[str, str, str | None]]:
        """(trial id, MLflow run id, config key or None) of every entry of the run map."""
        out = []
        for n, _ in self._run_files():
            parts = n.split(".")
            out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
        return out

    def runs(self) -> dict[str, str]:
        """trial id -> MLflow run id. A trial with two entries (a run adopted by reconciliation
        after the writer had mapped another) gets the one written last: by the time each entry
        holds (:meth:`add_run`), else its modification time (entries written before 2026-12-04
        are empty). One GET per entry of such a trial only; the names sort by run id, which is
        random, and took the wrong run half the time."""
        by_trial: dict[str, list[tuple[str, str, int]]] = {}    # trial -> (entry name, run id, mtime in ns)
        for n, mtime_ns in self._run_files():
            parts = n.split(".")
            by_trial.setdefault(parts[0], []).append((n, parts[1], mtime_ns))
        out: dict[str, str] = {}
        for trial, entries in by_trial.items():
            if len(entries) == 1:
                out[trial] = entries[0][1]
                continue

            def written(e: tuple[str, str, int]) -> tuple[int, str]:
                data = (self.read_bytes(f"{RUNS}/{e[0]}") or b"").strip()
                return (int(data) if data.isdigit() else e[2]), e[0]
            out[trial] = max(entries, key=written)[1]
        return out

    def add_run(self, trial_id: str, run_id: str, config_key: str | None = None) -> None:
        """Record a trial's run; ``config_key`` (what the trial trains) lets a resumed sweep give a
        run whose trial was lost to the same configuration drawn again (Tune trial ids and run
        ids hold no dots). The entry holds the time it was written (ns since the epoch, ~19
        bytes), rewritten when the same entry is added again: :meth:`runs` takes a trial's latest.
        Locally one open-write-close (~25 us, against ~300 us through pyarrow's
        write-and-rename); an entry a crash left empty counts by its modification time."""
        name = f"{RUNS}/{trial_id}.{run_id}" + (f".{config_key}" if config_key else "")
        stamp = str(time.time_ns()).encode()
        if self.remote:
            self.write_bytes(name, stamp)
            return
        path = self.path(name)
        if not self._runs_dir_made:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._runs_dir_made = True
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, stamp)
        finally:
            os.close(fd)

    # ---- the spool ----------------------------------------------------------------------------

    def spool(self, lines: list[str], *, at_ns: int | None = None) -> str:
        """Write one spool object of JSON lines; returns its name. Objects replay in name order,
        which is their time in ns: now, or ``at_ns`` (the writer's choice: operations in flight
        before those it spooled already, an object after every one it replayed)."""
        name = f"{time.time_ns() if at_ns is None else at_ns}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
        self.write_bytes(f"{SPOOL}/{name}", ("\n".join(lines) + "\n").encode(), durable=True)
        return name

    def spooled(self) -> list[tuple[str, list[str]]]:
        """(name, lines) of every spool object, oldest first (not those kept aside as damaged).
        Bytes that are not UTF-8 (a damaged disk) come as ``\\xNN`` text, which no JSON parser
        takes: their line is the writer's to skip. A UnicodeDecodeError here left every spool
        object, the good ones too, unreplayed in every later session."""
        out = []
        for n in self.names(SPOOL):
            if n.endswith(DAMAGED):
                continue
            data = self.read_bytes(f"{SPOOL}/{n}")
            if data is not None:
                text = data.decode("utf-8", errors="backslashreplace")
                out.append((n, [x for x in text.splitlines() if x.strip()]))
        return out

    def drop_spooled(self, names: list[str]) -> None:
        for n in names:
            self.delete(f"{SPOOL}/{n}")


def read_heartbeat(state: StateDir, name: str = WRITER) -> dict[str, Any] | None:
    """``writer.json`` (or another beat file: ``name``; None: no writer). One that does not parse (a
    write cut short) is a beat all the same, named by its bytes: a live writer's next beat replaces
    it, so it advances; a dead writer's stays as it is, so it goes stale. It was a JSONDecodeError
    out of ``--resume``."""
    data = state.read_bytes(name)
    return None if data is None else _beat_of(data, name)


def _beat_of(data: bytes, name: str) -> dict[str, Any]:
    """A beat file's bytes as :func:`read_heartbeat` gives them."""
    try:
        d = json.loads(data)
    except ValueError:
        d = None
    if isinstance(d, dict):
        return d
    return {"owner": f"? (unreadable {name})", "beat": hashlib.sha256(data).hexdigest()}


class Heartbeat:
    """The writer's heartbeat in ``writer.json`` (see the module doc): one live writer per sweep.

    Args:
        state: the sweep's state directory.
        every_s: seconds between beats.
        log: where "waiting for ..." lines go.
    """

    def __init__(self, state: StateDir, *, every_s: float = HEARTBEAT_S,
                 log: Callable[[str], None] = lambda m: None, name: str = WRITER) -> None:
        self.state = state
        self.name = name           # the beat file (DRIVER: a resuming driver's claim)
        self.every_s = every_s
        self.log = log
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_for_previous(self, max_wait_s: float = WRITER_WAIT_S) -> str:
        """Wait while another writer's beat advances. Returns why it stopped waiting: ``none``
        (no other writer), ``finished`` (its file went away), ``stale`` (its beat stopped: it
        died) or ``timeout``. What it saw last is kept in ``state.seen`` (:meth:`DriverClaim.take`
        takes over that claim only)."""
        d = self.state.seen[self.name] = read_heartbeat(self.state, self.name)
        if d is None:
            return "none"
        self.log(f"waiting for the previous writer {d.get('owner')} to finish its queue" if self.name == WRITER
                 else f"waiting for the driver {d.get('owner')} that is resuming this sweep to start its writer")
        last, seen = (d.get("owner"), d.get("beat")), time.monotonic()
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() < deadline:
            time.sleep(min(1.0, self.every_s / 2))
            d = self.state.seen[self.name] = read_heartbeat(self.state, self.name)
            if d is None:
                return "finished"
            now = (d.get("owner"), d.get("beat"))
            if now != last:
                last, seen = now, time.monotonic()
            elif time.monotonic() - seen > STALE_BEATS * self.every_s:
                return "stale"
        self.log(f"the previous {'writer' if self.name == WRITER else 'driver'} {last[0]} still beats after "
                 f"{max_wait_s:.0f} s; going on")
        return "timeout"

    def start(self) -> None:
        try:
            self._beat(0)
        except Exception:  # noqa: BLE001 - a missed beat only makes a new writer wait less; it raised
            pass           # out of the writer process's start, and killed it with its operations
        self._thread = threading.Thread(target=self._run, name="sweep-writer-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, n: int) -> None:
        self.state.write_json(self.name, {"owner": self.owner, "beat": n})

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.every_s):
            n += 1
            try:
                self._beat(n)
            except Exception:  # noqa: BLE001 - a missed beat only makes a new writer wait less
                pass

    def stop(self) -> None:
        """Stop beating and remove the file (if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            d = read_heartbeat(self.state, self.name)
            if d is not None and d.get("owner") == self.owner:
                self.state.delete(self.name)
        except Exception:  # noqa: BLE001 - the next writer sees a stale beat instead
            pass


class DriverClaim(Heartbeat):
    """A resuming driver's claim on its sweep (``driver.json``), from the moment it has waited out
    the previous writer until its own writer beats in ``writer.json``.

    Two ``--resume`` of one sweep started together both found no writer beating (a driver's writer
    starts only after Ray has, seconds to minutes later) and both ran: the same trials trained
    twice, each driver saving Tune's state over the other's, the sweep record losing one session.
    The claim closes that window as :meth:`StateDir.create_record` does: it is created only where
    there is none (``link(2)`` locally, ``If-None-Match: *`` on ``s3://``), or replaces only the
    stale claim the driver waited out (moved aside by ``rename(2)`` locally, ``If-Match`` on
    ``s3://``); any other claim found there means this driver lost. Elsewhere (``gs://``) it is
    written, read back :data:`CLAIM_SETTLE_S` later, and the driver whose claim is not there has
    lost (written then read back on every storage, a claim whose write landed after the other
    driver's read-back overwrote it, and both drivers went on). A
    driver that comes later sees the claim beat and waits, then sees the writer. Its beat ends
    once a writer beats (any other content of ``writer.json`` than at :meth:`take`), after
    :data:`CLAIM_MAX_S`, or with the process; the file goes with it.
    """

    def __init__(self, state: StateDir, *, every_s: float = HEARTBEAT_S, max_s: float = CLAIM_MAX_S) -> None:
        super().__init__(state, every_s=every_s, name=DRIVER)
        self.max_s = max_s
        self._writer_then: dict[str, Any] | None = None

    def take(self, settle_s: float = CLAIM_SETTLE_S) -> str | None:
        """Claim the sweep: where there is no claim, or over the stale one that the last wait on
        this state dir saw (``state.seen``, :meth:`Heartbeat.wait_for_previous`). None: it is this
        driver's (and it now beats); else the owner of the claim that won. ``settle_s``: how long
        a claim is left before it is read back, where the storage has no conditional writes."""
        self._writer_then = read_heartbeat(self.state)
        waited = self.state.seen.get(DRIVER)
        data = _json_bytes({"owner": self.owner, "beat": 0})
        if not self.state.remote:
            won = self._take_local(waited, data)
        elif self.state.uri.startswith("s3://"):
            won = self._take_s3(waited, data)
        else:
            won = None
        if won is None:             # no conditional write here: written, then read back
            self._beat(0)
            time.sleep(settle_s)
            won = (read_heartbeat(self.state, DRIVER) or {}).get("owner") == self.owner
        if not won:
            return str((read_heartbeat(self.state, DRIVER) or {}).get("owner", "?"))
        self._thread = threading.Thread(target=self._run, name="sweep-driver-claim", daemon=True)
        self._thread.start()
        atexit.register(self.stop)     # a driver that exits before its writer beats: no claim left to go stale
        return None

    def _take_local(self, waited: dict[str, Any] | None, data: bytes) -> bool:
        """The claim as a new file (``link(2)``), after moving aside the stale claim ``waited`` (one
        ``rename(2)``: of two drivers taking it over, one moves it). A claim other than ``waited``
        moved aside (written since the wait) is put back, and this driver lost."""
        path = self.state.path(DRIVER)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        if waited is not None:
            aside = f"{parent}/.tmp-{uuid.uuid4().hex[:12]}"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                pass                   # its driver ended it meanwhile: claimed as where there is none
            else:
                with open(aside, "rb") as f:
                    moved = f.read()
                try:
                    if _beat_of(moved, DRIVER) != waited:
                        _create_file(path, moved)      # another driver's live claim: back in place
                        return False
                finally:
                    os.unlink(aside)
        return _create_file(path, data)

    def _take_s3(self, waited: dict[str, Any] | None, data: bytes) -> bool | None:
        """The claim by conditional PUT: ``If-None-Match: *``, or ``If-Match`` the stale claim
        ``waited``. None where the endpoint has no conditional writes (or no boto3)."""
        from ..store._files import display_uri
        from ..store._s3 import NoSuchBucketError, S3Objects

        s3 = S3Objects(self.state.uri, display_uri(self.state.uri))
        try:
            cur = s3.get(DRIVER) if waited is not None else None
            if cur is not None and _beat_of(cur.data, DRIVER) != waited:
                return False           # another driver's live claim, written since the wait
            etag = s3.create(DRIVER, data) if cur is None else s3.replace(DRIVER, data, cur.etag)
        except NoSuchBucketError:
            raise
        except UserError:
            return None
        # refused: another driver's, or this one's own PUT whose reply was lost (a retry got 412)
        return etag is not None or (read_heartbeat(self.state, DRIVER) or {}).get("owner") == self.owner

    def _run(self) -> None:
        # writer.json is looked at every second (a GET on an object store, for the seconds until
        # the writer starts): a short session's writer can come and go between two beats
        n, end, next_beat = 0, time.monotonic() + self.max_s, time.monotonic() + self.every_s
        while not self._stop.wait(min(1.0, self.every_s)):
            try:
                w = read_heartbeat(self.state)
                if (w is not None and w != self._writer_then) or time.monotonic() > end:
                    break       # a writer beats now (this driver's): it guards the sweep from here
                if time.monotonic() >= next_beat:
                    n, next_beat = n + 1, time.monotonic() + self.every_s
                    self._beat(n)
            except Exception:  # noqa: BLE001 - a missed beat only makes another driver wait less
                pass
        try:
            d = read_heartbeat(self.state, DRIVER)
            if d is not None and d.get("owner") == self.owner:
                self.state.delete(DRIVER)
        except Exception:  # noqa: BLE001 - another driver sees a stale claim instead
            pass

    def stop(self) -> None:
        """End the claim now (the file too, if it is still this driver's)."""
        atexit.unregister(self.stop)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)      # its last act removes the file
        else:
            super().stop()
