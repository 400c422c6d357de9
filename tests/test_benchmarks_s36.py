"""The benchmark scripts against the current code: their baselines reproduce the protocol they
compare with, and a size option out of range is one line, exit 2 (no traceback)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str, monkeypatch: pytest.MonkeyPatch):
    # bench_sensitivity sets the BLAS thread variables at import: keep them out of this session
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(v, "1")
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sensitivity_baseline_fits_the_same_problems_as_ours(monkeypatch):
    """The curve_fit baseline draws what ``sensitivity`` draws: one fit per row of 3+ points."""
    from meta_study.analysis.fitting import FitOptions
    from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity

    b = _load("bench_sensitivity", monkeypatch)
    groups = b.make_groups(1, 60, 0)
    opts = SensitivityOptions(trials=2, seed=0, fit=FitOptions(), frontiers=("vertices", "all"))
    table = sensitivity(groups, opts)
    assert b.curve_fit_protocol(groups, opts) == int((table["n_fit"] >= 3).sum()) > 0


@pytest.mark.slow(40)
@pytest.mark.parametrize("script, args", [
    ("bench_fit.py", ["--problems", "0"]),
    ("bench_sensitivity.py", ["--baseline-groups", "0"]),
    ("bench_ingest_files.py", ["--models", "0"]),
    ("bench_ingest_mlflow.py", ["--runs", "0"]),
    ("bench_ingest_mlflow_sql.py", ["--repeat", "0"]),
    ("bench_selection.py", ["--groups", "0"]),
    ("bench_train.py", ["--steps", "0"]),
    ("bench_selection.py", ["--tables", "nosuch", "--no-cost"]),
    ("bench_intervals.py", ["--tables", "timm,nosuch"]),
])
def test_size_out_of_range_is_one_line(script, args, tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and args[0] in r.stderr.splitlines()[-1]


@pytest.mark.slow(30)
def test_sql_ingest_benchmark_runs_and_counts_its_rows(tmp_path):
    """The smallest run completes, and the row count it prints is the run's (16 per run), not 160,000."""
    r = subprocess.run([sys.executable, str(BENCH / "bench_ingest_mlflow_sql.py"), "--runs", "3", "--repeat", "1",
                        "--db", str(tmp_path / "mlflow-3.db")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "48 rows" in r.stdout and "160,000" not in r.stdout, r.stdout
