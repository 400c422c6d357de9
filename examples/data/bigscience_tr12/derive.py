"""Derive us_ds.csv from BigScience's tr12 results through training (evaluation/results/tr12/*_agg.json of
bigscience-workshop/bigscience, copied to raw/; run from this folder)."""
import json
import os
import sys
from collections import Counter

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)
from lm_eval import n_from_stderr  # noqa: E402  (examples/data/lm_eval.py: n from acc and its sample stderr)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "lambada"   # the v0 harness's LAMBADA (OpenAI version), last-word accuracy
# raw file -> model prefix: two 1.3B GPT runs on English OSCAR, filtered (a) and filtered + deduplicated (b);
# each file holds its own checkpoint list (62 and 66 steps)
RUNS = {"raw/tr12a-1B3-oscar-en-filtered_agg.json": "tr12a-1B3-oscar-en-filtered",
        "raw/tr12b-1B3-oscar-en-filtered-dedup_agg.json": "tr12b-1B3-oscar-en-filtered-dedup"}

runs = {prefix: json.load(open(path)) for path, prefix in RUNS.items()}
assert len({frozenset(d["results"]) for d in runs.values()}) == 1   # the same 28 tasks in both runs

# test-set size per task: the most common value implied by (acc, acc_stderr) over all 128 checkpoints
counts: dict = {}
for d in runs.values():
    for task, m in d["results"].items():
        for acc, se in zip(m.get("acc", []), m.get("acc_stderr", [])):
            n = n_from_stderr(acc, se)
            if n is not None:
                counts.setdefault(task, Counter())[n] += 1
N = {task: c.most_common(1)[0][0] for task, c in counts.items()}

rows = []
for prefix, d in runs.items():
    tasks = d["results"]
    for i, step in enumerate(d["checkpoints"]):
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
canonical(out, "bigscience_tr12", {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
print(f"{len(runs)} runs x {'+'.join(str(len(d['checkpoints'])) for d in runs.values())} checkpoints, "
      f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
