"""File ingest review (s38): exports other researchers hand over as written by pyarrow and Spark.
A Hive-partitioned directory (``write_to_dataset(partition_cols=[...])``, Spark's ``partitionBy``)
was refused ("reads the files directly inside DIR, not in its sub-directories") and its partition
columns live only in the path; Spark's JSON output (``part-*.json``, JSON Lines) was refused as
JSON; and ``x.parquet/`` with the slash a shell completes was no dataset (each part its own
source). Each test failed before its fix, through the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from meta_study.store import Store
from conftest import one_error_line, run_cli


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["r1", "r1", "r2", "r2"], "us_task": ["in1k"] * 4, "us_accuracy": [0.7, 0.7, 0.8, 0.8],
        "ds_task": ["a b", "c/d", "a b", "é=%"], "ds_accuracy": [0.5, 0.6, 0.7, 0.2],
        "eval_protocol": ["linear"] * 4, "shots": [10, 10, None, 5]})


def _rows(store: Path, *cols: str) -> list[tuple]:
    t = Store(str(store)).read(columns=list(cols))
    return sorted(zip(*(t.column(c).to_pylist() for c in cols)), key=repr)


def test_hive_partitioned_directory_written_by_pyarrow_is_one_export(tmp_path: Path) -> None:
    """``pq.write_to_dataset(partition_cols=["ds_task", "shots"])`` writes ``out/ds_task=c%2Fd/
    shots=10/<uuid>-0.parquet``: every part named alike, the task and shots in the path only,
    percent-encoded, a null as ``__HIVE_DEFAULT_PARTITION__``. It is one export, source ``out``,
    with the columns pyarrow's own ``dataset(partitioning="hive")`` reads; unchanged, it is not
    read again; a partition added makes it read again."""
    out = tmp_path / "out"
    pq.write_to_dataset(pa.Table.from_pandas(_frame(), preserve_index=False), str(out),
                        partition_cols=["ds_task", "shots"])
    (out / "_SUCCESS").write_bytes(b"")
    assert any("%2F" in p.name for p in out.iterdir()), sorted(p.name for p in out.iterdir())
    want = pads.dataset(str(out), partitioning="hive").to_table().to_pandas()
    r = run_cli("ingest", str(out), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    got = _rows(tmp_path / "st", "source", "run_id", "ds_task", "ds_accuracy", "shots")
    expected = sorted((("out", x.run_id, x.ds_task, x.ds_accuracy, None if pd.isna(x.shots) else int(x.shots))
                       for x in want.itertuples()), key=repr)
    assert got == expected and {g[2] for g in got} == {"a b", "c/d", "é=%"}, got
    r = run_cli("ingest", str(out), "--store", str(tmp_path / "st"))
    assert "unchanged since its last ingest" in r.stdout + r.stderr, r.stdout + r.stderr
    more = _frame().iloc[:1].assign(ds_task="new", ds_accuracy=0.1)
    pq.write_to_dataset(pa.Table.from_pandas(more, preserve_index=False), str(out), partition_cols=["ds_task", "shots"])
    r = run_cli("ingest", str(out), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "1 new" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_partition_column_the_files_also_hold_is_refused(tmp_path: Path) -> None:
    """A part that holds ``ds_task`` under ``ds_task=x/``: which value is meant? One line."""
    d = tmp_path / "out" / "ds_task=x"
    d.mkdir(parents=True)
    _frame().drop(columns=["shots"]).to_parquet(d / "part-0.parquet", index=False)
    r = run_cli("ingest", str(tmp_path / "out"), "--store", str(tmp_path / "st"))
    assert "'ds_task' is both in the file and a partition directory" in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.returncode != 0
    assert not Store(str(tmp_path / "st")).exists() or Store(str(tmp_path / "st")).read().num_rows == 0


def test_spark_json_output_partitioned_and_not(tmp_path: Path) -> None:
    """Spark's ``df.write.partitionBy("ds_task").json("out")`` and ``df.write.json("x.json")``:
    JSON Lines parts named ``part-*.json``, ``.crc`` checksums and ``_SUCCESS`` beside them."""
    def part(d: Path, rows: pd.DataFrame, n: int) -> None:
        d.mkdir(parents=True, exist_ok=True)
        name = f"part-0000{n}-0f1e.c000.json"
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict("records")))
        (d / f".{name}.crc").write_bytes(b"\x00crc")
    f = _frame().drop(columns=["shots"]).iloc[:3]
    for i, (task, rows) in enumerate(f.groupby("ds_task")):
        part(tmp_path / "out" / f"ds_task={task.replace('/', '%2F')}", rows.drop(columns=["ds_task"]), i)
    (tmp_path / "out" / "_SUCCESS").write_bytes(b"")
    part(tmp_path / "x.json", f, 0)
    (tmp_path / "x.json" / "_SUCCESS").write_bytes(b"")
    r = run_cli("ingest", str(tmp_path / "out"), str(tmp_path / "x.json"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    got = _rows(tmp_path / "st", "source", "run_id", "ds_task", "ds_accuracy")
    assert got == sorted([(s, *t) for s in ("out", "x") for t in
                          (("r1", "a b", 0.5), ("r1", "c/d", 0.6), ("r2", "a b", 0.7))], key=repr), got


def test_a_dataset_directory_named_with_a_trailing_slash_is_still_one_export(tmp_path: Path) -> None:
    """``x.parquet/`` (shell completion): every part was ingested as a source of its own, named
    after the part (``part-0001-abc``), so the next write by Spark (new part names) stored every
    run again."""
    d = tmp_path / "x.parquet"
    d.mkdir()
    _frame().to_parquet(d / "part-0001-abc.parquet", index=False)
    (d / "_SUCCESS").write_bytes(b"")
    r = run_cli("ingest", f"{d}/", "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {s for (s,) in _rows(tmp_path / "st", "source")} == {"x"}


def test_a_hive_dataset_inside_a_named_directory_is_said(tmp_path: Path) -> None:
    """A Hive-partitioned sub-directory of a named directory held no file directly inside, so it
    was passed over without a word; now it is named, as a dataset to name."""
    (tmp_path / "in").mkdir()
    _frame().to_csv(tmp_path / "in" / "a.csv", index=False)
    pq.write_to_dataset(pa.Table.from_pandas(_frame(), preserve_index=False), str(tmp_path / "in" / "hive"),
                        partition_cols=["ds_task"])
    r = run_cli("ingest", str(tmp_path / "in"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "hive: skipped (a dataset directory" in r.stdout + r.stderr, r.stdout + r.stderr


def test_keys_that_differ_between_branches_are_not_a_dataset(tmp_path: Path) -> None:
    """``ds_task=a/x.parquet`` beside ``ds_task=b/shots=1/y.parquet`` is no Hive dataset (pyarrow
    refuses it too): nothing is read, and the user is told why in one line."""
    for sub in ("ds_task=a", "ds_task=b/shots=1"):
        (tmp_path / "out" / sub).mkdir(parents=True)
        _frame().drop(columns=["ds_task", "shots"]).to_parquet(tmp_path / "out" / sub / "p.parquet", index=False)
    r = run_cli("ingest", str(tmp_path / "out"), "--store", str(tmp_path / "st"))
    one_error_line(r, "directory holds no CSV, TSV, Parquet or JSONL files")


def test_copies_and_same_named_files_in_two_sources_file_entries_are_refused(tmp_path: Path) -> None:
    """Each entry of a sources file was opened on its own, so the checks among one call's files did
    not span entries: ``results.csv`` and its copy ``results (1).csv`` stored every run twice (exit
    0), and ``a/x.csv`` then ``b/x.csv`` stored the first and failed on the second. Both are refused
    before anything is stored; a ``name:`` per entry keeps them apart, as the message says."""
    head = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n"
    (tmp_path / "results.csv").write_text(head + "r1,up,0.5,a,0.4,linear\n")
    (tmp_path / "results (1).csv").write_text(head + "r1,up,0.5,a,0.4,linear\n")
    for sub, acc in (("a", 0.4), ("b", 0.3)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.csv").write_text(head + f"r2,up,0.5,a,{acc},linear\n")
    cases = (("results.csv", '"results (1).csv"', "the same content (a copy?)"),
             ("a/x.csv", "b/x.csv", "both would be source 'x'"))
    for i, (one, two, needle) in enumerate(cases):
        sf = tmp_path / f"s{i}.yaml"
        sf.write_text(f"sources:\n  - uri: {one}\n  - uri: {two}\n")
        r = run_cli("ingest", "--sources-file", str(sf), "--store", str(tmp_path / f"st{i}"))
        one_error_line(r, needle)
        assert not Store(str(tmp_path / f"st{i}")).exists() or Store(str(tmp_path / f"st{i}")).read().num_rows == 0
    sf = tmp_path / "named.yaml"
    sf.write_text("sources:\n  - uri: a/x.csv\n    name: alice\n  - uri: b/x.csv\n    name: bob\n")
    r = run_cli("ingest", "--sources-file", str(sf), "--store", str(tmp_path / "st9"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(tmp_path / "st9", "source", "ds_accuracy") == [("alice", 0.4), ("bob", 0.3)]


def test_spark_partitioned_output_in_a_directory_named_like_an_export(tmp_path: Path) -> None:
    """``df.write.partitionBy("ds_task").parquet("results.parquet")``: the directory is named like
    an export but holds partitions, not parts; it was "no CSV, TSV, Parquet or JSONL files"."""
    d = tmp_path / "results.parquet"
    pq.write_to_dataset(pa.Table.from_pandas(_frame(), preserve_index=False), str(d), partition_cols=["ds_task"])
    (d / "_SUCCESS").write_bytes(b"")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {(s, t) for s, t in _rows(tmp_path / "st", "source", "ds_task")} == {
        ("results", t) for t in ("a b", "c/d", "é=%")}


def test_jsonl_in_utf16_or_latin1_says_what_it_is(tmp_path: Path) -> None:
    """Windows PowerShell's ``>`` writes UTF-16: the message was ``x.jsonl:1: not UTF-8 text (byte
    0)``, a position read as a byte; a Latin-1 file's named a position too, with no way out."""
    rec = json.dumps(dict(run_id="r1", us_task="up", us_accuracy=0.5, ds_task="café", ds_accuracy=0.4,
                          eval_protocol="linear"), ensure_ascii=False)
    (tmp_path / "u16.jsonl").write_bytes((rec + "\n").encode("utf-16"))
    (tmp_path / "lat.jsonl").write_bytes((rec + "\n").encode("latin-1"))
    r = run_cli("ingest", str(tmp_path / "u16.jsonl"), "--store", str(tmp_path / "st"))
    assert "it is UTF-16 text" in r.stderr and "iconv -f utf-16" in r.stderr, r.stderr
    r = run_cli("ingest", str(tmp_path / "lat.jsonl"), "--store", str(tmp_path / "st"))
    col = rec.encode("latin-1").index(b"\xe9") + 1
    assert f"lat.jsonl:1: not UTF-8 text (byte 0xe9 at column {col}); save the file as UTF-8" in r.stderr, r.stderr


def test_a_large_gzip_file_is_read_in_pieces(tmp_path: Path, monkeypatch) -> None:
    """A file above ``CHUNK_ROWS`` x 60 bytes of text is read in pieces; a .csv.gz was judged by
    its compressed size, so one of 29 MB (~300 MB of repetitive text) was read whole, in several
    GB. Here: 100-row pieces, and a gzip of 300 rows smaller than 6,000 bytes."""
    import gzip

    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 100)
    text = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n" + "".join(
        f"r{i},imagenet-1k,0.5,cifar100-linear-probe,0.4,linear\n" for i in range(300))
    f = tmp_path / "big.csv.gz"
    f.write_bytes(gzip.compress(text.encode()))
    assert f.stat().st_size < 6000 < len(text)

    def whole(path: str) -> None:
        raise AssertionError(f"{path} read whole")
    monkeypatch.setattr(files, "read_export", whole)
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "300 new" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_partition_link_to_a_directory_above_is_no_endless_walk(tmp_path: Path) -> None:
    """``out/a=1/b=2`` a link to ``out``: the walk of a Hive tree must not follow it for ever."""
    (tmp_path / "out" / "a=1").mkdir(parents=True)
    (tmp_path / "out" / "a=1" / "b=2").symlink_to(tmp_path / "out")
    r = run_cli("ingest", str(tmp_path / "out"), "--store", str(tmp_path / "st"))
    one_error_line(r, "directory holds no CSV, TSV, Parquet or JSONL files")
