"""run_trial end to end: metric names follow meta_study.schema; a dict config works; finetune runs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from meta_study.schema import PARAM_NAMES, ds_metric_key, finetune_metric_key, us_metric_key
from meta_study.train import TrainConfig, TrialResult, run_trial, smoke_config

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust
DS = ("synth_combo", "synth_count")


@pytest.fixture(scope="module")
def result() -> TrialResult:
    cfg = smoke_config(model_name="mixer_tiny_cpu", ds_tasks=DS, shots=(1, 5), layerwise=True, l2_sweep=(1.0,),
                       finetune=True, finetune_steps=4, finetune_examples=60, eval_every=47, seed=3)
    reports = []
    r = run_trial(cfg, on_report=lambda step, m, ck: reports.append(step))
    assert reports == [47, 92]  # every 47 steps and at the end: 2 epochs x (6000 // 128) steps
    return r


def test_metrics_use_schema_keys(result: TrialResult) -> None:
    m = result.metrics()
    expected = {us_metric_key("synth_us")}
    expected |= {ds_metric_key(t, k, layer) for t in DS for k in (1, 5) for layer in (None, 0, 1)}
    expected |= {finetune_metric_key(t) for t in DS}
    accuracies = {k for k in m if k.startswith(("us/", "ds/"))}
    assert accuracies == expected
    assert all(0.0 <= m[k] <= 1.0 for k in expected)
    diag = {"diag/head_norm", "diag/margin/head", "diag/margin/prelogits", "diag/layer0/norm", "diag/layer1/norm",
            "diag/layer0/dist_init", "diag/layer1/dist_init"}
    assert diag <= set(m)
    assert "diag/l2sweep/synth_combo/5shot/l2_1/top1" in m and "diag/l2sweep/synth_combo/5shot/layer1/l2_1/top1" in m
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert result.ds_accuracy("synth_count", 5) == m[ds_metric_key("synth_count", 5)]


def test_result_describes_the_run(result: TrialResult) -> None:
    assert (result.model_name, result.arch_family, result.us_task) == ("mixer_tiny_cpu", "mixer", "synth_us")
    assert result.param_count > 50_000
    p = result.params()
    assert set(PARAM_NAMES) <= set(p) and p["lr"] == 2e-3 and p["head_wd"] == 0.1 and p["seed"] == 3
    assert p["epochs"] == pytest.approx(result.pretrain.plan.epochs)
    assert result.us_accuracy > 1 / 240
    assert result.timings["total"] >= result.timings["pretrain"] > 0


def test_dict_config_and_no_extras() -> None:
    cfg = smoke_config(model_name="vit_tiny_cpu", ds_tasks=("synth_xpos",), shots=(1,), diagnostics=False,
                       epochs=0.2).to_dict()
    r = run_trial(cfg)
    assert isinstance(r.config, TrainConfig) and r.diagnostics is None and not r.finetune_accuracy
    assert {k for k in r.metrics() if k.startswith(("us/", "ds/"))} == {us_metric_key("synth_us"),
                                                                         ds_metric_key("synth_xpos", 1)}


def test_resume_a_finished_trial(tmp_path) -> None:
    cfg = smoke_config(model_name="mixer_tiny_cpu", ds_tasks=("synth_shape",), shots=(5,), epochs=0.3,
                       margin_examples=128)
    first = run_trial(cfg, checkpoint_dir=str(tmp_path))
    again = run_trial(cfg, resume_from=str(tmp_path))  # e.g. a Tune trial restarted after its last report
    assert again.us_accuracy == first.us_accuracy
    assert again.ds_accuracy("synth_shape", 5) == first.ds_accuracy("synth_shape", 5)
    # distance to init is measured from the seed's init, re-created on resume
    assert again.diagnostics.weights.layer_dist_init == pytest.approx(first.diagnostics.weights.layer_dist_init)
    assert all(math.isfinite(v) for v in again.metrics().values())


def test_config_fields_start_with_the_schema_params() -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert tuple(names[:len(PARAM_NAMES)]) == PARAM_NAMES


def test_a_ds_task_with_fewer_examples_a_class_than_shots_fails_before_pre_training() -> None:
    """10 examples a class and shots (10, 25): the 25-shot key held the 10-shot draw, the same for
    every seed, logged as a mean over 3 seeds, after the whole pre-training."""
    started = []
    cfg = smoke_config(ds_tasks=("synth_shape",), ds_task_kwargs={"n_train_per_class": 10, "n_test": 60},
                       shots=(10, 25))
    with pytest.raises(ValueError, match=r"^DS task synth_shape: class 0 has 10 train examples, fewer than shots=25"):
        run_trial(cfg, on_start=lambda c, i: started.append(c))
    assert not started
