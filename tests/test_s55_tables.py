"""Two more public tables (session 55):

* examples/data/easyrobust/: the "Non-Adversarial Robust Benchmark" of the EasyRobust toolkit's README as the PyPI
  sdist easyrobust-0.2.4.tar.gz ships it (Apache-2.0): ImageNet-1k val top-1 of 19 robustness-trained models
  against ImageNetV2, -R, -A, -Sketch, ObjectNet and Stylized-ImageNet;
* examples/data/minicpm/: the "Text evaluation" tables of OpenBMB's MiniCPM 1.0 README (OpenBMB/MiniCPM,
  Apache-2.0): MMLU of 20 LMs against C-Eval, CMMLU, HumanEval, MBPP, GSM8K, MATH, BBH, ARC-E/C and HellaSwag.

Each rebuilds from its raw file: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py``
beside it), writes the shipped ``us_ds.csv`` byte for byte and prints its summary; the raw file is the one its
README names (sha256 and size) and the licence the source's Apache-2.0 text; every group has all models and the
accuracy range the README states, one US accuracy per model, read from the raw table; meta-study's ingest takes
the file as it is (every row stored, none quarantined); each folder is listed in examples/data/README.md, and
bench_selection.py finds its groups."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, check_rebuild, check_sources

from meta_study.ingest import ingest_sources, open_sources
from meta_study.store import Store

APACHE_START = "                                 Apache License\n                           Version 2.0, January 2004\n"
TABLES = {
    # name: (raw file, its sha256, its size in bytes, (licence start, licence sha256, licence bytes),
    #        derive.py's summary line, US task, US range, eval_protocol, us_n, {DS task: (protocol, lowest, highest)})
    "easyrobust": (
        "easyrobust_readme.md", "3679efb74b947056d42bd14db430ac574dfba82edab50b806462ebb5da59ba24", 28362,
        ("Copyright 2020-2022 Alibaba Group. All rights reserved.\n\n" + APACHE_START,
         "47c1fb4251a80e3ba4819ae50c0f6ad8f4244a72f3400c3e41ab8dc33c98b183", 11405),
        "19 table rows read, 19 models, 6 ds_tasks, 114 rows", "imagenet-val", (0.7459, 0.821), "shift", 50000,
        {"imagenetv2": ("natural-shift", 0.6243, 0.714), "imagenet-r": ("natural-shift", 0.3743, 0.4964),
         "imagenet-a": ("natural-shift", 0.0195, 0.2693), "imagenet-sketch": ("natural-shift", 0.2471, 0.3646),
         "objectnet": ("natural-shift", 0.1593, 0.2649),
         "stylized-imagenet": ("synthetic-shift", 0.0733, 0.5937)}),
    "minicpm": (   # docs/README-minicpm1-en.md of OpenBMB/MiniCPM at db7efc1, 10,529 characters
        "README-minicpm1-en.md", "a670fc0346dc3d3af164d8913b56b1da30ed5eee5d0168f5870624017fbeb65d", 10537,
        (APACHE_START, "5b61394e447227aaf6b2a1a0876173e3ed4e07eeb229ad46b2bcbc951b683c62", 11335),
        "23 table rows read, 20 models, 10 ds_tasks, 200 rows", "mmlu", (0.243, 0.6295), "other", None,
        {task: ("ultraeval", lo, hi) for task, lo, hi in (
            ("ceval", 0.2337, 0.7088), ("cmmlu", 0.2403, 0.7111), ("humaneval", 0.0671, 0.5),
            ("mbpp", 0.0938, 0.5504), ("gsm8k", 0.0227, 0.5716), ("math", 0.0074, 0.1249), ("bbh", 0.2878, 0.4339),
            ("arc_easy", 0.6077, 0.8628), ("arc_challenge", 0.2815, 0.7338), ("hellaswag", 0.5833, 0.8455))}),
}
MODELS = {"easyrobust": 19, "minicpm": 20}


def _plain(cell: str) -> str:
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell).replace("**", "").strip()


def _raw_us(name: str) -> dict[tuple[str, ...], float]:
    """The US accuracy per row of the raw tables, keyed by the row's name cells, read straight from the lines:
    EasyRobust's (framework, method, model) and ImageNet-Val; MiniCPM's model and MMLU (rows without one skipped)."""
    header, key_cols, us_col = {"easyrobust": ("| Training Framework | Method | Model | Files", 3, 4),
                                "minicpm": ("|Model|Average Score|", 1, 6)}[name]
    lines = (DATA / name / TABLES[name][0]).read_text(encoding="utf-8").splitlines()
    out: dict[tuple[str, ...], float] = {}
    for start in (i for i, line in enumerate(lines) if line.startswith(header)):
        for line in lines[start + 2:]:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            us = cells[us_col].rstrip("%*")
            if us != "-":
                out[tuple(_plain(c) for c in cells[:key_cols])] = float(us) / 100
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    check_rebuild(tmp_path, name, TABLES[name][4])


@pytest.mark.parametrize("name", sorted(TABLES))
def test_raw_file_and_licence_are_the_sources(name: str) -> None:
    check_sources(name, *TABLES[name][:4])


def test_minicpm_raw_file_has_the_length_the_index_reports() -> None:
    """The index reports 10,529 characters for docs/README-minicpm1-en.md; 8 more bytes are the two CJK characters
    of the language switch and two full-width punctuation marks."""
    text = (DATA / "minicpm" / TABLES["minicpm"][0]).read_text(encoding="utf-8")
    assert len(text) == 10529 and sorted({c for c in text if ord(c) > 127}) == sorted("中文，：")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_group_has_all_models_and_its_accuracy_range(name: str) -> None:
    us_task, us_range, eval_protocol, us_n, groups = TABLES[name][5:]
    models = MODELS[name]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and set(df["us_task"]) == {us_task}
    assert set(df["eval_protocol"]) == {eval_protocol} and (df["run_id"] == df["model_name"]).all()
    assert set(df["ds_task"]) == set(groups) and len(df) == models * len(groups)
    assert (df["us_accuracy"].min(), df["us_accuracy"].max()) == us_range
    for task, group in df.groupby("ds_task"):
        protocol, lo, hi = groups[task]
        assert set(group["protocol"]) == {protocol}, task
        assert len(group) == models and group["run_id"].nunique() == models, task
        assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == (lo, hi), task
    # one US accuracy per model, the raw table's (MiniCPM-2B's three identical rows are one key)
    raw_us = _raw_us(name)
    assert len(raw_us) == models
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all() and len(us) == models
    assert sorted(us["first"]) == sorted(round(v, 6) for v in raw_us.values())
    # no DS size or shot count is made up; only ImageNet's 50,000 validation images are known
    assert df[["shots", "ds_n"]].isna().all().all()
    assert (df["us_n"] == us_n).all() if us_n else df["us_n"].isna().all()


def test_easyrobust_names_and_left_out_columns() -> None:
    """One name per row (architecture, method, who trained it); ImageNet-C's mCE (an error relative to AlexNet) and
    the adversarial table (AutoAttack is not transfer) are no tasks."""
    df = pd.read_csv(DATA / "easyrobust" / "us_ds.csv")
    raw_us = _raw_us("easyrobust")
    us = df.groupby("run_id")["us_accuracy"].first()
    for run_id, key in (("ResNet50 SIN+IN [Official]", ("Official", "SIN+IN", "ResNet50")),
                        ("ResNet50 SIN+IN [EasyRobust]", ("EasyRobust (Ours)", "SIN+IN", "ResNet50")),
                        ("DrViT-S [unattributed]", ("-", "-", "DrViT-S"))):
        assert us[run_id] == pytest.approx(raw_us[key], abs=1e-9), run_id
    assert not df["ds_task"].str.contains("imagenet-c|autoattack|mce", case=False).any()
    assert not df["run_id"].str.contains("Adversarial Training").any()


def test_minicpm_keeps_one_minicpm_and_drops_gemini_nano() -> None:
    """MiniCPM-2B closes each of the three tables with the same numbers; Gemini Nano-3B has no MMLU (only three
    numbers quoted from Google's report); a trailing '*' (perplexity-scored) is dropped from the number."""
    df = pd.read_csv(DATA / "minicpm" / "us_ds.csv")
    assert (df["run_id"] == "MiniCPM-2B").sum() == 10 and not df["run_id"].str.contains("Gemini").any()
    llama = df[df["run_id"] == "Llama2-7B"].set_index("ds_task")["ds_accuracy"]
    assert llama["hellaswag"] == 0.7562 and llama["arc_easy"] == 0.7525     # "75.62*" and "75.25"
    assert not df["ds_task"].str.contains("average", case=False).any()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_ingest_stores_every_row(tmp_path: Path, name: str) -> None:
    store = Store(str(tmp_path / "st"))
    (report,) = ingest_sources(open_sources([str(DATA / name / "us_ds.csv")], None), store)
    groups = TABLES[name][9]
    assert (report.new, report.quarantined, report.error) == (MODELS[name] * len(groups), 0, None)
    stored = store.to_pandas()
    assert set(stored["source"]) == {name}
    assert stored.groupby("ds_task").size().to_dict() == {task: MODELS[name] for task in groups}
    assert stored["run_id"].nunique() == MODELS[name]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_listed_and_found_by_bench_selection(name: str) -> None:
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(name) == []
    tables = bench.all_tables(name)
    assert len(tables) == len(TABLES[name][9])
    assert sorted(len(us) for _, _, us, _ in tables) == [MODELS[name]] * len(TABLES[name][9])
