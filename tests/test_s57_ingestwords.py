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


def test_a_zip_under_a_csv_name_is_named_whatever_its_header_bytes(tmp_path: Path) -> None:
    """The first "line" of a binary file runs to its first 0x0A byte: in a ZIP whose DOS time's low
    byte is 0x0A (0 or 8 minutes past, 20 seconds), that line is 11 ASCII bytes, valid UTF-8, and
    the .xlsx renamed .csv was parsed as CSV text ("no column for run_id ..."): CI failed
    test_s40_files at such a time. ZIP's and gzip's magic bytes cannot start a text header."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=(2026, 12, 8, 1, 8, 20)),
                   b"run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n" * 20)
    data = buf.getvalue()
    first = data.split(b"\n", 1)[0]
    assert first.startswith(b"PK\x03\x04") and len(first) < 16 and first.decode("utf-8")   # the case
    (tmp_path / "sheet.csv").write_bytes(data)
    r = run_cli("ingest", str(tmp_path / "sheet.csv"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "it is a ZIP archive (an .xlsx spreadsheet is one), not CSV text" in out, out
