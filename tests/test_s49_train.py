"""Review s49 of the training engine: probes that leave the model in eval mode, fractional epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train import (TrainConfig, capture_init, create_model, diagnose, extract_features, get_task, margins,
                              plan_steps, pretrain, resolve_runtime)
from meta_study.train.models import eval_mode

CPU = resolve_runtime(TrainConfig(device="cpu"), "resnet")


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.fixture(scope="module")
def tiny() -> tuple:
    us = get_task("synth_us", img_size=16, n_train=32, n_test=16, n_triples=2)
    ds = get_task("synth_shape", img_size=16, n_train_per_class=2, n_test=8)
    torch.manual_seed(0)
    model, info = create_model("resnet_tiny_cpu", num_classes=us.num_classes, img_size=16)
    return model, info, us, ds


# --- probes put the model back in the mode it was in -----------------------------------------------


def test_extract_features_restores_each_modules_mode(tiny) -> None:
    # it left the model in eval mode: an on_report that probed mid-training trained on in eval mode
    model, info, _, ds = tiny
    model.train()
    model.bn1.eval()   # a BatchNorm frozen on purpose stays frozen, not flipped back to train
    before = _modes(model)
    extract_features(model, info, ds, CPU, shots=(1,), seeds=(0,), batch_size=8)
    assert _modes(model) == before and model.training and not model.bn1.training
    model.eval()
    extract_features(model, info, ds, CPU, shots=(1,), seeds=(0,), batch_size=8)
    assert not any(_modes(model).values())   # an eval-mode model stays in eval mode


def test_margins_and_diagnose_restore_train_mode(tiny) -> None:
    model, info, us, _ = tiny
    model.train()
    before = _modes(model)
    margins(model, info, us, np.arange(8), CPU, batch_size=4)
    assert _modes(model) == before
    diagnose(model, info, capture_init(model), us, np.arange(16), CPU, n=8, batch_size=4)
    assert _modes(model) == before


def test_eval_mode_restores_modes_when_the_block_raises(tiny) -> None:
    model = tiny[0]
    model.train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not model.training and not model.bn1.training
        raise RuntimeError("boom")
    assert all(_modes(model).values())


def test_an_on_report_that_probes_mid_training_leaves_the_run_in_train_mode(tiny) -> None:
    _, _, us, ds = tiny
    torch.manual_seed(0)
    model, info = create_model("resnet_tiny_cpu", num_classes=us.num_classes, img_size=16)
    seen: list[bool] = []

    def on_report(step: int, metrics: dict, ckpt: str | None) -> None:
        seen.append(model.training)   # the mode the steps before this report trained in
        extract_features(model, info, ds, CPU, shots=(1,), seeds=(0,), batch_size=8)

    pretrain(model, info, us, TrainConfig(device="cpu", steps=3, eval_every=1, batch_size=8, lr=1e-3,
                                          us_eval_examples=8, eval_batch_size=8), on_report=on_report)
    assert seen == [True, True, True]


# --- fractional epochs: rounded up to a whole step ------------------------------------------------


@pytest.mark.parametrize("epochs, n_train, batch_size, steps", [
    (2.5, 8, 8, 3),        # 1 step an epoch: round() gave 2 (half to even), 3.5 gave 4
    (0.5, 40, 8, 3),       # 5 steps an epoch: round(2.5) gave 2, 40% of the data for "half an epoch"
    (3.5, 8, 8, 4),
    (0.7, 80, 8, 7),       # 0.7 * 10 is 7.000000000000001: 7, not 8
    (0.07, 800, 8, 7),
    (7, 48_000, 128, 2625),  # whole epochs: unchanged
    (0.01, 80, 8, 1),      # at least one step
])
def test_fractional_epochs_round_up_to_a_whole_step(epochs, n_train, batch_size, steps) -> None:
    plan = plan_steps(TrainConfig(epochs=epochs, batch_size=batch_size), n_train)
    assert plan.total_steps == steps
    assert plan.epochs >= epochs - 1e-12 or plan.total_steps == 1


def test_effective_epochs_are_never_fewer_than_asked() -> None:
    for spe in (1, 3, 7, 46, 375):
        for tenths in range(1, 60):
            epochs = tenths / 10
            plan = plan_steps(TrainConfig(epochs=epochs, batch_size=8), 8 * spe)
            assert epochs - 1e-9 <= plan.epochs < epochs + 1 / spe + 1e-9, (epochs, spe, plan)
