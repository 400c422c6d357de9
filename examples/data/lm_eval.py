"""What the ``lm_eval_*/derive.py`` share: read EleutherAI lm-evaluation-harness result JSONs
(one per model, ``raw/<model><suffix>``), take one task as US and every other task with an accuracy
as DS, and write ``us_ds.csv`` through ``canonical.py``. Run from the table's folder."""
import glob
import json
import os
from collections import Counter

import pandas as pd

from canonical import canonical  # examples/data/canonical.py (the caller put examples/data on sys.path)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
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


def with_us(d, us, path):
    """``d`` with the US task's result taken from the file ``path`` of the same model (same shot count)."""
    other = json.load(open(path))
    assert other["config"]["num_fewshot"] == d["config"]["num_fewshot"], path
    return {**d, "results": {**d["results"], us: other["results"][us]}}


def derive(us, suffix, table, us_suffix=None):
    """Write ``us_ds.csv`` for the files ``raw/*<suffix>`` with ``us`` as the US task and print a summary.
    With ``us_suffix``, the US task is read from ``raw/<model><us_suffix>`` (XCOPA has no English set: its
    US is English COPA from the common-sense files)."""
    runs = []
    for path in glob.glob(os.path.join("raw", "*" + suffix)):
        model = os.path.basename(path)[:-len(suffix)]
        d = json.load(open(path))
        if us_suffix is not None:
            d = with_us(d, us, os.path.join("raw", model + us_suffix))
        runs.append((FAMILIES.index(model.split("-")[0]), size(model), model, d))
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
            if task == us or "acc" not in m:  # mc_taco (commonsense) reports em/f1, no accuracy
                continue
            rows.append({"model": model, "us_task": us, "ds_task": task, "eval_protocol": "zeroshot-lm",
                         "shots": shots, "us_accuracy": res[us]["acc"], "ds_accuracy": m["acc"],
                         "us_n": N[us], "ds_n": N.get(task, "")})

    out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
    out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
    canonical(out, table, {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
    print(f"{len(runs)} files, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows; n: {N}")
