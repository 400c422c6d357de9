"""Derive us_ds.csv from the RobustBench CIFAR-10-C files (run from this folder)."""
import json
import os
import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
D = "model_info/cifar10/corruptions/"


# two header rows: corruption name, severity 1-5; one row per model; accuracies are fractions
u = pd.read_csv(D + "unaggregated_results.csv", header=[0, 1], index_col=0)
u.columns = [f"{c}-{s}" for c, s in u.columns]

# the per-model JSON files use a different word order for the Gowal2020 models
JSON = {"Gowal2020Uncovering_70_16_Linf": "Gowal2020Uncovering_Linf_70_16",
        "Gowal2020Uncovering_70_16_extra_Linf": "Gowal2020Uncovering_Linf_70_16_extra",
        "Gowal2020Uncovering_70_16_L2": "Gowal2020Uncovering_L2_70_16",
        "Gowal2020Uncovering_70_16_extra_L2": "Gowal2020Uncovering_L2_70_16_extra"}

rows, dropped = [], []
for model, r in u.iterrows():
    path = ("model_info/cifar10/Linf/Standard.json" if model == "Standard"
            else D + JSON.get(model, model) + ".json")
    info = json.load(open(path, encoding="utf-8"))
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
    # rows whose 75 values all have at most 3 decimals look evaluated on fewer images: leave ds_n empty
    three_dec = all(abs(v * 1000 - round(v * 1000)) < 1e-6 for v in r.values)
    for task, v in r.items():
        rows.append({"model": model, "us_task": "cifar10-test", "ds_task": task,
                     "eval_protocol": "corruption-shift", "shots": "", "us_accuracy": clean,
                     "ds_accuracy": v, "us_n": 10000, "ds_n": "" if three_dec else 10000})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "robustbench_cifar10c", {"corruption-shift": "shift"}).to_csv("us_ds.csv", index=False)
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; dropped (inconsistent JSON): {dropped}")
