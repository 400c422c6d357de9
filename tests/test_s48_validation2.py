"""Review s48 (second pass) of validation's leftovers: bytes from a Parquet binary column in
``extra``, which infinity a "not finite" reason saw, ``extra`` at ``Store.commit``'s gate
(``conform``), Go's ``time.String()`` timestamps, and the day/month order of a column's dates.
Each test failed before its fix."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meta_study.store import Store
from meta_study.validation import conform, extra_text, row_json, validate
from conftest import run_cli

MAP = pa.map_(pa.string(), pa.string())


def _frame(n: int = 1, **cols) -> pd.DataFrame:
    base = dict(source=["s"] * n, run_id=[f"r{i}" for i in range(n)], us_task=["in"] * n, ds_task=["c"] * n,
                eval_protocol=["linear"] * n, us_accuracy=[0.5] * n, ds_accuracy=[0.5] * n)
    base.update(cols)
    return pd.DataFrame(base)


def _table(extra: list) -> pa.Table:
    n = len(extra)
    return pa.table(dict(source=["s"] * n, run_id=[f"r{i}" for i in range(n)], us_task=["in"] * n, ds_task=["c"] * n,
                         eval_protocol=["linear"] * n, us_accuracy=[0.5] * n, ds_accuracy=[0.5] * n,
                         extra=pa.array(extra, MAP)))


# --------------------------------------------------------------------------------------------
# 1. bytes (a Parquet binary column) in extra: their text, not "b'...'"
# --------------------------------------------------------------------------------------------


def test_a_parquet_binary_column_lands_in_extra_as_its_text(tmp_path):
    """A Parquet file's binary column (pyarrow gives its cells as ``bytes``) was stored in
    ``extra`` as Python's repr, ``"b'caf\\xc3\\xa9'"``, a text no reader takes for "café"."""
    t = pa.table({"run_id": ["r0", "r1"], "us_task": ["in", "in"], "us_accuracy": [0.5, 0.6], "ds_task": ["c", "c"],
                  "ds_accuracy": [0.4, 0.5], "eval_protocol": ["linear", "linear"],
                  "note": pa.array([b"caf\xc3\xa9", b"plain"], pa.binary())})
    pq.write_table(t, tmp_path / "x.parquet")
    r = run_cli("ingest", str(tmp_path / "x.parquet"), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    extra = {row["run_id"]: dict(row["extra"]) for row in Store(str(tmp_path / "st")).read().to_pylist()}
    assert extra == {"r0": {"note": "caf\u00e9"}, "r1": {"note": "plain"}}


def test_bytes_that_are_no_utf8_are_a_reason_not_a_repr():
    """Bytes that are no UTF-8 were stored as their repr too; now the row has a reason that shows
    the bytes, and the payload of the quarantine keeps them (as escapes)."""
    assert extra_text(b"caf\xc3\xa9") == "caf\u00e9"
    assert extra_text({"a": b"x", b"k": [b"y"]}) == '{"a": "x", "k": ["y"]}'
    v = validate(_frame(2, extra=[{"note": b"\xff\xfe"}, {"note": b"ok"}]))
    assert v.table.column("extra").to_pylist() == [[("note", "ok")]]
    reason = v.rejected["reason"].iloc[0]
    assert reason.startswith("extra: 'note': b'\\xff\\xfe' is no valid Unicode text (bytes that are no UTF-8"), reason
    assert "\n" not in reason and v.reason_kinds == {"extra: no valid Unicode text": 1}
    assert "b'" not in row_json({"x": b"ok"}) and row_json({"x": b"ok"}) == '{"x": "ok"}'


def test_bytes_in_a_name_column_are_its_text():
    """A binary column mapped to a name (``model_name``) quarantined every row as "bytes is not a
    string"; its UTF-8 text is the name, and bytes that are no UTF-8 are named as bytes."""
    v = validate(_frame(2, model_name=[b"vit_b16", b"\xff"]))
    assert v.table.column("model_name").to_pylist() == ["vit_b16"]
    assert v.rejected["reason"].iloc[0].startswith("model_name: b'\\xff' is no valid Unicode text (bytes"), v.rejected


# --------------------------------------------------------------------------------------------
# 2. "not finite" says which infinity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [
    (math.inf, "inf"), (-math.inf, "-inf"), ("-Infinity", "-inf"), ("1e400", "inf: '1e400' is beyond float64's range"),
    (10 ** 400, "inf: an integer beyond float64's range"), (-(10 ** 400), "-inf: an integer beyond float64's range"),
], ids=["inf", "-inf", "-Infinity", "1e400", "10**400", "-10**400"])
def test_not_finite_says_which_value(value, shown):
    """Every other reason shows its value; "lr: not finite" did not say inf or -inf (or that the
    source wrote a number past float64, 1e400)."""
    v = validate(_frame(lr=pd.Series([value], dtype=object)))
    assert v.rejected["reason"].tolist() == [f"lr: not finite ({shown})"]
    assert v.reason_kinds == {"lr: not finite": 1}


def test_not_finite_in_a_float_column():
    v = validate(_frame(2, ds_accuracy=[math.inf, -math.inf]))
    assert v.rejected["reason"].tolist() == ["ds_accuracy: not finite (inf)", "ds_accuracy: not finite (-inf)"]


# --------------------------------------------------------------------------------------------
# 3. extra at Store.commit's gate (conform)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, needle", [
    ([[("ds_n", "0.5")]], "extra: ds_n '0.5' is no test-set size (a whole number of examples, at least 1; leave it "
                          "empty where unknown) (run 'r0'); validate the rows first"),
    ([[("ds_n", "0")], [("ds_n", "-3")]], "extra: ds_n '0' is no test-set size (a whole number of examples, at "
                                          "least 1; leave it empty where unknown) (run 'r0', and 1 other row(s) with a "
                                          "problem in it)"),
    ([None, [("a", "1"), ("ds_n", "100"), ("ds_n", "200")]],
     "extra: key 'ds_n' given twice, with different values ('100', '200') (run 'r1'); validate"),
])
def test_commit_refuses_an_extra_that_validate_never_passes(tmp_path, extra, needle):
    """``validate`` quarantines a ``ds_n`` of "0.5" (half an example: the analysis floored the task's
    intervals at +-100 points) and a key given twice with different values (a reader keeps either);
    ``Store.commit`` stored both from a table built in code."""
    with pytest.raises(ValueError) as e:
        conform(_table(extra))
    msg = str(e.value)
    assert msg.startswith(needle) and "\n" not in msg, msg
    s = Store(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="^extra: "):
        s.commit(_table(extra))
    assert not s.exists() or s.read().num_rows == 0


def test_commit_stores_extra_as_validate_does():
    """An identical repeat is one pair, a null value "", a size its whole number: as validate
    stores them (one row was stored two ways, by its path). Sliced and chunked columns too."""
    extra = [[("ds_n", "1,000"), ("a", "x"), ("a", "x")], [("b", None)], None, [("ds_n", "NA")], [("ds_n", "1e4")]]
    assert conform(_table(extra)).column("extra").to_pylist() == [
        [("ds_n", "1000"), ("a", "x")], [("b", "")], None, [("ds_n", "")], [("ds_n", "10000")]]
    v = validate(_frame(5, extra=[dict(e) if e else None for e in extra])).table.column("extra").to_pylist()
    assert [dict(e) if e else None for e in v] == [{"a": "x", "ds_n": "1000"}, {"b": ""}, None, {"ds_n": ""},
                                                   {"ds_n": "10000"}]
    t = _table([[("ds_n", "1")], [("ds_n", "0.5")], [("ds_n", "2")]])
    part = pa.Table.from_batches(t.slice(2, 1).to_batches())   # (a map's keys ignore a slice)
    assert conform(part).column("extra").to_pylist() == [[("ds_n", "2")]]
    # a validated table passes unchanged
    good = validate(_frame(2, extra=[{"ds_n": "100", "z": "1"}, {"a": "b"}])).table
    assert conform(good).column("extra").to_pylist() == [[("ds_n", "100"), ("z", "1")], [("a", "b")]]


# --------------------------------------------------------------------------------------------
# 4. Go's time.String()
# --------------------------------------------------------------------------------------------


def test_go_time_string_is_read_by_its_offset():
    """Go's ``time.Time.String()`` ("2024-05-01 12:00:00.123456789 +0000 UTC", with the monotonic
    reading "m=+0.001" where the time has one) was "not a timestamp"; its offset says the instant.
    Go's zero time in that form is the unknown-time placeholder (null), as in ISO 8601."""
    texts = ["2024-05-01 12:00:00.123456789 +0000 UTC", "2024-05-01 14:00:00 +0200 CEST m=+0.000012345",
             "2024-05-01 15:00:00 +0300 +03", "0001-01-01 00:00:00 +0000 UTC", "2024-05-01 07:00:00 -0500 EST"]
    v = validate(_frame(5, started_at=texts))
    assert v.n_rejected == 0, v.rejected
    got = [None if x is None else x.isoformat() for x in v.table.column("started_at").to_pylist()]
    assert got == ["2024-05-01T12:00:00.123456+00:00", "2024-05-01T12:00:00+00:00", "2024-05-01T12:00:00+00:00",
                   None, "2024-05-01T12:00:00+00:00"]


def test_go_time_whose_zone_contradicts_its_offset_is_refused():
    v = validate(_frame(2, started_at=["2024-05-01 12:00:00 +0200 UTC", "2024-05-01 12:00:00 +0200 +03"]))
    assert v.n_rejected == 2
    assert all("is not a timestamp" in r for r in v.rejected["reason"]), v.rejected


# --------------------------------------------------------------------------------------------
# 5. the day/month order is each column's own (documented); the reason says so
# --------------------------------------------------------------------------------------------


def test_an_ambiguous_date_names_its_column_not_the_row():
    """``started_at`` '03/04/2024' beside ``ended_at`` '13/04/2024' is refused (each column shows its
    own order, docs/schema.md); the reason said "no date read with it has a day above 12", which
    the row's ended_at has: it now says its column."""
    v = validate(_frame(started_at=["03/04/2024"], ended_at=["13/04/2024"]))
    reason = v.rejected["reason"].iloc[0]
    assert reason.startswith("started_at: '03/04/2024' is ambiguous: 3 April or March 4? (no date in its column has a "
                             "day above 12 to tell the order)"), reason
