"""The typed sweep API: flags become SweepOptions, options become the trial config and hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from conftest import REPO, sweep_module
from meta_study.errors import UserError
from meta_study.tune.runner import SMOKE, SweepOptions, SweepSpec, fixed_config, grid, parse_options, run_sweep, trial_hooks
from meta_study.tune.preflight import (default_storage, plan_session, refuse_runtime_env_secrets, refuse_secrets,
                                       runtime_env_of_job)
from meta_study.tune.state import Session, StateDir, SweepRecord

SPEC = SweepSpec(name="t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0, 1] if o.smoke else [0])},
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


def test_flags_become_typed_options():
    o = parse_options(SPEC, ["--smoke", "--set", "lr=0.01", "--set", "optimizer=sgd", "--ds-task", "a", "--ds-task", "b",
                             "--dataset", "pets=imagefolder:/data/pets", "--workers-per-trial", "2",
                             "--gpus-per-trial", "1", "--cpus-per-trial", "4", "--researcher", "ada"])
    assert o.smoke and o.overrides == {"lr": 0.01, "optimizer": "sgd"} and o.ds_tasks == ("a", "b")
    assert o.datasets == {"pets": "imagefolder:/data/pets"} and o.researcher == "ada"
    assert parse_options(SPEC, []) == SweepOptions(researcher=parse_options(SPEC, []).researcher)


def test_the_config_holds_train_config_fields_only_and_hooks_travel_beside_it():
    o = SweepOptions(smoke=True, overrides={"lr": 0.01}, datasets={"pets": "imagefolder:/p"}, workers_per_trial=2,
                     gpus_per_trial=1.0, cpus_per_trial=4.0, fail_once=True)
    cfg = fixed_config(SPEC, o)
    assert cfg == {**SPEC.base, **SMOKE, **SPEC.smoke, "lr": 0.01}       # smoke: shared settings, then the sweep's
    assert not any(k.startswith("_") for k in cfg)
    h = trial_hooks(o)
    assert (dict(h.datasets), h.workers, h.torch_trainer, h.use_gpu, h.worker_cpus, h.fail_once) == (
        {"pets": "imagefolder:/p"}, 2, True, True, 4.0, True)
    assert fixed_config(SPEC, SweepOptions()) == SPEC.base
    assert trial_hooks(SweepOptions(torch_trainer=True)).torch_trainer       # one worker, Ray Train all the same
    assert not trial_hooks(SweepOptions()).torch_trainer


@pytest.mark.parametrize("argv, says", [
    (["--set", "lr"], "--set 'lr': expected KEY=VALUE"),
    (["--dataset", "pets=/data/pets"], "expected NAME=imagefolder:PATH"),
    (["--workers-per-trial", "0"], "--workers-per-trial 0: must be >= 1"),
    # 0 ran the sweep's default number of trials, -1 sampled forever; a negative resource reached Ray
    (["--num-samples", "0"], "--num-samples 0: must be >= 1"),
    (["--num-samples", "-1"], "--num-samples -1: must be >= 1"),
    (["--cpus-per-trial", "-1"], "--cpus-per-trial -1: must be a number >= 0"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial -1: must be a number >= 0"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial 0: a trial needs a CPU or a GPU"),
    # 0 ran every trial at once (Tune's "no limit"), -1 reached Tune
    (["--max-concurrent", "0"], "--max-concurrent 0: must be >= 1"),
    # --ds-task repeats; a second --us-task replaced the first without a word
    (["--us-task", "a", "--us-task", "b"], "--us-task given 2 times (a, b): a sweep pre-trains on one upstream task"),
])
def test_bad_flags_are_one_line_user_errors(argv, says):
    with pytest.raises(UserError, match=None) as e:
        parse_options(SPEC, argv)
    assert says in str(e.value)


# ---- items 3, 6, 7 and 8 of issue 23: checks before anything starts, provenance, resources ----------



def _record(code: str = "c1", experiment: str = "exp", tracking: str = "http://mlflow:5000") -> SweepRecord:
    return SweepRecord(sweep="s", experiment=experiment, experiment_id="1", parent_run_id="p", tracking_uri=tracking,
                       sessions=(Session(started="t", code=code, git_sha="g", researcher="r"),))


def _plan(**kw):
    args = dict(record=None, tune_state=False, resume=False, experiment=None, default_experiment="exp", code="c1",
                allow_code_change=False, experiment_dir="/st/s", tracking_uri="http://mlflow:5000")
    return plan_session(**{**args, **kw})


def test_resume_needs_something_to_restore_and_a_sweep_is_never_started_over():
    assert _plan().resume is False and _plan(experiment="mine").experiment == "mine"
    with pytest.raises(UserError, match="--resume: nothing to restore at /st/s"):
        _plan(resume=True)
    with pytest.raises(UserError, match="Tune state but no meta-study sweep record"):
        _plan(resume=True, tune_state=True)
    with pytest.raises(UserError, match="exists already: pass --resume"):
        _plan(record=_record())
    with pytest.raises(UserError, match="exists already"):
        _plan(tune_state=True)
    p = _plan(record=_record(), tune_state=True, resume=True)
    assert p.resume and p.restore_tune and p.experiment == "exp" and not p.code_changed
    # a record without Tune's state (the driver died before Tune's first save): same sweep, a new Tuner
    assert _plan(record=_record(), resume=True).restore_tune is False


def test_a_resume_logs_where_the_sweep_always_did():
    with pytest.raises(UserError, match="logs to MLflow experiment 'exp', not 'other'"):
        _plan(record=_record(), tune_state=True, resume=True, experiment="other")
    assert _plan(record=_record(), tune_state=True, resume=True, experiment="exp").experiment == "exp"
    with pytest.raises(UserError, match="logs to http://mlflow:5000, not http://elsewhere:5000"):
        _plan(record=_record(), tune_state=True, resume=True, tracking_uri="http://elsewhere:5000")


def test_a_code_change_is_refused_with_the_reason_or_allowed_and_recorded():
    with pytest.raises(UserError, match=r"code changed since sweep s last ran \(code version c1 -> c2\)"):
        _plan(record=_record(code="c1"), tune_state=True, resume=True, code="c2")
    p = _plan(record=_record(code="c1"), tune_state=True, resume=True, code="c2", allow_code_change=True)
    assert p.resume and p.code_changed


def test_a_resume_with_other_settings_is_refused_naming_the_first_that_differs(tmp_path):
    """Tuner.restore goes on with the first session's search space and sample count: a resume
    with --set lr=0.01 or --num-samples 10 ran the old ones without a word."""
    from dataclasses import replace

    from meta_study.tune.runner import sweep_settings

    started = sweep_settings(SPEC, parse_options(SPEC, ["--smoke"]))
    assert started["num_samples"] == SPEC.smoke_samples and started["epochs"] == 2
    rec = replace(_record(), settings=started)
    same = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume"]))
    assert _plan(record=rec, tune_state=True, resume=True, settings=same).resume
    for argv, says in ((["--set", "lr=0.01"], "started with lr unset, this command gives 0.01"),
                       (["--set", "epochs=3"], "started with epochs=2, this command gives 3"),
                       (["--num-samples", "10"], f"started with num_samples={SPEC.smoke_samples}, this command gives 10"),
                       (["--ds-task", "synth_count"], "started with ds_tasks=")):
        other = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume", *argv]))
        with pytest.raises(UserError) as e:
            _plan(record=rec, tune_state=True, resume=True, settings=other)
        assert says in str(e.value) and "--name" in str(e.value), str(e.value)
    # a record from before settings were kept: nothing to compare
    assert _plan(record=_record(), tune_state=True, resume=True, settings=same).resume


def test_no_default_storage_in_a_ray_jobs_working_dir(tmp_path):
    """Under `ray job submit` the cwd is a per-upload copy named after a hash of the code: a code
    change moved the old default storage, and a resume silently started the sweep over."""
    assert default_storage("root", str(tmp_path)) == str(tmp_path / "root" / "ray")
    job = "/tmp/ray/session_x/runtime_resources/working_dir_files/_ray_pkg_2ebe52e8896e5be7"
    with pytest.raises(UserError, match="no --storage-path: under `ray job submit`.*s3://BUCKET/PATH"):
        default_storage("root", job)


@pytest.mark.parametrize("kw, says", [
    (dict(storage_path="s3://AKIAXXXX:s3cr3t@lab/tune"), "--storage-path s3://lab/tune: credentials"),
    (dict(tracking_uri="http://u:pw@mlflow:5000"), "--tracking-uri http://mlflow:5000: credentials"),
    (dict(datasets={"pets": "parquet:s3://k:s3cr3t@lab/train.parquet"}), "--dataset pets: credentials"),
])
def test_secrets_in_uris_are_refused_without_repeating_them(kw, says):
    with pytest.raises(UserError) as e:
        refuse_secrets(**{"tracking_uri": None, "storage_path": None, **kw})
    assert says in str(e.value) and "s3cr3t" not in str(e.value) and "pw@" not in str(e.value)


def test_secrets_in_a_jobs_runtime_env_are_refused():
    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {
        "working_dir": "gcs://_ray_pkg_x.zip", "env_vars": {"AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "eu-west-1",
                                                            "META_STUDY_GIT_SHA": "abc"}}})}
    env = runtime_env_of_job(job)
    assert env["env_vars"]["AWS_REGION"] == "eu-west-1"
    with pytest.raises(UserError, match="runtime_env sets AWS_SECRET_ACCESS_KEY: Ray's job API shows") as e:
        refuse_runtime_env_secrets(env)
    assert "x" not in str(e.value).split("sets ", 1)[1].split(":")[0].replace("AWS_SECRET_ACCESS_KEY", "")
    refuse_runtime_env_secrets({"env_vars": {"AWS_REGION": "x", "AWS_ENDPOINT_URL_S3": "http://minio:9000"}})
    assert runtime_env_of_job({}) == {}


def test_the_submit_wrapper_hands_provenance_to_the_job_and_refuses_secrets(tmp_path):
    from meta_study.tune.submit import job_runtime_env, refuse_secret_args, submit_git_sha

    env = job_runtime_env(".", {"env_vars": {"FOO": "1"}, "pip": ["x"]}, git_sha="abc", researcher="ada")
    assert env == {"working_dir": ".", "pip": ["x"], "env_vars": {"FOO": "1", "META_STUDY_GIT_SHA": "abc",
                                                                  "META_STUDY_RESEARCHER": "ada"}}
    with pytest.raises(UserError, match="MLFLOW_TRACKING_PASSWORD"):
        job_runtime_env(".", {"env_vars": {"MLFLOW_TRACKING_PASSWORD": "pw"}}, git_sha="a", researcher="r")
    # Hugging Face's TOKENIZERS_PARALLELISM names no secret (it was refused as a "TOKEN")
    job_runtime_env(".", {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}, git_sha="a", researcher="r")
    with pytest.raises(UserError, match="command line holds credentials"):
        refuse_secret_args(["python", "sweeps/zoo.py", "--tracking-uri=http://u:pw@mlflow:5000"])
    # a secret assigned on the command line (Ray's job API shows the entrypoint to anyone)
    for cmd in (["MLFLOW_TRACKING_PASSWORD=hunter2", "python", "sweeps/zoo.py"],
                ["env", "AWS_SECRET_ACCESS_KEY=abc", "python", "sweeps/zoo.py"]):
        with pytest.raises(UserError, match=r"holds a secret \(\w+=\.\.\.\)") as e:
            refuse_secret_args(cmd)
        assert "hunter2" not in str(e.value) and "abc" not in str(e.value)
    refuse_secret_args(["env", "RAY_AUTH_TOKEN_PATH=/etc/ray/token", "TOKENIZERS_PARALLELISM=false", "python",
                        "sweeps/zoo.py", "--set", "tokens=3", "MAX_TOKENS="])   # no secret among them
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert submit_git_sha(str(REPO)).removesuffix("-dirty") == head
    assert submit_git_sha(str(tmp_path)) == "unknown"
    # refused before anything reaches Ray's job API
    r = subprocess.run([sys.executable, "-m", "meta_study.tune.submit", "--address", "http://127.0.0.1:9",
                        "--runtime-env-json", '{"env_vars": {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}}', "--",
                        "python", "sweeps/head_wd.py"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "submit: the job's runtime_env sets AWS_SECRET_ACCESS_KEY" in r.stderr
    assert "s3cr3t" not in r.stderr and "Traceback" not in r.stderr


def test_provenance_outside_git_and_the_researcher(monkeypatch, tmp_path):
    from meta_study.tune import provenance

    monkeypatch.setenv("META_STUDY_GIT_SHA", "abc123")
    assert provenance.git_sha() == "abc123"                           # what the submit wrapper set
    monkeypatch.delenv("META_STUDY_GIT_SHA")
    assert provenance.git_sha(tmp_path) == "unknown"                  # a job's working dir: no .git
    monkeypatch.setenv("META_STUDY_RESEARCHER", "ada")
    monkeypatch.setenv("USER", "ray")
    assert provenance.researcher() == "ada" and provenance.researcher("bob") == "bob"
    assert SweepOptions().researcher == "ada"
    monkeypatch.delenv("META_STUDY_RESEARCHER")
    assert provenance.researcher() == "ray"
    v = provenance.code_version()
    assert len(v) == 16 and v == provenance.code_version()


def test_checkpoint_uris_are_full():
    from meta_study.tune.provenance import full_uri

    env = {"AWS_ENDPOINT_URL_S3": "http://minio.lab:9000"}
    assert (full_uri("lab/tune/s/t1/checkpoint_000003", "s3", "s3://lab/tune", env)
            == "s3://lab/tune/s/t1/checkpoint_000003?endpoint_override=http%3A%2F%2Fminio.lab%3A9000")
    assert full_uri("lab/tune/s/t1/checkpoint_000003", "s3", "s3://lab/tune", {}) == \
        "s3://lab/tune/s/t1/checkpoint_000003"                       # AWS itself: no endpoint
    assert full_uri("b/t/checkpoint_000001", "gcs", "gs://b/t", {}) == "gs://b/t/checkpoint_000001"
    assert full_uri("/nfs/tune/s/t1/checkpoint_000001", "local", "/nfs/tune", {}) == \
        "file:///nfs/tune/s/t1/checkpoint_000001"


def test_the_zoo_sizes_each_trial_to_its_model():
    zoo = sweep_module("zoo")
    ZOO, resources = zoo.SPEC, zoo.resources
    from meta_study.tune.runner import PerTrialResources

    gpu = SweepOptions(gpus_per_trial=1.0, cpus_per_trial=4.0)
    assert ZOO.resources is resources
    sized = {m: resources({"model_name": m}, gpu) for m in ("vit_ti", "vit_s", "vit_b", "resnet_18", "resnet_50")}
    assert [sized[m].gpu for m in ("vit_ti", "vit_s", "vit_b")] == [0.25, 0.5, 1.0]
    assert sized["resnet_18"].gpu < sized["resnet_50"].gpu and all(r.cpu == 4.0 for r in sized.values())
    assert sized["vit_b"].memory_gb > sized["vit_ti"].memory_gb
    per_trial = PerTrialResources(ZOO.resources, gpu)
    assert per_trial({"model_name": "vit_ti"}) == {"cpu": 4.0, "gpu": 0.25, "memory": 4 * 2**30}
    assert PerTrialResources(ZOO.resources, SweepOptions(workers_per_trial=2))({"model_name": "vit_b"}) == \
        {"cpu": 0.1, "gpu": 0.0}                                    # a TorchTrainer's workers ask for their own
    smoke = SweepOptions(smoke=True)
    assert resources({"model_name": "resnet_tiny_cpu"}, smoke).cpu == 0.5
    assert resources({"model_name": "vit_tiny_cpu"}, smoke).cpu == 1.0
    # node-type targeting: custom resources and a GPU model
    from meta_study.tune.runner import TrialResources

    assert TrialResources(gpu=1, custom={"large_gpu": 1}, accelerator_type="A100").as_tune() == \
        {"cpu": 1.0, "gpu": 1.0, "large_gpu": 1.0, "accelerator_type:A100": 0.001}


def test_resume_with_nothing_to_restore_fails_in_one_line_and_starts_nothing(tmp_path):
    """Before, --resume without a sweep to restore started a new one (after a code change moved
    the default storage: the same seeded models trained again)."""
    st = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    base = [sys.executable, str(REPO / "sweeps" / "head_wd.py"), "--smoke", "--storage-path", str(st),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    r = subprocess.run([*base, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"head_wd: --resume: nothing to restore at {st}/head_wd-smoke (no sweep there); check --storage-path and "
        "--name, or drop --resume to start a new sweep"]
    assert not st.exists() and not (tmp_path / "mlflow.db").exists()        # no Ray, no MLflow, no storage
    # a sweep record of another experiment under that name: a new sweep is refused, a resume too
    StateDir(str(st / "head_wd-smoke")).write_record(
        _record(experiment="someone-elses", tracking=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    r = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "exists already: pass --resume" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([*base, "--resume", "--experiment", f"mine-{uuid.uuid4().hex[:4]}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "logs to MLflow experiment 'someone-elses'" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_new_sweeps_record_is_created_by_exactly_one_driver(tmp_path):
    """Two drivers start the same new sweep at once: the record is created once (link(2) locally,
    If-None-Match on s3:// in tests/test_store_s3.py), the loser is refused in one line and closes
    the parent run it made, so no second parent stays RUNNING."""
    import threading

    from mlflow.tracking import MlflowClient

    from meta_study.errors import UserError
    from meta_study.tune.runner import SweepOptions, _Plan, _record_session

    exp_dir = str(tmp_path / "ray" / "s")
    wins = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        wins.append(StateDir(exp_dir).create_record(_record(experiment=f"e{i}", tracking="sqlite:///x.db")))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert not [p for p in (tmp_path / "ray" / "s" / "meta_study").iterdir() if p.name.startswith(".tmp-")]

    # the loser of the race, as the runner sees it: planned with no record, finds one on creating
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = StateDir(exp_dir).read_record()
    plan = _Plan(name="s", storage=str(tmp_path / "ray"), exp_dir=exp_dir, tracking=tracking, state=StateDir(exp_dir),
                 record=None, resume=False, restore_tune=False, experiment="mine", code="c", code_changed=False)
    with pytest.raises(UserError, match=r"^sweep s: another driver started it at the same time") as e:
        _record_session(SPEC, plan, SweepOptions(smoke=True), {}, {"git_sha": "x"})
    assert "--resume" in str(e.value)
    assert StateDir(exp_dir).read_record() == winner                         # the winner's record stands
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]                       # ours, closed


@pytest.mark.parametrize("argv, says", [
    (["--set", "lr=abc"], "--set lr='abc': expected a number (default None)"),
    (["--set", "nosuchkey=1"], "--set nosuchkey: no such trial setting"),
    (["--set", "model_name=nosuchmodel"], "model_name 'nosuchmodel': neither a preset"),
    # a distillation head (70 timm models): every trial failed "classifier not found among its modules"
    (["--set", "model_name=deit_tiny_distilled_patch16_224"], "two classifier heads (a distillation head)"),
    (["--us-task", "nosuch"], "us_task 'nosuch': no such task"),
    (["--ds-task", "nosuch"], "ds_tasks 'nosuch': no such task"),
    # out of range: the sweep ran, trained nothing and logged chance accuracies as finished runs
    (["--set", "epochs=-1"], "--set epochs=-1: must be a number >= 0"),
    (["--set", "data_fraction=0"], "--set data_fraction=0: must be in (0, 1]"),
    (["--set", "optimizer=adamw"], "--set optimizer='adamw': must be adam or sgd"),
    (["--set", "shots=[0,5]"], "--set shots=(0, 5): must be one or more whole shot counts >= 1"),
    # each crashed a trial: in numpy's seeding, in torch after setup, or after pre-training
    (["--set", "seed=-1"], "--set seed=-1: must be a number >= 0"),
    (["--set", "steps=10.5"], "--set steps=10.5: must be a whole number"),
    (["--set", "shots=[]"], "--set shots=(): must be one or more whole shot counts >= 1"),
    (["--set", "shots=[2.5]"], "--set shots=(2.5,): must be one or more whole shot counts >= 1"),
    (["--set", "margin_examples=0"], "--set margin_examples=0: must be at least 1 with diagnostics"),
    # accepted before Ray, then failed in every trial (torch cannot size such a batch)
    (["--set", "batch_size=1e30"], "--set batch_size=1e+30: must be at most 2,147,483,647"),
])
def test_a_bad_trial_setting_stops_the_sweep_before_ray_starts(tmp_path, argv, says):
    """Found inside the trials, each cost a minute of Ray, retried trials, hundreds of lines of
    tracebacks and a sweep name used up."""
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), *argv])
    with pytest.raises(UserError) as e:
        run_sweep(SPEC, options)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "sw").exists()                      # nothing made: the name is free


def test_an_unreachable_tracking_server_is_one_line_before_ray_starts(tmp_path):
    """--tracking-uri http://127.0.0.1:9 hung the sweep without a word (MLflow retries for minutes)."""
    import socket

    with socket.socket() as sock:                     # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"),
                                       "--tracking-uri", f"http://127.0.0.1:{port}"])
        with pytest.raises(UserError) as e:     # (it hung: the test's timeout would end it)
            run_sweep(SPEC, options)
    assert f"--tracking-uri http://127.0.0.1:{port}: cannot reach the tracking server" in str(e.value)


def test_a_storage_path_that_cannot_be_a_directory_is_one_line(tmp_path):
    """A file (or a file on the way) where the storage directory goes gave a pyarrow traceback from
    reading the sweep record."""
    f = tmp_path / "afile"
    f.write_text("x")
    for path, says in ((f, "is not a directory"), (f / "below", f"cannot be made: {f} is not a directory")):
        options = parse_options(SPEC, ["--smoke", "--storage-path", str(path)])
        with pytest.raises(UserError) as e:
            run_sweep(SPEC, options)
        assert str(e.value) == f"--storage-path {path}: {says}"
    assert f.read_text() == "x"


def test_a_missing_dataset_path_is_refused_on_our_own_ray_and_warned_about_on_a_cluster(tmp_path, capsys):
    """--dataset pets=imagefolder:/nonexistent was accepted; every trial then failed on it."""
    from meta_study.tune.preflight import check_dataset_paths

    there = tmp_path / "train.parquet"
    there.write_text("")
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), "--ds-task", "pets",
                                   "--dataset", f"pets=parquet:{there},{tmp_path}/test.parquet"])
    with pytest.raises(UserError) as e:
        run_sweep(SPEC, options)
    assert str(e.value) == f"--dataset pets=parquet:{there},{tmp_path}/test.parquet: {tmp_path}/test.parquet does not exist"
    assert not (tmp_path / "sw").exists()
    check_dataset_paths({"pets": "imagefolder:/nonexistent/pets"}, on_this_machine=False)   # a cluster: a warning
    assert "warning: --dataset pets=imagefolder:/nonexistent/pets: /nonexistent/pets does not exist" in capsys.readouterr().err
    check_dataset_paths({"pets": f"parquet:{there}", "jft": "parquet:s3://lab/jft.parquet"}, on_this_machine=True)


def test_a_sweep_script_from_another_checkout_is_refused_unless_its_code_is_imported(tmp_path):
    """`python other/sweeps/zoo.py` imported meta_study from the installed (editable) tree: the trials
    ran, and the runs recorded as code_version, another checkout's code than the one run."""
    from meta_study.tune.preflight import check_script_tree
    from conftest import REPO

    other = tmp_path / "other"
    (other / "meta_study").mkdir(parents=True)
    (other / "meta_study" / "__init__.py").write_text("")
    (other / "sweeps").mkdir()
    script = other / "sweeps" / "zoo.py"
    script.write_text("")
    with pytest.raises(UserError) as e:
        check_script_tree(str(script))
    assert str(e.value).startswith(f"{script} belongs to the checkout {other}, but meta_study was imported from {REPO}")
    assert f"PYTHONPATH={other} python {script}" in str(e.value)
    check_script_tree(str(REPO / "sweeps" / "zoo.py"))             # this checkout's own script
    own = tmp_path / "proj" / "sweeps" / "mine.py"                  # a user's own sweep outside any checkout
    own.parent.mkdir(parents=True)
    own.write_text("")
    check_script_tree(str(own))
    check_script_tree(None)


def test_a_relative_storage_path_inside_a_ray_jobs_package_is_refused(tmp_path, monkeypatch):
    # only the default was refused: --storage-path tune under `ray job submit` put the sweep's
    # checkpoints in the per-upload copy of the code, which Ray deletes with the session
    job = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    job.mkdir(parents=True)
    monkeypatch.chdir(job)
    options = parse_options(SPEC, ["--smoke", "--storage-path", "tune"])
    with pytest.raises(UserError, match=r"--storage-path tune: under `ray job submit` it resolves into the job's"):
        run_sweep(SPEC, options)
    assert not (job / "tune").exists()


# ---- the sweep runner's review (items 1-8): refusals before anything starts, counts, resume ----------


def _no_ray(monkeypatch):
    """Fail the test if the sweep gets as far as starting or joining Ray."""
    import meta_study.ray_session as rs

    def started(*a, **k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(rs, "start_or_connect", started)


@pytest.mark.parametrize("uri, says", [
    ("127.0.0.1:5000", "--tracking-uri 127.0.0.1:5000: no scheme"),
    ("localhost:5000", "--tracking-uri localhost:5000: no scheme"),
    ("ftp://x", "--tracking-uri ftp://x: MLflow has no tracking store for ftp:// URIs"),
    ("http://[::1", "--tracking-uri http://[::1: not a valid URI"),
    ("http://mlflow:abc", "--tracking-uri http://mlflow:abc: not a valid URI"),
    ("./mlruns", "--tracking-uri ./mlruns: a plain path is MLflow's file store"),
])
def test_a_tracking_uri_mlflow_cannot_use_is_one_line_before_ray_starts(tmp_path, monkeypatch, capsys, uri, says):
    """Each was a traceback when the parent run was created, after Ray had started (exit 1)."""
    from meta_study.tune.runner import sweep_main

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    _no_ray(monkeypatch)
    with pytest.raises(SystemExit) as e:
        sweep_main(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"t: {says}") and err.count("\n") == 1, err
    assert not (tmp_path / "sw").exists()


def test_tracking_uris_mlflow_takes_still_pass(monkeypatch):
    from meta_study.tune.preflight import check_tracking_uri

    for uri in ("http://127.0.0.1:5000", "https://mlflow.lab", "HTTP://h:5000/", "sqlite:///tmp/x/mlflow.db",
                "postgresql://db:5432/mlflow", "postgresql+psycopg2://db/mlflow", "mysql://db/m", "mssql://db/m",
                "databricks", "databricks://profile", "databricks-uc", "http://[::1]:5000"):
        check_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")      # MLflow 3 takes a path only then
    for uri in ("./mlruns", "/tmp/mlruns", "file:///tmp/mlruns"):
        check_tracking_uri(uri)


def test_a_deleted_experiment_is_one_line_with_how_to_restore_it(tmp_path, monkeypatch, capsys):
    """An experiment deleted in the MLflow UI refused the parent run ("must be in the 'active'
    state"): a traceback after Ray had started."""
    from mlflow.tracking import MlflowClient

    from meta_study.tune.runner import sweep_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("gone")
    client.delete_experiment(exp)
    _no_ray(monkeypatch)
    with pytest.raises(SystemExit) as e:
        sweep_main(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), "--tracking-uri", uri,
                          "--experiment", "gone"])
    err = capsys.readouterr().err.splitlines()[-1]          # (MLflow's own lines from making the db above)
    assert e.value.code == 2 and err.startswith(f"t: --experiment gone: the MLflow experiment (id {exp}) is deleted")
    assert f"mlflow experiments restore --experiment-id {exp}" in err and "another --experiment" in err
    assert not client.search_runs([exp], run_view_type=3)          # no run made in it


def test_a_machine_or_server_failure_in_a_sweep_is_one_line_exit_1(monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    import meta_study.tune.runner as runner

    def failing(spec, options):
        raise MlflowException("API request to http://mlflow:5000 failed\nwith many lines")

    monkeypatch.setattr(runner, "run_sweep", failing)
    monkeypatch.delenv("META_STUDY_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as e:
        runner.sweep_main(SPEC, ["--smoke"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err == ("t: error: API request to http://mlflow:5000 failed "
                                         "(META_STUDY_TRACEBACK=1 shows where)\n")
    monkeypatch.setenv("META_STUDY_TRACEBACK", "1")
    with pytest.raises(MlflowException):
        runner.sweep_main(SPEC, ["--smoke"])
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: {}["a bug"])
    monkeypatch.delenv("META_STUDY_TRACEBACK")
    with pytest.raises(KeyError):          # a bug keeps its traceback
        runner.sweep_main(SPEC, ["--smoke"])


@pytest.mark.parametrize("sweep, argv, key", [
    ("scaling", ["--set", "epochs=1"], "epochs"),
    ("scaling", ["--smoke", "--set", "epochs=1"], "epochs"),
    ("zoo", ["--set", "epochs=5", "--set", "lr=0.01"], "epochs"),      # Optuna, define-by-run
    ("zoo", ["--smoke", "--set", "lr=0.01"], "lr"),
    ("zoo", ["--smoke", "--set", "momentum=0.9"], "momentum"),         # drawn for SGD only
    ("head_wd", ["--smoke", "--set", "seed=3"], "seed"),
])
def test_a_set_on_a_key_the_sweep_searches_is_refused(sweep, argv, key):
    """The search space overwrote it in every trial while the parent run recorded it: ignored
    without a word."""
    from meta_study.tune.runner import check_fixed_config

    spec = sweep_module(sweep).SPEC
    with pytest.raises(UserError) as e:
        check_fixed_config(spec, parse_options(spec, argv))
    assert str(e.value).startswith(f"--set {key}: sweep {spec.name} searches {key} ") and "\n" not in str(e.value)
    check_fixed_config(spec, parse_options(spec, ["--smoke", "--set", "img_size=16"]))     # not searched: fine


def test_a_whole_float_for_an_integer_setting_is_its_integer():
    """--set batch_size=64.0: logged "64.0" at the trial's start, "64" resolved; MLflow refused the
    second and, with it, the trial's first metrics."""
    cfg = fixed_config(SPEC, parse_options(SPEC, ["--set", "batch_size=64.0", "--set", "shots=[1.0, 5]",
                                                  "--set", "lr=1.0"]))
    assert (cfg["batch_size"], cfg["shots"], cfg["lr"]) == (64, [1, 5], 1.0)
    assert type(cfg["batch_size"]) is int and type(cfg["lr"]) is float


@pytest.mark.parametrize("value, says", [
    ("[1]", "expected a JSON object (a runtime_env) such as"),
    ('{"env_vars": [1]}', "expected a JSON object of NAME: value pairs for env_vars, not a list"),
    ('"abc"', "expected a JSON object (a runtime_env) such as"),
    ("notjson", "not JSON (Expecting value"),
])
def test_submit_refuses_a_runtime_env_that_is_no_json_object(capsys, value, says):
    from meta_study.tune.submit import main

    assert main(["--runtime-env-json", value, "--", "python", "sweeps/head_wd.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"submit: --runtime-env-json: {says}") and err.count("\n") == 1, err


def test_a_resume_with_other_concurrency_or_retries_is_refused():
    """Tuner.restore keeps the first session's TuneConfig and FailureConfig: --max-concurrent and
    --max-failures given on --resume were ignored without a word."""
    from dataclasses import replace

    from meta_study.tune.runner import sweep_settings

    started = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--max-concurrent", "2", "--max-failures", "1"]))
    rec = replace(_record(), settings=started)
    same = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume", "--max-concurrent", "2",
                                                     "--max-failures", "1", "--quiet"]))
    assert _plan(record=rec, tune_state=True, resume=True, settings=same).resume
    # left out on the resume: the sweep goes on with its own (as Tune does), no refusal
    for argv in ([], ["--max-failures", "1"], ["--max-concurrent", "2"]):
        left_out = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume", *argv]), given_only=True)
        assert _plan(record=rec, tune_state=True, resume=True, settings=left_out).resume
    for argv, says in ((["--max-concurrent", "4", "--max-failures", "1"], "max_concurrent=2, this command gives 4"),
                       (["--max-failures", "2"], "started with max_failures=1, this command gives 2")):
        other = sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume", *argv]), given_only=True)
        with pytest.raises(UserError) as e:
            _plan(record=rec, tune_state=True, resume=True, settings=other)
        flag = "--max-concurrent" if "concurrent" in says else "--max-failures"
        assert says in str(e.value) and f"pass the same {flag}" in str(e.value), str(e.value)
    # a sweep started without them runs with no limit and 2 retries: a resume that gives others is refused
    plain = replace(_record(), settings=sweep_settings(SPEC, parse_options(SPEC, ["--smoke"])))
    for argv, says in ((["--max-concurrent", "2"], "max_concurrent unset, this command gives 2"),
                       (["--max-failures", "3"], "max_failures=2, this command gives 3")):
        with pytest.raises(UserError, match=says):
            _plan(record=plain, tune_state=True, resume=True,
                  settings=sweep_settings(SPEC, parse_options(SPEC, ["--smoke", "--resume", *argv]), given_only=True))
    # a record from before they were kept: not compared
    old = {k: v for k, v in started.items() if k not in ("max_concurrent", "max_failures")}
    assert _plan(record=replace(_record(), settings=old), tune_state=True, resume=True, settings=same).resume


def test_a_restored_tuner_takes_this_sessions_verbosity_and_callbacks():
    """The earlier session's own callbacks are replaced by this session's (one of a kind each);
    anything else in the restored run config stays."""
    from types import SimpleNamespace

    from meta_study.tune.groups import FreeOrphanedGroups
    from meta_study.tune.runner import _use_callbacks

    rc = SimpleNamespace(callbacks=[], verbose=1)
    tuner = SimpleNamespace(_local_tuner=SimpleNamespace(get_run_config=lambda: rc))
    _use_callbacks(tuner, ["cb"], verbose=0)
    assert rc.verbose == 0 and rc.callbacks == ["cb"]
    old, new = FreeOrphanedGroups(), FreeOrphanedGroups()
    rc.callbacks = ["other", old]
    _use_callbacks(tuner, ["cb", new])
    assert rc.callbacks == ["other", "cb", new] and rc.verbose == 0


def test_early_stopped_trials_an_earlier_session_evaluated_still_count(monkeypatch):
    """On resume they were left alone (right) and left out of the counts: trials != finished +
    errored + early_stopped in the summary and on the parent run."""
    import meta_study.tune.finalize as finalize
    from meta_study.tune.runner import _finish

    monkeypatch.setattr(finalize, "is_stopped_early", lambda r: True)
    monkeypatch.setattr(finalize, "evaluate_stopped", lambda stopped, callback, **kw: finalize.Evaluations(
        done=("a",), failed={"c": "no checkpoint"}, logged=("b", "d")))
    callback = SimpleCallback()
    out = _finish(SPEC, [object()] * 4, callback, None, None, None, None)
    assert (out["eval_done"], out["eval_failed"]) == (3, 1)


class SimpleCallback:
    def flush(self) -> bool:
        return False            # nothing sent: no reconciliation


def test_a_resumed_session_sets_the_parent_run_running(tmp_path):
    """_end_parent said --resume set the parent running again; it stayed FINISHED (or KILLED) all
    through the resumed session."""
    from dataclasses import replace

    from mlflow.tracking import MlflowClient

    from meta_study.tune.runner import _Plan, _record_session

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    client.set_terminated(parent, status="FINISHED")
    exp_dir = str(tmp_path / "ray" / "s")
    rec = replace(_record(experiment="e", tracking=tracking), experiment_id=exp, parent_run_id=parent)
    StateDir(exp_dir).write_record(rec)
    plan = _Plan(name="s", storage=str(tmp_path / "ray"), exp_dir=exp_dir, tracking=tracking, state=StateDir(exp_dir),
                 record=rec, resume=True, restore_tune=True, experiment="e", code="c1", code_changed=False)
    _record_session(SPEC, plan, SweepOptions(smoke=True), {}, {"git_sha": "x"})
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["session.2.code_version"] == "c1"
    assert len(StateDir(exp_dir).read_record().sessions) == 2


def test_the_parent_run_records_only_what_every_trial_shares():
    """A fixed setting the space overrides (here the base lr, searched per trial) was recorded
    on the parent run as if every trial used it; the parent names the searched keys instead."""
    from meta_study.tune.runner import parent_params

    spec = SweepSpec(name="lrs", doc="x\n", space=lambda o: {"lr": grid([1e-3, 1e-2]), "seed": grid([0])},
                     base=dict(model_name="vit_s", lr=3e-4, epochs=30))
    o = parse_options(spec, ["--smoke"])
    params = parent_params(spec, o, fixed_config(spec, o), "lrs-smoke")
    assert "lr" not in params and "seed" not in params and params["searched"] == "lr,seed"
    assert params["sweep"] == "lrs-smoke" and params["smoke"] is True and params["epochs"] == 30
    zoo = sweep_module("zoo").SPEC              # Optuna, define-by-run: the keys of its draws
    zo = parse_options(zoo, ["--smoke"])
    zp = parent_params(zoo, zo, fixed_config(zoo, zo), "zoo-smoke")
    assert {"lr", "optimizer", "model_name", "epochs"} <= set(zp["searched"].split(",")) and "lr" not in zp
    assert zp["img_size"] == 16 and zp["batch_size"] == 128         # the smoke settings every trial shares


def test_data_parallel_trials_are_limited_to_what_the_cluster_can_place():
    """Tune reserves 0.1 CPU for a data-parallel trial's own actor and knows nothing of its
    workers: four 2-worker trials on 2 CPUs held 0.4 CPU waiting and none could place its 1.8
    CPUs. Without --max-concurrent, a new sweep runs as many as the cluster can place."""
    from meta_study.tune.runner import _data_parallel_limit, data_parallel_concurrency

    assert data_parallel_concurrency({"CPU": 2.0}, 2, 0.9, False) == (1, pytest.approx(1.9))
    assert data_parallel_concurrency({"CPU": 64.0, "GPU": 8.0}, 2, 4.0, True)[0] == 4      # GPUs bind first
    assert data_parallel_concurrency({"CPU": 16.0, "GPU": 8.0}, 2, 4.0, True)[0] == 1      # then CPUs
    assert data_parallel_concurrency({"CPU": 1.0}, 2, 1.0, False)[0] == 1                  # an autoscaler may grow it
    assert data_parallel_concurrency({"CPU": 3.8}, 2, 0.9, False)[0] == 2                  # 2 x 1.9 exactly
    single = parse_options(SPEC, ["--smoke"])
    given = parse_options(SPEC, ["--smoke", "--workers-per-trial", "2", "--max-concurrent", "3"])
    assert _data_parallel_limit(single, trial_hooks(single)) is single        # Tune places these itself
    assert _data_parallel_limit(given, trial_hooks(given)) is given           # the user's limit wins


def test_a_batch_the_data_parallel_workers_cannot_share_is_refused_before_ray():
    """Every trial's ranks refuse a batch that is not a multiple of the workers (unequal shards
    weight examples unequally); found before Ray starts, in one line."""
    from meta_study.tune.runner import check_fixed_config

    spec = sweep_module("head_wd").SPEC
    with pytest.raises(UserError, match=r"^--workers-per-trial 3: batch_size=128 is not a multiple of it"):
        check_fixed_config(spec, parse_options(spec, ["--smoke", "--workers-per-trial", "3"]))
    check_fixed_config(spec, parse_options(spec, ["--smoke", "--workers-per-trial", "3", "--set", "batch_size=129"]))
    check_fixed_config(spec, parse_options(spec, ["--smoke", "--workers-per-trial", "2"]))


def test_the_data_parallel_limit_is_said_and_on_a_joined_cluster_how_to_raise_it(monkeypatch, capsys):
    """A KubeRay head with no CPUs of its own, its workers not yet scaled up: one trial at a time
    until the user gives --max-concurrent; the line says so."""
    import ray

    from meta_study.tune.runner import _data_parallel_limit

    o = parse_options(SPEC, ["--smoke", "--workers-per-trial", "2", "--gpus-per-trial", "1"])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})
    assert _data_parallel_limit(o, trial_hooks(o), own_ray=False).max_concurrent == 1
    err = capsys.readouterr().err
    assert "at most 1 at a time" in err and "Ray has 0 CPUs, 0 GPUs now" in err and "autoscaler grows" in err
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    assert _data_parallel_limit(o, trial_hooks(o), own_ray=True).max_concurrent == 4
    assert "autoscaler" not in capsys.readouterr().err
