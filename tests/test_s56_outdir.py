"""An analysis command into a DIR that holds parts of another store (or an older version of this
one), which it does not make itself, says so in one line: `sensitivity A --out D`, then `fit B
--out D` left A's sensitivity beside B's fits, and only D/results.json recorded it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli

GLUE = Path(__file__).resolve().parents[1] / "examples" / "data" / "glue" / "us_ds.csv"
SENS = ("--serial", "--trials", "2", "--sizes", "10,30", "--no-figures")


def _ingest(csv: Path, store: Path) -> None:
    r = run_cli("ingest", str(csv), "--store", str(store), "--quiet")
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str, Path]:
    """Two small real stores (one GLUE task each: one group of 83 models) and A's second CSV."""
    root = tmp_path_factory.mktemp("stores")
    df = pd.read_csv(GLUE)
    for name, task in (("a", "sst2"), ("b", "rte")):
        df[df["ds_task"] == task].to_csv(root / f"{name}.csv", index=False)
        _ingest(root / f"{name}.csv", root / f"store_{name}")
    df[df["ds_task"] == "qnli"].to_csv(root / "more.csv", index=False)
    return str(root / "store_a"), str(root / "store_b"), root / "more.csv"


def _notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " also holds " in line]


def test_part_of_another_store_is_named_with_the_command_that_updates_it(stores, tmp_path):
    a, b, _ = stores
    out = tmp_path / "D"
    r = run_cli("sensitivity", a, "--out", str(out), *SENS)
    assert r.returncode == 0, r.stderr
    r = run_cli("fit", b, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert _notes(r.stdout) == [
        f"{out} also holds sensitivity of store {a} version 1, not of store {b} version 1 as this command's fits "
        f"(results.json); run `meta-study sensitivity {b} --out {out} --sizes 10,30 --trials 2` to make it of this "
        "store version, or give this command another --out to keep them apart"]
    parts = json.loads((out / "results.json").read_text())["parts"]
    assert parts["sensitivity"]["store"] == a and parts["fits"]["store"] == b
    # the command it names is taken (its options are the part's: a default one is refused), and
    # then nothing in D is of another store
    r = run_cli("sensitivity", b, "--out", str(out), "--sizes", "10,30", "--trials", "2", "--serial", "--no-figures")
    assert r.returncode == 0, r.stderr
    assert _notes(r.stdout) == []
    r = run_cli("fit", b, "--out", str(out), "--no-figures")
    assert r.returncode == 0 and _notes(r.stdout) == [], r.stdout


def test_several_parts_name_report_and_report_says_nothing(stores, tmp_path):
    a, b, _ = stores
    out = tmp_path / "D"
    for cmd in (("bootstrap", a, "--serial"), ("correlations", a, "--no-figures")):
        r = run_cli(cmd[0], cmd[1], "--out", str(out), *cmd[2:])
        assert r.returncode == 0, r.stderr
    r = run_cli("fit", b, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert _notes(r.stdout) == [
        f"{out} also holds bootstrap and correlations of store {a} version 1, not of store {b} version 1 as this "
        f"command's fits (results.json); run `meta-study bootstrap {b} --out {out}` and `meta-study correlations {b} "
        f"--out {out}` to make them of this store version (or `meta-study report {b} --out {out}`, which makes every "
        "part), or give this command another --out to keep them apart"]
    # report makes every part of the one store version: nothing to say, and its page is of B alone
    r = run_cli("report", b, "--out", str(out), "--serial")
    assert r.returncode == 0, r.stderr
    assert _notes(r.stdout) == []
    parts = json.loads((out / "results.json").read_text())["parts"]
    assert {p: v["store"] for p, v in parts.items()} == dict.fromkeys(
        ("bootstrap", "correlations", "fits", "sensitivity"), b)
    assert len({v["store_snapshot"] for v in parts.values()}) == 1
    page = (out / "index.html").read_text()
    assert Path(b).name in page and Path(a).name not in page


def test_an_older_version_of_the_same_store_is_named(stores, tmp_path):
    a, _, more = stores
    store = tmp_path / "store"
    shutil.copytree(a, store)
    out = tmp_path / "D"
    r = run_cli("sensitivity", str(store), "--out", str(out), *SENS)
    assert r.returncode == 0, r.stderr
    _ingest(more, store)     # version 2: the sensitivity in D is of version 1
    r = run_cli("fit", str(store), "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert _notes(r.stdout) == [
        f"{out} also holds sensitivity of store {store} version 1, not of store {store} version 2 as this "
        f"command's fits (results.json); run `meta-study sensitivity {store} --out {out} --sizes 10,30 --trials 2` "
        "to make it of this store version, or give this command another --out to keep them apart"]


def test_nothing_said_for_the_same_store_version_or_a_fresh_dir(stores, tmp_path):
    a, _, _ = stores
    out = tmp_path / "D"
    r = run_cli("sensitivity", a, "--out", str(out), *SENS)
    assert r.returncode == 0 and _notes(r.stdout) == [], r.stdout + r.stderr
    r = run_cli("fit", a, "--out", str(out), "--no-figures")
    assert r.returncode == 0 and _notes(r.stdout) == [], r.stdout + r.stderr
