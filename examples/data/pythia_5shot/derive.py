"""Derive us_ds.csv from the raw Pythia five-shot lm-eval JSONs in raw/ (run from this folder)."""
import glob
import json
import os
import sys
from collections import Counter

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)
from lm_eval import n_from_stderr  # noqa: E402  (examples/data/lm_eval.py: n from lm-eval's sample stderr)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "lambada_openai"
SIZES = ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]
SUFFIX = "-5shot_step"  # raw/<size>-5shot_step<N>.json, the repository's own file names

runs = []
for path in glob.glob(os.path.join("raw", "*.json")):
    size, step = os.path.basename(path)[:-len(".json")].split(SUFFIX)
    d = json.load(open(path))
    assert d["config"]["num_fewshot"] == 5, path
    runs.append((SIZES.index(size), int(step), size, d))
runs.sort(key=lambda t: (t[0], t[1]))

# test-set size per task: the most common value implied by (acc, acc_stderr) over all files
ns = {}
for *_, d in runs:
    for task, m in d["results"].items():
        if "acc" in m:
            n = n_from_stderr(m["acc"], m.get("acc_stderr"))
            if n is not None:
                ns.setdefault(task, Counter())[n] += 1
N = {t: c.most_common(1)[0][0] for t, c in ns.items()}

rows = []
for _, step, size, d in runs:
    res = d["results"]
    model = f"pythia-{size}@step{step}"
    shots = d["config"]["num_fewshot"]
    for task in sorted(res):
        m = res[task]
        if task == US or "acc" not in m:
            continue
        rows.append({"model": model, "us_task": US, "ds_task": task, "eval_protocol": "fewshot-lm",
                     "shots": shots, "us_accuracy": res[US]["acc"], "ds_accuracy": m["acc"],
                     "us_n": N[US], "ds_n": N.get(task, "")})

out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# in-context examples, not meta-study's `fewshot` (a linear probe on k examples per class): `other`
canonical(out, "pythia_5shot", {"fewshot-lm": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(runs)} files, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
