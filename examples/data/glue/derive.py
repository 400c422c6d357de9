"""Derive us_ds.csv from the GLUE leaderboard table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("MNLI-m", "mnli_matched")
# the accuracy columns; MRPC and QQP show "F1/accuracy" and only the accuracy (after the '/') is kept. CoLA
# (Matthews correlation), STS-B (Pearson/Spearman), AX (Matthews correlation) and "Score" are not accuracies
DS = {"MNLI-mm": "mnli_mismatched", "SST-2": "sst2", "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli",
      "MRPC": "mrpc", "QQP": "qqp"}
NOT_A_MODEL = "GLUE Human Baselines"   # the human annotators' row, not a submission


def accuracy(cell: str) -> float:
    """A cell in percent ("92.5", or "F1/accuracy" as "94.2/92.3") as a fraction: the accuracy."""
    return round(float(str(cell).split("/")[-1]) / 100, 4)


db = pd.read_csv("leaderboard.tsv", sep="\t", dtype=str)   # rows in Score order
lb = db.assign(Model=db["Model"].str.strip())
lb = lb[lb["Model"] != NOT_A_MODEL]
# RefBERT was submitted four times (same team, slightly different QQP/CoLA): keep the first (the highest Score),
# so no model sits on both sides of a held-out split
lb = lb.drop_duplicates(subset="Model", keep="first")
rows = []
for _, r in lb.iterrows():
    for col, task in DS.items():
        # each task fine-tuned on its own training set, scored on GLUE's hidden test set; sizes not in the table
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "glue-test",
                     "shots": "", "us_accuracy": accuracy(r[US[0]]), "ds_accuracy": accuracy(r[col]),
                     "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "glue", {"glue-test": "finetune"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} entries read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
