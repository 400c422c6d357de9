"""The command line as a user meets it, wrong inputs first: each is one line naming the input,
exit code 2, no traceback, and nothing written where it does harm."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from meta_study.cli import cli
from meta_study.errors import UserError
from meta_study.ray_session import check_address
from meta_study.store import Store
from meta_study.validation import validate
from conftest import error_lines, make_rows, one_error_line, run_cli


def _store(path: Path, runs: int = 12) -> Store:
    s = Store(str(path))
    s.commit(validate(make_rows(runs, ds_tasks=("a",))).table)
    return s


@pytest.mark.parametrize("command", ["sensitivity", "bootstrap"])
def test_a_negative_seed_is_one_line_not_numpys_traceback(tmp_path, command):
    # measured: "ValueError: expected non-negative integer" from numpy's SeedSequence, a traceback
    s = _store(tmp_path / "st")
    r = run_cli(command, s.uri, "--out", str(tmp_path / "o"), "--serial", "--seed", "-1")
    one_error_line(r, "--seed", "-1")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow(5)   # a meta-study process of its own
def test_results_never_go_into_another_store(tmp_path):
    """`prepare_out` refused --out inside the store read, not inside another one: `fit A --out B`
    wrote fits.parquet into store B, and `pandas.read_parquet(B)` failed on it."""
    a, b = _store(tmp_path / "a"), _store(tmp_path / "b")
    for out in (b.uri, str(Path(b.uri) / "fits")):
        one_error_line(run_cli("fit", a.uri, "--out", out, "--no-figures"), f"--out {out}", "store", b.uri)
    assert len(pd.read_parquet(b.uri)) == len(pd.read_parquet(a.uri)) > 0
    one_error_line(run_cli("refit", "--store", a.uri, "--out", b.uri, "--serial", "--tracking-uri", "none",
                           timeout=120), f"--out {b.uri}", "store")
    assert len(pd.read_parquet(b.uri)) > 0


@pytest.mark.slow(5)   # a meta-study process of its own
def test_the_demo_never_runs_inside_a_store(tmp_path):
    """`demo --workdir STORE` ran the whole demo into the store (measured: 238 files that
    `store check` calls damage, and `pandas.read_parquet(STORE)` failed on LATEST)."""
    s = _store(tmp_path / "st")
    for wd in (s.uri, str(Path(s.uri) / "demo")):
        one_error_line(run_cli("demo", "--workdir", wd, "--synthetic", "--serial", timeout=60),
                       f"--workdir {wd}", "store")
    assert sorted(p.name for p in Path(s.uri).iterdir()) == ["_meta", "_staging", "up"]


@pytest.mark.parametrize("address", ["http://127.0.0.1:8265", "https://head:8265"])
def test_an_http_address_is_named_as_the_dashboard_not_cut_mid_sentence(address):
    """The job API's address (what `ray job submit` takes, often left in RAY_ADDRESS): Ray's
    error was cut at "To fix this, either:" and followed by a hint about tokens."""
    with pytest.raises(UserError) as e:
        check_address(address, source="RAY_ADDRESS")
    msg = str(e.value)
    assert msg.startswith(f"RAY_ADDRESS {address}: ") and "HTTP" in msg and "6379" in msg, msg
    assert "token" not in msg and "\n" not in msg and not msg.rstrip().endswith(":"), msg


def test_an_http_address_on_the_command_line_is_one_line(tmp_path, capsys):
    from meta_study.cli import main

    s = _store(tmp_path / "st")
    with pytest.raises(SystemExit) as e:
        main(["bootstrap", s.uri, "--out", str(tmp_path / "o"), "--samples", "10",
              "--address", "http://127.0.0.1:8265"])
    err = capsys.readouterr().err
    # progress lines aside ("  fits: 1/3 (3 s)" on a loaded machine): one line
    lines = error_lines(err)
    assert e.value.code == 2 and len(lines) == 1 and "--address http://127.0.0.1:8265" in lines[0], err
    assert "To fix this, either:" not in err and "token" not in err, err


@pytest.mark.slow(5)   # a meta-study process of its own
def test_a_refit_period_too_long_to_wait_is_refused_before_any_work(tmp_path):
    # measured: a whole refit, then "OverflowError: timestamp out of range for platform time_t"
    s = _store(tmp_path / "st")
    out = tmp_path / "r"
    r = run_cli("refit", "--store", s.uri, "--out", str(out), "--serial", "--tracking-uri", "none",
                "--every", "99999999999d", timeout=120)
    one_error_line(r, "--every", "99999999999d")
    assert not out.exists()


def test_bootstraps_help_states_its_own_frontiers_default():
    """bootstrap refits the paper's pair (vertices, all) unless --frontiers names others; its help
    said the default was all six estimators."""
    text = " ".join(CliRunner().invoke(cli, ["bootstrap", "--help"], terminal_width=200).output.split())
    line = re.search(r"--frontiers F1,F2 (.*?)--samples", text).group(1)
    assert "vertices, all" in line and "hull-curve" not in line, line
    from meta_study.analysis.bootstrap import BootstrapOptions

    assert BootstrapOptions().frontiers == ("vertices", "all")


@pytest.mark.parametrize("command", ["sensitivity", "bootstrap"])
@pytest.mark.parametrize("extra", [("--address", "127.0.0.1:1"), ("--workers", "3")])
def test_serial_with_ray_options_is_refused_not_ignored(tmp_path, command, extra):
    """--serial runs without Ray: an --address or --workers beside it was silently ignored (the
    user believed the cluster did the work)."""
    s = _store(tmp_path / "st")
    r = run_cli(command, s.uri, "--out", str(tmp_path / "o"), "--serial", *extra)
    one_error_line(r, extra[0], "--serial")
    assert not (tmp_path / "o").exists()


#: ``meta-study ARGS`` in a process that sees no Ray running on this machine: ``auto`` resolves
#: to a GCS process it finds here when Ray's temp directory names none, or names one and a single
#: GCS runs (Ray prefers that one), and CI's other xdist worker often runs a Ray of its own.
_CLI_SEEING_NO_OTHER_RAY = ("import sys, ray._private.services as s; s._find_address_from_flag = lambda flag: set(); "
                            "from meta_study.cli import main; main(sys.argv[1:])")


def _closed_port() -> int:
    from mlflow_server import refused_port

    return refused_port()    # held bound for good: no other test's server can take it meanwhile


@pytest.mark.slow(5)   # a meta-study process of its own
def test_auto_with_a_cluster_nothing_answers_at_fails_in_one_line_not_minutes(tmp_path):
    """`--address auto` joins what Ray finds on this machine: the last `ray start` recorded in its
    temp directory, or a GCS process running here (another user's Ray of its own, loopback-only).
    check_address left `auto` to Ray, which retried for over 10 minutes when nothing answered
    there (measured: "Failed to connect to GCS at address 192.0.2.2:38553" every 40 s)."""
    import time

    s = _store(tmp_path / "st")
    port = _closed_port()
    (tmp_path / "raytmp" / "ray").mkdir(parents=True)
    (tmp_path / "raytmp" / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-c", _CLI_SEEING_NO_OTHER_RAY, "bootstrap", s.uri, "--out", str(tmp_path / "o"),
                        "--samples", "10", "--address", "auto"], env={**env, "RAY_TMPDIR": str(tmp_path / "raytmp")},
                       capture_output=True, text=True, timeout=120)
    line = one_error_line(r, "--address auto (found ", f":{port} on this machine")   # 127.0.0.1 shown as this node's IP
    assert "answers there" in line, line
    assert time.monotonic() - t0 < 60


def test_auto_with_no_cluster_here_says_so_without_a_token_hint(tmp_path, monkeypatch):
    import ray._private.services as services

    # this machine as one where no Ray runs: the other xdist worker's Rays are out of sight
    monkeypatch.setattr(services, "_find_address_from_flag", lambda flag: set())
    services._cached_find_gcs_addresses.cache_clear()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(UserError, match=r"^--address auto: no Ray cluster found on this machine") as e:
        check_address("auto")
    assert "token" not in str(e.value)


@pytest.mark.slow(5)   # a meta-study process of its own
def test_a_client_plugin_address_ray_refuses_gets_no_token_hint(tmp_path):
    # measured: "(Module: anyscale does not exist.); no Ray token is set here: export RAY_AUTH_MODE=token ..."
    s = _store(tmp_path / "st")
    r = run_cli("bootstrap", s.uri, "--out", str(tmp_path / "o"), "--samples", "10", "--address", "anyscale://x",
                timeout=120)
    line = one_error_line(r, "--address anyscale://x", "anyscale does not exist")
    assert "token" not in line, line


def test_drop_missing_with_mlflow_sources_only_is_refused_not_ignored(tmp_path):
    """--drop-missing is for files (--drop-deleted for MLflow): given with MLflow sources alone it
    was accepted and did nothing (exit 0), the mirror of the MLflow-only options with files."""
    import os
    import time

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("zoo")
    now = int(time.time() * 1000)
    for i in range(3):
        rid = client.create_run(exp).info.run_id
        client.log_batch(rid, metrics=[Metric("us/up/top1", 0.3 + 0.1 * i, now, 0),
                                       Metric("ds/a/5shot/top1", 0.2 + 0.1 * i, now, 0)])
        client.set_terminated(rid)
    for source in (uri, f"mlflow-sql:{uri}"):
        r = run_cli("ingest", source, "--store", str(tmp_path / "st"), "--drop-missing", "--quiet")
        one_error_line(r, "--drop-missing", "--drop-deleted")
    assert not (tmp_path / "st").exists()
    csv = tmp_path / "zoo.csv"
    make_rows(6, ds_tasks=("a",)).drop(columns=["extra"]).to_csv(csv, index=False)
    ok = run_cli("ingest", uri, str(csv), "--store", str(tmp_path / "st"), "--drop-missing", "--quiet")
    assert ok.returncode == 0, ok.stderr     # with a file among them it applies to the file


@pytest.mark.slow(5)   # a meta-study process of its own
def test_an_empty_directory_argument_is_refused_not_the_working_directory(tmp_path):
    """`demo --workdir ""` (a script's unset variable) ran the whole demo into the working
    directory (measured: mlflow.db, store/, refits/, LATEST there); `--out ""` said "--out :
    cannot write there"."""
    r = run_cli("demo", "--workdir", "", "--synthetic", "--serial", cwd=tmp_path, timeout=60)
    one_error_line(r, "--workdir ''", "empty path")
    assert list(tmp_path.iterdir()) == []
    s = _store(tmp_path / "st")
    one_error_line(run_cli("fit", s.uri, "--out", " ", "--no-figures"), "--out ' '", "empty path")
