"""Derive us_ds.csv from assets/DCLM_model_database.csv of mlfoundations/dclm (run from this folder)."""
import os
import sys
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
US = "lambada_openai"


db = pd.read_csv("DCLM_model_database.csv")

# per-task accuracy columns: the block from mmlu_zeroshot to svamp_cot, plus svamp;
# excluded: Core/Extended/rw_small/CI/aggregated_* (centred aggregates, can be negative) and perplexity.*
cols = list(db.columns)
tasks = cols[cols.index("mmlu_zeroshot"): cols.index("svamp_cot") + 1] + ["svamp"]
ds_tasks = [t for t in tasks if t != US]

# test-set sizes checked against the reported fractions (k/n integral); others left empty
N = {"lambada_openai": 5153, "hellaswag": 10042, "hellaswag_zeroshot": 10042, "arc_easy": 2376,
     "arc_challenge": 1172, "piqa": 1838, "winogrande": 1267, "winograd": 273, "boolq": 3270,
     "copa": 100, "openbook_qa": 500, "siqa": 1954, "commonsense_qa": 1221, "mmlu_zeroshot": 14042,
     "mmlu_fewshot": 14042, "gsm8k": 1319, "squad": 10570, "pubmed_qa_labeled": 1000,
     "triviaqa_sm_sub": 3000, "svamp": 300, "svamp_cot": 300,
     "winogender_mc_female": 60, "winogender_mc_male": 60}
SHOTS = {"mmlu_fewshot": 5, "mmlu_zeroshot": 0, "hellaswag_zeroshot": 0}

db[tasks] = db[tasks].apply(pd.to_numeric, errors="coerce")
rows = []
for _, r in db.iterrows():
    for t in ds_tasks:
        rows.append({"model": r["Model JSON"], "us_task": US, "ds_task": t, "eval_protocol": "icl-lm",
                     "shots": SHOTS.get(t, ""), "us_accuracy": r[US], "ds_accuracy": r[t],
                     "us_n": N[US], "ds_n": N.get(t, "")})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
# in-context learning with shot counts mostly not given: meta-study's "other", not "fewshot" (which needs them)
canonical(out, "dclm", {"icl-lm": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(db)} rows read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
