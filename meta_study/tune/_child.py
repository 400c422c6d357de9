"""The writer child process (``python -m meta_study.tune.writer``): operations in on stdin, flush
replies out on stdout.

The first line on stdin is the credentials the driver resolved (never on the command line, which
``ps`` shows); every further line is an :class:`Op` or a flush request. At end of input (a normal
close, or the driver died) the child sends what it has, spools the rest and exits. After a SIGTERM
(SIGHUP) it reads on for up to :data:`TERM_FLUSH_S` (the driver, signalled with it, sends its last
operations and a flush), then does the same. While it runs
it beats in ``meta_study/writer.json`` in the sweep's storage (:class:`~.state.Heartbeat`), and a
resumed sweep's writer waits for a beating writer to finish before it reads the trial -> run map,
on this machine or any other.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import IO, Any

from ..failpoints import failpoint
from ._shards import MlflowWriter, Op, SweepTarget
from .state import WRITER, WRITER_WAIT_S, Heartbeat, StateDir

LOCK_FILE = f"meta_study/{WRITER}"   # the heartbeat under the experiment dir (was a flock file)
LOCK_WAIT_S = WRITER_WAIT_S          # a dead driver's writer gets this long to finish its queue
#: after a SIGTERM, the writer reads on and sends for this long, then spools the rest: a service manager's stop
#: (systemd signals every process of the unit, then kills them 90 s later by default), SLURM's
#: scancel, a signal to the process group
TERM_FLUSH_S = 10.0


class _Terminated(Exception):
    """Raised by the SIGTERM (SIGHUP) handler to leave the read loop (a blocked read returns with it)."""


class _Lines:
    """The driver's lines from a file descriptor, read here rather than through ``sys.stdin``: the
    bytes read ahead stay in ``buf``, not in a text stream's buffer that a SIGTERM's exception
    leaves unreachable, and a read can wait for a time (:meth:`next`)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.pos, self.eof = fd, b"", 0, False    # buf[pos:]: not yet returned
        self.ready = select.poll()     # poll, not select: no limit on the descriptor's number
        self.ready.register(fd, select.POLLIN)

    def next(self, timeout_s: float | None = None) -> str | None:
        """The next line with its end of line; at end of input a last line cut short, then "".
        None when no line came within ``timeout_s`` (None: wait for one)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0 or self.eof:
                n = i + 1 if i >= 0 else len(self.buf)
                line, self.pos = self.buf[self.pos:n], n
                return line.decode("utf-8", "replace")
            if end is not None:
                left_ms = max(0, int((end - time.monotonic()) * 1000))
                if not self.ready.poll(left_ms):
                    return None
            data = os.read(self.fd, 1 << 16)
            self.buf, self.pos = self.buf[self.pos:] + data, 0   # what is left of the last read, and this one
            self.eof = not data


class _Loop:
    """The read loop's state: the reply stream, and whether the last line was a flush (answered)."""

    def __init__(self, w: MlflowWriter, reply: IO[str]) -> None:
        self.w, self.reply = w, reply
        # the last line was a flush, answered (its timeout): the driver closes next, and waits 60 s at most
        self.answered: float | None = None
        self.flushing: float | None = None   # a flush in progress (its timeout): a SIGTERM cut it short

    def take(self, line: str, cap_s: float | None = None) -> None:
        """Carry out one line of the driver's: queue an operation, or flush (for ``cap_s`` seconds
        at most) and answer."""
        w = self.w
        # a line cut short is the last one of a driver that died mid-write (a long line goes into
        # the non-blocking pipe in parts): it was a JSONDecodeError out of here, and every
        # operation queued but not yet sent died with this process, unspooled
        try:
            if not line.endswith("\n"):
                raise ValueError("no end of line: the driver died while writing it")
            d = json.loads(line)
            op = None if "flush" in d else Op(**d)
        except (ValueError, TypeError) as e:
            print(f"meta-study writer: skipped an unreadable operation line ({e}): {line[:200]!r}",
                  file=sys.stderr, flush=True)
            return
        if op is not None:
            w.put(op)
            self.answered = None
            return
        self.flush(float(d["flush"]) if cap_s is None else min(float(d["flush"]), cap_s))

    def flush(self, wait: float) -> None:
        """Flush for ``wait`` seconds at most, and answer the driver (which waits for the answer)."""
        w = self.w
        self.flushing = wait
        ok = w.flush(timeout_s=wait)
        self.flushing = None
        # cpu_s: this process's CPU seconds so far (all threads), for the overhead benchmark;
        # error: the last failed call's (no credentials); held: operations neither sent nor
        # spooled (the storage failed too), which live only in this process; dropped: steps
        # MLflow refused for good, so far (never sent, never spooled: the sweep is not complete)
        try:
            self.reply.write(json.dumps({"ok": ok, "errors": w.errors, "cpu_s": time.process_time(),
                                         "error": w.last_error, "held": w.held_ops, "dropped": w.dropped}) + "\n")
        except (OSError, ValueError):
            # the driver is gone (its end of the reply pipe closed): a BrokenPipeError traceback
            # out of this loop, and the operation lines still in stdin were never read; read
            # on to the end of input, replies to nowhere
            self.reply = open(os.devnull, "w")
        self.answered = wait


#: what ends this process as SIGTERM does: SIGHUP too (a terminal or SSH session that closed
#: signals the sweep's process group; it killed this process with its queue, nothing spooled)
_TERM_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _on_term(signum: int, frame: Any) -> None:
    for s in _TERM_SIGNALS:                         # once: a second one must not cut the flush short
        signal.signal(s, signal.SIG_IGN)
    raise _Terminated


def _take_creds(w: MlflowWriter, first: str) -> None:
    """Take the driver's first line: the credentials it resolved, and the MLflow workspace its
    client works in. The workspace goes into this process's ``MLFLOW_WORKSPACE`` too: the REST
    client sends it from the credentials, but this process's own MLflow client (artifacts, run
    look-ups) read it from the environment only, and a driver that chose it with
    ``mlflow.set_workspace`` (no variable) had that client work in the default workspace."""
    try:
        w.creds = json.loads(first)["creds"] if first.endswith("\n") else None
    except (ValueError, TypeError, KeyError):   # cut short: the driver died at once; MLflow's own resolution
        w.creds = None
    workspace = w.creds.get("workspace") if isinstance(w.creds, dict) else None
    if isinstance(workspace, str) and workspace.strip():
        os.environ["MLFLOW_WORKSPACE"] = workspace.strip()


def _serve(args: dict[str, Any]) -> None:
    """The child: read operations from stdin, answer flushes on (the original) stdout."""
    # Ctrl-C in a terminal reaches the whole process group: the driver decides when the sweep
    # stops, and closes this process's stdin then (or dies, which closes it too); a child killed
    # by the same keystroke lost the operations it had queued
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the writer retries every call itself (0.5 s doubling to 30 s, until a flush gives up and
    # spools): MLflow's own retries (7, backing off to 120 s: ~4 minutes against a server that
    # refuses connections) held a resumed trial's first call past the flush's end, and its
    # operations died with this process. A user's own setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # a SIGTERM (SIGHUP) before the read loop (the previous writer's heartbeat awaited, the run map
    # and the spool read from the storage: seconds on an object store, at every writer's start)
    # killed this process at once, with every line the driver had queued in its stdin, and the
    # driver's last operations (its open runs ended KILLED) were never read: noted here, and the
    # loop below starts in its terminated branch
    early: list[int] = []

    def noted(signum: int, frame: Any) -> None:
        early.append(signum)

    taken = [s for s in _TERM_SIGNALS if s != signal.SIGHUP or signal.getsignal(s) == signal.SIG_DFL]
    for s in taken:
        signal.signal(s, noted)
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything a library prints goes to stderr, not the replies
    try:
        os.nice(10)                    # background work: the driver's scheduling goes first
    except OSError:
        pass
    target = SweepTarget(**args)
    beat = Heartbeat(StateDir(target.state_dir),
                     log=lambda m: print(f"meta-study writer: {m}", file=sys.stderr))
    try:
        beat.wait_for_previous()
    except Exception as e:  # noqa: BLE001 - the storage failed: go on (a lost map entry is found by tag)
        print(f"meta-study writer: could not read the previous writer's heartbeat ({type(e).__name__}: {e}); "
              "going on", file=sys.stderr)
    beat.start()
    failpoint("writer_setup")          # a test signals this process here, before its read loop
    w = MlflowWriter(target)
    lines = _Lines(sys.stdin.fileno())
    first = lines.next() or ""
    _take_creds(w, first)
    w.setup()
    # SIGTERM killed it with its queue, nothing spooled (measured: exit -15 and an empty spool against
    # a server that was down); now it sends for TERM_FLUSH_S, spools the rest and exits 0
    terminated = False
    loop = _Loop(w, reply)
    for s in taken:                    # under nohup SIGHUP stays ignored
        signal.signal(s, _on_term)
    try:
        if early:                      # signalled before the loop: as if in it
            _on_term(early[0], None)
        while line := lines.next():
            loop.take(line)
    except _Terminated:
        terminated = True
        until = time.monotonic() + TERM_FLUSH_S
        print(f"meta-study writer: terminated; sending for {TERM_FLUSH_S:g} s, then spooling the rest",
              file=sys.stderr, flush=True)
        if loop.flushing is not None:    # the driver waits for this flush's answer: a short flush
            loop.flush(min(loop.flushing, TERM_FLUSH_S))
        # read on: the signal reached the driver too (a process group's stop), which unwinds and
        # sends its last operations (every open run tagged interrupted, ended KILLED) and a flush,
        # then closes. Left unread, they were lost while the driver took this process's last line
        # for its flush's answer: ok, the runs RUNNING in MLflow
        while (left := until - time.monotonic()) > 0 and (line := lines.next(left)):
            loop.take(line, cap_s=max(0.0, until - time.monotonic()))
    finally:
        for s in _TERM_SIGNALS:
            signal.signal(s, signal.SIG_IGN)            # the flush below is how it ends now
        # end of input: a normal close, or the driver died; after a SIGTERM, a short flush (what is
        # left of TERM_FLUSH_S). After a flush that was answered (a normal close) only what it kept
        # in memory is left: a short try too, since the driver kills this process 60 s after closing
        # it (with the flush timeout, 300 s by default, what it held died with it even when the
        # storage was back)
        answered = loop.answered
        ok = w.flush(timeout_s=max(0.0, until - time.monotonic()) if terminated else None if answered is None
                     else min(answered, TERM_FLUSH_S))
        beat.stop()
        try:   # the last word, read by the driver's close: what this process exits with unsent and unspooled
            loop.reply.write(json.dumps({"final": True, "ok": ok, "error": w.last_error, "held": w.held_ops,
                                         "dropped": w.dropped})
                             + "\n")
        except (OSError, ValueError):   # the driver is gone
            pass
