"""Review s39 of the store's files layer (meta_study/store/_files.py, _merge.py, _manifest.py)."""

from __future__ import annotations

import errno
import os

import pytest

from meta_study.errors import UserError
from meta_study.store import Store
from meta_study.store._files import _Files, _resolve
from store_writer import batch_rows


def _files(root) -> _Files:
    fs, path, local = _resolve(str(root))
    return _Files(fs, path, local, str(root), str(root))


def _no_links(monkeypatch, code: int) -> None:
    def link(src, dst, *a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV])
def test_commits_on_a_mount_without_hard_links(tmp_path, monkeypatch, code):
    """The commit point hard-links the manifest into place; on a mount without hard links (gcsfuse,
    some SMB/FUSE and container volumes) every commit failed: EPERM as "permission denied" of a
    writable store, ENOTSUP as a raw OSError. Now the name is claimed with O_EXCL and the whole
    manifest renamed over the claim: commits succeed, upserts replace rows, the store checks clean."""
    _no_links(monkeypatch, code)
    root = tmp_path / "st"
    s = Store(str(root), notify=None)
    first = batch_rows("w", 0, 3)
    assert s.commit(first, operation="test").version == 1
    assert s.commit(batch_rows("w", 0, 3, bump=0.5), operation="test").version == 2
    assert s.commit(batch_rows("w", 1, 2), operation="test").version == 3
    assert s.read().num_rows == first.num_rows + batch_rows("w", 1, 2).num_rows
    assert s.check().ok
    names = os.listdir(root / "_meta" / "manifests")
    assert not [n for n in names if n.startswith(".tmp")], names
    assert "0000000003.json" in names and "0000000003.copy.json" in names


def test_without_hard_links_the_create_stays_exclusive(tmp_path, monkeypatch):
    """The fallback keeps the commit point's guarantee: a name that exists is never replaced."""
    _no_links(monkeypatch, errno.EPERM)
    f = _files(tmp_path)
    assert f.create_exclusive("m/1.json", b"first", "m/.tmp-a") is True
    assert f.create_exclusive("m/1.json", b"second", "m/.tmp-b") is False
    assert (tmp_path / "m" / "1.json").read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path / "m")) == ["1.json"]


def test_without_hard_links_racing_creates_have_one_winner(tmp_path, monkeypatch):
    """Of writers racing for one name without hard links, exactly one wins, and the file holds its
    bytes whole (never another's, never empty)."""
    from concurrent.futures import ThreadPoolExecutor

    _no_links(monkeypatch, errno.EOPNOTSUPP)
    f = _files(tmp_path)
    f.mkdirs("m")
    for round_ in range(5):
        payload = {i: f"writer {i} ".encode() * 200 for i in range(6)}
        with ThreadPoolExecutor(6) as pool:
            won = list(pool.map(lambda i: f.create_exclusive(f"m/{round_}.json", payload[i], f"m/.tmp-{round_}-{i}"),
                                range(6)))
        assert won.count(True) == 1, won
        assert (tmp_path / "m" / f"{round_}.json").read_bytes() == payload[won.index(True)]
    assert not [n for n in os.listdir(tmp_path / "m") if n.startswith(".tmp")]


def test_without_hard_links_a_failed_rename_frees_the_name(tmp_path, monkeypatch):
    """If the rename over the claim fails, no empty claim is left at the name (every reader would
    call it a damaged manifest), nor the temporary file."""
    _no_links(monkeypatch, errno.EPERM)

    def replace(src, dst, *a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", replace)
    f = _files(tmp_path)
    with pytest.raises(OSError):
        f.create_exclusive("m/1.json", b"data", "m/.tmp-a")
    assert os.listdir(tmp_path / "m") == []


def test_a_real_permission_error_is_not_taken_for_missing_hard_links(tmp_path, monkeypatch):
    """EACCES from link is a permission error, not a mount without hard links: the commit is rolled
    back in one line, as before, and no manifest appears."""
    _no_links(monkeypatch, errno.EACCES)
    root = tmp_path / "st"
    with pytest.raises(UserError, match="permission denied"):
        Store(str(root), notify=None).commit(batch_rows("w", 0, 2), operation="test")
    assert not Store(str(root)).exists()


def test_a_temporary_write_cut_short_is_removed(tmp_path, monkeypatch):
    """A manifest's temporary file whose write fails (ENOSPC at fsync) was left behind: the copy's
    failure is suppressed at publish and nothing removed '.tmp-copy-<txn>'."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    f = _files(tmp_path)
    with pytest.raises(OSError):
        f.create_exclusive("m/1.copy.json", b"data", "m/.tmp-copy-x")
    assert os.listdir(tmp_path / "m") == []


def _format1(tmp_path):
    from test_store_plain_readers import _format1_store, _rows

    root = tmp_path / "st"
    _format1_store(root, _rows())
    return root, root / "_meta" / "manifests" / "0000000001.json"


@pytest.mark.parametrize("garble", ["key path", "key us_task", "staged list", "data string", "state int",
                                    "pending int", "log int"])
def test_a_garbled_format1_manifest_is_named_damage_not_a_traceback(tmp_path, garble):
    """A format-1 manifest has no checksum: a flipped bit in a key, or a value of another type, still
    parsed, and 'store check', 'store info' and every read ended in a KeyError, TypeError or
    AttributeError traceback. Now it is a damaged manifest in one line (StoreDamagedError)."""
    import json

    from meta_study.errors import StoreDamagedError

    root, mp = _format1(tmp_path)
    d = json.loads(mp.read_text())
    if garble.startswith("key "):
        k = garble[4:]
        d["data"][0]["x" + k] = d["data"][0].pop(k)
    elif garble == "staged list":
        d["data"][0]["staged"] = ["x"]
    elif garble == "data string":
        d["data"] = "abc"
    elif garble == "state int":
        d["state"] = {"a": 5}
    elif garble == "pending int":
        d["pending_delete"] = [5]
    else:
        d["log"] = [5]
    mp.write_text(json.dumps(d))
    s = Store(str(root), notify=None)
    with pytest.raises(StoreDamagedError, match="damaged manifest: garbles"):
        s.read()
    with pytest.raises(StoreDamagedError, match="damaged manifest: garbles"):
        s.check()


def test_an_intact_format1_manifest_still_reads(tmp_path):
    root, _ = _format1(tmp_path)
    assert Store(str(root)).read().num_rows > 0
