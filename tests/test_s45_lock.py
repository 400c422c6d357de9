"""The writers' lock (``meta_study/store/_lock.py``) and the MLflow URI helpers
(``meta_study/mlflow_client.py``), reviewed again: a writer whose S3 lease was lost (broken by
``store unlock``, or taken over while it was stalled) no longer publishes a version while another
writer holds the lease; a heartbeat outlives an unexpected error; messages name a sqlite path
with ``#`` and an IPv6 host as the user typed them. A real S3 API on 127.0.0.1
(``tests/s3_server.py``)."""

from __future__ import annotations

import contextlib
import shlex
import time

import pytest

from conftest import make_rows
from meta_study.errors import StoreConflictError, UserError
from meta_study.store import Store
from meta_study.validation import validate


def _uri(request) -> str:
    return f"s3://lab/s45-{request.node.name.replace('[', '-').replace(']', '')}"


def _on_first_publish(monkeypatch, action) -> list[str]:
    """Run ``action`` when a commit reaches its commit point the first time (in this process);
    returns the failpoints reached."""
    from meta_study.store import _store

    reached: list[str] = []

    def failpoint(name: str) -> None:
        reached.append(name)
        if name == "before_publish" and reached.count(name) == 1:
            action()

    monkeypatch.setattr(_store, "_failpoint", failpoint)
    return reached


def test_a_writer_whose_lease_was_taken_over_does_not_publish(request, s3env, monkeypatch):
    """Writer A stalls before its commit point; its lease is broken and writer B takes it (what
    a pause past the lease does, without waiting for one). A's heartbeat, a beat every 15 s,
    has not noticed, and ``beat.lost`` was never read anyway: A published version 1 while B held
    the lease. Now A's commit point confirms the lease first and fails in one line, publishing
    nothing; B, the holder, commits version 1."""
    from meta_study.store._lock import _lease_lock, break_lease

    uri = _uri(request)
    a, b = Store(uri, lease_s=60, notify=None), Store(uri, lease_s=60, notify=None)
    held = contextlib.ExitStack()

    def take_over() -> None:
        assert break_lease(b._f.objects()) is not None
        held.enter_context(_lease_lock(b._f.objects(), 5, uri, 60))

    _on_first_publish(monkeypatch, take_over)
    rows = validate(make_rows(4)).table
    with held:
        with pytest.raises(StoreConflictError) as e:
            a.commit_stream([(rows, None)])
        line = str(e.value)
        assert "\n" not in line and line.startswith(f"{uri}: this writer's lease of the store was lost"), line
        assert "nothing of this commit was stored" in line
        assert Store(uri).version == 0   # nothing published beside the holder
        assert not [k for k in _keys(a, "_staging/") if not k.endswith("/_staging/")]   # A's staged files removed
    assert b.commit(rows).version == 1
    assert len(Store(uri).read()) == len(rows)


def test_a_commit_whose_lease_was_broken_takes_it_again_before_publishing(request, s3env, monkeypatch):
    """``store unlock`` under a live writer: its commit published anyway, holding no lease (a
    second writer could have been at work). Now it takes the lease again and merges again, and
    the line that says so names the lost lease."""
    from meta_study.store._lock import break_lease

    uri = _uri(request)
    lines: list[str] = []
    a = Store(uri, lease_s=60, notify=lines.append)
    reached = _on_first_publish(monkeypatch, lambda: break_lease(Store(uri)._f.objects()))
    rows = validate(make_rows(3)).table
    assert a.commit(rows).version == 1
    assert reached.count("before_publish") == 2, reached
    assert any("lease of the store was lost" in ln and "attempt 2 of" in ln for ln in lines), lines
    assert len(Store(uri).read()) == len(rows)
    assert Store(uri).lock_holder() is None   # released after the second attempt


def _keys(store: Store, under: str) -> list[str]:
    objects = store._f.objects()
    r = objects.client.list_objects_v2(Bucket=objects.bucket, Prefix=objects.key(under))
    return [o["Key"] for o in r.get("Contents", [])]


def test_a_lease_taken_after_a_lost_one_publishes(request, s3env, monkeypatch):
    """The check belongs to the lease held now: after a commit that found its lease lost, the
    same store takes a new lease and its commit publishes (nothing of the lost lease lingers)."""
    from meta_study.store._lock import break_lease

    uri = _uri(request)
    a = Store(uri, lease_s=60, notify=None)
    _on_first_publish(monkeypatch, lambda: break_lease(Store(uri)._f.objects()))
    rows = validate(make_rows(3)).table
    with pytest.raises(StoreConflictError):
        a.commit_stream([(rows, None)])
    assert a._beat is None
    assert a.commit_stream([(rows, None)]).version == 1
    assert a._beat is None and Store(uri).lock_holder() is None


def test_a_heartbeat_outlives_an_unexpected_error(request, s3env, monkeypatch):
    """Any error of a renewal but an OSError ended the heartbeat thread without a word: the
    lease then expired under a writer that went on working, and the next writer took it over.
    Now the next beat tries again."""
    from meta_study.store._lock import _lease_lock

    uri = _uri(request)
    objects = Store(uri)._f.objects()
    plain = type(objects).replace
    calls: list[int] = []

    def flaky(self, rel, data, etag):   # noqa: ANN001
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug, not the network")
        return plain(self, rel, data, etag)

    monkeypatch.setattr(type(objects), "replace", flaky)
    with _lease_lock(objects, 5, uri, 1.0) as beat:   # a beat every 0.25 s
        deadline = time.monotonic() + 60
        while len(calls) < 3 and time.monotonic() < deadline:
            assert beat.is_alive(), "the heartbeat died on an unexpected error"
            time.sleep(0.05)
        assert len(calls) >= 3 and not beat.lost


# ---- mlflow_client: URIs in messages ---------------------------------------------------------


@pytest.mark.parametrize("uri, shown", [
    ("sqlite:////data/run#1/mlflow.db", "sqlite:////data/run#1/mlflow.db"),
    ("sqlite:///mlruns#2.db?mode=ro", "sqlite:///mlruns#2.db"),
    ("http://[::1]:5000", "http://[::1]:5000"),
    ("http://u:secret@[fe80::1]:5000/x?token=t#f", "http://[fe80::1]:5000/x"),
    ("https://u:secret@host/p?token=t", "https://host/p"),
    ("mlflow-sql:postgresql://u:pw@[::1]:5432/db", "mlflow-sql:postgresql://[::1]:5432/db"),
    ("http://[::1:5000", "http://[::1:5000"),
])
def test_shown_uri_names_what_the_user_typed_without_secrets(uri, shown):
    from meta_study.mlflow_client import shown_uri

    assert shown_uri(uri) == shown


@pytest.mark.parametrize("uri, shown", [
    ("sqlite:////data/run#1/mlflow.db", "sqlite:////data/run#1/mlflow.db"),
    ("http://[::1]:5000", "http://[::1]:5000"),
    ("sqlite:////data/my runs/mlflow.db", "sqlite:////data/my runs/mlflow.db"),
])
def test_a_deleted_experiments_restore_command_names_the_right_store(uri, shown):
    """The restore command the message gives named ``sqlite:////data/run`` (a database that is
    not the user's: the path cut at '#') or ``http://::1:5000`` (no server: brackets dropped)."""
    from types import SimpleNamespace

    from meta_study.mlflow_client import _refuse_deleted

    with pytest.raises(UserError) as e:
        _refuse_deleted(uri, SimpleNamespace(name="exp", experiment_id="7"))
    # the command pastes into a shell as it is: the URI quoted where it must be (a space in a path)
    assert f"MLFLOW_TRACKING_URI={shlex.quote(shown)} mlflow experiments restore --experiment-id 7" in str(e.value), str(e.value)
    assert f" at {shown} is deleted" in str(e.value)


def test_refused_credentials_name_an_ipv6_server_with_its_brackets():
    from meta_study.mlflow_client import refuse_credentials

    with pytest.raises(UserError) as e:
        refuse_credentials("http://ada:hunter2@[::1]:5000")
    line = str(e.value)
    assert line.startswith("--tracking-uri http://[::1]:5000: credentials") and "hunter2" not in line, line
