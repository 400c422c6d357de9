"""Review s43 of meta_study.train loop / trial / data / models: task kwargs the trial sets itself,
a checkpoint whose weights do not fit the model, timm's build errors in one line (multi-line ones,
and those without model_kwargs), checkpoints fsynced before they replace the last one, shots=None,
one-hot labels and in-memory images of another shape than the task declares."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_study.train import TrainConfig, create_model, pretrain
from meta_study.train import loop
from meta_study.train.data import Task, TensorSplit

torch.set_num_threads(1)


def _task(num_classes: int, n: int = 64, img_size: int = 8) -> Task:
    g = torch.Generator().manual_seed(0)
    px = torch.randint(0, 256, (n, 3, img_size, img_size), dtype=torch.uint8, generator=g)
    y = np.arange(n) % num_classes
    return Task("t43", num_classes, img_size, TensorSplit(px, y), TensorSplit(px.clone(), y.copy()))


@pytest.mark.parametrize(("field", "key", "says"), [
    ("us_task_kwargs", "seed", "set by data_seed="),
    ("us_task_kwargs", "img_size", "set by img_size="),
    ("ds_task_kwargs", "seed", "set by data_seed="),
    ("ds_task_kwargs", "img_size", "set by img_size="),
])
def test_task_kwargs_the_trial_sets_itself_are_refused_in_one_line(field: str, key: str, says: str) -> None:
    # every trial failed building its tasks: "get_task() got multiple values for keyword argument 'seed'"
    with pytest.raises(ValueError, match=rf"^{field} {key}=3: {says}, not {field}$"):
        TrainConfig(**{field: {"n_test": 10, key: 3}})


def test_a_checkpoint_of_a_task_with_other_classes_is_refused_in_one_line_restoring_nothing(tmp_path: Path) -> None:
    # a task registered again under its name with 5 classes, not 4: the config check passed, and
    # load_state_dict copied what fitted into the model, then raised in three lines naming no file
    cfg = TrainConfig(steps=2, batch_size=16, eval_every=2, us_task="t43", img_size=8)
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=4, img_size=8)
    pretrain(model, info, _task(4), cfg, checkpoint_dir=str(tmp_path))
    torch.manual_seed(1)
    other, other_info = create_model("vit_tiny_cpu", num_classes=5, img_size=8)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    path = tmp_path / loop.CHECKPOINT_FILE
    with pytest.raises(ValueError, match=rf"^{path}: its weights are not this model's \(head.weight is \(4, 64\) in "
                                         r"it, \(5, 64\) in this model\)") as e:
        pretrain(other, other_info, _task(5), cfg, resume_from=str(tmp_path))
    assert "\n" not in str(e.value)
    for k, v in other.state_dict().items():   # nothing restored
        assert torch.equal(v, before[k]), k


def test_model_kwargs_torch_refuses_in_many_lines_are_named_in_one() -> None:
    # drop_path_rate="x": torch's linspace error lists its overloads over 8 lines
    with pytest.raises(ValueError, match=r"model 'vit_tiny_cpu': model_kwargs .*timm could not build it "
                                         r"\(TypeError: linspace\(\) received an invalid") as e:
        create_model("vit_tiny_cpu", num_classes=5, img_size=16, drop_path_rate="x")
    assert "\n" not in str(e.value)


def test_a_checkpoint_is_fsynced_before_it_replaces_the_last_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # renamed without an fsync, a power loss could leave checkpoint.pt empty: the last good one gone
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(loop.os, "fsync", lambda fd: (events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}"),
                                                      real_fsync(fd))[1])
    monkeypatch.setattr(loop.os, "replace", lambda a, b: (events.append(f"replace {a}"), real_replace(a, b))[1])
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = loop.save_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched, step=1, cfg=TrainConfig())
    tmp = events[-1].split(" ", 1)[1]
    assert events[-2:] == [f"fsync {tmp}", f"replace {tmp}"], events
    assert loop.read_checkpoint(path)["step"] == 1


@pytest.mark.parametrize("field", ["shots", "l2_sweep"])
def test_a_sequence_field_of_none_is_refused_naming_it(field: str) -> None:
    # was a TypeError naming no field: "'NoneType' object is not iterable"
    with pytest.raises(ValueError, match=rf"^{field}=None: must be "):
        TrainConfig(**{field: None})


@pytest.mark.parametrize(("name", "says"), [
    ("maxvit_tiny_tf_224", r"RuntimeError: Trying to create tensor with negative dimension"),
    ("twins_svt_small", r"AssertionError: img_size \(1, 1\) should be divided by patch_size"),
])
def test_a_timm_model_that_cannot_be_built_at_img_size_is_named_in_one_line(name: str, says: str) -> None:
    # without model_kwargs timm's own error went out as it was, naming neither the model nor img_size
    with torch.device("meta"), pytest.raises(ValueError, match=rf"^model '{name}': img_size=16: timm could not "
                                                              rf"build it \({says}"):
        create_model(name, num_classes=5, img_size=16)


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_one_hot_labels_are_refused_when_the_task_is_built(dtype: type) -> None:
    # int one-hot rows passed (all in [0, num_classes)) and pre-training failed in cross_entropy:
    # "Expected floating point type for target with class probabilities, got Long"
    px = torch.zeros(8, 3, 8, 8, dtype=torch.uint8)
    y = np.eye(4, dtype=dtype)[np.arange(8) % 4]
    with pytest.raises(ValueError, match=r"^task 'onehot': train labels have shape \(8, 4\); give one class id per "
                                         r"example, a 1-D array \(one-hot rows: labels.argmax\(1\)\)$"):
        Task("onehot", 4, 8, TensorSplit(px, y), TensorSplit(px.clone(), y.copy()))


@pytest.mark.parametrize(("shape", "in_chans", "says"), [
    ((1, 8, 8), 3, r"\(1, 8, 8\) \(C, H, W\), not in_chans=3 x img_size=8"),    # grayscale, in_chans left at 3
    ((3, 8, 8), 3, None),
    ((1, 8, 8), 1, None),
])
def test_images_in_memory_of_another_shape_than_the_task_declares_are_refused(shape: tuple, in_chans: int,
                                                                              says: str | None) -> None:
    # pre-training failed in the model's first conv: "expected input[8, 1, 8, 8] to have 3 channels"
    px = torch.zeros(8, *shape, dtype=torch.uint8)
    y = np.arange(8) % 4

    def build() -> Task:
        return Task("gray", 4, 8, TensorSplit(px, y), TensorSplit(px.clone(), y.copy()), in_chans=in_chans)

    if says is None:
        assert build().in_chans == in_chans
        return
    with pytest.raises(ValueError, match=rf"^task 'gray': train images are {says} px a side$"):
        build()
    with pytest.raises(ValueError, match=r"^task 'sixteen': train images are \(3, 8, 8\)"):
        Task("sixteen", 4, 16, TensorSplit(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), y),
             TensorSplit(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), y))
