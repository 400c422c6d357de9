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

from typing import Any, Mapping

from meta_study.tune.runner import SweepOptions, SweepSpec, TrialResources, sweep_main

FULL = {"vit": ["vit_ti", "vit_s", "vit_b"], "mixer": ["mixer_s", "mixer_b"], "resnet": ["resnet_18", "resnet_50"]}
SMOKE = {"vit": ["vit_tiny_cpu"], "mixer": ["mixer_tiny_cpu"], "resnet": ["resnet_tiny_cpu"]}


#: model -> (share of --gpus-per-trial, host memory in GiB) at full size (32 px, batch 512, one
#: A100 40 GB for the largest): activations and optimizer state scale with the parameter count
#: (ViT-Ti 5.7M, S 22M, B 86M; ResNet-18 11M, 50 25M; Mixer-S 18M, B 59M), and a quarter of an
#: A100 still keeps a ViT-Ti busy. Other models are sized from their parameter count
#: (:func:`size_of`).
SIZES = {"vit_ti": (0.25, 4), "vit_s": (0.5, 6), "vit_b": (1.0, 12), "mixer_s": (0.5, 6), "mixer_b": (1.0, 12),
         "resnet_18": (0.25, 4), "resnet_50": (0.5, 8),
         # smoke models (CPU): the ResNet takes half a core, so the three families differ in the test
         "vit_tiny_cpu": (1.0, 0.25), "mixer_tiny_cpu": (1.0, 0.25), "resnet_tiny_cpu": (0.5, 0.25)}


#: The table's reference: ViT-B's parameters take a whole share and 12 GiB.
REFERENCE_PARAMS = 86e6
#: What a model gets whose parameters cannot be counted (one timm cannot build without weights).
UNKNOWN_SIZE = (1.0, 8.0)
_COUNTED: dict[str, tuple[float, float]] = {}


def size_of(config: Mapping[str, Any]) -> tuple[float, float]:
    """(share, host memory in GiB) of a model not in :data:`SIZES` (``vit_l``,
    ``resnetv2_101x3_bit``), from its parameter count as the trial builds it, on PyTorch's meta
    device (no memory, no weights, under 2 s; once per model): a quarter share per quarter of
    ViT-B's parameters (at least a quarter, at most the whole), and 4 GiB plus 8 GiB per ViT-B
    (ViT-L, 304M: a whole share and 32.5 GiB; it got ViT-B's share and 8 GiB, less than ViT-B's 12)."""
    import json
    import math

    model_kwargs = dict(config.get("model_kwargs") or {})
    key = json.dumps([config.get("model_name"), config.get("img_size"), model_kwargs], sort_keys=True, default=str)
    if key not in _COUNTED:
        try:
            import torch

            from meta_study.train import create_model

            with torch.device("meta"):
                _, info = create_model(str(config.get("model_name")), num_classes=1000,
                                       img_size=int(config.get("img_size") or 32), **model_kwargs)
            ratio = info.param_count / REFERENCE_PARAMS
            _COUNTED[key] = (min(1.0, max(0.25, math.ceil(ratio * 4) / 4)), math.ceil((4 + 8 * ratio) * 2) / 2)
        except Exception:  # noqa: BLE001 - a model that cannot be built here: the trial reports why
            _COUNTED[key] = UNKNOWN_SIZE
    return _COUNTED[key]


def resources(config: Mapping[str, Any], options: SweepOptions) -> TrialResources:
    """A trial's resources from its model: a share of ``--gpus-per-trial`` (GPU runs) or of
    ``--cpus-per-trial`` (CPU runs: the smoke models), and host memory to match."""
    name = str(config.get("model_name"))
    share, memory_gb = SIZES[name] if name in SIZES else size_of(config)
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
