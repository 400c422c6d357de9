"""File ingest review (s40): exports as researchers hand them over, mislabelled, commented, written
by Spark under a plain name or as a Delta table, with the pandas index in some parts only, as JSON
Lines that name their source, or named ``_final.csv``. Each test failed before its fix, through the
CLI as a user runs it."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli


def _frame(runs: tuple[str, ...] = ("r1", "r2"), source: str | None = None) -> pd.DataFrame:
    f = pd.DataFrame({"run_id": list(runs), "us_task": "in1k", "us_accuracy": 0.7, "ds_task": "pets",
                      "ds_accuracy": [0.5 + i / 100 for i in range(len(runs))], "eval_protocol": "linear"})
    return f if source is None else f.assign(source=source)[["source", *f.columns]]


def _rows(store: Path, *cols: str) -> list[tuple]:
    t = Store(str(store)).read(columns=list(cols))
    return sorted(zip(*(t.column(c).to_pylist() for c in cols)), key=repr)


def _failed(r, needle: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out and needle in out, (r.returncode, out)


@pytest.mark.parametrize("name, content, needle", [
    ("dl.csv", lambda: gzip.compress(_frame().to_csv(index=False).encode()),
     "it is gzip-compressed, not CSV text; name it dl.csv.gz, or decompress it"),
    ("dl.jsonl", lambda: gzip.compress(_frame().to_json(orient="records", lines=True).encode()),
     "it is gzip-compressed, not JSONL text; name it dl.jsonl.gz"),
    ("sheet.csv", lambda: _zip(_frame().to_csv(index=False).encode() * 20),
     "it is a ZIP archive (an .xlsx spreadsheet is one), not CSV text; export the sheet as CSV"),
    ("table.tsv", lambda: _frame().to_parquet(index=False), "it is a Parquet file, not TSV text; name it .parquet"),
    ("plain.csv.gz", lambda: _frame().to_csv(index=False).encode(),
     "not gzip-compressed, though its name ends in .gz; name it without .gz"),
])
def test_a_compressed_or_binary_file_under_a_text_name_says_what_it_is(tmp_path: Path, name, content, needle) -> None:
    """A gzip download saved as ``x.csv``, an ``.xlsx`` renamed ``.csv``, a Parquet file named
    ``.tsv`` was "line 1 is not UTF-8 text (byte 0x8b ...); save the file as UTF-8 (e.g. iconv -f
    latin1 -t utf-8)", a fix that makes garbage; a plain CSV named ``.csv.gz`` was "Not a gzipped
    file (b'ru')"."""
    (tmp_path / name).write_bytes(content())
    _failed(run_cli("ingest", str(tmp_path / name), "--store", str(tmp_path / "st")), needle)


def _zip(data: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", data)
    return buf.getvalue()


def test_a_header_that_starts_like_a_magic_number_is_still_text(tmp_path: Path) -> None:
    """Only bytes that are not text are taken for a binary file: columns ``PAR1, PAR2`` are read."""
    (tmp_path / "p.csv").write_text(_frame().assign(PAR1=1)[["PAR1", *_frame().columns]].to_csv(index=False))
    r = run_cli("ingest", str(tmp_path / "p.csv"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_dataset_whose_parts_differ_in_the_pandas_index_is_read(tmp_path: Path) -> None:
    """``x.csv/`` of one part written with pandas' index (``Unnamed: 0``) and one without: a
    KeyError traceback. Every part's rows are stored, the index nowhere."""
    d = tmp_path / "x.csv"
    d.mkdir()
    _frame(("r1", "r2")).to_csv(d / "part-0.csv")
    _frame(("r3", "r4")).to_csv(d / "part-1.csv", index=False)
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "4 new" in r.stdout + r.stderr and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "extra") == [(f"r{i}", None) for i in range(1, 5)]


def test_json_lines_files_that_name_their_source_are_told_apart_as_csv_files_are(tmp_path: Path) -> None:
    """``openclip/us_ds.jsonl`` and ``dclm/us_ds.jsonl``, each with a ``source`` column: refused as
    "both would be source 'us_ds'" in one call, and the second refused in a later call ("another
    file of the same name ... or a 'source' column", which it has), where the same tables as CSV
    or Parquet went in."""
    for s in ("openclip", "dclm"):
        (tmp_path / s).mkdir()
        _frame(source=s).to_json(tmp_path / s / "us_ds.jsonl", orient="records", lines=True)
    files = [str(tmp_path / s / "us_ds.jsonl") for s in ("openclip", "dclm")]
    r = run_cli("ingest", *files, "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    want = sorted(((s, run) for s in ("openclip", "dclm") for run in ("r1", "r2")), key=repr)
    assert _rows(tmp_path / "st", "source", "run_id") == want
    for f in files:
        r = run_cli("ingest", f, "--store", str(tmp_path / "st2"))
        assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st2", "source", "run_id") == want


@pytest.mark.parametrize("first", ["# exported by wandb; project x", "# exported by wandb, project x", "sep=,"])
def test_a_comment_or_sep_line_above_the_header_is_named(tmp_path: Path, first: str) -> None:
    """A comment line above the header was "the file looks ';'-separated; export it with ','",
    or "line 2 has 6 fields but the header has 2 (a value too many ...?)"."""
    (tmp_path / "c.csv").write_text(first + "\n" + _frame().to_csv(index=False))
    one_error_line(run_cli("ingest", str(tmp_path / "c.csv"), "--store", str(tmp_path / "st")),
                   "looks like a comment or Excel's 'sep=' line, not the column names", "delete the lines above")


def test_an_export_whose_name_starts_with_an_underscore_is_read(tmp_path: Path) -> None:
    """A directory's ``_final.csv`` was passed over without a word (only ``_SUCCESS`` and the like
    are Spark's markers)."""
    d = tmp_path / "in"
    d.mkdir()
    _frame(("r1",)).to_csv(d / "a.csv", index=False)
    _frame(("r2",)).to_csv(d / "_final.csv", index=False)
    (d / "_SUCCESS").write_bytes(b"")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "source", "run_id") == [("_final", "r2"), ("a", "r1")]


def test_spark_output_under_a_plain_name_is_one_export(tmp_path: Path) -> None:
    """``df.write.parquet("results")`` writes ``results/_SUCCESS`` and ``part-<n>-<uuid>...``: each
    part was a source of its own, named after the part, so a re-export (new uuids) stored every run
    again, under new sources."""
    d = tmp_path / "results"

    def export(uuid: str) -> None:
        for q in d.glob("part-*"):
            q.unlink()
        for i, runs in enumerate((("r1",), ("r2",))):
            _frame(runs).to_parquet(d / f"part-0000{i}-{uuid}-c000.snappy.parquet", index=False)
            (d / f".part-0000{i}-{uuid}-c000.snappy.parquet.crc").write_bytes(b"\0")

    d.mkdir()
    (d / "_SUCCESS").write_bytes(b"")
    export("aaaa")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    export("bbbb")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "2 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "source", "run_id") == [("results", "r1"), ("results", "r2")]


def test_a_delta_table_is_refused_not_read_with_its_replaced_parts(tmp_path: Path) -> None:
    """A Delta table keeps the parts an overwrite replaced; only ``_delta_log`` says which are live.
    Read as a directory, the old rows were stored beside the new ones."""
    d = tmp_path / "tbl"
    (d / "_delta_log").mkdir(parents=True)
    _frame().to_parquet(d / "part-00000-aaaa.snappy.parquet", index=False)
    _frame().assign(ds_accuracy=0.9).to_parquet(d / "part-00000-bbbb.snappy.parquet", index=False)
    (d / "_delta_log" / "00000000000000000001.json").write_text(
        json.dumps({"remove": {"path": "part-00000-aaaa.snappy.parquet"}}) + "\n")
    one_error_line(run_cli("ingest", str(d), "--store", str(tmp_path / "st")), "a Delta Lake table")
    assert not Store(str(tmp_path / "st")).exists()


def test_a_join_of_an_absolute_and_a_relative_path_is_labelled(tmp_path: Path) -> None:
    """``ingest /data/up.csv down.csv --mapping join.yaml``: the source's label took the common path
    of both, and ``os.path.commonpath`` raised "Can't mix absolute and relative paths", a traceback."""
    pd.DataFrame({"model": ["a", "b"], "top1": [70.0, 80.0]}).to_csv(tmp_path / "up.csv", index=False)
    pd.DataFrame({"model": ["a", "b"], "top1": [50.0, 60.0]}).to_csv(tmp_path / "down.csv", index=False)
    (tmp_path / "join.yaml").write_text(
        "join:\n  key: [model]\n  upstream: {file: up.csv, task: in1k, accuracy: top1}\n"
        "  downstream:\n    - {file: down.csv, task: pets, accuracy: top1}\n"
        "run_id: '{model}'\naccuracy_unit: percent\nconstants: {eval_protocol: linear}\n")
    r = run_cli("ingest", str(tmp_path / "up.csv"), "down.csv", "--mapping", "join.yaml", "--store", "st", cwd=tmp_path)
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert f"{tmp_path}/ (2 files)" in r.stdout + r.stderr


@pytest.mark.parametrize("order", ["added", "dropped"])
def test_a_json_lines_key_of_some_pieces_only_is_a_column_of_every_piece(tmp_path: Path, monkeypatch, order) -> None:
    """A large JSON Lines file is read in pieces; a key logged from some record on (or dropped at
    some record) was missing from the pieces before (after) it, and a mapping renaming it refused
    the whole file: "renames column(s) body_lr not in the file". Read whole, the same file went in."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 10)
    recs = [dict(run_id=f"r{i}", us_task="in1k", us_accuracy=0.5, ds_task="pets", ds_accuracy=0.4,
                 eval_protocol="linear", pad="x" * 40, **({"body_lr": 0.1} if i >= 15 else {})) for i in range(30)]
    if order == "dropped":
        recs.reverse()
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert (tmp_path / "log.jsonl").stat().st_size > 10 * 60      # read in pieces
    (tmp_path / "m.yaml").write_text("rename: {body_lr: lr}\n")
    r = run_cli("ingest", str(tmp_path / "log.jsonl"), "--mapping", str(tmp_path / "m.yaml"),
                "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "30 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "run_id", "lr") == sorted(
        ((f"r{i}", 0.1 if i >= 15 else None) for i in range(30)), key=repr)


def test_a_key_spark_left_out_of_a_json_part_is_a_column_of_every_part(tmp_path: Path) -> None:
    """Spark's JSON writer leaves out null fields: a part whose rows all lack ``body_lr`` has no such
    key, and a mapping renaming it refused the whole dataset ("renames column(s) body_lr not in the
    file"), though the dataset read as one export has the column."""
    d = tmp_path / "x.json"
    d.mkdir()
    (d / "_SUCCESS").write_bytes(b"")
    for i, lr in enumerate((0.1, None)):
        rec = {**_frame((f"r{i}",)).iloc[0].to_dict(), **({"body_lr": lr} if lr is not None else {})}
        (d / f"part-0000{i}-ab.c000.json").write_text(json.dumps(rec) + "\n")
    (tmp_path / "m.yaml").write_text("rename: {body_lr: lr}\n")
    r = run_cli("ingest", str(d), "--mapping", str(tmp_path / "m.yaml"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "2 new" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _rows(tmp_path / "st", "source", "run_id", "lr") == [("x", "r0", 0.1), ("x", "r1", None)]


def test_a_column_named_hash_is_no_comment(tmp_path: Path) -> None:
    """A header whose first column is ``#`` (a spreadsheet's row numbers) is column names: a row
    with a value too many is said as before, not as a comment above the header."""
    (tmp_path / "h.csv").write_text("#," + _frame().to_csv(index=False).replace("\nr1,", "\n1,r1,").replace(
        "\nr2,", "\n2,r2,x,"))
    one_error_line(run_cli("ingest", str(tmp_path / "h.csv"), "--store", str(tmp_path / "st")),
                   "line 3 has 8 fields but the header has 7 (a value too many")


def test_pandas_parquet_gzip_file_is_read_not_passed_over(tmp_path: Path) -> None:
    """``df.to_parquet("df.parquet.gzip", compression="gzip")`` (pandas' own example) is Parquet: in
    a directory it was passed over without a word, named alone "unknown file type"; a ``.csv.gzip``
    was passed over silently too."""
    d = tmp_path / "in"
    d.mkdir()
    _frame().to_parquet(d / "results.parquet.gzip", compression="gzip")
    (d / "more.csv.gzip").write_bytes(gzip.compress(_frame(("r9",)).to_csv(index=False).encode()))
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{d / 'more.csv.gzip'}: skipped (compressed with gzip" in r.stdout + r.stderr
    assert _rows(tmp_path / "st", "source", "run_id") == [("results", "r1"), ("results", "r2")]


@pytest.mark.parametrize("text", [lambda f: f.to_json(orient="records", indent=2), lambda f: f.to_json(orient="records"),
                                  lambda f: json.dumps(f.iloc[0].to_dict(), indent=2)])
def test_a_json_document_under_a_json_lines_name_says_so(tmp_path: Path, text) -> None:
    """``json.dump(rows, f, indent=2)`` saved as ``.jsonl`` was "x.jsonl:1: invalid JSON (Expecting
    value: line 2 column 1 (char 2))", naming neither what the file is nor how to write it."""
    (tmp_path / "x.jsonl").write_text(text(_frame()))
    one_error_line(run_cli("ingest", str(tmp_path / "x.jsonl"), "--store", str(tmp_path / "st")),
                   "it is one JSON document", "not JSON Lines (one object a line)", "lines=True")
