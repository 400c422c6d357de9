"""A sweep record being created on a mount without hard links (create_record's O_EXCL fallback:
the name is created empty, then written) is read again, not refused as "not JSON": the losing
driver read it at once and was told the winner's record was cut short."""

from __future__ import annotations

import errno
import os
import threading
import time

from meta_study.tune import state as S
from meta_study.tune.state import RECORD, SUBDIR, Session, StateDir, SweepRecord


def _record(parent: str) -> SweepRecord:
    return SweepRecord(sweep="s", experiment="exp", experiment_id="1", parent_run_id=parent,
                       tracking_uri="http://mlflow:5000",
                       sessions=(Session(started="2026-12-05T00:00:00+00:00", code="c1", git_sha="abc",
                                         researcher="ada"),))


def test_an_empty_record_being_written_is_read_once_written(tmp_path, monkeypatch):
    # the writer below sleeps 0.3 s; the reader's 2 s wait could run out first on a loaded machine
    monkeypatch.setattr(S, "EMPTY_RECORD_WAIT_S", 60.0)
    exp = tmp_path / "sweep"
    (exp / SUBDIR).mkdir(parents=True)
    path = exp / SUBDIR / RECORD
    path.write_bytes(b"")                          # O_CREAT | O_EXCL done, the write not yet
    winner = StateDir(str(exp))
    data = S._json_bytes(S.asdict(_record("p-winner")))

    def write_later() -> None:
        time.sleep(0.3)
        with open(path, "r+b") as f:               # the winner's os.write into the same file
            f.write(data)

    t = threading.Thread(target=write_later)
    t.start()
    try:
        rec = winner.read_record()
    finally:
        t.join(10)
    assert rec is not None and rec.parent_run_id == "p-winner"


def test_the_losing_driver_without_hard_links_reads_the_winners_record(tmp_path, monkeypatch):
    """The whole race through create_record: os.link fails with EPERM (gcsfuse, SMB), the winner's
    O_EXCL file is still empty when the loser's claim fails and it reads the record."""
    exp = tmp_path / "sweep"
    monkeypatch.setattr(S, "EMPTY_RECORD_WAIT_S", 60.0)   # the winner's 0.5 s pause within it, even under load
    real_link = os.link

    def no_link(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    real_write = os.write
    entered = threading.Event()

    def slow_write(fd, data):                     # the winner pauses between creating and writing
        entered.set()
        time.sleep(0.5)
        return real_write(fd, data)

    won = {}

    def winner() -> None:
        monkeypatch.setattr(os, "write", slow_write)
        won["A"] = StateDir(str(exp)).create_record(_record("p-A"))

    t = threading.Thread(target=winner)
    t.start()
    assert entered.wait(10)
    monkeypatch.setattr(os, "write", real_write)   # the loser writes normally
    won["B"] = StateDir(str(exp)).create_record(_record("p-B"))
    rec = StateDir(str(exp)).read_record()         # what tracking.create_parent_run reads next
    t.join(10)
    monkeypatch.setattr(os, "link", real_link)
    assert won == {"A": True, "B": False}
    assert rec is not None and rec.parent_run_id == "p-A"
