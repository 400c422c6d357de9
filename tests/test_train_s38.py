"""Defects found in the fourth review of the training engine (s38): each test failed before its fix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from meta_study.train import (TrainConfig, create_model, extract_features, fewshot_features, finetune, get_task,
                              load_checkpoint, pretrain, save_checkpoint)
from meta_study.train.data import Task, TensorSplit
from meta_study.train.loop import Runtime, resolve_runtime
from meta_study.train.optim import build_optimizer, build_schedule

torch.set_num_threads(1)
CPU = Runtime(torch.device("cpu"), None, False, False)


def _tiny_task(n: int = 32, classes: int = 4, size: int = 8) -> Task:
    g = torch.Generator().manual_seed(0)

    def split(m: int) -> TensorSplit:
        return TensorSplit(torch.randint(0, 256, (m, 3, size, size), generator=g, dtype=torch.uint8),
                           np.arange(m) % classes)

    return Task("tiny", classes, size, split(n), split(16))


def test_numpy_values_in_a_config_are_taken_and_its_checkpoint_resumes(tmp_path: Path) -> None:
    # A Tune config over np.arange / np.logspace passed to run_trial: np.int64(8) was refused as
    # "batch_size=np.int64(8): must be a number >= 1", and an np.float64 lr (a float, so taken)
    # was saved in the checkpoint's config, which torch.load(weights_only=True) then refused
    # (UnpicklingError): the run could be neither resumed nor evaluated
    cfg = TrainConfig(model_name="vit_tiny_cpu", img_size=8, batch_size=np.int64(8), lr=np.float64(1e-3),
                      steps=np.int64(4), eval_every=2, shots=np.array([1, 2]), us_task_kwargs={"n_train": np.int64(32)},
                      model_kwargs={"patch_size": np.int64(4)}, diagnostics=False)
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and cfg.shots == (1, 2)
    assert type(cfg.us_task_kwargs["n_train"]) is int and type(cfg.model_kwargs["patch_size"]) is int
    task = _tiny_task()
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=4, img_size=8, patch_size=4)

    def stop(step: int, metrics: dict, ck: str | None) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(model, info, task, cfg, on_report=stop, checkpoint_dir=str(tmp_path))
    model2, info2 = create_model("vit_tiny_cpu", num_classes=4, img_size=8, patch_size=4)
    res = pretrain(model2, info2, task, cfg, resume_from=str(tmp_path))
    assert res.plan.total_steps == 4 and np.isfinite(res.losses[2:]).all()


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3])
def test_a_device_torch_cannot_name_is_refused_by_the_config(device: object) -> None:
    # --set device=gpu passed the sweep's checks and failed in every trial, inside torch
    # ("Expected one of cpu, cuda, ipu, ... device type at start of device string: gpu")
    with pytest.raises(ValueError, match=r"^device=.*: must be auto or a torch device name"):
        TrainConfig(device=device)
    TrainConfig(device="cuda:1")   # a name: whether this machine has it is the trial's business


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_one_line() -> None:
    # torch's error came at the first .to(), after the tasks were built: "Found no NVIDIA driver ..."
    with pytest.raises(ValueError, match=r"^device='cuda': this machine has 0 CUDA device\(s\); use device=\"auto\""):
        resolve_runtime(TrainConfig(device="cuda"), "vit")


def test_probing_features_extracted_for_other_draws_is_refused_not_misread() -> None:
    # features extracted for (10 shots, seeds 0-2) probed at seed 3: searchsorted found the rows
    # of neighbouring examples, a "5-shot" fit on 7 of one class and 3 of another (or an IndexError)
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=4, img_size=16)
    task = get_task("synth_shape", img_size=16, n_train_per_class=40, n_test=12)
    fs = extract_features(model, info, task, CPU, shots=(10,), seeds=(0, 1, 2))
    assert fewshot_features(fs, shots=(5, 10), seeds=(0, 2))   # within what was extracted
    for seed in (3, 4, 5):
        with pytest.raises(ValueError, match="synth_shape: the 5-shot draw of seed .* not extracted for"):
            fewshot_features(fs, shots=(5,), seeds=(seed,))
    with pytest.raises(ValueError, match="the 20-shot draw of seed 0"):
        fewshot_features(fs, shots=(20,), seeds=(0,))


def test_finetune_builds_its_new_head_on_the_runtimes_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # timm before ~1.0.20 (pyproject allows timm>=1.0) built reset_classifier's head on the CPU;
    # the copy had been moved to the device first, so a CUDA fine-tune failed at its first forward
    torch.manual_seed(0)
    model, _ = create_model("vit_tiny_cpu", num_classes=4, img_size=16)

    def old_reset(self: nn.Module, num_classes: int, global_pool: object = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes)   # on the CPU, whatever the model's device

    monkeypatch.setattr(type(model), "reset_classifier", old_reset)
    ft = sys.modules["meta_study.train.finetune"]
    devices: set[str] = set()
    monkeypatch.setattr(ft, "train_step", lambda net, *a, **k: devices.update(p.device.type for p in net.parameters()))
    monkeypatch.setattr(ft, "evaluate", lambda net, *a, **k: 0.5)
    meta = Runtime(torch.device("meta"), None, False, False)   # stands for a GPU: any device but the CPU
    task = get_task("synth_shape", img_size=16, n_train_per_class=2, n_test=6)
    assert finetune(model, task, meta, examples=8, steps=1, batch_size=4) == 0.5
    assert devices == {"meta"}


@pytest.mark.parametrize("seed", [np.int64(3), 3.0, np.float32(3.0)])
def test_a_synthetic_task_seed_means_its_value_not_its_type(seed: object) -> None:
    # repr(np.int64(3)) is "np.int64(3)" under numpy 2 and repr(3.0) is "3.0": each hashed to
    # another dataset than seed=3 (1.84 apart in pixel values), without a word
    a = get_task("synth_shape", img_size=8, seed=3, n_train_per_class=2, n_test=2)
    b = get_task("synth_shape", img_size=8, seed=seed, n_train_per_class=2, n_test=2)
    assert torch.equal(a.train.images(np.arange(4)), b.train.images(np.arange(4)))
    assert np.array_equal(a.test.labels, b.test.labels)


def _parts() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    model, _ = create_model("vit_tiny_cpu", num_classes=4, img_size=8)
    opt = build_optimizer(model)
    return model, opt, build_schedule(opt, 10, 1)


def test_an_unreadable_checkpoint_is_named_in_one_line(tmp_path: Path) -> None:
    # a truncated copy: torch's error ("PytorchStreamReader failed reading zip archive ...") named no file
    model, opt, sched = _parts()
    save_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched, step=1, cfg=TrainConfig())
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a readable checkpoint \(") as e:
        load_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched)
    assert "\n" not in str(e.value)


def test_a_failed_checkpoint_save_leaves_no_temp_file_and_the_last_checkpoint(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # a full disk: torch.save wrote part of the temp file and raised; the half-written file stayed
    # beside the checkpoint (and went with the directory to the trial's checkpoint storage)
    model, opt, sched = _parts()
    save_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched, step=1, cfg=TrainConfig())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj: object, f: str) -> None:
        real_save(obj, f)
        with open(f, "r+b") as h:
            h.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched, step=2, cfg=TrainConfig())
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("dtype", [np.int32, np.uint8])
def test_a_task_with_narrow_integer_labels_trains_and_is_diagnosed(dtype: type) -> None:
    # Task takes any integer labels (CIFAR arrays hold uint8): int32 ones crashed pre-training in
    # cross_entropy ("expected target dtype to be Long or Byte, but got Int"), uint8 ones the margins
    # ("gather(): Expected dtype int32/int64 for index")
    from meta_study.train import capture_init, diagnose

    g = torch.Generator().manual_seed(0)

    def split(m: int) -> TensorSplit:
        return TensorSplit(torch.randint(0, 256, (m, 3, 8, 8), generator=g, dtype=torch.uint8),
                           (np.arange(m) % 4).astype(dtype))

    task = Task("tiny", 4, 8, split(32), split(16))
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=4, img_size=8)
    init = capture_init(model)
    res = pretrain(model, info, task, TrainConfig(img_size=8, batch_size=8, steps=2))
    assert np.isfinite(res.losses).all() and 0 <= res.us_accuracy <= 1
    d = diagnose(model, info, init, task, res.train_indices, CPU, n=16)
    assert np.isfinite(d.margins.head)


@pytest.mark.parametrize("kw, says", [
    (dict(layerwise="false"), "layerwise='false': must be True or False"),
    (dict(finetune=1), "finetune=1: must be True or False"),
    (dict(channels_last="yes"), "channels_last='yes': must be None, True or False"),
    (dict(model_kwargs=[("drop_rate", 0.1)]), "model_kwargs=.*: must be a mapping"),
    (dict(us_task_kwargs=None), "us_task_kwargs=None: must be a mapping"),
])
def test_a_switch_or_kwargs_of_the_wrong_type_is_refused_by_the_config(kw: dict, says: str) -> None:
    # layerwise="false" (a string from a hand-written config) is truthy: every block was probed;
    # kwargs that are not a mapping failed inside the trial, after its setup
    with pytest.raises(ValueError, match=f"^{says}"):
        TrainConfig(**kw)
    assert TrainConfig(layerwise=np.bool_(True), channels_last=None).layerwise is True
