"""Review of the sweep's preflight checks and its saved state (meta_study/tune/preflight.py, state.py):
each test failed before its fix."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from meta_study.errors import UserError
from meta_study.tune.preflight import check_dataset_paths, wait_for_previous_writer
from meta_study.tune.state import RECORD, SUBDIR, WRITER, Heartbeat, Session, StateDir, SweepRecord


def _record() -> SweepRecord:
    return SweepRecord(sweep="s", experiment="exp", experiment_id="1", parent_run_id="p1",
                       tracking_uri="http://mlflow:5000",
                       sessions=(Session(started="2026-12-04T00:00:00+00:00", code="c1", git_sha="abc",
                                         researcher="ada"),))


@pytest.mark.parametrize("content, says", [
    (b"", "not a sweep record (not JSON: a write cut short?)"),
    (b'{"sweep": "s", "experiment"', "not a sweep record (not JSON: a write cut short?)"),
    (b"[1, 2]", "not a sweep record (not a JSON object)"),
    (b'{"name": "someone else\'s file"}', "not a sweep record (no sweep, experiment, experiment_id"),
    (b"\xff\xfe\x00", "not a sweep record (not JSON: a write cut short?)"),
])
def test_an_unreadable_sweep_record_is_one_line_naming_it(tmp_path, content, says):
    """A sweep.json cut short (a crash during its rewrite on a filesystem without ordered data),
    or another program's file at that name, was a JSONDecodeError or TypeError traceback out of
    planning the sweep, before anything said which file."""
    exp = tmp_path / "sweep"
    (exp / SUBDIR).mkdir(parents=True)
    (exp / SUBDIR / RECORD).write_bytes(content)
    with pytest.raises(UserError) as e:
        StateDir(str(exp)).read_record()
    msg = str(e.value)
    assert msg.startswith(f"{exp / SUBDIR / RECORD}: {says}"), msg
    assert "\n" not in msg


def test_a_record_with_an_unknown_field_is_one_line_and_a_good_one_reads_back(tmp_path):
    """A record a newer meta-study wrote (a field this one does not know) was a TypeError
    traceback: refused in one line that says so. A good record still reads back as written."""
    st = StateDir(str(tmp_path / "sweep"))
    st.write_record(_record())
    assert st.read_record() == _record()
    d = json.loads((tmp_path / "sweep" / SUBDIR / RECORD).read_text())
    d["sessions"][0]["gpu_hours"] = 3
    (tmp_path / "sweep" / SUBDIR / RECORD).write_text(json.dumps(d))
    with pytest.raises(UserError) as e:
        st.read_record()
    assert "fields this meta-study does not know: sessions[0].gpu_hours" in str(e.value)
    assert "newer meta-study" in str(e.value)


def test_a_sweep_directory_that_is_a_file_is_one_line(tmp_path):
    """--storage-path S --name N with S/N a file: pyarrow's NotADirectoryError traceback."""
    f = tmp_path / "notes"
    f.write_text("x")
    with pytest.raises(UserError) as e:
        StateDir(str(f)).read_record()
    assert str(e.value) == (f"{f}: not a sweep directory (a file is where {f}/{SUBDIR}/{RECORD} needs a directory): "
                            "pass another --name or --storage-path")
    assert f.read_text() == "x"


@pytest.mark.parametrize("content", [b"", b'{"owner": "h:1:ab", "be', b"\x00\x00\x00"])
def test_an_unreadable_writer_heartbeat_is_waited_out_not_a_traceback(tmp_path, content):
    """A writer.json cut short made `--resume` a JSONDecodeError traceback (the writer process
    itself went on). It is a heartbeat that does not advance: stale after STALE_BEATS beats."""
    st = StateDir(str(tmp_path / "sweep"))
    (tmp_path / "sweep" / SUBDIR).mkdir(parents=True)
    (tmp_path / "sweep" / SUBDIR / WRITER).write_bytes(content)
    # "stale", not "timeout": seen as dead after STALE_BEATS beats, before the 5 s wait ran out
    # (no wall-clock assertion: a loaded machine may take longer, the answer is the same)
    assert Heartbeat(st, every_s=0.05).wait_for_previous(5.0) == "stale"
    # the driver's wait, with the default beat: refused in one line only if it still advances
    with pytest.raises(UserError) as e:
        wait_for_previous_writer(st, "s", max_wait_s=0.2)
    assert "still logs after 0 s" in str(e.value) and "\n" not in str(e.value)


def test_an_unreadable_heartbeat_that_a_live_writer_replaces_is_waited_for(tmp_path):
    """A live writer rewriting a heartbeat that was unreadable: it advances, so the new one waits."""
    st = StateDir(str(tmp_path / "sweep"))
    (tmp_path / "sweep" / SUBDIR).mkdir(parents=True)
    (tmp_path / "sweep" / SUBDIR / WRITER).write_bytes(b"{")
    live = Heartbeat(st, every_s=0.05)
    starts = threading.Timer(0.1, live.start)
    starts.start()
    try:
        # stale after 3 beats of 0.4 s without an advance: a live writer held back by a busy
        # machine is not taken for a dead one, and one that never starts is (stale at ~1.2 s)
        assert Heartbeat(st, every_s=0.4).wait_for_previous(3.0) == "timeout"
    finally:
        starts.join()
        live.stop()
    assert not (tmp_path / "sweep" / SUBDIR / WRITER).exists()


def test_a_relative_dataset_path_is_refused_anywhere(tmp_path, monkeypatch):
    """--dataset pets=imagefolder:data/pets passed the check (it exists from the driver's working
    directory), then every trial failed on it: Tune runs each trial in its own working directory
    (RAY_CHDIR_TO_TRIAL_DIR; measured: a trial's os.getcwd() is .../working_dirs/<trial>), where the
    relative path names nothing. Refused in one line with the absolute path to give, also on a
    cluster (no node's trial directory holds it)."""
    (tmp_path / "data" / "pets").mkdir(parents=True)
    (tmp_path / "train.parquet").write_text("")
    monkeypatch.chdir(tmp_path)
    for on_this_machine in (True, False):
        with pytest.raises(UserError) as e:
            check_dataset_paths({"pets": "imagefolder:data/pets"}, on_this_machine=on_this_machine)
        assert str(e.value) == (f"--dataset pets=imagefolder:data/pets: data/pets is a relative path, which no trial "
                                f"finds (Tune runs each trial in a directory of its own); give it as "
                                f"{tmp_path}/data/pets")
    with pytest.raises(UserError) as e:
        check_dataset_paths({"c": f"parquet:{tmp_path}/train.parquet,test.parquet"}, on_this_machine=True)
    assert "test.parquet is a relative path" in str(e.value)
    with pytest.raises(UserError) as e:
        check_dataset_paths({"c": "imagefolder:~/pets"}, on_this_machine=False)
    assert f"give it as {os.path.expanduser('~/pets')}" in str(e.value)
    # what passes: absolute paths, URIs, an absent test split
    check_dataset_paths({"pets": f"imagefolder:{tmp_path}/data/pets", "c": f"parquet:{tmp_path}/train.parquet",
                         "j": "parquet:s3://lab/jft.parquet,s3://lab/jft-test.parquet"}, on_this_machine=True)


class _PerDriver:
    """The claims registry of each thread its own, as each driver process has its own: in one
    registry, a thread that started late (a loaded machine) took the other's finished claim for
    its own earlier one, stopped it, and went on too."""

    def __init__(self) -> None:
        self.local, self.all = threading.local(), []

    def _mine(self) -> dict:
        if not hasattr(self.local, "d"):
            self.local.d = {}
            self.all.append(self.local.d)
        return self.local.d

    def pop(self, key, default=None):
        return self._mine().pop(key, default)

    def __setitem__(self, key, value) -> None:
        self._mine()[key] = value


def test_two_resumes_started_together_exactly_one_goes_on(tmp_path, monkeypatch):
    """Two `--resume` of one sweep at the same moment both found no writer beating (a driver's
    writer starts only after its Ray has) and both returned from the check: two drivers trained
    the same trials and saved Tune's state over each other's. Now exactly one goes on."""
    from meta_study.tune import preflight

    drivers = _PerDriver()
    monkeypatch.setattr(preflight, "_CLAIMS", drivers)
    StateDir(str(tmp_path / "sweep"))    # the sweep's state directory, as its first session left it
    outcomes: list[str] = []
    go = threading.Barrier(2)

    def resume() -> None:
        go.wait()
        try:
            preflight.wait_for_previous_writer(StateDir(str(tmp_path / "sweep")), "s", max_wait_s=5)
            outcomes.append("went on")
        except UserError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert outcomes.count("went on") == 1 and len(outcomes) == 2, outcomes
        lost = next(o for o in outcomes if o != "went on")
        # at the same moment: the later claim wins; a moment later: the claim beats, so it waits and is refused
        assert lost.startswith("sweep s: ") and (lost.endswith(
            "resumed it at the same moment; nothing was started here: let that one run") or
            "is resuming it and has not started its writer after 5 s; nothing was started" in lost), outcomes
    finally:
        for claims in drivers.all:
            for claim in claims.values():
                claim.stop()
    assert not (tmp_path / "sweep" / SUBDIR / "driver.json").exists()      # the claim ends with its file


@pytest.mark.slow(20)
def test_a_resume_while_another_driver_starts_waits_for_it_then_its_writer(tmp_path):
    """A driver that resumed a moment ago has no writer yet: a second `--resume` (another process)
    waits on its claim, and is refused in one line while it lasts; once that driver's writer beats
    the claim is gone and the writer is what the next resume waits for."""
    import subprocess
    import sys

    from conftest import REPO
    from meta_study.tune import preflight

    state = StateDir(str(tmp_path / "sweep"))
    assert preflight.wait_for_previous_writer(state, "s", max_wait_s=5) == "none"      # the first driver
    other = [sys.executable, "-c", "import sys; from meta_study.tune.preflight import wait_for_previous_writer as w; "
             "from meta_study.tune.state import StateDir; from meta_study.errors import UserError\n"
             f"try: w(StateDir({str(tmp_path / 'sweep')!r}), 's', max_wait_s=3)\n"
             "except UserError as e: sys.exit(str(e))"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        r = subprocess.run(other, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 1 and "sweep s: the driver " in r.stderr and "is resuming it and has not started its " \
            "writer after 3 s; nothing was started" in r.stderr, r.stderr
        writer = Heartbeat(state, every_s=0.2)      # the first driver's writer starts
        writer.start()
        deadline = time.monotonic() + 15
        while (tmp_path / "sweep" / SUBDIR / "driver.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (tmp_path / "sweep" / SUBDIR / "driver.json").exists()     # its claim ended
        r = subprocess.run(other, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 1 and "sweep s: its writer " in r.stderr and "still logs after 3 s" in r.stderr, r.stderr
        writer.stop()
    finally:
        claim = preflight._CLAIMS.pop(state.uri, None)
        if claim is not None:
            claim.stop()


def _node(alive: bool = True, **res: float) -> dict:
    return {"Alive": alive, "NodeID": "n", "Resources": res}


def test_a_trial_no_node_can_hold_is_refused_on_our_own_ray_and_warned_about_on_a_cluster(capsys):
    """`--gpus-per-trial 1` on a machine without a GPU: Tune waited for good, its only word a
    warning every 60 s that --quiet hides (ray/tune/execution/insufficient_resources_manager.py
    warns and returns). Refused in one line before any trial on a Ray of our own."""
    from meta_study.tune.preflight import check_trial_fits

    laptop = [_node(CPU=2.0, memory=8 * 2**30)]
    with pytest.raises(UserError) as e:
        check_trial_fits({"cpu": 1.0, "gpu": 1.0}, laptop, what="sweep head_wd", on_this_machine=True)
    assert str(e.value) == ("sweep head_wd: a trial needs 1 CPU, 1 GPU, and no Ray node can hold it (the most any node "
                            "has: 0 GPUs); nothing was started: ask for less (--gpus-per-trial, --cpus-per-trial), or "
                            "run on a cluster that has it (--address)")
    with pytest.raises(UserError) as e:    # memory in bytes, as Tune takes it; said in GiB
        check_trial_fits({"cpu": 1.0, "gpu": 0.0, "memory": 12 * 2**30}, laptop, what="sweep zoo", on_this_machine=True)
    assert "needs 1 CPU, 12 GiB of memory" in str(e.value) and "has: 8 GiB of memory" in str(e.value)
    # each exists, never on one node; a dead node's resources count for nothing
    split = [_node(CPU=8.0), _node(CPU=1.0, GPU=1.0), _node(False, CPU=64.0, GPU=8.0)]
    with pytest.raises(UserError) as e:
        check_trial_fits({"cpu": 4.0, "gpu": 1.0}, split, what="w", on_this_machine=True)
    assert "no node has all of them at once (2 nodes)" in str(e.value)
    check_trial_fits({"cpu": 4.0, "gpu": 1.0}, split, what="w", on_this_machine=False)     # a cluster may grow
    assert capsys.readouterr().err.startswith("warning: w: a trial needs 4 CPUs, 1 GPU, and no Ray node can hold it")
    # what fits passes, fractions, custom resources and accelerator types included
    check_trial_fits({"cpu": 1.0, "gpu": 0.25, "memory": 4 * 2**30, "accelerator_type:A100": 0.001},
                     [_node(CPU=16.0, GPU=1.0, memory=64 * 2**30, **{"accelerator_type:A100": 1.0})],
                     what="w", on_this_machine=True)
    check_trial_fits({"cpu": 2.0, "gpu": 0.0}, laptop, what="w", on_this_machine=True)
    check_trial_fits({"cpu": 0.1}, [_node(CPU=0.1)], what="w", on_this_machine=True)


@pytest.mark.parametrize("key, flag", [("ds_tasks", "--ds-task"), ("us_task", "--us-task"), ("layerwise", "--layerwise"),
                                       ("lr", "--set")])
def test_a_resume_with_other_tasks_names_their_flag_not_set(key, flag):
    """A resume with another --ds-task was told to "pass the same --set", a flag that cannot give tasks."""
    from dataclasses import replace

    from meta_study.tune.preflight import plan_session

    rec = replace(_record(), settings={"ds_tasks": ["a"], "us_task": "u", "layerwise": False, "lr": 0.1,
                                       "num_samples": 1})
    now = {**rec.settings, key: {"ds_tasks": ["b"], "us_task": "v", "layerwise": True, "lr": 0.2}[key]}
    with pytest.raises(UserError) as e:
        plan_session(record=rec, tune_state=True, resume=True, experiment=None, default_experiment="exp", code="c1",
                     allow_code_change=False, experiment_dir="/x/s", tracking_uri=rec.tracking_uri, settings=now)
    assert f"pass the same {flag} and options" in str(e.value), str(e.value)
    assert f"was started with {key}=" in str(e.value)


def test_a_data_parallel_trials_evaluation_asks_for_a_workers_gpu():
    """A data-parallel trial's Tune resources are its waiting actor's (0.1 CPU, no GPU): its
    end-of-sweep evaluation asked for that (clamped to half a CPU) and ran its probes without a
    GPU (`device="auto"` finds none in a task with num_gpus=0). It asks for one worker's now."""
    from meta_study.tune.finalize import eval_task_resources
    from meta_study.tune.trial import TrialHooks

    actor = {"cpu": 0.1, "gpu": 0.0}          # runner.PerTrialResources of a data-parallel trial
    gpu = TrialHooks(workers=4, torch_trainer=True, use_gpu=True, worker_cpus=6.0)
    assert eval_task_resources(actor, gpu) == {"num_cpus": 6.0, "num_gpus": 1.0, "memory": None, "resources": None}
    cpu = TrialHooks(workers=2, torch_trainer=True, worker_cpus=0.9)
    assert eval_task_resources(actor, cpu) == {"num_cpus": 0.9, "num_gpus": 0.0, "memory": None, "resources": None}
    # a trial of its own keeps what it had: GPU share, memory, custom resources
    own = {"cpu": 0.25, "gpu": 0.5, "memory": 6 * 2**30, "large_gpu": 1.0}
    assert eval_task_resources(own, TrialHooks()) == {"num_cpus": 0.5, "num_gpus": 0.5, "memory": 6 * 2**30,
                                                      "resources": {"large_gpu": 1.0}}


def test_a_tune_experiment_without_a_sweep_record_is_not_a_circle_of_advice():
    """A Tune experiment that is no meta-study sweep (no sweep.json) at --storage-path/--name:
    without --resume the refusal said "pass --resume", and --resume then said "drop --resume"."""
    from meta_study.tune.preflight import plan_session

    kw = dict(record=None, tune_state=True, experiment=None, default_experiment="exp", code="c1",
              allow_code_change=False, experiment_dir="/st/s", tracking_uri="http://mlflow:5000")
    for resume in (False, True):
        with pytest.raises(UserError) as e:
            plan_session(resume=resume, **kw)
        msg = str(e.value)
        assert "pass another --name" in msg and "pass --resume" not in msg and "drop --resume" not in msg, msg


def test_a_resume_with_other_dataset_paths_is_refused_once_the_record_keeps_them():
    """The --dataset paths behind a task name are settings too (a resume with pets=.../pets-v2
    trained the restored trials on other images under the same name); a record from before they
    were kept is not refused for lacking them."""
    from dataclasses import replace

    from meta_study.tune.preflight import plan_session

    kw = dict(tune_state=True, resume=True, experiment=None, default_experiment="exp", code="c1",
              allow_code_change=False, experiment_dir="/x/s", tracking_uri="http://mlflow:5000")
    base = {"ds_tasks": ["pets"], "num_samples": 1}
    old = replace(_record(), settings=base)
    now = {**base, "datasets": {"pets": "imagefolder:/data/pets-v2"}}
    assert plan_session(record=old, settings=now, **kw).resume
    rec = replace(_record(), settings={**base, "datasets": {"pets": "imagefolder:/data/pets"}})
    assert plan_session(record=rec, settings={**rec.settings}, **kw).resume
    with pytest.raises(UserError) as e:
        plan_session(record=rec, settings=now, **kw)
    assert "was started with datasets={'pets': 'imagefolder:/data/pets'}" in str(e.value)
    assert "pass the same --dataset and options" in str(e.value)
