"""Session 51: every sweep sizes its trials by model through one code path (meta_study.tune.sizing),
a ``--set`` key given twice, and the sensitivity's default sizes with one step."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, sweep_module
from meta_study.tune import sizing
from meta_study.tune.runner import PerTrialResources, SweepOptions, fixed_config, parse_options, trial_requests

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.py"))
GRID_SWEEPS = [s for s in SWEEPS if s != "zoo"]    # the zoo's space is Optuna's define-by-run
GiB = 2**30


# --------------------------------------------------------------------------------------------
# 1. Per-trial sizing by model: every sweep, the same function
# --------------------------------------------------------------------------------------------


def test_every_sweep_is_found():
    assert {"head_wd", "head_lr", "scaling", "zoo"} <= set(SWEEPS), SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_sizes_its_trials_with_the_shared_sizing(name):
    """head_wd and head_lr asked every trial for ``--gpus-per-trial`` and no memory (a ViT-B at
    224 px on ImageNet-21k reserved nothing of the host), and scaling.py wrapped the sizing with
    a smoke rule of its own (its smoke trials unsized, the zoo's sized)."""
    assert sweep_module(name).SPEC.resources is sizing.resources


@pytest.mark.parametrize("name", SWEEPS)
def test_every_smoke_request_is_the_table_s_entry_of_its_model(name):
    """Each request a smoke sweep's space can make (what the preflight checks and Tune reserves) is
    the sizing table's entry of its tiny CPU model: a share of ``--cpus-per-trial`` and host memory."""
    spec = sweep_module(name).SPEC
    options = SweepOptions(smoke=True)
    got = trial_requests(spec, options, fixed_config(spec, options))
    assert got, name
    models = {str(m) for m in sizing.SIZES if m.endswith("_cpu")}
    want = {tuple(sorted(sizing.request(*sizing.SIZES[m], options).as_tune().items())) for m in models}
    for label, request in got:
        assert request.get("memory", 0) > 0 and tuple(sorted(request.items())) in want, (name, label, request)


@pytest.mark.parametrize("name", ["head_wd", "head_lr"])
def test_a_fixed_model_sweep_sizes_its_model_and_a_set_model(name):
    """At full size the fixed ViT-S takes half of ``--gpus-per-trial`` and 6 GiB (as in scaling and
    the zoo); ``--set model_name=vit_b`` a whole GPU and 12 GiB."""
    spec = sweep_module(name).SPEC
    gpu = SweepOptions(gpus_per_trial=1.0)
    size = PerTrialResources(spec.resources, gpu)
    assert size(fixed_config(spec, gpu)) == {"cpu": 1.0, "gpu": 0.5, "memory": 6 * GiB}
    vit_b = SweepOptions(gpus_per_trial=1.0, overrides={"model_name": "vit_b"})
    assert PerTrialResources(spec.resources, vit_b)(fixed_config(spec, vit_b)) == \
        {"cpu": 1.0, "gpu": 1.0, "memory": 12 * GiB}


@pytest.mark.slow(40)
def test_the_sized_request_reaches_each_tune_trial(local_ray, tmp_path: Path):
    """What run_sweep hands Tune (``tune.with_resources`` of ``PerTrialResources(spec.resources)``)
    is what each trial of every grid sweep's smoke space is given by Ray: its tiny model's CPUs
    and host memory (a trial function that only reports, on the module's 2-CPU Ray)."""
    from ray import tune

    def assigned(config):   # nested: pickled by value (a worker cannot import this test module)
        import ray

        got = ray.get_runtime_context().get_assigned_resources()
        tune.report({"cpu": float(got.get("CPU", 0.0)), "memory": float(got.get("memory", 0.0)),
                     "model": str(config.get("model_name"))})

    for name in GRID_SWEEPS:
        spec = sweep_module(name).SPEC
        options = SweepOptions(smoke=True)
        fixed = fixed_config(spec, options)
        space = {**({"model_name": fixed["model_name"]} if "model_name" in fixed else {}), **spec.space(options)}
        trainable = tune.with_resources(assigned, PerTrialResources(spec.resources, options))
        results = tune.Tuner(trainable, param_space=space,
                             run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0)).fit()
        assert results.num_errors == 0 and len(results) >= 1, name
        for r in results:
            share, memory_gb = sizing.SIZES[r.metrics["model"]]
            assert (r.metrics["cpu"], r.metrics["memory"]) == (share, memory_gb * GiB), (name, r.metrics)


# --------------------------------------------------------------------------------------------
# 2. --set KEY=VALUE given twice
# --------------------------------------------------------------------------------------------


def test_a_set_key_given_twice_with_two_values_is_refused():
    """``--set lr=0.1 --set lr=0.2``: the sweep ran at 0.2 and its record said nothing of 0.1 (a
    sweep's config from a shell history edited by hand). Refused as ``--dataset`` given twice is."""
    from meta_study.errors import UserError

    spec = sweep_module("head_wd").SPEC
    with pytest.raises(UserError, match=r"^--set lr given twice, as 0\.1 and as 0\.2"):
        parse_options(spec, ["--smoke", "--set", "lr=0.1", "--set", "lr=0.2"])


def test_a_set_key_repeated_with_its_own_value_is_one_setting():
    """The same pair twice (a script that adds a flag its caller also gives) is one setting."""
    spec = sweep_module("head_wd").SPEC
    assert parse_options(spec, ["--set", "lr=0.1", "--set", "lr=0.1"]).overrides == {"lr": 0.1}


# --------------------------------------------------------------------------------------------
# 3. default_sizes with one step
# --------------------------------------------------------------------------------------------


def test_default_sizes_with_one_step_is_one_size():
    """``n_sizes=1``: one size, the smallest sample (``min_size``, or every fitting point below
    it): not an empty grid, not a crash. ``n_sizes=0`` is refused by SensitivityOptions."""
    from meta_study.analysis.sensitivity import SensitivityOptions, default_sizes

    assert default_sizes(1000, 1) == [10] and default_sizes(1000, 1, 3) == [3]
    assert default_sizes(5, 1) == [5] and default_sizes(0, 1) == []
    assert SensitivityOptions(n_sizes=1).n_sizes == 1
    with pytest.raises(ValueError):
        SensitivityOptions(n_sizes=0)


def test_a_fixed_model_sweep_s_one_request_names_no_searched_value():
    """Every trial of head_wd asks for the same (its model is fixed): a refusal said "its trials of
    head_wd=0.0, seed=0", as if the other 20 trials fitted. One request: no label, or the model."""
    spec = sweep_module("head_wd").SPEC
    gpu = SweepOptions(gpus_per_trial=1.0)
    (label, _), = trial_requests(spec, gpu, fixed_config(spec, gpu))
    assert label in ("", "model_name='vit_s'"), label


def test_a_searched_models_one_request_still_names_the_searched_values():
    """scaling's smoke searches two tiny models that size alike (one request): the fixed-model label
    left the refusal naming nothing ("its trials of "); a searched model keeps the searched values."""
    spec = sweep_module("scaling").SPEC
    smoke = SweepOptions(smoke=True)
    fixed = fixed_config(spec, smoke)
    assert "model_name" not in fixed
    (label, _), = trial_requests(spec, smoke, fixed)
    assert label and "model_name=" in label, label
