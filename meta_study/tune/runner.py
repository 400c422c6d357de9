"""Running a sweep: arguments shared by every ``sweeps/*.py``, the Tuner, resume, and finalization.

A sweep script declares a :class:`SweepSpec` (search space, defaults, resources, smoke variant)
and calls :func:`sweep_main`, which parses its flags into :class:`SweepOptions` and calls
:func:`run_sweep`; a program (the demo) builds the options and calls :func:`run_sweep` itself.
Importing this module does not import Ray, torch or timm. What happens:

1. Checks that need nothing started (:mod:`.preflight`): no credentials on the command line or
   in the job's runtime_env; ``--resume``, ``--name`` and ``--experiment`` against the sweep
   record in the storage path (a sweep is never started over or forked quietly).
2. The Ray address comes from ``--address``, else ``$RAY_ADDRESS`` (as under ``ray job submit``),
   else a local Ray is started. On a cluster, every node that can run a trial must read and write
   the storage path, or the sweep is refused before any trial starts.
3. The sweep's MLflow parent run is created once (or found again on ``--resume``) and recorded,
   with the run map and everything else a resume needs, in the storage path (:mod:`.state`); a
   driver-side callback logs one child run per trial (:mod:`.tracking`).
4. ``Tuner(train_trial, ...)`` runs the trials with ``FailureConfig(max_failures)`` (a crashed trial
   restarts from its last checkpoint) and ``reuse_actors``; ``--resume`` is ``Tuner.restore`` with
   ``resume_errored`` (finished trials are not run again). Each trial asks for the resources its
   configuration needs (``SweepSpec.resources``).
5. Trials an early-stopping scheduler (ASHA) stopped are evaluated from their last checkpoint in Ray
   tasks, and runs a dead driver left open are settled or closed (:mod:`.finalize`).
"""

from __future__ import annotations

import math

import argparse
import ast
import contextlib
import contextvars
import datetime
import hashlib
import itertools
import json
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from ..errors import UserError
from ..extras import require_training
from ..failpoints import failpoint
from . import provenance
from .preflight import (STORAGE_HINT, check_dataset_paths, check_local_storage, check_name_in_uri, check_script_tree,
                        check_searched_tasks,
                        check_storage_on_nodes, check_trials_fit, check_tracking_reachable, check_workers_fit, default_storage, experiment_dir,
                        in_job_package, plan_session, refuse_runtime_env_secrets, refuse_secrets, runtime_env_of_job,
                        space_values, wait_for_previous_writer)
from .provenance import full_uri
from .state import Session, StateDir, SweepRecord, is_remote
from .finalize import error_line, evaluated_trials, is_stopped_early, trial_id_of



def tune_environment() -> None:
    """Set (where unset) what Tune reads from the environment when it is imported, so it must run
    before the first ``import ray.tune`` and before the Ray whose workers inherit it starts.
    Importing this module changes nothing; planning or running a sweep calls this first.

    - ``TUNE_GLOBAL_CHECKPOINT_S=60``: experiment state synced every 60 s on its own (the default
      "auto" re-syncs far more often once thousands of trials are tracked; ray #11233, #7608); Ray
      2.60 also forces a sync whenever a trial has checkpointed ``num_to_keep`` (2) times since the
      last one, so that the state never names a deleted checkpoint (``_ExperimentCheckpointManager``);
    - ``RAY_TRAIN_V2_ENABLED=1``: Ray Train V2 (a TorchTrainer inside the trial function);
    - ``MLFLOW_DISABLE_TELEMETRY``: no telemetry thread racing ``os.environ`` (mlflow_client.py).
    """
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "60")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_ROOT = "meta-study-sweeps"

if TYPE_CHECKING:
    from .trial import TrialHooks


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep script declares.

    Attributes:
        name: the sweep (Tune experiment name and MLflow experiment default).
        doc: the script's docstring (its runbook).
        space: options -> Tune param space (TrainConfig fields; :func:`grid` or Tune's samplers),
            or, with ``search="optuna"``, options -> a define-by-run function
            ``f(trial) -> constants``. ``options`` is the :class:`SweepOptions` (``.smoke``...).
        base: TrainConfig overrides at full size.
        smoke: TrainConfig overrides for ``--smoke`` on top of :data:`SMOKE` (the settings every
            smoke run shares), e.g. the tiny model and its epochs.
        num_samples / smoke_samples: Tune ``num_samples`` (repeats of a grid, or random draws).
        search: ``grid`` / ``random`` (both from ``space``) or ``optuna``.
        scheduler: None or ``asha`` (early stopping on the US accuracy).
        resources: (trial config, options) -> :class:`TrialResources`: each configuration asks
            for what its model needs (a ViT-Ti a quarter of a GPU, a ViT-B a whole one). None: every
            trial gets ``--cpus-per-trial`` and ``--gpus-per-trial``.
    """

    name: str
    doc: str
    space: Callable[["SweepOptions"], Any]
    base: Mapping[str, Any] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    smoke_samples: int = 1
    search: str = "grid"
    scheduler: str | None = None
    resources: Callable[[Mapping[str, Any], "SweepOptions"], "TrialResources"] | None = None

    def __post_init__(self) -> None:
        # a word _new_tuner does not know (scheduler="ASHA", search="bayes") ran a plain grid: no early
        # stopping, no search, and nothing said
        if self.search not in SEARCHES:
            raise ValueError(f"SweepSpec {self.name}: search={self.search!r}, expected one of {', '.join(SEARCHES)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"SweepSpec {self.name}: scheduler={self.scheduler!r}, expected None or "
                             f"{', '.join(repr(s) for s in SCHEDULERS if s)}")


#: What ``SweepSpec.search`` and ``SweepSpec.scheduler`` take (:func:`_new_tuner` knows these only).
SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = (None, "asha")


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks Ray for (Tune reserves it per trial, from the trial's config).

    Attributes:
        cpu: CPUs (fractions allowed).
        gpu: GPUs: a fraction shares one GPU (0.25: four trials on one), more than 1 for a
            trial that uses several (its own code must use them: ``--workers-per-trial``).
        memory_gb: host memory reserved for the trial (GiB; 0: not reserved). Ray then places
            no more trials on a node than its memory holds.
        custom: custom resources, e.g. ``{"large_gpu": 1}`` for nodes started with
            ``--resources='{"large_gpu": 1}'`` (node-type targeting).
        accelerator_type: a GPU model (``"A100"``, ``"H100"``): only nodes that have it (Ray's
            ``accelerator_type:<T>`` resource, which a GPU node advertises by itself).
    """

    cpu: float = 1.0
    gpu: float = 0.0
    memory_gb: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)
    accelerator_type: str | None = None

    def as_tune(self) -> dict[str, float]:
        """The resource dict ``tune.with_resources`` takes (memory in bytes)."""
        d: dict[str, float] = {"cpu": float(self.cpu), "gpu": float(self.gpu)}
        if self.memory_gb:
            d["memory"] = float(self.memory_gb) * 2**30
        d.update({k: float(v) for k, v in self.custom.items()})
        if self.accelerator_type:
            d[f"accelerator_type:{self.accelerator_type}"] = 0.001   # Ray's convention: a tiny share
        return d


#: What every ``--smoke`` run shares (tiny, CPU, minutes): 16 px images, small procedural tasks,
#: three DS tasks at 1 and 10 shots. A sweep's ``smoke`` adds its tiny model, epochs and lr.
SMOKE: Mapping[str, Any] = dict(
    img_size=16, batch_size=128, eval_every=20, margin_examples=256, shots=[1, 10],
    us_task_kwargs={"n_train": 3000, "n_test": 600}, ds_task_kwargs={"n_train_per_class": 25, "n_test": 200},
    ds_tasks=["synth_combo", "synth_count", "synth_texture"])


#: The patch size of the sweeps' ViTs at their full-size 32 px: an 8x8 grid of 64 patches, as the
#: CIFAR-size ViT literature and ``sweeps/zoo.py`` (4 or 8) use. The presets' ImageNet patch of 16
#: left a 2x2 grid of 4 tokens at 32 px (a ViT that barely sees its image). Per example a ViT-S/4 at
#: 32 px costs about 2 x 22M x 65 ~ 3 GFLOPs forward, a ViT-B/16 at 224 px ~ 17. At another img_size,
#: set the patch with it: ``--set img_size=224 --set "model_kwargs={'patch_size': 16}"``.
PATCH_32PX: Mapping[str, Any] = {"patch_size": 4}


def grid(values: Sequence[Any]) -> dict[str, list[Any]]:
    """``tune.grid_search(values)`` without importing Ray here (it is this dict)."""
    return {"grid_search": list(values)}


#: The largest value each count flag takes (a larger one is refused in one line, exit 2): ten
#: times what a real sweep could use, so a typo's extra zeros (it ran until killed) stops at once.
#: ``--num-samples`` 20,000: 10x the zoo's 2,000 trials, the largest sweep the project plans (~600
#: GPU-hours); with a grid it multiplies the grid's points, and Tune's driver holds every trial and
#: rewrites its experiment state (all of them) at each save. ``--max-concurrent`` 20,000: no sweep
#: runs more trials at once than it has. ``--workers-per-trial`` 1,024: one trial on 1,024 GPUs is a
#: large pre-training job, not one point of a sweep of thousands. ``--max-failures`` 1,000: a trial
#: preempted on spot nodes every hour for 40 days; a trial that fails at each start is retried
#: 1,000 times, not 20,000. ``--gpus-per-trial`` 16 and ``--cpus-per-trial`` 1,024: a trial (a
#: data-parallel trial's worker) is one request that one node must hold, and the largest nodes have
#: 8-16 GPUs and 192-896 CPUs; on a cluster a larger one was only a warning, and its trials waited
#: for a node that no autoscaler can add (``--gpus-per-trial 100`` for 1.00: the sweep hung).
CEILINGS: Mapping[str, int] = {"--num-samples": 20_000, "--max-concurrent": 20_000, "--workers-per-trial": 1_024,
                               "--max-failures": 1_000, "--gpus-per-trial": 16, "--cpus-per-trial": 1_024}


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep: every ``sweeps/*.py`` flag (``--help`` describes each), typed.

    ``tracking_uri`` None means ``$MLFLOW_TRACKING_URI`` when :func:`parse_options` reads the
    flags, else a sqlite file beside the storage path (its parent directory); ``address`` None means ``$RAY_ADDRESS``,
    else a local Ray (``"local"``: always a Ray of our own). ``researcher`` defaults to
    ``$META_STUDY_RESEARCHER`` (the submitting user, set by ``python -m meta_study.tune.submit``),
    else ``$USER``.
    """

    smoke: bool = False
    num_samples: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    storage_path: str | None = None
    name: str | None = None
    resume: bool = False
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    workers_per_trial: int = 1
    torch_trainer: bool = False
    max_concurrent: int | None = None
    max_failures: int | None = None     # None: DEFAULT_MAX_FAILURES (a resume: the sweep's own)
    us_task: str | None = None
    ds_tasks: tuple[str, ...] = ()
    datasets: Mapping[str, str] = field(default_factory=dict)
    layerwise: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    researcher: str = field(default_factory=provenance.researcher)
    address: str | None = None
    quiet: bool = False
    allow_code_change: bool = False
    fail_once: bool = False
    fail_eval_once: bool = False

    def __post_init__(self) -> None:
        for name, spec in self.datasets.items():
            if not str(spec).startswith(("imagefolder:", "parquet:")):
                raise UserError(f"--dataset {name}={spec}: expected NAME=imagefolder:PATH or NAME=parquet:TRAIN[,TEST]")
        if self.workers_per_trial < 1:
            raise UserError(f"--workers-per-trial {self.workers_per_trial}: must be >= 1")
        if self.max_failures is not None and self.max_failures < 0:
            raise UserError(f"--max-failures {self.max_failures}: must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:   # Tune reads 0 as "no limit"
            raise UserError(f"--max-concurrent {self.max_concurrent}: must be >= 1 (leave it out for no limit "
                            "beyond the cluster's CPUs and GPUs)")
        # 0 ran the sweep's default and -1 is Tune's "sample forever": neither is what a user meant
        if self.num_samples is not None and self.num_samples < 1:
            raise UserError(f"--num-samples {self.num_samples}: must be >= 1")
        # a typo's extra zeros (--num-samples 20000 for 2000) ran until killed: refused at a ceiling
        # no real sweep reaches (CEILINGS says why each is where it is)
        for flag, v in (("--num-samples", self.num_samples), ("--max-concurrent", self.max_concurrent),
                        ("--workers-per-trial", self.workers_per_trial), ("--max-failures", self.max_failures)):
            ceiling = CEILINGS[flag]
            if v is not None and v > ceiling:
                more = "; run a larger sweep as several, each its own --name" if flag == "--num-samples" else ""
                raise UserError(f"{flag} {v}: more than {ceiling:,}, which no real sweep needs (extra zeros?){more}")
        for flag, v in (("--cpus-per-trial", self.cpus_per_trial), ("--gpus-per-trial", self.gpus_per_trial)):
            if v is not None and not (math.isfinite(v) and v >= 0):     # -1 reached Ray: a hang, or a traceback
                raise UserError(f"{flag} {v:g}: must be a number >= 0")
            if v is not None and v > CEILINGS[flag]:
                raise UserError(f"{flag} {v:g}: more than {CEILINGS[flag]:,}, which no node has (one node holds a "
                                f"trial's, or a data-parallel trial's worker's; extra zeros?)")
        if self.cpus_per_trial == 0 and not self.gpus_per_trial:
            raise UserError("--cpus-per-trial 0: a trial needs a CPU or a GPU")
        if self.name is not None:
            check_sweep_name(self.name)
        # an empty value (an unset shell variable) ran on the default without a word
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            # `--tracking-uri "$MLFLOW_URI"` with the variable unset logged to a sqlite file on this
            # machine without a word, not to the lab's server
            raise UserError("--tracking-uri '': empty (leave it out for $MLFLOW_TRACKING_URI, else a sqlite file "
                            "beside --storage-path)")
        if self.us_task is not None and not self.us_task.strip():
            # `--us-task "$TASK"` with the variable unset pre-trained every trial on the sweep's own task
            raise UserError("--us-task '': empty (leave it out for the sweep's own upstream task)")
        if self.storage_path is not None and not self.storage_path.strip():
            raise UserError("--storage-path '': empty (leave it out for the default, ./meta-study-sweeps/ray)")
        if not self.researcher.strip():
            raise UserError("--researcher '': empty (leave it out for $META_STUDY_RESEARCHER, else $USER)")
        if self.experiment is not None and (self.experiment.strip() in ("", ".", "..")
                                            or not self.experiment.isprintable()):
            # "" ran under the sweep's default without a word; ".." put a sqlite store's artifacts
            # (PARENT/mlartifacts/<experiment>) in PARENT itself
            raise UserError(f"--experiment {self.experiment!r}: not an experiment name (give a name such as "
                            "head_wd-2026-12, or leave --experiment out for the sweep's own)")


def check_sweep_name(name: str) -> None:
    """A sweep name is one directory under the storage path: ``..`` pointed the sweep (Tune's
    state, the sweep record, the default sqlite file) at the storage path's parent, ``a/b`` or
    ``/abs`` elsewhere, ``.`` at the storage path itself. UserError (one line) for such a name."""
    bad = ("is no directory name" if name.strip() in ("", ".", "..")
           else next((f"holds {c!r}" for c in ("/", "\\", "?") if c in name), None)
           or (None if name.isprintable() else "holds a control character")
           # a directory name's limit (NAME_MAX, and Ray's local staging directory is named after it
           # too): found only when the sweep record was written, its MLflow parent run left RUNNING
           or (f"is {len(os.fsencode(name))} bytes long, more than a directory name's 255"
               if len(os.fsencode(name)) > 255 else None))
    if bad:
        raise UserError(f"--name {name!r}: {bad}; a sweep's name is one directory under --storage-path")


#: The dataclass's defaults, which the command line shows and uses (one place for each).
_DEFAULTS = SweepOptions()


def build_parser(spec: SweepSpec) -> argparse.ArgumentParser:
    """The arguments every sweep script takes."""
    p = argparse.ArgumentParser(prog=f"sweeps/{spec.name}.py", description=spec.doc.strip().splitlines()[0],
                                epilog=spec.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--smoke", action="store_true", help="tiny models, CPU, minutes")
    a("--num-samples", type=int, default=None, help="Tune num_samples (default: the sweep's)")
    a("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None,   # set but empty: unset
      help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///PARENT/mlflow.db, PARENT being "
           "--storage-path's parent directory, with the artifacts in PARENT/mlartifacts/EXPERIMENT)")
    a("--experiment", default=None, help="MLflow experiment (default: the sweep's name)")
    a("--storage-path", default=None,
      help=f"Tune storage and the sweep's state: s3://..., gs://... or a path every node mounts "
           f"(default on one machine: ./{DEFAULT_ROOT}/ray)")
    a("--name", default=None, help="Tune experiment name (default: the sweep's name, '-smoke' with --smoke)")
    a("--resume", action="store_true", help="continue a killed sweep (Tuner.restore); finished trials stay done")
    a("--allow-code-change", action="store_true",
      help="with --resume: go on although the code changed since the sweep last ran (recorded)")
    a("--gpus-per-trial", type=float, default=None,
      help="GPUs per trial (fractions allowed); with --workers-per-trial > 1 or --torch-trainer, any value "
           "above 0 gives each Train worker one GPU")
    a("--cpus-per-trial", type=float, default=None,
      help="CPUs per trial (per Train worker with --workers-per-trial > 1); default 1")
    a("--workers-per-trial", type=int, default=_DEFAULTS.workers_per_trial,
      help="> 1: data-parallel Ray Train TorchTrainer per trial")
    a("--torch-trainer", action="store_true", help="a Ray Train TorchTrainer per trial even with one worker")
    a("--max-concurrent", type=int, default=None,
      help="trials running at once (default: as many as the cluster's CPUs and GPUs fit; data-parallel "
           "trials: as many as can place their workers)")
    a("--max-failures", type=int, default=None,
      help=f"restarts of a crashed trial from its last checkpoint (default {DEFAULT_MAX_FAILURES})")
    a("--us-task", action="append", default=None, help="upstream task (one; default: the procedural synth_us)")
    a("--ds-task", action="append", default=None, help="downstream task (repeatable; default: the procedural suite)")
    a("--dataset", action="append", default=[], metavar="NAME=imagefolder:PATH|parquet:TRAIN[,TEST]",
      help="register a dataset on disk as a task (repeatable)")
    a("--layerwise", action="store_true", help="also probe every block (Fig. 6)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override any TrainConfig field")
    a("--researcher", default=None, help="tag of every run (default: $META_STUDY_RESEARCHER, else $USER)")
    a("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    a("--quiet", action="store_true",
      help="no Tune progress tables, trial configs, tracebacks or TensorBoard logs (the demo); an errored trial is "
           "one line at the end (its traceback: error.txt in its trial directory); MLflow still gets every run")
    a("--fail-once", action="store_true", help=argparse.SUPPRESS)  # test hook: each trial crashes once
    a("--fail-eval-once", action="store_true", help=argparse.SUPPRESS)  # test hook: each evaluation fails once
    return p


def _pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UserError(f"{flag} {it!r}: expected KEY=VALUE")
        out.append((k, v))
    return out


def _datasets(items: Sequence[str]) -> dict[str, str]:
    """``--dataset NAME=SPEC`` flags as a dict; a name given twice with two datasets is refused
    (the last one won without a word: the sweep trained on other images than the first flag said)."""
    out: dict[str, str] = {}
    for name, spec in _pairs(items, "--dataset"):
        if out.get(name, spec) != spec:
            raise UserError(f"--dataset {name} given twice, as {out[name]} and as {spec}: give each name one dataset")
        out[name] = spec
    return out


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as a dict; a key given twice with two values is refused (the last
    one won without a word: ``--set lr=0.1 --set lr=0.2`` ran at 0.2); the same value twice is one."""
    out: dict[str, Any] = {}
    for key, text in _pairs(items, "--set"):
        value = _literal(text)
        if key in out and out[key] != value:
            raise UserError(f"--set {key} given twice, as {out[key]!r} and as {value!r}: give each key one value")
        out[key] = value
    return out


def _literal(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def parse_options(spec: SweepSpec, argv: Sequence[str] | None = None) -> SweepOptions:
    """The :class:`SweepOptions` of a sweep script's command line (``--help`` exits here).

    Raises:
        UserError: a malformed ``--set`` or ``--dataset``, or an invalid value.
    """
    a = build_parser(spec).parse_args(argv)
    if a.us_task and len(set(a.us_task)) > 1:
        # --ds-task repeats; a second --us-task silently replaced the first (a sweep has one)
        raise UserError(f"--us-task given {len(a.us_task)} times ({', '.join(a.us_task)}): a sweep pre-trains on "
                        "one upstream task; run one sweep per upstream task")
    a.us_task = a.us_task[0] if a.us_task else None
    return SweepOptions(
        smoke=a.smoke, num_samples=a.num_samples, tracking_uri=a.tracking_uri, experiment=a.experiment,
        storage_path=a.storage_path, name=a.name, resume=a.resume, gpus_per_trial=a.gpus_per_trial,
        cpus_per_trial=a.cpus_per_trial, workers_per_trial=a.workers_per_trial, torch_trainer=a.torch_trainer,
        max_concurrent=a.max_concurrent,
        max_failures=a.max_failures, us_task=a.us_task, ds_tasks=tuple(a.ds_task or ()),
        datasets=_datasets(a.dataset), layerwise=a.layerwise,
        overrides=_overrides(a.set), address=a.address, quiet=a.quiet,
        allow_code_change=a.allow_code_change, fail_once=a.fail_once, fail_eval_once=a.fail_eval_once,
        **({"researcher": a.researcher} if a.researcher is not None else {}))


def fixed_config(spec: SweepSpec, options: SweepOptions) -> dict[str, Any]:
    """The non-searched TrainConfig fields of every trial."""
    cfg: dict[str, Any] = {**spec.base, **({**SMOKE, **spec.smoke} if options.smoke else {})}
    if options.us_task:
        cfg["us_task"] = options.us_task
    if options.ds_tasks:
        cfg["ds_tasks"] = list(options.ds_tasks)
    if options.layerwise:
        cfg["layerwise"] = True
    cfg.update(_whole_ints(options.overrides))
    return cfg


def _whole_ints(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``--set batch_size=64.0`` as 64, as TrainConfig takes it: the trial's params were logged at
    its start as "64.0" and its resolved config said "64", which MLflow refuses as a changed param."""
    def whole(v: Any) -> bool:
        return isinstance(v, float) and v.is_integer()

    if not any(whole(v) or (isinstance(v, (list, tuple)) and any(map(whole, v))) for v in overrides.values()):
        return dict(overrides)       # nothing to convert: TrainConfig (torch) not imported
    from ..train.loop import TrainConfig

    out = dict(overrides)
    for k, v in overrides.items():
        if k in TrainConfig.INT_FIELDS and whole(v):
            out[k] = int(v)
        elif k == "shots" and isinstance(v, (list, tuple)):
            out[k] = type(v)(int(x) if whole(x) else x for x in v)
    return out


#: Restarts of a crashed trial from its last checkpoint when ``--max-failures`` is left out.
DEFAULT_MAX_FAILURES = 2


def _max_failures(options: SweepOptions) -> int:
    return DEFAULT_MAX_FAILURES if options.max_failures is None else options.max_failures


def sweep_settings(spec: SweepSpec, options: SweepOptions, *, given_only: bool = False) -> dict[str, Any]:
    """What a resume cannot change (SweepRecord.settings): every trial's fixed config, the
    number of samples (the sweep's default when ``--num-samples`` is not given), and
    ``--max-concurrent`` and ``--max-failures``: ``Tuner.restore`` goes on with the first session's
    TuneConfig and FailureConfig (each trial keeps its max_failures), and Tune offers no way to
    change them on a restore (:data:`~.preflight.SESSION_FLAGS`)."""
    if given_only:   # a resume: a flag left out goes on with the sweep's own value (Tune keeps it anyway)
        flags = {k: v for k, v in (("max_concurrent", options.max_concurrent),
                                   ("max_failures", options.max_failures)) if v is not None}
    else:            # the record of a new sweep: what it runs with
        flags = {"max_concurrent": options.max_concurrent, "max_failures": _max_failures(options)}
    # the datasets behind task names: a resume with --dataset pets=imagefolder:/data/pets-v2 trained
    # the restored trials on other images under the same name
    space = space_fingerprint(spec.space(options))
    return {**fixed_config(spec, options), "num_samples": _samples(spec, options), **flags,
            "datasets": dict(options.datasets), **({SPACE_KEY: space} if space else {}),
            **trial_mode(options)}


#: The sweep record's setting holding :func:`space_fingerprint` (records before 2026-12-05 lack it).
SPACE_KEY = "search_space"
#: The sweep record's settings holding :func:`trial_mode` (records before 2026-12-06 lack them):
#: compared by :func:`check_trial_mode`, not by the plan's comparison of the other settings.
MODE_KEYS = ("workers_per_trial", "torch_trainer")


def trial_mode(options: SweepOptions) -> dict[str, Any]:
    """How each trial trains: its data-parallel workers, and whether it runs a Ray Train
    TorchTrainer (``--torch-trainer``, or more than one worker)."""
    return {"workers_per_trial": options.workers_per_trial,
            "torch_trainer": bool(options.torch_trainer or options.workers_per_trial > 1)}


def check_trial_mode(record: SweepRecord, options: SweepOptions) -> None:
    """A resume trains its trials as the sweep started them: with another ``--workers-per-trial``
    or ``--torch-trainer``, an unfinished trial restarted from scratch (a data-parallel trial's
    checkpoints are Ray Train's, under its trial directory; a single-process trial's are Tune's:
    neither mode finds the other's), and its finished trials had trained with other workers.
    Not compared for a record that lacks the mode (written before it was kept).

    Raises:
        UserError: one line naming both modes and what to pass.
    """
    was = {k: record.settings[k] for k in MODE_KEYS if k in record.settings}
    now = trial_mode(options)
    if len(was) < len(MODE_KEYS) or (int(was["workers_per_trial"]), bool(was["torch_trainer"])) == (
            now["workers_per_trial"], now["torch_trainer"]):
        return

    def said(workers: int, torch_trainer: bool) -> str:
        return (f"--workers-per-trial {workers}" if workers > 1 else "--torch-trainer (one worker)" if torch_trainer
                else "neither --workers-per-trial nor --torch-trainer (one process per trial)")

    workers, torch_trainer = int(was["workers_per_trial"]), bool(was["torch_trainer"])
    why = ("its unfinished trials would restart from scratch (a data-parallel trial's checkpoints are Ray Train's, a "
           "single-process trial's Tune's: neither finds the other's)" if torch_trainer != now["torch_trainer"]
           else f"its trials train with {workers} data-parallel workers each")
    raise UserError(f"--resume: sweep {record.sweep} was started with {said(workers, torch_trainer)}, this command "
                    f"gives {said(now['workers_per_trial'], now['torch_trainer'])}: {why}; pass the same "
                    "--workers-per-trial and --torch-trainer, or start a new sweep with --name")


def space_fingerprint(space: Any) -> str | None:
    """A digest of a search space that is a plain mapping (grid values, Tune's samplers with their
    bounds, a ``sample_from`` function by its name), or None for a define-by-run space (its code is
    the script's, in the code version). ``Tuner.restore`` keeps the space the sweep started with:
    a sweep defined in a notebook (no script file, so no code version of the space) resumed with
    another space went on with the old one without a word."""
    if not isinstance(space, Mapping):
        return None

    def canon(x: Any, depth: int = 0) -> Any:
        if depth > 32:                                    # an object graph with a cycle
            return type(x).__qualname__
        if isinstance(x, Mapping):
            return {str(k): canon(v, depth + 1) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [canon(v, depth + 1) for v in x]
        if x is None or isinstance(x, (str, bool, int, float)):
            return x
        if callable(x) and hasattr(x, "__qualname__"):     # a function: its name (its code is not comparable)
            return f"{getattr(x, '__module__', '')}.{x.__qualname__}"
        if hasattr(x, "__dict__"):                        # a Tune Domain and its sampler
            return {"__type__": type(x).__qualname__, **{k: canon(v, depth + 1) for k, v in vars(x).items()}}
        text = repr(x)
        return type(x).__qualname__ if " at 0x" in text else text      # an address differs per process

    text = json.dumps(canon(space), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _samples(spec: SweepSpec, options: SweepOptions) -> int:
    return options.num_samples or (spec.smoke_samples if options.smoke else spec.num_samples)


def check_fixed_config(spec: SweepSpec, options: SweepOptions) -> None:
    """The fixed part of every trial's config, checked before Ray starts: unknown keys, a value of
    the wrong type (``--set lr=abc``), an unknown model, US task or DS task. Found inside the
    trials, each cost a minute of Ray start-up, retried trials, hundreds of lines of tracebacks
    and a sweep name used up. A ``--set`` of a key the search space sets (:func:`searched_keys`),
    or a ``--us-task``, ``--ds-task`` or ``--layerwise`` of one, is refused too: every trial
    overwrote it, without a word. One :class:`UserError` line naming the value."""
    import dataclasses
    import numbers

    from ..train.data import list_tasks
    from ..train.loop import TrainConfig
    from ..train.models import distilled_heads, list_presets

    cfg = fixed_config(spec, options)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise UserError(f"--set {unknown[0]}: no such trial setting (TrainConfig has {', '.join(fields)})")

    def number(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    for key, v in cfg.items():
        ann, default = str(fields[key].type), fields[key].default
        if v is None and "None" in ann:
            continue
        ok = (number(v) if ann.split(" |")[0] in ("float", "int") else
              isinstance(v, bool) if ann.startswith("bool") else
              isinstance(v, str) if ann.startswith("str") else
              isinstance(v, (list, tuple)) if ann.startswith("tuple") else
              isinstance(v, Mapping) if ann.startswith("Mapping") else True)
        if not ok:
            want = "a number" if ann.split(" |")[0] in ("float", "int") else ann
            raise UserError(f"--set {key}={v!r}: expected {want}" + (f" (default {default!r})"
                                                                      if default is not dataclasses.MISSING else ""))
    try:   # the ranges (epochs >= 0, data_fraction in (0, 1], ...), the searched fields at their defaults
        TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    except (ValueError, TypeError) as e:
        raise UserError(f"--set {e}") from None
    ds = [str(t) for t in cfg.get("ds_tasks") or []]
    twice = sorted({t for t in ds if ds.count(t) > 1})
    if twice:    # each trial probed it twice (minutes of GPU time each) for one set of metrics
        flag = "--ds-task" if options.ds_tasks else "--set ds_tasks:"
        raise UserError(f"{flag} {twice[0]} given {ds.count(twice[0])} times: give each downstream task once")
    tasks = set(list_tasks())
    # a None in ds_tasks (--set "ds_tasks=['synth_shape', None]") passed here as a us_task left
    # out does, and every trial failed at its first probe (KeyError: unknown task None); a list in
    # it (--set "ds_tasks=[['synth_shape']]") was a TypeError traceback here (unhashable)
    for key, names in (("us_task", [cfg["us_task"]] if "us_task" in cfg else []),
                       ("ds_tasks", list(cfg.get("ds_tasks") or []))):
        for name in names:
            if not isinstance(name, str) or (name not in tasks and name not in options.datasets):
                raise UserError(f"{key} {name!r}: no such task (tasks: {', '.join(sorted(tasks))}; on-disk "
                                "datasets come with --dataset NAME=...)")
    if not options.datasets:
        # a key no task factory takes (--set "us_task_kwargs={'n_trian': 8000}") failed in every
        # trial, each retried; an on-disk dataset's loader (not registered here) may take others
        from ..train.data import task_kwargs

        for key, names in (("us_task_kwargs", [cfg.get("us_task", TrainConfig.us_task)]),
                           ("ds_task_kwargs", list(cfg.get("ds_tasks") or TrainConfig.ds_tasks))):
            for name in (n for n in names if isinstance(cfg.get(key), Mapping) and n in tasks):
                try:
                    task_kwargs(name, cfg[key], key)
                except ValueError as e:
                    raise UserError(f"--set {e}") from None
    check_metric_names(cfg, options)
    check_searched_tasks(spec.space(options), cfg, options)
    model = cfg.get("model_name")
    if isinstance(model, str) and model not in list_presets():
        import timm

        if not timm.is_model(model):
            raise UserError(f"model_name {model!r}: neither a preset ({', '.join(list_presets())}) nor a timm model")
        if distilled_heads(model):   # every trial failed at its first step
            raise UserError(f"model_name {model!r}: a timm model with two classifier heads (a distillation head) is "
                            "not supported; take one with one head (deit_tiny_patch16_224, not *_distilled_*)")
    searched = searched_keys(spec, options)
    if isinstance(model, str) and not searched & {"model_name", "model_kwargs", "img_size"}:
        check_model_builds(model, cfg)
    batch = cfg.get("batch_size", TrainConfig.batch_size)
    if options.workers_per_trial > 1 and "batch_size" not in searched and int(batch) % options.workers_per_trial:
        # every trial's ranks would refuse it at their first step (train.loop.check_batch_splits)
        raise UserError(f"--workers-per-trial {options.workers_per_trial}: batch_size={batch} is not a multiple of it; "
                        "each worker trains on an equal share of every batch (give --set batch_size=N)")
    for flag, key, given in (("--us-task", "us_task", options.us_task), ("--ds-task", "ds_tasks", options.ds_tasks),
                             ("--layerwise", "layerwise", options.layerwise)):
        if given and key in searched:   # as a --set of it: every trial ran on the drawn value instead
            raise UserError(f"{flag}: sweep {spec.name} searches {key} (its search space sets it for every trial, so "
                            f"{flag} would be ignored); drop it, or run another sweep whose space leaves it fixed")
    for key in options.overrides:
        if key in searched:
            # the search space sets it per trial: the value was ignored without a word (and the
            # parent run recorded it as if it held)
            raise UserError(f"--set {key}: sweep {spec.name} searches {key} (its search space sets it for every "
                            f"trial, so --set {key}={options.overrides[key]!r} would be ignored); drop it, or run "
                            "another sweep whose space leaves it fixed")
    check_ranked_keys(spec, cfg, searched)


def check_ranked_keys(spec: SweepSpec, cfg: Mapping[str, Any], searched: set[str]) -> None:
    """What ASHA and Optuna rank trials by holds for every trial (one :class:`UserError` line
    before Ray starts). Their metric is the fixed ``us_task``'s US accuracy (:func:`_metric`): a
    searched ``us_task`` gave trials of other tasks, which never report it, and Tune's strict
    metric check failed the sweep at their first report (accuracies of different tasks do not
    rank one another either). ASHA's rungs are steps at the fixed ``eval_every`` x 3^k
    (:func:`asha_scheduler`): with a searched ``eval_every`` they fell back to every step, and a
    trial's report of its last step met a rung, so ASHA stopped trials with only their probes left."""
    ranked = [what for what, on in (("ASHA", spec.scheduler == "asha"), ("Optuna", spec.search == "optuna")) if on]
    if ranked and "us_task" in searched:
        raise UserError(f"sweep {spec.name} searches us_task, and {' and '.join(ranked)} rank its trials by one US "
                        f"task's accuracy ({_metric(cfg)}), which trials of another US task never report: set "
                        "us_task in the sweep's base (not its search space), one sweep per US task")
    if spec.scheduler == "asha" and "eval_every" in searched:
        raise UserError(f"sweep {spec.name} searches eval_every, and ASHA stops trials at steps that are multiples "
                        "of one eval_every (a trial of another cadence was judged at the report of its last step, "
                        "trained to the end): set eval_every in the sweep's base, not its search space")


def check_model_builds(model: str, cfg: Mapping[str, Any]) -> None:
    """The fixed model, built once on PyTorch's meta device (no memory, no weights; ~0.1-2 s) with
    the trials' ``model_kwargs`` and ``img_size``: ``--set model_name=resnet18`` on a sweep whose
    base passes a ViT's ``patch_size``, or ``--set img_size=30`` for patches of 4, failed in every
    trial after Ray started (each retried, a traceback each). UserError (one line) naming them."""
    import torch

    from ..train.loop import TrainConfig
    from ..train.models import create_model

    kwargs = dict(cfg.get("model_kwargs") or {})
    img = cfg.get("img_size", TrainConfig.img_size)
    try:
        with torch.device("meta"):
            create_model(model, num_classes=10, img_size=int(img), **kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        why = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()
        why = why.splitlines()[0] if why else f"{type(e).__name__} building model {model!r}"
        raise UserError(f"{why}; every trial would fail on it (change it with --set model_name=..., model_kwargs=... "
                        "or img_size=...)") from None


#: The layer number :func:`check_metric_names` writes into a layer-wise key: more digits than any
#: model's block count (the model is not built before Ray starts).
_LAYER_BOUND = 999


def check_metric_names(cfg: Mapping[str, Any], options: SweepOptions) -> None:
    """Every metric key a trial of ``cfg`` logs under a task's name (``us/{us_task}/top1``,
    ``ds/{task}/{k}shot[/layer{L}]/top1``, ``ds/{task}/finetune/top1``, the l2 sweep's
    ``diag/l2sweep/...``) is one MLflow takes, for the tasks of ``cfg`` and every ``--dataset``
    name. MLflow refused a key such as ``ds/pets+aug/1shot/top1`` (a ``+``; or over 250
    characters): the writer left it out of every run, the trial's DS accuracies lost after hours
    of training. UserError (one line) naming the task, the key and why."""
    import itertools

    from ..schema import ds_metric_key, finetune_metric_key, us_metric_key
    from ..train.loop import TrainConfig
    from ..schema import l2sweep_metric_key
    from ._shards import refused_name

    def get(key: str) -> Any:
        return cfg.get(key, getattr(TrainConfig, key, None))

    shots = [int(k) for k in (get("shots") or ())] or [1]
    layers: list[int | None] = [None, _LAYER_BOUND] if get("layerwise") else [None]
    l2s = [float(get("l2"))] + [float(v) for v in (get("l2_sweep") or ())]
    us = cfg.get("us_task")
    named = [(us, [us_metric_key(str(us))])] if us is not None else []
    for task in dict.fromkeys([*map(str, cfg.get("ds_tasks") or TrainConfig.ds_tasks), *options.datasets]):
        keys = [ds_metric_key(task, k, layer) for k, layer in itertools.product(shots, layers)]
        if get("finetune"):
            keys.append(finetune_metric_key(task))
        if len(set(l2s)) > 1:
            keys += [l2sweep_metric_key(task, k, layer, v) for k, layer in itertools.product(shots, layers) for v in l2s]
        named.append((task, keys))
    for task, keys in named:
        if "/" in str(task):
            # MLflow takes ds/a/b/1shot/top1, but the schema's keys (and ingest's default mapping)
            # hold a task name as one segment: the task's accuracies were never ingested
            flag = "--dataset" if task in options.datasets else "task"
            raise UserError(f"{flag} {task!r}: holds '/', so its metric key {keys[0]!r} is not the schema's "
                            "(one segment per task name: us/TASK/top1, ds/TASK/Kshot/top1) and `meta-study ingest` "
                            "would not read its results; rename it (letters, digits and _ - . only)")
        for key in keys:
            why = refused_name(key)
            if why is not None:
                flag = "--dataset" if task in options.datasets else "task"
                raise UserError(f"{flag} {task!r}: MLflow refuses its metric key {key[:300]!r} ({why}), so its "
                                "results would not be logged; rename it (letters, digits and _ - . only, short enough "
                                "for a 250-character key)")


def searched_keys(spec: SweepSpec, options: SweepOptions, *, draws: int = 32) -> set[str]:
    """The trial settings the sweep's search space sets (top-level config keys). A define-by-run
    (Optuna) space is drawn ``draws`` times (:func:`drawn_configs`): the keys of what it returns
    and the names it suggests (those starting with ``_`` are Optuna's own, left out of the
    config). A conditional key on a branch no draw took is not known; a space that fails to draw: none."""
    space = spec.space(options)
    if spec.search != "optuna":
        return set(space) if isinstance(space, Mapping) else set()
    keys = {k for drawn in drawn_configs(space, draws) for k in drawn}
    return {k for k in keys if not str(k).startswith("_")}


def drawn_configs(space: Callable[[Any], Mapping[str, Any] | None], draws: int) -> list[dict[str, Any]]:
    """``draws`` configs of a define-by-run (Optuna) space, drawn in a throw-away in-memory study
    (random sampler, seeded: the same every time; no storage, no Ray; ~1 ms a draw): the names
    it suggests and what it returns, as Tune's OptunaSearch gives them to a trial. Empty for a
    space that fails to draw (the Tuner's to report) or without Optuna installed."""
    try:
        import optuna
    except ImportError:
        return []
    was = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # no "A new study created in memory" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        out = []
        for _ in range(draws):
            trial = study.ask()
            ret = space(trial)
            out.append({**trial.params, **(ret or {})})
        return out
    except Exception:  # noqa: BLE001 - a space that cannot be drawn here is the Tuner's to report
        return []
    finally:
        optuna.logging.set_verbosity(was)


def parent_params(spec: SweepSpec, options: SweepOptions, fixed: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The sweep's parent run's params: the settings every trial shares, and under ``searched``
    the names of those the search sets per trial. A fixed value the space overrides (the smoke
    lr, the base epochs) is not one every trial shares: the parent once recorded it beside trials
    that each drew their own."""
    searched = searched_keys(spec, options)
    return {"sweep": name, "smoke": options.smoke,
            **{k: v for k, v in fixed.items() if k not in searched},
            **({"searched": ",".join(sorted(searched))} if searched else {})}


def trial_hooks(options: SweepOptions) -> "TrialHooks":
    """What the machinery tells every trial besides its config (:class:`~.trial.TrialHooks`)."""
    from .trial import TrialHooks

    return TrialHooks(datasets=dict(options.datasets), workers=options.workers_per_trial,
                      torch_trainer=options.torch_trainer or options.workers_per_trial > 1,
                      use_gpu=bool(options.gpus_per_trial),
                      worker_cpus=options.cpus_per_trial if options.cpus_per_trial is not None else 1.0,
                      fail_once=options.fail_once, fail_eval_once=options.fail_eval_once, sweep_storage=True)


def default_resources(config: Mapping[str, Any], options: SweepOptions) -> TrialResources:
    """``--cpus-per-trial`` (default 1) and ``--gpus-per-trial`` (default 0) for every trial."""
    return TrialResources(cpu=options.cpus_per_trial if options.cpus_per_trial is not None else 1.0,
                          gpu=options.gpus_per_trial or 0.0)


def _one_trial(spec: SweepSpec, o: SweepOptions, hooks: "TrialHooks", fixed: Mapping[str, Any]) -> dict[str, float] | None:
    """What one trial (for a data-parallel one: one of its workers) asks a node for, or None where
    it depends on what the search draws (a spec that sizes each trial by its model:
    :func:`trial_requests`)."""
    if hooks.torch_trainer:
        return {"cpu": hooks.worker_cpus, "gpu": 1.0 if hooks.use_gpu else 0.0}
    if spec.resources is None:
        return PerTrialResources(None, o)(fixed)
    return None


#: At most this many combinations of a grid's and a choice's values are sized (:func:`trial_requests`);
#: beyond, each searched key's values are varied one at a time.
_MAX_COMBINATIONS = 4096
#: Draws of a define-by-run space sized (~0.2 s): zoo.py's rarest model (1 draw in 9) is missed
#: with odds of 1e-13.
_SIZE_DRAWS = 256


def trial_requests(spec: SweepSpec, options: SweepOptions, fixed: Mapping[str, Any], *,
                   draws: int = _SIZE_DRAWS) -> list[tuple[str, dict[str, float]]]:
    """The distinct requests (Tune resource dicts) of a spec that sizes each trial by its model
    (``spec.resources``), each with a label naming the searched values that make it
    (``model_name='vit_b'``; empty where none does on its own), from the configs its space can
    give: every combination of its grids' and choices' values (beyond :data:`_MAX_COMBINATIONS`,
    each key's values one at a time), or ``draws`` seeded draws of a define-by-run space
    (:func:`drawn_configs`). A searched value that cannot be listed (``tune.uniform``) is left
    out of the config; a config the spec cannot size here is left to its trial. Empty for a spec
    without ``resources``."""
    if spec.resources is None:
        return []
    space = spec.space(options)
    optuna = spec.search == "optuna"
    configs = [{**fixed, **d} for d in drawn_configs(space, draws)] if optuna else _listed_configs(space, fixed)
    size = PerTrialResources(spec.resources, options)
    sized: list[tuple[dict[str, Any], dict[str, float]]] = []
    for config in configs:
        try:
            sized.append((config, size(config)))
        except Exception:  # noqa: BLE001 - the trial of that config reports it
            continue
    keys = _label_keys(sized, optuna=optuna)
    out: dict[tuple[Any, ...], tuple[str, dict[str, float]]] = {}
    for config, request in sized:
        out.setdefault(tuple(sorted(request.items())),
                       (", ".join(f"{k}={config.get(k)!r}" for k in keys), request))
    if len(out) == 1 and "model_name" in fixed:   # a fixed model: no searched value makes the request
        (_, request), = out.values()
        return [(f"model_name={fixed['model_name']!r}", request)]
    return list(out.values())


def _listed_configs(space: Any, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configs a grid / random space can give, as far as its values can be listed."""
    if not isinstance(space, Mapping):
        return [dict(fixed)]
    listed = {k: vs for k, v in space.items() if (vs := space_values(v))}
    if math.prod(len(vs) for vs in listed.values()) <= _MAX_COMBINATIONS:
        return [{**fixed, **dict(zip(listed, combo))} for combo in itertools.product(*listed.values())]
    first = {**fixed, **{k: vs[0] for k, vs in listed.items()}}
    return [first] + [{**first, k: v} for k, vs in listed.items() for v in vs[1:]]


def _label_keys(sized: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]], *, optuna: bool) -> list[str]:
    """The searched keys whose value alone says what a trial asks for (``model_name``): keys every
    config has, with two or more values each of which makes one request (a drawn float, each
    draw's own, and a key of one branch, zoo.py's SGD ``momentum``, are none)."""
    values: dict[str, dict[str, set[tuple[Any, ...]]]] = {}
    for config, request in sized:
        for k, v in config.items():
            if not str(k).startswith("_"):
                values.setdefault(k, {}).setdefault(repr(v), set()).add(tuple(sorted(request.items())))
    varied = [k for k, by in sorted(values.items())
              if 2 <= len(by) and all(k in c for c, _ in sized)
              and (not optuna or len(by) <= len(sized) // 4)]
    determining = [k for k in varied if all(len(requests) == 1 for requests in values[k].values())]
    return determining or (["model_name"] if "model_name" in varied else [] if optuna else varied)


class PerTrialResources:
    """A trial config -> Tune resource dict, from a spec's ``resources`` (a class, not a closure:
    Tune pickles it with the trainable)."""

    def __init__(self, fn: Callable[[Mapping[str, Any], SweepOptions], TrialResources] | None,
                 options: SweepOptions) -> None:
        self.fn, self.options = fn or default_resources, options

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        o = self.options
        if o.torch_trainer or o.workers_per_trial > 1:
            # the trial function only drives its TorchTrainer, whose workers ask for their own resources
            # (--cpus-per-trial CPUs and one GPU each): 0.1 CPU is enough to wait on them
            return {"cpu": DRIVER_CPUS, "gpu": 0.0}
        return self.fn(config, o).as_tune()


def _tracking_uri(options: SweepOptions, storage: str) -> str:
    if options.tracking_uri:
        return options.tracking_uri
    if is_remote(storage):
        raise UserError(f"--storage-path {storage}: give --tracking-uri (or MLFLOW_TRACKING_URI) too: the default, a "
                        "sqlite file, would live on this machine's disk only, and a resume elsewhere would not find "
                        "the sweep's runs")
    return f"sqlite:///{(Path(storage).parent / 'mlflow.db').resolve()}"   # its directory: made by run_sweep


def refuse_credentials(uri: str) -> None:
    """A UserError for a tracking URI with credentials in it: they would reach the writer child's
    argv (visible in ``ps``), the sweep record and the sweep summary."""
    refuse_secrets(tracking_uri=uri, storage_path=None)


@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    ``eval_failed``: early-stopped trials whose end-of-sweep evaluation failed (the reason is on
    each run; ``--resume`` tries again); ``unevaluable``: early-stopped trials stopped before their
    first checkpoint, which no session can evaluate (tagged like a failed evaluation, with
    :data:`~.finalize.UNEVALUABLE_REASON`; they fail neither the parent run nor the exit status).
    ``trials`` = ``finished`` + ``errored`` + ``eval_failed`` + ``unevaluable`` at a sweep's end,
    ``early_stopped`` counting the evaluated ones, the failed and the unevaluable; ``settled`` / ``orphaned``: runs a dead driver had left open, settled from Tune's
    record or closed (:mod:`.finalize`); ``unreconciled``: why that settling could not run (its
    MLflow search failed), else None; ``interrupted``: runs left unfinished by Tune's stop
    signal (``stop_signal``: Ctrl-C), ended KILLED for ``--resume`` to continue (an early-stopped
    trial still waiting for its evaluation among them, and in ``early_stopped`` too).
    """

    name: str
    experiment_dir: str
    tracking_uri: str
    parent_run_id: str
    trials: int
    finished: int
    errored: int
    early_stopped: int
    seconds: float
    eval_failed: int = 0
    unevaluable: int = 0
    settled: int = 0
    orphaned: int = 0
    resumed: bool = False
    experiment_id: str = ""
    interrupted: int = 0
    stop_signal: str | None = None
    experiment: str = ""
    errors: tuple[tuple[str, str, str], ...] = ()   # errored trials: (trial id, last line of the error, error.txt)
    # MLflow lacks operations of this session (a flush gave up: spooled for --resume, or lost; said
    # on stderr): the parent run ends FAILED and the sweep exits 1 (it exited 0, parent FINISHED)
    unsent: bool = False
    # operations MLflow refused for good and the writer dropped (a trial's runs/create refused, its
    # run deleted; each said on stderr): never sent, never spooled, so no --resume sends them. The
    # parent run ends FAILED and the sweep exits 1 (it exited 0, parent FINISHED, every trial's run missing)
    dropped: int = 0
    # the end-of-sweep settling of runs left open (finalize.reconcile) could not run (MLflow failed
    # its search, or the storage the run map; the error's line): MLflow may still show runs RUNNING that an earlier driver left,
    # or lack the run of a trial Tune recorded. The parent run ends FAILED and the sweep exits 1 (it
    # ended with MLflow's error alone, no summary); a --resume once MLflow answers settles them
    unreconciled: str | None = None
    # that settling ran at this session's end (MLflow's runs checked against Tune's record): False
    # when it could not (``unreconciled``), when MLflow lacks part of the session (``unsent``: not
    # run), and for an interrupted or abandoned session. The summary's ``reconciled``; the parent
    # run's ``sweep/unreconciled`` is 1 where this is False
    reconciled: bool = False


@dataclass(frozen=True)
class _Plan:
    """Everything :func:`run_sweep` decided before Ray starts."""

    name: str
    storage: str
    exp_dir: str
    tracking: str
    state: StateDir
    record: SweepRecord | None
    resume: bool
    restore_tune: bool
    experiment: str
    code: str
    code_changed: bool


def plan_sweep(spec: SweepSpec, o: SweepOptions) -> _Plan:
    """The checks and decisions that need neither Ray nor MLflow (:mod:`.preflight`): secrets,
    the storage path, the tracking URI, and what ``--resume`` / ``--name`` / ``--experiment``
    mean against the sweep record in the storage. UserError (one line) on any refusal."""
    from ..mlflow_client import safe_uri

    refuse_secrets(tracking_uri=o.tracking_uri, storage_path=o.storage_path, datasets=o.datasets)
    refuse_runtime_env_secrets(runtime_env_of_job())
    name = o.name or (f"{spec.name}-smoke" if o.smoke else spec.name)
    storage = o.storage_path or default_storage(DEFAULT_ROOT)
    storage = storage if is_remote(storage) else os.path.abspath(storage.removeprefix("file://"))
    if is_remote(storage):
        check_name_in_uri(name, storage)
    else:
        if o.storage_path and in_job_package(storage):
            # a relative --storage-path under `ray job submit` lands in the per-upload copy of the
            # code, which Ray deletes with the session: the sweep's checkpoints with it
            raise UserError(f"--storage-path {o.storage_path}: under `ray job submit` it resolves into the job's "
                            f"per-upload copy of the code ({storage}), which Ray deletes with the session; "
                            + STORAGE_HINT)
        check_local_storage(storage)
    exp_dir = experiment_dir(storage, name)
    tracking = _tracking_uri(o, storage)
    state = StateDir(exp_dir)
    try:
        record = state.read_record()
    except ValueError as e:   # pyarrow's ArrowInvalid: "s3://b/my dir", "s3a://b/p" were tracebacks
        raise _not_a_storage_uri(o, storage, e) from None
    tune_environment()
    from ray import tune

    code = provenance.code_version([f for f in [provenance.script_of(spec.space)] if f])
    settings = sweep_settings(spec, o, given_only=True)
    space = settings.pop(SPACE_KEY, None)      # compared below, in words of its own, as the trial mode
    settings = {k: v for k, v in settings.items() if k not in MODE_KEYS}
    others = None if record is None else replace(record, settings={k: v for k, v in record.settings.items()
                                                                   if k != SPACE_KEY and k not in MODE_KEYS})
    try:
        tune_state = tune.Tuner.can_restore(exp_dir)
    except ValueError as e:   # pyarrow's ArrowInvalid: "s3://" without a bucket was a traceback
        raise _not_a_storage_uri(o, storage, e) from None
    sp = plan_session(record=others, tune_state=tune_state, resume=o.resume,
                      experiment=o.experiment, default_experiment=spec.name, code=code,
                      allow_code_change=o.allow_code_change, experiment_dir=exp_dir, tracking_uri=safe_uri(tracking),
                      settings=settings)
    was = record.settings.get(SPACE_KEY) if record is not None else None
    if sp.resume and was is not None and was != space:    # a record without it (older): nothing to compare
        raise UserError(f"--resume: the search space of sweep {record.sweep} changed since it started (fingerprint "
                        f"{was} -> {space or 'not a mapping'}): Tune would go on with the old one; restore the "
                        "sweep's space, or start a new sweep with --name")
    if sp.resume and record is not None:
        check_trial_mode(record, o)
    return _Plan(name=name, storage=storage, exp_dir=exp_dir, tracking=tracking, state=state, record=record,
                 resume=sp.resume, restore_tune=sp.restore_tune, experiment=sp.experiment, code=code,
                 code_changed=sp.code_changed)


def _not_a_storage_uri(o: SweepOptions, storage: str, e: BaseException) -> UserError:
    """The one line for a storage URI pyarrow cannot parse or has no filesystem for."""
    return UserError(f"--storage-path {o.storage_path or storage}: not a storage URI Tune can use ({_first_line(e)}); "
                     "e.g. s3://BUCKET/PATH, gs://BUCKET/PATH or a directory")


def check_experiment_active(p: _Plan) -> None:
    """The sweep's MLflow experiment is not deleted (one request, before Ray starts). A deleted
    experiment (in the UI: it stays, in the "deleted" stage, until ``mlflow gc``) refuses new runs
    ("must be in the 'active' state"): that was a traceback after Ray had started.

    Raises:
        UserError: the experiment is deleted: how to restore it, or what to pass instead.
    """
    from ..mlflow_client import mlflow_client, shown_uri

    client = mlflow_client(p.tracking)
    try:
        exp = (client.get_experiment(p.record.experiment_id) if p.record is not None
               else client.get_experiment_by_name(p.experiment))
    except Exception as e:
        refused = http_refusal(p.tracking, e)
        if refused is not None:
            raise refused from None
        if p.record is None or getattr(e, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            raise
        # deleted for good (`mlflow gc`), or the default sqlite file removed: "error: No Experiment
        # with id=1 exists" (exit 1), naming neither the sweep nor what to do
        raise UserError(f"--resume: sweep {p.record.sweep} logs to MLflow experiment {p.record.experiment!r} (id "
                        f"{p.record.experiment_id}), which {shown_uri(p.tracking)} no longer has (deleted for good, or "
                        "another database at that URI): its parent and trial runs are gone; start the sweep anew "
                        "with another --name") from None
    if exp is None or getattr(exp, "lifecycle_stage", "active") != "deleted":
        return
    other = ("start a new sweep with --name and another --experiment" if p.record is not None
             else "pass another --experiment")
    raise UserError(f"--experiment {exp.name}: the MLflow experiment (id {exp.experiment_id}) is deleted and takes "
                    f"no runs: restore it with `MLFLOW_TRACKING_URI={shlex.quote(shown_uri(p.tracking))} mlflow experiments restore "
                    f"--experiment-id {exp.experiment_id}`, or {other}")


def http_refusal(tracking_uri: str, e: BaseException) -> UserError | None:
    """The one line for an http(s) tracking URI whose server answered the sweep's first MLflow call
    with an HTTP error and no MLflow (JSON) error in it: 401 or 403 (its authentication refused
    the request: credentials missing or wrong), or 404 / 405 (not an MLflow tracking server
    there: the Ray dashboard's port, a path prefix left out). Each was "error: API request to
    endpoint /api/2.0/mlflow/experiments/get-by-name failed with error code 404 != 200. Response
    body: '<!DOCTYPE HTML>", exit 1, as if a server had failed. None for any other error."""
    import re

    from ..mlflow_client import shown_uri

    if not tracking_uri.lower().startswith(("http://", "https://")):
        return None
    m = re.search(r"API request to endpoint (\S+) failed with error code (\d{3}) != 200", str(e))
    if m is None:
        return None
    where, code = m.group(1), m.group(2)
    if code == "401":
        given = [k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_TOKEN") if os.environ.get(k)]
        return UserError(f"--tracking-uri {shown_uri(tracking_uri)}: the tracking server refuses access (HTTP 401: "
                         f"not authenticated); {'check' if given else 'set'} MLFLOW_TRACKING_USERNAME and "
                         "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
    if code == "403":
        return UserError(f"--tracking-uri {shown_uri(tracking_uri)}: the tracking server refuses access (HTTP 403: "
                         "this user may not read or create the sweep's experiment)")
    if code not in ("404", "405"):
        return None           # a server error (a proxy before an MLflow that is down): MLflow's own line
    return UserError(f"--tracking-uri {shown_uri(tracking_uri)}: not an MLflow tracking server there (HTTP {code} "
                     f"for {where}, no MLflow answer); is the address right (with its path prefix, if any)?")


def _record_session(spec: SweepSpec, p: _Plan, o: SweepOptions, fixed: Mapping[str, Any],
                    tags: dict[str, str]) -> SweepRecord:
    """Create the parent run (a new sweep) or find it (a resume), and write the sweep record with
    this session in it, before any trial starts."""
    from ..mlflow_client import safe_uri
    from ..mlflow_client import mlflow_client
    from .tracking import create_parent_run

    session = Session(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      code=p.code, git_sha=tags["git_sha"], researcher=o.researcher, resume=p.resume,
                      code_changed=p.code_changed)
    if p.record is None:
        exp_id, parent = create_parent_run(p.tracking, p.experiment, p.name, params=parent_params(spec, o, fixed, p.name),
                                           tags=tags)
        rec = SweepRecord(sweep=p.name, experiment=p.experiment, experiment_id=exp_id, parent_run_id=parent,
                          tracking_uri=safe_uri(p.tracking), sessions=(session,), settings=sweep_settings(spec, o))
        try:
            created = p.state.create_record(rec)
        except BaseException:
            # the storage failed (a full disk, an object store gone, Ctrl-C): the parent run was
            # left RUNNING for good, a live sweep in the UI that nothing would ever end
            with contextlib.suppress(Exception):
                mlflow_client(p.tracking).set_terminated(parent, status="FAILED")
            raise
        if not created:
            # another driver started this sweep between our plan and now: it owns the name
            try:
                mlflow_client(p.tracking).set_terminated(parent, status="KILLED")
            except Exception:  # noqa: BLE001 - the refusal below is what matters
                pass
            raise UserError(f"sweep {p.name}: another driver started it at the same time (its record is in "
                            f"{p.state.uri}); this one started nothing: pass --resume to join its history "
                            f"once it ends, or another --name")
        return rec
    else:
        # written first, and numbered as written: the record was read before this resume waited out
        # the sweep's previous driver, whose own session write_record keeps; numbered from the
        # stale read, this session's parent-run tags (session.N.*) overwrote that driver's
        rec = p.state.write_record(p.record.with_session(session))
        n = len(rec.sessions)
        try:   # the parent run says which code, commit and person each session ran with
            client = mlflow_client(p.tracking)
            client.log_batch(rec.parent_run_id, tags=_session_tags(session, n))
            # running again while this session runs (the previous session closed it, or its driver
            # died with it RUNNING): the UI and `meta-study ingest` see a live sweep
            client.update_run(rec.parent_run_id, status="RUNNING")
        except Exception as e:  # noqa: BLE001 - the record in the storage has it; say so, go on
            print(f"warning: could not tag the parent run {rec.parent_run_id} with session {n} and set it RUNNING: "
                  f"{error_line(e)}", file=sys.stderr)
    return rec


def _session_tags(s: Session, n: int) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(f"session.{n}.{k}", str(v)) for k, v in
            (("started", s.started), ("code_version", s.code), ("git_sha", s.git_sha), ("researcher", s.researcher),
             ("code_changed", int(s.code_changed)))]


#: Serials of the sweeps this process starts (:func:`run_sweep`); :func:`current_sweep` is the latest's.
_SWEEP_SERIALS = itertools.count(1)
_current_sweep = 0


def start_sweep() -> int:
    """Count a sweep started in this process (:func:`run_sweep` does, first), and return its serial."""
    global _current_sweep
    _current_sweep = next(_SWEEP_SERIALS)
    return _current_sweep


def current_sweep() -> int:
    """The serial of this process's latest sweep (1, 2, ...; 0 before any, as in a Ray worker): what
    is said once per sweep keys on it (sizing's lines: a second sweep in a notebook, a test or a driver
    of two sweeps says its sizes again; each of its trials does not)."""
    return _current_sweep


def run_sweep(spec: SweepSpec, options: SweepOptions = SweepOptions()) -> SweepResult:
    """Run (or resume) the sweep, evaluate early-stopped trials, settle what a dead driver left.
    What ``quiet`` changes in the process (loggers' levels, an environment variable) is put back
    on return or raise: a program that ran a quiet sweep and then another one ran both quiet.

    Raises:
        UserError: one line, before any trial starts: credentials in a URI or the job's
            runtime_env, an install without the training extra, a storage path some node cannot
            use, ``--resume`` with nothing to restore, a sweep that exists without ``--resume``,
            another experiment or tracking server than the sweep's, other settings (``--set``,
            ``--workers-per-trial``...) than the sweep was started with, or code changed since it
            last ran (without ``--allow-code-change``).
    """
    start_sweep()
    keep_credentials_out_of_trials()
    with _process_settings_kept() as kept:
        return _run_sweep(spec, options, kept)


#: The credentials Ray Tune copies from the driver's environment into every trial actor's
#: ``runtime_env`` (``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``, Ray 2.60). There they
#: are served in clear text by Ray's State API and dashboard and written to each node's
#: ``runtime_env_agent.log`` (mode 0644), and they override the node's own keys, against what
#: docs/cluster.md promises (every node uses the credentials of its own environment; the sweep's
#: preflight checks each node's access to the storage path with them, before any trial starts).
TUNE_PROPAGATED_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                               "AWS_SESSION_TOKEN")


def keep_credentials_out_of_trials() -> None:
    """Stop Ray Tune from copying the driver's :data:`TUNE_PROPAGATED_CREDENTIALS` into trial
    actors' runtime_envs (it reads its module-level set each time it makes a trial's actor class:
    the set is emptied of them in place, for this process). Without Ray Tune (the core install,
    whose sweep is refused next, naming the training extra) there are no trials: nothing to do."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(TUNE_PROPAGATED_CREDENTIALS)


@dataclass(frozen=True)
class SweepProgress:
    """Where a running sweep stands, as a :func:`sweep_progress` hook is told it: its trials that
    ended without an error (early-stopped ones too, and those an earlier session of a resumed
    sweep finished), that ended with one (after their restarts), and that train now, of ``total``
    (its samples times its grid's points: :func:`planned_trials`)."""

    finished: int
    errored: int
    running: int
    total: int


#: The hook and its seconds between calls of the :func:`sweep_progress` block around a
#: :func:`run_sweep` (a context variable: the call's signature stays ``run_sweep(spec, options)``).
_PROGRESS: contextvars.ContextVar[tuple[Callable[[SweepProgress], None], float] | None] = contextvars.ContextVar(
    "meta_study_sweep_progress", default=None)


@contextlib.contextmanager
def sweep_progress(hook: Callable[[SweepProgress], None], *, every_s: float = 20.0) -> Iterator[None]:
    """Tell ``hook`` where each sweep that :func:`run_sweep` runs in this block stands: every
    ``every_s`` seconds while Tune's loop runs, and once at its end where that changed since the
    last call. A Tune callback calls it from Tune's own loop (its step end: no thread, no polling;
    one clock read a step). A hook that raises is not called again, and the sweep goes on: the
    demo's step [1] said nothing for the ~200 s its 18 models train on 2 cores."""
    token = _PROGRESS.set((hook, every_s))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def planned_trials(spec: SweepSpec, options: SweepOptions) -> int:
    """The trials a sweep runs, as Tune counts them: its samples times the points of every grid in
    its space (nested ones too); an Optuna sweep's samples alone."""
    samples = _samples(spec, options)
    if spec.search == "optuna":
        return samples

    def points(v: Any) -> int:
        if isinstance(v, Mapping) and set(v) == {"grid_search"}:
            return len(v["grid_search"])
        return math.prod(points(x) for x in v.values()) if isinstance(v, Mapping) else 1

    return samples * points(spec.space(options))


def progress_callback(hook: Callable[[SweepProgress], None], every_s: float, total: int) -> Any:
    """The Tune callback of a :func:`sweep_progress` block. Its class is made here, where Ray is
    imported (this module imports none); Tune pickles the run config with the experiment, so it
    keeps no hook in its state, and a restored one is dropped (``session_only``: :func:`_use_callbacks`)."""
    from ray.tune import Callback

    class SweepProgressCallback(Callback):
        session_only = True

        def __init__(self, hook: Callable[[SweepProgress], None] | None, every_s: float, total: int) -> None:
            self.hook, self.every_s, self.total = hook, every_s, total
            self.next_s = math.inf            # time.monotonic() of the next call; set by setup
            self.said: SweepProgress | None = None

        def setup(self, **info: Any) -> None:
            self.next_s = time.monotonic() + self.every_s

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if time.monotonic() >= self.next_s:
                self._say(trials)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            if self.said is None or self._progress(trials) != self.said:
                self._say(trials)

        def _progress(self, trials: list) -> SweepProgress:
            status = [t.status for t in trials]       # Trial.TERMINATED, ERROR, RUNNING, PENDING, PAUSED
            return SweepProgress(finished=status.count("TERMINATED"), errored=status.count("ERROR"),
                                 running=status.count("RUNNING"), total=max(self.total, len(trials)))

        def _say(self, trials: list) -> None:
            self.next_s = time.monotonic() + self.every_s
            if self.hook is None:
                return
            self.said = self._progress(trials)
            try:
                self.hook(self.said)
            except Exception as e:  # noqa: BLE001 - a progress line is no reason to end the sweep
                self.hook = None
                print(f"warning: the sweep's progress hook failed ({error_line(e)}); no more progress lines",
                      file=sys.stderr)

        def __getstate__(self) -> dict[str, Any]:
            return {"hook": None, "every_s": self.every_s, "total": self.total, "next_s": math.inf, "said": None}

    return SweepProgressCallback(hook, every_s, total)


class _KeptSettings:
    """Process-wide settings a sweep changes, each with the value it had before the first change."""

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}
        self.env: dict[str, str | None] = {}

    def set_level(self, logger: str, level: int) -> None:
        import logging

        self.levels.setdefault(logger, logging.getLogger(logger).level)
        logging.getLogger(logger).setLevel(level)

    def set_env(self, key: str, value: str) -> None:
        self.env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def restore(self) -> None:
        import logging

        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in self.env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _process_settings_kept() -> Iterator[_KeptSettings]:
    """What a sweep changes through :class:`_KeptSettings`, put back when it ends. Noted when
    changed (not on entry): Ray configures its loggers when first imported, inside the sweep. The
    "ray" logger's level that ``ray.init`` sets with ``quiet`` stays: it goes with the Ray session,
    which outlives the sweep in this process (the demo's analysis runs on it)."""
    kept = _KeptSettings()
    try:
        yield kept
    finally:
        kept.restore()


def _quiet_process(kept: _KeptSettings) -> None:
    """``--quiet``'s settings of the driver process (put back by :func:`run_sweep` when it ends)."""
    import logging

    # Tune's default CSV/JSON/TensorBoard loggers: MLflow is the record, and TensorBoard warns
    # about every list-valued config ("invalid value ... via TBXLoggerCallback")
    kept.set_env("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # an errored trial's traceback (Tune logs it at ERROR) is one line of the summary instead
    for name in ("ray.tune", "ray.train", "ray.air"):
        kept.set_level(name, logging.CRITICAL)


def _run_sweep(spec: SweepSpec, options: SweepOptions, kept: _KeptSettings) -> SweepResult:
    o = options
    refuse_secrets(tracking_uri=o.tracking_uri, storage_path=o.storage_path, datasets=o.datasets)
    require_training(f"sweep {spec.name}")   # a core install: one line, not a worker's traceback
    check_fixed_config(spec, o)
    check_script_tree(provenance.script_of(spec.space))
    from ..ray_session import check_target, own_ray_requested

    # an empty --address, or a cluster that does not answer, was refused only when Ray started:
    # after the sweep's sqlite file was made (and, with --resume, a wait for its old writer)
    check_target(o.address)
    check_dataset_paths(o.datasets, on_this_machine=own_ray_requested(o.address))
    t0 = time.monotonic()
    p = plan_sweep(spec, o)
    try:
        check_tracking_reachable(p.tracking)
    except UserError as e:
        if o.tracking_uri:
            raise
        # the default beside the storage path: "--tracking-uri ..." named a flag the user never gave
        head, sep, rest = str(e).partition(": ")
        if not (sep and head.startswith("--tracking-uri ")):
            raise
        raise UserError(f"the default tracking URI {head.removeprefix('--tracking-uri ')} (beside --storage-path "
                        f"{p.storage}): {rest}") from None
    if p.tracking.startswith("sqlite:///"):
        db_dir = Path(p.tracking[len("sqlite:///"):]).parent
        try:
            db_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            # a file where a directory of the path goes: "error: [Errno 17] File exists: ..." (exit 1)
            raise UserError(f"--tracking-uri {p.tracking}: its directory {db_dir} cannot be made (a file stands on "
                            "its path); give another sqlite path") from None
    check_experiment_active(p)
    if p.resume:   # nothing of the sweep is read for the resume while its old writer still writes
        wait_for_previous_writer(p.state, p.name)
    tune_environment()
    from ray import tune

    from ..ray_session import start_or_connect
    from .tracking import MlflowSweepCallback
    from .trial import train_trial

    if o.quiet:
        _quiet_process(kept)
    private = own_ray_requested(o.address)
    # "=0" turned them on too: every trial's output in the job log (gigabytes for thousands of trials)
    trial_logs = os.environ.get("META_STUDY_TRIAL_LOGS", "").strip().lower() in ("1", "true", "yes", "on")
    start_or_connect(o.address, log_to_driver=trial_logs, quiet=o.quiet)
    if not private:      # a Ray of our own is this machine: its workers share our disk and environment
        check_storage_on_nodes(p.storage)
        failpoint("after_node_check")   # a test adds a node here: one the check never saw (an autoscaler's)
    fixed = fixed_config(spec, o)
    hooks = replace(trial_hooks(o), resumed=p.resume)
    one = _one_trial(spec, o, hooks, fixed)
    requests = [("", one)] if one is not None else trial_requests(spec, o, fixed)
    if requests:   # Tune waits for good on a trial no node can hold (--gpus-per-trial 1 without a GPU)
        import ray

        nodes = ray.nodes()
        check_trials_fit(requests, nodes, sweep=p.name, on_this_machine=private, sized_by_model=one is None)
        if hooks.torch_trainer and one is not None:   # each worker fits; do all of them, together?
            check_workers_fit(hooks.workers, one, nodes, sweep=p.name, on_this_machine=private,
                              actor_cpus=DRIVER_CPUS)
    tags = {"sweep": p.name, "git_sha": provenance.git_sha(), "researcher": o.researcher, "code_version": p.code}
    rec = _record_session(spec, p, o, fixed, tags)
    callback = MlflowSweepCallback(p.tracking, rec.experiment_id, rec.parent_run_id, p.exp_dir, tags=tags,
                                   resumed=p.resume, storage_uri=p.storage)
    resources = PerTrialResources(spec.resources, o)
    # from here on the parent run is RUNNING: whatever ends the driver before Tune's results (an
    # error, a Ctrl-C while the run map is searched or the trainable is put in Ray's object store)
    # ends it and the open runs (_abandon); before, it stayed RUNNING for good
    try:
        if p.resume:   # runs created just before a driver died, whose map entries never got written
            from .tracking import recover_run_map

            try:
                recover_run_map(p.tracking, rec.experiment_id, rec.parent_run_id, p.state)
            except Exception as e:  # noqa: BLE001 - without it a lost run may be closed as an orphan: say so
                print(f"warning: could not list the runs of parent run {rec.parent_run_id} to complete the sweep's "
                      f"run map ({error_line(e)}); a run created just before the driver died may be closed as an "
                      f"orphan", file=sys.stderr)
        # the hooks travel beside the config (Tune's object store), so the config is TrainConfig only
        trainable = tune.with_resources(tune.with_parameters(train_trial, hooks=hooks), resources)
        callbacks = [callback]
        if hooks.torch_trainer:    # a stopped data-parallel trial's placement group is freed while the sweep runs
            from .groups import FreeOrphanedGroups

            callbacks.append(FreeOrphanedGroups())
        progress = _PROGRESS.get()
        if progress is not None:     # a sweep_progress block around this call
            callbacks.append(progress_callback(*progress, planned_trials(spec, o)))
        if p.restore_tune:
            tuner = tune.Tuner.restore(p.exp_dir, trainable, resume_errored=True)
            _use_callbacks(tuner, callbacks, verbose=0 if o.quiet else 1)
            tuner._local_tuner._tune_config.reuse_actors = _reuse_actors(o)   # a sweep started before 2026-12-04
        else:
            # a resume without Tune state (its first driver died before Tune first saved it) starts a
            # new Tuner: with the sweep's own flags, as Tuner.restore goes on with them
            first = _recorded_flags(o, p.record) if p.resume else o
            tuner = _new_tuner(spec, _data_parallel_limit(first, hooks, own_ray=private), trainable, fixed, p.name,
                               p.storage, callbacks)
        with _signal_handlers_kept(), _tune_output(quiet=o.quiet):
            grid = tuner.fit()
        results = list(grid)
    except BaseException as e:
        _abandon(p.tracking, rec, callback, e)
        raise
    finished = sum(1 for r in results if r.error is None and (r.metrics or {}).get("final") == 1.0)
    errors = tuple((trial_id_of(r), error_line(r.error), error_file(str(r.path), p.storage))
                   for r in results if r.error is not None)
    errored = len(errors)

    def interrupted(signal_name: str) -> SweepResult:
        return end_interrupted(signal_name, results, tune_statuses(grid), callback, p, rec, finished=finished,
                               errors=errors, t0=t0)

    if callback.stop_signal:   # Ctrl-C while trials trained: Tune stopped them and returned
        return interrupted(callback.stop_signal)
    try:
        failpoint("before_evaluations")      # a test interrupts the driver here
        out = _finish(spec, results, callback, p, rec, resources, hooks)
    except KeyboardInterrupt:
        # Ctrl-C during the end-of-sweep evaluations (Tune's handler is gone by then): it was a
        # traceback, with the early-stopped trials' runs and the parent left RUNNING
        return interrupted("SIGINT")
    except SystemExit as e:
        # SIGTERM there (`ray job stop`, scancel, a service's stop: ray.init's handler exits 15, the
        # CLI's raises Terminated): the runs waiting for their evaluation and the parent were left
        # RUNNING. Closed as for Ctrl-C; the process still exits as it was asked to
        interrupted(_stop_signal_of(e) or "SystemExit")
        raise
    except Exception as e:
        _abandon(p.tracking, rec, callback, e)
        raise
    unsent = bool(getattr(callback, "incomplete", False))
    # the writer's flush answers ok with operations MLflow refused for good dropped (nothing left
    # to send): the callback keeps their count from the writer (WriterProcess.dropped)
    dropped = int(getattr(callback, "dropped", 0) or 0)
    status, counts = sweep_end(len(results), finished, errored, out, unsent=unsent, dropped=dropped)
    _end_parent(p.tracking, rec, status, counts)
    unreconciled = out.get("reconcile_error")
    return SweepResult(name=p.name, experiment_dir=p.exp_dir, tracking_uri=p.tracking,
                       parent_run_id=rec.parent_run_id, trials=len(results), finished=counts["finished"],
                       errored=errored, early_stopped=counts["early_stopped"], seconds=time.monotonic() - t0,
                       eval_failed=out["eval_failed"], unevaluable=out["unevaluable"], settled=out["settled"],
                       orphaned=out["orphaned"], resumed=p.resume, experiment_id=rec.experiment_id,
                       experiment=rec.experiment, errors=errors, unsent=unsent, dropped=dropped,
                       unreconciled=unreconciled, reconciled=bool(out.get("reconciled")))


def end_interrupted(signal_name: str, results: Sequence[Any], statuses: Mapping[str, str], callback: Any, p: _Plan,
                    rec: SweepRecord, *, finished: int, errors: tuple[tuple[str, str, str], ...],
                    t0: float) -> SweepResult:
    """The end of a sweep stopped by ``signal_name`` (Ctrl-C while trials trained or during the
    end-of-sweep evaluations, a SIGTERM there): nothing (more) is evaluated or settled, every open
    run ends KILLED (``--resume`` goes on), and the parent run ends KILLED with its ``sweep/*``
    counts: ``interrupted``, and ``dropped`` as at a normal end (operations MLflow refused for
    good, which no ``--resume`` sends: an interrupted sweep said nothing of them, its parent's
    ``sweep/dropped`` that of an earlier session), and ``unreconciled`` 1 (the end-of-sweep check of
    MLflow's runs did not run). ``finished``: the trials that finished training."""
    early = stopped_early_of(results, callback, statuses)    # before the runs close
    left = callback.close_interrupted(signal_name)
    sent = callback.flush()
    # early-stopped trials evaluated (this session, before a Ctrl-C during the evaluations, or an
    # earlier one) count as finished, as at a sweep's end: their runs are FINISHED data points,
    # and the summary counted them in neither finished nor interrupted
    done = evaluated_trials(callback) if sent and early else set()
    ok = finished + sum(1 for r in results if is_stopped_early(r) and trial_id_of(r) in done)
    dropped = int(getattr(callback, "dropped", 0) or 0)
    _end_parent(p.tracking, rec, "KILLED", {"trials": len(results), "finished": ok, "errored": len(errors),
                                           "early_stopped": early, "interrupted": len(left), "dropped": dropped,
                                           "unreconciled": 1})   # stopped before the check: --resume runs it
    return SweepResult(name=p.name, experiment_dir=p.exp_dir, tracking_uri=p.tracking,
                       parent_run_id=rec.parent_run_id, trials=len(results), finished=ok, errored=len(errors),
                       early_stopped=early, seconds=time.monotonic() - t0, resumed=p.resume,
                       experiment_id=rec.experiment_id, interrupted=len(left), stop_signal=signal_name,
                       experiment=rec.experiment, errors=errors, unsent=not sent, dropped=dropped)


def _dropped_line(name: str, dropped: int) -> str:
    """The sweep's line about operations MLflow refused for good (``SweepResult.dropped``)."""
    return (f"{name}: MLflow refused {dropped} operation(s) of this sweep for good and they were dropped (the "
            "writer's lines above say which and why); MLflow lacks them, and --resume does not send them")


def sweep_end(trials: int, finished: int, errored: int, out: Mapping[str, Any], *,
              unsent: bool, dropped: int = 0) -> tuple[str, dict[str, int]]:
    """The parent run's end status and its ``sweep/*`` counts at a sweep's end, from the trials
    that finished training, those that errored and :func:`_finish`'s ``out``. The evaluated
    early-stopped trials count in ``finished`` and ``early_stopped``; ``trials`` = ``finished`` +
    ``errored`` + ``eval_failed`` + ``unevaluable``. FAILED when a trial errored, an evaluation
    failed (``--resume`` retries it) or MLflow lacks part of the sweep (``unsent``, or ``dropped``:
    operations MLflow refused for good, counted in ``sweep/dropped``), or may lack it (``out``'s
    ``reconcile_error``: the runs left open were not settled; ``--resume`` settles them); a
    trial stopped before its first checkpoint (``unevaluable``: no resume can evaluate it) fails
    nothing by itself. ``unreconciled`` is 1 when the settling did not run (``out``'s
    ``reconciled`` False: its error, or MLflow lacking part of the session)."""
    ok, failed, none = out["eval_done"], out["eval_failed"], out.get("unevaluable", 0)
    counts = {"trials": trials, "finished": finished + ok, "errored": errored,
              "early_stopped": ok + failed + none, "eval_failed": failed, "unevaluable": none, "dropped": dropped,
              # 1: the check of MLflow's runs against Tune's record did not run (the terminal said so;
              # the parent showed nothing of it)
              "unreconciled": 0 if out.get("reconciled", not out.get("reconcile_error")) else 1}
    bad = errored or failed or unsent or dropped or out.get("reconcile_error")
    return ("FAILED" if bad else "FINISHED"), counts


def tune_statuses(grid: Any) -> dict[str, str]:
    """Trial id -> Tune's status (``TERMINATED``, ``PENDING``, ``ERROR``...) of the trials of a
    ``ResultGrid`` (whose ``Result`` objects do not carry it; read from its private experiment
    analysis, as Ray 2.60 keeps it), or {} where that is not there."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or ()
    return {str(t.trial_id): str(t.status) for t in trials if getattr(t, "trial_id", None)}


def stopped_early_of(results: Sequence[Any], callback: Any, statuses: Mapping[str, str]) -> int:
    """How many trials of an interrupted sweep an early-stopping scheduler (ASHA) had stopped, in
    this session or an earlier one: ended without error and without their final report
    (:func:`~.finalize.is_stopped_early`), less the look-alikes. Tune's stop signal stops the
    trials still training without telling the callbacks (``TuneController._cleanup_trials``):
    the runs this session started and never saw end (``callback.open - callback.ended``); and the
    trials an earlier session left unfinished that this one never restarted are still PENDING.
    Counted 0 before, every such trial only among the interrupted. Read before the callback
    closes the open runs. Without Tune's statuses, only trials whose end the callback saw count.
    A trial that never started (it waited for resources; Tune ends it TERMINATED) is not counted:
    Ctrl-C of a sweep without a scheduler said ``early_stopped 3`` of 4."""
    from .finalize import is_stopped_early

    training = set(callback.open) - set(callback.ended)
    n = 0
    for r in results:
        tid = trial_id_of(r)
        # a trial that waited for resources and never started: its result holds its trial_id only
        if not is_stopped_early(r) or tid in training or "training_iteration" not in (r.metrics or {}):
            continue
        n += (statuses.get(tid) == "TERMINATED") if statuses else (tid in callback.ended)
    return n


def error_file(trial_path: str, storage: str) -> str:
    """Where an errored trial's traceback is: ``error.txt`` in its trial directory, as a path
    (local or shared storage) or a URI (``s3://bucket/...``; Tune's ``Result.path`` there is
    ``bucket/...``, which the summary printed as if it were a path on this machine)."""
    where = f"{trial_path.rstrip('/')}/error.txt"
    return full_uri(where, "remote", storage).partition("?")[0] if is_remote(storage) else where


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Put back the SIGINT and SIGUSR1 handlers ``Tuner.fit`` replaces: Tune leaves its own
    installed after ``fit`` returns, and a Ctrl-C during the evaluations after it would only set
    an event nobody reads any more (the keystroke swallowed, the driver going on)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None]
    saved = {s: signal.getsignal(s) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _tune_output(*, quiet: bool) -> Iterator[None]:
    """With ``quiet``: Tune's legacy output engine while ``fit`` runs (``RAY_AIR_NEW_OUTPUT=0``),
    which at ``verbose=0`` prints nothing. Ray 2.60's new engine prints its "Configuration for
    experiment" table and "View detailed results here" at every verbosity, 0 included
    (``TuneTerminalReporter.experiment_started``). Tune's warnings and errors are log records,
    not output of either engine."""
    if not quiet:
        yield
        return
    was = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if was is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = was


#: CPUs a data-parallel trial's own actor asks for (it only waits on its TorchTrainer's workers).
DRIVER_CPUS = 0.1


def data_parallel_concurrency(cluster: Mapping[str, float], workers: int, worker_cpus: float,
                              use_gpu: bool) -> tuple[int, float]:
    """How many data-parallel trials can train at once on ``cluster`` (Ray's total resources):
    (trials, CPUs one trial needs). Tune reserves only a trial's own actor (``DRIVER_CPUS``) and
    knows nothing of the Train workers that actor then asks for, so without a limit it starts
    trial actors while any CPU is free: on 2 CPUs, four trials of 2 workers x 0.9 CPU held 0.4
    CPU in waiting actors, no trial's 1.8 CPUs could ever be placed, and the sweep waited for good
    (measured: 8 minutes, no training step). At least 1: a cluster smaller than one trial may
    still grow (an autoscaler)."""
    need_cpu = workers * worker_cpus + DRIVER_CPUS
    fits = math.floor(float(cluster.get("CPU", 0.0)) / need_cpu + 1e-9) if need_cpu > 0 else 10**6
    if use_gpu:
        fits = min(fits, math.floor(float(cluster.get("GPU", 0.0)) / workers + 1e-9))
    return max(1, fits), need_cpu


def _data_parallel_limit(o: SweepOptions, hooks: "TrialHooks", *, own_ray: bool = True) -> SweepOptions:
    """A new sweep's options with ``max_concurrent`` set for data-parallel trials when not given
    (:func:`data_parallel_concurrency` of the resources Ray has now); said in one line. Not
    recorded as given: a resume keeps Tune's own (restored) limit. On a cluster an autoscaler
    grows, what it has now understates what it will have (a KubeRay head with no CPUs: 1 trial
    at a time), and the line says to give ``--max-concurrent``: slow and said beats a sweep that
    waits for good in silence on a cluster of fixed size."""
    if not hooks.torch_trainer or o.max_concurrent is not None:
        return o
    import ray

    cluster = ray.cluster_resources()
    k, need = data_parallel_concurrency(cluster, hooks.workers, hooks.worker_cpus, hooks.use_gpu)
    gpus = f" and {hooks.workers} GPUs" if hooks.use_gpu else ""
    have = f"{cluster.get('CPU', 0):g} CPUs" + (f", {cluster.get('GPU', 0):g} GPUs" if hooks.use_gpu else "")
    grows = "" if own_ray else " (on a cluster an autoscaler grows, give it for the cluster at its largest)"
    print(f"data-parallel trials: at most {k} at a time: each needs {need:g} CPUs{gpus} for its {hooks.workers} "
          f"workers and itself, Ray has {have} now; --max-concurrent N sets another limit{grows}",
          file=sys.stderr, flush=True)
    return replace(o, max_concurrent=k)


def _use_callbacks(tuner: Any, callbacks: Sequence[Any], verbose: int | None = None) -> None:
    """Give a restored Tuner this session's callbacks (and ``--quiet``'s verbosity).
    ``Tuner.restore`` unpickles the run config of the session that started the sweep, callbacks
    and verbosity included, with that session's tags (git SHA, researcher) and without knowing it
    resumes; Tune has no public way to replace a restored run config's callbacks, so this swaps
    them in the (private) TunerInternal, which reads ``verbose`` from it when ``fit`` starts."""
    from .groups import FreeOrphanedGroups
    from .tracking import MlflowSweepCallback

    rc = tuner._local_tuner.get_run_config()
    if verbose is not None:
        rc.verbose = verbose
    # ours are replaced by this session's (the earlier session's may lack one: an older version,
    # or a sweep first started without data-parallel trials), and a session's own ones (a
    # sweep_progress callback, ``session_only``) dropped; anything else is kept
    ours = (MlflowSweepCallback, FreeOrphanedGroups)
    rc.callbacks = [c for c in (rc.callbacks or []) if not isinstance(c, ours) and not getattr(c, "session_only", False)
                    ] + list(callbacks)


def _finish(spec: SweepSpec, results: list[Any], callback: Any, p: _Plan, rec: SweepRecord,
            resources: PerTrialResources, hooks: "TrialHooks") -> dict[str, Any]:
    """Evaluate the early-stopped trials, then settle what earlier sessions left open. ``eval_done``
    counts the early-stopped trials evaluated, in this session or an earlier one;
    ``reconcile_error``: why the settling could not run (MLflow failed its search: a server gone
    at the sweep's end; or the storage the run map), else None. The trials are done and logged by then: the sweep ends with
    its summary and a line saying so (:func:`sweep_main`), not with MLflow's error alone."""
    from .finalize import evaluate_stopped, is_stopped_early, reconcile

    stopped = [r for r in results if is_stopped_early(r)]
    ev = evaluate_stopped(stopped, callback, resources=resources, hooks=hooks)
    sent = callback.flush()
    settled = orphaned = 0
    reconcile_error = None
    reconciled = False
    if sent:   # the server holds everything this session logged: what is still RUNNING is left over
        name = TrialName(spec.name)
        configs = {trial_id_of(r): r.config for r in results}   # a run created here is named as Tune named it
        try:
            rc = reconcile(results, callback, tracking_uri=p.tracking, experiment_id=rec.experiment_id,
                           parent_run_id=rec.parent_run_id, runs_map=p.state.runs(),
                           name_of=lambda tid: name(SimpleNamespace(trial_id=tid, config=configs.get(tid))))
        except Exception as e:
            if not _machine_error(e):      # a bug keeps its traceback (sweep_main)
                raise
            reconcile_error = error_line(e)
        else:
            settled, orphaned, reconciled = len(rc.settled), len(rc.orphaned), True
        callback.flush()    # what it queued before failing, too
    # evaluated now, or by an earlier session (a resume leaves those alone, but they still count):
    # trials == finished + errored + eval_failed + unevaluable, the evaluated ones in finished and
    # early_stopped (sweep_end)
    ok = len(ev.done) + len(getattr(ev, "logged", ()))
    return {"eval_done": ok, "eval_failed": len(ev.failed), "unevaluable": len(getattr(ev, "unevaluable", {})),
            "settled": settled, "orphaned": orphaned, "reconcile_error": reconcile_error, "reconciled": reconciled}


def _abandon(tracking_uri: str, rec: SweepRecord, callback: Any, e: BaseException) -> None:
    """The Tuner could not be made or its ``fit`` raised (a define-by-run space that fails, a
    damaged Tune state, Ctrl-C before Tune took it over): the runs this session left open end
    KILLED, tagged interrupted (``--resume`` continues them), and the parent run FAILED (KILLED
    for Ctrl-C), with the session's ``sweep/dropped`` (said on stderr when not 0) and
    ``sweep/unreconciled`` 1 (no end-of-sweep check ran). They stayed
    RUNNING for good: a live sweep in the UI and to ``meta-study ingest``. Whatever fails here is
    said in a line; ``e`` is what the user sees."""
    from ..mlflow_client import mlflow_client

    stop = _stop_signal_of(e)
    try:
        # a stop (Ctrl-C, SIGTERM) ends the parent KILLED, as Tune's own stop does; an error FAILED
        # (a SIGTERM's SystemExit ended it FAILED, its runs "interrupted (SystemExit)")
        callback.close_interrupted(stop or type(e).__name__)
        callback.flush()
        client = mlflow_client(tracking_uri)
        # the session's count of operations MLflow refused for good, as every end of a sweep logs it
        # (the parent's sweep/dropped stayed an earlier session's), and said: no --resume sends them
        dropped = int(getattr(callback, "dropped", 0) or 0)
        if dropped:
            print(_dropped_line(rec.sweep, dropped), file=sys.stderr)
        try:
            client.log_metric(rec.parent_run_id, "sweep/dropped", float(dropped))
            # no end-of-sweep check ran: an earlier session's 0 stayed the parent's latest
            client.log_metric(rec.parent_run_id, "sweep/unreconciled", 1.0)
        finally:     # the parent is closed whatever the count's call did
            client.set_terminated(rec.parent_run_id, status="KILLED" if stop else "FAILED")
    except Exception as e2:  # noqa: BLE001 - the sweep's own error is the one to raise
        print(f"warning: could not close the MLflow runs of this session (parent run {rec.parent_run_id}): "
              f"{error_line(e2)}", file=sys.stderr)


def _stop_signal_of(e: BaseException) -> str | None:
    """The stop an exception that ends the driver stands for (``SIGINT``, ``SIGTERM``...), or None
    for an error: Ctrl-C's KeyboardInterrupt; the CLI's :class:`~meta_study.errors.Terminated`;
    any other SystemExit: a SIGTERM when its code is 15 (``ray.init`` installs a SIGTERM handler
    that calls ``sys.exit(signum)``) or when the driver took one (:func:`_sigterm_noted`: inside
    ``ray.wait`` Ray turns the handler's exit into ``SystemExit(1)``), else the process was asked
    to exit (``SystemExit``)."""
    if isinstance(e, KeyboardInterrupt):
        return "SIGINT"
    if not isinstance(e, SystemExit):
        return None
    signum = getattr(e, "signum", None) or (e.code if e.code == signal.SIGTERM else None) or _term_taken()
    return signal.Signals(signum).name if signum else "SystemExit"


#: The SIGTERMs the driver took while :func:`sweep_main` ran (:func:`_sigterm_noted`); empty
#: outside it (``run_sweep`` called by a program of its own, a test).
_TERMS_TAKEN: contextvars.ContextVar[tuple[list[int], ...]] = contextvars.ContextVar("meta_study_terms_taken",
                                                                                    default=())


def _term_taken() -> int | None:
    """The SIGTERM this driver took, if it took one (:func:`_sigterm_noted`), else None."""
    return next((got[0] for got in _TERMS_TAKEN.get() if got), None)


@contextlib.contextmanager
def _sigterm_noted() -> Iterator[None]:
    """While the body runs, a SIGTERM is noted (:func:`_term_taken`) before it goes on as before:
    the handler found here is called, or, at the default, ``SystemExit(15)`` is raised as
    ``ray.init``'s handler does (``start_or_connect`` keeps this one across ``ray.init``).

    The exception the handler raises does not always arrive: met inside ``ray.wait`` (Tune's loop
    waiting for its trials' results, the end-of-sweep evaluations for their tasks), Ray's check of
    signals turns it into ``SystemExit(1)``, whose exit then aborted the driver (SIGABRT, 134) with
    no line and its runs "interrupted (SystemExit)". Noted, whatever ``SystemExit`` follows is the
    SIGTERM's (:func:`_stop_signal_of`, :func:`sweep_main`: its line, exit 143). An ignored SIGTERM
    (``SIG_IGN``) or one set outside Python stays as it is; a forked child dies of it as before."""
    got: list[int] = []
    before = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if before is None or before == signal.SIG_IGN:   # signal.signal works in the main thread only
        yield
        return
    pid = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        if os.getpid() != pid:           # a forked child: its default, at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        got.append(signum)
        if callable(before):
            before(signum, frame)
        else:
            sys.exit(signum)

    token = _TERMS_TAKEN.set((*_TERMS_TAKEN.get(), got))
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        _TERMS_TAKEN.reset(token)


def _end_parent(tracking_uri: str, rec: SweepRecord, status: str, counts: Mapping[str, int]) -> None:
    """Give the sweep's parent run its summary metrics and close it (``--resume`` sets it RUNNING
    again when it records its session: :func:`_record_session`)."""
    from ..mlflow_client import mlflow_client
    from .tracking import log_sweep_summary

    # two tries: a summary that fails (a search or a log_batch the server refuses) left the parent
    # RUNNING, a live sweep in the UI and to ingest, though its trials were done
    try:
        log_sweep_summary(tracking_uri, rec.experiment_id, rec.parent_run_id, counts)
    except Exception as e:  # noqa: BLE001 - the trials are done and logged; say so, do not fail
        print(f"warning: could not summarize the MLflow parent run {rec.parent_run_id}: {error_line(e)}",
              file=sys.stderr)
    try:
        mlflow_client(tracking_uri).set_terminated(rec.parent_run_id, status=status)
    except Exception as e:  # noqa: BLE001 - as above
        print(f"warning: could not close the MLflow parent run {rec.parent_run_id}: {error_line(e)}",
              file=sys.stderr)


def _metric(fixed: Mapping[str, Any]) -> str:
    """The US accuracy ASHA and Optuna rank trials by: the fixed ``us_task``'s, else TrainConfig's."""
    from ..schema import us_metric_key
    from ..train.loop import TrainConfig

    return us_metric_key(fixed.get("us_task", TrainConfig.us_task))


def _new_tuner(spec: SweepSpec, options: SweepOptions, trainable: Any, fixed: dict[str, Any], name: str,
               storage: str, callbacks: Sequence[Any]) -> Any:
    from ray import tune

    metric = _metric(fixed)
    search_alg = scheduler = None
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(space=WithFixed(spec.space(options), fixed), metric=metric, mode="max",
                                  seed=int(fixed.get("seed", 0)))
        param_space: dict[str, Any] = {}
    else:
        param_space = {**fixed, **spec.space(options)}
    samples = _samples(spec, options)
    if spec.search != "optuna":
        param_space, samples = repeat_space(param_space, samples)
    if spec.scheduler == "asha":
        scheduler = asha_scheduler(metric, fixed, sweep=name)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=samples, search_alg=search_alg, scheduler=scheduler,
                                    max_concurrent_trials=options.max_concurrent,
                                    reuse_actors=_reuse_actors(options),
                                    trial_name_creator=TrialName(spec.name), trial_dirname_creator=_trial_dir),
        run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=list(callbacks),
                                  failure_config=tune.FailureConfig(max_failures=_max_failures(options)),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  verbose=0 if options.quiet else 1))


def asha_scheduler(metric: str, fixed: Mapping[str, Any], *, sweep: str = "") -> Any:
    """ASHA (early stopping on ``metric``) whose rungs are training steps: a report's ``step``, at
    ``eval_every`` x 3^k (reduction factor 3), or None where ``fixed`` sets ``eval_every=0`` or leaves
    it out (TrainConfig's 0: every trial reports only its last step: nothing to stop early; said in
    one line on stderr). A searched ``eval_every`` is refused before (:func:`check_ranked_keys`).

    Its time was Tune's ``training_iteration`` (reports), and each trial makes a report of its last
    step off the ``eval_every`` cadence: the zoo's short trials (161-322 steps at 500 a report;
    1,302-1,380 at rung 3) met a rung at that report, and ASHA stopped two in three of them with
    only their probes left to run: trained to the end, each was logged ``early_stopped = 1``, counted
    in the summary's ``early_stopped`` and left RUNNING (``eval_status = pending``) until the
    sweep's end. Steps meet a rung only at an ``eval_every`` report (a rung is a multiple of it), so a
    last step is judged only where it is itself such a report; the final report (no ``step``) never
    is. ``max_t`` is a step count no run reaches: ASHA stops every trial at ``max_t`` (10,000
    reports: ``eval_every=10`` and 100k steps were stopped mid-run)."""
    import sys

    from ray.tune.schedulers import ASHAScheduler

    from ..train.loop import INT_MAX, TrainConfig

    # left out of the sweep's config, a trial's eval_every is TrainConfig's (0): each reported only its
    # last step, which met a rung of the grace of 1 step this fell back to, and ASHA stopped trained trials
    every = int(fixed.get("eval_every", TrainConfig.eval_every))
    if every <= 0:
        given = "" if "eval_every" in fixed else " (the default)"
        print(f"sweep {sweep}: eval_every=0{given}: each trial reports only its last step, so ASHA has nothing to "
              "stop early; its trials run to their end (--set eval_every=N reports every N steps)", file=sys.stderr)
        return None
    return ASHAScheduler(time_attr="step", metric=metric, mode="max", grace_period=every,
                         reduction_factor=3, max_t=INT_MAX + 1)


def repeat_space(param_space: Mapping[str, Any], samples: int) -> tuple[dict[str, Any], int]:
    """A grid or random space run ``samples`` times, as the param space and ``num_samples`` to give
    Tune: the repeats as one more grid, :data:`~.trial.REPEAT_KEY` over ``0 .. samples-1``, and
    ``num_samples`` 1. The same trials as Tune's ``num_samples`` (each grid point ``samples``
    times, the random values drawn for each; Tune orders a grid by key, so a point's repeats now
    are adjacent in the trial order, and run side by side where trials run concurrently), but each repeat's config, and so its key (:func:`~.trial.config_key`), says which it is. With
    Tune's repeats, the repeats of a grid point with a fixed seed were one key: a resume gave a
    repeat that had not finished its finished sibling's result (two MLflow runs of one model, one
    repeat never trained). The same space gives the same repeats again, so a repeat lost with a
    dead driver's unsaved state is generated again with its own index and takes over its own run."""
    from .trial import REPEAT_KEY

    if samples <= 1 or REPEAT_KEY in param_space:
        return dict(param_space), samples
    return {**param_space, REPEAT_KEY: grid(range(samples))}, 1


def _recorded_flags(o: SweepOptions, record: SweepRecord | None) -> SweepOptions:
    """``o`` with the sweep record's ``--max-concurrent`` and ``--max-failures`` where this resume
    leaves them out (:func:`sweep_settings` with ``given_only``: "goes on with the sweep's own").
    A resume that found no Tune state made its new Tuner from the defaults instead: 2 restarts of a
    sweep started with ``--max-failures 0``, no limit for one started with ``--max-concurrent 1``."""
    if record is None:
        return o
    was = record.settings
    return replace(o, max_concurrent=o.max_concurrent if o.max_concurrent is not None else was.get("max_concurrent"),
                   max_failures=o.max_failures if o.max_failures is not None else was.get("max_failures"))


def _reuse_actors(options: SweepOptions) -> bool:
    """Tune's actor reuse (a trial actor kept for the next trial: no start-up per trial), except for
    data-parallel trials: their function returns only after its TorchTrainer has shut down its
    controller and workers, which takes longer than the 2 s Tune gives a reused actor's last
    trial to end (``TUNE_FUNCTION_THREAD_TIMEOUT_S``), and the next trial then failed with
    "Trainable runner reuse requires reset_config() to be implemented and return True"
    (measured: the third trial of a 2-worker zoo sweep, one trial at a time)."""
    return not (options.torch_trainer or options.workers_per_trial > 1)


class TrialName:
    """``<sweep>_<trial id>``, and ``_repeat<i>`` after it for a repeat of ``--num-samples`` (its
    :data:`~.trial.REPEAT_KEY`): the name of the trial's MLflow run. The repeats of a grid point
    have the same params, and the index was in no param and no tag: two repeats could not be told
    apart in the UI. (A class: Tune pickles it into the experiment state.)"""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __call__(self, trial: Any) -> str:
        from .trial import REPEAT_KEY

        config = getattr(trial, "config", None)
        repeat = config.get(REPEAT_KEY) if isinstance(config, Mapping) else None
        return f"{self.sweep}_{trial.trial_id}" + ("" if repeat is None else f"_repeat{repeat}")


def _trial_dir(trial: Any) -> str:
    return trial.trial_id


class WithFixed:
    """A define-by-run space plus the fixed config: a class, so Tune can pickle the searcher."""

    def __init__(self, define: Callable[[Any], dict[str, Any]], fixed: Mapping[str, Any]) -> None:
        self.define, self.fixed = define, dict(fixed)

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {**self.fixed, **self.define(trial)}


def browse_line(tracking_uri: str, experiment_id: str) -> str:
    """Where to see a sweep's runs: the MLflow UI address in its model-training view (MLflow 3.17
    opens experiments in its GenAI view otherwise; see meta_study/mlflow_client.py)."""
    from ..mlflow_client import experiment_url

    if tracking_uri.startswith("sqlite"):
        # quoted: a path with a space or a quote in it gave a command that failed when pasted
        return (f"browse: mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}, then "
                f"{experiment_url(tracking_uri, experiment_id, ui='http://127.0.0.1:5000')}")
    return f"browse: {experiment_url(tracking_uri, experiment_id) or tracking_uri}"


def _machine_error(e: BaseException) -> bool:
    """An OSError (disk, network, a server gone) or an MLflow exception: not a bug of ours."""
    return isinstance(e, OSError) or any(c.__module__.split(".")[0] == "mlflow" for c in type(e).__mro__)


def _first_line(e: BaseException) -> str:
    from ..validation import printable

    return printable((str(e).strip().splitlines() or [type(e).__name__])[0])[:500]


#: What to do after a stop that left no summary (a Ctrl-C before Tune, a SIGTERM).
_AGAIN = ("run the same command again to go on (with --resume once the sweep is recorded in its --storage-path: "
          "without it, the command says so)")


def sweep_main(spec: SweepSpec, argv: Sequence[str] | None = None) -> None:
    """Entry point of ``sweeps/<name>.py``: run, print a summary, exit non-zero if trials errored
    (a user error: one line on stderr, exit 2)."""
    from ..validation import printable

    with _sigterm_noted():   # a SIGTERM inside ray.wait came out as SystemExit(1): noted, it is still one
        try:
            res = run_sweep(spec, parse_options(spec, argv))
        except UserError as e:
            print(f"{spec.name}: {printable(str(e))}", file=sys.stderr)
            sys.exit(2)
        except SystemExit as e:
            # argparse's own exits (--help, a bad flag) go on; a SIGTERM's: exit 15 from the handler
            # (ray.init's, or _sigterm_noted's), or SystemExit(1) from Ray when it met the handler
            # inside ray.wait (noted then)
            if _stop_signal_of(e) != "SIGTERM":
                raise
            # the runs it had open are KILLED (run_sweep); said, with what to do
            print(f"{spec.name}: terminated (SIGTERM); the runs it had open in MLflow are ended KILLED; {_AGAIN}",
                  file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        except KeyboardInterrupt:
            # Ctrl-C before Tune took SIGINT over (Ray starting, the checks, the Tuner being made) or a
            # second one while the sweep ended: a KeyboardInterrupt traceback (Tune's own stop and one
            # during the evaluations are summaries, exit 130 too); the runs it had opened are KILLED
            print(f"{spec.name}: aborted (SIGINT); {_AGAIN}", file=sys.stderr)
            sys.exit(130)
        except Exception as e:
            # the machine or a server failed (MLflow refused a call, a disk, the network): one line with
            # its own words, exit 1 (the input was fine), as the meta-study command does; a bug keeps
            # its traceback, and META_STUDY_TRACEBACK=1 shows where any of them came from
            if os.environ.get("META_STUDY_TRACEBACK") or not _machine_error(e):
                raise
            print(f"{spec.name}: error: {_first_line(e)} (META_STUDY_TRACEBACK=1 shows where)", file=sys.stderr)
            sys.exit(1)
    print(json.dumps({"sweep": res.name, "trials": res.trials, "finished": res.finished, "errored": res.errored,
                      "early_stopped": res.early_stopped, "eval_failed": res.eval_failed,
                      "unevaluable": res.unevaluable, "settled": res.settled,
                      "orphaned": res.orphaned, "interrupted": res.interrupted, "resumed": res.resumed,
                      "reconciled": res.reconciled, "unreconciled": res.unreconciled,
                      "seconds": round(res.seconds, 1), "tune_dir": res.experiment_dir,
                      "tracking_uri": res.tracking_uri, "experiment": res.experiment,
                      "mlflow_parent_run": res.parent_run_id}, indent=1))
    print(browse_line(res.tracking_uri, res.experiment_id))
    if res.finished:
        print(f"next: meta-study ingest {shlex.quote(res.tracking_uri)} --experiment {shlex.quote(res.experiment)} "
              "--store STORE")
    for tid, line, where in res.errors[:20]:
        print(f"trial {tid} errored: {line} (traceback: {where})", file=sys.stderr)
    if len(res.errors) > 20:
        print(f"... and {len(res.errors) - 20} more errored trials (error.txt in each trial directory)", file=sys.stderr)
    if res.stop_signal:
        print(f"{spec.name}: interrupted ({res.stop_signal}): {res.interrupted} unfinished trial(s) ended KILLED with "
              "the tag meta_study.status=interrupted (ingest leaves them out); run the same command with --resume to "
              "continue them from their last checkpoints", file=sys.stderr)
        if res.dropped:    # --resume does not bring these back: said, as at a sweep's end
            print(_dropped_line(spec.name, res.dropped), file=sys.stderr)
        sys.exit(130)   # the shell's code for a process ended by SIGINT
    if res.unevaluable:
        # no resume changes this: they exited 1 with "--resume retries them", and a script resuming
        # until exit 0 never stopped
        print(f"{res.unevaluable} early-stopped trial(s) stopped before their first checkpoint: nothing to evaluate, "
              "on this or any resume (tag meta_study.eval_error on their runs)", file=sys.stderr)
    if res.eval_failed:
        print(f"{res.eval_failed} early-stopped trial(s) could not be evaluated: see the tag meta_study.eval_error on "
              "their runs; --resume retries them", file=sys.stderr)
    if res.unsent:
        print(f"{spec.name}: MLflow lacks part of what this sweep logged (the line above says what and why); run the "
              "same command with --resume to send what was spooled", file=sys.stderr)
    if res.dropped:
        print(_dropped_line(spec.name, res.dropped), file=sys.stderr)
    if res.unreconciled:
        print(_unreconciled_line(spec.name, res.unreconciled), file=sys.stderr)
    sys.exit(1 if res.errored or res.eval_failed or res.unsent or res.dropped or res.unreconciled else 0)


def _unreconciled_line(name: str, why: str) -> str:
    """The sweep's line when its runs left open could not be settled (``SweepResult.unreconciled``)."""
    return (f"{name}: the end-of-sweep check of MLflow's runs against Tune's record could not run ({why}): a run an "
            "earlier driver left open may still be RUNNING, or a trial's run missing (ingest reads FINISHED runs "
            "only); the counts above are the driver's. Once MLflow answers, run the same command with --resume to "
            "run the check (finished trials are not trained again)")
