"""The MLflow UI, in a real headless Chromium against a real `mlflow server`: the addresses
meta-study prints open an experiment on its runs (MLflow 3.17 opens every experiment on its GenAI
overview otherwise, whatever the experiment's tags say), and a sweep's parent run carries the
sweep's summary as metrics."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric

from meta_study.mlflow_client import experiment_url, get_or_create_experiment, mlflow_client
from meta_study.tune.tracking import best_accuracies, log_sweep_summary

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_experiment_url_never_holds_credentials_and_needs_a_ui():
    assert experiment_url("http://u:pw@mlflow.lab:5000/", "7") == \
        "http://mlflow.lab:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert experiment_url("https://h/mlflow", "7", "abc") == \
        "https://h/mlflow/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert experiment_url("sqlite:////x/mlflow.db", "7") is None
    assert experiment_url("sqlite:////x/mlflow.db", "7", ui="http://127.0.0.1:5000").startswith("http://127.0.0.1:5000/#/")


def test_best_accuracies_over_children():
    kids = [{"us/up/top1": 0.4, "ds/a/5shot/top1": 0.2, "train/loss": 0.1},
            {"us/up/top1": 0.6, "ds/a/5shot/top1": float("nan"), "ds/a/5shot/layer3/top1": 0.3}, {}]
    assert best_accuracies(kids) == {"best/ds/a/5shot/layer3/top1": 0.3, "best/ds/a/5shot/top1": 0.2,
                                     "best/us/up/top1": 0.6}


@pytest.mark.slow(30)
def test_the_printed_address_opens_the_runs_and_the_parent_run_has_the_summary(mlflow_server):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    client = mlflow_client(mlflow_server.uri)
    name = f"sweeps/ui-{os.getpid()}-{time.time_ns()}"
    exp = get_or_create_experiment(client, mlflow_server.uri, name)
    parent = client.create_run(exp, run_name="sweep ui-zoo", tags={"meta_study.role": "sweep"}).info.run_id
    now = int(time.time() * 1000)
    for i in range(3):
        rid = client.create_run(exp, run_name=f"trial {i}", tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_batch(rid, metrics=[Metric("us/up/top1", 0.3 + 0.1 * i, now, 0),
                                       Metric("ds/a/5shot/top1", 0.2 + 0.1 * i, now, 0)])
        client.set_terminated(rid)
    summary = log_sweep_summary(mlflow_server.uri, exp, parent, {"trials": 3, "finished": 3, "errored": 0})
    client.set_terminated(parent)
    metrics = client.get_run(parent).data.metrics
    assert metrics == summary and metrics["sweep/finished"] == 3 and metrics["best/us/up/top1"] == pytest.approx(0.5)
    assert metrics["best/ds/a/5shot/top1"] == pytest.approx(0.4)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # what meta-study printed before (the server's address, or the experiment's plain
            # page) opens the GenAI overview, the model-training tag notwithstanding
            page.goto(f"{mlflow_server.uri}/#/experiments/{exp}")
            # the GenAI overview: "Token Usage" on MLflow 3.17, "Send your first trace" on 3.18
            # (a fresh install moved from one to the other), the URL's workflowType on both
            page.wait_for_url("**workflowType=*", timeout=90_000)
            assert "workflowType=genai" in page.url, page.url
            page.goto(experiment_url(mlflow_server.uri, exp))
            page.wait_for_selector("text=sweep ui-zoo", timeout=90_000)   # the runs table, with the parent
            body = page.inner_text("body")
            assert "/runs" in page.url and "workflowType=machine_learning" in page.url, page.url
            assert "4 matching runs" in body, body[:2000]
            for genai in ("Token Usage", "Evaluation runs", "No data available"):   # the GenAI overview's
                assert genai not in body, body[:2000]
            page.goto(experiment_url(mlflow_server.uri, exp, parent))
            page.wait_for_selector("text=Metrics (5)", timeout=90_000)
            body = page.inner_text("body")
            for key in ("sweep/finished", "best/us/up/top1", "best/ds/a/5shot/top1"):
                assert key in body, body[:2000]
        finally:
            browser.close()
