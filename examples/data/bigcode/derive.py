"""Derive us_ds.csv from the BigCode Models Leaderboard table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("humaneval-python", "humaneval_python", 164)   # column, us_task, problems (HumanEval)
# MultiPL-E translations of HumanEval (pass@1 in percent); 'Win' (a win rate over all languages) and
# 'Throughput' (tokens/s) are no accuracies. Problem counts are not in the table and are left empty
DS = {"java": "multipl_e_java", "javascript": "multipl_e_javascript"}

db = pd.read_csv("leaderboard.tsv", sep="\t", dtype=str)   # rows in 'Win' order, one per model
rows = []
for _, r in db.iterrows():
    for col, task in DS.items():
        rows.append({"model": r["Models"], "us_task": US[1], "ds_task": task, "eval_protocol": "pass@1",
                     "shots": "", "us_accuracy": round(float(r[US[0]]) / 100, 4),
                     "ds_accuracy": round(float(r[col]) / 100, 4), "us_n": US[2], "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS)
assert out.us_accuracy.between(0, 1).all() and out.ds_accuracy.between(0, 1).all() and db["Models"].is_unique
canonical(out, "bigcode", {"pass@1": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} models read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
