"""Review s43: analysis groups, the payoff calculator's answer text (``answers``), rows read back
from ``fits.csv``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from meta_study.analysis.answers import answer, answer_text, flags


def _row(**kw):
    row = {"trusted": False, "trust_reason": "back-test error 5.0 pt > tolerance 3 pt",
           "best_us": 0.62, "flat": 0.30, "horizon_us": 0.715, "warnings": "",
           **{f"ds_plus{k}{s}": math.nan for k in (1, 3, 5) for s in ("", "_lo", "_hi")},
           "ds_target": math.nan}
    row.update(kw)
    return row


# --- --ds-target without an interval: no "[none]" -----------------------------------------------

def test_a_target_of_a_group_without_a_usable_fit_states_no_us():
    """It read "50.0% DS needs US in the 90% interval [none]." for a group with no fit at all."""
    text = answer_text(_row(trust_reason="no usable fit (too_few_points: 1 point(s))", best_us=math.nan,
                            flat=math.nan, horizon_us=math.nan, ds_target=0.5))
    assert text == ("not trusted (no usable fit (too_few_points: 1 point(s))). "
                    "50.0% DS: no US accuracy is stated (no usable fit)."), text


def test_a_target_of_a_group_without_a_back_test_says_why_there_is_no_interval():
    """The steps said "no 90% interval (no back-test to calibrate one)", the calculator beside them
    "90.0% DS needs US in the 90% interval [none]"."""
    text = answer_text(_row(trust_reason="no back-test (needs 6 or more visible models, 3 above a cut)",
                            horizon_us=math.nan, ds_target=0.9, us_needed=0.77))
    assert "[none]" not in text and "needs" not in text.split("). ", 1)[1], text
    assert text.endswith("90.0% DS: no US accuracy is stated (no 90% interval: no back-test to calibrate one)."), text
    # from a real fit: six models on a smooth curve, too few for a back-test
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import Group
    from meta_study.analysis.selection import SelectionOptions
    from meta_study.analysis.tables import fit_table, headlines

    u = np.linspace(0.5, 0.8, 6)
    df, _ = fit_table([Group("u", "d", "fewshot", None, u, 1 - 0.9 * (1 - u) ** 1.5)],
                      FitOptions(selection=SelectionOptions(ds_target=0.95)))
    text = answer_text(headlines(df).to_dict("records")[0])
    assert "[none]" not in text and "95.0% DS: no US accuracy is stated (no 90% interval" in text, text


def test_an_untrusted_prediction_at_the_horizon_without_an_interval_says_why():
    """"at the tested horizon (99.94% US): 90% interval [none]" where the back-tests hit exactly."""
    text = answer_text(_row(best_us=0.995, flat=0.93, horizon_us=0.99936, predict_us=0.99936, predict_ds=0.96))
    assert "[none]" not in text, text
    assert ("at the tested horizon (99.94% US): no 90% interval (the back-tests hit exactly, "
            "no spread to calibrate one)") in text, text


def test_an_untrusted_target_interval_past_the_tested_horizon_says_so():
    """The steps' intervals past the tested horizon say so; the calculator's did not ("needs US in
    the 90% interval [80.3%-never]" with the back-tests reaching 71.5% US)."""
    past = answer_text(_row(ds_target=0.5, us_needed=math.nan, us_needed_lo=0.803, us_needed_hi=math.inf))
    assert "50.0% DS needs US in the 90% interval [80.3%-never] (past the tested horizon)." in past, past
    within = answer_text(_row(ds_target=0.5, us_needed=0.7, us_needed_lo=0.65, us_needed_hi=0.9))
    assert "50.0% DS needs US in the 90% interval [65.0%-90.0%]." in within, within


# --- rows read back from fits.csv: NaN and NA cells -----------------------------------------------

def test_missing_warnings_are_no_flag_and_na_cells_do_not_raise():
    """``pd.read_csv("fits.csv")`` has NaN where the table had no warnings: flags read
    [("note", "nan")]; after ``convert_dtypes`` the cell is NA and ``answer`` raised "boolean value
    of NA is ambiguous"."""
    assert flags(math.nan) == [] and flags(None) == [] and flags(pd.NA) == []
    row = _row(trusted=True, trust_reason="back-test ok", warnings=math.nan)
    assert answer(row).flags == ()
    na = answer(_row(trusted=pd.NA, trust_reason=pd.NA, message="no usable fit (x)", warnings=pd.NA,
                     stop_paying_supported=pd.NA))
    assert not na.trusted and na.reason == "no usable fit (x)" and na.flags == ()
    assert answer(_row(trust_reason=math.nan, message=math.nan)).reason == "no usable fit"


def test_answers_from_fits_csv_are_the_answers_from_fits_parquet(tmp_path):
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.groups import Group
    from meta_study.analysis.tables import fit_table, headlines

    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 40)
    ds = 1 - (0.8 * (1 - us) ** 1.5 + 0.1) - rng.uniform(0, 0.01, 40)
    df, _ = fit_table([Group("up", "d", "fewshot", 5, us, ds)], FitOptions(holdout_quantile=1.0))
    df.loc[df["headline"], "warnings"] = ""        # a group without warnings
    df.to_csv(tmp_path / "fits.csv", index=False)
    want = [answer(r) for r in headlines(df).to_dict("records")]
    back = pd.read_csv(tmp_path / "fits.csv")
    assert [answer(r) for r in headlines(back).to_dict("records")] == want
    assert [answer(r) for r in headlines(back.convert_dtypes()).to_dict("records")] == want


# --- groups ---------------------------------------------------------------------------------------

def _frame(shots_per_task):
    rng = np.random.default_rng(0)
    rows = [dict(us_task="up", ds_task=ds, eval_protocol="fewshot", shots=shots, run_id=f"r{i}",
                 us_accuracy=rng.uniform(), ds_accuracy=rng.uniform())
            for ds, shots_l in shots_per_task for shots in shots_l for i in range(3)]
    df = pd.DataFrame(rows)
    df["shots"] = df["shots"].astype(float)
    return df


def test_the_groups_order_does_not_depend_on_the_rows_order():
    """Null and numbered shots under one (us_task, ds_task, protocol): pandas could not sort the keys
    and kept the shots in the rows' order (5, None, 1, 10 from one store layout), and with it the
    order of fits.csv and which groups got the first --max-group-figures figures."""
    from meta_study.analysis.groups import groups_from_frame

    df = _frame([("x", [10, None, 5, 1]), ("y", [25, 1])])
    orders = {tuple(g.key for g in groups_from_frame(df.sample(frac=1, random_state=s))) for s in range(8)}
    assert orders == {(("up", "x", "fewshot", 1), ("up", "x", "fewshot", 5), ("up", "x", "fewshot", 10),
                       ("up", "x", "fewshot", None), ("up", "y", "fewshot", 1), ("up", "y", "fewshot", 25))}


def test_a_layer_asked_of_rows_without_layers_is_no_group():
    """Rows without a ``representation_layer`` column are all at the pre-logits layer: asked for
    layer 3, they were analysed as layer 3's."""
    from meta_study.analysis.groups import groups_from_frame

    df = _frame([("x", [5])])
    assert groups_from_frame(df, layer=3) == []
    assert [g.key for g in groups_from_frame(df)] == [("up", "x", "fewshot", 5)]


# --- analysis/*.py: "no rows match the selection" says what the store has, as the commands do ------

def test_a_script_says_why_nothing_matched_as_the_commands_do(tmp_path, monkeypatch):
    """``fig1_grid.py`` on a layer-wise sweep's store (every row a probe of layer 3) and with one
    mistyped --ds-task said the bare "no rows match the selection", where ``meta-study fit`` names
    the layers, or the tasks the store has."""
    from conftest import make_rows
    from meta_study.analysis import scripts
    from meta_study.analysis.results import AnalysisOptions
    from meta_study.errors import UserError
    from meta_study.store import Store
    from meta_study.validation import validate

    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(12).assign(representation_layer=3)).table)
    monkeypatch.chdir(tmp_path)
    for extra, want in (([], "every row is a probe of an intermediate layer (3)"),
                        (["--ds-task", "nope"], ": --ds-task nope is not in the store (it has a, b)")):
        args = scripts.parser("doc").parse_args([s.uri, "--out", str(tmp_path / "o"), *extra])
        try:
            scripts.analyse(args, AnalysisOptions(), figures=False)
        except UserError as e:
            assert str(e).startswith(f"{s.uri}: no rows match the selection") and want in str(e), str(e)
        else:
            raise AssertionError("no error")


def test_a_target_just_above_the_best_ds_seen_is_not_printed_as_it():
    """"best DS seen: 30.0%" beside "30.0% DS needs 65.0% US" (a best model at 29.996%): the
    target and the best DS seen get the digits that tell them apart; a float's last bit is no gap."""
    row = _row(trusted=True, trust_reason="back-test ok", flat=0.29996, ds_target=0.3, us_needed=0.65,
               us_needed_lo=0.63, us_needed_hi=0.7)
    text = answer_text(row)
    assert "best DS seen: 30.0%" in text, text
    assert "30.000% DS (above the best DS seen, 29.996%) needs 65.0% US [63.0%-70.0%]." in text, text
    same = answer_text({**row, "flat": 0.29999999999999993})
    assert "30.0% DS is reached already (best DS seen: 30.0%)." in same, same
    apart = answer_text({**row, "flat": 0.29})
    assert "30.0% DS needs 65.0% US [63.0%-70.0%]." in apart and "above the best" not in apart, apart


# --- analysis/*.py --out as the commands take it ----------------------------------------------------

def test_a_script_takes_out_as_the_commands_do(tmp_path, monkeypatch, capsys):
    """``--out=~/res`` (no shell expands ``~`` after ``=``) made ./~/res and failed writing ~/res
    (exit 1); ``--out s3://b/x`` made ./s3: and ended in pyarrow's traceback; ``--out ""`` said
    "cannot write there". The commands expand the one and refuse the others in one line."""
    import sys

    import pytest

    from meta_study.analysis import scripts

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = scripts.parser("doc").parse_args(["STORE", "--out=~/res"])
    assert args.out == str(tmp_path / "home" / "res")
    monkeypatch.setattr(sys, "argv", ["fig1_grid.py", "STORE", "--out=~/res"])
    assert scripts._out_argument() == str(tmp_path / "home" / "res")    # what a failed run removes
    for given, want in (("s3://b/x", "s3://b/x: outputs go to a local directory, not a URI"),
                        ("", "'': an empty path; give a directory"), (" ", "' ': an empty path")):
        with pytest.raises(SystemExit) as e:
            scripts.parser("doc").parse_args(["STORE", f"--out={given}"])
        assert e.value.code == 2 and want in capsys.readouterr().err
        monkeypatch.setattr(sys, "argv", ["fig1_grid.py", "STORE", f"--out={given}"])
        assert scripts._out_argument() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_task_not_shown_to_track_us_gets_no_us_needed_warning() -> None:
    """A no-trend group's answer states no US accuracy for a DS target, and its warnings said
    "extrapolation: 30% DS needs 95.2% US, past the tested horizon (78.8% US)" beside it (the
    shipped Pythia table's elementary_mathematics): one line said there is no such number, the
    other gave it."""
    from pathlib import Path

    import pandas as pd

    from meta_study.analysis.fitting import FitOptions, fit_groups
    from meta_study.analysis.selection import SelectionOptions

    df = pd.read_csv(Path(__file__).resolve().parents[1] / "examples" / "data" / "pythia" / "us_ds.csv")
    g = df[df["ds_task"] == "hendrycksTest-elementary_mathematics"]
    assert len(g) >= 10
    sel = fit_groups([(g["us_accuracy"].to_numpy(float), g["ds_accuracy"].to_numpy(float))],
                     FitOptions(holdout_quantile=1.0, selection=SelectionOptions(ds_target=0.30)),
                     test_sizes=[g["ds_n"].to_numpy(float)])[0]
    assert any(w.startswith("no_trend:") for w in sel.warnings), sel.warnings
    assert not any("DS needs" in w or "is reached by the prediction only" in w for w in sel.warnings), sel.warnings
