from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from meta_study import keys, schema, validation
from meta_study.schema import KEY, SCHEMA
from meta_study.validation import validate
from conftest import REPO, make_rows


def _reasons(df: pd.DataFrame) -> dict[int, str]:
    v = validate(df)
    return dict(zip(v.rejected["row"], v.rejected["reason"]))


def test_good_rows_coerce_to_schema():
    df = make_rows(3)
    v = validate(df)
    assert v.n_rejected == 0
    assert v.table.num_rows == 6
    assert v.table.schema.names == SCHEMA.names
    assert v.table.column("shots").type == pa.int32()
    assert v.table.column("extra").to_pylist()[0] == [("note", "run 0")]


def test_strings_from_csv_are_coerced():
    df = pd.DataFrame({"source": ["s"], "run_id": [7], "us_task": ["u"], "us_accuracy": [" 0.5 "],
                       "ds_task": ["d"], "eval_protocol": ["linear"], "ds_accuracy": ["0.25"],
                       "param_count": ["1,014"], "shots": ["10"], "started_at": ["2026-01-01T00:00:00"]})
    v = validate(df)
    assert v.n_rejected == 0, v.rejected
    row = v.table.to_pylist()[0]
    assert row["run_id"] == "7" and row["us_accuracy"] == 0.5 and row["param_count"] == 1014 and row["shots"] == 10
    assert row["started_at"].tzinfo is not None


@pytest.mark.parametrize("column,value,expected", [
    ("us_accuracy", None, "us_accuracy: missing required field"),
    ("run_id", None, "run_id: missing required field"),
    ("ds_task", "", "ds_task: missing required field"),
    ("ds_accuracy", float("nan"), "ds_accuracy: NaN"),
    ("ds_accuracy", "NaN", "ds_accuracy: NaN"),
    ("us_accuracy", 87.5, "us_accuracy: 87.5 out of range [0, 1] (a percent in a fraction field? set its unit to percent)"),
    ("ds_accuracy", -0.1, "ds_accuracy: -0.1 out of range [0, 1]"),
    ("ds_accuracy", math.inf, "ds_accuracy: not finite"),
    ("us_accuracy", "high", "us_accuracy: wrong type ('high' is not a number)"),
    ("us_accuracy", True, "us_accuracy: wrong type (True is not a number)"),
    ("shots", 2.5, "shots: wrong type (2.5 is not an integer)"),
    ("source", ["a", "b"], "source: wrong type (list is not a string)"),
    ("eval_protocol", "kfold", "eval_protocol: unknown protocol 'kfold'"),
    ("arch_family", "transformer", "arch_family: unknown arch_family 'transformer'"),
    ("data_fraction", 1.5, "data_fraction: 1.5 out of range [0, 1]"),
    ("lr", -1e-3, "lr: -0.001 out of range [0, inf]"),
    ("batch_size", 0, "batch_size: 0 out of range [1, inf]"),
    ("started_at", "yesterday-ish", "started_at: wrong type"),
    ("extra", 42, "extra: wrong type"),
    ("shots", None, "shots: missing (required when eval_protocol is 'fewshot')"),
    # issue 24: values that crashed validation or were guessed
    ("shots", "١٠", "shots: wrong type ('١٠' is not an integer)"),          # Arabic-Indic digits: not 10
    ("shots", "１０", "shots: wrong type ('１０' is not an integer)"),        # full-width digits
    ("us_accuracy", "٠.٥", "us_accuracy: wrong type"),
    ("shots", 2 ** 64, "shots: 1.84467e+19 does not fit the column's int32 type"),   # was an OverflowError
    ("seed", -(2 ** 64), "seed: -1.84467e+19 does not fit the column's int64 type"),
    ("shots", 10 ** 400, "shots: not finite"),                                    # beyond float64
    ("started_at", 1.5, "started_at: wrong type (1.5 is not a timestamp)"),       # was an ArrowInvalid
])
def test_each_bad_value_gets_a_reason(column, value, expected):
    df = make_rows(2, ds_tasks=("a",)).astype(object)
    df.at[1, column] = value
    reasons = _reasons(df)
    assert list(reasons) == [1], reasons
    assert reasons[1].startswith(expected), reasons[1]


def test_several_problems_in_one_row_are_all_named():
    df = make_rows(1, ds_tasks=("a",)).astype(object)
    df.at[0, "us_accuracy"] = 2.0
    df.at[0, "eval_protocol"] = "nope"
    r = _reasons(df)[0]
    assert "us_accuracy" in r and "eval_protocol" in r


def test_nan_in_optional_hparam_is_null_not_error():
    df = make_rows(1, ds_tasks=("a",))
    df["lr"] = np.nan
    v = validate(df)
    assert v.n_rejected == 0 and v.table.column("lr").null_count == 1


def test_unknown_columns_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown columns"):
        validate(pd.DataFrame({"source": ["s"], "bogus": [1]}))


def test_rejected_rows_carry_raw_payload_and_identity():
    df = make_rows(2, ds_tasks=("a",))
    df.loc[0, "ds_accuracy"] = 3.0
    v = validate(df)
    rej = v.rejected.iloc[0]
    assert rej["source"] == "src" and rej["run_id"] == "r0" and '"ds_accuracy": 3.0' in rej["raw"]


def test_key_strings_distinguish_null_from_text():
    t = pa.table({c: pa.array(["x"]) for c in ("a", "b")})
    t2 = pa.table({"a": pa.array(["x"]), "b": pa.array([None], pa.string())})
    t3 = pa.table({"a": pa.array(["x"]), "b": pa.array([""])})
    ks = {keys.key_strings(x, ("a", "b"))[0] for x in (t, t2, t3)}
    assert len(ks) == 3


def test_key_columns_exist_in_schema():
    assert set(KEY) <= set(SCHEMA.names)
    assert schema.PARTITION == ("us_task", "ds_task")


def test_metric_keys_follow_the_convention():
    assert schema.us_metric_key("imagenet21k") == "us/imagenet21k/top1"
    assert schema.ds_metric_key("cifar100", 10) == "ds/cifar100/10shot/top1"
    assert schema.ds_metric_key("cifar100", 10, layer=3) == "ds/cifar100/10shot/layer3/top1"
    assert schema.finetune_metric_key("pets") == "ds/pets/finetune/top1"


def test_docs_schema_table_is_generated_from_the_module():
    doc = (REPO / "docs" / "schema.md").read_text()
    assert schema.schema_markdown() in doc, "docs/schema.md is out of date: paste schema.schema_markdown()"


# ---- wrong values are never stored silently -------------------------------------------------

@pytest.mark.parametrize("column,value", [("shots", 4294967301), ("shots", "4294967301"),
                                          ("representation_layer", 2147483648), ("param_count", 1e30),
                                          ("seed", 2.0 ** 63), ("batch_size", -1e19)])
def test_integers_out_of_their_type_range_are_quarantined(column, value):
    rows = make_rows(1, ds_tasks=("a",))
    rows[column] = [value]
    v = validate(rows)
    assert v.table.num_rows == 0, v.table.to_pandas()[column]      # never wrapped around into a real value
    assert f"{column}:" in v.rejected["reason"].iloc[0] and "does not fit" in v.rejected["reason"].iloc[0]


@pytest.mark.parametrize("text,ok,value", [("1,014.45", True, 1014.45), ("12,345,678", True, 12345678.0),
                                           ("0,1", False, None), ("0,0", False, None), ("1,00", False, None),
                                           ("0,001", False, None), ("0,050", False, None), ("-0,500", False, None),
                                           ("0.8_5", False, None), ("1_000", False, None), (" 0.85 ", True, 0.85)])
def test_commas_only_as_thousands_separators_and_no_underscores(text, ok, value):
    rows = make_rows(1, ds_tasks=("a",))
    rows["lr"] = [text]
    v = validate(rows)
    if ok:
        assert v.table.num_rows == 1 and v.table.column("lr")[0].as_py() == pytest.approx(value)
    else:
        assert v.table.num_rows == 0 and "lr: wrong type" in v.rejected["reason"].iloc[0]


def test_store_managed_columns_from_an_input_are_ignored():
    rows = make_rows(2, ds_tasks=("a",))
    rows["schema_version"] = 999
    rows["ingested_at"] = pd.Timestamp("1999-01-01", tz="UTC")
    v = validate(rows)
    assert v.table.num_rows == 2
    t = validation.conform(v.table)
    assert set(t.column("schema_version").to_pylist()) == {schema.SCHEMA_VERSION}
    assert min(t.column("ingested_at").to_pylist()).year >= 2026


def test_keys_are_unambiguous_whatever_the_values_hold():
    a = make_rows(1, ds_tasks=("a",))
    b = a.copy()
    a["source"], a["run_id"] = "s\x1f\x02\x02x", "y"
    b["source"], b["run_id"] = "s", "x\x1f\x02\x02y"
    c = a.copy()
    c["source"], c["run_id"] = "s|1:x", "y"
    d = a.copy()
    d["source"], d["run_id"] = "s", "x|1:y"
    t = pa.concat_tables([validate(x).table for x in (a, b, c, d)])
    strings = keys.key_strings(t)
    assert len(set(strings)) == 4
    assert keys.key_of(["s", None, "x"]) != keys.key_of(["s", "", "x"]) != keys.key_of(["s", "x"])


@pytest.mark.parametrize("name,needle", [("x" * 241, "name too long for a partition directory"),
                                         ("日本語" * 10, "name too long"),            # 9 bytes each encoded
                                         ("__HIVE_DEFAULT_PARTITION__", "reserved")])
def test_task_names_that_cannot_be_partitions_are_quarantined_alone(name, needle):
    rows = make_rows(2, ds_tasks=("a",))
    rows.loc[0, "ds_task"] = name
    v = validate(rows)
    assert v.table.num_rows == 1                                  # the valid row of the file is kept
    assert needle in v.rejected["reason"].iloc[0] and v.rejected["reason"].iloc[0].startswith("ds_task:")


def test_integer_ids_past_int64_are_their_digits_and_extra_values_are_json():
    df = make_rows(2, ds_tasks=("a",)).astype(object)
    df.at[0, "run_id"] = 2 ** 64                      # a JSON integer: Arrow's int64 conversion overflowed
    df.at[0, "extra"] = {"cfg": {"a": [1, 2]}, "flag": True, "none": None}
    v = validate(df)
    assert v.n_rejected == 0, v.rejected
    row = v.table.to_pylist()[0]
    assert row["run_id"] == "18446744073709551616"
    assert dict(row["extra"]) == {"cfg": '{"a": [1, 2]}', "flag": "true", "none": ""}   # JSON, not repr


def test_reason_kinds_and_values_above_one_are_counted():
    df = make_rows(4, ds_tasks=("a",)).astype(object)
    df.loc[[0, 1, 2], "ds_accuracy"] = [55.0, 70.0, 1e6]
    df.at[3, "eval_protocol"] = "kfold"
    v = validate(df)
    assert v.above_one["ds_accuracy"] == (2, 4)       # 1e6 is out of range, but not a percent
    assert v.reason_kinds == {"ds_accuracy: out of range [0, 1]": 3, "eval_protocol: unknown protocol 'kfold' "
                              "(expected one of fewshot, finetune, linear, zeroshot, shift, other)": 1}


@pytest.mark.parametrize("raw,expected", [("87.5", 0.875), ("1,014.5", 10.145), ("0,5", "0,5"), ("١٠", "١٠"),
                                          (True, True), ("nan", "nan")])
def test_units_convert_only_what_validation_reads_as_a_number(raw, expected):
    from meta_study.ingest.mapping import convert_unit

    (got,) = convert_unit(pd.Series([raw], dtype=object), "percent").tolist()
    assert got == expected   # a decimal comma was read as 05 (0.05), a boolean as 1 (0.01)


def test_a_decimal_comma_is_named_in_the_reason():
    # "0,001" was read as thousands (1.0); "0,500" as 500, quarantined as "out of range"
    rows = make_rows(1, ds_tasks=("a",))
    rows["us_accuracy"] = ["0,500"]
    v = validate(rows)
    assert v.table.num_rows == 0
    assert "a decimal comma? write 0.500" in v.rejected["reason"].iloc[0], v.rejected["reason"].iloc[0]


@pytest.mark.parametrize("token", ["NA", "NaN", "#N/A", "null", ""])
def test_few_shot_rows_with_a_missing_token_for_shots_are_quarantined(token):
    # only the empty cell was: "NA", "NaN", "#N/A" were stored with no shots, a bogus group
    rows = make_rows(2, ds_tasks=("a",))
    rows["eval_protocol"] = "fewshot"
    rows["shots"] = pd.Series([token, "10"], dtype=object)
    v = validate(rows)
    assert v.table.num_rows == 1
    assert "shots: missing (required when eval_protocol is 'fewshot')" in v.rejected["reason"].iloc[0]
