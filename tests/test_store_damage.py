"""A damaged store is detected and named in one line; ``store check`` finds it, ``--repair`` recovers."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from meta_study.errors import StoreDamagedError
from meta_study.validation import validate
from meta_study.store import Store, partition_dir
from conftest import make_rows, one_error_line, run_cli


def _csv(path: Path, *, source_rows: int = 6, ds_tasks=("a", "b"), seed: int = 0, bad: int = 0) -> Path:
    df = make_rows(source_rows, ds_tasks=ds_tasks, seed=seed, run_prefix=path.stem + "-").drop(columns=["extra"])
    if bad:  # rows that go to quarantine
        df.loc[: bad - 1, "ds_accuracy"] = 7.5
    df.to_csv(path, index=False)
    return path


def _ingested(tmp_path: Path, *, bad: int = 0) -> tuple[str, Path]:
    store = str(tmp_path / "st")
    src = _csv(tmp_path / "x.csv", bad=bad)
    r = run_cli("ingest", str(src), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    return store, src



def _part_file(store: str, ds: str) -> Path:
    (f,) = (Path(store) / partition_dir("up", ds)).glob("part-*.parquet")
    return f


def _truncate(f: Path, keep: int = 0) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: keep or len(data) // 2])


def test_truncated_partition_is_named_everywhere_and_repaired(tmp_path):
    store, src = _ingested(tmp_path)
    before = Store(store).to_pandas()
    f = _part_file(store, "a")
    rel = f.relative_to(store).as_posix()
    _truncate(f)

    one_error_line(run_cli("store", "info", store), rel, "damaged store file", "store check")
    one_error_line(run_cli("fit", store, "--out", str(tmp_path / "fit")), rel, "damaged store file")
    # an ingest that touches the damaged partition, and one into another partition: both refuse
    one_error_line(run_cli("ingest", str(src), "--store", store, "--quiet"), rel)
    other = _csv(tmp_path / "y.csv", ds_tasks=("c",))
    one_error_line(run_cli("ingest", str(other), "--store", store, "--quiet"), rel)
    assert not (Path(store) / partition_dir("up", "c")).exists(), "an ingest built on a damaged version"

    r = run_cli("store", "check", store)
    assert r.returncode == 1, r.stderr
    assert f"damaged: {rel} (data, 6 rows)" in r.stderr and "--repair" in r.stderr

    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0, r.stderr
    assert "6 rows dropped" in r.stdout
    aside = list((Path(store) / "_damaged").rglob("part-*.parquet"))
    assert [p.name for p in aside] == [f.name], "the damaged file is kept, set aside"
    assert run_cli("store", "check", store).returncode == 0
    assert len(Store(store).to_pandas()) == len(before) - 6
    # plain readers agree with the store after the repair
    assert len(pd.read_parquet(store)) == len(before) - 6

    # re-ingesting the source restores the lost rows
    r = run_cli("ingest", str(src), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "6 new" in r.stdout
    after = Store(store).to_pandas()
    cols = ["run_id", "ds_task", "ds_accuracy"]
    pd.testing.assert_frame_equal(after[cols].sort_values(cols).reset_index(drop=True),
                                  before[cols].sort_values(cols).reset_index(drop=True))


def test_deleted_partition_is_missing_not_a_retry_loop(tmp_path):
    store, _ = _ingested(tmp_path)
    f = _part_file(store, "b")
    f.unlink()
    with pytest.raises(StoreDamagedError, match="missing"):
        Store(store).read()
    one_error_line(run_cli("store", "info", store), f.relative_to(store).as_posix(), "missing")
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "missing" in r.stderr


def test_truncated_quarantine_file(tmp_path):
    store, src = _ingested(tmp_path, bad=2)
    (q,) = (Path(store) / "_quarantine").glob("*.parquet")
    _truncate(q)
    rel = q.relative_to(store).as_posix()
    one_error_line(run_cli("store", "quarantine", store), rel, "damaged store file")
    again = _csv(tmp_path / "z.csv", bad=1, seed=3)
    one_error_line(run_cli("ingest", str(again), "--store", store, "--quiet"), rel)
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0 and "(quarantine, 2 rows)" in r.stdout, r.stdout + r.stderr
    # quarantined rows were lost, so every ingest state was reset: re-ingesting rebuilds them
    r = run_cli("ingest", str(src), str(again), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(Store(store).quarantine()) == 3


def test_same_size_corruption_found_by_checksum(tmp_path):
    store, _ = _ingested(tmp_path)
    f = _part_file(store, "a")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF       # one flipped byte: same size
    f.write_bytes(bytes(data))
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "sha256" in r.stderr, r.stderr


def _flip_that_still_decodes(f: Path) -> int:
    """Flip one byte of ``f`` such that Parquet still decodes it, to other values or to nulls
    where none may be (what a careless reader takes for data); the offset flipped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meta_study.schema import FILE_SCHEMA

    data = f.read_bytes()
    good = pq.read_table(pa.BufferReader(data))
    for off in range(len(data) // 4, len(data) - 8):
        d = bytearray(data)
        d[off] ^= 0xFF
        try:
            t = pq.read_table(pa.BufferReader(bytes(d)))
            if t.equals(good):
                continue
            with contextlib.suppress(pa.ArrowException):
                t.select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
        except (pa.ArrowException, OSError):
            continue
        f.write_bytes(bytes(d))
        return off
    raise AssertionError("no flip that still decodes")


def test_same_size_flip_that_decodes_is_one_line_damage_for_every_reader(tmp_path):
    store, src = _ingested(tmp_path)
    f = _part_file(store, "a")
    rel = f.relative_to(store).as_posix()
    _flip_that_still_decodes(f)
    with pytest.raises(StoreDamagedError, match="sha256"):
        Store(store).read()
    more = _csv(tmp_path / "y.csv", seed=5)   # an ingest that merges into the damaged partition
    for args in (("fit", store, "--out", str(tmp_path / "fit")), ("store", "info", store),
                 ("ingest", str(more), "--store", store, "--quiet")):
        one_error_line(run_cli(*args), rel, "damaged store file", "sha256", "store check")
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0 and "6 rows dropped" in r.stdout, r.stdout + r.stderr
    assert run_cli("ingest", str(src), "--store", store, "--quiet").returncode == 0
    assert len(Store(store).to_pandas()) == 12 and run_cli("store", "check", store).returncode == 0


def _manifest(store: str, v: int, copy: bool = False) -> Path:
    return Path(store) / "_meta" / "manifests" / f"{v:010d}{'.copy' if copy else ''}.json"


def test_truncated_manifest_is_read_from_its_copy_and_restored(tmp_path):
    store, src = _ingested(tmp_path)
    before = Store(store).to_pandas()
    v = Store(store).version
    _truncate(_manifest(store, v))
    assert run_cli("store", "info", store).returncode == 0          # the copy stands in
    pd.testing.assert_frame_equal(Store(store).to_pandas(), before)
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "(manifest)" in r.stderr and "its copy is intact" in r.stderr, r.stderr
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0 and "restored from its intact copy" in r.stdout, r.stdout + r.stderr
    assert _manifest(store, v).read_bytes() == _manifest(store, v, copy=True).read_bytes()
    assert run_cli("store", "check", store).returncode == 0
    pd.testing.assert_frame_equal(Store(store).to_pandas(), before)


@pytest.mark.slow(12)
def test_truncated_manifest_without_copy_rolls_back_to_the_last_good_version(tmp_path):
    store, src = _ingested(tmp_path)
    first = Store(store).to_pandas()
    more = _csv(tmp_path / "more.csv", seed=4)
    assert run_cli("ingest", str(more), "--store", store, "--quiet").returncode == 0
    v = Store(store).version
    _truncate(_manifest(store, v))
    _manifest(store, v, copy=True).unlink(missing_ok=True)
    for args in (("store", "info", store), ("fit", store, "--out", str(tmp_path / "fit")),
                 ("ingest", str(src), "--store", store, "--quiet")):
        one_error_line(run_cli(*args), f"{v:010d}.json", "damaged manifest", "store check --repair", "rolls the store back")
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "(manifest)" in r.stderr and f"newest intact manifest is version {v - 1}" in r.stderr
    r = run_cli("store", "check", "--repair", store)
    assert r.returncode == 0 and f"rolled back from damaged version {v} to version {v - 1}" in r.stdout, r.stdout + r.stderr
    # what the damaged version added is gone and cannot be counted: never "0 rows dropped"
    assert "0 rows dropped" not in r.stdout and "besides what the damaged versions added (not counted" in r.stdout
    assert run_cli("store", "check", store).returncode == 0
    cols = ["run_id", "ds_task", "ds_accuracy"]
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas())       # plain readers agree
    # the rollback reset ingest state: re-ingesting both sources restores everything
    assert run_cli("ingest", str(src), str(more), "--store", store, "--quiet").returncode == 0
    after = Store(store).to_pandas()
    assert len(after) == len(first) + 12 and not after.duplicated(cols[:2] + ["source"]).any()
    assert run_cli("store", "check", store).returncode == 0


@pytest.fixture
def read_only_view(tmp_path):
    """A read-only bind mount of a directory (needs root, as on the CI machine)."""
    import subprocess

    views = []

    def make(src: str) -> str:
        dst = tmp_path / f"ro{len(views)}"
        dst.mkdir()
        for cmd in (["mount", "--bind", src, str(dst)], ["mount", "-o", "remount,ro,bind", str(dst)]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", str(dst)], capture_output=True)
                pytest.skip(f"cannot make a read-only bind mount here: {r.stderr.strip()}")
        views.append(dst)
        return str(dst)
    yield make
    for d in views:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_read_only_store_with_an_unfinished_commit_says_so(tmp_path, read_only_view):
    from test_store_crash import _wait_for, _writer
    import signal

    store, _ = _ingested(tmp_path)
    p = _writer(store, "w", 1, 5, env={"META_STUDY_FAILPOINT": "after_publish"})
    _wait_for(p, "failpoint after_publish")
    p.send_signal(signal.SIGKILL)
    p.wait()
    ro = read_only_view(store)
    assert len(pd.read_parquet(ro)) != len(Store(ro).to_pandas())   # plain readers see the old version
    r = run_cli("store", "check", ro)
    assert r.returncode == 1 and "unfinished" in r.stderr and "plain Parquet readers" in r.stderr, r.stdout + r.stderr
    assert "no damage" not in r.stdout
    r = run_cli("store", "info", ro)
    assert r.returncode == 0 and "could not be finished" in r.stdout
    assert run_cli("store", "check", store).returncode == 0               # with write access it is finished
    assert run_cli("store", "check", ro).returncode == 0


def test_stray_file_that_plain_readers_would_read(tmp_path):
    store, _ = _ingested(tmp_path)
    n = len(Store(store).to_pandas())
    stray = _part_file(store, "a").with_name("part-copy.parquet")
    stray.write_bytes(_part_file(store, "a").read_bytes())
    assert len(pd.read_parquet(store)) == n + 6          # what a plain reader sees
    r = run_cli("store", "check", store)
    assert r.returncode == 1 and "untracked" in r.stderr and "part-copy.parquet" in r.stderr, r.stderr
    assert run_cli("store", "check", "--repair", store).returncode == 0
    assert len(pd.read_parquet(store)) == len(Store(store).to_pandas()) == n
    assert stray.name in [p.name for p in (Path(store) / "_damaged").rglob("*")]


def test_stores_written_before_sizes_were_recorded(tmp_path):
    """Manifests of older versions carry no sizes: the first commit reads each footer once and
    records the size, so damage is caught from then on."""
    store, _ = _ingested(tmp_path)
    mdir = Path(store) / "_meta" / "manifests"
    latest = sorted(mdir.glob("*.json"))[-1]
    m = json.loads(latest.read_text())
    for e in m["data"] + m["quarantine"] + list(m["state"].values()):
        e.pop("bytes", None)
        e.pop("sha256", None)
    latest.write_text(json.dumps(m))
    s = Store(store)
    s.commit(validate(make_rows(1, ds_tasks=("c",), run_prefix="new-")).table)
    m2 = json.loads(sorted(mdir.glob("*.json"))[-1].read_text())
    assert all("bytes" in e for e in m2["data"])
    _truncate(_part_file(store, "b"))
    with pytest.raises(StoreDamagedError):
        s.commit(validate(make_rows(1, ds_tasks=("d",), run_prefix="new2-")).table)
    assert not os.path.exists(Path(store) / partition_dir("up", "d"))


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB tmpfs (mounting needs root, as on the CI machine)."""
    import subprocess

    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_is_one_line_with_the_path_and_frees_the_space(tmp_path, tiny_fs):
    import numpy as np

    store = str(tiny_fs / "st")
    small = _csv(tmp_path / "small.csv")
    assert run_cli("ingest", str(small), "--store", store, "--quiet").returncode == 0
    before = Store(store).to_pandas()
    used = os.statvfs(tiny_fs)
    free_before = used.f_bavail * used.f_frsize

    big = make_rows(3000, ds_tasks=("a", "b", "c"), run_prefix="big-").drop(columns=["extra"])
    rng = np.random.default_rng(0)
    big["checkpoint_uri"] = [rng.bytes(200).hex() for _ in range(len(big))]  # incompressible: ~4 MB
    big.to_csv(tmp_path / "big.csv", index=False)
    line = one_error_line(run_cli("ingest", str(tmp_path / "big.csv"), "--store", store, "--quiet"),
                     "no space left on device", "rolled back", "version 1")
    assert str(tiny_fs / "st" / "_staging") in line, line   # the file that did not fit
    st = os.statvfs(tiny_fs)
    assert st.f_bavail * st.f_frsize >= free_before - 64 * 1024, "staged files still fill the disk"
    assert not any((tiny_fs / "st" / "_staging").iterdir())
    pd.testing.assert_frame_equal(Store(store).to_pandas(), before)
    # the store still takes a commit that fits
    assert run_cli("ingest", str(_csv(tmp_path / "more.csv", ds_tasks=("d",))), "--store", store,
                   "--quiet").returncode == 0


def test_object_store_uris_fail_in_one_line_without_secrets(tmp_path):
    one_error_line(run_cli("store", "info", "s3://"), "s3://", "needs a bucket")
    one_error_line(run_cli("fit", "gs://", "--out", str(tmp_path / "o")), "gs://", "needs a bucket")
    # an S3 endpoint that refuses connections, with the keys as user info (pyarrow's S3 URI form)
    uri = "s3://AKX:SKX@bucket/p?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    env = {"AWS_EC2_METADATA_DISABLED": "true"}
    for args in (("store", "info", uri), ("fit", uri, "--out", str(tmp_path / "o")),
                 ("ingest", str(_csv(tmp_path / "x.csv")), "--store", uri)):
        line = one_error_line(run_cli(*args, env=env), "cannot reach store location", "AKX:***@bucket")
        assert "SKX" not in line
