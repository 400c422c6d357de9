"""One more public table (session 57):

* examples/data/bigscience_tr12/: BigScience's tr12 results through training (evaluation/results/tr12/*_agg.json
  of bigscience-workshop/bigscience, Apache-2.0): two 1.3B GPT runs on English OSCAR (filtered, and filtered +
  deduplicated) at 62 and 66 checkpoints, zero-shot LAMBADA against 26 zero-shot lm-eval tasks, with the US task
  and DS-task rule of examples/data/bigscience_tr3/.

It rebuilds from its raw files: ``derive.py``, run on a copy of the folder (with the shared ``canonical.py`` and
``lm_eval.py`` beside it), writes the shipped ``us_ds.csv`` byte for byte and prints its summary; the raw files are
the ones ``sources.csv`` lists (repository path, commit, length, sha256) and the licence is the repository's text
(the one examples/data/bigscience_tr3 ships); the transcribed files are consistent with themselves (every accuracy
an exact k/n and its standard error sqrt(p(1-p)/(n-1)) with one n per task; tokens seen a fixed multiple of the
step); every group has the models, test-set size and accuracy range the README states, one US accuracy per model,
read from the raw files with the json module; meta-study's ingest takes the file as it is (every row stored, none
quarantined), and bench_selection.py finds its groups. (The folder's line in examples/data/README.md is another
change's; it is not checked here.)"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from tables_rebuild import DATA, bench_selection, check_rebuild

from meta_study.ingest import ingest_sources, open_sources
from meta_study.store import Store

NAME = "bigscience_tr12"
SUMMARY = "2 runs x 62+66 checkpoints, 128 models, 26 ds_tasks, 3328 rows"
REPO, COMMIT = "bigscience-workshop/bigscience", "8868679d1d59669d6578bf24ede0b45486e56cfa"
# raw file -> (model prefix, characters, sha256, ends with a newline)
RAW = {
    "raw/tr12a-1B3-oscar-en-filtered_agg.json": (
        "tr12a-1B3-oscar-en-filtered", 146792,
        "54e47eb98b68438603cf7873c7cb41e1e665744517821ae7ed2254b164926951", False),
    "raw/tr12b-1B3-oscar-en-filtered-dedup_agg.json": (
        "tr12b-1B3-oscar-en-filtered-dedup", 156077,
        "0f569813383e6d5ad76d64db47d3962c5d80eb314bfc2e5151746dcf00973bb0", True),
}
LICENCE = ("Apache Software License 2.0\n\nCopyright (c) 2021, Stas Bekman\n",
           "95f28db62f8d98ce36a8cd2963ff052327315f50d9157057dcbd9632ed422850", 583)
ALL_STEPS = list(range(19500, 117001, 1500))   # the 66-step grid; tr12a lacks four of them
STEPS = {"tr12a-1B3-oscar-en-filtered": [s for s in ALL_STEPS if s not in (100500, 102000, 103500, 106500)],
         "tr12b-1B3-oscar-en-filtered-dedup": ALL_STEPS}
MODELS = sum(len(s) for s in STEPS.values())   # 62 + 66
US = ("lambada", 5153, 0.23753153502813895, 0.4812730448282554)
# DS task: (test-set size, lowest accuracy, highest accuracy) over the 128 checkpoints
GROUPS = {
    "arc_challenge": (1172, 0.1885665529010239, 0.24829351535836178),
    "arc_easy": (2376, 0.4132996632996633, 0.5618686868686869),
    "boolq": (3270, 0.5021406727828747, 0.6137614678899083),
    "copa": (100, 0.63, 0.77),
    "headqa_en": (2742, 0.21699489423778265, 0.2636761487964989),
    "hellaswag": (10042, 0.3060147380999801, 0.40290778729336785),
    "logiqa": (651, 0.1935483870967742, 0.2672811059907834),
    "mathqa": (2985, 0.19061976549413737, 0.2324958123953099),
    "mrpc": (408, 0.40441176470588236, 0.6911764705882353),
    "multirc": (953, 0.011542497376705142, 0.03777544596012592),
    "openbookqa": (500, 0.132, 0.232),
    "piqa": (1838, 0.6300326441784548, 0.7236126224156693),
    "prost": (18736, 0.2038855678906917, 0.28869555935098207),
    "pubmedqa": (1000, 0.356, 0.563),
    "qnli": (5463, 0.4814204649460004, 0.5132710964671426),
    "qqp": (40430, 0.36564432352213705, 0.49653722483304474),
    "race": (1045, 0.2822966507177033, 0.3406698564593301),
    "rte": (277, 0.49097472924187724, 0.5812274368231047),
    "sciq": (1000, 0.657, 0.829),
    "sst": (872, 0.49311926605504586, 0.7396788990825688),
    "triviaqa": (11313, 0.004331300274021037, 0.03314770617873243),
    "webqs": (2032, 0.0, 0.015748031496062992),
    "wic": (638, 0.47648902821316613, 0.5188087774294671),
    "winogrande": (1267, 0.4909234411996843, 0.5603788476716653),
    "wnli": (71, 0.4084507042253521, 0.4647887323943662),
    "wsc": (104, 0.34615384615384615, 0.6346153846153846),
}


def _raw() -> dict[str, dict]:
    """model prefix -> the parsed raw file."""
    return {prefix: json.loads((DATA / NAME / path).read_text(encoding="ascii"))
            for path, (prefix, *_) in RAW.items()}


def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    check_rebuild(tmp_path, NAME, SUMMARY, shared=("bigscience.py", "lm_eval.py"))


def test_folder_raw_files_and_licence_are_the_sources() -> None:
    """The folder holds its two raw files (listed in sources.csv with the repository path, commit, length and
    digest), the repository's licence, README, derive.py and us_ds.csv, and nothing else."""
    folder = DATA / NAME
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == sorted(
        ["LICENSE", "README.md", "derive.py", "raw", "sources.csv", "us_ds.csv"])
    assert sorted(p.name for p in (folder / "raw").iterdir()) == sorted(Path(p).name for p in RAW)
    with open(folder / "sources.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert set(rows) == {*RAW, "LICENSE"}
    for path, (_, size, sha, final_newline) in RAW.items():
        raw = (folder / path).read_bytes()
        assert len(raw) == size and hashlib.sha256(raw).hexdigest() == sha, path
        assert raw.isascii() and b"\r" not in raw and raw.endswith(b"}\n" if final_newline else b"\n}"), path
        row = rows[path]
        assert (row["repository"], row["commit"], int(row["chars"]), row["sha256"]) == (REPO, COMMIT, size, sha)
        assert row["path"] == f"evaluation/results/tr12/{Path(path).name}"
    start, licence_sha, licence_size = LICENCE
    text = (folder / "LICENSE").read_bytes()
    assert text.decode().startswith(start) and len(text) == licence_size
    assert hashlib.sha256(text).hexdigest() == licence_sha == rows["LICENSE"]["sha256"]
    assert text == (DATA / "bigscience_tr3" / "LICENSE").read_bytes()
    readme = (folder / "README.md").read_text()
    assert all(sha in readme for _, _, sha, _ in RAW.values()) and COMMIT in readme


def test_raw_files_have_one_value_per_checkpoint_for_the_same_28_tasks() -> None:
    """Each file's checkpoints are its README's steps; tokens seen grow by 1,048,576 (2,048 x 512) per step; every
    list has one value per checkpoint; both runs hold the same 28 tasks."""
    raw = _raw()
    for prefix, d in raw.items():
        assert d["checkpoints"] == STEPS[prefix], prefix
        assert d["tokens"] == [10044178432 + 1048576 * (s - 19500) for s in STEPS[prefix]], prefix
        for metrics in d["results"].values():
            assert all(len(values) == len(STEPS[prefix]) for values in metrics.values())
    tasks = [set(d["results"]) for d in raw.values()]
    assert tasks[0] == tasks[1] and tasks[0] == {US[0], "mc_taco", *GROUPS}


def test_raw_accuracies_agree_with_their_standard_errors() -> None:
    """The check behind the transcription: each accuracy is k/n for the task's n, and its stderr is
    sqrt(p(1-p)/(n-1)) to a relative 1e-9 (lm-eval's sample standard error), for acc and acc_norm alike."""
    sizes = {US[0]: US[1], **{task: g[0] for task, g in GROUPS.items()}}
    pairs = zeros = 0
    for d in _raw().values():
        for task, metrics in d["results"].items():
            for acc_key in ("acc", "acc_norm"):
                if acc_key not in metrics:
                    continue
                n = sizes[task]
                for p, se in zip(metrics[acc_key], metrics[f"{acc_key}_stderr"]):
                    assert p * n == pytest.approx(round(p * n), abs=1e-6), (task, p)
                    assert se == pytest.approx((p * (1 - p) / (n - 1)) ** 0.5, rel=1e-9, abs=1e-15), (task, p, se)
                    pairs += 1
                    zeros += p == 0
    assert (pairs, zeros) == (4736, 4)   # the 4 zeros: WebQS, stderr 0


def test_every_group_has_its_models_and_its_accuracy_range() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    assert set(df["source"]) == {NAME} and set(df["us_task"]) == {US[0]}
    assert set(df["eval_protocol"]) == {"zeroshot"} and set(df["protocol"]) == {"zeroshot-lm"}
    assert set(df["shots"]) == {0} and (df["run_id"] == df["model_name"]).all()
    assert set(df["ds_task"]) == set(GROUPS) and len(df) == MODELS * len(GROUPS) == 3328
    assert (df["us_n"] == US[1]).all()
    assert (df["us_accuracy"].min(), df["us_accuracy"].max()) == pytest.approx(US[2:], rel=1e-12)
    for task, group in df.groupby("ds_task"):
        n, lo, hi = GROUPS[task]
        assert (group["ds_n"] == n).all(), task
        assert len(group) == MODELS and group["run_id"].nunique() == MODELS, task
        assert (group["ds_accuracy"].min(), group["ds_accuracy"].max()) == pytest.approx((lo, hi), rel=1e-12), task
    assert "mc_taco" not in set(df["ds_task"])   # em/f1 only, no accuracy


def test_one_us_accuracy_per_checkpoint_read_from_the_raw_files() -> None:
    df = pd.read_csv(DATA / NAME / "us_ds.csv")
    us = df.groupby("run_id")["us_accuracy"].agg(["nunique", "first"])
    assert (us["nunique"] == 1).all() and len(us) == MODELS
    for prefix, d in _raw().items():
        for step, acc in zip(d["checkpoints"], d["results"][US[0]]["acc"]):
            assert us.loc[f"{prefix}@step{step}", "first"] == pytest.approx(acc, rel=1e-12)
    # README caveat: tr12b's two perplexity spikes are its lowest LAMBADA checkpoints
    dedup = us.loc[[f"tr12b-1B3-oscar-en-filtered-dedup@step{s}" for s in ALL_STEPS], "first"]
    assert list(dedup.nsmallest(2).index) == ["tr12b-1B3-oscar-en-filtered-dedup@step21000",
                                              "tr12b-1B3-oscar-en-filtered-dedup@step27000"]


def test_ingest_stores_every_row(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "st"))
    (report,) = ingest_sources(open_sources([str(DATA / NAME / "us_ds.csv")], None), store)
    assert (report.new, report.quarantined, report.error) == (MODELS * len(GROUPS), 0, None)
    stored = store.to_pandas()
    assert set(stored["source"]) == {NAME}
    assert stored.groupby("ds_task").size().to_dict() == {task: MODELS for task in GROUPS}
    assert stored["run_id"].nunique() == MODELS


def test_found_by_bench_selection() -> None:
    bench = bench_selection()
    assert bench.unknown_tables(NAME) == []
    tables = bench.all_tables(NAME)
    assert len(tables) == len(GROUPS)
    assert sorted(len(us) for _, _, us, _ in tables) == [MODELS] * len(GROUPS)
