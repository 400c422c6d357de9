"""Refit review (s39): a store held by another writer past the refit's bounded wait is a transient
failure (exit 1, one line), not a bad input (exit 2); a LATEST damaged into bytes that are not
UTF-8 is no record, not a traceback in every later refit."""

from __future__ import annotations

import fcntl
import os

import pytest

from conftest import committed_store, make_rows, quick_refit_config, run_cli


@pytest.fixture
def held_store(tmp_path, monkeypatch):
    """A store whose writers' lock another writer holds (an ``ingest`` committing), a CSV source to
    ingest, and a refit that waits 0.3 s for the lock (not STORE_LOCK_WAIT_S's 15 minutes)."""
    import meta_study.refit as refit_mod

    s = committed_store(tmp_path / "st", runs=20)
    make_rows(5, seed=3, run_prefix="new").to_csv(tmp_path / "more.csv", index=False)
    monkeypatch.setattr(refit_mod, "STORE_LOCK_WAIT_S", 0.3)
    # flock locks belong to an open file description: this one excludes the refit's, in this process too
    fd = os.open(tmp_path / "st" / "_meta" / "LOCK", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield s
    finally:
        os.close(fd)


def test_a_store_held_past_the_wait_fails_the_refit_as_transient(tmp_path, held_store):
    from meta_study.errors import UserError
    from meta_study.refit import StoreWriterBusy, refit

    cfg = quick_refit_config(held_store, tmp_path / "out", sources=(str(tmp_path / "more.csv"),))
    with pytest.raises(StoreWriterBusy) as e:
        refit(cfg, log=lambda m: None)
    assert isinstance(e.value, OSError) and not isinstance(e.value, UserError)
    assert "locked by another writer" in str(e.value) and "nothing was refitted" in str(e.value)
    assert not (tmp_path / "out" / "refits").exists() and held_store.version == 1


def test_the_refit_command_exits_1_not_2_when_the_store_stays_locked(tmp_path, held_store):
    """A CronJob or a systemd timer reads exit 2 as a wrong setting; the setting was fine."""
    out = tmp_path / "out"
    r = run_cli("refit", "--store", str(tmp_path / "st"), "--source", str(tmp_path / "more.csv"), "--out", str(out),
                "--serial", "--trials", "2", "--samples", "20", subprocess_=False)   # the short wait is patched here
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and "for more than 0.3 s" in lines[0] and "nothing was refitted" in lines[0], lines
    assert not out.exists()        # a failed first refit leaves no --out behind


def test_a_failed_round_on_a_held_store_says_no_traceback_hint(tmp_path):
    from meta_study.refit import StoreWriterBusy, round_failure

    line = round_failure(StoreWriterBusy("st: locked by another writer (pid 1) for more than 900 s while this "
                                         "refit waited to ingest; nothing was refitted"), str(tmp_path))
    assert line.startswith("refit: failed: st: locked by another writer") and "META_STUDY_TRACEBACK" not in line
    assert f"the results in {tmp_path} stay as they were" in line


def test_a_latest_that_is_not_utf8_is_no_record(tmp_path):
    """Every refit after it ended in a UnicodeDecodeError traceback; now it refits every group."""
    from meta_study.refit import previous_refit

    (tmp_path / "refits").mkdir()
    (tmp_path / "LATEST").write_bytes(b"\xff\xfe2026\x00")
    assert previous_refit(str(tmp_path)) == (None, {})



def test_an_every_loop_whose_first_round_meets_a_held_store_goes_on(tmp_path, held_store, monkeypatch):
    """A failed first round ends an ``--every`` loop (a wrong setting is said at once), but a store
    another writer held past the wait is no wrong setting: a refit service started beside a long
    ingest died. The round is said in one line and the loop sleeps to its next round."""
    import time

    real = time.sleep

    def stop(s):
        if s > 60:      # the loop's wait for its next round (~1 h): Ctrl-C there, and it returns
            raise KeyboardInterrupt
        real(s)         # the store's lock wait sleeps too, briefly
    monkeypatch.setattr(time, "sleep", stop)
    r = run_cli("refit", "--store", str(tmp_path / "st"), "--source", str(tmp_path / "more.csv"), "--out",
                str(tmp_path / "out"), "--serial", "--trials", "2", "--samples", "20", "--every", "1h",
                subprocess_=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "refit: failed:" in r.stderr and "locked by another writer" in r.stderr, r.stderr
    assert "next refit in" in r.stdout, r.stdout
