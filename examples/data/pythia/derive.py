"""Derive us_ds.csv from the raw Pythia zero-shot lm-eval JSONs in raw/ (run from this folder)."""
import glob
import json
import os
from collections import Counter

import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "lambada_openai"
SIZES = ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]



def n_from_stderr(acc, se):
    """lm-eval reports the sample standard error sqrt(p(1-p)/(n-1)); invert it for n."""
    if se is None or se <= 0 or acc <= 0 or acc >= 1:
        return None
    return round(acc * (1 - acc) / se ** 2) + 1


runs = []
for path in glob.glob(os.path.join("raw", "*.json")):
    size, step = os.path.basename(path)[:-len(".json")].split("_step")
    d = json.load(open(path))
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
        if task == US or "acc" not in m:  # crows_pairs_* report no accuracy
            continue
        rows.append({"model": model, "us_task": US, "ds_task": task, "eval_protocol": "zeroshot-lm",
                     "shots": shots, "us_accuracy": res[US]["acc"], "ds_accuracy": m["acc"],
                     "us_n": N[US], "ds_n": N.get(task, "")})

out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "pythia", {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
print(f"{len(runs)} files, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
