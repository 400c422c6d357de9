"""Derive us_ds.csv from HELM Classic's accuracy table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("HellaSwag - EM", "hellaswag")
# the exact-match (accuracy) columns; the F1, RR@10, NDCG@10 and ROUGE-2 columns are not accuracies and are left out
DS = {"MMLU - EM": "mmlu", "BoolQ - EM": "boolq", "OpenbookQA - EM": "openbookqa", "TruthfulQA - EM": "truthfulqa",
      "IMDB - EM": "imdb", "CivilComments - EM": "civilcomments", "RAFT - EM": "raft"}

# HELM writes '-' where a model was not run on a scenario (HellaSwag and OpenbookQA: 32 of the 67 models)
db = pd.read_csv("accuracy.tsv", sep="\t", na_values=["-"])
rows = []
for _, r in db.iterrows():
    for col, task in DS.items():
        # shots and test-set sizes are not in the table: left empty
        rows.append({"model": r["Model/adapter"], "us_task": US[1], "ds_task": task, "eval_protocol": "helm-em",
                     "shots": "", "us_accuracy": r[US[0]], "ds_accuracy": r[col], "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# HELM's own prompts with in-context examples, shot counts not in the table: meta-study's "other" (as dclm/)
canonical(out, "helm_classic", {"helm-em": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} models read, {out.model.nunique()} with {US[1]}, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
