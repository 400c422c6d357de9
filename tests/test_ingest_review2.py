"""Ingest defects found in the second review: per-task files of one source that deleted each
other's rows with exit code 0, a join whose wide file lacked a second table's accuracy column (a
KeyError traceback), join keys compared as raw text or failing across formats (a pandas merge
traceback), and a text ``NaN`` / ``NA`` in an optional integer column that quarantined every row.

Each test runs ``meta-study ingest`` on small files and checks the exit code, the one error line
or summary line, and the store.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli
from test_ingest_review import _ingest, _write  # noqa: F401 - the same helpers: files, and ingest without a traceback

H = "run_id,model_name,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,shots"


def _task_file(path: Path, task: str, runs: int = 4, offset: float = 0.0) -> Path:
    """One file per downstream task, the same runs in each (a lab's per-task exports)."""
    lines = [H] + [f"m{i},m{i},imagenet,0.{50 + i},{task},{0.4 + offset + i / 100:.2f},linear," for i in range(runs)]
    return _write(path, "\n".join(lines) + "\n")


def _rows(tmp_path: Path, store: str = "st") -> pd.DataFrame:
    return Store(str(tmp_path / store)).to_pandas()


# --------------------------------------------------------------------------------------------
# 1. Files of one source with the same runs
# --------------------------------------------------------------------------------------------

def test_per_task_files_of_one_source_in_one_call_are_refused_before_anything_is_stored(tmp_path):
    """`ingest cifar.csv pets.csv --mapping lab.yaml` (source: lab) stored cifar's rows, then
    pets.csv deleted them ("4 deleted"), exit code 0: only pets remained."""
    _task_file(tmp_path / "cifar.csv", "cifar100")
    _task_file(tmp_path / "pets.csv", "pets")
    _write(tmp_path / "lab.yaml", "source: lab\n")
    r = _ingest(tmp_path, "cifar.csv", "pets.csv", "--mapping", "lab.yaml")
    one_error_line(r, "cifar.csv and pets.csv: both hold run 'm0' and 3 more of source 'lab'",
                   "Nothing was stored", "'join:' mapping", "its own source")
    assert not Store(str(tmp_path / "st")).exists() or len(_rows(tmp_path)) == 0
    # the same with --source on a directory of them, and with a `source` column that both name
    (tmp_path / "d").mkdir()
    for name in ("cifar.csv", "pets.csv"):
        (tmp_path / "d" / name).write_text((tmp_path / name).read_text())
    one_error_line(_ingest(tmp_path, "d", "--source", "lab"), "both hold run 'm0'", "of source 'lab'")
    (tmp_path / "own").mkdir()
    for name in ("cifar", "pets"):
        pd.read_csv(tmp_path / f"{name}.csv").assign(source="lab").to_csv(tmp_path / "own" / f"{name}.csv", index=False)
    one_error_line(_ingest(tmp_path, "own/cifar.csv", "own/pets.csv"), "both hold run 'm0'", "of source 'lab'")
    # files of one source with other runs still go in together, and one file named twice is one file
    _task_file(tmp_path / "more.csv", "cifar100", runs=6)
    _write(tmp_path / "other.csv", H + "\nz1,z1,imagenet,0.5,pets,0.4,linear,\n")
    r = _ingest(tmp_path, "cifar.csv", "other.csv", "cifar.csv", "--mapping", "lab.yaml")
    assert r.returncode == 0, r.stderr
    assert len(_rows(tmp_path)) == 5


def test_a_later_file_of_the_same_source_says_which_rows_it_removed(tmp_path):
    """File A, then in another call file B with the same runs and another task under the same
    explicit source: B replaces the rows of its runs (as a new export would), and its line now
    says that those rows came from A, instead of a bare "4 deleted"."""
    _task_file(tmp_path / "cifar.csv", "cifar100")
    _task_file(tmp_path / "pets.csv", "pets")
    _write(tmp_path / "lab.yaml", "source: lab\n")
    assert _ingest(tmp_path, "cifar.csv", "--mapping", "lab.yaml").returncode == 0
    r = _ingest(tmp_path, "pets.csv", "--mapping", "lab.yaml")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert "4 deleted; 4 deleted rows (4 runs of source 'lab') were stored from " in line, line
    assert str(tmp_path / "cifar.csv") in line and "'join:' mapping" in line, line
    assert set(_rows(tmp_path)["ds_task"]) == {"pets"}
    # a corrected file at the same path replaces its runs' stale rows, as documented, without the note
    _task_file(tmp_path / "pets.csv", "oxford pets")
    r = _ingest(tmp_path, "pets.csv", "--mapping", "lab.yaml")
    line = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and "4 deleted" in line and "were stored from" not in line, line
    assert set(_rows(tmp_path)["ds_task"]) == {"oxford pets"}
    # cifar.csv, unchanged, lost its rows to pets.csv: it is read again (not "unchanged since its
    # last ingest"), its rows come back, and the line names the file whose rows it removed
    r = _ingest(tmp_path, "cifar.csv", "--mapping", "lab.yaml")
    line = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and line.startswith("cifar.csv: 4 new") and str(tmp_path / "pets.csv") in line, line
    assert set(_rows(tmp_path)["ds_task"]) == {"cifar100"}
    r = _ingest(tmp_path, "cifar.csv", "--mapping", "lab.yaml")
    assert "unchanged since its last ingest" in r.stdout, r.stdout


# --------------------------------------------------------------------------------------------
# 2. A wide file serving several join tables
# --------------------------------------------------------------------------------------------

WIDE = '"Model Name","ImageNet Top-1 (%)","cifar100","oxford pets"\n' + "".join(
    f'"m{i}",{55 + i}.5,{53 + i}.25,{50 + i}.75\n' for i in range(4))


def _wide_mapping(pets_column: str) -> str:
    return ("source: zoo\njoin:\n  key: [Model Name]\n"
            '  upstream: {file: wide.csv, task: imagenet, accuracy: "ImageNet Top-1 (%)"}\n'
            "  downstream:\n    - {file: wide.csv, task: cifar100, accuracy: cifar100}\n"
            f'    - {{file: wide.csv, task: pets, accuracy: "{pets_column}"}}\n'
            'rename: {Model Name: model_name}\nrun_id: "{Model Name}"\naccuracy_unit: percent\n'
            "constants: {eval_protocol: linear}\n")


def test_a_wide_join_file_lacking_a_later_tables_accuracy_column_is_one_line(tmp_path):
    """One file serving three tables: only the first table's accuracy column was checked, and a
    wrong name for another one failed as a KeyError traceback."""
    _write(tmp_path / "w" / "wide.csv", WIDE)
    _write(tmp_path / "bad.yaml", _wide_mapping("Pets"))
    one_error_line(_ingest(tmp_path, "w", "--mapping", "bad.yaml"), "wide.csv", "no column(s) 'Pets' needed by the join")
    _write(tmp_path / "good.yaml", _wide_mapping("oxford pets"))
    r = _ingest(tmp_path, "w", "--mapping", "good.yaml")
    assert r.returncode == 0, r.stderr
    assert sorted(_rows(tmp_path)["ds_task"].value_counts().to_dict().items()) == [("cifar100", 4), ("pets", 4)]


# --------------------------------------------------------------------------------------------
# 3. Join keys: across formats, 224.0 and 224, spaces
# --------------------------------------------------------------------------------------------

JOIN = ("source: zoo\njoin:\n  key: [model, img_size]\n"
        "  upstream: {file: 'up.*', task: imagenet, accuracy: top1}\n"
        "  downstream:\n    - {file: 'cifar.*', task: cifar100, accuracy: top1}\n"
        'rename: {model: model_name}\nrun_id: "{model}@{img_size}"\naccuracy_unit: percent\n'
        "constants: {eval_protocol: linear}\n")


def test_a_join_of_parquet_and_csv_matches_integer_keys(tmp_path):
    """A Parquet integer key beside a CSV's text: `ValueError: You are trying to merge on str and
    int64 columns for key 'img_size'`, a traceback."""
    d = tmp_path / "j"
    d.mkdir()
    pd.DataFrame({"model": [f"m{i}" for i in range(4)], "top1": [55.0 + i for i in range(4)],
                  "img_size": [224] * 4}).to_parquet(d / "up.parquet")
    _write(d / "cifar.csv", "model,top1,img_size\n" + "".join(f"m{i},{50 + i}.5,224\n" for i in range(4)))
    _write(tmp_path / "j.yaml", JOIN)
    r = _ingest(tmp_path, "j", "--mapping", "j.yaml")
    assert r.returncode == 0, r.stderr
    df = _rows(tmp_path)
    assert sorted(df["run_id"]) == [f"m{i}@224" for i in range(4)] and len(Store(str(tmp_path / "st")).quarantine()) == 0


def test_join_keys_equal_after_normalising_match(tmp_path):
    """`224.0` in one file never met `224` in the other, nor `m3 ` (a trailing space) `m3`: their
    rows were quarantined as without an upstream row."""
    d = tmp_path / "j"
    _write(d / "up.csv", "model,top1,img_size\n" + "".join(f"m{i},{55 + i}.5,224\n" for i in range(4)))
    _write(d / "cifar.csv", "model,top1,img_size\nm0,50.5,224.0\nm1,51.5,224\nm2,52.5,2.24e2\nm3 ,53.5,224\n")
    _write(tmp_path / "j.yaml", JOIN)
    r = _ingest(tmp_path, "j", "--mapping", "j.yaml")
    assert r.returncode == 0, r.stderr
    assert len(Store(str(tmp_path / "st")).quarantine()) == 0
    df = _rows(tmp_path)
    assert sorted(df["run_id"]) == [f"m{i}@224" for i in range(4)]
    assert df["model_name"].notna().all() and sorted(df["us_accuracy"].round(4)) == [0.555, 0.565, 0.575, 0.585]


# --------------------------------------------------------------------------------------------
# 4. Missing-value texts in optional integer columns
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["NaN", "NA", "nan", "N/A", "null", "#N/A"])
def test_a_missing_value_text_in_an_optional_integer_column_is_null(tmp_path, token):
    """pandas' `to_csv(na_rep='NaN')` or R's `NA` in `shots` quarantined every row ("shots: NaN",
    "wrong type"), where the same text in a float column was stored as null."""
    text = H + ",seed,lr\n" + "".join(f"m{i},m{i},imagenet,0.5,pets,0.4,linear,{token},{token},{token}\n"
                                      for i in range(3))
    _write(tmp_path / "runs.csv", text)
    r = _ingest(tmp_path, "runs.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    df = _rows(tmp_path)
    assert len(df) == 3 and df["shots"].isna().all() and df["seed"].isna().all() and df["lr"].isna().all()
    assert len(Store(str(tmp_path / "st")).quarantine()) == 0
    # a required column keeps its reason
    _write(tmp_path / "req.csv", H + f"\nr1,m,imagenet,0.5,pets,{token},linear,\nr2,m,imagenet,0.5,pets,0.4,linear,5\n")
    r = _ingest(tmp_path, "req.csv", store="st2")
    q = Store(str(tmp_path / "st2")).quarantine().to_pandas()
    assert r.returncode == 0 and len(q) == 1 and q["reason"].iloc[0].startswith("ds_accuracy: "), q


def test_a_name_written_with_a_combining_accent_is_the_same_task(tmp_path):
    """'Café Scènes' typed with é and exported with e + U+0301 looked the same and were two groups;
    `--ds-task` with the other form then matched nothing."""
    import unicodedata

    from meta_study.store import Store

    nfc, nfd = "Café Scènes", unicodedata.normalize("NFD", "Café Scènes")
    assert nfc != nfd
    for name, task, runs in (("a.csv", nfc, range(0, 6)), ("b.csv", nfd, range(6, 12))):
        (tmp_path / name).write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n" + "".join(
            f"m{i},up,{0.3 + 0.05 * i:.2f},{task},{0.2 + 0.04 * i:.2f},linear\n" for i in runs), encoding="utf-8")
        r = run_cli("ingest", str(tmp_path / name), "--store", str(tmp_path / "st"), "--quiet")
        assert r.returncode == 0, r.stderr
    df = Store(str(tmp_path / "st")).to_pandas()
    assert set(df["ds_task"]) == {nfc} and len(df) == 12
    r = run_cli("fit", str(tmp_path / "st"), "--out", str(tmp_path / "o"), "--no-figures", "--ds-task", nfd)
    assert r.returncode == 0, r.stderr


def test_rows_rejected_again_say_they_are_in_the_quarantine_already(tmp_path):
    """A re-ingest said '0 quarantined ...; 2 of 2 rejected': the two were there from before."""
    head = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n"
    rows = "".join(f"m{i},up,{0.3 + 0.05 * i:.2f},pets,{0.2 + 0.04 * i:.2f},linear\n" for i in range(6))
    bad = "b1,up,0.5,pets,,linear\nb2,up,0.6,pets,,linear\n"
    f = tmp_path / "zoo.csv"
    f.write_text(head + rows + bad)
    assert run_cli("ingest", str(f), "--store", str(tmp_path / "st")).returncode == 0
    f.write_text(head + rows + bad + "m9,up,0.9,pets,0.6,linear\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "0 quarantined" in r.stdout, r.stdout
    assert "2 of 9 rows rejected: ds_accuracy: missing required field (2 of them already in the quarantine)" in r.stdout


def test_a_directory_says_which_data_files_it_did_not_read(tmp_path):
    """zoo.json beside zoo.csv was passed over without a word (exit 0)."""
    d = tmp_path / "exports"
    d.mkdir()
    (d / "zoo.csv").write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\n"
                               "m1,up,0.5,pets,0.4,linear\nm2,up,0.6,pets,0.5,linear\n")
    (d / "zoo.json").write_text('[{"run_id": "m3"}]')
    (d / "README.md").write_text("notes")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stderr
    assert f"{d / 'zoo.json'}: skipped (JSON is not read: JSON Lines (one object a line) ends in .jsonl)" in r.stderr
    assert "README" not in r.stderr


def test_a_wide_file_serving_several_tables_quarantines_each_tasks_row(tmp_path):
    """Two rejected rows of one model (two tasks of one wide row) had one payload and became one
    quarantine entry: 40 quarantined of 42 rejected."""
    from meta_study.store import Store

    (tmp_path / "wide.csv").write_text("model,imagenet,c100,pets\nm1,0.5,,\nm2,0.6,0.4,0.3\nm3,0.7,0.5,0.4\n")
    (tmp_path / "map.yaml").write_text(
        "source: zoo\njoin:\n  key: [model]\n  upstream: {file: wide.csv, task: imagenet, accuracy: imagenet}\n"
        "  downstream:\n    - {file: wide.csv, task: c100, accuracy: c100}\n"
        "    - {file: wide.csv, task: pets, accuracy: pets}\n"
        "run_id: \"{model}\"\nconstants: {eval_protocol: linear}\n")
    r = run_cli("ingest", str(tmp_path / "wide.csv"), "--mapping", str(tmp_path / "map.yaml"),
                "--store", str(tmp_path / "st"))
    assert r.returncode == 0 and "4 new" in r.stdout and "2 quarantined" in r.stdout, r.stdout + r.stderr
    q = Store(str(tmp_path / "st")).quarantine().to_pandas()
    assert len(q) == 2 and {'"_table":"c100"' in x or '"_table": "c100"' in x for x in q["raw"]} == {True, False}
