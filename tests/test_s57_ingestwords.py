"""Wording a walkthrough of docs/cluster.md found (session 57): ingest's count of one refit
result read "1 refit result runs not read", and ``store info`` gave the last ingest to the
microsecond ("2026-12-07 23:41:50.896150+00:00")."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli
from meta_study.ingest.pipeline import SourceReport, stat_words


def test_a_count_of_one_names_one_run_or_file() -> None:
    assert stat_words("refit_result_runs_not_read", 1) == "refit result run not read"
    assert stat_words("refit_result_runs_not_read", 2) == "refit result runs not read"
    assert stat_words("runs_unchanged", 1) == "run unchanged"
    assert stat_words("finished_runs_without_downstream_metrics", 1) == "finished run without downstream metrics"
    assert stat_words("skipped_files", 1) == "skipped file"
    assert stat_words("runs_with_a_task_name_holding_a_slash_not_read", 3).startswith("runs with a task name")
    line = SourceReport("http://127.0.0.1:5000", stats={"refit_result_runs_not_read": 1, "runs_unchanged": 6}).line()
    assert "1 refit result run not read" in line and "6 runs unchanged" in line, line


def test_store_info_gives_the_last_ingest_to_the_second(tmp_path: Path) -> None:
    csv = tmp_path / "zoo.csv"
    csv.write_text("run_id,model_name,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                   "m1,m1,up,down,zeroshot,0.5,0.4\nm2,m2,up,down,zeroshot,0.6,0.5\nm3,m3,up,down,zeroshot,0.7,0.55\n")
    store = tmp_path / "store"
    r = run_cli("ingest", str(csv), "--store", str(store))
    assert r.returncode == 0, r.stdout + r.stderr
    info = run_cli("store", "info", str(store))
    assert info.returncode == 0, info.stderr
    assert re.search(r"(?m)^last ingest \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00$", info.stdout), info.stdout
