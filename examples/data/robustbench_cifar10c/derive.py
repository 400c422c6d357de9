"""Derive us_ds.csv from the RobustBench CIFAR-10-C files (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from robustbench import CORRUPTIONS, flat, load_json, model_rows, read_unaggregated, realign, write  # noqa: E402

D = "model_info/cifar10/corruptions/"

# one row per model; accuracies are fractions; the header is already in RobustBench's order (nothing to move)
u, _ = read_unaggregated(D + "unaggregated_results.csv")
u, moved = realign(u, CORRUPTIONS)
u = flat(u)

# the per-model JSON files use a different word order for the Gowal2020 models
JSON = {"Gowal2020Uncovering_70_16_Linf": "Gowal2020Uncovering_Linf_70_16",
        "Gowal2020Uncovering_70_16_extra_Linf": "Gowal2020Uncovering_Linf_70_16_extra",
        "Gowal2020Uncovering_70_16_L2": "Gowal2020Uncovering_L2_70_16",
        "Gowal2020Uncovering_70_16_extra_L2": "Gowal2020Uncovering_L2_70_16_extra"}

rows, dropped = [], []
for model, r in u.iterrows():
    path = ("model_info/cifar10/Linf/Standard.json" if model == "Standard"
            else D + JSON.get(model, model) + ".json")
    info = load_json(path)
    clean = float(info["clean_acc"]) / 100.0
    # consistency checks between the JSON (stored version) and the unaggregated table:
    # (1) the JSON's mean corruption accuracy (for one file mislabelled 'autoattack_acc') must equal the
    #     mean of the 75 unaggregated values; (2) clean accuracy must not be far below severity-1 brightness
    corr = info.get("corruptions_acc", info.get("autoattack_acc") if model != "Standard" else None)
    mean = 100.0 * r.mean()
    bad = (corr is not None and abs(float(corr) - mean) > 0.05) or (clean < r["brightness-1"] - 0.02)
    if bad:
        dropped.append(model)
        continue
    rows += model_rows(model, "cifar10-test", clean, r, "corruption-shift", 10000, 10000)
out = write(rows, "robustbench_cifar10c", {"corruption-shift": "shift"})
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; dropped (inconsistent JSON): {dropped}; realigned: {moved}")
