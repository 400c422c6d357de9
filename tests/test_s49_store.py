"""Review s49 of the store (``meta_study/store/``): what ``store check --repair`` sets aside is never
lost or left in place: a file where ``_damaged/`` goes is one line before anything changes; an S3
object whose key ends in '/' keeps its bytes under ``_damaged/``; a rollback repair killed after its
commit point is finished by the next command, its rolled-back versions' files set aside, not
collected. Manifest and staging names that only look numeric (``5.json``, Arabic-Indic or
superscript digits) are not the store's and are ignored. Small real stores in tmp dirs, and a real
S3 API on 127.0.0.1 (``tests/s3_server.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_rows, one_error_line, run_cli
from meta_study.errors import StoreDamagedError
from meta_study.store import Store
from meta_study.validation import validate
from store_writer import batch_rows


class _Killed(BaseException):
    """A writer killed at this point (in-process: nothing after it runs, no handler catches it)."""


def _damaged_store(root: Path) -> tuple[Store, Path]:
    """A store of one version whose first data file is corrupt; (store, that file)."""
    s = Store(str(root), notify=None)
    s.commit(validate(make_rows(3)).table)
    bad = sorted(root.glob("up/*/*.parquet"))[0]
    with open(bad, "r+b") as f:
        f.write(b"XXXX")
    return s, bad


# ---- 1: something that is not a directory where --repair sets files aside ----------------------


@pytest.mark.parametrize("blocker", ["_damaged", "_damaged/0000000002"])
def test_repair_with_a_file_where_damaged_files_go_is_one_line_and_changes_nothing(tmp_path, blocker):
    """A file named ``_damaged`` in the store's root: ``--repair`` committed version 2 (the rows
    dropped), then failed with a traceback ("[Errno 20] Not a directory"), the damaged file left in
    its partition, and every later command, ingest and ``store check`` included, failed the same
    way (exit 1). Now one line naming it, before anything changes; once it is moved, the repair
    runs."""
    root = tmp_path / "st"
    _, bad = _damaged_store(root)
    body = bad.read_bytes()
    (root / blocker).parent.mkdir(parents=True, exist_ok=True)
    (root / blocker).write_text("someone's notes")
    one_error_line(run_cli("store", "check", "--repair", str(root)), f"{blocker}: is a file, not a directory",
                   "sets damaged files aside")
    assert Store(str(root)).version == 1 and bad.read_bytes() == body
    (root / blocker).rename(tmp_path / "notes")
    r = run_cli("store", "check", "--repair", str(root))
    assert r.returncode == 0, r.stderr
    assert (root / "_damaged/0000000002" / bad.relative_to(root)).read_bytes() == body
    assert run_cli("store", "check", str(root)).returncode == 0


def test_a_commit_that_must_set_a_file_aside_with_damaged_a_file_is_one_line(tmp_path, monkeypatch):
    """A commit finishing a version whose file's place holds a directory sets that aside under
    ``_damaged/``; with a file named ``_damaged`` there, every commit failed with a bare
    ``NotADirectoryError`` (exit 1, "[Errno 20]"), naming neither the cause nor what to do."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(batch_rows("w", 0, 2))
    real = Store._finalize

    def killed(self, m):  # noqa: ANN001
        if m.version == 2:   # killed past version 2's commit point (the commit finishes version 1 first)
            raise _Killed
        real(self, m)

    monkeypatch.setattr(Store, "_finalize", killed)
    with pytest.raises(_Killed):
        s.commit(batch_rows("w", 1, 2))   # version 2 published, its files still staged
    monkeypatch.setattr(Store, "_finalize", real)
    m = s._load()
    still = s._still_staged(m)
    new = next(e["path"] for e in m.live_files() if e.get("staged") in still)
    (root / new).mkdir(parents=True)   # a directory where one of its files goes
    (root / "_damaged").write_text("x")
    with pytest.raises(StoreDamagedError, match=r"/_damaged: is a file, not a directory, where the store sets"):
        Store(str(root), notify=None).commit(batch_rows("w", 2, 1))
    (root / "_damaged").unlink()
    Store(str(root), notify=None).commit(batch_rows("w", 2, 1))
    assert (root / "_damaged/0000000002" / new).is_dir()
    assert len(Store(str(root)).read()) == (2 + 2 + 1) * 2


# ---- 1 (S3): a damaged file under a key ending in '/' ---------------------------------------------


@pytest.mark.slow(20)   # the S3 server
@pytest.mark.parametrize("where", ["data", "untracked"])
def test_s3_repair_keeps_the_bytes_of_a_key_ending_in_a_slash(request, s3, s3env, where):
    """pyarrow takes an object whose key ends in '/' for a directory: a data file written under
    ``up/a/part-...parquet/`` (a tool that appended a slash), or a stray ``up/a/notes/`` holding
    bytes, was damage that ``--repair`` reported "moved to _damaged/", while the delete of the
    "empty directory" deleted it, bytes and all. Its bytes are now under ``_damaged/``."""
    prefix = request.node.name.replace("[", "-").replace("]", "")
    uri = f"s3://lab/{prefix}"
    s = Store(uri, notify=None)
    s.commit(validate(make_rows(3)).table)
    c = s3.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="lab", Prefix=f"{prefix}/up/")["Contents"]]
    data = sorted(k for k in keys if k.endswith(".parquet"))[0]
    body = c.get_object(Bucket="lab", Key=data)["Body"].read()
    if where == "data":
        c.delete_object(Bucket="lab", Key=data)
        rel = data[len(prefix) + 1:]
    else:
        rel = data[len(prefix) + 1:].rsplit("/", 1)[0] + "/notes"
        body = b"precious notes"
    c.put_object(Bucket="lab", Key=f"{prefix}/{rel}/", Body=body)
    r = Store(uri, notify=None).check(repair=True)
    # the stray object is named by its key (pyarrow lists it as a file 'up/a/notes')
    assert [d.path for d in r.damage] == [rel if where == "data" else f"{rel}/"] and r.repaired_version == 2, r
    assert r.moved == (f"_damaged/0000000002/{rel}",)
    got = c.get_object(Bucket="lab", Key=f"{prefix}/_damaged/0000000002/{rel}")["Body"].read()
    assert got == body
    assert Store(uri, notify=None).check().ok


# ---- 2: a rollback repair killed after its commit point ---------------------------------------------


def test_a_rollback_repair_killed_after_its_commit_point_keeps_what_it_had_to_set_aside(tmp_path, monkeypatch):
    """A repair that rolls back over a damaged version moves that version's files (its manifests,
    and its staged files: the only copy of its rows when its writer died past its commit point) to
    ``_damaged/`` after its own commit point. Killed in between, the next commit's garbage
    collection deleted the staging directory (a decided version) and later pruned the damaged
    manifests. Whoever finishes the repair's version now sets them aside first."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(batch_rows("w", 0, 3))
    real_finalize, real_publish = Store._finalize, Store._publish

    def killed(self, m):  # noqa: ANN001
        if m.version == 2:   # killed past version 2's commit point (the commit finishes version 1 first)
            raise _Killed
        real_finalize(self, m)

    monkeypatch.setattr(Store, "_finalize", killed)
    with pytest.raises(_Killed):
        s.commit(batch_rows("w", 1, 2))   # version 2 published, its files still staged
    monkeypatch.setattr(Store, "_finalize", real_finalize)
    staged = sorted(p.name for p in (root / "_staging").iterdir())
    assert len(staged) == 1 and staged[0].startswith("0000000002-")
    staged_files = sorted(p.relative_to(root) for p in (root / "_staging").rglob("*.parquet"))
    bodies = {p: (root / p).read_bytes() for p in staged_files}
    assert len(staged_files) == 2
    for rel in ("_meta/manifests/0000000002.json", "_meta/manifests/0000000002.copy.json"):
        (root / rel).write_bytes(b"{")   # both damaged: the repair rolls back to version 1

    def publish_then_die(self, m, txn):  # noqa: ANN001
        real_publish(self, m, txn)
        raise _Killed

    monkeypatch.setattr(Store, "_publish", publish_then_die)
    with pytest.raises(_Killed):
        Store(str(root), notify=None).check(repair=True)
    monkeypatch.setattr(Store, "_publish", real_publish)
    assert Store(str(root)).version == 3
    Store(str(root), notify=None).commit(batch_rows("w", 5, 1))   # finishes version 3, then collects garbage
    aside = root / "_damaged/0000000003"
    for p in staged_files:
        assert (aside / p).read_bytes() == bodies[p], sorted(aside.rglob("*"))
    for rel in ("_meta/manifests/0000000002.json", "_meta/manifests/0000000002.copy.json"):
        assert (aside / rel).read_bytes() == b"{"
        assert not (root / rel).exists()
    assert not (root / "_staging" / staged[0]).exists()
    assert Store(str(root)).check().ok and len(Store(str(root)).read()) == (3 + 1) * 2


def test_an_unfinished_rollback_repair_is_pending_until_a_command_finishes_it(tmp_path, monkeypatch):
    """Until then the store is unfinished (a read-only ``store check`` says so, and every command
    that can take the lock finishes it), as any commit killed past its commit point is."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(batch_rows("w", 0, 2))
    s.commit(batch_rows("w", 1, 2))
    (root / "_meta/manifests/0000000002.json").write_bytes(b"{")
    (root / "_meta/manifests/0000000002.copy.json").write_bytes(b"{")
    real_publish = Store._publish

    def publish_then_die(self, m, txn):  # noqa: ANN001
        real_publish(self, m, txn)
        raise _Killed

    monkeypatch.setattr(Store, "_publish", publish_then_die)
    with pytest.raises(_Killed):
        Store(str(root), notify=None).check(repair=True)
    monkeypatch.setattr(Store, "_publish", real_publish)
    again = Store(str(root), notify=None)
    assert again._pending(again._load())
    again.recover()
    assert (root / "_damaged/0000000003/_meta/manifests/0000000002.json").read_bytes() == b"{"
    assert not again._pending(again._load())


# ---- 3: names that only look like a version -------------------------------------------------------


@pytest.mark.parametrize("name", ["\u0660" * 9 + "\u0663.json", "\u00b2.json", "5.json", "\u0663.copy.json",
                                  "00000000012.json"])
def test_a_manifest_name_that_only_looks_numeric_is_ignored(tmp_path, name):
    """``٠٠٠٠٠٠٠٠٠٣.json`` (Arabic-Indic digits, which ``isdigit`` and ``int`` accept) or ``5.json``
    was taken for the latest version, whose manifest ``0000000003.json`` does not exist: every
    command failed "the store's latest manifest was replaced under each of 50 reads" (after 0.5 s
    of retries), and ``².json`` was a traceback (``int('²')``). The store names its manifests with
    ten ASCII digits; anything else there is not its own."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(validate(make_rows(2)).table)
    (root / "_meta/manifests" / name).write_text("{}")
    assert Store(str(root)).version == 1 and len(Store(str(root)).read()) == 4
    assert run_cli("store", "check", str(root)).returncode == 0
    assert Store(str(root), notify=None).commit(validate(make_rows(3)).table).version == 2


def test_a_staging_directory_named_with_a_superscript_digit_does_not_break_commits(tmp_path):
    """Garbage collection read ``²-abc`` under ``_staging/`` as version '²': ``int`` raised, and
    every commit failed with a traceback after its commit point."""
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    s.commit(validate(make_rows(2)).table)
    (root / "_staging" / "\u00b2-abc").mkdir(parents=True)
    r = Store(str(root), notify=None).commit(validate(make_rows(3)).table)
    assert r.version == 2 and Store(str(root)).check().ok
