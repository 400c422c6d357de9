"""Review of the MLflow sources (mlflow_runs.py, mlflow_source.py, mlflow_sql.py, mlflow_client.py), stop 47.

- A database URL whose password holds ``/``, ``?`` or ``#`` (``postgresql://u:12/34@h/db``, as
  SQLAlchemy reads it: the password runs to the ``@``) was not seen as credentials: urllib ends
  the host at the first ``/``, so the password connected and was stored in every row's ``source``
  and in the state's name, and lines printed it (``postgresql://u:p#ss@h/db`` was shown as
  ``postgresql://u:p``; ``http://u:pa/ss@h:5000`` as "the port 'pa' is not a number").
- A metric that a pattern matches only when a task capture holds a ``/``
  (``ds/vtab/dtd/10shot/top1``) went to ``extra`` without a word while the run's other tasks were
  stored: the task was missing from the store unseen. The summary now counts such runs.
"""

from __future__ import annotations

import pytest

from meta_study.errors import UserError
from meta_study.ingest.mlflow_runs import default_mapping, refuse_bad_port
from meta_study.ingest.mlflow_source import MlflowSource
from meta_study.ingest.mlflow_sql import parse_target
from meta_study.mlflow_client import has_credentials, safe_uri, shown_uri, source_uri
from test_s44_mlflow_runs import Lab, empty_db  # noqa: F401 - a fixture


@pytest.fixture
def lab(tmp_path, empty_db) -> Lab:  # noqa: F811 - empty_db is the fixture imported above
    return Lab(tmp_path, empty_db)


# (URL, the secret part that must never be shown, what it names without credentials)
SLASHED = [("postgresql://u:12/34@db.lab:5432/mlflow", "12/34", "postgresql://db.lab:5432/mlflow"),
           ("postgresql+psycopg2://u:pa/ss@db.lab/mlflow", "pa/ss", "postgresql+psycopg2://db.lab/mlflow"),
           ("postgresql://u:p#ss@db.lab/mlflow", "p#ss", "postgresql://db.lab/mlflow"),
           ("mysql+pymysql://u:a?b@db.lab/mlflow", "a?b", "mysql+pymysql://db.lab/mlflow")]


@pytest.mark.parametrize("url,secret,bare", SLASHED)
def test_a_database_password_with_a_slash_is_credentials(url, secret, bare):
    from sqlalchemy.engine import make_url

    assert make_url(url).password == secret      # what the driver would have been given
    assert has_credentials(url) and has_credentials("mlflow-sql:" + url)
    for f in (safe_uri, shown_uri, source_uri):
        assert f(url) == bare, f
        assert f("mlflow-sql:" + url) == "mlflow-sql:" + bare, f


@pytest.mark.parametrize("url,secret,bare", SLASHED)
def test_such_a_url_is_refused_without_showing_the_password(url, secret, bare):
    with pytest.raises(UserError) as e:
        MlflowSource(url, default_mapping())
    assert "credentials" in str(e.value) and secret not in str(e.value) and "u:" not in str(e.value)
    with pytest.raises(UserError) as e:
        parse_target("mlflow-sql:" + url)
    assert "credentials" in str(e.value) and secret not in str(e.value) and "u:" not in str(e.value)


def test_an_http_password_with_a_slash_is_not_printed_as_a_port():
    with pytest.raises(UserError) as e:
        refuse_bad_port("http://u:pa/ss@127.0.0.1:5000")
    assert "pa" not in str(e.value) and "ss" not in str(e.value), e.value
    with pytest.raises(UserError) as e:   # a port that is not one is still said
        refuse_bad_port("http://127.0.0.1:nope")
    assert "the port 'nope' is not a number" in str(e.value)


def test_urls_without_credentials_keep_their_names():
    for url in ("postgresql://db.lab:5432/mlflow", "postgresql+psycopg2://db.lab/mlflow?connect_timeout=3",
                "sqlite:////data/a@b/mlflow.db", "mlflow-sql:sqlite:////data/a@b/mlflow.db", "http://127.0.0.1:5000"):
        assert not has_credentials(url), url
        assert safe_uri(url) == url.split("?")[0]


@pytest.mark.slow(20)
def test_a_task_name_with_a_slash_is_counted_not_dropped_silently(lab):
    ok = lab.run({"us/jft/top1": 0.5, "ds/pets/10shot/top1": 0.6, "ds/vtab/dtd/10shot/top1": 0.4})
    plain = lab.run({"us/jft/top1": 0.5, "ds/pets/10shot/top1": 0.7})
    for spec in (lab.spec, f"mlflow-sql:sqlite:///{lab.db}"):
        r = lab.ingest("--quiet", spec=spec)
        line = next(x for x in r.stdout.splitlines() if "new" in x)
        assert "1 run with a task name holding a slash not read" in line, r.stdout
    rows = lab.rows()
    assert set(rows["run_id"]) == {ok, plain} and set(rows["ds_task"]) == {"pets"}
    r = lab.ingest("--quiet")           # nothing changed: nothing read again, nothing counted
    assert "holding a slash" not in r.stdout, r.stdout


def _finished(at: Lab, ds: float, end_ms: int) -> str:
    rid = at.client.create_run(at.exp).info.run_id
    at.client.log_metric(rid, "us/jft/top1", 0.5)
    at.client.log_metric(rid, "ds/pets/10shot/top1", ds)
    at.client.set_terminated(rid, end_time=end_ms)
    return rid


@pytest.mark.slow(30)
@pytest.mark.parametrize("reader", ["rest", "sql"])
def test_a_renamed_experiment_renames_every_run_without_full(lab, reader):
    import time

    spec = lab.spec if reader == "rest" else f"mlflow-sql:sqlite:///{lab.db}"
    now = int(time.time() * 1000)
    old = _finished(lab, 0.3, now - 3_600_000)      # an hour ago: behind the watermark and its overlap
    gone = _finished(lab, 0.2, now - 7_200_000)
    new = _finished(lab, 0.4, now)
    lab.ingest("--quiet", spec=spec)
    lab.client.delete_run(gone)                      # without --drop-deleted: its rows stay
    lab.client.rename_experiment(lab.exp, "bob-renamed")
    r = lab.ingest("--quiet", spec=spec)
    rows = lab.rows()
    assert dict(zip(rows["run_id"], rows["experiment"])) == {old: "bob-renamed", new: "bob-renamed", gone: "bob"}, \
        r.stdout
    r = lab.ingest("--quiet", spec=spec)             # once: the deleted run does not make every ingest a full read
    assert "0 new, 0 updated" in r.stdout and "1 run unchanged" in r.stdout, r.stdout
