"""Ingest follow-ups of a fresh review (s36), through the CLI as a user runs it: an unmatched
shell glob told "no such file", keyless quarantined rows (a join's missing or duplicate key, a row
without run_id) that stayed in the quarantine after the file was fixed, and MLflow messages that
misled (refused credentials read "unreachable", a bad --filter passed unseen, a wrong driver hint).
Each test failed before its fix."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from meta_study.store import Store
from conftest import one_error_line, run_cli
from mlflow_server import free_port
from test_ingest_mlflow_sql import errors
from test_ingest_mlflow_sql_postgres import ADMIN_PW, postgres  # noqa: F401 - the fixture

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol"


def test_a_glob_that_matched_nothing_says_so(tmp_path: Path) -> None:
    """``meta-study ingest d/*.csv`` where no CSV exists: the shell passes the pattern itself, and
    ingest said "d/*.csv: no such file or directory", as if the user had typed a wrong name."""
    (tmp_path / "d").mkdir()
    for spec in (f"{tmp_path}/d/*.csv", f"{tmp_path}/d/run?.csv", f"{tmp_path}/d/[ab].csv"):
        one_error_line(run_cli("ingest", spec, "--store", str(tmp_path / "st")), spec, "matches no file")
    one_error_line(run_cli("ingest", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "st")),
                   "no such file or directory")
    # a file whose name holds a bracket is a file, not a pattern
    f = tmp_path / "d" / "[x].csv"
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n")
    r = run_cli("ingest", str(f), "--store", str(tmp_path / "st"), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    # a pattern that does match files (quoted, or in a sources file) is not expanded: said so
    one_error_line(run_cli("ingest", f"{tmp_path}/d/*.csv", "--store", str(tmp_path / "st")),
                   "a pattern, which ingest does not expand")


def _quarantine(store: Path) -> list[tuple]:
    q = Store(str(store)).quarantine()
    return sorted(zip(q.column("run_id").to_pylist(), q.column("reason").to_pylist()), key=str)


def test_a_fixed_files_keyless_quarantined_rows_are_cleared(tmp_path: Path) -> None:
    """Rows quarantined without a run id (a join's duplicate key or missing upstream row, a row with
    no run_id) stayed in the quarantine for good after the file was fixed and ingested again: only
    runs with an id were settled, so ``meta-study store quarantine`` kept listing fixed rows."""
    d = tmp_path / "exports"
    d.mkdir()
    (d / "up.csv").write_text("model,top1\nm1,0.5\nm1,0.55\nm2,0.6\n")     # m1 twice: its key is refused
    (d / "ds.csv").write_text("model,top1\nm1,0.4\nm2,0.3\n")
    m = tmp_path / "join.yaml"
    m.write_text("name: jm\nsource: lab\njoin:\n  key: [model]\n  upstream: {file: up.csv, task: in1k, accuracy: top1}\n"
                 "  downstream:\n    - {file: ds.csv, task: cifar, accuracy: top1}\n"
                 "run_id: \"{model}\"\nconstants: {eval_protocol: linear}\n")
    st = tmp_path / "st"
    r = run_cli("ingest", str(d), "--mapping", str(m), "--store", str(st), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [rid for rid, _ in _quarantine(st)] and all(rid is None for rid, _ in _quarantine(st)), _quarantine(st)
    (d / "up.csv").write_text("model,top1\nm1,0.5\nm2,0.6\n")                # fixed
    r = run_cli("ingest", str(d), "--mapping", str(m), "--store", str(st), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _quarantine(st) == [], _quarantine(st)
    t = Store(str(st)).read(columns=["run_id"])
    assert sorted(t.column("run_id").to_pylist()) == ["m1", "m2"]

    # a plain file: a row without run_id, fixed
    f = tmp_path / "plain.csv"
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n,up,0.5,a,0.3,linear\n")
    st2 = tmp_path / "st2"
    r = run_cli("ingest", str(f), "--store", str(st2), "--quiet")
    assert r.returncode == 0 and len(_quarantine(st2)) == 1, (r.stdout + r.stderr, _quarantine(st2))
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\nr2,up,0.5,a,0.3,linear\n")
    r = run_cli("ingest", str(f), "--store", str(st2), "--quiet")
    assert r.returncode == 0 and _quarantine(st2) == [], (r.stdout + r.stderr, _quarantine(st2))


def test_a_keyless_row_still_bad_stays_and_another_files_rows_are_kept(tmp_path: Path) -> None:
    """Settling keyless rows must not drop what is still wrong, nor another file's rows of a
    shared ``source:`` (two per-task files under one source name)."""
    f = tmp_path / "a.csv"
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n,up,0.5,a,0.3,linear\n")
    st = tmp_path / "st"
    assert run_cli("ingest", str(f), "--store", str(st), "--quiet").returncode == 0
    f.write_text(f"{HEAD}\nr1,up,0.5,a,0.45,linear\n,up,0.5,a,0.3,linear\n")   # changed, still keyless
    assert run_cli("ingest", str(f), "--store", str(st), "--quiet").returncode == 0
    assert len(_quarantine(st)) == 1, _quarantine(st)

    m = tmp_path / "m.yaml"
    m.write_text("name: shared\nsource: lab\n")
    g, h = tmp_path / "g.csv", tmp_path / "h.csv"
    g.write_text(f"{HEAD}\nr1,up,0.5,a,0.4,linear\n,up,0.5,a,0.3,linear\n")
    h.write_text(f"{HEAD}\nr2,up,0.5,b,0.4,linear\n")
    st2 = tmp_path / "st2"
    for p in (g, h):
        assert run_cli("ingest", str(p), "--mapping", str(m), "--store", str(st2), "--quiet").returncode == 0
    h.write_text(f"{HEAD}\nr2,up,0.5,b,0.41,linear\n")
    assert run_cli("ingest", str(h), "--mapping", str(m), "--store", str(st2), "--quiet").returncode == 0
    assert len(_quarantine(st2)) == 1, _quarantine(st2)     # g's keyless row is g's: kept


def test_a_large_fixed_files_keyless_rows_are_cleared(tmp_path: Path, monkeypatch) -> None:
    """The same for a file read in pieces (one commit of many validated pieces)."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)          # pieces of 2 rows, for a file above 120 bytes
    f = tmp_path / "big.csv"
    good = "".join(f"r{i},up,0.5,a,0.4,linear\n" for i in range(6))
    f.write_text(f"{HEAD}\n{good},up,0.5,a,0.3,linear\n")
    st = tmp_path / "st"
    r = run_cli("ingest", str(f), "--store", str(st), "--quiet")
    assert r.returncode == 0 and len(_quarantine(st)) == 1, (r.stdout + r.stderr, _quarantine(st))
    f.write_text(f"{HEAD}\n{good}r9,up,0.5,a,0.3,linear\n")
    r = run_cli("ingest", str(f), "--store", str(st), "--quiet")
    assert r.returncode == 0 and _quarantine(st) == [], (r.stdout + r.stderr, _quarantine(st))


@pytest.mark.slow(20)
def test_client_path_says_the_database_refused_the_credentials(postgres, tmp_path):  # noqa: F811
    """A wrong password on the client path (``meta-study ingest postgresql://...``) read
    "unreachable (... password authentication failed ...)": the server was reached, it refused the
    credentials. A database that does not exist is not "unreachable" either."""
    port, drv = postgres["port"], postgres["driver"]
    uri = f"postgresql+{drv}://127.0.0.1:{port}/postgres"
    r = run_cli("ingest", uri, "--store", str(tmp_path / "st"), env={"PGUSER": "admin", "PGPASSWORD": "not-it"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = errors(r.stderr)
    assert line.startswith(f"{uri}: FAILED: the database refused the credentials (") and "not-it" not in line, line
    assert "unreachable" not in line, line
    nodb = f"postgresql+{drv}://127.0.0.1:{port}/no_such_db"
    r = run_cli("ingest", nodb, "--store", str(tmp_path / "st"), env={"PGUSER": "admin", "PGPASSWORD": ADMIN_PW})
    (line,) = errors(r.stderr)
    assert line.startswith(f"{nodb}: FAILED: cannot connect (") and "does not exist" in line, line


@pytest.mark.slow(15)
def test_an_invalid_filter_fails_when_no_experiment_is_searched(tmp_path):
    """``--filter`` is sent with each search; a server without an active experiment gets no search,
    so ``--filter "params.x = 1"`` (unquoted, which MLflow refuses) passed with exit code 0."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    MlflowClient(uri).delete_experiment("0")       # no active experiment left
    r = run_cli("ingest", uri, "--store", str(tmp_path / "st"), "--filter", "params.x = 1", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    (line,) = errors(r.stderr)
    assert "FAILED: Expected a quoted string value for parameter" in line, line
    r = run_cli("ingest", uri, "--store", str(tmp_path / "st"), "--filter", "params.x = '1'", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_missing_driver_names_the_one_sqlalchemy_picks(tmp_path, monkeypatch):
    """The hint said "psycopg2 for postgresql://", but SQLAlchemy 2.1 reads ``postgresql://`` with
    psycopg (3): a user without it installed psycopg2 and failed again. The hint names the module
    the URI's driver imports and its package."""
    monkeypatch.setitem(sys.modules, "psycopg", None)     # as if not installed
    uri = f"postgresql://127.0.0.1:{free_port()}/mlflow"
    r = run_cli("ingest", uri, "--store", str(tmp_path / "st"))
    (line,) = errors(r.stderr)
    assert "no module 'psycopg'" in line and "pip install 'psycopg[binary]'" in line and "psycopg2" not in line, line
    if importlib.util.find_spec("MySQLdb") is None:
        uri = f"mysql://127.0.0.1:{free_port()}/mlflow"
        (line,) = errors(run_cli("ingest", uri, "--store", str(tmp_path / "st")).stderr)
        assert "no module 'MySQLdb'" in line and "pip install mysqlclient" in line, line
