"""Appendix C.2: sweep the head's learning rate (a multiple of the body's) with everything else fixed.

    python sweeps/head_lr.py --smoke                                   # CPU, ~2 minutes, 2 trials
    python -m meta_study.tune.submit -- python sweeps/head_lr.py \\
        --storage-path s3://lab/meta-study/tune --gpus-per-trial 1     # 5 x 3 = 15 trials

Full size: ViT-S/4 at 32 px (an 8x8 patch grid) on the procedural upstream task, 30 epochs (the
paper's 7 are of JFT's ~2 billion images; see head_wd.py), body lr 8e-4; head lr from 0.1x to 10x the
body's. About 0.3 A100-hours per trial (~5 GPU-hours in all). Each trial is sized to its model
(``meta_study.tune.sizing``, as every sweep's): ``--gpus-per-trial 1`` gives the ViT-S half a GPU and
6 GiB of host memory.
"""

import numbers

from meta_study.errors import UserError
from meta_study.tune.runner import PATCH_32PX, SweepOptions, SweepSpec, grid, sweep_main
from meta_study.tune.sizing import resources   # by model: a share of --gpus-per-trial, host memory (said at start)

BODY_LR = 8e-4
SMOKE_LR = 2e-3


def body_lr(options: SweepOptions) -> float:
    """The body's lr, which the head's multiples are of: ``--set lr=`` when given (the multiples
    were of 8e-4 whatever the body's was: 0.08x to 8x with ``--set lr=1e-3``), else the sweep's.
    A value that is not a number is the fixed config check's to refuse; 0 is refused here: every
    multiple of it is 0, so the sweep's 5 head lrs were one (5 identical trials per seed, none of
    which trained)."""
    lr = options.overrides.get("lr")
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        if lr == 0:
            raise UserError("--set lr=0: sweep head_lr sets the head's lr to multiples of the body's (0.1x to 10x), "
                            "and every multiple of 0 is 0; give a body lr above 0")
        return float(lr)
    return SMOKE_LR if options.smoke else BODY_LR


SPEC = SweepSpec(
    name="head_lr",
    doc=__doc__,
    space=lambda options: {
        "head_lr": grid([m * body_lr(options) for m in ([0.1, 10.0] if options.smoke else [0.1, 0.3, 1.0, 3.0, 10.0])]),
        "seed": grid([0] if options.smoke else [0, 1, 2]),
    },
    base=dict(model_name="vit_s", img_size=32, model_kwargs=PATCH_32PX, epochs=30, batch_size=512, lr=BODY_LR, eval_every=500),
    smoke=dict(model_name="vit_tiny_cpu", epochs=2, lr=SMOKE_LR),   # on top of runner.SMOKE
    resources=resources,
)

if __name__ == "__main__":
    sweep_main(SPEC)
