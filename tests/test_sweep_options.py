"""The typed sweep API: flags become SweepOptions, options become the trial config and hooks."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError
from meta_study.tune.runner import SMOKE, SweepOptions, SweepSpec, fixed_config, grid, parse_options, trial_hooks

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
])
def test_bad_flags_are_one_line_user_errors(argv, says):
    with pytest.raises(UserError, match=None) as e:
        parse_options(SPEC, argv)
    assert says in str(e.value)
