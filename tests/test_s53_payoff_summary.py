"""The line across groups reads each row at its own payoff threshold (session 53).

``payoff_summary`` counted every slope against one threshold: the rows' own when they shared one,
else the default 0.1, so rows fitted at 0.5 were counted "at or above the threshold of 0.1"
beside stop-paying points found at 0.5; and a ``threshold`` other than the rows' own was taken
silently where :func:`answer` refuses it."""

from __future__ import annotations

import pytest

from meta_study.analysis.answers import answer, payoff_summary
from test_s52_payoff_summary import _row


def _at(slope: float, threshold: float) -> dict:
    return {**_row(slope), "payoff_threshold": threshold}


def test_rows_fitted_at_two_thresholds_are_each_counted_at_their_own() -> None:
    # 0.3 DS pt per US pt pays at 0.1 and not at 0.5: one of the two, not both
    s = payoff_summary([_at(0.3, 0.1), _at(0.3, 0.5)])
    assert "1 of 2 at or above its group's own threshold (0.1 or 0.5, as each was fitted)" in s, s
    assert "the threshold of 0.1" not in s, s


def test_one_threshold_is_named_as_before() -> None:
    s = payoff_summary([_at(0.3, 0.5), _at(0.7, 0.5)])
    assert "1 of 2 at or above the threshold of 0.5" in s, s


def test_a_threshold_other_than_the_rows_is_refused_as_answer_refuses_it() -> None:
    rows = [_at(0.3, 0.1), _at(0.7, 0.1)]
    with pytest.raises(ValueError, match=r"threshold 0.5 is not the rows' payoff_threshold \(0.1\)"):
        payoff_summary(rows, threshold=0.5)
    with pytest.raises(ValueError, match="threshold 0.5 is not the row's payoff_threshold 0.1"):
        answer(rows[0], threshold=0.5)
    with pytest.raises(ValueError, match=r"in \(0, 100\]"):
        payoff_summary(rows, threshold=0.0)
    # the rows' own threshold, given, is the same line as none given
    assert payoff_summary(rows, threshold=0.1) == payoff_summary(rows)
