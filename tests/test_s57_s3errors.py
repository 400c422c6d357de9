"""S3 failures a user must fix, said in one line (exit 2) naming the input and what to check,
against a real S3 API on 127.0.0.1 (moto's server: ``tests/s3_server.py``):

- a sweep's ``--storage-path`` in a bucket the endpoint does not have (it was pyarrow's "Bucket
  'nobucket' not found. To create buckets, enable the allow_bucket_creation option.", exit 1);
- credentials the endpoint refuses, for the sweep record, the sweep's storage check, ``store
  info``, ``ingest`` and ``refit`` alike (they were "AWS Error ACCESS_DENIED …" exit 1, "LIST failed:
  InvalidAccessKeyId" exit 1, and "cannot reach store location (…ACCESS_DENIED…)" exit 2);
- an error's first line kept whole up to 500 characters, and its end (the host) past that.
"""

from __future__ import annotations

import contextlib
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from conftest import one_error_line, run_cli

from meta_study.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "examples/data/pythia/us_ds.csv"


@contextlib.contextmanager
def refused(s3) -> Iterator[None]:
    """Every request to the S3 server refused for its credentials while inside: moto checks
    signatures and keys from its first request on (``/moto-api/reset-auth``), and knows none of
    ours (InvalidAccessKeyId, ACCESS_DENIED); back to accepting any after."""
    def reset(count: str) -> None:
        req = urllib.request.Request(s3.endpoint + "/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    reset("0")
    try:
        yield
    finally:
        reset("inf")


@pytest.mark.slow(30)
def test_a_storage_path_in_a_missing_bucket_is_one_user_error(s3env, local_ray):
    from meta_study.tune import preflight

    with pytest.raises(UserError) as e:
        preflight.check_storage_on_nodes("s3://nobucket/tune", timeout_s=60)
    assert str(e.value) == ("--storage-path s3://nobucket/tune: the bucket 'nobucket' does not exist at this S3 "
                            "endpoint (create it first, or correct the URI)")


@pytest.mark.slow(30)
def test_refused_credentials_for_a_storage_path_are_one_user_error(s3, s3env, local_ray):
    from meta_study.tune import preflight

    with refused(s3), pytest.raises(UserError) as e:
        preflight.check_storage_on_nodes("s3://lab/tune", timeout_s=60)
    msg = str(e.value)
    assert msg.startswith("--storage-path s3://lab/tune: the S3 endpoint refused the credentials (AccessDenied)"), msg
    assert "AWS_ACCESS_KEY_ID" in msg and "AWS_SECRET_ACCESS_KEY" in msg and "\n" not in msg


def test_refused_credentials_reading_the_sweep_record_are_one_user_error(s3, s3env):
    from meta_study.tune.state import StateDir

    state = StateDir("s3://lab/sweeps/head_wd")
    with refused(s3), pytest.raises(UserError) as e:
        state.read_bytes("sweep.json")
    msg = str(e.value)
    assert msg.startswith("s3://lab/sweeps/head_wd/meta_study: the S3 endpoint refused the credentials ("), msg
    assert "AWS_ACCESS_KEY_ID" in msg and "ACCESS_DENIED" not in msg


@pytest.mark.slow(40)
def test_store_info_ingest_and_refit_say_the_credentials_were_refused(s3, s3env, tmp_path):
    uri = "s3://lab/refused/store"
    assert run_cli("ingest", str(CSV), "--store", uri).returncode == 0
    with refused(s3):
        lines = [one_error_line(run_cli("store", "info", uri), uri, "the S3 endpoint refused the credentials (",
                                "AWS_ACCESS_KEY_ID"),
                 one_error_line(run_cli("ingest", str(CSV), "--store", uri), uri,
                                "the S3 endpoint refused the credentials (", "AWS_ACCESS_KEY_ID"),
                 one_error_line(run_cli("refit", "--store", uri, "--out", str(tmp_path / "out"), "--tracking-uri",
                                        "none", env=s3env), uri, "the S3 endpoint refused the credentials (",
                                "AWS_ACCESS_KEY_ID")]
    for line in lines:
        assert "cannot reach" not in line and "LIST failed" not in line, line
    assert run_cli("store", "info", uri).returncode == 0   # nothing of the store was lost


def test_only_refusals_of_the_credentials_are_taken_for_them():
    from meta_study.store._files import credentials_refused
    from meta_study.store._s3 import S3RequestError

    # what the endpoint answered in the tests above (pyarrow's and boto3's words)
    assert credentials_refused(OSError("When reading information for key 'x' in bucket 'lab': AWS Error "
                                       "ACCESS_DENIED during HeadObject operation: No response body.")) == "AccessDenied"
    assert credentials_refused(OSError("When listing objects under key 'st/' in bucket 'lab': AWS Error "
                                       "INVALID_ACCESS_KEY_ID during ListObjectsV2 operation: The AWS Access Key Id "
                                       "you provided does not exist in our records.")) == "InvalidAccessKeyId"
    assert credentials_refused(S3RequestError("s3://lab/st/_meta/manifests: LIST failed: SignatureDoesNotMatch: x",
                                              "SignatureDoesNotMatch", 403)) == "SignatureDoesNotMatch"
    assert credentials_refused(S3RequestError("s3://lab/st/x: HEAD failed: 403: Forbidden", "403", 403)) == "AccessDenied"
    assert credentials_refused(OSError("LIST failed: InvalidAccessKeyId: The AWS Access Key Id")) == "InvalidAccessKeyId"
    # server errors, throttling, the clock, an expired token, no network: what they were
    for e in (S3RequestError("x: PUT failed: SlowDown: Please reduce", "SlowDown", 503),
              S3RequestError("x: GET failed: InternalError: x", "InternalError", 500),
              S3RequestError("x: PUT failed: RequestTimeTooSkewed: x", "RequestTimeTooSkewed", 403),
              S3RequestError("x: PUT failed: ExpiredToken: x", "ExpiredToken", 400),
              OSError("s3://lab/st: LIST failed: Could not connect to the endpoint URL: \"http://127.0.0.1:1/lab\""),
              OSError("When getting information for key 'st' in bucket 'lab': AWS Error NETWORK_CONNECTION during "
                      "HeadObject operation: curlCode: 7, Couldn't connect to server"),
              OSError("AWS Error UNKNOWN (HTTP status 403) during PutObject operation: RequestTimeTooSkewed"),
              OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."),
              PermissionError(13, "Permission denied")):
        assert credentials_refused(e) is None, e


def test_an_errors_first_line_keeps_the_host_it_names():
    from meta_study.store._files import _first_line

    host = "Could not resolve host: lab.s3.us-east-1.amazonaws.com"
    line = "s3://lab/meta-study/store/_meta/manifests: LIST failed: " + "x" * 150 + ": " + host
    assert _first_line(OSError(line)) == line          # 262 characters: whole (it was cut at 200)
    long = "When reading " + "y" * 2000 + ": Failed to connect to 127.0.0.1 port 9000"
    short = _first_line(OSError(long))
    assert len(short) <= 500 and short.startswith("When reading ") and short.endswith("127.0.0.1 port 9000")
