"""Session 55: what a review of the session's own changes found.

- A refit killed between writing ``OUT/.LATEST.tmp-<pid>`` and renaming it left that file in a
  demo's workdir, which the demo's new workdir check then refused for good.
- The probe that a store's directory can be made (``.meta-study-probe-*``, made and removed at
  once) read as content to a second first ingest of the same empty directory, and for good if
  its maker was killed in between.
- The demo's held-out verdict compared an answer with the flat guess by a plain ``<=``, the
  report by the selection's margin: an answer within it was "worse than the flat guess" in one
  and "right" in the other.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from meta_study.demo import held_out_verdict, refuse_foreign_workdir
from meta_study.errors import UserError
from meta_study.report import beats_flat
from meta_study.store import Store


def test_a_demo_workdir_with_a_refits_leftover_latest_is_still_the_demos(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "store").mkdir(parents=True)
    (wd / "refits").mkdir()
    (wd / "mlflow.db").write_bytes(b"")
    (wd / ".LATEST.tmp-4242").write_text("refits/2026-12-07T10-00-00Z\n")
    refuse_foreign_workdir(wd, str(wd))          # no refusal
    (wd / "notes.txt").write_text("mine")        # anything else still is one
    with pytest.raises(UserError, match="notes.txt"):
        refuse_foreign_workdir(wd, str(wd))


def test_a_stray_probe_is_no_content_of_an_empty_directory(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    (d / ".meta-study-probe-x1y2").mkdir(parents=True)   # another writer's, or a killed one's
    Store(str(d)).check_writable()                       # "not empty ... (found .meta-study-probe-x1y2)" before
    (d / "data.csv").write_text("x")                     # real content still refuses
    with pytest.raises(UserError, match=r"not empty and is not a meta-study store \(found data.csv\)"):
        Store(str(d)).check_writable()


def test_the_demo_and_the_report_judge_the_flat_guess_by_one_margin() -> None:
    flat = 3.0
    err = flat + 1e-4              # points: within the selection's margin (5e-6 of accuracy = 0.0005 pt)
    assert beats_flat(err, flat) and not beats_flat(flat + 1e-3, flat)
    assert held_out_verdict(err, flat, held_out=False).startswith("right"), held_out_verdict(err, flat, False)
    assert "worse than the flat guess" in held_out_verdict(flat + 1e-3, flat, held_out=False)
