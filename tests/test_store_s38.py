"""Review s38 of the store's public API: a read of a location that holds no store, filter values
as pandas and NumPy give them (nulls as NaN, floats, datetime64), and stores a writer may not
write (a read-only store, a new store below a directory without write permission)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_rows, one_error_line
from meta_study.errors import UserError
from meta_study.store import Store
from meta_study.validation import validate


def _store(path: Path) -> Store:
    """Two few-shot runs on up/a and up/b, and two linear-probe runs (``shots`` null)."""
    few = make_rows(2)
    lin = make_rows(2, run_prefix="lp")
    lin["eval_protocol"], lin["shots"] = "linear", None
    s = Store(str(path), notify=None)
    s.commit(validate(pd.concat([few, lin], ignore_index=True)).table)
    return s


@pytest.mark.parametrize("reader", ["read", "to_pandas", "quarantine", "history", "snapshot"])
def test_reading_a_location_without_a_store_is_one_line_not_an_empty_store(tmp_path, reader):
    """Was: a mistyped path read as an empty store (0 rows, version 0), and so did a file or a
    directory that holds something else. (``quarantine`` opens the store as ``store info`` does
    since session 56, and says "not a store directory" of a file as it does.)"""
    (tmp_path / "notes.txt").write_text("x")
    for where, needle in [(tmp_path / "nope", "no such store"), (tmp_path / "notes.txt", "is a file, not a (store )?directory"),
                          (tmp_path, "not a meta-study store")]:
        with pytest.raises(UserError, match=needle):
            getattr(Store(str(where), notify=None), reader)()
    assert not (tmp_path / "nope").exists()   # a read creates nothing


def test_a_store_whose_first_commit_wrote_nothing_reads_empty(tmp_path):
    s = Store(str(tmp_path / "s"), notify=None)
    assert s.commit(None).version is None
    assert s.read().num_rows == 0 and s.history() == []


def test_a_column_read_back_with_nulls_filters_as_written(tmp_path):
    """``shots`` comes back from to_pandas as float64 with NaN for its nulls: the filter failed in
    Arrow ("Could not convert nan ... to int32"), and a string Series with a missing run id too."""
    s = _store(tmp_path / "s")
    df = s.to_pandas()
    assert df["shots"].isna().any()
    assert s.read({"shots": df["shots"]}).num_rows == len(df)
    assert s.read({"shots": [np.nan]}).num_rows == df["shots"].isna().sum()
    assert s.read({"shots": pd.array([5, None], dtype="Int64")}).num_rows == len(df)
    assert s.read({"run_id": pd.Series(["r0", None])}).num_rows == (df["run_id"] == "r0").sum()


def test_a_float_filter_on_an_integer_column_is_never_truncated(tmp_path):
    """Was: ``{"shots": 5.5}`` read the 5-shot rows (pyarrow truncates a float it converts to int)."""
    s = _store(tmp_path / "s")
    five = s.read({"shots": 5}).num_rows
    assert five and s.read({"shots": 5.0}).num_rows == five
    for bad in (5.5, [5, 5.5], float("inf")):
        with pytest.raises(UserError, match="filter on shots: .*not an integer"):
            s.read({"shots": bad})


@pytest.mark.parametrize("bad", ["five", True, 2 ** 40])
def test_a_filter_value_of_another_type_is_one_line_naming_the_column(tmp_path, bad):
    s = _store(tmp_path / "s")
    with pytest.raises(UserError, match="filter on shots: .*int32"):
        s.read({"shots": bad})


def test_a_datetime64_ns_array_filters_by_its_time(tmp_path):
    """``.item()`` of a datetime64[ns] is an int of nanoseconds, which Arrow took for microseconds."""
    s = _store(tmp_path / "s")
    df = s.to_pandas()
    when = df["started_at"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
    assert s.read({"started_at": when}).num_rows == len(df)


def _unprivileged() -> list[str]:
    """A command prefix under which permission bits apply: none for a user; for root, setpriv
    without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root, unable to drop the capabilities that bypass permission bits")
    return prefix


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "meta_study.cli", *args], capture_output=True,
                          text=True, timeout=120)


def _read_only(path: Path) -> None:
    for d, dirs, files in os.walk(path):
        for n in files:
            os.chmod(os.path.join(d, n), 0o444)
        os.chmod(d, 0o555)


def test_repair_of_a_read_only_store_says_why_whole(tmp_path):
    """Was: the lock's advice cut at 200 characters, mid-quote ("...: 'chmod g+w")."""
    s = tmp_path / "s"
    _store(s)
    _read_only(s)
    try:
        line = one_error_line(_cli("store", "check", "--repair", str(s)), "cannot repair the store here")
        assert line.endswith("for every writer)"), line
    finally:
        for d, _, _ in os.walk(s):
            os.chmod(d, 0o755)


@pytest.mark.parametrize("below", [False, True])
def test_a_new_store_where_the_user_cannot_write_is_one_line(tmp_path, below):
    """Was: "more.csv: FAILED: PermissionError: [Errno 13] ...", the store's fault blamed on the input."""
    csv = tmp_path / "more.csv"
    make_rows(2).drop(columns=["extra"]).to_csv(csv, index=False)
    parent = tmp_path / "ro"
    parent.mkdir()
    store = parent / "new" if below else parent
    os.chmod(parent, 0o555)
    try:
        line = one_error_line(_cli("ingest", str(csv), "--store", str(store)), f"{store}: cannot create a store there")
        assert f"no write permission on {parent}" in line
        assert os.listdir(parent) == []
    finally:
        os.chmod(parent, 0o755)


def test_a_task_filter_of_another_type_is_one_line(tmp_path):
    """Was: ``{"us_task": 7}`` matched no partition and read as empty, silently."""
    s = _store(tmp_path / "s")
    with pytest.raises(UserError, match="filter on us_task: "):
        s.read({"us_task": 7})
    a = s.read({"ds_task": "a"}).num_rows
    assert s.read({"us_task": np.array(["up"]), "ds_task": ["a", None]}).num_rows == a > 0


def test_a_partition_linked_from_another_disk_is_not_damage(tmp_path):
    """Was: the files of a task directory moved elsewhere and linked back (``STORE/up -> /data/up``)
    read fine, but were "missing" to every commit and to ``store check``, and ``--repair`` set
    them aside, dropping their rows. A link loop, or a second name of a partition, is listed once."""
    s = _store(tmp_path / "s")
    rows = s.read().num_rows
    (tmp_path / "s" / "up").rename(tmp_path / "elsewhere")
    (tmp_path / "s" / "up").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "a" / "loop").symlink_to("..")
    (tmp_path / "s" / "alias").symlink_to("up")
    r = s.check(repair=True)
    assert r.damage == () and r.repaired_version is None
    new = make_rows(1, run_prefix="new")
    assert s.commit(validate(new).table).version is not None   # was refused: "damaged store file: missing"
    assert s.read().num_rows == rows + len(new) and s.check().ok


def test_an_ingest_into_a_read_only_store_is_refused_once_before_reading(tmp_path):
    """Was: each source read whole, then refused by the lock, one FAILED line per source."""
    s = tmp_path / "s"
    _store(s)
    csvs = []
    for p in ("x", "y"):
        csvs.append(tmp_path / f"{p}.csv")
        make_rows(2, run_prefix=p).drop(columns=["extra"]).to_csv(csvs[-1], index=False)
    _read_only(s)
    try:
        line = one_error_line(_cli("ingest", *map(str, csvs), "--store", str(s)), "cannot write to this store")
        assert f"no write permission on {s / '_meta' / 'LOCK'}" in line and "FAILED" not in line
    finally:
        for d, _, _ in os.walk(s):
            os.chmod(d, 0o755)


def test_one_column_given_as_a_string_reads_that_column(tmp_path):
    s = _store(tmp_path / "s")
    assert s.read(columns="run_id").column_names == ["run_id"]
    with pytest.raises(UserError, match=r"unknown column\(s\) runid$"):
        s.read(columns="runid")


def test_a_store_opens_from_a_pathlib_path(tmp_path):
    """Was: TypeError "argument of type 'PosixPath' is not iterable"."""
    from meta_study.store import open_store

    _store(tmp_path / "s")
    assert Store(tmp_path / "s").read().num_rows == open_store(tmp_path / "s").read().num_rows > 0


def test_check_repair_never_sets_aside_a_file_it_may_not_read(tmp_path):
    """`store check --repair` called a data file without read permission damaged, moved it to
    _damaged/ and dropped its rows (measured: 4 rows). Not damage: the OS's line, exit 1, nothing moved."""
    s = _store(tmp_path / "s")
    rows = s.read().num_rows
    data = sorted((tmp_path / "s").glob("up/*/*.parquet"))
    assert data
    for f in data:
        os.chmod(f, 0o000)
    try:
        r = _cli("store", "check", "--repair", str(tmp_path / "s"))
    finally:
        for f in data:
            os.chmod(f, 0o644)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "ermission denied" in r.stderr, r.stderr
    assert not (tmp_path / "s" / "_damaged").exists()
    assert Store(str(tmp_path / "s"), notify=None).read().num_rows == rows


@pytest.mark.slow(60)
def test_a_gcs_store_that_cannot_be_reached_is_one_line_not_a_hang(tmp_path):
    """GCS's client retried a failing call without end: `store info gs://...` without network (here:
    an endpoint on 127.0.0.1 where nothing listens) was still waiting after 150 s. Bounded
    (GCS_RETRY_LIMIT_S unless the URI gives retry_limit_seconds): one line, exit 2."""
    uri = "gs://anonymous@bucket/store?endpoint_override=127.0.0.1:1&scheme=http"
    r = subprocess.run([sys.executable, "-m", "meta_study.cli", "store", "info", uri], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    line = one_error_line(r, "cannot reach store location")
    assert "Retry policy exhausted" in line, line


def test_gs_uris_get_a_retry_bound_unless_they_give_one():
    """The bound the store's and the sweeps' state filesystems put on gs:// (the store test above
    measures it); other schemes and a user's own bound are left as they are."""
    from meta_study.store._files import GCS_RETRY_LIMIT_S, bounded_uri

    assert bounded_uri("gs://b/x") == f"gs://b/x?retry_limit_seconds={GCS_RETRY_LIMIT_S}"
    assert bounded_uri("gs://b/x?scheme=http") == f"gs://b/x?scheme=http&retry_limit_seconds={GCS_RETRY_LIMIT_S}"
    assert bounded_uri("gs://b/x?retry_limit_seconds=5") == "gs://b/x?retry_limit_seconds=5"
    assert bounded_uri("s3://b/x") == "s3://b/x" and bounded_uri("/local/x") == "/local/x"
