"""Shared fixtures: canonical rows, the real timm results, subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
# MLflow 3's telemetry thread races os.environ (see meta_study/mlflow_client.py): off in tests,
# including the servers and CLIs the tests start.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
#: The public timm results (see ../shared/data/timm/SOURCES.md); CI has them at the same place.
TIMM_DIR = Path(os.environ.get("META_STUDY_TIMM_DATA", REPO.parent / "shared" / "data" / "timm"))
MAPPINGS = REPO / "examples" / "mappings"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest tests first: ``@pytest.mark.slow(seconds)`` gives a test's rough duration on the
    2-core CI machine. xdist deals the first quarter of this order to its two workers in turn and
    hands out the rest as they free up, so the long tests run side by side instead of one of them
    alone at the end (the sort is stable, so every worker collects the same order, as xdist
    requires)."""
    def seconds(item: pytest.Item) -> float:
        m = item.get_closest_marker("slow")
        return 0.0 if m is None else float(m.args[0] if m.args else 30)
    items.sort(key=seconds, reverse=True)


@pytest.fixture(scope="session")
def timm_dir() -> Path:
    if not (TIMM_DIR / "results-imagenet.csv").exists():
        pytest.fail(f"timm results not found at {TIMM_DIR} (set META_STUDY_TIMM_DATA)")
    return TIMM_DIR


def make_rows(n: int, *, source: str = "src", us_task: str = "up", ds_tasks=("a", "b"), seed: int = 0,
              run_prefix: str = "r", shots=(5,)) -> pd.DataFrame:
    """``n`` runs, each evaluated on every ds task x shots: canonical raw rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        us = float(rng.uniform(0.2, 0.9))
        for ds in ds_tasks:
            for k in shots:
                rows.append({
                    "source": source, "run_id": f"{run_prefix}{i}", "experiment": "exp", "researcher": "ada",
                    "model_name": "vit_tiny_patch16_224", "arch_family": "vit", "param_count": 5_000_000,
                    "us_task": us_task, "us_accuracy": us, "ds_task": ds, "eval_protocol": "fewshot",
                    "shots": k, "ds_accuracy": float(np.clip(us * rng.uniform(0.5, 1.0), 0, 1)), "seed": i,
                    "lr": 8e-4, "wd": 0.1, "head_lr": 8e-4, "head_wd": 0.1, "epochs": 7.0, "data_fraction": 1.0,
                    "batch_size": 256, "optimizer": "adam", "checkpoint_uri": f"file:///ckpt/{i}",
                    "started_at": pd.Timestamp("2026-01-01", tz="UTC"), "ended_at": pd.Timestamp("2026-01-02", tz="UTC"),
                    "extra": {"note": f"run {i}"},
                })
    return pd.DataFrame(rows)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``meta-study ARGS`` in a subprocess (the installed console script's module)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "meta_study.cli", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` (sqlite backend) for the whole session; tests use their own
    experiments so they do not see each other's runs."""
    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server
