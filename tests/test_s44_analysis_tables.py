"""Review s44 of the analysis tables and answers: fits.parquet's interval level, and plumbing edge cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis import predict_fit, predict_interval
from meta_study.analysis.answers import answer_text
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Group
from meta_study.analysis.selection import PLUS_POINTS, SelectionOptions
from meta_study.analysis.tables import FITS_COLUMNS, fit_table, headlines


def _cloud(n: int = 24, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    us = np.sort(rng.uniform(0.5, 0.9, n))
    return us, 0.9 - 0.5 * (1 - us) ** 0.8 + rng.normal(0, 0.01, n)


@pytest.fixture(scope="module")
def fits_by_level() -> dict[float, pd.DataFrame]:
    us, ds = _cloud()
    g = Group("a", "b", "p", None, us, ds)
    out = {}
    for level in (0.5, 0.9):
        opts = FitOptions(selection=SelectionOptions(laws=("eq1", "logit-linear"), frontiers=("vertices", "bins"),
                                                     level=level, ds_target=0.8))
        out[level], _ = fit_table([g], opts)
    return out


def _step_with_interval(head: pd.Series) -> int:
    ks = [k for k in PLUS_POINTS if math.isfinite(head[f"ds_plus{k}_lo"]) and math.isfinite(head[f"ds_plus{k}_hi"])]
    assert ks, "the fixture needs a step with an interval"
    return ks[0]


def test_fits_record_the_interval_level_and_predict_interval_defaults_to_it(fits_by_level, tmp_path):
    """Rows made at level 0.5 store 50% intervals; predict_interval(row, u) used 0.9 and disagreed
    with them. The level is a column, and the default reproduces the stored ends."""
    assert "level" in FITS_COLUMNS
    path = tmp_path / "fits.parquet"
    fits_by_level[0.5].to_parquet(path)
    back = pd.read_parquet(path)
    assert (back["level"] == 0.5).all()
    head = headlines(back).iloc[0]
    k = _step_with_interval(head)
    u = head["best_us"] + k / 100.0
    lo, hi = predict_interval(head, u)
    assert float(lo) == pytest.approx(head[f"ds_plus{k}_lo"], abs=1e-12)
    assert float(hi) == pytest.approx(head[f"ds_plus{k}_hi"], abs=1e-12)
    # an explicit level still works, and a 90% interval is at least as wide as the 50% one
    lo9, hi9 = predict_interval(head, u, level=0.9)
    assert float(hi9) - float(lo9) >= float(hi) - float(lo)
    assert np.isfinite(predict_fit(head, u))


def test_an_old_fits_table_without_level_reads_as_90(fits_by_level, tmp_path):
    """A fits.parquet written before the column existed: 0.9, its stored intervals' level."""
    old = fits_by_level[0.9].drop(columns=["level"])
    old.to_parquet(tmp_path / "fits.parquet")
    back = pd.read_parquet(tmp_path / "fits.parquet")
    head = headlines(back).iloc[0]
    k = _step_with_interval(head)
    u = head["best_us"] + k / 100.0
    lo, hi = predict_interval(head, u)
    assert float(lo) == pytest.approx(head[f"ds_plus{k}_lo"], abs=1e-12)
    assert float(hi) == pytest.approx(head[f"ds_plus{k}_hi"], abs=1e-12)
    assert predict_interval(head, u, 0.9) == (lo, hi)
    for _, row in back.iterrows():   # candidate rows too
        predict_interval(row, u)
        predict_fit(row, u)
    assert "90% interval" in answer_text({**head.to_dict(), "trusted": False})


def test_answer_text_states_the_rows_level(fits_by_level):
    head = headlines(fits_by_level[0.5]).iloc[0].to_dict()
    for trusted in (True, False):
        text = answer_text({**head, "trusted": trusted})
        assert "90%" not in text, text
    assert "50% interval" in answer_text({**head, "trusted": False})
    # a row with a level that is no fraction: one clear error naming the column
    with pytest.raises(ValueError, match="level"):
        answer_text({**head, "level": 50.0})
    with pytest.raises(ValueError, match="level"):
        predict_interval({**head, "level": 50.0}, 0.9)


def test_the_report_names_the_rows_level(fits_by_level):
    from meta_study.report import _levels, _table_html, _verdict

    fits = fits_by_level[0.5]
    heads = headlines(fits)
    assert _levels(heads) == "50%"
    assert "90%" not in _table_html(fits)
    assert "90%" not in _verdict(heads.assign(trusted=False))
    assert _levels(headlines(fits_by_level[0.9].drop(columns=["level"]))) == "90%"


def test_payoff_grids_must_match_their_curves():
    """Slopes or values on another grid than the one named gave a number (or "never") silently:
    10 values read as U_GRID's first 10 points (US needed 1.8%), 3 slopes on a 2-point grid a point
    between them; an empty grid raised numpy's "argmax of an empty sequence"."""
    from meta_study.analysis.payoff import U_GRID, stop_paying_from_slopes, us_needed_from_values

    with pytest.raises(ValueError, match="10 value"):
        us_needed_from_values(np.linspace(0, 1, 10), 0.5)
    with pytest.raises(ValueError, match="2 US accuracies"):
        stop_paying_from_slopes(np.array([0.5, 0.05, 0.01]), 0.1, np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="U_GRID"):
        stop_paying_from_slopes(np.linspace(1, 0, 10), 0.1)
    assert np.isnan(stop_paying_from_slopes(np.zeros((1, 0)), 0.1, np.zeros(0))).all()
    # the right sizes still answer, a bad threshold still reads NaN whatever the shape
    assert stop_paying_from_slopes(np.linspace(1, 0, U_GRID.size), 0.1)[0] == pytest.approx(0.9999995, abs=1e-6)
    assert us_needed_from_values(U_GRID, 0.5)[0] == pytest.approx(0.5, abs=1e-3)
    assert np.isnan(stop_paying_from_slopes(np.array([[0.5, 0.3, 0.05]]), math.nan)).all()


def test_fits_frame_refuses_groups_and_selections_that_do_not_pair():
    """zip() dropped the groups past the shorter list: a table with fewer groups, silently."""
    from meta_study.analysis.fitting import fit_groups
    from meta_study.analysis.tables import fits_frame

    us, ds = _cloud(12)
    g = Group("a", "b", "p", None, us, ds)
    opts = FitOptions(selection=SelectionOptions(laws=("eq1",), frontiers=("vertices",)))
    sels = fit_groups([(us, ds)], opts)
    assert len(headlines(fits_frame([g], sels))) == 1
    with pytest.raises(ValueError, match="2 group"):
        fits_frame([g, g], sels)
