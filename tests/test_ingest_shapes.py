"""File shapes that used to store wrong data, or nothing, with exit code 0: a CSV row with more
fields than its header (stored shifted by a column), a percent unit on fractions (divided by 100
silently), a header without rows (a "success" that committed an empty version), and skip notes
lost when a directory's first file failed.

Each test runs ``meta-study ingest`` on real files and checks the exit code, the one error line
(no traceback) and the store: absent, or unchanged, after a refusal.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import MAPPINGS, one_error_line, run_cli

H = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,shots"
GOOD = ["m1,imagenet,0.8,pets,0.7,fewshot,10", "m2,imagenet,0.6,pets,0.5,fewshot,10",
        "m3,imagenet,0.4,pets,0.3,fewshot,10"]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _stored(store: Path) -> pd.DataFrame:
    cols = ["run_id", "us_task", "us_accuracy", "ds_task", "ds_accuracy", "shots"]
    return pd.read_parquet(store)[cols].sort_values("run_id").reset_index(drop=True)


def _ingest(tmp_path: Path, *args: str):
    r = run_cli("ingest", *args, "--store", str(tmp_path / "st"), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "Aborted" not in out, out
    return r


def _refused(r, *needles: str) -> str:
    """One error line on stderr (:func:`one_error_line`) and nothing on stdout; that line."""
    assert not r.stdout.strip(), r.stdout + r.stderr
    return one_error_line(r, *needles)


# --------------------------------------------------------------------------------------------
# 1. A row with more fields than the header
# --------------------------------------------------------------------------------------------

EXTRA = [
    # (name, lines, line of the first long row, its fields)
    ("every_row_one_more", [H, "m1,imagenet,0.8,0.7,pets,0.5,fewshot,10", "m2,imagenet,0.8,0.7,pets,0.5,fewshot,10"],
     2, 8),
    ("first_row_one_more", [H, "m1,imagenet,0.8,0.7,pets,0.5,fewshot,10", GOOD[1]], 2, 8),
    ("a_later_row_one_more", [H, GOOD[0], GOOD[1], "", "m3,imagenet,0.4,pets,0.3,fewshot,10,oops"], 5, 8),
    ("a_later_row_two_more", [H, GOOD[0], "m2,imagenet,0.6,pets,0.5,fewshot,10,x,y"], 3, 9),
    ("trailing_comma_on_rows_not_header", [H] + [g + "," for g in GOOD], 2, 8),
    ("trailing_comma_on_one_row", [H, GOOD[0], GOOD[1] + ",", GOOD[2]], 3, 8),
]


@pytest.mark.parametrize("lines, line, fields", [c[1:] for c in EXTRA], ids=[c[0] for c in EXTRA])
def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path, lines, line, fields):
    """pandas took one extra field on the first row as an index (every value stored one column
    to the left, exit 0), and dropped an empty last field silently with index_col=False."""
    _write(tmp_path / "x.csv", lines)
    r = _ingest(tmp_path, "x.csv")
    _refused(r, f"x.csv: FAILED: line {line} has {fields} fields but the header has 7",
             "nothing of this source was stored")
    assert not (tmp_path / "st").exists()


def test_a_tsv_row_with_an_extra_field_is_refused(tmp_path):
    _write(tmp_path / "x.tsv", [H.replace(",", "\t")] + [g.replace(",", "\t") + "\t" for g in GOOD])
    _refused(_ingest(tmp_path, "x.tsv"), "x.tsv: FAILED: line 2 has 8 fields but the header has 7")
    assert not (tmp_path / "st").exists()


def test_a_shifted_file_with_drop_missing_keeps_the_stored_rows(tmp_path):
    """The reviewer's case: --drop-missing over a good ingest replaced 3 right rows by 1 wrong."""
    _write(tmp_path / "x.csv", [H] + GOOD)
    assert _ingest(tmp_path, "x.csv").returncode == 0
    before, version = _stored(tmp_path / "st"), Store(str(tmp_path / "st")).version
    _write(tmp_path / "x.csv", [H, "m1,imagenet,0.8,0.7,pets,0.5,fewshot,10"])
    _refused(_ingest(tmp_path, "x.csv", "--drop-missing"), "x.csv: FAILED: line 2 has 8 fields")
    pd.testing.assert_frame_equal(_stored(tmp_path / "st"), before)
    assert Store(str(tmp_path / "st")).version == version
    assert list(before["us_task"]) == ["imagenet"] * 3


def test_a_long_row_in_a_later_piece_of_a_large_file_stores_nothing(tmp_path, monkeypatch):
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)     # pieces of 2 rows: the file is read in 3
    rows = [f"r{i},imagenet,0.{i + 1},pets,0.{i + 1},fewshot,10" for i in range(6)]
    rows[4] += ","
    _write(tmp_path / "x.csv", [H] + rows)
    _refused(_ingest(tmp_path, "x.csv"), "x.csv: FAILED: line 6 has 8 fields but the header has 7")
    assert not Store(str(tmp_path / "st")).exists()


def test_a_trailing_separator_on_the_header_and_every_row_is_an_empty_column(tmp_path):
    """Documented choice (passes before and after the fix): a separator at the end of every line,
    the header's included, is an unnamed, empty last column; it holds nothing, so nothing of it
    is stored (not even an ``Unnamed: 7`` key in ``extra``)."""
    _write(tmp_path / "x.csv", [H + ","] + [g + "," for g in GOOD])
    r = _ingest(tmp_path, "x.csv")
    assert r.returncode == 0 and "x.csv: 3 new" in r.stdout, r.stdout + r.stderr
    got = _stored(tmp_path / "st")
    assert list(got["run_id"]) == ["m1", "m2", "m3"] and list(got["ds_accuracy"]) == [0.7, 0.5, 0.3]
    assert all(len(e) == 0 for e in pd.read_parquet(tmp_path / "st")["extra"])


# --------------------------------------------------------------------------------------------
# 2. A percent unit on fractions
# --------------------------------------------------------------------------------------------


def _pct_mapping(tmp_path: Path, text: str = "accuracy_unit: percent\n") -> str:
    (tmp_path / "pct.yaml").write_text(text)
    return "pct.yaml"


def test_a_percent_unit_on_fractions_is_refused(tmp_path):
    """0.8 and 0.5 under 'accuracy_unit: percent' were stored as 0.008 and 0.005, exit 0."""
    _write(tmp_path / "x.csv", [H] + GOOD)
    line = _refused(_ingest(tmp_path, "x.csv", "--mapping", _pct_mapping(tmp_path)),
                    "x.csv: FAILED: us_accuracy is declared percent but holds fractions: 3 of 3 nonzero values are "
                    "in (0, 1], so nothing of this source was stored; remove the unit percent of us_accuracy")
    assert "from the mapping" in line
    assert not (tmp_path / "st").exists()


def test_an_error_percent_unit_on_fraction_error_rates_is_refused(tmp_path):
    """An error rate 0.2 under error_percent was stored as accuracy 0.998."""
    _write(tmp_path / "x.csv", [H] + GOOD)
    m = _pct_mapping(tmp_path, "units: {ds_accuracy: error_percent}\n")
    _refused(_ingest(tmp_path, "x.csv", "--mapping", m),
             "ds_accuracy is declared error_percent but holds fractions: 3 of 3 nonzero values")
    assert not (tmp_path / "st").exists()


def test_a_percent_column_half_in_fractions_is_refused_over_a_good_ingest(tmp_path):
    """81.3 -> 0.813 and 0.84 -> 0.0084 under one mapping: no unit stores both right."""
    pct = [f"m{i},imagenet,{80 + i}.3,pets,{70 + i}.1,fewshot,10" for i in range(4)]
    _write(tmp_path / "x.csv", [H] + pct)
    m = _pct_mapping(tmp_path)
    assert _ingest(tmp_path, "x.csv", "--mapping", m).returncode == 0
    before, version = _stored(tmp_path / "st"), Store(str(tmp_path / "st")).version
    _write(tmp_path / "x.csv", [H] + pct[:2] + ["m2,imagenet,0.84,pets,0.71,fewshot,10",
                                                 "m3,imagenet,0.83,pets,0.72,fewshot,10"])
    _refused(_ingest(tmp_path, "x.csv", "--mapping", m, "--drop-missing"),
             "x.csv: FAILED: us_accuracy is declared percent but mixes fractions with percents for us_task "
             "'imagenet': 2 of 4 nonzero values are in (0, 1] and 2 above 10, so nothing of this source was stored")
    pd.testing.assert_frame_equal(_stored(tmp_path / "st"), before)
    assert Store(str(tmp_path / "st")).version == version


def test_one_fraction_in_ten_percents_is_refused(tmp_path):
    rows = [f"m{i},imagenet,{60 + i}.5,pets,{50 + i}.5,fewshot,10" for i in range(9)]
    _write(tmp_path / "x.csv", [H] + rows + ["m9,imagenet,69.5,pets,0.595,fewshot,10"])
    _refused(_ingest(tmp_path, "x.csv", "--mapping", _pct_mapping(tmp_path)),
             "ds_accuracy is declared percent but mixes fractions with percents for ds_task 'pets': 1 of 10 "
             "nonzero values are in (0, 1] and 9 above 10")
    assert not (tmp_path / "st").exists()


def test_real_percents_below_one_percent_are_stored(tmp_path):
    """Guard: near-chance models score below 1 % on a hard task. A value <= 1 beside values of
    its task in (1, 10] (a task entirely near chance: 2 of its 4 nonzero values <= 1, 3 of the
    column's 24) and zeros (0 in either unit) are stored, divided by 100. A lone value <= 1 among
    a task's percents all above 10 (m19's 0.48 beside 40-58) is a fraction, or a broken run: it
    is quarantined (tests/test_ingest_review.py), the rest stored."""
    rows = [f"m{i},imagenet,{60 + i}.5,pets,{40 + i}.25,fewshot,10" for i in range(19)]
    rows.append("m19,imagenet,79.5,pets,0.48,fewshot,10")                  # 1 in 20 below 1 %
    rows += [f"c{i},imagenet,{v},hard,{w},fewshot,10" for i, (v, w) in
             enumerate([(5.5, 0.4), (6.5, 0.9), (7.5, 2.5), (8.5, 3.5), (9.5, 0)])]
    _write(tmp_path / "x.csv", [H] + rows)
    r = _ingest(tmp_path, "x.csv", "--mapping", _pct_mapping(tmp_path))
    assert r.returncode == 0 and "x.csv: 24 new" in r.stdout and "1 quarantined" in r.stdout, r.stdout + r.stderr
    got = _stored(tmp_path / "st").set_index("run_id")
    assert "m19" not in got.index and got.loc["c1", "ds_accuracy"] == 0.009 and got.loc["c4", "ds_accuracy"] == 0


def _wide_tables(d: Path, sketch_top1=lambda i: f"{30 + i}.5") -> None:
    """The six per-test-set tables examples/mappings/timm_wide.yaml joins, in percent."""
    names = {"imagenet": "results-imagenet.csv", "real": "results-imagenet-real.csv",
             "v2": "results-imagenetv2-matched-frequency.csv", "sketch": "results-sketch.csv",
             "a": "results-imagenet-a.csv", "r": "results-imagenet-r.csv"}
    d.mkdir(exist_ok=True)
    for task, name in names.items():
        top1 = sketch_top1 if task == "sketch" else (lambda i: f"{70 + i}.5")
        _write(d / name, ["model,img_size,top1,param_count"] +
               [f"vit_tiny_{i},224,{top1(i)},5.7" for i in range(4)])


def test_a_joined_table_in_fractions_under_a_percent_mapping_is_refused(tmp_path):
    _wide_tables(tmp_path / "in", sketch_top1=lambda i: f"0.3{i}")
    r = _ingest(tmp_path, "in", "--mapping", str(MAPPINGS / "timm_wide.yaml"))
    _refused(r, "in/ (6 files): FAILED: ds_accuracy is declared percent but mixes fractions with percents for "
                "ds_task 'sketch': all 4 nonzero values are in (0, 1], beside 16 of other tasks above 10")
    assert not (tmp_path / "st").exists()


def test_a_large_file_in_fractions_under_a_percent_mapping_stores_nothing(tmp_path, monkeypatch):
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)     # refused after its last piece, inside the commit
    _write(tmp_path / "x.csv", [H] + [f"r{i},imagenet,0.{i + 1},pets,0.{i + 1},fewshot,10" for i in range(6)])
    _refused(_ingest(tmp_path, "x.csv", "--mapping", _pct_mapping(tmp_path)),
             "x.csv: FAILED: us_accuracy is declared percent but holds fractions: 6 of 6")
    assert not Store(str(tmp_path / "st")).exists()


def test_an_mlflow_percent_mapping_on_fraction_metrics_is_refused(tmp_path):
    """The MLflow sources convert units on their own (mlflow_runs): the same refusal there."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("fractions")
    for us, ds in ((0.81, 0.7), (0.84, 0.72)):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "upstream/top1_pct", us)       # keys named _pct, values fractions
        client.log_metric(run.info.run_id, "eval/pets/k10_pct", ds)
        client.set_terminated(run.info.run_id)
    r = _ingest(tmp_path, f"mlflow-sql:sqlite:///{db}", "--mapping", str(MAPPINGS / "mlflow_percent_keys.yaml"))
    _refused(r, "FAILED: ", "is declared percent but holds fractions: 2 of 2 nonzero values are in (0, 1]")
    assert not Store(str(tmp_path / "st")).exists()


# --------------------------------------------------------------------------------------------
# 3. A header without rows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines", [[H], [H, "", ""]], ids=["header_only", "header_and_blank_lines"])
def test_a_header_without_rows_fails_like_an_empty_file(tmp_path, lines):
    """It exited 0 ("0 new, ...") and committed an empty store version."""
    _write(tmp_path / "h.csv", lines)
    _refused(_ingest(tmp_path, "h.csv"), "h.csv: FAILED: no rows (only a header)")
    assert not (tmp_path / "st").exists()


def test_a_header_only_reingest_with_drop_missing_changes_nothing(tmp_path):
    _write(tmp_path / "x.csv", [H] + GOOD)
    assert _ingest(tmp_path, "x.csv").returncode == 0
    before, version = _stored(tmp_path / "st"), Store(str(tmp_path / "st")).version
    _write(tmp_path / "x.csv", [H])
    _refused(_ingest(tmp_path, "x.csv", "--drop-missing"), "x.csv: FAILED: no rows (only a header)")
    pd.testing.assert_frame_equal(_stored(tmp_path / "st"), before)
    assert Store(str(tmp_path / "st")).version == version


def test_a_large_header_only_file_fails_too(tmp_path, monkeypatch):
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 1)     # a 63-byte file is read in pieces
    _write(tmp_path / "h.csv", [H])
    _refused(_ingest(tmp_path, "h.csv"), "h.csv: FAILED: no rows (only a header)")
    assert not Store(str(tmp_path / "st")).exists()


def test_parquet_and_jsonl_without_rows_fail(tmp_path):
    pd.DataFrame({c: pd.Series([], dtype=str) for c in H.split(",")}).to_parquet(tmp_path / "e.parquet")
    (tmp_path / "e.jsonl").write_text("\n")
    _refused(_ingest(tmp_path, "e.parquet"), "e.parquet: FAILED: no rows")
    _refused(_ingest(tmp_path, "e.jsonl"), "e.jsonl: FAILED: no rows")
    assert not (tmp_path / "st").exists()


# --------------------------------------------------------------------------------------------
# 4. Skip notes and special join tables
# --------------------------------------------------------------------------------------------


def test_skip_notes_are_printed_when_the_first_file_fails(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("")
    _write(d / "b.csv", [H] + GOOD)
    os.mkfifo(d / "p.csv")
    r = _ingest(tmp_path, "in")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "in/a.csv: FAILED: " in r.stderr and "in/b.csv: 3 new" in r.stdout
    assert "in/p.csv: skipped (a FIFO)" in r.stderr, r.stderr
    assert list(_stored(tmp_path / "st")["run_id"]) == ["m1", "m2", "m3"]

    (d / "b.csv").unlink()      # every file fails: exit 2, the note still printed
    r = _ingest(tmp_path, "in")
    assert r.returncode == 2 and "in/p.csv: skipped (a FIFO)" in r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("kind, what", [("fifo", "a FIFO"), ("dir", "a directory")])
def test_a_join_table_that_is_not_a_regular_file_says_what_it_is(tmp_path, kind, what):
    _wide_tables(tmp_path / "in")
    sketch = tmp_path / "in" / "results-sketch.csv"
    sketch.unlink()
    os.mkfifo(sketch) if kind == "fifo" else sketch.mkdir()
    r = _ingest(tmp_path, "in", "--mapping", str(MAPPINGS / "timm_wide.yaml"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and not r.stdout.strip(), r.stdout + r.stderr
    assert lines == [f"in/ (5 files): FAILED: timm-wide: join table 'results-sketch.csv' (sketch) is "
                     f"in/results-sketch.csv, which is {what}: ingest reads regular files only",
                     f"in/results-sketch.csv: skipped ({what})"], lines
    assert not (tmp_path / "st").exists()
