"""Upstream pre-training: the config, the step loop, periodic US evaluation, checkpoints, reports.

``pretrain(model, info, task, cfg)`` trains for ``cfg.steps`` steps, or ``cfg.epochs`` epochs of
the ``data_fraction`` subset, under linear warm-up then linear decay. Every ``eval_every`` steps
(on a fixed random ``us_eval_examples`` of the task's test split when set) and at the end (on
the whole test split) it measures US top-1 and calls
``on_report(step, metrics, checkpoint_dir)``, after saving a checkpoint when a directory is given.

Resuming is exact: a checkpoint holds the model, optimizer, scheduler, step and the torch /
numpy / python RNG states, and the data order is a pure function of (seed, epoch) (see
:class:`~meta_study.train.data.StepBatches`), so a resumed run computes the same next-step loss
as an uninterrupted one (bit-identical on CPU with the same thread count). A checkpoint saved
under another run-defining config (:data:`RUN_FIELDS`) is refused.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generator, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..schema import us_metric_key
from .data import StepBatches, Task, ceil_product, fraction_indices, iterate_split
from .models import ModelInfo
from .optim import FLOAT32_MAX, OPTIMIZERS, build_optimizer, build_schedule
from .synth import DS_TASKS

#: on_report(step, metrics, checkpoint_dir): checkpoint_dir is None when no checkpoint was saved.
ReportFn = Callable[[int, dict[str, float], "str | None"], None]

CHECKPOINT_FILE = "checkpoint.pt"
#: Steps between divergence checks when no report falls due: a NaN loss stops the run within
#: this many steps, not at the next report (with eval_every=0: the end, hours later). One device
#: sync (and, data-parallel, one all_reduce of this many floats) per check.
DIVERGENCE_CHECK_STEPS = 100
#: The largest count a TrainConfig integer field takes (seeds aside): torch sizes and indices are
#: 32-bit in places, and a batch or step count beyond it is a typo (1e30), not a plan.
INT_MAX = 2**31 - 1


def _plain(v: Any) -> Any:
    """``v`` with numpy scalars and arrays as the Python numbers and lists they hold, inside
    lists, tuples and mappings too (other values as they are)."""
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if type(v) in (list, tuple):
        return type(v)(_plain(x) for x in v)
    return v


def _device_ok(v: Any) -> bool:
    """Whether ``v`` names a torch device (whether this machine has it is checked where the
    trial runs: :func:`resolve_runtime`)."""
    try:
        return isinstance(v, str) and torch.device(v) is not None
    except (RuntimeError, ValueError):
        return False


@dataclass(frozen=True)
class TrainConfig:
    """One meta-study point: a model pre-trained upstream, then probed downstream.

    The first ten fields are the schema's ``PARAM_NAMES`` (logged under the same names).
    ``None`` defaults are resolved per model by :meth:`resolved`.
    """

    # --- what is trained (schema params) ---
    model_name: str = "vit_tiny_cpu"  # preset (models.list_presets()) or any timm model name
    lr: float | None = None  # body peak lr; None: the paper's 8e-4 (4e-4 above 150M params)
    wd: float = 0.1  # body decoupled weight decay, AdamW rule: p -= lr_t * wd * p (kernels only)
    head_lr: float | None = None  # head peak lr; None: same as lr
    head_wd: float | None = None  # head weight decay; None: same as wd. The paper's key knob (Sec. 4)
    epochs: float = 10.0  # passes over the data_fraction subset (fractional: up to a whole step); unused if steps > 0
    data_fraction: float = 1.0  # nested subset of the upstream train split (data.fraction_indices)
    batch_size: int = 128  # global; the paper used 4096 on TPU, small batches suit CPU smoke runs
    optimizer: str = "adam"  # "adam" (betas below) or "sgd" (momentum below), both with decoupled wd
    seed: int = 0  # model init, data order, dropout; not the datasets (data_seed)
    # --- schedule and optimizer details ---
    steps: int = 0  # > 0: train exactly this many steps instead of `epochs`
    warmup_fraction: float = 0.05  # of total steps, linear from 1/W (the first update) to 1; then linear decay to 0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam, as in the paper
    momentum: float = 0.9  # SGD only
    grad_clip: float = 1.0  # max global L2 norm of the gradient; 0 disables (big_vision clips at 1)
    # --- data ---
    us_task: str = "synth_us"  # data.list_tasks(); sets num_classes and the metric key us/{us_task}/top1
    ds_tasks: tuple[str, ...] = DS_TASKS  # few-shot probed after pre-training, near to far
    img_size: int = 32  # pixels; every task is rendered / resized to this
    data_seed: int = 0  # seed of the datasets: keep fixed across a sweep so all points see the same data
    us_task_kwargs: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"n_train": 8000} for smoke runs
    # passed to each DS task factory that takes them (data.task_kwargs: a dataset on disk skips synth sizing keys)
    ds_task_kwargs: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # timm overrides, e.g. {"patch_size": 32}
    # --- evaluation ---
    eval_every: int = 0  # steps between US evals, reports and checkpoints; 0: only at the end
    us_eval_examples: int = 0  # test examples per intermediate US eval (fixed random subset); 0 / final: all
    eval_batch_size: int = 512  # forward-only batches (feature extraction, evals)
    shots: tuple[int, ...] = (1, 5, 10, 25)  # few-shot examples per class (big_vision fewshot_lsr)
    fewshot_seeds: int = 3  # draws of the few-shot train set; accuracy is their mean
    l2: float = 2.0**10  # ridge regularizer of the closed-form probe (big_vision default)
    l2_sweep: tuple[float, ...] = ()  # extra l2 values, reported as diagnostics (one eigh per draw)
    layerwise: bool = False  # also probe every block's pooled output (paper Fig. 6)
    diagnostics: bool = True  # norms, distance to init, margins (paper appendix D)
    margin_examples: int = 2048  # US train examples the margins are measured on
    finetune: bool = False  # also fine-tune all params per DS task (VTAB-1k style); costly
    finetune_examples: int = 1000  # VTAB-1k: 1000 training examples per task
    finetune_steps: int = 500  # SGD steps per task (VTAB uses 2500 at batch 512)
    finetune_lr: float = 0.01  # peak lr; SGD momentum 0.9, warm-up + linear decay, no weight decay
    finetune_batch_size: int = 128
    # --- hardware ---
    device: str = "auto"  # "auto": cuda if available, else cpu
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or "fp32" / "bf16"
    channels_last: bool | None = None  # None: on for convnets on CUDA
    compile: bool = False  # torch.compile the model: ~1 min to compile, pays off after ~1k GPU steps
    num_workers: int = 0  # DataLoader workers rendering/decoding batches; 0: in the training process

    #: Fields that count things: integers. A whole float (64.0 from ``tune.quniform``) is taken as
    #: its integer; 64.0 crashed the trial in numpy's seeding, 10.5 steps in torch after setup.
    INT_FIELDS = ("batch_size", "seed", "steps", "img_size", "data_seed", "eval_every", "us_eval_examples",
                  "eval_batch_size", "fewshot_seeds", "margin_examples", "finetune_examples", "finetune_steps",
                  "finetune_batch_size", "num_workers")

    #: Fields holding a sequence: a single value is a sequence of one (shots=5 was a TypeError,
    #: ds_tasks="synth_shape" was read letter by letter: "unknown task 's'").
    SEQ_FIELDS = ("shots", "l2_sweep", "ds_tasks")

    def __post_init__(self) -> None:
        # numpy scalars (a search space over np.arange / np.logspace, passed to run_trial as its
        # Tune config) as the Python numbers they hold: np.int64(64) was refused as "must be a
        # number", and an np.float64 lr was saved in the checkpoint's config, which torch.load
        # (weights_only) then refused: the run could not be resumed or evaluated
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))
        for name in self.SEQ_FIELDS:
            v = getattr(self, name)
            if isinstance(v, (str, int, float)):
                object.__setattr__(self, name, (v,))
            elif isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
            elif isinstance(v, (set, frozenset)):   # in a fixed order: a set's varies between processes
                try:
                    object.__setattr__(self, name, tuple(sorted(v)))
                except TypeError:   # unorderable (mixed types): refused below
                    object.__setattr__(self, name, tuple(v))
        for name in self.INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, float) and v.is_integer():
                object.__setattr__(self, name, int(v))
        if isinstance(self.shots, (list, tuple)):
            object.__setattr__(self, "shots", tuple(int(k) if isinstance(k, float) and k.is_integer() else k
                                                    for k in self.shots))
        bad = self.problems()
        if bad:
            raise ValueError(bad[0])

    def problems(self) -> list[str]:
        """What is out of range, one ``"field=value: must be ..."`` each (empty when none). A
        negative epoch count or learning rate trained nothing, logged chance accuracies as a
        finished run, and reached the store as a point on the frontier's floor."""
        import math

        def num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        out: list[str] = []

        def finite(v: Any) -> bool:
            # an int is finite at any size: math.isfinite(10**400) raised OverflowError ("int too large
            # to convert to float"), a traceback from the config (and from the runner's --set check)
            return isinstance(v, int) or math.isfinite(v)

        def shown(v: Any) -> str:
            """``v`` as ``:g`` writes it; an int too large for a float (which ``:g`` cannot write) in
            scientific notation from its digits."""
            try:
                return f"{v:g}"
            except OverflowError:
                digits = str(abs(v))
                return f"{'-' if v < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"

        def need(name: str, ok: bool, what: str) -> None:
            if not ok:
                out.append(f"{name}={getattr(self, name)!r}: must be {what}")

        def at_least(name: str, lo: float, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            need(name, num(v) and finite(v) and v >= lo, f"a number >= {lo:g}")

        for name in ("lr", "head_lr", "head_wd"):
            at_least(name, 0, optional=True)
        for name in ("wd", "epochs", "steps", "grad_clip", "eval_every", "us_eval_examples", "l2",
                     "margin_examples", "finetune_lr", "num_workers"):
            at_least(name, 0)
        for name in ("batch_size", "img_size", "eval_batch_size", "fewshot_seeds", "finetune_examples",
                     "finetune_steps", "finetune_batch_size"):
            at_least(name, 1)
        # steps=0 means "count epochs": with epochs=0 too it trained 1 step (the planner's floor)
        # and logged it as a 0-epoch run
        need("epochs", not (num(self.steps) and self.steps == 0 and num(self.epochs) and self.epochs == 0),
             "> 0 when steps is 0 (nothing to train)")
        # keys the trial sets itself: "create_model() got multiple values for keyword argument 'img_size'"
        # failed every trial, and pretrained=True (weights meta-study never downloads) did too
        set_by = {"num_classes": "the task", "img_size": "img_size=", "in_chans": "the task (RGB)",
                  "pretrained": "nothing: models are built from scratch"}
        if isinstance(self.model_kwargs, Mapping):
            for key in self.model_kwargs:
                if key in set_by:
                    out.append(f"model_kwargs {key}={self.model_kwargs[key]!r}: set by {set_by[key]}, not model_kwargs")
        # keys every task factory is given by the trial: us_task_kwargs {"seed": 3} failed every
        # trial with "get_task() got multiple values for keyword argument 'seed'" (a TypeError)
        for name in ("us_task_kwargs", "ds_task_kwargs"):
            kw = getattr(self, name)
            if isinstance(kw, Mapping):
                for key, by in (("img_size", "img_size="), ("seed", "data_seed=")):
                    if key in kw:
                        out.append(f"{name} {key}={kw[key]!r}: set by {by}, not {name}")
        need("data_fraction", num(self.data_fraction) and 0 < self.data_fraction <= 1, "in (0, 1]")
        need("warmup_fraction", num(self.warmup_fraction) and 0 <= self.warmup_fraction <= 1, "in [0, 1]")
        need("momentum", num(self.momentum) and 0 <= self.momentum <= 1, "in [0, 1]")
        need("betas", isinstance(self.betas, (tuple, list)) and len(self.betas) == 2 and all(num(b) and 0 <= b < 1 for b in self.betas),
             "two numbers in [0, 1)")
        for name in self.INT_FIELDS:
            v = getattr(self, name)
            if num(v) and not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
                out.append(f"{name}={v!r}: must be a whole number")
            elif num(v) and name not in ("seed", "data_seed") and finite(v) and v > INT_MAX:
                # --set batch_size=1e30 passed every check and failed in each trial (torch's sizes)
                out.append(f"{name}={shown(v)}: must be at most {INT_MAX:,}")
        at_least("seed", 0)
        at_least("data_seed", 0)
        # 1e39 passed every check and failed inside AdamW's first step ("value cannot be converted
        # to type float without overflow"), finetune_lr only after the whole pre-training
        for name in ("lr", "head_lr", "wd", "head_wd", "finetune_lr"):
            v = getattr(self, name)
            if num(v) and finite(v) and v > FLOAT32_MAX:
                out.append(f"{name}={shown(v)}: must be at most {FLOAT32_MAX:.4g} (float32's largest number)")
        for name in ("seed", "data_seed"):   # torch.manual_seed's range; 2**70 failed naming nothing
            v = getattr(self, name)
            need(name, not (num(v) and finite(v)) or v < 2**64, "below 2**64 (torch.manual_seed's range)")
        # epochs=1e30 (a typo, as batch_size=1e30) passed and failed in each trial as a TypeError
        # ("Overflow when unpacking long long"), 1e12 as a 24 TB allocation: an epoch is 1 step or more
        if num(self.epochs) and finite(self.epochs) and self.epochs > INT_MAX:
            out.append(f"epochs={shown(self.epochs)}: must be at most {INT_MAX:,}")
        # float64 arithmetic (the clip, the ridge): an int beyond float's range failed there, l2 after pre-training
        for name in ("grad_clip", "l2"):
            v = getattr(self, name)
            if num(v) and finite(v) and v > sys.float_info.max:
                out.append(f"{name}={shown(v)}: must be at most {sys.float_info.max:.4g} (float64's largest number)")
        # None (or any value with no items) is refused here, not a TypeError naming no field ("'NoneType'
        # object is not iterable", from a Tune config or the Python API)
        sweep = tuple(self.l2_sweep) if isinstance(self.l2_sweep, Iterable) else None
        need("l2_sweep", sweep is not None and all(num(v) and finite(v) and 0 <= v <= sys.float_info.max for v in sweep),
             "numbers >= 0 (ridge regularizers, like l2)")
        shots = tuple(self.shots) if isinstance(self.shots, Iterable) else ()
        need("shots", len(shots) > 0 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                             for k in shots), "one or more whole shot counts >= 1")
        need("margin_examples", not self.diagnostics or (num(self.margin_examples) and self.margin_examples >= 1),
             "at least 1 with diagnostics (margins are measured on them)")
        need("optimizer", self.optimizer in OPTIMIZERS, " or ".join(OPTIMIZERS))
        # ds_tasks=None (or a dict) passed here and failed in run_trial, after the US task was
        # built, as "'NoneType' object is not iterable", naming no field. (A name that is no task is
        # get_task's one-line KeyError, and the sweep runner's check.)
        need("ds_tasks", isinstance(self.ds_tasks, tuple), "a list of task names (data.list_tasks()); () probes none")
        need("precision", self.precision in ("auto", "fp32", "bf16"), "auto, fp32 or bf16")
        # a switch given as a string ("false" from a YAML or a hand-written Tune config) is truthy:
        # layerwise="false" probed every block; a kwargs field that is not a mapping failed in the trial
        for name in ("layerwise", "diagnostics", "finetune", "compile"):
            need(name, isinstance(getattr(self, name), bool), "True or False")
        need("channels_last", self.channels_last is None or isinstance(self.channels_last, bool), "None, True or False")
        for name in ("us_task_kwargs", "ds_task_kwargs", "model_kwargs"):
            need(name, isinstance(getattr(self, name), Mapping), 'a mapping of keyword arguments ({"key": value})')
        # "gpu" passed every check (--set device=gpu too) and failed in each trial, inside torch
        need("device", self.device == "auto" or _device_ok(self.device),
             'auto or a torch device name ("cpu", "cuda", "cuda:1")')
        return out

    def resolved(self, info: ModelInfo) -> "TrainConfig":
        """A copy with lr, head_lr and head_wd filled in for this model."""
        lr = info.default_lr if self.lr is None else self.lr
        return dataclasses.replace(self, lr=lr, head_lr=lr if self.head_lr is None else self.head_lr,
                                   head_wd=self.wd if self.head_wd is None else self.head_wd)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-friendly (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """From a flat dict such as a Ray Tune trial config; unknown keys are an error (typos)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {', '.join(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --------------------------------------------------------------------------------------------
# Device, precision, step plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs: device, autocast dtype (None: fp32), memory format, compile."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    compile: bool

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch of images to the device in the model's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _device_usable(dev: torch.device) -> bool:
    """Whether torch can hold a tensor on ``dev`` here (one empty allocation)."""
    try:
        torch.empty(0, device=dev)
        return True
    except Exception:   # noqa: BLE001 - RuntimeError, or an ImportError of torch.hpu, ...
        return False


def resolve_runtime(cfg: TrainConfig, arch_family: str) -> Runtime:
    """Pick device, precision and memory format; GPU-only features stay off on CPU unless asked."""
    dev = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                       "cpu" if cfg.device == "auto" else cfg.device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        # torch's own error came at the first .to(), after the data was built ("Found no NVIDIA driver")
        raise ValueError(f"device={cfg.device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         'use device="auto" (CUDA when there is one, else the CPU) or "cpu"')
    if dev.type == "meta" or dev.type not in ("cpu", "cuda") and not _device_usable(dev):
        # "mps" on Linux, "xpu" without its driver: torch's own error came at the model's first
        # .to() after the data was built, naming no setting ("PyTorch is not linked with support
        # for mps devices"); "meta" holds no values at all (it failed inside autocast)
        raise ValueError(f"device={cfg.device!r}: not a device this machine can train on; "
                         'use device="auto" (CUDA when there is one, else the CPU), "cpu" or "cuda"')
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    cl = cfg.channels_last if cfg.channels_last is not None else (dev.type == "cuda" and arch_family == "resnet")
    return Runtime(dev, torch.bfloat16 if bf16 else None, cl, cfg.compile)


@dataclass(frozen=True)
class StepPlan:
    """How long pre-training runs. ``epochs`` is the effective number (steps / steps_per_epoch)."""

    n_train: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: float


def check_batch_splits(cfg: TrainConfig, plan: StepPlan, world: int) -> None:
    """Refuse a global batch that ``world`` data-parallel ranks cannot share equally.

    Each rank takes the mean loss of its shard and DDP averages the ranks' gradients with equal
    weights, so shards of 3 and 2 examples (batch 5, 2 ranks) weight examples unequally: another
    run than the single-process one (0.22 off in loss by step 12). A batch smaller than ``world``
    leaves a rank an empty shard, a NaN loss. The batch is the one after capping at the
    ``data_fraction`` subset, so a large ``batch_size`` with a small fraction can hit this too.
    """
    if world > 1 and plan.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size}, after capping at the {plan.n_train} examples of the "
                         f"data_fraction={cfg.data_fraction:g} subset {plan.batch_size}, must be a multiple of the "
                         f"{world} data-parallel workers (each trains on an equal share of every batch)")


def single_value_batch_norm(model: nn.Module, img_size: int, in_chans: int = 3) -> str | None:
    """The first BatchNorm layer of ``model`` that a training batch of ONE image would give one
    value per channel (its input's batch x spatial size is 1: the last stage of a ResNet at 16 px),
    or None (no BatchNorm, or every one sees a spatial map). Batch norm cannot normalize a single
    value: torch refuses it in training ("Expected more than 1 value per channel when training"),
    naming neither the batch nor the setting that made it. Cost: one eval-mode forward of one
    blank image (no statistics updated), made only for models holding a BatchNorm layer."""
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return None
    seen: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is not None and x.ndim >= 2 and x.shape[1] and name not in seen:
                seen[name] = x.numel() // x.shape[1]   # batch x spatial: what torch's check counts
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in norms]
    was_training = model.training
    try:
        p = next(model.parameters(), None)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size, device=p.device if p is not None else "cpu"))
    except Exception:   # noqa: BLE001 - a model that cannot take this input says so itself, in training
        return None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return next((n for n, _ in norms if seen.get(n, 2) <= 1), None)


def check_batch_norm_batch(model: nn.Module, task: Task, cfg: TrainConfig, plan: StepPlan, world: int = 1) -> None:
    """Refuse pre-training a BatchNorm model on batches of one example per rank (after capping
    ``batch_size`` at the ``data_fraction`` subset, and sharing it among ``world`` data-parallel
    ranks) when a BatchNorm layer would then see one value per channel
    (:func:`single_value_batch_norm`): one ValueError naming the fields, before training. Every
    training batch is full (the remainder of an epoch is dropped), so no trailing batch of one
    arises from a larger batch."""
    if plan.batch_size // max(1, world) != 1:
        return
    layer = single_value_batch_norm(model, task.img_size, task.in_chans)
    if layer is None:
        return
    why = (f"batch_size={cfg.batch_size}" if cfg.batch_size == 1 else
           f"batch_size={cfg.batch_size}, capped at the {plan.n_train} example(s) of the "
           f"data_fraction={cfg.data_fraction:g} subset," if plan.batch_size < cfg.batch_size else
           f"batch_size={cfg.batch_size}, shared by {world} data-parallel workers,")
    raise ValueError(f"{why} trains on 1 example per step{' per worker' if world > 1 else ''}: the model's "
                     f"BatchNorm layer {layer} would normalize 1 value per channel, which batch norm cannot; "
                     f"use a batch of 2 or more{' per worker' if world > 1 else ''}"
                     + (" (or a larger data_fraction)" if plan.batch_size < cfg.batch_size else ""))


def plan_steps(cfg: TrainConfig, n_train: int) -> StepPlan:
    """Steps from ``cfg.steps`` or ``cfg.epochs`` over ``n_train`` examples (drop-last batches).

    Fractional epochs are rounded up to a whole step (at least 1): the run makes at least the
    passes asked for. Python's round() went half to even, and short: 2.5 epochs of 1 step each
    trained 2 steps (3.5 trained 4), 0.5 epochs of 5 steps trained 2, 40% of the data."""
    bs = min(cfg.batch_size, n_train)
    spe = max(1, n_train // bs)
    total = cfg.steps if cfg.steps > 0 else max(1, ceil_product(cfg.epochs, spe))
    if total > INT_MAX:   # epochs=1e9 of 375 steps each: a TypeError or a terabyte allocation for the loss log
        raise ValueError(f"epochs={cfg.epochs:g} of {spe} steps each (batch {bs} of {n_train} examples) is "
                         f"{total:.3g} steps: must be at most {INT_MAX:,}")
    # W: warmup_fraction of the steps, rounded half up (Python's round() goes half to even: 5% of 10
    # steps, 0.5, gave no warm-up, 5% of 50 gave 2 and 5% of 70 gave 4), and at least 1 for a
    # fraction > 0 (W = 1 holds the peak lr one more step before the decay: the shortest warm-up);
    # capped at total - 1 so that the decay has a step (a 1-step run has none)
    warm = 0
    if total > 1 and cfg.warmup_fraction > 0:
        x = cfg.warmup_fraction * total   # a half the decimal fraction means may sit an ulp or two below .5
        warm = min(total - 1, max(1, math.floor(x + 0.5 + 4 * math.ulp(x))))
    return StepPlan(n_train, bs, spe, total, warm, total / spe)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, task_split: Any, rt: Runtime, batch_size: int = 512,
             indices: np.ndarray | None = None) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on a split; restores train mode afterwards.

    Raises:
        ValueError: the split (or ``indices``) holds no examples: there is no accuracy to report
            (0.0 was reported, a point at the floor of the meta-study).
        DivergedError: some outputs are NaN or infinite (weights blown up by the last update, a
            BatchNorm's running statistics gone inf): the argmax of NaN logits is class 0, a chance
            accuracy that was reported as the model's. One device sync per call.
    """
    if (len(task_split) if indices is None else len(indices)) == 0:
        raise ValueError(f"evaluate: no examples to measure accuracy on (a split of {len(task_split)} examples"
                         + ("" if indices is None else ", 0 of them selected") + ")")
    was_training = model.training
    model.eval()
    correct, bad, total = torch.zeros((), device=rt.device), torch.zeros((), device=rt.device), 0
    try:   # train mode back even when a batch fails (out of memory, a bad image): a caller who
        # catches it and trains on did so in eval mode, dropout off and BatchNorm statistics frozen
        for x, y in iterate_split(task_split, batch_size, indices):
            with rt.autocast():
                logits = model(rt.prepare(x))
            correct += (logits.argmax(-1) == y.to(rt.device)).sum()
            bad += (~torch.isfinite(logits)).any(-1).sum()
            total += len(y)
    finally:
        model.train(was_training)
    if int(bad):
        raise DivergedError(f"the model's outputs are not finite (NaN or inf) on {int(bad)} of {total} examples; "
                            "its accuracy would be chance level")
    return float(correct) / total


def us_eval_indices(n_test: int, cap: int, data_seed: int) -> np.ndarray:
    """The test examples an intermediate US evaluation measures: all ``n_test`` when ``cap`` is 0
    or not smaller, else a fixed random ``cap`` of them (sorted), the same at every report and
    for every run of a sweep (seeded by ``data_seed``). Not the first ``cap``: splits on disk are
    sorted by class, and 10 of 4 classes x 5 measured classes 0 and 1 only."""
    if cap <= 0 or cap >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng([data_seed, 0xE7A1]).permutation(n_test)[:cap])


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": np_state[1].tolist(), "pos": np_state[2], "gauss": [np_state[3], np_state[4]]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.array(n["keys"], dtype=np.uint32), n["pos"], n["gauss"][0], n["gauss"][1]))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU the saving process saw: saved where 8 were visible, resumed in a Ray
        # worker that sees its 1, torch set device 1's and failed ("tuple index out of range")
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])


def save_checkpoint(directory: str, *, model: nn.Module, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, step: int, cfg: TrainConfig,
                    losses: torch.Tensor | None = None) -> str:
    """Write ``directory/checkpoint.pt`` atomically (temp file, fsynced, + rename); returns its path.

    Holds model, optimizer and scheduler state, the step, RNG states, the config and the losses
    of steps 1..``step`` (4 bytes a step: a resumed run's ``train/final_loss`` averaged only the
    steps after the resume, 5.481 where the straight run reported 5.499). The init weights are
    not stored: they are re-created from ``cfg.seed`` (for distance-to-init).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CHECKPOINT_FILE)
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
               "step": step, "rng": _rng_state(), "config": _storable(cfg.to_dict())}
    if losses is not None:
        payload["losses"] = losses[:step].detach().to("cpu", torch.float32).clone()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        # fsynced before the rename, which may otherwise reach the disk before the data: after a
        # power loss checkpoint.pt could be empty, the last good one replaced by nothing to resume from
        # (one fsync per report)
        torch.save(payload, tmp)
        fd = os.open(tmp, os.O_RDONLY)   # fsync flushes the file's data whatever the descriptor's mode
        try:
            os.fsync(fd)
        except OSError as e:   # a filesystem that takes no fsync (some FUSE mounts); EIO is a lost write
            if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.ENOSYS):
                raise
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:   # a full disk: no half-written temp file left beside the last checkpoint
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _storable(v: Any) -> Any:
    """``v`` as the plain values ``torch.load(weights_only=True)`` reads back: None, bools, numbers
    and strings as they are, inside lists, tuples and dicts; anything else as a stable text (a
    path as itself, a class or function as ``module.qualname``, else its repr). A config holding a
    class or a path (``model_kwargs={"act_layer": nn.GELU}``, a task's ``root=Path(...)``) was
    saved as the object: every checkpoint of the run was then refused as unreadable, so it could
    neither resume nor be evaluated. :func:`config_difference` compares configs in this form."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _storable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_storable(x) for x in v) if type(v) in (list, tuple) else [_storable(x) for x in v]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, type) or callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '?')}.{v.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))   # an address differs in the resuming process


#: The config fields that define a run's trajectory: resuming a checkpoint saved under other values
#: would silently continue another run (the checkpoint's scheduler replaces the new one, so a
#: longer ``steps`` trained its extra steps at lr 0; a new seed or subset changes the data order
#: mid-run). How often it reports, evaluates or checkpoints, the hardware and what is probed
#: afterwards may change. ``epochs`` counts only when ``steps`` is 0.
RUN_FIELDS = ("model_name", "model_kwargs", "us_task", "us_task_kwargs", "img_size", "data_seed", "data_fraction",
              "batch_size", "seed", "steps", "epochs", "optimizer", "lr", "wd", "head_lr", "head_wd",
              "warmup_fraction", "betas", "momentum", "grad_clip")


def config_difference(saved: Mapping[str, Any], cfg: TrainConfig, allow: Collection[str] = ()) -> str | None:
    """The first :data:`RUN_FIELDS` difference between a checkpoint's config (``saved``, a
    :meth:`TrainConfig.to_dict`) and ``cfg`` (resolved): one phrase naming the field and both
    values; None when they define the same run. Fields in ``allow``, or absent from ``saved`` (an
    older checkpoint), are skipped."""
    new = _storable(cfg.to_dict())   # as save_checkpoint stored it
    for name in RUN_FIELDS:
        if name in allow or name not in saved:
            continue
        if name == "epochs" and new["steps"] > 0 and saved.get("steps", 0) > 0:
            continue
        if saved[name] != new[name]:
            return f"saved by a run with {name}={saved[name]!r}, this config has {name}={new[name]!r}"
    return None


def checkpoint_file(path: str) -> str:
    """The checkpoint file of ``path``: ``path/checkpoint.pt`` for a directory, else ``path``."""
    return os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path


#: What every checkpoint holds (``config`` and ``losses`` too, where an older one does not).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "rng")


class UnreadableCheckpoint(ValueError):
    """A checkpoint file torch cannot read (truncated, damaged, another format)."""


def _damaged_member(path: str) -> str | None:
    """The first member of the zip file ``path`` (torch.save's format) whose bytes fail their
    CRC-32, or None (also for a file that is not a zip: torch's load judges it). torch.load does
    not check them: a checkpoint with a flipped byte in its weights loaded without a word and
    resumed another model. Cost: one read of the file (crc32 runs at GB/s)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):   # torch.load names a truncated one
        return None
    except Exception as e:   # noqa: BLE001 - zlib.error of a damaged compressed member, ...
        return f"? ({type(e).__name__})"


def read_checkpoint(path: str, *, lazy: bool = False, verify: bool = True) -> dict[str, Any]:
    """The contents of the checkpoint file ``path`` (on the CPU).

    Args:
        lazy: memory-map the file (``torch.load(mmap=True)``): only the pickled header is read
            (~ms), tensors are paged in when touched; for reading ``step`` or ``config`` of a
            checkpoint of any size. Also finds a truncated file (its zip directory is at the end).
        verify: check every stored byte against its CRC-32 first (:func:`_damaged_member`): a
            damaged checkpoint is refused, not loaded with wrong weights.

    Raises:
        FileNotFoundError: no such file.
        UnreadableCheckpoint: (a ValueError) torch cannot read it, named in one line (torch's
            error named no file, in several).
    """
    bad = _damaged_member(path) if verify else None
    if bad is not None:
        raise UnreadableCheckpoint(f"{path}: not a readable checkpoint (damaged: its record {bad} fails its CRC-32 "
                                   "check)")
    ck: Any = None
    if lazy:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except FileNotFoundError:
            raise
        except Exception:   # noqa: BLE001 - a legacy (non-zip) file cannot be mapped: read it whole,
            pass            # which also gives a damaged file's own error
    if ck is None:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:   # noqa: BLE001 - a truncated copy, another file: torch's error named no file
            # the first sentence: torch's next ones advise weights_only=False ("will likely succeed")
            first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
            raise UnreadableCheckpoint(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from e
    # another torch file (a bare state_dict) was a KeyError: 'model' (or 'step')
    missing = [k for k in CHECKPOINT_KEYS if k not in ck] if isinstance(ck, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise UnreadableCheckpoint(f"{path}: not a readable checkpoint (a torch file without {', '.join(missing)}: "
                                   "not one save_checkpoint wrote)")
    return ck


def _weights_difference(saved: Mapping[str, Any], model: nn.Module) -> str | None:
    """The first difference between a checkpoint's weights and ``model``'s (a tensor one lacks, or
    of another shape), as one phrase; None when they fit. A US task registered again under its
    name with other classes passed the config check, and ``load_state_dict`` failed in several
    lines ("Error(s) in loading state_dict ... size mismatch for head.weight") naming no file."""
    if not isinstance(saved, Mapping):
        return f"its model entry is a {type(saved).__name__}, not a state_dict"
    here = model.state_dict()
    for k, v in here.items():
        if k not in saved:
            return f"{k} is not in it"
        got = saved[k]
        if isinstance(v, torch.Tensor) and (not isinstance(got, torch.Tensor) or got.shape != v.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else f"a {type(got).__name__}"
            return f"{k} is {shape} in it, {tuple(v.shape)} in this model"
    extra = [k for k in saved if k not in here]
    return f"{extra[0]} is not in this model" if extra else None


def load_checkpoint(path: str, *, model: nn.Module, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig | None = None,
                    allow_changed: Collection[str] = (), losses: torch.Tensor | None = None) -> int:
    """Restore a checkpoint (a file, or a directory holding ``checkpoint.pt``); returns its step.

    Args:
        cfg: the (resolved) config of the run that resumes; None skips the check.
        allow_changed: :data:`RUN_FIELDS` that may differ from the checkpoint's config
            (``evaluate_checkpoint`` cuts ``steps`` at the checkpoint's step).
        losses: filled in place with the checkpoint's per-step losses, where it holds them (an
            older checkpoint does not: those steps stay as they were).

    Raises:
        ValueError: ``cfg`` differs from the checkpoint's config in a run-defining field
            (:data:`RUN_FIELDS`), named in one line; nothing is restored. Or the file is not a
            checkpoint torch can read (truncated, damaged, another format: :class:`UnreadableCheckpoint`),
            named; nothing is restored. Or its weights do not fit ``model`` (a tensor missing or
            of another shape: another model, a task with other classes), named; nothing is restored.
    """
    path = checkpoint_file(path)
    ck = read_checkpoint(path)
    diff = None if cfg is None else config_difference(ck.get("config", {}), cfg, allow_changed)
    if diff is not None:
        raise ValueError(f"{path}: {diff}; resuming it would continue another run (start this one without "
                         "resume_from, or resume with the checkpoint's values)")
    bad = _weights_difference(ck["model"], model)
    if bad is not None:   # before anything is restored: load_state_dict copies what fits, then raises
        raise ValueError(f"{path}: its weights are not this model's ({bad}): saved by another model or US task "
                         "(its classes?); resume it with the model and task it was saved by")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    _set_rng_state(ck["rng"])
    saved = ck.get("losses")
    if losses is not None and saved is not None:
        n = min(int(saved.numel()), int(losses.numel()))
        losses[:n] = saved[:n].to(losses.device, losses.dtype)
    return int(ck["step"])


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainResult:
    """Outcome of :func:`pretrain`.

    Attributes:
        us_accuracy: final upstream top-1 on the whole test split (fraction).
        plan: steps, epochs and warm-up actually used.
        losses: training loss per step (total_steps,), of the global batch (averaged over
            data-parallel ranks). A resumed run's steps before the resume are the checkpoint's
            (NaN where an older checkpoint holds no losses).
        history: the metrics of every report, in order.
        train_indices: the upstream train examples used (the data_fraction subset).
        wall_s: seconds spent in this call.
        images_per_s: training throughput of this call, evals excluded.
    """

    us_accuracy: float
    plan: StepPlan
    losses: np.ndarray
    history: tuple[dict[str, float], ...]
    train_indices: np.ndarray
    wall_s: float
    images_per_s: float


def _batches(stream: StepBatches, start: int, stop: int, num_workers: int, pin: bool,
             ) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    if num_workers == 0:
        return (stream[s] for s in range(start, stop))
    # The loader's own generator: iter(loader) draws the workers' base seed from it, else from
    # torch's global RNG, which also drives dropout and drop-path. That draw made a run with
    # workers differ from one without, and (made after a checkpoint's RNG state is restored) put
    # a resumed run one draw ahead of the uninterrupted one. Batches do not depend on the seed.
    loader = torch.utils.data.DataLoader(stream, batch_size=None, sampler=range(start, stop),  # type: ignore[arg-type]
                                         num_workers=num_workers, pin_memory=pin, prefetch_factor=4,
                                         generator=torch.Generator().manual_seed(0))
    return _closing(iter(loader))


def _closing(it: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """``it``, whose DataLoader workers stop when the generator is closed. A run stopped by an
    exception (an ``on_report`` that raises, DivergedError, Ctrl-C) left its workers running, each
    with its own copy of the split's image cache, for as long as the exception's traceback lived
    (a notebook keeps the last one)."""
    try:
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def train_step(model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               x: torch.Tensor, y: torch.Tensor, rt: Runtime, grad_clip: float, fwd: nn.Module | None = None,
               ) -> torch.Tensor:
    """One optimizer step on a batch; returns the (detached, on-device) mean cross-entropy."""
    with rt.autocast():
        logits = (fwd or model)(x)
    if logits.ndim != 2 or logits.shape[0] != len(y):   # a shape check: no device sync
        # model_kwargs {"global_pool": ""} keeps a ViT's or a Mixer's tokens: cross_entropy
        # failed with "Expected target size [128, 240], got [128]", naming neither
        raise ValueError(f"the model's outputs have shape {tuple(logits.shape)}, not (batch {len(y)}, classes): "
                         "its classifier must pool each image to one vector (model_kwargs global_pool='' does not)")
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    opt.step()
    sched.step()
    return loss.detach()


@dataclass
class _Run:
    """The mutable state of one pretrain call."""

    model: nn.Module
    fwd: nn.Module  # the model, or its torch.compile wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rt: Runtime
    plan: StepPlan
    losses: torch.Tensor  # (total_steps,) on the device; NaN where not run nor restored
    start: int  # first step of this call (> 0 when resumed)
    last_report: int = 0
    checked: int = 0  # losses before this step are averaged over ranks and known finite
    train_s: float = 0.0  # seconds in training steps, evals and checkpoints excluded
    history: list[dict[str, float]] = field(default_factory=list)


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _setup(model: nn.Module, cfg: TrainConfig, arch_family: str, n_train: int, resume_from: str | None,
           allow_changed: Collection[str] = ()) -> _Run:
    rt = resolve_runtime(cfg, arch_family)
    model.to(rt.device)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    plan = plan_steps(cfg, n_train)
    opt = build_optimizer(model, optimizer=cfg.optimizer, lr=cfg.lr, wd=cfg.wd, head_lr=cfg.head_lr,
                          head_wd=cfg.head_wd, betas=cfg.betas, momentum=cfg.momentum)
    sched = build_schedule(opt, plan.total_steps, plan.warmup_steps)
    losses = torch.full((plan.total_steps,), math.nan, device=rt.device)
    start = load_checkpoint(resume_from, model=model, opt=opt, sched=sched, cfg=cfg,
                            allow_changed=allow_changed, losses=losses) if resume_from else 0
    fwd: nn.Module = model
    if dist_rank_world()[1] > 1:
        # Data parallel (e.g. Ray Train's TorchTrainer): gradients are averaged across ranks in
        # backward; every rank holds the same weights, so evaluation needs no synchronization.
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    fwd = torch.compile(fwd) if rt.compile else fwd
    return _Run(model, fwd, opt, sched, rt, plan, losses, start, last_report=start, checked=start)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the model's accuracies would be chance levels
    (argmax of NaN logits), logged as a finished run and stored as a point of the meta-study."""


class TrialConfigError(ValueError):
    """A trial refused before training: its config, with the tasks and model it names, cannot run
    (a DS class with fewer examples than the shots, an image size the patch does not divide, a
    BatchNorm model on batches of one, ...). The same config fails the same way on every attempt,
    so the sweep machinery does not train it again on a retry (``meta_study.tune.trial``).
    ``run_trial`` raises it for any ValueError of its checks before pre-training; the message is
    the check's own."""


def _mean_over_ranks(run: _Run, start: int, stop: int) -> torch.Tensor:
    """``run.losses[start:stop]`` averaged over the data-parallel ranks, in place; returns it.

    A rank's loss is the mean over its shard, and shards are equal (:func:`check_batch_splits`),
    so the mean over ranks is the global batch's loss: what ``train/loss`` and
    ``train/final_loss`` report (rank 0's own half batch was logged before). It also makes the
    divergence check the same on every rank: a NaN on one rank is NaN in the sum on all, so they
    all raise, where one rank raising alone left the others blocked in their next collective
    (NCCL: until its timeout). One all_reduce of ``stop - start`` floats per call.
    """
    window = run.losses[start:stop]
    world = dist_rank_world()[1]
    if world > 1 and len(window):
        import torch.distributed as dist

        summed = window.clone()
        dist.all_reduce(summed)          # SUM: ReduceOp.AVG is NCCL-only
        window.copy_(summed / world)
    return window


def _check_finite(run: _Run, start: int, stop: int, cfg: TrainConfig) -> torch.Tensor:
    """The losses of steps ``start + 1 .. stop``, averaged over ranks (:func:`_mean_over_ranks`,
    once per step: those before ``run.checked`` already are); :class:`DivergedError` when one is
    not finite on any rank (one device sync)."""
    fresh = max(start, run.checked)
    new = _mean_over_ranks(run, fresh, stop)
    finite = torch.isfinite(new)
    if not bool(finite.all()):
        first = fresh + int((~finite).nonzero()[0, 0]) + 1
        raise DivergedError(f"training diverged: the loss is not finite from step {first} of "
                            f"{run.plan.total_steps} (lr {cfg.lr:g}, grad_clip {cfg.grad_clip:g}); its accuracies "
                            "would be chance levels")
    run.checked = stop
    return run.losses[start:stop]


def _report(run: _Run, step: int, task: Task, cfg: TrainConfig, eval_idx: np.ndarray | None,
            checkpoint_dir: str | None, on_report: ReportFn | None) -> float:
    """Evaluate (on ``eval_idx`` of the test split; None: all of it), checkpoint, call
    ``on_report``; returns the US accuracy. :class:`DivergedError` (before any of it: no
    checkpoint of a diverged model) when a loss since the last report is not finite on any rank
    (one device sync per report; between reports, one per :data:`DIVERGENCE_CHECK_STEPS`)."""
    window = _check_finite(run, run.last_report, step, cfg)
    try:
        acc = evaluate(run.fwd, task.test, run.rt, cfg.eval_batch_size, eval_idx)
    except DivergedError as e:   # the update after the last loss blew the weights up
        raise DivergedError(f"training diverged: after step {step} of {run.plan.total_steps} (lr {cfg.lr:g}, "
                            f"grad_clip {cfg.grad_clip:g}), {e}") from None
    metrics = {"step": float(step), "epoch": step / run.plan.steps_per_epoch,
               "train/loss": float(window.mean()) if len(window) else math.nan,
               # the lr of the update that made this step (the optimizer's is already the next one's)
               "train/lr": float(run.sched.base_lrs[0] * run.sched.lr_lambdas[0](step - 1))
               if isinstance(run.sched, torch.optim.lr_scheduler.LambdaLR) else float(run.opt.param_groups[0]["lr"]),
               "train/images_per_s": (step - run.start) * run.plan.batch_size / max(run.train_s, 1e-9),  # global
               us_metric_key(task.name): acc}
    run.history.append(metrics)
    run.last_report = step
    rank = dist_rank_world()[0]
    saved = checkpoint_dir if checkpoint_dir is not None and rank == 0 else None  # ranks hold the same state
    if saved is not None:
        save_checkpoint(saved, model=run.model, opt=run.opt, sched=run.sched, step=step, cfg=cfg, losses=run.losses)
    if on_report is not None:
        on_report(step, metrics, saved)
    return acc


def check_pretrain(model: nn.Module, info: ModelInfo, task: Task, cfg: TrainConfig) -> np.ndarray:
    """What :func:`pretrain` refuses before training (``cfg`` resolved); returns the indices of the
    ``data_fraction`` subset of ``task.train`` it trains on. Raises ValueError, in one line."""
    if len(task.test) == 0:   # found before training, not at the first report
        raise ValueError(f"US task {task.name}: its test split holds no examples to measure accuracy on")
    if len(task.train) == 0:  # a ZeroDivisionError in plan_steps
        raise ValueError(f"US task {task.name}: its train split holds no examples to train on")
    if info.num_classes != task.num_classes:
        # fewer outputs: "Target 7 is out of bounds" at the first batch holding such a class (a
        # device-side assert on a GPU), naming neither; more: trained without a word, a model with
        # logits for classes that do not exist and a param_count of another model
        raise ValueError(f"US task {task.name}: {task.num_classes} classes, but the model's head has "
                         f"{info.num_classes} outputs; build it with create_model(..., num_classes={task.num_classes})")
    train_idx = fraction_indices(len(task.train), cfg.data_fraction, cfg.data_seed)
    world = dist_rank_world()[1]
    plan = plan_steps(cfg, len(train_idx))
    check_batch_splits(cfg, plan, world)   # on every rank alike, before any collective
    check_batch_norm_batch(model, task, cfg, plan, world)
    return train_idx


def pretrain(model: nn.Module, info: ModelInfo, task: Task, cfg: TrainConfig, *,
             on_report: ReportFn | None = None, checkpoint_dir: str | None = None,
             resume_from: str | None = None, allow_changed: Collection[str] = ()) -> PretrainResult:
    """Pre-train ``model`` on ``task`` upstream.

    Args:
        model: built by :func:`~meta_study.train.models.create_model` for ``task``; moved to the device.
        info: its :class:`ModelInfo` (for the default learning rate).
        task: the upstream task; accuracy is measured on ``task.test``.
        cfg: the config; None lr/head_lr/head_wd are resolved from ``info``.
        on_report: called at every report with (step, metrics, checkpoint_dir or None).
        checkpoint_dir: where to save a checkpoint at each report; None: no checkpoints.
        resume_from: a checkpoint file or directory to continue from; its config must define the
            same run (:data:`RUN_FIELDS`), else ValueError.
        allow_changed: run-defining fields that may differ from the checkpoint's (an explicit
            opt-out: ``evaluate_checkpoint`` cuts ``steps``).

    Returns:
        :class:`PretrainResult`. An exception in ``on_report`` propagates (the run stops there).

    Raises:
        ValueError: under data parallelism, a batch the ranks cannot share equally
            (:func:`check_batch_splits`); a checkpoint of another run; a model whose head has
            another number of outputs than ``task`` has classes; a BatchNorm model trained on one
            example per step (per rank) where a BatchNorm layer would see one value per channel
            (:func:`check_batch_norm_batch`).
        DivergedError: a training loss that is not finite, on any rank.
    """
    t0 = time.perf_counter()
    cfg = cfg.resolved(info)
    rank, world = dist_rank_world()
    train_idx = check_pretrain(model, info, task, cfg)
    run = _setup(model, cfg, info.arch_family, len(train_idx), resume_from, allow_changed)
    stream = StepBatches(task.train, train_idx, run.plan.batch_size, cfg.seed, rank=rank, world=world)
    # intermediate reports: a fixed subset; the final one (us_accuracy, the meta-study's x) the whole split
    eval_idx = us_eval_indices(len(task.test), cfg.us_eval_examples, cfg.data_seed)
    batches = _batches(stream, run.start, run.plan.total_steps, cfg.num_workers, run.rt.device.type == "cuda")
    acc, tick = math.nan, time.perf_counter()
    model.train()
    try:
        for step, (x, y) in enumerate(batches, start=run.start + 1):
            x, y = run.rt.prepare(x), y.to(run.rt.device, non_blocking=True)
            run.losses[step - 1] = train_step(model, run.opt, run.sched, x, y, run.rt, cfg.grad_clip, run.fwd)
            last = step == run.plan.total_steps
            if last or (cfg.eval_every and step % cfg.eval_every == 0):
                if run.rt.device.type == "cuda":   # steps still queued on the GPU belong to the training time
                    torch.cuda.synchronize(run.rt.device)
                run.train_s += time.perf_counter() - tick
                acc = _report(run, step, task, cfg, None if last else eval_idx, checkpoint_dir, on_report)
                tick = time.perf_counter()
            elif step % DIVERGENCE_CHECK_STEPS == 0:   # every rank alike: the steps are the same on all
                _check_finite(run, run.checked, step, cfg)
    finally:   # DataLoader workers stop here, not when the exception's traceback is collected
        batches.close()
    if run.start >= run.plan.total_steps:  # resumed from a finished run: just measure
        acc = evaluate(run.fwd, task.test, run.rt, cfg.eval_batch_size)
    done = (run.plan.total_steps - run.start) * run.plan.batch_size
    return PretrainResult(us_accuracy=acc, plan=run.plan, losses=run.losses.cpu().numpy(), history=tuple(run.history),
                          train_indices=train_idx, wall_s=time.perf_counter() - t0,
                          images_per_s=done / run.train_s if run.train_s > 0 else math.nan)
