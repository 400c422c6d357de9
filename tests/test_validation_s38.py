"""Review s38 of the canonical record's validation (meta_study/validation.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from meta_study.validation import validate

BASE = dict(source="s", run_id="r", us_task="in", ds_task="c", eval_protocol="linear", us_accuracy=0.5,
            ds_accuracy=0.5)


def _frame(n: int, **cols: list) -> pd.DataFrame:
    rows = {k: [v] * n for k, v in BASE.items()}
    rows["run_id"] = [f"r{i}" for i in range(n)]
    rows.update(cols)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dtype", ["str", object])
def test_not_recorded_texts_in_a_timestamp_column_are_no_value(dtype):
    """pandas' ``to_csv(na_rep='NaN')`` writes a missing started_at as "NaN": its row was
    quarantined ("started_at: wrong type ('NaN' is not a timestamp ...)") where the same file's
    number columns stored null for the same text, as docs/schema.md says they do."""
    texts = ["NaN", "NA", "#N/A", "null", " None ", "NaT", "2024-04-03T10:00:00Z"]
    f = _frame(len(texts))
    f["started_at"] = pd.Series(texts, dtype=dtype)
    v = validate(f)
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    started = v.table.column("started_at").to_pylist()
    assert started[:-1] == [None] * (len(texts) - 1)
    assert started[-1].isoformat() == "2024-04-03T10:00:00+00:00"
    # a text that is neither a timestamp nor a "not recorded" text is still a reason
    f = _frame(1)
    f["started_at"] = ["nanana"]
    assert validate(f).rejected.reason.tolist() == [
        "started_at: wrong type ('nanana' is not a timestamp; write it as ISO 8601, e.g. 2024-04-03T10:00:00Z)"]


def test_an_extra_key_given_twice_with_different_values_is_a_reason():
    """``extra`` as a list of pairs (a Parquet map column read back) or a dict whose keys are one
    text (``{1: .., "1": ..}``) was stored with the key twice: a map reader keeps either value (the
    analysis reads ``ds_n`` from it). Identical repeats are one pair; a missing value is "" in a
    list of pairs too (it was "nan")."""
    cells = [[("ds_n", "100"), ("ds_n", "200")], {1: "x", "1": "y"}, [("a", "1"), ("a", "1")],
             [("a", float("nan"))], {"a": float("nan")}]
    f = _frame(len(cells))
    f["extra"] = pd.Series(cells, dtype=object)
    v = validate(f)
    assert v.rejected.reason.tolist() == [
        "extra: key 'ds_n' given twice, with different values ('100', '200')",
        "extra: key '1' given twice, with different values ('x', 'y')"]
    assert dict(v.reason_kinds) == {"extra: key given twice": 2}
    assert v.table.column("extra").to_pylist() == [[("a", "1")], [("a", "")], [("a", "")]]


def test_a_lone_surrogate_is_a_reason_not_a_traceback():
    """A lone surrogate (JSON's "\\ud800" escape, read by ``json.loads``) cannot be stored as
    UTF-8: Arrow raised UnicodeEncodeError out of ``validate``, a traceback for the whole input.
    Now its row is quarantined with a reason, and the quarantine's run_id is storable."""
    f = pd.DataFrame([dict(BASE, run_id="r\ud800", ds_task="c\ud800", extra={"k": "v\ud800"}),
                      dict(BASE, run_id="ok")], dtype=object)
    v = validate(f)
    assert v.table.column("run_id").to_pylist() == ["ok"]
    assert v.rejected.run_id.tolist() == ["r\\ud800"]
    reason = v.rejected.reason[0]
    assert reason.startswith("run_id: 'r\\ud800' is no valid Unicode text (a lone surrogate"), reason
    assert "ds_task: 'c\\ud800' is no valid Unicode text" in reason
    assert "extra: 'k': 'v\\ud800' is no valid Unicode text (a lone surrogate)" in reason
    assert "missing required field" not in reason
    v.rejected.reason[0].encode("utf-8")   # the reason itself can be stored


@pytest.mark.parametrize("dtype", ["Float64", "double[pyarrow]"])
def test_a_missing_value_of_a_nullable_column_is_missing_not_nan(dtype):
    """A nullable float column (Parquet read with pandas' nullable dtypes) tells a missing value
    (NA) from a measurement: its NA in a required accuracy was "us_accuracy: NaN"."""
    f = _frame(2)
    f["us_accuracy"] = pd.array([0.5, None], dtype=dtype)
    v = validate(f)
    assert v.rejected.reason.tolist() == ["us_accuracy: missing required field"]
    assert v.table.column("us_accuracy").to_pylist() == [0.5]


def test_a_column_given_twice_is_one_clear_error():
    """Two input columns of one name (frame[name] is then a frame) raised AttributeError
    ('DataFrame' object has no attribute 'dtype') from deep inside validate."""
    f = _frame(1)
    f.insert(0, "lr", [1e-3], allow_duplicates=True)
    f.insert(0, "lr", [2e-3], allow_duplicates=True)
    with pytest.raises(ValueError, match=r"^columns given twice: \['lr'\]; map one input column"):
        validate(f)


def test_a_few_shot_row_with_zero_shots_is_a_reason():
    """``eval_protocol=fewshot, shots=0`` (a probe on no examples) was stored as a group of its
    own; zero shots stay valid for the other protocols (the shipped Pythia table: zeroshot, 0)."""
    f = _frame(3, eval_protocol=["fewshot", "zeroshot", "fewshot"], shots=[0, 0, 1])
    v = validate(f)
    assert v.rejected.reason.tolist() == [
        "shots: 0 with eval_protocol 'fewshot' (a few-shot probe needs at least 1 example per class; a zero-shot "
        "result is eval_protocol 'zeroshot')"]
    assert v.table.column("shots").to_pylist() == [0, 1]


def test_conform_refuses_nulls_in_a_required_column():
    """conform cast rows that did not go through validate to the schema without a word about a
    required column's nulls (or its absence: a typo such as ``us_acc``); the store failed later,
    in the Parquet writer, with ``ArrowInvalid: ... declared non-nullable but contains nulls``."""
    import pyarrow as pa

    from meta_study.validation import conform

    good = validate(_frame(2)).table
    assert conform(good).num_rows == 2
    with pytest.raises(ValueError, match=r"^us_accuracy: 2 null value\(s\) in a required column \(the table has "
                                         r"no such column\); validate the rows first"):
        conform(good.drop_columns(["us_accuracy"]).append_column("us_acc", pa.array([0.5, 0.5])))
    with pytest.raises(ValueError, match=r"^ds_accuracy: 1 null value\(s\) in a required column; validate"):
        conform(good.set_column(good.schema.get_field_index("ds_accuracy"), "ds_accuracy",
                                pa.array([0.5, None], pa.float64())))


def test_a_very_long_value_is_shown_shortened_in_its_reason():
    """A 1 MB text in a number column (or as a protocol) made a 1 MB reason: one line of
    ``store quarantine`` and of ingest's summary. The payload keeps the value whole."""
    big = "x" * 1_000_000
    f = _frame(2, shots=[big, 5], eval_protocol=["linear", big])
    v = validate(f)
    r0, r1 = v.rejected.reason.tolist()
    assert r0 == f"shots: wrong type ('{'x' * 179}... (1000000 characters) is not an integer)"
    assert r1.startswith("eval_protocol: unknown protocol 'xxx") and len(r1) < 400, len(r1)
    assert all(len(k) < 400 for k in v.reason_kinds)
    assert big in v.rejected.raw[0]
