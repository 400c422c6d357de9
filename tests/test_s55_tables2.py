"""One more public table (session 55):

* examples/data/instruct_eval/: InstructEval's problem-solving leaderboard (docs/problem_solving_leaderboard.csv of
  declare-lab/instruct-eval, MIT): MMLU of 56 open LMs, all run by InstructEval's own harness, against BBH, DROP,
  CRASS and HumanEval.

It rebuilds from its raw file: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py`` beside
it), writes the shipped ``us_ds.csv`` byte for byte and prints its summary; the raw file is the one its README names
(sha256, size, CRLF line ends) and the licence the repository's MIT text; every group has the models and the accuracy
range the README states, one US accuracy per model, read from the raw table; the rows above the table's blank line
(human, API models with vendors' numbers) are no models; meta-study's ingest takes the file as it is (every row
stored, none quarantined); the folder is listed in examples/data/README.md, and bench_selection.py finds its groups."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, check_rebuild, check_sources

from meta_study.ingest import ingest_sources, open_sources
from meta_study.store import Store

MIT_START = "MIT License\n\nCopyright (c) 2023 Deep Cognition and Language Research (DeCLaRe) Lab\n"
TABLES = {
    # name: (raw file, its sha256, its size in bytes, (licence start, licence sha256, licence bytes),
    #        derive.py's summary line, US task, US range, eval_protocol, us_n,
    #        {DS task: (protocol, shots, ds_n, models, lowest, highest)})
    "instruct_eval": (   # docs/problem_solving_leaderboard.csv of declare-lab/instruct-eval at 5c8bcc8, 6,073 characters
        "problem_solving_leaderboard.csv", "cda07868df3c81f1f8248f74177a92ec2d2c5b65f2582a56ed8101bb66194a49", 6073,
        (MIT_START, "15ba57885a1e6cec9f85e82fd5ccdf5957a78575b36d9797bbd82f0e936ed30f", 1107),
        "57 table rows read, 56 models, 4 ds_tasks, 217 rows", "mmlu", (0.23, 0.626), "other", None,
        {"bbh": ("instruct-eval", 3, None, 56, 0.108, 0.457), "drop": ("instruct-eval", 3, None, 54, 0.016, 0.672),
         "crass": ("instruct-eval", 3, None, 53, 0.212, 0.942),
         "humaneval": ("instruct-eval", 0, 164, 54, 0.0, 0.365)}),
}
MODELS = {"instruct_eval": 56}


def _raw_us(name: str) -> dict[tuple[str, str], float]:
    """MMLU per row of the raw CSV below its blank line, keyed by (link text, size in billions), read with the csv
    module (not pandas, which derive.py uses); rows without MMLU skipped."""
    text = (DATA / name / TABLES[name][0]).read_text(encoding="ascii")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    blank = next(i for i, r in enumerate(rows) if not r["Model"])
    return {(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", r["Model"]), r["Parameters (B)"]): float(r["MMLU"]) / 100
            for r in rows[blank + 1:] if r["MMLU"]}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    check_rebuild(tmp_path, name, TABLES[name][4])


@pytest.mark.parametrize("name", sorted(TABLES))
def test_raw_file_and_licence_are_the_sources(name: str) -> None:
    check_sources(name, *TABLES[name][:4])


def test_instruct_eval_raw_file_has_the_length_the_index_reports() -> None:
    """The index reports 6,073 characters: 63 lines, each ending in CRLF, all ASCII; its page at offset 5,511 starts
    with the last T5 row's tail."""
    raw = (DATA / "instruct_eval" / TABLES["instruct_eval"][0]).read_bytes()
    assert raw.isascii() and raw.count(b"\r\n") == raw.count(b"\n") == 63 and raw.endswith(b"\r\n")
    assert raw[5511:].startswith(b",T5,0.7,25.6,27.0,5.6,29.2,0.0,17.5\r\n[Flan Alpaca Large]")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_group_has_its_models_and_its_accuracy_range(name: str) -> None:
    us_task, us_range, eval_protocol, us_n, groups = TABLES[name][5:]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and set(df["us_task"]) == {us_task}
    assert set(df["eval_protocol"]) == {eval_protocol} and (df["run_id"] == df["model_name"]).all()
    assert set(df["ds_task"]) == set(groups) and len(df) == sum(g[3] for g in groups.values())
    assert (df["us_accuracy"].min(), df["us_accuracy"].max()) == us_range
    for task, group in df.groupby("ds_task"):
        protocol, shots, ds_n, models, lo, hi = groups[task]
        assert set(group["protocol"]) == {protocol} and set(group["shots"]) == {shots}, task
        assert (group["ds_n"] == ds_n).all() if ds_n else group["ds_n"].isna().all(), task
        assert len(group) == models and group["run_id"].nunique() == models, task
        assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == (lo, hi), task
    # one US accuracy per model, the raw table's
    raw_us = _raw_us(name)
    assert len(raw_us) == MODELS[name]
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all() and len(us) == MODELS[name]
    assert sorted(us["first"]) == sorted(round(v, 6) for v in raw_us.values())
    assert df["us_n"].isna().all() if us_n is None else (df["us_n"] == us_n).all()


def test_instruct_eval_names_and_left_out_rows() -> None:
    """The human baseline and the API models above the blank line are no models; a repeated link text gets its size;
    a blank cell drops only that pair (MOSS Moon has BBH only, StarChat no CRASS, GPTQ 30B no MMLU)."""
    df = pd.read_csv(DATA / "instruct_eval" / "us_ds.csv")
    assert not df["run_id"].str.contains("Human|GPT-4|Palm|ChatGPT|GPTQ").any()
    us = df.groupby("run_id")["us_accuracy"].first()
    raw_us = _raw_us("instruct_eval")
    for run_id, key in (("LLaMA (65B)", ("LLaMA", "65")), ("LLaMA (7B)", ("LLaMA", "7")),
                        ("GPT4 Alpaca Lora (13B)", ("GPT4 Alpaca Lora", "13")), ("Flan T5 Large", ("Flan T5 Large", "0.7"))):
        assert us[run_id] == pytest.approx(raw_us[key], abs=1e-9), run_id
    tasks = df.groupby("run_id")["ds_task"].apply(set)
    assert tasks["Moon Base"] == tasks["Moon SFT"] == {"bbh"}
    assert tasks["StarChat"] == {"bbh", "drop", "humaneval"}
    humaneval = df[df["ds_task"] == "humaneval"].set_index("run_id")["ds_accuracy"]
    assert humaneval["Flan-UL2"] == 0.0 and humaneval["StarCoder"] == 0.329
    assert not df["ds_task"].str.contains("average", case=False).any()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_ingest_stores_every_row(tmp_path: Path, name: str) -> None:
    store = Store(str(tmp_path / "st"))
    (report,) = ingest_sources(open_sources([str(DATA / name / "us_ds.csv")], None), store)
    groups = TABLES[name][9]
    assert (report.new, report.quarantined, report.error) == (sum(g[3] for g in groups.values()), 0, None)
    stored = store.to_pandas()
    assert set(stored["source"]) == {name}
    assert stored.groupby("ds_task").size().to_dict() == {task: g[3] for task, g in groups.items()}
    assert stored["run_id"].nunique() == MODELS[name]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_listed_and_found_by_bench_selection(name: str) -> None:
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(name) == []
    tables = bench.all_tables(name)
    groups = TABLES[name][9]
    assert len(tables) == len(groups)
    assert sorted(len(us) for _, _, us, _ in tables) == sorted(g[3] for g in groups.values())
