"""HTTP helpers for the sweep writer's tests against a real ``mlflow server`` on 127.0.0.1: a
quiet threaded server, a proxy with a body limit (nginx's ``client_max_body_size``: 413 above it),
and a server on MLflow's file store. Imported by the tests (not a test module)."""

from __future__ import annotations

import http.server
import os
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:   # a test's cut connection: quiet
        pass


def serve(handler: type) -> tuple[str, QuietServer]:
    """``handler`` served on a free port of 127.0.0.1 in a daemon thread: (its URL, the server)."""
    srv = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


class Proxy413(http.server.BaseHTTPRequestHandler):
    """A proxy in front of a real MLflow server (``upstream``) that answers 413 for a body over
    ``LIMIT`` bytes; a subclass sets both."""

    protocol_version = "HTTP/1.1"
    LIMIT = 3000
    upstream = ""

    def log_message(self, *a: Any) -> None:
        pass

    def _relay(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if n > self.LIMIT:
            status, data = 413, b"<html><head><title>413 Request Entity Too Large</title></head></html>"
        else:
            req = urllib.request.Request(self.upstream + self.path, data=body, method=method,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, data = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, data = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._relay("POST")

    def do_GET(self) -> None:
        self._relay("GET")


@contextmanager
def file_store_server(root: Path) -> Iterator[Any]:
    """``mlflow server --backend-store-uri ROOT/mlruns``: MLflow's file store (MLflow 3.17 asks for
    MLFLOW_ALLOW_FILE_STORE=true to serve one; the variable is restored after)."""
    from mlflow_server import MlflowServer

    old = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        with MlflowServer(root, backend=str(root / "mlruns")) as srv:
            yield srv
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = old
