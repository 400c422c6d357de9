"""Session 47 review of the training engine (data fractions, trial configs, ...)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train import TrainConfig, fraction_indices

torch.set_num_threads(1)


# --- data_fraction: the subset is the fraction it says ------------------------------------------


@pytest.mark.parametrize("f, n, want", [(0.07, 100, 7), (0.14, 6000, 840), (0.55, 100, 55), (0.28, 100, 28),
                                        (0.1, 1000, 100), (0.125, 9, 2), (0.001, 10, 1), (1.0, 37, 37)])
def test_data_fraction_takes_ceil_of_the_decimal_fraction(f: float, n: int, want: int) -> None:
    # 0.07 * 100 is 7.000000000000001 in floating point: its ceil took 8 examples, 0.14 of 6,000 took 841
    assert len(fraction_indices(n, f)) == want


def test_data_fraction_sizes_match_exact_decimal_arithmetic() -> None:
    for n in (100, 6000, 12345):
        for i in range(1, 100):
            assert len(fraction_indices(n, i / 100)) == -(-i * n // 100), (i, n)
    assert len(fraction_indices(10, 0.33)) == 4   # a real fractional part still rounds up (3.3 -> 4)


def test_data_fraction_subsets_stay_nested_after_the_rounding_fix() -> None:
    a, b, c = (fraction_indices(6000, f, seed=3) for f in (0.07, 0.14, 0.28))
    assert set(a) <= set(b) <= set(c)
    assert (len(a), len(b), len(c)) == (420, 840, 1680)


# --- trial configs: task names -----------------------------------------------------------------


@pytest.mark.parametrize("value", [None, {"synth_shape": 1}])
def test_ds_tasks_that_are_not_a_list_of_names_is_one_line_naming_the_field(value: object) -> None:
    # ds_tasks=None passed the config and failed in run_trial as "'NoneType' object is not iterable"
    with pytest.raises(ValueError, match=r"^ds_tasks=.*: must be a list of task names"):
        TrainConfig(ds_tasks=value)
    with pytest.raises(ValueError, match=r"^ds_tasks=.*: must be a list of task names"):
        TrainConfig.from_dict({"ds_tasks": value})


def test_task_names_as_lists_and_none_probed_still_pass() -> None:
    assert TrainConfig(ds_tasks=["synth_shape"]).ds_tasks == ("synth_shape",)
    assert TrainConfig(ds_tasks="synth_shape").ds_tasks == ("synth_shape",)
    assert TrainConfig(ds_tasks=()).ds_tasks == ()
    assert TrainConfig(ds_tasks={"synth_xpos", "synth_shape"}).ds_tasks == ("synth_shape", "synth_xpos")
    assert TrainConfig(ds_tasks=np.array(["synth_shape", "synth_xpos"])).ds_tasks == ("synth_shape", "synth_xpos")


# --- trial configs: numbers too large -----------------------------------------------------------


@pytest.mark.parametrize("field, want", [("lr", "lr=1.000e+400: must be at most 3.403e+38"),
                                         ("batch_size", "batch_size=1.000e+400: must be at most 2,147,483,647"),
                                         ("epochs", "epochs=1.000e+400: must be at most 2,147,483,647"),
                                         ("steps", "steps=1.000e+400: must be at most"),
                                         ("l2", "l2=1.000e+400: must be at most 1.798e+308"),
                                         ("grad_clip", "grad_clip=1.000e+400: must be at most"),
                                         ("seed", "seed=1000"), ("finetune_lr", "finetune_lr=1.000e+400")])
def test_an_int_too_large_for_a_float_is_one_line_not_an_overflow_error(field: str, want: str) -> None:
    # math.isfinite(10**400) raised OverflowError ("int too large to convert to float"): a traceback
    # from the config, and from the sweep runner's --set check (which takes ValueError and TypeError)
    with pytest.raises(ValueError) as e:
        TrainConfig(**{field: 10**400})
    assert str(e.value).startswith(want), str(e.value)
    with pytest.raises(ValueError, match=r"^l2_sweep="):
        TrainConfig(l2_sweep=[1.0, 10**400])


@pytest.mark.parametrize("epochs", [1e30, 2.0**31])
def test_epochs_beyond_any_step_count_are_refused_by_the_config(epochs: float) -> None:
    # epochs=1e30 passed and failed in every trial as "Overflow when unpacking long long" (a TypeError)
    with pytest.raises(ValueError, match=r"^epochs=.*: must be at most 2,147,483,647"):
        TrainConfig(epochs=epochs)


def test_epochs_that_make_too_many_steps_are_refused_before_training() -> None:
    # epochs=1e9 of 375 steps: a terabyte allocation for the loss log (1e12: "can't allocate memory")
    from meta_study.train import plan_steps

    with pytest.raises(ValueError, match=r"^epochs=1e\+09 of 1500 steps each \(batch 32 of 48000 examples\) is "
                                         r"1.5e\+12 steps: must be at most 2,147,483,647"):
        plan_steps(TrainConfig(epochs=1e9, batch_size=32), 48000)
    assert plan_steps(TrainConfig(epochs=2.5, batch_size=32), 144).total_steps == 10


@pytest.mark.parametrize("setting, want", [("lr=1" + "0" * 400, "--set lr=1.000e+400: must be at most 3.403e+38"),
                                           ("epochs=1e30", "--set epochs=1e+30: must be at most 2,147,483,647")])
def test_a_sweeps_set_of_a_number_out_of_range_is_one_user_error_line(setting: str, want: str) -> None:
    # the runner turns the config's ValueError into a UserError; an OverflowError was a traceback,
    # and epochs=1e30 passed to fail in every trial
    from meta_study.errors import UserError
    from meta_study.tune.runner import SweepSpec, check_fixed_config, grid, parse_options

    spec = SweepSpec(name="s47_t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                     smoke=dict(model_name="vit_tiny_cpu", epochs=1))
    with pytest.raises(UserError) as e:
        check_fixed_config(spec, parse_options(spec, ["--smoke", "--set", setting]))
    assert str(e.value).startswith(want), str(e.value)
