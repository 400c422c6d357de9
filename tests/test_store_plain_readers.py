"""Plain Parquet readers (pandas, pyarrow.dataset, polars, duckdb) read a store's partition columns
as the strings they are: numeric-looking task names (``007`` and ``7``) stay apart and intact.
A store of the previous layout (format 1, hive directories) still reads, and its first commit
upgrades it."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.parse
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from conftest import make_rows, run_cli
from meta_study.schema import FILE_SCHEMA
from meta_study.validation import validate
from meta_study.store import Store

# names a reader could take for numbers, dates, booleans, or hide (a leading '_' or '.')
US = ("007", "7")
DS = ("7", "007", "1e3", "2024-01-01", "true", "_x", ".y", "a=b", "x/y")
COLS = ["us_task", "ds_task", "run_id"]


def _rows() -> pd.DataFrame:
    return pd.concat([make_rows(2, us_task=us, ds_tasks=DS, run_prefix=f"{us}-") for us in US], ignore_index=True)


def _polars(root: str) -> pd.DataFrame:
    pl = pytest.importorskip("polars")
    return pl.read_parquet(f"{root}/*/*/*.parquet").to_pandas()


def _duckdb(root: str) -> pd.DataFrame:
    duckdb = pytest.importorskip("duckdb")
    return duckdb.sql(f"select * from read_parquet('{root}/*/*/*.parquet', hive_partitioning=true)").df()


READERS = {
    "pandas": lambda root: pd.read_parquet(root),
    "pyarrow.parquet": lambda root: pq.read_table(root).to_pandas(),
    "pyarrow.dataset": lambda root: pads.dataset(root, format="parquet").to_table().to_pandas(),
    "pyarrow.dataset-hive": lambda root: pads.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas(),
    "polars": _polars,
    "duckdb": _duckdb,
}


def _keys(df: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, df[COLS].astype(object).itertuples(index=False)))


@pytest.mark.parametrize("reader", list(READERS))
def test_plain_readers_read_task_names_as_strings(tmp_path, reader):
    root = str(tmp_path / "st")
    s = Store(root)
    s.commit(validate(_rows()).table)
    want = _keys(s.to_pandas())
    assert len(want) == 2 * 2 * len(DS)
    df = READERS[reader](root)
    for c in ("us_task", "ds_task"):
        assert all(isinstance(v, str) for v in df[c]), (c, df[c].dtype, df[c].head(3).tolist())
    assert _keys(df) == want


def _format1_store(root: Path, df: pd.DataFrame) -> None:
    """A store as meta-study wrote it before format 2: hive directories ``us_task=<name>/
    ds_task=<name>/``, files without the partition columns, a manifest without checksum or copy."""
    t = validate(df).table
    t = t.set_column(t.schema.get_field_index("ingested_at"), "ingested_at",
                     pa.array([pd.Timestamp("2026-01-01", tz="UTC")] * t.num_rows, pa.timestamp("us", tz="UTC")))
    t = t.set_column(t.schema.get_field_index("schema_version"), "schema_version", pa.array([1] * t.num_rows, pa.int32()))
    data = []
    for (us, ds), g in t.to_pandas().groupby(["us_task", "ds_task"]):
        rel = f"us_task={urllib.parse.quote(us, safe='')}/ds_task={urllib.parse.quote(ds, safe='')}/part-0000000001-0a0b0c0d.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(g.drop(columns=["us_task", "ds_task"]), schema=FILE_SCHEMA,
                                            preserve_index=False), buf, compression="zstd")
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(buf.getvalue())
        data.append({"path": rel, "staged": f"_staging/0000000001-0a0b0c0d/{rel}", "rows": len(g),
                     "bytes": len(buf.getvalue()), "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                     "us_task": us, "ds_task": ds})
    (root / "_meta" / "manifests").mkdir(parents=True)
    (root / "_meta" / "manifests" / "0000000001.json").write_text(json.dumps({
        "format": "meta-study-store", "format_version": 1, "schema_version": 1, "version": 1,
        "created_at": "2026-01-01T00:00:00+00:00", "data": data, "quarantine": [], "state": {},
        "pending_delete": [], "log": [{"version": 1, "operation": "ingest", "time": "2026-01-01T00:00:00+00:00"}]},
        indent=1, sort_keys=True))


def test_a_store_of_the_previous_layout_reads_and_is_upgraded_by_its_first_commit(tmp_path):
    root = tmp_path / "st"
    df = _rows()
    _format1_store(root, df)
    s = Store(str(root))
    assert _keys(s.to_pandas()) == _keys(df)                         # meta-study reads it as it was
    r = run_cli("store", "check", str(root))
    assert r.returncode == 0 and "no damage" in r.stdout, r.stdout + r.stderr
    with pytest.raises((ValueError, pa.ArrowException)):
        pd.read_parquet(root)   # format 1: "Categorical categories must be unique" (docs/store.md says so)

    s.commit(validate(make_rows(1, us_task="007", ds_tasks=("new",), run_prefix="n-")).table)
    assert [h["operation"] for h in s.history()][-2:] == ["upgrade", "write"]
    assert not list(root.glob("us_task=*")), "the old directories are gone"
    want = _keys(s.to_pandas())
    assert len(want) == len(df) + 1
    for reader in READERS.values():
        try:
            assert _keys(reader(str(root))) == want
        except pytest.skip.Exception:
            pass
    assert run_cli("store", "check", str(root)).returncode == 0
