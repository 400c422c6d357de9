"""Derive us_ds.csv from HELM Capabilities' leaderboard table as shipped in the benchbench package (run from this
folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("MMLU-Pro - COT correct", "mmlu_pro")
# the accuracy columns; "WildBench - WB Score" (an LLM judge's rating rescaled to [0, 1]) and "Mean score" (the
# mean of all five, US included) are not accuracies and are left out
DS = {"GPQA - COT correct": "gpqa", "IFEval - IFEval Strict Acc": "ifeval", "Omni-MATH - Acc": "omni_math"}

db = pd.read_csv("leaderboard.tsv", sep="\t", na_values=["-"])   # every cell filled; rows in Mean score order
rows = []
for _, r in db.iterrows():
    for col, task in DS.items():
        # shots and test-set sizes are not in the table: left empty (see README.md)
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "helm-capabilities",
                     "shots": "", "us_accuracy": r[US[0]], "ds_accuracy": r[col], "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# HELM's own prompts and scoring per scenario (chain of thought for MMLU-Pro and GPQA, IFEval's instruction
# checks), shot counts not in the table: meta-study's "other" (as helm_classic/)
canonical(out, "helm_capabilities", {"helm-capabilities": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} models read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
