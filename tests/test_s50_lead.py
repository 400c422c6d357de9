"""Session 50, the lead's own fixes (each test fails on the code before it)."""

from __future__ import annotations

import pandas as pd

from meta_study.validation import extra_text, validate

BASE = dict(source=["s"], run_id=["r"], us_task=["in"], ds_task=["c"], eval_protocol=["linear"], us_accuracy=[0.5],
            ds_accuracy=[0.5])


def test_an_extra_integer_past_4300_digits_is_stored_exactly():
    """An ``extra`` value that is an integer of 5,000 digits raised Python's "Exceeds the limit
    (4300 digits) for integer string conversion" from validate: the whole input failed. It is
    stored as its exact decimal text (a numpy integer and a small one as before)."""
    big = 10 ** 5000 + 7
    assert extra_text(big) == "1" + "0" * 4999 + "7"
    assert extra_text(-big) == "-1" + "0" * 4999 + "7"
    assert extra_text(12) == "12" and extra_text(pd.Series([3]).to_numpy()[0]) == "3"
    assert extra_text(True) == "true" and extra_text(0.25) == "0.25"
    frame = pd.DataFrame({**BASE, "extra": [{"big": big}]})
    v = validate(frame)
    assert v.table.num_rows == 1 and not len(v.rejected)
    stored = dict(v.table.column("extra").to_pylist()[0])
    assert stored["big"] == "1" + "0" * 4999 + "7"


def test_an_option_message_shows_large_limits_and_values_in_full():
    """``:g`` wrote a ceiling of 1,000,000 as "1e+06" and a typo of 10**7 as "got 1e+07"."""
    from meta_study.analysis.sensitivity import SensitivityOptions
    from meta_study.errors import OptionError, Range

    assert Range(3, 1_000_000).text() == "in [3, 1000000]"
    try:
        SensitivityOptions(trials=10 ** 7)
    except OptionError as e:
        assert "got 10000000" in str(e) and "e+" not in str(e)
    else:
        raise AssertionError("10**7 trials accepted")
    assert Range(0.001, 100, lo_open=True).text() == "in (0.001, 100]"


def test_the_loader_counts_its_classes_without_loading_images(tmp_path):
    """The trial sizing counted an image folder's and a Parquet table's classes through the
    loader's private helpers; the loader now says it: the same split folder and skipped names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meta_study.train import disk

    for c in ("a", "b", "c", ".hidden"):
        (tmp_path / "imgs" / "train" / c).mkdir(parents=True)
    (tmp_path / "imgs" / "val" / "a").mkdir(parents=True)
    assert disk.imagefolder_class_count(tmp_path / "imgs") == 3
    pq.write_table(pa.table({"label": [0, 1, 1, 5], "x": [1, 2, 3, 4]}), tmp_path / "t.parquet")
    assert disk.parquet_class_count(str(tmp_path / "t.parquet")) == 3


def test_a_password_holding_an_at_sign_is_cut_whole_from_a_trials_error_and_the_uri_refusal():
    """The writer's and finalize's error lines cut a URL's user info only up to its first '@'
    before a '/', '?' or '#': 'http://u:p@ss#x@h' left 'ss#x' of the password in a run's tag;
    the tracking URI's refusal did the same."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.tune import preflight
    from meta_study.tune.finalize import without_user_info

    line = without_user_info("ConnectionError: cannot reach 'http://u:p@ss#x@h:5000/api' (refused)")
    assert line == "ConnectionError: cannot reach 'http://h:5000/api' (refused)", line
    assert without_user_info("at http://h:5000/api and postgresql://bob:pw@db/x") == "at http://h:5000/api and postgresql://db/x"
    shown = preflight._shown_uri("http://u:p@ss#x@h:5000 /x")
    assert "ss" not in shown and "p@" not in shown and "h:5000" in shown, shown
    with pytest.raises(UserError) as e:
        preflight.check_tracking_uri(" http://u:p@ss?x@h:5000 ")
    assert "ss" not in str(e.value) and "h:5000" in str(e.value), str(e.value)


def test_the_writers_error_line_cuts_a_password_holding_an_at_sign_whole():
    """The writer's own copy of the user-info pattern stopped at the first '@' before '#'."""
    from meta_study.tune._shards import error_line

    line = error_line(ConnectionError("cannot reach 'http://u:p@ss#x@h:5000/api'"))
    assert line == "ConnectionError: cannot reach 'http://h:5000/api'", line
