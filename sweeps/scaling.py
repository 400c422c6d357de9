"""Section 3: controlled scaling of model size x upstream data fraction x epochs.

    python sweeps/scaling.py --smoke                                   # CPU, ~3 minutes, 2 trials
    python -m meta_study.tune.submit -- python sweeps/scaling.py \\
        --storage-path s3://lab/meta-study/tune --gpus-per-trial 1     # 4 x 3 x 3 = 36 trials

Full size: ViT Ti/S/B and ViT-L (4 sizes) x data fraction {0.1, 0.3, 1.0} x epochs {7, 14, 21} (the paper's
section 3: "7, 14, and 21 epochs") on the procedural upstream task at 32 px, patch 4 (an 8x8
grid). Cost grows with size and epochs: from ~0.05 A100-hours (Ti, 7 epochs, 10% data) to ~3 (L, 21
epochs, all data); ~33 GPU-hours in all.

Each trial is sized to its model as the zoo's are (``meta_study.tune.sizing``):
``--gpus-per-trial`` is what ViT-B and ViT-L get, ViT-S half of it and ViT-Ti a quarter, and host
memory to match (ViT-Ti 4 GiB, S 6, B 12, L 32.5), so that Ray puts no more of them on a node
than its memory holds (every trial asked for one CPU and one GPU alike: eight ViT-L trials, ~260
GiB, on a node of eight GPUs). ``--smoke`` trials take ``--cpus-per-trial`` each and the table's
0.25 GiB (its tiny ViTs are in it, as the zoo's smoke models are).
"""

from meta_study.tune.runner import PATCH_32PX, SweepSpec, grid, sweep_main
from meta_study.tune.sizing import resources   # by model: a share of --gpus-per-trial, host memory (said at start)

SPEC = SweepSpec(
    name="scaling",
    doc=__doc__,
    space=lambda options: {
        "model_name": grid(["vit_tiny_cpu", "vit_small_cpu"] if options.smoke
                           else ["vit_ti", "vit_s", "vit_b", "vit_l"]),
        "data_fraction": grid([1.0] if options.smoke else [0.1, 0.3, 1.0]),
        "epochs": grid([2] if options.smoke else [7, 14, 21]),
    },
    base=dict(img_size=32, model_kwargs=PATCH_32PX, batch_size=512, eval_every=500),
    smoke=dict(lr=2e-3),   # on top of runner.SMOKE
    resources=resources,
)

if __name__ == "__main__":
    sweep_main(SPEC)
