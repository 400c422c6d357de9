"""Review s43 of meta_study/explorer.py, meta_study/analysis/correlations.py and
meta_study/analysis/controlled.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_f21_p_value_of_a_few_models_is_exact():
    """scipy's t approximation gave p = 0 for 3 models in perfect order (exact two-sided: 1/3) and
    0.2 for 4 models at rho 0.8 (exact: 1/3): a table of "significant" correlations of 3 models."""
    from meta_study.analysis.correlations import correlation_tables, us_ds_correlations

    three = pd.DataFrame({"ds_task": "a", "us_accuracy": [0.1, 0.2, 0.3], "ds_accuracy": [0.3, 0.4, 0.5]})
    t = us_ds_correlations(three).iloc[0]
    assert t["spearman"] == pytest.approx(1.0) and t["p_value"] == pytest.approx(1 / 3)
    four = pd.DataFrame({"ds_task": "a", "us_accuracy": [0.1, 0.2, 0.3, 0.4], "ds_accuracy": [0.3, 0.4, 0.6, 0.5]})
    assert us_ds_correlations(four).iloc[0]["p_value"] == pytest.approx(8 / 24)
    # exact by permutation up to 8 models (ties as average ranks): every pairing of 6 models counted
    import itertools

    from scipy import stats

    rng = np.random.default_rng(1)
    x, y = rng.uniform(size=6), rng.uniform(size=6)
    y[0] = y[1]
    obs = abs(stats.spearmanr(x, y).statistic)
    exact = np.mean([abs(stats.spearmanr(x, y[list(p)]).statistic) >= obs - 1e-12
                     for p in itertools.permutations(range(6))])
    six = pd.DataFrame({"ds_task": "a", "us_accuracy": x, "ds_accuracy": y})
    assert us_ds_correlations(six).iloc[0]["p_value"] == pytest.approx(exact)
    # above 8 models, scipy's own
    x, y = rng.uniform(size=20), rng.uniform(size=20)
    many = pd.DataFrame({"ds_task": "a", "us_accuracy": x, "ds_accuracy": y})
    assert us_ds_correlations(many).iloc[0]["p_value"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    # the table the command writes says the same
    rows = three.assign(source="s", run_id=["r0", "r1", "r2"], us_task="u", eval_protocol="fewshot", shots=5)
    f21 = correlation_tables(rows)["f21_us_ds_spearman"]
    assert f21["p_value"].tolist() == pytest.approx([1 / 3])


def test_point_names_name_each_run_once(monkeypatch):
    """A run is a point of every group it was evaluated in; each point was named anew, with a regex
    compiled per point once the store had more model names than re's cache holds: 5 s for 48,000
    points of 2,000 models (0.3 s now), 43 s for 300,000 of 20,000."""
    from meta_study import explorer

    calls = []
    real = explorer.point_name
    monkeypatch.setattr(explorer, "point_name", lambda *a: calls.append(a) or real(*a))
    runs = [f"{i}{i:031x}" for i in range(10)]
    points = pd.DataFrame({"run_id": runs * 100, "model_name": [f"vit_{i}" for i in range(10)] * 100})
    names = explorer.point_names(points)
    assert len(calls) == 10 and names[:10] == [f"vit_{i} · {r[:8]}" for i, r in enumerate(runs)]
    assert names[10:20] == names[:10]


@pytest.mark.parametrize("run, model, holds", [
    ("vit-b16-seed1", "vit-b16", True), ("3fb2c9d0", "b2", False), ("x_vit_s3", "vit", True),
    ("vit", "vit", True), ("vitb", "vit", False), ("avit", "vit", False), ("é-vit-é", "vit", True),
    ("évit", "vit", False), ("vit٣", "vit", False), ("b2b2-b2", "b2", True), ("b2b2", "b2", False)])
def test_a_run_id_holds_a_model_name_between_separators(run, model, holds):
    """What the regex said (a separator is any character but a letter or digit), without one."""
    from meta_study.explorer import _holds_name

    assert _holds_name(run, model) is holds


def _heads(trusted: list) -> pd.DataFrame:
    n = len(trusted)
    return pd.DataFrame({"us_task": ["up"] * n, "ds_task": [f"t{i}" for i in range(n)], "eval_protocol": ["fewshot"] * n,
                         "shots": [5] * n, "law": ["power"] * n, "frontier": ["vertices"] * n,
                         "holdout_threshold": [0.8] * n, "status": ["ok"] * n, "k": [0.9] * n, "alpha": [1.2] * n,
                         "e_ir": [np.nan] * n, "e_us_star": [np.nan] * n, "best_us": [0.8] * n,
                         "horizon_us": [0.86] * n, "trusted": trusted})


def _points(n_groups: int) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"us_task": "up", "ds_task": f"t{i}", "eval_protocol": "fewshot", "shots": 5,
                                    "run_id": [f"m{j}" for j in range(5)], "us_accuracy": np.linspace(0.4, 0.9, 5),
                                    "ds_accuracy": np.linspace(0.3, 0.7, 5)}) for i in range(n_groups)],
                     ignore_index=True)


def test_the_explorer_says_when_its_prediction_is_not_trusted():
    """The explorer drew an untrusted group's prediction as "headline prediction", where its answer
    states no point prediction and the figure and the hover view label the line "(not trusted)"."""
    from meta_study.explorer import explorer_data, explorer_html

    data, _ = explorer_data(_heads([True, False, None]), _points(3))
    assert [g["u"] for g in data["groups"]] == [0, 1, 1]
    page = explorer_html(_heads([True, False]), _points(2))
    assert "<span id=ex-leg-trust></span>" in page and "(not trusted)" in page


@pytest.mark.slow(10)
def test_the_explorer_line_and_legend_of_an_untrusted_group_say_so_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from meta_study.explorer import explorer_html

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    page = tmp_path / "p.html"
    page.write_text("<!doctype html><html><head><meta charset=utf-8></head><body>"
                    + explorer_html(_heads([True, False]), _points(2)) + "</body></html>")
    probe = ("() => [document.querySelector('#ex-svg polyline title').textContent, "
             "document.getElementById('ex-leg-law').textContent]")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.as_uri(), wait_until="load")
        trusted = tab.evaluate(probe)
        tab.select_option("#ex-group", "1")
        untrusted = tab.evaluate(probe)
        browser.close()
    assert not errors, errors
    assert "not trusted" not in trusted[0] and "not trusted" not in trusted[1], trusted
    assert untrusted[0].startswith("headline prediction (not trusted), from the best visible model"), untrusted
    assert "headline prediction (not trusted), best visible model" in untrusted[1], untrusted


def test_head_wd_curves_leave_out_a_head_lr_sweep_beside_them():
    """Every trained run logs its resolved head_wd (its body wd unless set): a head-lr sweep (15
    runs, body wd 0.1) ingested beside the head-WD sweep (body wd 0.01) went into the curve's 0.1
    point, the mean of 17 runs of two experiments (0.24 where the sweep's own runs had 0.5)."""
    from meta_study.analysis.controlled import head_wd_effect, optimal_head_wd_vs_correlation

    base = {"source": "m", "us_task": "u", "ds_task": "d", "eval_protocol": "fewshot", "shots": 10,
            "representation_layer": np.nan, "lr": 8e-4, "model_name": "vit_s", "epochs": 30.0}
    recs = [{**base, "run_id": f"hw{hw}-{seed}", "us_accuracy": 0.7 + 0.01 * seed, "ds_accuracy": acc, "head_wd": hw,
             "wd": 0.01, "head_lr": 8e-4, "seed": seed}
            for hw, acc in ((0.0, 0.4), (0.1, 0.5), (1.0, 0.6)) for seed in range(2)]
    head_lr = [{**base, "run_id": f"hl{m}-{seed}", "us_accuracy": 0.6, "ds_accuracy": 0.2, "head_wd": 0.1, "wd": 0.1,
                "head_lr": 8e-4 * m, "seed": seed} for m in (0.1, 0.3, 1.0, 3.0, 10.0) for seed in range(3)]
    curves, best = head_wd_effect(pd.DataFrame(recs + head_lr))
    assert curves["ds_accuracy"].tolist() == pytest.approx([0.4, 0.5, 0.6]) and curves["runs"].tolist() == [2, 2, 2]
    assert best["best_head_wd"].tolist() == [1.0]
    # a head-WD grid over another knob (head lr) is still averaged over it
    grid = [{**r, "run_id": r["run_id"] + "-hl", "head_lr": 1e-3, "ds_accuracy": r["ds_accuracy"] + 0.1} for r in recs]
    curves, _ = head_wd_effect(pd.DataFrame(recs + grid + head_lr))
    assert curves["ds_accuracy"].tolist() == pytest.approx([0.45, 0.55, 0.65]) and curves["runs"].tolist() == [4] * 3
    # where no configuration compares head WDs, every run stays, as before
    curves, _ = head_wd_effect(pd.DataFrame(head_lr))
    assert curves["ds_accuracy"].tolist() == pytest.approx([0.2]) and curves["runs"].tolist() == [15]
    assert len(optimal_head_wd_vs_correlation(pd.DataFrame(recs + head_lr))) == 1


def test_f20_pairs_the_tasks_of_a_run_whose_export_was_ingested_twice():
    """One export ingested twice, the second copy with one more DS task (y): x was kept from the
    first source and y from the second, and F.20 said "0 models have both" of x and y, which every
    run had. A copy that measured a task otherwise (a run measured again) stays a model of its own."""
    from meta_study.analysis.correlations import correlation_tables

    rng = np.random.default_rng(0)
    recs = []
    for i in range(6):
        base = {"run_id": f"r{i}", "us_task": "u", "eval_protocol": "fewshot", "shots": 5,
                "us_accuracy": rng.uniform()}
        x, y = rng.uniform(), rng.uniform()
        recs += [{**base, "source": "a-old", "ds_task": "x", "ds_accuracy": x},
                 {**base, "source": "b-new", "ds_task": "x", "ds_accuracy": x},
                 {**base, "source": "b-new", "ds_task": "y", "ds_accuracy": y}]
    rows = pd.DataFrame(recs)
    f20 = correlation_tables(rows)["f20_ds_task_spearman"].set_index(["ds_task_a", "ds_task_b"])
    assert f20["n_models"].tolist() == [6] * 4 and f20["note"].eq("").all()
    xs = rows[rows["source"].eq("b-new") & rows["ds_task"].eq("x")]["ds_accuracy"].to_numpy()
    ys = rows[rows["ds_task"].eq("y")]["ds_accuracy"].to_numpy()
    from scipy import stats

    assert f20.loc[("x", "y"), "spearman"] == pytest.approx(stats.spearmanr(xs, ys).statistic)
    # run r0 measured again on y by a third source (x repeated): a model of its own (y alone), its
    # y never averaged into r0's
    again = pd.concat([rows, pd.DataFrame([{**recs[0], "source": "c", "ds_task": "y", "ds_accuracy": 0.123},
                                           {**recs[0], "source": "c"}])], ignore_index=True)
    f20 = correlation_tables(again)["f20_ds_task_spearman"].set_index(["ds_task_a", "ds_task_b"])
    assert f20.loc[("x", "y"), "n_models"] == 6 and f20.loc[("y", "y"), "n_models"] == 7
    assert f20.loc[("x", "x"), "n_models"] == 6
