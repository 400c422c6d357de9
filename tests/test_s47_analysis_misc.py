"""Review s47: correlation tables, the calculator, the controlled-experiment outputs and the
analysis/*.py scripts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO


# --- tables_f1_f2.py: the parameters-vs-shots figure only where a line has several settings ------

def test_tables_f1_f2_draws_no_figure_of_one_setting_per_protocol(tmp_path):
    # few-shot 5-shot beside linear 10-shot of each task: every line of F.4/F.5 (one per US task,
    # protocol and DS task) has one point. fig1_grid.py drew nothing; tables_f1_f2.py, counting
    # the settings per task alone, drew panels of lone points
    from meta_study.store import Store
    from meta_study.validation import validate

    rng = np.random.default_rng(0)
    recs = []
    for i in range(14):
        us = 0.4 + 0.04 * i
        for ds in ("a", "b"):
            for proto, shots in (("fewshot", 5), ("linear", 10)):
                recs.append({"source": "s", "run_id": f"r{i}", "us_task": "up", "us_accuracy": us, "ds_task": ds,
                             "eval_protocol": proto, "shots": shots,
                             "ds_accuracy": 0.2 + 0.5 * us + rng.normal(0, 0.01)})
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    store = str(tmp_path / "store")
    Store(store).commit(v.table)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "analysis" / "tables_f1_f2.py"), store, "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "no figure: no few-shot group has several shot settings" in r.stdout, r.stdout
    assert not (out / "figures" / "params_vs_shots.png").exists()


# --- payoff: a sample without a value beside the crossing ----------------------------------------

def test_stop_paying_and_us_needed_past_a_sample_without_a_value():
    from meta_study.analysis.payoff import U_GRID, stop_paying_from_slopes, us_needed_from_values

    grid = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    # pays at 60%, no slope at 70%, below 0.1 from 80% on: it stops paying by 70%, not "never"
    sp = stop_paying_from_slopes(np.array([[0.5, 0.3, np.nan, 0.05, 0.02]]), 0.1, grid)[0]
    assert sp == pytest.approx(0.7)
    # a curve without values at its first samples reaches the target at the first one that has it
    v = np.linspace(0.0, 1.0, U_GRID.size)
    v[:10] = np.nan
    assert us_needed_from_values(v[None], 0.001)[0] == pytest.approx(U_GRID[10])
    # unchanged where every sample has a value
    assert stop_paying_from_slopes(np.array([[0.5, 0.3, 0.2, 0.05, 0.02]]), 0.1, grid)[0] == pytest.approx(0.8 - 0.1 / 3)


# --- analysis/*.py: an option out of range in the commands' words --------------------------------

def test_script_option_error_is_worded_as_the_commands_word_it(capsys, monkeypatch):
    from meta_study.analysis import scripts
    from meta_study.analysis.fitting import FitOptions
    from meta_study.errors import OptionError, option_message

    monkeypatch.setattr(sys, "argv", ["fig1_grid.py"])
    with pytest.raises(SystemExit) as e:
        scripts._run(lambda: FitOptions(holdout_quantile=80))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    with pytest.raises(OptionError) as o:
        FitOptions(holdout_quantile=80)
    assert err == f"fig1_grid.py: error: {option_message(o.value.option, o.value.value, o.value.allowed)}"
    assert "did you mean 0.8?" in err, err


# --- F.20 / F.21: one slice at a time ------------------------------------------------------------

def _slice(shots, layer=None, accs=(0.3, 0.2, 0.1)):
    return pd.DataFrame({"source": "s", "run_id": ["r0", "r1", "r2"], "us_task": "up", "eval_protocol": "fewshot",
                         "shots": shots, "representation_layer": layer, "ds_task": "a",
                         "us_accuracy": [0.1, 0.2, 0.3], "ds_accuracy": list(accs)})


def test_f20_f21_refuse_rows_of_several_slices():
    # 1-shot falling and 5-shot rising with US: F.21 of both at once said rho = 0 over "6 models",
    # and F.20 averaged each model's two accuracies into one, without a word
    from meta_study.analysis.correlations import correlation_tables, ds_task_correlations, us_ds_correlations

    rows = pd.concat([_slice(1), _slice(5, accs=(0.1, 0.2, 0.3))], ignore_index=True)
    with pytest.raises(ValueError, match="2 values of shots"):
        us_ds_correlations(rows)
    with pytest.raises(ValueError, match="correlation_tables"):
        ds_task_correlations(rows)
    f21 = correlation_tables(rows)["f21_us_ds_spearman"].set_index("shots")     # every slice apart
    assert f21.loc[1, "spearman"] == pytest.approx(-1.0) and f21.loc[5, "spearman"] == pytest.approx(1.0)
    assert us_ds_correlations(_slice(1))["spearman"].tolist() == pytest.approx([-1.0])   # one slice: as before
    # block probes beside the pre-logits rows: other accuracies of the same models
    layers = pd.concat([_slice(1), _slice(1, layer=3, accs=(0.1, 0.2, 0.3))], ignore_index=True)
    with pytest.raises(ValueError, match="representation_layer"):
        correlation_tables(layers)


# --- head_wd_d1_d4: figures of an earlier run's data go --------------------------------------------

def _head_wd_rows(probes: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    recs = []
    for hw_i, hw in enumerate((0.0, 1e-2, 1e-1)):
        for seed in range(2):
            base = {"source": "sim", "run_id": f"hw{hw_i}-s{seed}", "us_task": "up", "us_accuracy": 0.6 - hw,
                    "ds_task": "near", "eval_protocol": "fewshot", "shots": 10, "head_wd": hw, "seed": seed,
                    "representation_layer": None, "ds_accuracy": 0.5 + rng.normal(0, 0.01)}
            recs.append(base)
            if probes:
                recs += [{**base, "representation_layer": layer, "ds_accuracy": 0.2 + 0.1 * layer} for layer in range(3)]
    return pd.DataFrame(recs)


def test_head_wd_outputs_remove_the_figures_this_run_did_not_draw(tmp_path):
    from meta_study.analysis.controlled import write_all

    first = write_all(_head_wd_rows(probes=True), str(tmp_path))
    fig6 = tmp_path / "figures" / "fig6_layerwise.png"
    assert str(fig6) in first["figures"] and fig6.exists()
    again = write_all(_head_wd_rows(probes=False), str(tmp_path))   # e.g. --shots 1: no block probes
    assert set(pd.read_parquet(tmp_path / "fig6_layerwise.parquet")["layer"]) == {-1}
    assert not fig6.exists() and not fig6.with_suffix(".svg").exists()
    assert (tmp_path / "figures" / "d1_d3_head_wd.png").exists()                 # drawn again: kept
    assert all(p.endswith((".parquet", ".csv", ".png", ".svg")) for p in again["tables"] + again["figures"])


# --- payoff: a percent where a fraction is meant ---------------------------------------------------

def test_calculator_refuses_a_percent_for_a_fraction():
    # us_needed(fit, 80) read "never" (NaN) and slope(fit, 85) the slope at 100% US (0, "no gain"),
    # both silently, where predict_fit refuses 85
    from meta_study.analysis.laws import LawFit
    from meta_study.analysis.payoff import slope, us_needed, us_needed_many

    fit = LawFit(law="eq1", params={"k": 1.0, "alpha": 2.0, "e_ir": 0.1}, sse=0.0, n_points=4, status="ok")
    with pytest.raises(ValueError, match="give fractions: 0.85"):
        slope(fit, 85)
    with pytest.raises(ValueError, match="give fractions: 0.8"):
        us_needed(fit, 80)
    with pytest.raises(ValueError, match="target"):
        us_needed_many("eq1", [fit.params], 80)
    assert slope(fit, 0.85) == pytest.approx(0.3) and us_needed(fit, 0.8) == pytest.approx(1 - 0.1 ** 0.5, abs=1e-4)
    assert np.isnan(slope(fit, float("nan"))) and np.isnan(us_needed(fit, float("nan")))
