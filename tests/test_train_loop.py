"""Pre-training loop: tiny models learn, reports carry checkpoints, resuming is exact."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_study.schema import us_metric_key
from meta_study.train import TrainConfig, create_model, get_task, plan_steps, pretrain, resolve_runtime
from meta_study.train.loop import CHECKPOINT_FILE

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust


@pytest.fixture(scope="module")
def us16():
    return get_task("synth_us", img_size=16, n_train=6000, n_test=1200)


@pytest.mark.parametrize("name", ["vit_tiny_cpu", "mixer_tiny_cpu", "resnet_tiny_cpu"])
def test_tiny_models_beat_chance(us16, name: str) -> None:
    torch.manual_seed(0)
    model, info = create_model(name, num_classes=us16.num_classes, img_size=16)
    # the tiny ResNet learns slowly at 2e-3 in 190 steps (3.2-4.0x chance over seeds with torch 2.14,
    # on the 4x line); at 5e-3 it reaches 8-14x, and 1e-2 diverges on some seeds
    lr = 5e-3 if name == "resnet_tiny_cpu" else 2e-3
    r = pretrain(model, info, us16, TrainConfig(model_name=name, epochs=2, batch_size=64, lr=lr))
    chance = 1 / us16.num_classes  # 0.42%
    # ~190 steps reach 4-10% (10-25x chance) here; 4x chance on 1,200 test images is ~20 correct vs ~5 by luck.
    assert r.us_accuracy > 4 * chance, r.us_accuracy
    assert np.mean(r.losses[:10]) > math.log(us16.num_classes) - 0.2  # starts near chance ...
    assert np.mean(r.losses[-20:]) < np.mean(r.losses[:10]) - 0.2  # ... and learns
    assert r.plan.total_steps == 2 * (6000 // 64) and np.isfinite(r.losses).all()


def test_reports_and_checkpoints(us16, tmp_path: Path) -> None:
    reports = []
    torch.manual_seed(0)
    model, info = create_model("mixer_tiny_cpu", num_classes=us16.num_classes, img_size=16)
    cfg = TrainConfig(steps=10, batch_size=32, eval_every=4, us_eval_examples=200)
    r = pretrain(model, info, us16, cfg, on_report=lambda s, m, ck: reports.append((s, m, ck)),
                 checkpoint_dir=str(tmp_path))
    assert [s for s, _, _ in reports] == [4, 8, 10]
    assert all(ck == str(tmp_path) for _, _, ck in reports)
    assert os.path.exists(tmp_path / CHECKPOINT_FILE)
    m = reports[-1][1]
    assert m[us_metric_key("synth_us")] == r.us_accuracy and 0 <= r.us_accuracy <= 1
    assert {"step", "epoch", "train/loss", "train/lr", "train/images_per_s"} <= set(m)
    assert m["train/loss"] == pytest.approx(float(np.mean(r.losses[8:10])))
    assert len(r.history) == 3


class _Preempted(Exception):
    pass


def _run(task, cfg: TrainConfig, **kw):
    torch.manual_seed(cfg.seed)
    model, info = create_model(cfg.model_name, num_classes=task.num_classes, img_size=task.img_size)
    return pretrain(model, info, task, cfg, **kw), model


@pytest.mark.parametrize("name,optimizer", [("vit_tiny_cpu", "adam"), ("resnet_tiny_cpu", "sgd")])
def test_resume_continues_exactly(us16, tmp_path: Path, name: str, optimizer: str) -> None:
    # 8 steps per epoch: the crash at step 12 is mid-epoch 1, so the data order must resume too.
    cfg = TrainConfig(model_name=name, optimizer=optimizer, steps=20, batch_size=16, eval_every=6, us_eval_examples=64,
                      lr=2e-3, data_fraction=128 / 6000)
    full, full_model = _run(us16, cfg)

    def crash_at_12(step, metrics, ck):
        if step == 12:
            raise _Preempted

    with pytest.raises(_Preempted):
        _run(us16, cfg, on_report=crash_at_12, checkpoint_dir=str(tmp_path))
    torch.manual_seed(12345)  # a restarted process has other RNG states; the checkpoint restores them
    resumed, resumed_model = _run(us16, cfg, resume_from=str(tmp_path))
    # the steps before the resume: their losses come back with the checkpoint (train/final_loss
    # averaged the steps after the resume alone)
    np.testing.assert_array_equal(resumed.losses[:12], full.losses[:12])
    np.testing.assert_allclose(resumed.losses[12:], full.losses[12:], rtol=0, atol=1e-6)
    assert resumed.losses[12] == full.losses[12]  # the very next step: bit-identical on CPU
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed.us_accuracy == full.us_accuracy


def test_plan_steps_from_epochs_steps_and_fraction() -> None:
    p = plan_steps(TrainConfig(epochs=2.5, batch_size=100), 1000)
    assert (p.steps_per_epoch, p.total_steps, p.warmup_steps, p.epochs) == (10, 25, 1, 2.5)
    p = plan_steps(TrainConfig(steps=7, batch_size=100), 1000)
    assert (p.total_steps, p.epochs) == (7, 0.7)
    assert plan_steps(TrainConfig(epochs=1, batch_size=512), 100).batch_size == 100  # small subsets: one batch


def test_config_from_dict() -> None:
    cfg = TrainConfig.from_dict({"model_name": "mixer_tiny_cpu", "head_wd": 0.5, "shots": [1, 5]})
    assert cfg.shots == (1, 5) and cfg.head_wd == 0.5
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"head_weight_decay": 0.5})


def test_dataloader_workers_give_the_same_run(us16) -> None:
    # The GPU path renders / decodes in worker processes; the data order must not change.
    cfg = TrainConfig(model_name="mixer_tiny_cpu", steps=6, batch_size=16, us_eval_examples=32, data_fraction=0.01)
    inline, _ = _run(us16, cfg)
    workers, _ = _run(us16, dataclasses.replace(cfg, num_workers=2))
    np.testing.assert_array_equal(inline.losses, workers.losses)


def test_bf16_autocast_and_channels_last_paths(us16) -> None:
    # The GPU defaults (bf16 autocast, channels-last convnets) forced on the CPU: the code paths run.
    cfg = TrainConfig(model_name="resnet_tiny_cpu", steps=3, batch_size=16, us_eval_examples=32, precision="bf16",
                      channels_last=True, device="cpu")
    r, model = _run(us16, cfg)
    assert np.isfinite(r.losses).all() and 0.0 <= r.us_accuracy <= 1.0
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    rt = resolve_runtime(TrainConfig(device="cpu"), "resnet")
    assert (rt.autocast_dtype, rt.channels_last, rt.compile) == (None, False, False)  # CPU default: all off


def test_a_diverged_run_fails_instead_of_reporting_chance(us16, tmp_path: Path) -> None:
    """lr 1e4 without clipping: 3 of 46 losses finite, and the run reported US 1/240 and DS 1/6
    (argmax of NaN logits) as a finished run, its loss the mean of the finite steps."""
    from meta_study.train.loop import DivergedError

    reports = []
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=us16.num_classes, img_size=16)
    cfg = TrainConfig(steps=12, batch_size=32, eval_every=6, lr=1e4, grad_clip=0, optimizer="sgd",
                      us_eval_examples=100)
    with pytest.raises(DivergedError, match=r"training diverged: the loss is not finite from step \d+ of 12") as e:
        pretrain(model, info, us16, cfg, on_report=lambda s, m, ck: reports.append(s), checkpoint_dir=str(tmp_path))
    first = int(str(e.value).split("from step ")[1].split()[0])
    assert all(s < first for s in reports), (reports, first)        # no report, no checkpoint, past it


def test_the_reported_lr_is_the_last_updates() -> None:
    # it was read after the scheduler's step: the next update's lr, and 0 at the end of every run
    task = get_task("synth_us", img_size=16, n_train=640, n_test=100)
    torch.manual_seed(0)
    model, info = create_model("mixer_tiny_cpu", num_classes=task.num_classes, img_size=16)
    reports = []
    cfg = TrainConfig(steps=10, batch_size=32, eval_every=5, lr=1e-3, us_eval_examples=50)
    pretrain(model, info, task, cfg, on_report=lambda s, m, ck: reports.append(m["train/lr"]))
    from meta_study.train.optim import WarmupLinearDecay

    sched = WarmupLinearDecay(plan_steps(cfg, 640).warmup_steps, 10)
    assert reports == pytest.approx([1e-3 * sched(4), 1e-3 * sched(9)]) and reports[-1] > 0


def test_whole_floats_count_as_integers_and_parts_do_not() -> None:
    # tune.quniform gives 64.0: it crashed the trial in numpy's seeding ("seed must be integer")
    cfg = TrainConfig(batch_size=64.0, steps=10.0, shots=[5.0, 10])
    assert cfg.batch_size == 64 and isinstance(cfg.batch_size, int) and cfg.shots == (5, 10)
    with pytest.raises(ValueError, match="steps=10.5: must be a whole number"):
        TrainConfig(steps=10.5)
    assert TrainConfig(margin_examples=0, diagnostics=False).margin_examples == 0
