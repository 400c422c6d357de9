"""Derive us_ds.csv from InstructEval's problem-solving leaderboard (docs/problem_solving_leaderboard.csv of
declare-lab/instruct-eval; run from this folder)."""
import os
import re
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
RAW = "problem_solving_leaderboard.csv"   # CRLF line ends, as in the repository
US = ("MMLU", "mmlu")   # 5-shot exact match, the repository's README says
# DS columns (percent) -> (task, shots, test-set size where the README gives one). BBH, DROP: 3-shot exact match;
# CRASS: 3-shot multiple choice (crass.py's three examples); HumanEval: 0-shot pass@1 on its 164 problems.
# "Average" averages the five columns, MMLU included, and is left out
DS = {"BBH": ("bbh", 3, ""), "DROP": ("drop", 3, ""), "CRASS": ("crass", 3, ""), "HumanEval": ("humaneval", 0, 164)}


def plain(cell: str) -> str:
    """A markdown link's text: "[LLaMA](https://huggingface.co/...)" -> "LLaMA"."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell).strip()


def model_names(table: pd.DataFrame) -> pd.Series:
    """The link text, with the size in billions where the text repeats: "LLaMA" is 65B, 30B, 13B and 7B, "GPT4
    Alpaca Lora" 30B and 13B."""
    name = table["Model"].map(plain)
    repeated = name.duplicated(keep=False)
    size = table["Parameters (B)"].map(lambda p: f"{p:g}")
    return name.where(~repeated, name + " (" + size + "B)")


table = pd.read_csv(RAW, dtype={"Model": str})
# The rows above the blank separator line are the human baseline and three API models (GPT-4, PaLM 2 Instruct,
# ChatGPT) whose MMLU, DROP and HumanEval are the vendors' reported numbers (the README cites the GPT-4 report
# for them; DROP there is F1, not exact match): left out, with the separator
blank = table.index[table["Model"].isna()][0]
table = table.iloc[blank + 1:].reset_index(drop=True)
table["name"] = model_names(table)
assert table["name"].is_unique
rows = []
for _, r in table.iterrows():
    for col, (task, shots, ds_n) in DS.items():
        rows.append({"model": r["name"], "us_task": US[1], "ds_task": task, "eval_protocol": "instruct-eval",
                     "shots": shots, "us_accuracy": round(r[US[0]] / 100, 6), "ds_accuracy": round(r[col] / 100, 6),
                     "us_n": "", "ds_n": ds_n})
# a blank cell is a task the model was not run on (GPTQ 30B has only CRASS, MOSS Moon only MMLU and BBH,
# StarChat no CRASS): that pair drops out
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "instruct_eval", {"instruct-eval": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(table)} table rows read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
