"""Review s45 of the per-group answers, the results directory and the analysis scripts' plumbing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis import scripts
from meta_study.analysis.results import AnalysisOptions
from meta_study.store import Store
from meta_study.validation import validate


def _store(path, n_runs: int = 12) -> str:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n_runs):
        us = 0.5 + 0.03 * i + rng.normal(0, 0.005)
        for ds in ("near", "far"):
            recs.append({"source": "sim", "run_id": f"r{i}", "us_task": "up", "us_accuracy": us, "ds_task": ds,
                         "eval_protocol": "fewshot", "shots": 5,
                         "ds_accuracy": 0.2 + 0.6 * us + rng.normal(0, 0.01)})
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(str(path)).commit(v.table)
    return str(path)


def _args(store: str, out) -> object:
    return scripts.parser(__doc__).parse_args([store, "--out", str(out)])


# 1. a script reused a fits part drawn with fewer per-group figures than it was asked for (the CLI
#    fits again): `fig1_grid.py --max-group-figures 1`, then `--max-group-figures 2` drew one figure

@pytest.mark.slow(40)
def test_a_script_asking_for_more_group_figures_draws_them(tmp_path):
    store = _store(tmp_path / "st")
    out = tmp_path / "D"
    scripts.analyse(_args(store, out), AnalysisOptions(), max_group_figures=1)
    assert len(list((out / "figures" / "groups").glob("*.png"))) == 1
    analysis, _ = scripts.analyse(_args(store, out), AnalysisOptions(), max_group_figures=2)
    assert "fits" not in analysis.reused
    assert len(list((out / "figures" / "groups").glob("*.png"))) == 2


# 2. fig6_layerwise.py / head_wd_d1_d4.py (scripts.rows) said the bare "no rows match the selection"
#    of a mistyped --ds-task, where the commands and the other scripts name what the store has

def test_script_rows_say_what_the_store_has_when_nothing_matches(tmp_path):
    from meta_study.errors import UserError
    from meta_study.store import open_store

    store = _store(tmp_path / "st", n_runs=3)
    args = scripts.parser("doc").parse_args([store, "--out", str(tmp_path / "o"), "--ds-task", "nope"])
    with pytest.raises(UserError) as e:
        scripts.rows(open_store(store), args)
    assert str(e.value) == f"{store}: no rows match the selection: --ds-task nope is not in the store (it has far, near)"


# 3. the fits grid of more than GRID_MAX groups said "each group: its own figure" where only the
#    first --max-group-figures groups have one

def test_the_grid_title_says_which_groups_have_a_figure_of_their_own(tmp_path, monkeypatch):
    from meta_study.analysis import figures as fig
    from meta_study.analysis.outputs import GRID_MAX, write_fits

    titles: list[str] = []
    monkeypatch.setattr(fig, "plot_fit_grid", lambda panels, stem, footer=None, title="": titles.append(title) or [])
    monkeypatch.setattr(fig, "plot_group", lambda panel, stem, footer=None: [])
    n = GRID_MAX + 5
    df = pd.DataFrame({"us_task": "up", "ds_task": [f"t{i}" for i in range(n)], "eval_protocol": "fewshot",
                       "shots": 5, "law": "eq1"})
    panels = [{"slug": f"t{i}", "title": f"t{i}"} for i in range(n)]
    for max_figs, want in ((60, "each group: its own figure, and fits.csv"),
                           (10, "the first 10: a figure of their own; every group: fits.csv"),
                           (0, "every group: fits.csv")):
        write_fits(df, panels, str(tmp_path / f"o{max_figs}"), max_group_figures=max_figs)
        assert titles[-1].endswith(f"(the first {GRID_MAX} of {n} groups; {want})"), titles[-1]


# 4. a trusted prediction that never reaches a --ds-target (or only in the limit of 100% US) is a
#    statement about the curve up to 100% US, past the tested horizon: it read as a finding

def test_a_target_never_reached_says_it_is_past_the_tested_horizon():
    import math

    from meta_study.analysis.answers import answer_text

    row = {"trusted": True, "trust_reason": "back-test error 1.0 pt <= tolerance 3 pt over 4 cuts",
           "best_us": 0.80, "flat": 0.70, "horizon_us": 0.85, "warnings": "",
           "ds_plus1": 0.71, "ds_plus1_lo": 0.69, "ds_plus1_hi": 0.73, "slope_plus1": 0.5,
           "ds_target": 0.95, "us_needed": math.nan, "us_needed_lo": 0.97, "us_needed_hi": math.inf}
    text = answer_text(row)
    assert ("95.0% DS is not reached by the prediction up to 100% US, past the tested horizon "
            "(90% interval [97.0%-never]).") in text, text
    text = answer_text({**row, "us_needed": 1 - 1e-7})
    assert ("95.0% DS is reached by the prediction only at 100% US, past the tested horizon "
            "(90% interval [97.0%-never]).") in text, text
    # a horizon tested up to 100% US: nothing lies past it
    text = answer_text({**row, "horizon_us": 1.0})
    assert "95.0% DS is not reached by the prediction up to 100% US (90% interval [97.0%-never])." in text, text
