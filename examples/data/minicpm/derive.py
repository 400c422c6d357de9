"""Derive us_ds.csv from the "Text evaluation" tables of OpenBMB's MiniCPM 1.0 README
(docs/README-minicpm1-en.md of OpenBMB/MiniCPM; run from this folder)."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
RAW = "README-minicpm1-en.md"
HEADER = "|Model|Average Score|Average Score in English|Average Score in Chinese|C-Eval|"   # each table starts so
US = ("MMLU", "mmlu")
# accuracy (percent) columns; HumanEval and MBPP are pass@1. The three "Average Score" columns average the others
# (MMLU included) and are left out
DS = {"C-Eval": "ceval", "CMMLU": "cmmlu", "HumanEval": "humaneval", "MBPP": "mbpp", "GSM8K": "gsm8k",
      "MATH": "math", "BBH": "bbh", "ARC-E": "arc_easy", "ARC-C": "arc_challenge", "HellaSwag": "hellaswag"}


def read_tables(lines: list[str]) -> pd.DataFrame:
    """Every pipe table that starts with HEADER, stacked, as strings (separator lines skipped)."""
    rows, header = [], None
    for i, line in enumerate(lines):
        if line.startswith(HEADER):
            header = line.strip("|").split("|")
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = row.strip("|").split("|")
                assert len(cells) == len(header), row
                rows.append(cells)
    return pd.DataFrame(rows, columns=header)


def percent(cell: str) -> float:
    """"75.62*" (a '*' marks a score by option perplexity, the rest by generated answers: each model's better of
    the two) -> 0.7562; "-" or a vendor's "27.2(report)" -> NaN (not measured by OpenBMB)."""
    cell = cell.rstrip("*")
    try:
        return round(float(cell) / 100, 6)
    except ValueError:
        return float("nan")


with open(RAW, encoding="utf-8") as f:
    table = read_tables(f.read().splitlines())
# MiniCPM-2B is repeated under each of the three tables, with the same numbers: one entry per model
assert table.groupby("Model").nunique().max().max() == 1
models = table.drop_duplicates()
rows = []
for _, r in models.iterrows():
    for col, task in DS.items():
        rows.append({"model": r["Model"], "us_task": US[1], "ds_task": task, "eval_protocol": "ultraeval",
                     "shots": "", "us_accuracy": percent(r[US[0]]), "ds_accuracy": percent(r[col]),
                     "us_n": "", "ds_n": ""})
# "Gemini Nano-3B" has only three vendor-reported numbers and no MMLU: it drops out here
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "minicpm", {"ultraeval": "other"}).to_csv("us_ds.csv", index=False)
print(f"{len(table)} table rows read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
