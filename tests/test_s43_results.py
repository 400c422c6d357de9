"""The results directory's tables and refusals: a refusal shows the values that differ as typed
(a date seed, a million samples, a level past 6 digits) and quotes a task name with a space; a
table or results.json that a full disk stops names its file; an incremental analysis computes an
unchanged group whose previous rows are missing instead of dropping it; a correlations part missing
a table is made again; a part written whole is recorded so before the next part is written."""

from __future__ import annotations

import errno

import pandas as pd
import pytest

from conftest import committed_store, run_cli


def _refusal(tmp_path, first, second, selection=None, other_selection=None) -> str:
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import ResultsDir
    from meta_study.errors import UserError

    sel = selection or Selection()
    d = ResultsDir(tmp_path / "D")
    d._record(first.parts(), _analysis(first), sel)
    for part in first.parts():    # a main table beside the record: the part is there
        (d.path / {"fits": "fits.parquet", "bootstrap": "bootstrap.parquet"}[part]).write_bytes(b"x")
    with pytest.raises(UserError) as e:
        d.plan(second.parts()[0], second, other_selection or sel, "1:abc")
    return str(e.value)


def _analysis(options):
    from meta_study.analysis.results import Analysis

    return Analysis(fits=None, options=options, provenance={"store": "s", "store version": 1}, snapshot_id="1:abc")


@pytest.mark.parametrize("old, new, said", [
    ({"seed": 20261206}, {"seed": 20261207}, "--seed 20261206 (this command: 20261207)"),
    ({"samples": 99_999}, {"samples": 100_000}, "--samples 99999 (this command: 100000)"),   # the ceiling (1,000,000 before it)
    ({"level": 0.95}, {"level": 0.9500001}, "--level 0.95 (this command: 0.9500001)"),
])
def test_a_refusal_shows_the_values_that_differ_as_typed(tmp_path, old, new, said):
    """Numbers were shown to 6 significant digits as floats: `--seed 2.02612e+07 (this command:
    2.02612e+07)`, a difference the line named but did not show (a date seed, a million samples,
    a level given to 7 digits)."""
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.results import AnalysisOptions

    msg = _refusal(tmp_path, AnalysisOptions(fits=False, bootstrap=BootstrapOptions(**old)),
                   AnalysisOptions(fits=False, bootstrap=BootstrapOptions(**new)))
    assert f"bootstrap.parquet: made with other options: {said};" in msg, msg


def test_the_usual_refusals_read_as_before(tmp_path):
    from dataclasses import replace

    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.results import AnalysisOptions

    fit = FitOptions()
    msg = _refusal(tmp_path, AnalysisOptions(), AnalysisOptions(fit=replace(
        fit, holdout_quantile=0.9, selection=replace(fit.selection, tolerance=0.05))))
    assert "other options: --holdout-quantile 0.8 (this command: 0.9); --tolerance 3 (this command: 5);" in msg, msg


def test_a_refused_selection_quotes_a_task_name_with_a_space(tmp_path):
    """`--ds-task oxford pets --ds-task dtd`: read as typed, three names, one of them `pets`."""
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions

    msg = _refusal(tmp_path, AnalysisOptions(), AnalysisOptions(), Selection(ds_task=("oxford pets", "dtd")),
                   Selection(ds_task=("oxford pets",)))
    assert ("made with another selection: --ds-task 'oxford pets' --ds-task dtd "
            "(this command: --ds-task 'oxford pets');") in msg, msg


def _pyarrow_full_disk(*a, **kw):
    # what pyarrow raises on ENOSPC (seen on a device that is full): no file named
    raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")


def test_a_table_a_full_disk_stops_is_named(tmp_path, monkeypatch):
    """pyarrow's write error names no file, so the CLI's one line said `[Errno 28] Error writing
    bytes to file ...`: neither the disk nor the table."""
    from meta_study.analysis import outputs

    monkeypatch.setattr(outputs.pq, "write_table", _pyarrow_full_disk)
    stem = tmp_path / "D" / "fits"
    with pytest.raises(OSError) as e:
        outputs.write_table(pd.DataFrame({"a": [1.0]}), str(stem), outputs.Outputs())
    assert e.value.errno == errno.ENOSPC and e.value.filename == f"{stem}.parquet", e.value
    assert "No space left on device" in str(e.value)
    assert sorted(p.name for p in stem.parent.iterdir()) == []     # no temporary left


def test_a_results_json_a_full_disk_stops_is_named(tmp_path, monkeypatch):
    from pathlib import Path

    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    d = ResultsDir(tmp_path)
    with pytest.raises(OSError) as e:
        d._record(["fits"], _analysis(AnalysisOptions()), Selection())
    assert e.value.filename == str(tmp_path / "results.json"), e.value
    assert str(e.value) == f"[Errno 28] No space left on device: '{tmp_path / 'results.json'}'"


def test_fit_on_a_full_disk_says_which_table_in_one_line(tmp_path, monkeypatch):
    from meta_study.analysis import outputs

    store = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    monkeypatch.setattr(outputs.pq, "write_table", _pyarrow_full_disk)
    monkeypatch.delenv("META_STUDY_TRACEBACK", raising=False)
    r = run_cli("fit", store.uri, "--out", str(tmp_path / "out"), "--no-figures")
    # progress lines ("fits: 1/1 (2 s)") may come first on a loaded machine: the error is one line
    lines = [line for line in r.stderr.splitlines() if line.startswith("meta-study: error:")]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "No space left on device" in lines[0] and str(tmp_path / "out" / "fits.parquet") in lines[0], lines[0]


def test_an_unchanged_group_without_previous_rows_is_computed_not_dropped(tmp_path):
    """`Previous` with a table that lacks an unchanged group's rows (another selection's table,
    one removed since): the group had no sensitivity or bootstrap rows at all, silently."""
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, Previous, ResultsDir, analyze, group_key

    store = committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))
    opts = AnalysisOptions(fits=False, bootstrap=BootstrapOptions(samples=10))
    full = analyze(store, Selection(), opts, use_ray=False)
    only_a = ResultsDir(tmp_path / "prev")       # a previous directory of group a alone
    prev = analyze(store, Selection(ds_task=("a",)), opts, use_ray=False)
    only_a.write(prev, Selection(ds_task=("a",)), figures=False)

    snap = Selection().snapshot(store)
    unchanged = frozenset(group_key(g.key) for g in snap.groups)     # both unchanged, b has no rows there
    inc = analyze(store, Selection(), opts, snapshot=snap, use_ray=False, previous=Previous(only_a.path, unchanged))
    assert sorted(inc.bootstrap["ds_task"].unique()) == ["a", "b"], inc.bootstrap
    pd.testing.assert_frame_equal(inc.bootstrap, full.bootstrap)

    (only_a.path / "bootstrap.parquet").unlink()     # no table at all: every group computed
    inc = analyze(store, Selection(), opts, snapshot=snap, use_ray=False, previous=Previous(only_a.path, unchanged))
    pd.testing.assert_frame_equal(inc.bootstrap, full.bootstrap)


def test_a_correlations_part_missing_a_table_is_made_again(tmp_path):
    """`correlations --out D` again, where D/correlations/f1_shots_correlation.parquet had gone (by
    hand, a copy cut short): the part was reused without it, and the command ended in
    `KeyError: 'f1_shots_correlation'`'s traceback."""
    store = committed_store(tmp_path / "st", runs=12, tasks=("a", "b"))
    out = tmp_path / "D"
    first = run_cli("correlations", store.uri, "--out", str(out), "--no-figures")
    assert first.returncode == 0, first.stderr
    (out / "correlations" / "f1_shots_correlation.parquet").unlink()
    again = run_cli("correlations", store.uri, "--out", str(out), "--no-figures")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert "reused correlations" not in again.stdout and (out / "correlations" / "f1_shots_correlation.parquet").exists()
    third = run_cli("correlations", store.uri, "--out", str(out), "--no-figures")   # whole again: reused,
    assert "reused correlations" in third.stdout, third.stdout                      # in the order computed
    def names(stdout: str) -> list[str]:
        return [line.split(":")[0] for line in stdout.splitlines() if line.endswith(" rows")]

    assert names(third.stdout) == names(first.stdout) and len(names(first.stdout)) == 4, (first.stdout, third.stdout)


def test_a_part_written_before_a_later_part_failed_is_recorded_whole(tmp_path, monkeypatch):
    """`report` writes its parts one after the other; a full disk (or Ctrl-C) in the bootstrap's
    write left the sensitivity, written whole before it, recorded as incomplete: the same command
    run again computed it again (hours on Ray) instead of reusing it."""
    import json

    from meta_study.analysis import outputs
    from meta_study.analysis.bootstrap import BootstrapOptions
    from meta_study.analysis.groups import Selection
    from meta_study.analysis.results import AnalysisOptions, ResultsDir, analyze
    from meta_study.analysis.sensitivity import SensitivityOptions

    store = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    d = ResultsDir(tmp_path / "D")
    opts = AnalysisOptions(fits=False, sensitivity=SensitivityOptions(trials=1), bootstrap=BootstrapOptions(samples=10))
    a = analyze(store, Selection(), opts, results=d, use_ray=False)
    real = outputs.write_table

    def full_at_bootstrap(df, stem, out, **kw):
        if stem.endswith("bootstrap"):
            raise OSError(errno.ENOSPC, "No space left on device", f"{stem}.parquet")
        return real(df, stem, out, **kw)

    monkeypatch.setattr("meta_study.analysis.results.write_table", full_at_bootstrap)
    with pytest.raises(OSError):
        d.write(a, Selection(), figures=False)
    parts = json.loads((d.path / "results.json").read_text())["parts"]
    assert parts["bootstrap"].get("incomplete") and not parts["sensitivity"].get("incomplete"), parts
    monkeypatch.undo()
    again = analyze(store, Selection(), opts, results=d, use_ray=False)
    assert again.reused == ("sensitivity",), again.reused
    d.write(again, Selection(), figures=False)
    assert not any(p.get("incomplete") for p in json.loads((d.path / "results.json").read_text())["parts"].values())
