"""Derive us_ds.csv from the SuperGLUE leaderboard table as shipped in the benchbench package (run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = ("BoolQ", "boolq")
# the accuracy columns; CB shows "F1/accuracy" and ReCoRD "F1/accuracy" (exact match): the number after the '/'
# is kept. MultiRC (F1a/EM over question sets), AX-b (Matthews correlation), AX-g (gender parity/accuracy on
# the diagnostic set) and "Score" are left out
DS = {"CB": "cb", "COPA": "copa", "ReCoRD": "record", "RTE": "rte", "WiC": "wic", "WSC": "wsc"}
NOT_A_MODEL = "SuperGLUE Human Baselines"   # the human annotators' row, not a submission


def accuracy(cell: str) -> float:
    """A cell in percent ("90.5", or "F1/accuracy" as "98.6/99.2") as a fraction: the accuracy."""
    return round(float(str(cell).split("/")[-1]) / 100, 4)


db = pd.read_csv("leaderboard.tsv", sep="\t", dtype=str)   # rows in Score order
lb = db.assign(Model=db["Model"].str.strip())
lb = lb[lb["Model"] != NOT_A_MODEL]
rows = []
for _, r in lb.iterrows():
    for col, task in DS.items():
        # each submission's own training (fine-tuning, or 32-example few-shot for a few), scored on the hidden test sets
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "superglue-test",
                     "shots": "", "us_accuracy": accuracy(r[US[0]]), "ds_accuracy": accuracy(r[col]),
                     "us_n": "", "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS)
assert lb["Model"].is_unique and out.us_accuracy.between(0, 1).all() and out.ds_accuracy.between(0, 1).all()
canonical(out, "superglue", {"superglue-test": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} entries read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
