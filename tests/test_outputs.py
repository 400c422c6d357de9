"""What an analysis writes stays consistent with itself: no CSV copy older than its table, no
half-written figure, and a results.json of the wrong shape refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from meta_study.analysis import outputs
from meta_study.analysis.outputs import Outputs, write_table
from meta_study.validation import validate
from meta_study.store import Store
from conftest import make_rows, one_error_line, run_cli


def test_a_table_grown_past_the_csv_limit_keeps_no_stale_copy(tmp_path, monkeypatch):
    """A table rewritten with more than CSV_MAX_ROWS rows kept its old .csv, and the report linked it."""
    from meta_study.report import _table_links

    write_table(pd.DataFrame({"x": [1, 2]}), str(tmp_path / "fits"), Outputs())
    assert (tmp_path / "fits.csv").exists()
    monkeypatch.setattr(outputs, "CSV_MAX_ROWS", 2)
    write_table(pd.DataFrame({"x": [1, 2, 3]}), str(tmp_path / "fits"), Outputs())
    assert not (tmp_path / "fits.csv").exists()
    assert _table_links(tmp_path) == [("fits.parquet", " (Parquet only: more rows than the CSV copies are written for)")]


def test_an_interrupted_figure_leaves_the_old_one_whole(tmp_path, monkeypatch):
    """Figures were saved straight to their final names: an interruption left half a PNG."""
    from matplotlib.figure import Figure

    from meta_study.analysis import figures

    plt = figures.pyplot()
    figures.save(plt.figure(), str(tmp_path / "f"))
    before = (tmp_path / "f.png").read_bytes()

    def half(self, path, *a, **k):
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", half)
    with pytest.raises(KeyboardInterrupt):
        figures.save(plt.figure(), str(tmp_path / "f"))
    assert (tmp_path / "f.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]


@pytest.mark.parametrize("manifest,why", [([], "a JSON array, not an object"),
                                          ({"parts": {"fits": "x"}}, "part 'fits' is not an object"),
                                          ({"parts": []}, '"parts" is a JSON array'),
                                          ({"other": 1}, 'no "parts" object')])
def test_a_malformed_results_json_is_one_line(tmp_path, manifest, why):
    """`echo '[]' > R5/results.json; meta-study fit STORE --out R5` ended in AttributeError."""
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(12, ds_tasks=("a",))).table)
    out = tmp_path / "R5"
    assert run_cli("fit", s.uri, "--out", str(out), "--no-figures").returncode == 0   # fits.parquet is there
    (out / "results.json").write_text(json.dumps(manifest))
    r = run_cli("fit", s.uri, "--out", str(out), "--no-figures")
    assert one_error_line(r, f"{out / 'results.json'}: not a meta-study results manifest ({why})")
    assert json.loads((out / "results.json").read_text()) == manifest     # left as it was


def test_no_empty_heatmap_for_a_store_without_pairs(tmp_path, recwarn):
    """One model per group: every rank correlation is undefined; F.21 was drawn as an empty axis
    with matplotlib's "identical low and high xlims" warning in the refit's and report's output."""
    from meta_study.analysis.correlations import correlation_tables

    rows = validate(make_rows(1, ds_tasks=("a", "b"))).table.to_pandas()
    tables = correlation_tables(rows)
    out = outputs.write_correlations(tables, str(tmp_path))
    assert not list((tmp_path / "figures").glob("f2*.png")) and not [f for f in out.figures if "f2" in f]
    assert not [w for w in recwarn if "xlims" in str(w.message)]


def test_heatmaps_of_slices_whose_names_differ_in_punctuation_are_both_written(tmp_path):
    """US tasks `imagenet 1k` and `imagenet-1k` both wrote figures/f20_imagenet-1k_fewshot_5.png:
    one heatmap silently replaced the other. A slice of one DS task drew a 1x1 heatmap of that
    task with itself (the diagonal's rho = 1 counted as data)."""
    from meta_study.analysis.correlations import correlation_tables

    rows = pd.concat([make_rows(20, us_task="imagenet 1k", ds_tasks=("a", "b")),
                      make_rows(20, us_task="imagenet-1k", ds_tasks=("a", "b"), run_prefix="q", seed=1),
                      make_rows(20, us_task="lonely", ds_tasks=("a",), run_prefix="l", seed=2)])
    tables = correlation_tables(validate(rows).table.to_pandas())
    out = outputs.write_correlations(tables, str(tmp_path))
    f20 = sorted(p.name for p in (tmp_path / "figures").glob("f20_*.png"))
    assert not [n for n in f20 if "lonely" in n], f20          # one DS task: no pair, no heatmap
    assert len(f20) == 2, f20                                   # one per slice with a pair
    assert "f20_imagenet-1k_fewshot_5.png" in f20               # a name that spells its key stays as it was
    titles = {(tmp_path / "figures" / n).with_suffix(".svg").read_text().count("imagenet 1k") > 0 for n in f20}
    assert titles == {True, False}                              # each slice its own figure
    assert not [f for f in out.figures if "lonely" in f] and len(out.figures) == 2 * 2 + 2   # + f21 (PNG, SVG)


def test_no_sensitivity_figure_when_no_group_could_be_fitted(tmp_path):
    """A store of one model: every sensitivity error is NaN, and Fig. 3 was drawn anyway, blank
    panels under the full legend."""
    from meta_study.analysis.groups import Group
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity

    import numpy as np

    table = sensitivity([Group("up", "a", "fewshot", 5, np.array([0.5]), np.array([0.4]))], SensitivityOptions(trials=1))
    out = outputs.write_sensitivity(table, str(tmp_path))
    assert not list((tmp_path / "figures").glob("sensitivity.*")) and not out.figures
    assert (tmp_path / "sensitivity_summary.parquet").exists()
