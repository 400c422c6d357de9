"""Derive us_ds.csv from the "Non-Adversarial Robust Benchmark" table of the EasyRobust README, as shipped in the
PyPI sdist easyrobust-0.2.4.tar.gz (run from this folder)."""
import os
import re
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from canonical import canonical  # noqa: E402  (examples/data/canonical.py)

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
RAW = "easyrobust_readme.md"
HEADER = "| Training Framework | Method | Model | Files | ImageNet-Val |"   # the table's first line starts so
US = ("ImageNet-Val", "imagenet-val")
US_N = 50000   # the ImageNet-1k validation set
# the accuracy columns (percent, "81.38%"). "C (mCE↓)" is ImageNet-C's mean corruption error relative to AlexNet,
# not an accuracy, and is left out. Stylized-ImageNet is a synthetic shift, the rest natural ones (the split of
# ../imagenet_testbed/). Test-set sizes are left empty: the README does not say which ImageNetV2 variant or which
# ObjectNet subset was used (the evaluation code reads whatever image folder it is given)
DS = {"V2": ("imagenetv2", "natural-shift"), "R": ("imagenet-r", "natural-shift"),
      "A": ("imagenet-a", "natural-shift"), "Sketch": ("imagenet-sketch", "natural-shift"),
      "ObjectNet": ("objectnet", "natural-shift"), "Stylized": ("stylized-imagenet", "synthetic-shift")}


def plain(cell: str) -> str:
    """A markdown cell without links and bold: "[ViT-B/16](https://...)" -> "ViT-B/16"."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell).replace("**", "").strip()


def read_table(lines: list[str]) -> pd.DataFrame:
    """The pipe table that starts with HEADER, as strings (its separator line skipped)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(cells)
    return pd.DataFrame(rows, columns=header)


def model_name(r: pd.Series) -> str:
    """One name per row: the architecture, the training method where one is named, and who trained it
    ("EasyRobust" for the README's "EasyRobust (Ours)"; "unattributed" where the framework cell is "-")."""
    framework = plain(r["Training Framework"]).replace(" (Ours)", "")
    method = plain(r["Method"])
    parts = [plain(r["Model"])] + ([method] if method != "-" else [])
    return f"{' '.join(parts)} [{framework if framework != '-' else 'unattributed'}]"


def percent(cell: str) -> float:
    """"81.38%" -> 0.8138."""
    return round(float(cell.rstrip("%")) / 100, 6)


with open(RAW, encoding="utf-8") as f:
    table = read_table(f.read().splitlines())
assert table.apply(model_name, axis=1).is_unique   # one name per table row, so no model is counted twice
rows = []
for _, r in table.iterrows():
    for col, (task, proto) in DS.items():
        rows.append({"model": model_name(r), "us_task": US[1], "ds_task": task, "eval_protocol": proto, "shots": "",
                     "us_accuracy": percent(r[US[0]]), "ds_accuracy": percent(r[col]), "us_n": US_N, "ds_n": ""})
out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
canonical(out, "easyrobust", {"natural-shift": "shift", "synthetic-shift": "shift"}).to_csv("us_ds.csv", index=False)
print(f"{len(table)} table rows read, {out.model.nunique()} models, {out.ds_task.nunique()} ds_tasks, {len(out)} rows")
