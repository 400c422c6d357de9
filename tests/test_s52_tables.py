"""The RobustBench tables (session 52: CIFAR-100-C, ImageNet-C with ImageNet-3DCC; CIFAR-10-C now shares their
derive logic in examples/data/robustbench.py) rebuild from their raw files: each folder's ``derive.py``, run on a
copy of the folder (with the shared ``canonical.py`` and ``robustbench.py`` beside it), writes the shipped
``us_ds.csv`` byte for byte; the raw files have the lengths their README records; every group holds all the
table's models with fractions in [0, 1] and the recorded test-set sizes; a row written in RobustBench's own
column order is put back under its header (and only such rows); and each folder is listed in
examples/data/README.md. The tables are found by bench_selection.py through their folders."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tables_rebuild import DATA, bench_selection, import_from, rebuilt_us_ds

rb = import_from(DATA, "robustbench")
CORRUPTIONS, load_json, read_unaggregated, realign = rb.CORRUPTIONS, rb.load_json, rb.read_unaggregated, rb.realign

TABLES = ["robustbench_cifar10c", "robustbench_cifar100c", "robustbench_imagenetc"]
C100 = "robustbench_cifar100c/model_info/cifar100/corruptions/"
INET = "robustbench_imagenetc/model_info/imagenet/corruptions/"
# characters of each raw file as the index reported them (total_chars)
LENGTHS = {
    C100 + "unaggregated_results.csv": 7793, C100 + "unaggregated_results.920cd276.csv": 4814,
    C100 + "Addepalli2021Towards_PARN18.json": 469, C100 + "Addepalli2021Towards_WRN34.json": 470,
    C100 + "Diffenderfer2021Winning_Binary.json": 572, C100 + "Diffenderfer2021Winning_Binary_CARD_Deck.json": 579,
    C100 + "Diffenderfer2021Winning_LRR.json": 550, C100 + "Diffenderfer2021Winning_LRR_CARD_Deck.json": 565,
    C100 + "Gowal2020Uncovering.json": 573, C100 + "Gowal2020Uncovering_extra.json": 572,
    C100 + "Hendrycks2020AugMix_ResNeXt.json": 483, C100 + "Hendrycks2020AugMix_WRN.json": 483,
    INET + "unaggregated_results_2d.csv": 6403, INET + "unaggregated_results_3d.csv": 5029,
    INET + "Tian2022Deeper_DeiT-S.json": 537, INET + "Tian2022Deeper_DeiT-B.json": 536,
    INET + "Erichson2022NoisyMix.json": 624, INET + "Standard_R50.json": 345,
    INET + "Hendrycks2020Many.json": 570, INET + "Geirhos2018_SIN.json": 570,
    INET + "Hendrycks2020AugMix.json": 474, INET + "Geirhos2018_SIN_IN.json": 590,
    INET + "Geirhos2018_SIN_IN_IN.json": 628, INET + "Salman2020Do_50_2_Linf.json": 447,
}
# (models, DS tasks, protocols, US task, us_n) of each new table
FACTS = {
    "robustbench_cifar100c": (10, 75, {"corruption-shift"}, "cifar100-test", 10000),
    "robustbench_imagenetc": (10, 135, {"corruption-shift", "corruption-shift-3d"}, "imagenet-val", 5000),
}


@pytest.mark.parametrize("name", TABLES)
def test_derive_rebuilds_the_shipped_us_ds(tmp_path: Path, name: str) -> None:
    assert rebuilt_us_ds(tmp_path, name, ("robustbench.py",)) == (DATA / name / "us_ds.csv").read_bytes()


def test_raw_files_have_the_recorded_lengths_and_none_is_missing() -> None:
    for path, chars in LENGTHS.items():
        assert len((DATA / path).read_bytes().decode("utf-8")) == chars, path
    for name in FACTS:
        raw = {str(p.relative_to(DATA)) for p in (DATA / name / "model_info").rglob("*") if p.is_file()}
        assert raw == {p for p in LENGTHS if p.startswith(name + "/")}
        assert (DATA / name / "LICENSE").read_text().startswith("The code of the RobustBench benchmark is released "
                                                                  "under the MIT license.")
    # the ImageNet files are stored with CRLF line ends (11 lines each), kept so
    assert (DATA / INET / "unaggregated_results_2d.csv").read_bytes().count(b"\r\n") == 11


@pytest.mark.parametrize("name", sorted(FACTS))
def test_every_group_has_all_models_fractions_and_sizes(name: str) -> None:
    n_models, n_tasks, protocols, us_task, us_n = FACTS[name]
    df = pd.read_csv(DATA / name / "us_ds.csv")
    assert set(df["source"]) == {name} and set(df["eval_protocol"]) == {"shift"}
    assert set(df["protocol"]) == protocols and set(df["us_task"]) == {us_task}
    assert df["run_id"].nunique() == n_models and df["ds_task"].nunique() == n_tasks
    assert df["us_accuracy"].between(0, 1).all() and df["ds_accuracy"].between(0, 1).all()
    assert set(df["us_n"]) == {us_n}
    for task, group in df.groupby("ds_task"):
        assert len(group) == n_models and group["run_id"].nunique() == n_models, task
    # one clean accuracy per model; ds_n is the test size except where the values are rounded to 3 decimals
    assert (df.groupby("run_id")["us_accuracy"].nunique() == 1).all()
    unknown = df[df["ds_n"].isna()]
    assert set(df["ds_n"].dropna()) == {us_n}
    if name == "robustbench_imagenetc":
        assert set(unknown["run_id"]) == {"Tian2022Deeper_DeiT-S", "Tian2022Deeper_DeiT-B"}
        assert set(unknown["protocol"]) == {"corruption-shift-3d"} and len(unknown) == 2 * 60
    else:
        assert unknown.empty
    assert f"| `{name}/` |" in (DATA / "README.md").read_text()


def test_bench_selection_finds_the_new_tables_through_their_folders() -> None:
    bench = bench_selection()
    for name, (n_models, n_tasks, *_) in FACTS.items():
        assert bench.unknown_tables(name) == []
        tables = bench.all_tables(name)
        assert len(tables) == n_tasks and {len(us) for _, _, us, _ in tables} == {n_models}


def test_realign_puts_back_only_the_rows_written_in_robustbench_order() -> None:
    """The shipped files: the NoisyMix row of CIFAR-100-C and the two Tian2022 rows of both ImageNet files are
    moved, nothing else (CIFAR-10-C's header is already in RobustBench's order). A row of the CIFAR-10-C table
    rewritten in RobustBench's order under a shuffled header comes back to its values."""
    u, _ = read_unaggregated(str(DATA / C100 / "unaggregated_results.csv"))
    assert realign(u, CORRUPTIONS)[1] == ["Erichson2022NoisyMix"]
    u, _ = read_unaggregated(str(DATA / INET / "unaggregated_results_2d.csv"))
    fixed, moved = realign(u, CORRUPTIONS)
    assert moved == ["Tian2022Deeper_DeiT-S", "Tian2022Deeper_DeiT-B"]
    # the DeiT-S block under 'brightness' was its pixelate block (4th in RobustBench's order is pixelate, the
    # file's 7th block is brightness): after realign brightness-1 is 0.7418, before it read 0.723
    assert u.loc["Tian2022Deeper_DeiT-S", ("brightness", "1")] == 0.723
    assert fixed.loc["Tian2022Deeper_DeiT-S", ("brightness", "1")] == 0.7418
    assert (fixed.drop(index=moved) == u.drop(index=moved)).all().all()

    c10, _ = read_unaggregated(str(DATA / "robustbench_cifar10c/model_info/cifar10/corruptions/unaggregated_results.csv"))
    assert realign(c10, CORRUPTIONS)[1] == []
    names = list(dict.fromkeys(c[0] for c in c10.columns))
    header = names[5:] + names[:5]                      # a header in another order than RobustBench's
    shuffled = c10[[(n, s) for n in header for s in ("1", "2", "3", "4", "5")]].copy()
    model = "Kireev2021Effectiveness_RLAT"
    x = np.array(shuffled.to_numpy(float))
    i = list(shuffled.index).index(model)
    x[i] = c10.loc[model, [(n, s) for n in CORRUPTIONS for s in ("1", "2", "3", "4", "5")]].to_numpy(float)
    written = pd.DataFrame(x, index=shuffled.index, columns=shuffled.columns)
    back, moved = realign(written, CORRUPTIONS)
    assert moved == [model]
    assert np.array_equal(back.to_numpy(float), shuffled.to_numpy(float))


def test_load_json_reads_past_a_trailing_comma() -> None:
    info = load_json(str(DATA / INET / "Erichson2022NoisyMix.json"))
    assert info["clean_acc"] == "77.14" and info["corruptions_acc_3d"] == "53.10"
