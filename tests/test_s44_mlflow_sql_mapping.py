"""Review s44 of the SQL source (``mlflow-sql:``) and of mappings: the schema check's order and
an empty revision, one database under two URL spellings, YAML's typed scalars in a mapping,
units on text columns, and the architecture family of rows whose ``arch_family`` cell is empty."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml

from meta_study.errors import UserError
from meta_study.ingest.mapping import IngestMapping, parse_mapping
from meta_study.ingest.mlflow_sql import MlflowSqlSource, db_source
from meta_study.store import Store
from conftest import run_cli

#: The tables the SQL source reads (at a revision the installed MLflow knows), without MLflow.
TABLES = ("CREATE TABLE alembic_version (version_num TEXT);"
          "CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT);"
          "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, status TEXT, start_time INTEGER,"
          " end_time INTEGER, user_id TEXT, lifecycle_stage TEXT);"
          "CREATE TABLE latest_metrics (run_uuid TEXT, key TEXT, value REAL, is_nan INTEGER);"
          "CREATE TABLE params (run_uuid TEXT, key TEXT, value TEXT);"
          "CREATE TABLE tags (run_uuid TEXT, key TEXT, value TEXT);")


def _db(path: Path, sql: str) -> Path:
    con = sqlite3.connect(path)
    con.executescript(sql)
    con.commit()
    con.close()
    return path


def _schema_error(db: Path) -> str:
    src = MlflowSqlSource(f"mlflow-sql:sqlite:///{db}", IngestMapping())
    engine, conn, _ = src.connect()
    try:
        with pytest.raises(UserError) as e:
            src.check_schema(conn)
    finally:
        conn.close()
        engine.dispose()
    return str(e.value)


def test_a_newer_mlflows_database_is_unknown_not_too_old(tmp_path):
    # a revision the installed MLflow does not know is a newer MLflow's database; a column it lacks
    # was dropped since: "too old ... upgrade it with `mlflow db upgrade`" sent the user backwards
    db = _db(tmp_path / "newer.db", TABLES.replace("is_nan INTEGER", "nan_flag INTEGER")
             + "INSERT INTO alembic_version VALUES ('ffffffffffff');")
    msg = _schema_error(db)
    assert "unknown MLflow schema revision 'ffffffffffff'" in msg and "too old" not in msg, msg
    # a known revision that lacks the column is still "too old"
    old = _db(tmp_path / "old.db", TABLES.replace("is_nan INTEGER", "nan_flag INTEGER")
              + "INSERT INTO alembic_version VALUES ('dc11669786a5');")
    assert "is too old for the SQL source (latest_metrics lacks is_nan)" in _schema_error(old)


def test_an_empty_alembic_version_is_named_as_such(tmp_path):
    msg = _schema_error(_db(tmp_path / "empty.db", TABLES))
    assert "no MLflow schema revision (alembic_version is empty)" in msg and "upgrade mlflow" not in msg, msg


@pytest.mark.parametrize(("a", "b"), [
    ("postgresql://db.lab/mlflow", "postgresql+psycopg2://DB.lab:5432/mlflow"),
    ("postgresql://db.lab:5432/mlflow", "POSTGRESQL+psycopg://db.lab/mlflow?sslmode=require"),
    ("mysql://db/mlflow", "mysql+pymysql://db:3306/mlflow"),
    ("sqlite:////abs/mlflow.db", "sqlite+pysqlite:////abs/mlflow.db"),
    ("postgresql://[::1]/m", "postgresql+psycopg://[::1]:5432/m"),
])
def test_one_database_in_two_spellings_is_one_database(a, b):
    assert db_source(a) == db_source(b)


@pytest.mark.parametrize(("a", "b"), [
    ("postgresql://db.lab/mlflow", "postgresql://db.lab:5433/mlflow"),
    ("postgresql://db.lab/mlflow", "postgresql://db.lab/other"),
    ("postgresql://db/mlflow", "mysql://db/mlflow"),
    ("sqlite:////abs/a.db", "sqlite:////abs/b.db"),
])
def test_two_databases_stay_two(a, b):
    assert db_source(a) != db_source(b)


def test_a_database_ingested_under_another_spelling_is_not_stored_twice(tmp_path):
    # `postgresql+psycopg2://` is what the docs name when psycopg is missing: switching to it (or
    # adding the default port) made a second source of the same database, every run stored twice
    db = _db(tmp_path / "mlflow.db", TABLES + """
        INSERT INTO alembic_version VALUES ('dc11669786a5');
        INSERT INTO experiments VALUES (0, 'Default', 'active');
        INSERT INTO runs VALUES ('r1', 0, 'FINISHED', 1000, 2000, 'ann', 'active');
        INSERT INTO latest_metrics VALUES ('r1', 'us/jft/top1', 0.5, 0);
        INSERT INTO latest_metrics VALUES ('r1', 'ds/pets/5shot/top1', 0.6, 0);
        INSERT INTO params VALUES ('r1', 'model_name', 'vit_b16');""")
    store = str(tmp_path / "store")
    first = run_cli("ingest", f"mlflow-sql:sqlite:///{db}", "--store", store, "--quiet")
    assert first.returncode == 0 and "1 new" in first.stdout, first.stderr
    again = run_cli("ingest", f"mlflow-sql:sqlite+pysqlite:///{db}", "--store", store, "--quiet")
    assert again.returncode == 0 and "0 new" in again.stdout and "1 run unchanged" in again.stdout, again.stdout
    rows = Store(store).to_pandas()
    assert list(rows["source"]) == [f"sqlite:///{db}"]
    # a name given is the user's: not merged with the stored one
    named = run_cli("ingest", f"mlflow-sql:sqlite+pysqlite:///{db}", "--source", "lab", "--store", store, "--quiet")
    assert named.returncode == 0 and "1 new" in named.stdout, named.stdout


def _refused(doc: str) -> str:
    with pytest.raises(UserError) as e:
        parse_mapping(yaml.safe_load(doc), "m.yaml")
    return str(e.value)


@pytest.mark.parametrize(("doc", "expected"), [
    # YAML 1.1 reads these unquoted scalars as booleans: every row was quarantined
    # ("ds_task: wrong type (bool is not a string)"), the mapping unnamed
    ("constants: {us_task: jft, ds_task: on}", "m.yaml: constants.ds_task: True is a boolean to YAML"),
    ("constants: {optimizer: no}", "m.yaml: constants.optimizer: False is a boolean to YAML"),
    ("constants: {seed: yes}", "m.yaml: constants.seed: True is a boolean to YAML (unquoted yes/no/on/off/true/false), "
                               "not a number"),
    ("constants: {ds_task: 1.5}", "m.yaml: constants.ds_task: 1.5 is a number to YAML, not a name; quote it"),
    ("metrics: [{pattern: 'ds/{ds_task}/top1', constants: {representation_layer: off}}]",
     "m.yaml: metrics[0].constants.representation_layer: False is a boolean to YAML"),
])
def test_yaml_typed_constants_are_refused_in_one_line(doc, expected):
    assert _refused(doc).startswith(expected)


def test_yaml_typed_constants_that_fit_still_pass():
    m = parse_mapping(yaml.safe_load("constants: {us_task: 2012, ds_task: 'on', seed: 3, data_fraction: 1}"), "m.yaml")
    assert dict(m.constants) == {"us_task": 2012, "ds_task": "on", "seed": 3, "data_fraction": 1}


@pytest.mark.parametrize(("doc", "expected"), [
    ("rename: {2012: ds_accuracy}", "m.yaml: rename: the key 2012 is a number to YAML, not a string; quote it"),
    ("params: {on: lr}", "m.yaml: params: the key True is a boolean to YAML"),
    ("tags: {owner: 1.5}", "m.yaml: tags.owner: 1.5 is a number to YAML, not a string; quote it"),
    ("rename: [a, b]", "m.yaml: 'rename' must be a map of strings to strings"),
])
def test_a_bad_entry_of_a_name_map_is_named(doc, expected):
    # "'rename' must be a map of strings to strings" said neither which entry nor why
    assert _refused(doc).startswith(expected)


def test_a_unit_that_yaml_read_as_a_number_is_not_told_to_be_quoted():
    assert _refused("units: {us_accuracy: 100}") == "m.yaml: units.us_accuracy: 100 is a number to YAML, not a string"


@pytest.mark.parametrize("col", ["model_name", "ds_task", "started_at", "extra"])
def test_a_unit_on_a_column_of_no_numbers_is_refused(col):
    # `units: {model_name: millions}` made a model named "50" 50000000.0, quarantined as "model_name:
    # wrong type (not a string)", the mapping unnamed; the other names passed as they were
    assert f"m.yaml: units.{col}: {col} holds " in _refused(f"units: {{{col}: millions}}")


def test_a_unit_on_a_text_column_converted_nothing_silently(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("run_id,model_name,us_task,us_accuracy,ds_task,eval_protocol,ds_accuracy\n"
                   "r1,50,jft,0.8,pets,linear,0.7\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("units: {model_name: millions}\n")
    r = run_cli("ingest", str(csv), "--mapping", str(mapping), "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "units.model_name: model_name holds string, not numbers" in r.stderr, r.stderr


def test_arch_family_is_inferred_for_each_row_whose_cell_is_empty(tmp_path):
    # as for MLflow runs: a column with some families given left the other rows without one
    csv = tmp_path / "arch.csv"
    csv.write_text("run_id,model_name,arch_family,us_task,us_accuracy,ds_task,eval_protocol,ds_accuracy\n"
                   "r1,vit_b16,resnet,in21k,0.8,pets,linear,0.7\n"
                   "r2,resnet50,,in21k,0.76,pets,linear,0.6\n"
                   "r3,mixer_b16,,in21k,0.7,pets,linear,0.5\n"
                   "r4,,,in21k,0.7,pets,linear,0.5\n")
    store = str(tmp_path / "store")
    r = run_cli("ingest", str(csv), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    got = Store(store).to_pandas().set_index("run_id")["arch_family"]
    # a family given is kept, even where the rules would say otherwise; no model, no family
    assert got["r1"] == "resnet" and got["r2"] == "resnet" and got["r3"] == "mixer" and pd.isna(got["r4"])


@pytest.mark.parametrize(("doc", "expected"), [
    # `accuracy_unit: error` for the error-rate metrics also made the upstream `val_acc` 1 - accuracy
    ("accuracy_unit: error\nmetrics: [{pattern: 'linear_{ds_task}_err'}, {pattern: 'us/{us_task}/val_acc'}]",
     "m.yaml: metrics[1]: the pattern 'us/{us_task}/val_acc' holds accuracies by its name, but maps to us_accuracy "
     "in unit error, which would store each accuracy as its error rate (0.8 as 0.2); give it the unit fraction "
     "(metrics[1].unit)"),
    ("rename: {top1_accuracy: us_accuracy}\nunits: {us_accuracy: error_percent}",
     "m.yaml: rename.top1_accuracy: the column 'top1_accuracy' holds accuracies by its name, but maps to us_accuracy "
     "in unit error_percent"),
    ("metrics: [{pattern: 'ds/{ds_task}/acc1', unit: error}]", "m.yaml: metrics[0]: the pattern 'ds/{ds_task}/acc1'"),
])
def test_an_accuracy_taken_for_an_error_rate_is_refused(doc, expected):
    assert _refused(doc).startswith(expected)


@pytest.mark.parametrize("doc", [
    "accuracy_unit: error\nmetrics: [{pattern: 'linear_{ds_task}_err'}, {pattern: 'us/{us_task}/val_acc', unit: fraction}]",
    "rename: {acc_err: us_accuracy, accel: ds_accuracy}\naccuracy_unit: error",   # an error word; no accuracy word
    "accuracy_unit: error\nmetrics: [{pattern: '{ds_task}_top1'}]",
    "metrics: [{pattern: 'ds/{ds_task}/{shots}shot/top1', constants: {eval_protocol: fewshot}, unit: error}]",
])
def test_error_units_on_names_that_are_not_accuracies_pass(doc):
    parse_mapping(yaml.safe_load(doc), "m.yaml")


def test_one_database_in_two_spellings_under_one_name_is_not_two_databases(tmp_path):
    """Two entries of one sources file naming one database read directly, in two spellings, under
    one ``name:`` (two selections of its experiments): refused as "two MLflow databases under one
    source name", though the reader stores them as one."""
    from types import SimpleNamespace

    from meta_study.ingest.sources import _refuse_shared_states

    def src(spec: str) -> SimpleNamespace:
        return SimpleNamespace(state_name="mlflow-sql:lab", spec=spec, uses_run_options=True, label=spec, source="lab")

    db = tmp_path / "x.db"
    _refuse_shared_states([src(f"mlflow-sql:sqlite:///{db}"), src(f"mlflow-sql:sqlite+pysqlite:///{db}")])
    _refuse_shared_states([src("mlflow-sql:postgresql://db.lab/mlflow"),
                           src("mlflow-sql:postgresql+psycopg2://db.lab:5432/mlflow")])
    with pytest.raises(UserError, match="two MLflow databases under one source name 'lab'"):
        _refuse_shared_states([src(f"mlflow-sql:sqlite:///{db}"), src(f"mlflow-sql:sqlite:///{tmp_path / 'y.db'}")])
