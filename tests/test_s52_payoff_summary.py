"""The question across groups, in one line (session 52): ``meta-study fit`` and the report gave
slopes per group, and nothing said across the groups whether more US accuracy still pays.
:func:`payoff_summary` states it from the headline rows' own answers, so it never says what a
group's answer does not (an untrusted group's slope, a slope past the tested horizon, a slope on
a task whose DS does not rise with US)."""

from __future__ import annotations

import math

import pytest

from meta_study.analysis.answers import answer_text, payoff_summary


def _row(slope: float = 0.5, *, trusted: bool = True, best: float = 0.80, horizon: float = 0.85,
         warnings: str = "", stop: bool = False) -> dict:
    return {"trusted": trusted, "best_us": best, "horizon_us": horizon, "flat": 0.6, "payoff_threshold": 0.1,
            "ds_plus1": 0.62, "ds_plus1_lo": 0.6, "ds_plus1_hi": 0.64, "slope_plus1": slope,
            "warnings": warnings, "stop_paying_supported": stop, "stop_paying_us": 0.78 if stop else math.nan,
            "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts" if trusted else "back-test error 9 pt"}


def test_trusted_slopes_median_range_and_threshold_count() -> None:
    rows = [_row(1.2), _row(0.05), _row(0.4), _row(trusted=False)]
    s = payoff_summary(rows)
    assert s.startswith("Does more US accuracy still pay? 4 groups, 3 trusted: "), s
    assert "0.40 pt per US pt in the median (0.05-1.20 over 3)" in s, s
    assert "2 of 3 at or above the threshold of 0.1" in s, s
    assert "The other 1 answer is not trusted" in s, s


def test_what_an_answer_does_not_state_is_not_summarised() -> None:
    # past the tested horizon (+1 US pt beyond it), no trend, untrusted: no slope from any of them
    past = _row(0.9, best=0.80, horizon=0.805)
    flat = _row(0.9, warnings="no_trend: DS is not shown to rise with US in these models")
    rows = [past, flat, _row(0.9, trusted=False), _row(0.3, stop=True)]
    s = payoff_summary(rows)
    assert "0.30 pt per US pt" in s and "0.90" not in s, s
    assert "1 of 1 at or above" in s, s
    assert "1 states a stop-paying point within the data" in s, s
    assert "1 shows no significant rise of DS with US" in s, s
    assert "1 states no slope at +1 US pt" in s, s
    # each group's own answer states the same: the flat task no slope, the past one none within the horizon
    assert "DS pt per US pt" not in answer_text(flat).split("+1 US pt:")[1].split(";")[0]


def test_no_trusted_answer_says_so() -> None:
    s = payoff_summary([_row(trusted=False), _row(trusted=False)])
    assert "2 groups, 0 trusted: no answer is trusted" in s, s
    assert "pt per US pt" not in s


def test_a_slope_near_the_threshold_reads_on_its_side() -> None:
    # 0.0996 at two decimals reads "0.10", as if at the threshold: the answers' digits rule applies
    s = payoff_summary([_row(0.0996), _row(0.5)])
    assert "0.0996" in s and "1 of 2 at or above" in s, s


@pytest.mark.parametrize("threshold", [0.05, 0.6])
def test_threshold_given_counts_against_it(threshold: float) -> None:
    rows = [dict(_row(0.5), payoff_threshold=threshold), dict(_row(0.1), payoff_threshold=threshold)]
    s = payoff_summary(rows)
    assert f"threshold of {threshold:g}" in s
    assert ("2 of 2" if threshold == 0.05 else "0 of 2") in s, s


def test_fit_and_report_print_the_same_summary(tmp_path) -> None:
    from conftest import committed_store, run_cli

    store = committed_store(tmp_path / "st", runs=40, tasks=("a", "b"))
    r = run_cli("fit", store.uri, "--out", str(tmp_path / "fit"), "--no-figures")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("Does more US accuracy still pay?")]
    assert len(lines) == 1, r.stdout
    r2 = run_cli("report", store.uri, "--out", str(tmp_path / "rep"), "--serial")
    assert r2.returncode == 0, r2.stderr
    import html

    page = html.unescape((tmp_path / "rep" / "index.html").read_text())
    assert lines[0] in page, lines[0]


def test_the_demos_summary_reads_the_results_fits(tmp_path) -> None:
    """`meta-study demo` ends with the same line, read from its refit's fits.parquet."""
    from test_demo import _synthetic_results

    from meta_study.demo import answer_summary

    results, fits = _synthetic_results(tmp_path / "r")
    line = answer_summary(results)
    assert line == payoff_summary(fits[fits["headline"]].to_dict("records")), line
    assert line.startswith(f"Does more US accuracy still pay? {int(fits['headline'].sum())} groups, "), line
