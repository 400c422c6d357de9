"""The command line's wrong inputs, as a first-time user types them (session 37): empty strings
that meant "unset", a Ray address checked only after the work, the wrong flag named."""

from __future__ import annotations

import os

import pytest

from conftest import committed_store, one_error_line, run_cli


def _no_ray_env() -> dict[str, str]:
    """This environment without a cluster address (a command then starts a Ray of its own)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def test_an_empty_every_is_refused_not_a_single_refit(tmp_path):
    """`refit --every "$INTERVAL"` with the variable unset refitted once and exited 0: the cron
    user believed a loop was running."""
    s = committed_store(tmp_path / "st", runs=12)
    one_error_line(run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "r"), "--serial", "--every", "",
                           subprocess_=False),
                   "--every", "not a duration")
    assert not (tmp_path / "r").exists()


def test_an_empty_publish_experiment_is_named_by_its_flag(tmp_path):
    """`--publish-experiment ""` failed after ~30 s blaming the tracking URI ("--tracking-uri
    sqlite:///...: MLflow refuses this tracking URI (Invalid experiment name: '')")."""
    s = committed_store(tmp_path / "st", runs=12)
    db = tmp_path / "m.db"
    line = one_error_line(run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "r"), "--serial",
                                  "--tracking-uri", f"sqlite:///{db}", "--publish-experiment", " ", subprocess_=False),
                          "--publish-experiment")
    assert "--tracking-uri" not in line
    assert not (tmp_path / "r").exists() and not db.exists()


def test_an_empty_tracking_uri_on_the_command_line_is_refused(tmp_path):
    """`--tracking-uri "$MLFLOW_URI"` with the variable unset published nothing and exited 0
    (only 'none', or leaving the option out, means no run)."""
    s = committed_store(tmp_path / "st", runs=12)
    one_error_line(run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "r"), "--serial", "--tracking-uri", "",
                           subprocess_=False),
                   "--tracking-uri ''", "none")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow(5)
def test_an_empty_address_is_refused_not_a_ray_of_its_own(tmp_path):
    """`--address "$HEAD"` with the variable unset started a Ray of its own on this machine in
    silence: the user believed the cluster did the work."""
    s = committed_store(tmp_path / "st", runs=12)
    r = run_cli("sensitivity", s.uri, "--out", str(tmp_path / "o"), "--trials", "1", "--address", "",
                env=_no_ray_env(), timeout=120)
    one_error_line(r, "--address ''", "local")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow(10)
def test_a_wrong_address_is_refused_even_when_every_output_is_reused(tmp_path):
    """A second `sensitivity --address foo` (or an address nothing answers at) into a DIR whose
    outputs it reuses exited 0: the typo was never checked."""
    s = committed_store(tmp_path / "st", runs=12)
    out = str(tmp_path / "o")
    assert run_cli("sensitivity", s.uri, "--out", out, "--trials", "1", "--serial").returncode == 0
    for address, needle in (("foo", "not a Ray address"), ("127.0.0.1:1", "no Ray cluster (GCS) answers there")):
        r = run_cli("sensitivity", s.uri, "--out", out, "--trials", "1", "--address", address,
                    env=_no_ray_env(), timeout=120)
        one_error_line(r, f"--address {address}", needle)


@pytest.mark.slow(10)
def test_refit_checks_its_ray_address_before_fitting_and_leaves_no_out(tmp_path):
    """`refit --address 127.0.0.1:1` fitted every group first, then failed, and left the new
    --out holding its lock file (.refit-out.lock)."""
    s = committed_store(tmp_path / "st", runs=12)
    out = tmp_path / "r"
    r = run_cli("refit", "--store", s.uri, "--out", str(out), "--address", "127.0.0.1:1", "--trials", "1",
                "--samples", "10", env=_no_ray_env(), timeout=120)
    one_error_line(r, "--address 127.0.0.1:1", "no Ray cluster (GCS) answers there")
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("args, meant", [(("--holdout-quantile", "80"), "0.8"), (("--level", "95"), "0.95")])
def test_a_fraction_typed_in_percent_gets_the_fraction_it_meant(tmp_path, args, meant):
    """`--holdout-quantile 80` and `--level 95` said only "must be in (0, 1]": the percent the
    user typed was not recognized as such, while `--ds-target 80` offered 0.8."""
    s = committed_store(tmp_path / "st", runs=12)
    one_error_line(run_cli("bootstrap", s.uri, "--out", str(tmp_path / "o"), "--serial", "--samples", "10", *args),
                   args[0], f"did you mean {meant}?")


@pytest.mark.parametrize("how", ["address", "env"])
def test_workers_beside_a_cluster_is_refused_not_ignored(tmp_path, monkeypatch, how):
    """`--workers 2` with `--address HOST:PORT` (or `$RAY_ADDRESS`) was accepted: a cluster runs on
    its own CPUs, and only the packing of the tasks changed, while the user believed it limited.
    (Refused before the address is checked: no cluster answers at these.)"""
    s = committed_store(tmp_path / "st", runs=12)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = ["--workers", "2"]
    if how == "address":
        args += ["--address", "127.0.0.1:1"]
    else:
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    # in this process: refused before any Ray starts
    r = run_cli("bootstrap", s.uri, "--out", str(tmp_path / "o"), "--samples", "10", *args, subprocess_=False)
    one_error_line(r, "--workers 2", "127.0.0.1:1", "--address local")


@pytest.mark.parametrize("uri", ["http://h:99999", "http://[::1", "ray://[::1", "http://u:secret@[::1/x?token=t"])
def test_safe_uri_and_has_credentials_take_a_malformed_uri(uri):
    """A port out of range or an unclosed IPv6 bracket raised urllib's ValueError in safe_uri and
    has_credentials, which name URIs in the one-line errors: a traceback instead of the error."""
    from meta_study.mlflow_client import has_credentials, safe_uri, source_uri

    shown = safe_uri(uri)
    assert "secret" not in shown and "token" not in shown and "u:" not in shown, shown
    assert shown.startswith(uri.split("://")[0] + "://")
    assert has_credentials(uri) == ("secret" in uri)
    assert "secret" not in source_uri(uri)


@pytest.mark.parametrize("args, needle", [
    (("refit", "--store", "{store}", "--out", "{tmp}/r", "--serial", "--tracking-uri", "http://h:99999"),
     "--tracking-uri http://h:99999"),
    (("bootstrap", "{store}", "--out", "{tmp}/o", "--samples", "10", "--address", "ray://h:99999"),
     "--address ray://h:99999"),
    (("bootstrap", "{store}", "--out", "{tmp}/o", "--samples", "10", "--address", "ray://[::1"), "--address ray://[::1"),
])
def test_a_malformed_uri_is_one_line_not_a_traceback(tmp_path, monkeypatch, args, needle):
    s = committed_store(tmp_path / "st", runs=12)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = [a.format(tmp=tmp_path, store=s.uri) for a in args]
    one_error_line(run_cli(*args, subprocess_=False), needle)


def test_a_model_name_found_by_chance_inside_a_run_id_is_still_shown():
    """A short model name (``b2``, ``1``) that occurs inside an MLflow run id's 32 hex digits was
    taken for a name the id already holds: the report showed the bare 32-digit id, without the
    model. An id that holds the name as a part of its own (``vit-b16-seed1``) is still shown alone."""
    from meta_study.explorer import point_name

    run = "3fb2c9" + "0" * 26
    assert point_name(run, "b2") == "b2 · 3fb2c900"
    assert point_name("a1b2" + "0" * 28, "1") == "1 · a1b20000"
    assert point_name("vit-b16-seed1", "vit-b16") == "vit-b16-seed1"
    assert point_name("sweep_vit-b16", "vit-b16") == "sweep_vit-b16"
    assert point_name("solo", "s") == "s · solo"


def test_ingest_of_a_malformed_tracking_url_is_one_line(tmp_path):
    # urlsplit("http://[::1") raises ValueError: a traceback, exit 1
    r = run_cli("ingest", "http://[::1", "--store", str(tmp_path / "st"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "meta-study: error: http://[::1: not a URL (Invalid IPv6 URL)", r.stderr


def test_a_refit_that_failed_late_leaves_no_out_holding_an_empty_folder_and_its_lock(tmp_path):
    # an empty refits/ beside .refit-out.lock kept both, and the next refit found a half-made --out
    from meta_study.refit import _remove_if_only_locks

    out = tmp_path / "out"
    (out / "refits").mkdir(parents=True)
    (out / ".refit-out.lock").write_text("")
    _remove_if_only_locks(out, fresh=True)
    assert not out.exists()
    (out / "refits" / "v1").mkdir(parents=True)        # results (a version): everything stays
    (out / ".refit-out.lock").write_text("")
    _remove_if_only_locks(out, fresh=True)
    assert sorted(p.name for p in out.iterdir()) == [".refit-out.lock", "refits"]


def test_a_value_just_above_one_gets_no_percent_guess():
    # `--ds-target 1.5` was asked "did you mean 0.015?": a typo above 1, not 1.5% meant
    from meta_study.errors import Range, option_message

    assert "did you mean" not in option_message("ds_target", 1.5, Range(0, 1, lo_open=True))
    assert option_message("ds_target", 80, Range(0, 1, lo_open=True)).endswith("did you mean 0.8?")


@pytest.mark.parametrize("command", [["store", "info", ""], ["ingest", "x.csv", "--store", ""]])
def test_an_empty_store_path_is_refused_not_the_working_directory(tmp_path, command):
    # Store("") was the working directory: `--store "$UNSET"` wrote a store into an empty one
    (tmp_path / "x.csv").write_text("run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol\nr,u,0.5,d,0.4,linear\n")
    r = run_cli(*command, cwd=tmp_path)
    one_error_line(r, "store path '': empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
