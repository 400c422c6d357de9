"""Review s36: the --out a failed command made, the explorer's left-out groups, --ds-target's text."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.outputs import removed_if_failed
from meta_study.errors import UserError


# --- removed_if_failed: one rule for the --out a failed command created ------------------------------

def _fail_after_making(out):
    out.mkdir(parents=True)
    raise UserError("no rows match the selection")


def test_a_failed_body_removes_the_out_it_made_and_the_parents_it_needed(tmp_path):
    out = tmp_path / "new" / "deeper" / "results"
    with pytest.raises(UserError), removed_if_failed(str(out)):
        _fail_after_making(out)
    assert list(tmp_path.iterdir()) == []    # "new" and "new/deeper" went too
    with pytest.raises(OSError), removed_if_failed(str(out)):
        (tmp_path / "new").mkdir()            # failed half-way: a parent made, not --out
        raise OSError("permission denied")
    assert list(tmp_path.iterdir()) == []


def test_empty_folders_the_body_made_inside_go_with_it(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(OSError), removed_if_failed(str(out)):
        (out / "figures" / "groups").mkdir(parents=True)
        raise OSError("disk full")
    assert not out.exists()


def test_a_directory_that_existed_or_holds_a_file_is_kept(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(UserError), removed_if_failed(str(old)):
        raise UserError("bad")
    assert old.is_dir()
    parent_made = tmp_path / "p" / "results"
    with pytest.raises(UserError), removed_if_failed(str(parent_made)):
        parent_made.mkdir(parents=True)
        (parent_made / "fits.parquet").write_bytes(b"x")
        raise UserError("bad")
    assert (parent_made / "fits.parquet").exists()


def test_success_and_exit_0_keep_it_a_non_zero_exit_removes_it(tmp_path):
    out = tmp_path / "a"
    with removed_if_failed(str(out)):
        out.mkdir()
    assert out.is_dir()
    out = tmp_path / "b"
    with pytest.raises(SystemExit), removed_if_failed(str(out)):
        out.mkdir()
        sys.exit(0)
    assert out.is_dir()
    out = tmp_path / "c"
    with pytest.raises(SystemExit), removed_if_failed(str(out)):
        out.mkdir()
        sys.exit(2)
    assert not out.exists()
    with removed_if_failed(None):   # no --out: nothing to do
        pass


def test_a_script_that_fails_leaves_no_parent_of_its_out(tmp_path, monkeypatch, capsys):
    """``analysis/*.py --out new/results`` that found no rows left ``new`` behind."""
    from meta_study.analysis import scripts

    out = tmp_path / "new" / "results"
    monkeypatch.setattr(sys, "argv", ["fig1_grid.py", "STORE", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        scripts.run(lambda: _fail_after_making(out))
    assert e.value.code == 2 and "no rows match" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the explorer names the groups it leaves out ----------------------------------------------------

def _groups(sizes):
    heads = pd.DataFrame({"us_task": "up", "ds_task": [f"tâche-{i}" for i in range(len(sizes))],
                          "eval_protocol": "fewshot", "shots": 5, "holdout_threshold": 0.8, "best_us": 0.8,
                          "horizon_us": np.nan})
    rng = np.random.default_rng(0)
    points = pd.concat([pd.DataFrame({"us_task": "up", "ds_task": f"tâche-{i}", "eval_protocol": "fewshot", "shots": 5,
                                      "run_id": [f"r{j}" for j in range(n)], "model_name": None,
                                      "us_accuracy": rng.uniform(0.3, 0.9, n), "ds_accuracy": rng.uniform(0.2, 0.8, n)})
                        for i, n in enumerate(sizes)], ignore_index=True)
    return heads, points


def test_a_group_over_the_page_limit_alone_is_said_not_dropped(monkeypatch):
    """One group over MAX_POINTS: the whole section vanished, without a word."""
    from meta_study import explorer

    monkeypatch.setattr(explorer, "MAX_POINTS", 20)
    page = explorer.explorer_html(*_groups([30]))
    assert "Explore a group" in page and "1 group is not embedded" in page
    assert "up → tâche-0 (fewshot, 5-shot) (30 points)" in page and "20 points" in page


def test_the_groups_left_out_are_named_with_their_counts(monkeypatch):
    from meta_study import explorer

    monkeypatch.setattr(explorer, "MAX_POINTS", 25)
    page = explorer.explorer_html(*_groups([10, 30, 10, 12] + [40] * 6))
    assert page.count("<option ") == 2     # 10 + 10 points; 12 more would pass 25
    note = page.split("<p class=note>")[1].split("</p>")[0]
    assert "8 more groups are not embedded" in note
    assert "tâche-1 (fewshot, 5-shot) (30 points); up → tâche-3 (fewshot, 5-shot) (12 points)" in note
    assert note.endswith("; and 3 more.</span>")


# --- --ds-target: a US need at 100% is said as one ---------------------------------------------------

TARGET_ROW = dict(trust_reason="back-test error 3 pt", best_us=0.85, flat=0.7, horizon_us=0.9, ds_target=0.9,
                  us_needed=math.nan, us_needed_lo=1 - 1e-7, us_needed_hi=math.inf)


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("lo", [1 - 1e-7, 1.0, math.inf])
def test_a_target_reached_only_at_100_percent_us_is_not_an_interval(trusted, lo):
    """The band's upper edge reaches the target at the grid's last step (or never): it read
    "needs US in the 90% interval [100.000%-never]" (or "[none]" for a band that never does)."""
    from meta_study.analysis.answers import answer_text

    text = answer_text({**TARGET_ROW, "trusted": trusted, "us_needed_lo": lo})
    assert "90.0% DS is not reached below 100% US, not even by the 90% interval's upper edge." in text, text
    assert "100.0" not in text and "never" not in text and "[none]" not in text


def test_a_need_in_the_limit_of_100_percent_is_not_a_us_accuracy():
    """"needs 100.000% US [99.0%-never]": the law reaches the target only in the limit."""
    from meta_study.analysis.answers import answer_text

    text = answer_text({**TARGET_ROW, "trusted": True, "us_needed": 1 - 1e-7, "us_needed_lo": 0.99})
    assert "90.0% DS is reached by the prediction only at 100% US, past the tested horizon (90% interval [99.0%-never])." in text, text
    text = answer_text({**TARGET_ROW, "trusted": True, "us_needed": 0.95, "us_needed_lo": 0.93, "us_needed_hi": 1 - 1e-7})
    assert "90.0% DS needs 95.0% US [93.0%-100%] (past the tested horizon)." in text, text


# --- the analysis/*.py scripts read task names as the commands do -----------------------------------

def test_a_script_finds_a_task_named_with_spaces_or_decomposed_accents(tmp_path):
    """``analysis/*.py --ds-task "a "`` (or a decomposed "é") read no rows; ``meta-study`` found the task."""
    from conftest import committed_store
    from meta_study.analysis import scripts

    store = committed_store(tmp_path / "store", runs=12, tasks=("a", "caf\u00e9"))
    for given, want in ((" a ", {"a"}), ("cafe\u0301", {"caf\u00e9"})):
        args = scripts.parser("doc").parse_args([str(tmp_path / "store"), "--out", "x", "--ds-task", given])
        assert set(scripts.rows(store, args)["ds_task"]) == want
        assert scripts.selection(args).ds_task == (next(iter(want)),)


@pytest.mark.parametrize("text", [",", " , ", ",,"])
def test_sizes_without_a_number_is_an_error_not_the_default_sizes(text):
    from meta_study.analysis import scripts

    with pytest.raises(UserError, match="--sizes must be comma-separated integers"):
        scripts.sizes(text)
    assert scripts.sizes(None) is None and scripts.sizes("10, 30") == (10, 30)


def test_out_without_a_value_is_said_by_the_scripts_own_parser(monkeypatch, capsys):
    """``fig1_grid.py STORE --out``: the --out pre-parser said "usage: fig1_grid.py [--out OUT]"."""
    from meta_study.analysis import scripts

    monkeypatch.setattr(sys, "argv", ["fig1_grid.py", "STORE", "--out"])
    with pytest.raises(SystemExit) as e:
        scripts.run(lambda: scripts.parser("Draw it.").parse_args())
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: fig1_grid.py [-h] --out DIR" in err and "[--out OUT]" not in err, err
    assert err.count("error:") == 1


# --- write_fits: parameters vs shots only where a line has several shot settings --------------------

def test_no_params_vs_shots_figure_when_each_protocol_has_one_shot_setting(tmp_path):
    """A DS task at fewshot 5-shot and linear 10-shot: two series of one dot each, no line."""
    from conftest import make_rows
    from meta_study.analysis.groups import groups_from_frame, with_test_sizes
    from meta_study.analysis.outputs import write_fits
    from meta_study.analysis.tables import fit_table
    from meta_study.validation import validate

    a = make_rows(25, ds_tasks=("a",), shots=(5,))
    rows = with_test_sizes(validate(pd.concat([a, a.assign(eval_protocol="linear", shots=10)],
                                              ignore_index=True)).table)
    df, panels = fit_table(groups_from_frame(rows))
    out = write_fits(df, panels, str(tmp_path), max_group_figures=0)
    assert out.figures and not any(os.path.basename(f).startswith("params_vs_shots") for f in out.figures)
