"""Three more public tables (session 54), each a leaderboard snapshot as the PyPI package benchbench 1.0.1 ships it
(as helm_classic/ and open_llm_leaderboard/): examples/data/helm_lite/ (HELM Lite: MMLU vs 5 accuracy scenarios),
helm_capabilities/ (HELM Capabilities: MMLU-Pro vs GPQA, IFEval, Omni-MATH) and glue/ (the GLUE leaderboard:
MNLI-matched vs 7 accuracy columns of fine-tuned submissions). Each rebuilds from its raw file: ``derive.py``, run on
a copy of the folder (with the shared ``canonical.py`` beside it), writes the shipped ``us_ds.csv`` byte for byte
and prints its summary; the raw file is the wheel's (the sha256 its RECORD gives, and its size) and the licence is
benchbench's MIT text; every group has the models and the accuracy range the README states, one US accuracy per
model, read from the raw table; each folder is listed in examples/data/README.md, and bench_selection.py finds its
groups through the folder."""

import hashlib

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, rebuild

LICENCE_START = "MIT License\n\nCopyright (c) 2024 Guanhua Zhang and Moritz Hardt\n"
LICENCE_SHA256 = "40673795cabc9f538783dfc2e0eb0f866125d57da983ffd956774ded8fd6b24b"   # 1,087 bytes, as helm_classic/
TABLES = {
    # name: (sha256 of benchbench/data/<dir>/leaderboard.tsv in benchbench-1.0.1-py3-none-any.whl, its size in bytes,
    #        derive.py's summary line, US task, (protocol, eval_protocol), US range,
    #        {DS task: (models, lowest DS accuracy, highest)})
    "helm_lite": (  # RECORD: zQUXI19l2t42Odu2kERK_nDhJrHiHX09u0nxCwjaasE
        "cd0517235f65dade3639dbb690444afe70e126b1e21d7d3dbb49f10b08da6ac1", 7854,
        "91 models read, 91 models, 5 ds_tasks, 454 rows", "mmlu", ("helm-lite", "other"), (0.243, 0.809),
        {"openbookqa": (91, 0.222, 0.972), "math": (91, 0.026, 0.92), "gsm8k": (90, 0.028, 0.956),
         "legalbench": (91, 0.331, 0.757), "medqa": (91, 0.229, 0.863)}),
    "helm_capabilities": (  # benchbench/data/helm_capability/; RECORD: 4gZlvHE5lM_eqkAFI_k9TsTJ0JXrTQE7FlZw7NrkSus
        "e20665bc713994cfdeaa400523f93d4ec4c9d095eb4d013b165670ecdae44aeb", 3984,
        "65 models read, 65 models, 3 ds_tasks, 195 rows", "mmlu_pro", ("helm-capabilities", "other"),
        (0.169, 0.875), {"gpqa": (65, 0.168, 0.791), "ifeval": (65, 0.567, 0.951), "omni_math": (65, 0.072, 0.722)}),
    "glue": (  # RECORD: dorBbboXNOdhwdwlx1SCAPL9bSqzgPmOGqoy9RARI1c
        "768ac16dba1734e761c1dc25c7548200f2fd6d2ab380f98e1aaa32f510112357", 9876,
        "87 entries read, 83 models, 7 ds_tasks, 581 rows", "mnli_matched", ("glue-test", "finetune"), (0.741, 0.926),
        {"mnli_mismatched": (83, 0.564, 0.924), "sst2": (83, 0.867, 0.979), "qnli": (83, 0.798, 0.992),
         "rte": (83, 0.503, 0.941), "wnli": (83, 0.438, 0.979), "mrpc": (83, 0.752, 0.926),
         "qqp": (83, 0.237, 0.911)}),
}
# the raw table's model column and US column, and how a US cell reads as a fraction
RAW_US = {"helm_lite": ("Model", "MMLU - EM", 1.0), "helm_capabilities": ("Model", "MMLU-Pro - COT correct", 1.0),
          "glue": ("Model", "MNLI-m", 100.0)}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_derive_rebuilds_the_shipped_us_ds(tmp_path, name: str) -> None:
    rebuilt, printed = rebuild(tmp_path, name)
    assert TABLES[name][2] in printed, printed
    assert rebuilt == (DATA / name / "us_ds.csv").read_bytes()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_raw_file_is_the_wheels_and_the_licence_is_benchbenchs(name: str) -> None:
    folder = DATA / name
    raw = (folder / "leaderboard.tsv").read_bytes()
    assert len(raw) == TABLES[name][1] and hashlib.sha256(raw).hexdigest() == TABLES[name][0]
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == [
        "LICENSE", "README.md", "derive.py", "leaderboard.tsv", "us_ds.csv"]
    licence = (folder / "LICENSE").read_bytes()
    assert licence.decode().startswith(LICENCE_START) and len(licence) == 1087
    assert hashlib.sha256(licence).hexdigest() == LICENCE_SHA256


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_group_has_its_models_and_accuracy_range(name: str) -> None:
    _, _, _, us_task, (protocol, eval_protocol), (us_lo, us_hi), groups = TABLES[name]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and set(df["us_task"]) == {us_task}
    assert set(df["protocol"]) == {protocol} and set(df["eval_protocol"]) == {eval_protocol}
    assert set(df["ds_task"]) == set(groups) and len(df) == sum(n for n, _, _ in groups.values())
    assert (df["run_id"] == df["model_name"]).all()
    assert df["us_accuracy"].min() == us_lo and df["us_accuracy"].max() == us_hi
    for task, group in df.groupby("ds_task"):
        n, lo, hi = groups[task]
        assert len(group) == n and group["run_id"].nunique() == n, task
        assert group["ds_accuracy"].min() == lo and group["ds_accuracy"].max() == hi, task
    # one US accuracy per model, the raw table's; no sizes or shot counts are made up
    model_col, us_col, scale = RAW_US[name]
    raw = pd.read_csv(DATA / name / "leaderboard.tsv", sep="\t", dtype=str)
    raw = raw.assign(**{model_col: raw[model_col].str.strip()}).drop_duplicates(subset=model_col)
    raw_us = raw.set_index(model_col)[us_col].astype(float) / scale
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all()
    assert (us["first"] - raw_us.loc[us.index]).abs().max() < 1e-9
    assert df[["shots", "us_n", "ds_n"]].isna().all().all()


def test_glue_drops_the_human_baseline_and_keeps_accuracy_halves() -> None:
    """GLUE's human-baseline row is no model; MRPC and QQP cells are "F1/accuracy" and the accuracy is kept."""
    df = pd.read_csv(DATA / "glue" / "us_ds.csv")
    assert "GLUE Human Baselines" not in set(df["run_id"])
    top = df[df["run_id"] == "Turing ULR v6"].set_index("ds_task")["ds_accuracy"]   # MRPC 94.2/92.3, QQP 76.4/90.9
    assert top["mrpc"] == 0.923 and top["qqp"] == 0.909
    assert (df["run_id"] == "RefBERT").sum() == 7   # four submissions, the first kept


@pytest.mark.parametrize("name", sorted(TABLES))
def test_listed_and_found_by_bench_selection(name: str) -> None:
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(name) == []
    groups = TABLES[name][6]
    tables = bench.all_tables(name)
    assert len(tables) == len(groups)
    assert sorted(len(us) for _, _, us, _ in tables) == sorted(n for n, _, _ in groups.values())
