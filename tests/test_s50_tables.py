"""The public tables added in session 50 rebuild from their raw files: each folder's ``derive.py``, run on a
copy of the folder, writes the shipped ``us_ds.csv`` byte for byte; its raw files have the lengths its
``sources.csv`` records; and the folder is listed in examples/data/README.md."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
TABLES = ["lm_eval_commonsense", "lm_eval_xstorycloze"]


@pytest.mark.parametrize("name", TABLES)
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    shutil.copy(DATA / "canonical.py", tmp_path / "canonical.py")
    work = tmp_path / name
    shutil.copytree(DATA / name, work)
    (work / "us_ds.csv").unlink()
    r = subprocess.run([sys.executable, "derive.py"], cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (work / "us_ds.csv").read_bytes() == (DATA / name / "us_ds.csv").read_bytes()


@pytest.mark.parametrize("name", TABLES)
def test_raw_files_have_the_recorded_lengths_and_one_source(name: str) -> None:
    src = pd.read_csv(DATA / name / "sources.csv")
    for row in src.itertuples():
        assert (DATA / name / "raw" / row.file).stat().st_size == row.chars, row.file
    assert sorted(p.name for p in (DATA / name / "raw").iterdir()) == sorted(src["file"])
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and df["run_id"].nunique() >= 10
    assert df["us_accuracy"].between(0, 1).all() and df["ds_accuracy"].between(0, 1).all()
    assert (DATA / name / "LICENSE").is_file() and f"| `{name}/` |" in (DATA / "README.md").read_text()
