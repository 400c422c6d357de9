"""Derive us_ds.csv from the RobustBench CIFAR-100-C files (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from robustbench import CORRUPTIONS, flat, load_json, model_rows, read_unaggregated, realign, write  # noqa: E402

D = "model_info/cifar100/corruptions/"

# 12 models x 15 corruptions x 5 severities (alphabetical header); accuracies are fractions.
# One row (Erichson2022NoisyMix) is written in RobustBench's evaluation order: realign puts it back.
u, _ = read_unaggregated(D + "unaggregated_results.csv")
u, moved = realign(u, CORRUPTIONS)
u = flat(u)
# the older version of the table (commit 920cd276: 4 models, 19 corruptions incl. spatter, speckle_noise,
# gaussian_blur, saturate) against which the Gowal2020 and Hendrycks2020 JSONs' means were computed
old, _ = read_unaggregated(D + "unaggregated_results.920cd276.csv")
old = flat(old[~old.index.duplicated()])

# the JSON files (and the older table) name the two Gowal2020 models without the _Linf suffix
JSON = {"Gowal2020Uncovering_Linf": "Gowal2020Uncovering", "Gowal2020Uncovering_extra_Linf": "Gowal2020Uncovering_extra"}

rows, dropped = [], {}
for model, r in u.iterrows():
    name = JSON.get(model, model)
    path = D + name + ".json"
    if not os.path.exists(path):      # no JSON stored in the index: no clean accuracy
        dropped[model] = "no JSON"
        continue
    info = load_json(path)
    clean = float(info["clean_acc"]) / 100.0
    # checks between the JSON (stored version) and the tables: (1) the JSON's mean corruption accuracy equals
    # the mean of this table's 75 values, or the mean of the model's 95 values in the older table, whose
    # 75 shared values must then agree with this table's to one image in 10,000 (Hendrycks2020AugMix_ResNeXt's
    # impulse_noise-1 is 0.7757 there, 0.7758 here); (2) clean accuracy is not far below brightness-1
    corr, mean = float(info["corruptions_acc"]), 100.0 * r.mean()
    same = name in old.index and (old.loc[name, r.index] - r).abs().max() <= 1e-4 + 1e-9
    agrees = abs(corr - mean) <= 0.05 or (same and abs(corr - 100.0 * old.loc[name].mean()) <= 0.05)
    if not agrees or clean < r["brightness-1"] - 0.02:
        dropped[model] = "inconsistent JSON"
        continue
    rows += model_rows(model, "cifar100-test", clean, r, "corruption-shift", 10000, 10000)
out = write(rows, "robustbench_cifar100c", {"corruption-shift": "shift"})
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; dropped: {dropped}; realigned: {moved}")
