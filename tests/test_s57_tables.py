"""One more public table (session 57):

* examples/data/pythia_deduped/: the zero-shot lm-evaluation-harness results of the Pythia v1.1 models trained on
  the deduplicated Pile (evals/pythia-v1/pythia-<size>-deduped/zero-shot/*.json of EleutherAI/pythia, Apache-2.0):
  24 checkpoints of 8 sizes, zero-shot LAMBADA against 64 zero-shot tasks, with the US task and DS-task rule of
  examples/data/pythia/.

It rebuilds from its raw files: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py``,
``lm_eval.py`` and ``pythia.py`` beside it; ``pythia.py`` now takes the model-name ``variant`` ``-deduped``), writes
the shipped ``us_ds.csv`` byte for byte and prints its summary; the checkpoints are the ones the README's rule picks
from the index's file list; the raw files are the ones ``sources.csv`` lists (repository path, commit, length) and
their digest is the one recorded here; the licence is examples/data/pythia's; the transcribed files are consistent
with themselves (every accuracy an exact k/n and its standard error sqrt(p(1-p)/(n-1)) with one n per task); every
group has the models, test-set size and accuracy range the README states, one US accuracy per model, read from the
raw files with the json module; meta-study's ingest takes the file as it is (every row stored, none quarantined);
the folder is listed in examples/data/README.md, and bench_selection.py finds its groups."""

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

NAME = "pythia_deduped"
SEP = "-deduped_step"
SUMMARY = "24 files, 24 models, 64 ds_tasks, 1536 rows"
# sha256 over the raw files in sorted order, each as b"raw/<name>" + b"\0" + its bytes
RAW_DIGEST = "72b1780e1b724d7d9eba8a96576d99dc9b1b0c4956161bf9cd6c6aec3c840add"
# the zero-shot steps >= 1000 the stored index lists under evals/pythia-v1/pythia-<size>-deduped/zero-shot
INDEX = {"70m": [33000, 43000, 73000, 93000, 103000], "160m": [1000, 3000, 83000, 113000, 133000],
         "410m": [1000, 23000, 53000, 143000], "1b": [33000, 53000, 63000, 73000, 93000, 123000],
         "1.4b": [1000, 3000, 143000], "2.8b": [23000, 53000, 73000, 83000, 103000, 113000],
         "6.9b": [1000, 53000, 83000, 93000, 123000],
         "12b": [1000, 3000, 13000, 33000, 83000, 93000, 113000, 133000]}
STEPS = {"70m": [33000, 73000, 103000], "160m": [1000, 83000, 133000], "410m": [1000, 53000, 143000],
         "1b": [33000, 73000, 123000], "1.4b": [1000, 3000, 143000], "2.8b": [23000, 73000, 113000],
         "6.9b": [1000, 53000, 123000], "12b": [1000, 83000, 133000]}
MODELS = [f"pythia-{size}-deduped@step{step}" for size, steps in STEPS.items() for step in steps]
US = ("lambada_openai", 5153, 0.030079565301765962, 0.7083252474286823)
# DS task: (test-set size, lowest accuracy, highest accuracy) over the 24 checkpoints; and the 57 MMLU subjects
GROUPS = {
    "arc_challenge": (1172, 0.17064846416382254, 0.3378839590443686),
    "arc_easy": (2376, 0.2958754208754209, 0.7087542087542088),
    "logiqa": (651, 0.17665130568356374, 0.2350230414746544),
    "piqa": (1838, 0.5478781284004353, 0.7595212187159956),
    "sciq": (1000, 0.408, 0.926),
    "winogrande": (1267, 0.4909234411996843, 0.6511444356748224),
    "wsc": (104, 37 / 104, 58 / 104),
}
MMLU = 57


def _raw() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="ascii")) for p in sorted((DATA / NAME / "raw").glob("*.json"))}


def _spread(steps: list[int]) -> list[int]:
    """The README's rule: the lowest step, the highest, and the one nearest their midpoint (ties to the lower);
    every step where there are 3 or fewer."""
    if len(steps) <= 3:
        return sorted(steps)
    lo, hi = min(steps), max(steps)
    mid = min(sorted(steps)[1:-1], key=lambda s: (abs(s - (lo + hi) / 2), s))
    return [lo, mid, hi]


def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    check_rebuild(tmp_path, NAME, SUMMARY, shared=("lm_eval.py", "pythia.py"))


def test_the_checkpoints_are_the_ones_the_rule_picks_from_the_index() -> None:
    assert {size: _spread(steps) for size, steps in INDEX.items()} == STEPS
    names = sorted(p.name for p in (DATA / NAME / "raw").glob("*.json"))
    assert names == sorted(f"{size}{SEP}{step}.json" for size, steps in STEPS.items() for step in steps)


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
        size = Path(row["file"]).name.split(SEP)[0]
        assert row["repository_path"] == f"evals/pythia-v1/pythia-{size}-deduped/zero-shot/{Path(row['file']).name}"
        assert re.fullmatch(r"[0-9a-f]{40}", row["commit"])
        digest.update(row["file"].encode() + b"\0" + raw)
    assert digest.hexdigest() == RAW_DIGEST
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["LICENSE", "README.md", "derive.py", "raw", "sources.csv", "us_ds.csv"])
    assert (folder / "LICENSE").read_bytes() == (DATA / "pythia" / "LICENSE").read_bytes()


def test_raw_files_are_zero_shot_runs_of_the_models_named() -> None:
    """Each file is the lm-eval output of its own deduplicated checkpoint (model_args names the size, ``-deduped``
    and the revision), at zero shots, with the same 87 tasks (65 with an accuracy, 22 crows_pairs) and a versions
    block of 0s in the order of results, written as json.dumps(indent=2) writes it."""
    tasks = None
    for name, d in _raw().items():
        size, step = name[:-len(".json")].split(SEP)
        assert d["config"]["num_fewshot"] == 0, name
        assert d["config"]["model_args"].endswith(f"pretrained=EleutherAI/pythia-v1.1-{size}-deduped,revision=step{step}")
        assert list(d["versions"]) == list(d["results"]) and set(d["versions"].values()) == {0}
        tasks = tasks or set(d["results"])
        assert set(d["results"]) == tasks and len(tasks) == 87, name
        assert json.dumps(d, indent=2) == (DATA / NAME / "raw" / name).read_text(encoding="ascii"), name
    assert sum(t.startswith("crows_pairs_") for t in tasks) == 22


def test_raw_accuracies_agree_with_their_standard_errors() -> None:
    """The check behind the transcription: each accuracy is k/n for the task's n, and its stderr is
    sqrt(p(1-p)/(n-1)) to a relative 1e-9 (lm-eval's sample standard error), for acc and acc_norm alike."""
    sizes = dict(pd.read_csv(DATA / NAME / "us_ds.csv").groupby("ds_task")["ds_n"].first())
    sizes[US[0]] = US[1]
    pairs = check_lm_eval_stderrs(_raw().values(), sizes)
    assert pairs == 3048   # 24 files x (62 tasks x 2 + WinoGrande, WSC, LAMBADA without acc_norm)


def test_every_group_has_its_models_and_its_accuracy_range() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    assert set(df["source"]) == {NAME} and set(df["us_task"]) == {US[0]}
    assert set(df["eval_protocol"]) == {"zeroshot"} and set(df["protocol"]) == {"zeroshot-lm"}
    assert set(df["shots"]) == {0} and (df["run_id"] == df["model_name"]).all()
    assert sorted(set(df["run_id"])) == sorted(MODELS)
    assert not set(df["run_id"]) & set(pd.read_csv(DATA / "pythia" / "us_ds.csv")["run_id"])
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
        size, step = name[:-len(".json")].split(SEP)
        assert us.loc[f"pythia-{size}-deduped@step{step}", "first"] == pytest.approx(d["results"][US[0]]["acc"],
                                                                                     rel=1e-12)


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
