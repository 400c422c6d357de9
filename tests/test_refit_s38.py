"""Review (session 38) of what a refit records about its sources."""

from __future__ import annotations


def test_a_relative_sqlite_source_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """`refit --source sqlite:///mlflow.db` (relative to the directory the refit ran in) was recorded
    in refit.json and the MLflow run as typed: a cron job's or a timer's working directory is recorded
    nowhere, so the record named no database. Recorded as sqlite:////ABS; absolute ones, URIs of
    servers and query strings unchanged."""
    from meta_study.refit import _source_location

    monkeypatch.chdir(tmp_path)
    assert _source_location("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _source_location("sqlite:///sub/ml.db?mode=ro") == f"sqlite:///{tmp_path / 'sub' / 'ml.db'}?mode=ro"
    assert _source_location("sqlite:////abs/ml.db") == "sqlite:////abs/ml.db"
    assert _source_location("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    (tmp_path / "runs.csv").write_text("x\n")
    assert _source_location("runs.csv") == str(tmp_path / "runs.csv")


def test_a_report_that_cannot_be_written_leaves_no_temporary(tmp_path, monkeypatch):
    """A full disk while writing index.html left a half-written .index.html.tmp-PID, one per try."""
    import os
    from pathlib import Path

    import numpy as np
    import pytest

    from meta_study.analysis.groups import Group
    from meta_study.analysis.results import Analysis, AnalysisOptions
    from meta_study.analysis.tables import fit_table
    from meta_study.report import render_report

    us = np.linspace(0.3, 0.9, 30)
    fits, _ = fit_table([Group("up", "a", "fewshot", 5, us, 0.9 - 0.5 * (1 - us) ** 0.7)])
    analysis = Analysis(fits=fits, options=AnalysisOptions(), provenance={})
    real = Path.write_text

    def full(self, text, *a, **k):
        if not self.name.startswith(".index.html.tmp-"):
            return real(self, text, *a, **k)
        real(self, text[:10], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        render_report(analysis, tmp_path / "rep")
    assert not [n for n in os.listdir(tmp_path / "rep") if n.startswith(".index.html.tmp-")]
    assert not (tmp_path / "rep" / "index.html").exists()


def test_the_synthetic_demo_has_a_default_workdir_of_its_own(tmp_path):
    """`demo --synthetic` (the core install) then `demo` (after adding [train]), the README's first
    hour, shared ./meta-study-demo, which a demo now refuses to mix. Each kind has its default."""
    from conftest import one_error_line, run_cli

    (tmp_path / "meta-study-demo-synthetic").write_text("x")    # stops it before any work, naming the default
    one_error_line(run_cli("demo", "--synthetic", cwd=tmp_path, timeout=120),
                   "--workdir meta-study-demo-synthetic: exists and is not a directory")
    (tmp_path / "meta-study-demo").write_text("x")
    one_error_line(run_cli("demo", cwd=tmp_path, timeout=120), "--workdir meta-study-demo: exists and is not a directory")


def test_a_file_named_beside_a_sources_file_holding_its_copy_is_refused(tmp_path):
    """`ingest results.csv --sources-file s.yaml` whose entry is `results (1).csv`, a copy: the
    command line's files and the sources file's were checked apart, and every run was stored twice
    under two sources. Refused before anything is stored, as within a sources file."""
    from conftest import one_error_line, run_cli

    head = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n"
    (tmp_path / "results.csv").write_text(head + "r1,up,0.5,a,0.4,linear\n")
    (tmp_path / "results (1).csv").write_text(head + "r1,up,0.5,a,0.4,linear\n")
    (tmp_path / "s.yaml").write_text('sources:\n  - uri: "results (1).csv"\n')
    r = run_cli("ingest", str(tmp_path / "results.csv"), "--sources-file", str(tmp_path / "s.yaml"),
                "--store", str(tmp_path / "st"))
    one_error_line(r, "the same content (a copy?)")
    assert not (tmp_path / "st").exists()


def test_a_selection_with_nothing_to_fit_writes_nothing(tmp_path):
    """`sensitivity --holdout-above 0` (every point held out) wrote an empty table and its
    results.json entry, then said "no groups with at least 3 points" of groups of 40. Refused first,
    naming the hold-out split; DIR holds nothing of it."""
    from conftest import committed_store, one_error_line, run_cli

    committed_store(tmp_path / "st", runs=40, tasks=("a",))
    out = tmp_path / "D"
    r = run_cli("sensitivity", str(tmp_path / "st"), "--out", str(out), "--holdout-above", "0", "--serial",
                "--trials", "2")
    one_error_line(r, "no group of the selection has at least 3 points to fit at or below the hold-out split "
                      "(--holdout-above 0)")
    assert not (out / "results.json").exists() and not list(out.glob("**/*.parquet"))
