"""File ingest and sources-file defects of a fresh review (s37), on real files through the CLI
where a user meets them: a pandas index column (``df.to_csv(path)``) stored in every row's extra,
a Spark ``x.parquet/`` directory taken as one source per part file, and a relative sqlite URI of a
sources file read from the working directory. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from meta_study.ingest.sources import load_sources_file
from meta_study.store import Store
from conftest import run_cli


def _frame(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "model_name": "vit", "us_task": "up",
                         "us_accuracy": [0.5 + i / 100 for i in range(n)], "ds_task": "pets",
                         "ds_accuracy": [0.4 + i / 100 for i in range(n)], "eval_protocol": "linear"})


def _extras(store: Path) -> dict[str, list]:
    t = Store(str(store)).read(columns=["run_id", "extra"])
    return {r: [k for k, _ in (e or [])] for r, e in zip(t.column("run_id").to_pylist(), t.column("extra").to_pylist())}


# ---- a relative sqlite URI of a sources file ------------------------------------------------------

def test_a_sources_files_relative_sqlite_uri_is_relative_to_the_file(tmp_path: Path, monkeypatch) -> None:
    """``uri: sqlite:///mlflow.db`` in ``lab/sources.yaml`` was read from the working directory,
    while ``uri: exports/x.csv`` and ``mapping:`` of the same file are relative to the file: from
    another directory it named (or missed) another database."""
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "sources.yaml").write_text(
        "sources:\n"
        "  - uri: sqlite:///runs/mlflow.db\n"
        "  - uri: mlflow-sql:sqlite:///runs/mlflow.db?mode=ro\n"
        "  - uri: sqlite:////abs/mlflow.db\n"
        "  - uri: x.csv\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    got = [e.spec for e in load_sources_file(str(lab / "sources.yaml"))]
    db = lab / "runs" / "mlflow.db"
    assert got == [f"sqlite:///{db}", f"mlflow-sql:sqlite:///{db}?mode=ro", "sqlite:////abs/mlflow.db",
                   str(lab / "x.csv")], got
    # what a user sees: the database looked for is the one beside the sources file
    (lab / "one.yaml").write_text("sources:\n  - uri: sqlite:///runs/mlflow.db\n")
    r = run_cli("ingest", "--sources-file", str(lab / "one.yaml"), "--store", str(tmp_path / "st"), cwd=elsewhere)
    assert f"no such database file ({db})" in r.stderr, r.stderr
    assert str(elsewhere / "runs") not in r.stderr, r.stderr


# ---- pandas' index column in a CSV ----------------------------------------------------------------

def test_the_index_pandas_writes_into_a_csv_is_not_stored(tmp_path: Path, monkeypatch) -> None:
    """``df.to_csv(path)`` without ``index=False`` writes the row numbers as an unnamed first
    column: it was stored in every row's extra as ``Unnamed: 0`` (and a sorted export of the same
    rows "updated" every row). Now it is left out, and said; in a large file read in pieces too."""
    df = _frame()
    df.to_csv(tmp_path / "idx.csv")
    df.to_csv(tmp_path / "idx.tsv", sep="\t")
    r = run_cli("ingest", str(tmp_path / "idx.csv"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is the index pandas writes" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _extras(tmp_path / "st") == {f"r{i}": [] for i in range(4)}
    # a sorted export of the same rows (its index permuted) changes nothing
    df.sort_values("ds_accuracy", ascending=False).to_csv(tmp_path / "idx.csv")
    r = run_cli("ingest", str(tmp_path / "idx.csv"), "--store", str(tmp_path / "st"))
    assert "0 new, 0 updated, 4 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run_cli("ingest", str(tmp_path / "idx.tsv"), "--store", str(tmp_path / "st_tsv"))
    assert r.returncode == 0 and _extras(tmp_path / "st_tsv") == {f"r{i}": [] for i in range(4)}, r.stderr
    # read in pieces: every piece leaves it out
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)
    r = run_cli("ingest", str(tmp_path / "idx.csv"), "--store", str(tmp_path / "st_big"))
    assert r.returncode == 0 and _extras(tmp_path / "st_big") == {f"r{i}": [] for i in range(4)}, r.stderr


def test_an_unnamed_first_column_that_is_not_row_numbers_or_that_a_mapping_names_is_kept(tmp_path: Path) -> None:
    """Only row numbers in an unnamed first column are pandas' index: other values, and a column
    the mapping names, are kept as before."""
    df = _frame()
    df.index = ["a", "b", "c", "d"]
    df.to_csv(tmp_path / "labels.csv")
    r = run_cli("ingest", str(tmp_path / "labels.csv"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "index pandas writes" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert _extras(tmp_path / "st") == {f"r{i}": ["Unnamed: 0"] for i in range(4)}
    _frame().to_csv(tmp_path / "seeded.csv")
    (tmp_path / "m.yaml").write_text('rename: {"Unnamed: 0": seed}\n')
    r = run_cli("ingest", str(tmp_path / "seeded.csv"), "--mapping", str(tmp_path / "m.yaml"),
                "--store", str(tmp_path / "st2"))
    assert r.returncode == 0, r.stdout + r.stderr
    t = Store(str(tmp_path / "st2")).read(columns=["run_id", "seed"])
    assert sorted(zip(t.column("run_id").to_pylist(), t.column("seed").to_pylist())) == [
        (f"r{i}", i) for i in range(4)]
    (tmp_path / "t.yaml").write_text('run_id: "Unnamed: 0"\n')
    r = run_cli("ingest", str(tmp_path / "seeded.csv"), "--mapping", str(tmp_path / "t.yaml"),
                "--store", str(tmp_path / "st3"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(Store(str(tmp_path / "st3")).read(columns=["run_id"]).column("run_id").to_pylist()) == [
        str(i) for i in range(4)]


# ---- a Spark dataset directory ----------------------------------------------------------------------

def _spark_parquet(d: Path, df: pd.DataFrame, uid: str) -> None:
    """``df.write.parquet(d)`` as Spark lays it out: part files, an empty one, _SUCCESS, .crc files."""
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    half = len(df) // 2
    for i, piece in enumerate((df.iloc[:half], df.iloc[:0], df.iloc[half:])):
        name = f"part-{i:05d}-{uid}-c000.snappy.parquet"
        piece.to_parquet(d / name, index=False)
        (d / f".{name}.crc").write_bytes(b"crc")
    (d / "_SUCCESS").write_bytes(b"")


def test_a_spark_parquet_directory_is_one_source(tmp_path: Path) -> None:
    """``x.parquet/`` of part files was one source per part, named after the part
    (``part-00000-<uuid>-c000.snappy``): Spark names its parts anew at every write, so each rewrite
    of the same table stored every run once more. It is one export: source ``x``, one line, and a
    rewrite of the same rows changes nothing."""
    df = _frame(6)
    _spark_parquet(tmp_path / "x.parquet", df, "aaaa")
    r = run_cli("ingest", str(tmp_path / "x.parquet"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "part-" not in out, out
    assert f"{tmp_path / 'x.parquet'}: 6 new, 0 updated, 0 unchanged" in out, out
    t = Store(str(tmp_path / "st")).read(columns=["source", "run_id"])
    assert sorted(zip(t.column("source").to_pylist(), t.column("run_id").to_pylist())) == [
        ("x", f"r{i}") for i in range(6)]
    r = run_cli("ingest", str(tmp_path / "x.parquet"), "--store", str(tmp_path / "st"))
    assert "unchanged since its last ingest" in r.stdout + r.stderr, r.stdout + r.stderr
    # Spark writes the same table again, under new part names: the same rows, stored once
    _spark_parquet(tmp_path / "x.parquet", df, "bbbb")
    r = run_cli("ingest", str(tmp_path / "x.parquet"), "--store", str(tmp_path / "st"))
    assert "0 new, 0 updated, 6 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    assert Store(str(tmp_path / "st")).read(columns=["run_id"]).num_rows == 6


def test_a_spark_csv_directory_inside_a_named_directory_is_one_source_with_placed_rejects(tmp_path: Path) -> None:
    """A dataset directory inside a named directory is read as one export too (it was skipped as
    "a directory"), and a rejected row's payload names the dataset, its part and its line."""
    d = tmp_path / "exports" / "y.csv"
    d.mkdir(parents=True)
    df = _frame(3).astype({"ds_accuracy": object})
    df.iloc[:1].to_csv(d / "part-00000-u-c000.csv", index=False)
    (d / "part-00001-u-c000.csv").write_bytes(b"")            # an empty partition
    bad = df.iloc[1:].copy()
    bad["ds_accuracy"] = ["0.5", "oops"]
    bad.to_csv(d / "part-00002-u-c000.csv", index=False)
    (d / "_SUCCESS").write_bytes(b"")
    _frame(2).assign(run_id=["s0", "s1"]).to_csv(tmp_path / "exports" / "z.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "exports"), "--store", str(tmp_path / "st"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"{d}: 2 new, 0 updated, 0 unchanged, 1 quarantined" in out, out
    t = Store(str(tmp_path / "st")).read(columns=["source", "run_id"])
    assert sorted(zip(t.column("source").to_pylist(), t.column("run_id").to_pylist())) == [
        ("y", "r0"), ("y", "r1"), ("z", "s0"), ("z", "s1")]
    q = Store(str(tmp_path / "st")).quarantine().to_pandas()
    raw = json.loads(q["raw"].iloc[0])
    assert (raw["_file"], raw["_part"], raw["_line"], raw["ds_accuracy"]) == (
        "y.csv", "part-00002-u-c000.csv", 3, "oops"), raw


def test_a_files_rows_without_a_run_id_are_settled_by_that_file_only(tmp_path: Path) -> None:
    """Quarantined rows without a run id are settled when their file is read again; they were
    matched by bare file name, so reading b/res.csv cleared a/res.csv's rows, a file never read again."""
    rows = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        df = _frame(3).assign(run_id=[f"{sub}0", f"{sub}1", None])
        df.to_csv(tmp_path / sub / "res.csv", index=False)
        r = run_cli("ingest", str(tmp_path / sub / "res.csv"), "--source", "lab", "--store", str(tmp_path / "st"))
        assert r.returncode == 0 and "1 quarantined" in r.stdout, r.stdout + r.stderr
        rows.append(Store(str(tmp_path / "st")).quarantine().num_rows)
    assert rows == [1, 2]
    q = Store(str(tmp_path / "st")).quarantine().to_pandas()
    assert sorted(json.loads(raw)["_path"] for raw in q["raw"]) == [
        str((tmp_path / sub / "res.csv").resolve()) for sub in ("a", "b")]
    # a/res.csv read again, fixed: its own row is settled, b's stays
    _frame(3).assign(run_id=["a0", "a1", "a2"]).to_csv(tmp_path / "a" / "res.csv", index=False)
    r = run_cli("ingest", str(tmp_path / "a" / "res.csv"), "--source", "lab", "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    q = Store(str(tmp_path / "st")).quarantine().to_pandas()
    assert [json.loads(raw)["_path"] for raw in q["raw"]] == [str((tmp_path / "b" / "res.csv").resolve())]


def test_a_sources_files_home_path_is_the_users_home(tmp_path: Path, monkeypatch) -> None:
    # "uri: ~/exports/x.csv" was read as LAB/~/exports/x.csv
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "sources.yaml").write_text("sources:\n  - uri: ~/exports/x.csv\n    mapping: ~/m.yaml\n")
    (e,) = load_sources_file(str(lab / "sources.yaml"))
    assert (e.spec, e.mapping) == (str(tmp_path / "home" / "exports" / "x.csv"), str(tmp_path / "home" / "m.yaml"))
