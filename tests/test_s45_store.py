"""Session 45 review of the store (meta_study/store/_store.py, _files.py): a repair never moves
files from outside the store through a link; a partition on another filesystem is committed to;
a store that lost its manifests is damage, never an empty store; what a repair moved is reported;
a bare (source, run_id) pair is refused, never unpacked; a directory named like a temporary
manifest does not stop every commit."""

from __future__ import annotations

import errno
import glob
import os

import pytest

from meta_study.errors import StoreDamagedError
from meta_study.store import Store
from meta_study.store import _files
from meta_study.validation import validate
from conftest import make_rows, one_error_line, run_cli


def _rows(n: int = 3, **kw):
    return validate(make_rows(n, **kw)).table


def _store(path) -> Store:
    s = Store(str(path), notify=None)
    s.commit(_rows(ds_tasks=("a", "b")))
    return s


def test_repair_sets_aside_a_link_to_a_directory_outside_never_the_files_behind_it(tmp_path):
    # Was: 'store check --repair' listed the files behind the link as untracked and moved each of
    # them, through the link, into the store's _damaged/: a user's own directory was emptied.
    s = _store(tmp_path / "st")
    outside = tmp_path / "mine"
    (outside / "sub").mkdir(parents=True)
    (outside / "notes.txt").write_text("x")
    (outside / "sub" / "b.csv").write_text("y")
    (tmp_path / "st" / "up" / "ext").symlink_to(outside)
    r = s.check()
    assert [(d.path, d.kind) for d in r.damage] == [("up/ext", "untracked")]
    assert "symbolic link" in r.damage[0].problem and "2 file(s)" in r.damage[0].problem
    r = s.check(repair=True)
    assert r.moved == ("_damaged/0000000002/up/ext",)
    assert (outside / "notes.txt").read_text() == "x" and (outside / "sub" / "b.csv").read_text() == "y"
    assert os.path.islink(tmp_path / "st" / "_damaged" / "0000000002" / "up" / "ext")
    assert s.check().ok and s.read().num_rows == 6


def test_a_stray_file_in_a_partition_linked_from_elsewhere_is_still_set_aside(tmp_path):
    # the link holds a live file: it is the store's, and only the stray file behind it goes
    s = _store(tmp_path / "st")
    (tmp_path / "st" / "up" / "a").rename(tmp_path / "disk2")
    (tmp_path / "st" / "up" / "a").symlink_to(tmp_path / "disk2")
    (tmp_path / "disk2" / "copy.parquet").write_bytes(b"x")
    r = s.check(repair=True)
    assert [d.path for d in r.damage] == ["up/a/copy.parquet"]
    assert not (tmp_path / "disk2" / "copy.parquet").exists() and s.check().ok and s.read().num_rows == 6


def _exdev_across(monkeypatch, linked: str) -> None:
    """``os.replace`` between ``linked`` (a partition on "another disk") and the rest of the store
    fails as the kernel's rename does across filesystems (EXDEV)."""
    real = os.replace

    def replace(src, dst, **kw):
        if (os.fspath(src).startswith(linked)) != (os.fspath(dst).startswith(linked)):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
        return real(src, dst, **kw)
    monkeypatch.setattr(os, "replace", replace)


def test_a_commit_into_a_partition_on_another_filesystem_is_finished(tmp_path, monkeypatch):
    # Was: its files could not be renamed into place (EXDEV); the commit said "the next command
    # finishes it", and every later commit and 'store check' failed with "Invalid cross-device link".
    root = tmp_path / "st"
    s = _store(root)
    (root / "up" / "a").rename(tmp_path / "disk2")
    (root / "up" / "a").symlink_to(tmp_path / "disk2")
    _exdev_across(monkeypatch, str(root / "up" / "a") + "/")
    notes: list[str] = []
    s.notify = notes.append
    df = make_rows(3, ds_tasks=("a",))
    df["ds_accuracy"] = df["ds_accuracy"] / 2
    assert s.commit(validate(df).table).updated == 3 and notes == []
    assert s.commit(_rows(1, source="z", ds_tasks=("a",))).version == 3 and notes == []
    assert s.check().ok and not glob.glob(str(root / "_staging" / "*"))
    assert sorted(os.listdir(tmp_path / "disk2")) == [os.path.basename(e["path"]) for e in s._load().data
                                                      if e["ds_task"] == "a"]
    t = s.read({"ds_task": "a", "source": "src"}).to_pandas()
    assert sorted(t["ds_accuracy"]) == sorted(df["ds_accuracy"])


def test_a_store_whose_manifests_are_all_gone_is_damage_not_an_empty_store(tmp_path):
    # Was: Store.read gave 0 rows and history() [] without a word; 'store info' and 'store check'
    # said "not a meta-study store (no _meta/manifests)" of a directory that is there.
    root = tmp_path / "st"
    s = _store(root)
    for f in glob.glob(str(root / "_meta" / "manifests" / "*")):
        os.unlink(f)
    for call in (s.read, s.history, s.check, s.summary, lambda: s.commit(_rows(1, source="z"))):
        with pytest.raises(StoreDamagedError, match=r"holds no manifest, but 2 file\(s\) of the store are here"):
            call()
    line = one_error_line(run_cli("store", "check", str(root), "--repair"), "restore")
    assert "_meta/manifests from a backup" in line
    assert len(glob.glob(str(root / "up" / "*" / "*.parquet"))) == 2 and not (root / "_damaged").exists()


def test_a_store_whose_first_commit_wrote_nothing_still_reads_as_empty(tmp_path):
    s = Store(str(tmp_path / "st"), notify=None)
    assert s.commit(None).version is None
    assert s.read().num_rows == 0 and s.history() == []


def test_repair_of_a_file_in_a_partition_directorys_place_reports_it_moved(tmp_path):
    # Was: the repair moved it to _damaged/ and said "nothing to move" (CheckResult.moved empty).
    root = tmp_path / "st"
    s = _store(root)
    os.mkfifo(root / "up" / "c")
    s.commit(_rows(1, source="z", ds_tasks=("c",)))   # committed; its file cannot be moved into place
    r = s.check(repair=True)
    assert [d.path for d in r.damage] == ["up/c"] and r.moved == ("_damaged/0000000003/up/c",)
    assert os.path.exists(root / r.moved[0]) and s.check().ok and s.read().num_rows == 7
    os.mkfifo(root / "up" / "d")
    s.commit(_rows(1, source="y", ds_tasks=("d",)))
    out = run_cli("store", "check", str(root), "--repair")
    assert out.returncode == 0 and "1 file(s) moved to _damaged/0000000005/" in out.stdout, out.stdout


@pytest.mark.parametrize("bad", [("s1", "r1"), ["ab"], "ab", [("src", "r0", "x")], [5]])
def test_delete_runs_not_given_as_pairs_is_refused_and_deletes_nothing(tmp_path, bad):
    # Was: one pair given bare, ("s1", "r1"), was unpacked as runs "1" of sources "s" and "r":
    # other runs deleted silently, the one meant kept.
    s = Store(str(tmp_path / "st"), notify=None)
    s.commit(_rows(2, source="s"))
    with pytest.raises(ValueError, match="delete_runs: .* (pair|pairs)"):
        s.commit(delete_runs=bad)
    with pytest.raises(ValueError, match="settle_quarantine: "):
        s.commit(settle_quarantine=bad)
    assert s.version == 1 and s.read().num_rows == 4
    assert s.commit(delete_runs=[("s", "r1")]).deleted == 2


def test_a_directory_named_like_a_temporary_manifest_does_not_stop_commits(tmp_path):
    # Was: garbage collection unlinked it (EISDIR) at every commit: each one failed, and so did
    # 'store check --repair'.
    root = tmp_path / "st"
    s = _store(root)
    (root / "_meta" / "manifests" / ".tmp-x" / "y").mkdir(parents=True)
    assert s.commit(_rows(1, source="z")).version == 2
    assert s.commit(_rows(1, source="y")).version == 3
    assert s.check().ok and not (root / "_meta" / "manifests" / ".tmp-x").exists()
    assert glob.glob(str(root / "_damaged" / "*" / "_meta" / "manifests" / ".tmp-x" / "y"))


def test_move_across_filesystems_never_opens_a_fifo(tmp_path):
    src, dst = tmp_path / "f", tmp_path / "g"
    os.mkfifo(src)
    err = OSError(errno.EXDEV, "Invalid cross-device link")
    with pytest.raises(OSError) as e:
        _files._move_across(str(src), str(dst), err)
    assert e.value is err and src.exists() and not dst.exists()


def test_a_staging_directory_that_cannot_be_opened_does_not_stop_commits(tmp_path, monkeypatch):
    # Was: garbage collection, unable to open it (EACCES: another user's, umask 077), unlinked it
    # as if it were a file: EISDIR, and every commit failed before staging anything.
    root = tmp_path / "st"
    s = _store(root)
    orphan = root / "_staging" / "orphan-1"
    orphan.mkdir(parents=True)
    (orphan / "f").write_bytes(b"x")
    real = os.open

    def fake_open(path, flags, *a, **kw):
        if os.fspath(path) == str(orphan):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", fake_open)
    real_rmtree = _files._Files.rmtree   # nor listed, so not removed (its errors are ignored)
    monkeypatch.setattr(_files._Files, "rmtree",
                        lambda self, rel: None if self.p(rel) == str(orphan) else real_rmtree(self, rel))
    assert s.commit(_rows(1, source="z")).version == 2 and orphan.is_dir()   # kept, never unlinked
    monkeypatch.undo()
    assert s.check().ok and s.read().num_rows == 8


@pytest.mark.parametrize("bad", ["up", ["up"], 5])
def test_filters_that_are_not_a_mapping_are_one_line(tmp_path, bad):
    # Was: s.read("up") (a task given where the filters go) was an AttributeError traceback.
    from meta_study.errors import UserError

    s = _store(tmp_path / "st")
    with pytest.raises(UserError, match="^filters: .*not a mapping of columns to values"):
        s.read(bad)
    assert s.read({"us_task": "up"}).num_rows == 6


def test_a_link_to_a_directory_above_the_store_is_never_walked(tmp_path):
    # Was: every commit and check listed everything below the store's parent through the link
    # (a link to / listed the whole filesystem: a hang), and the store itself a second time.
    root = tmp_path / "st"
    s = _store(root)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    (root / "up" / "p").symlink_to("../..")
    (root / "up" / "a" / "q").symlink_to(root)
    sizes = s._f.sizes()
    assert sizes["up/p"] == -1 and sizes["up/a/q"] == -1
    assert not [r for r in sizes if r.startswith(("up/p/", "up/a/q/"))]
    assert s.commit(_rows(1, source="z")).version == 2
    r = s.check(repair=True)
    assert sorted(d.path for d in r.damage) == ["up/a/q", "up/p"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x" and s.check().ok and s.read().num_rows == 8


def test_commit_arguments_of_another_type_are_named(tmp_path):
    # Was: AttributeError tracebacks ("'DataFrame' object has no attribute 'num_rows'", "... 'schema'",
    # "'list' object has no attribute 'columns'") that named no argument.
    import pandas as pd

    s = _store(tmp_path / "st")
    df = make_rows(1, source="q")
    with pytest.raises(TypeError, match="^upserts: a pyarrow Table .* not a DataFrame"):
        s.commit(df)
    with pytest.raises(TypeError, match=r"^state\['x'\]: a pyarrow Table, not a DataFrame"):
        s.commit(state={"x": pd.DataFrame({"a": [1]})})
    with pytest.raises(TypeError, match="^quarantine: .* not a list"):
        s.commit(quarantine=[{"source": "s", "run_id": "r", "reason": "x", "raw": "{}"}])
    assert s.version == 1
    assert s.commit(validate(df).table, quarantine=pd.DataFrame({"source": ["s"], "reason": ["x"], "raw": ["{}"]}),
                    state={"x": validate(df).table.select(["run_id"])}).version == 2
