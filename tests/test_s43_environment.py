"""A trial's run says where it ran and with what: the ``environment`` tag (host, Python, the
versions of torch, timm, numpy, ray, mlflow, meta-study, and the devices), read in the trial's own
process and carried to MLflow by the sweep's callback, then into the store's ``extra``."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meta_study.tune.provenance import ENV_PACKAGES, trial_environment


def test_the_environment_names_the_packages_and_devices_of_this_process() -> None:
    torch = pytest.importorskip("torch")
    env = trial_environment()
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(ENV_PACKAGES) <= set(env)
    assert env["torch"] == torch.__version__          # with its build tag, as torch names itself
    assert env["cuda"] == str(torch.version.cuda or "none")
    want = "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    assert env["devices"].startswith(want)
    assert env["host"]


def test_without_torch_imported_no_device_is_guessed_and_torch_is_not_imported(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)     # "not imported": sys.modules.get gives None
    env = trial_environment()
    assert "devices" not in env and "cuda" not in env
    assert sys.modules["torch"] is None


def test_a_package_that_is_not_installed_is_said_missing(monkeypatch) -> None:
    monkeypatch.setattr("meta_study.tune.provenance.ENV_PACKAGES", ("numpy", "no-such-package-xyz"))
    env = trial_environment()
    assert env["no-such-package-xyz"] == "missing" and env["numpy"] not in ("", "missing")


def test_every_report_of_a_trial_carries_its_environment() -> None:
    from meta_study.tune.trial import ENV_KEY, RESOLVED_KEY, _reporter, environment_json

    got: list[dict[str, Any]] = []
    report = _reporter(lambda m, checkpoint=None: got.append(m), None, {"lr": 0.1}, fail_once=False)
    report(3, {"us/x/top1": 0.5}, None)
    assert got[0][RESOLVED_KEY] == {"lr": 0.1} and json.loads(got[0][ENV_KEY]) == json.loads(environment_json())


@dataclass
class Trial:
    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"train_trial_{self.trial_id}"


@pytest.mark.slow(10)
def test_the_run_gets_the_first_reported_environment_as_a_tag_never_a_metric(tmp_path: Path) -> None:
    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.tracking import ENV_TAG, MlflowSweepCallback
    from meta_study.tune.trial import ENV_KEY, RESOLVED_KEY

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow_client(uri)
    exp = client.create_experiment(f"e-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    cb = MlflowSweepCallback(uri, exp, parent, str(tmp_path / "exp"), tags={"sweep": "s"})
    first = json.dumps({"host": "node-a", "torch": "2.14.1+cu130", "devices": "NVIDIA H100 80GB HBM3 x1"})
    t = Trial("t1", {"lr": 0.1})
    cb.on_trial_start(0, [], t)
    cb.on_trial_result(0, [], t, {"step": 1, "us/x/top1": 0.4, RESOLVED_KEY: {"lr": 0.1}, ENV_KEY: first})
    cb.on_trial_result(0, [], t, {"step": 2, "us/x/top1": 0.5, RESOLVED_KEY: {"lr": 0.1}, ENV_KEY: first + " "})
    t.last_result = {"final": 1.0, "us/x/top1": 0.6, "ds/y/5shot/top1": 0.3, ENV_KEY: first}
    cb.on_trial_result(0, [], t, t.last_result)
    cb.on_trial_complete(0, [], t)
    assert cb.flush(timeout_s=60)
    (run,) = client.search_runs([exp], "tags.trial_id = 't1'")
    assert run.data.tags[ENV_TAG] == first
    assert ENV_KEY not in run.data.metrics and ENV_KEY not in run.data.params
    assert not any(k.startswith(ENV_KEY) for k in run.data.params)

    # and ingest keeps it beside the run's rows, in extra (docs/tracking.md: other tags)
    from conftest import run_cli
    from meta_study.store import Store

    r = run_cli("ingest", uri, "--store", str(tmp_path / "store"), "--source", "lab", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = Store(str(tmp_path / "store")).to_pandas()
    assert len(rows) == 1
    extra = rows["extra"].iloc[0]
    extra = json.loads(extra) if isinstance(extra, str) else dict(extra)
    assert extra[f"tag:{ENV_TAG}"] == first
