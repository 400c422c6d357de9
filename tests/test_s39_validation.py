"""Review s39 of validation.py / schema.py / keys.py: each test failed on the code before its fix."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import make_rows
from meta_study.validation import validate


def test_a_thousands_number_in_an_integer_column_gets_no_decimal_comma_hint():
    # "1,014.45" is thousands grouping (1014.45), not a decimal comma: the reason said
    # "a decimal comma? write 1.014.45", no number at all
    rows = make_rows(1, ds_tasks=("a",)).astype(object)
    rows["param_count"] = ["1,014.45"]
    v = validate(rows)
    (reason,) = v.rejected["reason"].tolist()
    assert reason == "param_count: wrong type ('1,014.45' is not an integer)", reason


def test_a_data_fraction_in_percent_stores_none_of_its_values_below_one():
    # a column of percents (100, 50, 25, 10, 1): the values above 1 were quarantined with a hint,
    # but the 1 % run's "1" was stored as 1.0, full data
    rows = make_rows(5, ds_tasks=("a",)).astype(object)
    rows["data_fraction"] = ["100", "50", "25", "10", "1"]
    v = validate(rows)
    assert v.table.num_rows == 0
    reason = v.rejected["reason"].iloc[4]
    assert reason.startswith("data_fraction: 1 among values mostly in (1, 100] (4 of 5): a percent?"), reason
    assert "1 % is 0.01" in reason
    assert v.reason_kinds["data_fraction: a value <= 1 among percents"] == 1


def test_a_data_fraction_column_of_fractions_keeps_its_values():
    # one stray percent among fractions is quarantined alone; the fractions are stored
    rows = make_rows(4, ds_tasks=("a",)).astype(object)
    rows["data_fraction"] = ["1", "0.5", "0.25", "10"]
    v = validate(rows)
    assert v.table.column("data_fraction").to_pylist() == [1.0, 0.5, 0.25]
    assert v.rejected["row"].tolist() == [3]


@pytest.mark.parametrize("missing", [pd.NA, "", "  ", "NaN", "null"])
def test_a_missing_extra_is_null_not_a_wrong_type(missing):
    # a nullable string column's NA (Parquet read with pandas' string dtype), a blank cell or
    # pandas' na_rep text: the row was quarantined as "extra: wrong type"
    rows = make_rows(2, ds_tasks=("a",)).astype(object)
    rows["extra"] = pd.Series(['{"note": "x"}', missing], dtype="string" if missing is pd.NA else object)
    v = validate(rows)
    assert v.n_rejected == 0, v.rejected["reason"].tolist()
    assert v.table.column("extra").to_pylist() == [[("note", "x")], None]


def test_an_arrow_date_column_is_read_as_utc_midnight():
    # a date32 column read with pandas' Arrow dtypes raised NotImplementedError (a traceback)
    import pyarrow as pa

    rows = make_rows(2, ds_tasks=("a",))
    day = pa.array([pd.Timestamp("2024-04-03").date(), None], pa.date32())
    rows["started_at"] = pd.Series(day.to_pandas(types_mapper=pd.ArrowDtype))
    v = validate(rows)
    assert v.n_rejected == 0, v.rejected["reason"].tolist()
    assert v.table.column("started_at").to_pylist() == [pd.Timestamp("2024-04-03", tz="UTC").to_pydatetime(), None]


def test_an_integer_with_a_fraction_float64_rounds_away_is_not_stored_as_an_integer():
    # "1.0000000000000001" is 1.0 as float64: stored as the integer 1; long integral texts still are
    rows = make_rows(3, ds_tasks=("a",)).astype(object)
    rows["seed"] = ["1.0000000000000001", "5.00000000000000000", "1,000,000,000,000"]
    v = validate(rows)
    assert v.rejected["reason"].tolist() == ["seed: wrong type ('1.0000000000000001' is not an integer)"]
    assert v.table.column("seed").to_pylist() == [5, 1_000_000_000_000]
