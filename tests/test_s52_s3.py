"""A store on S3 (the real S3 API of tests/s3_server.py), as its requests show: a reader without
credentials reads a public bucket (unsigned requests) and is told in one line what a private one
or a write needs; moves and kept copies ask no needless HEAD and copy large objects in parts; a
commit asks less of the store (a recording proxy or the server's log counts the requests)."""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from meta_study.store import Store
from meta_study.store import _s3

boto3 = pytest.importorskip("boto3")

# the server's request log, read as test_s51_store_s3 reads it (one reader of moto's log format)
from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402


class _Relay(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the S3 server (``upstream``) that records each request's method, path
    and headers; :meth:`refuse` may answer one instead (a subclass's rule)."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    seen: list[tuple[str, str, dict[str, str]]] = []

    def log_message(self, *a: Any) -> None:
        pass

    def refuse(self) -> tuple[int, bytes] | None:
        return None

    def _relay(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        type(self).seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        answer = self.refuse()
        if answer is not None:
            status, data = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        up = urllib.parse.urlsplit(self.upstream)
        c = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        try:
            c.request(self.command, self.path, body=body,
                      headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(k, v)
        length = r.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def relay(s3):
    """Start a proxy (a :class:`_Relay` subclass given) in front of the S3 server: its
    ``host:port``; the handler class records what it saw in ``seen``."""
    servers = []

    def start(handler: type[_Relay]) -> str:
        handler.upstream, handler.seen = s3.endpoint, []
        srv = _Quiet(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _no_credentials_env(tmp_path: Path) -> dict[str, str]:
    """This environment with no AWS credentials anywhere: no AWS_* variable, empty credentials and
    config files, no instance metadata (nothing leaves 127.0.0.1)."""
    (tmp_path / "empty").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "empty"), AWS_CONFIG_FILE=str(tmp_path / "empty"),
               AWS_EC2_METADATA_DISABLED="true")
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


_READ = ("import sys; from meta_study.store import Store; "
         "print(len(Store(sys.argv[1]).read()))")
_COMMIT = ("import sys; from conftest import make_rows; from meta_study.store import Store; "
           "from meta_study.validation import validate; from meta_study.errors import UserError\n"
           "try:\n    Store(sys.argv[1], notify=None).commit(validate(make_rows(3, ds_tasks=('z',))).table)\n"
           "except UserError as e:\n    print(type(e).__name__, e, file=sys.stderr); sys.exit(2)")


# ---- 1: no credentials ---------------------------------------------------------------------------


def test_a_public_bucket_is_read_without_credentials_by_unsigned_requests(request, s3, s3env, relay, tmp_path):
    """No credentials anywhere: boto3 refused the manifests' listing ("Unable to locate
    credentials", exit 1) while pyarrow reads public objects unsigned. Every request goes
    unsigned now (no Authorization header, no presigned query), and the store reads."""
    s3.make_bucket("pub52")
    prefix = _prefix(request)
    Store(f"s3://pub52/{prefix}", notify=None).commit(_rows(0.5))
    c = s3.client()
    for o in c.list_objects_v2(Bucket="pub52", Prefix=f"{prefix}/")["Contents"]:
        c.put_object_acl(Bucket="pub52", Key=o["Key"], ACL="public-read")   # a public bucket's objects
    rec = type("Rec", (_Relay,), {})
    hostport = relay(rec)
    uri = f"s3://pub52/{prefix}?endpoint_override={hostport}&scheme=http&region=us-east-1"
    env = _no_credentials_env(tmp_path)
    r = _run(["-c", _READ, uri], env)
    assert (r.returncode, r.stdout.strip()) == (0, "15"), r.stderr
    info = _run(["-m", "meta_study.cli", "store", "info", uri], env)
    assert info.returncode == 0, info.stderr
    assert rec.seen and not [(m, p) for m, p, h in rec.seen if "authorization" in h or "X-Amz-Credential" in p]
    # boto3's listings and reads (pyarrow's HEAD of the root is asked no more where a store is: session 55)
    assert {m for m, p, h in rec.seen} >= {"GET"}


def test_a_private_bucket_without_credentials_is_one_line_exit_2(request, s3, s3env, tmp_path):
    """Its objects refused to unsigned requests: one line naming the store and saying that no
    credentials were found (it was pyarrow's "AWS Error ACCESS_DENIED during HeadObject", exit 1)."""
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.5, ("a",)))
    uri = f"s3://lab/{prefix}?endpoint_override=127.0.0.1:{s3.port}&scheme=http&region=us-east-1"
    for args in (["-m", "meta_study.cli", "store", "info", uri], ["-m", "meta_study.cli", "store", "check", uri]):
        r = _run(args, _no_credentials_env(tmp_path))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith(f"meta-study: error: {uri}: no AWS credentials were found"), lines
        assert "sent unsigned" in lines[0] and "AccessDenied" in lines[0]


def test_a_write_without_credentials_is_refused_in_one_line(request, s3, s3env, tmp_path):
    """A public-read bucket written with no credentials: the endpoint refuses the unsigned
    conditional PUT; a user error saying no credentials were found (it was "Unable to locate
    credentials", an OSError), and the store keeps its version."""
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.5, ("a",)))
    uri = f"s3://lab/{prefix}?endpoint_override=127.0.0.1:{s3.port}&scheme=http&region=us-east-1"
    env = _no_credentials_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p)
    r = _run(["-c", _COMMIT, uri], env)
    assert r.returncode == 2 and r.stderr.startswith("NoCredentialsError "), r.stderr
    assert "no AWS credentials were found" in r.stderr and "none written" in r.stderr
    assert Store(f"s3://lab/{prefix}").version == 1


# ---- 2: a move asks no HEAD of a staged file; a failed condition keeps the source ---------------


def test_a_commit_moves_its_staged_files_without_a_head(request, s3, s3env):
    """Each staged file was HEADed (boto3's managed copy, for its size) before its CopyObject: the
    manifest records the size. One CopyObject per file, no HEAD of a staged key."""
    prefix = _prefix(request)
    s = Store(f"s3://lab/{prefix}", notify=None)
    mark = _log_mark(s3)
    assert s.commit(_rows(0.1)).version == 1
    reqs = _requests(s3, mark)
    staged = f"/lab/{prefix}/_staging/"
    assert not [r for r in reqs if r[0] == "HEAD" and r[1].startswith(staged)], reqs
    assert len([r for r in reqs if r[0] == "DELETE" and r[1].startswith(staged)]) == 5   # moved: copy, delete
    assert len(s.read()) == 15 and s.check().ok


class _RefuseCopyParts(_Relay):
    """S3's answer to an UploadPartCopy whose ``x-amz-copy-source-if-match`` no longer holds (the
    source replaced mid-copy); moto does not check that header."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "PUT" and "partNumber=" in self.path and "x-amz-copy-source-if-match" in self.headers:
            return 412, (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code>"
                         b"<Message>At least one of the pre-conditions you specified did not hold</Message></Error>")
        return None


def test_a_copy_whose_source_changed_raises_and_keeps_the_source(request, s3, s3env, relay, monkeypatch):
    monkeypatch.setattr(_s3, "MULTIPART_COPY_BYTES", 5 * 1024 * 1024)
    prefix = _prefix(request)
    data = os.urandom(6 * 1024 * 1024)
    s3.client().put_object(Bucket="lab", Key=f"{prefix}/_staging/0000000001-ab/up/a/f.parquet", Body=data)
    hostport = relay(_RefuseCopyParts)
    f = Store(f"s3://lab/{prefix}?endpoint_override={hostport}&scheme=http", notify=None)._f
    with pytest.raises(OSError, match="copy failed"):
        f.move("_staging/0000000001-ab/up/a/f.parquet", "up/a/f.parquet")
    assert [h for m, p, h in _RefuseCopyParts.seen if "x-amz-copy-source-if-match" in h]   # the condition was sent
    c = s3.client()
    assert c.get_object(Bucket="lab", Key=f"{prefix}/_staging/0000000001-ab/up/a/f.parquet")["Body"].read() == data
    with pytest.raises(c.exceptions.ClientError):
        c.head_object(Bucket="lab", Key=f"{prefix}/up/a/f.parquet")


# ---- 3: a commit asks less ------------------------------------------------------------------------


def test_a_commit_asks_no_needless_listing(request, s3, s3env):
    """A commit replacing 5 partitions on top of one that did: it asked pyarrow whether each new
    file's place was a "directory" (a HEAD, then a LIST of '<file>/' on its 404), listed
    '_staging' 4 times and the manifests 5 times, and HEADed the manifest copy it had just written."""
    prefix = _prefix(request)
    s = Store(f"s3://lab/{prefix}", notify=None)
    s.commit(_rows(0.1))
    s.commit(_rows(0.2))
    mark = _log_mark(s3)
    assert s.commit(_rows(0.3)).updated == 15
    reqs = _requests(s3, mark)

    def lists(under: str) -> int:
        return sum(1 for m, p, q in reqs if m == "GET" and p == "/lab" and q.get("prefix") == f"{prefix}/{under}")

    assert not [q for m, p, q in reqs if q.get("max-keys") == "1" and q.get("prefix", "").endswith(".parquet/")]
    assert not [p for m, p, q in reqs if m == "HEAD" and p.endswith(".copy.json")], reqs
    assert lists("_staging/") <= 2 and lists("_meta/manifests/") <= 4, reqs
    assert set(s.read().column("ds_accuracy").to_pylist()) == {0.3} and s.check().ok


def test_a_small_commit_asks_once_whether_a_superseded_file_is_left(request, s3, s3env):
    """A commit on top of one that replaced 1 partition asks whether its superseded file is still
    there: pyarrow's HEAD (404), then a LIST of '<file>/'; one LIST now."""
    prefix = _prefix(request)
    s = Store(f"s3://lab/{prefix}", notify=None)
    s.commit(_rows(0.1, ("a",)))
    gone = {e["path"] for e in s._load().data}
    s.commit(_rows(0.2, ("a",)))
    mark = _log_mark(s3)
    assert s.commit(_rows(0.3, ("a",))).updated == 3
    reqs = _requests(s3, mark)
    asked = [(m, p, q) for m, p, q in reqs for f in gone
             if p == f"/lab/{prefix}/{f}" or q.get("prefix", "").startswith(f"{prefix}/{f}")]
    assert [(m, q.get("delimiter")) for m, p, q in asked] == [("GET", "/")], asked
    assert not [q for m, p, q in reqs if q.get("max-keys") == "1" and q.get("prefix", "").endswith(".parquet/")]
    assert set(s.read().column("ds_accuracy").to_pylist()) == {0.3} and s.check().ok


def test_a_commit_stages_each_file_in_one_put(request, s3, s3env):
    """pyarrow's output stream staged each file by a multipart upload (create, part, complete),
    whatever its size: one PUT now, below the size where copies go in parts."""
    prefix = _prefix(request)
    s = Store(f"s3://lab/{prefix}", notify=None)
    mark = _log_mark(s3)
    assert s.commit(_rows(0.1)).version == 1
    on_staged = [(m, q) for m, p, q in _requests(s3, mark) if p.startswith(f"/lab/{prefix}/_staging/")]
    assert not [q for m, q in on_staged if "uploads" in q or "uploadId" in q], on_staged
    assert [m for m, q in on_staged].count("PUT") == 5
    assert len(s.read()) == 15 and s.check().ok


def test_file_size_on_s3_is_pyarrows_answer_in_one_listing(request, s3, s3env):
    prefix = _prefix(request)
    c = s3.client()
    for k, body in {"obj": b"12345", "obj/x": b"1", "dir/x": b"22", "marker/": b"", "obj.bak": b"9"}.items():
        c.put_object(Bucket="lab", Key=f"{prefix}/{k}", Body=body)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    assert [f.file_size(r) for r in ("obj", "dir", "marker", "nothing", "ob", "obj.bak")] == [5, -1, -1, None, None, 1]


# ---- 4: a kept copy is the managed copy -----------------------------------------------------------


def test_keep_copy_past_the_multipart_size_copies_in_parts(request, s3, s3env, monkeypatch):
    """A repair keeps a damaged manifest's bytes aside by a server-side copy: pyarrow's
    ``copy_file``, one CopyObject, which S3 refuses above 5 GB. Now the managed copy moves use."""
    monkeypatch.setattr(_s3, "MULTIPART_COPY_BYTES", 5 * 1024 * 1024)
    prefix = _prefix(request)
    c = s3.client()
    data = os.urandom(12 * 1024 * 1024 + 1)
    c.put_object(Bucket="lab", Key=f"{prefix}/_meta/manifests/0000000002.json", Body=data)
    f = Store(f"s3://lab/{prefix}", notify=None)._f
    mark = _log_mark(s3)
    f.keep_copy("_meta/manifests/0000000002.json", "_damaged/0000000003/_meta/manifests/0000000002.json")
    dst = f"/lab/{prefix}/_damaged/0000000003/_meta/manifests/0000000002.json"
    on_dst = [(m, q) for m, p, q in _requests(s3, mark) if p == dst]
    assert ("POST", {"uploads": ""}) in on_dst
    assert sorted(q["partNumber"] for m, q in on_dst if m == "PUT" and "partNumber" in q) == ["1", "2", "3"]
    assert c.get_object(Bucket="lab", Key=dst[len("/lab/"):])["Body"].read() == data
    assert c.get_object(Bucket="lab", Key=f"{prefix}/_meta/manifests/0000000002.json")["Body"].read() == data
