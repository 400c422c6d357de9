"""Full fine-tuning transfer (VTAB-1k style): every parameter updated on 1,000 DS examples.

Off by default (``TrainConfig.finetune``): it costs ``finetune_steps`` training steps per DS
task, versus a few forward passes for the few-shot probe. Protocol, after VTAB-1k / BiT:
a copy of the pre-trained model gets a fresh, zero-initialized head for the DS classes; SGD
with momentum 0.9, no weight decay, linear warm-up (10% of steps) then linear decay, gradient
clipping at the trial's ``grad_clip`` (1 by default; 0 disables it); accuracy on the DS test
split. VTAB trains 2,500 steps at batch 512 with an lr sweep; the default here is shorter, and
no sweep is run.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .data import StepBatches, Task
from .loop import Runtime, evaluate, single_value_batch_norm, train_step
from .optim import SGDW, build_schedule


def check_finetune_batch(model: nn.Module, task: Task, *, examples: int, batch_size: int) -> None:
    """Refuse fine-tuning a BatchNorm model on ``task`` with batches of one example (``batch_size``
    1, or ``examples`` or the train split holding 1) when a BatchNorm layer would then see one
    value per channel (:func:`~.loop.single_value_batch_norm`): one ValueError naming the trial's
    fields. ``run_trial`` checks it before pre-training: torch's own error came after it, and
    ended the trial with its pre-training and probes lost."""
    batch = min(batch_size, examples, len(task.train))
    if batch != 1:
        return
    layer = single_value_batch_norm(model, task.img_size, task.in_chans)
    if layer is not None:
        raise ValueError(f"DS task {task.name}: finetune_batch_size={batch_size} with finetune_examples={examples} "
                         f"fine-tunes on 1 example per step: the model's BatchNorm layer {layer} would normalize 1 "
                         "value per channel, which batch norm cannot; use a finetune_batch_size and finetune_examples of 2 or "
                         "more")


def finetune(model: nn.Module, task: Task, rt: Runtime, *, examples: int = 1000, steps: int = 500,
             lr: float = 0.01, batch_size: int = 128, seed: int = 0, grad_clip: float = 1.0,
             eval_batch_size: int = 512) -> float:
    """Fine-tune a copy of ``model`` on ``examples`` DS train examples; return DS test top-1.

    Args:
        model: the pre-trained model (not modified).
        task: the downstream task.
        rt: device and precision.
        examples: training examples, a fixed random subset of the train split (all if fewer).
        steps: SGD steps.
        lr: peak learning rate (the same for head and body).
        batch_size: examples per step (capped at ``examples``).
        seed: subset, data order, head init and dropout (in a fork of torch's RNG: the caller's is kept).
        grad_clip: max global gradient L2 norm; 0 disables.
        eval_batch_size: examples per forward pass of the test-split evaluation.

    Returns:
        Top-1 accuracy (fraction) on ``task.test``.

    Raises:
        ValueError: batches of one example for a model with BatchNorm (:func:`check_finetune_batch`).
    """
    check_finetune_batch(model, task, examples=examples, batch_size=batch_size)
    # ``seed`` alone decides the result: a head with random layers (CAFormer's MLP head: fc1) and
    # dropout / drop-path drew from torch's global RNG, so the same call gave 0.15 or 0.20 as the
    # RNG stood (after pre-training, after another task's fine-tune); forked, the caller's RNG
    # is left as it was
    cuda = [rt.device] if rt.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return _finetune(model, task, rt, examples, steps, lr, batch_size, seed, grad_clip, eval_batch_size)


def _finetune(model: nn.Module, task: Task, rt: Runtime, examples: int, steps: int, lr: float, batch_size: int,
              seed: int, grad_clip: float, eval_batch_size: int) -> float:
    net = copy.deepcopy(model)
    net.reset_classifier(task.num_classes)  # timm API: new head for the DS classes
    # moved after the reset: timm before ~1.0.20 (timm>=1.0 is allowed) built the new head on
    # the CPU, and a CUDA fine-tune failed at its first forward ("Expected all tensors to be on
    # the same device")
    net.to(rt.device)
    # BiT / big_vision fine-tuning: zero-init head, i.e. its final projection (weight and bias).
    # Of an MLP head (CAFormer's fc1, norm, fc2) only the last layer: zeroing all of it left every
    # gradient but fc2's bias 0, a fine-tune that trained one bias (majority-class accuracy)
    head = net.get_classifier()
    kernels = [m for m in head.modules() if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim >= 2]
    final = kernels[-1] if kernels else head
    for p in final.parameters(recurse=not kernels):
        nn.init.zeros_(p)
    net.train()
    idx = np.sort(np.random.default_rng([seed, 0x7A5B]).permutation(len(task.train))[:examples])
    stream = StepBatches(task.train, idx, batch_size, seed)
    opt = SGDW([{"name": "all", "params": [p for p in net.parameters() if p.requires_grad], "lr": lr,
                 "weight_decay": 0.0}], lr=lr, momentum=0.9)
    sched = build_schedule(opt, steps, warmup_steps=max(1, steps // 10))
    for step in range(steps):
        x, y = stream[step]
        train_step(net, opt, sched, rt.prepare(x), y.to(rt.device), rt, grad_clip)
    return evaluate(net, task.test, rt, eval_batch_size)
