"""Review fixes of the sweep writer's threads (meta_study/tune/_shards.py) against a real
``mlflow server``: a param the run holds with another value on MLflow's file store (answered 500
INTERNAL_ERROR, not 400) is read back, not retried until the flush gives up; and an entity too large
for the server in a step of several log-batch chunks no longer drops the step's later chunks.
Traffic stays on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from meta_study.tune._rest import _RestRuns
from meta_study.tune._shards import MlflowWriter, Op, SweepTarget
from mlflow_proxies import Proxy413, serve
from mlflow_proxies import file_store_server as _file_store_server


def _creds(uri: str) -> dict[str, Any]:
    return {**{f: None for f in _RestRuns.CRED_FIELDS}, "host": uri}


def _writer(uri: str, exp: str, parent: str, state: Path, flush_timeout_s: float = 60.0) -> MlflowWriter:
    w = MlflowWriter(SweepTarget(uri, exp, parent, str(state), {"sweep": "s"}, flush_timeout_s, False))
    w.creds = _creds(uri)
    w.setup()
    return w


@pytest.fixture(scope="module")
def file_store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with _file_store_server(tmp_path_factory.mktemp("filestore")) as srv:
        yield srv


@pytest.mark.slow(30)
def test_a_param_the_run_holds_with_another_value_on_a_file_store_server(
        file_store_server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The run already holds params (what a log-batch whose answer was lost logged, the writer never
    heard): MLflow's file store answers a param sent again with another value 500 INTERNAL_ERROR,
    which the writer retried as a server error, without reading the run's params, until the flush
    gave up (spooled, the sweep FAILED). Now the params are read back after that answer: one held
    with the same value (or the same number) is skipped, a true conflict is said in one line and
    left out, and the rest of the step (metrics, the end) is logged."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = file_store_server.uri
    client = MlflowClient(uri)
    exp = client.create_experiment(f"s50b-param-{uuid.uuid4().hex[:6]}")
    parent = client.create_run(exp).info.run_id
    w = _writer(uri, exp, parent, tmp_path / "exp", flush_timeout_s=20.0)
    w.put(Op("run", "a", {"name": "s_a", "config": {"seed": 1}}))
    assert w.flush() is True
    (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
    rid = run.info.run_id
    client.log_batch(rid, params=[Param("depth", "12"), Param("width", "64.0"), Param("opt", "adam")])
    capfd.readouterr()
    w.put(Op("run", "a", {"name": "s_a", "config": {"depth": 12, "width": 64, "opt": "sgd", "lr": 0.1}}))
    w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
    w.put(Op("end", "a", {"status": "FINISHED"}))
    assert w.flush() is True and w.dropped == 0     # the old writer: False after 20 s, all of it spooled
    run = client.get_run(rid)
    assert run.data.params == {"seed": "1", "depth": "12", "width": "64.0", "opt": "adam", "lr": "0.1"}
    assert run.data.metrics == {"m": 0.5} and run.info.status == "FINISHED"
    err = capfd.readouterr().err
    said = [ln for ln in err.splitlines() if "holds param" in ln]
    assert len(said) == 1 and "'opt' = 'adam'; the value 'sgd' is left out" in said[0], err


@pytest.mark.slow(20)
def test_an_entity_too_large_keeps_the_rest_of_a_step_of_several_chunks(mlflow_server: Any, tmp_path: Path,
                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """A step of more than 1,000 entities goes in several log-batch chunks. One param larger than
    the proxy takes (413, no split fixes it) refused its chunk's call, and the later chunks of the
    step were never sent: 500 metrics lost with one param. Now only that param is left out, said,
    and the step is not sent again (each retry had sent all of it again)."""
    from mlflow.tracking import MlflowClient

    class H(Proxy413):
        LIMIT = 5000
        upstream = mlflow_server.uri
    uri, srv = serve(H)
    try:
        client = MlflowClient(mlflow_server.uri)
        exp = client.create_experiment(f"s50b-413-{uuid.uuid4().hex[:6]}")
        parent = client.create_run(exp).info.run_id
        w = _writer(uri, exp, parent, tmp_path / "exp")
        metrics = {f"m{i}": i / 4 for i in range(1500)}
        with w._take_lock:    # the three taken in one batch, merged into one step (as a busy writer does)
            w.put(Op("run", "a", {"name": "s_a", "config": {"huge": "x" * 5900, "small": 1}}))
            w.put(Op("metrics", "a", {"metrics": metrics, "step": 3, "time": 1000}))
            w.put(Op("end", "a", {"status": "FINISHED"}))
        capfd.readouterr()
        assert w.flush() is True and w.dropped == 1
        (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
        assert run.data.params == {"small": "1"} and run.data.metrics == metrics and run.info.status == "FINISHED"
        err = capfd.readouterr().err
        said = [ln for ln in err.splitlines() if "refuses" in ln]
        assert len(said) == 1 and "one param 'huge'" in said[0] and "the rest of the batch is logged" in said[0], err
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_param_the_run_holds_with_another_value_on_a_local_file_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The same through MLflow's client on a local file store (its log_batch wraps the refusal as
    INTERNAL_ERROR): retried until the flush gave up; now read back, said once, the rest logged."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = str(tmp_path / "mlruns")
    client = MlflowClient(uri)
    exp = client.create_experiment("s50b-local")
    parent = client.create_run(exp).info.run_id
    w = MlflowWriter(SweepTarget(uri, exp, parent, str(tmp_path / "exp"), {}, 10.0, False))
    w.setup()
    w.put(Op("run", "a", {"name": "s_a", "config": {"seed": 1}}))
    assert w.flush() is True
    (run,) = client.search_runs([exp], "tags.trial_id = 'a'")
    client.log_batch(run.info.run_id, params=[Param("opt", "adam")])
    capfd.readouterr()
    w.put(Op("run", "a", {"name": "s_a", "config": {"opt": "sgd", "lr": 0.1}}))
    w.put(Op("metrics", "a", {"metrics": {"m": 0.5}, "step": 1, "time": 1000}))
    assert w.flush() is True and w.dropped == 0    # the old writer: False after 10 s
    run = client.get_run(run.info.run_id)
    assert run.data.params == {"seed": "1", "opt": "adam", "lr": "0.1"} and run.data.metrics == {"m": 0.5}
    assert capfd.readouterr().err.count("holds param 'opt' = 'adam'") == 1
