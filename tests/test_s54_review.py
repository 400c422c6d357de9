"""Review of session 54's changes: what ``check_writable`` on S3 still refuses (credentials the
endpoint does not know, read-only ones, an endpoint that ignores conditional writes), through a
proxy in front of the real S3 API that answers as such an endpoint would; that a failed
DeleteObjects or DELETE of a commit is said, not swallowed; that keys below a superseded file's
name leave no commit pending; and the ``few_residuals`` text where
its share rounds to the level (18 residuals at 95%) or rests on one residual."""

from __future__ import annotations


import pytest

from meta_study.analysis.selection import _few_residuals
from meta_study.errors import UserError
from meta_study.store import Store, _store

boto3 = pytest.importorskip("boto3")

from test_s51_store_s3 import _log_mark, _prefix, _requests, _rows  # noqa: E402
from test_s52_s3 import _Relay, relay  # noqa: E402,F401 - the proxy fixture
from test_s54_store import keys_below_an_unfinished_commit  # noqa: E402


def _xml_error(code: str, message: str) -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error>").encode()


class _BadKeys(_Relay):
    """An endpoint that knows no such access key: every request refused."""

    def refuse(self) -> tuple[int, bytes] | None:
        return 403, _xml_error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")


class _ReadOnly(_Relay):
    """Credentials that may read, not write."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command in ("PUT", "POST", "DELETE"):
            return 403, _xml_error("AccessDenied", "Access Denied")
        return None


class _IgnoresConditions(_Relay):
    """An endpoint that ignores If-None-Match and If-Match (the headers never reach the server)."""

    def refuse(self) -> tuple[int, bytes] | None:
        for h in ("If-None-Match", "If-Match"):
            del self.headers[h]
        return None


class _BatchDeleteFails(_Relay):
    """A DeleteObjects that answers 200 with an error for each key (S3's partial failure)."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "POST" and "delete" in self.path.partition("?")[2]:
            return 200, (b"<?xml version='1.0' encoding='UTF-8'?><DeleteResult><Error><Key>x/_meta/manifests/"
                         b"0000000001.json</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                         b"</DeleteResult>")
        return None


class _DeleteFails(_Relay):
    """A DELETE of a data file refused (a bucket policy denying s3:DeleteObject), and every
    DeleteObjects (the store then deletes key by key)."""

    def refuse(self) -> tuple[int, bytes] | None:
        if self.command == "DELETE" and "/up/" in self.path and "/_staging/" not in self.path:
            return 403, _xml_error("AccessDenied", "Access Denied")
        if self.command == "POST" and "delete" in self.path.partition("?")[2]:
            return 403, _xml_error("AccessDenied", "Access Denied")
        return None


def _via(hostport: str, prefix: str) -> str:
    return f"s3://lab/{prefix}?endpoint_override={hostport}&scheme=http&region=us-east-1"


@pytest.mark.parametrize("existing", [False, True], ids=["new", "store"])
def test_check_writable_refuses_bad_keys_and_read_only_credentials(request, s3, s3env, relay, existing):  # noqa: F811
    prefix = _prefix(request)
    if existing:
        Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.1, ("a",)))
    with pytest.raises(UserError) as e:
        Store(_via(relay(_BadKeys), prefix), notify=None).check_writable()
    assert "InvalidAccessKeyId" in str(e.value) and "\n" not in str(e.value), e.value
    with pytest.raises(OSError) as e:
        Store(_via(relay(_ReadOnly), prefix), notify=None).check_writable()
    assert "AccessDenied" in str(e.value) and "\n" not in str(e.value), e.value
    with pytest.raises(UserError, match="ignores conditional writes"):
        Store(_via(relay(_IgnoresConditions), prefix), notify=None).check_writable()


def test_a_failed_prune_and_a_failed_delete_are_said(request, s3, s3env, relay, monkeypatch):  # noqa: F811
    monkeypatch.setattr(_store, "KEEP_MANIFESTS", 1)
    prefix = _prefix(request)
    Store(f"s3://lab/{prefix}", notify=None).commit(_rows(0.1, ("a",)))
    said: list[str] = []
    assert Store(_via(relay(_BatchDeleteFails), prefix), notify=said.append).commit(_rows(0.2, ("a",))).version == 2
    assert said and "DELETE failed: AccessDenied" in said[0], said
    said.clear()
    Store(f"s3://lab/{prefix}", notify=None).recover()   # its partition's batch failed too (session 55): finished
    assert Store(_via(relay(_DeleteFails), prefix), notify=said.append).commit(_rows(0.3, ("a",))).version == 3
    assert said and "DELETE failed: AccessDenied" in said[0], said
    assert set(Store(f"s3://lab/{prefix}").read().column("ds_accuracy").to_pylist()) == {0.3}


def test_keys_below_a_superseded_name_leave_no_commit_pending(request, s3, s3env, monkeypatch):
    """A version committed, its finishing left to the next command (finalize failed past the commit
    point), and keys below the name of the file it superseded (``<file>/keep``, the object itself
    gone). Its DELETE leaves those keys (tests/test_s54_store.py); counted as the file still there,
    the version stayed pending, and every command that opened the store took the lease to finish it
    again (PUTs, ~23 requests each) until the next commit. Once finished, opening it writes nothing;
    'store check' names the keys."""
    prefix, uri, old, c = keys_below_an_unfinished_commit(request, s3, monkeypatch)
    Store(uri, notify=None).require()   # finishes version 2 (its staged file moved into place)
    st = Store(uri, notify=None)
    assert not st._pending(st._load())
    mark = _log_mark(s3)
    Store(uri, notify=None).require()
    assert not [r for r in _requests(s3, mark) if r[0] in ("PUT", "POST", "DELETE")]
    assert c.get_object(Bucket="lab", Key=f"{prefix}/{old}/keep")["Body"].read() == b"someone's"
    assert [(d.path, d.kind) for d in Store(uri).check().damage] == [(f"{old}/keep", "untracked")]
    assert set(Store(uri).read().column("ds_accuracy").to_pylist()) == {0.2}


# ---- few_residuals: its words at every level ------------------------------------------------------


def test_the_share_never_reads_as_the_level_it_falls_short_of() -> None:
    """18 residuals at 95%: 18/19 = 94.7%, which read "about 95% of the time, not 95%"; 98 at 99%
    read "about 99% ..., not 99%". As many decimals (up to 2) as it takes to read below the level;
    whole percents where they do (the 90% texts are as before)."""
    assert "about 94.7% of the time, not 95% (19 or more" in _few_residuals(18, 0.95)[0]
    assert "about 98.99% of the time, not 99% (99 or more" in _few_residuals(98, 0.99)[0]
    assert "about 89% of the time, not 90%" in _few_residuals(8, 0.9)[0]
    assert "about 75% of the time, not 80% (4 or more" in _few_residuals(3, 0.8)[0]
    assert _few_residuals(3, 0.5) == [] and _few_residuals(4, 0.8) == []


def test_one_residual_is_not_the_largest_of_one() -> None:
    words = _few_residuals(1, 0.9)[0]
    assert "largest of 1" not in words and "the next error exceeds that one 1 time in 2" in words, words


def test_an_unreachable_store_names_the_reason_not_the_location_again() -> None:
    """check_writable on S3: the LIST's error began with the manifests' URI, which the line names already;
    with a long ``?endpoint_override=`` the 200 characters of the reason ended inside that URI ("...?li)")."""
    uri = ("s3://AKX:SKX@lab/some/long/prefix/for/a/store?endpoint_override=127.0.0.1:9&scheme=http"
           "&region=us-east-1")
    with pytest.raises(UserError) as e:
        Store(uri, notify=None).check_writable()
    msg = str(e.value)
    assert "cannot reach store location (LIST failed: Could not connect to the endpoint URL" in msg, msg
    assert "_meta/manifests?" not in msg and "SKX" not in msg and "\n" not in msg, msg
