"""What one trial of a timm model asks Ray for: a share of a GPU (or CPU) and host memory, from its size.

Every sweep of ``sweeps/`` passes :func:`resources` as its ``SweepSpec.resources``, the same one
at full size and in ``--smoke`` (``head_wd.py`` and ``head_lr.py`` reserved no memory for their
fixed model, and ``scaling.py``'s smoke trials were unsized where the zoo's were sized). Units: a
*share* is a fraction of the options' per-trial figure (``--gpus-per-trial`` on a GPU run,
``--cpus-per-trial`` on a CPU one), 0.25 to 1, so that ``--gpus-per-trial 1`` puts four ViT-Ti
trials on one GPU and gives a ViT-B one to itself; memory is GiB of host RAM (Ray's ``memory``
resource: reserved for placement, not a limit).

The rule, in one place. The table (:data:`SIZES`) is for 32 px, batch 512 and the 240 classes of
the procedural ``synth_us``, measured against one A100 40 GB for the largest models: activations
and optimizer state grow with the parameter count P, so, with ViT-B's P_ref = 86M as the unit,

    share(P)  = clip(ceil(4 P / P_ref) / 4, 0.25, 1)       (quarter shares)
    memory(P) = ceil(16 P / P_ref) / 2  GiB                 (8 GiB per P_ref, in half GiB)

A model outside the table gets ``share(P)`` and ``4 + memory(P)`` (a 4 GiB floor for the process:
ViT-L, 304M, a whole share and 32.5 GiB). A tabled model on a US task of more classes keeps its
entry grown by its larger head, ``max(share, share(P_k))`` and ``memory + memory(P_k - P_240)``
(ViT-B on ImageNet-21k's 21,843 classes: 16.6M more parameters, 14 GiB). P counts the head of the
trial's own US task.

What a sweep says. Each trial size is said once on stderr at the sweep's start (:func:`sharing_line`,
from :func:`resources`, which the driver calls for every config the space can give before Ray
runs any): on a GPU run the GPU fraction and how many such trials share one GPU (Ray divides the
GPU's count, not its memory), the CPUs, the host memory Ray reserves, and whether the size is the
table's (grown for a larger head) or estimated from the parameter count, with the count.

Costs. A tabled model on the default task: a table lookup and one ~10 ms count of the task's
classes. Otherwise the model is built once on PyTorch's meta device (no memory, no weights, 0.3-2 s;
imports torch and timm), and a ``--dataset``'s classes are learned without loading it (one listing
of an imagefolder's class folders, or a Parquet label column read: at most :data:`COUNT_TIMEOUT_S`).
Both are remembered per model and per task for the life of the process, so a 2,000-trial sweep
pays them once per model. Sizing does not fail on a model or a task: one that cannot be built here is
:data:`UNKNOWN_SIZE`, a task whose classes cannot be counted is :data:`FALLBACK_CLASSES` (said once
on stderr), and the trial itself reports what is wrong with either.

:func:`resources` is a module-level function of an importable module: Tune pickles it with the
trainable by reference, and a worker imports it from ``meta_study`` (not from ``sweeps/``).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .runner import SweepOptions, TrialResources, current_sweep

#: model -> (share of the per-trial GPUs or CPUs, host memory in GiB) at full size (32 px, batch
#: 512, one A100 40 GB for the largest, 240 US classes). Parameter counts: ViT-Ti 5.7M, S 22M, B
#: 86M; ResNet-18 11M, 50 25M; Mixer-S 18M, B 59M. A quarter of an A100 still keeps a ViT-Ti busy.
SIZES: dict[str, tuple[float, float]] = {
    "vit_ti": (0.25, 4), "vit_s": (0.5, 6), "vit_b": (1.0, 12), "mixer_s": (0.5, 6), "mixer_b": (1.0, 12),
    "resnet_18": (0.25, 4), "resnet_50": (0.5, 8),
    # smoke models (CPU): the ResNet takes half a core, so the three families differ in the test
    "vit_tiny_cpu": (1.0, 0.25), "mixer_tiny_cpu": (1.0, 0.25), "resnet_tiny_cpu": (0.5, 0.25),
    # scaling.py's second smoke size (0.8M params): outside the table the rule's 4 GiB process floor
    # would make it ask 4.5 GiB, one smoke trial at a time on an 8 GiB machine
    "vit_small_cpu": (1.0, 0.25)}

#: The table's unit: ViT-B's parameters take a whole share and 8 GiB (12 with the 4 GiB floor).
REFERENCE_PARAMS = 86e6
#: (share, GiB) of a model whose parameters cannot be counted (one timm cannot build without weights).
UNKNOWN_SIZE = (1.0, 8.0)
#: The US classes the table is for (the procedural ``synth_us``).
TABLE_CLASSES = 240
#: The classes assumed when the US task's cannot be learned cheaply here (a task registered in
#: the trial's own code, a dataset this machine cannot read in :data:`COUNT_TIMEOUT_S`).
FALLBACK_CLASSES = 1000
#: Seconds the driver waits for a ``--dataset``'s class count, once per dataset; then FALLBACK_CLASSES.
COUNT_TIMEOUT_S = 30.0

_PARAMS: dict[str, int | None] = {}   # param_count's answers, by model, img_size, kwargs and classes
_CLASSES: dict[str, int] = {}         # us_classes' answers, by task, kwargs, dataset and img_size


# ---------------------------------------------------------------------------------------------
# The rule: pure functions of a parameter count
# ---------------------------------------------------------------------------------------------


def share_of_params(params: float) -> float:
    """The share (of the per-trial GPUs or CPUs) of a model of ``params`` parameters: a quarter per
    quarter of :data:`REFERENCE_PARAMS`, at least 0.25, at most 1."""
    return min(1.0, max(0.25, math.ceil(params / REFERENCE_PARAMS * 4) / 4))


def memory_gb_of_params(params: float) -> float:
    """Host memory in GiB for ``params`` parameters: 8 GiB per :data:`REFERENCE_PARAMS`, rounded up
    to half a GiB (no floor: :func:`size_from_params` adds the process's 4 GiB)."""
    return math.ceil(8 * params / REFERENCE_PARAMS * 2) / 2


def size_from_params(params: int | None) -> tuple[float, float]:
    """(share, host memory in GiB) of a model outside :data:`SIZES` with ``params`` parameters
    (head included): :func:`share_of_params`, and 4 GiB plus :func:`memory_gb_of_params`;
    :data:`UNKNOWN_SIZE` for None (not countable)."""
    return UNKNOWN_SIZE if params is None else (share_of_params(params), 4 + memory_gb_of_params(params))


def size_with_head(table: tuple[float, float], params: int | None, table_params: int | None) -> tuple[float, float]:
    """(share, host memory in GiB) of a tabled model (its entry ``table``) on a US task of more than
    :data:`TABLE_CLASSES` classes: ``params`` with that task's head, ``table_params`` with the
    table's. At least the share ``params`` asks, and the extra parameters' memory added; the table's
    entry if either count is None."""
    share, memory_gb = table
    if params is None or table_params is None:
        return share, memory_gb
    return max(share, share_of_params(params)), memory_gb + memory_gb_of_params(max(0, params - table_params))


def request(share: float, memory_gb: float, options: SweepOptions) -> TrialResources:
    """What a trial of ``share`` and ``memory_gb`` asks for under ``options``: on a GPU run
    (``--gpus-per-trial`` above 0) all of ``--cpus-per-trial`` (default 1) and ``share`` of the GPUs;
    on a CPU run ``share`` of the CPUs. Shares rounded to 4 decimals."""
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else 1.0
    if options.gpus_per_trial:
        return TrialResources(cpu=cpus, gpu=round(options.gpus_per_trial * share, 4), memory_gb=memory_gb)
    return TrialResources(cpu=round(cpus * share, 4), memory_gb=memory_gb)


# ---------------------------------------------------------------------------------------------
# What the rule needs: a model's parameters and its US task's classes, learned once each
# ---------------------------------------------------------------------------------------------


def _imagefolder_classes(root: str, train_dir: object) -> int:
    """The class folders of ``load_imagefolder(root)``'s training split (listed, not scanned)."""
    from ..train import disk

    return disk.imagefolder_class_count(root, None if train_dir is None else str(train_dir))


def _parquet_classes(train: str, label_column: str) -> int:
    """The distinct labels of a Parquet / Arrow training table's label column (read alone)."""
    from ..train import disk

    return disk.parquet_class_count(train, label_column)


def _synth_classes(name: str, img_size: int, kwargs: Mapping[str, Any]) -> int:
    """A built-in procedural task's classes, from the task built at a few examples (~10 ms)."""
    from ..train.data import get_task, task_kwargs

    tiny = task_kwargs(name, {"n_train": 2, "n_test": 2, "n_train_per_class": 1, "cache_mb": 0})
    return get_task(name, img_size=img_size, seed=0, **{**task_kwargs(name, kwargs), **tiny}).num_classes


def _within(fn: Callable[[], int], seconds: float) -> int:
    """``fn()`` in a daemon thread, TimeoutError after ``seconds`` (a hung network mount is left
    to its thread, which ends nothing and blocks no exit)."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_call(fn)), daemon=True, name="sizing-count-classes")
    thread.start()
    thread.join(seconds)
    if not box:
        raise TimeoutError(f"no answer in {seconds:g} s")
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _call(fn: Callable[[], int]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
        return False, e


def us_classes(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> int:
    """The classes of the US task a trial of ``config`` builds its model's head for, learned
    without loading its data: a built-in procedural task is built at a few examples, a
    ``--dataset`` (``datasets``, ``{name: "imagefolder:PATH" | "parquet:TRAIN[,TEST]"}``) has its
    class folders listed or its label column read (at most :data:`COUNT_TIMEOUT_S`); anything
    else, or a failure (said once on stderr), is :data:`FALLBACK_CLASSES`. Once per task, its
    kwargs and its dataset."""
    from ..train import DS_TASKS, TrainConfig

    name = str(config.get("us_task") or TrainConfig.us_task)
    kwargs = dict(config.get("us_task_kwargs") or {})
    spec = (datasets or {}).get(name)
    img_size = config.get("img_size") or 32
    key = json.dumps([name, kwargs, spec, img_size], sort_keys=True, default=str)
    if key not in _CLASSES:
        try:
            if spec is not None:
                kind, _, path = str(spec).partition(":")
                if kind == "imagefolder":
                    n = _within(lambda: _imagefolder_classes(path, kwargs.get("train_dir")), COUNT_TIMEOUT_S)
                elif kind == "parquet":
                    train = path.partition(",")[0]
                    n = _within(lambda: _parquet_classes(train, str(kwargs.get("label_column", "label"))),
                                COUNT_TIMEOUT_S)
                else:
                    raise ValueError(f"unknown dataset kind {kind!r}")
            elif name in ("synth_us", *DS_TASKS):   # the procedural suite (meta_study.train.synth)
                n = _synth_classes(name, int(img_size), kwargs)
            else:   # a task of the trial's own code: building it here may load its whole dataset
                raise LookupError("not a --dataset nor a built-in task")
            _CLASSES[key] = n
        except Exception as e:  # noqa: BLE001 - sizing never stops the sweep; the trial reports a bad task
            why = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e).strip() else type(e).__name__
            print(f"sizing: could not count the classes of US task {name!r} here ({why}); trials are sized for "
                  f"{FALLBACK_CLASSES:,} classes", file=sys.stderr)
            _CLASSES[key] = FALLBACK_CLASSES
    return _CLASSES[key]


def param_count(config: Mapping[str, Any], num_classes: int) -> int | None:
    """The parameters of ``config``'s model with a head of ``num_classes``, built on PyTorch's meta
    device (no memory, no weights, under 2 s; once per model); None when it cannot be built here."""
    model_kwargs = dict(config.get("model_kwargs") or {})
    key = json.dumps([config.get("model_name"), config.get("img_size"), model_kwargs, num_classes],
                     sort_keys=True, default=str)
    if key not in _PARAMS:
        try:
            import torch

            from ..train import create_model

            with torch.device("meta"):
                _, info = create_model(str(config.get("model_name")), num_classes=num_classes,
                                       img_size=int(config.get("img_size") or 32), **model_kwargs)
            _PARAMS[key] = int(info.param_count)
        except Exception:  # noqa: BLE001 - a model that cannot be built here: the trial reports why
            _PARAMS[key] = None
    return _PARAMS[key]


# ---------------------------------------------------------------------------------------------
# A trial's size and request
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialSize:
    """A trial's size before the options apply: ``share`` (of the per-trial GPUs or CPUs),
    ``memory_gb`` (host memory, GiB) and ``basis``, how they were found, in words for the run-time
    line (:func:`sharing_line`): the table's entry, the entry grown by a larger head, or an
    estimate from the parameter count (outside the table), with the numbers that made it."""

    share: float
    memory_gb: float
    basis: str


def _millions(params: float) -> str:
    """``303.4M``; ``86M`` (a round count)."""
    return f"{params / 1e6:.1f}".removesuffix(".0") + "M"


def size_of(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(share, host memory in GiB) of a model not in :data:`SIZES` (``vit_l``,
    ``resnetv2_101x3_bit``), from its parameter count as the trial builds it, with its US task's
    classes (:func:`us_classes`, :func:`size_from_params`): ViT-L (304M) a whole share and 32.5 GiB;
    ``resnetv2_101x3_bit`` on a 21,843-class ImageNet-21k 52.5 GiB."""
    size = estimated_size(config, datasets)
    return size.share, size.memory_gb


def estimated_size(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> TrialSize:
    """:func:`size_of` with its basis: the parameter count and the rule, or why there is none."""
    model, k = str(config.get("model_name")), us_classes(config, datasets)
    params = param_count(config, k)
    share, memory_gb = size_from_params(params)
    if params is None:
        return TrialSize(share, memory_gb, f"the default for an unknown size: {model} is not in the sizing table, "
                                           "and it could not be built here to count its parameters")
    return TrialSize(share, memory_gb,
                     f"an estimate from its parameter count ({model} is not in the sizing table): {_millions(params)} "
                     f"with a {k:,}-class head, 4 GiB for the process + 8 GiB per {_millions(REFERENCE_PARAMS)} "
                     f"parameters, a quarter share per {_millions(REFERENCE_PARAMS / 4)} (0.25 to 1)")


def table_size(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(share, host memory in GiB) of a model in :data:`SIZES`: the table's, for a US task of at
    most :data:`TABLE_CLASSES` classes; with more, grown by the larger head (:func:`size_with_head`:
    ViT-B on ImageNet-21k 14 GiB; ResNet-50 a whole share and 12.5 GiB)."""
    size = tabled_size(config, datasets)
    return size.share, size.memory_gb


def tabled_size(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> TrialSize:
    """:func:`table_size` with its basis: the table's entry, and a larger head's parameters if any."""
    model = str(config.get("model_name"))
    table = SIZES[model]
    k = us_classes(config, datasets)
    entry = f"the sizing table ({model}: a {table[0]:g} share, {table[1]:g} GiB)"
    if k <= TABLE_CLASSES:
        return TrialSize(*table, entry)
    params, table_params = param_count(config, k), param_count(config, TABLE_CLASSES)
    share, memory_gb = size_with_head(table, params, table_params)
    if params is None or table_params is None:
        return TrialSize(share, memory_gb, f"{entry}; its {k:,}-class head could not be counted here")
    return TrialSize(share, memory_gb,
                     f"{entry}, grown for a {k:,}-class head's {_millions(max(0, params - table_params))} more "
                     f"parameters than at {TABLE_CLASSES} classes, at 8 GiB per {_millions(REFERENCE_PARAMS)}")


def trial_size(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> TrialSize:
    """A trial's :class:`TrialSize`: :func:`tabled_size` for a model in :data:`SIZES`, else
    :func:`estimated_size`."""
    return (tabled_size if str(config.get("model_name")) in SIZES else estimated_size)(config, datasets)


def sharing_line(model: str, request: TrialResources, basis: str) -> str:
    """What a trial of ``model`` asks for, in one line: on a GPU run its GPU (and how many such
    trials share one GPU; Ray divides a GPU's count, not its memory, which they share), its CPUs,
    and the host memory Ray reserves for it (its ``memory`` resource), with how that was sized."""
    gpu = ""
    if request.gpu:
        together = math.floor(1 / request.gpu + 1e-9)   # whole trials per GPU; a fraction's rest stays idle
        shared = (f"{together} trials per GPU, which share its memory: Ray does not divide it" if together > 1
                  else "a GPU to itself" if request.gpu <= 1 else "GPUs of its own")
        gpu = f"{request.gpu:g} GPU{'s' if request.gpu > 1 else ''} ({shared}), "
    return (f"sizing: {model} trials ask {gpu}{request.cpu:g} CPU{'s' if request.cpu != 1 else ''} and "
            f"{request.memory_gb:g} GiB of host memory (reserved) each; sized by {basis}")


#: sharing line -> the sweep (runner's current_sweep) it was last said in: once per sweep, however
#: many trials ask (Tune asks again for each), and again in the process's next sweep
_SAID: dict[str, int] = {}


def resources(config: Mapping[str, Any], options: SweepOptions) -> TrialResources:
    """A trial's resources from its model (``config["model_name"]``, with its ``img_size``,
    ``model_kwargs`` and US task): a share of ``--gpus-per-trial`` (GPU runs) or of
    ``--cpus-per-trial`` (CPU runs: the smoke models), and host memory in GiB to match
    (:func:`trial_size`; :func:`request`). A ``SweepSpec.resources``: Tune pickles it by reference.

    The first time a size is asked for in a sweep (runner's :func:`current_sweep`),
    :func:`sharing_line` is said on stderr: the driver sizes every trial its space can give before
    Ray starts any (runner's ``trial_requests``), so each sweep says each of its trial sizes once,
    at its start, and a second sweep of the same process says them again."""
    size = trial_size(config, options.datasets)
    asked = request(size.share, size.memory_gb, options)
    line = sharing_line(str(config.get("model_name")), asked, size.basis)
    sweep = current_sweep()
    if _SAID.get(line) != sweep:
        _SAID[line] = sweep
        print(line, file=sys.stderr)
    return asked
