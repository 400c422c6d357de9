"""Optimizer: decoupled head hyper-parameters, which params decay, the schedule, SGDW."""

from __future__ import annotations

import pytest
import torch

from meta_study.train import (SGDW, TrainConfig, WarmupLinearDecay, build_optimizer, build_schedule, create_model,
                              get_task, head_parameters, pretrain)
from meta_study.train.optim import group_settings

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust


def _vit():
    torch.manual_seed(0)
    return create_model("vit_tiny_cpu", num_classes=10, img_size=16)


def test_groups_split_head_and_body_and_decay_kernels_only() -> None:
    model, _ = _vit()
    opt = build_optimizer(model, lr=1e-3, wd=0.1, head_lr=5e-3, head_wd=2.0)
    groups = {g["name"]: g for g in opt.param_groups}
    assert group_settings(opt) == {"body": (1e-3, 0.1), "body_no_wd": (1e-3, 0.0), "head": (5e-3, 2.0),
                                   "head_no_wd": (5e-3, 0.0)}
    head_ids = {id(p) for p in head_parameters(model)}
    assert {id(p) for p in groups["head"]["params"]} == {id(model.head.weight)}
    assert {id(p) for p in groups["head_no_wd"]["params"]} == {id(model.head.bias)}
    assert not head_ids & {id(p) for p in groups["body"]["params"] + groups["body_no_wd"]["params"]}
    no_wd = {id(p) for p in groups["body_no_wd"]["params"]}
    assert {id(model.pos_embed), id(model.cls_token), id(model.norm.weight), id(model.blocks[0].attn.qkv.bias)} <= no_wd
    assert all(p.ndim >= 2 for p in groups["body"]["params"])
    everything = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())  # each param exactly once


def test_head_lr_and_head_wd_are_what_the_head_gets() -> None:
    model, _ = _vit()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    head0 = model.head.weight.detach().clone()
    body0 = model.blocks[0].mlp.fc1.weight.detach().clone()
    opt = build_optimizer(model, lr=1e-2, wd=0.0, head_lr=0.0, head_wd=0.0)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert torch.equal(model.head.weight, head0)  # head_lr = 0: frozen head
    assert not torch.equal(model.blocks[0].mlp.fc1.weight, body0)
    # AdamW rule with zero gradient: p <- p * (1 - head_lr * head_wd)
    model2, _ = _vit()
    opt = build_optimizer(model2, lr=0.0, wd=0.0, head_lr=0.1, head_wd=0.5)
    for p in model2.parameters():
        p.grad = torch.zeros_like(p)
    w0 = model2.head.weight.detach().clone()
    opt.step()
    torch.testing.assert_close(model2.head.weight, w0 * (1 - 0.1 * 0.5))
    torch.testing.assert_close(model2.blocks[0].mlp.fc1.weight, body0)


def test_larger_head_wd_gives_smaller_head_norm() -> None:
    task = get_task("synth_shape", img_size=16, n_train_per_class=40, n_test=60)
    norms = {}
    for head_wd in (0.0, 10.0):  # AdamW rule: ~lr * head_wd = 3% shrink per step at peak
        torch.manual_seed(0)
        model, info = create_model("vit_tiny_cpu", num_classes=task.num_classes, img_size=16)
        pretrain(model, info, task, TrainConfig(steps=40, batch_size=32, lr=3e-3, wd=0.1, head_wd=head_wd))
        norms[head_wd] = float(model.head.weight.detach().norm())
    assert norms[10.0] < 0.75 * norms[0.0]


def test_sgdw_decays_decoupled_and_momentum_steps() -> None:
    p = torch.nn.Parameter(torch.ones(3, 3))
    opt = SGDW([{"params": [p], "weight_decay": 0.5}], lr=0.1, momentum=0.9)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3, 3), 0.95))  # 1 - lr * wd; grad 0 passes no decay to momentum
    model, _ = _vit()
    opt = build_optimizer(model, optimizer="sgd", lr=0.1, wd=0.1, head_wd=1.0)
    assert isinstance(opt, SGDW) and group_settings(opt)["head"] == (0.1, 1.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, optimizer="lamb")


def test_warmup_then_linear_decay_and_state_roundtrip() -> None:
    f = WarmupLinearDecay(warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(8) == pytest.approx(0.5) and f(12) == 0.0 and f(100) == 0.0
    model, _ = _vit()
    opt = build_optimizer(model, lr=1e-3, head_lr=1e-2)
    sched = build_schedule(opt, total_steps=12, warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(group_settings(opt)["head"][0])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2]) and lrs[5] < lrs[4]
    assert group_settings(opt)["body"][0] == pytest.approx(1e-3 * f(6))  # the body follows the same shape
    sched2 = build_schedule(build_optimizer(model, lr=1e-3, head_lr=1e-2), total_steps=12, warmup_steps=4)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 6 and sched2.lr_lambdas[0] == f


def test_config_defaults_follow_the_paper() -> None:
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.betas, cfg.wd) == ("adam", (0.9, 0.999), 0.1)
    _, small = create_model("vit_tiny_cpu", num_classes=3, img_size=16)
    r = cfg.resolved(small)
    assert (r.lr, r.head_lr, r.head_wd) == (8e-4, 8e-4, 0.1)
    assert TrainConfig(lr=1e-3, head_wd=0.0).resolved(small).head_lr == 1e-3
