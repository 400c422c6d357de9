"""Review of meta_study/tune/tracking.py and meta_study/tune/preflight.py (session 41)."""

from __future__ import annotations

import socket

import pytest

from meta_study.errors import UserError
from meta_study.tune.preflight import check_tracking_reachable, check_tracking_uri, refuse_secrets


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # nothing listens once it is closed


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000 ", " http://127.0.0.1:5000", "http://127.0.0.1:5000\n"])
def test_a_tracking_uri_with_spaces_around_it_is_one_line(uri):
    # the trailing space was a ValueError traceback from the reachability check (port "5000 "),
    # and MLflow itself refuses it (InvalidUrlException); a leading one skipped that check and a
    # server that was down hung the sweep while MLflow retried
    with pytest.raises(UserError, match=r"^--tracking-uri '.*': spaces or line breaks around the URI; give it"):
        check_tracking_uri(uri)
    with pytest.raises(UserError, match="spaces or line breaks"):
        refuse_secrets(tracking_uri=uri, storage_path=None)


def test_the_reachability_check_says_a_bad_port_in_one_line():
    with pytest.raises(UserError, match=r"^--tracking-uri http://127\.0\.0\.1:1 : not a valid URI"):
        check_tracking_reachable("http://127.0.0.1:1 ")


def test_an_upper_case_scheme_is_checked_for_a_server_as_a_lower_case_one():
    # MLflow takes HTTP://HOST:PORT as a tracking server and retries a down one for minutes; the
    # check skipped it (a case-sensitive "http://"), so the sweep hung without a word
    check_tracking_uri("HTTP://127.0.0.1:5000")
    port = _closed_port()
    with pytest.raises(UserError, match=r"cannot reach the tracking server \(Connection refused\)"):
        check_tracking_reachable(f"HTTP://127.0.0.1:{port}")
    with _serve(OK) as srv:      # a server that answers: passes, in any case
        check_tracking_reachable(f"HtTp://127.0.0.1:{srv.getsockname()[1]}")


@pytest.mark.parametrize("name,path", [("AWS_SHARED_CREDENTIALS_FILE", "/mnt/aws/credentials"),
                                       ("GOOGLE_APPLICATION_CREDENTIALS", "/var/secrets/gcp/key.json"),
                                       ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token")])
def test_a_runtime_env_that_points_at_a_credentials_file_is_no_secret(name, path):
    # a path shows Ray's job API nothing secret; the job's command line took it already
    # (submit.refuse_secret_args), the runtime_env check refused it as a secret
    from meta_study.tune.preflight import refuse_runtime_env_secrets

    refuse_runtime_env_secrets({"env_vars": {name: path}})
    with pytest.raises(UserError, match="runtime_env sets AWS_SECRET_ACCESS_KEY"):
        refuse_runtime_env_secrets({"env_vars": {name: path, "AWS_SECRET_ACCESS_KEY": "abc/def"}})


def test_a_tracking_server_behind_the_environments_proxy_is_reached_through_it(monkeypatch):
    # MLflow's client (requests) and the writer send a server's requests to HTTP_PROXY: a server
    # that only the proxy resolves was refused before the sweep started
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    uri = "http://mlflow.s41-no-such-host.invalid:5000"
    with _serve(OK) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        check_tracking_reachable(uri)
        monkeypatch.setenv("NO_PROXY", ".invalid")     # not through the proxy: the host itself, unknown
        with pytest.raises(UserError, match=r"^--tracking-uri http://mlflow\.s41-no-such-host\.invalid:5000: cannot "
                                            r"reach the tracking server \("):
            check_tracking_reachable(uri)
        monkeypatch.delenv("NO_PROXY")
    port = _closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"cannot reach the tracking server through the proxy http://127\.0\.0\.1:{port} "
                                        r"\(HTTP_PROXY / HTTPS_PROXY\) \(Connection refused\)") as e:
        check_tracking_reachable(uri)
    assert "pw" not in str(e.value)


OK = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK"


def _serve(answer: bytes | None):
    """A listening socket on 127.0.0.1 that takes each connection, reads the request and sends
    ``answer`` (None: nothing), then closes it: a `kubectl port-forward` whose pod is gone, or
    another service on the port."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def loop() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                if answer is not None:
                    c.recv(4096)
                    c.sendall(answer)
    threading.Thread(target=loop, daemon=True).start()
    return srv


@pytest.mark.parametrize("answer,why", [(None, "closed it without an answer"),
                                        (b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", "answered, but not in HTTP")])
def test_a_port_that_takes_the_connection_but_serves_no_http_is_refused(monkeypatch, answer, why):
    # the TCP connect passed, and MLflow's client then retried the server for minutes (measured:
    # > 20 s of get_experiment_by_name against a port that closes each connection)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    srv = _serve(answer)
    with srv:
        uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
        with pytest.raises(UserError, match=rf"^--tracking-uri {uri}: the tracking server took the connection and "
                                            rf"{why}; is it running"):
            check_tracking_reachable(uri)
    srv404 = _serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")   # any HTTP status will do
    with srv404:
        check_tracking_reachable(f"http://127.0.0.1:{srv404.getsockname()[1]}/prefix/")


def test_a_real_tracking_server_passes_the_reachability_check(mlflow_server):
    check_tracking_reachable(mlflow_server.uri)
    check_tracking_reachable(mlflow_server.uri.replace("http://", "HTTP://") + "/")
