"""The model zoo that feeds the meta-study: thousands of heterogeneous configurations.

    python sweeps/zoo.py --smoke --num-samples 3                       # CPU, ~3 minutes
    python -m meta_study.tune.submit -- python sweeps/zoo.py --num-samples 2000 \\
        --storage-path s3://lab/meta-study/tune --gpus-per-trial 1 --max-concurrent 64

Families ViT / Mixer / ResNet at several sizes, Adam or SGD, lr, wd, head wd, head lr, epochs and
upstream data fraction, drawn by Optuna (TPE, define-by-run) so that family-specific knobs (patch
size for ViT and Mixer, momentum for SGD) exist only where they apply. Trials stopped early by
ASHA are evaluated from their last checkpoint, so every trial is a meta-study point. At full size
(32 px procedural task, 7-30 epochs) a trial takes 0.05-1 A100-hours: ~600 GPU-hours for 2,000.

Each trial is sized to its model (``meta_study.tune.sizing``): ``--gpus-per-trial`` is what the
largest models get (ViT-B, Mixer-B: one A100 at 32 px, batch 512), and smaller ones a share of it,
so four ViT-Ti or ResNet-18 trials share one GPU while a ViT-B has one to itself.
"""

from typing import Any

from meta_study.tune.runner import SweepSpec, sweep_main
from meta_study.tune.sizing import resources   # by model: a share of --gpus-per-trial, host memory

FULL = {"vit": ["vit_ti", "vit_s", "vit_b"], "mixer": ["mixer_s", "mixer_b"], "resnet": ["resnet_18", "resnet_50"]}
SMOKE = {"vit": ["vit_tiny_cpu"], "mixer": ["mixer_tiny_cpu"], "resnet": ["resnet_tiny_cpu"]}


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
