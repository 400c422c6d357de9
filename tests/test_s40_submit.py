"""Defects found in a review of meta_study/tune/submit.py: a cluster address (``HOST:PORT``) whose
GCS wants a Ray token, or that is no GCS. Each case was ``ray job submit``'s
traceback (exit 1), after ~5 s or ~45 s; now one line, exit 2, before anything is uploaded.
Against a real token-protected head: cluster/local-up.sh (test_cluster_review_s36's fixture)."""

from __future__ import annotations

import subprocess

import pytest

import test_cluster_review_s36 as s36

_submit = s36._submit
cluster = s36.cluster   # the fixture: a local-up.sh head and MLflow server, stopped by local-down.sh


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Check failed" not in r.stderr, r.stderr[-3000:]
    return r.stderr


@pytest.mark.slow(60)
def test_submit_to_a_token_cluster_by_its_gcs_address_says_the_token_is_missing_in_one_line(cluster, tmp_path):
    """``--address HOST:PORT`` (or RAY_ADDRESS, what env.sh exports) of a cluster with token
    authentication, and no token here: Ray's AuthenticationError traceback; with RAY_AUTH_MODE=token
    and no token file a C++ check failure and a core dump."""
    gcs = cluster["RAY_ADDRESS"]
    home = {"HOME": str(tmp_path)}     # no ~/.ray/auth_token
    r = _submit("--address", gcs, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path, env=home)
    assert _one_line(r) == (f"submit: --address {gcs}: the cluster wants a Ray token and none is set: set "
                            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH to the cluster's token file (local-up.sh's "
                            "env.sh exports both)\n")
    r = _submit("--no-wait", "--", "python", "-c", "1", cwd=tmp_path, env={**home, "RAY_ADDRESS": gcs})
    assert _one_line(r).startswith(f"submit: RAY_ADDRESS {gcs}: the cluster wants a Ray token and none is set: ")
    r = _submit("--address", gcs, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path,
                env={**home, "RAY_AUTH_MODE": "token"})
    assert _one_line(r) == (f"submit: --address {gcs}: the cluster wants a Ray token and none is set: RAY_AUTH_MODE "
                            "is token but ~/.ray/auth_token holds no token; set RAY_AUTH_TOKEN_PATH to the cluster's "
                            "token file (local-up.sh's env.sh exports it)\n")
    token_path = cluster["RAY_AUTH_TOKEN_PATH"]
    r = _submit("--address", gcs, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path,
                env={**home, "RAY_AUTH_TOKEN_PATH": token_path})
    assert _one_line(r) == (f"submit: --address {gcs}: the cluster wants a Ray token and none is set: "
                            "RAY_AUTH_TOKEN_PATH is set, but Ray sends a token only with RAY_AUTH_MODE=token; "
                            "export it (local-up.sh's env.sh exports both)\n")
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    r = _submit("--address", gcs, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path,
                env={**home, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert _one_line(r).startswith(f"submit: --address {gcs}: the cluster refused the Ray token of "
                                   f"RAY_AUTH_TOKEN_PATH {wrong}; is it this cluster's?")


@pytest.mark.slow(60)
def test_submit_with_the_token_by_gcs_address_still_runs_the_job(cluster, tmp_path):
    """The check asks the GCS as ``ray job submit`` does: with env.sh's token the job runs."""
    (tmp_path / "job.py").write_text("print('ran by gcs address')\n")
    env = {k: v for k, v in cluster.items() if k != "RAY_API_SERVER_ADDRESS"}
    r = _submit("--address", cluster["RAY_ADDRESS"], "--", "python", "job.py", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "ran by gcs address" in r.stdout, r.stdout[-2000:]


@pytest.mark.slow(60)
def test_submit_to_the_dashboards_host_port_without_http_says_to_give_http(cluster, tmp_path):
    """The job API's ``HOST:PORT`` without ``http://`` is taken by Ray for a GCS: ~45 s of "Failed
    to connect to GCS", then an RpcError traceback. The same without a token, and for MLflow's port
    (the token is no matter there)."""
    dash = cluster["RAY_API_SERVER_ADDRESS"].removeprefix("http://")
    for env in (dict(cluster), {"HOME": str(tmp_path)}):
        r = _submit("--address", dash, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path, env=env)
        assert _one_line(r) == (f"submit: --address {dash}: an HTTP server answers there, not a Ray cluster's GCS; "
                                f"for Ray's job API (the dashboard) give http://{dash}\n")
    mlflow = cluster["MLFLOW_TRACKING_URI"].removeprefix("http://")
    r = _submit("--no-wait", "--", "python", "-c", "1", cwd=tmp_path, env={**cluster, "RAY_API_SERVER_ADDRESS": mlflow})
    assert _one_line(r).startswith(f"submit: RAY_API_SERVER_ADDRESS {mlflow}: an HTTP server answers there, not a "
                                   "Ray cluster's GCS")


def test_http_job_api_with_ray_auth_mode_token_and_no_token_is_one_line(tmp_path):
    """The job API's 401 with RAY_AUTH_MODE=token and no token anywhere: Ray's token loader raised
    AuthenticationError out of the check, a traceback (a 401 server in this process, no cluster)."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        r = _submit("--address", url, "--no-wait", "--", "python", "-c", "1", cwd=tmp_path,
                    env={"HOME": str(tmp_path), "RAY_AUTH_MODE": "token"})
    finally:
        srv.shutdown()
        srv.server_close()
    assert _one_line(r) == (f"submit: --address {url}: the cluster wants a Ray token (HTTP 401) and none is set: "
                            "RAY_AUTH_MODE is token but ~/.ray/auth_token holds no token; set RAY_AUTH_TOKEN_PATH to "
                            "the cluster's token file (local-up.sh's env.sh exports it)\n")


@pytest.mark.parametrize("text, message", [
    ('{"excludes": "x"}', "--runtime-env-json: runtime_env['excludes'] must be of type List[str], got <class 'str'>"),
    ('{"pip": 5}', "--runtime-env-json: runtime_env['pip'] must be of type str or List[str], got <class 'int'>"),
    ('{"excludes": [1]}', "--runtime-env-json: runtime_env['excludes'] must be of type List[str], got <class 'list'>"),
    ('{"env_vars": {"MLFLOW_TRACKING_PASSWORD": 271828}}',
     "--runtime-env-json: env_vars MLFLOW_TRACKING_PASSWORD: expected a string value, not a number"),
], ids=["excludes-text", "pip-number", "excludes-numbers", "env-var-number"])
def test_runtime_env_json_with_a_field_ray_refuses_is_one_line_before_anything_runs(monkeypatch, capsys, text, message):
    """A runtime_env field of the wrong type passed the wrapper and was ``ray job submit``'s
    TypeError traceback (exit 1); Ray's message for env_vars showed the value (here a password)."""
    from meta_study.tune import submit

    seen: list = []
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda a, env=None: seen.append(a) or 0)
    assert submit.main(["--runtime-env-json", text, "--", "python", "-c", "1"]) == 2
    assert capsys.readouterr().err == f"submit: {message}\n" and not seen
    ok = submit.runtime_env_arg('{"env_vars": {"A": "b"}, "excludes": ["data/"], "pip": ["numpy"]}')
    assert ok["env_vars"] == {"A": "b"}


def test_a_cluster_address_without_a_port_is_one_line(tmp_path):
    """``--address HOST`` (no port): Ray's "ValueError: Invalid address format" traceback."""
    r = _submit("--address", "127.0.0.1", "--no-wait", "--", "python", "-c", "1", cwd=tmp_path)
    assert _one_line(r) == ("submit: --address 127.0.0.1: not a Ray address; give the cluster's GCS as host:port "
                            "(6379 by default) or its job API as http://host:port (8265 by default)\n")


def test_auto_with_no_cluster_on_this_machine_is_one_line(monkeypatch, capsys):
    """``--address auto`` (or RAY_ADDRESS=auto) where Ray finds no cluster, or several: Ray's
    ConnectionError traceback. (Ray's finder is replaced: this machine may run other clusters.)"""
    import ray._private.services as services

    from meta_study.tune import submit

    def none_found(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting the `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", none_found)
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda a, env=None: pytest.fail("submitted"))
    assert submit.main(["--address", "auto", "--", "python", "-c", "1"]) == 2
    assert capsys.readouterr().err == ("submit: --address auto: Could not find any running Ray instance on this "
                                       "machine; give the cluster's address with --address (local-up.sh's env.sh "
                                       "exports RAY_API_SERVER_ADDRESS)\n")


@pytest.mark.slow(60)
def test_auto_finding_a_token_cluster_without_the_token_is_one_line(cluster, tmp_path, monkeypatch, capsys):
    """``--address auto`` that finds a token cluster (here the fixture's, as Ray's finder would
    name it): Ray's AuthenticationError traceback."""
    import ray._private.services as services

    from meta_study.tune import submit

    gcs = cluster["RAY_ADDRESS"]
    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", lambda *a, **k: gcs)
    monkeypatch.setattr(submit, "run_forwarding_signals", lambda a, env=None: pytest.fail("submitted"))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert submit.main(["--address", "auto", "--", "python", "-c", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"submit: --address auto (found {gcs} on this machine): the cluster "
                                              "wants a Ray token and none is set: ")
