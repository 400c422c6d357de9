"""Review of the MLflow sources (mlflow_runs.py, mlflow_source.py), stop 44.

- A downstream metric pattern without an ``eval_protocol`` and without ``{shots}`` stored every row
  as ``other``, whatever the mapping's ``constants: {eval_protocol: linear}`` or a param or tag
  mapped to ``eval_protocol`` said (silently: ``other`` is a valid protocol, and part of the key).
- ``--history max`` took the best of a metric's history with its infinite steps: MLflow stores
  ``inf`` as the largest float, so one ``inf`` step of an accuracy (or ``-inf`` of an error rate)
  was the best value, and the run was quarantined though its other steps were accuracies.

Each test logs runs to an MLflow sqlite file (MLflow's tables copied from one made per module) and
runs ``meta-study ingest`` on it through MLflow's client (``sqlite:///``), or through a real
``mlflow server`` on 127.0.0.1 where the REST path itself is the point.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import MAPPINGS, run_cli

INF = float("inf")


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()   # creates the tables
    return db


class Lab:
    """An MLflow sqlite file with one experiment, and ingests of it into one store."""

    def __init__(self, tmp: Path, empty: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.tmp, self.db = tmp, tmp / "mlflow.db"
        shutil.copyfile(empty, self.db)     # MLflow's tables made once: ~5 s of migrations a file
        self.client = MlflowClient(tracking_uri=f"sqlite:///{self.db}")
        self.exp = self.client.create_experiment("bob")
        self.spec = f"sqlite:///{self.db}"

    def run(self, metrics: dict[str, float | list[float]], params: dict[str, str] | None = None,
            tags: dict[str, str] | None = None) -> str:
        """A finished run; a list is a metric's history, step by step (the last is the latest)."""
        rid = self.client.create_run(self.exp, tags=tags or {}).info.run_id
        for k, v in (params or {}).items():
            self.client.log_param(rid, k, v)
        for key, values in metrics.items():
            for step, v in enumerate(values if isinstance(values, list) else [values]):
                self.client.log_metric(rid, key, v, step=step)
        self.client.set_terminated(rid)
        return rid

    def mapping(self, text: str) -> str:
        p = self.tmp / "mapping.yaml"
        p.write_text(text)
        return str(p)

    def ingest(self, *args: str, spec: str | None = None):
        r = run_cli("ingest", spec or self.spec, "--store", str(self.tmp / "st"), *args, cwd=self.tmp)
        assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        return r

    def rows(self) -> pd.DataFrame:
        return pd.read_parquet(self.tmp / "st")


@pytest.fixture
def lab(tmp_path, empty_db) -> Lab:
    return Lab(tmp_path, empty_db)


# --------------------------------------------------------------------------------------------
# eval_protocol of a DS pattern that names none
# --------------------------------------------------------------------------------------------

PLAIN_DS = """
name: plain-ds
metrics:
  - pattern: "up/acc"
    constants: {us_task: in1k}
  - pattern: "eval/{ds_task}/acc"
"""


def test_a_mapping_constant_eval_protocol_is_the_rows_protocol(lab):
    lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4})
    lab.ingest("--mapping", lab.mapping(PLAIN_DS + "constants: {eval_protocol: linear}\n"))
    df = lab.rows()
    assert df["eval_protocol"].tolist() == ["linear"], df[["ds_task", "eval_protocol"]]


@pytest.mark.parametrize("kind", ["param", "tag"])
def test_a_param_or_tag_mapped_to_eval_protocol_is_the_rows_protocol(lab, kind):
    if kind == "param":
        lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4}, params={"protocol": "zeroshot"})
    else:
        lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4}, tags={"protocol": "zeroshot"})
    lab.ingest("--mapping", lab.mapping(PLAIN_DS + f"{kind}s: {{protocol: eval_protocol}}\n"))
    assert lab.rows()["eval_protocol"].tolist() == ["zeroshot"]


def test_without_any_protocol_a_ds_metric_is_other_and_shots_still_make_it_fewshot(lab):
    """What did not change: no protocol anywhere is ``other``; ``{shots}`` implies ``fewshot``,
    and a pattern's own ``eval_protocol`` wins over the mapping's constant."""
    lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4, "eval/dtd/k5": 0.3, "lin/cars": 0.2})
    lab.run({"up/acc": 0.6, "eval/pets/acc": 0.5}, params={"protocol": " "})   # blank: no value
    text = PLAIN_DS + ('  - pattern: "eval/{ds_task}/k{shots}"\n'
                       '  - pattern: "lin/{ds_task}"\n    eval_protocol: finetune\n')
    lab.ingest("--mapping", lab.mapping(text + "params: {protocol: eval_protocol}\n"))
    got = sorted(zip(lab.rows()["ds_task"], lab.rows()["eval_protocol"]))
    assert got == [("cars", "finetune"), ("dtd", "fewshot"), ("pets", "other"), ("pets", "other")], got


def test_a_store_of_the_version_before_has_its_other_rows_replaced(lab, monkeypatch):
    """Rows stored as ``other`` by the version before (EXPANSION_VERSION 4) are replaced by the
    next ingest, not kept beside the right ones: the protocol is part of the rows' key."""
    from meta_study.ingest import mlflow_runs

    rid = lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4})
    mapping = lab.mapping(PLAIN_DS + "constants: {eval_protocol: linear}\n")
    real_spec = mlflow_runs.RunExpander.spec

    def old_spec(self, key):     # the version before: "other" in every such DS key's fields
        hit = real_spec(self, key)
        if hit is not None and hit.role == "ds":
            self._ds_fields[hit.ds_index].setdefault("eval_protocol", "other")
        return hit

    with monkeypatch.context() as m:
        m.setattr(mlflow_runs, "EXPANSION_VERSION", 4)
        m.setattr(mlflow_runs.RunExpander, "spec", old_spec)
        lab.ingest("--mapping", mapping)
    assert lab.rows()["eval_protocol"].tolist() == ["other"]
    r = lab.ingest("--mapping", mapping)
    assert "1 run changed" in r.stdout, r.stdout
    df = lab.rows()
    assert df[["run_id", "eval_protocol"]].values.tolist() == [[rid, "linear"]]


# --------------------------------------------------------------------------------------------
# --history max and infinite steps
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", ["client", "sql"])
def test_history_max_skips_an_infinite_step_of_an_accuracy(lab, reader):
    """Through MLflow's client and through the database read directly (``mlflow-sql:``), whose
    grouped MIN/MAX took the stand-in for ``inf`` as the best value the same way."""
    rid = lab.run({"us/in1k/top1": [0.3, INF, 0.5], "ds/pets/10shot/top1": [0.2, 0.45, 0.4]})
    r = lab.ingest("--history", "max", spec="mlflow-sql:" + lab.spec if reader == "sql" else None)
    assert "quarantined" not in r.stdout or " 0 quarantined" in r.stdout, r.stdout
    df = lab.rows()
    assert df[["run_id", "us_accuracy", "ds_accuracy"]].values.tolist() == [[rid, 0.5, 0.45]]


@pytest.mark.parametrize("reader", ["client", "sql"])
def test_history_max_of_an_error_rate_skips_a_minus_infinite_step(lab, reader):
    rid = lab.run({"jft_err": [0.5, -INF, 0.4], "linear_pets_err": [0.6, 0.2, 0.3]})
    lab.ingest("--history", "max", "--mapping", str(MAPPINGS / "mlflow_error_rates.yaml"),
               spec="mlflow-sql:" + lab.spec if reader == "sql" else None)
    df = lab.rows()
    assert df[["run_id", "us_accuracy", "ds_accuracy"]].values.tolist() == [[rid, 0.6, 0.8]]


def test_an_infinite_latest_value_is_still_quarantined(lab):
    """What did not change: with ``--history latest`` an infinite latest value is no accuracy."""
    lab.run({"us/in1k/top1": [0.3, INF], "ds/pets/10shot/top1": 0.4})
    r = run_cli("ingest", lab.spec, "--store", str(lab.tmp / "st"), cwd=lab.tmp)
    assert "all 1 rows quarantined" in r.stdout + r.stderr and "us_accuracy: out of range" in r.stdout + r.stderr, \
        r.stdout + r.stderr


@pytest.mark.slow(40)
def test_history_max_over_rest_skips_an_infinite_step(tmp_path):
    """The same through a real ``mlflow server``: the REST answer carries MLflow's stand-in for
    ``inf`` (the largest float) as the SQL store wrote it."""
    from mlflow.tracking import MlflowClient

    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path / "srv") as server:
        c = MlflowClient(server.uri)
        exp = c.create_experiment("rest")
        rid = c.create_run(exp).info.run_id
        for step, v in enumerate([0.3, INF, 0.5]):
            c.log_metric(rid, "us/in1k/top1", v, step=step)
        c.log_metric(rid, "ds/pets/10shot/top1", 0.4)
        c.set_terminated(rid)
        r = run_cli("ingest", server.uri, "--history", "max", "--store", str(tmp_path / "st"), cwd=tmp_path)
    assert r.returncode == 0 and "1 new" in r.stdout, r.stdout + r.stderr
    df = pd.read_parquet(tmp_path / "st")
    assert df[["run_id", "us_accuracy", "ds_accuracy"]].values.tolist() == [[rid, 0.5, 0.4]]


# --------------------------------------------------------------------------------------------
# two params (or a param and a tag) mapped to one column
# --------------------------------------------------------------------------------------------

ALIASES = PLAIN_DS + "params: {lr: lr, learning_rate: lr}\ntags: {lr_tag: lr}\n"


def _reasons(lab: Lab) -> list[str]:
    from meta_study.store import Store

    return Store(str(lab.tmp / "st")).quarantine().column("reason").to_pylist()


def test_two_params_of_one_column_that_disagree_quarantine_the_run(lab):
    """A run that logged ``lr=0.1`` and ``learning_rate=0.2``, both mapped to ``lr``: one value
    was stored, by the order the database returned the params, and the other was lost without a
    word (not even in ``extra``)."""
    lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4}, params={"lr": "0.1", "learning_rate": "0.2"})
    r = run_cli("ingest", lab.spec, "--store", str(lab.tmp / "st"), "--mapping", lab.mapping(ALIASES), cwd=lab.tmp)
    assert "all 1 rows quarantined" in r.stderr, r.stdout + r.stderr
    assert _reasons(lab) == ["lr: the run's param lr='0.1' and its param learning_rate='0.2' both map to it and "
                             "disagree; neither is written over the other (map one of them to another column)"]


def test_a_param_and_a_tag_of_one_column_that_disagree_quarantine_the_run(lab):
    lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4}, params={"lr": "0.1"}, tags={"lr_tag": "0.3"})
    r = run_cli("ingest", lab.spec, "--store", str(lab.tmp / "st"), "--mapping", lab.mapping(ALIASES), cwd=lab.tmp)
    assert "all 1 rows quarantined" in r.stderr, r.stdout + r.stderr
    assert [x[:62] for x in _reasons(lab)] == ["lr: the run's param lr='0.1' and its tag lr_tag='0.3' both map"]


def test_aliases_that_agree_or_a_run_that_logs_one_of_them_are_stored(lab):
    """Old and new names of one param are what the aliases are for: one logged, or both alike."""
    a = lab.run({"up/acc": 0.5, "eval/pets/acc": 0.4}, params={"lr": "0.1", "learning_rate": "1e-1"})
    b = lab.run({"up/acc": 0.6, "eval/pets/acc": 0.5}, params={"learning_rate": "0.2"})
    lab.ingest("--mapping", lab.mapping(ALIASES))
    df = lab.rows().set_index("run_id")
    assert sorted(df.index) == sorted([a, b]) and float(df.loc[a, "lr"]) == 0.1 and float(df.loc[b, "lr"]) == 0.2


# --------------------------------------------------------------------------------------------
# a server that gives fewer runs per page than asked for
# --------------------------------------------------------------------------------------------

def test_a_server_that_caps_its_pages_below_the_page_size_loses_no_run(lab, monkeypatch):
    """A tracking server (a proxy, a plug-in store) that answers ``search_runs`` with at most 3
    runs a page and a page token, asked for 5: the keyset read took the short page for the last
    and stopped, exit 0 with 3 of the 7 runs, and every later ingest read on from the watermark."""
    import time

    import mlflow.tracking.client as mc

    now = int(time.time() * 1000) - 60_000
    want = set()
    for i in range(7):
        rid = lab.client.create_run(lab.exp).info.run_id
        lab.client.log_metric(rid, "us/in1k/top1", 0.5)
        lab.client.log_metric(rid, "ds/pets/10shot/top1", 0.4)
        lab.client.set_terminated(rid, end_time=now + i * 1000)
        want.add(rid)
    search = mc.MlflowClient.search_runs

    def capped(self, *args, max_results=1000, **kw):
        return search(self, *args, max_results=min(max_results, 3), **kw)   # the real store, 3 a page

    monkeypatch.setattr(mc.MlflowClient, "search_runs", capped)
    lab.ingest("--page-size", "5")
    assert set(lab.rows()["run_id"]) == want
