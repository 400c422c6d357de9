"""An analysis command into a DIR that holds parts of another selection of the same store version,
which it does not make itself, says so in the line of tests/test_s56_outdir.py: `sensitivity A
--ds-task sst2 --out D`, then `fit A --ds-task rte --out D` left the fits of rte beside the
sensitivity of sst2, and nothing was said."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from test_s56_outdir import GLUE, SENS, _ingest


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """One small real store of two GLUE tasks (two groups of 83 models), and a CSV of the same two
    and a third (a file replaces every row of the runs it holds: it keeps both)."""
    root = tmp_path_factory.mktemp("store")
    df = pd.read_csv(GLUE)
    df[df["ds_task"].isin(["sst2", "rte"])].to_csv(root / "a.csv", index=False)
    _ingest(root / "a.csv", root / "store")
    df[df["ds_task"].isin(["sst2", "rte", "qnli"])].to_csv(root / "more.csv", index=False)
    return str(root / "store"), root / "more.csv"


def _notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " also holds " in line]


def _ok(*args: str) -> list[str]:
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    return _notes(r.stdout)


def test_part_of_another_selection_is_named_and_the_advice_clears_it(store, tmp_path):
    a, _ = store
    out = tmp_path / "D"
    assert _ok("sensitivity", a, "--ds-task", "sst2", "--out", str(out), *SENS) == []
    assert _ok("fit", a, "--ds-task", "rte", "--out", str(out), "--no-figures") == [
        f"{out} also holds sensitivity of --ds-task sst2, not of --ds-task rte as this command's fits "
        f"(results.json); remove {out}/sensitivity.parquet (a part of another selection is not replaced), then "
        f"run `meta-study sensitivity {a} --out {out} --ds-task rte --sizes 10,30 --trials 2` to make it of "
        "this selection, or give this command another --out to keep them apart"]
    # the command alone is refused while the part of sst2 is there (so the line says remove it first)
    r = run_cli("sensitivity", a, "--out", str(out), "--ds-task", "rte", "--sizes", "10,30", "--trials", "2",
                "--serial", "--no-figures")
    assert r.returncode == 2 and "made with another selection: --ds-task sst2" in r.stderr, r.stderr
    (out / "sensitivity.parquet").unlink()
    assert _ok("sensitivity", a, "--out", str(out), "--ds-task", "rte", "--sizes", "10,30", "--trials", "2",
               "--serial", "--no-figures") == []
    assert _ok("fit", a, "--ds-task", "rte", "--out", str(out), "--no-figures") == []
    parts = json.loads((out / "results.json").read_text())["parts"]
    assert {p: v["selection"] for p, v in parts.items()} == dict.fromkeys(
        ("fits", "sensitivity"), parts["fits"]["selection"])


def test_several_parts_of_another_selection_and_all_groups(store, tmp_path):
    a, _ = store
    out = tmp_path / "D"
    for cmd in (("bootstrap", "--serial"), ("correlations", "--no-figures")):
        assert _ok(cmd[0], a, "--ds-task", "sst2", "--out", str(out), *cmd[1:]) == []
    # no --ds-task: all groups. report is not named: it refuses the parts of sst2 just as they do
    assert _ok("fit", a, "--out", str(out), "--no-figures") == [
        f"{out} also holds bootstrap and correlations of --ds-task sst2, not of all groups as this command's "
        f"fits (results.json); remove {out}/bootstrap.parquet and {out}/correlations/f21_us_ds_spearman.parquet "
        f"(a part of another selection is not replaced), then run `meta-study bootstrap {a} --out {out}` and "
        f"`meta-study correlations {a} --out {out}` to make them of this selection, or give this command another --out to keep them apart"]


def test_another_selection_of_an_older_version_names_both(store, tmp_path):
    a, more = store
    st = tmp_path / "store"
    shutil.copytree(a, st)
    out = tmp_path / "D"
    assert _ok("sensitivity", str(st), "--ds-task", "sst2", "--out", str(out), *SENS) == []
    _ingest(more, st)     # version 2: the sensitivity in D is of version 1, and of sst2
    assert _ok("fit", str(st), "--ds-task", "rte", "--out", str(out), "--no-figures") == [
        f"{out} also holds sensitivity of --ds-task sst2 in store {st} version 1, not of --ds-task rte in store "
        f"{st} version 2 as this command's fits (results.json); remove {out}/sensitivity.parquet (a part of "
        f"another selection is not replaced), then run `meta-study sensitivity {st} --out {out} --ds-task rte "
        "--sizes 10,30 --trials 2` to make it of this store version and selection, or give this command another "
        "--out to keep them apart"]


def test_nothing_said_for_the_same_selection_or_a_fresh_dir(store, tmp_path):
    a, _ = store
    out = tmp_path / "D"
    assert _ok("sensitivity", a, "--ds-task", "sst2", "--out", str(out), *SENS) == []
    # the same names in another order, and the same selection, are one selection
    assert _ok("fit", a, "--ds-task", "sst2", "--out", str(out), "--no-figures") == []
    both = tmp_path / "E"
    assert _ok("sensitivity", a, "--ds-task", "sst2", "--ds-task", "rte", "--out", str(both), *SENS) == []
    assert _ok("fit", a, "--ds-task", "rte", "--ds-task", "sst2", "--out", str(both), "--no-figures") == []
