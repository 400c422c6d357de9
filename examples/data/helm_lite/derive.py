"""Derive us_ds.csv from HELM Lite's leaderboard table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("MMLU - EM", "mmlu")
# the accuracy columns (exact match, and MATH's equivalence of the final answer); the F1 columns (NarrativeQA,
# NaturalQuestions open/closed), BLEU-4 (WMT 2014) and "Mean win rate" are not accuracies and are left out
DS = {"OpenbookQA - EM": "openbookqa", "MATH - Equivalent (CoT)": "math", "GSM8K - EM": "gsm8k",
      "LegalBench - EM": "legalbench", "MedQA - EM": "medqa"}

# '-' where a model has no score (one cell: Phi-3 (7B) on GSM8K)
db = pd.read_csv("leaderboard.tsv", sep="\t", na_values=["-"])
rows = []
for _, r in db.iterrows():
    for col, task in DS.items():
        # shots and test-set sizes are not in the table: left empty (see README.md)
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "helm-lite",
                     "shots": "", "us_accuracy": r[US[0]], "ds_accuracy": r[col], "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# HELM's own prompts with in-context examples, shot counts not in the table: meta-study's "other" (as helm_classic/)
canonical(out, "helm_lite", {"helm-lite": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} models read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
