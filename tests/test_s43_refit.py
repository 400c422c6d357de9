"""Review s43 of the refit job and the demo: defects reproduced, each with its test."""

from __future__ import annotations

import pytest


@pytest.mark.slow(20)
def test_a_publish_stopped_by_ctrl_c_ends_its_run_killed_and_the_next_refit_finishes_it(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) mid-publish left the version's MLflow run RUNNING, half its artifacts
    logged, for as long as no refit followed (a stopped service: for good)."""
    import mlflow.tracking.client as mlflow_client_mod
    from conftest import committed_store, quick_refit_config

    from meta_study.mlflow_client import mlflow_client
    from meta_study.refit import refit

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = quick_refit_config(committed_store(tmp_path / "st", runs=30, tasks=("a",)), tmp_path / "out",
                             tracking_uri=uri)

    def stopped(*a, **k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(mlflow_client_mod.MlflowClient, "log_artifacts", stopped)
        with pytest.raises(KeyboardInterrupt):
            refit(cfg, log=lambda m: None)
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    (run,) = client.search_runs([exp])
    assert run.info.status == "KILLED"
    again = refit(cfg, log=lambda m: None)
    assert again.status == "published" and again.mlflow_run_id == run.info.run_id, again
    (run,) = client.search_runs([exp])
    assert run.info.status == "FINISHED" and run.data.metrics and run.data.params["store"]


@pytest.mark.slow(15)
def test_a_run_stopped_mid_publish_and_then_replaced_is_tagged_superseded(tmp_path, monkeypatch):
    """A version whose publish was stopped (its run ended KILLED), replaced by a newer version
    before it was published: its run is tagged superseded, as docs/cluster.md says."""
    import mlflow.tracking.client as mlflow_client_mod
    from conftest import committed_store, make_rows, quick_refit_config

    from meta_study.mlflow_client import mlflow_client
    from meta_study.refit import refit
    from meta_study.validation import validate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = committed_store(tmp_path / "st", runs=30, tasks=("a",))
    cfg = quick_refit_config(store, tmp_path / "out", tracking_uri=uri)

    def stopped(*a, **k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(mlflow_client_mod.MlflowClient, "log_artifacts", stopped)
        with pytest.raises(KeyboardInterrupt):
            refit(cfg, log=lambda m: None)
    store.commit(validate(make_rows(30, ds_tasks=("a",), seed=1)).table)    # new data: a new version
    new = refit(cfg, log=lambda m: None)
    assert new.status == "refitted" and new.mlflow_run_id
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([exp])}
    (old,) = [r for rid, r in runs.items() if rid != new.mlflow_run_id]
    assert old.info.status == "KILLED" and old.data.tags.get("meta_study.status") == "superseded"
    assert runs[new.mlflow_run_id].info.status == "FINISHED"


@pytest.mark.slow(12)
def test_a_demo_ingest_that_meets_a_full_disk_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    """A source of the demo's ingest that failed (a full disk) ended the demo in a RuntimeError's
    traceback, and the sources' lines were never shown."""
    import errno

    from meta_study import demo
    from meta_study.cli import main
    from meta_study.store import Store

    every = demo.synthetic_runs()
    monkeypatch.setattr(demo, "synthetic_runs", lambda *a, **k: every[:5])

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "wd" / "store" / "part-0.parquet"))
    monkeypatch.setattr(Store, "commit", full)
    monkeypatch.delenv("META_STUDY_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--synthetic", "--serial", "--workdir", str(tmp_path / "wd")])
    out, err = capsys.readouterr()
    assert e.value.code == 1
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    assert "the demo's ingest failed (OSError: [Errno 28] No space left on device" in err, err
    assert out.count("FAILED: OSError") == 2      # each source's line is shown before the error


def test_failed_demo_trials_are_one_line_not_a_traceback(tmp_path, monkeypatch):
    """Demo trials that failed (out of memory, a full disk) ended the demo in a RuntimeError's
    traceback; now an OSError, which the CLI says in one line with exit 1."""
    from types import SimpleNamespace

    from meta_study import demo
    from meta_study.tune import runner

    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: SimpleNamespace(
        errored=2, finished=16, trials=18, stop_signal=None, unsent=False, experiment_dir=str(tmp_path / "ray" / "demo")))
    with pytest.raises(OSError, match=r"^2 demo trial\(s\) failed; their errors are in .*ray/demo$"):
        demo._train(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True)
