"""Review s49 of file ingest's speed (validation's number and key checks in Arrow) and of three
defects noted earlier: data_fraction judged one piece at a time, -0.0 stored as given, and an
integer past Python's 4,300-digit limit in a quarantine payload or a JSON Lines file."""

from __future__ import annotations

import decimal
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from meta_study.store import Store
from meta_study.validation import (WholeInput, _coerce_numeric, _keys_distinct, conform, dedupe_keys, row_json,
                                   validate)

BASE = dict(source=["s"], run_id=["r"], us_task=["in"], ds_task=["c"], eval_protocol=["linear"], us_accuracy=[0.5],
            ds_accuracy=[0.5])


def _frame(n: int, **over) -> pd.DataFrame:
    cols = {k: v * n for k, v in BASE.items()}
    cols["run_id"] = [f"r{i}" for i in range(n)]
    cols.update(over)
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------------------------
# Speed: the fast paths read every cell as the cell-by-cell path did
# --------------------------------------------------------------------------------------------

def test_number_cells_read_as_before_in_text_and_object_columns():
    """Numbers are cast by Arrow in one pass, and missing cells are left out of the Python loop:
    each kind of cell still reads as it did (NaN texts are NaN, an object column's NaN a NaN
    measurement, its None missing, NaT a wrong type, "1e400" infinite, a comma a wrong type)."""
    texts = ["0.5", "nan", "Infinity", "1e400", "+.5", "1.", " 2 ", "0,5", None, "abc", "-0"]
    for dtype in ("str", object):
        v, wrong, nan = _coerce_numeric(pd.Series(texts, dtype=dtype), False)
        assert v[0] == 0.5 and math.isnan(v[1]) and v[2] == math.inf and v[3] == math.inf
        assert v[4] == 0.5 and v[5] == 1.0 and v[6] == 2.0
        assert wrong.tolist() == [False] * 7 + [True, False, True, False]
        assert nan.tolist() == [False, True] + [False] * 9
        assert math.isnan(v[8]) and math.copysign(1, v[10]) == -1   # (stored as 0.0: see below)
    obj = pd.Series(["0.5", np.nan, None, pd.NaT, pd.NA, np.float64("nan")], dtype=object)
    v, wrong, nan = _coerce_numeric(obj, False)
    assert wrong.tolist() == [False, False, False, True, False, False]
    assert nan.tolist() == [False, True, False, False, False, True]
    mixed = pd.Series([1, "2", None, decimal.Decimal("0.25"), True], dtype=object)   # not all texts: the loop
    v, wrong, nan = _coerce_numeric(mixed, False)
    assert v[:2].tolist() == [1.0, 2.0] and v[3] == 0.25 and wrong.tolist() == [False] * 4 + [True]


def test_an_absent_column_is_missing_and_a_required_one_says_so():
    """Absent columns (most inputs lack most optional ones) take the fast paths: still null, and a
    required one still "missing required field"."""
    f = _frame(3).drop(columns=["ds_accuracy"])
    v = validate(f)
    assert v.table.num_rows == 0
    assert set(v.rejected.reason) == {"ds_accuracy: missing required field"}
    v = validate(_frame(3))
    assert v.table.column("lr").null_count == 3 and v.table.column("extra").null_count == 3


def test_duplicate_keys_found_exactly_nulls_included():
    """dedupe_keys' check for the usual case (no key twice) is exact: a null is a value of its own,
    5 and a null shots differ, and a repeat is found across columns."""
    t = validate(_frame(4, shots=pd.Series([5, None, 5, None], dtype=object),
                        eval_protocol=["fewshot", "linear", "fewshot", "linear"])).table
    assert _keys_distinct(t.slice(0, 2))
    assert _keys_distinct(t)
    twice = pa.concat_tables([t, t.slice(1, 1)])
    assert not _keys_distinct(twice)
    kept, rejected = dedupe_keys(twice)
    assert kept.num_rows == 4 and not len(rejected)      # an identical repeat collapses
    at = t.column_names.index("ds_accuracy")
    other = t.slice(1, 1).set_column(at, t.schema.field(at), pa.array([0.9]))
    kept, rejected = dedupe_keys(pa.concat_tables([t, other]))
    assert kept.num_rows == 3 and len(rejected) == 2     # a conflict quarantines both
    # a key column of another type is for key_array to refuse, as before
    with pytest.raises(TypeError, match="keys are text or integers"):
        dedupe_keys(pa.concat_tables([twice]).set_column(twice.column_names.index("shots"), "shots",
                                                         twice.column("shots").cast(pa.float64())))


def test_keys_distinct_renumbers_before_it_overflows():
    """Many distinct values in every key column: the combined codes are renumbered, never wrapped."""
    n = 3000
    cols = {c: [f"{c}{i}" for i in range(n)] for c in ("source", "run_id", "us_task", "ds_task", "eval_protocol",
                                                          "representation_layer")}
    t = pa.table({**cols, "shots": pa.array(range(n), pa.int32())})
    assert _keys_distinct(t)
    assert not _keys_distinct(pa.concat_tables([t, t.slice(n - 1, 1)]))


# --------------------------------------------------------------------------------------------
# -0.0 is stored as 0.0
# --------------------------------------------------------------------------------------------

def test_negative_zero_is_stored_as_zero(tmp_path):
    """A "-0.0" accuracy (or lr) was stored as -0.0, printed "-0"; a later 0.0 was "unchanged",
    so the -0.0 stayed. Both validate and the commit gate (conform) store 0.0."""
    v = validate(_frame(2, ds_accuracy=["-0.0", "-0"], us_accuracy=[-0.0, 0.5], lr=["-0.0", "0.1"]))
    for c in ("ds_accuracy", "us_accuracy", "lr"):
        vals = [x for x in v.table.column(c).to_pylist() if x == 0]
        assert vals and all(math.copysign(1, x) == 1 for x in vals), (c, vals)
    built = pa.table({**{k: v for k, v in BASE.items()}, "ds_accuracy": [-0.0], "lr": [-0.0]})
    out = conform(built)
    assert math.copysign(1, out.column("ds_accuracy")[0].as_py()) == 1
    assert math.copysign(1, out.column("lr")[0].as_py()) == 1
    s = Store(str(tmp_path / "st"))
    s.commit(built)
    assert math.copysign(1, s.read().column("ds_accuracy")[0].as_py()) == 1


# --------------------------------------------------------------------------------------------
# data_fraction judged over every piece of a large input
# --------------------------------------------------------------------------------------------

def test_data_fraction_percents_in_one_piece_of_a_fraction_input_are_said():
    """A piece of mostly percents (50, 60 beside 0.5) refused its 0.5 as a percent, though the
    whole input, mostly fractions, stores such values: the input was read otherwise than whole.
    The counts now go over the pieces, as the accuracies' per task do, and the input is refused."""
    whole = WholeInput()
    v1 = validate(_frame(3, data_fraction=[50.0, 60.0, 0.5]), whole=whole)
    assert any("among values mostly in (1, 100]" in r for r in v1.rejected.reason)
    v2 = validate(_frame(6, data_fraction=[0.1, 0.2, 0.3, 0.4, 0.6, 0.7]), whole=whole)
    assert v2.table.num_rows == 6
    why = whole.problem()
    assert why is not None and why.startswith("data_fraction: mixes fractions and percents (2 of 9 values in (1, 100]; "
                                              "1 of its values <= 1 was refused as percents"), why


def test_data_fraction_fractions_before_the_percents_of_a_piece_after_are_said():
    whole = WholeInput()
    validate(_frame(2, data_fraction=[0.5, 0.01]), whole=whole)       # read as fractions
    v = validate(_frame(4, data_fraction=[50.0, 60.0, 70.0, 80.0]), whole=whole)
    assert not v.table.num_rows
    why = whole.problem()
    assert why is not None and why.startswith("data_fraction: its values are mostly in (1, 100] (4 of 6), percents, "
                                              "but 2 of its values <= 1 were read as fractions"), why


def test_a_large_file_whose_one_piece_has_data_fraction_percents_stores_nothing(tmp_path, monkeypatch):
    from meta_study.ingest import files
    from meta_study.ingest.files import FileSource
    from meta_study.ingest.pipeline import ingest_sources

    monkeypatch.setattr(files, "CHUNK_ROWS", 3)     # pieces of 3 rows, for a file above 180 bytes
    fractions = [50, 60, 70, 80, 0.5] + [0.1 * i for i in range(1, 10)]   # the 0.5 comes among percents
    lines = ["run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,data_fraction"]
    lines += [f"r{i},imagenet,0.5,pets,0.4,linear,{x:g}" for i, x in enumerate(fractions)]
    p = tmp_path / "x.csv"
    p.write_text("\n".join(lines) + "\n")
    [rep] = ingest_sources([FileSource(paths=[str(p)], mapping=None)], Store(str(tmp_path / "st")))
    assert rep.error is not None and "data_fraction: mixes fractions and percents" in rep.error, rep.error
    assert not Store(str(tmp_path / "st")).exists() or not Store(str(tmp_path / "st")).read().num_rows


# --------------------------------------------------------------------------------------------
# An integer past Python's 4,300-digit limit
# --------------------------------------------------------------------------------------------

def test_the_payload_of_a_row_with_an_integer_of_5000_digits():
    """validate's default payload (the row as JSON) of a row holding such an integer raised
    "Exceeds the limit (4300 digits) for integer string conversion": a traceback for the input."""
    f = _frame(2, param_count=pd.Series([10 ** 5000, 100], dtype=object))
    v = validate(f)
    assert v.table.num_rows == 1
    [raw] = v.rejected.raw.tolist()
    assert json.loads(raw)["param_count"] == "100000...000000 (5001 digits)"
    assert "beyond float64's range" in v.rejected.reason[0]
    assert json.loads(row_json({"x": -(10 ** 4299)}))["x"] == -(10 ** 4299)   # within the limit: the number


def test_a_json_lines_integer_of_5000_digits_is_one_clear_line(tmp_path: Path):
    from conftest import one_error_line, run_cli

    rec = {"run_id": "r", "us_task": "in", "us_accuracy": 0.5, "ds_task": "c", "ds_accuracy": 0.5,
           "eval_protocol": "linear"}
    text = json.dumps(rec)[:-1] + ', "seed": ' + "9" * 5000 + "}\n"
    (tmp_path / "x.jsonl").write_text(text)
    r = run_cli("ingest", str(tmp_path / "x.jsonl"), "--store", str(tmp_path / "st"))
    assert r.returncode == 2
    one_error_line(r, "x.jsonl: FAILED: ", "x.jsonl:1: an integer of 5000 digits (more than 4300): no result has "
                                           "that many; is it the right file?")
    assert "set_int_max_str_digits" not in r.stdout + r.stderr
