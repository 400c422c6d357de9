"""Review of the sweep's main flow (meta_study/tune/runner.py, state.py): each test failed before
its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from meta_study.errors import UserError
from meta_study.tune import provenance
from meta_study.tune.runner import (SPACE_KEY, SweepSpec, grid, parse_options, plan_sweep, space_fingerprint,
                                    sweep_settings)
from meta_study.tune.state import RECORD, SUBDIR, Session, StateDir, SweepRecord

REPO = Path(__file__).resolve().parents[1]


def _space(options):
    return {"seed": grid([0, 1])}


_space.__module__ = "__notebook_cell__"      # no script file: the space is in no code version


def _space2(options):
    return {"seed": grid([0, 1, 2])}


_space2.__module__ = "__notebook_cell__"

SPEC = SweepSpec(name="nb", doc="A sweep from a notebook.\n", space=_space,
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


@pytest.mark.parametrize("name, says", [
    ("..", "--name '..': is no directory name"),
    (".", "--name '.': is no directory name"),
    ("a/b", "--name 'a/b': holds '/'"),
    ("/tmp/x", "--name '/tmp/x': holds '/'"),
    ("a\\b", "holds '\\\\'"),
    ("a?x=1", "holds '?'"),
    ("a\nb", "holds a control character"),
    ("", "is no directory name"),
])
def test_a_name_that_is_not_one_directory_is_refused_in_one_line(name, says):
    """``--name ..`` put the sweep's Tune state and record in the storage path's parent (and its
    default sqlite file beside that); ``a/b`` or an absolute path elsewhere."""
    with pytest.raises(UserError) as e:
        parse_options(SPEC, ["--smoke", "--name", name])
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert parse_options(SPEC, ["--name", "zoo-2026.12_a"]).name == "zoo-2026.12_a"


@pytest.mark.slow(10)
def test_a_sweep_named_dot_dot_stops_before_anything_starts(tmp_path):
    st = tmp_path / "st" / "ray"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke", "--name", "..",
                        "--storage-path", str(st)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "head_wd: --name '..': is no directory name; a sweep's name is one directory under --storage-path"]
    assert not (tmp_path / "st").exists()


def test_the_sweep_record_is_written_durably(tmp_path, monkeypatch):
    """Every resume rewrites sweep.json by a rename without fsync: after a power loss ext4/XFS may
    leave it empty, and the sweep's parent run id with it. The file and its directory are synced."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:           # the real fsync, noting what it synced
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state = StateDir(str(tmp_path / "sweep"))
    rec = SweepRecord(sweep="s", experiment="e", experiment_id="1", parent_run_id="p1", tracking_uri="sqlite:///x",
                      sessions=(Session(started="t", code="c", git_sha="g", researcher="r"),))
    assert state.create_record(rec)
    meta = str(tmp_path / "sweep" / SUBDIR)
    assert meta in synced                # the new name (create_record synced only the file's data)
    synced.clear()
    state.write_record(rec.with_session(Session(started="t2", code="c", git_sha="g", researcher="r", resume=True)))
    assert any(p.startswith(meta + "/.tmp-") for p in synced), synced     # the data, before the rename
    assert synced[-1] == meta, synced                                     # the rename
    assert len(state.read_record().sessions) == 2
    assert [n for n in os.listdir(meta) if n.startswith(".tmp-")] == []
    synced.clear()
    state.spool(['{"op": 1}'])           # MLflow operations the writer could not send
    assert synced and synced[-1] == meta + "/spool"


def test_space_fingerprints_follow_the_space():
    from ray import tune

    a = {"lr": tune.loguniform(1e-4, 1e-1), "wd": tune.choice([0.0, 0.1]), "seed": grid([0, 1])}
    assert space_fingerprint(a) == space_fingerprint({"seed": grid([0, 1]), "wd": tune.choice([0.0, 0.1]),
                                                      "lr": tune.loguniform(1e-4, 1e-1)})
    for other in ({**a, "lr": tune.loguniform(1e-4, 1e-2)}, {**a, "lr": tune.uniform(1e-4, 1e-1)},
                  {**a, "seed": grid([0, 1, 2])}, {**a, "wd": tune.choice([0.0, 0.3])}):
        assert space_fingerprint(other) != space_fingerprint(a)
    assert space_fingerprint(lambda trial: {}) is None          # define-by-run: its code is the script's


def _started(tmp_path, spec: SweepSpec) -> tuple[list[str], StateDir]:
    """A sweep started (its record written as run_sweep writes it), nothing run."""
    argv = ["--smoke", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    o = parse_options(spec, argv)
    p = plan_sweep(spec, o)
    code = provenance.code_version([])
    rec = SweepRecord(sweep=p.name, experiment=p.experiment, experiment_id="1", parent_run_id="p1",
                      tracking_uri=f"sqlite:///{tmp_path}/m.db", settings=sweep_settings(spec, o),
                      sessions=(Session(started="t", code=code, git_sha="g", researcher="r"),))
    assert p.code == code and p.state.create_record(rec)
    return argv, p.state


def test_a_resume_of_a_notebook_sweep_with_another_space_is_refused(tmp_path):
    """A space defined in a notebook is in no code version: a resume with a changed space was
    accepted, and Tune went on with the old one without a word."""
    argv, state = _started(tmp_path, SPEC)
    assert plan_sweep(SPEC, parse_options(SPEC, [*argv, "--resume"])).resume       # the same space
    with pytest.raises(UserError) as e:
        plan_sweep(replace(SPEC, space=_space2), parse_options(SPEC, [*argv, "--resume"]))
    assert "search space of sweep nb-smoke changed since it started" in str(e.value), str(e.value)
    assert "--name" in str(e.value) and "\n" not in str(e.value)
    # a record from before the fingerprint was kept: nothing to compare
    rec = state.read_record()
    (Path(state.path(RECORD))).unlink()
    assert state.create_record(replace(rec, settings={k: v for k, v in rec.settings.items() if k != SPACE_KEY}))
    assert plan_sweep(replace(SPEC, space=_space2), parse_options(SPEC, [*argv, "--resume"])).resume


@pytest.mark.slow(40)
def test_a_quiet_sweep_shows_neither_rays_start_nor_tunes_boxes(tmp_path):
    """--quiet (the demo's sweeps) still printed Ray's "Started a local Ray instance." and Tune's
    "Configuration for experiment" table and "View detailed results here"."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke", "--quiet", "--storage-path",
                        str(tmp_path / "st" / "ray")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for noise in ("Started a local Ray instance", "Configuration for experiment", "View detailed results",
                  "Trial status"):
        assert noise not in out, out[-3000:]
    assert '"finished": 2' in r.stdout


BAD_SPACE = '''"""A sweep whose define-by-run space fails at its first draw."""
from meta_study.tune.runner import SweepSpec, sweep_main


class Space:
    def __call__(self, trial):
        trial.suggest_float("_x", 0, 1)
        raise ValueError("my space is broken")


SPEC = SweepSpec(name="bad", doc=__doc__, space=lambda o: Space(), search="optuna", smoke_samples=2,
                 smoke=dict(model_name="vit_tiny_cpu", epochs=1))

if __name__ == "__main__":
    sweep_main(SPEC)
'''


@pytest.mark.slow(30)
def test_a_tuner_that_fails_leaves_no_run_running(tmp_path):
    """A define-by-run space that raises (a notebook's bug) made Tuner.fit raise after the
    parent run was created: the parent stayed RUNNING for good, a live sweep to the UI."""
    from mlflow.tracking import MlflowClient

    from test_sweeps import sweep

    script = tmp_path / "bad_space.py"
    script.write_text(BAD_SPACE)
    r = sweep("bad", "--quiet", "--storage-path", str(tmp_path / "st" / "ray"), cwd=tmp_path, script=script,
              timeout=600)
    assert r.returncode == 1 and "my space is broken" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'st' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("bad").experiment_id])
    assert [(x.info.run_name, x.info.status) for x in runs] == [("sweep bad-smoke", "FAILED")]


def test_a_downstream_task_given_twice_is_refused():
    """``--ds-task pets --ds-task pets`` was accepted: every trial probed pets twice, for one
    set of metrics under the same keys."""
    from meta_study.tune.runner import check_fixed_config

    for argv, says in ((["--ds-task", "synth_combo", "--ds-task", "synth_count", "--ds-task", "synth_combo"],
                        "--ds-task synth_combo given 2 times: give each downstream task once"),
                       (["--set", "ds_tasks=['synth_count', 'synth_count', 'synth_count']"],
                        "--set ds_tasks: synth_count given 3 times: give each downstream task once")):
        with pytest.raises(UserError) as e:
            check_fixed_config(SPEC, parse_options(SPEC, ["--smoke", *argv]))
        assert str(e.value) == says
    check_fixed_config(SPEC, parse_options(SPEC, ["--smoke", "--ds-task", "synth_combo", "--ds-task", "synth_count"]))


@pytest.mark.parametrize("content", [b"", b'{"final": 1.0, "us/synth_us/to', b"[1]"])
def test_a_completion_record_cut_short_is_no_record(tmp_path, content):
    """A trial's meta_study_final.json (or an evaluation's record) that a crash left empty or cut
    short was a JSONDecodeError in every later attempt of that trial: it errored on each retry and
    each --resume, never training again. Records are now written durably, and one that does not
    read is none (the trial trains again)."""
    import pyarrow.fs as pafs

    from meta_study.tune.trial import read_record, write_record

    fs, path = pafs.LocalFileSystem(), str(tmp_path / "t1" / "meta_study_final.json")
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "meta_study_final.json").write_bytes(content)
    assert read_record(fs, path) is None
    write_record(fs, path, {"final": 1.0})
    assert read_record(fs, path) == {"final": 1.0} and os.listdir(tmp_path / "t1") == ["meta_study_final.json"]


@pytest.mark.parametrize("experiment", ["", "..", ".", " ", "a\nb"])
def test_an_experiment_name_that_is_none_is_refused(experiment):
    """``--experiment ''`` ran under the sweep's default name without a word, and ``..`` put the
    experiment's artifacts (PARENT/mlartifacts/..) into PARENT itself, beside the sqlite file."""
    with pytest.raises(UserError) as e:
        parse_options(SPEC, ["--experiment", experiment])
    assert str(e.value).startswith(f"--experiment {experiment!r}: not an experiment name"), str(e.value)
    assert parse_options(SPEC, ["--experiment", "lab/head wd"]).experiment == "lab/head wd"


def test_an_errored_trials_traceback_is_named_where_it_is():
    """On s3:// storage the summary said "(traceback: lab/tune/zoo/t1/error.txt)": Tune's
    Result.path without its scheme, read as a path on this machine."""
    from meta_study.tune.runner import error_file

    assert error_file("lab/tune/zoo/t1", "s3://lab/tune?endpoint_override=http://minio:9000") == \
        "s3://lab/tune/zoo/t1/error.txt"
    assert error_file("lab/tune/zoo/t1/", "gs://lab/tune") == "gs://lab/tune/zoo/t1/error.txt"
    assert error_file("/data/tune/zoo/t1", "/data/tune") == "/data/tune/zoo/t1/error.txt"


def test_the_sweeps_best_accuracy_comes_from_finished_runs_only(tmp_path):
    """best/us/.../top1 on the parent run was the highest last value over every child, an errored
    trial's mid-training accuracy (or an interrupted or orphaned one's) included: a best that no
    finished model, and no row ingest makes, has."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from meta_study.tune.tracking import log_sweep_summary

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("e")
    parent = c.create_run(exp).info.run_id
    for status, acc in (("FINISHED", 0.5), ("FAILED", 0.9), ("KILLED", 0.8), ("FINISHED", 0.4)):
        run = c.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
        c.log_batch(run, metrics=[Metric("us/synth_us/top1", acc, 0, 0)])
        c.set_terminated(run, status=status)
    out = log_sweep_summary(uri, exp, parent, {"trials": 4, "finished": 2, "errored": 1})
    assert out["best/us/synth_us/top1"] == 0.5 and out["sweep/errored"] == 1.0
    assert c.get_run(parent).data.metrics["best/us/synth_us/top1"] == 0.5


@pytest.mark.parametrize("flag", ["--storage-path", "--researcher"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_storage_path_or_researcher_is_refused_not_defaulted(flag, value):
    """``--storage-path "$UNSET"`` ran on ./meta-study-sweeps/ray and ``--researcher ''`` tagged
    every run with $USER, without a word."""
    with pytest.raises(UserError) as e:
        parse_options(SPEC, [flag, value])
    assert str(e.value).startswith(f"{flag} '': empty"), str(e.value)
    assert parse_options(SPEC, ["--researcher", "ada"]).researcher == "ada"
