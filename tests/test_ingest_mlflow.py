"""Ingest from a real ``mlflow server``: two conventions, nested runs, bad runs, incremental
re-ingest, SIGKILL mid-ingest, mixed sources, an unreachable source, credentials and hostile names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from meta_study.store import Store
from conftest import MAPPINGS, run_cli

DS_TASKS = ("cifar100", "pets", "dtd")


def _log(client: MlflowClient, exp: str, metrics: dict, params: dict, tags: dict | None = None,
         parent: str | None = None, status: str = "FINISHED", name: str | None = None) -> str:
    t = dict(tags or {})
    if parent:
        t["mlflow.parentRunId"] = parent
    run = client.create_run(exp, tags=t, run_name=name)
    rid = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    if status != "RUNNING":
        client.set_terminated(rid, status=status)
    return rid


def alice_run(client, exp, i, parent=None, **over):
    """Our default convention: us/{us_task}/top1, ds/{ds_task}/{shots}shot/top1."""
    m = {"us/jft/top1": 0.40 + 0.03 * i}
    for j, ds in enumerate(DS_TASKS):
        for k in (1, 10):
            m[f"ds/{ds}/{k}shot/top1"] = round(0.20 + 0.02 * i + 0.05 * j + 0.01 * k, 6)
    m["diag/head_norm"] = 3.5
    m.update(over.pop("metrics", {}))
    params = {"model_name": "vit_tiny_cpu", "lr": 8e-4, "wd": 0.1, "head_wd": 0.01 * i, "epochs": 7,
              "data_fraction": 1.0, "batch_size": 64, "optimizer": "adam", "seed": i, "param_count": 120000}
    return _log(client, exp, m, params, {"researcher": "alice", "arch_family": "vit", "sweep": "head_wd"},
                parent=parent, **over)


def bob_run(client, exp, i):
    """Another convention, in percent (examples/mappings/mlflow_percent_keys.yaml)."""
    m = {"upstream/top1_pct": 50.0 + i, "eval/cifar100/k5_pct": 30.0 + i, "eval/pets/k5_pct": 40.0 + i}
    return _log(client, exp, m, {"arch": "resnet50", "learning_rate": 0.1, "num_epochs": 90}, {"owner": "bob"})


@pytest.fixture()
def lab(mlflow_server, tmp_path):
    """Fresh experiments for one test: alice-* (default convention) and bob-* (needs a mapping)."""
    c = MlflowClient(mlflow_server.uri)
    tag = uuid.uuid4().hex[:6]
    a = c.create_experiment(f"team-alice-{tag}")
    b = c.create_experiment(f"team-bob-{tag}")
    parent = _log(c, a, {}, {"sweep": "head_wd"}, {"researcher": "alice"}, name="sweep-parent")
    good = [alice_run(c, a, i, parent=parent) for i in range(4)]
    bad_nan = alice_run(c, a, 4, parent=parent, metrics={"ds/pets/10shot/top1": float("nan")})
    bad_pct = alice_run(c, a, 5, parent=parent, metrics={"ds/dtd/1shot/top1": 87.5})
    bad_us = _log(c, a, {"ds/cifar100/5shot/top1": 0.5}, {"model_name": "vit_tiny_cpu"}, {"researcher": "alice"})
    bobs = [bob_run(c, b, i) for i in range(3)]
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"""sources:
  - uri: {mlflow_server.uri}
    experiments: ["team-alice-{tag}"]
  - uri: {mlflow_server.uri}
    experiments: ["team-bob-{tag}"]
    mapping: {MAPPINGS / 'mlflow_percent_keys.yaml'}
    name: bob-server
""")
    return {"client": c, "uri": mlflow_server.uri, "tag": tag, "alice": a, "bob": b, "parent": parent, "good": good,
            "bad_nan": bad_nan, "bad_pct": bad_pct, "bad_us": bad_us, "bobs": bobs, "sources": sources,
            "store": str(tmp_path / "store")}


def test_two_conventions_exact_rows_and_quarantine(lab):
    r = run_cli("ingest", "--sources-file", str(lab["sources"]), "--store", lab["store"], "--quiet")
    assert r.returncode == 0, r.stderr
    s = Store(lab["store"])
    df = s.to_pandas()
    alice = df[df["source"] == lab["uri"]]
    # 4 good runs x 3 tasks x 2 shots, plus the good rows of the two partly bad runs (5 each)
    assert len(alice) == 4 * 6 + 5 + 5
    row = alice[(alice["run_id"] == lab["good"][2]) & (alice["ds_task"] == "pets") & (alice["shots"] == 10)].iloc[0]
    assert row["us_task"] == "jft" and row["us_accuracy"] == pytest.approx(0.46)
    assert row["ds_accuracy"] == pytest.approx(0.20 + 0.04 + 0.05 + 0.10)
    assert row["eval_protocol"] == "fewshot" and row["model_name"] == "vit_tiny_cpu" and row["head_wd"] == pytest.approx(0.02)
    assert row["researcher"] == "alice" and row["arch_family"] == "vit" and row["seed"] == 2 and row["param_count"] == 120000
    assert row["experiment"] == f"team-alice-{lab['tag']}" and pd.notna(row["ended_at"])
    extra = dict(row["extra"])
    assert extra["tag:sweep"] == "head_wd" and extra["parent_run_id"] == lab["parent"] and "metric:diag/head_norm" in extra
    assert lab["parent"] not in set(alice["run_id"])   # the parent has no metrics: no rows, no quarantine
    bob = df[df["source"] == "bob-server"]
    assert len(bob) == 3 * 2 and set(bob["us_task"]) == {"imagenet21k"} and set(bob["shots"]) == {5}
    b0 = bob[(bob["run_id"] == lab["bobs"][0]) & (bob["ds_task"] == "pets")].iloc[0]
    assert b0["us_accuracy"] == pytest.approx(0.50) and b0["ds_accuracy"] == pytest.approx(0.40)
    assert b0["model_name"] == "resnet50" and b0["lr"] == pytest.approx(0.1) and b0["researcher"] == "bob"
    assert b0["arch_family"] == "resnet"
    q = s.quarantine().to_pandas().set_index("run_id")
    assert len(q) == 3
    assert q.loc[lab["bad_nan"], "reason"] == "ds_accuracy: NaN"
    assert q.loc[lab["bad_pct"], "reason"].startswith("ds_accuracy: 87.5 out of range [0, 1] (a percent")
    assert q.loc[lab["bad_us"], "reason"].startswith("missing US metric")
    assert '"run_id": "%s"' % lab["bad_us"] in q.loc[lab["bad_us"], "raw"]


def test_reingest_is_a_noop_and_new_runs_come_in_alone(lab):
    args = ("ingest", "--sources-file", str(lab["sources"]), "--store", lab["store"], "--quiet")
    assert run_cli(*args).returncode == 0
    s = Store(lab["store"])
    version, n = s.version, len(s.to_pandas())
    r = run_cli(*args)
    assert r.returncode == 0 and "0 new, 0 updated" in r.stdout and "runs unchanged" in r.stdout
    assert s.version == version
    new = [alice_run(lab["client"], lab["alice"], 10 + i) for i in range(2)]
    r = run_cli(*args)
    assert "12 new, 0 updated" in r.stdout.splitlines()[0], r.stdout
    assert "2 runs new" in r.stdout.splitlines()[0]
    df = s.to_pandas()
    assert len(df) == n + 12 and set(df["run_id"]) >= set(new)
    assert df.groupby(["source", "run_id", "ds_task", "shots"]).size().max() == 1


def test_changed_run_is_updated_with_full(lab):
    args = ["ingest", lab["uri"], "--experiment", f"team-alice-{lab['tag']}", "--store", lab["store"], "--quiet"]
    run_cli(*args)
    lab["client"].log_metric(lab["good"][0], "ds/pets/10shot/top1", 0.99)   # a finished run changes
    r = run_cli(*args, "--full")
    assert "0 new, 1 updated, 5 unchanged" in r.stdout, r.stdout   # that row alone is rewritten
    df = Store(lab["store"]).to_pandas()
    v = df[(df["run_id"] == lab["good"][0]) & (df["ds_task"] == "pets") & (df["shots"] == 10)]["ds_accuracy"]
    assert list(v) == [pytest.approx(0.99)]


def test_running_and_deleted_runs(lab):
    c = lab["client"]
    running = alice_run(c, lab["alice"], 20, status="RUNNING")
    args = ["ingest", lab["uri"], "--experiment", f"team-alice-{lab['tag']}", "--store", lab["store"], "--quiet"]
    run_cli(*args)
    s = Store(lab["store"])
    assert running not in set(s.to_pandas()["run_id"])
    run_cli(*args, "--include-running")
    assert running in set(s.to_pandas()["run_id"])
    c.delete_run(lab["good"][1])
    r = run_cli(*args, "--drop-deleted")
    assert "6 deleted" in r.stdout, r.stdout
    assert lab["good"][1] not in set(s.to_pandas()["run_id"])


def _ingest_proc(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "meta_study.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


@pytest.mark.parametrize("point", ["before_publish:2", "after_publish:2"])
def test_sigkill_mid_ingest_then_the_next_ingest_completes(lab, point):
    args = ["ingest", "--sources-file", str(lab["sources"]), "--store", lab["store"], "--page-size", "2", "--quiet"]
    # stop inside the second commit: the first page is in the store, the second is on its way
    p = _ingest_proc(args, {"META_STUDY_FAILPOINT": point})
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "failpoint" not in line:
        line = p.stderr.readline()
        if not line and p.poll() is not None:
            break
    assert "failpoint" in line, p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait()
    s = Store(lab["store"])
    partial = s.to_pandas()
    assert 0 < len(partial) < 40                      # the first page made it, the rest did not
    assert partial.groupby(["source", "run_id", "ds_task", "shots"]).size().max() == 1
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    df = s.to_pandas()
    assert len(df) == 34 + 6 and df.groupby(["source", "run_id", "ds_task", "shots"]).size().max() == 1
    assert len(s.quarantine()) == 3


def test_mlflow_and_csv_sources_together_and_an_unreachable_one(lab, tmp_path):
    csv = tmp_path / "export.csv"
    pd.DataFrame({"source": ["carol"], "run_id": ["c1"], "us_task": ["jft"], "us_accuracy": [0.7],
                  "ds_task": ["pets"], "eval_protocol": ["linear"], "ds_accuracy": [0.8]}).to_csv(csv, index=False)
    args = ["ingest", lab["uri"], str(csv), "http://127.0.0.1:9", "--experiment", f"team-alice-{lab['tag']}",
            "--store", lab["store"]]
    t0 = time.monotonic()
    r = run_cli(*args)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 1, r.stderr           # one of three failed: the others are in, and the exit says so
    assert "ingest: 1 of 3 sources failed" in r.stderr
    assert f"http://127.0.0.1:9 [team-alice-{lab['tag']}]: FAILED: connection refused" in r.stderr
    assert "34 new" in r.stdout and "1 new" in r.stdout
    assert set(Store(lab["store"]).to_pandas()["source"]) == {lab["uri"], "carol"}
    going = run_cli(*args, "--keep-going")
    assert going.returncode == 0 and "0 new" in going.stdout, going.stderr
    alone = run_cli("ingest", "http://127.0.0.1:9", "--store", lab["store"])
    errors = [line for line in alone.stderr.splitlines() if not line.startswith("  ")]  # not progress lines
    assert alone.returncode == 2 and errors == ["http://127.0.0.1:9: FAILED: connection refused"], alone.stderr


def test_bad_experiment_and_bad_sources_file(lab, tmp_path):
    r = run_cli("ingest", lab["uri"], "--experiment", "no-such-*", "--store", lab["store"])
    assert r.returncode == 2 and "no experiment matches 'no-such-*'" in r.stderr
    bad = tmp_path / "s.yaml"
    bad.write_text("sources: [{url: x}]")
    r = run_cli("ingest", "--sources-file", str(bad), "--store", lab["store"])
    assert r.returncode == 2 and "needs a 'uri'" in r.stderr


def test_hostile_names_cannot_escape_the_store(lab, tmp_path):
    c = lab["client"]
    exp = c.create_experiment(f"../../evil-{lab['tag']}")
    # MLflow itself refuses metric names with '..' segments; these are legal and still hostile
    m = {"us/up/top1": 0.5, "ds/.hidden/5shot/top1": 0.4, "ds/C:x/5shot/top1": 0.3, "ds/a b.c-d/5shot/top1": 0.2}
    _log(c, exp, m, {"model_name": "../../x"}, {"researcher": "../../../tmp/pwn\n\x1b[31m"},
         name="../../../../tmp/evil-run")
    sandbox = tmp_path / "sandbox"
    store = sandbox / "deep" / "store"
    before = set(os.listdir(tmp_path))
    r = run_cli("ingest", lab["uri"], "--experiment", f"../../evil-{lab['tag']}", "--store", str(store), "--quiet")
    assert r.returncode == 0, r.stderr
    df = Store(str(store)).to_pandas()
    assert set(df["ds_task"]) == {".hidden", "C:x", "a b.c-d"}
    assert set(df["researcher"]) == {"../../../tmp/pwn\n\x1b[31m"}
    root = os.path.realpath(store)
    assert set(os.listdir(tmp_path)) == before | {"sandbox"}
    for dirpath, dirs, files in os.walk(sandbox):
        for f in files:
            assert os.path.realpath(os.path.join(dirpath, f)).startswith(root), os.path.join(dirpath, f)
    assert not Path("/tmp/pwn").exists() and not Path("/tmp/evil-run").exists()
    assert len(pd.read_parquet(store)) == 3


def test_credentials_come_from_the_environment_and_never_land_anywhere(tmp_path):
    from mlflow_server import MlflowServer

    with MlflowServer(tmp_path / "auth-server", auth=True) as srv:
        env = {"MLFLOW_TRACKING_USERNAME": srv.username, "MLFLOW_TRACKING_PASSWORD": srv.password}
        os.environ.update(env)
        try:
            c = MlflowClient(srv.uri)
            e = c.create_experiment("secure")
            alice_run(c, e, 0)
            alice_run(c, e, 1, metrics={"ds/pets/1shot/top1": float("nan")})
        finally:
            for k in env:
                os.environ.pop(k)
        store = tmp_path / "store"
        denied = run_cli("ingest", srv.uri, "--store", str(store))
        assert denied.returncode == 2 and srv.password not in denied.stderr
        r = run_cli("ingest", srv.uri, "--store", str(store), env=env)
        assert r.returncode == 0, r.stderr
        assert "11 new" in r.stdout and "1 quarantined" in r.stdout   # 6 + 5, and the NaN row
        embedded = srv.uri.replace("http://", f"http://{srv.username}:{srv.password}@")
        r2 = run_cli("ingest", embedded, "--store", str(store))
        assert r2.returncode == 2 and "credentials in the tracking URI are refused" in r2.stderr
        for out in (r.stdout, r.stderr, r2.stdout, r2.stderr, denied.stderr):
            assert srv.password not in out
        for p in store.rglob("*"):
            if p.is_file():
                assert srv.password.encode() not in p.read_bytes(), p
