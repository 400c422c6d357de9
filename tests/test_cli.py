"""The command line: versions, help everywhere, one-line user errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pandas as pd
import pytest

from meta_study import __version__
from meta_study.cli import cli
from conftest import MAPPINGS, one_error_line, run_cli


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix + (name,))


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


@pytest.mark.parametrize("path", [()] + list(_all_commands(cli)), ids=lambda p: " ".join(p) or "top")
def test_every_command_has_help(path):
    r = run_cli(*path, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and len(r.stdout.splitlines()) > 3



def test_user_errors_are_one_line(tmp_path):
    one_error_line(run_cli("ingest", str(tmp_path / "nope.csv"), "--store", str(tmp_path / "s")), "nope.csv", "no such file")
    one_error_line(run_cli("ingest", "x.csv"), "--store")
    one_error_line(run_cli("store", "info", str(tmp_path)), "not a meta-study store")
    one_error_line(run_cli("store", "info", str(tmp_path / "missing")), "no such store")
    one_error_line(run_cli("frobnicate"), "No such command")
    bad = tmp_path / "m.yaml"
    bad.write_text("units: {us_accuracy: percnt}")
    one_error_line(run_cli("ingest", str(tmp_path), "--store", str(tmp_path / "s"), "--mapping", str(bad)),
                    "m.yaml", "unknown unit 'percnt'")


def test_ingest_then_info_on_timm(tmp_path, timm_dir):
    store = str(tmp_path / "st")
    args = ("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", store)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "7779 new, 0 updated, 0 unchanged, 1 quarantined (" in r.stdout
    assert ("3 files skipped (no table of mapping 'timm-wide' names them): results-imagenet-a-clean.csv, "
            "results-imagenet-r-clean.csv, timm_us_ds.csv") in r.stdout
    r2 = run_cli(*args)
    assert "unchanged since its last ingest" in r2.stdout and "not read again" in r2.stdout
    assert len(pd.read_parquet(store)) == 7779
    info = run_cli("store", "info", store)
    assert info.returncode == 0 and "rows       7779" in info.stdout and "imagenet-a" in info.stdout
    js = json.loads(run_cli("store", "info", store, "--json").stdout)
    assert js["rows"] == 7779 and js["quarantined"] == 1 and len(js["groups"]) == 5
    # counts are numbers in sources as in groups (they were strings: "7779")
    assert all(isinstance(x["rows"], int) and isinstance(x["runs"], int) for x in js["sources"])
    assert sum(x["rows"] for x in js["sources"]) == 7779
    q = run_cli("store", "quarantine", store)
    assert "resmlp_24_224.fb_dino" in q.stdout


def test_a_failing_source_among_good_ones_does_not_stop_the_rest(tmp_path, timm_dir):
    store = str(tmp_path / "st")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = run_cli("ingest", str(timm_dir / "timm_us_ds.csv"), str(bad), "--mapping", str(MAPPINGS / "timm_long.yaml"),
                "--store", store)
    # one mapping, two files: the file without the mapped columns fails, the other is ingested,
    # and the exit code says that not everything went in (it was 0 before)
    assert r.returncode == 1 and "ingest: 1 of 2 sources failed" in r.stderr
    assert "FAILED" in r.stderr and "7779 new" in r.stdout
    again = run_cli("ingest", str(timm_dir / "timm_us_ds.csv"), str(bad), "--mapping", str(MAPPINGS / "timm_long.yaml"),
                    "--store", store, "--keep-going")
    assert again.returncode == 0 and "timm_us_ds.csv: unchanged since its last ingest" in again.stdout, again.stderr


def test_import_meta_study_is_light():
    code = ("import sys, meta_study, meta_study.schema, meta_study.store, meta_study.ingest, meta_study.cli;"
            "bad = [m for m in ('torch', 'ray', 'mlflow', 'timm', 'matplotlib') if m in sys.modules];"
            "print(','.join(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"heavy modules imported: {r.stdout}"


def test_an_os_failure_partway_is_one_line_with_exit_1(tmp_path, monkeypatch, capsys):
    """An OSError raised partway through a command (a full disk, an S3 endpoint gone after the
    first request) ended in a traceback; the input was fine, so exit 1, not 2, and
    META_STUDY_TRACEBACK=1 still shows where."""
    import errno

    import meta_study.store as store_mod
    from meta_study.cli import main

    def failing(uri, *a, **k):
        raise OSError(errno.EIO, "Input/output error", f"{uri}/_meta/manifests/0000000001.json")

    monkeypatch.setattr(store_mod, "open_store", failing)
    with pytest.raises(SystemExit) as e:
        main(["store", "info", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and "Input/output error" in err and "0000000001.json" in err, err
    monkeypatch.setenv("META_STUDY_TRACEBACK", "1")
    with pytest.raises(OSError):
        main(["store", "info", str(tmp_path / "st")])

