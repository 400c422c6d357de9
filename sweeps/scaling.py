"""Section 3: controlled scaling of model size x upstream data fraction x epochs.

    python sweeps/scaling.py --smoke                                   # CPU, ~3 minutes, 2 trials
    ray job submit --working-dir . -- python sweeps/scaling.py --gpus-per-trial 1   # 4 x 3 x 3 = 36 trials

Full size: ViT Ti/S/B and ViT-L (4 sizes) x data fraction {0.1, 0.3, 1.0} x epochs {7, 14, 30} on the
procedural upstream task at 32 px. Cost grows with size and epochs: from ~0.05 A100-hours (Ti, 7
epochs, 10% data) to ~4 (L, 30 epochs, all data); ~40 GPU-hours in all.
"""

from ray import tune

from meta_study.tune.runner import SweepSpec, sweep_main

SPEC = SweepSpec(
    name="scaling",
    doc=__doc__,
    space=lambda args: {
        "model_name": tune.grid_search(["vit_tiny_cpu", "vit_small_cpu"] if args.smoke
                                       else ["vit_ti", "vit_s", "vit_b", "vit_l"]),
        "data_fraction": tune.grid_search([1.0] if args.smoke else [0.1, 0.3, 1.0]),
        "epochs": tune.grid_search([2] if args.smoke else [7, 14, 30]),
    },
    base=dict(img_size=32, batch_size=512, eval_every=500),
    smoke=dict(img_size=16, batch_size=128, lr=2e-3, eval_every=20,
               us_task_kwargs={"n_train": 3000, "n_test": 600}, ds_task_kwargs={"n_train_per_class": 25, "n_test": 200},
               shots=[1, 10], ds_tasks=["synth_combo", "synth_count", "synth_texture"], margin_examples=256),
)

if __name__ == "__main__":
    sweep_main(SPEC)
