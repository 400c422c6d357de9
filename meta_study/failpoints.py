"""Named fault-injection points for the crash and concurrency tests and for external checks
(the store's commit protocol, the sweep driver). Unset, each point costs one environment lookup."""

from __future__ import annotations

import os
import time

HITS: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Stop or stall here when the environment asks (the store's writers, the sweep driver).

    ``META_STUDY_FAILPOINT=name`` (or ``name:N`` for the N-th time this point is reached): the
    process stops here, announcing ``failpoint name`` on stderr, until it is killed.
    ``META_STUDY_FAILPOINT=stall_name``: it announces ``failpoint stall_name``, sleeps
    ``META_STUDY_STALL_S`` seconds (default 10), and goes on, as a slow PUT or a long GC pause
    would (``stall_before_publish``: just before the commit point). With
    ``META_STUDY_STALL_UNTIL=PATH`` it goes on as soon as PATH exists instead (``STALL_S`` is then
    the longest it waits): a test orders two writers by a condition, not by a race against the
    clock. One environment lookup when unset."""
    spec = os.environ.get("META_STUDY_FAILPOINT")
    if not spec:
        return
    point = spec.split(":")[0]
    if point not in (name, f"stall_{name}"):
        return
    HITS[point] = HITS.get(point, 0) + 1
    if ":" in spec and HITS[point] != int(spec.split(":")[1]):
        return
    import sys

    print(f"failpoint {point}", file=sys.stderr, flush=True)
    if point != name:
        until, longest = os.environ.get("META_STUDY_STALL_UNTIL"), float(os.environ.get("META_STUDY_STALL_S", "10"))
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline and not (until and os.path.exists(until)):
            time.sleep(min(0.05, longest))
        return
    while True:
        time.sleep(3600)
