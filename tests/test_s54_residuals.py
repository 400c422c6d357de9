"""A group whose interval rests on fewer back-test residuals than its level needs says so (session 54).

The interval's width is the ``ceil(n level)``-th smallest of ``n`` back-test scores; below 10 that is the largest,
and with ``n`` alike errors the next one exceeds the largest 1 time in ``n + 1``: from 4 residuals a "90%" interval
holds a new model about 80% of the time. On 21 tables the groups with 4 residuals covered 78% of their hidden
frontier points (BENCHMARKS.md). The ``few_residuals`` warning states it; nothing else changes."""

import math

import numpy as np
import pytest

from meta_study.analysis.fitting import FitOptions, fit_groups
from meta_study.analysis.headline import half_width
from meta_study.analysis.selection import FLAG_HELP, FLAGS, _few_residuals, needed_residuals


def test_needed_residuals_is_the_conformal_count() -> None:
    assert needed_residuals(0.9) == 9 and needed_residuals(0.95) == 19 and needed_residuals(0.8) == 4
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        n = needed_residuals(level)
        assert math.ceil((n + 1) * level - 1e-9) <= n               # the conformal rank exists from n
        assert math.ceil(n * level - 1e-9) > n - 1                   # ... and not from one fewer


@pytest.mark.parametrize("n, share", [(4, 0.8), (5, 5 / 6), (8, 8 / 9)])
def test_an_interval_from_n_alike_errors_holds_the_next_one_n_over_n_plus_1(n: int, share: float) -> None:
    # what the warning says, on the interval's own half-width rule: n alike |errors| at one reach, the
    # width at that reach, and how often a next error of the same kind falls inside it
    rng = np.random.default_rng(54)
    reps = 6_000
    errors = np.abs(rng.standard_normal((reps, n + 1)))
    inside = 0
    for row in errors:
        h = half_width(np.array([0.0]), [(e, 1.0, 0) for e in row[:n]], 0.9)[0]
        inside += row[n] <= h
    assert abs(inside / reps - share) < 0.02, (inside / reps, share)
    words = _few_residuals(n, 0.9)[0]
    assert words.startswith(f"few_residuals: the 90% interval rests on {n} back-test residuals:")
    assert f"1 time in {n + 1}" in words and f"about {100 * share:.0f}% of the time, not 90%" in words
    assert "(9 or more residuals are needed)" in words


def test_no_warning_from_enough_residuals_or_none() -> None:
    assert _few_residuals(9, 0.9) == [] and _few_residuals(30, 0.9) == [] and _few_residuals(0, 0.9) == []
    assert _few_residuals(9, 0.95) != [] and _few_residuals(19, 0.95) == []
    assert _few_residuals(1, 0.9)[0].startswith("few_residuals: the 90% interval rests on 1 back-test residual:")
    assert "few_residuals" in FLAGS and "1 time in n + 1" in FLAG_HELP["few_residuals"]


def _group(n_models: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    us = np.sort(rng.uniform(0.55, 0.85, n_models))
    ds = 0.9 - 0.6 * (1 - us) ** 0.8 + rng.normal(0, 0.01, n_models)
    return us, np.clip(ds, 0, 1)


@pytest.mark.slow(10)
def test_a_ten_model_group_warns_and_a_forty_model_group_does_not() -> None:
    small, large = fit_groups([_group(10, 1), _group(40, 2)], FitOptions(holdout_quantile=1.0))
    n_small, n_large = len(small.headline.residuals), len(large.headline.residuals)
    assert 0 < n_small < 9 <= n_large, (n_small, n_large)
    few = [w for w in small.warnings if w.startswith("few_residuals:")]
    assert few == _few_residuals(n_small, 0.9)
    assert not any(w.startswith("few_residuals:") for w in large.warnings)
    # it describes the interval, it withholds nothing: the prediction and interval are stated as before
    step = small.claims.steps[0]
    assert math.isfinite(step.ds) and step.lo < step.ds < step.hi
