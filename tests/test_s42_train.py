"""Review s42 of meta_study.train optim / fewshot / diagnostics / models: SGDW's closure and plain
parameters, non-finite features and layer-less features refused in words, margins of one class
and of NaN pre-logits, distances to an init that does not match the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from meta_study.train.data import Task, TensorSplit
from meta_study.train.diagnostics import capture_init, margins, weight_stats
from meta_study.train.fewshot import FeatureSet, fewshot_features, fit_probe
from meta_study.train.loop import TrainConfig, resolve_runtime
from meta_study.train.models import create_model, head_parameters
from meta_study.train.optim import SGDW

CPU = resolve_runtime(TrainConfig(device="cpu"), "vit")


def _task(num_classes: int, n: int = 8, img_size: int = 16) -> Task:
    g = torch.Generator().manual_seed(0)
    px = torch.randint(0, 256, (n, 3, img_size, img_size), dtype=torch.uint8, generator=g)
    labels = np.arange(n) % num_classes
    return Task("tiny", num_classes, img_size, TensorSplit(px, labels), TensorSplit(px.clone(), labels.copy()))


def _sgdw_run(closure: bool, steps: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    lin = nn.Linear(4, 2)
    x = torch.randn(8, 4)
    opt = SGDW([{"params": list(lin.parameters()), "lr": 0.1, "weight_decay": 0.5}], lr=0.1, momentum=0.9)

    def loss_fn() -> torch.Tensor:
        opt.zero_grad()
        loss = lin(x).square().mean()
        loss.backward()
        return loss

    for _ in range(steps):
        if closure:
            assert torch.isfinite(opt.step(loss_fn))
        else:
            loss_fn()
            opt.step()
    return lin.weight.detach().clone()


def test_sgdw_with_a_closure_steps_as_without_one() -> None:
    # the closure was handed to SGD's step, after the decoupled decay: the first step decayed
    # nothing (no gradient yet), and later gradients were of the decayed weights (0.02 apart)
    torch.testing.assert_close(_sgdw_run(closure=True), _sgdw_run(closure=False), rtol=0, atol=1e-7)


def test_sgdw_takes_plain_parameters_as_torch_optimizers_do() -> None:
    # SGDW(model.parameters(), lr=...) failed as "cannot convert dictionary update sequence element #0"
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    before = lin.weight.detach().clone()
    opt = SGDW(lin.parameters(), lr=0.1)
    lin(torch.randn(5, 3)).sum().backward()
    opt.step()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["decoupled_wd"] == 0.0
    assert not torch.equal(lin.weight, before)


def test_a_probe_of_non_finite_features_is_refused_in_words() -> None:
    # eigh failed on them as "ill-conditioned or has too many repeated eigenvalues" (LinAlgError)
    x = np.random.default_rng(0).normal(size=(20, 5))
    x[3, 2], x[7, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"^2 of 20 examples have features that are not finite \(NaN or inf\)"):
        fit_probe(x, np.arange(20) % 3, 3)


def test_a_layerwise_probe_of_features_without_block_outputs_is_refused() -> None:
    # it gave the pre-logit results alone, without a word
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    fs = FeatureSet("t", 4, rng.normal(size=(40, 6)), y, np.arange(40), y, rng.normal(size=(12, 6)), np.arange(12) % 4)
    assert len(fewshot_features(fs, shots=(1,), seeds=(0,))) == 1
    with pytest.raises(ValueError, match=r"^DS task t: layerwise=True, but its features hold no block outputs"):
        fewshot_features(fs, shots=(1,), seeds=(0,), layerwise=True)


def test_margins_of_a_one_class_head_are_refused_not_infinite() -> None:
    # no other class to take a margin to: every margin was inf, logged as the model's
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=1, img_size=16)
    with pytest.raises(ValueError, match=r"^US task tiny: margins need 2 or more classes; the model's head has 1$"):
        margins(model, info, _task(1), np.arange(8), CPU)


def test_margins_of_no_examples_are_refused_in_words() -> None:
    # torch.cat of no batches: "expected a non-empty list of Tensors"
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=2, img_size=16)
    with pytest.raises(ValueError, match=r"^US task tiny: no train examples to measure margins on$"):
        margins(model, info, _task(2), np.arange(0), CPU)


def test_margins_of_non_finite_prelogits_are_refused_in_words() -> None:
    # the pre-logit probe's eigh failed as "ill-conditioned" (LinAlgError), after the whole pre-training
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=2, img_size=16)
    m = margins(model, info, _task(2), np.arange(8), CPU)
    assert np.isfinite([m.head, m.head_normalized, m.prelogits]).all()
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    with pytest.raises(ValueError, match=r"^US task tiny: 8 of 8 train examples have pre-logits or logits that are "
                                         r"not finite"):
        margins(model, info, _task(2), np.arange(8), CPU)


def test_distances_to_an_init_that_lacks_or_misshapes_a_parameter_are_refused() -> None:
    # init={} gave a distance of 0.0 to every block; an init of a one-class model broadcast its
    # (1, D) head row against the (3, D) head: both logged as the model's distances to init
    torch.manual_seed(0)
    model, info = create_model("vit_tiny_cpu", num_classes=3, img_size=16)
    ws = weight_stats(model, info, capture_init(model))
    assert ws.head_dist_init == 0.0 and ws.head_norm > 0
    with pytest.raises(ValueError, match=r"^init weights: head\.weight \(3, 64\) is missing"):
        weight_stats(model, info, {})
    other, _ = create_model("vit_tiny_cpu", num_classes=1, img_size=16)
    with pytest.raises(ValueError, match=r"^init weights: head\.weight \(3, 64\) is of shape \(1, 64\)"):
        weight_stats(model, info, capture_init(other))


def test_head_parameters_of_an_mlp_head_are_all_its_layers() -> None:
    # the docstring said "weight and bias of the final linear layer"; head_lr / head_wd go to all of them
    from timm.models.metaformer import MetaFormer

    model = MetaFormer(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=3, use_mlp_head=True)
    assert len(head_parameters(model)) == len(list(model.get_classifier().parameters())) > 2


def test_a_one_class_task_is_refused_before_pre_training() -> None:
    """A one-class US task pre-trained for nothing (cross-entropy 0 at any weights) and, with
    diagnostics, failed only after pre-training; a one-class DS task logged 100% accuracy."""
    import torch

    from meta_study.train import smoke_config
    from meta_study.train.data import _TASKS, Task, TensorSplit, register_task
    from meta_study.train.trial import run_trial

    def split(n: int) -> TensorSplit:
        return TensorSplit(torch.zeros((n, 3, 16, 16), dtype=torch.uint8), np.zeros(n, dtype=np.int64))

    register_task("s42_one_class")(lambda img_size=16, seed=0: Task("s42_one_class", 1, 16, split(20), split(10)))
    try:
        with pytest.raises(ValueError, match=r"^US task s42_one_class: num_classes=1; pre-training needs 2"):
            run_trial(smoke_config(us_task="s42_one_class", steps=1, ds_tasks=("synth_shape",), shots=(1,),
                                   fewshot_seeds=1, layerwise=False, diagnostics=False))
        with pytest.raises(ValueError, match=r"^DS task s42_one_class: num_classes=1; a downstream accuracy needs 2"):
            run_trial(smoke_config(steps=1, ds_tasks=("s42_one_class",), shots=(1,), fewshot_seeds=1,
                                   layerwise=False, diagnostics=False))
    finally:
        _TASKS.pop("s42_one_class", None)
