"""Session 55: a store where no directory can be made (a pseudo-filesystem such as /proc, where
``os.access`` says yes to root) is refused in one line naming the store, before any source is
read: ingest said "glue.csv: FAILED: PermissionError: [Errno 1] ...", blaming the input, and
refit exited 1 with a bare "[Errno 2] No such file or directory: '/proc/s'"."""
from __future__ import annotations

import os

import pytest
from conftest import run_cli

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")

CSV = "source,run_id,model_name,us_task,ds_task,eval_protocol,protocol,shots,us_accuracy,ds_accuracy\n" + "".join(
    f"s,r{i},m{i},up,a,fewshot,p,5,{0.5 + 0.03 * i:.3f},{0.4 + 0.02 * i:.3f}\n" for i in range(8))


def _one_line(r, store: str) -> None:  # noqa: ANN001
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith(f"meta-study: error: {store}: cannot create a store there"), r.stderr
    assert r.stderr.count("\n") == 1 and "Errno" not in r.stderr and "FAILED" not in r.stdout + r.stderr, r.stderr


def test_ingest_into_proc_names_the_store(tmp_path):
    (tmp_path / "a.csv").write_text(CSV)
    _one_line(run_cli("ingest", str(tmp_path / "a.csv"), "--store", "/proc/meta-study-s55"), "/proc/meta-study-s55")


def test_refit_into_proc_names_the_store_and_leaves_no_out(tmp_path):
    (tmp_path / "a.csv").write_text(CSV)
    r = run_cli("refit", "--store", "/proc/meta-study-s55", "--source", str(tmp_path / "a.csv"),
                "--out", str(tmp_path / "out"))
    _one_line(r, "/proc/meta-study-s55")
    assert not (tmp_path / "out").exists()


def test_the_probe_leaves_nothing_where_a_store_is_made(tmp_path):
    (tmp_path / "a.csv").write_text(CSV)
    (tmp_path / "empty").mkdir()
    for store in (tmp_path / "new" / "st", tmp_path / "empty"):
        r = run_cli("ingest", str(tmp_path / "a.csv"), "--store", str(store))
        assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "new")) == ["st"]
    assert not [n for n in os.listdir(tmp_path / "empty") if n.startswith(".meta-study-probe")]
