"""Optimizer with decoupled head hyper-parameters, and the warm-up / linear-decay schedule.

Parameters fall in four groups: head or body, times decayed or not. The head is the final
classifier (``model.get_classifier()``); it gets ``head_lr`` / ``head_wd``, the body ``lr`` / ``wd``.

Which parameters decay: kernels only, as in big_vision (its ``wd_mults`` match ``.*/kernel``):
tensors with 2+ dimensions of size > 1 (linear and conv weights). Biases, norm scales/shifts
(also those stored broadcastable, ``(1, 1, D)`` or ``(C, 1, 1)``), and the ViT position
embedding and class token (``model.no_weight_decay()``) are never decayed.

Weight decay convention: decoupled and multiplied by the scheduled learning rate (AdamW's,
and the original ViT/flax ``optim.Adam(weight_decay=...)``'s): each step,
``p <- p - lr_t * wd * p`` before the gradient update, with ``lr_t`` the group's scheduled rate.
So ``wd = 0.1`` with ``lr = 8e-4`` shrinks kernels by 8e-5 per step at peak, and the head decay
follows ``head_lr``. (big_vision's later configs decay by ``sched_t * wd`` instead, independent
of the peak lr; their ``wd`` values are ~``lr`` times ours.) SGD uses the same rule (SGDW).
"""

from __future__ import annotations

import fnmatch
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from .models import head_parameters

OPTIMIZERS = ("adam", "sgd")
#: The largest float32: optimizers hold hyper-parameters as float32 on the device.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_hparam(name: str, v: object) -> None:
    """Refuse a learning rate or weight decay that is negative, not finite, or above float32's
    largest number, in one line naming it: ``lr=1e39`` failed inside the optimizer's step with
    'value cannot be converted to type float without overflow'."""
    if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= FLOAT32_MAX):
        raise ValueError(f"{name}={v!r}: must be a finite number in [0, {FLOAT32_MAX:.4g}] (float32's range)")


@dataclass(frozen=True)
class WarmupLinearDecay:
    """LR multiplier: linear from ``1 / warmup_steps`` (the first update) to 1 over ``warmup_steps``,
    then linear to ``end_factor`` at ``total_steps``.

    A dataclass rather than a lambda so ``LambdaLR.state_dict()`` saves it (checkpointable).
    The multiplier at step t is the one used for the update that makes step t+1.
    """

    warmup_steps: int
    total_steps: int
    end_factor: float = 0.0

    def __post_init__(self) -> None:
        # a warm-up longer than the run never reached the peak lr (warmup 100 of 50 steps peaked at
        # lr / 2), and a negative one started above it; both trained without a word. (A run of 0
        # steps makes no update: any warm-up is moot there.)
        if self.warmup_steps < 0 or 0 < self.total_steps < self.warmup_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps!r}: must be in [0, total_steps={self.total_steps!r}]")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay = max(1, self.total_steps - self.warmup_steps)
        frac = min(1.0, (step - self.warmup_steps) / decay)
        return 1.0 - (1.0 - self.end_factor) * frac


def _no_decay_names(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def _is_kernel(name: str, p: torch.Tensor, modules: dict[str, nn.Module]) -> bool:
    """Whether parameter ``name`` is a kernel: the weight of a linear or conv layer, or another
    tensor with 2+ dimensions of size > 1. A per-channel vector stored broadcastable is not one:
    ResMLP's Affine norm (1, 1, D), FastViT's layer scale and XCiT's temperatures (C, 1, 1) and
    NFNet's conv gain (C, 1, 1, 1) decayed, where the same vectors stored 1-D (ConvNeXt's layer
    scale, every LayerNorm) do not."""
    if p.ndim < 2:
        return False
    owner, _, leaf = name.rpartition(".")
    if leaf == "weight" and isinstance(modules.get(owner), (nn.Linear, nn.modules.conv._ConvNd)):
        return True   # (1, D) of a one-output linear layer, (C, 1, 1, 1) of a depthwise 1x1 conv
    return sum(n > 1 for n in p.shape) >= 2


def param_groups(model: nn.Module, *, lr: float, wd: float, head_lr: float, head_wd: float) -> list[dict[str, Any]]:
    """Head/body x decay/no-decay parameter groups (empty groups dropped).

    Each group carries ``name`` (``body``, ``body_no_wd``, ``head``, ``head_no_wd``), ``lr`` and
    ``weight_decay``. Frozen parameters (``requires_grad=False``) are left out.
    """
    head_ids = {id(p) for p in head_parameters(model)}
    skip = _no_decay_names(model)
    # timm's names may be patterns (XCiT: "pos_embed.*", whose kernel decayed): matched as timm's
    # own optimizer factory matches them (fnmatch)
    patterns = [s for s in skip if any(c in s for c in "*?[")]
    modules = dict(model.named_modules())
    buckets: dict[str, list[nn.Parameter]] = {"body": [], "body_no_wd": [], "head": [], "head_no_wd": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head_ids else "body"
        decays = (_is_kernel(name, p, modules) and name not in skip
                  and not any(fnmatch.fnmatchcase(name, pat) for pat in patterns))
        buckets[part if decays else f"{part}_no_wd"].append(p)
    settings = {"body": (lr, wd), "body_no_wd": (lr, 0.0), "head": (head_lr, head_wd), "head_no_wd": (head_lr, 0.0)}
    return [{"name": k, "params": ps, "lr": settings[k][0], "weight_decay": settings[k][1]}
            for k, ps in buckets.items() if ps]


class SGDW(torch.optim.SGD):
    """SGD (with momentum) and decoupled weight decay: ``p <- p * (1 - lr_t * wd)`` before the SGD step.

    torch's SGD adds ``wd * p`` to the gradient (coupled L2, which then passes through momentum);
    this applies AdamW's rule instead, so ``wd`` means the same for both optimizers.
    """

    def __init__(self, params: Iterable[dict[str, Any]] | Iterable[torch.Tensor], lr: float, momentum: float = 0.9,
                 nesterov: bool = False) -> None:
        params = list(params)
        # plain tensors (``model.parameters()``), as torch's optimizers take: one group without
        # decay; dict() of a tensor failed as "cannot convert dictionary update sequence element"
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        groups = [dict(g, decoupled_wd=g.pop("weight_decay", 0.0), weight_decay=0.0) for g in (dict(g) for g in params)]
        check_hparam("lr", lr)
        for g in groups:
            check_hparam("lr", g.get("lr", lr))
            check_hparam("weight_decay", g["decoupled_wd"])
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        # the closure runs first, as in AdamW. Passed on to SGD's step, it ran after the decay: the
        # first step decayed nothing (no parameter had a gradient yet), and later gradients were
        # taken at the decayed weights
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            if g["decoupled_wd"]:
                ps = [p for p in g["params"] if p.grad is not None]
                if ps:
                    torch._foreach_mul_(ps, 1.0 - g["lr"] * g["decoupled_wd"])
        super().step()
        return loss


def build_optimizer(model: nn.Module, *, optimizer: str = "adam", lr: float = 8e-4, wd: float = 0.1,
                    head_lr: float | None = None, head_wd: float | None = None,
                    betas: tuple[float, float] = (0.9, 0.999), momentum: float = 0.9) -> torch.optim.Optimizer:
    """The paper's optimizer with decoupled head hyper-parameters.

    Args:
        model: a timm model (``get_classifier()`` names the head).
        optimizer: ``adam`` (AdamW rule, betas (0.9, 0.999)) or ``sgd`` (SGDW, momentum 0.9).
        lr, wd: body peak learning rate and weight decay.
        head_lr, head_wd: the head's; None means the body's value.
        betas: Adam moment decay rates.
        momentum: SGD momentum.

    Returns:
        A torch optimizer whose param groups are named as in :func:`param_groups`.

    Raises:
        ValueError: an lr, head_lr, wd or head_wd that is negative, not finite, or above float32's
            largest number (:func:`check_hparam`).
    """
    for name, v in (("lr", lr), ("wd", wd), ("head_lr", head_lr), ("head_wd", head_wd)):
        if v is not None:
            check_hparam(name, v)
    groups = param_groups(model, lr=lr, wd=wd, head_lr=lr if head_lr is None else head_lr,
                          head_wd=wd if head_wd is None else head_wd)
    if optimizer == "adam":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)
    if optimizer == "sgd":
        return SGDW(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {optimizer!r} (expected one of {', '.join(OPTIMIZERS)})")


def build_schedule(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                   end_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay, applied to every group's own peak lr (so head_lr is scheduled too).

    Raises:
        ValueError: ``warmup_steps`` negative, or more than ``total_steps`` (when that is > 0).
    """
    return torch.optim.lr_scheduler.LambdaLR(opt, WarmupLinearDecay(warmup_steps, total_steps, end_factor))


def group_settings(opt: torch.optim.Optimizer) -> dict[str, tuple[float, float]]:
    """name -> (current lr, weight decay) per param group, for logs and tests."""
    return {g["name"]: (g["lr"], g.get("decoupled_wd", g["weight_decay"])) for g in opt.param_groups}
