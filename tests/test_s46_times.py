"""Review s46 of the run-time columns (``started_at``, ``ended_at``) in validation
(meta_study/validation.py): a run that ends before it starts, the "unknown" placeholder
0001-01-01T00:00:00, and named-month dates whose year is written 00xx."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from meta_study.validation import ends_before_start_note, validate

BASE = dict(source="s", run_id="r", us_task="in", ds_task="c", eval_protocol="linear", us_accuracy=0.5,
            ds_accuracy=0.5)
UTC = dt.timezone.utc


def _frame(n: int, **cols: list) -> pd.DataFrame:
    rows = {k: [v] * n for k, v in BASE.items()}
    rows["run_id"] = [f"r{i}" for i in range(n)]
    rows.update(cols)
    return pd.DataFrame(rows)


def _times(v, column: str) -> list:
    return [None if t is None else t.astimezone(UTC).replace(tzinfo=None) for t in v.table.column(column).to_pylist()]


def test_a_run_that_ends_before_it_starts_is_kept_and_reported():
    """``ended_at`` before ``started_at`` was stored without a word. The row is kept (the times are
    provenance no analysis reads, and an MLflow run terminated with an ``end_time`` before its
    creation, a run logged after the fact, has them: quarantined, its accuracies left every fit),
    and ``validate`` reports how many rows and the first, for ingest's note. An end equal to the
    start, a missing one, or one later in UTC (a zone) is no such row; a row rejected for another
    reason is not counted."""
    f = _frame(6, started_at=["2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", None,
                              "2024-01-01T12:00:00+02:00", "2024-01-03"],
               ended_at=["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", None, "2024-01-01T00:00:00Z",
                         "2024-01-01T11:00:00Z", "2024-01-02"],
               ds_accuracy=[0.5] * 5 + [1.5])
    v = validate(f)
    assert v.rejected.run_id.tolist() == ["r5"]
    assert v.table.column("run_id").to_pylist() == ["r0", "r1", "r2", "r3", "r4"]
    assert _times(v, "ended_at")[0] == dt.datetime(2024, 1, 1)   # stored as given
    assert v.ends_before_start == (1, "run 'r0': ended_at '2024-01-01T00:00:00Z', started_at '2024-01-02T00:00:00Z'")
    assert ends_before_start_note(*v.ends_before_start) == (
        "1 row(s) end before they start (e.g. run 'r0': ended_at '2024-01-01T00:00:00Z', started_at "
        "'2024-01-02T00:00:00Z'), stored as given: started_at and ended_at swapped, written in different time "
        "zones, or an MLflow run given an end_time before its creation?")
    assert validate(f.iloc[1:5]).ends_before_start is None


def test_a_run_that_ends_before_it_starts_from_datetimes_names_both_times_in_utc():
    """An MLflow source gives datetimes (not texts): they are shown as ISO 8601 in UTC, not as
    ``Timestamp('...')``."""
    f = _frame(2)
    f["started_at"] = pd.to_datetime(pd.Series([1_704_153_600_000.0] * 2), unit="ms", utc=True)   # 2024-01-02
    f["ended_at"] = pd.to_datetime(pd.Series([1_704_067_200_000.0] * 2), unit="ms", utc=True)     # 2024-01-01
    v = validate(f)
    assert v.n_rejected == 0
    assert v.ends_before_start == (2, "run 'r0': ended_at 2024-01-01T00:00:00Z, started_at 2024-01-02T00:00:00Z")


@pytest.mark.parametrize("placeholder", [
    "0001-01-01T00:00:00Z",            # Go's zero time.Time (RFC 3339)
    "0001-01-01T00:00:00",             # .NET's DateTime.MinValue (ISO 8601)
    "0001-01-01",
    "1/1/0001 12:00:00 AM",            # .NET's DateTime.MinValue, en-US
    "01 Jan 0001",
    "Mon, 01 Jan 0001 00:00:00 GMT",   # RFC 1123
    dt.datetime(1, 1, 1),
])
def test_the_unknown_time_placeholder_0001_01_01_is_stored_as_null(placeholder):
    """Exporters write 0001-01-01T00:00:00 (Go's and .NET's zero time) for a time they do not know
    (a run not ended): it was stored as a time, a run of 2,023 years. It is a missing value, as
    "NA" is. A time later that day (a real, if odd, time) is kept, and so is the row."""
    f = _frame(2, started_at=[placeholder, "0001-01-01T00:00:01Z"], ended_at=["2024-01-01", placeholder])
    v = validate(f)
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    assert _times(v, "started_at") == [None, dt.datetime(1, 1, 1, 0, 0, 1)]
    assert _times(v, "ended_at") == [dt.datetime(2024, 1, 1), None]


def test_the_placeholder_in_a_datetime_column_is_null_too():
    """A Parquet timestamp column holding the placeholder (a datetime64 in pandas' microseconds)."""
    f = _frame(1)
    f["ended_at"] = pd.Series([pd.Timestamp("0001-01-01")]).astype("datetime64[us]")
    v = validate(f)
    assert v.n_rejected == 0
    assert _times(v, "ended_at") == [None]


@pytest.mark.parametrize("text, year", [
    ("3 Jan 0024", 24), ("Jan 3, 0024", 24), ("3rd January 0099 10:00 UTC", 99), ("Sept 3, 0050", 50),
    ("Wed, 03 Jan 0024 10:00:00 GMT", 24), ("3 Jan 0100", 100), ("3 Jan 2024", 2024),
])
def test_a_named_month_date_keeps_its_year_as_written(text, year):
    """A date with a month name and a year 0001 to 0099 was read as 19xx/20xx (dateutil takes a
    year below 100 for a two-digit one even written with four digits): "01 Jan 0001", the unknown
    placeholder, was stored as 2001-01-01, a real-looking time, and "3 Jan 0024" as 2024-01-03,
    while "0024-01-03" was year 24. The year is the one written."""
    v = validate(_frame(1, started_at=[text]))
    assert v.n_rejected == 0, v.rejected.reason.tolist()
    assert _times(v, "started_at")[0].year == year


@pytest.mark.parametrize("text", ["Jan 24", "24-Jan", "Jan-24", "24-Jan-24", "Jan 3, 24", "3 Jan 24", "Jan 2024"])
def test_a_named_month_with_a_two_digit_year_or_no_day_is_refused_not_read_as_year_24(text):
    """A named month with a two-digit year (or no day) says no date for sure ("Jan 24": January 24,
    or January 2024?): refused with the ISO 8601 hint, never stored as year 0024 or 2024."""
    v = validate(_frame(1, started_at=[text]))
    assert v.rejected.reason.tolist() == [
        f"started_at: wrong type ({text!r} is not a timestamp; write it as ISO 8601, e.g. 2024-04-03T10:00:00Z)"]
    v = validate(_frame(1, started_at=pd.Series([text], dtype="str")))
    assert v.n_rejected == 1


def test_ingest_says_which_rows_end_before_they_start(tmp_path):
    """The note reaches the ingest summary (validation counted the rows, nothing printed them), for
    a file read whole and for one read in pieces; the rows are stored."""
    from conftest import run_cli

    f = _frame(3, started_at=["2024-01-02T00:00:00Z"] * 3,
               ended_at=["2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-03T00:00:00Z"])
    path = tmp_path / "runs.csv"
    f.to_csv(path, index=False)
    r = run_cli("ingest", str(path), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "1 row(s) end before they start (e.g. run 'r0': ended_at '2024-01-01T00:00:00Z'" in out, out
    assert "3 new" in out, out


def test_ingest_in_pieces_counts_rows_that_end_before_they_start_over_every_piece(tmp_path, monkeypatch):
    from meta_study.ingest import files as F
    from meta_study.ingest.pipeline import ingest_sources
    from meta_study.ingest.files import FileSource
    from meta_study.store import Store

    n = 40
    f = _frame(n, started_at=["2024-01-02T00:00:00Z"] * n,
               ended_at=["2024-01-01T00:00:00Z" if i % 10 == 0 else "2024-01-03T00:00:00Z" for i in range(n)])
    path = tmp_path / "runs.csv"
    f.to_csv(path, index=False)
    monkeypatch.setattr(F, "CHUNK_ROWS", 7, raising=False)
    (rep,) = ingest_sources([FileSource([str(path)], None)], Store(str(tmp_path / "st")))
    notes = [x for x in rep.notes if "end before they start" in x]
    assert notes and notes[0].startswith("4 row(s) end before they start (e.g. run 'r0'"), rep.notes
    assert rep.new == n


def test_a_refit_shows_the_ingest_notes_as_ingest_does(tmp_path):
    """`meta-study ingest` prints each source's notes under its line; a refit (and the demo) logged
    the line alone, so a note about the data it just stored never reached the operator."""
    from conftest import quick_refit_config
    from meta_study.refit import refit

    n = 12
    f = _frame(n, started_at=["2024-01-02T00:00:00Z"] * n,
               ended_at=["2024-01-01T00:00:00Z"] + ["2024-01-03T00:00:00Z"] * (n - 1),
               us_accuracy=[0.3 + 0.05 * i for i in range(n)], ds_accuracy=[0.2 + 0.04 * i for i in range(n)])
    path = tmp_path / "runs.csv"
    f.to_csv(path, index=False)

    class _Uri:
        uri = str(tmp_path / "st")

    lines: list[str] = []
    refit(quick_refit_config(_Uri, tmp_path / "out", sources=(str(path),)), log=lines.append)
    i = next(k for k, x in enumerate(lines) if "runs.csv" in x and "new" in x)
    assert lines[i + 1].startswith("  1 row(s) end before they start (e.g. run 'r0'"), lines
