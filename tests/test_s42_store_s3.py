"""Review s42 of the store's S3 calls and manifest format (``meta_study/store/_s3.py``,
``_manifest.py``): a commit log entry whose keys JSON turns into strings, the region and TLS
options pyarrow reads but boto3 did not, and secrets in the URI a caller shows. S3 is the real
S3 API of moto's server on 127.0.0.1 (``tests/s3_server.py``; here also over TLS)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pyarrow import fs as pafs

from conftest import make_rows
from meta_study.store import Store
from meta_study.store._manifest import _Manifest
from meta_study.validation import validate


# -- the commit log's keys --------------------------------------------------------------------------

def test_a_commit_whose_info_has_int_keys_leaves_a_readable_store(tmp_path):
    """``info`` keyed by ints was checksummed with its keys sorted as ints (5, 10) but read back
    sorted as strings ("10", "5"): the checksum never verified, so the commit left a store that
    no command could read ("neither its copy nor any older manifest is intact"). A numpy int key
    was a TypeError at the commit point."""
    s = Store(str(tmp_path / "st"))
    r = s.commit(validate(make_rows(3)).table, info={"by_shots": {5: 1, 10: 2}, "n": {np.int64(3): 1}})
    assert r.version == 1
    back = Store(str(tmp_path / "st"))
    assert len(back.to_pandas()) == 6
    last = back.history()[-1]
    assert last["by_shots"] == {"5": 1, "10": 2} and last["n"] == {"3": 1}
    assert back.check().ok


def test_a_manifest_log_reads_back_as_it_was_checksummed():
    m = _Manifest(version=1, log=[{"version": 1, "k": {10: 1, 9: 2, True: 3, None: 4, 1.5: (1, 2)},
                                   "v": np.float32(0.5), 7: "seven"}])
    back = _Manifest.from_json(m.to_json(), "x")          # a _CorruptManifest (checksum) before
    assert back.log == m.log == [{"version": 1, "k": {"10": 1, "9": 2, "true": 3, "null": 4, "1.5": [1, 2]},
                                  "v": "0.5", "7": "seven"}]


# -- the region pyarrow uses ------------------------------------------------------------------------

def test_aws_region_alone_sets_the_conditional_writes_region_as_pyarrows(s3, monkeypatch, tmp_path):
    """docs/store.md names AWS_REGION; pyarrow reads it (where AWS_DEFAULT_REGION is unset), botocore
    does not: the conditional writes were signed for us-east-1 while the data files used the
    region given (a MinIO or Ceph configured for another region refuses such a signature)."""
    from meta_study.store._s3 import S3Objects

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    uri = f"s3://lab/region?endpoint_override=127.0.0.1:{s3.port}&scheme=http"
    o = S3Objects(uri, "s3://lab/region")
    assert o.client.meta.region_name == pafs.FileSystem.from_uri(uri)[0].region == "eu-west-1"
    assert o.create("a.json", b"{}") is not None and o.get("a.json").data == b"{}"

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")   # pyarrow's order: this one first
    assert S3Objects(uri, "s3://lab/region").client.meta.region_name == "us-west-2" \
        == pafs.FileSystem.from_uri(uri)[0].region


# -- secrets in the URI shown -----------------------------------------------------------------------

def test_a_secret_in_the_shown_uri_stays_out_of_every_message(s3):
    """The sweep record (meta_study/tune/state.py) passes the URI less only its query as the one
    messages show: 's3://KEY:SECRET@lab/x' put the secret in each failure's line."""
    from meta_study.store._s3 import NoSuchBucketError, S3Objects

    raw = f"s3://testing:testing-secret@nobucket/x?endpoint_override=127.0.0.1:{s3.port}&scheme=http&region=us-east-1"
    with pytest.raises(NoSuchBucketError) as e:
        S3Objects(raw, raw.partition("?")[0]).create("_sweep.json", b"{}")
    assert "testing-secret" not in str(e.value) and "nobucket" in str(e.value)

    down = "s3://testing:testing-secret@lab/x?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    with pytest.raises(OSError) as e:
        S3Objects(down, down.partition("?")[0]).get("_sweep.json")
    assert "testing-secret" not in str(e.value) and str(e.value).startswith("s3://testing:***@lab/x/_sweep.json")


# -- pyarrow's TLS options --------------------------------------------------------------------------

def _self_signed(where: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    crt, pem = where / "ca.pem", where / "key.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


@contextlib.contextmanager
def _tls_s3(where: Path, env: dict[str, str]):
    """moto's S3 server over HTTPS on 127.0.0.1 with a certificate of our own CA: its port."""
    import boto3
    from mlflow_server import free_port

    crt, pem = _self_signed(where)
    port = free_port()
    with open(where / "moto.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), "-s",
                                 "-c", str(crt), "-k", str(pem)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env})
    try:
        c = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}", verify=str(crt), region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing-secret")
        deadline = time.monotonic() + 60
        while True:
            try:
                c.create_bucket(Bucket="lab")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"moto did not start over TLS: {(where / 'moto.log').read_text()[-500:]}")
                time.sleep(0.3)
        yield port, crt
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_store_on_an_endpoint_with_a_private_ca_commits(s3env, tmp_path, monkeypatch):
    """``?tls_ca_file_path=`` (pyarrow's option) reached the data files only: boto3 verified the
    endpoint against its own bundle, and the first conditional write failed ("certificate verify
    failed"), so no commit was possible. ``tls_verify_certificates=false`` likewise."""
    pytest.importorskip("cryptography")
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)
    with _tls_s3(tmp_path, s3env) as (port, crt):
        uri = f"s3://lab/st?endpoint_override=127.0.0.1:{port}&scheme=https&tls_ca_file_path={crt}"
        s = Store(uri)
        assert s.commit(validate(make_rows(3)).table).version == 1
        assert len(Store(uri).to_pandas()) == 6

        from meta_study.store._s3 import S3Objects

        off = f"s3://lab/st?endpoint_override=127.0.0.1:{port}&scheme=https&tls_verify_certificates=false"
        with pytest.warns(Warning):   # urllib3's InsecureRequestWarning: what the URI asked for
            assert S3Objects(off, "s3://lab/st").create("_meta/x.json", b"{}") is not None
