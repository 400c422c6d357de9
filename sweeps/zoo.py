"""The model zoo that feeds the meta-study: thousands of heterogeneous configurations.

    python sweeps/zoo.py --smoke --num-samples 3                       # CPU, ~3 minutes
    ray job submit --working-dir . -- python sweeps/zoo.py --num-samples 2000 \\
        --gpus-per-trial 0.5 --max-concurrent 64                        # two small trials per GPU

Families ViT / Mixer / ResNet at several sizes, Adam or SGD, lr, wd, head wd, head lr, epochs and
upstream data fraction, drawn by Optuna (TPE, define-by-run) so that family-specific knobs (patch
size for ViT and Mixer, momentum for SGD) exist only where they apply. Trials stopped early by
ASHA are evaluated from their last checkpoint, so every trial is a meta-study point. At full size
(32 px procedural task, 7-30 epochs) a trial takes 0.05-1 A100-hours: ~600 GPU-hours for 2,000.
"""

from typing import Any

from meta_study.tune.runner import SweepSpec, sweep_main

FULL = {"vit": ["vit_ti", "vit_s", "vit_b"], "mixer": ["mixer_s", "mixer_b"], "resnet": ["resnet_18", "resnet_50"]}
SMOKE = {"vit": ["vit_tiny_cpu"], "mixer": ["mixer_tiny_cpu"], "resnet": ["resnet_tiny_cpu"]}


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
        cfg["wd"] = trial.suggest_float("_wd", 1e-3, 0.3, log=True)
        cfg["head_wd"] = trial.suggest_float("_head_wd", 1e-4, 3.0, log=True)
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
    num_samples=2000,
    smoke_samples=3,
    base=dict(img_size=32, batch_size=512, eval_every=500),
    smoke=dict(eval_every=15),   # on top of runner.SMOKE
)

if __name__ == "__main__":
    sweep_main(SPEC)
