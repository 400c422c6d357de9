"""The writers' lock of a store: who may commit now.

**Local filesystems**: ``fcntl.flock`` on ``_meta/LOCK``. The kernel releases it when the
holder exits or dies, so it is never stale; the file records the holder (pid, host, user, since)
for messages.

**Object stores (s3://)**: a lease object ``_meta/LEASE.json`` written only with conditional
PUTs (see :mod:`._s3`):

- *take*: create it if absent (``If-None-Match: *``); if present and released, or expired
  (not renewed for its ``lease_s``, judged on the server's clock), replace it if it is still the
  version we read (``If-Match: <etag>``). Of two writers racing for it, exactly one succeeds.
- *hold*: a heartbeat thread renews it every ``lease_s / 4`` with ``If-Match`` on our last
  ETag, so a long commit keeps a short lease. A renewal that fails its precondition while the
  object holds no live record of ours (a renewal of ours that landed unanswered is still ours)
  means the lease was broken (``store unlock``) or taken over after expiring (this process was
  paused): the lease is *lost* and the heartbeat stops.
- *confirm*: the store's commit point (a version's manifest) first confirms the lease is still
  ours (:meth:`_Heartbeat.confirm`), from the heartbeat's verdict or, if it saw nothing, by
  reading the lease object; a lost lease fails it with :class:`LeaseLostError` before anything
  is published.
- *release*: replace it with a released record (``If-Match``): the lease object is never deleted,
  so every change to it is conditional. Only the process that took it releases it, never a
  child forked while it was held.
- *wait*: a writer that finds the lease held says once who holds it (pid, host, user, since),
  until when, and how to break it (``meta-study store unlock STORE``), then polls until it is
  released, expires or ``timeout_s`` passes (a one-line :class:`StoreLockedError`).

The lease is for liveness only (writers queue instead of racing). What keeps the store correct
when two writers do run at once (a lease expired under a paused writer, or was broken) is the
commit protocol in :mod:`._store`: the manifest of a version is created only if absent, and a
writer only ever deletes its own staging directory or those of versions already decided.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import math
import os
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import StoreConflictError, StoreLockedError, UserError
from ._files import _now, kind_of_mode
from ._s3 import S3Object, S3Objects

LEASE = "_meta/LEASE.json"
#: Default lease of an object-store writer, in seconds; ``META_STUDY_LEASE_S`` overrides it. A
#: heartbeat renews it every quarter, so it only bounds how long a *dead* writer blocks others.
LEASE_S = 60.0
#: The longest lease a writer may take, in seconds (a day). Longer ones overflowed the expiry's
#: datetime (``1e12``, ``inf``): the heartbeat died, and every later writer and ``store unlock``
#: failed with a traceback, even after the lease was released.
MAX_LEASE_S = 86400.0
#: Pause between two tries of a lease write another writer's write beat (seconds; taking a free
#: lease, it doubles with each failure up to the poll of a held one): an endpoint that answers
#: every conditional PUT with 409/412 must not be polled at full speed.
RETRY_S = 0.05

Notify = Callable[[str], None]


def lease_seconds() -> float:
    """The lease length writers take: ``META_STUDY_LEASE_S`` or :data:`LEASE_S` (at least 1 s,
    at most :data:`MAX_LEASE_S`); a :class:`UserError` for anything else."""
    raw = os.environ.get("META_STUDY_LEASE_S", "")
    if not raw:
        return LEASE_S
    try:
        return check_lease_s(float(raw), f"META_STUDY_LEASE_S={raw!r}")
    except ValueError:
        raise UserError(f"META_STUDY_LEASE_S={raw!r}: expected seconds, e.g. 60") from None


def check_lease_s(lease_s: float, what: str) -> float:
    """``lease_s`` if it is finite and at most :data:`MAX_LEASE_S` (raised to 1 s if shorter);
    a one-line :class:`UserError` naming ``what`` otherwise."""
    if not math.isfinite(lease_s) or lease_s > MAX_LEASE_S:
        raise UserError(f"{what}: a lease is at most {MAX_LEASE_S:g} seconds (a day); expected seconds, e.g. 60")
    return max(1.0, lease_s)


def _me() -> dict[str, object]:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "?"
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": user, "since": _now().isoformat(timespec="seconds")}


@dataclass(frozen=True)
class LockHolder:
    """Who holds a store's lock, as its lock file or lease records it."""

    pid: int | None
    host: str
    user: str
    since: str
    expires_at: str | None = None   # object stores: when the lease expires unless renewed
    expired: bool = False

    def describe(self) -> str:
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host} (user {self.user}, since {self.since})"

    @classmethod
    def from_record(cls, raw: bytes, expires_at: str | None = None, expired: bool = False) -> "LockHolder":
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise ValueError
        except (ValueError, RecursionError):   # a lock file of an older meta-study: free text (or junk)
            text = raw.decode(errors="replace").strip()[:200]
            return cls(None, text or "?", "?", "?", expires_at, expired)
        pid = d.get("pid")
        return cls(pid if isinstance(pid, int) else None, str(d.get("host", "?")), str(d.get("user", "?")),
                   str(d.get("since", "?")), expires_at, expired)


# ---- local: flock ---------------------------------------------------------------------------


class LockFileError(UserError):
    """Something other than a plain file stands where a local store's lock file goes (a FIFO, a
    directory, a device, a symbolic link): no writer can commit until it is removed. Not a
    store this user merely cannot write (``store check`` checks those without the lock)."""


#: Lock files' descriptors this process holds an flock on. A forked child (a ``commit_stream``
#: batch generator starting a multiprocessing pool, say) shares the lock: the kernel frees an
#: flock only once every descriptor of it is closed, so the lock outlived its writer, held by
#: the child, while ``store unlock`` and waiting writers named the writer that had exited. The
#: child closes its copies at once (closing a copy never frees the parent's lock).
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@contextlib.contextmanager
def _local_lock(path: str, timeout_s: float, what: str, notify: Notify | None = None) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    _refuse_a_special_lock_file(path)
    # O_NOFOLLOW: a symbolic link put there since the check is never followed out of the store.
    # 0o666, less the umask: every writer reopens this file to write its record, and with 0o644
    # the first user's lock file made every other user of a group-writable store fail with a
    # bare "[Errno 13] Permission denied" (the store's directories follow the umask too).
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        import errno

        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"{path}: cannot open the store's lock file for writing ({e.strerror}); a writer "
                            "needs write permission on it and on its directory (a store shared by a group: "
                            f"'chmod g+w {path}', and a umask such as 002 for every writer)") from None
        if e.errno != errno.ELOOP:
            raise
        raise LockFileError(f"{path}: is a symbolic link, not the store's lock file (a plain file); remove it and "
                            "run again") from None
    pid = os.getpid()
    try:
        start = time.monotonic()
        delay = 0.005
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited > timeout_s:
                    raise StoreLockedError(f"{what}: locked by another writer ({_read_holder(fd).describe()}) "
                                           f"for more than {timeout_s:g} s") from None
                if not told and waited > 2.0 and notify is not None:
                    notify(f"{what}: waiting for the writer holding its lock: {_read_holder(fd).describe()} "
                           "(a local lock is freed when that process exits or dies)")
                    told = True
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except OSError as e:
                raise _unlockable(e, path) from None
        _HELD.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        yield
    finally:
        _HELD.discard(fd)
        if os.getpid() == pid:   # a forked child's copy is closed already (_close_held_in_child)
            os.close(fd)  # closing releases the flock; the kernel also releases it if we are killed


def _refuse_a_special_lock_file(path: str) -> None:
    """A one-line :class:`UserError` if the lock file's name holds a directory, a FIFO, a device
    or a socket: opening a FIFO for reading blocks until a writer comes ('store unlock' hung),
    and flock or truncating one failed with a bare "[Errno 22] Invalid argument"."""
    try:
        # lstat: a symbolic link, even to nothing, is refused; opening one to nothing with
        # O_CREAT created its target, anywhere outside the store
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"{path}: the store's lock file cannot be used ({e.strerror}); remove it") from None
    if not stat.S_ISREG(mode):
        raise LockFileError(f"{path}: is {kind_of_mode(mode)}, not the store's lock file (a plain file); remove it "
                            "and run again")


def _read_holder(fd: int) -> LockHolder:
    try:
        return LockHolder.from_record(os.pread(fd, 4096, 0))
    except OSError:
        return LockHolder(None, "?", "?", "?")


def local_holder(path: str) -> LockHolder | None:
    """Who holds the flock on ``path`` now, or None if nobody does (probed without waiting)."""
    import fcntl

    _refuse_a_special_lock_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)   # a shared lock conflicts with a writer's
        except BlockingIOError:
            return _read_holder(fd)
        except OSError as e:
            raise _unlockable(e, path) from None
        return None
    finally:
        os.close(fd)


def _unlockable(e: OSError, path: str) -> OSError:
    """``flock``'s failure other than "held" (ENOLCK: a network filesystem whose lock service is
    unreachable or off) as an error naming the lock file: it was a bare "[Errno 37] No locks
    available" from every commit."""
    return OSError(e.errno, f"cannot lock the store's lock file ({e.strerror}; a network filesystem needs "
                   "working file locks, e.g. NFS with its lock service)", path)


# ---- object stores: a lease with conditional writes -----------------------------------------


def _expiry(obj_modified: _dt.datetime, lease_s: float) -> str:
    try:
        return (obj_modified + _dt.timedelta(seconds=lease_s)).isoformat(timespec="seconds")
    except (OverflowError, ValueError):   # cannot happen with a sane lease_s (_state_of): never a traceback
        return "?"


def _lease_state(objects: S3Objects) -> tuple[LockHolder | None, str | None, bool]:
    """(holder, etag, free) of the lease object: free when absent, released or expired."""
    return _state_of(objects.get(LEASE))


def _ours(obj: S3Object | None, body: bytes) -> str | None:
    """The ETag of the lease object if it holds a live record of this writer (the random owner id
    of ``body``, not released): a conditional PUT of ours that landed but whose reply was lost, so
    that the client's retry was answered 412, or that failed with an error after it landed. None
    if it holds anything else. By owner, not by bytes: a renewal's record differs from the one
    that landed unanswered a beat before (its ``renewed_at``), and the holder took its own lease
    for lost and never released it (the next writer waited a whole lease for a live holder)."""
    if obj is None:
        return None
    try:
        mine, rec = json.loads(body), json.loads(obj.data)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(mine, dict) and isinstance(rec, dict)):
        return None
    return obj.etag if mine.get("owner") and rec.get("owner") == mine.get("owner") and not rec.get("released") else None


def _state_of(obj: S3Object | None) -> tuple[LockHolder | None, str | None, bool]:
    if obj is None:
        return None, None, True
    try:
        rec = json.loads(obj.data)
        lease_s = float(rec.get("lease_s", LEASE_S))
        released = bool(rec.get("released"))
    except (ValueError, TypeError, AttributeError, RecursionError):   # unreadable ("[[[..." too deep for
        # json: a traceback from every writer and 'store unlock'): free once a full default lease has passed
        lease_s, released = LEASE_S, False
    if released:   # its lease_s no longer matters (one of 1e300 made the expiry overflow)
        return None, obj.etag, True
    if not (math.isfinite(lease_s) and 1.0 <= lease_s <= MAX_LEASE_S):   # a record no writer writes now
        lease_s = LEASE_S
    expired = obj.age_s > lease_s
    holder = LockHolder.from_record(obj.data, _expiry(obj.last_modified, lease_s), expired)
    return holder, obj.etag, expired


class LeaseLostError(StoreConflictError):
    """This writer's lease of the store was broken or taken over before its commit point: nothing
    of the commit was published. A :class:`StoreConflictError`: ``Store.commit`` takes the lease
    again and merges again; exit 1 from the command line."""


class _Heartbeat(threading.Thread):
    """Renews a held lease every ``lease_s / 4`` until stopped; sets ``lost`` if it cannot."""

    def __init__(self, objects: S3Objects, record: dict[str, object], etag: str, lease_s: float) -> None:
        super().__init__(name="meta-study-lease", daemon=True)
        self.objects, self.record, self.etag, self.lease_s = objects, record, etag, lease_s
        self.lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.lease_s / 4):
            if self.lost:   # found lost by confirm(): never renew a lease another writer may hold
                return
            rec = {**self.record, "renewed_at": _now().isoformat(timespec="seconds")}
            body = json.dumps(rec).encode()
            try:
                etag = self.objects.replace(LEASE, body, self.etag)
                if etag is None:   # our renewal landed and its reply was lost (the retry got 412)?
                    etag = _ours(self.objects.get(LEASE), body)
            except Exception:  # noqa: BLE001 - a network blip (OSError) or anything else: the next
                # beat tries again (the lease lasts four beats). Anything but OSError ended the
                # thread without a word: the lease expired under a writer that went on working.
                continue
            if etag is None:
                self.lost = True   # broken by 'store unlock', or taken over after we were paused
                return
            self.etag = etag

    def confirm(self, what: str) -> None:
        """A :class:`LeaseLostError` unless this writer still holds the lease: lost by the
        heartbeat's verdict, or, since a beat comes only every quarter lease (a writer paused
        past its lease resumes and reaches its commit point before its heartbeat runs again, and
        a renewal can hang in the S3 client's retries for longer than the lease), by the lease
        object read now: a record that is not this writer's live one. One GET per commit point.
        An expired lease that nobody took yet is still ours (the conditional create decides), and
        so is one that cannot be read now (the create, tried next, meets the same endpoint)."""
        if not self.lost:
            try:
                obj = self.objects.get(LEASE)
            except OSError:
                return
            if _ours(obj, json.dumps(self.record).encode()) is None:
                self.lost = True
        if self.lost:
            raise LeaseLostError(f"{what}: this writer's lease of the store was lost before its commit point (broken "
                                 "by 'meta-study store unlock', or taken over by another writer after it expired while "
                                 "this one was stalled); nothing of this commit was stored")

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop renewing; wait at most ``timeout_s`` (default :data:`STOP_WAIT_S`) for a renewal in
        flight. One that has not answered by then (an endpoint that accepts the request and never
        replies; the S3 client's own timeouts and retries add up to minutes per request) leaves the
        lease *lost*: whether that renewal landed cannot be known, so the lease is neither
        renewed again (the thread ends when the request returns) nor released (the release's
        conditional write would meet the same endpoint); it expires within one lease. It was a
        join without a bound: the command hung at its end, after its commit, holding the lease.
        True if the heartbeat ended."""
        self._stop_event.set()
        self.join(STOP_WAIT_S if timeout_s is None else timeout_s)
        if self.is_alive():
            self.lost = True
            return False
        return True


@contextlib.contextmanager
def _lease_lock(objects: S3Objects, timeout_s: float, what: str, lease_s: float,
                notify: Notify | None = None) -> Iterator[_Heartbeat]:
    """Hold the store's lease (module docstring); yields the heartbeat (``.lost``)."""
    lease_s = check_lease_s(lease_s, f"{what}: lease of {lease_s:g} s")
    record = {**_me(), "owner": uuid.uuid4().hex, "lease_s": lease_s}
    body = json.dumps(record).encode()
    start = time.monotonic()
    told: str | None = None
    poll = min(2.0, max(0.2, lease_s / 8))
    refused = 0   # conditional writes of a free lease that failed: backoff, and one notice
    while True:
        etag = objects.create(LEASE, body)
        if etag is not None:
            break
        obj = objects.get(LEASE)
        etag = _ours(obj, body)   # our create or takeover landed, its reply lost: never wait for ourselves
        if etag is not None:
            break
        holder, cur, free = _state_of(obj)
        if free and cur is not None:
            etag = objects.replace(LEASE, body, cur)
            if etag is not None:
                if holder is not None and notify is not None:
                    notify(f"{what}: took over the expired lease of {holder.describe()} (it expired at "
                           f"{holder.expires_at}: that writer died or stalled)")
                break
        if cur is None or free:
            # gone between our PUT and GET (a person deleted it), or another writer took it first:
            # look again soon, but never spin (an endpoint answering 409/412 to every write) and
            # never past the timeout
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise StoreLockedError(f"{what}: could not take the store's lease in {timeout_s:g} s: every "
                                       "conditional write of it failed (other writers kept taking it first, or "
                                       "the S3 endpoint refuses conditional writes)")
            refused += 1
            if notify is not None and waited > 2.0 and told != "refused":
                # an endpoint answering 409/412 to every write: it was ~60 requests a second, and
                # not a word until the timeout (15 minutes by default)
                notify(f"{what}: every conditional write of its lease has failed for {waited:.0f} s (other "
                       "writers keep taking it first, or the S3 endpoint refuses conditional writes); trying "
                       f"again until {timeout_s:g} s have passed")
                told = "refused"
            time.sleep(min(poll, RETRY_S * 2 ** min(refused - 1, 8)))
            continue
        assert holder is not None
        if time.monotonic() - start >= timeout_s:
            raise StoreLockedError(
                f"{what}: locked by another writer for more than {timeout_s:g} s: {holder.describe()}, lease "
                f"until {holder.expires_at} unless renewed; if that writer is dead, 'meta-study store unlock "
                f"{what}' breaks the lease")
        if notify is not None and told != holder.describe():
            notify(f"{what}: waiting for the writer holding its lease: {holder.describe()}, until "
                   f"{holder.expires_at} unless renewed; if that writer is dead, the lease expires then, or "
                   f"'meta-study store unlock {what}' breaks it now")
            told = holder.describe()
        time.sleep(poll)
    beat = _Heartbeat(objects, record, etag, lease_s)
    beat.start()
    pid = os.getpid()
    try:
        yield beat
    finally:
        # Only the process that took the lease releases it. A child forked inside this block (a
        # commit_stream batch generator calling os.fork) whose stack unwinds through it (sys.exit,
        # an exception) released the lease its parent still held and worked under: the next
        # writer went in beside it, and the parent's heartbeat found its lease lost.
        if os.getpid() == pid:
            if not beat.stop() and notify is not None:
                notify(f"{what}: the S3 endpoint did not answer the renewal of this writer's lease in "
                       f"{STOP_WAIT_S:g} s; the lease is left to expire (within {lease_s:g} s), not released")
            if not beat.lost:
                with contextlib.suppress(OSError):
                    released = json.dumps({**record, "released": True}).encode()
                    if objects.replace(LEASE, released, beat.etag) is None:
                        # a renewal landed unanswered just before the stop (beat.etag is stale):
                        # still ours, release it at its ETag, not leave it held for a whole lease
                        now = _ours(objects.get(LEASE), body)
                        if now is not None:
                            objects.replace(LEASE, released, now)


def lease_holder(objects: S3Objects) -> LockHolder | None:
    """Who holds the lease now (expired ones included, marked so), or None."""
    holder, _, _ = _lease_state(objects)
    return holder


def break_lease(objects: S3Objects) -> LockHolder | None:
    """Release the lease whoever holds it (``meta-study store unlock``); returns the holder it
    took the lease from, or None if it was free. Safe even if that writer is alive: the commit
    point lets at most one writer publish a version, so a broken writer's commit fails and is
    retried, never half-applied."""
    for _ in range(BREAK_TRIES):
        holder, etag, _ = _lease_state(objects)
        if holder is None or etag is None:
            return None
        rec = {"released": True, "broken_by": _me(), "broke": holder.describe()}
        if objects.replace(LEASE, json.dumps(rec).encode(), etag) is not None:
            return holder
        time.sleep(RETRY_S)   # it changed since we read it (renewed, taken): read it again
    raise OSError(f"{objects.shown}: could not break the lease: it changed under each of {BREAK_TRIES} conditional "
                  "writes (a writer renewing it that fast, or an S3 endpoint refusing conditional writes); run "
                  "'meta-study store unlock' again")


#: How long releasing a lease waits for a heartbeat renewal still in flight, in seconds (one
#: answers in well under a second); past it the lease is left to expire (:meth:`_Heartbeat.stop`).
STOP_WAIT_S = 10.0

#: Tries of ``store unlock`` before it gives up (each a GET and a conditional PUT, 0.05 s apart).
BREAK_TRIES = 100
