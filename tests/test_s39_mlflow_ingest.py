"""Review of the MLflow source (mlflow_runs.py, mlflow_source.py), stop 39.

- The first page of a source (nothing of it stored) was judged alone by the percent check: with
  small pages, a first page of near-chance runs (hard 0.4 %) was "every value of 'hard' in (0, 1]",
  refused on every ingest (the same page comes first again), though a read of every run stores them.
- The stored values the percent check weighs a page against were read from the store for every
  page (~1 s per 20,000 stored runs, each page): now read once per ingest and kept up to date.
- ``--experiment 17`` selected both the experiment with ID 17 and one named "17", silently.

Each test logs runs to an MLflow sqlite file and runs ``meta-study ingest`` on it, through MLflow's
client (``sqlite:///``) and, where the code is shared, through the SQL source (``mlflow-sql:``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import MAPPINGS, run_cli

PCT = str(MAPPINGS / "mlflow_percent_keys.yaml")


class Lab:
    """An MLflow sqlite file with one experiment, and ingests of it into stores."""

    def __init__(self, tmp: Path, kind: str, empty: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.tmp, self.db = tmp, tmp / "mlflow.db"
        shutil.copyfile(empty, self.db)     # MLflow's tables made once: ~5 s of migrations a file
        self.client = MlflowClient(tracking_uri=f"sqlite:///{self.db}")
        self.exp = self.client.create_experiment("bob")
        self.spec = f"mlflow-sql:sqlite:///{self.db}" if kind == "sql" else f"sqlite:///{self.db}"

    def run(self, us: float, ds: dict[str, float], exp: str | None = None) -> str:
        rid = self.client.create_run(exp or self.exp).info.run_id
        self.client.log_metric(rid, "upstream/top1_pct", us)
        for task, v in ds.items():
            self.client.log_metric(rid, f"eval/{task}/k10_pct", v)
        self.client.set_terminated(rid)
        time.sleep(0.003)    # distinct end times (ms): the pages are cut by end time
        return rid

    def ingest(self, *args: str, store: str = "st"):
        r = run_cli("ingest", self.spec, "--mapping", PCT, "--store", str(self.tmp / store), *args, cwd=self.tmp)
        assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        return r

    def rows(self, store: str = "st") -> pd.DataFrame:
        df = pd.read_parquet(self.tmp / store)[["run_id", "ds_task", "ds_accuracy"]]
        return df.sort_values(["run_id", "ds_task"]).reset_index(drop=True)


def one_error_line(r, *needles: str) -> str:
    """The line a user error prints (exit code 2, no traceback), every needle in it: stderr
    without the progress lines a slow ingest (pages of one run, under load) prints before it."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("  ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stdout, r.stderr)
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


@pytest.fixture(params=["client", "sql"])
def lab(tmp_path, request, empty_db):
    return Lab(tmp_path, request.param, empty_db)


@pytest.fixture
def client_lab(tmp_path, empty_db):
    return Lab(tmp_path, "client", empty_db)


def test_a_first_page_of_near_chance_runs_is_judged_with_the_next_pages(lab):
    """The source's earliest runs (a smoke test at near chance on 'hard') came first, alone: with
    pages of one or two runs that page was refused, on this ingest and every later one. Judged
    with the pages after it, the source goes in as a read of every run at once stores it (the
    REST and the SQL source)."""
    for i, h in enumerate([0.4, 0.6, 2.5, 3.5, 5.0, 6.0]):
        lab.run(70 + i, {"pets": 60 + i, "hard": h})
    assert lab.ingest(store="whole").returncode == 0
    for size in ("1", "2"):
        r = lab.ingest("--page-size", size, store=f"paged{size}")
        assert r.returncode == 0 and "12 new" in r.stdout, r.stdout + r.stderr
        pd.testing.assert_frame_equal(lab.rows(f"paged{size}"), lab.rows("whole"))
        r = lab.ingest("--page-size", size, store=f"paged{size}")   # the next one is a no-op
        assert r.returncode == 0 and "0 new" in r.stdout and "6 runs unchanged" in r.stdout, r.stdout + r.stderr


def test_a_source_in_fractions_is_still_refused_whole_when_paged(lab):
    """Guard: a column declared percent that holds fractions is refused as before, with small
    pages too (judged with the pages after the first: the same counts as a read of every run),
    and nothing of it is stored."""
    for i in range(4):
        lab.run(0.7 + i / 100, {"pets": 0.6 + i / 100})
    whole = one_error_line(lab.ingest(store="whole"), "holds fractions", "nothing of this source was stored")
    paged = one_error_line(lab.ingest("--page-size", "1", store="paged"))
    assert paged == whole
    assert not (lab.tmp / "paged").exists() or not list((lab.tmp / "paged").rglob("*.parquet"))


def test_stored_values_are_counted_once_per_ingest_and_follow_the_pages(lab, monkeypatch):
    """The stored values a page is weighed against: read from the store once per ingest, not once
    per page, and the pages this ingest commits count for the next ones (a fraction on page 3
    among the percents of pages 1-2 is refused, as a read of every run refuses it)."""
    from meta_study.ingest import mlflow_runs

    reads = []
    real = mlflow_runs.StoredValues.read.__func__

    def counted(cls, *a, **k):
        reads.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(mlflow_runs.StoredValues, "read", classmethod(counted))
    for i in range(6):
        lab.run(70 + i, {"pets": 60 + i})
    assert lab.ingest("--page-size", "1").returncode == 0
    assert len(reads) == 1, reads
    lab.run(79, {"pets": 0.84})
    one_error_line(lab.ingest("--page-size", "1"), "for ds_task 'pets': 1 of 7 nonzero values (6 of the 7 stored "
                   "before) are in (0, 1] and 6 above 10")
    reads.clear()
    # the same refusal when the fraction comes after pages of percents read by this same ingest
    for i in range(6):
        lab.run(70 + i, {"pets": 60 + i})
    lab.run(79, {"pets": 0.84})
    one_error_line(lab.ingest("--page-size", "1", store="fresh"), "for ds_task 'pets': 1 of 7 nonzero values "
                   "(6 of the 7 stored before) are in (0, 1]")


def test_an_experiment_id_that_is_another_experiments_name_is_refused(lab):
    """``--experiment 1`` with experiment 1 ('bob') and an experiment named '1' (ID 2) read both,
    silently. Refused in one line that says how to name either; each is still selectable."""
    other = lab.client.create_experiment(str(lab.exp))
    a = lab.run(70, {"pets": 60})
    b = lab.run(71, {"pets": 61}, exp=other)
    line = one_error_line(lab.ingest("--experiment", str(lab.exp)), f"'{lab.exp}'", "'bob'", f"ID {other}")
    assert "both" in line
    assert lab.ingest("--experiment", "bob", store="bob").returncode == 0
    assert set(lab.rows("bob")["run_id"]) == {a}
    glob = f"[{lab.exp}]"
    assert lab.ingest("--experiment", glob, store="named").returncode == 0
    assert set(lab.rows("named")["run_id"]) == {b}
