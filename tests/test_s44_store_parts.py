"""Session 44 review of the store's parts (meta_study/store/_s3.py, _lock.py, _merge.py,
_manifest.py): a bucket name S3 cannot have is one user error with its reason, not "Parameter
validation failed:" (exit 1); an endpoint that refuses every conditional create is told at once,
not waited on for the lock timeout; quarantined rows given with numbers or objects are stored as
text, and deleting a run given by a number drops its quarantined rows as it drops its data rows;
two files one commit stages never share a name."""

from __future__ import annotations

import pandas as pd
import pytest

from meta_study.errors import UserError
from meta_study.store import Store
from conftest import REPO, one_error_line, run_cli


def test_a_bucket_name_s3_cannot_have_is_one_line_naming_it():
    """boto3 refuses such a name before sending anything; the writer said "conditional PUT
    failed: Parameter validation failed:" (the reason was on the next line) and exited 1, as if
    the machine had failed."""
    pytest.importorskip("boto3")
    from meta_study.store._s3 import S3Objects

    objects = S3Objects("s3://k:s@lab%5Ex/st?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1",
                        "s3://lab%5Ex/st")
    with pytest.raises(UserError) as e:
        objects.create("_meta/LEASE.json", b"{}")
    line = str(e.value)
    assert "'lab^x' is not a valid S3 bucket name" in line and "correct the URI" in line, line
    assert "\n" not in line and "Parameter validation" not in line, line


def test_ingest_to_a_bucket_name_s3_cannot_have_exits_2(s3env):
    r = run_cli("ingest", str(REPO / "examples/data/pythia/us_ds.csv"), "--store", "s3://lab%5Ex/st", env=s3env)
    one_error_line(r, "'lab^x' is not a valid S3 bucket name")


class _Refusing:
    """An S3 client whose endpoint answers 412 to every conditional PUT, even of a new key (a
    proxy, or an S3-compatible server without them), and stores nothing."""

    def __init__(self) -> None:
        self.puts = 0

    def put_object(self, **kw):  # noqa: ANN003, ANN201
        from botocore.exceptions import ClientError

        self.puts += 1
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions "
                                     "you specified did not hold"},
                           "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")

    def head_object(self, **kw):  # noqa: ANN003, ANN201
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "404", "Message": "Not Found"},
                           "ResponseMetadata": {"HTTPStatusCode": 404}}, "HeadObject")

    def delete_object(self, **kw):  # noqa: ANN003, ANN201
        return {}


def test_an_endpoint_refusing_a_conditional_create_of_a_new_key_is_refused_at_once():
    """The check of conditional writes took a first create answered 412 for "the probe exists"
    and passed: every writer then retried the lease until its lock timeout (15 minutes by
    default) and failed, an endpoint on which no commit can ever succeed."""
    pytest.importorskip("boto3")
    from meta_study.store._s3 import S3Objects

    objects = S3Objects("s3://lab/st", "s3://lab/st")
    objects._client = client = _Refusing()
    with pytest.raises(UserError, match="refused a conditional PUT of a new object") as e:
        objects.create("_meta/LEASE.json", b"{}")
    assert str(e.value).startswith("s3://lab/st: ") and "\n" not in str(e.value)
    assert client.puts == 1 and not objects._conditional_checked


def test_a_create_whose_reply_was_lost_still_passes_the_check(s3env, request):
    """The first probe PUT landed but was answered 412 (the client's retry after a lost reply):
    the object exists, so the endpoint is sound and the check goes on."""
    pytest.importorskip("boto3")
    from botocore.exceptions import ClientError

    from meta_study.store._s3 import S3Objects

    objects = Store(f"s3://lab/{request.node.name}")._f.objects()
    real = objects.client.put_object
    calls = {"n": 0}

    def put_object(**kw):  # noqa: ANN003, ANN202
        calls["n"] += 1
        r = real(**kw)
        if calls["n"] == 1:   # landed, its reply lost, the retry got 412
            raise ClientError({"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}},
                              "PutObject")
        return r

    objects.client.put_object = put_object
    assert isinstance(objects, S3Objects)
    objects.require_conditional_writes("_meta/LEASE.json")
    assert objects._conditional_checked and calls["n"] == 3


def _quarantine(run_id, raw='{"a": 1}') -> pd.DataFrame:  # noqa: ANN001
    return pd.DataFrame({"source": ["src"], "run_id": [run_id], "reason": ["bad"], "raw": [raw]})


def test_quarantined_rows_with_a_numeric_run_id_or_an_object_payload_are_stored_as_text(tmp_path):
    # it was ArrowTypeError "Expected bytes, got a 'int' object", a traceback, nothing committed
    s = Store(str(tmp_path / "st"), notify=None)
    r = s.commit(None, quarantine=pd.DataFrame({"source": ["src", "src"], "run_id": [7, 8], "reason": ["bad", "bad"],
                                                "raw": [{"b": 2, "a": 1}, None]}))
    assert r.quarantined == 2
    q = sorted(s.quarantine().to_pylist(), key=lambda row: row["run_id"])
    assert [(row["run_id"], row["raw"]) for row in q] == [("7", '{"a": 1, "b": 2}'), ("8", None)]
    # the same payloads again: nothing new (the hash of what is stored)
    again = s.commit(None, quarantine=pd.DataFrame({"source": ["src"], "run_id": [7], "reason": ["bad"],
                                                    "raw": [{"a": 1, "b": 2}]}))
    assert again.version is None and s.quarantine().num_rows == 2


def test_deleting_a_run_given_by_a_number_drops_its_quarantined_rows(tmp_path):
    """delete_runs=[("src", 7)] deleted run "7"'s data rows (keys compare as text) but kept its
    quarantined rows, which the quarantine compared as ("src", 7) against ("src", "7")."""
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(None, quarantine=_quarantine("7"))
    s.commit(None, quarantine=_quarantine("9", raw='{"a": 9}'))
    r = s.commit(None, delete_runs=[("src", 7)])
    assert r.version is not None
    assert s.quarantine().column("run_id").to_pylist() == ["9"]


def test_two_quarantine_files_restaged_by_one_commit_never_share_a_name(tmp_path, monkeypatch):
    """A commit that restages several quarantine files (a re-ingest settling runs spread over
    them) named each ``_quarantine/part-<version>-<8 random hex>``: two with the same random part
    (here forced; ~1 in 2,000 for 2,000 files) wrote one staged file over the other, and the
    version was published damaged, the first file's rows lost."""
    import types

    from meta_study.store import _merge

    s = Store(str(tmp_path / "st"), notify=None)
    for n in (1, 2):   # two quarantine files, each with a row of run x and one of run y
        s.commit(None, quarantine=pd.DataFrame({"source": ["src", "src"], "run_id": ["x", "y"], "reason": ["bad"] * 2,
                                                "raw": [f'{{"x": {n}}}', f'{{"y": {n}}}']}))
    fixed = types.SimpleNamespace(hex="0123456789abcdef" * 2)
    ids = iter([fixed, fixed, types.SimpleNamespace(hex="fedcba98" * 4)])
    monkeypatch.setattr(_merge, "uuid", types.SimpleNamespace(uuid4=lambda: next(ids)))
    r = s.commit(None, settle_quarantine=[("src", "x")])   # both files restaged with run y's row only
    assert r.version == 3
    monkeypatch.undo()
    assert sorted(s.quarantine().column("raw").to_pylist()) == ['{"y": 1}', '{"y": 2}']
    assert s.check().ok


class _NotImplemented(_Refusing):
    """An S3 endpoint that answers a conditional PUT with 501 Not Implemented (an S3-compatible
    server without them)."""

    def put_object(self, **kw):  # noqa: ANN003, ANN201
        from botocore.exceptions import ClientError

        self.puts += 1
        raise ClientError({"Error": {"Code": "NotImplemented", "Message": "A header you provided implies "
                                     "functionality that is not implemented"},
                           "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")


def test_an_endpoint_without_conditional_writes_is_a_user_error_not_a_retryable_failure():
    """It was a bare OSError: exit 1, which says "the machine failed, try again" to a scheduler,
    for an endpoint on which no commit can ever go (one that ignores them was already exit 2)."""
    pytest.importorskip("boto3")
    from meta_study.store._s3 import S3Objects

    objects = S3Objects("s3://lab/st", "s3://lab/st")
    objects._client = _NotImplemented()
    with pytest.raises(UserError, match="does not support conditional writes") as e:
        objects.create("_meta/LEASE.json", b"{}")
    assert isinstance(e.value, OSError) and "\n" not in str(e.value)
