"""The training and evaluation engine: timm pre-training, procedural tasks, few-shot probes, diagnostics.

A plain library (torch + timm; no Ray, no MLflow). ``run_trial(config)`` is one meta-study point:
pre-train on the upstream task, few-shot probe every downstream task (per block if asked),
measure norms and margins, optionally fine-tune. ``docs/training.md`` is the guide and
``docs/data.md`` describes the procedural suite.

Importing this package imports torch and timm; ``import meta_study`` does not import it.
"""

from __future__ import annotations

from .data import (Split, StepBatches, Task, TensorSplit, fraction_indices, get_task, iterate_split, list_tasks,
                   register_task, task_kwargs)
from .diagnostics import Diagnostics, Margins, WeightStats, capture_init, diagnose, margins, weight_stats
from .disk import load_imagefolder, load_parquet
from .fewshot import (FeatureSet, FewShotResult, ProbeCache, extract_features, fewshot_draw, fewshot_features,
                      fewshot_lsr, fit_probe, probe_accuracy)
from .finetune import finetune
from .loop import (PretrainResult, Runtime, StepPlan, TrainConfig, evaluate, load_checkpoint, plan_steps, pretrain,
                   resolve_runtime, save_checkpoint, train_step)
from .models import (ModelInfo, Preset, create_model, get_preset, head_module, head_parameters, list_presets,
                     pre_logits, register_preset, representations)
from .optim import SGDW, WarmupLinearDecay, build_optimizer, build_schedule, param_groups
from .synth import DS_TASKS
from .trial import TrialResult, checkpoint_step, evaluate_checkpoint, run_trial, smoke_config

__all__ = [
    "DS_TASKS", "Diagnostics", "FeatureSet", "FewShotResult", "Margins", "ModelInfo", "Preset", "PretrainResult",
    "ProbeCache", "Runtime", "SGDW", "Split", "StepBatches", "StepPlan", "Task", "TensorSplit", "TrainConfig",
    "TrialResult", "WarmupLinearDecay", "checkpoint_step", "evaluate_checkpoint", "WeightStats", "build_optimizer", "build_schedule", "capture_init",
    "create_model", "diagnose", "evaluate", "extract_features", "fewshot_draw", "fewshot_features", "fewshot_lsr",
    "finetune", "fit_probe", "fraction_indices", "get_preset", "get_task", "head_module", "head_parameters",
    "iterate_split", "list_presets", "list_tasks", "load_checkpoint", "load_imagefolder", "load_parquet", "margins",
    "param_groups", "plan_steps", "pre_logits", "pretrain", "probe_accuracy", "register_preset", "register_task",
    "representations", "resolve_runtime", "run_trial", "save_checkpoint", "smoke_config", "task_kwargs", "train_step",
    "weight_stats",
]
