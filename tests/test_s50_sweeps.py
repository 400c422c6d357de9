"""Review s50 (sweeps and the training loop): per-trial resources have a ceiling as the count
flags do."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pytest

from meta_study.errors import UserError
from meta_study.tune.runner import SweepOptions, SweepSpec, grid, parse_options

SPEC = SweepSpec(name="t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


@pytest.mark.parametrize("flag, value", [("--gpus-per-trial", "100"), ("--gpus-per-trial", "17"),
                                         ("--cpus-per-trial", "10000"), ("--cpus-per-trial", "1025")])
def test_per_trial_resources_beyond_any_node_are_one_user_error(flag, value):
    # a typo's extra zeros was a warning on a cluster, and its trials waited for good for a node
    # no autoscaler adds
    with pytest.raises(UserError) as e:
        parse_options(SPEC, [flag, value])
    msg = str(e.value)
    assert msg.startswith(f"{flag} {float(value):g}: more than ") and "\n" not in msg


@pytest.mark.parametrize("kw", [dict(gpus_per_trial=16), dict(gpus_per_trial=0.25), dict(cpus_per_trial=1024),
                                dict(cpus_per_trial=0.5), dict(gpus_per_trial=8, cpus_per_trial=96)])
def test_per_trial_resources_a_node_can_hold_are_taken(kw):
    o = SweepOptions(**kw)
    assert (o.gpus_per_trial, o.cpus_per_trial) == (kw.get("gpus_per_trial"), kw.get("cpus_per_trial"))


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _zoo_like_scheduler(tmp_path, **smoke):
    from meta_study.tune import runner

    spec = SweepSpec(name="s50_asha", doc="A test sweep.\n", space=lambda o: {"seed": grid([0, 1])},
                     smoke=dict(model_name="vit_tiny_cpu", **smoke), scheduler="asha")
    o = SweepOptions(smoke=True)
    tuner = runner._new_tuner(spec, o, lambda config: None, runner.fixed_config(spec, o), "s50", str(tmp_path / "r"), [])
    return tuner._local_tuner._tune_config.scheduler


def test_asha_never_stops_a_trial_at_the_report_of_its_last_step(tmp_path):
    """ASHA's time was Tune's report count: the zoo's short trials (161 steps at eval_every=500)
    made their first report at their last step, met rung 1 there, and two in three were stopped
    with only their probes left: logged early_stopped = 1, trained to the end. Its rungs are steps
    now, at eval_every x 3^k: a last step off that cadence is never judged."""
    from ray.tune.schedulers import TrialScheduler

    sched = _zoo_like_scheduler(tmp_path, eval_every=500)
    long, short, mid = _Trial("long"), _Trial("short"), _Trial("mid")
    for t in (long, short, mid):
        sched.on_trial_add(None, t)
    m = "us/synth_us/top1"
    # Tune adds training_iteration to every result: the short trial's only report is its first
    assert sched.on_trial_result(None, long, {"step": 500.0, "training_iteration": 1, m: 0.6}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, short, {"step": 161.0, "training_iteration": 1, m: 0.2}) == TrialScheduler.CONTINUE
    # its final report (no step) is not judged either
    assert sched.on_trial_result(None, short, {"final": 1.0, "training_iteration": 2, m: 0.2}) == TrialScheduler.CONTINUE
    # a trial behind at the same step is still stopped there
    assert sched.on_trial_result(None, mid, {"step": 500.0, "training_iteration": 1, m: 0.1}) == TrialScheduler.STOP


def test_asha_over_trials_that_report_only_their_end_is_left_out(tmp_path, capsys):
    # eval_every=0: every report is a trial's last step; ASHA could only stop trained trials
    assert _zoo_like_scheduler(tmp_path, eval_every=0) is None
    assert "eval_every=0" in capsys.readouterr().err


def test_asha_stops_no_trial_for_its_number_of_reports(tmp_path):
    """max_t was 10,000 reports: a trial reporting every 10 steps was stopped at step 100,000,
    mid-run, and looked early-stopped."""
    from ray.tune.schedulers import TrialScheduler

    sched = _zoo_like_scheduler(tmp_path, eval_every=10)
    t = _Trial("a")
    sched.on_trial_add(None, t)
    r = {"step": 100_000.0, "training_iteration": 10_000, "us/synth_us/top1": 0.5}
    assert sched.on_trial_result(None, t, r) == TrialScheduler.CONTINUE


def test_the_repeats_of_a_grid_point_have_run_names_that_say_which(tmp_path):
    """``--num-samples 3``: each repeat's MLflow run is named ``<sweep>_<trial id>``, its params
    the same as its siblings', its repeat index in no param and no tag: the repeats could not be
    told apart in the UI. Tune names each trial (its run) with ``_repeat<i>`` now; a sweep
    without repeats keeps its names."""
    from ray.tune.experiment import Trial
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from meta_study.tune import runner

    def names(o: SweepOptions) -> list[str]:
        spec = SweepSpec(name="s50_rep", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                         smoke=dict(model_name="vit_tiny_cpu", epochs=1))
        tuner = runner._new_tuner(spec, o, lambda config: None, runner.fixed_config(spec, o), "s50",
                                  str(tmp_path / "r"), [])
        local = tuner._local_tuner
        gen = BasicVariantGenerator()
        # no Ray: a Ray another test of this worker left connected took the trainable (see test_s49_sweeps)
        # (each trial looks the trainable up again as it is made: the patch covers the whole loop)
        namer = local._tune_config.trial_name_creator
        out = []
        with mock.patch("ray.tune.registry._internal_kv_initialized", return_value=False):
            gen.add_configurations({"s50": {"run": lambda c: None, "config": local._param_space,
                                            "num_samples": local._tune_config.num_samples}})
            while (t := gen.next_trial()) is not None:
                trial = Trial("s50", config=t.config, trial_id=t.trial_id, trial_name_creator=namer, stub=True)
                out.append((trial.trial_id, str(trial)))
        return out

    three = names(SweepOptions(smoke=True, num_samples=3))
    assert [n for _, n in three] == [f"s50_rep_{tid}_repeat{i}" for i, (tid, _) in enumerate(three)]
    one = names(SweepOptions(smoke=True))
    assert [n for _, n in one] == [f"s50_rep_{tid}" for tid, _ in one]
    # a run the sweep's end creates for a trial whose run never was is named alike
    assert runner.TrialName("s")(SimpleNamespace(trial_id="x_00001", config={"_repeat": 2, "lr": 0.1})) == \
        "s_x_00001_repeat2"
    assert runner.TrialName("s")(SimpleNamespace(trial_id="x_00001", config=None)) == "s_x_00001"
