"""Review of file ingest: values that were stored silently wrong, each through the CLI as a user
runs it (``meta-study ingest FILE --store DIR``), a few rows a case (~0.1 s each)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meta_study.store import Store
from conftest import run_cli

ROW = dict(us_task="up", us_accuracy=0.5, ds_task="a", ds_accuracy=0.4, eval_protocol="linear")
BIG = 2 ** 53 + 1          # the first integer float64 cannot hold: read as a float it is 2**53
INT64_MAX = 2 ** 63 - 1    # float64 reads it as 2**63, past int64


def _seeds(store: Path) -> dict[str, int | None]:
    rows = Store(str(store)).read(columns=["run_id", "seed"])   # Arrow: pandas would make the seeds float64
    return dict(zip(rows.column("run_id").to_pylist(), rows.column("seed").to_pylist()))


def _ingest(path: Path, store: Path) -> str:
    res = run_cli("ingest", str(path), "--store", str(store))
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def test_large_integer_seed_in_csv_is_stored_exactly(tmp_path: Path) -> None:
    """A 64-bit seed went through float64: 9007199254740993 was stored as ...992 (another seed,
    silently), and int64's largest was quarantined as "does not fit". A fraction that float64
    rounded away is still not an integer, and 2**63 still does not fit."""
    f = tmp_path / "seeds.csv"
    f.write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,seed\n"
                 f"r1,up,0.5,a,0.4,linear,{BIG}\n"
                 f"r2,up,0.5,a,0.4,linear,{INT64_MAX}\n"
                 f"r3,up,0.5,a,0.4,linear,\"-9,223,372,036,854,775,808\"\n"
                 f"r4,up,0.5,a,0.4,linear,{BIG}.5\n"
                 f"r5,up,0.5,a,0.4,linear,{2 ** 63}\n"
                 "r6,up,0.5,a,0.4,linear,7\n")
    out = _ingest(f, tmp_path / "st")
    assert "4 new" in out and "2 quarantined" in out, out
    assert _seeds(tmp_path / "st") == {"r1": BIG, "r2": INT64_MAX, "r3": -2 ** 63, "r6": 7}
    q = run_cli("store", "quarantine", str(tmp_path / "st")).stdout
    assert "r4 (seeds.csv line 5, ds_task a): seed: wrong type" in q and "r5 (seeds.csv line 6, ds_task a): seed:" in q, q
    assert "does not fit" in q, q
    # a row added: the file is read again, and its exact values compare equal to the stored ones
    f.write_text(f.read_text() + "r7,up,0.5,a,0.4,linear,8\n")
    out = _ingest(f, tmp_path / "st")
    assert "1 new, 0 updated, 4 unchanged" in out, out


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_large_integer_seed_beside_a_null_is_stored_exactly(tmp_path: Path, fmt: str) -> None:
    """An integer column with a null is float64 in pandas (JSON Lines, Parquet int64): the seed
    9007199254740993 beside a run without a seed was stored as ...992."""
    rows = [dict(ROW, run_id="r1", seed=BIG), dict(ROW, run_id="r2", seed=None), dict(ROW, run_id="r3", seed=3)]
    f = tmp_path / f"seeds.{fmt}"
    if fmt == "jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
            [(k, pa.float64() if "accuracy" in k else pa.string()) for k in ROW] + [("run_id", pa.string()),
                                                                                  ("seed", pa.int64())])), f)
    _ingest(f, tmp_path / "st")
    assert _seeds(tmp_path / "st") == {"r1": BIG, "r2": None, "r3": 3}


def test_parquet_decimal_columns_are_numbers(tmp_path: Path) -> None:
    """A Parquet decimal128 column (pandas gives Decimal objects) was quarantined whole, "Decimal('0.8100')
    is not a number", and the file failed; its values are numbers, converted with their units."""
    import decimal

    dec = decimal.Decimal
    f = tmp_path / "dec.parquet"
    pq.write_table(pa.table({
        "run_id": ["r1", "r2", "r3"], "us_task": ["up"] * 3, "ds_task": ["a"] * 3, "eval_protocol": ["linear"] * 3,
        "us_accuracy": pa.array([dec("0.8100"), dec("0.8200"), dec("0.8300")], pa.decimal128(5, 4)),
        "ds_accuracy": pa.array([dec("90.5"), dec("80.0"), dec("70.0")], pa.decimal128(5, 1)),
        "seed": pa.array([dec(BIG), None, dec("3.5")], pa.decimal128(20, 1))}), f)
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    res = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--mapping", str(tmp_path / "m.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = Store(str(tmp_path / "st")).read(columns=["run_id", "us_accuracy", "ds_accuracy", "seed"]).to_pylist()
    assert sorted(rows, key=lambda r: r["run_id"]) == [
        {"run_id": "r1", "us_accuracy": 0.81, "ds_accuracy": 0.905, "seed": BIG},
        {"run_id": "r2", "us_accuracy": 0.82, "ds_accuracy": 0.8, "seed": None}]
    assert "r3 (dec.parquet, ds_task a): seed: wrong type (3.5 is not an integer)" in run_cli(
        "store", "quarantine", str(tmp_path / "st")).stdout


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_integer_run_ids_beside_a_null_are_their_digits(tmp_path: Path, fmt: str) -> None:
    """An integer column with a null is float64 in pandas: an integer run_id became 1.0 and every
    row was quarantined ("float64 is not a string", the file failed), and a run_id template over
    such a column gave 'vit-1.0' where the same table as CSV gives 'vit-1' (two runs)."""
    rows = [dict(ROW, id=1, model="vit", size=1), dict(ROW, id=None, model="vit", size=None),
            dict(ROW, id=3, model="vit", size=3)]
    f = tmp_path / f"ids.{fmt}"
    if fmt == "jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), f)
    for run_id, want in [("id", {"1", "3"}), ("'{model}-{size}'", {"vit-1", "vit-", "vit-3"})]:
        (tmp_path / "m.yaml").write_text(f"run_id: {run_id}\n")
        store = tmp_path / f"st-{len(want)}"
        res = run_cli("ingest", str(f), "--store", str(store), "--mapping", str(tmp_path / "m.yaml"))
        assert res.returncode == 0, res.stdout + res.stderr
        assert set(Store(str(store)).read(columns=["run_id"]).column("run_id").to_pylist()) == want


def test_parquet_float32_values_are_the_numbers_written(tmp_path: Path) -> None:
    """A float32 Parquet column widened to float64 exactly: 0.9 was stored as 0.8999999761581421
    and lr 1e-4 as 9.999999747378752e-05, so the same table as CSV (0.9) updated every row."""
    import numpy as np

    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(pa.table({
        "run_id": ["r1", "r2"], "us_task": ["up"] * 2, "ds_task": ["a"] * 2, "eval_protocol": ["linear"] * 2,
        "us_accuracy": pa.array(np.array([0.81, 0.82], np.float32)),
        "ds_accuracy": pa.array(np.array([0.9, 0.91], np.float32)),
        "lr": pa.array(np.array([1e-4, 3e-3], np.float32))}), d / "res.parquet")
    store = tmp_path / "st"
    _ingest(d / "res.parquet", store)
    rows = Store(str(store)).read(columns=["run_id", "us_accuracy", "ds_accuracy", "lr"]).to_pylist()
    assert sorted(rows, key=lambda r: r["run_id"]) == [
        {"run_id": "r1", "us_accuracy": 0.81, "ds_accuracy": 0.9, "lr": 1e-4},
        {"run_id": "r2", "us_accuracy": 0.82, "ds_accuracy": 0.91, "lr": 3e-3}]
    # the same table exported as CSV: nothing changes
    (tmp_path / "res.csv").write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,lr\n"
                                      "r1,up,0.81,a,0.9,linear,0.0001\nr2,up,0.82,a,0.91,linear,0.003\n")
    res = run_cli("ingest", str(tmp_path / "res.csv"), "--store", str(store), "--source", "res")
    assert res.returncode == 0 and "0 new, 0 updated, 2 unchanged" in res.stdout + res.stderr, res.stdout + res.stderr


def test_large_integer_seed_beside_a_fraction_in_jsonl(tmp_path: Path) -> None:
    """A JSON column of integers and one float (a seed 1.5, quarantined) was float64 whole: the
    seed 9007199254740993 of another row was stored as ...992."""
    f = tmp_path / "seeds.jsonl"
    f.write_text("".join(json.dumps(dict(ROW, run_id=r, seed=s)) + "\n" for r, s in [("r1", BIG), ("r2", 1.5)]))
    out = _ingest(f, tmp_path / "st")
    assert "1 quarantined" in out, out
    assert _seeds(tmp_path / "st") == {"r1": BIG}
