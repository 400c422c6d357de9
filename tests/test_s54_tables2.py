"""Two more public tables (session 54, second batch): bigcode/ (the BigCode Models Leaderboard: HumanEval-Python
pass@1 vs its MultiPL-E Java and JavaScript translations) and superglue/ (the SuperGLUE leaderboard: BoolQ vs six
accuracy columns), as the PyPI package benchbench 1.0.1 ships them (as glue/). Each rebuilds from its
raw file: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py`` beside it), writes the shipped
``us_ds.csv`` byte for byte and prints its summary; the raw file is the one its README names (sha256 and size; for
benchbench's the wheel's RECORD hash), the licence is the source's MIT text; every group has the models and the
accuracy range the README states, one US accuracy per model, read from the raw table; each folder is listed in
examples/data/README.md, and bench_selection.py finds its groups (those with at least its 10 models)."""

import hashlib

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, rebuild

BENCHBENCH_LICENCE = ("MIT License\n\nCopyright (c) 2024 Guanhua Zhang and Moritz Hardt\n",
                      "40673795cabc9f538783dfc2e0eb0f866125d57da983ffd956774ded8fd6b24b", 1087)
TABLES = {
    # name: (raw file, its sha256, its size in bytes, licence, derive.py's summary line, (protocol, eval_protocol),
    #        {DS task: (US task, models, lowest US, highest US, lowest DS accuracy, highest)})
    "bigcode": (  # benchbench/data/bigcode/leaderboard.tsv; RECORD: rN9pomxmNS3DTHm_Ox0h5pPFM7k0GDXHLZF9RLuLUCs
        "leaderboard.tsv", "acdf69a26c66352dc34c79bf3b1d21e693c533b9341835c72d917d44bb8b502b", 2169,
        BENCHBENCH_LICENCE, "41 models read, 41 models, 2 ds_tasks, 82 rows", ("pass@1", "other"),
        {"multipl_e_java": ("humaneval_python", 41, 0.1517, 0.8022, 0.1076, 0.5406),
         "multipl_e_javascript": ("humaneval_python", 41, 0.1517, 0.8022, 0.1338, 0.6624)}),
    "superglue": (  # benchbench/data/superglue/leaderboard.tsv; RECORD: N2-lhjaapPH6JIqczUchsewLPM_Sn8_Bwm7IT2_yOFs
        "leaderboard.tsv", "376fa586369aa4f1fa248a9ccd4721b1ec0b3ccfd29fcfc1c26ec84f6ff2385b", 3297,
        BENCHBENCH_LICENCE, "28 entries read, 27 models, 6 ds_tasks, 162 rows", ("superglue-test", "other"),
        {task: ("boolq", 27, 0.622, 0.924, lo, hi) for task, lo, hi in (
            ("cb", 0.756, 0.992), ("copa", 0.516, 0.994), ("record", 0.136, 0.959), ("rte", 0.497, 0.96),
            ("wic", 0.493, 0.779), ("wsc", 0.61, 0.986))}),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_derive_rebuilds_the_shipped_us_ds(tmp_path, name: str) -> None:
    rebuilt, printed = rebuild(tmp_path, name)
    assert TABLES[name][4] in printed, printed
    assert rebuilt == (DATA / name / "us_ds.csv").read_bytes()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_raw_file_and_licence_are_the_sources(name: str) -> None:
    raw_name, sha, size, (start, licence_sha, licence_size) = TABLES[name][:4]
    folder = DATA / name
    raw = (folder / raw_name).read_bytes()
    assert len(raw) == size and hashlib.sha256(raw).hexdigest() == sha
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["LICENSE", "README.md", "derive.py", raw_name, "us_ds.csv"])
    licence = (folder / "LICENSE").read_bytes()
    assert licence.decode().startswith(start) and len(licence) == licence_size
    assert hashlib.sha256(licence).hexdigest() == licence_sha


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_group_has_its_models_and_accuracy_range(name: str) -> None:
    (protocol, eval_protocol), groups = TABLES[name][5:]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and (df["run_id"] == df["model_name"]).all()
    assert set(df["protocol"]) == {protocol} and set(df["eval_protocol"]) == {eval_protocol}
    assert set(df["ds_task"]) == set(groups) and len(df) == sum(g[1] for g in groups.values())
    for task, group in df.groupby("ds_task"):
        us_task, n, us_lo, us_hi, lo, hi = groups[task]
        assert set(group["us_task"]) == {us_task} and len(group) == n and group["run_id"].nunique() == n, task
        assert (group["us_accuracy"].min(), group["us_accuracy"].max()) == (us_lo, us_hi), task
        assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == (lo, hi), task
    assert (df.groupby("run_id")["us_accuracy"].nunique() == 1).all()   # one US accuracy per model
    assert df["shots"].isna().all()


@pytest.mark.parametrize("name", ["bigcode", "superglue"])
def test_benchbench_tables_read_their_us_from_the_raw_table(name: str) -> None:
    """Each model's US accuracy is the raw table's cell (percent, the accuracy after a '/' where two are given)."""
    model_col, us_col = {"bigcode": ("Models", "humaneval-python"), "superglue": ("Model", "BoolQ")}[name]
    raw = pd.read_csv(DATA / name / "leaderboard.tsv", sep="\t", dtype=str)
    raw_us = raw.assign(**{model_col: raw[model_col].str.strip()}).set_index(model_col)[us_col].astype(float) / 100
    us = pd.read_csv(DATA / name / "us_ds.csv").groupby("run_id")["us_accuracy"].first()
    assert (us - raw_us.loc[us.index]).abs().max() < 1e-9
    assert "SuperGLUE Human Baselines" not in us.index


@pytest.mark.parametrize("name", sorted(TABLES))
def test_listed_and_found_by_bench_selection(name: str) -> None:
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(name) == []
    sizes = sorted(g[1] for g in TABLES[name][6].values() if g[1] >= bench.MIN_MODELS)
    assert sorted(len(us) for _, _, us, _ in bench.all_tables(name)) == sizes
