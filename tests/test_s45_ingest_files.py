"""File ingest review (s45): special entries inside dataset directories, units, re-ingests. Each
test failed before its fix, through the CLI as a user runs it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import run_cli


def _frame(runs: tuple[str, ...] = ("r1", "r2")) -> pd.DataFrame:
    return pd.DataFrame({"run_id": list(runs), "model_name": "vit", "us_task": "in1k", "us_accuracy": 0.7, "ds_task": "pets",
                         "ds_accuracy": [0.5 + i / 100 for i in range(len(runs))], "eval_protocol": "linear"})


def _runs(store: Path) -> list[str]:
    return sorted(Store(str(store)).read(columns=["run_id"]).column("run_id").to_pylist())


def test_a_dataset_directorys_part_that_is_no_file_is_said(tmp_path: Path) -> None:
    """A part of ``x.parquet/`` that is a FIFO or a link to a part that is gone (its disk not
    mounted) was dropped without a word: its rows missing, exit code 0, nothing on stderr. A plain
    directory's such entries were always said."""
    ds = tmp_path / "in" / "x.parquet"
    ds.mkdir(parents=True)
    _frame(("r1", "r2")).to_parquet(ds / "part-0.parquet", index=False)
    os.mkfifo(ds / "part-1.parquet")
    os.symlink(tmp_path / "gone" / "part-2.parquet", ds / "part-2.parquet")
    for i, spec in enumerate((ds, ds.parent)):      # named, and inside a named directory
        store = tmp_path / f"st{i}"
        r = run_cli("ingest", str(spec), "--store", str(store))
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "Traceback" not in out, out
        assert f"{ds / 'part-1.parquet'}: skipped (a FIFO)" in out, out
        assert f"{ds / 'part-2.parquet'}: skipped (unreadable (No such file or directory))" in out, out
        assert _runs(store) == ["r1", "r2"]


def test_a_float16_parquet_column_is_stored_as_its_csv_writes_it(tmp_path: Path) -> None:
    """docs/ingest.md: a float16 column's values are the shortest decimals they hold, as a CSV of
    the same table writes them. They were float32's shortest text of the float16 value (0.8 was
    stored as 0.7998047, where ``to_csv`` writes 0.8): a Parquet export and its CSV were two sets
    of values, every row "updated" when one replaced the other."""
    import numpy as np

    f = _frame(("r1", "r2", "r3"))
    f["us_accuracy"] = np.array([0.8, 0.81, 0.82], np.float16)
    f.to_parquet(tmp_path / "h.parquet", index=False)
    r = run_cli("ingest", str(tmp_path / "h.parquet"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    got = sorted(Store(str(tmp_path / "st")).read(columns=["us_accuracy"]).column("us_accuracy").to_pylist())
    assert got == [0.8, 0.81, 0.82]
    assert pd.read_csv(io.StringIO(f.to_csv(index=False)))["us_accuracy"].tolist() == got  # as its CSV


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_file_put_back_after_a_read_that_quarantined_every_row_is_read_again(tmp_path: Path, monkeypatch,
                                                                            chunk_rows) -> None:
    """A file ingested, then changed so that every row is quarantined (FAILED, nothing stored),
    then put back as it was: the store's state was still the first read's, so the file was
    "unchanged since its last ingest, not read again", and the quarantine listed the rejected
    version's rows for good (in one piece and in pieces alike). It is read again, and they go;
    another file of the same name is still refused, as before the failed read."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)      # pieces of 2 rows: a file above 120 bytes
    x, store = tmp_path / "x.csv", str(tmp_path / "st")
    good = _frame(("r1", "r2", "r3")).to_csv(index=False)
    x.write_text(good)
    assert run_cli("ingest", str(x), "--store", store).returncode == 0
    x.write_text(good.replace(",linear", ",kfold"))
    r = run_cli("ingest", str(x), "--store", store)
    assert r.returncode == 2 and "all 3 rows quarantined" in r.stdout + r.stderr, r.stdout + r.stderr
    assert Store(store).quarantine().num_rows == 3
    x.write_text(good)
    r = run_cli("ingest", str(x), "--store", store)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "not read again" not in out and "3 unchanged" in out, out
    assert Store(store).quarantine().num_rows == 0
    assert _runs(tmp_path / "st") == ["r1", "r2", "r3"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.csv").write_text(good.replace("0.5,", "0.55,"))
    r = run_cli("ingest", str(tmp_path / "b" / "x.csv"), "--store", store)
    assert r.returncode == 2 and f"source 'x' came from {x}, another file of the same name" in r.stdout + r.stderr


def test_a_hive_partitions_part_that_is_no_file_is_said_not_the_dataset_refused(tmp_path: Path) -> None:
    """A Hive-partitioned dataset with a part that is a FIFO or a broken link was no dataset at all:
    "out: directory holds no CSV, TSV, Parquet or JSONL files; out/ds_task=cifar: a directory ...;
    name it too", advice that lost the partition column. The dataset is read, the entry said."""
    out = tmp_path / "out"
    (out / "ds_task=pets").mkdir(parents=True)
    (out / "ds_task=cifar").mkdir()
    _frame(("r1", "r2")).drop(columns=["ds_task"]).to_parquet(out / "ds_task=pets" / "part-0.parquet", index=False)
    os.mkfifo(out / "ds_task=cifar" / "part-0.parquet")
    os.symlink(tmp_path / "gone.parquet", out / "ds_task=cifar" / "part-1.parquet")
    r = run_cli("ingest", str(out), "--store", str(tmp_path / "st"))
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in text, text
    assert f"{out / 'ds_task=cifar' / 'part-0.parquet'}: skipped (a FIFO)" in text, text
    assert f"{out / 'ds_task=cifar' / 'part-1.parquet'}: skipped (unreadable (No such file or directory))" in text
    assert _runs(tmp_path / "st") == ["r1", "r2"]


def test_spark_output_with_a_part_that_is_no_file_is_one_export_still(tmp_path: Path) -> None:
    """Spark's output under a plain name (``_SUCCESS`` beside ``part-*``) with a part that is a FIFO
    was read as a plain directory: each part its own source, named after the part (a re-export
    stores every run again). It is one export, source ``out``, and the entry is said."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "_SUCCESS").touch()
    _frame(("r1", "r2")).to_csv(out / "part-00000-a.csv", index=False)
    os.mkfifo(out / "part-00001-a.csv")
    r = run_cli("ingest", str(out), "--store", str(tmp_path / "st"))
    text = r.stdout + r.stderr
    assert r.returncode == 0 and f"{out / 'part-00001-a.csv'}: skipped (a FIFO)" in text, text
    t = Store(str(tmp_path / "st")).read(columns=["source", "run_id"])
    assert sorted(zip(*(t.column(c).to_pylist() for c in ("source", "run_id")))) == [("out", "r1"), ("out", "r2")]


@pytest.mark.parametrize("content, needle", [
    (lambda: _frame().to_csv(index=False).encode(), "it is CSV text, not a Parquet file; name it .csv"),
    (lambda: _frame().to_csv(index=False, sep="\t").encode(), "it is TSV text, not a Parquet file; name it .tsv"),
    (lambda: _frame().to_json(orient="records", lines=True).encode(),
     "it is JSON Lines text, not a Parquet file; name it .jsonl"),
    (lambda: _frame().to_parquet(index=False)[:-300], "a Parquet file cut short (it ends without its footer"),
])
def test_a_file_under_a_parquet_name_that_is_not_one_says_what_it_is(tmp_path: Path, content, needle) -> None:
    """A CSV saved as ``x.parquet``, or a Parquet file cut short by a copy, was "cannot read parquet
    (Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet
    file.)", naming no way out (a text file under a text name says what it is the other way)."""
    (tmp_path / "x.parquet").write_bytes(content())
    r = run_cli("ingest", str(tmp_path / "x.parquet"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out and needle in out and "magic bytes" not in out, out


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_column_of_percents_with_their_sign_is_refused_not_its_bare_value_stored(tmp_path: Path, monkeypatch,
                                                                                 chunk_rows) -> None:
    """A spreadsheet column of "85%", "90%", "70%" and one bare "0.5" (0.5 %), no unit declared:
    the signed percents were quarantined (say what to do) and counted among no values, so the
    column was not "mostly percent", and 0.5 was stored as the fraction 0.5, 50 %, exit code 0.
    The signed values count as percents: the file is refused whole, as a column of 85, 90, 70 and
    0.5 is. A column of signed percents alone is still quarantined row by row, each saying what
    to write (tests/test_cli_review_s36.py)."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)      # pieces of 2 rows: a file above 120 bytes
    f = _frame(("r1", "r2", "r3", "r4"))
    f["ds_accuracy"] = ["85%", "90 %", "70%", "0.5"]
    f.to_csv(tmp_path / "pct.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "pct.csv"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert ("ds_accuracy is in percent, not a fraction: 3 of 4 values are in (1, 100] or written with a % sign "
            "(3 of them), so nothing of this source was stored; but ds_accuracy also has 1 value in (0, 1]: it mixes "
            "fractions with percents") in out, out   # not "set 'units: ...'", which the next ingest refused (session 55)
    assert not Store(str(tmp_path / "st")).exists() or not _runs(tmp_path / "st")


@pytest.mark.parametrize("name", [".csv", " .csv"])
def test_a_file_whose_name_is_only_its_suffix_is_refused_in_one_line(tmp_path: Path, name) -> None:
    """A file's name without its suffix is its rows' source: ``.csv`` gave the source '', and every
    row was quarantined as "source: missing required field", naming nothing the user wrote. It is
    refused in one line saying why; with --source it goes in."""
    (tmp_path / name).write_text(_frame().to_csv(index=False))
    r = run_cli("ingest", str(tmp_path / name), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert f"{tmp_path / name}: the file's name without its suffix is {name[:-4]!r}, and a file's name is the source" \
        in out, out
    r = run_cli("ingest", str(tmp_path / name), "--store", str(tmp_path / "st"), "--source", "lab")
    assert r.returncode == 0 and _runs(tmp_path / "st") == ["r1", "r2"], r.stdout + r.stderr


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_zeros_do_not_outvote_a_percent_column(tmp_path: Path, monkeypatch, chunk_rows) -> None:
    """85 and 90 (percents) beside three crashed runs' 0 and one 0.5 (0.5 %), no unit declared: the
    zeros, 0 in either unit, counted as values against "most are in (1, 100]", so the column was
    no percent column and 0.5 was stored as the fraction 0.5, 50 % (exit code 0). Zeros are not
    counted, as the mirror rule (a percent unit on fractions) does not count them."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)
    f = _frame(("r1", "r2", "r3", "r4", "r5", "r6"))
    f["ds_accuracy"] = [85, 90, 0, 0, 0, 0.5]
    f.to_csv(tmp_path / "z.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "z.csv"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out, out
    assert "ds_accuracy is in percent, not a fraction: 2 of 3 nonzero values are in (1, 100], so nothing" in out, out
    assert not Store(str(tmp_path / "st")).exists() or not _runs(tmp_path / "st")
    f["ds_accuracy"] = [0.85, 0.9, 0, 0, 0, 0.5]           # fractions with zeros go in as before
    f.to_csv(tmp_path / "z.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "z.csv"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and len(_runs(tmp_path / "st")) == 6, r.stdout + r.stderr


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_first_read_that_quarantined_every_row_names_no_file_for_its_source(tmp_path: Path, monkeypatch,
                                                                            chunk_rows) -> None:
    """docs/ingest.md: a store whose state has no path for a source (the file's every row was
    quarantined) refuses nothing: another ``x.csv`` goes in (the failed read's state is no file's)."""
    from meta_study.ingest import files

    if chunk_rows:
        monkeypatch.setattr(files, "CHUNK_ROWS", chunk_rows)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = _frame(("r1", "r2", "r3")).to_csv(index=False)
    (tmp_path / "a" / "x.csv").write_text(good.replace(",linear", ",kfold"))
    store = str(tmp_path / "st")
    assert run_cli("ingest", str(tmp_path / "a" / "x.csv"), "--store", store).returncode == 2
    (tmp_path / "b" / "x.csv").write_text(good)
    r = run_cli("ingest", str(tmp_path / "b" / "x.csv"), "--store", store)
    assert r.returncode == 0 and _runs(tmp_path / "st") == ["r1", "r2", "r3"], r.stdout + r.stderr
