"""File ingest review (s43): exports other researchers hand over, read into rows.

- A CSV/TSV line with fewer fields than the header (a line cut short, or a record split in two by
  a line break in a value that is not quoted) was stored with its last values empty (``seed``
  null), exit code 0, where a line with a field too many was refused: now refused alike.
- A copy of a file already ingested, under another name, in a later call, stored every run a
  second time under a second source, exit code 0 (the same two files in one call were refused).
- A file that gained a ``source`` column kept its runs under its old source (its name) and stored
  them again under the new one, with no word.

Each test failed before its fix, through the CLI as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"


def _rows(store: Path, *cols: str) -> list[tuple]:
    t = Store(str(store)).read(columns=list(cols))
    return sorted(zip(*(t.column(c).to_pylist() for c in cols)), key=repr)


@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_a_csv_line_with_fewer_fields_than_the_header_is_refused(tmp_path: Path, monkeypatch, chunk_rows) -> None:
    """``r2``'s line lacks its seed (cut short): it was stored with a null seed. Refused, naming
    the line where the record starts (a quoted line break before it counted), nothing stored; read
    whole or in pieces (a large file). A record split by a line break in an unquoted value is
    refused the same way."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)
    f = tmp_path / "short.csv"
    f.write_text(f'{HEAD},seed\n"r1\nx",in1k,0.7,pets,0.5,linear,1\nr2,in1k,0.8,pets,0.6,linear\n'
                 "r3,in1k,0.8,pets,0.6,linear,3\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    one_error_line(r, f"{f}: FAILED: line 4 has 6 fields but the header has 7", "nothing of this source was stored")
    assert not Store(str(tmp_path / "st")).exists() or not Store(str(tmp_path / "st")).read().num_rows
    split = tmp_path / "split.tsv"
    split.write_text(f"{HEAD},seed\n".replace(",", "\t") + "r1\tin1k\t0.7\tpets\t0.5\tlin\near\t1\n")
    r = run_cli("ingest", str(split), "--store", str(tmp_path / "st"))
    one_error_line(r, f"{split}: FAILED: line 2 has 6 fields but the header has 7")


def test_empty_last_fields_and_an_unnamed_last_column_are_still_read(tmp_path: Path) -> None:
    """What is not a short line: an empty last field (``,`` at the end, or ``""``), and a header
    alone ending in a separator (an unnamed last column, which holds nothing)."""
    f = tmp_path / "ok.csv"
    f.write_text(f'{HEAD},seed\nr1,in1k,0.7,pets,0.5,linear,\nr2,in1k,0.8,pets,0.6,linear,""\n'
                 "r3,in1k,0.8,pets,0.6,linear,3\n")
    g = tmp_path / "trail.csv"
    g.write_text(f"{HEAD},\nr4,in1k,0.7,pets,0.5,linear\nr5,in1k,0.7,pets,0.5,linear,\n")
    r = run_cli("ingest", str(f), str(g), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "seed") == [("r1", None), ("r2", None), ("r3", 3), ("r4", None),
                                                       ("r5", None)]


def test_a_copy_of_an_ingested_file_in_a_later_call_is_refused(tmp_path: Path) -> None:
    """``results (1).csv``, a download saved twice, ingested after ``results.csv``: every run was
    stored again as source ``results (1)``. Refused in one line naming the other file; ``--source``
    takes it as that source; once those runs are deleted from it, the copy goes in."""
    a, b = tmp_path / "results.csv", tmp_path / "results (1).csv"
    a.write_text(f"{HEAD}\nr1,in1k,0.7,pets,0.5,linear\nr2,in1k,0.8,pets,0.6,linear\n")
    b.write_bytes(a.read_bytes())
    st = tmp_path / "st"
    assert run_cli("ingest", str(a), "--store", str(st)).returncode == 0
    r = run_cli("ingest", str(b), "--store", str(st))
    one_error_line(r, f"{b}: FAILED: the same content as {a}, whose runs are stored as source 'results' (a copy?), "
                   "so run 'r1' and 1 more would be stored twice", "--source 'results'")
    assert _rows(st, "source", "run_id") == [("results", "r1"), ("results", "r2")]
    r = run_cli("ingest", str(b), "--store", str(st), "--source", "results")
    assert r.returncode == 0 and "2 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    Store(str(st)).commit(delete_runs=[("results", "r1"), ("results", "r2")])
    r = run_cli("ingest", str(b), "--store", str(st))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(st, "source", "run_id") == [("results (1)", "r1"), ("results (1)", "r2")]


def test_a_file_that_gains_a_source_column_is_refused_while_its_runs_are_under_its_old_source(tmp_path: Path) -> None:
    """``res.csv`` ingested as source ``res``, then with a ``source`` column ``lab``: its runs were
    kept under ``res`` and stored again under ``lab``, exit code 0. Refused while ``res`` holds
    them; another table at that path (other runs) is no copy and goes in."""
    f, st = tmp_path / "res.csv", tmp_path / "st"
    f.write_text(f"{HEAD}\nr1,in1k,0.7,pets,0.5,linear\n")
    assert run_cli("ingest", str(f), "--store", str(st)).returncode == 0
    f.write_text(f"source,{HEAD}\nlab,r1,in1k,0.7,pets,0.5,linear\n")
    r = run_cli("ingest", str(f), "--store", str(st))
    one_error_line(r, f"{f}: FAILED: its runs are stored as source 'res'", "they now say source 'lab'",
                   "would be stored twice")
    assert _rows(st, "source", "run_id") == [("res", "r1")]
    f.write_text(f"source,{HEAD}\nlab,r9,in1k,0.7,pets,0.5,linear\n")
    r = run_cli("ingest", str(f), "--store", str(st))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(st, "source", "run_id") == [("lab", "r9"), ("res", "r1")]


def test_a_quote_never_closed_names_its_line(tmp_path: Path) -> None:
    """A value whose closing quote is missing: "cannot read csv (Error tokenizing data. C error: EOF
    inside string starting at row 4)", pandas' row counted from 0 without quoted line breaks. Now
    the line where that value starts, as an editor numbers it."""
    f = tmp_path / "q.csv"
    f.write_text(f'{HEAD}\n\n"r1\nx",in1k,0.7,pets,0.5,linear\n\nr2,in1k,0.8,pets,"0.6,linear\nr3,in1k,0.8,pets,0.6,linear\n')
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    one_error_line(r, f"{f}: FAILED: line 6 opens a quoted value (\") that is never closed")
