"""Derive us_ds.csv from BigScience's tr3 results through training (evaluation/results/tr3/
tr3_results_through_training.json of bigscience-workshop/bigscience; run from this folder)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigscience import derive  # noqa: E402  (examples/data/bigscience.py, shared with bigscience_tr12)

RAW = "tr3_results_through_training.json"
# run name in the file -> short model prefix: three 1.3B GPT models, each trained on one corpus
RUNS = {"tr3d-1B3-oscar-checkpoints": "tr3d-1B3-oscar", "tr3e-1B3-c4-checkpoints": "tr3e-1B3-c4",
        "tr3m-1B3-pile-checkpoints": "tr3m-1B3-pile"}

data = json.load(open(RAW))
steps = data["checkpoint_steps"]   # one list for all runs; "tokens" holds the tokens seen at each step
results = data["results"]
assert set(results) == set(RUNS), set(results)

out = derive("bigscience_tr3", {prefix: (results[run], steps) for run, prefix in RUNS.items()})
print(f"{len(results)} runs x {len(steps)} checkpoints, {out.model.nunique()} models, "
      f"{out.ds_task.nunique()} ds_tasks, {len(out)} rows")
