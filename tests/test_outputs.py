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
