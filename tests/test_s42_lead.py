"""Small defects fixed by the lead in session 42, each test failing before its fix."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def test_a_metric_beyond_a_doubles_range_is_infinite_not_an_overflow_in_tunes_callback():
    """A trial that reported an int past 1.8e308 (a count, an overflowed product) raised
    OverflowError ("int too large to convert to float") inside the MLflow callback: the sweep stopped."""
    from meta_study.tune.tracking import _metrics

    m = _metrics({"big": 10 ** 400, "small": -(10 ** 400), "frac": Fraction(10 ** 400, 3), "acc": np.float32(0.5),
                  "n": 3, "flag": True, "name": "x"})
    assert m == {"big": math.inf, "small": -math.inf, "frac": math.inf, "acc": 0.5, "n": 3.0}


def test_the_sweep_records_missing_bucket_line_has_no_secret(s3):
    """The sweep record's own "no such bucket" line showed the URI less its query:
    's3://KEY:SECRET@nobucket/x' named the secret."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.tune.state import StateDir, SweepRecord

    uri = f"s3://testing:testing-secret@nobucket/x?endpoint_override=127.0.0.1:{s3.port}&scheme=http&region=us-east-1"
    rec = SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id="p", tracking_uri="t")
    with pytest.raises(UserError) as e:
        StateDir(uri).create_record(rec)
    assert "testing-secret" not in str(e.value) and "no such bucket" in str(e.value), str(e.value)
    assert str(e.value).startswith("s3://testing:***@nobucket/x"), str(e.value)


def test_an_s3_uri_keeps_its_buckets_capitals_as_pyarrow_does():
    """urlsplit's hostname lowercased the bucket: a legacy bucket named with capitals got the
    sweep record's keys in another bucket than the one pyarrow writes the store to."""
    from meta_study.store._s3 import S3Objects

    o = S3Objects("s3://Key:Secret@Legacy-Bucket/runs/x?endpoint_override=127.0.0.1:1&scheme=http", "shown")
    assert (o.bucket, o.prefix) == ("Legacy-Bucket", "runs/x")
    assert S3Objects("s3://lab/x", "shown").bucket == "lab"


def test_bootstrap_lines_say_when_there_is_no_interval_and_how_many_resamples_were_usable():
    """Three fitting points: every usable resample refits the estimate's own points, and the
    interval is NaN (it was "2.62 [2.62, 2.62]", a precise-looking alpha); printed as "[nan, nan]".
    An interval of 46 usable resamples of 200 said nothing of the 154 that failed."""
    import pandas as pd

    from meta_study.cli import bootstrap_lines

    def row(frontier, est, lo, hi, n_ok, samples=200):
        return {"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "frontier": frontier,
                "param": "alpha", "estimate": est, "lo": lo, "hi": hi, "level": 0.95, "samples": samples, "n_ok": n_ok}

    t = pd.DataFrame([row("vertices", 2.62, math.nan, math.nan, 46), row("all", 2.0, 1.5, 2.5, 46),
                      row("bins", 2.0, 1.0, 3.0, 200)])
    assert bootstrap_lines(t, alpha_max=10.0)[1] == (
        "  up -> a (fewshot, 5-shot): vertices 2.62 (no interval: 46 of 200 resamples usable); all 2 [1.5, 2.5] "
        "(46 of 200 resamples usable); bins 2 [1, 3]")


def test_conditional_writes_to_an_s3_compatible_endpoint_send_plain_bodies(s3):
    """botocore >= 1.36 sent each PutObject with a CRC32 checksum (over https an aws-chunked body
    with a trailing checksum), which S3-compatible stores that predate it (MinIO, Ceph RGW) refuse
    or mis-store: every commit failed there. The request as it goes on the wire, captured with
    botocore's own event hook."""
    from meta_study.store._s3 import S3Objects

    uri = f"s3://testing:testing@lab/plain?endpoint_override=127.0.0.1:{s3.port}&scheme=http&region=us-east-1"
    o = S3Objects(uri, "shown")
    sent: list[dict] = []
    o.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    assert o.create("_probe.json", b'{"x": 1}') is not None
    assert sent, "no PutObject was sent"
    headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent[-1].items()}
    # over https the body was aws-chunked with an x-amz-trailer; over http, as here, the CRC32 rides
    # in x-amz-checksum-crc32 with x-amz-sdk-checksum-algorithm: neither goes out now
    assert not [k for k in headers if k.startswith("x-amz-checksum") or k == "x-amz-sdk-checksum-algorithm"
                or k == "x-amz-trailer"], headers
    assert "aws-chunked" not in headers.get("content-encoding", ""), headers
    assert o.get("_probe.json").data == b'{"x": 1}'
