"""What ``bigscience_tr3/derive.py`` and ``bigscience_tr12/derive.py`` share: BigScience's results
through training (per run, per task, a list of each metric over the run's checkpoints, from an
early lm-evaluation-harness), LAMBADA as US and every other task with an accuracy as DS, written as
``us_ds.csv`` through ``canonical.py``. Run from the table's folder (the caller put examples/data on
sys.path)."""
from collections import Counter

import pandas as pd

from canonical import canonical  # examples/data/canonical.py
from lm_eval import n_from_stderr  # examples/data/lm_eval.py: n from lm-eval's sample stderr

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "lambada"   # the v0 harness's LAMBADA (OpenAI version), last-word accuracy


def n_per_task(runs: dict) -> dict:
    """Test-set size per task: the most common value implied by (acc, acc_stderr) over every
    checkpoint of ``runs`` (model prefix -> (its tasks' results, its steps))."""
    counts: dict = {}
    for tasks, _ in runs.values():
        for task, m in tasks.items():
            for acc, se in zip(m.get("acc", []), m.get("acc_stderr", [])):
                n = n_from_stderr(acc, se)
                if n is not None:
                    counts.setdefault(task, Counter())[n] += 1
    return {task: c.most_common(1)[0][0] for task, c in counts.items()}


def derive(table: str, runs: dict) -> pd.DataFrame:
    """Write ``us_ds.csv`` of ``runs`` (model prefix -> (its tasks' results, its checkpoint steps)):
    one row per (checkpoint, DS task), the model ``<prefix>@step<N>``; returns the rows written."""
    N = n_per_task(runs)
    rows = []
    for prefix, (tasks, steps) in runs.items():
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
    canonical(out, table, {"zeroshot-lm": "zeroshot"}).to_csv("us_ds.csv", index=False)
    return out
