"""Derive us_ds.csv from the Open LLM Leaderboard (v1) table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("HellaSwag", "hellaswag")
# every other score column; "Average" is the mean of these six (US included) and is left out
DS = {"ARC": "arc_challenge", "MMLU": "mmlu", "TruthfulQA": "truthfulqa", "Winogrande": "winogrande",
      "GSM8K": "gsm8k"}

db = pd.read_csv("leaderboard.tsv", sep="\t")   # scores in percent, 2 decimals; rows in Average order
# 13 model names appear twice (5 exact repeats, 8 with a second, slightly different entry): keep one entry per
# model, the first in the file (the higher Average), so no model sits on both sides of a held-out split
lb = db.drop_duplicates(subset="Model", keep="first")
rows = []
for _, r in lb.iterrows():
    for col, task in DS.items():
        # shots differ by task and test-set sizes are not in the table: left empty (see README.md)
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "open-llm-v1",
                     "shots": "", "us_accuracy": round(r[US[0]] / 100, 4), "ds_accuracy": round(r[col] / 100, 4),
                     "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# a few-shot mix (25/10/5/0/5/5 shots) with three kinds of score: meta-study's "other" (as dclm/, helm_classic/)
canonical(out, "open_llm_leaderboard", {"open-llm-v1": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} entries read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
