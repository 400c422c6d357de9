"""Review of the thin entry points (s38): the demo's workdir holds one demo's models only, the
synthetic demo asks MLflow once whether its runs exist, and the analysis scripts' help and
messages say what they do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, one_error_line, run_cli


def _demo_store(wd: Path, source: str, experiment: str, runs: int = 3) -> None:
    """WORKDIR/store holding ``runs`` runs of one demo (source, experiment), beside a file
    source's rows (no experiment: the shipped timm results are such rows)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    recs = []
    for i in range(runs):
        base = {"us_task": "up", "us_accuracy": 0.3 + 0.1 * i, "ds_task": "near", "eval_protocol": "fewshot",
                "shots": 10, "ds_accuracy": 0.2 + 0.1 * i}
        recs.append({**base, "source": source, "run_id": f"r{i}", "experiment": experiment})
        recs.append({**base, "source": "timm-results", "run_id": f"t{i}", "us_task": "imagenet"})
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(str(wd / "store")).commit(v.table)


def _tracking(wd: Path) -> str:
    return f"sqlite:///{wd.resolve() / 'mlflow.db'}"


def test_a_demo_refuses_a_workdir_of_the_other_kind_of_demo(tmp_path, monkeypatch):
    """`demo --synthetic` then `demo` into one workdir: the trained models' report held the
    simulated tasks too (sim_up -> near/mid/far beside synth_us, "10 of 16 trusted answers" counted
    both). Now either order is refused before anything is trained or logged."""
    from meta_study import demo
    from meta_study.errors import UserError

    wd = tmp_path / "wd"
    _demo_store(wd, _tracking(wd), demo.SYNTH_EXPERIMENT)
    with pytest.raises(UserError, match=r"--workdir W: holds the results of `meta-study demo --synthetic`, which "
                                        r"this demo's report would mix"):
        demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=False)
    monkeypatch.setattr(demo, "synthetic_logged", lambda uri: True)   # its runs in its MLflow database
    (wd / "mlflow.db").touch()
    assert demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=True) is True    # its own kind: goes on
    other = tmp_path / "trained"
    _demo_store(other, _tracking(other), demo.EXPERIMENT)
    (other / "ray" / "demo").mkdir(parents=True)
    with pytest.raises(UserError, match=r"holds the results of `meta-study demo`, which"):
        demo.refuse_mixed_workdir(other, "W", _tracking(other), synthetic=True)
    assert demo.refuse_mixed_workdir(other, "W", _tracking(other), synthetic=False) is None


def test_the_refusal_is_one_line_before_anything_is_logged(tmp_path):
    from meta_study import demo

    wd = tmp_path / "wd"
    _demo_store(wd, _tracking(wd), demo.EXPERIMENT)
    r = run_cli("demo", "--synthetic", "--workdir", str(wd), timeout=300)
    one_error_line(r, f"--workdir {wd}: holds the results of `meta-study demo`", f"remove {wd.resolve()}")
    assert not (wd / "mlflow.db").exists() and not (wd / "refits").exists()


def test_a_moved_or_copied_workdir_is_refused_not_ingested_twice(tmp_path):
    """A demo workdir copied or moved: ingest keys rows by their source, the MLflow database's
    path, so the 240 simulated runs went in again under the new path (480 in the report)."""
    from meta_study import demo
    from meta_study.errors import UserError

    wd = tmp_path / "moved"
    _demo_store(wd, "sqlite:////elsewhere/meta-study-demo/mlflow.db", demo.SYNTH_EXPERIMENT)
    with pytest.raises(UserError, match=r"its store holds the demo's runs ingested from another MLflow database "
                                        r"\(sqlite:////elsewhere/meta-study-demo/mlflow.db: a workdir moved"):
        demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=True)


def test_stored_models_that_mlflow_or_the_sweep_state_no_longer_has_are_refused(tmp_path):
    """mlflow.db removed: the simulated runs were logged again under new ids beside the stored
    ones; WORKDIR/ray removed (the old advice after a search-space change): 18 more models were
    trained beside the first 18, and the report held both."""
    from meta_study import demo
    from meta_study.errors import UserError

    wd = tmp_path / "syn"
    _demo_store(wd, _tracking(wd), demo.SYNTH_EXPERIMENT)       # no mlflow.db beside it
    with pytest.raises(UserError, match=r"its store holds simulated runs that its MLflow database no longer has"):
        demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=True)
    assert not (wd / "mlflow.db").exists()
    trained = tmp_path / "trained"
    _demo_store(trained, _tracking(trained), demo.EXPERIMENT)   # no WORKDIR/ray/demo
    with pytest.raises(UserError, match=r"holds the models of an earlier demo whose sweep state .* is gone"):
        demo.refuse_mixed_workdir(trained, "W", _tracking(trained), synthetic=False)


def test_trial_runs_in_mlflow_without_the_sweep_state_are_refused(tmp_path):
    """Models trained (in MLflow) but never ingested, then WORKDIR/ray removed: a new training's
    runs went into the same experiment, and ingest read both sets."""
    from meta_study import demo
    from meta_study.errors import UserError
    from meta_study.mlflow_client import get_or_create_experiment, mlflow_client

    wd = tmp_path / "wd"
    wd.mkdir()
    tracking = _tracking(wd)
    client = mlflow_client(tracking)
    exp = get_or_create_experiment(client, tracking, demo.EXPERIMENT)
    client.create_run(exp, tags={"meta_study.role": "sweep"})   # a parent alone: nothing trained yet
    assert demo.refuse_mixed_workdir(wd, "W", tracking, synthetic=False) is None
    client.create_run(exp, tags={"meta_study.role": "trial"})
    with pytest.raises(UserError, match=r"sweep state .* is gone; training again would report both"):
        demo.refuse_mixed_workdir(wd, "W", tracking, synthetic=False)
    (wd / "ray" / "demo").mkdir(parents=True)                   # its sweep resumes: no refusal
    assert demo.refuse_mixed_workdir(wd, "W", tracking, synthetic=False) is None


def test_a_fresh_workdir_passes_without_asking_mlflow(tmp_path, monkeypatch):
    from meta_study import demo

    def asked(*a, **k):
        raise AssertionError("MLflow asked about a workdir without a database")

    monkeypatch.setattr(demo, "synthetic_logged", asked)
    monkeypatch.setattr(demo, "_trained_runs", asked)
    wd = tmp_path / "fresh"
    wd.mkdir()
    assert demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=True) is False
    assert demo.refuse_mixed_workdir(wd, "W", _tracking(wd), synthetic=False) is None
    assert list(wd.iterdir()) == []


def test_the_synthetic_step_and_its_logging_take_the_answer_they_were_given(tmp_path, monkeypatch):
    """`demo --synthetic` asked MLflow twice whether its runs were there (the step's line, then
    log_synthetic); the demo now asks once and hands the answer to both."""
    from meta_study import demo

    def asked(*a, **k):
        raise AssertionError("asked MLflow again")

    monkeypatch.setattr(demo, "synthetic_logged", asked)
    tracking = _tracking(tmp_path)
    assert "reused the runs of an earlier demo" in demo.synthetic_step(tracking, logged=True)
    assert "logged to MLflow" in demo.synthetic_step(tracking, logged=False)
    assert demo.log_synthetic(tracking, logged=True) == 240   # nothing logged


def test_the_search_space_refusal_advises_what_the_demo_then_accepts(tmp_path, monkeypatch):
    """The refusal said "remove WORKDIR/ray to train them again": that trained 18 more models
    beside the old ones in MLflow and in the store. It names the workdir now."""
    from meta_study import demo
    from meta_study.errors import UserError
    from meta_study.tune import runner

    def refuse(spec, options):
        raise UserError("--resume: the search space of sweep demo changed since it started (fingerprint a -> b): ...")

    monkeypatch.setattr(runner, "run_sweep", refuse)
    with pytest.raises(UserError) as e:
        demo._train(tmp_path, "sqlite:///x.db", serial=True)
    assert str(e.value).endswith(f"or remove {tmp_path} to train them again"), str(e.value)


@pytest.fixture(scope="module")
def timm_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("st") / "store"
    r = run_cli("ingest", str(REPO / "examples" / "data" / "timm"), "--mapping",
                str(REPO / "examples" / "mappings" / "timm_wide.yaml"), "--store", str(store), "--quiet")
    assert r.returncode == 0, r.stderr
    return store


def test_head_wd_script_says_when_the_selection_matches_nothing(timm_store, tmp_path):
    """A mistyped --ds-task said "no rows with head_wd (run sweeps/head_wd.py and ingest it)", as
    if the sweep were missing."""
    r = subprocess.run([sys.executable, str(REPO / "analysis" / "head_wd_d1_d4.py"), str(timm_store), "--out",
                        str(tmp_path / "o"), "--ds-task", "nope"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    one_error_line(r, f"{timm_store}: no rows match the selection")
    assert not (tmp_path / "o").exists()


def test_every_analysis_option_has_help_and_fig3_names_its_ray_default():
    """fig3_sensitivity's --trials, --seed and --serial had no help, and --address said "default:
    a local Ray" where $RAY_ADDRESS is taken first (a Ray job's cluster); fig1's --holdout-quantile
    had none either."""
    for name, flags in (("fig3_sensitivity.py", ("--trials", "--seed", "--serial", "--sizes", "--address")),
                        ("fig1_grid.py", ("--holdout-quantile", "--max-group-figures"))):
        r = subprocess.run([sys.executable, str(REPO / "analysis" / name), "--help"], capture_output=True, text=True,
                           timeout=120, cwd="/")
        assert r.returncode == 0, r.stderr
        options = r.stdout.split("options:", 1)[1].split("\n\n", 1)[0]
        for flag in flags:
            # the flag's entry: its line and the indented lines below it hold more than the metavar
            entry = options.split(f"  {flag}", 1)[1].split("\n  -", 1)[0]
            words = entry.split()
            assert len(words) > 2, (name, flag, entry)
    r = subprocess.run([sys.executable, str(REPO / "analysis" / "fig3_sensitivity.py"), "--help"],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert "$RAY_ADDRESS" in " ".join(r.stdout.split()), r.stdout
