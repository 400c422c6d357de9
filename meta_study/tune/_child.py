"""The writer child process (``python -m meta_study.tune.writer``): operations in on stdin, flush
replies out on stdout.

The first line on stdin is the credentials the driver resolved (never on the command line, which
``ps`` shows); every further line is an :class:`Op` or a flush request. At end of input (a normal
close, or the driver died) the child sends what it has, spools the rest and exits. It holds
``mlflow_writer.lock`` in the experiment directory while it runs, so that a resumed sweep's writer
waits for it before reading the trial -> run map.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._shards import MlflowWriter, Op, SweepTarget

LOCK_FILE = "mlflow_writer.lock"
LOCK_WAIT_S = 120.0               # a dead driver's writer gets this long to finish its queue


def _lock_state_dir(state_dir: str) -> Any:
    """Hold the experiment directory's writer lock (waiting up to LOCK_WAIT_S for an orphaned
    writer of a killed driver to finish). The lock goes with the process."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    f = open(Path(state_dir) / LOCK_FILE, "a")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except OSError:
            if time.monotonic() > deadline:
                print(f"meta-study writer: {state_dir}: another writer still holds {LOCK_FILE}; going on",
                      file=sys.stderr)
                return f
            time.sleep(0.2)


def _serve(args: dict[str, Any]) -> None:
    """The child: read operations from stdin, answer flushes on (the original) stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything a library prints goes to stderr, not the replies
    try:
        os.nice(10)                    # background work: the driver's scheduling goes first
    except OSError:
        pass
    target = SweepTarget(**args)
    lock = _lock_state_dir(target.state_dir)
    w = MlflowWriter(target)
    first = sys.stdin.readline()
    w.creds = json.loads(first)["creds"] if first else None
    w.setup()
    for line in sys.stdin:
        d = json.loads(line)
        if "flush" in d:
            ok = w.flush(timeout_s=float(d["flush"]))
            # cpu_s: this process's CPU seconds so far (all threads), for the overhead benchmark
            reply.write(json.dumps({"ok": ok, "errors": w.errors, "cpu_s": time.process_time()}) + "\n")
        else:
            w.put(Op(**d))
    w.flush()                          # end of input: a normal close, or the driver died
    del lock
