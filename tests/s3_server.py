"""A real S3 API server (moto's server mode) subprocess on 127.0.0.1 for tests.

    with S3Server(tmp_path) as s3:
        s3.make_bucket("lab")
        env = s3.env            # credentials and endpoint, as a worker would get them
        uri = "s3://lab/store"  # with ``env`` in os.environ, pyarrow and boto3 reach the server

moto's server speaks the S3 REST API over HTTP, including conditional writes (``If-None-Match:
*`` and ``If-Match: <etag>`` on PUT), which is what the store's object-store commit relies on.
Everything stays on 127.0.0.1; the credentials are dummies the server accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow_server import free_port, listens


class S3Server:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3, pyarrow and MLflow at this server."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint,
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def __enter__(self) -> "S3Server":
        # the port, free when picked, may be taken before moto binds it (see MlflowServer): then
        # moto exits with "address already in use" and a new port is tried; until it exits, the
        # answer of another test's moto there is not taken for its own
        for attempt in range(3):
            if attempt:
                self.port = free_port()
                self.endpoint = f"http://127.0.0.1:{self.port}"
            with open(self.root / "moto.log", "wb") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                              str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, **self.env})
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).read()
                    if listens(self.proc, self.port):
                        return self
                except OSError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    out = (self.root / "moto.log").read_text()
                    if self.proc.poll() is not None and "ddress already in use" in out and attempt < 2:
                        break
                    raise RuntimeError(f"moto server did not start: {out[-2000:]}")
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self):  # noqa: ANN201 - boto3 is a test dependency only
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing-secret", region_name="us-east-1")

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
