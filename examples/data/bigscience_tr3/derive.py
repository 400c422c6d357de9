"""Derive us_ds.csv from BigScience's tr3 results through training (evaluation/results/tr3/
tr3_results_through_training.json of bigscience-workshop/bigscience; run from this folder)."""
import json
import os
import sys
from collections import Counter

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
RAW = "tr3_results_through_training.json"
US = "lambada"   # the v0 harness's LAMBADA (OpenAI version), last-word accuracy
# run name in the file -> short model prefix: three 1.3B GPT models, each trained on one corpus
RUNS = {"tr3d-1B3-oscar-checkpoints": "tr3d-1B3-oscar", "tr3e-1B3-c4-checkpoints": "tr3e-1B3-c4",
        "tr3m-1B3-pile-checkpoints": "tr3m-1B3-pile"}


def n_from_stderr(acc: float, se: float) -> int | None:
    """lm-eval reports the sample standard error sqrt(p(1-p)/(n-1)); invert it for n (None where it is 0)."""
    if se <= 0 or acc <= 0 or acc >= 1:
        return None
    return round(acc * (1 - acc) / se ** 2) + 1


data = json.load(open(RAW))
steps = data["checkpoint_steps"]   # one list for all runs; "tokens" holds the tokens seen at each step
results = data["results"]
assert set(results) == set(RUNS), set(results)

# test-set size per task: the most common value implied by (acc, acc_stderr) over the 33 checkpoints
counts: dict = {}
for tasks in results.values():
    for task, m in tasks.items():
        for acc, se in zip(m.get("acc", []), m.get("acc_stderr", [])):
            n = n_from_stderr(acc, se)
            if n is not None:
                counts.setdefault(task, Counter())[n] += 1
N = {task: c.most_common(1)[0][0] for task, c in counts.items()}

rows = []
for run, prefix in RUNS.items():
    tasks = results[run]
    for i, step in enumerate(steps):
        model = f"{prefix}@step{step}"
        for task in sorted(tasks):
            m = tasks[task]
            # mc_taco reports em/f1 only, no accuracy: skipped
            if task == US or "acc" not in m:
                continue
            rows.append({"model": model, "us_task": US, "ds_task": task, "eval_protocol": "zeroshot-lm",
                         "shots": 0, "us_accuracy": tasks[US]["acc"][i], "ds_accuracy": m["acc"][i],
                         "us_n": N[US], "ds_n": N[task]})

out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "bigscience_tr3", {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
print(f"{len(results)} runs x {len(steps)} checkpoints, {out.model.nunique()} models, "
      f"{out.ds_task.nunique()} ds_tasks, {len(out)} rows")
