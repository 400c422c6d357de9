"""File ingest defects of a fresh review (s36), each through the CLI as a user runs it
(``meta-study ingest FILE --store DIR``) on real files: a traceback on classic Mac line ends, a
blank line before the header that let a repeated column name through, and compressed exports in a
directory passed over without a word. Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"


def _rows(store: Path, *cols: str) -> list[tuple]:
    t = Store(str(store)).read(columns=list(cols))
    return sorted(zip(*(t.column(c).to_pylist() for c in cols)))


def test_classic_mac_line_ends_are_read_not_a_traceback(tmp_path: Path, monkeypatch) -> None:
    """A CSV whose lines end in a carriage return alone (Excel for Mac's "CSV (Macintosh)"): the
    header check's csv module raised ``_csv.Error: new-line character seen in unquoted field`` as a
    traceback. pandas reads such a file: its rows are stored, a quoted line break kept. One too
    large to be one line under the line cap is refused, saying why."""
    f = tmp_path / "mac.csv"
    f.write_bytes(f"{HEAD},note\rr1,up,0.5,a,0.4,linear,\"x\ry\"\rr2,up,0.5,a,0.3,linear,z\r".encode())
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "ds_accuracy") == [("r1", 0.4), ("r2", 0.3)]
    # a repeated name is still refused in such a file
    g = tmp_path / "macdup.csv"
    g.write_bytes(f"{HEAD},ds_accuracy\rr1,up,0.5,a,0.4,linear,0.9\r".encode())
    r = run_cli("ingest", str(g), "--store", str(tmp_path / "st2"))
    assert "appears twice" in r.stdout + r.stderr and "Traceback" not in r.stderr, r.stdout + r.stderr
    from meta_study.ingest import files

    monkeypatch.setattr(files, "MAX_LINE_BYTES", 100)
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st3"))
    assert f"{f}: FAILED: lines end in a carriage return alone" in r.stderr, r.stderr


def test_a_blank_line_before_the_header_does_not_hide_a_repeated_column(tmp_path: Path) -> None:
    """pandas skips blank lines before the header; the check for a repeated column name read the
    first line only, so after a blank line ``ds_accuracy`` twice was stored: the first value as
    ds_accuracy, the second in extra as ``ds_accuracy.1``, exit code 0."""
    f = tmp_path / "dup.csv"
    f.write_text(f"\n  \n{HEAD},ds_accuracy\nr1,up,0.5,a,0.4,linear,0.9\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "'ds_accuracy' appears twice" in out, out
    assert not Store(str(tmp_path / "st")).exists() or Store(str(tmp_path / "st")).read().num_rows == 0


def test_an_empty_or_blank_file_says_so(tmp_path: Path) -> None:
    """A file of 0 bytes, a BOM alone, or blank lines said pandas' "No columns to parse from file"."""
    for name, data in (("empty.csv", b""), ("bom.csv", b"\xef\xbb\xbf"), ("blank.tsv", b"\n \n\r\n")):
        f = tmp_path / name
        f.write_bytes(data)
        r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
        assert f"{f}: FAILED: the file is empty" in r.stdout + r.stderr, r.stdout + r.stderr


def test_compressed_exports_in_a_directory_are_named_not_passed_over(tmp_path: Path) -> None:
    """A directory's ``b.csv.zst`` (or .bz2, .xz, a gzipped Parquet file, and even a gzipped
    ``.ndjson``) was skipped without a word beside the files ingest reads: its runs were missing
    from the store, exit code 0."""
    import bz2
    import gzip
    import lzma

    d = tmp_path / "exports"
    d.mkdir()
    (d / "a.csv").write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n")
    body = f"{HEAD}\nr2,up,0.5,a,0.4,linear\n".encode()
    (d / "b.csv.bz2").write_bytes(bz2.compress(body))
    (d / "c.csv.xz").write_bytes(lzma.compress(body))
    (d / "d.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    (d / "e.csv.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (d / "notes.md.gz").write_bytes(gzip.compress(b"# notes"))
    (d / "f.ndjson.gz").write_bytes(gzip.compress(b'{"run_id": "r3", "us_task": "up", "us_accuracy": 0.5, '
                                                  b'"ds_task": "a", "ds_accuracy": 0.4, "eval_protocol": "linear"}\n'))
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert f"{d / 'f.ndjson.gz'}: 1 new" in out, out          # as .ndjson and .jsonl.gz are read
    for name, how in (("b.csv.bz2", "bzip2"), ("c.csv.xz", "xz"), ("d.parquet.gz", "gzip"), ("e.csv.zst", "zstd")):
        assert f"{d / name}: skipped (compressed with {how}" in out, out
    assert "notes.md.gz" not in out, out
    # named directly: the same reason, in one line
    r = run_cli("ingest", str(d / "e.csv.zst"), "--store", str(tmp_path / "st"))
    one_error_line(r, "e.csv.zst", "compressed with zstd")


def test_a_json_lines_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """A JSON Lines file that starts with a UTF-8 BOM (PowerShell 5's ``-Encoding utf8``, Notepad)
    was refused whole: "invalid JSON (Unexpected UTF-8 BOM ...)", where a CSV with one is read."""
    f = tmp_path / "bom.jsonl"
    rec = '{"run_id": "r%d", "us_task": "up", "us_accuracy": 0.5, "ds_task": "a", "ds_accuracy": 0.4, ' \
          '"eval_protocol": "linear"}\r\n'
    f.write_bytes(b"\xef\xbb\xbf" + (rec % 1 + rec % 2).encode())
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id") == [("r1",), ("r2",)]


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    """A Latin-1 byte on line 5002 said "byte 0xe9 in position 3" (a place in pandas' buffer, not
    in the file), and a UTF-16 export "byte 0xff in position 0": neither said where, or what to do."""
    lines = [f"{HEAD},note"] + [f"r{i},up,0.5,a,0.4,linear,x" for i in range(5000)]
    f = tmp_path / "latin.csv"
    f.write_bytes(("\n".join(lines) + "\n").encode() + b"r9,up,0.5,a,0.4,linear,caf\xe9\nz,up,0.5,a,0.4,linear,x\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    assert f"{f}: FAILED: line 5002 is not UTF-8 text (byte 0xe9 at column 27)" in r.stderr, r.stderr
    g = tmp_path / "unicode.csv"
    g.write_bytes(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n".encode("utf-16"))
    r = run_cli("ingest", str(g), "--store", str(tmp_path / "st"))
    assert f"{g}: FAILED: it is UTF-16 text" in r.stderr, r.stderr


def test_empty_columns_a_spreadsheet_left_do_not_refuse_the_file(tmp_path: Path) -> None:
    """A spreadsheet's CSV with ``,,`` at the end of every line (columns without a name) was
    refused whole: "column '' appears twice in the header". Columns without a name are not one
    column named twice: pandas names each ``Unnamed: i``, and a value in one is kept in extra."""
    f = tmp_path / "sheet.csv"
    f.write_text(f"{HEAD},,\nr1,up,0.5,a,0.4,linear,,\nr2,up,0.5,a,0.3,linear,,x\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "extra") == [("r1", []), ("r2", [("Unnamed: 7", "x")])]


def _lines(store: Path) -> dict[str, int]:
    import json

    raws = [json.loads(r) for r in Store(str(store)).quarantine().column("raw").to_pylist()]
    return {r["run_id"]: r["_line"] for r in raws}


def test_a_line_of_spaces_does_not_shift_the_quarantined_rows_lines(tmp_path: Path) -> None:
    """pandas skips a line of spaces (before the header, or between rows); the scan that places
    rejected rows took one before the header as the header and one between rows as a record, so
    the quarantine named the line above the bad row (``_line`` 3 for the row on line 4)."""
    f = tmp_path / "sp.csv"
    f.write_text(f"  \n{HEAD}\nr1,up,0.5,a,0.4,linear\nr2,up,0.5,a,7,linear\n")
    g = tmp_path / "sp2.tsv"
    g.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n   \nr3,up,0.5,a,7,linear\n".replace(",", "\t"))
    for p in (f, g):
        r = run_cli("ingest", str(p), "--store", str(tmp_path / "st"), "--quiet")
        assert r.returncode == 0 and "1 quarantined" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _lines(tmp_path / "st") == {"r2": 4, "r3": 4}


def test_a_directory_of_only_unread_files_says_what_it_holds(tmp_path: Path) -> None:
    """A directory holding only ``results.csv.zst`` said "holds no CSV, TSV, Parquet or JSONL
    files": true of the names, not of the data; the line now names the file and why."""
    d = tmp_path / "exports"
    d.mkdir()
    (d / "results.csv.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (d / "results.xlsx").write_bytes(b"PK")
    r = run_cli("ingest", f"{d}/", "--store", str(tmp_path / "st"))
    one_error_line(r, "directory holds no CSV", "results.csv.zst: compressed with zstd", "1 more file(s) not read")


def test_pandas_row_numbers_in_a_parquet_file_are_not_stored(tmp_path: Path) -> None:
    """A frame whose index is not 0..n-1 (filtered, concatenated) is written by ``to_parquet``
    with its index as a column ``__index_level_0__``: ingest stored the row numbers in every row's
    extra, and a new export of the same runs, filtered otherwise, "updated" every row. A named
    index (``set_index("run_id")``) is still a column."""
    import pandas as pd

    df = pd.DataFrame({"run_id": ["r1", "r2", "r3", "r4"], "us_task": "up", "us_accuracy": 0.5, "ds_task": "a",
                       "ds_accuracy": 0.4, "eval_protocol": "linear", "tag": ["x", "y", "z", "w"]})
    f = tmp_path / "res.parquet"
    df.iloc[[0, 2, 3]].to_parquet(f)
    import pyarrow.parquet as pq

    assert "__index_level_0__" in pq.read_table(f).column_names     # what pandas writes
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "extra") == [("r1", [("tag", "x")]), ("r3", [("tag", "z")]),
                                                         ("r4", [("tag", "w")])]
    df.iloc[[3, 0, 2]].to_parquet(f)          # the same runs, in another order: nothing changed
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert "0 new, 0 updated, 3 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    g = tmp_path / "named.parquet"
    df.set_index("run_id").to_parquet(g)
    r = run_cli("ingest", str(g), "--store", str(tmp_path / "st2"), "--quiet")
    assert r.returncode == 0 and "4 new" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_sub_directory_of_exports_is_named_not_passed_over(tmp_path: Path) -> None:
    """``exports/alice/a.csv`` beside ``exports/summary.csv``: ingest of ``exports`` read the
    summary alone (sub-directories are not read, as documented) and said nothing of alice's runs.
    A sub-directory without a file ingest reads is not named."""
    d = tmp_path / "exports"
    (d / "alice").mkdir(parents=True)
    (d / "notes").mkdir()
    (d / "notes" / "readme.md").write_text("x")
    (d / "summary.csv").write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n")
    (d / "alice" / "a.csv").write_text(f"{HEAD}\nr2,up,0.5,a,0.4,linear\n")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{d / 'alice'}: skipped (a directory: ingest reads the files directly inside {d}" in r.stderr, r.stderr
    assert "notes" not in r.stderr, r.stderr


def test_a_large_json_lines_file_is_read_in_pieces(tmp_path: Path, monkeypatch) -> None:
    """A JSON Lines file was read whole (a dict a record, then a frame: 600 MB for a 55 MB file),
    where a CSV is read in pieces of ``CHUNK_ROWS`` rows; a few GB of JSON Lines did not fit in
    memory. In pieces, the rows, the quarantined row's position and a bad line's number are the
    same as when read whole."""
    import json

    from meta_study.ingest import files

    rec = dict(us_task="up", us_accuracy=0.5, ds_task="a", ds_accuracy=0.4, eval_protocol="linear")
    rows = [dict(rec, run_id=f"r{i}", seed=i) for i in range(7)]
    rows[4]["ds_accuracy"] = 7
    f = tmp_path / "big.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [start for start, _ in files.read_export_chunks(str(f), rows=3)] == [0, 3, 6]
    monkeypatch.setattr(files, "CHUNK_ROWS", 3)          # pieces of 3 rows, for a file above 180 bytes
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "6 new" in r.stdout + r.stderr and "1 quarantined" in r.stdout + r.stderr, r.stderr
    assert _rows(tmp_path / "st", "run_id", "seed") == [(f"r{i}", i) for i in range(7) if i != 4]
    raws = [json.loads(x) for x in Store(str(tmp_path / "st")).quarantine().column("raw").to_pylist()]
    assert [(q["run_id"], q["_row"]) for q in raws] == [("r4", 4)]
    g = tmp_path / "bad.jsonl"
    g.write_text(f.read_text() + '{"run_id": "r9", "run_id": "r10"}\n')
    r = run_cli("ingest", str(g), "--store", str(tmp_path / "st"))
    assert "bad.jsonl:8: key 'run_id' appears twice" in r.stderr, r.stderr


def test_one_file_named_twice_in_a_join_is_one_table(tmp_path: Path) -> None:
    """``meta-study ingest exports exports/ds.csv --mapping join.yaml`` (the directory and one of
    its files, or ``x.csv ./x.csv``) failed: "join table 'ds.csv' matched several files: exports/ds.csv,
    exports/./ds.csv", naming one file twice as two; a file named twice without a join is ingested once."""
    d = tmp_path / "exports"
    d.mkdir()
    (d / "up.csv").write_text("model,top1\nm1,0.5\nm2,0.6\n")
    (d / "ds.csv").write_text("model,top1\nm1,0.4\nm2,0.3\n")
    m = tmp_path / "join.yaml"
    m.write_text("name: jm\nsource: lab\njoin:\n  key: [model]\n  upstream: {file: up.csv, task: in1k, accuracy: top1}\n"
                 "  downstream:\n    - {file: ds.csv, task: cifar, accuracy: top1}\n"
                 "run_id: \"{model}\"\nconstants: {eval_protocol: linear}\n")
    r = run_cli("ingest", str(d), str(d / "ds.csv"), "--mapping", str(m), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run_cli("ingest", str(d / "up.csv"), str(d / "ds.csv"), f"{d}/./ds.csv", "--mapping", str(m),
                "--store", str(tmp_path / "st2"), "--quiet")
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st2", "run_id", "ds_accuracy") == [("m1", 0.4), ("m2", 0.3)]


def test_a_large_parquet_file_is_read_in_pieces(tmp_path: Path, monkeypatch) -> None:
    """A Parquet file was read whole (its table, then its frame), however many rows it held. In
    pieces, the values as written (float32, integers beside nulls), pandas' index left out, and the
    quarantined row's position are the same as when read whole."""
    import json

    import pandas as pd
    import pyarrow.parquet as pq

    from meta_study.ingest import files

    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(8)], "us_task": "up",
                       "us_accuracy": pd.array([0.9] * 8, dtype="float32"), "ds_task": "a",
                       "ds_accuracy": [0.4] * 5 + [7.0] + [0.4] * 2, "eval_protocol": "linear",
                       "seed": pd.array([2 ** 53 + 1, None] * 4, dtype="Int64")})
    f = tmp_path / "big.parquet"
    df.set_axis([10, 11, 12, 13, 14, 15, 16, 18]).to_parquet(f, row_group_size=3)   # an index pandas writes
    assert "__index_level_0__" in pq.read_table(f).column_names
    assert [start for start, _ in files.read_export_chunks(str(f), rows=3)] == [0, 3, 6]
    monkeypatch.setattr(files, "CHUNK_ROWS", 3)
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0 and "7 new" in r.stdout + r.stderr and "1 quarantined" in r.stdout + r.stderr, r.stderr
    got = Store(str(tmp_path / "st")).read(columns=["run_id", "us_accuracy", "seed", "extra"])
    assert sorted(got.column("run_id").to_pylist()) == [f"r{i}" for i in range(8) if i != 5]
    assert set(got.column("us_accuracy").to_pylist()) == {0.9}
    assert sorted(got.column("seed").to_pylist(), key=str) == [2 ** 53 + 1] * 4 + [None] * 3
    assert not any(got.column("extra").to_pylist())      # no __index_level_0__
    raws = [json.loads(x) for x in Store(str(tmp_path / "st")).quarantine().column("raw").to_pylist()]
    assert [(q["run_id"], q["_row"]) for q in raws] == [("r5", 5)]


def test_two_copies_of_one_export_are_refused_not_stored_twice(tmp_path: Path) -> None:
    """``results.csv`` and ``results (1).csv`` (a download saved twice) in one directory: each
    file is its own source, so every run was stored twice, under two sources, exit code 0, and
    every analysis counted it twice. The same file named twice is still one input, with
    ``--drop-missing`` too (it said "2 files share the source")."""
    d = tmp_path / "exports"
    d.mkdir()
    body = f"{HEAD}\nr1,up,0.5,a,0.4,linear\n"
    (d / "results.csv").write_text(body)
    (d / "results (1).csv").write_text(body)
    (d / "other.csv").write_text(body.replace("r1", "r2"))
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    one_error_line(r, "results (1).csv and ", "results.csv: the same content", "Nothing was stored")
    assert not Store(str(tmp_path / "st")).exists()
    (d / "results (1).csv").write_text(HEAD + "\n")       # header-only copies fail on their own: "no rows"
    (d / "results.csv").write_text(HEAD + "\n")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert "results.csv: FAILED: no rows" in r.stderr and "other.csv: 1 new" in r.stdout, r.stdout + r.stderr
    m = tmp_path / "lab.yaml"
    m.write_text("name: lab\nsource: lab\n")
    f = d / "other.csv"
    r = run_cli("ingest", str(f), f"{d}/./other.csv", "--mapping", str(m), "--drop-missing",
                "--store", str(tmp_path / "st2"), "--quiet")
    assert r.returncode == 0 and "1 new" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("chunk_rows", [None, 1])
def test_a_file_written_while_it_is_read_is_not_stored(tmp_path: Path, monkeypatch, chunk_rows) -> None:
    """An export still being written: ingest hashed it, the writer added a line (here, right after
    the hash, as a running job would), and ingest stored the rows it then read, a half-written
    last line among them (quarantined here; ``...,0.`` would be 0.0), under the hash of the content
    before, so that the file back at that content was "unchanged" and never read again. Now nothing
    of it is stored, and the next ingest (the file complete) stores it."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)   # read in pieces, committed once
    f = tmp_path / "live.csv"
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n")
    real = files._file_state

    def hashed_then_written(*args, **kw):
        out = real(*args, **kw)
        with open(f, "a") as w:
            w.write("r2,up,0.5,a,0.")
        return out

    monkeypatch.setattr(files, "_file_state", hashed_then_written)
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    assert f"{f}: FAILED: changed while it was read" in r.stderr, r.stdout + r.stderr
    assert not Store(str(tmp_path / "st")).exists() or not Store(str(tmp_path / "st")).read().num_rows
    monkeypatch.setattr(files, "_file_state", real)
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\nr2,up,0.5,a,0.45,linear\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "ds_accuracy") == [("r1", 0.4), ("r2", 0.45)]
