"""Review s41 of the refit job and the demo: defects reproduced, each with its test."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError


def test_a_second_demo_in_a_workdir_a_demo_is_running_in_is_refused_in_one_line(tmp_path):
    """Two `demo --synthetic` in one workdir: the second, started while the first logged its
    simulated runs, said "reused the runs of an earlier demo", ingested 145 of the 240 and reported
    on them, exit 0 (or failed in a traceback from MLflow's half-made sqlite database)."""
    from meta_study.demo import run_demo, workdir_lock

    wd = tmp_path / "wd"
    wd.mkdir()
    lines: list[str] = []
    with workdir_lock(wd, str(wd)):     # the first demo, still running
        with pytest.raises(UserError, match=r"--workdir .*: another demo is running there \(pid \d+ since "):
            run_demo(str(wd), synthetic=True, serial=True, log=lines.append)
    assert not (wd / "mlflow.db").exists() and not (wd / "store").exists() and not lines   # nothing was done


def test_a_version_published_to_another_experiment_is_not_said_to_be_left_unpublished(tmp_path):
    """A refit that changed nothing, with another --publish-experiment, publishes the last version
    there too; it said "which an earlier run had left unpublished", of a version published before."""
    from conftest import committed_store, quick_refit_config
    from dataclasses import replace

    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=30, tasks=("a",))
    cfg = quick_refit_config(s, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert refit(cfg, log=lambda m: None).status == "refitted"
    res = refit(replace(cfg, experiment="meta-study/other"), log=lambda m: None)
    assert res.status == "published" and res.mlflow_run_id
    assert "published to another experiment or tracking server, not to this one" in res.message, res.message
    assert "left unpublished" not in res.message
    assert refit(replace(cfg, experiment="meta-study/other"), log=lambda m: None).status == "noop"


def test_a_synthetic_demo_interrupted_while_logging_is_completed_not_reused_in_part(tmp_path, monkeypatch):
    """`demo --synthetic` stopped (Ctrl-C, SIGTERM) during step [1] left 132 of its 240 runs in
    MLflow; every later demo said "reused the runs of an earlier demo" and reported on 132 models."""
    from meta_study import demo
    from meta_study.mlflow_client import mlflow_client

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    every = demo.synthetic_runs()
    monkeypatch.setattr(demo, "synthetic_runs", lambda: every[:30])    # the interrupted demo's first 30
    demo.log_synthetic(tracking, logged=False)
    monkeypatch.undo()
    client = mlflow_client(tracking)
    exp = client.get_experiment_by_name(demo.SYNTH_EXPERIMENT).experiment_id
    half = client.create_run(exp, tags=every[30]["tags"])             # killed between its create and its end
    assert not demo.synthetic_logged(tracking)
    assert "logged to MLflow" in demo.synthetic_step(tracking)
    assert demo.log_synthetic(tracking) == 240
    runs = client.search_runs([exp], max_results=1000)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 240 and len({r.data.params["seed"] for r in finished}) == 240   # each model once
    assert client.get_run(half.info.run_id).info.status == "KILLED"   # never ingested (not FINISHED)
    assert demo.synthetic_logged(tracking) and "reused" in demo.synthetic_step(tracking)


def test_a_failed_publish_does_not_promise_the_next_refit_publishes_a_version_it_may_replace(tmp_path, monkeypatch):
    """A publish that failed said "the next refit publishes them"; a next refit that finds new
    data publishes its own version and leaves this one unpublished for good (superseded)."""
    from conftest import committed_store, quick_refit_config

    from meta_study import refit as refit_mod

    s = committed_store(tmp_path / "st", runs=30, tasks=("a",))
    cfg = quick_refit_config(s, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def gone(*a, **k):
        raise ConnectionError("Connection aborted.")
    monkeypatch.setattr(refit_mod, "_publish", gone)
    with pytest.raises(refit_mod.PublishError) as e:
        refit_mod.refit(cfg, log=lambda m: None)
    msg = str(e.value)
    assert "\n" not in msg and "the next refit publishes them if the data has not changed by then" in msg, msg


def test_a_last_version_that_lost_its_fits_is_refitted_not_kept_as_current(tmp_path):
    """LATEST's version without its fits.parquet (a disk fault, a hand): every refit after said
    "noop" and kept it as current, and every publish of it failed ("... failed (.../fits.parquet);
    the next refit publishes them"), forever."""
    from conftest import committed_store, quick_refit_config

    from meta_study.refit import refit

    s = committed_store(tmp_path / "st", runs=30, tasks=("a",))
    cfg = quick_refit_config(s, tmp_path / "out")
    first = refit(cfg, log=lambda m: None)
    (tmp_path / "out" / "refits" / first.version_dir.rsplit("/", 1)[-1] / "fits.parquet").unlink()
    again = refit(cfg, log=lambda m: None)
    assert again.status == "refitted" and again.version_dir != first.version_dir, again
    assert (tmp_path / "out" / "LATEST").read_text().strip() == again.version_dir.rsplit("/", 1)[-1]
    assert refit(cfg, log=lambda m: None).status == "noop"


def test_a_workdir_whose_mlflow_db_is_not_a_database_is_one_line(tmp_path):
    """`demo --workdir W` where W/mlflow.db is no MLflow database (damaged, another program's
    file): a SQLAlchemy traceback, before anything was done."""
    from meta_study.cli import main

    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "mlflow.db").write_text("not a database\n")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--synthetic", "--serial", "--workdir", str(wd)])
    assert e.value.code == 2
    with pytest.raises(UserError, match=r"--workdir .*: MLflow cannot open its database .*mlflow\.db "
                                        r"\(file is not a database\); give another --workdir"):
        from meta_study.demo import run_demo
        run_demo(str(wd), synthetic=True, serial=True, log=lambda m: None)
    assert sorted(p.name for p in wd.iterdir()) == [".demo.lock", "mlflow.db"]   # nothing else made
