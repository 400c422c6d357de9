"""The percent check of an MLflow source decided page by page: a page of one new run (pets 81 %
beside a near-chance task at 0.9 %) was refused as "fractions among percents" on every ingest,
though a read of all the runs stores it, and a later page's refusal said "nothing of this source
was stored" after earlier pages were committed.

Each test logs runs to an MLflow sqlite file (examples/mappings/mlflow_percent_keys.yaml's keys)
and runs ``meta-study ingest`` on it, through the SQL source and through MLflow's client.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import MAPPINGS, one_error_line, run_cli

PCT = str(MAPPINGS / "mlflow_percent_keys.yaml")


class Lab:
    """An MLflow sqlite file with one experiment, and ingests of it into one store."""

    def __init__(self, tmp: Path, kind: str, empty: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.tmp, self.db = tmp, tmp / "mlflow.db"
        shutil.copyfile(empty, self.db)     # MLflow's tables made once: ~5 s of migrations a file
        self.client = MlflowClient(tracking_uri=f"sqlite:///{self.db}")
        self.exp = self.client.create_experiment("bob")
        self.spec = f"mlflow-sql:sqlite:///{self.db}" if kind == "sql" else f"sqlite:///{self.db}"

    def run(self, us: float, ds: dict[str, float], keys: tuple[str, str] = ("upstream/top1_pct", "eval/{}/k10_pct")
            ) -> str:
        rid = self.client.create_run(self.exp).info.run_id
        self.client.log_metric(rid, keys[0], us)
        for task, v in ds.items():
            self.client.log_metric(rid, keys[1].format(task), v)
        self.client.set_terminated(rid)
        time.sleep(0.003)    # distinct end times (ms): the pages are cut by end time
        return rid

    def ingest(self, *args: str, store: str = "st", mapping: tuple[str, ...] = ("--mapping", PCT)):
        r = run_cli("ingest", self.spec, *mapping, "--store", str(self.tmp / store), *args, cwd=self.tmp)
        assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        return r

    def rows(self, store: str = "st") -> pd.DataFrame:
        df = pd.read_parquet(self.tmp / store)[["run_id", "ds_task", "ds_accuracy"]]
        return df.sort_values(["run_id", "ds_task"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


@pytest.fixture(params=["sql", "client"])
def lab(tmp_path, request, empty_db):
    return Lab(tmp_path, request.param, empty_db)


def test_one_new_near_chance_run_goes_in_as_in_a_full_read(lab):
    """The reviewer's case: stored pets and a near-chance task 'hard' in [0, 10] %, then one new
    run with pets 81 % and hard 0.9 %. Alone, its page was "every value of 'hard' in (0, 1]
    beside values above 10": refused on this ingest and every later one (the run is read again)."""
    for i, h in enumerate([2.5, 0.4, 3.5, 5.0, 6.0]):
        lab.run(70 + i, {"pets": 60 + i, "hard": h})
    assert lab.ingest().returncode == 0
    new = lab.run(81, {"pets": 81, "hard": 0.9})
    r = lab.ingest()
    assert r.returncode == 0 and "2 new" in r.stdout and "1 run new" in r.stdout, r.stdout + r.stderr
    got = lab.rows().set_index(["run_id", "ds_task"])["ds_accuracy"]
    assert got[(new, "hard")] == pytest.approx(0.009) and got[(new, "pets")] == pytest.approx(0.81)
    r = lab.ingest()   # the next one is a no-op
    assert r.returncode == 0 and "0 new" in r.stdout and "6 runs unchanged" in r.stdout, r.stdout + r.stderr
    # the same as a read of every run at once, and as one run per page
    assert lab.ingest(store="full").returncode == 0
    assert lab.ingest("--page-size", "1", store="paged").returncode == 0
    pd.testing.assert_frame_equal(lab.rows("full"), lab.rows())
    pd.testing.assert_frame_equal(lab.rows("paged"), lab.rows())


def test_a_fraction_among_stored_percents_is_still_refused(lab):
    """Guard: the check still refuses a column that mixes fractions with percents, now weighed
    against the stored values (and says how many of those it counted); nothing of it is stored."""
    for i in range(9):
        lab.run(70 + i, {"pets": 60 + i, "cifar": 50 + i})
    assert lab.ingest().returncode == 0
    before, version = lab.rows(), Store(str(lab.tmp / "st")).version
    lab.run(79, {"pets": 0.84, "cifar": 59})
    for _ in range(2):
        one_error_line(lab.ingest(), "FAILED: ds_accuracy is declared percent but mixes fractions with percents "
                       "for ds_task 'pets': 1 of 10 nonzero values (9 of the 10 stored before) are in (0, 1] and 9 "
                       "above 10, so nothing of this source was stored")
        pd.testing.assert_frame_equal(lab.rows(), before)
        assert Store(str(lab.tmp / "st")).version == version


def test_a_later_page_refused_says_what_the_earlier_pages_stored(lab):
    """Pages of three runs: the first (pets in percent) is committed, the second (pets in
    fractions) refused. "nothing of this source was stored" was false, and the line said nothing
    of the three rows the first page stored."""
    for i in range(3):
        lab.run(70 + i, {"pets": 60 + i})
    for i in range(3):
        lab.run(70 + i, {"pets": 0.6 + i / 10})
    line = one_error_line(lab.ingest("--page-size", "3"),
                          "FAILED: ds_accuracy is declared percent but mixes fractions with percents for ds_task "
                          "'pets': 3 of 6 nonzero values (3 of the 6 stored before) are in (0, 1] and 3 above 10, so "
                          "nothing more of this source was stored (this ingest stored 3 new, 0 updated and 0 "
                          "quarantined rows of it before this part, and they stay)")
    assert "nothing of this source was stored" not in line
    assert sorted(lab.rows()["ds_accuracy"]) == pytest.approx([0.6, 0.61, 0.62])


def test_one_new_run_in_percent_in_a_fraction_source_is_quarantined_not_the_source_refused(lab):
    """The pipeline's mirror check (a fraction column mostly in (1, 100] is in percent): a page
    of one new run logged in percent (81 and 75 in meta-study's fraction convention) was "the
    column is in percent" on every ingest, with the advice to declare the source percent. Weighed
    with the stored rows, as in a read of every run, that run's rows are quarantined, the rest kept."""
    keys = ("us/imagenet/top1", "ds/{}/10shot/top1")
    for i in range(3):
        lab.run(0.7 + i / 100, {"pets": 0.6 + i / 100}, keys)
    assert lab.ingest(mapping=()).returncode == 0
    lab.run(81, {"pets": 75}, keys)
    r = lab.ingest(mapping=())
    assert r.returncode == 0 and "0 new" in r.stdout and "1 quarantined" in r.stdout, r.stdout + r.stderr
    assert "ds_accuracy: out of range [0, 1]" in r.stdout
    r = lab.ingest(mapping=())
    assert r.returncode == 0 and "4 runs unchanged" in r.stdout, r.stdout + r.stderr
    assert len(lab.rows()) == 3
    # guard: a page whose values are mostly percents beside the stored ones is still refused
    for i in range(4):
        lab.run(80 + i, {"pets": 70 + i}, keys)
    one_error_line(lab.ingest(mapping=()), "us_accuracy is in percent, not a fraction: 4 of 7 values (3 of them "
                   "stored before) are in (1, 100], so nothing of this source was stored")
