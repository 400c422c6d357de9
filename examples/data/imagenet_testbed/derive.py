"""Derive us_ds.csv from robustness_top1s.csv (run from this folder).

robustness_top1s.csv is the complete file from modestyachts/imagenet-testbed (commit 28477dc),
reassembled byte-for-byte from 43 consecutive 16,000-character pages (687,973 characters).
"""
import os
import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "val"


wide = pd.read_csv("robustness_top1s.csv")
wide = wide.drop_duplicates()

natural = ["imagenetv2-matched-frequency", "imagenetv2-threshold0.7", "imagenetv2-topimages",
           "imagenet-a", "imagenet-r", "imagenet-sketch", "objectnet-1.0-beta",
           "imagenet-vid-robust_pm0", "imagenet-vid-robust_pm10", "ytbb-robust_pm0", "ytbb-robust_pm10"]
adversarial = [c for c in wide.columns if c.startswith("pgd.")]
synthetic = ["greyscale", "stylized_imagenet"] + [c for c in wide.columns if c.startswith("imagenet-c.")]
GROUPS = [("natural-shift", natural), ("synthetic-shift", synthetic), ("adversarial", adversarial)]
# not used as DS: the '-format-val' re-encodings of ImageNetV2, 'val-on-*-classes' (clean val restricted
# to the class subsets of the shifted sets) and the class-subsampled '*_subsampled_class_1_8' columns.

N = {"imagenetv2-matched-frequency": 10000, "imagenetv2-threshold0.7": 10000, "imagenetv2-topimages": 10000,
     "imagenet-a": 7500, "imagenet-r": 30000, "imagenet-sketch": 50889, "objectnet-1.0-beta": 18574,
     "greyscale": 50000}
N.update({c: 50000 for c in synthetic if c.startswith("imagenet-c.")})

rows = []
for _, r in wide.iterrows():
    for proto, cols in GROUPS:
        for c in cols:
            rows.append({"model": r["model"], "us_task": "imagenet-val", "ds_task": c, "eval_protocol": proto,
                         "shots": "", "us_accuracy": r[US] / 100.0, "ds_accuracy": r[c] / 100.0,
                         "us_n": 50000, "ds_n": N.get(c, "")})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "imagenet_testbed", {"natural-shift": "shift", "synthetic-shift": "shift", "adversarial": "shift"}).to_csv("us_ds.csv", index=False)
print(f"{len(wide)} rows parsed, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
print(out.groupby("eval_protocol").agg(models=("model", "nunique"), tasks=("ds_task", "nunique"), rows=("model", "size")))
