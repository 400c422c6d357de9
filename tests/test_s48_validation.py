"""Review s48 of the canonical record's validation and its gate for rows built in code
(``meta_study.validation.conform``, which every ``Store.commit`` applies)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from meta_study.validation import conform, validate

BASE = dict(source=["s"], run_id=["r"], us_task=["in"], ds_task=["c"], eval_protocol=["linear"], us_accuracy=[0.5],
            ds_accuracy=[0.5])


def _table(**over) -> pa.Table:
    cols = dict(BASE)
    cols.update(over)
    return pa.table(cols)


def test_commit_stores_names_as_validate_does_one_task_one_partition(tmp_path):
    """A row built in code with ``" c "`` (or a decomposed "Café", a zero-width space) was stored as
    a task of its own beside the validated rows' ``c``: two partitions, two groups, two fits of one
    task; and an empty optional name was stored as "" where validate stores null."""
    import pandas as pd

    from meta_study.store import Store

    s = Store(str(tmp_path / "st"))
    s.commit(validate(pd.DataFrame({k: v * 1 for k, v in BASE.items()})).table)
    cafe = "Cafe\u0301"
    s.commit(_table(run_id=["r2"], ds_task=[" c "], us_task=["in\u200b"], model_name=["  "], experiment=[f" {cafe}"]))
    t = s.read()
    assert sorted(set(t.column("ds_task").to_pylist())) == ["c"]
    assert sorted(set(t.column("us_task").to_pylist())) == ["in"]
    rows = {r["run_id"]: r for r in t.to_pylist()}
    assert rows["r2"]["model_name"] is None
    assert rows["r2"]["experiment"] == "Caf\u00e9"
    # a required name that is only spaces is empty: refused, as validate refuses it
    with pytest.raises(ValueError, match=r"^run_id: 1 empty value\(s\) \(a required name\)"):
        conform(_table(run_id=["   "]))


@pytest.mark.parametrize("shots, what", [(None, "missing"), (0, "0")])
def test_commit_refuses_a_few_shot_row_without_shots(tmp_path, shots, what):
    """validate quarantines a few-shot row without shots (or on 0 shots); Store.commit stored one
    built in code, a group (us_task, ds_task, fewshot, null) that no few-shot probe has."""
    from meta_study.store import Store

    t = _table(eval_protocol=["fewshot"], shots=pa.array([shots], pa.int32()))
    with pytest.raises(ValueError, match=rf"^shots: 1 few-shot row\(s\) with {what} shots \(run 'r'\); a few-shot "
                                         r"probe needs at least 1 example per class"):
        conform(t)
    s = Store(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="few-shot row"):
        s.commit(t)
    assert not s.exists() or s.read().num_rows == 0
    # with shots, or under another protocol without them, it is stored
    conform(_table(eval_protocol=["fewshot"], shots=pa.array([5], pa.int32())))
    conform(_table(eval_protocol=["shift"], shots=pa.array([None], pa.int32())))


@pytest.mark.parametrize("name, needle", [("x" * 300, "name too long for a partition directory"),
                                          ("__HIVE_DEFAULT_PARTITION__", "is reserved")])
def test_commit_refuses_a_task_name_that_cannot_be_a_partition_in_one_line(tmp_path, name, needle):
    """A task name too long for a directory failed deep in the commit with the OS's
    "[Errno 36] File name too long: '.../_staging/...'", naming no column; validate names it."""
    from meta_study.store import Store

    with pytest.raises(ValueError, match=rf"^ds_task: 1 value\(s\) cannot be a partition directory \(e\.g\. .*{needle}"):
        conform(_table(ds_task=[name]))
    s = Store(str(tmp_path / "st"))
    with pytest.raises(ValueError, match="cannot be a partition directory"):
        s.commit(_table(ds_task=[name]))


def _frame(texts: list, dtype: object = "str"):
    import pandas as pd

    n = len(texts)
    f = pd.DataFrame({k: v * n for k, v in BASE.items()})
    f["run_id"] = [f"r{i}" for i in range(n)]
    f["ended_at"] = pd.Series(texts, dtype=dtype)
    return f


@pytest.mark.parametrize("dtype", ["str", object])
def test_a_time_with_nanoseconds_does_not_refuse_the_columns_other_years(dtype):
    """One text with more than 6 digits of a second (Go's RFC 3339 nano, .NET's 7-digit ticks) made
    pandas read the whole column in nanoseconds, whose range is years 1677 to 2262: every other
    time outside it was "not a timestamp: no such date or time", and so was the unknown-time
    placeholder Go's and .NET's exporters write for a run not ended (stored as null otherwise)."""
    texts = ["2024-04-03T10:00:00.123456789Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.0000000", "0024-01-03",
             "3 Jan 0024", "2300-04-03T10:00:00.1234567Z", "2024-04-03T10:00:00.9999999+02:00"]
    v = validate(_frame(texts, dtype))
    assert v.rejected.reason.tolist() == []
    got = [None if x is None else x.isoformat() for x in v.table.column("ended_at").to_pylist()]
    assert got == ["2024-04-03T10:00:00.123456+00:00", None, None, "0024-01-03T00:00:00+00:00",
                   "0024-01-03T00:00:00+00:00", "2300-04-03T10:00:00.123456+00:00",
                   "2024-04-03T08:00:00.999999+00:00"]
    # .NET's placeholder alone (7 digits) is the unknown time too, not a wrong type
    v = validate(_frame(["0001-01-01T00:00:00.0000000"], dtype))
    assert v.rejected.empty and v.table.column("ended_at").to_pylist() == [None]
    # a time that does not exist is still refused, with its reason
    v = validate(_frame(["2024-02-30T10:00:00.123456789Z", "0001-01-01T00:00:00Z"], dtype))
    assert v.rejected.reason.tolist() == ["ended_at: wrong type ('2024-02-30T10:00:00.123456789Z' is not a timestamp: "
                                          "no such date or time)"]


def test_a_nanosecond_time_object_does_not_refuse_the_columns_other_years():
    """The same with time objects (a frame built in code, a column of pandas Timestamps beside texts)."""
    import datetime as dt

    import numpy as np
    import pandas as pd

    texts = [pd.Timestamp("2024-04-03T10:00:00.123456789Z"), "0001-01-01T00:00:00Z",
             np.datetime64("2024-04-03T10:00:00.123456789"), dt.datetime(500, 1, 1)]
    v = validate(_frame(texts, object))
    assert v.rejected.reason.tolist() == []
    got = [None if x is None else x.isoformat() for x in v.table.column("ended_at").to_pylist()]
    assert got == ["2024-04-03T10:00:00.123456+00:00", None, "2024-04-03T10:00:00.123456+00:00",
                   "0500-01-01T00:00:00+00:00"]


@pytest.mark.parametrize("text", ["1e5000", "1e40000", "9223372036854775808"])
def test_a_ds_n_past_any_test_set_is_a_reason_not_a_traceback_or_a_hang(text):
    """A ``ds_n`` of "1e5000" failed the whole ingest with a traceback (``str(int(...))`` past
    Python's 4300-digit limit), and "1e400000000" hung it building a 166 MB integer (the same path:
    not run here, where the old code would hang the test); no test set has more examples than an
    int64 counts."""
    import pandas as pd

    f = pd.DataFrame({k: v * 2 for k, v in BASE.items()})
    f["run_id"] = ["r0", "r1"]
    f["extra"] = [{"ds_n": text}, {"ds_n": "9223372036854775807"}]
    v = validate(f)
    assert v.rejected.reason.tolist() == [f"extra: ds_n {text!r} is no test-set size (a whole number of examples, at "
                                          "least 1; leave it empty where unknown)"]
    assert v.table.column("extra").to_pylist() == [[("ds_n", "9223372036854775807")]]


@pytest.mark.timeout(20)
def test_a_long_run_of_digits_in_an_accuracy_is_read_in_linear_time():
    """The regular expression that tells a percent written as text ("85%") backtracked
    quadratically on a cell of digits that is no number: a 16,000-digit cell took 8 s, a
    1 MB one (a line run together with the next) hours, before one row's reason came."""
    import pandas as pd

    f = pd.DataFrame({k: v * 1 for k, v in BASE.items()})
    f["ds_accuracy"] = pd.Series(["1" * 40_000 + "x"], dtype="str")
    v = validate(f)   # (linear: ~0.1 s; quadratic: ~50 s, past the timeout)
    assert v.rejected.reason.tolist()[0].startswith("ds_accuracy: wrong type ('111")
    from meta_study.validation import _percent_text_reason

    assert _percent_text_reason("ds_accuracy", " 85.5 % ", None).startswith(
        "ds_accuracy: ' 85.5 % ' is a percent written as text: write 85.5 and set")


def test_a_conflicting_duplicate_names_its_task_and_the_values_that_differ(tmp_path):
    """"conflicting duplicate key: 2 rows share this key with different values of ds_accuracy" named
    no task and no value: a run of a wide export has a row per task, and which two of its rows
    conflicted, and how, was in their payloads only. Through a real ingest and `store quarantine`."""
    import subprocess
    import sys

    (tmp_path / "dup.csv").write_text(
        "source,run_id,us_task,ds_task,eval_protocol,shots,us_accuracy,ds_accuracy,seed\n"
        "s,r1,in,pets,fewshot,5,0.5,0.61,1\ns,r1,in,cifar,fewshot,5,0.5,0.7,1\n"
        "s,r1,in,pets,fewshot,5,0.5,0.62,1\ns,r1,in,pets,fewshot,5,0.5,0.63,2\n")
    cli = [sys.executable, "-m", "meta_study.cli"]
    r = subprocess.run([*cli, "ingest", str(tmp_path / "dup.csv"), "--store", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 of 4 rows rejected: conflicting duplicate key" in r.stdout, r.stdout
    r = subprocess.run([*cli, "store", "quarantine", str(tmp_path / "st")], capture_output=True, text=True, timeout=300)
    why = ("conflicting duplicate key: 3 rows share this key (us_task 'in', ds_task 'pets', eval_protocol 'fewshot', "
           "shots 5) with different values of ds_accuracy (0.61, 0.62, 0.63), seed (1, 2)")
    # each line names its file line (session 55): the three rows are told apart
    assert [r.stdout.count(f"- [s] r1 (dup.csv line {n}, ds_task pets): {why}") for n in (2, 4, 5)] == [1, 1, 1], r.stdout
