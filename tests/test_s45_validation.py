"""Review s45 of the canonical record's validation (meta_study/validation.py): values outside what
a store's readers can read, and the rows ``Store.commit`` takes without ``validate``."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from meta_study.validation import conform, validate

BASE = dict(source="s", run_id="r", us_task="in", ds_task="c", eval_protocol="linear", us_accuracy=0.5,
            ds_accuracy=0.5)


def _frame(n: int, **cols: list) -> pd.DataFrame:
    rows = {k: [v] * n for k, v in BASE.items()}
    rows["run_id"] = [f"r{i}" for i in range(n)]
    rows.update(cols)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dtype", ["str", object])
def test_a_time_outside_years_1_to_9999_is_a_reason_not_a_store_no_reader_can_read(dtype):
    """pandas reads year 0 ("0000-01-01") and a time that is year 10000 in UTC; stored, such a value
    failed every reader of the store: ``to_pandas`` ("toordinal not yet supported on Timestamps
    which are outside the range of Python's standard library") and ``to_pylist`` ("date value out
    of range"), every analysis of the store with them. Year 1 itself is a time Python holds."""
    # (0001-01-01T00:00:00 itself is the "unknown" placeholder, stored as null: tests/test_s46_times.py)
    texts = ["0000-01-01", "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-02:00", "0001-01-01T00:00:01Z",
             "2024-04-03T10:00:00Z"]
    f = _frame(len(texts))
    f["started_at"] = pd.Series(texts, dtype=dtype)
    v = validate(f)
    assert v.rejected.reason.tolist() == [
        f"started_at: {t!r} is out of range (a time in UTC in years 1 to 9999)" for t in texts[:3]]
    assert v.reason_kinds == {"started_at: out of range (years 1 to 9999)": 3}
    assert v.table.to_pandas()["started_at"].astype(str).tolist() == ["0001-01-01 00:00:01+00:00",
                                                                       "2024-04-03 10:00:00+00:00"]
    # a datetime column of such a time (pandas' non-nanosecond units hold it) likewise
    f = _frame(1)
    f["ended_at"] = pd.Series(pd.to_datetime(["0000-06-01"], format="ISO8601")).astype("datetime64[s]")
    assert validate(f).rejected.reason.tolist()[0].startswith("ended_at: ") and "out of range" in \
        validate(f).rejected.reason.tolist()[0]


@pytest.mark.parametrize("column, value, message", [
    ("ds_accuracy", 87.5, r"^ds_accuracy: 1 value\(s\) out of range \[0, 1\] \(e\.g\. 87\.5\); validate the rows first"),
    ("us_accuracy", math.nan, r"^us_accuracy: 1 value\(s\) NaN; validate the rows first"),
    ("lr", math.inf, r"^lr: 1 value\(s\) not finite \(e\.g\. inf\); validate"),
    ("eval_protocol", "kfold", r"^eval_protocol: 1 value\(s\) not one of fewshot, finetune, linear, zeroshot, shift, "
                               r"other \(e\.g\. 'kfold'\); validate"),
    ("shots", pa.array([-3], pa.int32()), r"^shots: 1 value\(s\) out of range \[0, inf\] \(e\.g\. -3\); validate"),
    ("run_id", "", r"^run_id: 1 empty value\(s\) \(a required name\)"),
    ("started_at", pa.array([-62135596800000000 - 3600 * 10**6], pa.timestamp("us", tz="UTC")),
     r"^started_at: 1 value\(s\) out of range \(years 1 to 9999\) \(e\.g\. 0000-12-31 23:00:00"),
])
def test_store_commit_refuses_a_value_validate_never_passes(tmp_path, column, value, message):
    """``Store.commit`` takes canonical rows from any caller, and conform (its gate) checked only a
    required column's nulls: a table built by hand stored ds_accuracy 87.5 (a percent), a NaN
    accuracy, an eval_protocol 'kfold', shots -3, as they came, for every fit to read."""
    from meta_study.store import Store

    cols = {k: [v] for k, v in BASE.items()}
    cols[column] = value if isinstance(value, pa.Array) else [value]
    table = pa.table(cols)
    with pytest.raises(ValueError, match=message):
        conform(table)
    s = Store(str(tmp_path / "st"))
    with pytest.raises(ValueError, match=message):
        s.commit(table)
    assert not s.exists() or s.read().num_rows == 0


def test_conform_refuses_a_column_the_schema_does_not_have_and_names_a_failed_cast():
    """A column the schema does not have (a typo: ``head_weight_decay``) was dropped without a word,
    and a value the column's type cannot hold failed as Arrow's ``Float value 2.500000 was truncated
    converting to int32``, naming no column."""
    good = validate(_frame(2)).table
    with pytest.raises(ValueError, match=r"^unknown columns \['head_weight_decay'\] \(not stored\); map them"):
        conform(good.append_column("head_weight_decay", pa.array([0.1, 0.2])))
    with pytest.raises(ValueError, match=r"^shots: its double values cannot be stored as int32 \(.*2\.5.*\); validate"):
        conform(good.drop_columns(["shots"]).append_column("shots", pa.array([2.5, 1.0])))
    with pytest.raises(ValueError, match=r"^columns given twice: \['lr'\]"):
        conform(good.drop_columns(["lr"]).append_column("lr", pa.array([0.1, 0.2]))
                .append_column("lr", pa.array([0.1, 0.2])))


def test_conform_passes_validated_rows_with_their_nulls():
    """What validate stores passes conform unchanged: null optional values (an arch_family, shots,
    a started_at) are no values out of a range or a choice."""
    f = _frame(3, eval_protocol=["linear", "fewshot", "shift"], shots=[None, 5, None], arch_family=[None, "vit", ""],
               lr=[None, 0.1, "NaN"], started_at=[None, "2024-01-01", "0001-01-01"], data_fraction=[0, 1, None])
    v = validate(f)
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    out = conform(v.table)
    assert out.num_rows == 3
    assert out.drop_columns(["ingested_at", "schema_version"]).equals(
        v.table.drop_columns(["ingested_at", "schema_version"]))


def test_a_ds_n_is_stored_as_the_count_the_analysis_reads_and_one_that_is_no_count_is_a_reason():
    """``extra``'s ``ds_n`` (the DS test-set size, the one key of ``extra`` the analysis reads) was
    stored as written: "1,000" (a thousands separator, which every number column reads) was an
    unknown size to the analysis, so the task's intervals lost their binomial floor without a
    word, and "0.5" was a test set of half an example."""
    from meta_study.analysis.groups import with_test_sizes

    sizes = ["1,000", " 1e4 ", "10000.0", 2500, "", "NaN", None]
    v = validate(_frame(len(sizes), extra=[{"ds_n": x, "note": "kept"} for x in sizes]))
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    assert [dict(e) for e in v.table.column("extra").to_pylist()] == [
        {"ds_n": n, "note": "kept"} for n in ("1000", "10000", "10000", "2500", "", "", "")]
    assert with_test_sizes(v.table)["ds_test_size"].tolist()[:4] == [1000, 10000, 10000, 2500]
    bad = ["10k", "0.5", "0", "-3", "1000.5", "inf"]
    v = validate(_frame(len(bad), extra=[{"ds_n": x} for x in bad]))
    assert v.table.num_rows == 0
    assert v.rejected.reason.tolist() == [
        f"extra: ds_n {x!r} is no test-set size (a whole number of examples, at least 1; leave it empty where "
        "unknown)" for x in bad]
    assert v.reason_kinds == {"extra: ds_n is no test-set size": len(bad)}
