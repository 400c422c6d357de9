"""The HELM Classic table (session 53: examples/data/helm_classic/, HELM's accuracy table as the PyPI package
benchbench 1.0.1 ships it) rebuilds from its raw file: ``derive.py``, run on a copy of the folder (with the shared
``canonical.py`` beside it), writes the shipped ``us_ds.csv`` byte for byte; the raw file is the wheel's (the sha256
its RECORD gives) and the licence is benchbench's MIT text; every group holds the 32 models that have a HellaSwag
entry, with accuracies in [0, 1]; the folder is listed in examples/data/README.md, and bench_selection.py finds
its 7 groups through the folder."""

import hashlib
from pathlib import Path

import pandas as pd
from tables_rebuild import DATA, bench_selection, rebuild
NAME = "helm_classic"
FOLDER = DATA / NAME
# sha256 of benchbench/data/helm/accuracy.tsv in benchbench-1.0.1-py3-none-any.whl (RECORD: urlsafe base64
# YjFncnz3wYZdC6l5-iQdYMxRg-Kw_LVVSKFl2xclCiI), 7,516 bytes
RAW_SHA256 = "623167727cf7c1865d0ba979fa241d60cc5183e2b0fcb55548a165db17250a22"
DS_TASKS = {"mmlu", "boolq", "openbookqa", "truthfulqa", "imdb", "civilcomments", "raft"}
N_MODELS = 32   # of the table's 67 models, those with a HellaSwag entry (the others show '-')


def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    rebuilt, printed = rebuild(tmp_path, NAME)
    assert "67 models read, 32 with hellaswag, 7 ds_tasks, 224 rows" in printed, printed
    assert rebuilt == (FOLDER / "us_ds.csv").read_bytes()


def test_raw_file_is_the_wheels_and_the_licence_is_benchbenchs() -> None:
    raw = (FOLDER / "accuracy.tsv").read_bytes()
    assert len(raw) == 7516 and hashlib.sha256(raw).hexdigest() == RAW_SHA256
    assert sorted(p.name for p in FOLDER.iterdir() if p.name != "__pycache__") == [
        "LICENSE", "README.md", "accuracy.tsv", "derive.py", "us_ds.csv"]
    licence = (FOLDER / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) 2024 Guanhua Zhang and Moritz Hardt\n")
    assert len(licence.encode()) == 1087


def test_every_group_has_all_models_and_accuracies() -> None:
    df = pd.read_csv(FOLDER / "us_ds.csv")
    assert set(df["source"]) == {NAME} and set(df["us_task"]) == {"hellaswag"}
    assert set(df["eval_protocol"]) == {"other"} and set(df["protocol"]) == {"helm-em"}
    assert set(df["ds_task"]) == DS_TASKS and len(df) == N_MODELS * len(DS_TASKS)
    assert df["us_accuracy"].between(0, 1).all() and df["ds_accuracy"].between(0, 1).all()
    for task, group in df.groupby("ds_task"):
        assert len(group) == N_MODELS and group["run_id"].nunique() == N_MODELS, task
    # one HellaSwag accuracy per model, as in the raw table; no sizes or shot counts are made up
    raw = pd.read_csv(FOLDER / "accuracy.tsv", sep="\t", na_values=["-"]).set_index("Model/adapter")
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all()
    assert (us["first"] == raw.loc[us.index, "HellaSwag - EM"]).all()
    assert df[["shots", "us_n", "ds_n"]].isna().all().all()
    assert f"| `{NAME}/` |" in (DATA / "README.md").read_text()


def test_bench_selection_finds_the_table_through_its_folder() -> None:
    bench = bench_selection()
    assert bench.unknown_tables(NAME) == []
    tables = bench.all_tables(NAME)
    assert len(tables) == len(DS_TASKS) and {len(us) for _, _, us, _ in tables} == {N_MODELS}
