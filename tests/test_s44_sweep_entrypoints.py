"""Review s44: the sweep entry points (sweeps/*.py), the Tune trainable and provenance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def _repo(path: Path, files: dict[str, str]) -> str:
    """A git checkout at ``path`` with ``files`` committed; its commit."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "init")
    return _git(path, "rev-parse", "HEAD")


def test_the_zoo_draws_weight_decays_on_each_optimizers_scale():
    """The decay is multiplied by the lr (train.optim), and SGD's lr is ~100x Adam's: drawn on
    Adam's scale, 1 SGD trial in 90 had a head decay lr * wd >= 1 per step (its head zeroed or
    flipped each step; up to 9: the weights grew 8x a step and the trial diverged)."""
    from meta_study.tune.runner import drawn_configs
    from sweeps.zoo import HEAD_WD_RANGE, WD_RANGE, ZooSpace

    configs = drawn_configs(ZooSpace(False), 2000)
    assert len(configs) == 2000 and {c["optimizer"] for c in configs} == {"adam", "sgd"}
    for c in configs:
        assert c["lr"] * c["wd"] < 0.01, c                  # the body shrinks by under 1% a step
        assert c["head_lr"] * c["head_wd"] < 0.5, c         # the head's decay factor stays in (0.5, 1)
        lo, hi = WD_RANGE[c["optimizer"]]
        assert lo <= c["wd"] <= hi
        lo, hi = HEAD_WD_RANGE[c["optimizer"]]
        assert lo <= c["head_wd"] <= hi
    assert WD_RANGE["adam"] == (1e-3, 0.3) and HEAD_WD_RANGE["adam"] == (1e-4, 3.0)   # Adam's as before
    assert min(c["wd"] for c in configs if c["optimizer"] == "sgd") < 1e-3               # SGD's own, lower


def test_git_sha_of_a_checkout_owned_by_another_user(tmp_path, monkeypatch):
    """git refuses a checkout another user owns ("detected dubious ownership": a container running
    as root on a bind-mounted checkout, a lab's shared one): every sweep from it was recorded as
    git ``unknown``. GIT_TEST_ASSUME_DIFFERENT_OWNER is git's own switch for that check."""
    from meta_study.tune import provenance

    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    sha = _repo(tmp_path / "co", {"meta_study/__init__.py": "", "sweeps/s.py": "x = 1\n"})
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    assert provenance.git_sha(tmp_path / "co") == sha
    (tmp_path / "co" / "sweeps" / "s.py").write_text("x = 2\n")
    assert provenance.git_sha(tmp_path / "co") == f"{sha}-dirty"


def test_git_sha_of_meta_study_inside_a_larger_checkout(tmp_path, monkeypatch):
    """meta_study tracked in a monorepo (its parent holds no .git) was recorded as ``unknown``; a
    copy a checkout does not track (a venv's site-packages, a job's upload) still is."""
    from meta_study.tune import provenance

    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    mono = tmp_path / "mono"
    sha = _repo(mono, {".gitignore": ".venv/\n", "ml/meta-study/meta_study/__init__.py": "",
                       "web/app.py": "print()\n"})
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", mono / "ml" / "meta-study" / "meta_study")
    assert provenance.git_sha() == sha
    (mono / "ml" / "meta-study" / "meta_study" / "new.py").write_text("")
    assert provenance.git_sha() == f"{sha}-dirty"
    venv_copy = mono / ".venv" / "lib" / "site-packages" / "meta_study"
    venv_copy.mkdir(parents=True)
    (venv_copy / "__init__.py").write_text("")
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", venv_copy)
    assert provenance.git_sha() == "unknown"
    assert provenance.git_sha(tmp_path / "mono" / "web") == "unknown"    # an explicit repo: as before


@pytest.mark.parametrize("script", ["head_wd", "head_lr", "scaling", "zoo"])
def test_every_sweep_scripts_help_is_its_runbook(script):
    r = subprocess.run([sys.executable, f"sweeps/{script}.py", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--smoke" in r.stdout and "python -m meta_study.tune.submit" in r.stdout
