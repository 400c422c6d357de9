"""Review s38 of the analysis scripts' plumbing, the prediction API's inputs, the headline row of a
group with no usable answer, the correlation tables' types, and the figures and report."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from meta_study.analysis import predict_fit, predict_interval, scripts
from meta_study.analysis.fitting import fit_groups
from meta_study.analysis.groups import Group
from meta_study.analysis.results import AnalysisOptions
from meta_study.analysis.tables import fits_frame
from meta_study.store import Store
from meta_study.validation import validate
from conftest import run_cli


def _store(path, shots=(1, 5, 10), n_runs: int = 12) -> str:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n_runs):
        us = 0.5 + 0.03 * i + rng.normal(0, 0.005)
        for ds in ("near", "far"):
            for s in shots:
                recs.append({"source": "sim", "run_id": f"r{i}", "us_task": "up", "us_accuracy": us, "ds_task": ds,
                             "eval_protocol": "fewshot" if s is not None else "shift",
                             **({"shots": s} if s is not None else {}),
                             "ds_accuracy": 0.2 + 0.6 * us + 0.02 * np.log1p(s or 0) + rng.normal(0, 0.01)})
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(str(path)).commit(v.table)
    return str(path)


def _args(store: str, out) -> object:
    return scripts.parser(__doc__).parse_args([store, "--out", str(out)])


# 1. a part recorded without figures was reused by a script that draws them: no figure, exit 0

def test_fig1_grid_after_fit_no_figures_draws_its_figures(tmp_path, capsys):
    store = _store(tmp_path / "st", shots=(5,))
    out = tmp_path / "D"
    assert run_cli("fit", store, "--out", str(out), "--no-figures").returncode == 0
    assert not (out / "figures").exists()
    # as fig1_grid.py runs it (no per-group figure: seconds each)
    _, written = scripts.analyse(_args(store, out), AnalysisOptions(), max_group_figures=0)
    assert (out / "figures" / "fits_grid.png").exists()   # its docstring's promise
    assert any(p.endswith("fits_grid.png") for p in written.figures)
    capsys.readouterr()
    scripts.analyse(_args(store, out), AnalysisOptions(), max_group_figures=0)   # made with figures: reused, said
    assert f"reused fits from {out} (same options, selection and store version)" in capsys.readouterr().out


def test_heatmaps_after_tables_f1_f2_draw_the_heatmaps(tmp_path):
    store = _store(tmp_path / "st", shots=(5,))
    out = tmp_path / "D"
    scripts.analyse(_args(store, out), AnalysisOptions(correlations=True), figures=False)   # tables_f1_f2.py
    scripts.analyse(_args(store, out), AnalysisOptions(fits=False, correlations=True))     # heatmaps_f20_f21.py
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert "f21_us_ds.png" in names and any(n.startswith("f20_") for n in names), names


# 2. pandas.NA and a non-numeric level raised TypeErrors

@functools.lru_cache(maxsize=1)
def _row() -> pd.Series:
    rng = np.random.default_rng(1)
    us = np.sort(rng.uniform(0.5, 0.9, 20))
    ds = 0.9 - 0.5 * (1 - us) ** 0.8 + rng.normal(0, 0.01, 20)
    return fits_frame([Group("a", "b", "p", None, us, ds)], fit_groups([(us, ds)])).iloc[0]


def test_predict_takes_pandas_na_as_a_missing_us_accuracy():
    row = _row()
    assert np.isnan(predict_fit(row, pd.NA))
    got = predict_fit(row, [0.8, pd.NA])
    assert np.isfinite(got[0]) and np.isnan(got[1])
    assert got[0] == predict_fit(row, 0.8)
    lo, hi = predict_interval(row, [0.8, pd.NA])
    assert np.isfinite(lo[0]) and np.isnan(lo[1]) and np.isnan(hi[1])
    with pytest.raises(ValueError, match="us_accuracy must be numbers"):
        predict_fit(row, [0.8, "x"])


@pytest.mark.parametrize("level", ["0.9", pd.NA, [0.9]])
def test_predict_interval_refuses_a_level_that_is_not_a_number_in_one_value_error(level):
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        predict_interval(_row(), 0.8, level)


def test_predict_interval_without_a_level_is_at_the_rows_own():
    """``level=None`` (the default since rows record their level) is the row's, 0.9 for a row
    without one, not a bad level."""
    row = _row()
    assert np.allclose(predict_interval(row, 0.8, None), predict_interval(row, 0.8, 0.9), equal_nan=True)


# 3. an unusable headline beside usable candidates said "no usable candidate"

def test_headline_row_says_why_when_every_candidate_was_usable():
    rng = np.random.default_rng(1)
    us = np.sort(rng.uniform(0.5, 0.9, 20))
    ds = 0.9 - 0.5 * (1 - us) ** 0.8 + rng.normal(0, 0.01, 20)
    us, ds = np.r_[us, 0.85], np.r_[ds, 95.0]     # one DS accuracy in percent, among the held-out models
    df = fits_frame([Group("a", "b", "p", None, us, ds)], fit_groups([(us, ds)]))
    head = df.iloc[0]
    assert head["law"] == "ensemble" and head["status"] == "degenerate"
    assert df.iloc[1:]["status"].isin(["ok", "at_bound"]).all()     # every candidate usable
    assert "DS accuracy 95 is outside [0, 1]" in head["message"], head["message"]
    assert "no usable candidate" not in head["message"]


# 4. empty correlation tables were written with Parquet columns of type null

@pytest.mark.parametrize("shots", [(5,), (None,)], ids=["one_shot_setting", "no_shots"])
def test_correlation_tables_have_typed_columns_even_when_empty(tmp_path, shots):
    store = _store(tmp_path / "st", shots=shots)
    out = tmp_path / "D"
    assert run_cli("correlations", store, "--out", str(out), "--no-figures").returncode == 0
    f2 = pq.read_schema(out / "correlations" / "f2_increase_likelihood.parquet")
    assert pd.read_parquet(out / "correlations" / "f2_increase_likelihood.parquet").empty
    for path in sorted((out / "correlations").glob("*.parquet")):
        schema = pq.read_schema(path)
        nulls = [f.name for f in schema if str(f.type) == "null"]
        assert not nulls, (path.name, nulls)
    assert str(f2.field("n_ds_tasks").type) == "int64" and str(f2.field("p_increase_k").type) == "double"
    f21 = pq.read_schema(out / "correlations" / "f21_us_ds_spearman.parquet")
    assert str(f21.field("shots").type) == "int64"


# review: the heatmaps said "grey: no such pair" of pairs that are there, with too few models or
# one accuracy for all (F.20 has every pair of a slice's DS tasks)

def test_heatmap_grey_note_does_not_say_no_such_pair_of_a_pair_that_is_there():
    from meta_study.analysis.correlations import correlation_tables
    from meta_study.analysis.figures import heatmap_figure

    recs = [{"source": "s", "run_id": f"r{i}", "us_task": "up", "us_accuracy": 0.5 + 0.03 * i, "ds_task": ds,
             "eval_protocol": "p", "shots": 5, "ds_accuracy": 0.5 if ds == "c" else 0.3 + 0.02 * i + 0.01 * (ds == "b")}
            for i in range(8) for ds in ("a", "b", "c")]
    f20 = correlation_tables(pd.DataFrame(recs))["f20_ds_task_spearman"]
    assert f20.loc[f20["ds_task_b"] == "c", "note"].str.contains("same DS accuracy").all()
    m = f20.pivot(index="ds_task_a", columns="ds_task_b", values="spearman")
    fig = heatmap_figure(m, title="F.20")
    title = fig.axes[0].get_title()
    assert "grey" in title and "note" in title and title.count("no such pair") <= 1
    assert "(grey: no such pair)" not in title


# review: the controlled experiments' figures: 6-pt legends inside the axes over the curves, one
# colour for series 1 and 11, Fig. 6 legend entries of settings with no block probes drawn

def test_controlled_figures_legends_are_readable_and_name_only_what_is_drawn(tmp_path):
    from meta_study.analysis import controlled

    rng = np.random.default_rng(0)
    recs = []
    for hw_i, hw in enumerate((0.0, 1e-3, 1e-2, 1e-1)):
        for seed in range(2):
            base = {"source": "sim", "run_id": f"hw{hw_i}-s{seed}", "us_task": "up",
                    "us_accuracy": 0.6 - 0.4 * hw + rng.normal(0, 0.01), "eval_protocol": "fewshot",
                    "head_wd": hw, "representation_layer": np.nan}
            for t in range(6):
                for shots in (1, 10):
                    acc = 0.5 + 0.01 * t + 0.02 * np.log1p(shots) + rng.normal(0, 0.005)
                    recs.append({**base, "ds_task": f"task{t}", "shots": shots, "ds_accuracy": acc})
                    if shots == 10:
                        recs += [{**base, "ds_task": f"task{t}", "shots": 10, "representation_layer": layer,
                                  "ds_accuracy": acc * (0.5 + 0.15 * layer)} for layer in range(3)]
    rows = pd.DataFrame(recs)
    curves, best = controlled.head_wd_effect(rows)
    seen = {}
    real_save = controlled.save

    def keep(fig, stem, footer=None):
        seen[stem.rsplit("/", 1)[-1]] = fig
        return real_save(fig, stem, footer)

    controlled.save = keep
    try:
        controlled.plot_head_wd(curves, best, str(tmp_path / "hw"))
        controlled.plot_layerwise(controlled.layerwise(rows), str(tmp_path / "lw"))
    finally:
        controlled.save = real_save
    ds_ax = seen["hw"].axes[1]
    leg = ds_ax.get_legend()
    assert len(leg.get_texts()) == 12 and all(t.get_fontsize() >= 9 for t in leg.get_texts())
    lines = [ln for ln in ds_ax.get_lines() if not str(ln.get_label()).startswith("_")]
    styles = [(ln.get_color(), ln.get_marker()) for ln in lines]
    assert len(set(styles)) == len(styles)        # series 1 and 11 no longer alike
    lw_leg = seen["lw"].axes[0].get_legend()
    names = [t.get_text() for t in lw_leg.get_texts()]
    assert names and all(n.endswith("(10-shot)") for n in names), names   # 1-shot has no block probe
    assert all(t.get_fontsize() >= 9 for t in lw_leg.get_texts())
    ticks = seen["lw"].axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))      # blocks are whole numbers


def test_controlled_figures_keep_two_us_tasks_apart(tmp_path, monkeypatch):
    # one DS task under two US tasks (JFT and ImageNet-21k in the paper) was one zigzag line, its
    # US panel the two US tasks' mean
    from meta_study.analysis import controlled

    recs = []
    for ut, base_us in (("jft", 0.7), ("i21k", 0.5)):
        for hw_i, hw in enumerate((0.0, 1e-2)):
            for layer in (np.nan, 0, 1):
                recs.append({"source": "s", "run_id": f"{ut}-{hw_i}", "us_task": ut, "us_accuracy": base_us - hw,
                             "ds_task": "pets", "eval_protocol": "fewshot", "shots": 10, "head_wd": hw,
                             "representation_layer": layer,
                             "ds_accuracy": base_us - 0.1 + (0.0 if np.isnan(layer) else 0.05 * layer)})
    rows = pd.DataFrame(recs)
    seen = {}
    monkeypatch.setattr(controlled, "save", lambda fig, stem, footer=None: seen.setdefault(stem[-2:], fig) and [])
    curves, best = controlled.head_wd_effect(rows)
    controlled.plot_head_wd(curves, best, str(tmp_path / "hw"))
    controlled.plot_layerwise(controlled.layerwise(rows), str(tmp_path / "lw"))
    us_ax, ds_ax = seen["hw"].axes[:2]
    assert len([ln for ln in us_ax.get_lines()]) == 2
    assert sorted(t.get_text() for t in ds_ax.get_legend().get_texts()) == ["i21k → pets (10-shot)",
                                                                           "jft → pets (10-shot)"]
    assert sorted(t.get_text() for t in seen["lw"].axes[0].get_legend().get_texts()) == [
        "i21k → pets (10-shot)", "jft → pets (10-shot)"]


def test_a_script_refuses_a_misspelled_selection_value_as_the_cli_does(tmp_path):
    """`heatmaps_f20_f21.py st --ds-task near --ds-task farr` left out the mistyped group and exited 0,
    where every CLI command refuses it: one line naming the value and what the store has."""
    import subprocess
    import sys
    from pathlib import Path

    store = _store(tmp_path / "st", shots=(5,))
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(repo / "analysis" / "heatmaps_f20_f21.py"), store, "--out",
                        str(tmp_path / "D"), "--ds-task", "near", "--ds-task", "farr"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert "--ds-task farr: no such value in the store (it has far, near)" in lines[0], lines[0]
    assert not (tmp_path / "D").exists()
