"""Appendix C.1: sweep the head's weight decay with the body's fixed; probe several DS tasks and shots.

    python sweeps/head_wd.py --smoke                                   # CPU, ~2 minutes, 2 trials
    python -m meta_study.tune.submit -- python sweeps/head_wd.py --storage-path s3://lab/meta-study/tune \\
        --tracking-uri http://mlflow.lab:5000 --gpus-per-trial 1        # 7 head WDs x 3 seeds = 21 trials

Full size: ViT-S/4 at 32 px (an 8x8 patch grid) on the procedural upstream task (240 classes),
30 epochs, batch 512, body wd 0.01 as in C.1 ("the weight decay for the rest of the network is kept
at 0.01"; the paper's default, 0.1, is for its other runs). The paper's 7 epochs (D.1, F.26: 7 or 14)
are of JFT, ~2 billion images; 30 epochs of 48,000 procedural images are 1.4 million, ~2,800 steps at batch
512, where 7 would leave the body undertrained. About 0.3 GPU-hours per trial on an A100 (~6
GPU-hours in all). With real data, add e.g. ``--dataset in21k=imagefolder:/data/imagenet21k
--us-task in21k --set model_name=vit_b --set img_size=224 --set "model_kwargs={'patch_size': 16}"
--set epochs=7`` and expect ~40 A100-hours per trial for ViT-B/16 at 7 epochs of ImageNet-21k
(without ``model_name``, the sweep's ViT-S/16).
Each trial is sized to its model as every sweep's are (``meta_study.tune.sizing``): ``--gpus-per-trial
1`` gives the ViT-S half a GPU and 6 GiB of host memory (a ``--set model_name=vit_b`` a whole GPU
and 12 GiB, more with ImageNet-21k's head).
Then: ``meta-study ingest $MLFLOW_TRACKING_URI --experiment head_wd --store S`` and
``python analysis/head_wd_d1_d4.py S --out figs``.
"""

from meta_study.tune.runner import PATCH_32PX, SweepSpec, grid, sweep_main
from meta_study.tune.sizing import resources   # by model: a share of --gpus-per-trial, host memory (said at start)

SPEC = SweepSpec(
    name="head_wd",
    doc=__doc__,
    space=lambda options: {
        "head_wd": grid([0.0, 0.1] if options.smoke else [0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0]),
        "seed": grid([0] if options.smoke else [0, 1, 2]),
    },
    base=dict(model_name="vit_s", img_size=32, model_kwargs=PATCH_32PX, epochs=30, batch_size=512, wd=0.01, eval_every=500,
              shots=[1, 5, 10, 25]),
    smoke=dict(model_name="vit_tiny_cpu", epochs=2, lr=2e-3),   # on top of runner.SMOKE
    resources=resources,
)

if __name__ == "__main__":
    sweep_main(SPEC)
