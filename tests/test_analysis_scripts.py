"""Every analysis/ script: --help works, and each reproduces its analysis on a store it fits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from meta_study.validation import validate
from meta_study.store import Store
from conftest import MAPPINGS, REPO, run_cli

SCRIPTS = sorted(p.name for p in (REPO / "analysis").glob("*.py"))


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / name), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_runbook_docstring(name):
    r = script(name, "--help")
    assert r.returncode == 0, r.stderr
    text = (REPO / "analysis" / name).read_text()
    assert text.startswith('"""') and "python analysis/" in text   # the docstring is the runbook


@pytest.fixture(scope="module")
def controlled_store(tmp_path_factory) -> str:
    """A synthetic head-WD sweep: 3 tasks x 4 head WDs x 3 seeds x shots {1, 5, 10}, with layer probes."""
    rng = np.random.default_rng(0)
    recs = []
    for hw_i, hw in enumerate((0.0, 1e-3, 1e-2, 1e-1)):
        for seed in range(3):
            run = f"hw{hw_i}-s{seed}"
            us = 0.6 - 0.4 * hw + rng.normal(0, 0.01)          # more head WD hurts US ...
            for t_i, ds in enumerate(("near", "mid", "far")):
                for shots in (1, 5, 10):
                    best = (0.0, 1e-3, 1e-1)[t_i]                # ... but helps far tasks
                    acc = 0.5 + 0.03 * np.log1p(shots) - 0.1 * abs(np.log10(hw + 1e-4) - np.log10(best + 1e-4)) \
                        + rng.normal(0, 0.005)
                    base = {"source": "sim", "run_id": run, "us_task": "up", "us_accuracy": us, "ds_task": ds,
                            "eval_protocol": "fewshot", "shots": shots, "head_wd": hw, "seed": seed}
                    recs.append({**base, "ds_accuracy": acc})
                    if shots == 10:
                        for layer in range(4):
                            recs.append({**base, "representation_layer": layer, "ds_accuracy": acc * (0.5 + 0.15 * layer)})
    store = str(tmp_path_factory.mktemp("ctl") / "store")
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(store).commit(v.table)
    return store


def test_head_wd_and_layerwise_scripts(controlled_store, tmp_path):
    r = script("head_wd_d1_d4.py", controlled_store, "--out", str(tmp_path), "--shots", "10")
    assert r.returncode == 0, r.stderr
    best = pd.read_parquet(tmp_path / "d3_best_head_wd.parquet").set_index("ds_task")
    assert best.loc["near", "best_head_wd"] == 0.0 and best.loc["far", "best_head_wd"] == pytest.approx(0.1)
    assert len(pd.read_parquet(tmp_path / "d4_best_head_wd_vs_correlation.parquet")) == 3
    assert (tmp_path / "figures" / "d1_d3_head_wd.png").exists() and (tmp_path / "figures" / "d4_head_wd_vs_corr.png").exists()
    r = script("fig6_layerwise.py", controlled_store, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lw = pd.read_parquet(tmp_path / "fig6_layerwise.parquet")
    assert set(lw["layer"]) == {-1, 0, 1, 2, 3} and (tmp_path / "figures" / "fig6_layerwise.png").exists()
    r = script("tables_f1_f2.py", controlled_store, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    f1 = pd.read_parquet(tmp_path / "correlations" / "f1_shots_correlation.parquet")
    assert len(f1) == 6 and f1["n_shots"].eq(3).all()
    assert (tmp_path / "figures" / "params_vs_shots.png").exists()


def test_paper_figures_on_the_timm_results(timm_dir, tmp_path):
    store = str(tmp_path / "st")
    assert run_cli("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", store,
                   "--quiet").returncode == 0
    r = script("fig1_grid.py", store, "--out", str(tmp_path / "f1"), "--max-group-figures", "0")
    assert r.returncode == 0 and (tmp_path / "f1" / "figures" / "fits_grid.png").exists(), r.stderr
    r = script("fig3_sensitivity.py", store, "--out", str(tmp_path / "f3"), "--serial", "--trials", "2",
               "--ds-task", "sketch")
    assert r.returncode == 0 and (tmp_path / "f3" / "figures" / "sensitivity.png").exists(), r.stderr
    r = script("heatmaps_f20_f21.py", store, "--out", str(tmp_path / "f20"))
    assert r.returncode == 0 and (tmp_path / "f20" / "figures" / "f21_us_ds.png").exists(), r.stderr
    r = script("head_wd_d1_d4.py", store, "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "no rows with head_wd" in r.stderr and "Traceback" not in r.stderr
    # no shot settings in the timm results: empty tables, and no figure of three blank panels
    r = script("tables_f1_f2.py", store, "--out", str(tmp_path / "t"))
    assert r.returncode == 0 and "no figure: no few-shot group has several shot settings" in r.stdout, r.stderr
    assert not (tmp_path / "t" / "figures" / "params_vs_shots.png").exists()


@pytest.mark.parametrize("name", ["head_wd_d1_d4.py", "fig6_layerwise.py"])
def test_a_script_that_finds_no_rows_leaves_no_out_directory(controlled_store, tmp_path, name):
    """"No such rows" is found after --out is made: the failed script left an empty directory
    (twice made, never written); one it did not make stays."""
    out = tmp_path / "out" / "results"
    r = script(name, controlled_store, "--out", str(out), "--us-task", "no-such-task")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no " in r.stderr, r.stderr
    assert not out.exists()
    out.mkdir(parents=True)
    r = script(name, controlled_store, "--out", str(out), "--us-task", "no-such-task")
    assert r.returncode == 2 and out.is_dir(), r.stderr
