"""What the three ``robustbench_*/derive.py`` share (CIFAR-10-C, CIFAR-100-C, ImageNet-C and -3DCC): read
RobustBench's ``unaggregated_results*.csv`` (one row per model: accuracy as a fraction for each corruption x
severity 1-5), put a row written in another column order back under its header, read a model's JSON (its clean
accuracy), and write one model's long rows. Run from the table's folder (the caller put examples/data on sys.path).

Column order. RobustBench's ``benchmark()`` evaluates the corruptions in the order of ``CORRUPTIONS`` (or
``CORRUPTIONS_3DCC``) in robustbench/data.py and a row it writes follows that order, while some stored files
carry a header in another order (alphabetical, or the order of the first rows). ``realign`` compares each row
with the median of the other rows: both less their own mean, so the level of robustness drops out and the shape
is left (which corruptions and severities hurt most: contrast and noise at severity 5, hardly brightness). A row
that fits that shape better, by a Pearson correlation more than ``margin`` higher, when its blocks of 5 are read
in RobustBench's order, is rewritten in the header's order. Cost: one correlation per row and reading, negligible."""
import json
import re

import numpy as np
import pandas as pd

from canonical import canonical  # examples/data/canonical.py

COLS = ["model", "us_task", "ds_task", "eval_protocol", "shots",
        "us_accuracy", "ds_accuracy", "us_n", "ds_n"]
# robustbench/data.py: the order in which benchmark() evaluates, and so writes, the corruptions
CORRUPTIONS = ("shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness",
               "fog", "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression",
               "elastic_transform")
CORRUPTIONS_3DCC = ("near_focus", "far_focus", "bit_error", "color_quant", "flash", "fog_3d", "h265_abr",
                    "h265_crf", "iso_noise", "low_light", "xy_motion_blur", "z_motion_blur")
SEVERITIES = 5


def read_unaggregated(path: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """(model x (corruption, severity) accuracies as fractions, the file's ``average`` column or None) of a
    RobustBench ``unaggregated_results*.csv`` (two header rows: corruption name, severity 1-5)."""
    u = pd.read_csv(path, header=[0, 1], index_col=0)
    avg = [c for c in u.columns if c[0] == "average"]
    average = u[avg[0]] if avg else None
    return u.drop(columns=avg), average


def _fit(x: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation of two corruption x severity profiles, each less its own mean (the level)."""
    return float(np.corrcoef((x - x.mean()).ravel(), (ref - ref.mean()).ravel())[0, 1])


def realign(u: pd.DataFrame, order: tuple[str, ...], margin: float = 0.05) -> tuple[pd.DataFrame, list[str]]:
    """``u`` with each row that fits the other rows' median profile better read in ``order`` (RobustBench's
    evaluation order) than in the header's put back in the header's order; and the names of those rows."""
    names = list(dict.fromkeys(c[0] for c in u.columns))
    assert sorted(names) == sorted(order) and len(u.columns) == SEVERITIES * len(names), names
    x = np.array(u.to_numpy(float)).reshape(len(u), len(names), SEVERITIES)   # a copy: u stays as read
    as_order = [order.index(n) for n in names]   # block i of the header is block as_order[i] of a row in `order`
    moved = []
    for i, model in enumerate(u.index):
        ref = np.median(np.delete(x, i, axis=0), axis=0)
        alt = x[i][as_order]
        if _fit(alt, ref) > _fit(x[i], ref) + margin:
            x[i] = alt
            moved.append(model)
    if not moved:
        return u, moved
    return pd.DataFrame(x.reshape(len(u), -1), index=u.index, columns=u.columns), moved


def flat(u: pd.DataFrame) -> pd.DataFrame:
    """``u`` with one column per DS task, named ``<corruption>-<severity>``."""
    u = u.copy()
    u.columns = [f"{c}-{s}" for c, s in u.columns]
    return u


def load_json(path: str) -> dict:
    """A model's JSON; a trailing comma before the closing brace (one stored file has it) is read past."""
    with open(path, encoding="utf-8") as f:
        return json.loads(re.sub(r",\s*}\s*$", "}", f.read()))


def model_rows(model: str, us_task: str, clean: float, r: pd.Series, protocol: str, us_n: int,
               ds_n: int) -> list[dict]:
    """One model's long rows: clean accuracy ``clean`` (fraction) as US, each value of ``r`` as a DS task.
    ``ds_n`` is left empty when all the row's values have at most 3 decimals (rounded, or fewer images)."""
    three_dec = all(abs(v * 1000 - round(v * 1000)) < 1e-6 for v in r.values)
    return [{"model": model, "us_task": us_task, "ds_task": task, "eval_protocol": protocol, "shots": "",
             "us_accuracy": clean, "ds_accuracy": v, "us_n": us_n, "ds_n": "" if three_dec else ds_n}
            for task, v in r.items()]


def write(rows: list[dict], table: str, protocols: dict) -> pd.DataFrame:
    """Write ``us_ds.csv`` in meta-study's columns (rows with an accuracy outside [0, 1] left out) and return
    the long table in ``COLS``."""
    out = pd.DataFrame(rows, columns=COLS).dropna(subset=["us_accuracy", "ds_accuracy"])
    out = out[out.us_accuracy.between(0, 1) & out.ds_accuracy.between(0, 1)].drop_duplicates()
    canonical(out, table, protocols).to_csv("us_ds.csv", index=False)
    return out
