"""Ingest review (s47): files that no mapping fits fail in one line, naming the shipped mapping
that fits their columns. Each test failed before its fix, through the CLI as a user runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from meta_study.ingest.mapping import shown_path
from conftest import MAPPINGS, REPO, run_cli

TIMM = REPO / "examples" / "data" / "timm"


def _failed(out: str) -> list[str]:
    return [line for line in out.splitlines() if ": FAILED: " in line]


def _copy_heads(src: Path, dst: Path, names: list[str], rows: int = 20) -> None:
    """The first ``rows`` rows of each file, byte for byte (the header and the model rows)."""
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        lines = (src / n).read_text().splitlines(keepends=True)
        (dst / n).write_text("".join(lines[:rows + 1]))


def _canonical(path: Path) -> None:
    pd.DataFrame({"run_id": ["r1", "r2"], "us_task": "in1k", "us_accuracy": [0.7, 0.8], "ds_task": "pets",
                  "ds_accuracy": [0.5, 0.6], "eval_protocol": "linear"}).to_csv(path, index=False)


def test_timm_directory_without_a_mapping_fails_in_one_line_naming_the_mapping(tmp_path: Path) -> None:
    """``meta-study ingest examples/data/timm/`` without ``--mapping`` printed the same error once
    for each of its 9 files and named no mapping; now one line, exit 2, which names
    ``examples/mappings/timm_wide.yaml`` by a path valid from the working directory."""
    r = run_cli("ingest", "examples/data/timm/", "--store", str(tmp_path / "st"), "--quiet", cwd=REPO)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert line.startswith("examples/data/timm/ (9 files): FAILED: no column for run_id")
    assert "--mapping examples/mappings/timm_wide.yaml" in line
    assert (REPO / "examples/mappings/timm_wide.yaml").is_file()
    assert not (tmp_path / "st").exists() or not list((tmp_path / "st").rglob("*.parquet"))


def test_the_named_mapping_is_valid_from_any_directory(tmp_path: Path) -> None:
    """Run elsewhere, the mapping is named by its absolute path (never ``../../x``), and works."""
    work = tmp_path / "work"
    work.mkdir()
    r = run_cli("ingest", str(TIMM / "timm_us_ds.csv"), "--store", str(tmp_path / "st"), "--quiet", cwd=work)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    named = line.split("use --mapping ", 1)[1].split(" ", 1)[0]
    assert named == str(MAPPINGS / "timm_long.yaml") and os.path.isabs(named)
    ok = run_cli("ingest", str(TIMM / "timm_us_ds.csv"), "--mapping", named, "--store", str(tmp_path / "st"),
                 "--quiet", cwd=work)
    assert ok.returncode == 0 and "7779 new" in ok.stdout, ok.stdout + ok.stderr


def test_the_mapping_is_found_by_columns_not_by_folder_name(tmp_path: Path) -> None:
    """Raw timm result files in a folder of another name: the join mapping that fits them is named."""
    names = ["results-imagenet.csv", "results-imagenet-real.csv", "results-imagenetv2-matched-frequency.csv",
             "results-sketch.csv", "results-imagenet-a.csv", "results-imagenet-r.csv"]
    _copy_heads(TIMM, tmp_path / "my exports", names)
    r = run_cli("ingest", str(tmp_path / "my exports"), "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert "(6 files): FAILED: no column for run_id" in line
    assert f"use --mapping {MAPPINGS / 'timm_wide.yaml'} (shipped with meta-study; it joins them)" in line
    # and it does join them
    ok = run_cli("ingest", str(tmp_path / "my exports"), "--mapping", str(MAPPINGS / "timm_wide.yaml"),
                 "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_files_without_columns_beside_good_ones_fail_in_one_line_naming_them(tmp_path: Path) -> None:
    """A directory of a canonical table and raw tables (as every examples/data/ folder holds): the
    raw ones fail in one line that names them, the canonical one is stored, exit 1."""
    d = tmp_path / "in"
    d.mkdir()
    _canonical(d / "us_ds.csv")
    for n in ("raw_a.csv", "raw_b.csv"):
        pd.DataFrame({"model": ["m"], "acc": [1.0]}).to_csv(d / n, index=False)
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert line == (f"{d}/ (2 files): FAILED: no column for run_id, us_task, us_accuracy, ds_task, ds_accuracy, "
                    "eval_protocol after mapping in raw_a.csv and raw_b.csv (add a mapping with --mapping; see "
                    "docs/ingest.md)")
    assert f"{d}/us_ds.csv: 2 new" in r.stdout


def test_a_mapping_that_fits_no_file_fails_once_per_problem(tmp_path: Path) -> None:
    """``--mapping`` whose renamed columns none of 4 files has: one line, not 4 alike."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        pd.DataFrame({"model": ["m"], "acc": [1.0]}).to_csv(d / f"t{i}.csv", index=False)
    mp = tmp_path / "m.yaml"
    mp.write_text("rename: {arch: model_name}\n")
    r = run_cli("ingest", str(d), "--mapping", str(mp), "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert line.startswith(f"{d}/ (4 files): FAILED: in each file: mapping m.yaml renames column(s) arch not in")


def test_skipped_entries_are_said_when_every_file_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    pd.DataFrame({"model": ["m"], "acc": [1.0]}).to_csv(d / "a.csv", index=False)
    (d / "notes.json").write_text("{}")
    r = run_cli("ingest", str(d), "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2
    assert "notes.json: skipped (JSON is not read" in r.stderr and len(_failed(r.stderr)) == 1


def test_shown_path_is_relative_under_the_working_directory_else_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert shown_path(str(tmp_path / "a" / "m.yaml")) == os.path.join("a", "m.yaml")
    assert shown_path(str(tmp_path.parent / "m.yaml")) == str(tmp_path.parent / "m.yaml")


def test_columns_that_look_like_meta_studys_are_named_in_the_failure(tmp_path: Path) -> None:
    """``Run ID`` for run_id: the line said only "no column for run_id", and the near-miss note
    that names such columns was lost with the failed file."""
    path = tmp_path / "caps.csv"
    path.write_text("Run ID,US task,US accuracy,DS task,DS accuracy,eval_protocol\nr1,in,0.7,pets,0.5,linear\n")
    r = run_cli("ingest", str(path), "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2
    (line,) = _failed(r.stderr)
    assert "did you mean 'Run ID' for run_id, 'US task' for us_task, 'US accuracy' for us_accuracy, 'DS task' for " \
           "ds_task and 1 more?" in line


def test_one_file_of_a_join_names_the_directory_to_give(tmp_path: Path) -> None:
    """``ingest results-imagenet.csv --mapping timm_wide.yaml`` said only "join table
    'results-imagenet-real.csv' matched no input file", with that file right beside it."""
    names = ["results-imagenet.csv", "results-imagenet-real.csv"]
    _copy_heads(TIMM, tmp_path / "t", names)
    r = run_cli("ingest", "t/results-imagenet.csv", "--mapping", str(MAPPINGS / "timm_wide.yaml"),
                "--store", str(tmp_path / "st"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2
    (line,) = _failed(r.stderr)
    assert line.endswith("matched no input file; t/results-imagenet-real.csv is beside the input, not given: a join "
                         "reads every table's file in one ingest, so give their directory (t) or all of them")


def test_a_directory_of_data_directories_says_sub_directories_not_files(tmp_path: Path) -> None:
    """``meta-study ingest examples/data`` said "(and 6 more file(s) not read)" of its 6 other
    sub-directories, and not how to name them."""
    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        _canonical(tmp_path / "data" / name / "us_ds.csv")
    r = run_cli("ingest", "data", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 2
    # s56: each holds a us_ds.csv in meta-study's columns: the glob names it (data/*/ read the raw tables too)
    assert r.stderr.strip().endswith("name it too (and 2 more sub-directories of data files: name them, e.g. "
                                     "data/*/us_ds.csv, the file in meta-study's columns that each of them holds, "
                                     "which ingests as it is)"), r.stderr
