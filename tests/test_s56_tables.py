"""One more public table (session 56):

* examples/data/bigscience_tr3/: BigScience's tr3 results through training (evaluation/results/tr3/
  tr3_results_through_training.json of bigscience-workshop/bigscience, Apache-2.0): three 1.3B GPT models (OSCAR,
  C4, the Pile) at the same 11 checkpoints, zero-shot LAMBADA against 26 zero-shot lm-eval tasks.

It rebuilds from its raw file: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py`` beside
it), writes the shipped ``us_ds.csv`` byte for byte and prints its summary; the raw file is the one its README names
(sha256, size, ASCII with LF line ends) and the licence the repository's text; the transcribed file is consistent
with itself (every accuracy an exact k/n and its standard error sqrt(p(1-p)/(n-1)) with one n per task); every group
has the models, test-set size and accuracy range the README states, one US accuracy per model, read from the raw
file with the json module; meta-study's ingest takes the file as it is (every row stored, none quarantined); the
folder is listed in examples/data/README.md, and bench_selection.py finds its groups."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, check_rebuild, check_sources

from meta_study.ingest import ingest_sources, open_sources
from meta_study.store import Store

NAME = "bigscience_tr3"
RAW = "tr3_results_through_training.json"   # evaluation/results/tr3/ of bigscience-workshop/bigscience at 5cd4e36
RAW_SHA = "5b5b258647f3d49bc8483f308bccfec8e1ad401770713253546a7c2fe42d64ef"
RAW_SIZE = 123396
LICENCE = ("Apache Software License 2.0\n\nCopyright (c) 2021, Stas Bekman\n",
           "95f28db62f8d98ce36a8cd2963ff052327315f50d9157057dcbd9632ed422850", 583)
SUMMARY = "3 runs x 11 checkpoints, 33 models, 26 ds_tasks, 858 rows"
RUNS = {"tr3d-1B3-oscar-checkpoints": "tr3d-1B3-oscar", "tr3e-1B3-c4-checkpoints": "tr3e-1B3-c4",
        "tr3m-1B3-pile-checkpoints": "tr3m-1B3-pile"}
STEPS = [19500, 28500, 37500, 48000, 57000, 66000, 76500, 85500, 94500, 105000, 114000]
US = ("lambada", 5153, 0.08092373374733165, 0.5618086551523385)
# DS task: (test-set size, lowest accuracy, highest accuracy) over the 33 checkpoints
GROUPS = {
    "arc_challenge": (1172, 0.181740614334471, 0.2508532423208191),
    "arc_easy": (2376, 0.35058922558922556, 0.5631313131313131),
    "boolq": (3270, 0.518960244648318, 0.6128440366972477),
    "copa": (100, 0.51, 0.74),
    "headqa": (2742, 0.2075127644055434, 0.22720641867250183),
    "hellaswag": (10042, 0.276638119896435, 0.41884086835291773),
    "logiqa": (651, 0.2012288786482335, 0.24423963133640553),
    "mathqa": (2985, 0.18659966499162478, 0.2522613065326633),
    "mrpc": (408, 0.4117647058823529, 0.6887254901960784),
    "multirc": (953, 0.007345225603357817, 0.03147953830010493),
    "openbookqa": (500, 0.144, 0.226),
    "piqa": (1838, 0.588683351468988, 0.7323177366702938),
    "prost": (18736, 0.20997011101622545, 0.25816609735269),
    "pubmedqa": (1000, 0.424, 0.581),
    "qnli": (5463, 0.4706205381658429, 0.5151015925315761),
    "qqp": (40430, 0.36816720257234725, 0.42278011377689834),
    "race": (1045, 0.2698564593301435, 0.3368421052631579),
    "rte": (277, 0.4981949458483754, 0.5703971119133574),
    "sciq": (1000, 0.538, 0.84),
    "sst": (872, 0.49770642201834864, 0.8371559633027523),
    "triviaqa": (11313, 0.0006187571820030054, 0.05082648280738973),
    "webqs": (2032, 0.0, 0.023622047244094488),
    "wic": (638, 0.48119122257053293, 0.5235109717868338),
    "winogrande": (1267, 0.4972375690607735, 0.5659037095501184),
    "wnli": (71, 0.0, 0.5633802816901409),
    "wsc": (104, 0.3557692307692308, 0.5576923076923077),
}
MODELS = len(RUNS) * len(STEPS)


def _raw() -> dict:
    return json.loads((DATA / NAME / RAW).read_text(encoding="ascii"))


def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    check_rebuild(tmp_path, NAME, SUMMARY, shared=("bigscience.py", "lm_eval.py"))


def test_raw_file_and_licence_are_the_sources() -> None:
    check_sources(NAME, RAW, RAW_SHA, RAW_SIZE, LICENCE)


def test_raw_file_is_the_transcription_the_readme_describes() -> None:
    """ASCII, LF line ends, final newline; 11 values in every list, for the same 28 tasks in each run; the page the
    index returns at offset 80,000 starts inside the C4 run's WinoGrande stderr list."""
    raw = (DATA / NAME / RAW).read_bytes()
    assert raw.isascii() and b"\r" not in raw and raw.endswith(b"}\n")
    assert raw[80000:].startswith(b"052481306049516,\n                    0.014037241309573642,")
    d = _raw()
    assert d["checkpoint_steps"] == STEPS and set(d["results"]) == set(RUNS)
    assert [b - a for a, b in zip(d["tokens"], d["tokens"][1:])] == [
        1048576 * (b - a) for a, b in zip(STEPS, STEPS[1:])]   # 2,048 x 512 tokens per step
    tasks = {run: set(t) for run, t in d["results"].items()}
    assert all(t == tasks["tr3d-1B3-oscar-checkpoints"] for t in tasks.values())
    assert len(tasks["tr3d-1B3-oscar-checkpoints"]) == 28
    for run in d["results"].values():
        for metrics in run.values():
            assert all(len(values) == len(STEPS) for values in metrics.values())


def test_raw_accuracies_agree_with_their_standard_errors() -> None:
    """The check behind the transcription: each accuracy is k/n for the task's n, and its stderr is
    sqrt(p(1-p)/(n-1)) to a relative 1e-9 (lm-eval's sample standard error), for acc and acc_norm alike."""
    sizes = {"lambada": US[1], **{task: g[0] for task, g in GROUPS.items()}}
    pairs = 0
    for run in _raw()["results"].values():
        for task, metrics in run.items():
            for acc_key in ("acc", "acc_norm"):
                if acc_key not in metrics:
                    continue
                n = sizes[task]
                for p, se in zip(metrics[acc_key], metrics[f"{acc_key}_stderr"]):
                    assert p * n == pytest.approx(round(p * n), abs=1e-6), (task, p)
                    assert se == pytest.approx((p * (1 - p) / (n - 1)) ** 0.5, rel=1e-9, abs=1e-15), (task, p, se)
                    pairs += 1
    assert pairs == 1221   # 6 of them p = 0 with stderr 0 (WebQS, WNLI)


def test_every_group_has_its_models_and_its_accuracy_range() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    assert set(df["source"]) == {NAME} and set(df["us_task"]) == {US[0]}
    assert set(df["eval_protocol"]) == {"zeroshot"} and set(df["protocol"]) == {"zeroshot-lm"}
    assert set(df["shots"]) == {0} and (df["run_id"] == df["model_name"]).all()
    assert set(df["ds_task"]) == set(GROUPS) and len(df) == MODELS * len(GROUPS)
    assert (df["us_n"] == US[1]).all()
    assert (df["us_accuracy"].min(), df["us_accuracy"].max()) == pytest.approx(US[2:], rel=1e-12)
    for task, group in df.groupby("ds_task"):
        n, lo, hi = GROUPS[task]
        assert (group["ds_n"] == n).all(), task
        assert len(group) == MODELS and group["run_id"].nunique() == MODELS, task
        assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == pytest.approx((lo, hi), rel=1e-12), task
    assert "mc_taco" not in set(df["ds_task"])   # em/f1 only, no accuracy


def test_one_us_accuracy_per_checkpoint_read_from_the_raw_file() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all() and len(us) == MODELS
    raw = _raw()["results"]
    for run, prefix in RUNS.items():
        for step, acc in zip(STEPS, raw[run]["lambada"]["acc"]):
            assert us.loc[f"{prefix}@step{step}", "first"] == pytest.approx(acc, rel=1e-12)
    # the Pile run leads LAMBADA at every checkpoint (README caveat)
    lam = {prefix: raw[run]["lambada"]["acc"] for run, prefix in RUNS.items()}
    assert all(p > max(o, c) for p, o, c in zip(lam["tr3m-1B3-pile"], lam["tr3d-1B3-oscar"], lam["tr3e-1B3-c4"]))


def test_ingest_stores_every_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    (report,) = ingest_sources(open_sources([str(DATA / NAME / "us_ds.csv")], None), store)
    assert (report.new, report.quarantined, report.error) == (MODELS * len(GROUPS), 0, None)
    stored = store.to_pandas()
    assert set(stored["source"]) == {NAME}
    assert stored.groupby("ds_task").size().to_dict() == {task: MODELS for task in GROUPS}
    assert stored["run_id"].nunique() == MODELS


def test_listed_and_found_by_bench_selection() -> None:
    assert f"| `{NAME}/` |" in (DATA / "README.md").read_text()
    bench = bench_selection()
    assert bench.unknown_tables(NAME) == []
    tables = bench.all_tables(NAME)
    assert len(tables) == len(GROUPS)
    assert sorted(len(us) for _, _, us, _ in tables) == [MODELS] * len(GROUPS)
