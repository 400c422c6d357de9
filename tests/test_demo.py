"""`meta-study demo`: the README's main job, end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli


def _check_workdir(wd: Path, experiment: str, min_models: int) -> None:
    assert (wd / "mlflow.db").exists() and (wd / "store").exists()
    latest = (wd / "LATEST").read_text().strip()
    report = wd / "refits" / latest / "index.html"
    html = report.read_text() if report.exists() else ""
    assert "<h2>Answers</h2>" in html and ("scaling stops paying" in html or "keeps paying" in html
                                          or "not identified" in html)
    assert (wd / "refits" / latest / "figures" / "sensitivity.png").exists()
    df = pd.read_parquet(wd / "store")
    assert df["run_id"].nunique() >= min_models
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    refits = client.get_experiment_by_name("meta-study/refits")
    # both experiments open on their runs in MLflow's UI, not in its GenAI view
    for exp in (refits, client.get_experiment_by_name(experiment)):
        assert exp.tags.get("mlflow.experimentKind") == "custom_model_development", exp.tags
    runs = client.search_runs([refits.experiment_id])
    assert len(runs) == 1 and {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"index.html", "fits.parquet"}
    assert client.get_experiment_by_name(experiment) is not None
    for p in wd.rglob("*"):                     # everything stays under the working directory
        assert p.resolve().is_relative_to(wd.resolve())


@pytest.mark.slow(55)
def test_synthetic_demo_end_to_end_and_again(tmp_path):
    wd = tmp_path / "demo"
    r = run_cli("demo", "--workdir", str(wd), "--synthetic", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "known saturation vs Eq. 1 on the hull vertices" in r.stdout and "mlflow ui --backend-store-uri" in r.stdout
    _check_workdir(wd, "meta-study-demo-synthetic", 240)
    known = [line.split() for line in r.stdout.splitlines() if " known " in line and "eq1/vertices" in line]
    assert len(known) == 3
    for row in known:         # the known saturation is recovered within 5 points by the paper's fit
        truth, fitted = float(row[2]), float(row[4])
        assert abs(truth - fitted) < 0.05, known
        if row[-1] == "(trusted)":          # and by a trusted headline
            assert abs(truth - float(row[7])) < 0.05, known
    again = run_cli("demo", "--workdir", str(wd), "--synthetic", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "refit: noop" in again.stdout and "0 new, 0 updated" in again.stdout
    _check_workdir(wd, "meta-study-demo-synthetic", 240)


ANSWERS_PROBE = """() => [Array.from(document.querySelectorAll('ul.answers > li')).map(li => li.innerText), document.querySelectorAll('table.sortable tbody tr').length,
    document.querySelectorAll('svg.points').length]"""


def _check_report_in_a_browser(page) -> None:
    """In Chromium: every group has its answer line (an answer or 'not identified: why'), the
    comparison table is an HTML table, every image loads, and the console stays clean."""
    from test_report_html import open_in_chromium

    fits = pd.read_parquet(page.parent / "fits.parquet")
    heads = fits[fits["headline"]]
    images, messages, (answers, table_rows, hover) = open_in_chromium(page, ANSWERS_PROBE)
    assert len(answers) == len(heads), (answers, len(heads))
    for ds in heads["ds_task"]:
        assert any(ds in a for a in answers), ds
    assert all(("not identified:" in a) or ("scaling" in a) for a in answers), answers
    assert table_rows >= len(heads) and hover == len(heads)
    assert images and all(i[1] and i[2] > 0 for i in images) and not messages, (images, messages)


@pytest.mark.slow(150)
def test_full_demo_trains_real_models(tmp_path):
    wd = tmp_path / "demo"
    r = run_cli("demo", "--workdir", str(wd), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _check_workdir(wd, "meta-study-demo", 18)
    df = pd.read_parquet(wd / "store")
    assert set(df["model_name"]) == {"vit_tiny_cpu", "mixer_tiny_cpu", "vit_small_cpu"}
    # real training: US accuracy spreads well beyond chance (1/24) and grows with epochs
    by_epochs = df.groupby("epochs")["us_accuracy"].mean()
    assert df["us_accuracy"].max() > 0.3 and by_epochs.loc[4] > by_epochs.loc[1]
    again = run_cli("demo", "--workdir", str(wd), timeout=900)
    assert again.returncode == 0 and "refit: noop" in again.stdout, again.stdout[-2000:]
    # the demo speaks for itself: no Tune tables, trial configs, TensorBoard or token warnings
    # (2,183 lines before; the first run and the resumed one)
    for run in (r, again):
        text = run.stdout + run.stderr
        assert len(text.splitlines()) < 60, text[-3000:]
        for noise in ("TBXLoggerCallback", "Could not fetch metrics", "Token authentication is enabled",
                      "Trial status", "started with configuration", "Creating initial MLflow database tables"):
            assert noise not in text, noise
    # when the demo's 18 models identify no task, its report says so plainly
    page = next((wd / "refits").glob("*/index.html"))
    _check_report_in_a_browser(page)
    fits = pd.read_parquet(page.parent / "fits.parquet")
    if not fits.loc[fits["headline"], "trusted"].any():
        assert "No task is identified here" in page.read_text()
    else:
        assert "scaling stops paying" in page.read_text() or "keeps paying" in page.read_text()
