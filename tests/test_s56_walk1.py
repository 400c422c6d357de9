"""First-hour walkthrough (s56), through the real CLI: (1) `ingest examples/data` told the user to
name `examples/data/*/` (every folder's raw tables beside its us_ds.csv), and that ingest then
proposed the timm mappings for all 29 files, BigCode's and DCLM's included; (2) `--help` showed
`x<=100000` for `--samples` while 5 was refused (`[10, 100000]`), `x<=10000` for `--trials` while 0
was refused, and nothing of `--sizes`' integers >= 3. Each test failed before its fix."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from meta_study import defaults as D
from meta_study.analysis.bootstrap import BootstrapOptions
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.errors import OptionError
from conftest import REPO, run_cli

TIMM = REPO / "examples" / "data" / "timm"


def _canonical(path: Path) -> None:
    """A table in meta-study's columns (it ingests as it is)."""
    pd.DataFrame({"run_id": ["r1", "r2"], "us_task": "in1k", "us_accuracy": [0.7, 0.8], "ds_task": "pets",
                  "ds_accuracy": [0.5, 0.6], "eval_protocol": "linear"}).to_csv(path, index=False)


def _raw(path: Path) -> None:
    """A leaderboard in its own columns (BigCode's `leaderboard.tsv`): no mapping fits it."""
    path.write_text("Model\tHumanEval-Python\tsize\nm1\t30.1\t1B\nm2\t35.2\t3B\n")


def _folders(root: Path, with_us_ds: int, without: int) -> None:
    for i in range(with_us_ds + without):
        d = root / f"f{i}"
        d.mkdir(parents=True)
        _raw(d / "leaderboard.tsv")
        if i < with_us_ds:
            _canonical(d / "us_ds.csv")


def _failed(out: str) -> list[str]:
    return [line for line in out.splitlines() if ": FAILED: " in line]


# -- 1a. a directory of data folders names the file of one name that ingests as it is ---------------


def test_a_directory_of_folders_names_their_file_that_ingests_as_it_is(tmp_path: Path) -> None:
    """"name them, e.g. data/*/" led to every folder's raw tables; the hint is now the glob of the
    file in meta-study's columns that most folders hold, as examples/data/README.md gives it."""
    _folders(tmp_path / "data", with_us_ds=3, without=1)
    r = run_cli("ingest", "data", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().endswith(
        "(and 3 more sub-directories of data files: name them, e.g. data/*/us_ds.csv, the file in meta-study's "
        "columns that 3 of the 4 hold, which ingests as it is)"), r.stderr
    assert not (tmp_path / "st").exists()
    # folders without such a file keep the generic hint (one of three: no name to give)
    _folders(tmp_path / "other", with_us_ds=1, without=2)
    r = run_cli("ingest", "other", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("(and 2 more sub-directories of data files: name them, e.g. other/*/)"), r.stderr


def test_the_shipped_examples_directory_names_us_ds_csv() -> None:
    r = run_cli("ingest", "examples/data", "--store", "/nonexistent/never-made", cwd=REPO)
    assert r.returncode == 2
    assert "name them, e.g. examples/data/*/us_ds.csv, the file in meta-study's columns that " in r.stderr, r.stderr


# -- 1b. the mapping advice names a mapping for the files it reads, and the others apart -----------


def test_mapping_advice_names_the_files_each_mapping_reads_and_the_others_apart(tmp_path: Path) -> None:
    """`ingest examples/data/*/` proposed timm_wide.yaml ("it joins 6 of them") for 29 files of 26
    folders, BigCode's leaderboard.tsv among them. Now the mapping names its files, and the
    files no shipped mapping reads are named apart, with the file beside them that ingests as it
    is. Exit code 1 (docs/ingest.md: some sources failed, others went in)."""
    timm = tmp_path / "data" / "timm"
    timm.mkdir(parents=True)
    for f in sorted(TIMM.glob("*.csv")):       # the headers and first rows are what the check reads
        (timm / f.name).write_text("".join(f.read_text().splitlines(keepends=True)[:21]))
    big = tmp_path / "data" / "bigc"
    big.mkdir()
    _raw(big / "leaderboard.tsv")
    _canonical(big / "us_ds.csv")
    r = run_cli("ingest", "data/bigc/", "data/timm/", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = _failed(r.stdout + r.stderr)
    assert ("(shipped with meta-study; it joins 6 of them: timm/results-imagenet-a.csv, timm/results-imagenet-r.csv, "
            "timm/results-imagenet-real.csv and 3 more) or --mapping ") in line, line
    assert "(it fits timm/timm_us_ds.csv)" in line, line
    assert line.endswith(
        "; the other 3 (bigc/leaderboard.tsv, timm/results-imagenet-a-clean.csv and timm/results-imagenet-r-clean.csv) "
        "fit no shipped mapping: they lack those columns (a file that has them ingests as it is: the us_ds.csv given "
        "beside them); see docs/ingest.md"), line
    assert "data/bigc/us_ds.csv: 2 new" in r.stdout + r.stderr


# -- 2. --help shows the range that is enforced ----------------------------------------------------


def _store_args(cmd: str, tmp_path: Path) -> list[str]:
    """A store that is not there: the option is refused before it is looked for."""
    store = str(tmp_path / "none")
    return ["--store", store, "--tracking-uri", "none"] if cmd == "refit" else [store]


def _help(cmd: str) -> str:
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())


@pytest.mark.parametrize("cmd", ["bootstrap", "refit", "report"])
def test_samples_help_shows_the_floor_it_refuses_below(cmd: str, tmp_path: Path) -> None:
    assert f"{D.MIN_SAMPLES}<=x<={D.MAX_SAMPLES}]" in _help(cmd)
    r = run_cli(cmd, *_store_args(cmd, tmp_path), "--samples", str(D.MIN_SAMPLES - 1), "--out", str(tmp_path / "o"),
                subprocess_=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"'--samples': {D.MIN_SAMPLES - 1} is less than {D.MIN_SAMPLES}, the fewest it takes" in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", ["sensitivity", "refit", "report"])
def test_trials_help_shows_the_floor_it_refuses_below(cmd: str, tmp_path: Path) -> None:
    assert f"{D.MIN_TRIALS}<=x<={D.MAX_TRIALS}]" in _help(cmd)
    r = run_cli(cmd, *_store_args(cmd, tmp_path), "--trials", "0", "--out", str(tmp_path / "o"), subprocess_=False)
    assert r.returncode == 2 and "'--trials': 0 is less than 1, the fewest it takes" in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", ["sensitivity", "report"])
def test_sizes_help_says_integers_and_their_range(cmd: str) -> None:
    assert f"integers {D.MIN_SIZE} to {D.MAX_SIZE:,}" in _help(cmd)


def test_page_size_help_shows_the_range_ingest_takes(tmp_path: Path) -> None:
    """--page-size showed no range and refused 0 and 60000 ([1, 50000]) once the source was opened."""
    assert f"1<=x<={D.MLFLOW_MAX_PAGE_SIZE}]" in _help("ingest")
    r = run_cli("ingest", str(tmp_path / "x.csv"), "--store", str(tmp_path / "st"), "--page-size", "0")
    assert r.returncode == 2 and "'--page-size'" in r.stderr, r.stderr


def test_the_help_ranges_are_the_librarys() -> None:
    """One number for each bound: what --help shows is what the option dataclasses refuse."""
    bounds = dict(re.findall(r"--(samples|trials) INTEGER RANGE .*?\[default: \d+; (\d+)<=x", _help("report")))
    assert bounds == {"samples": str(D.MIN_SAMPLES), "trials": str(D.MIN_TRIALS)}
    assert BootstrapOptions(samples=D.MIN_SAMPLES).samples == D.MIN_SAMPLES
    assert SensitivityOptions(trials=D.MIN_TRIALS, sizes=(D.MIN_SIZE,)).sizes == (D.MIN_SIZE,)
    for make in (lambda: BootstrapOptions(samples=D.MIN_SAMPLES - 1), lambda: SensitivityOptions(trials=D.MIN_TRIALS - 1),
                 lambda: SensitivityOptions(sizes=(D.MIN_SIZE - 1,))):
        with pytest.raises(OptionError):
            make()
