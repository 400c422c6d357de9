"""Review of validation (s36): dates read by a guess, invisible characters in names, and percents
written as text.

Each test failed on the code before its fix; the measured failure is in its docstring.
"""

from __future__ import annotations

import pandas as pd

from meta_study.validation import validate


def _rows(**cols) -> pd.DataFrame:
    n = max(len(v) for v in cols.values() if isinstance(v, list))
    base = dict(source="s", us_task="up", eval_protocol="linear", us_accuracy=0.5, ds_task="pets", ds_accuracy=0.5)
    cols = {"run_id": [f"r{i}" for i in range(n)], **cols}
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in {**base, **cols}.items()})


def _started(values: list) -> tuple[dict[str, str], dict[str, str]]:
    """(run_id -> stored started_at as ISO text, run_id -> quarantine reason)."""
    v = validate(_rows(started_at=values))
    t = v.table.to_pandas()
    stored = {r: ts.isoformat() for r, ts in zip(t.run_id, t.started_at)}
    reasons = dict(zip(v.rejected.run_id, v.rejected.reason))
    return stored, reasons


# --------------------------------------------------------------------------------------------
# Dates: never a silent guess of day and month
# --------------------------------------------------------------------------------------------


def test_a_day_first_column_is_read_day_first_throughout():
    """'03/04/2024' was stored as March 4 and '13/04/2024' of the same column as April 13: each
    value was read on its own, with pandas' month-first guess where it could be either."""
    stored, reasons = _started(["03/04/2024", "13/04/2024 10:30", "04.05.2024"])
    assert reasons == {}
    assert stored == {"r0": "2024-04-03T00:00:00+00:00", "r1": "2024-04-13T10:30:00+00:00",
                      "r2": "2024-05-04T00:00:00+00:00"}
    stored, reasons = _started(["03/04/2024", "04/13/2024"])   # month first, told by the 13
    assert reasons == {}
    assert stored == {"r0": "2024-03-04T00:00:00+00:00", "r1": "2024-04-13T00:00:00+00:00"}


def test_a_column_with_both_day_month_orders_is_refused():
    """'13/04/2024' and '04/14/2024' in one column: both orders, so '03/04/2024' could be either;
    all three were stored (March 4, April 13, April 14)."""
    stored, reasons = _started(["13/04/2024", "04/14/2024", "03/04/2024", "2024-04-03"])
    assert set(stored) == {"r3"}
    assert set(reasons) == {"r0", "r1", "r2"}
    for r in reasons.values():
        assert "day first" in r and "month first" in r and "ISO 8601" in r, r
    assert reasons["r2"].startswith("started_at: '03/04/2024'"), reasons


def test_an_ambiguous_date_is_quarantined_when_nothing_in_its_column_decides():
    """'03/04/2024' and '05/06/2024' with no day above 12 in the column were stored month first
    (March 4, May 6): a guess. '07/07/2024' is July 7 either way."""
    stored, reasons = _started(["03/04/2024", "05/06/2024", "07/07/2024"])
    assert stored == {"r2": "2024-07-07T00:00:00+00:00"}
    assert reasons["r0"] == ("started_at: '03/04/2024' is ambiguous: 3 April or March 4? (no date in its column "
                             "has a day above 12 to tell the order) write it as ISO 8601 (2024-04-03 or 2024-03-04)"), \
        reasons
    assert set(reasons) == {"r0", "r1"}
    stored, reasons = _started(["13/00/2024", "03/04/2024"])   # no date: it tells no order
    assert stored == {} and "is ambiguous" in reasons["r1"], reasons


def test_partial_and_guessed_date_texts_are_not_timestamps():
    """'1 2 3' was stored as 2003-01-02, 'April' as 0001-04-01, '12:30' as today at 12:30, '2024'
    as 2024-01-01, '03/04/24' (a two-digit year: 2003-04-24?) as 2024-03-04, '24/03/04' as 2004-03-24."""
    texts = ["1 2 3", "April", "12:30", "2024", "03/04/24", "24/03/04", "T10"]
    stored, reasons = _started(texts)
    assert stored == {}
    for r, x in zip(sorted(reasons), texts):
        assert reasons[r].startswith(f"started_at: wrong type ({x!r} is not a timestamp"), reasons


def test_iso_and_named_month_dates_are_still_read():
    """The formats that say which is the day: ISO 8601 (with a zone or not), year first with
    slashes, month names (RFC 2822), and pandas' own text of a timestamp."""
    texts = ["2024-04-03", "2024-04-03T10:00:00Z", "2024-04-03 12:00:00+02:00", "2024/04/03",
             "Wed, 03 Apr 2024 10:00:00 GMT", "3 Apr 2024", "April 3, 2024", "2024-04-03 10:00:00.5",
             "2024-04-03 10:00 PM"]
    stored, reasons = _started(texts)
    assert reasons == {}
    assert stored == {"r0": "2024-04-03T00:00:00+00:00", "r1": "2024-04-03T10:00:00+00:00",
                      "r2": "2024-04-03T10:00:00+00:00", "r3": "2024-04-03T00:00:00+00:00",
                      "r4": "2024-04-03T10:00:00+00:00", "r5": "2024-04-03T00:00:00+00:00",
                      "r6": "2024-04-03T00:00:00+00:00", "r7": "2024-04-03T10:00:00.500000+00:00",
                      "r8": "2024-04-03T22:00:00+00:00"}


def test_a_blank_timestamp_text_is_no_value():
    """An empty or blank started_at (JSON Lines' "", a spreadsheet's " ") quarantined its row as
    "wrong type ('' is not a timestamp)", where a number column reads "" as no value."""
    stored, reasons = _started(["", "  ", "2024-04-03"])
    assert reasons == {}
    assert stored["r2"] == "2024-04-03T00:00:00+00:00"
    f = _rows(started_at=["", None])
    f["started_at"] = pd.Series(["", None], dtype=object)   # JSON Lines' cells: objects
    v = validate(f)
    assert v.n_rejected == 0 and v.table.column("started_at").null_count == 2


# --------------------------------------------------------------------------------------------
# Names: invisible characters are no part of a name
# --------------------------------------------------------------------------------------------


def test_zero_width_characters_are_removed_from_names():
    """'cifar\\u200b10' and 'cifar10' look the same and were two tasks (two groups, two fits); a
    BOM or a word joiner likewise; a name of only a zero-width space was stored as an invisible task."""
    names = ["cifar10", "cifar\u200b10", "\ufeffcifar10", "cif\u2060ar10", "cifar\u200c10\u200d", "\u200b pets"]
    v = validate(_rows(ds_task=names + ["\u200b"], us_task=["in\u200bet"] * 7))
    assert v.table.column("ds_task").to_pylist() == ["cifar10"] * 5 + ["pets"]
    assert set(v.table.column("us_task").to_pylist()) == {"inet"}
    assert v.rejected.reason.tolist() == ["ds_task: missing required field"]


def test_a_rejected_row_names_its_run_as_the_stored_rows_do():
    """The quarantine must name a run as its stored rows do (a source's runs are replaced by
    name): with zero-width characters removed from stored names only, 'r\u200b1' stayed in the
    quarantine's run_id."""
    v = validate(_rows(run_id=["r\u200b1", "\ufeffr1"], ds_accuracy=[0.5, 7.0], source="s\u2060"))
    assert v.table.column("run_id").to_pylist() == ["r1"]
    assert v.rejected.run_id.tolist() == ["r1"] and v.rejected.source.tolist() == ["s"]


# --------------------------------------------------------------------------------------------
# Percents written as text
# --------------------------------------------------------------------------------------------


def test_a_percent_text_in_a_fraction_column_says_what_to_do():
    """'85%' in ds_accuracy was "wrong type ('85%' is not a number)": true, and no word of the
    unit; a column of them gave the summary "wrong type (not a number)"."""
    v = validate(_rows(ds_accuracy=["85%", "90.5 %", "0.9", "abc"]))
    reasons = dict(zip(v.rejected.run_id, v.rejected.reason))
    assert reasons["r0"] == ("ds_accuracy: '85%' is a percent written as text: write 85 and set the column's unit "
                             "to percent ('units: {ds_accuracy: percent}' or 'accuracy_unit: percent' in a "
                             "--mapping), or write the fraction 0.85"), reasons
    assert reasons["r1"].startswith("ds_accuracy: '90.5 %' is a percent written as text: write 90.5 "), reasons
    assert reasons["r3"] == "ds_accuracy: wrong type ('abc' is not a number)"
    assert v.reason_kinds["ds_accuracy: a percent written as text (set its unit to percent)"] == 2
    v = validate(_rows(data_fraction=["10%"]))
    assert v.rejected.reason.tolist() == ["data_fraction: '10%' is a percent written as text: data_fraction is a "
                                          "fraction: write 0.1"]


def test_a_percent_text_under_a_percent_unit_says_to_drop_the_sign():
    """With the column declared in percent, '85%' was "wrong type ('85%' is not a number)"."""
    f = _rows(ds_accuracy=["85%"])
    f["_ds_accuracy_unit"] = "percent"
    v = validate(f)
    assert v.rejected.reason.tolist() == ["ds_accuracy: '85%' is a percent written as text: write 85, without "
                                          "the % sign (the column's unit is percent)"]
