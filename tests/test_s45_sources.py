"""Review of sources, validation's percent count, and the analyses (s45).

Each test failed on the code before its fix; the measured failure is in its docstring.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from meta_study.validation import WholeInput, validate
from conftest import one_error_line, run_cli


def _rows(**cols) -> pd.DataFrame:
    n = max(len(v) for v in cols.values() if isinstance(v, list))
    base = dict(source="s", us_task="up", eval_protocol="linear", us_accuracy=0.5)
    return pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in {**base, **cols}.items()})


def _reasons(v) -> dict[str, str]:
    return dict(zip(v.rejected.run_id, v.rejected.reason))


# --------------------------------------------------------------------------------------------
# "Mostly percent": zeros are not counted, percents written with their sign are
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("whole", [False, True])
def test_zeros_do_not_hide_a_task_in_percent(whole):
    """85 and 90 (percent) beside three crashed runs' 0 and a near-chance 0.5 %: "2 of 6", no
    task in percent, and the 0.5 was stored as 50 %. Zeros are 0 in either unit."""
    v = validate(_rows(run_id=list("abcdef"), ds_task="cifar", ds_accuracy=[85.0, 90.0, 0.0, 0.0, 0.0, 0.5]),
                 whole=WholeInput() if whole else None)
    r = _reasons(v)
    assert set(r) == {"a", "b", "f"}, r
    assert r["f"].startswith("ds_accuracy: 0.5 in ds_task 'cifar', whose values are mostly in (1, 100] "
                             "(2 of 3 nonzero): a percent?"), r
    assert sorted(v.table.column("ds_accuracy").to_pylist()) == [0.0, 0.0, 0.0]


def test_percents_written_with_their_sign_count_as_percents():
    """"85%", "90%", "70%" (quarantined, each saying what to write) beside a bare 0.5: the signed
    ones were counted as no values, and the 0.5 (0.5 %) was stored as 50 %."""
    v = validate(_rows(run_id=list("abcd"), ds_task="cifar", ds_accuracy=["85%", "90%", "70%", "0.5"]))
    r = _reasons(v)
    assert set(r) == {"a", "b", "c", "d"}, r
    assert r["a"].startswith("ds_accuracy: '85%' is a percent written as text"), r
    assert "(3 of 4, 3 written with a % sign): a percent?" in r["d"], r
    assert v.table.num_rows == 0


def test_data_fractions_written_with_their_sign_make_the_column_percent():
    """data_fraction "50%", "25%", "10%" and a bare 1 (a 1 % run): the 1 was stored as full data."""
    v = validate(_rows(run_id=list("abcd"), ds_task="t", ds_accuracy=0.5, data_fraction=["50%", "25%", "10%", "1"]))
    r = _reasons(v)
    assert set(r) == {"a", "b", "c", "d"}, r
    assert r["d"].startswith("data_fraction: 1 among values mostly in (1, 100] (3 of 4, 3 written with a % sign): "
                             "a percent?"), r


def test_fractions_with_zeros_and_one_percent_keep_their_fractions():
    """Guard: a task in fractions with zeros and one stray 85 keeps its fractions (the 85 alone goes)."""
    v = validate(_rows(run_id=list("abcde"), ds_task="x", ds_accuracy=[0.8, 0.7, 0.0, 0.0, 85.0]))
    assert set(_reasons(v)) == {"e"}
    assert sorted(v.table.column("ds_accuracy").to_pylist()) == [0.0, 0.0, 0.7, 0.8]


@pytest.fixture
def mlflow_db(tmp_path) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


@pytest.mark.slow(30)
def test_an_mlflow_page_with_zeros_does_not_store_a_near_chance_percent_as_a_fraction(tmp_path, mlflow_db):
    """An MLflow page (no file: the pipeline counts no zeros for it) whose pets accuracies were
    logged in percent, 85 and 90, beside three crashed runs' 0 and a 0.5 % run: the 0.5 was stored
    as 50 %."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    exp = client.create_experiment("bob")
    for v in (85, 90, 0, 0, 0, 0.5):
        rid = client.create_run(exp).info.run_id
        client.log_metric(rid, "us/imagenet/top1", 0.7)
        client.log_metric(rid, "ds/pets/10shot/top1", v)
        client.set_terminated(rid)
        time.sleep(0.003)
    r = run_cli("ingest", f"mlflow-sql:sqlite:///{mlflow_db}", "--store", str(tmp_path / "st"), cwd=tmp_path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    stored = pd.read_parquet(tmp_path / "st")
    assert sorted(stored["ds_accuracy"].dropna()) == [0.0, 0.0, 0.0], out


# --------------------------------------------------------------------------------------------
# An MLflow tracking store named as another kind of source
# --------------------------------------------------------------------------------------------


def _sqlite(path: Path) -> Path:
    import sqlite3

    with sqlite3.connect(path) as c:
        c.execute("create table runs (run_uuid text)")
    return path


def _mlruns(path: Path) -> Path:
    for exp in ("0", "17"):
        (path / exp).mkdir(parents=True)
        (path / exp / "meta.yaml").write_text(f"experiment_id: '{exp}'\nname: x\n")
    (path / ".trash").mkdir()
    return path


def test_a_tracking_database_named_as_a_path_says_its_uri(tmp_path):
    """mlflow.db named as a path was "mlflow.db: unknown file type (expected .csv, ...)"."""
    _sqlite(tmp_path / "mlflow.db")
    one_error_line(run_cli("ingest", "mlflow.db", "--store", "st", cwd=tmp_path),
                   "mlflow.db: a SQLite database, not a data file", "sqlite:///mlflow.db",
                   "mlflow-sql:sqlite:///mlflow.db")
    assert not (tmp_path / "st").exists()


def test_an_mlflow_file_store_named_as_a_directory_says_its_uri(tmp_path):
    """mlruns/ named as a path was "mlruns: directory holds no CSV, TSV, Parquet or JSONL files"."""
    _mlruns(tmp_path / "mlruns")
    one_error_line(run_cli("ingest", "mlruns/", "--store", "st", cwd=tmp_path),
                   "mlruns/: an MLflow file store", f"file://{tmp_path / 'mlruns'}")


def test_a_file_uri_of_a_database_and_a_sqlite_uri_of_a_folder_say_what_they_name(tmp_path):
    """file:///x/mlflow.db was "FAILED: unreachable ([Errno 20] Not a directory: .../.trash)", and
    sqlite:///mlruns (a folder that exists) "FAILED: no such database file"."""
    from meta_study.errors import UserError
    from meta_study.ingest.sources import kind_of

    db = _sqlite(tmp_path / "mlflow.db")
    with pytest.raises(UserError, match=f"is a SQLite database, not an MLflow file store .*sqlite:///{db}$"):
        kind_of(f"file://{db}")
    store = _mlruns(tmp_path / "mlruns")
    for spec in (f"sqlite:///{store}", f"mlflow-sql:sqlite:///{store}"):
        with pytest.raises(UserError, match=f"is a directory, not a SQLite database; an MLflow file store: read it as "
                                            f"file://{store}$"):
            kind_of(spec)
    with pytest.raises(UserError, match="is a directory, not a SQLite database; name the database file inside it"):
        kind_of(f"sqlite:///{tmp_path}")


def test_data_files_and_their_directories_are_still_files(tmp_path):
    """Guard: a directory of data files (with a numbered sub-directory) and a CSV are files; a
    database and a folder named by their URIs are MLflow's."""
    from meta_study.ingest.sources import kind_of

    d = _mlruns(tmp_path / "d")
    (d / "x.csv").write_text("a\n1\n")
    assert kind_of(str(d)) == "files" and kind_of(str(d / "x.csv")) == "files"
    (tmp_path / "e" / "0").mkdir(parents=True)     # numbered folders with a meta.yaml, no store's .trash
    (tmp_path / "e" / "0" / "meta.yaml").write_text("x: 1\n")
    assert kind_of(str(tmp_path / "e")) == "files"
    assert kind_of(f"sqlite:///{_sqlite(tmp_path / 'm.db')}") == "mlflow"
    assert kind_of(f"file://{tmp_path / 'mlruns'}") == "mlflow"


# --------------------------------------------------------------------------------------------
# One database, one name
# --------------------------------------------------------------------------------------------


@pytest.mark.slow(15)
def test_a_sources_files_database_up_a_directory_is_the_command_lines_source(tmp_path, mlflow_db):
    """A sources file in cfg/ naming sqlite:///../mlflow.db named its rows
    "sqlite:////.../cfg/../mlflow.db", and the command line's sqlite:///mlflow.db (the same file)
    "sqlite:////.../mlflow.db": every run was stored twice."""
    from mlflow.tracking import MlflowClient

    from meta_study.ingest.sources import load_sources_file

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    rid = client.create_run(client.create_experiment("bob")).info.run_id
    client.log_metric(rid, "us/imagenet/top1", 0.7)
    client.log_metric(rid, "ds/pets/10shot/top1", 0.6)
    client.set_terminated(rid)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "sources.yaml").write_text("sources:\n  - uri: mlflow-sql:sqlite:///../mlflow.db\n"
                                                   "  - uri: ../x.csv\n")
    specs = [e.spec for e in load_sources_file(str(tmp_path / "cfg" / "sources.yaml"))]
    assert specs == [f"mlflow-sql:sqlite:///{mlflow_db}", str(tmp_path / "x.csv")]
    (tmp_path / "cfg" / "sources.yaml").write_text("sources:\n  - uri: mlflow-sql:sqlite:///../mlflow.db\n")
    for args in (["mlflow-sql:sqlite:///mlflow.db"], ["--sources-file", "cfg/sources.yaml"]):
        r = run_cli("ingest", *args, "--store", "st", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    stored = pd.read_parquet(tmp_path / "st")
    assert stored["source"].tolist() == [f"sqlite:///{mlflow_db}"], stored["source"].tolist()


def test_an_absolute_sqlite_path_with_dot_dot_is_one_source(tmp_path):
    """``sqlite:////d/x/../x/mlflow.db`` and ``sqlite:////d/x/mlflow.db`` name one database: they
    were two source names, and every run was stored twice; a store's older spelling keeps its name."""
    from meta_study.ingest.mlflow_runs import sqlite_source
    from meta_study.ingest.mlflow_sql import db_source

    d = tmp_path / "x"
    plain = f"sqlite:///{d}/mlflow.db"
    dotted = f"sqlite:///{d}/../x/./mlflow.db"
    assert sqlite_source(dotted) == sqlite_source(plain) == plain
    assert db_source(dotted) == db_source(plain)
    assert sqlite_source("sqlite:///:memory:") == "sqlite:///:memory:"
    assert sqlite_source("postgresql://h/db") == "postgresql://h/db"
