"""Review of a sweep's saved state (meta_study/tune/state.py, _shards.py, finalize.py): each test
failed before its fix."""

from __future__ import annotations

import json
import threading
import types

import pyarrow.fs as pafs
import pytest

from meta_study.errors import UserError
from meta_study.tune import state as S
from meta_study.tune._shards import MlflowWriter, SweepTarget


def _record(parent: str) -> S.SweepRecord:
    return S.SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id=parent, tracking_uri="t")


def test_two_drivers_starting_a_gs_sweep_at_once_exactly_one_wins(tmp_path, monkeypatch):
    """On an object store without create-if-absent (``gs://``) the record was read back at once
    after its PUT: two drivers that both found no record each read their own and both won (both
    ran the sweep, the first one's record overwritten by the second's). Here both find none,
    A writes, and B's PUT lands while A settles; B's lands after A has read back on the old code."""
    root = tmp_path / "meta_study"
    root.mkdir()

    def state() -> S.StateDir:     # a gs:// state directory whose objects are local files
        st = S.StateDir("gs://bucket/sweep")
        st.__dict__["_fs"] = (pafs.LocalFileSystem(), str(root))
        return st

    both_checked = threading.Barrier(2, timeout=10)
    a_settling, b_wrote = threading.Event(), threading.Event()
    read_bytes, write_bytes = S.StateDir.read_bytes, S.StateDir.write_bytes
    checked: set[str] = set()

    def read(self, name):
        out = read_bytes(self, name)
        me = threading.current_thread().name
        if me not in checked:          # each driver's first look: no record
            checked.add(me)
            both_checked.wait()
        return out

    def write(self, name, data, **kw):
        if threading.current_thread().name == "B":
            assert a_settling.wait(10)   # after A's own PUT (and its read-back on the old code)
        write_bytes(self, name, data, **kw)
        if threading.current_thread().name == "B":
            b_wrote.set()

    def settle(s):                     # the settle wait, without the wall clock
        if threading.current_thread().name == "A":
            a_settling.set()
            assert b_wrote.wait(10)

    monkeypatch.setattr(S.StateDir, "read_bytes", read)
    monkeypatch.setattr(S.StateDir, "write_bytes", write)
    monkeypatch.setattr(S, "time", types.SimpleNamespace(sleep=settle))
    won: dict[str, bool] = {}

    def start(name: str) -> None:
        try:
            won[name] = state().create_record(_record(name))
        finally:
            a_settling.set()           # the old code never settles: B goes on once A is done

    threads = [threading.Thread(target=start, args=(n,), name=n) for n in "AB"]
    threads[0].start()
    threads[1].start()
    for t in threads:
        t.join(30)
    monkeypatch.undo()
    assert sorted(won.items()) == [("A", False), ("B", True)], won
    assert state().read_record().parent_run_id == "B"


def test_a_record_whose_field_is_not_a_string_is_one_line(tmp_path):
    """A record with a null (a hand edit) read back as a SweepRecord holding None: ``--resume`` then
    died of a TypeError traceback ("pass --tracking-uri " + None) instead of naming the file."""
    d = tmp_path / "sweep" / S.SUBDIR
    d.mkdir(parents=True)
    (d / S.RECORD).write_text(json.dumps({"sweep": "s", "experiment": "e", "experiment_id": "1",
                                          "parent_run_id": "p", "tracking_uri": None}))
    with pytest.raises(UserError) as e:
        S.StateDir(str(tmp_path / "sweep")).read_record()
    assert str(e.value) == f"{d / S.RECORD}: not a sweep record (tracking_uri: not a string)"


def test_a_spooled_line_of_another_shape_is_kept_aside_not_replayed(tmp_path, capfd):
    """A spool line that is JSON but holds no operation was replayed: a trial that is not a
    string raised out of the replay (the spool objects after it never replayed, in any session),
    and an "end" without its status failed every retry, held each flush to its timeout and was
    spooled again, with its trial's other operations, by every session. Now such a line is
    skipped like a line cut short, and its object kept aside as ``<name>.damaged``."""
    spool = tmp_path / "exp" / S.SUBDIR / S.SPOOL
    spool.mkdir(parents=True)
    good = [{"kind": "tag", "trial": "t0", "payload": {"key": "a", "value": "1"}},
            {"kind": "end", "trial": "t0", "payload": {"status": "FINISHED"}}]
    bad = [{"kind": "metrics", "trial": None, "payload": {"metrics": {"m": 1.0}, "step": 1, "time": 1}},
           {"kind": "end", "trial": "t1", "payload": {}},
           {"kind": "metrics", "trial": "t1", "payload": {"metrics": [0.5], "step": 1, "time": 1}}]
    (spool / "1700000000000000000-1-abc.jsonl").write_text("\n".join(map(json.dumps, [good[0], *bad])) + "\n")
    (spool / "1700000000000000001-1-abc.jsonl").write_text(json.dumps(good[1]) + "\n")
    w = MlflowWriter(SweepTarget("http://127.0.0.1:9", "1", "p", str(tmp_path / "exp")))
    queued: list = []
    w.put = queued.append              # no MLflow: what the replay queues
    w._replay_spool()
    assert [(o.kind, o.trial) for o in queued] == [("retry", "t0")]        # wakes t0's thread, which takes:
    assert {t: [o.kind for o in ops] for t, ops in w._spooled.items()} == {"t0": ["tag", "end"]}
    assert sorted(p.name for p in spool.iterdir()) == ["1700000000000000000-1-abc.jsonl",
                                                       "1700000000000000000-1-abc.jsonl.damaged",
                                                       "1700000000000000001-1-abc.jsonl"]
    assert "3 of 4 line(s) unreadable" in capfd.readouterr().err
