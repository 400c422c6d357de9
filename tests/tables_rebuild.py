"""What the shipped-table tests share (test_s51_tables, test_s52_tables, test_s53_tables*): rebuild a
folder's ``us_ds.csv`` from its raw files, and find its groups the way ``bench_selection.py`` does.

A rebuild runs the folder's ``derive.py`` on a copy of the folder, with the shared scripts it
imports beside it (``canonical.py`` always; ``lm_eval.py`` or ``robustbench.py`` for those tables,
``pythia.py`` and ``lm_eval.py`` for the three Pythia tables, ``bigscience.py`` and ``lm_eval.py`` for the
two BigScience tables),
so that nothing in examples/data/ is written by a test. About a second per table."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"


def rebuilt_us_ds(tmp_path: Path, name: str, shared: tuple[str, ...] = ()) -> bytes:
    """The bytes ``derive.py`` of ``examples/data/<name>`` writes to ``us_ds.csv`` in a copy of the folder."""
    return rebuild(tmp_path, name, shared)[0]


def rebuild(tmp_path: Path, name: str, shared: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """:func:`rebuilt_us_ds` and what ``derive.py`` printed (its summary line)."""
    for script in ("canonical.py", *shared):
        shutil.copy(DATA / script, tmp_path / script)
    work = tmp_path / name
    shutil.copytree(DATA / name, work, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "us_ds.csv").unlink()
    r = subprocess.run([sys.executable, "derive.py"], cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return (work / "us_ds.csv").read_bytes(), r.stdout


def import_from(folder: Path, name: str) -> ModuleType:
    """Module ``name`` from ``folder``, leaving sys.path as it was (examples/data's and benchmarks/'
    module names are plain)."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def bench_selection() -> ModuleType:
    """benchmarks/bench_selection.py, which finds every table through its folder."""
    return import_from(REPO / "benchmarks", "bench_selection")


def check_rebuild(tmp_path: Path, name: str, summary: str, shared: tuple[str, ...] = ()) -> None:
    """``derive.py`` of ``examples/data/<name>`` prints ``summary`` and rebuilds the shipped ``us_ds.csv`` byte for byte."""
    rebuilt, printed = rebuild(tmp_path, name, shared)
    assert summary in printed, printed
    assert rebuilt == (DATA / name / "us_ds.csv").read_bytes()


def check_sources(name: str, raw_name: str, raw_sha: str, raw_size: int,
                  licence: tuple[str, str, int]) -> None:
    """The folder holds exactly its raw file, licence, README, derive.py and us_ds.csv; the raw file and the
    licence (its first words, sha256, size) are the ones its README names."""
    import hashlib

    start, licence_sha, licence_size = licence
    folder = DATA / name
    raw = (folder / raw_name).read_bytes()
    assert len(raw) == raw_size and hashlib.sha256(raw).hexdigest() == raw_sha
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["LICENSE", "README.md", "derive.py", raw_name, "us_ds.csv"])
    text = (folder / "LICENSE").read_bytes()
    assert text.decode().startswith(start) and len(text) == licence_size
    assert hashlib.sha256(text).hexdigest() == licence_sha


def check_lm_eval_stderrs(raws: Iterable[Mapping[str, Any]], sizes: Mapping[str, int]) -> int:
    """The check behind a transcription of lm-evaluation-harness result JSONs (the Pythia tables):
    each ``acc`` and ``acc_norm`` is k/n for its task's n (``sizes``), and its stderr is
    sqrt(p(1-p)/(n-1)) to a relative 1e-9 (lm-eval's sample standard error). Returns the number
    of (accuracy, stderr) pairs checked."""
    import pytest

    pairs = 0
    for d in raws:
        for task, metrics in d["results"].items():
            for acc_key in ("acc", "acc_norm"):
                if acc_key not in metrics:
                    continue
                n, p, se = sizes[task], metrics[acc_key], metrics[f"{acc_key}_stderr"]
                assert p * n == pytest.approx(round(p * n), abs=1e-6), (task, p)
                assert se == pytest.approx((p * (1 - p) / (n - 1)) ** 0.5, rel=1e-9), (task, p, se)
                pairs += 1
    return pairs
