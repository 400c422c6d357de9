"""Review of meta_study/tune/runner.py (session 37): task flags a search space overrides, and
trials sized by the spec (``SweepSpec.resources``) that no node can hold."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError
from meta_study.tune.runner import (SweepOptions, SweepSpec, TrialResources, check_fixed_config, fixed_config, grid,
                                    parse_options, trial_requests)

SEARCHES_TASKS = SweepSpec(
    name="tasks_t", doc="A test sweep.\n",
    space=lambda o: {"ds_tasks": grid([["synth_shape"], ["synth_combo"]]), "us_task": grid(["synth_us"]),
                     "layerwise": grid([False, True])},
    smoke=dict(model_name="vit_tiny_cpu", epochs=2))


@pytest.mark.parametrize("argv", [["--ds-task", "synth_texture"], ["--us-task", "synth_us"], ["--layerwise"]])
def test_a_task_flag_of_a_searched_key_is_refused(argv):
    """``--ds-task synth_texture`` to a sweep whose space draws ds_tasks: every trial ran on the
    drawn tasks instead, without a word (a ``--set`` of a searched key was refused, not these)."""
    options = parse_options(SEARCHES_TASKS, ["--smoke", *argv])
    with pytest.raises(UserError) as e:
        check_fixed_config(SEARCHES_TASKS, options)
    says = str(e.value)
    assert says.startswith(f"{argv[0]}: sweep tasks_t searches "), says
    assert "\n" not in says


def test_a_task_flag_of_a_key_the_space_leaves_fixed_is_accepted():
    spec = SweepSpec(name="t", doc="x\n", space=lambda o: {"seed": grid([0, 1])},
                     smoke=dict(model_name="vit_tiny_cpu", epochs=2))
    check_fixed_config(spec, parse_options(spec, ["--smoke", "--ds-task", "synth_texture", "--us-task", "synth_us",
                                                  "--layerwise"]))


def _sized(config, options):
    """1 GiB for the small model, a million for the big one (a test spec's ``resources``)."""
    return TrialResources(cpu=1.0, memory_gb=1e6 if config.get("model_name") == "vit_s" else 1.0)


SIZED = SweepSpec(name="sized_t", doc="A test sweep.\n", space=lambda o: {"model_name": grid(["vit_tiny_cpu", "vit_s"]),
                                                                          "seed": grid([0, 1])},
                  smoke=dict(epochs=1), resources=_sized)


def test_the_requests_of_a_grid_are_every_model_s():
    options = SweepOptions(smoke=True)
    got = trial_requests(SIZED, options, fixed_config(SIZED, options))
    assert sorted(r["memory"] for _, r in got) == [2**30, 1e6 * 2**30], got
    big = next(label for label, r in got if r["memory"] > 2**30)
    assert big == "model_name='vit_s'", got


def test_the_requests_of_zoo_cover_its_whole_model_table():
    """zoo.py draws its model in a define-by-run space: the largest (ViT-B, Mixer-B: a whole
    ``--gpus-per-trial`` and 12 GiB) is among the requests checked."""
    from conftest import sweep_module

    from meta_study.tune.sizing import SIZES   # the zoo's table (sweeps/zoo.py's, before)

    zoo = sweep_module("zoo")
    options = SweepOptions(gpus_per_trial=1.0)
    got = trial_requests(zoo.SPEC, options, fixed_config(zoo.SPEC, options))
    by_gpu = {(r["gpu"], r.get("memory", 0) / 2**30) for _, r in got}
    assert by_gpu == {(v[0], v[1]) for k, v in SIZES.items() if k in sum(zoo.FULL.values(), [])}, got
    assert any(label == "model_name='vit_b'" or label == "model_name='mixer_b'" for label, _ in got), got
    assert trial_requests(SweepSpec(name="t", doc="x\n", space=lambda o: {}), options, {}) == []   # no resources
    smoke = SweepOptions(smoke=True, gpus_per_trial=1.0)
    labels = sorted(label for label, _ in trial_requests(zoo.SPEC, smoke, fixed_config(zoo.SPEC, smoke)))
    # the model alone, not a key of one branch (SGD's momentum, None for an Adam draw) nor a drawn float
    assert len(labels) == 2 and labels[0] == "model_name='resnet_tiny_cpu'", labels    # 0.5 and 1 of the GPU
    assert labels[1] in ("model_name='vit_tiny_cpu'", "model_name='mixer_tiny_cpu'"), labels


SCRIPT = '''"""A test sweep whose trials of vit_s ask for a million GiB."""
from meta_study.tune.runner import SweepSpec, TrialResources, grid, sweep_main


def sized(config, options):
    return TrialResources(cpu=1.0, memory_gb=1e6 if config.get("model_name") == "vit_s" else 0.25)


SPEC = SweepSpec(name="sized_t", doc=__doc__, space=lambda o: {"model_name": grid(["vit_tiny_cpu", "vit_s"])},
                 smoke=dict(epochs=1), resources=sized)

if __name__ == "__main__":
    sweep_main(SPEC)
'''


@pytest.mark.slow(60)
def test_a_sized_trial_no_node_can_hold_is_refused_on_a_ray_of_its_own(tmp_path):
    """A spec's ``resources`` asking more than any node has (the zoo's ``--gpus-per-trial 1`` on
    a machine without a GPU): nothing was checked, and Tune waited for good on that trial."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    script = tmp_path / "sized_t.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    try:
        p = subprocess.run([sys.executable, str(script), "--smoke", "--quiet", "--storage-path", str(tmp_path / "ray")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the sweep waited for a node that can hold its trial: {str(e.stderr)[-2000:]}")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    err = [line for line in p.stderr.strip().splitlines() if line.startswith("sized_t: ")]
    assert len(err) == 1 and "model_name='vit_s'" in err[0] and "1e+06 GiB of memory" in err[0], p.stderr[-3000:]
    assert "its memory comes with the model" in err[0], err[0]    # not "ask for less (--cpus-per-trial)"


PENDING_SCRIPT = '''"""A test sweep: three trials, each the whole machine's CPUs, so two wait."""
from meta_study.tune.runner import SweepSpec, grid, sweep_main

SPEC = SweepSpec(name="pend_t", doc=__doc__, space=lambda o: {"seed": grid([0, 1, 2])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=20))

if __name__ == "__main__":
    sweep_main(SPEC)
'''


@pytest.mark.slow(90)
def test_ctrl_c_does_not_count_trials_that_never_started_as_stopped_early(tmp_path):
    """Ctrl-C of a sweep whose other trials waited for CPUs: the summary said ``early_stopped 3``
    of 4 (measured; a sweep without a scheduler), as if ASHA had stopped trials that never
    started (Tune's result of one holds its ``trial_id`` only)."""
    import os

    from conftest import interrupt_sweep

    script = tmp_path / "pend_t.py"
    script.write_text(PENDING_SCRIPT)
    _, out, s = interrupt_sweep(script, ["--smoke", "--quiet", "--storage-path", str(tmp_path / "ray"),
                                         "--cpus-per-trial", str(os.cpu_count())],
                                "ray/pend_t-smoke/*/checkpoint_000000", timeout=300)   # the first trial past its first report
    assert (s["trials"], s["finished"], s["early_stopped"], s["interrupted"]) == (3, 0, 0, 1), s


def test_a_trial_that_never_started_is_not_stopped_early():
    # Tune ends a trial still waiting for resources TERMINATED, its metrics only its trial_id: the
    # end-of-sweep evaluation took it for one ASHA had stopped
    from ray.tune.result_grid import Result

    from meta_study.tune.finalize import is_stopped_early

    assert not is_stopped_early(Result(metrics={"trial_id": "t0"}, checkpoint=None, error=None, path="/x"))
    assert is_stopped_early(Result(metrics={"trial_id": "t1", "training_iteration": 1}, checkpoint=None, error=None,
                                   path="/x"))


def test_a_resume_with_a_setting_the_sweep_was_started_without_says_unset():
    # "was started with layerwise=None" for a sweep started without --layerwise
    from dataclasses import replace

    from meta_study.errors import UserError
    from meta_study.tune.preflight import plan_session
    from meta_study.tune.state import Session, SweepRecord

    rec = SweepRecord(sweep="s", experiment="exp", experiment_id="1", parent_run_id="p1", tracking_uri="sqlite:///x.db",
                      sessions=(Session(started="2026-12-04T00:00:00+00:00", code="c1", git_sha="abc", researcher="ada"),))
    rec = replace(rec, settings={"layerwise": None, "num_samples": 1})
    with pytest.raises(UserError) as e:
        plan_session(record=rec, tune_state=True, resume=True, experiment=None, default_experiment="exp", code="c1",
                     allow_code_change=False, experiment_dir="/x/s", tracking_uri=rec.tracking_uri,
                     settings={"layerwise": True, "num_samples": 1})
    assert "was started with layerwise unset, this command gives True" in str(e.value), str(e.value)


def test_a_model_sized_trial_no_node_holds_is_not_told_to_lower_cpus_per_trial():
    # the model's memory comes with the model: "--cpus-per-trial" could not make it fit
    from meta_study.errors import UserError
    from meta_study.tune.preflight import check_trial_fits

    nodes = [{"Alive": True, "NodeID": "n", "Resources": {"CPU": 2.0, "memory": 2.0**33}}]
    with pytest.raises(UserError) as e:
        check_trial_fits({"cpu": 1.0, "memory": 2.0**40}, nodes, what="w", on_this_machine=True, sized_by_model=True)
    assert "its memory comes with the model" in str(e.value) and "--cpus-per-trial" not in str(e.value), str(e.value)
    with pytest.raises(UserError) as e:
        check_trial_fits({"cpu": 1.0, "memory": 2.0**40}, nodes, what="w", on_this_machine=True)
    assert "ask for less (--gpus-per-trial, --cpus-per-trial)" in str(e.value)
