"""The core install (``pip install meta-study``, no torch, timm or optuna) analyses: ingest, store,
fit, report. Training commands say in one line which extra to add.

The interpreter here has torch; a ``sitecustomize`` on PYTHONPATH hides the training modules (and
``ray.tune`` / ``ray.train``, which fail to import without ``ray[tune,train]``'s dependencies)
from every process started with it, Ray workers included (they inherit PYTHONPATH). .ci/run also
installs the real core into its own venv and runs ingest and fit there.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import MAPPINGS, REPO, run_cli

HIDE = '''
import importlib.abc, sys
class _NoTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")
        if top[0] in ("torch", "timm", "optuna", "torchvision") or top[:2] in (["ray", "tune"], ["ray", "train"]):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTraining())
'''


@pytest.fixture
def core_env(tmp_path):
    site = tmp_path / "core-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDE)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.mark.slow(40)
def test_analysis_runs_without_the_training_modules(tmp_path, core_env, timm_dir):
    probe = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **core_env},
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr     # the hiding works
    store, out = tmp_path / "st", tmp_path / "out"
    steps = [("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", str(store), "--quiet"),
             ("store", "info", str(store)),
             ("fit", str(store), "--out", str(out)),
             ("report", str(store), "--out", str(out), "--trials", "2", "--samples", "20")]   # on Ray workers
    for args in steps:
        r = run_cli(*args, env=core_env, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        assert "torch" not in r.stderr, (args, r.stderr[-2000:])
    assert (out / "index.html").exists() and (out / "fits.parquet").exists()


def test_training_commands_name_the_extra_in_one_line(tmp_path, core_env):
    r = run_cli("demo", "--workdir", str(tmp_path / "d"), env=core_env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "lacks torch, timm, optuna" in r.stderr and "pip install 'meta-study[train]'" in r.stderr
    assert not (tmp_path / "d" / "mlflow.db").exists()          # refused before anything was made
    s = subprocess.run([sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke"], cwd=tmp_path,
                       env={**os.environ, **core_env}, capture_output=True, text=True, timeout=120)
    assert s.returncode == 2 and s.stderr.strip().count("\n") == 0, s.stderr
    assert s.stderr.startswith("head_wd: sweep head_wd trains models, and this install lacks torch")
