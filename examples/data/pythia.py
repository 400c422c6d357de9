"""What ``pythia/derive.py``, ``pythia_5shot/derive.py`` and ``pythia_deduped/derive.py`` share: read the
lm-evaluation-harness result JSONs of the Pythia checkpoints (one per checkpoint, ``raw/<size><sep><step>.json``), take LAMBADA as US and every other
task with an accuracy as DS, and write ``us_ds.csv`` through ``canonical.py``. Run from the table's folder (the
caller put examples/data on sys.path)."""
import glob
import json
import os
from collections import Counter

import pandas as pd

from canonical import canonical  # examples/data/canonical.py
from lm_eval import COLS, n_from_stderr  # examples/data/lm_eval.py: n from lm-eval's sample stderr

US = "lambada_openai"
SIZES = ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]
Run = tuple[str, int, dict]  # (size, training step, the file's JSON)


def read_runs(sep: str, shots: int) -> list[Run]:
    """Every ``raw/<size><sep><step>.json``, by size then step; each must be a run with ``shots`` in-context examples."""
    runs = []
    for path in glob.glob(os.path.join("raw", "*.json")):
        size, step = os.path.basename(path)[:-len(".json")].split(sep)
        d = json.load(open(path))
        assert d["config"]["num_fewshot"] == shots, path
        runs.append((size, int(step), d))
    return sorted(runs, key=lambda r: (SIZES.index(r[0]), r[1]))


def n_per_task(runs: list[Run]) -> dict[str, int]:
    """Test-set size per task: the most common value implied by (acc, acc_stderr) over all files."""
    ns: dict[str, Counter] = {}
    for *_, d in runs:
        for task, m in d["results"].items():
            n = n_from_stderr(m["acc"], m.get("acc_stderr")) if "acc" in m else None
            if n is not None:
                ns.setdefault(task, Counter())[n] += 1
    return {t: c.most_common(1)[0][0] for t, c in ns.items()}


def long_rows(runs: list[Run], protocol: str, variant: str = "") -> pd.DataFrame:
    """One row per (checkpoint, DS task): every task with an accuracy but LAMBADA (crows_pairs_* report none). The
    model is ``pythia-<size><variant>@step<N>``: ``variant`` names the training run (``-deduped``), "" the standard."""
    N = n_per_task(runs)
    rows = [{"model": f"pythia-{size}{variant}@step{step}", "us_task": US, "ds_task": task, "eval_protocol": protocol,
             "shots": d["config"]["num_fewshot"], "us_accuracy": d["results"][US]["acc"],
             "ds_accuracy": m["acc"], "us_n": N[US], "ds_n": N.get(task, "")}
            for size, step, d in runs for task, m in sorted(d["results"].items()) if task != US and "acc" in m]
    out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
    return out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()


def derive(table: str, sep: str, shots: int, protocol: tuple[str, str], variant: str = "") -> None:
    """Write ``us_ds.csv`` for ``raw/<size><sep><step>.json`` and print a summary; ``protocol`` is (the table's
    protocol name, meta-study's); ``variant`` is the model-name suffix of the training run (see ``long_rows``)."""
    runs = read_runs(sep, shots)
    out = long_rows(runs, protocol[0], variant)
    canonical(out, table, dict([protocol])).to_csv("us_ds.csv", index=False)
    print(f"{len(runs)} files, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
