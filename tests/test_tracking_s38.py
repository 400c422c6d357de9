"""Review fixes (session 38) of how a sweep's trials reach MLflow: the writer's credentials and TLS
trust as MLflow's own client has them, a server that refuses the credentials said at once, and a
sweep summary that MLflow takes whatever the number and length of its keys."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from meta_study.tune._rest import RestError, _RestRuns


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with ``status`` and MLflow's error JSON (200: ``{}``), noting its
    Authorization header."""

    protocol_version = "HTTP/1.1"
    status = 200
    seen: list[str | None] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(self.headers.get("Authorization"))
        body = b"{}" if self.status == 200 else json.dumps({"error_code": "UNAUTHENTICATED",
                                                              "message": "no"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


def _serve(status: int = 200, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, list[str | None]]]:
    import ssl

    handler = type("H", (_Recorder,), {"status": status, "seen": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{srv.server_address[1]}", handler.seen
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def _creds(host: str, **kw: Any) -> dict[str, Any]:
    return {**dict.fromkeys(_RestRuns.CRED_FIELDS), "host": host, **kw}


@pytest.mark.parametrize("creds", [
    {"username": "ada", "password": "pw", "token": "stale-token"},   # all three: MLflow sends Basic
    {"username": "ada", "token": "tok"},                              # no password: MLflow sends the token
    {"token": "tok"},
    {"username": "ada", "password": "pw"},
])
def test_the_writer_authenticates_as_mlflows_client_does(creds: dict[str, str], no_proxy: None) -> None:
    """With a user, a password and a token all set (a token exported for another service, say),
    MLflow's client sends Basic and the writer sent the token: the driver created the parent run,
    then the server refused every call of every trial (401), silently, until the end-of-sweep
    flush gave up and spooled them."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    for host, seen in _serve():
        http_request(MlflowHostCreds(host, **creds), "/api/2.0/mlflow/runs/create", "POST", json={}, max_retries=0)
        _RestRuns(host, _creds(host, **creds)).post("runs/create", {})
        assert seen[1] == seen[0] is not None


def test_a_server_that_refuses_the_credentials_is_said_once(no_proxy: None, capfd: pytest.CaptureFixture) -> None:
    """A token that expired mid-sweep (or a wrong password): each call failed with 401 and was
    retried without a word for the rest of the sweep; after the whole flush timeout the user
    learnt only that not everything reached the server. Said at the first refusal, once, naming
    the variables and never the secret."""
    for host, seen in _serve(401):
        rest = _RestRuns(host, _creds(host, username="ada", password="s3cret-never-shown"))
        for _ in range(3):
            with pytest.raises(RestError) as e:
                rest.post("runs/log-batch", {})
            assert e.value.status == 401
        assert len(seen) == 3
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "HTTP 401" in ln]
    assert len(lines) == 1, err
    assert host in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0] and "--resume" in lines[0]
    assert "s3cret" not in err


def test_the_writer_trusts_the_ca_bundle_mlflows_client_trusts(tmp_path: Path, no_proxy: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab's internal CA given as ``REQUESTS_CA_BUNDLE``: MLflow's client (requests) trusts it
    and created the sweep's parent run; the writer's http.client path verified against the
    system's CAs only, and every call of every trial failed (retried, then spooled)."""
    from test_tracking import _self_signed

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    for host, seen in _serve(tls=(cert, key)):
        rest = _RestRuns(host, _creds(host, token="tok"))
        assert not rest.via_requests
        assert rest.post("runs/create", {}) == {}
        assert seen == ["Bearer tok"]


def test_the_sweep_summary_fits_mlflows_limits(mlflow_server: Any, tmp_path: Path) -> None:
    """``best/<key>`` of every accuracy key in one log_batch: a sweep probing many layers of many
    tasks (1,200 keys) passed MLflow's 1,000 metrics a batch, and a 246-character child key became
    a 251-character one; either refused the whole summary, and the parent run was left RUNNING."""
    from mlflow.entities import Metric

    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.tracking import log_sweep_summary

    client = mlflow_client(mlflow_server.uri)
    exp = client.create_experiment(f"summary-{tmp_path.name}")
    parent = client.create_run(exp).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    long_key = "ds/" + "a" * 232 + "/5shot/top1"      # 246; 251 with best/ in front
    assert len(long_key) == 246
    metrics = [Metric(f"ds/t{i}/5shot/layer{j}/top1", 0.5, 0, 0) for i in range(30) for j in range(40)]
    metrics += [Metric(long_key, 0.5, 0, 0), Metric("us/up/top1", 0.7, 0, 0)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(child, metrics=metrics[i:i + 1000])
    client.set_terminated(child)
    out = log_sweep_summary(mlflow_server.uri, exp, parent, {"trials": 1, "finished": 1})
    assert len(out) == 2 + 1200 + 1 and f"best/{long_key}" not in out
    got = client.get_run(parent).data.metrics
    assert got == out and got["best/us/up/top1"] == 0.7 and got["sweep/finished"] == 1.0


def test_a_parent_param_mlflow_refuses_loses_only_itself(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """A sweep whose shared config has a key MLflow takes no param by (``head(lr)``): the parent
    run's one log_batch was refused whole, the sweep did not start (MLflow's traceback) and the
    parent run was left RUNNING. The trials' writer already left such a name out, said once."""
    from meta_study.mlflow_client import mlflow_client
    from meta_study.tune.tracking import create_parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    capfd.readouterr()
    exp, parent = create_parent_run(uri, "bad-names", "s", params={"lr": 0.1, "head(lr)": 1, "opt": {"b+c": 2}},
                                    tags={})
    assert mlflow_client(uri).get_run(parent).data.params == {"lr": "0.1"}
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("meta-study")]
    assert len(err) == 2 and "'head(lr)'" in err[0] and "'opt.b+c'" in err[1] and "parent run" in err[0]


def test_a_request_auth_plugin_signs_the_writers_calls(no_proxy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``MLFLOW_TRACKING_AUTH`` (a request-auth plugin: OIDC, a gateway's signing) authenticates
    MLflow's client, so the parent run was created; the writer's own HTTP path sent every trial's
    call without it, and every one was refused. They go through MLflow's request path now."""
    import requests

    import mlflow.tracking.request_auth.registry as registry

    class Signed(requests.auth.AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = "Plugin signed"
            return r

    monkeypatch.setattr(registry, "fetch_auth", lambda name: Signed() if name == "lab-oidc" else None)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "lab-oidc")
    for host, seen in _serve():
        from meta_study.tune._rest import resolve_creds

        rest = _RestRuns(host, resolve_creds(host))
        assert rest.post("runs/create", {"x": 1}) == {}
        assert seen == ["Plugin signed"]


@pytest.mark.parametrize("uri, hint", [
    ("postgresql+psycopg://mlflow:s3cr3t@db/mlflow", "PGPASSWORD"),
    ("mysql+pymysql://mlflow:s3cr3t@db/mlflow", "mlflow server"),
    ("http://ada:s3cr3t@mlflow.lab:5000", "MLFLOW_TRACKING_PASSWORD"),
])
def test_credentials_in_a_database_tracking_uri_get_a_hint_that_works(uri: str, hint: str) -> None:
    """A database store (``postgresql://user:pw@db/mlflow``) was refused with "set
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD", variables MLflow reads for http(s)
    servers only: following the hint, the store could not connect at all."""
    from meta_study.errors import UserError
    from meta_study.mlflow_client import refuse_credentials

    with pytest.raises(UserError) as e:
        refuse_credentials(uri)
    msg = str(e.value)
    assert "credentials in the tracking URI are refused" in msg and hint in msg and "s3cr3t" not in msg
    assert ("MLFLOW_TRACKING" in msg) == uri.startswith("http")
