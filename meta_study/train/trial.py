"""One meta-study point end to end: pre-train upstream, probe downstream, diagnose.

``run_trial(config)`` is what a Ray Tune trial function calls (the tune layer adds Ray and
MLflow; this module has neither)::

    def train_fn(config):
        result = run_trial(config, on_report=lambda step, m, ck: tune.report(m, checkpoint=...))
        tune.report(result.metrics())

A smoke config (:func:`smoke_config`) runs in ~4 s on one CPU core (3.6-3.9 s measured, 2026-12-03).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
import dataclasses
from typing import Any, Callable, Collection, Iterator, Mapping

import numpy as np
import torch

from ..schema import (PARAM_NAMES, TRAINED_BATCH_SIZE_KEY, TRAINED_EPOCHS_KEY, ds_metric_key, finetune_metric_key,
                      l2sweep_metric_key, us_metric_key)
from .data import Task, get_task, task_kwargs
from .diagnostics import Diagnostics, capture_init, diagnose
from .fewshot import FewShotResult, extract_features, fewshot_draw, fewshot_features
from .finetune import check_finetune_batch, finetune
from .loop import (DivergedError, PretrainResult, ReportFn, TrainConfig, TrialConfigError, check_pretrain,
                   checkpoint_file, dist_rank_world, pretrain, read_checkpoint, resolve_runtime)
from .models import ModelInfo, create_model
from .optim import check_hparam


@dataclass(frozen=True)
class TrialResult:
    """Everything one trial measured.

    Attributes:
        config: the resolved config (lr, head_lr, head_wd filled in).
        model_name, arch_family, param_count: the model (schema columns of the same names).
        us_task, us_accuracy: upstream task and final top-1 on its test split (fraction).
        fewshot: one result per (DS task, shots, layer); layer None = pre-logits.
        finetune_accuracy: DS task -> full fine-tuning top-1 (empty unless ``config.finetune``).
        diagnostics: norms, distances to init, margins (None unless ``config.diagnostics``).
        pretrain: the pre-training record (loss per step, report history, throughput).
        timings: seconds per phase: pretrain, fewshot, diagnostics, finetune, total.
    """

    config: TrainConfig
    model_name: str
    arch_family: str
    param_count: int
    us_task: str
    us_accuracy: float
    fewshot: tuple[FewShotResult, ...]
    finetune_accuracy: Mapping[str, float]
    diagnostics: Diagnostics | None
    pretrain: PretrainResult
    timings: Mapping[str, float] = field(default_factory=dict)

    def ds_accuracy(self, ds_task: str, shots: int, layer: int | None = None) -> float:
        """Few-shot accuracy of one (task, shots, layer); KeyError if it was not measured."""
        for r in self.fewshot:
            if (r.task, r.shots, r.layer) == (ds_task, shots, layer):
                return r.accuracy
        raise KeyError((ds_task, shots, layer))

    def metrics(self) -> dict[str, float]:
        """Flat metrics under the schema's keys, plus ``diag/...`` and ``train/...``.

        ``us/{us_task}/top1``, ``ds/{task}/{k}shot/top1``, ``ds/{task}/{k}shot/layer{L}/top1``,
        ``ds/{task}/finetune/top1`` (meta_study.schema), the few-shot l2 sweep as
        ``diag/l2sweep/{task}/{k}shot/l2_{l2}/top1`` (:func:`~meta_study.schema.l2sweep_metric_key`), diagnostics,
        and training totals (``train/steps``, ``train/epochs``, ``train/batch_size``: the batch
        trained with, after capping at the train split).
        """
        out = {us_metric_key(self.us_task): self.us_accuracy}
        for r in self.fewshot:
            out[ds_metric_key(r.task, r.shots, r.layer)] = r.accuracy
            if len(r.sweep) > 1:
                out.update({l2sweep_metric_key(r.task, r.shots, r.layer, l2): a for l2, a in r.sweep.items()})
        out.update({finetune_metric_key(t): a for t, a in self.finetune_accuracy.items()})
        if self.diagnostics is not None:
            out.update(self.diagnostics.metrics())
        p = self.pretrain
        # the batch trained with: ``batch_size`` capped at the (data_fraction of the) US train split;
        # the ``batch_size`` param a tracker logs when the trial starts is the configured one
        out.update({"train/steps": float(p.plan.total_steps), TRAINED_EPOCHS_KEY: p.plan.epochs,
                    TRAINED_BATCH_SIZE_KEY: float(p.plan.batch_size)})
        last_epoch = p.losses[-max(1, p.plan.steps_per_epoch):]
        if np.isfinite(last_epoch).any():  # not when resumed from a finished checkpoint without losses (older)
            out["train/final_loss"] = float(np.nanmean(last_epoch))
        if np.isfinite(p.images_per_s):
            out["train/images_per_s"] = p.images_per_s
        out.update({f"time/{k}_s": v for k, v in self.timings.items()})
        return out

    def params(self) -> dict[str, Any]:
        """The schema's ``PARAM_NAMES`` with resolved values (``epochs`` as actually run), plus
        ``param_count`` and ``us_task``: what a tracker logs as run parameters."""
        cfg = self.config
        vals = {k: getattr(cfg, k) for k in PARAM_NAMES}
        vals["epochs"] = self.pretrain.plan.epochs
        vals["batch_size"] = self.pretrain.plan.batch_size
        return {**vals, "param_count": self.param_count, "us_task": self.us_task}


def smoke_config(**overrides: Any) -> TrainConfig:
    """A config that runs end to end in ~4 s on one CPU core (16 px, 6k upstream images)."""
    base = dict(model_name="vit_tiny_cpu", img_size=16, epochs=2.0, batch_size=128, lr=2e-3,
                us_task_kwargs={"n_train": 6000, "n_test": 1200},
                ds_task_kwargs={"n_train_per_class": 30, "n_test": 300},
                shots=(1, 5, 10, 25), margin_examples=512)
    return TrainConfig(**{**base, **overrides})


def _seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch.

    Raises:
        ValueError: a seed torch cannot take (2**64 or more: 'Overflow when unpacking long long',
            naming nothing).
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed={seed}: must be in [0, 2**64) (torch.manual_seed's range)")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _us_task(cfg: TrainConfig) -> Task:
    """The US task, given the ``us_task_kwargs`` its factory takes (:func:`~.data.task_kwargs`)."""
    return get_task(cfg.us_task, img_size=cfg.img_size, seed=cfg.data_seed,
                    **task_kwargs(cfg.us_task, cfg.us_task_kwargs, "us_task_kwargs"))


def _ds_tasks(cfg: TrainConfig, us: Task | None = None) -> list[Task]:
    """The DS tasks, each given the ``ds_task_kwargs`` its factory takes (the procedural suite's
    sizing keys skip a dataset on disk), and each checked to hold ``max(shots)`` train examples
    in every class: a class with fewer gave the same draw to every larger shot count and every
    seed, logged as a 25-shot mean over 3 seeds that was one 10-shot draw (VTAB-1k's CIFAR-100
    has ~10 a class).

    Each is also checked to hold images of the model's input (the US task's size and channels): a
    factory that ignores ``img_size`` crashed the probe after pre-training, deep in the model
    ("Input height (24) doesn't match model (16)" from a ViT's patch embedding)."""
    tasks = [get_task(n, img_size=cfg.img_size, seed=cfg.data_seed,
                      **task_kwargs(n, cfg.ds_task_kwargs, "ds_task_kwargs")) for n in cfg.ds_tasks]
    k = max(cfg.shots)
    size, chans, of = (us.img_size, us.in_chans, f"US task {us.name}, ") if us is not None else (cfg.img_size, 3, "")
    for t in tasks:
        if (t.img_size, t.in_chans) != (size, chans):
            raise ValueError(f"DS task {t.name}: its images are {t.img_size}x{t.img_size} px with {t.in_chans} "
                             f"channel(s), the model's input ({of}img_size={cfg.img_size}) {size}x{size} px with "
                             f"{chans}: its factory must render its images at the img_size it is given")
        if t.num_classes < 2:  # every probe is right: a DS accuracy of 100% that says nothing of the model
            raise ValueError(f"DS task {t.name}: num_classes={t.num_classes}; a downstream accuracy needs 2 or "
                             "more classes")
        if len(t.test) == 0:   # the probe's accuracy would be of nothing (a raw torch.cat error)
            raise ValueError(f"DS task {t.name}: its test split holds no examples to measure accuracy on")
        train_y = np.asarray(t.train.labels)
        # a class the test split holds and the train split lacks has 0 few-shot examples: the probe
        # never predicts it, and its test examples cap the accuracy without a word
        absent = sorted(set(np.asarray(t.test.labels).tolist()) - set(train_y.tolist()))
        if absent:
            raise ValueError(f"DS task {t.name}: class {', '.join(map(str, absent[:5]))} has 0 train examples but "
                             f"test examples; fewer than {k} shots (shots={tuple(cfg.shots)}) to draw from")
        # the probe's own draw (seed 0, the largest shots): its ValueError names the task, the class,
        # its count and the shots, in one line
        fewshot_draw(train_y, k, 0, task=t.name)
    return tasks


def _probe(model: torch.nn.Module, info: ModelInfo, tasks: list[Task], cfg: TrainConfig, rt: Any,
           ) -> list[FewShotResult]:
    seeds = tuple(range(cfg.fewshot_seeds))
    out: list[FewShotResult] = []
    for t in tasks:
        fs = extract_features(model, info, t, rt, layers=cfg.layerwise, shots=cfg.shots, seeds=seeds,
                              batch_size=cfg.eval_batch_size)
        out += fewshot_features(fs, shots=cfg.shots, seeds=seeds, l2=cfg.l2, l2_sweep=cfg.l2_sweep,
                                layerwise=cfg.layerwise)
    return out


def _finetune_all(model: torch.nn.Module, tasks: list[Task], cfg: TrainConfig, rt: Any) -> dict[str, float]:
    """Fine-tuned DS accuracy per task. A fine-tune that diverges (NaN logits: a chance accuracy
    if logged) is left out and said on stderr; the trial keeps its pre-training and probes."""
    import sys

    out: dict[str, float] = {}
    for t in tasks:
        try:
            out[t.name] = finetune(model, t, rt, examples=cfg.finetune_examples, steps=cfg.finetune_steps,
                                   lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size, seed=cfg.seed,
                                   grad_clip=cfg.grad_clip, eval_batch_size=cfg.eval_batch_size)
        except DivergedError as e:
            print(f"fine-tune of {t.name} diverged (lr {cfg.finetune_lr:g}), not logged: {e}", file=sys.stderr)
    return out


StartFn = Callable[[TrainConfig, ModelInfo], None]


@contextlib.contextmanager
def _config_checks() -> Iterator[None]:
    """A ValueError of the checks made before pre-training as a :class:`~.loop.TrialConfigError`
    (the same message): the same config fails them the same way on every attempt."""
    try:
        yield
    except TrialConfigError:
        raise
    except ValueError as e:
        raise TrialConfigError(str(e)) from e


def run_trial(config: TrainConfig | Mapping[str, Any], *, on_report: ReportFn | None = None,
              checkpoint_dir: str | None = None, resume_from: str | None = None,
              on_start: StartFn | None = None, allow_changed: Collection[str] = ()) -> TrialResult:
    """Pre-train, few-shot probe every DS task x shots (x block), diagnose, optionally fine-tune.

    Args:
        config: a :class:`TrainConfig`, or a flat dict of its fields (a Tune trial config).
        on_report: called at each pre-training report: (step, metrics, checkpoint_dir or None).
        checkpoint_dir: where pre-training checkpoints go (one file, overwritten per report).
        resume_from: a checkpoint file or directory to resume pre-training from; it must be of
            this run (the same :data:`~.loop.RUN_FIELDS`), else ValueError.
        on_start: called once the model is built, with the resolved config (lr, head_lr, head_wd
            filled in) and the model's :class:`ModelInfo` (e.g. to log parameters early).
        allow_changed: run-defining fields that may differ from ``resume_from``'s config.

    Returns:
        :class:`TrialResult`; ``result.metrics()`` is the flat dict to log. Under data-parallel
        training only rank 0 probes, diagnoses and fine-tunes; other ranks return after
        pre-training with those fields empty.

    Raises:
        TrialConfigError: (a ValueError) before pre-training, a config this trial cannot run: a DS
            task named twice in ``ds_tasks``, a task or model that does not fit it, a BatchNorm
            model trained or fine-tuned on batches of one example
            (:func:`~.loop.check_batch_norm_batch`), ...; the check's own one-line message.
        ValueError: a device this machine lacks; a ``resume_from`` checkpoint of another run.
    """
    t0 = time.perf_counter()
    with _config_checks():
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        # a task named twice was probed (and fine-tuned) twice, minutes each, for one set of metric
        # keys: refused, as the sweep runner refuses it (--ds-task, --set ds_tasks)
        twice = next((t for t in cfg.ds_tasks if cfg.ds_tasks.count(t) > 1), None)
        if twice is not None:
            raise ValueError(f"ds_tasks: {twice!r} given {cfg.ds_tasks.count(twice)} times: give each downstream "
                             "task once")
        us = _us_task(cfg)
        if us.num_classes < 2:   # cross-entropy over one class is 0 at any weights: nothing is learned
            raise ValueError(f"US task {us.name}: num_classes={us.num_classes}; pre-training needs 2 or more classes")
        _seed_everything(cfg.seed)
        model, info = create_model(cfg.model_name, num_classes=us.num_classes, img_size=us.img_size,
                                   in_chans=us.in_chans, **cfg.model_kwargs)
        if cfg.layerwise and not info.num_blocks:   # its probe gave pre-logits rows alone, without a word
            raise ValueError(f"model {cfg.model_name}: layerwise=True, but its blocks cannot be found (no known "
                             "layout, no timm feature_info): no layer could be probed")
        init = capture_init(model) if cfg.diagnostics else {}
        cfg = cfg.resolved(info)
        if cfg.finetune:   # refused after pre-training and probing, the trial's hours lost, else
            check_hparam("finetune_lr", cfg.finetune_lr)
    # a device this machine lacks: one line before the DS data is built (not a TrialConfigError:
    # another node may have it)
    rt = resolve_runtime(cfg, info.arch_family)
    lead = dist_rank_world()[0] == 0
    with _config_checks():
        check_pretrain(model, info, us, cfg)     # what pretrain refuses, before the DS data is built
        ds = _ds_tasks(cfg, us) if lead else []  # checked before pre-training, not after its hours
        for t in ds if cfg.finetune else ():
            check_finetune_batch(model, t, examples=cfg.finetune_examples, batch_size=cfg.finetune_batch_size)
    if on_start is not None:
        on_start(cfg, info)
    pre = pretrain(model, info, us, cfg, on_report=on_report, checkpoint_dir=checkpoint_dir, resume_from=resume_from,
                   allow_changed=allow_changed)
    t1 = time.perf_counter()
    shots = _probe(model, info, ds, cfg, rt)
    t2 = time.perf_counter()
    diag = diagnose(model, info, init, us, pre.train_indices, rt, n=cfg.margin_examples, seed=cfg.seed,
                    batch_size=cfg.eval_batch_size) if cfg.diagnostics and lead else None
    t3 = time.perf_counter()
    ft = _finetune_all(model, ds, cfg, rt) if cfg.finetune and lead else {}
    t4 = time.perf_counter()
    timings = {"pretrain": t1 - t0, "fewshot": t2 - t1, "diagnostics": t3 - t2, "finetune": t4 - t3, "total": t4 - t0}
    return TrialResult(cfg, info.name, info.arch_family, info.param_count, us.name, pre.us_accuracy, tuple(shots), ft,
                       diag, pre, timings)


def checkpoint_step(path: str) -> int:
    """The training step a checkpoint (file or directory) was saved at.

    Reads the file memory-mapped: only its pickled header (ms), not the weights and optimizer
    state (3x the model's size, read again by the resume that follows in :func:`evaluate_checkpoint`).

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: (:class:`~.loop.UnreadableCheckpoint`) a file torch cannot read, named in one line.
    """
    return int(read_checkpoint(checkpoint_file(path), lazy=True, verify=False)["step"])


def evaluate_checkpoint(config: TrainConfig | Mapping[str, Any], checkpoint: str, **kw: Any) -> TrialResult:
    """The full trial evaluation (US accuracy, few-shot probes, diagnostics) of a checkpoint,
    without further training: e.g. a trial an early-stopping scheduler stopped mid-way. The plan
    is cut at the checkpoint's step, so pre-training resumes at its end and only measures: the
    length (``steps``, ``epochs``) is the one run-defining field allowed to differ from the
    checkpoint's config; any other difference (another trial's checkpoint) is a ValueError."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = dataclasses.replace(cfg, steps=checkpoint_step(checkpoint), eval_every=0)
    return run_trial(cfg, resume_from=checkpoint, allow_changed=("steps", "epochs"), **kw)
