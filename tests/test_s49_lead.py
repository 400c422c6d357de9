"""Defects the lead found in session 49, each with the test that failed before its fix."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def test_a_refit_with_nothing_to_fit_leaves_no_out_it_made(tmp_path: Path) -> None:
    """``refit: empty`` (no groups to fit) made no version, but an ``--out`` the refit created stayed
    behind holding only ``.refit-out.lock``, against docs/cluster.md's "a failed first refit leaves
    no --out it made behind"; an --out that existed before is kept."""
    (tmp_path / "runs.csv").write_text("run_id,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                                       "r1,a,b,kfold,0.5,0.5\nr2,a,b,kfold,0.6,0.5\n")
    st, out = tmp_path / "st", tmp_path / "out"
    r = run_cli("refit", "--store", str(st), "--source", str(tmp_path / "runs.csv"), "--tracking-uri", "none",
                "--out", str(out), "--serial")
    assert r.returncode == 1 and "refit: empty:" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    # the store exists now (its quarantine): a refit of it alone, exit 0, no version; the --out the
    # command made (before the refit, to check it can be written) holds no lock file
    r = run_cli("refit", "--store", str(st), "--tracking-uri", "none", "--out", str(out), "--serial")
    assert r.returncode == 0 and "refit: empty:" in r.stdout, (r.stdout, r.stderr)
    assert not out.exists() or not any(out.iterdir())
    # an OUT that was there before keeps itself and what it holds
    out.mkdir(exist_ok=True)
    (out / "notes.txt").write_text("mine")
    r = run_cli("refit", "--store", str(st), "--tracking-uri", "none", "--out", str(out), "--serial")
    assert r.returncode == 0 and (out / "notes.txt").read_text() == "mine"


def test_a_mean_back_test_error_just_over_the_tolerance_does_not_read_equal_to_it() -> None:
    """"trusted (latest back-test error 1.6 pt <= tolerance 3 pt (the mean over 4 cuts: 3.00 pt))":
    the mean, 3.0044 pt, was shown equal to the tolerance, which hid why the latest cut decided."""
    from dataclasses import replace

    import numpy as np

    from meta_study.analysis import selection as S
    from meta_study.analysis.fitting import FitOptions, fit_groups

    rng = np.random.default_rng(0)
    us = np.sort(rng.uniform(0.5, 0.9, 40))
    ds = 1 - (0.6 * (1 - us) ** 1.2 + 0.1) - rng.exponential(0.01, us.size)
    sel = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    assert sel.n_cuts >= 2
    o = S.SelectionOptions()
    latest = S.latest_cut_errors(sel.headline.residuals, S.LATEST_CUTS)
    assert len(latest) == 2 and max(latest) < 0.03
    ok, why = S._trust(replace(sel, backtest_err=0.030044), o)
    assert ok and "(the mean over" in why and ": 3.004 pt)" in why, why
    ok, why = S._trust(replace(sel, backtest_err=0.0304), o)
    assert ": 3.04 pt)" in why, why
    ok, why = S._trust(replace(sel, backtest_err=0.03), o)      # exactly the tolerance: trusted by the mean
    assert ok and "back-test error 3.00 pt <= tolerance 3 pt" in why, why


def test_a_slope_or_us_accuracy_in_a_warning_never_reads_on_the_other_side() -> None:
    """The extrapolation warning printed a slope of 0.0996 as "0.10 ... below 0.1", and a horizon
    of 99.996% US as "100.00% US"."""
    from meta_study.analysis.selection import _pct_or_none, slope_text

    assert slope_text(0.0996, 0.1) == "0.0996" and slope_text(0.1004, 0.1) == "0.10"
    assert slope_text(0.53, 0.1) == "0.53" and slope_text(float("nan"), 0.1) == "nan"
    assert _pct_or_none(0.99996) == "99.996% US" and _pct_or_none(0.9) == "90.0% US"
    assert _pct_or_none(1.0) == "100.00% US" and _pct_or_none(float("nan")) == "no back-test"
