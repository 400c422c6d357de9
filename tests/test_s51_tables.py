"""The lm-evaluation-harness tables (sessions 50 and 51: common-sense tasks, XStoryCloze, XNLI, XWinograd)
rebuild from their raw files: each folder's ``derive.py``, run on a copy of the folder (with the shared
``canonical.py`` and ``lm_eval.py`` beside it), writes the shipped ``us_ds.csv`` byte for byte; its raw files
have the lengths its ``sources.csv`` records; every DS group of the XNLI and XWinograd tables holds all 14
models with the published test-set sizes; and the folder is listed in examples/data/README.md."""

from pathlib import Path

import pandas as pd
import pytest

from tables_rebuild import DATA, rebuilt_us_ds
TABLES = ["lm_eval_commonsense", "lm_eval_xstorycloze", "lm_eval_xnli", "lm_eval_xwinograd"]
# test-set sizes (items) of each task, as published with XNLI (5,010 test pairs per language) and XWinograd
SIZES = {
    "lm_eval_xnli": {
        "xnli_en": 5010,
        **{
            f"xnli_{lang}": 5010
            for lang in ["ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
        },
    },
    "lm_eval_xwinograd": {
        "xwinograd_en": 2325,
        "xwinograd_fr": 83,
        "xwinograd_jp": 959,
        "xwinograd_pt": 263,
        "xwinograd_ru": 315,
        "xwinograd_zh": 504,
    },
}


@pytest.mark.parametrize("name", TABLES)
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    assert rebuilt_us_ds(tmp_path, name, ("lm_eval.py",)) == (DATA / name / "us_ds.csv").read_bytes()


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


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_group_has_all_models_and_the_published_sizes(name: str) -> None:
    df = pd.read_csv(DATA / name / "us_ds.csv")
    sizes = SIZES[name]
    (us_task,) = set(df["us_task"])
    assert set(df["us_n"]) == {sizes[us_task]}
    assert set(df["ds_task"]) == set(sizes) - {us_task}
    for task, group in df.groupby("ds_task"):
        assert group["run_id"].nunique() == 14 and len(group) == 14, task
        assert set(group["ds_n"]) == {sizes[task]}, task
