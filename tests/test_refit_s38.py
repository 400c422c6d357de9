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
