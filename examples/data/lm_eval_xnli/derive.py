"""Derive us_ds.csv from the lm-evaluation-harness XNLI JSONs in raw/ (run from this folder)."""
import glob
import json
import os
import sys
from collections import Counter

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "xnli_en"
SUFFIX = "_xnli_0-shot.json"
FAMILIES = ["bloom", "xglm", "llama", "mpt"]


def size(model):
    """Parameters in billions from the name's last part (560m, 1b1, 1.7B, 7b, 30B)."""
    s = model.split("-")[-1].lower()
    if s.endswith("m"):
        return float(s[:-1]) / 1000
    if "b" in s[:-1]:                      # bloom's 1b1, 7b1
        whole, frac = s.split("b")
        return float(f"{whole}.{frac}")
    return float(s[:-1])


def n_from_stderr(acc, se):
    """lm-eval reports the sample standard error sqrt(p(1-p)/(n-1)); invert it for n."""
    if se is None or se <= 0 or acc <= 0 or acc >= 1:
        return None
    return round(acc * (1 - acc) / se ** 2) + 1


runs = []
for path in glob.glob(os.path.join("raw", "*" + SUFFIX)):
    model = os.path.basename(path)[:-len(SUFFIX)]
    runs.append((FAMILIES.index(model.split("-")[0]), size(model), model, json.load(open(path))))
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
for _, _, model, d in runs:
    res = d["results"]
    shots = d["config"]["num_fewshot"]
    for task in sorted(res):
        m = res[task]
        if task == US or "acc" not in m:
            continue
        rows.append({"model": model, "us_task": US, "ds_task": task, "eval_protocol": "zeroshot-lm",
                     "shots": shots, "us_accuracy": res[US]["acc"], "ds_accuracy": m["acc"],
                     "us_n": N[US], "ds_n": N.get(task, "")})

out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "lm_eval_xnli", {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
print(f"{len(runs)} files, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; n: {N}")
