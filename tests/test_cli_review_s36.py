"""The CLI's failed commands leave no --out behind, not even the parents they made (session 36)."""

from __future__ import annotations

from conftest import committed_store, run_cli


def test_a_failed_refit_removes_the_parents_of_its_out_that_it_made(tmp_path):
    """`refit --out new3/sub --source nope.csv` removed `sub` and left `new3/`, which it had made."""
    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "new3" / "sub"),
                "--source", str(tmp_path / "nope.csv"), "--serial")
    assert r.returncode != 0
    assert not (tmp_path / "new3").exists()


def test_a_failed_analysis_command_removes_the_parents_of_its_out_that_it_made(tmp_path):
    """A refused analysis command (a task no row has) left the parents of a nested --out."""
    s = committed_store(tmp_path / "st", runs=12)
    kept = tmp_path / "kept"
    kept.mkdir()
    for out in (tmp_path / "new" / "sub", kept / "a" / "b"):
        r = run_cli("fit", s.uri, "--out", str(out), "--ds-task", "no-such-task")
        assert r.returncode == 2, r.stderr
    assert not (tmp_path / "new").exists()
    assert kept.is_dir() and not any(kept.iterdir())    # one that existed stays, emptied of what it made


def test_a_task_typed_with_a_zero_width_character_selects_the_stored_task(tmp_path):
    """Ingest drops zero-width characters from names; `--ds-task "a\\u200b"` (pasted from a web
    page) matched no stored row, a refusal naming a task that looks exactly like a stored one."""
    s = committed_store(tmp_path / "st", runs=12)
    ok = run_cli("fit", s.uri, "--out", str(tmp_path / "plain"), "--ds-task", "a")
    assert ok.returncode == 0, ok.stderr
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "zw"), "--ds-task", "a\u200b")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "zw" / "fits.parquet").exists()


def test_percent_text_in_a_column_declared_percent_is_read(tmp_path):
    """A spreadsheet export writes "85%": with `units: {ds_accuracy: percent}` declared, every row
    was quarantined ("'85%' is not a number") although the sign agrees with the unit. Without a
    unit nothing is guessed: the rows are quarantined with how to declare it."""
    from meta_study.store import Store

    csv = tmp_path / "r.csv"
    csv.write_text("run_id,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                   "r1,up,a,linear,0.81,85%\nr2,up,a,linear,0.82,90.5 %\n")
    (tmp_path / "m.yaml").write_text("units: {ds_accuracy: percent}\n")
    r = run_cli("ingest", str(csv), "--store", str(tmp_path / "st"), "--mapping", str(tmp_path / "m.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = Store(str(tmp_path / "st")).read(columns=["run_id", "ds_accuracy"]).to_pylist()
    assert sorted((x["run_id"], x["ds_accuracy"]) for x in rows) == [("r1", 0.85), ("r2", 0.905)]
    r = run_cli("ingest", str(csv), "--store", str(tmp_path / "st2"))
    assert "set its unit to percent" in r.stdout + r.stderr
    assert len(Store(str(tmp_path / "st2")).read(columns=["run_id"])) == 0


def test_fit_says_the_answers_are_from_the_models_below_the_hold_out(tmp_path):
    """`fit` on the default hold-out printed "+1 US pt" answers beyond the best *visible* model
    without a word that the top 20% of models were hidden from them."""
    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert "held out to check them (--holdout-quantile 1.0 answers from every model)" in r.stdout
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "all"), "--no-figures", "--holdout-quantile", "1.0")
    assert r.returncode == 0, r.stderr
    assert "held out" not in r.stdout


def test_the_report_and_the_terminal_give_one_sensitivity_number():
    """`meta-study sensitivity` printed the median over groups ("hull-curve: 22.9 pt at n=10")
    and the report the mean ("hull-curve (15.1 pt)") of the same table, ranking the frontiers
    differently."""
    import pandas as pd

    from meta_study.analysis.sensitivity import rank_frontiers, summarize_sensitivity
    from meta_study.cli import sensitivity_lines

    rows = []
    for g, err in enumerate((0.01, 0.02, 0.60)):            # one group's large miss: mean 21 pt, median 2 pt
        for n in (10, 20):
            rows.append({"us_task": "up", "ds_task": f"t{g}", "eval_protocol": "fewshot", "shots": 5, "n": n,
                         "trial": 0, "frontier": "vertices", "n_fit": n, "fit_err": 0.01,
                         "pred_err": err if n == 10 else 0.01, "status": "ok"})
    table = pd.DataFrame(rows).astype({"shots": "Int64"})
    rk = rank_frontiers(summarize_sensitivity(table))
    line = next(x for x in sensitivity_lines(table) if x.strip().startswith("vertices:"))
    assert f"{100 * float(rk.iloc[0]['pred_err_small_n']):.1f} pt at n=10" in line, (line, rk)
    assert "2.0 pt at n=10" in line


def test_the_report_says_the_share_of_gain_kept_not_a_discount_of_one(tmp_path):
    """The headline's predictor read "median of 25 law x frontier fits, discount 1.00": w = 1 keeps
    the whole predicted gain (no discount), and readers took it for a 100% discount. Since
    2026-12-06 the headline is the members' 0.4 quantile, undiscounted: the report names the
    quantile, and a row written before (the median, discounted) says the share kept."""
    import pandas as pd

    from meta_study.report import _table_html

    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures")
    assert r.returncode == 0, r.stderr
    fits = pd.read_parquet(tmp_path / "o" / "fits.parquet")
    html = _table_html(fits)
    w = fits.loc[fits["headline"].astype(bool), "discount"].dropna()
    assert len(w) and "discount 1.00" not in html and ", discount " not in html
    assert (w == 1.0).all() and "predicted gain kept" not in html
    assert "0.4 quantile of " in html and "law x frontier fits" in html
    old = fits.copy()        # a fits.parquet written before 2026-12-06
    old = old.drop(columns=["member_quantile"])
    old.loc[old["headline"].astype(bool), "discount"] = 0.37
    html = _table_html(old)
    assert "median of " in html and "37% of their predicted gain kept (w)" in html


def test_an_accuracy_option_typed_in_percent_suggests_the_fraction(tmp_path):
    """`--ds-target 80` said only "must be a DS accuracy (fraction) in (0, 1], got 80"."""
    s = committed_store(tmp_path / "st", runs=12)
    for flag in ("--ds-target", "--holdout-above"):
        r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures", flag, "80")
        assert r.returncode == 2 and "got 80; did you mean 0.8?" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--no-figures", "--ds-target", "180")
    assert r.returncode == 2 and "did you mean" not in r.stderr


def test_store_info_counts_runs_and_model_names_per_group(tmp_path):
    """`store info` headed distinct run ids "models" (1,556 on timm, whose runs name 1,266 models)."""
    from meta_study.store import Store

    csv = tmp_path / "r.csv"
    csv.write_text("run_id,model_name,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                   "r1,vit,up,a,linear,0.81,0.5\nr2,vit,up,a,linear,0.82,0.6\nr3,cnn,up,a,linear,0.83,0.7\n")
    assert run_cli("ingest", str(csv), "--store", str(tmp_path / "st")).returncode == 0
    g = Store(str(tmp_path / "st")).summary().groups
    assert g[["rows", "runs", "model_names"]].values.tolist() == [[3, 3, 2]]
    out = run_cli("store", "info", str(tmp_path / "st")).stdout
    head = next(x for x in out.splitlines() if x.startswith("us_task"))
    assert head.split() == ["us_task", "ds_task", "eval_protocol", "shots", "rows", "runs", "model_names"]


def test_too_few_points_names_the_law_and_what_it_needs():
    """"too_few_points: 2 point(s); the law has 3 parameters" was the reason of every group of a
    2-model smoke sweep, beside laws of 2 parameters: which law needed what went unsaid."""
    import numpy as np

    from meta_study.analysis.laws import fit_law_many

    one, two = [np.array([0.5])], [np.array([0.5, 0.6])]
    assert fit_law_many("power", one, [np.array([0.3])])[0].message == "1 point(s); power needs 2"
    assert fit_law_many("eq1", two, [np.array([0.3, 0.4])])[0].message == "2 point(s); eq1 needs 3"
    assert fit_law_many("eq1-bayes", two, [np.array([0.3, 0.4])])[0].message == "2 point(s); eq1-bayes needs 4"
