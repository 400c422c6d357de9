"""The model zoo that feeds the meta-study: thousands of heterogeneous configurations.

    python sweeps/zoo.py --smoke --num-samples 3                       # CPU, ~3 minutes
    python -m meta_study.tune.submit -- python sweeps/zoo.py --num-samples 2000 \\
        --storage-path s3://lab/meta-study/tune --gpus-per-trial 1 --max-concurrent 64

Families ViT / Mixer / ResNet at several sizes, Adam or SGD, lr, wd, head wd, head lr, epochs and
upstream data fraction, drawn by Optuna (TPE, define-by-run) so that family-specific knobs (patch
size for ViT and Mixer, momentum for SGD) exist only where they apply. Trials stopped early by
ASHA are evaluated from their last checkpoint, so every trial is a meta-study point. At full size
(32 px procedural task, 7-30 epochs) a trial takes 0.05-1 A100-hours: ~600 GPU-hours for 2,000.

Each trial is sized to its model (:func:`resources`): ``--gpus-per-trial`` is what the largest
models get (ViT-B, Mixer-B: one A100 at 32 px, batch 512), and smaller ones a share of it, so
four ViT-Ti or ResNet-18 trials share one GPU while a ViT-B has one to itself.
"""

import json
import math
import sys
import threading
from typing import Any, Callable, Mapping

from meta_study.tune.runner import SweepOptions, SweepSpec, TrialResources, sweep_main

FULL = {"vit": ["vit_ti", "vit_s", "vit_b"], "mixer": ["mixer_s", "mixer_b"], "resnet": ["resnet_18", "resnet_50"]}
SMOKE = {"vit": ["vit_tiny_cpu"], "mixer": ["mixer_tiny_cpu"], "resnet": ["resnet_tiny_cpu"]}


#: model -> (share of --gpus-per-trial, host memory in GiB) at full size (32 px, batch 512, one
#: A100 40 GB for the largest): activations and optimizer state scale with the parameter count
#: (ViT-Ti 5.7M, S 22M, B 86M; ResNet-18 11M, 50 25M; Mixer-S 18M, B 59M), and a quarter of an
#: A100 still keeps a ViT-Ti busy. For the 240 classes of ``synth_us``: a US task with more adds
#: its head (:func:`table_size`). Other models are sized from their parameter count (:func:`size_of`).
SIZES = {"vit_ti": (0.25, 4), "vit_s": (0.5, 6), "vit_b": (1.0, 12), "mixer_s": (0.5, 6), "mixer_b": (1.0, 12),
         "resnet_18": (0.25, 4), "resnet_50": (0.5, 8),
         # smoke models (CPU): the ResNet takes half a core, so the three families differ in the test
         "vit_tiny_cpu": (1.0, 0.25), "mixer_tiny_cpu": (1.0, 0.25), "resnet_tiny_cpu": (0.5, 0.25)}


#: The table's reference: ViT-B's parameters take a whole share and 12 GiB.
REFERENCE_PARAMS = 86e6
#: What a model gets whose parameters cannot be counted (one timm cannot build without weights).
UNKNOWN_SIZE = (1.0, 8.0)
#: The US task's classes the table is for (the procedural ``synth_us``); a task with more (a
#: 21,843-class ImageNet-21k) adds its larger head's parameters at 8 GiB per 86M (:func:`resources`).
TABLE_CLASSES = 240
#: The classes assumed when the US task's cannot be learned cheaply here (a task registered in
#: the trial's own code, a dataset this machine cannot read in :data:`COUNT_TIMEOUT_S`).
FALLBACK_CLASSES = 1000
#: Seconds the driver waits for a ``--dataset``'s class count (one listing of an imagefolder's
#: class folders, or a Parquet label column), once per dataset; then FALLBACK_CLASSES.
COUNT_TIMEOUT_S = 30.0
_COUNTED: dict[str, tuple[float, float]] = {}
_PARAMS: dict[str, int | None] = {}
_CLASSES: dict[str, int] = {}


def _imagefolder_classes(root: str, train_dir: object) -> int:
    """The class folders of ``load_imagefolder(root)``'s training split, listed, not scanned for
    images (ImageNet-21k: one listing of 21,843 names, not 14M files); the split folder and the
    names skipped are the loader's own (``disk._subdir``, ``disk._skipped``)."""
    import os
    from pathlib import Path

    from meta_study.train.disk import SPLIT_NAMES, TRAIN_DIRS, _skipped, _subdir

    top = Path(root)
    tr = _subdir(top, None if train_dir is None else str(train_dir), TRAIN_DIRS, "train") or top
    with os.scandir(tr) as it:   # scandir: the entry's type, no stat per entry (NFS)
        names = [e.name for e in it if e.is_dir()]
    n = sum(1 for name in names if not _skipped(name) and not (tr == top and name.lower() in SPLIT_NAMES))
    if n < 1:
        raise ValueError(f"{tr}: no class folders")
    return n


def _parquet_classes(train: str, label_column: str) -> int:
    """The distinct labels of a Parquet / Arrow training table's label column (read alone)."""
    import pyarrow.compute as pc

    from meta_study.train.disk import _read_table   # the loader's own reader: globs, IPC, HF folders

    table, _ = _read_table(train, [label_column])
    return int(pc.count_distinct(table.column(label_column)).as_py())


def _synth_classes(name: str, img_size: int, kwargs: Mapping[str, Any]) -> int:
    """A built-in procedural task's classes, from the task built at a few examples (~10 ms)."""
    from meta_study.train.data import get_task, task_kwargs

    tiny = task_kwargs(name, {"n_train": 2, "n_test": 2, "n_train_per_class": 1, "cache_mb": 0})
    return get_task(name, img_size=img_size, seed=0, **{**task_kwargs(name, kwargs), **tiny}).num_classes


def _within(fn: Callable[[], int], seconds: float) -> int:
    """``fn()`` in a daemon thread, TimeoutError after ``seconds`` (a hung network mount is left
    to its thread, which ends nothing and blocks no exit)."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_call(fn)), daemon=True, name="zoo-count-classes")
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
    from meta_study.train import DS_TASKS, TrainConfig

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
            print(f"zoo: could not count the classes of US task {name!r} here ({why}); trials are sized for "
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

            from meta_study.train import create_model

            with torch.device("meta"):
                _, info = create_model(str(config.get("model_name")), num_classes=num_classes,
                                       img_size=int(config.get("img_size") or 32), **model_kwargs)
            _PARAMS[key] = int(info.param_count)
        except Exception:  # noqa: BLE001 - a model that cannot be built here: the trial reports why
            _PARAMS[key] = None
    return _PARAMS[key]


def _share(params: float) -> float:
    return min(1.0, max(0.25, math.ceil(params / REFERENCE_PARAMS * 4) / 4))


def _memory_gb(params: float) -> float:
    return math.ceil(8 * params / REFERENCE_PARAMS * 2) / 2


def size_of(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(share, host memory in GiB) of a model not in :data:`SIZES` (``vit_l``,
    ``resnetv2_101x3_bit``), from its parameter count as the trial builds it (with its US task's
    classes, :func:`us_classes`): a quarter share per quarter of ViT-B's parameters (at least a
    quarter, at most the whole), and 4 GiB plus 8 GiB per ViT-B (ViT-L, 304M: a whole share and
    32.5 GiB; it got ViT-B's share and 8 GiB, less than ViT-B's 12). Counted with 1,000 classes
    whatever the task, a 21,843-class ImageNet-21k head under-asked by up to 12 GiB
    (``resnetv2_101x3_bit``: 40.5 GiB asked, 52.5 needed)."""
    key = json.dumps([config.get("model_name"), config.get("img_size"), dict(config.get("model_kwargs") or {}),
                      us_classes(config, datasets)], sort_keys=True, default=str)
    if key not in _COUNTED:
        n = param_count(config, us_classes(config, datasets))
        _COUNTED[key] = UNKNOWN_SIZE if n is None else (_share(n), 4 + _memory_gb(n))
    return _COUNTED[key]


def table_size(config: Mapping[str, Any], datasets: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(share, host memory in GiB) of a model in :data:`SIZES`: the table's, for a US task of at
    most :data:`TABLE_CLASSES` classes; with more, the larger head's extra parameters add 8 GiB
    per 86M (ViT-B on ImageNet-21k: 16.6M more, 13.5 GiB; ResNet-50: 44M more, a whole share)."""
    share, memory_gb = SIZES[str(config.get("model_name"))]
    k = us_classes(config, datasets)
    if k <= TABLE_CLASSES:
        return share, memory_gb
    big, small = param_count(config, k), param_count(config, TABLE_CLASSES)
    if big is None or small is None:
        return share, memory_gb
    return max(share, _share(big)), memory_gb + _memory_gb(max(0, big - small))


def resources(config: Mapping[str, Any], options: SweepOptions) -> TrialResources:
    """A trial's resources from its model: a share of ``--gpus-per-trial`` (GPU runs) or of
    ``--cpus-per-trial`` (CPU runs: the smoke models), and host memory to match."""
    name = str(config.get("model_name"))
    sized = table_size if name in SIZES else size_of
    share, memory_gb = sized(config, options.datasets)
    cpus = options.cpus_per_trial if options.cpus_per_trial is not None else 1.0
    if options.gpus_per_trial:
        return TrialResources(cpu=cpus, gpu=round(options.gpus_per_trial * share, 4), memory_gb=memory_gb)
    return TrialResources(cpu=round(cpus * share, 4), memory_gb=memory_gb)


#: Weight decay ranges per optimizer (log-uniform). The decay is decoupled and multiplied by the
#: scheduled lr (``train.optim``: ``p <- p * (1 - lr_t * wd)`` each step), and SGD's lr is ~100x
#: Adam's, so SGD draws its decays 30x lower (ResNet practice, 5e-4 coupled with momentum 0.9, is
#: ~5e-3 here): a step shrinks the body by at most 0.3% (Adam 0.09%) and the head by at most 30%
#: (``head_lr`` 3 x ``head_wd`` 0.1; Adam 9%). Drawn on Adam's scale, an SGD trial's ``lr_t *
#: head_wd`` reached 9: the head's weights were zeroed or flipped each step (``lr * wd >= 1``) in 1
#: SGD draw in 90, and grew up to 8x a step in 1 in 280 (a ViT-Ti's loss was 1e18 after 40 steps, its
#: accuracies chance; past float32's range within ~45 steps, the trial diverges).
WD_RANGE = {"adam": (1e-3, 0.3), "sgd": (3e-5, 1e-2)}
HEAD_WD_RANGE = {"adam": (1e-4, 3.0), "sgd": (3e-6, 0.1)}


class ZooSpace:
    """Optuna define-by-run space (a class, not a closure: Tune pickles the searcher).

    Optuna's own suggestion names start with '_' so that the trial function leaves them out of the
    model's config; the returned dict holds the TrainConfig values they imply.
    """

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke

    def __call__(self, trial: Any) -> dict[str, Any]:
        sizes = SMOKE if self.smoke else FULL
        family = trial.suggest_categorical("_family", sorted(sizes))
        cfg: dict[str, Any] = {"model_name": trial.suggest_categorical(f"_{family}_model", sizes[family])}
        if family in ("vit", "mixer") and not self.smoke:
            cfg["model_kwargs"] = {"patch_size": trial.suggest_categorical(f"_{family}_patch", [4, 8])}
        cfg["optimizer"] = trial.suggest_categorical("_optimizer", ["adam", "sgd"])
        if cfg["optimizer"] == "sgd":
            cfg["momentum"] = trial.suggest_float("_momentum", 0.8, 0.95)
            cfg["lr"] = trial.suggest_float("_sgd_lr", 1e-2, 3e-1, log=True)
        else:
            cfg["lr"] = trial.suggest_float("_adam_lr", 1e-4, 3e-3, log=True)
        opt = cfg["optimizer"]
        cfg["wd"] = trial.suggest_float(f"_{opt}_wd", *WD_RANGE[opt], log=True)
        cfg["head_wd"] = trial.suggest_float(f"_{opt}_head_wd", *HEAD_WD_RANGE[opt], log=True)
        cfg["head_lr"] = cfg["lr"] * trial.suggest_float("_head_lr_mult", 0.1, 10.0, log=True)
        cfg["data_fraction"] = trial.suggest_categorical("_data_fraction", [0.25, 0.5, 1.0])
        cfg["epochs"] = trial.suggest_categorical("_epochs", [1, 2] if self.smoke else [7, 14, 30])
        cfg["seed"] = trial.suggest_int("_seed", 0, 2**16)
        return cfg


SPEC = SweepSpec(
    name="zoo",
    doc=__doc__,
    space=lambda options: ZooSpace(options.smoke),
    search="optuna",
    scheduler="asha",
    resources=resources,
    num_samples=2000,
    smoke_samples=3,
    base=dict(img_size=32, batch_size=512, eval_every=500),
    smoke=dict(eval_every=15),   # on top of runner.SMOKE
)

if __name__ == "__main__":
    sweep_main(SPEC)
