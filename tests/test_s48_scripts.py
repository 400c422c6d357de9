"""Review s48 of the analysis scripts, the refit's config and the demo's held-out check: a script's
refusal of --out names only its own flags; a library RefitConfig narrows the sensitivity's
frontiers with fit's, as `refit --frontiers` does; max_group_figures below 0 is refused; the
held-out check names the rows' interval level. No Ray."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

from meta_study.analysis import scripts
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.groups import Selection
from meta_study.analysis.results import AnalysisOptions, ResultsDir, _key
from meta_study.analysis.selection import SelectionOptions
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.defaults import SENSITIVITY_TRIALS
from meta_study.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _sensitivity_dir(path: Path, options: AnalysisOptions) -> Path:
    """A results directory holding a sensitivity part recorded with ``options`` (the table's
    bytes are never read: the refusal comes first)."""
    path.mkdir(parents=True)
    (path / "sensitivity.parquet").write_bytes(b"PAR1")
    part = {**_key("sensitivity", options, Selection()), "store_snapshot": "1:x", "code": "c", "figures": True}
    (path / "results.json").write_text(json.dumps({"parts": {"sensitivity": part}}))
    return path


def _fig3_options(**fit: object) -> AnalysisOptions:
    """As fig3_sensitivity.py builds them at its defaults, with ``fit``'s fitting options."""
    return AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=SENSITIVITY_TRIALS, seed=0,
                                                                      fit=FitOptions(**fit)))


# 1. a script's refusal named flags the script lacks (`--loss` to fig3_sensitivity.py)

def test_a_results_dir_refusal_names_only_the_flags_of_the_command_given(tmp_path):
    d = _sensitivity_dir(tmp_path / "D", _fig3_options(loss="huber"))
    mine = AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=SENSITIVITY_TRIALS, seed=0))
    with pytest.raises(UserError) as e:
        ResultsDir(d, command=("fig3_sensitivity.py", ("--out", "--trials"))).plan("sensitivity", mine, Selection(),
                                                                                  "1:x")
    assert str(e.value).endswith("fig3_sensitivity.py has no --loss option: give another --out"), e.value
    # a command that has the flag: the same options reuse it
    with pytest.raises(UserError) as e:
        ResultsDir(d, command=("x.py", ["--loss", "--out"])).plan("sensitivity", mine, Selection(), "1:x")
    assert str(e.value).endswith("give another --out, or the same options to reuse it"), e.value


def test_command_flags_are_the_scripts_own():
    p = scripts.parser("doc")
    p.add_argument("--trials", type=int)
    p.add_argument("--hidden", help=__import__("argparse").SUPPRESS)
    name, flags = scripts.command_flags(p)
    assert name == p.prog
    assert {"--out", "--ds-task", "--protocol", "--eval-protocol", "--trials", "-h", "--help"} <= flags
    assert "--hidden" not in flags and "--loss" not in flags


def _tiny_store(path: Path) -> str:
    import numpy as np

    from meta_study.store import Store
    from meta_study.validation import validate

    rng = np.random.default_rng(0)
    recs = [{"source": "sim", "run_id": f"r{i}", "us_task": "up", "us_accuracy": 0.5 + 0.03 * i, "ds_task": "near",
             "eval_protocol": "fewshot", "shots": 5, "ds_accuracy": 0.2 + 0.6 * (0.5 + 0.03 * i) + rng.normal(0, 0.01)}
            for i in range(8)]
    v = validate(pd.DataFrame(recs))
    Store(str(path)).commit(v.table)
    return str(path)


def test_fig3_sensitivity_py_is_not_told_to_give_a_loss_it_has_no_option_for(tmp_path, monkeypatch, capsys):
    """`sensitivity --loss huber --out D`, then `python analysis/fig3_sensitivity.py --out D` was told
    "give another --out, or the same options to reuse it": the script has no --loss."""
    store = _tiny_store(tmp_path / "st")
    d = _sensitivity_dir(tmp_path / "D", _fig3_options(loss="huber"))
    script = ROOT / "analysis" / "fig3_sensitivity.py"
    monkeypatch.setattr(sys, "argv", [str(script), store, "--out", str(d), "--serial"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(script), run_name="__main__")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "made with other options: --loss huber" in err, err
    assert err.endswith("fig3_sensitivity.py has no --loss option: give another --out"), err
    assert (d / "results.json").exists() and (d / "sensitivity.parquet").read_bytes() == b"PAR1"   # untouched


def test_scripts_analyse_passes_the_parsers_flags(tmp_path):
    """A script's --trials differs: it has that flag, so the same options are the advice."""
    store = _tiny_store(tmp_path / "st")
    d = _sensitivity_dir(tmp_path / "D", AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=3, seed=0)))
    p = scripts.parser("doc")
    p.add_argument("--trials", type=int, default=SENSITIVITY_TRIALS)
    a = p.parse_args([store, "--out", str(d)])
    opts = AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=SENSITIVITY_TRIALS, seed=0))
    with pytest.raises(UserError) as e:
        scripts.analyse(a, opts, parser=p)
    assert str(e.value).endswith("give another --out, or the same options to reuse it"), e.value
    p2 = scripts.parser("doc")
    with pytest.raises(UserError) as e:
        scripts.analyse(p2.parse_args([store, "--out", str(d)]), opts, parser=p2)
    assert str(e.value).endswith(f"{p2.prog} has no --trials option: give another --out"), e.value


# 2. a library RefitConfig kept the sensitivity on every frontier when fit's were narrowed

def test_refit_config_narrows_the_sensitivity_frontiers_with_fits_as_the_cli_does():
    from meta_study.refit import RefitConfig

    fit = FitOptions(selection=SelectionOptions(frontiers=("vertices",)))
    cfg = RefitConfig(store="st", out="o", fit=fit)
    assert cfg.sensitivity.frontiers == ("vertices",)
    # as `meta-study refit --frontiers vertices` builds it: the same sensitivity tables, logged the same
    from meta_study.refit import option_params

    cli = RefitConfig(store="st", out="o", fit=fit, sensitivity=SensitivityOptions(fit=fit, frontiers=("vertices",)))
    assert AnalysisOptions(sensitivity=cfg.sensitivity).of("sensitivity") == \
        AnalysisOptions(sensitivity=cli.sensitivity).of("sensitivity")
    assert option_params(cfg)["sensitivity_frontiers"] == option_params(cli)["sensitivity_frontiers"] == "vertices"
    # a sensitivity given its own frontiers keeps them
    own = RefitConfig(store="st", out="o", fit=fit, sensitivity=SensitivityOptions(frontiers=("bins", "all")))
    assert own.sensitivity.frontiers == ("bins", "all")
    # the defaults unchanged
    assert RefitConfig(store="st", out="o").sensitivity.frontiers == SensitivityOptions().frontiers


# 3. max_group_figures=-1 drew every figure but the last (a slice [:-1])

@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_refit_config_refuses_a_max_group_figures_that_is_no_count(bad):
    from meta_study.refit import RefitConfig

    with pytest.raises(ValueError, match="max_group_figures must be an integer of 0 or more"):
        RefitConfig(store="st", out="o", max_group_figures=bad)
    assert RefitConfig(store="st", out="o", max_group_figures=0).max_group_figures == 0


# 4. the held-out check said "90% interval" of rows made at another level

def test_the_held_out_check_names_the_rows_interval_level(tmp_path):
    from test_demo import _synthetic_results

    from meta_study.demo import held_out_check

    results, fits = _synthetic_results(tmp_path / "r")
    fits = fits.copy()
    heads = fits["headline"].astype(bool)
    fits.loc[heads, "trusted"] = True
    fits["level"] = 0.5
    fits.to_parquet(results / "fits.parquet")
    out = held_out_check(results)
    checked = [line for line in out[:-1] if "hidden" in line]
    assert checked, out
    for line in checked:
        assert "90%" not in line and ("inside the 50% interval" in line or "no 50% interval" in line), line
