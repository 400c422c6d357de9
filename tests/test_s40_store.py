"""Session 40 review of the store (meta_study/store/_store.py, _merge.py, _manifest.py, _files.py):
a rollback repair keeps a damaged version's staged rows, and a filter on a map column is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meta_study.errors import UserError
from meta_study.store import Store
from meta_study.validation import validate
from conftest import make_rows
from store_writer import batch_rows

HERE = Path(__file__).parent


def _kill_at(failpoint: str, root: str) -> None:
    """Run one commit of tests/store_writer.py into ``root`` and SIGKILL it at ``failpoint``."""
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "META_STUDY_FAILPOINT": failpoint}
    p = subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), root, "x", "1", "2"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if f"failpoint {failpoint}" in line:
                break
        else:
            raise AssertionError(f"the writer exited ({p.wait()}) before failpoint {failpoint}")
    finally:
        p.kill()
        p.wait()


@pytest.mark.slow(15)   # a writer subprocess, killed on purpose
def test_a_rollback_sets_aside_the_staged_files_of_the_version_it_drops(tmp_path):
    """A writer killed past its commit point leaves its version's files staged; when that version's
    manifest and copy are then both damaged, `store check --repair` rolls back over it. Its staged
    files are files only the damaged manifest listed: they go to _damaged/ like the same files
    already in place would, never deleted (the next commit's garbage collection deleted them)."""
    root = str(tmp_path / "st")
    s = Store(root, notify=None)
    s.commit(batch_rows("w", 0, 3))
    _kill_at("after_publish", root)
    staged = sorted(os.listdir(os.path.join(root, "_staging")))
    assert len(staged) == 1 and staged[0].startswith("0000000002-")
    for rel in ("_meta/manifests/0000000002.json", "_meta/manifests/0000000002.copy.json"):
        Path(root, rel).write_bytes(b"{")
    r = Store(root, notify=None).check(repair=True)
    assert (r.rolled_back_to, r.repaired_version) == (1, 3)
    aside = [p for p in r.moved if p.startswith(f"_damaged/0000000003/_staging/{staged[0]}/up/")]
    assert len(aside) == 2 and all(p.endswith(".parquet") for p in aside), r.moved
    s.commit(batch_rows("w", 5, 1))   # its garbage collection deletes staging of decided versions
    kept = sorted(str(p.relative_to(tmp_path / "st" / "_damaged")) for p in (tmp_path / "st" / "_damaged").rglob("*.parquet"))
    assert len(kept) == 2 and all(k.startswith(f"0000000003/_staging/{staged[0]}/up/") for k in kept), kept
    assert Store(root).check().ok and len(s.read()) == 3 * 2 + 2


def test_a_filter_on_the_map_column_is_one_line(tmp_path):
    s = Store(str(tmp_path / "st"))
    s.commit(validate(make_rows(2)).table)
    for value in ({"note": "run 1"}, [[("note", "run 1")]]):
        with pytest.raises(UserError, match=r"^filter on extra: .*cannot be filtered on"):
            s.read({"extra": value})


class _SupersededAfterOpen:
    """A pyarrow filesystem that runs ``hook`` (another writer's commit) right after it opens the
    first data file: between the HEAD of the open and the GET of the read, as a real race does."""

    def __init__(self, fs, hook) -> None:  # noqa: ANN001
        self._fs, self._hook = fs, hook

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._fs, name)

    def open_input_file(self, path: str):  # noqa: ANN201
        f = self._fs.open_input_file(path)
        if self._hook is not None and path.endswith(".parquet"):
            hook, self._hook = self._hook, None
            hook()
        return f


@pytest.mark.slow(20)   # the S3 server
def test_an_s3_read_racing_a_commit_that_deletes_its_file_reads_the_new_version(request, s3env):
    """A reader on S3 whose data file was superseded (deleted by a writer's commit) after it opened
    it failed with "OSError: AWS Error NO_SUCH_KEY during GetObject" instead of reading the newer
    version, as it does when the file is gone before the open."""
    uri = f"s3://lab/{request.node.name}"
    writer = Store(uri, notify=None)
    writer.commit(validate(make_rows(2, ds_tasks=("a",))).table)
    changed = make_rows(2, ds_tasks=("a",))
    changed["ds_accuracy"] = 0.25
    reader = Store(uri, notify=None)
    reader._f.fs = _SupersededAfterOpen(reader._f.fs, lambda: writer.commit(validate(changed).table))
    # pyarrow's read (HEAD, then GET), as where boto3 is missing: with boto3 a read is one GET, whose
    # race test_s53_s3 checks (the hook above is pyarrow's open, which that read never calls)
    reader._f._s3_read = lambda rel, size, limit: None
    df = reader.to_pandas()
    assert writer.version == 2 and sorted(df["ds_accuracy"]) == [0.25, 0.25]


def test_recover_of_a_location_without_a_store_is_one_line_and_makes_nothing(tmp_path):
    with pytest.raises(UserError, match="no such store"):
        Store(str(tmp_path / "typo")).recover()
    assert not (tmp_path / "typo").exists()
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError, match="not a meta-study store"):
        Store(str(tmp_path / "notes")).recover()
    assert list((tmp_path / "notes").iterdir()) == []
