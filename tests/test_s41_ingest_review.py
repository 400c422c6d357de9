"""Review of ``meta-study ingest``'s pipeline and sources (pipeline.py, sources.py), stop 41.

Each test failed before its fix, through the CLI as a user runs it, on small exports (or MLflow
sqlite files) in ``tmp_path``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli


def _frame(runs: tuple[str, ...] = ("r1", "r2"), ds: tuple[float, ...] = (0.5, 0.6)) -> pd.DataFrame:
    return pd.DataFrame({"run_id": list(runs), "us_task": "in1k", "us_accuracy": 0.7, "ds_task": "pets",
                         "ds_accuracy": list(ds), "eval_protocol": "linear"})


def _ingest(tmp: Path, *args: str):
    r = run_cli("ingest", *args, "--store", str(tmp / "st"), cwd=tmp)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r


def test_a_dataset_whose_rows_all_conflict_across_parts_fails_as_one_file_does(tmp_path: Path) -> None:
    """Keys repeated with other values across the parts of a dataset directory (read in pieces)
    are found by the store in the commit: they were counted valid, so a dataset whose every row
    conflicted stored nothing and said "0 new, ... 4 quarantined", exit 0, with its state recorded
    (the same rows in one file: "FAILED: all 4 rows quarantined", exit 2)."""
    d = tmp_path / "x.csv"
    d.mkdir()
    _frame().to_csv(d / "part-0.csv", index=False)
    _frame(ds=(0.55, 0.65)).to_csv(d / "part-1.csv", index=False)
    r = _ingest(tmp_path, str(d))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "FAILED: all 4 rows quarantined" in out, (r.returncode, out)
    assert "4 for: conflicting duplicate key" in out, out
    # some rows conflicting: the line counts them among the rejected rows read
    e = tmp_path / "y.csv"
    e.mkdir()
    _frame(("r1", "r2", "r3"), ds=(0.5, 0.6, 0.7)).to_csv(e / "part-0.csv", index=False)
    _frame(ds=(0.55, 0.65)).to_csv(e / "part-1.csv", index=False)
    r = _ingest(tmp_path, str(e))
    assert r.returncode == 0, r.stdout
    assert "1 new, 0 updated, 0 unchanged, 4 quarantined" in r.stdout, r.stdout
    assert "4 of 5 rows rejected: conflicting duplicate key" in r.stdout, r.stdout


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


def _server(tmp: Path, empty: Path, name: str, ended_ms: int) -> str:
    """An MLflow sqlite file ``name`` with one experiment (id 1) and one run that ended at ``ended_ms``."""
    from mlflow.tracking import MlflowClient

    shutil.copyfile(empty, tmp / name)
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp / name}")
    exp = c.create_experiment("bob")
    rid = c.create_run(exp).info.run_id
    c.log_metric(rid, "us/in1k/top1", 0.5)
    c.log_metric(rid, "ds/pets/10shot/top1", 0.4)
    c.set_terminated(rid, end_time=ended_ms)
    return rid


def test_two_mlflow_databases_under_one_name_in_a_sources_file_are_refused(tmp_path: Path, empty_db: Path) -> None:
    """Two entries of a sources file, two MLflow databases, one ``name:``: they shared one
    incremental state, whose watermark is per experiment id, so server a's experiment 1 moved
    server b's: b's run, which ended before a's, was never read (exit 0, "0 new", every time)."""
    now = int(time.time() * 1000)
    _server(tmp_path, empty_db, "b.db", now - 10 * 86_400_000)
    _server(tmp_path, empty_db, "a.db", now - 1000)
    (tmp_path / "s.yaml").write_text("sources:\n  - uri: sqlite:///a.db\n    name: lab\n"
                                     "  - uri: sqlite:///b.db\n    name: lab\n")
    r = run_cli("ingest", "--sources-file", str(tmp_path / "s.yaml"), "--store", str(tmp_path / "st"), cwd=tmp_path)
    one_error_line(r, "a.db and ", "b.db: two MLflow databases under one source name 'lab'")
    assert not (tmp_path / "st").exists()
    # one mapping's `source:` names every MLflow URI of the command alike
    (tmp_path / "m.yaml").write_text("source: lab\n")
    r = run_cli("ingest", "sqlite:///a.db", "sqlite:///b.db", "--mapping", str(tmp_path / "m.yaml"),
                "--store", str(tmp_path / "st"), cwd=tmp_path)
    one_error_line(r, "two MLflow databases under one source name 'lab'")
    assert not (tmp_path / "st").exists()
    # one database under one name in two entries (two selections) is one source, as before
    (tmp_path / "t.yaml").write_text("sources:\n  - uri: sqlite:///a.db\n    name: lab\n    experiments: [bob]\n"
                                     "  - uri: sqlite:///a.db\n    name: lab\n    experiments: ['b*']\n")
    r = _ingest(tmp_path, "--sources-file", str(tmp_path / "t.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert Store(str(tmp_path / "st")).read(columns=["run_id"]).num_rows == 1


class _FailsAfterOnePage:
    """A source whose first page is stored and whose second read fails (a server gone)."""

    label = "http://lab:5000"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def batches(self, store, progress):
        from conftest import make_rows
        from meta_study.ingest import SourceBatch

        yield SourceBatch(rows=make_rows(3, source=self.label))
        raise self.exc


@pytest.mark.parametrize("exc", [ConnectionError("connection refused"), OSError("broken pipe")])
def test_a_source_that_fails_after_a_stored_page_says_what_it_stored(tmp_path: Path, exc: Exception) -> None:
    """An MLflow ingest whose server went away at page 2 said "FAILED: ConnectionError: connection
    refused", read as nothing stored, while page 1's rows were stored (and stay)."""
    from meta_study.ingest import ingest_sources

    store = Store(str(tmp_path / "st"))
    [rep] = ingest_sources([_FailsAfterOnePage(exc)], store)
    assert not rep.ok and rep.new == 6
    line = rep.line()
    assert line.startswith(f"http://lab:5000: FAILED: {type(exc).__name__}: "), line
    assert "this ingest stored 6 new, 0 updated and 0 quarantined rows of this source before the failure" in line
    assert store.read(columns=["run_id"]).num_rows == 6


def test_a_sources_file_name_is_checked_and_trimmed_as_the_source_option_is(tmp_path: Path) -> None:
    """``--source`` refuses a name with a control character and trims one with spaces; a sources
    file's ``name: "lab\\tx"`` was stored in every row, and ``name: " lab "`` kept a state of its
    own (the same file read again as new, and an MLflow server's runs all read again)."""
    _frame().to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "tab.yaml").write_text('sources:\n  - uri: x.csv\n    name: "lab\\tx"\n')
    r = run_cli("ingest", "--sources-file", str(tmp_path / "tab.yaml"), "--store", str(tmp_path / "st"))
    one_error_line(r, "tab.yaml: sources[0].name: give a name of printable characters, not 'lab\\tx'")
    (tmp_path / "sp.yaml").write_text('sources:\n  - uri: x.csv\n    name: " lab "\n')
    assert _ingest(tmp_path, "--sources-file", str(tmp_path / "sp.yaml")).returncode == 0
    r = _ingest(tmp_path, "x.csv", "--source", "lab")
    assert r.returncode == 0 and "unchanged since its last ingest" in r.stdout, r.stdout


def test_a_fixed_row_without_a_run_id_leaves_the_quarantine_of_a_dataset_directory(tmp_path: Path) -> None:
    """A row without a run id is quarantined by ``(source, None)``, settled when its file is read
    again; a dataset directory's payloads name their part (``x.csv/part-0.csv``), not the
    directory, so they were taken for another file's and listed for good after the row was fixed
    (one file's are settled)."""
    d = tmp_path / "x.csv"
    d.mkdir()
    _frame(("r1", None)).to_csv(d / "part-0.csv", index=False)
    r = _ingest(tmp_path, str(d))
    assert r.returncode == 0 and "1 quarantined" in r.stdout, r.stdout
    _frame(("r1", "r2")).to_csv(d / "part-0.csv", index=False)
    assert _ingest(tmp_path, str(d)).returncode == 0
    assert Store(str(tmp_path / "st")).quarantine().num_rows == 0
