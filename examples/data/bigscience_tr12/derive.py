"""Derive us_ds.csv from BigScience's tr12 results through training (evaluation/results/tr12/*_agg.json of
bigscience-workshop/bigscience, copied to raw/; run from this folder)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigscience import derive  # noqa: E402  (examples/data/bigscience.py, shared with bigscience_tr3)

# raw file -> model prefix: two 1.3B GPT runs on English OSCAR, filtered (a) and filtered + deduplicated (b);
# each file holds its own checkpoint list (62 and 66 steps)
RUNS = {"raw/tr12a-1B3-oscar-en-filtered_agg.json": "tr12a-1B3-oscar-en-filtered",
        "raw/tr12b-1B3-oscar-en-filtered-dedup_agg.json": "tr12b-1B3-oscar-en-filtered-dedup"}

runs = {prefix: json.load(open(path)) for path, prefix in RUNS.items()}
assert len({frozenset(d["results"]) for d in runs.values()}) == 1   # the same 28 tasks in both runs

out = derive("bigscience_tr12", {prefix: (d["results"], d["checkpoints"]) for prefix, d in runs.items()})
print(f"{len(runs)} runs x {'+'.join(str(len(d['checkpoints'])) for d in runs.values())} checkpoints, "
      f"{out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
