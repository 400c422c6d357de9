"""Three more public tables (session 53): examples/data/open_llm_leaderboard/ (the Open LLM Leaderboard v1 top 100
as the PyPI package benchbench 1.0.1 ships it), lm_eval_pawsx/ and lm_eval_xcopa/ (lm-evaluation-harness
``results/`` JSONs of the same 14 checkpoints as the other lm_eval tables). Each rebuilds from its raw files:
``derive.py``, run on a copy of the folder (with the shared ``canonical.py`` and ``lm_eval.py`` beside it), writes
the shipped ``us_ds.csv`` byte for byte. The raw files are the ones fetched (the wheel's RECORD hash; the lengths
``sources.csv`` records, a digest of the 14 / 28 files, and standard errors that match the published test-set
sizes); the licences are the sources' MIT texts; every group holds every model; each folder is listed in
examples/data/README.md and bench_selection.py finds its groups. XCOPA has no English set: its US is English
COPA, read from the common-sense JSONs through ``lm_eval.derive(..., us_suffix=...)``."""

import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, rebuild
OPEN_LLM = DATA / "open_llm_leaderboard"
# sha256 of benchbench/data/openllm/leaderboard.tsv in benchbench-1.0.1-py3-none-any.whl (RECORD: urlsafe base64
# RWOLGocLjkXOJNNVyeEI5TbpiTYZPlB5uEuoh--k0YU), 7,511 bytes
OPEN_LLM_SHA256 = "45638b1a870b8e45ce24d355c9e108e536e98936193e5079b84ba887efa4d185"
OPEN_LLM_DS = {"arc_challenge", "mmlu", "truthfulqa", "winogrande", "gsm8k"}
OPEN_LLM_MODELS = 87     # 100 leaderboard rows, 13 names twice: the first entry of each name
LM_EVAL = {
    # table: (US task, its n, DS tasks, their n, digest of the raw files: sha256 of "name sha256\n" lines, sorted)
    "lm_eval_pawsx": ("pawsx_en", 2000, {f"pawsx_{c}" for c in ["de", "es", "fr", "ja", "ko", "zh"]}, 2000,
                      "40de65d237fed0c915ffecbe205ad38cd296f73ffcefb1adb0b4881b85ce8436"),
    "lm_eval_xcopa": ("copa", 100, {f"xcopa_{c}" for c in ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr",
                                                           "vi", "zh"]}, 500,
                      "36a12014d7891a73956e5ff847f593ceaa115f61b4307866ab28512e3bb551be"),
}
SUMMARY = {
    "open_llm_leaderboard": "100 entries read, 87 models, 5 ds_tasks, 435 rows",
    "lm_eval_pawsx": "14 files, 14 models, 6 ds_tasks, 84 rows",
    "lm_eval_xcopa": "14 files, 14 models, 11 ds_tasks, 154 rows",
}


def raw_digest(folder: Path) -> str:
    """One sha256 over the raw files' names and sha256s, so a test pins all of them byte for byte."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    rebuilt, printed = rebuild(tmp_path, name, ("lm_eval.py",))
    assert SUMMARY[name] in printed, printed
    assert rebuilt == (DATA / name / "us_ds.csv").read_bytes()


def test_open_llm_raw_file_is_the_wheels_and_the_licence_is_benchbenchs() -> None:
    raw = (OPEN_LLM / "leaderboard.tsv").read_bytes()
    assert len(raw) == 7511 and hashlib.sha256(raw).hexdigest() == OPEN_LLM_SHA256
    assert sorted(p.name for p in OPEN_LLM.iterdir() if p.name != "__pycache__") == [
        "LICENSE", "README.md", "derive.py", "leaderboard.tsv", "us_ds.csv"]
    assert (OPEN_LLM / "LICENSE").read_bytes() == (DATA / "helm_classic" / "LICENSE").read_bytes()
    licence = (OPEN_LLM / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) 2024 Guanhua Zhang and Moritz Hardt\n")
    assert len(licence.encode()) == 1087


def test_open_llm_one_entry_per_model_and_every_group_full() -> None:
    df = pd.read_csv(OPEN_LLM / "us_ds.csv")
    assert set(df["source"]) == {"open_llm_leaderboard"} and set(df["us_task"]) == {"hellaswag"}
    assert set(df["eval_protocol"]) == {"other"} and set(df["protocol"]) == {"open-llm-v1"}
    assert set(df["ds_task"]) == OPEN_LLM_DS and len(df) == OPEN_LLM_MODELS * len(OPEN_LLM_DS)
    for task, group in df.groupby("ds_task"):
        assert len(group) == OPEN_LLM_MODELS and group["run_id"].nunique() == OPEN_LLM_MODELS, task
    # each model's values are its first leaderboard entry, percent / 100
    raw = pd.read_csv(OPEN_LLM / "leaderboard.tsv", sep="\t").drop_duplicates("Model").set_index("Model")
    assert len(raw) == OPEN_LLM_MODELS
    cols = {"arc_challenge": "ARC", "mmlu": "MMLU", "truthfulqa": "TruthfulQA", "winogrande": "Winogrande",
            "gsm8k": "GSM8K"}
    for row in df.itertuples():
        assert row.us_accuracy == pytest.approx(raw.loc[row.run_id, "HellaSwag"] / 100, abs=1e-9)
        assert row.ds_accuracy == pytest.approx(raw.loc[row.run_id, cols[row.ds_task]] / 100, abs=1e-9)
    # the narrow US range the README states; no shot counts or sizes are made up
    assert df["us_accuracy"].between(0.83, 0.89).all()
    assert df[["shots", "us_n", "ds_n"]].isna().all().all()


@pytest.mark.parametrize("name", sorted(LM_EVAL))
def test_lm_eval_raw_files_are_the_fetched_ones_and_mit(name: str) -> None:
    folder = DATA / name
    src = pd.read_csv(folder / "sources.csv")
    for row in src.itertuples():
        assert (folder / "raw" / row.file).stat().st_size == row.chars, row.file
        assert row.repository == "EleutherAI/lm-evaluation-harness" and row.path.endswith("/" + row.file)
    assert sorted(p.name for p in (folder / "raw").iterdir()) == sorted(src["file"])
    assert raw_digest(folder / "raw") == LM_EVAL[name][4]
    # lm-eval's acc_stderr is sqrt(acc (1 - acc) / (n - 1)): every value must fit the task's published size
    us, us_n, ds, ds_n, _ = LM_EVAL[name]
    for path in (folder / "raw").iterdir():
        for task, m in json.loads(path.read_text())["results"].items():
            if task in ds or task == us:
                n = ds_n if task in ds else us_n
                assert m["acc_stderr"] == pytest.approx(math.sqrt(m["acc"] * (1 - m["acc"]) / (n - 1)), abs=1e-12)
    assert (folder / "LICENSE").read_bytes() == (DATA / "lm_eval_xnli" / "LICENSE").read_bytes()
    assert (folder / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2025 EleutherAI\n")


def test_xcopa_us_files_are_the_commonsense_tables() -> None:
    """English COPA comes from the same common-sense JSONs as lm_eval_commonsense/ (copies, same sources rows)."""
    copies = sorted((DATA / "lm_eval_xcopa" / "raw").glob("*_common_sense_reasoning_0-shot.json"))
    assert len(copies) == 14
    for p in copies:
        assert p.read_bytes() == (DATA / "lm_eval_commonsense" / "raw" / p.name).read_bytes(), p.name
    ours = pd.read_csv(DATA / "lm_eval_xcopa" / "sources.csv").set_index("file")
    theirs = pd.read_csv(DATA / "lm_eval_commonsense" / "sources.csv").set_index("file")
    assert ours.loc[theirs.index].equals(theirs)


@pytest.mark.parametrize("name", sorted(LM_EVAL))
def test_lm_eval_groups_have_all_models_and_the_published_sizes(name: str) -> None:
    us, us_n, ds, ds_n, _ = LM_EVAL[name]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and set(df["us_task"]) == {us} and set(df["us_n"]) == {us_n}
    assert set(df["ds_task"]) == ds and set(df["ds_n"]) == {ds_n} and set(df["shots"]) == {0}
    assert set(df["eval_protocol"]) == {"zeroshot"} and set(df["protocol"]) == {"zeroshot-lm"}
    for task, group in df.groupby("ds_task"):
        assert group["run_id"].nunique() == 14 and len(group) == 14, task
    assert df["us_accuracy"].between(0, 1).all() and df["ds_accuracy"].between(0, 1).all()


def test_xcopa_us_is_copa_from_each_models_commonsense_file() -> None:
    df = pd.read_csv(DATA / "lm_eval_xcopa" / "us_ds.csv")
    for model, us in df.groupby("run_id")["us_accuracy"]:
        raw = json.loads((DATA / "lm_eval_xcopa" / "raw" / f"{model}_common_sense_reasoning_0-shot.json").read_text())
        assert set(us) == {raw["results"]["copa"]["acc"]}, model


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_listed_and_found_by_bench_selection(name: str) -> None:
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(name) == []
    tables = bench.all_tables(name)
    n_models = OPEN_LLM_MODELS if name == "open_llm_leaderboard" else 14
    n_groups = len(OPEN_LLM_DS) if name == "open_llm_leaderboard" else len(LM_EVAL[name][2])
    assert len(tables) == n_groups and {len(us) for _, _, us, _ in tables} == {n_models}
