"""One more public table (session 56):

* examples/data/pythia_5shot/: the five-shot lm-evaluation-harness results of the standard Pythia v1.1 checkpoints
  (evals/pythia-v1/pythia-<size>/five-shot/*.json of EleutherAI/pythia, Apache-2.0): 21 checkpoints of 6 sizes,
  five-shot LAMBADA against 64 five-shot tasks, with the US task and DS-task rule of examples/data/pythia/.

It rebuilds from its raw files: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py``,
``lm_eval.py`` and ``pythia.py`` beside it), writes the shipped ``us_ds.csv`` byte for byte and prints its
summary; the raw files are the ones ``sources.csv`` lists (repository path, commit, length) and their digest is
the one recorded here; the licence is examples/data/pythia's; the transcribed files are consistent with themselves
(every accuracy an exact k/n and its standard error sqrt(p(1-p)/(n-1)) with one n per task); every group has the
models, test-set size and accuracy range the README states, one US accuracy per model, read from the raw files
with the json module; meta-study's ingest takes the file as it is (every row stored, none quarantined); the folder
is listed in examples/data/README.md, and bench_selection.py finds its groups."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, check_rebuild, check_lm_eval_stderrs

from meta_study.ingest import ingest_sources, open_sources
from meta_study.store import Store

NAME = "pythia_5shot"
SUMMARY = "21 files, 21 models, 64 ds_tasks, 1344 rows"
# sha256 over the raw files in sorted order, each as b"raw/<name>" + b"\0" + its bytes
RAW_DIGEST = "38666ebc5403358112c4205929a92b335d2baad8778a1d537e718e9c0e0f49e6"
STEPS = {"70m": [33000, 63000], "160m": [3000, 13000, 33000, 103000, 143000], "410m": [83000, 133000],
         "1.4b": [23000, 43000, 83000], "6.9b": [33000, 63000, 83000, 103000, 113000, 123000],
         "12b": [33000, 133000, 143000]}
MODELS = [f"pythia-{size}@step{step}" for size, steps in STEPS.items() for step in steps]
US = ("lambada_openai", 5153, 0.15253250533669707, 0.6776634969920434)
# DS task: (test-set size, lowest accuracy, highest accuracy) over the 21 checkpoints; and the 57 MMLU subjects
GROUPS = {
    "arc_challenge": (1172, 0.17064846416382254, 0.371160409556314),
    "arc_easy": (2376, 0.3792087542087542, 0.7146464646464646),
    "logiqa": (651, 0.2119815668202765, 0.27035330261136714),
    "piqa": (1838, 0.5848748639825898, 0.7600652883569097),
    "sciq": (1000, 0.626, 0.953),
    "winogrande": (1267, 0.4972375690607735, 0.6416732438831886),
    "wsc": (104, 38 / 104, 38 / 104),   # the same answer at every checkpoint (README caveat)
}
MMLU = 57


def _raw() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="ascii")) for p in sorted((DATA / NAME / "raw").glob("*.json"))}


def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    check_rebuild(tmp_path, NAME, SUMMARY, shared=("lm_eval.py", "pythia.py"))


def test_raw_files_are_the_sources_listed() -> None:
    """sources.csv names every raw file once (repository path, 40-hex commit, length in characters = bytes, ASCII);
    together they have the recorded digest; the folder holds nothing else; the licence is pythia's."""
    folder = DATA / NAME
    rows = list(csv.DictReader((folder / "sources.csv").open()))
    files = sorted(p.name for p in (folder / "raw").iterdir())
    assert sorted(Path(r["file"]).name for r in rows) == files and len(files) == len(MODELS)
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["file"]):
        raw = (folder / row["file"]).read_bytes()
        assert raw.isascii() and len(raw) == int(row["chars"]), row["file"]
        size = Path(row["file"]).name.split("-5shot_step")[0]
        assert row["repository_path"] == f"evals/pythia-v1/pythia-{size}/five-shot/{Path(row['file']).name}"
        assert re.fullmatch(r"[0-9a-f]{40}", row["commit"])
        digest.update(row["file"].encode() + b"\0" + raw)
    assert digest.hexdigest() == RAW_DIGEST
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["LICENSE", "README.md", "derive.py", "raw", "sources.csv", "us_ds.csv"])
    assert (folder / "LICENSE").read_bytes() == (DATA / "pythia" / "LICENSE").read_bytes()


def test_raw_files_are_five_shot_runs_of_the_models_named() -> None:
    """Each file is the lm-eval output of its own checkpoint (model_args names the size and revision), at five
    shots, with the same 65 tasks and a versions block of 0s in the order of results."""
    tasks = None
    for name, d in _raw().items():
        size, step = name[:-len(".json")].split("-5shot_step")
        assert d["config"]["num_fewshot"] == 5, name
        assert d["config"]["model_args"].endswith(f"pretrained=EleutherAI/pythia-v1.1-{size},revision=step{step}")
        assert list(d["versions"]) == list(d["results"]) and set(d["versions"].values()) == {0}
        tasks = tasks or set(d["results"])
        assert set(d["results"]) == tasks and len(tasks) == 65, name


def test_raw_accuracies_agree_with_their_standard_errors() -> None:
    """The check behind the transcription: each accuracy is k/n for the task's n, and its stderr is
    sqrt(p(1-p)/(n-1)) to a relative 1e-9 (lm-eval's sample standard error), for acc and acc_norm alike."""
    sizes = dict(pd.read_csv(DATA / NAME / "us_ds.csv").groupby("ds_task")["ds_n"].first())
    sizes[US[0]] = US[1]
    pairs = check_lm_eval_stderrs(_raw().values(), sizes)
    assert pairs == 2667   # 21 files x (63 tasks x 2 + WinoGrande, WSC, LAMBADA without acc_norm)


def test_every_group_has_its_models_and_its_accuracy_range() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    assert set(df["source"]) == {NAME} and set(df["us_task"]) == {US[0]}
    assert set(df["eval_protocol"]) == {"other"} and set(df["protocol"]) == {"fewshot-lm"}
    assert set(df["shots"]) == {5} and (df["run_id"] == df["model_name"]).all()
    assert sorted(set(df["run_id"])) == sorted(MODELS)
    mmlu = {t for t in df["ds_task"] if t.startswith("hendrycksTest-")}
    assert set(df["ds_task"]) == set(GROUPS) | mmlu and len(mmlu) == MMLU
    assert len(df) == len(MODELS) * (len(GROUPS) + MMLU) and (df["us_n"] == US[1]).all()
    assert (df["us_accuracy"].min(), df["us_accuracy"].max()) == pytest.approx(US[2:], rel=1e-12)
    for task, group in df.groupby("ds_task"):
        assert len(group) == len(MODELS) and group["run_id"].nunique() == len(MODELS), task
        if task in GROUPS:
            n, lo, hi = GROUPS[task]
            assert (group["ds_n"] == n).all(), task
            assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == pytest.approx((lo, hi), rel=1e-12)
        else:
            assert group["ds_n"].between(100, 1534).all(), task


def test_one_us_accuracy_per_checkpoint_read_from_the_raw_file() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all() and len(us) == len(MODELS)
    for name, d in _raw().items():
        size, step = name[:-len(".json")].split("-5shot_step")
        assert us.loc[f"pythia-{size}@step{step}", "first"] == pytest.approx(d["results"][US[0]]["acc"], rel=1e-12)


def test_ingest_stores_every_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    (report,) = ingest_sources(open_sources([str(DATA / NAME / "us_ds.csv")], None), store)
    rows = len(MODELS) * (len(GROUPS) + MMLU)
    assert (report.new, report.quarantined, report.error) == (rows, 0, None)
    stored = store.to_pandas()
    assert set(stored["source"]) == {NAME} and len(stored) == rows
    assert set(stored.groupby("ds_task").size()) == {len(MODELS)}
    assert stored["run_id"].nunique() == len(MODELS)


def test_listed_and_found_by_bench_selection() -> None:
    assert f"| `{NAME}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(NAME) == []
    tables = bench.all_tables(NAME)
    assert len(tables) == len(GROUPS) + MMLU
    assert sorted(len(us) for _, _, us, _ in tables) == [len(MODELS)] * (len(GROUPS) + MMLU)
