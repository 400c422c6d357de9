"""The SQL source (``mlflow-sql:``) against a real ``mlflow server``'s sqlite database: the same rows
as the REST source, incremental, read-only, credentials refused and never stored, one-line errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from meta_study.ingest.sources import kind_of
from meta_study.store import Store
from conftest import MAPPINGS, run_cli
from test_ingest_mlflow import _log, alice_run, bob_run


def sql_spec(db: Path) -> str:
    return f"mlflow-sql:sqlite:///{db}"


def errors(stderr: str) -> list[str]:
    """stderr without progress lines, and without the CLI's prefix of refusals."""
    return [line.removeprefix("meta-study: error: ") for line in stderr.splitlines()
            if line.strip() and not line.startswith("  ")]


@pytest.fixture()
def zoo(mlflow_server, tmp_path):
    """Experiments for one test, with everything the mapping has to get right."""
    c = MlflowClient(mlflow_server.uri)
    tag = uuid.uuid4().hex[:6]
    a = c.create_experiment(f"sql-alice-{tag}")
    b = c.create_experiment(f"sql-bob-{tag}")
    many = c.create_experiment(f"sql-many-{tag}")
    parent = _log(c, a, {}, {"sweep": "head_wd"}, {"researcher": "alice"}, name="sweep-parent")
    ids = {"good": [alice_run(c, a, i, parent=parent) for i in range(3)]}
    ids["nan"] = alice_run(c, a, 4, metrics={"ds/pets/10shot/top1": float("nan")})
    ids["pct"] = alice_run(c, a, 5, metrics={"ds/dtd/1shot/top1": 87.5})
    ids["no_us"] = _log(c, a, {"ds/cifar100/5shot/top1": 0.5}, {"model_name": "vit_tiny_cpu"}, {"researcher": "alice"})
    # odd keys: legal for MLflow; a task name too long for a partition directory is quarantined
    ids["odd"] = _log(c, a, {"us/up/top1": 0.5, "ds/.hidden/5shot/top1": 0.4, "ds/a b.c-d/5shot/top1": 0.2,
                             f"ds/{'é' * 60}/5shot/top1": 0.3, "ds/x/5shot/top5": 0.9, "weird key": 1.0},
                      {"model_name": "mixer_b16", "not_mapped": "7"}, {"team": "vision"})
    ids["inf"] = _log(c, a, {"us/up/top1": float("inf"), "ds/pets/5shot/top1": 0.4}, {"model_name": "resnet50"})
    ids["running"] = alice_run(c, a, 6, status="RUNNING")
    ids["failed"] = alice_run(c, a, 7, status="FAILED")
    ids["deleted"] = alice_run(c, a, 8)
    c.delete_run(ids["deleted"])
    ids["bob"] = [bob_run(c, b, i) for i in range(3)]
    ids["many"] = [alice_run(c, many, i) for i in range(20)]   # i > 20: out of range
    # history: a metric logged twice, the later value lower (history="max" takes the first)
    c.log_metric(ids["good"][0], "ds/pets/1shot/top1", 0.95, step=1)
    c.log_metric(ids["good"][0], "ds/pets/1shot/top1", 0.11, step=2)
    c.log_metric(ids["good"][0], "diag/head_norm", 9.0, step=1)      # not an accuracy: always the latest
    c.log_metric(ids["good"][0], "diag/head_norm", 3.5, step=2)
    gone = c.create_experiment(f"sql-gone-{tag}")
    alice_run(c, gone, 0)
    c.delete_experiment(gone)

    def sources(uri: str, name: str) -> Path:
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"""sources:
  - uri: {uri}
    experiments: ["sql-alice-{tag}", "sql-many-{tag}"]
    name: lab
  - uri: {uri}
    experiments: ["sql-bob-{tag}"]
    mapping: {MAPPINGS / 'mlflow_percent_keys.yaml'}
    name: bob
""")
        return p

    return {"client": c, "tag": tag, "alice": a, "many": many, "ids": ids, "db": mlflow_server.db,
            "uri": mlflow_server.uri, "rest": sources(mlflow_server.uri, "rest"),
            "sql": sources(sql_spec(mlflow_server.db), "sql"), "tmp": tmp_path}


def _rows(store: str) -> pd.DataFrame:
    df = Store(store).to_pandas().drop(columns=["ingested_at"])
    df["extra"] = df["extra"].map(lambda m: tuple(sorted(dict(m).items())) if m is not None else None)
    key = ["source", "run_id", "us_task", "ds_task", "eval_protocol", "shots", "representation_layer"]
    return df.sort_values(key, na_position="first").reset_index(drop=True)


def _quarantine(store: str) -> pd.DataFrame:
    q = Store(store).quarantine().to_pandas()[["source", "run_id", "reason", "raw"]]
    return q.sort_values(["source", "run_id", "reason"]).reset_index(drop=True)


@pytest.mark.slow(40)
@pytest.mark.parametrize("flags", [(), ("--include-running", "--history", "max", "--page-size", "4")])
def test_same_rows_values_extra_and_quarantine_as_rest(zoo, flags):
    stores, counts = {}, {}
    for kind in ("rest", "sql"):
        stores[kind] = str(zoo["tmp"] / f"store-{kind}")
        r = run_cli("ingest", "--sources-file", str(zoo[kind]), "--store", stores[kind], "--quiet", *flags)
        assert r.returncode == 0, r.stderr
        # the summary without label and time: rows and runs new, unchanged, quarantined, without metrics
        counts[kind] = [line.split("]: ", 1)[1].rsplit(" (", 1)[0] for line in r.stdout.splitlines()]
    rest, sql = _rows(stores["rest"]), _rows(stores["sql"])
    ids = zoo["ids"]
    assert len(rest) > 20 * 6 and set(rest["run_id"]) >= set(ids["many"]) | set(ids["good"]) | {ids["odd"]}
    assert (ids["running"] in set(rest["run_id"])) == bool(flags)
    assert not {ids["failed"], ids["deleted"], ids["no_us"]} & set(rest["run_id"])
    pd.testing.assert_frame_equal(sql, rest)
    assert counts["sql"] == counts["rest"] and "runs unchanged" not in " ".join(counts["sql"]), counts
    q_rest, q_sql = _quarantine(stores["rest"]), _quarantine(stores["sql"])
    assert {ids["nan"], ids["pct"], ids["no_us"], ids["odd"]} <= set(q_rest["run_id"])
    pd.testing.assert_frame_equal(q_sql, q_rest)
    odd = sql[sql["run_id"] == ids["odd"]]
    assert set(odd["ds_task"]) == {".hidden", "a b.c-d"} and odd["arch_family"].iloc[0] == "mixer"
    extra = dict(odd["extra"].iloc[0])
    assert extra["metric:weird key"] == "1.0" and extra["param:not_mapped"] == "7" and extra["tag:team"] == "vision"
    best = sql[(sql["run_id"] == ids["good"][0]) & (sql["ds_task"] == "pets") & (sql["shots"] == 1)]["ds_accuracy"]
    assert list(best) == [pytest.approx(0.95 if flags else 0.11)]
    norm = sql[sql["run_id"] == ids["good"][0]]["extra"].map(dict).map(lambda e: e["metric:diag/head_norm"])
    assert set(norm) == {"3.5"}


@pytest.mark.slow(20)
def test_incremental_noop_new_runs_and_a_changed_run(zoo):
    spec, store = sql_spec(zoo["db"]), str(zoo["tmp"] / "store")
    args = ["ingest", spec, "--experiment", f"sql-alice-{zoo['tag']}", "--store", store, "--quiet"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    s = Store(store)
    assert s.state_names() == [f"mlflow-sql:sqlite:///{zoo['db']}"]   # its own state, named without the prefix twice
    version, n = s.version, len(s.to_pandas())
    again = run_cli(*args)
    assert again.returncode == 0 and "0 new, 0 updated" in again.stdout and "runs unchanged" in again.stdout, again.stdout
    assert "runs new" not in again.stdout and s.version == version     # a no-op writes nothing
    new = [alice_run(zoo["client"], zoo["alice"], 10 + i) for i in range(2)]
    r = run_cli(*args)
    assert "12 new, 0 updated" in r.stdout and "2 runs new" in r.stdout, r.stdout
    df = s.to_pandas()
    assert len(df) == n + 12 and set(df["run_id"]) >= set(new)
    zoo["client"].log_metric(zoo["ids"]["good"][1], "ds/pets/10shot/top1", 0.99)   # a finished run changes
    r = run_cli(*args, "--full")
    assert "0 new, 1 updated" in r.stdout and "1 run changed" in r.stdout, r.stdout
    df = s.to_pandas()
    v = df[(df["run_id"] == zoo["ids"]["good"][1]) & (df["ds_task"] == "pets") & (df["shots"] == 10)]["ds_accuracy"]
    assert list(v) == [pytest.approx(0.99)]
    zoo["client"].delete_run(zoo["ids"]["good"][2])
    r = run_cli(*args, "--drop-deleted")
    assert "6 deleted" in r.stdout, r.stdout
    assert zoo["ids"]["good"][2] not in set(s.to_pandas()["run_id"])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.slow(15)
def test_read_only_the_database_is_untouched(zoo):
    ro = zoo["tmp"] / "ro"
    ro.mkdir()
    db = ro / "mlflow.db"
    shutil.copy(zoo["db"], db)
    before, mtime = _sha(db), db.stat().st_mtime_ns
    db.chmod(0o444)
    ro.chmod(0o555)   # (root ignores modes: the write refusal below is what proves read-only)
    try:
        r = run_cli("ingest", sql_spec(db), "--experiment", f"sql-alice-{zoo['tag']}", "--store",
                    str(zoo["tmp"] / "store"), "--quiet")
        assert r.returncode == 0 and " new" in r.stdout, r.stderr
        assert _sha(db) == before and db.stat().st_mtime_ns == mtime and os.listdir(ro) == ["mlflow.db"]
        from meta_study.ingest.mlflow_runs import default_mapping
        from meta_study.ingest.mlflow_sql import MlflowSqlSource
        import sqlalchemy

        engine, conn, _ = MlflowSqlSource(sql_spec(db), default_mapping()).connect()
        try:
            with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly|read-only|query_only"):
                conn.execute(sqlalchemy.text("CREATE TABLE intruder (a INTEGER)"))
        finally:
            conn.close()
            engine.dispose()
        assert _sha(db) == before
    finally:
        ro.chmod(0o755)


def test_sqlite_specs_keep_going_through_mlflow_and_the_prefix_picks_sql():
    assert kind_of("sqlite:////abs/mlflow.db") == "mlflow"
    assert kind_of("mlflow-sql:sqlite:////abs/mlflow.db") == "mlflow-sql"
    assert kind_of("mlflow-sql:postgresql://db:5432/mlflow") == "mlflow-sql"


SECRET = "Hunter2-secret-pw"


@pytest.mark.parametrize("url", [f"postgresql://ann:{SECRET}@db.lab:5432/mlflow",
                                 f"mysql+pymysql://ann:{SECRET}@db.lab/mlflow",
                                 f"postgresql://db.lab/mlflow?password={SECRET}"])
def test_credentials_in_the_url_are_refused_in_one_line(url, tmp_path):
    r = run_cli("ingest", f"mlflow-sql:{url}", "--store", str(tmp_path / "store"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = errors(r.stderr)
    assert "credentials in the database URL are refused" in line and "META_STUDY_DB_PASSWORD" in line
    assert line.startswith("mlflow-sql:") and "db.lab" in line
    assert SECRET not in r.stderr + r.stdout and "ann" not in line


def test_credentials_from_the_environment_never_reach_the_store(zoo):
    store = zoo["tmp"] / "store"
    env = {"META_STUDY_DB_USER": "ann-the-user", "META_STUDY_DB_PASSWORD": SECRET}
    r = run_cli("ingest", "--sources-file", str(zoo["sql"]), "--store", str(store), env=env)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    files = [p for p in store.rglob("*") if p.is_file()]
    assert len(files) > 5
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data and b"ann-the-user" not in data, p


def _fake_db(path: Path, sql: str) -> Path:
    con = sqlite3.connect(path)
    con.executescript(sql)
    con.close()
    return path


@pytest.mark.slow(20)
def test_bad_inputs_fail_in_one_line_with_exit_2(zoo, tmp_path):
    store = str(tmp_path / "store")
    old_schema = ("CREATE TABLE alembic_version (version_num TEXT); INSERT INTO alembic_version VALUES ('451aebb31d03');"
                  "CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT);"
                  "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, status TEXT, start_time INTEGER,"
                  " end_time INTEGER, user_id TEXT, lifecycle_stage TEXT);"
                  "CREATE TABLE params (run_uuid TEXT, key TEXT, value TEXT);"
                  "CREATE TABLE tags (run_uuid TEXT, key TEXT, value TEXT);"
                  "CREATE TABLE metrics (run_uuid TEXT, key TEXT, value REAL, is_nan INTEGER);")
    newer = tmp_path / "newer.db"
    shutil.copy(zoo["db"], newer)
    _fake_db(newer, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    cases = {
        f"mlflow-sql:sqlite:///{tmp_path / 'missing.db'}": "no such database file",
        f"mlflow-sql:sqlite:///{_fake_db(tmp_path / 'other.db', 'CREATE TABLE t (a INTEGER);')}":
            "not an MLflow tracking database",
        f"mlflow-sql:sqlite:///{_fake_db(tmp_path / 'old.db', old_schema)}":
            "MLflow schema revision 451aebb31d03 is too old for the SQL source (latest_metrics lacks run_uuid",
        f"mlflow-sql:sqlite:///{newer}": "unknown MLflow schema revision 'ffffffffffff'",
        "mlflow-sql:oracle://db.lab/mlflow": "unsupported database 'oracle'",
        "mlflow-sql:postgresql://127.0.0.1:9/mlflow": "postgresql://127.0.0.1:9/mlflow: ",
    }
    for spec, expected in cases.items():
        r = run_cli("ingest", spec, "--store", store)
        (line,) = errors(r.stderr)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (spec, r.stderr)
        assert expected in line and line.startswith(spec.split("?")[0][:20]), (spec, line)
    r = run_cli("ingest", sql_spec(zoo["db"]), "--experiment", "no-such-*", "--store", store)
    assert r.returncode == 2 and errors(r.stderr)[-1].endswith("no experiment matches 'no-such-*'"), r.stderr
    r = run_cli("ingest", sql_spec(zoo["db"]), "--filter", "params.lr = '0.1'", "--store", store)
    assert r.returncode == 2 and "--filter (an MLflow search filter) is not supported by the SQL source" in r.stderr
    assert len(errors(r.stderr)) == 1


def test_history_max_needs_the_metrics_table(tmp_path):
    # every table but metrics, at a real revision: fine for latest values, refused for history="max"
    db = tmp_path / "m.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE alembic_version (version_num TEXT); INSERT INTO alembic_version VALUES ('dc11669786a5');"
        "CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT);"
        "INSERT INTO experiments VALUES (0, 'Default', 'active');"
        "CREATE TABLE runs (run_uuid TEXT, experiment_id INTEGER, status TEXT, start_time INTEGER,"
        " end_time INTEGER, user_id TEXT, lifecycle_stage TEXT);"
        "CREATE TABLE latest_metrics (run_uuid TEXT, key TEXT, value REAL, is_nan INTEGER);"
        "CREATE TABLE params (run_uuid TEXT, key TEXT, value TEXT);"
        "CREATE TABLE tags (run_uuid TEXT, key TEXT, value TEXT);")
    con.close()
    store = str(tmp_path / "store")
    ok = run_cli("ingest", sql_spec(db), "--store", store, "--quiet")
    assert ok.returncode == 0 and "0 new" in ok.stdout, ok.stderr
    r = run_cli("ingest", sql_spec(db), "--store", store, "--history", "max")
    assert r.returncode == 2 and "(metrics lacks run_uuid, key, value, is_nan)" in r.stderr, r.stderr


def _read_only_mount(src: Path, dst: Path) -> list[str] | None:
    """A command prefix that runs a command with ``dst`` a read-only bind mount of ``src`` (in a
    private mount namespace), or None where this machine cannot (not root, no unshare)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return None
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              f'mount --bind "{src}" "{dst}" && mount -o remount,bind,ro "{dst}" && exec "$@"', "sh"]
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{dst}/probe" 2>/dev/null'], check=False, capture_output=True)
    return prefix if probe.returncode == 0 and not (src / "probe").exists() else None


@pytest.mark.slow(10)
def test_a_database_on_a_read_only_file_system_is_read(zoo, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    dst.mkdir()
    shutil.copy(zoo["db"], src / "mlflow.db")
    prefix = _read_only_mount(src, dst)
    if prefix is None:
        pytest.skip("needs root and unshare for a read-only bind mount")
    before = _sha(src / "mlflow.db")
    store = tmp_path / "store"
    r = subprocess.run([*prefix, sys.executable, "-m", "meta_study.cli", "ingest", sql_spec(dst / "mlflow.db"),
                        "--experiment", f"sql-alice-{zoo['tag']}", "--store", str(store), "--quiet"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and " new, 0 updated" in r.stdout, r.stderr
    assert len(Store(str(store)).to_pandas()) > 20
    assert _sha(src / "mlflow.db") == before and os.listdir(src) == ["mlflow.db"]


def test_safe_uri_strips_credentials_inside_a_prefixed_url():
    from meta_study.mlflow_client import safe_uri

    assert safe_uri(f"mlflow-sql:postgresql://ann:{SECRET}@db.lab:5432/mlflow?password={SECRET}") == \
        "mlflow-sql:postgresql://db.lab:5432/mlflow"
    assert safe_uri("mlflow-sql:sqlite:////abs/mlflow.db?mode=rw") == "mlflow-sql:sqlite:////abs/mlflow.db"
    assert safe_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
