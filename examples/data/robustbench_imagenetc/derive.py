"""Derive us_ds.csv from the RobustBench ImageNet-C and ImageNet-3DCC files (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from robustbench import (CORRUPTIONS, CORRUPTIONS_3DCC, flat, load_json, model_rows,  # noqa: E402
                         read_unaggregated, realign, write)

D = "model_info/imagenet/corruptions/"
# (file, RobustBench's order of its corruptions, this table's protocol, the JSON key of its mean in percent)
FILES = [("unaggregated_results_2d.csv", CORRUPTIONS, "corruption-shift", "corruptions_acc_2d"),
         ("unaggregated_results_3d.csv", CORRUPTIONS_3DCC, "corruption-shift-3d", "corruptions_acc_3d")]
N = 5000   # RobustBench evaluates ImageNet (clean, -C, -3DCC) on 5,000 validation images (accuracies in 1/5000)

tables, moved = [], {}
for name, order, protocol, key in FILES:
    u, average = read_unaggregated(D + name)
    # the file's own 'average' column must be the mean of its row (the order cannot change a mean)
    assert (u.mean(axis=1) - average).abs().max() < 1e-6, name
    u, moved[name] = realign(u, order)   # the two Tian2022 rows are written in RobustBench's order
    tables.append((flat(u), protocol, key))

rows, dropped = [], []
for model in tables[0][0].index:
    info = load_json(D + model + ".json")
    clean = float(info["clean_acc"]) / 100.0
    # checks between the JSON (stored version) and the tables: the JSON's 2d/3d mean (newer JSONs only; older
    # ones hold a mean from before RobustBench's ImageNet-C preprocessing fix of May 2022, not comparable)
    # equals the row's mean; clean accuracy is not far below brightness-1
    bad = clean < tables[0][0].loc[model, "brightness-1"] - 0.02
    bad |= any(key in info and abs(float(info[key]) - 100.0 * t.loc[model].mean()) > 0.05 for t, _, key in tables)
    if bad:
        dropped.append(model)
        continue
    for t, protocol, _ in tables:
        rows += model_rows(model, "imagenet-val", clean, t.loc[model], protocol, N, N)
out = write(rows, "robustbench_imagenetc", {"corruption-shift": "shift", "corruption-shift-3d": "shift"})
print(f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; dropped (inconsistent JSON): {dropped}; realigned: {moved}")
