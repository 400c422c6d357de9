"""Review s35 of the analysis core (selection, headline, laws, fitting): interval ends that are no
US accuracy, a best model at 100% US, a NaN point in the bootstrap, a row without ``n_fit``, and the
held-out check of a trusted answer."""

from __future__ import annotations

import math

import numpy as np

from meta_study.analysis.answers import flags
from meta_study.analysis.fitting import FitOptions, fit_group
from meta_study.analysis.selection import FLAG_HELP, SelectionOptions, _tails


def _law(u: np.ndarray) -> np.ndarray:
    return 1 - (0.8 * (1 - u) ** 1.5 + 0.1)


def test_a_stop_paying_interval_end_is_an_accuracy_or_never_not_above_100_percent():
    # three models: the members' stop-paying points, some "never" (NaN then, inf now), were interpolated
    # towards the "never" sentinel (2.0) and gave stop_paying_lo = 1.417, a US accuracy of 141.7%
    s = fit_group(np.array([0.5, 0.6, 0.7]), np.array([0.3, 0.4, 0.45]))
    c = s.claims
    for end in (c.stop_paying_lo, c.stop_paying_hi):
        assert math.isnan(end) or end == math.inf or 0.0 <= end <= 1.0, (c.stop_paying_lo, c.stop_paying_hi)
    # an end between the last finite value and the first "never": the finite value below, never above
    assert _tails(np.array([0.8] + [math.inf] * 10), 0.9) == (0.8, math.inf)
    assert _tails(np.array([0.8] * 10 + [math.inf]), 0.9) == (0.8, math.inf)
    # finite ends are interpolated as before; all "never" stays never; no answer at all is NaN
    lo, hi = _tails(np.linspace(0.5, 0.9, 11), 0.9)
    assert (lo, hi) == (np.quantile(np.linspace(0.5, 0.9, 11), 0.05), np.quantile(np.linspace(0.5, 0.9, 11), 0.95))
    assert _tails(np.full(5, math.inf), 0.9) == (math.inf, math.inf)
    assert all(math.isnan(x) for x in _tails(np.full(5, np.nan), 0.9))


def _accelerating_group() -> tuple[np.ndarray, np.ndarray]:
    """Visible models on a law; the three best (hidden) 6-10 points above it: the headline,
    trusted on its back-tests, misses them by ~5 pt, the flat guess by ~13."""
    u = np.linspace(0.4, 0.8, 24)
    uh = np.array([0.84, 0.88, 0.92])
    return np.r_[u, uh], np.r_[_law(u), _law(uh) + np.array([0.06, 0.08, 0.10])]


def test_a_trusted_answer_that_misses_the_hidden_models_by_more_than_the_tolerance_says_so():
    us, ds = _accelerating_group()
    s = fit_group(us, ds)
    assert s.trusted and s.backtest_err <= 0.03
    assert 0.03 < s.pred_err < s.flat_pred_err          # beats the flat guess, misses the tolerance
    held = [w for w in s.warnings if w.startswith("held_out:")]
    assert len(held) == 1, s.warnings
    assert f"off by {100 * s.pred_err:.1f} pt RMSE" in held[0] and "3 pt tolerance" in held[0], held[0]
    assert f"the flat guess by {100 * s.flat_pred_err:.1f} pt" in held[0], held[0]
    assert dict(flags("; ".join(s.warnings)))["held_out"] == held[0].split(": ", 1)[1]
    assert "tolerance" in FLAG_HELP["held_out"]
    # it only describes: trust and every number as without it; a looser tolerance drops the note
    loose = fit_group(us, ds, FitOptions(selection=SelectionOptions(tolerance=0.06)))
    assert loose.trusted and not any(w.startswith("held_out:") for w in loose.warnings)
    assert (loose.pred_err, loose.backtest_err, repr(loose.claims)) == (s.pred_err, s.backtest_err, repr(s.claims))


def test_an_untrusted_answer_is_not_flagged_for_the_tolerance_only_for_losing_to_flat():
    us, ds = _accelerating_group()
    s = fit_group(us, ds, FitOptions(selection=SelectionOptions(tolerance=0.0005)))
    assert not s.trusted and s.pred_err < s.flat_pred_err
    assert not any(w.startswith("held_out:") for w in s.warnings), s.warnings


def test_a_held_out_tie_with_the_flat_guess_is_not_a_loss():
    # DS 0 below the line, 1 above: the held-out models are predicted to 1.6e-7 by the headline
    # and exactly by the flat guess; the warning said "off by 0.0 pt RMSE, the flat guess by 0.0 pt"
    us = np.linspace(0.4, 0.8, 12)
    ds = np.r_[np.zeros(6), np.ones(6)]
    s = fit_group(us, ds)
    assert s.usable and abs(s.pred_err - s.flat_pred_err) < 1e-6
    assert not any(w.startswith("held_out:") for w in s.warnings), s.warnings


def test_a_nan_accuracy_is_no_model_in_the_bootstrap_and_the_sensitivity_split():
    # one NaN DS among the visible models: every draw that picked it failed ("all": estimate NaN,
    # 5 of 20 draws usable); the selection already left such a point out
    from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group
    from meta_study.analysis.fitting import prepare

    u = np.linspace(0.4, 0.9, 20)
    d = _law(u)
    d[3] = np.nan
    df = bootstrap_group(("us", "ds", "linear", None), u, d, BootstrapOptions(samples=20))
    assert (df["status"] == "ok").all() and (df["n_ok"] == 20).all(), df
    assert np.isfinite(df[["estimate", "lo", "hi"]].to_numpy(float)).all()
    p = prepare(u, d, FitOptions())
    assert 3 not in p.fit_idx and 3 not in p.held_idx
    assert p.fit_idx.size + p.held_idx.size == 19


def test_a_best_model_at_100_percent_us_is_no_distance_from_itself():
    # with the best visible model at exactly 100% US, its own US accuracy lay "infinitely far"
    # beyond it (log(1e-12 / 0)): the interval there, the answer's "at the tested horizon", was
    # [0.0%-100.0%] while at 99.9% US it was 4 points wide
    from meta_study.analysis.headline import distance

    assert distance(np.array([1.0, 0.9, 0.5]), 1.0).tolist() == [0.0, 0.0, 0.0]
    d = distance(np.array([0.95, 1.0]), 0.9)
    assert math.isclose(d[0], math.log(2.0), rel_tol=1e-12) and d[1] == math.inf
    u = np.r_[np.linspace(0.4, 0.99, 20), 1.0]
    s = fit_group(u, _law(u), FitOptions(holdout_quantile=1.0))
    h = s.headline
    assert h.best_us == 1.0 and s.claims.predict_us == 1.0
    lo, hi = h.interval(np.array([0.999, 1.0]))
    assert hi[1] - lo[1] <= 2 * (hi[0] - lo[0]) + 1e-9 and hi[1] - lo[1] < 0.5, (lo, hi)
    assert lo[1] <= s.claims.predict_ds <= hi[1]


def test_a_held_out_miss_just_past_the_tolerance_reads_past_it():
    us, ds = _accelerating_group()
    s = fit_group(us, ds)
    # the tolerance just below the held-out error: "off by 5.2 pt" must not read as within it
    tol = s.pred_err - 2e-5
    t = fit_group(us, ds, FitOptions(selection=SelectionOptions(tolerance=tol)))
    held = next(w for w in t.warnings if w.startswith("held_out:"))
    shown = held.split("off by ", 1)[1].split(" pt", 1)[0]
    assert float(shown) > round(100 * tol, 1) or len(shown.split(".")[1]) > 1, held


def test_an_accuracy_an_ulp_above_one_is_one_not_never():
    # members' saturations flat + w (1 - flat) can land an ulp above 1: a limit of 100%, not "never"
    assert _tails(np.full(3, 1.0 + 2.2e-16), 0.9) == (1.0, 1.0)


def test_a_candidate_row_without_a_fit_count_still_predicts():
    # a fits table concatenated with one lacking n_fit has NaN there: predict_fit raised
    # "cannot convert float NaN to integer" instead of predicting from the parameters
    from meta_study.analysis import predict_fit, predict_interval

    for n_fit in (math.nan, None, 7):
        row = {"law": "eq1", "k": 0.8, "alpha": 1.5, "e_ir": 0.1, "status": "ok", "n_fit": n_fit}
        assert math.isclose(float(predict_fit(row, 0.5)), float(_law(np.array(0.5))), rel_tol=1e-12)
        lo, hi = predict_interval(row, 0.5)
        assert math.isnan(lo) and math.isnan(hi)        # no back-test residuals: no interval


def test_a_task_where_every_model_scores_the_same_is_flagged_no_trend():
    """Every visible model at one DS accuracy (a task at chance): the trend test did not run (a
    constant axis has no rank correlation), so the group was trusted with a stop-paying point and a
    zero-width interval, and nothing said DS does not track US."""
    import numpy as np

    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import Group
    from meta_study.analysis.tables import fit_table, headlines

    us = np.random.default_rng(3).uniform(0.3, 0.9, 40)
    df, _ = fit_table([Group("up", "chance", "fewshot", 5, us, np.full(40, 0.5))], FitOptions())
    row = headlines(df).iloc[0]
    assert "no_trend: DS is not shown to rise with US in these models (every visible model has the same DS" in \
        row["warnings"], row["warnings"]
    assert row["spearman_p"] == 1.0 and not row["stop_paying_supported"]
