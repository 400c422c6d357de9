"""The MLflow writer of a sweep: its own process, fed by the Tune driver's callback.

Why a process: the writer's HTTP calls, JSON and retries cost the Tune driver little CPU, but as
threads of the driver they contend for its GIL, and Tune's event loop, which gives up and retakes
the GIL at every gRPC wait, then loses up to a switch interval (5 ms) each time: measured 20-30 ms
per trial on a busy 2-core driver, for ~6 ms of actual work. As a child process (``python -m
meta_study.tune.writer``) it shares nothing with the driver but a pipe:

- the driver writes one JSON line per operation to the child's stdin, without blocking (a line
  that does not fit in the pipe waits for a feeder thread, so a slow child never blocks Tune's
  loop), and ``flush`` asks for a one-line reply;
- the child runs :class:`MlflowWriter`: sharded writer threads that merge each trial's pending
  operations into as few MLflow calls as possible, retry with back-off, and spool what cannot be
  sent to the sweep's storage (``meta_study/spool/``) for the next run of the sweep to replay;
- if the driver dies, the child sees end-of-file on stdin, sends what it has (up to the flush
  timeout), spools the rest and exits. It beats in ``meta_study/writer.json`` in the sweep's
  storage while it runs, and a resumed sweep's writer waits while that beat advances before
  reading the trial -> run map, so a run being created by the old writer is never created twice
  (:mod:`.state`).

Nothing here imports Ray (the child starts in ~1 s, most of it importing MLflow's credentials).

The parts, as private modules: :mod:`._rest` (the REST client), :mod:`._shards` (the writer
threads, spool and replay), :mod:`._child` (the child process's loop); this module holds the
driver's end of the pipe and re-exports the public names.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from typing import IO

from ._child import LOCK_FILE, LOCK_WAIT_S, _serve
from ._rest import resolve_creds
from ._shards import (MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH, RUNS_FILE, SPOOL_FILE,
                      MlflowWriter, Op, SweepTarget, flatten, plan_ops, refused_name)

__all__ = ["LOCK_FILE", "LOCK_WAIT_S", "MAX_METRICS_PER_BATCH", "MAX_PARAMS_PER_BATCH", "MAX_TAGS_PER_BATCH",
           "RUNS_FILE", "SPOOL_FILE", "MlflowWriter", "Op", "SweepTarget", "WriterProcess", "flatten", "plan_ops",
           "refused_name", "resolve_creds"]


class _Pipe:
    """The write end of a child's stdin, fed without blocking: a line goes straight into the pipe
    (~10 us) from the caller's thread; only when the pipe is full (64 KiB: the child is behind) do
    lines queue up for a feeder thread, which waits until the pipe drains. In the common case no
    second thread of the driver wakes up to compete with Tune's event loop for the GIL."""

    def __init__(self, stdin: IO[bytes]) -> None:
        self.stdin = stdin
        self.fd = stdin.fileno()
        os.set_blocking(self.fd, False)
        self.backlog: collections.deque[bytes] = collections.deque()   # not yet in the pipe; guarded by cond
        self.closing = False
        self.cond = threading.Condition()
        threading.Thread(target=self._feed, name="mlflow-writer-feeder", daemon=True).start()

    def send(self, line: str) -> None:
        data = (line + "\n").encode()
        with self.cond:
            if self.stdin.closed:          # the child is gone (its descriptor may be another file's now)
                return
            if not self.backlog:           # nothing ahead of it: straight into the pipe
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:
                    pass
                except OSError:            # the child died: flush() reports it
                    return
                if not data:
                    return
            self.backlog.append(data)
            self.cond.notify()

    def close(self) -> None:
        """Close the child's stdin once everything queued is in the pipe."""
        with self.cond:
            self.closing = True
            self.cond.notify()

    def _feed(self) -> None:
        import select

        # poll, not select: select() refuses a descriptor above 1023 (ValueError), and a Ray driver
        # with many files open (a soft limit above 1024) got one for this pipe; this thread died
        # and every later line, the end-of-sweep flush's too, waited behind it: the driver hung
        ready = select.poll()
        ready.register(self.fd, select.POLLOUT)
        while True:
            with self.cond:
                while not self.backlog and not self.closing:
                    self.cond.wait()
                if not self.backlog:       # closing, and everything is in the pipe
                    self.stdin.close()
                    return
                data = self.backlog[0]
            ready.poll(1000)       # ms
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                continue
            except OSError:                # the child died: its stdin closed here (left open, one per dead child)
                with self.cond:
                    self.backlog.clear()
                    self.stdin.close()
                return
            with self.cond:                # only this thread shortens or pops the head
                if n < len(data):
                    self.backlog[0] = data[n:]
                else:
                    self.backlog.popleft()


class WriterProcess:
    """The driver's handle on a writer child process: ``put`` never blocks, ``flush`` waits."""

    def __init__(self, target: SweepTarget) -> None:
        self.target = target
        self.errors = 0
        self.cpu_s = 0.0    # the child's CPU seconds, as of its last flush reply
        self.died = 0       # children that died between flushes (each said on stderr)
        self.unanswered = False   # a flush the child died before answering
        self.last_error: str | None = None   # the child's last failed call, one line without credentials
        self.held = 0       # operations neither sent nor spooled (the storage failed too), lost when the child exits
        # steps MLflow refused for good (a trial's runs/create refused, its run deleted), dropped by
        # this handle's children, as of their last reply: the flush still answers ok (nothing is left
        # to send or spool), so the driver reads this to end the sweep as incomplete
        self.dropped = 0
        self._dropped_before = 0   # those of children that exited before the current one
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: _Pipe | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            if self._proc is not None:
                # the child died between flushes (the OOM killer, a kill -9): the operations in its
                # pipe and queues went with it, and a new child took over without a word
                self.died += 1
                print(f"meta-study: the MLflow writer process (pid {self._proc.pid}) exited with code "
                      f"{self._proc.returncode} mid-sweep; what it had not yet sent (metrics, params, run ends "
                      f"since the last flush) may be missing from MLflow; a new writer goes on", file=sys.stderr)
                self._release()
            self._dropped_before = self.dropped
            # stdout carries the replies; the child's logs go to the driver's stderr
            self._proc = subprocess.Popen([sys.executable, "-m", "meta_study.tune.writer",
                                           json.dumps({**asdict(self.target), "tags": dict(self.target.tags)})],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
            assert self._proc.stdin is not None
            self._pipe = _Pipe(self._proc.stdin)
            uri = self.target.tracking_uri
            # first line: the driver-resolved credentials (never on the command line, which `ps` shows)
            self._pipe.send(json.dumps({"creds": resolve_creds(uri) if uri.lower().startswith(("http://", "https://"))
                                        else None}))

    def _release(self) -> None:
        """Close the pipes of a child that has exited: its feeder thread waited for a line for good,
        holding the child's stdin open, and its stdout stayed open until collected (one thread and
        two descriptors left per child that died mid-sweep)."""
        if self._pipe is not None:
            self._pipe.close()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def put(self, op: Op) -> None:
        self._ensure()
        assert self._pipe is not None
        self._pipe.send(json.dumps(asdict(op), default=str))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the child has sent every operation (True), or spooled the rest after the
        timeout (False); False with ``unanswered`` set when the child exited without answering.
        True says nothing is left to send: steps MLflow refused for good were dropped, not sent
        (:attr:`dropped` counts them)."""
        if self._proc is None:
            return True
        timeout = self.target.flush_timeout_s if timeout_s is None else timeout_s
        assert self._pipe is not None
        self._pipe.send(json.dumps({"flush": timeout}))
        assert self._proc.stdout is not None
        reply = self._proc.stdout.readline()      # the child answers within timeout + one HTTP timeout
        try:
            d = json.loads(reply) if reply.endswith(b"\n") else None
        except ValueError:
            d = None
        if not isinstance(d, dict) or d.get("final"):
            # the child died (no line, or one cut short): what it had not sent died with it (nothing
            # spooled). Or its last line: it stopped reading before this flush (a SIGTERM, once its
            # TERM_FLUSH_S was up) and exited, and the operations sent since were never read; taken
            # for the flush's answer, they were said sent ("ok") or spooled, and were neither
            self.unanswered = True
            if isinstance(d, dict):
                self.held = int(d.get("held", 0))
                self.last_error = d.get("error") or self.last_error
                self._take_dropped(d)
            return False
        self.errors = int(d.get("errors", 0))
        self.cpu_s = float(d.get("cpu_s", 0.0))
        self.last_error = d.get("error") or self.last_error
        self.held = int(d.get("held", 0))
        self._take_dropped(d)
        return bool(d["ok"])

    def _take_dropped(self, d: dict) -> None:
        """The current child's count of dropped steps (cumulative in the child) from its reply."""
        try:
            self.dropped = self._dropped_before + max(0, int(d.get("dropped", 0)))
        except (TypeError, ValueError):
            pass

    def close(self, timeout_s: float | None = None) -> bool:
        """Flush, then let the child exit (it releases the writer lock)."""
        if self._proc is None:
            return True
        ok = self.flush(timeout_s)
        assert self._pipe is not None
        self._pipe.close()
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # what it held in memory (self.held, as of the flush's reply) dies with it
            self._proc.kill()
            self._proc.wait()
        else:
            # its last word: what it could neither send nor spool as it exited (the storage failed
            # too); a flush's reply said "held" of operations it then went on to spool or send
            assert self._proc.stdout is not None
            try:
                d = json.loads(self._proc.stdout.readline() or "{}")
            except ValueError:
                d = {}
            if d.get("final"):
                self.held = int(d.get("held", 0))
                self.last_error = d.get("error") or self.last_error
                self._take_dropped(d)
        self._release()
        self._proc = None
        self._dropped_before = self.dropped
        return ok


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
