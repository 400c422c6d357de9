"""The command line and the scheduled refit as a first-time user meets them (session 38): a
`refit --every` round's failure in one format whatever failed, and `--out=~/DIR`."""

from __future__ import annotations

import time

import pytest

from conftest import committed_store, run_cli


def test_a_failed_round_of_refit_every_is_one_format_whatever_failed(tmp_path, monkeypatch, capsys):
    """A round after the first said a bad input's or the machine's error as `refit: failed: X; the
    next refit tries again`, and a bug's as `refit: failed: T: X; the results in OUT stay as they
    were; the next refit tries again (META_STUDY_TRACEBACK=1 shows where)`: two formats in one
    log. Now each says OUT and the next refit, in the same order; only a bad input goes without
    the traceback hint, and a failed publish (its version is in OUT already) says where it is."""
    import meta_study.refit as refit_mod
    from meta_study.cli import main
    from meta_study.errors import UserError

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "out"
    errors = [UserError("/srv/store: not a meta-study store"), OSError(28, "No space left on device"),
              ZeroDivisionError("a bug of this round"),
              refit_mod.PublishError(f"refit X: publishing to http://h:5000 failed (HTTP 503); the results are in "
                                     f"{out}/refits/X, and the next refit publishes them")]
    calls = iter([None, *errors])

    def fake_refit(cfg, **kw):
        e = next(calls)
        if e is not None:
            raise e
        return refit_mod.RefitResult(status="noop", message="nothing changed")

    sleeps = []

    def fake_sleep(s_):
        sleeps.append(s_)
        if len(sleeps) > len(errors):
            raise KeyboardInterrupt      # Ctrl-C while waiting: the loop ends, exit 0

    monkeypatch.setattr(refit_mod, "refit", fake_refit)
    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.delenv("META_STUDY_TRACEBACK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    main(["refit", "--store", s.uri, "--out", str(out), "--every", "1s", "--serial"])   # returns: exit 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("refit: failed")]
    assert len(lines) == 4 and "Traceback" not in err, err
    user, machine, bug, publish = lines
    tail = f"; the results in {out} stay as they were; the next refit tries again"
    assert user == f"refit: failed: /srv/store: not a meta-study store{tail}", user
    assert machine == f"refit: failed: [Errno 28] No space left on device{tail} (META_STUDY_TRACEBACK=1 shows where)"
    assert bug == f"refit: failed: ZeroDivisionError: a bug of this round{tail} (META_STUDY_TRACEBACK=1 shows where)"
    assert publish.startswith("refit: failed: refit X: publishing to http://h:5000 failed (HTTP 503)"), publish
    assert "stay as they were" not in publish and publish.endswith(
        "; the next refit tries again (META_STUDY_TRACEBACK=1 shows where)"), publish


def test_out_with_a_tilde_no_shell_expanded_is_the_home_directory(tmp_path, monkeypatch):
    """`refit --out=~/refits` (or `fit --out=~/x`: no shell expands `~` after `=`, nor in a quoted
    or systemd-set value): the directory was made as ./~/refits while pyarrow wrote to
    $HOME/refits, and the command failed "Failed to open local file ...", exit 1, leaving ./~."""
    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    r = run_cli("refit", "--store", s.uri, "--out=~/refits", "--serial", "--trials", "2", "--samples", "20",
                "--tracking-uri", "none", cwd=cwd, subprocess_=False)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert (home / "refits" / "LATEST").is_file()
    assert not (cwd / "~").exists()


@pytest.mark.slow(30)
def test_the_refit_run_logs_the_tolerance_its_trusted_metric_was_judged_by(tmp_path):
    """The run logs the metric `trusted` (1 or 0: the headline's back-test RMSE within
    `--tolerance`), but not the tolerance: two refits at `--tolerance 5` and the default 3 could
    differ in `trusted` with nothing but `options_fingerprint` to tell them apart."""
    import os
    from dataclasses import replace

    from mlflow import MlflowClient

    from conftest import quick_refit_config
    from meta_study.analysis.fitting import FitOptions
    from meta_study.refit import refit

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    fit = FitOptions()
    fit = replace(fit, selection=replace(fit.selection, tolerance=0.05, cuts=(0.6, 0.8), level=0.8))
    res = refit(quick_refit_config(s, tmp_path / "out", tracking_uri=db, fit=fit), log=lambda m: None)
    params = MlflowClient(db).get_run(res.mlflow_run_id).data.params
    assert params["tolerance"] == "0.05"
    # how the headline was made (2026-12-06): its members' quantile, the back-test cuts, the level
    assert (params["member_quantile"], params["cuts"], params["level"]) == ("0.4", "0.6,0.8", "0.8"), params


def test_a_full_disk_in_out_is_said_with_out_named(tmp_path, monkeypatch):
    """A full --out met while a figure was drawn (PIL's write names no file) ended the refit with
    `meta-study: error: [Errno 28] No space left on device`, naming no disk; now OUT is named,
    and nothing of the half-written version stays."""
    import errno

    import meta_study.refit as refit_mod
    from conftest import quick_refit_config

    s = committed_store(tmp_path / "st", runs=12, tasks=("a",))
    out = tmp_path / "out"

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(refit_mod, "_analyze", full)
    with pytest.raises(OSError) as e:
        refit_mod.refit(quick_refit_config(s, out), log=lambda m: None)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out), e.value
    assert str(e.value) == f"[Errno 28] No space left on device: '{out}'"
    assert not any((out / "refits").glob(".tmp-*")) and not (out / "LATEST").exists()


def test_the_store_group_help_says_it_checks_repairs_and_unlocks():
    """`meta-study --help` listed `store  Inspect a meta-study store.`, though `store check
    --repair` and `store unlock` are there too."""
    r = run_cli("store", "--help", subprocess_=False)
    assert r.returncode == 0 and "check its files" in r.stdout and "lease" in r.stdout, r.stdout


def test_demo_workdir_with_a_tilde_is_the_home_directory(tmp_path, monkeypatch):
    """`demo --workdir=~/demo` made ./~/demo in the working directory (as `--out=~/x` did)."""
    import meta_study.demo as demo_mod

    seen = []
    monkeypatch.setattr(demo_mod, "run_demo", lambda workdir, **kw: seen.append(workdir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    r = run_cli("demo", "--synthetic", "--workdir=~/demo", cwd=tmp_path, subprocess_=False)
    assert r.returncode == 0 and seen == [str(tmp_path / "home" / "demo")], (seen, r.stderr)
