"""The writers' lock of a store.

On a local filesystem ``fcntl.flock`` on ``_meta/LOCK`` serializes writers (released by the kernel
if a writer dies). On object stores, which have no locks, a lease file stands in; it is best
effort, so run one writer per object-store store (the refit job) or keep the store on a shared
filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from typing import Iterator

from ..errors import StoreLockedError
from ._files import _Files, _now


@contextlib.contextmanager
def _local_lock(path: str, timeout_s: float, what: str) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    try:
                        holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
                    except OSError:
                        holder = "?"
                    raise StoreLockedError(f"{what}: locked by another writer ({holder or 'unknown'}) "
                                           f"for more than {timeout_s:g} s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now().isoformat()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock; the kernel also releases it if we are killed


@contextlib.contextmanager
def _lease_lock(files: _Files, timeout_s: float, what: str, lease_s: float = 600.0) -> Iterator[None]:
    """Best-effort lock for object stores: a lease file with an owner and an expiry."""
    rel = "_meta/LEASE.json"
    me = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        held = None
        if files.exists(rel):
            with contextlib.suppress(Exception):
                held = json.loads(files.read_bytes(rel))
        if held is None or held.get("expires", 0) < time.time():
            files.write_bytes(rel, json.dumps({"owner": me, "expires": time.time() + lease_s}).encode())
            time.sleep(0.5)  # let a racing writer's lease land, then check who won
            with contextlib.suppress(Exception):
                if json.loads(files.read_bytes(rel)).get("owner") == me:
                    break
        if time.monotonic() > deadline:
            raise StoreLockedError(f"{what}: lease held by another writer for more than {timeout_s:g} s")
        time.sleep(1.0)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            if json.loads(files.read_bytes(rel)).get("owner") == me:
                files.delete(rel)
